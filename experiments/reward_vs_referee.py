"""What a reward buys next to what a reward that agrees with the referee buys: one rollout, its reward-referee
agreement (rewardflow/agreement.py), fine-tunes on the reward(s) and on the referee itself (the upper bound of
reward-weighted fine-tuning on this table), all evaluated against the base on held-out and on validation prompts.

    python experiments/reward_vs_referee.py                       # CPU: about 45 min here (rollout 256 x 4 is most)
    python experiments/reward_vs_referee.py --rollout outputs/ro  # reuse a rollout (made with torchrun on 2 ranks)

Runs are `reward:weighting` (`clap:standardized`, `verifier:topk`, ...). Rerunning resumes: the rollout completes its
missing shards, finished fine-tunes and evaluations are kept. Writes `<output_dir>/summary.md` and `results.json`,
copied to `--results_dir`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from base_model.pipeline import atomic_write_text  # noqa: E402
from experiments.results_io import ensure_rollout, publish  # noqa: E402


@dataclass
class RefereeArguments:
    output_dir: str = field(default="outputs/reward_vs_referee", metadata={"help": "Rollout, runs, evaluations."})
    model: str = field(default="synthcaps", metadata={"help": "Pretrained pipeline (folder or bundled name)."})
    rollout: str = field(default="", metadata={"help": "Rollout table (default: made here from --model)."})
    rollout_prompts: int = field(default=256, metadata={"help": "Training prompts rolled out when making one."})
    num_generations: int = field(default=4, metadata={"help": "Clips per training prompt when making one."})
    referee: str = field(default="verifier", metadata={"help": "Score column playing the independent referee."})
    rewards: list[str] = field(
        default_factory=lambda: ["clap", "aesthetics", "clap:1,aesthetics:1"],
        metadata={"help": "Rewards whose agreement with the referee is measured."},
    )
    runs: list[str] = field(
        default_factory=lambda: ["clap:standardized", "clap:topk", "verifier:topk"],
        metadata={"help": "Fine-tunes as reward:weighting ('verifier:topk': the referee as reward)."},
    )
    tau: float = field(default=1.0, metadata={"help": "τ of the exp-family weightings."})
    top_k: float = field(default=0.25, metadata={"help": "`topk`: fraction of each prompt's samples kept."})
    beta: float = field(default=1.0, metadata={"help": "Reference regulariser weight."})
    max_steps: int = field(default=300, metadata={"help": "Fine-tuning steps per run."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Batch size."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate."})
    eval_splits: list[str] = field(
        default_factory=lambda: ["heldout", "validation"],
        metadata={"help": "SynthCaps splits evaluated (heldout: unseen compositions; validation: the training mix)."},
    )
    eval_max_prompts: int = field(default=96, metadata={"help": "Evaluation prompts per split."})
    num_steps: int = field(default=25, metadata={"help": "ODE steps per decoding iteration (rollout and eval)."})
    results_dir: str = field(
        default="experiments/results/reward_vs_referee",
        metadata={"help": "Copy summary.md and results.json here ('' to skip): the committed record."},
    )
    seed: int = field(default=42, metadata={"help": "Seed of every fine-tune (TrainingArguments' default)."})


def run_name(run: str) -> str:
    return run.replace(":", "-").replace(",", "+")


def main(a: RefereeArguments) -> dict:
    from rewardflow.agreement import AgreementConfig, agreement
    from rewardflow.evaluate import EvaluateConfig, evaluate
    from rewardflow.finetune import finetune
    from rewardflow.finetune_config import RewardFlowConfig

    out = Path(a.output_dir)
    rollout_dir = ensure_rollout(
        a.rollout,
        out,
        model=a.model,
        max_prompts=a.rollout_prompts,
        num_generations=a.num_generations,
        num_steps=a.num_steps,
    )
    agree = agreement(AgreementConfig(rollout=rollout_dir, referee=a.referee, rewards=a.rewards))
    finals = {}
    for run in a.runs:
        reward, _, weighting = run.rpartition(":")
        folder = out / "runs" / run_name(run)
        if not (folder / "final" / "metrics.json").is_file():
            finetune(
                RewardFlowConfig(
                    output_dir=str(folder),
                    rollout=rollout_dir,
                    model=a.model,
                    reward=reward,
                    weighting=weighting,
                    tau=a.tau,
                    top_k=a.top_k,
                    beta=a.beta,
                    max_steps=a.max_steps,
                    per_device_train_batch_size=a.per_device_train_batch_size,
                    learning_rate=a.learning_rate,
                    save_steps=max(a.max_steps // 3, 1),
                    seed=a.seed,
                    resume_from_checkpoint="latest",
                    disable_tqdm=True,
                    report_to="none",
                )
            )
        finals[run] = str(folder / "final")
    models = [a.model, *finals.values()]
    evaluations = {}
    for split in a.eval_splits:
        path = out / f"evaluation-{split}.json"
        cfg = EvaluateConfig(
            models=models,
            prompts=f"synthcaps:{split}",
            max_prompts=a.eval_max_prompts,
            num_steps=a.num_steps,
            output_json=str(path),
        )
        old = json.loads(path.read_text()).get("settings", {}) if path.is_file() else {}
        if old != json.loads(json.dumps(asdict(cfg))):  # kept only when made with exactly these settings
            evaluate(cfg)
        evaluations[split] = json.loads(path.read_text())
    results = {"settings": vars(a), "agreement": agree["rewards"], "runs": {}}
    for run, final in finals.items():
        results["runs"][run] = {
            "train": json.loads((Path(final) / "metrics.json").read_text()),
            **{split: ev["paired_vs_first"][final] for split, ev in evaluations.items()},
            "absolute": {split: ev["models"][final] for split, ev in evaluations.items()},
        }
    results["base"] = {split: ev["models"][a.model] for split, ev in evaluations.items()}
    results["metric_info"] = next(iter(evaluations.values()))["metric_info"] if evaluations else {}
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    atomic_write_text(out / "summary.md", summary(results, agree["table"]))
    print((out / "summary.md").read_text())
    publish(out, a.results_dir, ("summary.md", "results.json"))
    return results


DELTAS = ("clap", "aesthetics", "verifier", "kl")
SETS = ("mel_frechet", "fad_clap")  # set-level distances: no paired interval


def summary(results: dict, agreement_table: str) -> str:
    a = results["settings"]
    lines = [
        f"# Reward vs referee ({a['model']}, referee `{a['referee']}`)",
        "",
        agreement_table,
        "",
        f"Fine-tunes: {a['max_steps']} steps × batch {a['per_device_train_batch_size']}, lr {a['learning_rate']}, "
        f"β {a['beta']}, τ {a['tau']} (exp-family weightings), top_k {a['top_k']} (`topk`). Paired differences to the "
        f"base (95% bootstrap CI over prompts), {a['eval_max_prompts']} prompts per split, same seeds for every model.",
    ]
    for split in a["eval_splits"]:
        base = results["base"][split]
        head = [f"Δ {m}" for m in DELTAS] + list(SETS)
        lines += ["", f"## {split} prompts", "", "| run | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
        lines.append("| base (absolute) | " + " | ".join(_num(base.get(m)) for m in DELTAS + SETS) + " |")
        for run, r in results["runs"].items():
            cells = []
            for m in DELTAS:
                d = r[split].get(m)
                cells.append(f"{d['mean']:+.4f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]" if d else "n/a")
            cells += [_num(r["absolute"][split].get(m)) for m in SETS]
            lines.append(f"| {run} | " + " | ".join(cells) + " |")
    lines += ["", "Metric definitions: " + "; ".join(f"{k}: {v}" for k, v in results["metric_info"].items())]
    return "\n".join(lines) + "\n"


def _num(v) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else "n/a"


def make_parser():
    from trl import TrlParser

    return TrlParser((RefereeArguments,))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
