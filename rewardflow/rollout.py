"""Rollout: generate clips for training prompts, score them, store a resumable table (paper Algorithm 2, step 1).

    accelerate launch rewardflow/rollout.py                                     # the embedded default
    torchrun --standalone --nproc_per_node 2 rewardflow/rollout.py --max_prompts 32 --num_generations 4
    python rewardflow/rollout.py --output_dir outputs/rollout --rescore true --rewards verifier   # add columns

The table's layout and reading live in `rewardflow/rollout_table.py` (`load_rollout`). The global item list is cut
into fixed chunks of `batch_size` items; chunk k is shard k whichever process makes it, and each clip's seed derives
from the run seed and its ids, so one or two processes write identical shards. A rerun skips shards that validate
and regenerates the rest.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script (`accelerate launch rewardflow/rollout.py`)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from base_model.files import atomic_write_json  # noqa: E402
from rewardflow.prompts import load_prompts, sample_seed  # noqa: E402
from rewardflow.rollout_config import RolloutConfig  # noqa: E402
from rewardflow.rollout_table import (  # noqa: E402
    chunk_items,
    load_rollout,
    read_audio,
    reward_summary,
    shard_path,
    valid_shard,
    write_audio,
    write_manifest,
    write_shard,
)
from rewardflow.scoring import build_rewards, check_rewards_apply, score_batch  # noqa: E402

logger = logging.getLogger("rewardflow.rollout")

STAGES = ("generate", "decode", "vocode", "score", "write")


def run_metadata(cfg: RolloutConfig, pipe, rewards: dict) -> dict:
    import importlib.metadata as md

    from base_model.generators import generator_hash

    versions = {}
    for package in ("torch", "transformers", "datasets", "laion-clap", "audiobox-aesthetics"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return {
        "settings": cfg.generation_settings(),
        "model": {"id": cfg.model, "hash": generator_hash(cfg.model)},
        "rewards": {n: {"model_id": r.model_id, "checkpoint_hash": r.checkpoint_hash} for n, r in rewards.items()},
        "sample_rate": pipe.sample_rate,
        "vocoder": pipe.vocoder.to_config() if hasattr(pipe, "vocoder") else None,
        "versions": versions,
    }


def settings_diff(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    return "\n".join(f"  {k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def grows(old: dict, new: dict) -> bool:
    """Whether `new` asks for the same rollout as `old` over more prompts, both counts given (0, "all", is not)."""
    same = {k: v for k, v in old.items() if k != "max_prompts"} == {k: v for k, v in new.items() if k != "max_prompts"}
    return same and 0 < old.get("max_prompts", 0) < new.get("max_prompts", 0)


def check_existing(cfg: RolloutConfig, out: Path, state) -> None:
    """A folder holding a rollout with other settings is refused (before anything is loaded or generated) unless
    `--overwrite`; a larger `--max_prompts` grows it in place, keeping its complete shards."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--output_dir {out} is a file; pass a folder (it is created when missing).")
    run_file = out / "run.json"
    if not run_file.is_file():
        return
    old, new = json.loads(run_file.read_text())["settings"], cfg.generation_settings()
    if grows(old, new):
        # Every clip's seed derives from its ids, so the shards already made are the new run's first shards (a last,
        # shorter one is made again whole) and only the rest is generated.
        logger.info("growing %s from %d to %d prompts; its complete shards are kept", out, old["max_prompts"],
                    cfg.max_prompts)  # fmt: skip
        return
    if old == new:
        return
    if not cfg.overwrite:
        raise RuntimeError(
            f"{out} holds a rollout made with other settings:\n{settings_diff(old, new)}\n"
            "Use another --output_dir, or --overwrite true to replace it (only a larger --max_prompts grows a "
            "rollout in place). Nothing was changed."
        )
    if state.is_main_process:
        for sub in ("data", "audio"):
            shutil.rmtree(out / sub, ignore_errors=True)
        for f in ("manifest.json", "run.json", "summary.json"):
            (out / f).unlink(missing_ok=True)
    state.wait_for_everyone()


def rollout(cfg: RolloutConfig) -> dict:
    """Generates and scores the rollout; returns the summary (also written to `summary.json`). On CPU it runs with
    `cfg.cpu_threads` torch threads and gives the caller back its own count after (online rounds fine-tune in the
    same process)."""
    threads = torch.get_num_threads()
    try:
        return _rollout(cfg)
    finally:
        torch.set_num_threads(threads)


def _rollout(cfg: RolloutConfig) -> dict:
    from tqdm.auto import tqdm

    from base_model.generators import generator_folder, load_generator
    from rewardflow.distributed import process_state

    state = process_state()
    if state.device.type == "cpu":
        torch.set_num_threads(cfg.cpu_threads)  # see RolloutConfig.cpu_threads: same bits for any process count
    out = Path(cfg.output_dir)
    # Everything that can be checked is checked before the model loads or anything is generated.
    prompts = load_prompts(cfg.prompts, cfg.max_prompts, cfg.caption_column, cfg.id_column, cfg.first_prompt)
    cfg.check_rewards()
    check_rewards_apply(cfg.rewards, prompts)
    generator_folder(cfg.model)
    check_existing(cfg, out, state)
    chunks = chunk_items(len(prompts), cfg.num_generations, cfg.batch_size)

    pipe = load_generator(cfg.model, device=state.device)
    rewards = build_rewards(cfg.rewards, cfg.clap_checkpoint, cfg.aesthetics_checkpoint, state.device)
    if state.is_main_process:
        (out / "data").mkdir(parents=True, exist_ok=True)
        if cfg.audio_format != "none":
            (out / "audio").mkdir(exist_ok=True)
        atomic_write_json(out / "run.json", run_metadata(cfg, pipe, rewards), sort_keys=True)
    state.wait_for_everyone()

    mine = list(range(state.process_index, len(chunks), state.num_processes))
    todo = [k for k in mine if not valid_shard(shard_path(out, k), keys_of(prompts, chunks[k]))]
    timings = dict.fromkeys(STAGES, 0.0)
    bar = tqdm(total=sum(len(chunks[k]) for k in todo), unit="clip", disable=not state.is_main_process, desc="rollout")
    for k in todo:
        rows = generate_chunk(cfg, pipe, rewards, prompts, chunks[k], out, timings)
        t = time.perf_counter()
        write_shard(shard_path(out, k), rows)
        timings["write"] += time.perf_counter() - t
        bar.update(len(chunks[k]))
    bar.close()
    state.wait_for_everyone()
    summary = {}
    if state.is_main_process:
        summary = finish(cfg, out, prompts, chunks, timings, state.num_processes, sum(len(chunks[k]) for k in todo))
    state.wait_for_everyone()
    return summary


def keys_of(prompts: list[dict], items: list[tuple[int, int]]) -> list[tuple[str, int]]:
    return [(prompts[i]["prompt_id"], s) for i, s in items]


def generate_chunk(cfg: RolloutConfig, pipe, rewards, prompts, items, out: Path, timings: dict) -> dict:
    """Generates, decodes, vocodes, scores and stores one chunk of items; returns its table columns."""
    texts = [prompts[i]["prompt"] for i, _ in items]
    attrs = [prompts[i]["attributes"] for i, _ in items]
    seeds = [sample_seed(cfg.seed, prompts[i]["prompt_id"], s) for i, s in items]

    def timed(stage, fn, *args, **kwargs):
        t = time.perf_counter()
        result = fn(*args, **kwargs)
        timings[stage] += time.perf_counter() - t
        return result

    gen = timed("generate", pipe, texts, **cfg.sampler_kwargs(), seed=seeds, decode=False)
    decoded = timed("decode", pipe.decode_latents, gen.latents)
    wavs = timed("vocode", pipe.vocode, decoded).cpu()
    scores = timed("score", score_batch, rewards, wavs, pipe.sample_rate, texts, attrs)
    paths, gains = timed("write", store_clips, cfg, prompts, items, wavs, out, pipe.sample_rate)
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


def store_clips(cfg: RolloutConfig, prompts, items, wavs: torch.Tensor, out: Path, sample_rate: int):
    """Writes each clip under `audio/` (nothing with `--audio_format none`); returns the paths and gains."""
    if cfg.audio_format == "none":
        return [""] * len(items), [1.0] * len(items)
    paths, gains = [], []
    for (i, s), wav in zip(items, wavs):
        rel = f"audio/{prompts[i]['prompt_id']}-{s}.{cfg.audio_format}"
        gains.append(write_audio(out / rel, wav.numpy(), sample_rate))
        paths.append(rel)
    return paths, gains


def finish(cfg: RolloutConfig, out: Path, prompts, chunks, timings, num_processes, clips_done: int) -> dict:
    """Checks every shard, writes `summary.json` and, last, `manifest.json`."""
    shards = [shard_path(out, k) for k in range(len(chunks))]
    missing = [str(p) for k, p in enumerate(shards) if not valid_shard(p, keys_of(prompts, chunks[k]))]
    if missing:
        raise RuntimeError(f"{len(missing)} shard(s) incomplete after the run: {missing[:5]}; rerun the same command.")
    ds = load_rollout(out, require_manifest=False)
    summary = {"rows": len(ds), "expected_rows": len(prompts) * cfg.num_generations, "processes": num_processes}
    summary.update(reward_summary(ds, cfg.max_nan_fraction, out))
    total = sum(timings.values())
    summary["seconds_main_process"] = {k: round(v, 3) for k, v in timings.items()}
    summary["clips_generated_by_main_process"] = clips_done
    summary["clips_per_second_main_process"] = {
        k: (round(clips_done / v, 2) if v > 0 else None) for k, v in timings.items()
    }
    summary["stage_share"] = {k: (round(v / total, 4) if total else 0.0) for k, v in timings.items()}
    summary["write_fraction"] = summary["stage_share"]["write"]
    atomic_write_json(out / "summary.json", summary, sort_keys=True)
    write_manifest(out, shards, len(ds))
    print(json.dumps(summary, indent=2))
    return summary


# -------------------------------------------------------------------------------------------- rescoring
def rescore(cfg: RolloutConfig) -> dict:
    """Adds (or refreshes) reward columns from the stored audio without regenerating; unreadable audio is reported
    by row and scored NaN."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(cfg.output_dir)
    if not (out / "manifest.json").is_file():
        raise FileNotFoundError(f"{out} has no complete rollout to rescore (no manifest.json).")
    meta = json.loads((out / "run.json").read_text())
    if meta["settings"].get("audio_format") == "none":
        raise ValueError(f"{out} was rolled out with --audio_format none: there is no audio to rescore.")
    cfg.check_rewards()
    rewards = build_rewards(cfg.rewards, cfg.clap_checkpoint, cfg.aesthetics_checkpoint, "cpu")
    report: dict = {"unreadable": []}
    for shard in sorted((out / "data").glob("shard-*.parquet")):
        table = pq.read_table(shard)
        rows = table.to_pylist()
        if "audio_gain" not in table.column_names and not report.get("warned"):
            report["warned"] = True  # told once per table
            logger.warning(
                "%s predates the audio_gain column: clips above full scale were stored at peak 1 without a record, "
                "so they are rescored quieter than they were scored. Roll out again for a table that rescores exactly.",
                out,
            )
        batch = read_clips(out, rows, meta["sample_rate"], report["unreadable"])
        cols = score_batch(
            rewards, batch, meta["sample_rate"], [r["prompt"] for r in rows], [r["attributes"] for r in rows]
        )
        for name, values in cols.items():
            if name in table.column_names:
                table = table.drop_columns([name])
            table = table.append_column(name, pa.array(values.tolist(), pa.float64()))
        tmp = shard.with_name(f".{shard.name}.tmp")
        pq.write_table(table, tmp)
        tmp.replace(shard)
    meta["rewards"].update(
        {n: {"model_id": r.model_id, "checkpoint_hash": r.checkpoint_hash} for n, r in rewards.items()}
    )
    atomic_write_json(out / "run.json", meta, sort_keys=True)
    if report["unreadable"]:
        logger.warning(
            "rescore: %d unreadable clip(s): %s",
            len(report["unreadable"]),
            ", ".join(f"{u['prompt_id']}/{u['sample_index']}" for u in report["unreadable"][:10]),
        )
    report.pop("warned", None)
    print(json.dumps(report, indent=2))
    return report


def read_clips(out: Path, rows: list[dict], sample_rate: int, unreadable: list) -> torch.Tensor:
    """A shard's clips at the level they were scored, `(B, N)`; an unreadable clip is NaN (so it scores NaN) and is
    listed in `unreadable`."""
    wavs = []
    for r in rows:
        try:
            wav, file_sr = read_audio(out / r["audio_path"], r.get("audio_gain"))
            if file_sr != sample_rate:
                raise ValueError(f"sample rate {file_sr} != {sample_rate}")
            wavs.append(torch.from_numpy(np.asarray(wav, dtype=np.float32)))
        except Exception as e:  # noqa: BLE001 - reported by row, others still scored
            unreadable.append(
                {"prompt_id": r["prompt_id"], "sample_index": r["sample_index"], "path": r["audio_path"],
                 "error": str(e)[:200]}
            )  # fmt: skip
            wavs.append(torch.full((sample_rate,), float("nan")))
    n = max(len(w) for w in wavs)
    return torch.stack([torch.nn.functional.pad(w, (0, n - len(w))) for w in wavs])


def make_parser():
    from trl import TrlParser

    return TrlParser((RolloutConfig,))


def main(cfg: RolloutConfig) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return rescore(cfg) if cfg.rescore else rollout(cfg)


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
