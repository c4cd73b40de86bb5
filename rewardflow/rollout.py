"""Rollout: generate clips for training prompts, score them, store a resumable table (paper Algorithm 2, step 1).

    accelerate launch rewardflow/rollout.py                                     # the embedded default
    accelerate launch --num_processes 2 --cpu rewardflow/rollout.py --max_prompts 32 --num_generations 4
    python rewardflow/rollout.py --output_dir outputs/rollout --rescore --rewards verifier   # add columns

Layout of `<output_dir>`:
    run.json          the generation settings, model id + hash, reward ids + hashes, package versions
    data/shard-*.parquet   rows, written atomically (temporary name, then rename), one per batch of items
    audio/<prompt_id>-<sample_index>.flac   a clip above full scale is stored at peak 1; its row's `audio_gain`
                      (stored = scored x gain) lets `--rescore` hear it at the level it was scored
    manifest.json     written last, by the main process, once every shard is complete

Rows are keyed by `(prompt_id, sample_index)`. The global item list is cut into fixed chunks of `batch_size` items;
chunk k is shard k whichever process makes it, and each clip's seed derives from the run seed and its ids, so one
or two processes write identical shards. A rerun skips shards that validate and regenerates the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script (`accelerate launch rewardflow/rollout.py`)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewardflow.rollout_config import RolloutConfig  # noqa: E402

logger = logging.getLogger("rewardflow.rollout")


# ------------------------------------------------------------------------------------------------ prompts
def load_prompts(cfg: RolloutConfig) -> list[dict]:
    """`[{"prompt_id", "prompt", "attributes"}]`, validated before anything is generated."""
    if cfg.prompts.startswith("synthcaps:"):
        from base_model.data.synthcaps import example

        split = cfg.prompts.split(":", 1)[1]
        n = cfg.max_prompts or 1000
        rows = [example(i, split) for i in range(n)]
        prompts = [
            {"prompt_id": r["id"], "prompt": r["caption"], "attributes": json.dumps(r["attributes"])} for r in rows
        ]
    else:
        from base_model.data.captions import load_caption_table

        table, _ = load_caption_table(cfg.prompts)
        if cfg.caption_column not in table.column_names:
            raise ValueError(
                f"{cfg.prompts} has no caption column {cfg.caption_column!r}; its columns are "
                f"{table.column_names}. Pass --caption_column."
            )
        if cfg.id_column and cfg.id_column not in table.column_names:
            raise ValueError(
                f"{cfg.prompts} has no id column {cfg.id_column!r}; its columns are {table.column_names}."
            )
        n = len(table) if not cfg.max_prompts else min(cfg.max_prompts, len(table))
        prompts = [
            {
                "prompt_id": str(table[i][cfg.id_column]) if cfg.id_column else str(i),
                "prompt": table[i][cfg.caption_column],
                "attributes": "",
            }
            for i in range(n)
        ]
    bad = [p["prompt_id"] for p in prompts if not isinstance(p["prompt"], str) or not p["prompt"].strip()]
    if bad:
        raise ValueError(
            f"empty or whitespace prompts for prompt ids {bad[:10]} ({len(bad)} in all); fix or drop them."
        )
    seen, dups = set(), set()
    for p in prompts:
        (dups if p["prompt_id"] in seen else seen).add(p["prompt_id"])
    if dups:
        raise ValueError(f"duplicate prompt ids {sorted(dups)[:10]}: rows are keyed by (prompt_id, sample_index).")
    return prompts


def sample_seed(run_seed: int, prompt_id: str, sample_index: int) -> int:
    """A clip's seed: a hash of the run seed and its ids (independent of process count and order)."""
    digest = hashlib.sha256(f"{run_seed}/{prompt_id}/{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def chunk_items(prompts: list[dict], num_generations: int, batch_size: int) -> list[list[tuple[int, int]]]:
    items = [(i, s) for i in range(len(prompts)) for s in range(num_generations)]
    return [items[k : k + batch_size] for k in range(0, len(items), batch_size)]


# ------------------------------------------------------------------------------------------------- shards
def _shard_path(out: Path, k: int) -> Path:
    return out / "data" / f"shard-{k:05d}.parquet"


def _valid_shard(path: Path, expected_keys: list[tuple[str, int]]) -> bool:
    """A shard counts as done only if it reads back whole with exactly the expected keys and today's columns (a
    shard from before `audio_gain` is made again, so that one table never mixes the two layouts)."""
    if not path.is_file():
        return False
    try:
        import pyarrow.parquet as pq

        t = pq.read_table(path, columns=["prompt_id", "sample_index", "audio_gain"])
        keys = list(zip(t.column("prompt_id").to_pylist(), t.column("sample_index").to_pylist()))
        return keys == expected_keys
    except Exception:  # noqa: BLE001 - a torn or foreign file is simply regenerated
        return False


def _write_shard(path: Path, rows: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(pa.table(rows), tmp)
    os.replace(tmp, path)


def _write_audio(path: Path, wav: np.ndarray, sample_rate: int) -> float:
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


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ rewards
def build_rewards(cfg: RolloutConfig, device) -> dict:
    from reward_models import load_reward

    out = {}
    for name in cfg.rewards:
        opts = {}
        if name == "clap" and cfg.clap_checkpoint:
            opts["checkpoint"] = cfg.clap_checkpoint
        if name == "aesthetics" and cfg.aesthetics_checkpoint:
            opts["checkpoint"] = cfg.aesthetics_checkpoint
        if name in ("clap", "aesthetics"):
            opts["device"] = device
        out[name] = load_reward(name, **opts)
    return out


def score_batch(
    rewards: dict, wavs: torch.Tensor, sample_rate: int, prompts: list[str], attributes: list[str]
) -> dict[str, np.ndarray]:
    cols = {}
    for name, reward in rewards.items():
        scores = reward(wavs, sample_rate, prompts, attributes=attributes)
        for key, val in scores.items():
            if val.shape != (len(prompts),):
                raise ValueError(
                    f"reward {name!r} returned {tuple(val.shape)} scores for {key!r}; expected "
                    f"({len(prompts)},), one per clip."
                )
            cols[f"reward/{key}"] = val.float().numpy()
    return cols


# -------------------------------------------------------------------------------------------------- run
def run_metadata(cfg: RolloutConfig, pipe, rewards: dict) -> dict:
    import importlib.metadata as md

    from base_model.pipeline import resolve_pipeline_path
    from reward_models.base import file_hash

    model_hash = file_hash(resolve_pipeline_path(cfg.model) / "flow")  # bundled names and folders alike
    versions = {
        p: md.version(p)
        for p in ("torch", "transformers", "datasets", "laion-clap", "audiobox-aesthetics")
        if _has_dist(p)
    }
    return {
        "settings": cfg.generation_settings(),
        "model": {"id": cfg.model, "hash": model_hash},
        "rewards": {n: {"model_id": r.model_id, "checkpoint_hash": r.checkpoint_hash} for n, r in rewards.items()},
        "sample_rate": pipe.sample_rate,
        "versions": versions,
    }


def _has_dist(name: str) -> bool:
    import importlib.metadata as md

    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


def _settings_diff(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    return "\n".join(f"  {k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def _grows(old: dict, new: dict) -> bool:
    """Whether `new` asks for the same rollout as `old` over more prompts, both counts given (0, "all", is not)."""
    same = {k: v for k, v in old.items() if k != "max_prompts"} == {k: v for k, v in new.items() if k != "max_prompts"}
    return same and 0 < old.get("max_prompts", 0) < new.get("max_prompts", 0)


def rollout(cfg: RolloutConfig) -> dict:
    """Generates and scores the rollout; returns the summary (also written to `summary.json`)."""
    from tqdm.auto import tqdm

    from base_model import MaskAudioFlowPipeline
    from rewardflow.distributed import process_state

    state = process_state()
    if state.device.type == "cpu":
        torch.set_num_threads(cfg.cpu_threads)  # see RolloutConfig.cpu_threads: same bits for any process count
    out = Path(cfg.output_dir)
    prompts = load_prompts(cfg)  # validated before any generation
    chunks = chunk_items(prompts, cfg.num_generations, cfg.batch_size)
    run_file = out / "run.json"
    if run_file.is_file():
        old, new = json.loads(run_file.read_text())["settings"], cfg.generation_settings()
        if _grows(old, new):
            # More prompts, nothing else changed: every clip's seed derives from its ids, so the shards already made
            # are the new run's first shards (a last, shorter one is made again whole) and only the rest is generated.
            logger.info("growing %s from %d to %d prompts; its complete shards are kept", out, old["max_prompts"],
                        cfg.max_prompts)  # fmt: skip
        elif old != new:
            if not cfg.overwrite:
                raise RuntimeError(
                    f"{out} holds a rollout made with other settings:\n"
                    f"{_settings_diff(old, new)}\n"
                    "Use another --output_dir, or --overwrite to replace it (only a larger --max_prompts grows a "
                    "rollout in place)."
                )
            if state.is_main_process:
                import shutil

                for sub in ("data", "audio"):
                    shutil.rmtree(out / sub, ignore_errors=True)
                for f in ("manifest.json", "run.json", "summary.json"):
                    (out / f).unlink(missing_ok=True)
            state.wait_for_everyone()

    pipe = MaskAudioFlowPipeline.from_pretrained(cfg.model, device=state.device)
    rewards = build_rewards(cfg, state.device)
    meta = run_metadata(cfg, pipe, rewards)
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "data").mkdir(exist_ok=True)
        if cfg.audio_format != "none":
            (out / "audio").mkdir(exist_ok=True)
        _atomic_json(run_file, meta)
    state.wait_for_everyone()

    mine = list(range(state.process_index, len(chunks), state.num_processes))
    todo = [k for k in mine if not _valid_shard(_shard_path(out, k), _keys(prompts, chunks[k]))]
    timings = {"generate": 0.0, "decode": 0.0, "vocode": 0.0, "score": 0.0, "write": 0.0}
    bar = tqdm(total=sum(len(chunks[k]) for k in todo), unit="clip", disable=not state.is_main_process, desc="rollout")
    for k in todo:
        items = chunks[k]
        rows = _generate_chunk(cfg, pipe, rewards, prompts, items, out, timings)
        t = time.perf_counter()
        _write_shard(_shard_path(out, k), rows)
        timings["write"] += time.perf_counter() - t
        bar.update(len(items))
    bar.close()
    state.wait_for_everyone()
    summary = {}
    if state.is_main_process:
        summary = _finish(cfg, out, prompts, chunks, timings, state.num_processes, sum(len(chunks[k]) for k in todo))
    state.wait_for_everyone()
    return summary


def _keys(prompts, items):
    return [(prompts[i]["prompt_id"], s) for i, s in items]


def _generate_chunk(cfg, pipe, rewards, prompts, items, out: Path, timings: dict) -> dict:
    texts = [prompts[i]["prompt"] for i, _ in items]
    attrs = [prompts[i]["attributes"] for i, _ in items]
    seeds = [sample_seed(cfg.seed, prompts[i]["prompt_id"], s) for i, s in items]
    t = time.perf_counter()
    gen = pipe(
        texts,
        num_iterations=cfg.num_iterations,
        num_steps=cfg.num_steps,
        method=cfg.method,
        cfg_scale=cfg.cfg_scale,
        seed=seeds,
        decode=False,
    )
    timings["generate"] += time.perf_counter() - t
    t = time.perf_counter()
    mel = pipe.vae.decode(gen.latents)
    timings["decode"] += time.perf_counter() - t
    t = time.perf_counter()
    wavs = pipe.vocoder(mel)
    timings["vocode"] += time.perf_counter() - t
    t = time.perf_counter()
    scores = score_batch(rewards, wavs, pipe.sample_rate, texts, attrs)
    timings["score"] += time.perf_counter() - t
    t = time.perf_counter()
    paths, gains = [], []
    for (i, s), wav in zip(items, wavs):
        if cfg.audio_format == "none":
            paths.append("")
            gains.append(1.0)
            continue
        rel = f"audio/{prompts[i]['prompt_id']}-{s}.{cfg.audio_format}"
        gains.append(_write_audio(out / rel, wav.numpy(), pipe.sample_rate))
        paths.append(rel)
    timings["write"] += time.perf_counter() - t
    lat = gen.latents.to(torch.float16).cpu().numpy()
    return {
        "prompt_id": [prompts[i]["prompt_id"] for i, _ in items],
        "prompt": texts,
        "sample_index": [s for _, s in items],
        "seed": seeds,
        "latent": [x.tobytes() for x in lat],
        "latent_shape": [list(x.shape) for x in lat],
        "audio_path": paths,
        "audio_gain": gains,
        "attributes": attrs,
        **{k: v.tolist() for k, v in scores.items()},
    }


def _finish(cfg, out: Path, prompts, chunks, timings, num_processes, clips_done: int) -> dict:
    shards = [_shard_path(out, k) for k in range(len(chunks))]
    missing = [str(p) for k, p in enumerate(shards) if not _valid_shard(p, _keys(prompts, chunks[k]))]
    if missing:
        raise RuntimeError(f"{len(missing)} shard(s) incomplete after the run: {missing[:5]}; rerun the same command.")
    ds = load_rollout(out, require_manifest=False)
    summary = {"rows": len(ds), "expected_rows": len(prompts) * cfg.num_generations, "processes": num_processes}
    for col in [c for c in ds.column_names if c.startswith("reward/")]:
        v = np.asarray(ds[col], dtype=np.float64)
        bad = ~np.isfinite(v)
        summary[col] = {
            "mean": float(np.nanmean(np.where(bad, np.nan, v))) if (~bad).any() else math.nan,
            "std": float(np.nanstd(np.where(bad, np.nan, v))) if (~bad).any() else math.nan,
            "nan": int(bad.sum()),
        }
        # Sub-scores (`reward/verifier/pitch`) are NaN where they do not apply; only a reward's own score aborts.
        if "/" not in col[len("reward/") :] and bad.mean() > cfg.max_nan_fraction:
            raise RuntimeError(
                f"{col}: {bad.sum()} of {len(v)} scores are NaN/inf, above --max_nan_fraction "
                f"{cfg.max_nan_fraction}; the rows are kept in {out / 'data'} for inspection."
            )
    total = sum(timings.values())
    summary["seconds_main_process"] = {k: round(v, 3) for k, v in timings.items()}
    summary["clips_generated_by_main_process"] = clips_done
    summary["clips_per_second_main_process"] = {
        k: (round(clips_done / v, 2) if v > 0 else None) for k, v in timings.items()
    }
    summary["write_fraction"] = round(timings["write"] / total, 4) if total else 0.0
    _atomic_json(out / "manifest.json", {"shards": [p.name for p in shards], "rows": len(ds)})
    _atomic_json(out / "summary.json", summary)
    print(json.dumps(summary, indent=2))
    return summary


# ---------------------------------------------------------------------------------------------- reading
def load_rollout(output_dir: str | os.PathLike, require_manifest: bool = True):
    """The rollout table as one `datasets.Dataset` (run metadata in `ds.info.description` as JSON).

    >>> ds = load_rollout("outputs/rollout")  # doctest: +SKIP
    >>> ds.column_names[:4]  # doctest: +SKIP
    ['prompt_id', 'prompt', 'sample_index', 'seed']
    """
    import datasets

    out = Path(output_dir)
    if require_manifest and not (out / "manifest.json").is_file():
        raise FileNotFoundError(
            f"{out} has no manifest.json: the rollout is incomplete. Rerun the same rollout command to finish it."
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


# -------------------------------------------------------------------------------------------- rescoring
def rescore(cfg: RolloutConfig) -> dict:
    """Adds (or refreshes) reward columns from the stored audio without regenerating; unreadable audio is reported
    by row and scored NaN."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(cfg.output_dir)
    if not (out / "manifest.json").is_file():
        raise FileNotFoundError(f"{out} has no complete rollout to rescore (no manifest.json).")
    rewards = build_rewards(cfg, "cpu")
    meta = json.loads((out / "run.json").read_text())
    sr = meta["sample_rate"]
    report = {"unreadable": []}
    warned = False
    for shard in sorted((out / "data").glob("shard-*.parquet")):
        table = pq.read_table(shard)
        rows = table.to_pylist()
        if "audio_gain" not in table.column_names and not warned:
            logger.warning(
                "%s predates the audio_gain column: clips whose peak was above 1 were stored scaled down to peak 1, "
                "so they are rescored quieter than the rollout scored them (level-sensitive rewards such as the "
                "verifier's loudness and fade, and aesthetics, change). Roll out again into a new folder for a table "
                "that rescores exactly.",
                out,
            )
            warned = True
        wavs, ok = [], []
        for r in rows:
            try:
                wav, file_sr = read_audio(out / r["audio_path"], r.get("audio_gain"))
                if file_sr != sr:
                    raise ValueError(f"sample rate {file_sr} != {sr}")
                wavs.append(torch.from_numpy(wav))
                ok.append(True)
            except Exception as e:  # noqa: BLE001 - reported by row, others still scored
                report["unreadable"].append(
                    {
                        "prompt_id": r["prompt_id"],
                        "sample_index": r["sample_index"],
                        "path": r["audio_path"],
                        "error": str(e)[:200],
                    }
                )
                wavs.append(torch.full((sr,), float("nan")))  # NaN audio -> NaN scores
                ok.append(False)
        n = max(len(w) for w in wavs)
        batch = torch.stack([torch.nn.functional.pad(w, (0, n - len(w))) for w in wavs])
        cols = score_batch(rewards, batch, sr, [r["prompt"] for r in rows], [r["attributes"] for r in rows])
        for name, values in cols.items():
            if name in table.column_names:
                table = table.drop_columns([name])
            table = table.append_column(name, pa.array(values.tolist(), pa.float64()))
        tmp = shard.with_name(f".{shard.name}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, shard)
    meta["rewards"].update(
        {n: {"model_id": r.model_id, "checkpoint_hash": r.checkpoint_hash} for n, r in rewards.items()}
    )
    _atomic_json(out / "run.json", meta)
    if report["unreadable"]:
        logger.warning(
            "rescore: %d unreadable clip(s): %s",
            len(report["unreadable"]),
            ", ".join(f"{u['prompt_id']}/{u['sample_index']}" for u in report["unreadable"][:10]),
        )
    print(json.dumps(report, indent=2))
    return report


def make_parser():
    from trl import TrlParser

    return TrlParser((RolloutConfig,))


def main(cfg: RolloutConfig) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return rescore(cfg) if cfg.rescore else rollout(cfg)


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
