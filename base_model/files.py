"""File helpers shared by every layer: atomic text/JSON writes and WAV output.

An atomic write goes to a temporary name in the target's folder and is renamed into place, so a reader (or a run
killed halfway) never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes the file private; what we write is meant to be shared
    os.replace(tmp, path)


def atomic_write_json(path: str | os.PathLike, obj, **dumps_kwargs) -> None:
    """`atomic_write_text` of `json.dumps(obj, indent=2)` (plus any `json.dumps` options)."""
    atomic_write_text(path, json.dumps(obj, indent=2, **dumps_kwargs))


def save_wav(path: str | os.PathLike, waveform: torch.Tensor | np.ndarray, sample_rate: int) -> None:
    """Writes a mono clip with soundfile (peak-normalised to avoid clipping when above 1)."""
    import soundfile as sf

    wav = waveform.detach().cpu().numpy() if isinstance(waveform, torch.Tensor) else np.asarray(waveform)
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    if peak > 1.0:
        wav = wav / peak
    sf.write(str(path), wav.astype(np.float32), sample_rate)


# Files in a checkpoint folder that describe it rather than define it: editing a model card must not change its hash.
DOCUMENTATION_FILES = ("README.md", "metrics.json")


def file_hash(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file (first 16 hex digits), or of every file in a folder in name order except its model card and
    metrics (`DOCUMENTATION_FILES`), so the hash names the weights and configuration."""
    path = Path(path)
    h = hashlib.sha256()
    files = (
        sorted(p for p in path.rglob("*") if p.is_file() and p.name not in DOCUMENTATION_FILES)
        if path.is_dir()
        else [path]
    )
    for f in files:
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()[:16]
