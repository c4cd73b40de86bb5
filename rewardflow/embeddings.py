"""Audio embeddings for Fréchet distances, cached on disk by content: a clip's cache key is the hash of its samples
and of the embedding model, so regenerated audio under the same name is embedded again and nothing stale is read."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch


def clip_hash(waveform: torch.Tensor | np.ndarray, sample_rate: int) -> str:
    wav = waveform.detach().cpu().numpy() if isinstance(waveform, torch.Tensor) else np.asarray(waveform)
    h = hashlib.sha256(np.ascontiguousarray(wav, dtype=np.float32).tobytes())
    h.update(str(sample_rate).encode())
    return h.hexdigest()[:32]


class EmbeddingCache:
    """`embed(waveforms, sample_rate) -> (B, D)` through `embed_fn`, one `.npy` per clip under
    `<cache_dir>/<model_key>/`, written atomically.

    Args:
        embed_fn: `(waveforms (B, N), sample_rate) -> Tensor (B, D)`.
        model_key: names the embedding model and its checkpoint (e.g. `clap:<model_id>:<checkpoint_hash>`).
    """

    def __init__(self, embed_fn, model_key: str, cache_dir: str | os.PathLike | None):
        self.embed_fn, self.model_key = embed_fn, model_key
        safe = hashlib.sha1(model_key.encode()).hexdigest()[:16]
        self.folder = Path(cache_dir) / safe if cache_dir else None
        self.computed = 0  # clips embedded (not read from the cache), for tests and logs

    def embed(self, waveforms: torch.Tensor, sample_rate: int) -> np.ndarray:
        keys = [clip_hash(w, sample_rate) for w in waveforms]
        out: list[np.ndarray | None] = [None] * len(keys)
        if self.folder is not None:
            for i, k in enumerate(keys):
                f = self.folder / f"{k}.npy"
                if f.is_file():
                    out[i] = np.load(f)
        todo = [i for i, o in enumerate(out) if o is None]
        if todo:
            emb = self.embed_fn(waveforms[todo], sample_rate).detach().float().cpu().numpy()
            self.computed += len(todo)
            for j, i in enumerate(todo):
                out[i] = emb[j]
                if self.folder is not None:
                    self.folder.mkdir(parents=True, exist_ok=True)
                    tmp = self.folder / f".{keys[i]}.{os.getpid()}.tmp.npy"
                    np.save(tmp, emb[j])
                    os.replace(tmp, self.folder / f"{keys[i]}.npy")
        return np.stack(out)
