"""Compare reward models (paper Table 2) and the temperature τ: from one pretrained model and one rollout, fine-tune
with no reward weighting (τ = 0, the self-training control), CLAP, aesthetics and CLAP + aesthetics at each τ,
evaluate every run against the base on the same prompts and seeds, and write tables and plots.

    python experiments/compare_rewards.py --small        # CPU-sized: the embedded default, about half an hour here
    python experiments/compare_rewards.py --config experiments/configs/compare_rewards.yaml
    python experiments/compare_rewards.py --model my_pipeline/ --rollout my_rollout/ --eval_prompts audiocaps.csv ...

Writes `<output_dir>/`: `table.md` (one row per run, every metric or `n/a: <reason>`), `tau_ablation.md`,
`tradeoff.png` (reward gain vs Fréchet distance per run), `training_curves.png` (loss parts vs step), `results.json`.
Finished fine-tunes are kept on rerun (delete `<output_dir>/runs/<name>/final` to redo one).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.results_io import ensure_rollout, publish  # noqa: E402


@dataclass
class CompareArguments:
    output_dir: str = field(default="outputs/compare_rewards", metadata={"help": "Where runs and results go."})
    model: str = field(default="synthcaps", metadata={"help": "Pretrained pipeline (folder or bundled name)."})
    rollout: str = field(default="", metadata={"help": "Rollout table (default: made here from --model)."})
    rollout_prompts: int = field(default=96, metadata={"help": "Training prompts rolled out when making one."})
    num_generations: int = field(default=4, metadata={"help": "Clips per training prompt when making one."})
    rewards: list[str] = field(
        default_factory=lambda: ["clap", "aesthetics", "clap:1,aesthetics:1"],
        metadata={"help": "Reward specs compared (the τ = 0 control is always added)."},
    )
    taus: list[float] = field(default_factory=lambda: [0.1, 1.0, 10.0], metadata={"help": "Temperatures τ."})
    weighting: str = field(
        default="self_normalized",
        metadata={"help": "Reward weighting for every run: self_normalized = the paper's exp(τ·r) up to a constant."},
    )
    beta: float = field(default=1.0, metadata={"help": "Reference regulariser weight."})
    max_steps: int = field(default=300, metadata={"help": "Fine-tuning steps per run."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Batch size."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate."})
    eval_prompts: str = field(default="synthcaps:heldout", metadata={"help": "Evaluation prompts."})
    eval_max_prompts: int = field(default=48, metadata={"help": "Evaluation prompts used."})
    eval_audio_column: str = field(default="", metadata={"help": "Reference audio column of a caption table."})
    clap_checkpoint: str = field(default="", metadata={"help": "CLAP checkpoint (reward and evaluation)."})
    aesthetics_checkpoint: str = field(default="", metadata={"help": "Aesthetics checkpoint."})
    num_steps: int = field(default=25, metadata={"help": "ODE steps per decoding iteration (rollout and eval)."})
    results_dir: str = field(
        default="experiments/results/compare_rewards",
        metadata={"help": "Copy the tables, plots and results.json here ('' to skip): the committed record."},
    )
    small: bool = field(default=False, metadata={"help": "CPU size: τ ∈ {1, 10}, 150 steps, 32 eval prompts."})
    seed: int = field(default=0, metadata={"help": "Seed of every fine-tune."})


def run_name(reward: str, tau: float) -> str:
    return "control-tau0" if tau == 0 else f"{reward.replace(':', '').replace(',', '+')}-tau{tau:g}"


def plan(a: CompareArguments) -> list[tuple[str, str, float]]:
    """`[(name, reward, tau)]`: the τ = 0 control first, then every reward at every τ."""
    runs = [(run_name(a.rewards[0], 0.0), a.rewards[0], 0.0)]
    runs += [(run_name(r, t), r, t) for r in a.rewards for t in a.taus]
    return runs


def main(a: CompareArguments) -> dict:
    from rewardflow.evaluate import EvaluateConfig, evaluate
    from rewardflow.finetune import finetune
    from rewardflow.finetune_config import RewardFlowConfig

    if a.small:
        a.taus, a.max_steps, a.eval_max_prompts = [1.0, 10.0], 150, 32
    out = Path(a.output_dir)
    rollout_dir = ensure_rollout(
        a.rollout,
        out,
        model=a.model,
        max_prompts=a.rollout_prompts,
        num_generations=a.num_generations,
        num_steps=a.num_steps,
        clap_checkpoint=a.clap_checkpoint,
        aesthetics_checkpoint=a.aesthetics_checkpoint,
    )
    finals, refused = {}, {}
    for name, reward, tau in plan(a):
        folder = out / "runs" / name
        if not (folder / "final" / "metrics.json").is_file():
            args = RewardFlowConfig(
                output_dir=str(folder),
                rollout=rollout_dir,
                model=a.model,
                reward=reward,
                tau=tau,
                beta=a.beta,
                weighting=a.weighting,
                max_steps=a.max_steps,
                per_device_train_batch_size=a.per_device_train_batch_size,
                learning_rate=a.learning_rate,
                save_steps=max(a.max_steps // 3, 1),
                logging_steps=10,
                seed=a.seed,
                resume_from_checkpoint="latest",
                disable_tqdm=True,
            )
            try:
                finetune(args)
            except ValueError as e:  # e.g. raw exp weights that would overflow: the row says so
                refused[name] = str(e).split(". ")[0]
                continue
        finals[name] = str(folder / "final")
    report = evaluate(
        EvaluateConfig(
            models=[a.model, *finals.values()],
            prompts=a.eval_prompts,
            audio_column=a.eval_audio_column,
            max_prompts=a.eval_max_prompts,
            num_steps=a.num_steps,
            clap_checkpoint=a.clap_checkpoint,
            aesthetics_checkpoint=a.aesthetics_checkpoint,
            output_json=str(out / "evaluation.json"),
        )
    )
    results = summarise(a, report, finals, refused)
    results["agreement"] = rollout_agreement(rollout_dir, a.rewards)
    write_outputs(out, results, finals)
    publish(out, a.results_dir, ("table.md", "tau_ablation.md", "results.json", "tradeoff.png", "training_curves.png"))
    return results


def rollout_agreement(rollout_dir: str, rewards: list[str]) -> dict:
    """Per reward, how well it picks the verifier's better samples of each prompt in the rollout (see
    rewardflow/agreement.py); empty when the table has no verifier column."""
    from rewardflow.agreement import AgreementConfig, agreement
    from rewardflow.rollout import load_rollout

    ds = load_rollout(rollout_dir)
    if "reward/verifier" not in ds.column_names:
        return {}
    return agreement(AgreementConfig(rollout=rollout_dir, referee="verifier", rewards=rewards), ds)["rewards"]


def summarise(a: CompareArguments, report: dict, finals: dict, refused: dict | None = None) -> dict:
    runs = {"base": {"reward": "-", "tau": None, **report["models"][a.model]}}
    for name, reward, tau in plan(a):
        if name in (refused or {}):
            runs[name] = {"reward": reward, "tau": tau, **{m: f"n/a: not trained: {refused[name]}" for m in METRICS}}
            continue
        path = finals[name]
        runs[name] = {
            "reward": "none (τ = 0: self-training control)" if tau == 0 else reward,
            "tau": tau,
            **report["models"][path],
            "paired_vs_base": report["paired_vs_first"].get(path, {}),
            "train": json.loads((Path(path) / "metrics.json").read_text()),
        }
    return {"settings": vars(a), "metric_info": report["metric_info"], "runs": runs}


METRICS = ("fad_clap", "mel_frechet", "kl", "fd_classifier", "clap", "aesthetics/PQ", "aesthetics/PC", "aesthetics/CE",
           "aesthetics/CU", "verifier")  # fmt: skip


def _cell(v) -> str:
    return "n/a" if isinstance(v, str) or v is None else f"{v:.4g}"


def write_outputs(out: Path, results: dict, finals: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from base_model.pipeline import atomic_write_text

    runs = results["runs"]
    lines = ["| run | reward | τ | " + " | ".join(METRICS) + " |", "|" + "---|" * (len(METRICS) + 3)]
    reasons: dict[str, set] = {}
    for name, r in runs.items():
        for m in METRICS:
            if isinstance(r.get(m), str):
                reasons.setdefault(m, set()).add(r[m])
        tau = "-" if r["tau"] is None else f"{r['tau']:g}"
        lines.append(f"| {name} | {r['reward']} | {tau} | " + " | ".join(_cell(r.get(m)) for m in METRICS) + " |")
    lines += [f"\n{m}: {why}" for m, whys in reasons.items() for why in sorted(whys)]
    lines.append("\nMetric definitions: " + "; ".join(f"{k}: {v}" for k, v in results["metric_info"].items()))
    atomic_write_text(out / "table.md", "\n".join(lines) + "\n")

    # τ ablation: paired gain over the base (95% CI) in the trained reward and the referees, per reward and τ
    agree = results.get("agreement", {})
    abl = [
        "| reward | τ | Δ clap | Δ aesthetics | Δ verifier | weights ESS | weights max/min | rollout top-1 gain (verifier) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs.values():
        if r["tau"] is None:
            continue
        if "train" not in r:
            abl.append(f"| {r['reward']} | {r['tau']:g} | {r['clap']} | | | | | |")
            continue
        p = r["paired_vs_base"]

        def d(k, p=p):
            return f"{p[k]['mean']:+.4f} [{p[k]['ci95'][0]:+.3f}, {p[k]['ci95'][1]:+.3f}]" if k in p else "n/a"

        t = r["train"]
        g = agree.get(r["reward"], {}).get("top1_gain")
        gain = f"{g[0]:+.3f} [{g[1]:+.3f}, {g[2]:+.3f}]" if g else "n/a"
        abl.append(
            f"| {r['reward']} | {r['tau']:g} | {d('clap')} | {d('aesthetics')} | {d('verifier')} | "
            f"{t['weights_ess']:.3f} | {t['weights_max_min_ratio']:.3g} | {gain} |"
        )
    abl.append(
        "\nrollout top-1 gain: on the rollout the runs trained on, the verifier accuracy of each prompt's best sample "
        "by this reward minus the prompt's mean (95% CI over prompts; rewardflow/agreement.py). It bounds what "
        "weighting by this reward can teach about the verifier's attributes."
    )
    atomic_write_text(out / "tau_ablation.md", "\n".join(abl) + "\n")
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("clap", "aesthetics")):
        for name, r in runs.items():
            if isinstance(r.get(key), float) and isinstance(r.get("mel_frechet"), float):
                ax.scatter(r["mel_frechet"], r[key], label=name)
                ax.annotate(name, (r["mel_frechet"], r[key]), fontsize=6)
        ax.set_xlabel("mel Fréchet distance to real audio (lower is better)")
        ax.set_ylabel(key)
        ax.set_title(f"{key} vs distribution shift")
    fig.tight_layout()
    fig.savefig(out / "tradeoff.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, path in finals.items():
        ckpts = sorted(
            Path(path).parent.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name[11:])
        )
        if not ckpts:
            continue
        hist = [h for h in json.loads(ckpts[-1].read_text())["log_history"] if "loss/flow" in h]
        for ax, key in zip(axes, ("loss/flow_unweighted", "loss/reference")):
            ax.plot([h["step"] for h in hist], [h[key] for h in hist], label=name)
            ax.set_xlabel("step")
            ax.set_ylabel(key)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "training_curves.png", dpi=120)
    plt.close(fig)
    print((out / "table.md").read_text())
    print((out / "tau_ablation.md").read_text())


def make_parser():
    from trl import TrlParser

    return TrlParser((CompareArguments,))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
