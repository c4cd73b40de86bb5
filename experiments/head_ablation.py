"""Is MaskAudioFlow's tempo gap its per-frame head? The MLP head, a sequence (transformer) head and the CFM baseline.

    python experiments/head_ablation.py                                    # 3 runs of 2000 steps, 128 prompts
    python experiments/head_ablation.py --max_steps 20 --eval_prompts 4 --hidden_size 32 --num_layers 1

The bundled MaskAudioFlow's per-frame MLP head generates each revealed span's frames independently given the
backbone's output, and it trails the CFM baseline of the same size most on tempo (how fast a sound repeats, a
property of the whole clip). This trains three models with the masking ablation's reduced budget, data and seed
(span 4, MaskGIT's cosine ratio): the MLP head, the transformer head (`--head_type transformer`, whose frames attend
to each other) and the CFM baseline; then generates for the same held-out prompts and seeds (masked: 8 iterations x
25 steps; CFM: 25 steps; CFG 3) and reports the verifier's accuracy overall and per attribute, mel Fréchet distance,
and each model's difference to the MLP head, paired by prompt with a 95 % interval (per attribute over the prompts
that name it). A finished run is skipped on rerun, so the script resumes. Results:
`experiments/results/head_ablation/results.json`.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.masking_ablation import ReducedBudget, train_all  # noqa: E402

REFERENCE = "masked-mlp"


@dataclass
class HeadAblationArguments(ReducedBudget):
    output_dir: str = field(default="outputs/head_ablation", metadata={"help": "Runs and evaluation."})
    results_dir: str = field(
        default="experiments/results/head_ablation", metadata={"help": "Committed JSON ('' skips)."}
    )
    max_steps: int = field(default=2000, metadata={"help": "Training steps per run (the reduced budget)."})
    eval_prompts: int = field(default=128, metadata={"help": "Held-out prompts for the evaluation."})
    num_steps: int = field(default=25, metadata={"help": "Flow steps per decoding iteration."})


def configurations() -> list[dict]:
    """The three runs: the masking recipe is the bundled build's (span 4, cosine ratio) for the two masked models."""
    recipe = {"mask_ratio": 0.6, "span_length": 4, "mask_ratio_mode": "cosine"}
    runs = [(REFERENCE, "masked", "mlp"), ("masked-transformer", "masked", "transformer"), ("cfm", "cfm", "mlp")]
    return [
        {"name": name, **recipe, "flow_type": flow, "head_type": head,
         "argv": ["--flow_type", flow, "--head_type", head]}
        for name, flow, head in runs
    ]  # fmt: skip


def score_model(folder: Path, rows: list[dict], seeds: list[int], real: torch.Tensor, verifier, num_steps: int):
    """Generates one clip per row and returns `(summary, per-clip scores)`: the verifier's mean overall and per
    attribute, mel Fréchet distance to the real renders, seconds per clip and parameters."""
    from base_model import MaskAudioFlowPipeline
    from bundled.measure_synthcaps import mel_frechet

    pipe = MaskAudioFlowPipeline.from_pretrained(folder)
    iterations = 1 if pipe.model.config.flow_type == "cfm" else 8
    start = time.perf_counter()
    out = pipe([r["caption"] for r in rows], seed=seeds, num_iterations=iterations, num_steps=num_steps)
    seconds = time.perf_counter() - start
    scores = verifier(out.waveforms, 16000, [r["caption"] for r in rows], attributes=[r["attributes"] for r in rows])
    per_clip = {k.removeprefix("verifier/"): v.numpy().astype(np.float64) for k, v in scores.items()}
    fd = mel_frechet(out.waveforms, real)
    summary = {k: round(float(v[np.isfinite(v)].mean()), 4) if np.isfinite(v).any() else None
               for k, v in per_clip.items()}  # fmt: skip
    summary |= {"mel_frechet": round(fd, 3), "seconds_per_clip": round(seconds / len(rows), 3),
                "decoding_iterations": iterations, "parameters": sum(p.numel() for p in pipe.model.parameters())}  # fmt: skip
    return summary, per_clip


def paired(this: dict, reference: dict) -> dict:
    """`this − reference` per score, paired by prompt over the prompts both score (an attribute: those naming it)."""
    from rewardflow.metrics import bootstrap_interval

    out = {}
    for key, values in this.items():
        d = values - reference[key]
        n = int(np.isfinite(d).sum())
        if n:
            out[key] = {
                "prompts": n,
                **dict(zip(("mean", "low", "high"), (round(x, 4) for x in bootstrap_interval(d)))),
            }
    return out


def main(a: HeadAblationArguments) -> dict:
    from base_model.data.synthcaps import example, render_audio
    from base_model.files import atomic_write_json
    from base_model.pipeline import resolve_pipeline_path
    from reward_models.verifier import SynthCapsVerifier

    vae = a.vae or str(resolve_pipeline_path("synthcaps") / "vae")
    runs = configurations()
    train_all(a, runs, vae)
    out = Path(a.output_dir)
    first = a.first_prompt
    rows = [example(i, "heldout") for i in range(first, first + a.eval_prompts)]
    seeds = [1000 + i for i in range(first, first + a.eval_prompts)]
    real = torch.from_numpy(np.stack([render_audio(r["attributes"], r["seed"]) for r in rows]))
    verifier = SynthCapsVerifier()
    scored = {
        r["name"]: score_model(out / r["name"] / "final", rows, seeds, real, verifier, a.num_steps) for r in runs
    }
    result_runs = {}
    for run in runs:
        summary, per_clip = scored[run["name"]]
        train = json.loads((out / run["name"] / "final" / "metrics.json").read_text())
        row = {k: run[k] for k in ("flow_type", "head_type", "mask_ratio_mode", "span_length")} | summary
        if run["name"] != REFERENCE:
            row["vs_reference"] = paired(per_clip, scored[REFERENCE][1])
        result_runs[run["name"]] = row | {"train": train}
    result = {"settings": asdict(a), "reference": REFERENCE, "num_steps": a.num_steps, "cfg_scale": 3.0,
              "seeds": "1000 + prompt index", "runs": result_runs}  # fmt: skip
    atomic_write_json(out / "results.json", result)
    if a.results_dir:
        dest = Path(a.results_dir) if Path(a.results_dir).is_absolute() else ROOT / a.results_dir
        dest.mkdir(parents=True, exist_ok=True)
        atomic_write_json(dest / "results.json", result)
    print(json.dumps({n: {k: r[k] for k in ("verifier", "tempo", "mel_frechet")} for n, r in result_runs.items()}))
    return result


def make_parser():
    from trl import TrlParser

    return TrlParser((HeadAblationArguments,))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
