"""Inference scaling (paper Figure 3): metrics and generation time vs decoding iterations (1, 2, 4, 8, 16) for the
masked model, the CFM baseline at 25 steps as a reference line, and (beyond the paper) best-of-N reranked by a reward
model at matched compute: N candidates of k iterations each with N·k equal to the single-sample budget.

    python experiments/decoding_scaling.py --small          # CPU-sized, the bundled pipelines
    python experiments/decoding_scaling.py --model my_pipeline/ --cfm_model my_cfm/ --prompts audiocaps.csv ...

Writes `<output_dir>/`: `table.md`, `scaling.png` (metrics and seconds per clip vs iterations), `results.json`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.results_io import publish  # noqa: E402


@dataclass
class ScalingArguments:
    output_dir: str = field(default="outputs/decoding_scaling", metadata={"help": "Where results go."})
    model: str = field(default="synthcaps", metadata={"help": "Masked MaskAudioFlow pipeline."})
    cfm_model: str = field(default="synthcaps-cfm", metadata={"help": "CFM baseline pipeline ('' to skip)."})
    iterations: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16], metadata={"help": "Decoding iterations."})
    best_of_budget: int = field(
        default=8, metadata={"help": "Backbone passes per clip for best-of-N: N x k = budget (0: skip)."}
    )
    rerank_reward: str = field(default="clap", metadata={"help": "Reward that picks the best of N."})
    prompts: str = field(default="synthcaps:heldout", metadata={"help": "Evaluation prompts."})
    audio_column: str = field(default="", metadata={"help": "Reference audio column of a caption table."})
    max_prompts: int = field(default=64, metadata={"help": "Prompts evaluated."})
    num_steps: int = field(default=25, metadata={"help": "ODE steps per iteration (and for CFM)."})
    clap_checkpoint: str = field(default="", metadata={"help": "CLAP checkpoint."})
    aesthetics_checkpoint: str = field(default="", metadata={"help": "Aesthetics checkpoint."})
    results_dir: str = field(
        default="experiments/results/decoding_scaling",
        metadata={"help": "Copy the tables, plots and results.json here ('' to skip): the committed record."},
    )
    small: bool = field(default=False, metadata={"help": "CPU size: 32 prompts."})


METRICS = ("clap", "aesthetics", "verifier", "kl", "fad_clap", "mel_frechet", "seconds_per_clip")


def main(a: ScalingArguments) -> dict:
    from base_model.files import atomic_write_text
    from rewardflow.evaluate import EvaluateConfig, evaluate

    if a.small:
        a.max_prompts = 32
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    def run(model, **kw):
        cfg = EvaluateConfig(
            models=[model],
            prompts=a.prompts,
            audio_column=a.audio_column,
            max_prompts=a.max_prompts,
            num_steps=a.num_steps,
            clap_checkpoint=a.clap_checkpoint,
            aesthetics_checkpoint=a.aesthetics_checkpoint,
            **kw,
        )
        rep = evaluate(cfg)
        return {**rep["models"][model], "selection": rep["selection"], "per_prompt": rep["per_prompt"][model]}

    rows = {}
    for k in a.iterations:
        rows[f"masked, {k} iterations"] = {"iterations": k, "backbone_passes": k, **run(a.model, num_iterations=k)}
    if a.best_of_budget:
        for n in (2, 4, 8):
            if a.best_of_budget % n == 0:
                k = a.best_of_budget // n
                rows[f"masked, best-of-{n} by {a.rerank_reward}, {k} iterations"] = {
                    "iterations": k,
                    "backbone_passes": a.best_of_budget,
                    **run(a.model, num_iterations=k, best_of=n, rerank_reward=a.rerank_reward),
                }
    if a.cfm_model:
        rows[f"CFM baseline, {a.num_steps} steps"] = {
            "iterations": None,
            "backbone_passes": a.num_steps,
            **run(a.cfm_model),
        }
    paired_to_reference(rows, f"masked, {8 if 8 in a.iterations else a.iterations[-1]} iterations")
    lines = ["| setting | backbone passes | " + " | ".join(METRICS) + " |", "|" + "---|" * (len(METRICS) + 2)]
    for name, r in rows.items():
        cells = ["n/a" if isinstance(r.get(m), str) else f"{r[m]:.4g}" for m in METRICS]
        lines.append(f"| {name} | {r['backbone_passes']} | " + " | ".join(cells) + " |")
    lines.append(
        f"\n{a.max_prompts} prompts from {a.prompts}, one clip each, the same seeds for every setting; "
        "backbone passes per clip exclude CFG's doubled batch, which every setting shares."
    )
    atomic_write_text(out / "table.md", "\n".join(lines) + "\n")
    atomic_write_text(out / "results.json", json.dumps({"settings": vars(a), "rows": rows}, indent=2))
    plot(out / "scaling.png", rows, a)
    publish(out, a.results_dir, ("table.md", "results.json", "scaling.png"))
    print("\n".join(lines))
    return rows


def paired_to_reference(rows: dict, reference: str) -> None:
    """Adds to each row its per-prompt paired difference to `reference` (verifier, CLAP, KL) with a 95 % bootstrap
    interval; the per-prompt values are then dropped from the row."""
    import numpy as np

    from rewardflow.metrics import bootstrap_interval

    ref = rows[reference]["per_prompt"]
    for r in rows.values():
        pp = r.pop("per_prompt")
        r["vs_reference"] = {"reference": reference} | {
            k: dict(zip(("mean", "low", "high"), bootstrap_interval(np.asarray(pp[k]) - np.asarray(ref[k]))))
            for k in ("verifier", "clap", "kl") if k in pp and k in ref
        }  # fmt: skip
    rows[reference]["vs_reference"] = {"reference": reference}


def plot(path: Path, rows: dict, a: ScalingArguments) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    masked = [r for n, r in rows.items() if n.startswith("masked,") and "best-of" not in n]
    cfm = next((r for n, r in rows.items() if n.startswith("CFM")), None)
    best = [(n, r) for n, r in rows.items() if "best-of" in n]
    keys = [m for m in ("verifier", "clap", "mel_frechet", "seconds_per_clip") if isinstance(masked[0].get(m), float)]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4))
    for ax, key in zip(axes, keys):
        xs = [r["iterations"] for r in masked]
        ax.plot(xs, [r[key] for r in masked], "o-", label="masked, 1 sample")
        if cfm is not None and isinstance(cfm.get(key), float):
            ax.axhline(cfm[key], color="gray", ls="--", label=f"CFM, {a.num_steps} steps")
        for n, r in best:
            if isinstance(r.get(key), float):
                ax.scatter([r["iterations"]], [r[key]], marker="*", s=80, label=n.replace("masked, ", ""))
        ax.set_xscale("log", base=2)
        ax.set_xlabel("decoding iterations")
        ax.set_title(key)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def make_parser():
    from trl import TrlParser

    return TrlParser((ScalingArguments,))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
