"""AudioCaps-style caption-audio tables: a datasets folder or Hub id, or a CSV/JSONL with audio and caption columns.

Audio is decoded with soundfile (never `datasets.Audio`, which needs torchcodec and FFmpeg), resampled with
librosa, mixed to mono, and cropped or zero-padded to the clip length. Unreadable files are reported by name and
skipped; the run goes on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class CaptionAudioCorpus:
    captions: list[str]
    audio: list[np.ndarray]  # float32 mono clips of equal length
    ids: list[str]
    unreadable: list[str] = field(default_factory=list)


def load_caption_table(source: str):
    """Opens a caption table: `(datasets.Dataset, folder that relative audio paths start from)`."""

    import datasets

    path = Path(source)
    if path.is_file():
        if path.suffix == ".csv":
            return datasets.load_dataset("csv", data_files=str(path), split="train"), path.parent
        if path.suffix in (".jsonl", ".json"):
            return datasets.load_dataset("json", data_files=str(path), split="train"), path.parent
        raise ValueError(f"{source}: use a .csv, .jsonl or a datasets folder.")
    if path.is_dir():
        return datasets.load_from_disk(str(path)), path
    try:  # a Hub id: works only where the Hub is reachable (or cached)
        return datasets.load_dataset(source, split="train"), Path(".")
    except Exception as e:  # noqa: BLE001 - re-raised with what the user needs to do
        raise FileNotFoundError(
            f"Could not open caption table {source!r}: it is not a local .csv/.jsonl/datasets folder and the Hub "
            f"could not serve it ({type(e).__name__}: {e}). Offline, download AudioCaps elsewhere and pass a local "
            "folder or a CSV with an audio-path column and a caption column."
        ) from e


def _read_clip(item, base: Path, sample_rate: int, num_samples: int) -> np.ndarray:
    import librosa
    import soundfile as sf

    if isinstance(item, dict) and "array" in item:  # an already-decoded datasets row
        wav, sr = np.asarray(item["array"], dtype=np.float32), int(item["sampling_rate"])
    else:
        path = Path(item["path"] if isinstance(item, dict) else item)
        path = path if path.is_absolute() else base / path
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
        wav = wav.mean(axis=1)
    if sr != sample_rate:
        wav = librosa.resample(wav, orig_sr=sr, target_sr=sample_rate)
    wav = wav[:num_samples]
    return np.pad(wav, (0, num_samples - len(wav))).astype(np.float32)


def load_caption_audio(
    source: str,
    audio_column: str = "audio",
    caption_column: str = "caption",
    id_column: str | None = None,
    sample_rate: int = 16000,
    seconds: float = 10.0,
    max_examples: int | None = None,
) -> CaptionAudioCorpus:
    """Loads an AudioCaps-style table. The audio column holds file paths (relative to the table's folder) or
    decoded `{"array", "sampling_rate"}` dicts."""
    table, base = load_caption_table(source)
    for col in (audio_column, caption_column):
        if col not in table.column_names:
            raise ValueError(f"{source} has no column {col!r}; its columns are {table.column_names}.")
    n = len(table) if max_examples is None else min(max_examples, len(table))
    num_samples = int(round(seconds * sample_rate))
    captions, audio, ids, bad = [], [], [], []
    for i in range(n):
        row = table[i]
        rid = str(row[id_column]) if id_column else str(i)
        try:
            audio.append(_read_clip(row[audio_column], base, sample_rate, num_samples))
        except Exception as e:  # noqa: BLE001 - report and go on
            name = row[audio_column] if isinstance(row[audio_column], str) else rid
            logger.warning("skipping unreadable audio %s: %s", name, e)
            bad.append(str(name))
            continue
        captions.append(str(row[caption_column]))
        ids.append(rid)
    if bad:
        logger.warning("%d of %d clips were unreadable: %s", len(bad), n, ", ".join(bad[:10]))
    return CaptionAudioCorpus(captions, audio, ids, bad)
