"""The rollout table: its layout on disk, how shards and clips are written, and how it is read back.

Layout of a rollout folder:
    run.json          the generation settings, model id + hash, reward ids + hashes, package versions
    data/shard-*.parquet   rows, written atomically (temporary name, then rename), one per batch of items
    audio/<prompt_id>-<sample_index>.flac   a clip above full scale is stored at peak 1; its row's `audio_gain`
                      (stored = scored x gain) lets `--rescore` hear it at the level it was scored
    manifest.json     written last, by the main process, once every shard is complete
    summary.json      row count, per-reward mean/std/NaN count, seconds per stage

One row per (prompt, sample), keyed by `(prompt_id, sample_index)`. Columns: `prompt_id`, `prompt`,
`sample_index`, `seed`, `latent` (float16 `(T, C)` as bytes) and `latent_shape`, `audio_path`, `audio_gain`,
`attributes` (SynthCaps attributes as JSON, or ""), and one `reward/<name>` column per score.
`docs/rollout_table.md` documents each column.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from base_model.files import atomic_write_json

# Columns a shard must have to count as complete (older shards without `audio_gain` are made again).
KEY_COLUMNS = ("prompt_id", "sample_index", "audio_gain")


def shard_path(out: Path, k: int) -> Path:
    return Path(out) / "data" / f"shard-{k:05d}.parquet"


def chunk_items(num_prompts: int, num_generations: int, batch_size: int) -> list[list[tuple[int, int]]]:
    """The global `(prompt index, sample index)` list cut into fixed chunks: chunk k is shard k whichever process
    makes it, so any number of processes writes the same shards."""
    items = [(i, s) for i in range(num_prompts) for s in range(num_generations)]
    return [items[k : k + batch_size] for k in range(0, len(items), batch_size)]


def valid_shard(path: Path, expected_keys: list[tuple[str, int]]) -> bool:
    """A shard counts as done only if it reads back whole with exactly the expected keys and today's columns."""
    if not path.is_file():
        return False
    try:
        import pyarrow.parquet as pq

        t = pq.read_table(path, columns=list(KEY_COLUMNS))
        keys = list(zip(t.column("prompt_id").to_pylist(), t.column("sample_index").to_pylist()))
        return keys == expected_keys
    except Exception:  # noqa: BLE001 - a torn or foreign file is simply regenerated
        return False


def write_shard(path: Path, rows: dict) -> None:
    """Writes one shard atomically (temporary name in the same folder, then rename)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(pa.table(rows), tmp)
    os.replace(tmp, path)


def write_audio(path: Path, wav: np.ndarray, sample_rate: int) -> float:
    """Writes a clip atomically; one whose peak is above full scale is scaled down to peak 1 first (FLAC holds
    integer samples and would clip it). Returns the gain applied (stored = scored × gain), 1.0 for most clips, which
    the table keeps as `audio_gain` so that rescoring hears what the rollout scored."""
    import soundfile as sf

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    gain = 1.0 / peak if peak > 1 else 1.0
    sf.write(str(tmp), (wav * gain).astype(np.float32), sample_rate, format=path.suffix[1:].upper())
    os.replace(tmp, path)
    return gain


def read_audio(path: Path, gain: float | None = None) -> tuple[np.ndarray, int]:
    """A stored clip at the level the rollout scored it: the file's samples divided by the row's `audio_gain`."""
    import soundfile as sf

    wav, sr = sf.read(str(path), dtype="float32")
    return (wav / gain if gain else wav), sr


def reward_summary(ds, max_nan_fraction: float, out: Path) -> dict:
    """Mean, std and NaN count of every `reward/*` column; a reward's own score (not a sub-score such as
    `reward/verifier/pitch`, NaN where it does not apply) above `max_nan_fraction` NaN aborts."""
    summary = {}
    for col in [c for c in ds.column_names if c.startswith("reward/")]:
        v = np.asarray(ds[col], dtype=np.float64)
        bad = ~np.isfinite(v)
        good = v[~bad]
        summary[col] = {
            "mean": float(good.mean()) if len(good) else float("nan"),
            "std": float(good.std()) if len(good) else float("nan"),
            "nan": int(bad.sum()),
        }
        if "/" not in col[len("reward/") :] and bad.mean() > max_nan_fraction:
            raise RuntimeError(
                f"{col}: {bad.sum()} of {len(v)} scores are NaN/inf, above --max_nan_fraction "
                f"{max_nan_fraction}; the rows are kept in {out / 'data'} for inspection."
            )
    return summary


def put_column(table, name: str, values):
    """`table` (a `pyarrow.Table`) with column `name` replaced in place, or appended when it has none."""
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


def write_manifest(out: Path, shards: list[Path], rows: int) -> None:
    atomic_write_json(out / "manifest.json", {"shards": [p.name for p in shards], "rows": rows}, sort_keys=True)


def load_rollout(output_dir: str | os.PathLike, require_manifest: bool = True):
    """The rollout table as one `datasets.Dataset` (run metadata in `ds.info.description` as JSON).

    >>> ds = load_rollout("outputs/rollout")  # doctest: +SKIP
    >>> ds.column_names[:4]  # doctest: +SKIP
    ['prompt_id', 'prompt', 'sample_index', 'seed']
    """
    import datasets

    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(
            f"--rollout {out} is a file; pass the folder a rollout wrote (rewardflow/rollout.py)."
        )
    if require_manifest and not (out / "manifest.json").is_file():
        raise FileNotFoundError(
            f"{out} has no manifest.json: the rollout is missing or incomplete. Make it, or finish it, with "
            f"`accelerate launch rewardflow/rollout.py --output_dir {out}` (the same command resumes)."
        )
    files = sorted(str(p) for p in (out / "data").glob("shard-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no shards under {out / 'data'}.")
    ds = datasets.Dataset.from_parquet(files, keep_in_memory=True)
    meta = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else {}
    ds.info.description = json.dumps(meta)
    return ds


def latents_of(row: dict) -> np.ndarray:
    """A row's latent `(T, C)` as float16."""
    return np.frombuffer(row["latent"], dtype=np.float16).reshape(row["latent_shape"])
