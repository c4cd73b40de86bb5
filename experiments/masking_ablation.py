"""The paper's pretraining ablation (Figure 4b / Table 4b): masking ratio p and span length l.

    python experiments/masking_ablation.py                                   # 12 runs + MaskGIT's cosine ratio
    python experiments/masking_ablation.py --max_steps 20 --eval_prompts 4 --ratios 0.6 --spans 1 4 --preset tiny

Each configuration (p ∈ --ratios × l ∈ --spans, plus `--cosine true`: span 4 with MaskGIT's per-sample cosine
ratio) is pretrained with the same reduced budget, data and seed on the bundled VAE's latents, then every model is
evaluated on the same held-out prompts and seeds (8 iterations × 25 steps, CFG 3): verifier accuracy, KL, mel
Fréchet distance, each model's verifier difference to the paper's recipe (p 0.6, l 4) with a paired 95 % interval.
Runs train two at a time with one thread each (`--parallel`); a finished run is skipped on rerun, so the script
resumes. Results: `experiments/results/masking_ablation/results.json`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass
class ReducedBudget:
    """The reduced pretraining budget and evaluation that each run of an ablation shares."""

    output_dir: str = field(default="outputs/masking_ablation", metadata={"help": "Runs and evaluation."})
    results_dir: str = field(
        default="experiments/results/masking_ablation", metadata={"help": "Committed JSON ('' skips)."}
    )
    vae: str = field(default="", metadata={"help": "VAE folder (default: the bundled pipeline's)."})
    preset: str = field(default="tiny", metadata={"help": "Model preset."})
    hidden_size: int = field(default=128, metadata={"help": "Backbone and head width."})
    num_layers: int = field(default=4, metadata={"help": "Backbone depth."})
    max_steps: int = field(default=1000, metadata={"help": "Training steps per run (the reduced budget)."})
    train_examples: int = field(default=8000, metadata={"help": "SynthCaps train clips."})
    seed: int = field(default=0, metadata={"help": "Training seed (the same for every run)."})
    eval_prompts: int = field(default=64, metadata={"help": "Held-out prompts for the evaluation."})
    first_prompt: int = field(default=3000, metadata={"help": "First held-out prompt (away from other experiments')."})
    parallel: bool = field(default=True, metadata={"help": "Train two runs at once, one thread each."})


@dataclass
class AblationArguments(ReducedBudget):
    ratios: list[float] = field(default_factory=lambda: [0.5, 0.6, 0.7], metadata={"help": "Masking ratios p."})
    spans: list[int] = field(default_factory=lambda: [1, 2, 3, 4], metadata={"help": "Span lengths l."})
    cosine: bool = field(default=True, metadata={"help": "Also train span 4 with MaskGIT's cosine ratio."})


def run_name(ratio: float | str, span: int) -> str:
    return f"p{ratio}-l{span}"


def configurations(a: AblationArguments) -> list[dict]:
    runs = [{"name": run_name(p, s), "mask_ratio": p, "span_length": s, "mask_ratio_mode": "fixed"}
            for p in a.ratios for s in a.spans]  # fmt: skip
    if a.cosine:
        runs.append({"name": run_name("cos", 4), "mask_ratio": 0.6, "span_length": 4, "mask_ratio_mode": "cosine"})
    return runs


def pretrain_argv(a: ReducedBudget, run: dict, vae: str) -> list[str]:
    """`pretrain.py`'s flags for one run: the shared budget, the run's masking recipe, then its own `argv`."""
    return [
        "--output_dir", str(Path(a.output_dir) / run["name"]), "--vae", vae, "--preset", a.preset,
        "--hidden_size", str(a.hidden_size), "--head_hidden_size", str(a.hidden_size), "--num_layers", str(a.num_layers),
        "--mask_ratio", str(run["mask_ratio"]), "--span_length", str(run["span_length"]),
        "--mask_ratio_mode", run["mask_ratio_mode"], "--max_steps", str(a.max_steps), "--seed", str(a.seed),
        "--num_train_examples", str(a.train_examples), "--save_steps", str(max(a.max_steps // 4, 1)),
        "--logging_steps", str(max(a.max_steps // 10, 1)), "--report_to", "none", "--resume_from_checkpoint", "latest",
        *run.get("argv", []),
    ]  # fmt: skip


def train_all(a: ReducedBudget, runs: list[dict], vae: str) -> None:
    todo = [r for r in runs if not (Path(a.output_dir) / r["name"] / "final" / "pipeline.json").is_file()]
    width = 2 if a.parallel else 1
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"} if a.parallel else dict(os.environ)
    Path(a.output_dir).mkdir(parents=True, exist_ok=True)
    for i in range(0, len(todo), width):
        procs = []
        for run in todo[i : i + width]:
            log = open(Path(a.output_dir) / f"{run['name']}.log", "a")
            cmd = [sys.executable, str(ROOT / "base_model" / "pretrain.py"), *pretrain_argv(a, run, vae)]
            print("$ " + " ".join(cmd), flush=True)
            procs.append((run, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)))
        for run, p in procs:
            if p.wait() != 0:
                raise RuntimeError(
                    f"pretraining {run['name']} failed; see {Path(a.output_dir) / (run['name'] + '.log')}"
                )


def main(a: AblationArguments) -> dict:
    from base_model.files import atomic_write_json
    from base_model.pipeline import resolve_pipeline_path
    from rewardflow.evaluate import EvaluateConfig, evaluate

    vae = a.vae or str(resolve_pipeline_path("synthcaps") / "vae")
    runs = configurations(a)
    train_all(a, runs, vae)
    reference = run_name(0.6, 4) if 0.6 in a.ratios and 4 in a.spans else runs[0]["name"]
    ordered = [reference] + [r["name"] for r in runs if r["name"] != reference]
    out = Path(a.output_dir)
    report = evaluate(
        EvaluateConfig(
            models=[str(out / n / "final") for n in ordered],
            prompts="synthcaps:heldout",
            first_prompt=a.first_prompt,
            max_prompts=a.eval_prompts,
            rewards=["verifier"],
            output_dir=str(out / "eval"),
        )
    )
    rows = {}
    for run in runs:
        key = str(out / run["name"] / "final")
        m = report["models"][key]
        paired = report["paired_vs_first"].get(key, {})
        rows[run["name"]] = {**run, **{k: m[k] for k in ("verifier", "kl", "mel_frechet", "fd_classifier")},
                             "verifier_vs_reference": paired.get("verifier"), "kl_vs_reference": paired.get("kl"),
                             "train": json.loads((out / run["name"] / "final" / "metrics.json").read_text())}  # fmt: skip
    result = {"settings": asdict(a), "reference": reference, "runs": rows, "metric_info": report["metric_info"]}
    atomic_write_json(out / "results.json", result)
    if a.results_dir:
        dest = Path(a.results_dir) if Path(a.results_dir).is_absolute() else ROOT / a.results_dir
        dest.mkdir(parents=True, exist_ok=True)
        atomic_write_json(dest / "results.json", result)
    print(json.dumps({n: {k: r[k] for k in ("verifier", "kl", "mel_frechet")} for n, r in rows.items()}, indent=2))
    return result


def make_parser():
    from trl import TrlParser

    return TrlParser((AblationArguments,))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
