"""Reward-weighted fine-tuning of MaskAudioFlow on a rollout table (paper §4, Algorithm 2, step 2).

    accelerate launch rewardflow/finetune.py --reward clap --tau 0.1                     # on outputs/rollout
    accelerate launch rewardflow/finetune.py --rollout outputs/rollout --reward 'clap:1,aesthetics:0.5' \
        --weighting standardized --tau 1 --use_peft --lora_r 16 --output_dir outputs/finetune-lora
    accelerate launch --config_file experiments/accelerate_configs/multi_gpu.yaml rewardflow/finetune.py ...
    python rewardflow/finetune.py --rounds 3 ...      # rollout -> fine-tune, three times (after ORW-CFM)

Layout of `<output_dir>` (with `--rounds N > 1`, one such folder per round: `<output_dir>/round-<k>/`, the rollouts
of rounds 2..N in `round-<k>/rollout/`):
    finetune_run.json   objective, model and rollout of the run (resuming with other values warns or stops)
    checkpoint-<step>/  Trainer checkpoints (`--resume_from_checkpoint latest` takes the newest complete one)
    final/              the tuned pipeline (`MaskAudioFlowPipeline.from_pretrained`): merged weights, `adapter/`
                        alone with LoRA, `README.md` model card, `metrics.json`; written last, atomically
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import resource
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script (`accelerate launch rewardflow/finetune.py`)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewardflow.finetune_config import RewardFlowConfig  # noqa: E402

logger = logging.getLogger("rewardflow.finetune")

# Config keys that fix the network's shape: resuming with other values is an error.
SHAPE_KEYS = (
    "latent_channels",
    "text_hidden_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "mlp_ratio",
    "head_type",
    "head_layers",
    "head_hidden_size",
    "flow_type",
)


# --------------------------------------------------------------------------------------------------- data
def load_training_table(args: RewardFlowConfig, rollout_dir: str | os.PathLike, pipe) -> dict:
    """Reads a rollout, checks it fits the model, resolves `--reward`, drops NaN rows and computes the weights.

    Returns `{"latents": (N, T, C) float16, "prompts": [N], "prompt_ids": [N], "rewards": (N,), "weights": (N,),
    "dropped_nan": int, "dropped_topk": int, "meta": run.json}`. Everything is checked before any training.
    """
    from rewardflow.rollout import load_rollout
    from rewardflow.weighting import finite_rows, resolve_reward, reward_weights

    ds = load_rollout(rollout_dir)
    meta = json.loads(ds.info.description or "{}")
    resolve_reward(args.reward, column_names=ds.column_names)  # unknown names fail before anything is read
    cfg = pipe.model.config
    shapes = {tuple(s) for s in ds["latent_shape"]}
    if len(shapes) != 1:
        raise ValueError(f"rollout {rollout_dir} mixes latent shapes {sorted(shapes)}; one rollout, one clip length.")
    T, C = next(iter(shapes))
    if C != cfg.latent_channels:
        raise ValueError(
            f"rollout {rollout_dir} has {C}-channel latents but the model expects {cfg.latent_channels}: it was made "
            "with another VAE. Fine-tune the model the rollout was made with (--model), or roll out again."
        )
    if T != pipe.num_frames():
        raise ValueError(
            f"rollout {rollout_dir} has {T}-frame latents but the pipeline's {pipe.clip_seconds} s clips have "
            f"{pipe.num_frames()} frames. Roll out with this pipeline, or fine-tune the one the rollout used."
        )
    table = {c: np.asarray(ds[c], dtype=np.float64) for c in ds.column_names if c.startswith("reward/")}
    rewards, _ = resolve_reward(args.reward, table)
    keep, dropped = finite_rows(rewards, args.max_nan_fraction)
    if dropped:
        logger.warning("dropped %d of %d rows whose reward %r is NaN/inf", dropped, len(rewards), args.reward)
    idx = np.flatnonzero(keep)
    prompt_ids = list(np.asarray(ds["prompt_id"], dtype=object)[idx])
    prompts = list(np.asarray(ds["prompt"], dtype=object)[idx])
    weights = reward_weights(rewards[idx], prompt_ids, args.tau, args.weighting, args.weight_clip, args.top_k)
    lat = np.stack([np.frombuffer(b, dtype=np.float16).reshape(T, C) for b in np.asarray(ds["latent"])[idx]])
    if not np.isfinite(lat).all():
        bad = int((~np.isfinite(lat)).any(axis=(1, 2)).sum())
        logger.warning("%d rollout latents hold NaN/inf; their steps will be skipped", bad)
    nz = weights > 0  # topk drops the rest: they would cost compute and add nothing to the weighted loss
    return {
        "latents": torch.from_numpy(lat[nz]),
        "prompts": [p for p, k in zip(prompts, nz) if k],
        "prompt_ids": [p for p, k in zip(prompt_ids, nz) if k],
        "rewards": rewards[idx][nz],
        "weights": weights[nz],
        "table_weights": weights,  # before top-k filtering: its ESS counts the dropped rows
        "dropped_nan": dropped,
        "dropped_topk": int((~nz).sum()),
        "meta": meta,
    }


def encode_prompts(text_encoder, prompts: list[str]) -> list[torch.Tensor]:
    """Hidden states per row, each unique prompt encoded once."""
    from base_model.training import encode_texts

    unique = sorted(set(prompts))
    enc = dict(zip(unique, encode_texts(text_encoder, unique)))
    return [enc[p] for p in prompts]


# ------------------------------------------------------------------------------------------------ run state
def check_resume(out: Path, run: dict, resuming: bool) -> None:
    """Compares this run with the one that wrote `out`: a changed objective warns, a changed model shape stops."""
    path = out / "finetune_run.json"
    if not (resuming and path.is_file()):
        return
    old = json.loads(path.read_text())
    shape_diff = {
        k: (old["model_config"].get(k), run["model_config"].get(k))
        for k in SHAPE_KEYS
        if old["model_config"].get(k) != run["model_config"].get(k)
    }
    if shape_diff or old.get("use_peft") != run["use_peft"]:
        lines = "\n".join(f"  {k}: {a!r} -> {b!r}" for k, (a, b) in shape_diff.items())
        if old.get("use_peft") != run["use_peft"]:
            lines += f"\n  use_peft: {old.get('use_peft')!r} -> {run['use_peft']!r}"
        raise ValueError(
            f"cannot resume {out}: its checkpoints are for another model shape:\n{lines}\n"
            "Resume with the original --model, or start a new --output_dir."
        )
    diff = {k: (old["objective"].get(k), v) for k, v in run["objective"].items() if old["objective"].get(k) != v}
    if old.get("rollout") != run["rollout"]:
        diff["rollout"] = (old.get("rollout"), run["rollout"])
    if diff:
        logger.warning(
            "resuming %s with a changed objective (the checkpoint was trained with the old values):\n%s",
            out,
            "\n".join(f"  {k}: {a!r} -> {b!r}" for k, (a, b) in diff.items()),
        )


def _peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)  # CPU: peak RSS


def lora_config(model_args):
    """A `peft.LoraConfig` from TRL's `ModelConfig` fields (task type left unset: this is not a language model)."""
    from peft import LoraConfig

    from rewardflow.finetune_trainer import DEFAULT_LORA_TARGETS

    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target_modules or DEFAULT_LORA_TARGETS,
        modules_to_save=model_args.lora_modules_to_save,
        use_rslora=model_args.use_rslora,
        use_dora=model_args.use_dora,
    )


def _baseline_note(objective: dict) -> str:
    if objective["weighting"] != "advantage":
        return ""
    return f", loss weight w − {objective['advantage_baseline']} (baseline)"


def model_card(run: dict, metrics: dict) -> str:
    o = run["objective"]
    return f"""---
library_name: rewardflow
tags: [text-to-audio, maskaudioflow, reward-weighted-flow-matching]
---
# MaskAudioFlow, reward fine-tuned

Fine-tuned with `rewardflow/finetune.py` (reward-weighted flow matching against a frozen reference, Huang et al. §4).

| | |
|---|---|
| base model | `{run["model"]}` |
| rollout table | `{run["rollout"]}` ({metrics["rows"]} rows used, {metrics["dropped_nan_rows"]} dropped for NaN rewards) |
| reward | `{o["reward"]}` |
| weighting | `{o["weighting"]}`, τ = {o["tau"]}{_baseline_note(o)} |
| regulariser | β = {o["beta"]} · ‖v_θ − v_ref‖², reference = {run["reference"]} |
| LoRA | {run["use_peft"]} |
| steps | {metrics["steps"]} at batch {run["batch_size"]}, lr {run["learning_rate"]}, seed {run["seed"]} |
| weights over the table | ESS {metrics["weights_ess"]:.3f} of N, max/min {metrics["weights_max_min_ratio"]:.4g} |
| train time | {metrics["train_seconds"]} s ({metrics["seconds_per_step"]} s/step), peak memory \
{metrics["peak_memory_gib"]} GiB ({metrics["peak_memory_kind"]}) |

Command: `{run["command"]}`

`metrics.json` beside this card holds every figure; `adapter/` (LoRA runs) holds the adapter alone.
"""


# -------------------------------------------------------------------------------------------------- train
def finetune(
    args: RewardFlowConfig,
    model_args=None,
    rollout_dir: str | None = None,
    start_model: str | None = None,
    start_adapter: str | None = None,
    reference_model: str | None = None,
    callbacks: list | None = None,
) -> dict:
    """One fine-tuning run of `args` on `rollout_dir` into `args.output_dir`; returns its metrics."""
    from base_model import MaskAudioFlow, MaskAudioFlowPipeline
    from base_model.pipeline import atomic_write_text, resolve_pipeline_path
    from base_model.training import latest_complete_checkpoint
    from rewardflow.distributed import process_state
    from rewardflow.finetune_trainer import RewardFlowTrainer, RewardLatentDataset
    from rewardflow.weighting import effective_sample_size

    state = process_state()
    rollout_dir = rollout_dir or args.rollout
    if not (Path(rollout_dir) / "manifest.json").is_file():
        raise FileNotFoundError(
            f"no complete rollout at {rollout_dir}. Make one first: `accelerate launch rewardflow/rollout.py "
            f"--output_dir {rollout_dir}` (or pass --rollout <its output_dir>)."
        )
    meta = json.loads((Path(rollout_dir) / "run.json").read_text())
    model_id = start_model or args.model or meta["model"]["id"]
    use_peft = bool(model_args is not None and model_args.use_peft)
    pipe = MaskAudioFlowPipeline.from_pretrained(model_id)
    data = load_training_table(args, rollout_dir, pipe)
    text = encode_prompts(pipe.text_encoder, data["prompts"])
    dataset = RewardLatentDataset(data["latents"], text, data["weights"], data["rewards"])

    model = pipe.model.train()
    peft_config = None
    if use_peft:
        if start_adapter:  # a later round continues the same adapter, so "adapters off" is still the base model
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, start_adapter, is_trainable=True)
        else:
            peft_config = lora_config(model_args)
    ref_model = None
    reference = "adapters disabled" if use_peft else f"frozen copy of {model_id}"
    ref_id = reference_model or args.reference_model
    if ref_id and args.beta > 0 and not use_peft:
        ref_model = MaskAudioFlow.from_pretrained(resolve_pipeline_path(ref_id) / "flow")
        reference = f"frozen {ref_id}"

    out = Path(args.output_dir)
    resume = args.resume_from_checkpoint
    if resume == "latest":
        resume = latest_complete_checkpoint(out)
        if resume is None:
            logger.info("no complete checkpoint in %s: starting from step 0", out)
    run = {
        "objective": args.objective_settings(),
        "model": model_id,
        "start_adapter": start_adapter,
        "reference": reference,
        "rollout": str(rollout_dir),
        "rollout_model": meta.get("model"),
        "use_peft": use_peft,
        "lora": {k: v for k, v in asdict(model_args).items() if k.startswith(("lora_", "use_"))} if use_peft else None,
        "model_config": {k: getattr(pipe.model.config, k) for k in SHAPE_KEYS},
        "batch_size": args.per_device_train_batch_size,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "command": " ".join(sys.argv),
    }
    if state.is_main_process:
        check_resume(out, run, resume is not None)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "finetune_run.json", json.dumps(run, indent=2, sort_keys=True))
    state.wait_for_everyone()

    trainer = RewardFlowTrainer(
        model, args, dataset, ref_model=ref_model, peft_config=peft_config, callbacks=callbacks or []
    )
    device = trainer.accelerator.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.perf_counter() - start

    history = trainer.state.log_history
    last = next((h for h in reversed(history) if "loss" in h), {})
    metrics = {
        "rows": len(dataset),
        "dropped_nan_rows": data["dropped_nan"],
        "dropped_topk_rows": data["dropped_topk"],
        "reward_mean": float(np.mean(data["rewards"])),
        "reward_std": float(np.std(data["rewards"])),
        "weights_ess": effective_sample_size(data["table_weights"]),
        "weights_max_min_ratio": float(data["weights"].max() / data["weights"].min()),
        "steps": trainer.state.global_step,
        "world_size": args.world_size,
        "train_seconds": round(train_seconds, 2),
        "seconds_per_step": round(train_seconds / max(trainer.state.global_step, 1), 4),
        "peak_memory_gib": _peak_memory_gib(device),
        "peak_memory_kind": "cuda max allocated" if device.type == "cuda" else "process peak RSS",
        "train_loss": result.training_loss,
        "nan_loss_steps": trainer.nan_loss_steps,
        "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "last_log": last,
    }
    if state.is_main_process:
        save_final(trainer, pipe, out, run, metrics)
    state.wait_for_everyone()
    return metrics


def save_final(trainer, pipe, out: Path, run: dict, metrics: dict) -> Path:
    """`<out>/final`: the merged pipeline (+ `adapter/` with LoRA), model card and metrics, renamed into place."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    tmp = out / f".final.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if hasattr(model, "merge_and_unload"):
        model.save_pretrained(tmp / "adapter")
        model = model.merge_and_unload()
    pipe.model = model.eval()
    pipe.save_pretrained(tmp)
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (tmp / "README.md").write_text(model_card(run, metrics))
    final = out / "final"
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    logger.info("saved the tuned pipeline to %s", final)
    return final


def main(args: RewardFlowConfig, model_args=None, callbacks: list | None = None) -> dict:
    """`--rounds 1`: one fine-tuning run. `--rounds N`: rollout by the newest policy, then fine-tune, N times."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.rounds == 1:
        metrics = finetune(args, model_args, callbacks=callbacks)
        print(json.dumps({k: v for k, v in metrics.items() if k != "last_log"}, indent=2))
        return metrics
    return run_rounds(args, model_args, callbacks)


def run_rounds(args: RewardFlowConfig, model_args=None, callbacks: list | None = None) -> dict:
    """Online rounds (after ORW-CFM): round 1 trains on `--rollout`; round k > 1 first rolls out with round k-1's
    tuned pipeline, with the first rollout's generation settings and seed + k - 1. The reference stays the starting
    model in every round (with LoRA the adapter carries over, so "adapters off" is still the starting model).
    A finished round (its `final/` exists) is skipped on rerun; an unfinished one resumes from its checkpoints."""
    from rewardflow.distributed import process_state
    from rewardflow.rollout import rollout
    from rewardflow.rollout_config import RolloutConfig

    first = Path(args.rollout)
    if not (first / "run.json").is_file():
        raise FileNotFoundError(f"--rounds needs a first rollout at --rollout {first} (rewardflow/rollout.py).")
    first_meta = json.loads((first / "run.json").read_text())
    base_model = args.model or first_meta["model"]["id"]
    root = Path(args.output_dir)
    use_peft = bool(model_args is not None and model_args.use_peft)
    all_metrics = {}
    for k in range(1, args.rounds + 1):
        folder = root / f"round-{k}"
        if (folder / "final" / "metrics.json").is_file():
            all_metrics[k] = json.loads((folder / "final" / "metrics.json").read_text())
            logger.info("round %d already finished: %s", k, folder / "final")
            continue
        if k == 1:
            rollout_dir, start = str(first), base_model
        else:
            prev = root / f"round-{k - 1}" / "final"
            settings = dict(first_meta["settings"])
            settings.update(model=str(prev), seed=settings["seed"] + k - 1)
            rollout_dir = str(folder / "rollout")
            rollout(RolloutConfig(**settings, rewards=list(first_meta["rewards"]), output_dir=rollout_dir))
            process_state().wait_for_everyone()
            start = base_model if use_peft else str(prev)
        round_args = dataclasses.replace(args, output_dir=str(folder))
        adapter = str(root / f"round-{k - 1}" / "final" / "adapter") if (use_peft and k > 1) else None
        all_metrics[k] = finetune(
            round_args,
            model_args,
            rollout_dir=rollout_dir,
            start_model=start,
            start_adapter=adapter,
            reference_model=None if use_peft else (args.reference_model or base_model),
            callbacks=callbacks,
        )
    summary = {f"round-{k}": {"rows": m["rows"], "reward_mean": m["reward_mean"]} for k, m in all_metrics.items()}
    print(json.dumps(summary, indent=2))
    return all_metrics


def make_parser():
    from trl import ModelConfig, TrlParser

    return TrlParser((RewardFlowConfig, ModelConfig))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
