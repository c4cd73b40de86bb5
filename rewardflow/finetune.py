"""Reward-weighted fine-tuning of a flow-matching generator on a rollout table (paper §4, Algorithm 2, step 2).

    accelerate launch rewardflow/finetune.py --reward clap --tau 0.1                     # on outputs/rollout
    accelerate launch rewardflow/finetune.py --rollout outputs/rollout --reward 'clap:1,aesthetics:0.5' \
        --weighting standardized --tau 1 --use_peft --lora_r 16 --output_dir outputs/finetune-lora
    accelerate launch --config_file experiments/accelerate_configs/multi_gpu.yaml rewardflow/finetune.py ...
    python rewardflow/finetune.py --rounds 3 ...      # rollout -> fine-tune, three times (after ORW-CFM)

Layout of `<output_dir>` (with `--rounds N > 1`, one such folder per round: `<output_dir>/round-<k>/`, the rollouts
of rounds 2..N in `round-<k>/rollout/`):
    finetune_run.json   objective, model and rollout of the run (resuming with other values warns or stops)
    checkpoint-<step>/  Trainer checkpoints (`--resume_from_checkpoint latest` takes the newest complete one)
    final/              the tuned generator (`base_model.generators.load_generator`): merged weights, `adapter/`
                        alone with LoRA, `README.md` model card, `metrics.json`; written last, atomically
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import resource
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
    "model_type",
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
    from rewardflow.objectives import finite_rows, resolve_reward, reward_weights
    from rewardflow.rollout_table import load_rollout

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
    sample_indices = list(np.asarray(ds["sample_index"])[idx])
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
        "sample_indices": [s for s, k in zip(sample_indices, nz) if k],
        "rewards": rewards[idx][nz],
        "weights": weights[nz],
        "table_weights": weights,  # before top-k filtering: its ESS counts the dropped rows
        "dropped_nan": dropped,
        "dropped_topk": int((~nz).sum()),
        "meta": meta,
    }


def load_pair_table(args: RewardFlowConfig, rollout_dir: str | os.PathLike, pipe) -> dict:
    """Preference pairs for `--objective dpo`: by ranking each prompt's clips by `--reward` (`--pairs reward`:
    best vs worst, CRPO) or from the listeners' answers beside the rollout (`--pairs preferences`; ties and skips
    left out). Returns the keys `load_training_table` does, with `latents_l` the losers."""
    from rewardflow.objectives import ranked_pairs
    from rewardflow.preferences import clip_id, load_preferences

    table = load_training_table(dataclasses.replace(args, weighting="exp", tau=0.0), rollout_dir, pipe)
    ids = [clip_id(p, s) for p, s in zip(table["prompt_ids"], table["sample_indices"])]
    if args.pairs == "reward":
        pairs = ranked_pairs(table["rewards"], table["prompt_ids"])
    else:
        where = {c: i for i, c in enumerate(ids)}
        prefs = [p for p in load_preferences(rollout_dir) if p["choice"] in ("a", "b")]
        if not prefs:
            raise ValueError(f"--pairs preferences: no answered a/b pairs in {Path(rollout_dir) / 'preferences'}; "
                             "label some with `rewardflow label --rollout ...`, or use --pairs reward.")  # fmt: skip
        pairs = [(where[p["clip_a"]], where[p["clip_b"]]) if p["choice"] == "a" else (where[p["clip_b"]], where[p["clip_a"]])
                 for p in prefs if p["clip_a"] in where and p["clip_b"] in where]  # fmt: skip
    if not pairs:
        raise ValueError(
            f"no preference pairs from {rollout_dir} (every prompt's clips score the same by {args.reward!r})."
        )
    win, lose = (np.array(x) for x in zip(*pairs))
    return {**table, "latents": table["latents"][win], "latents_l": table["latents"][lose],
            "prompts": [table["prompts"][i] for i in win], "prompt_ids": [table["prompt_ids"][i] for i in win],
            "rewards": table["rewards"][win], "weights": np.ones(len(win)), "table_weights": np.ones(len(win))}  # fmt: skip


def encode_prompts(text_encoder, prompts: list[str]) -> list[torch.Tensor]:
    """Hidden states per row, each unique prompt encoded once."""
    from base_model.training import encode_texts

    unique = sorted(set(prompts))
    enc = dict(zip(unique, encode_texts(text_encoder, unique)))
    return [enc[p] for p in prompts]


# ------------------------------------------------------------------------------------------------ run state
def check_resume(out: Path, run: dict, resuming: bool) -> None:
    """Compares this run with the one that wrote `out`: a changed objective warns, a changed model shape stops.
    A setting missing from the old `finetune_run.json` (added to the toolkit since) counts as its default."""
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
    # a key the old run lacks is a setting added since: that run trained with its default
    defaults = {f.name: f.default for f in dataclasses.fields(RewardFlowConfig)}
    before = {k: old["objective"].get(k, defaults.get(k)) for k in run["objective"]}
    diff = {k: (before[k], v) for k, v in run["objective"].items() if before[k] != v}
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


def lora_config(model_args, targets: str | list[str]):
    """A `peft.LoraConfig` from TRL's `ModelConfig` fields (task type left unset: this is not a language model);
    `targets` (the generator's `lora_target_modules`) when `--lora_target_modules` is not given."""
    from peft import LoraConfig

    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target_modules or targets,
        modules_to_save=model_args.lora_modules_to_save,
        use_rslora=model_args.use_rslora,
        use_dora=model_args.use_dora,
    )


def build_policy(args: RewardFlowConfig, model_args, pipe, model_id: str, start_adapter, reference_model):
    """The trainable model (LoRA-wrapped or to be wrapped), its `peft_config`, the frozen reference (None: a copy
    made by the trainer, or the disabled adapter) and how the card names the reference."""
    from base_model.generators import load_generator

    use_peft = bool(model_args is not None and model_args.use_peft)
    model, peft_config = pipe.model.train(), None
    if use_peft:
        if start_adapter:  # a later round continues the same adapter, so "adapters off" is still the base model
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, start_adapter, is_trainable=True)
        else:
            peft_config = lora_config(model_args, model.lora_target_modules)
    ref_model, reference = None, ("adapters disabled" if use_peft else f"frozen copy of {model_id}")
    ref_id = reference_model or args.reference_model
    if ref_id and args.beta > 0 and not use_peft:
        ref_model = load_generator(ref_id).model
        reference = f"frozen {ref_id}"
    return model, peft_config, ref_model, reference


def run_record(args, model_args, model_id, start_adapter, reference, rollout_dir, meta, pipe) -> dict:
    """What defines the run, written to `finetune_run.json` and checked on resume."""
    use_peft = bool(model_args is not None and model_args.use_peft)
    return {
        "objective": args.objective_settings(),
        "model": model_id,
        "start_adapter": start_adapter,
        "reference": reference,
        "rollout": str(rollout_dir),
        "rollout_model": meta.get("model"),
        "use_peft": use_peft,
        "lora": {k: v for k, v in asdict(model_args).items() if k.startswith(("lora_", "use_"))} if use_peft else None,
        "model_config": {k: getattr(pipe.model.config, k, None) for k in SHAPE_KEYS},
        "batch_size": args.per_device_train_batch_size,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "command": " ".join(sys.argv),
    }


def run_metrics(trainer, data: dict, dataset, result, train_seconds: float, device, start: int) -> dict:
    """The run's `metrics.json`. `train_seconds` and `seconds_per_step` cover the steps this invocation trained, those
    after `start` (`resumed_from_step`: the step of the checkpoint it resumed from, else 0)."""
    from rewardflow.objectives import effective_sample_size

    history = trainer.state.log_history
    steps = trainer.state.global_step
    return {
        "rows": len(dataset),
        "dropped_nan_rows": data["dropped_nan"],
        "dropped_topk_rows": data["dropped_topk"],
        "reward_mean": float(np.mean(data["rewards"])),
        "reward_std": float(np.std(data["rewards"])),
        "weights_ess": effective_sample_size(data["table_weights"]),
        "weights_max_min_ratio": float(data["weights"].max() / data["weights"].min()),
        "steps": steps,
        "resumed_from_step": start,
        "world_size": trainer.args.world_size,
        "train_seconds": round(train_seconds, 2),
        "seconds_per_step": round(train_seconds / max(steps - start, 1), 4),
        "peak_memory_gib": _peak_memory_gib(device),
        "peak_memory_kind": "cuda max allocated" if device.type == "cuda" else "process peak RSS",
        "train_loss": result.training_loss,
        "nan_loss_steps": trainer.nan_loss_steps,
        "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "last_log": next((h for h in reversed(history) if "loss" in h), {}),
    }


def build_guardrail(args: RewardFlowConfig, model_id: str, is_main: bool):
    """The guardrail callback of `--guard_every N` (None when off): its prompts, references and rewards are
    loaded and checked here, before training."""
    if not args.guard_every:
        return None
    from base_model.generators import load_generator
    from reward_models.compose import parse_reward_spec
    from rewardflow.evaluate import EvaluateConfig, load_eval_prompts
    from rewardflow.guardrail import GuardEvaluator, GuardrailCallback, GuardRule
    from rewardflow.scoring import build_rewards

    rows, reference, why = load_eval_prompts(
        EvaluateConfig(
            prompts=args.guard_prompts, max_prompts=args.guard_num_prompts, first_prompt=args.guard_first_prompt
        )
    )
    if reference is None:
        raise ValueError(f"--guard_prompts {args.guard_prompts}: the guardrail needs reference audio for its fidelity "
                         f"bound ({why}); use synthcaps:<split>.")  # fmt: skip
    names = {n.split("/")[0] for n, _ in parse_reward_spec(args.reward)} | set(
        args.guard_rewards or ["clap", "aesthetics"]
    )
    rewards = build_rewards(sorted(names), device="cpu")
    select = args.guard_select or args.reward
    sampling = {k: v for k, v in json.loads((Path(args.rollout) / "run.json").read_text())["settings"].items()
                if k in ("num_iterations", "num_steps", "method", "cfg_scale", "temperature")}  # fmt: skip
    evaluator = GuardEvaluator(
        load_generator(model_id),
        rows,
        np.stack([reference[r["prompt_id"]] for r in rows]),
        rewards,
        sampling,
        select=select,
    )
    rule = GuardRule(select=select, max_increase=args.guard_max_fd_increase)
    return GuardrailCallback(evaluator, rule, args.guard_every, args.guard_patience, args.output_dir, is_main)


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
    from base_model.files import atomic_write_text
    from base_model.generators import load_generator
    from base_model.training import latest_complete_checkpoint
    from rewardflow.distributed import process_state
    from rewardflow.finetune_trainer import PairDataset, RewardFlowTrainer, RewardLatentDataset

    state = process_state()
    rollout_dir = rollout_dir or args.rollout
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--output_dir {out} is a file; pass a folder (it is created when missing).")
    # Everything that can be checked is checked before training: the table, the reward, the shapes, the resume.
    model_id = start_model or args.model or rollout_model_id(rollout_dir)
    pipe = load_generator(model_id)
    if args.loss_cfg_scale != 1 and not hasattr(pipe.model, "guidance_context"):
        raise ValueError(
            f"--loss_cfg_scale {args.loss_cfg_scale}: {model_id} ({type(pipe.model).__name__}) has no null prompt "
            "to guide against; use --loss_cfg_scale 1."
        )
    if args.objective == "dpo":
        data = load_pair_table(args, rollout_dir, pipe)
        dataset = PairDataset(data["latents"], data["latents_l"], encode_prompts(pipe.text_encoder, data["prompts"]))
    else:
        data = load_training_table(args, rollout_dir, pipe)
        text = encode_prompts(pipe.text_encoder, data["prompts"])
        dataset = RewardLatentDataset(data["latents"], text, data["weights"], data["rewards"])
    model, peft_config, ref_model, reference = build_policy(
        args, model_args, pipe, model_id, start_adapter, reference_model
    )

    resume = args.resume_from_checkpoint
    if resume == "latest":
        resume = latest_complete_checkpoint(out)
        if resume is None:
            logger.info("no complete checkpoint in %s: starting from step 0", out)
    run = run_record(args, model_args, model_id, start_adapter, reference, rollout_dir, data["meta"], pipe)
    if state.is_main_process:
        check_resume(out, run, resume is not None)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "finetune_run.json", json.dumps(run, indent=2, sort_keys=True))
    state.wait_for_everyone()

    guard = build_guardrail(args, model_id, state.is_main_process)
    trainer = RewardFlowTrainer(
        model, args, dataset, ref_model=ref_model, peft_config=peft_config,
        callbacks=(callbacks or []) + ([guard] if guard else []),
    )  # fmt: skip
    if guard:
        guard.bind(trainer)
    device = trainer.accelerator.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # read before training: the checkpoint resumed from may be rotated away by the time the run ends
    resumed_state = Path(resume) / "trainer_state.json" if resume else None
    first_step = (
        json.loads(resumed_state.read_text())["global_step"] if resumed_state and resumed_state.is_file() else 0
    )
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    metrics = run_metrics(trainer, data, dataset, result, time.perf_counter() - start, device, first_step)
    if guard:
        guard.restore_best(trainer.model)
        metrics["guardrail"] = guard.summary()
    if state.is_main_process:
        trainer.save_final(pipe, out, run, metrics)
    state.wait_for_everyone()
    return metrics


def rollout_model_id(rollout_dir) -> str:
    """The model a rollout was made with (its `run.json`), after checking the rollout is there and complete."""
    from rewardflow.rollout_table import load_rollout

    path = Path(rollout_dir)
    if not (path / "manifest.json").is_file():
        load_rollout(path)  # raises with the command that makes or finishes it
    return json.loads((path / "run.json").read_text())["model"]["id"]


def main(args: RewardFlowConfig, model_args=None, callbacks: list | None = None) -> dict:
    """`--rounds 1`: one fine-tuning run. `--rounds N`: rollout by the newest policy, then fine-tune, N times."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.rounds == 1:
        metrics = finetune(args, model_args, callbacks=callbacks)
        print(json.dumps({k: v for k, v in metrics.items() if k != "last_log"}, indent=2))
        return metrics
    return run_rounds(args, model_args, callbacks)


def round_rollout_settings(first_meta: dict, model: str, k: int) -> dict:
    """The rollout settings of online round `k` > 1: the first rollout's (its `run.json`), with `model` (round
    k - 1's tuned pipeline) and the first rollout's seed + k - 1."""
    settings = dict(first_meta["settings"])
    settings.update(model=model, seed=settings["seed"] + k - 1)
    return settings


def round_reference(args: RewardFlowConfig, base_model: str, start: str) -> str:
    """The frozen reference of a round that starts from `start`: `--reference_model`, else the starting model of
    round 1 (`--round_reference start`) or this round's own starting point, round k - 1's model (`previous`)."""
    if args.reference_model:
        return args.reference_model
    return start if args.round_reference == "previous" else base_model


def run_rounds(args: RewardFlowConfig, model_args=None, callbacks: list | None = None) -> dict:
    """Online rounds (after ORW-CFM): round 1 trains on `--rollout`; round k > 1 first rolls out with round k-1's
    tuned pipeline, with the first rollout's generation settings and seed + k - 1. The reference is the starting
    model in every round (with LoRA the adapter carries over, so "adapters off" is still the starting model), or with
    `--round_reference previous` round k - 1's tuned model (full fine-tuning only). A finished round (its `final/`
    exists) is skipped on rerun; an unfinished one resumes from its checkpoints."""
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
    if use_peft and args.round_reference == "previous":
        raise ValueError(
            "--round_reference previous needs full fine-tuning: with --use_peft the reference is the adapter switched "
            "off, which is the starting model in every round. Drop --use_peft or use --round_reference start."
        )
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
            settings = round_rollout_settings(first_meta, str(prev), k)
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
            reference_model=None if use_peft else round_reference(args, base_model, start),
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
