"""Evaluate pipelines side by side on the same prompts and seeds: reward scores, SynthCaps verifier accuracy and a
Fréchet distance over mel statistics to real audio.

    python rewardflow/evaluate.py --models synthcaps outputs/finetune/final --max_prompts 48
    python rewardflow/evaluate.py --models synthcaps outputs/finetune/final --output_json outputs/eval.json

Every model generates the same prompts with the same per-clip seeds, so differences are paired: the table gives
each metric's mean per model and, for each later model, the paired difference to the first with a 95% bootstrap
interval over prompts. The Fréchet distance needs reference audio: SynthCaps prompts render theirs; other prompt
sets report it as unavailable.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

logger = logging.getLogger("rewardflow.evaluate")


@dataclass
class EvaluateConfig:
    models: list[str] = field(
        default_factory=lambda: ["synthcaps"], metadata={"help": "Pipelines to compare (folders or bundled names)."}
    )
    prompts: str = field(default="synthcaps:heldout", metadata={"help": "'synthcaps:<split>' or a caption table."})
    caption_column: str = field(default="caption", metadata={"help": "Caption column of a prompt table."})
    max_prompts: int = field(default=48, metadata={"help": "Use the first N prompts."})
    num_generations: int = field(default=1, metadata={"help": "Clips per prompt (seeds shared across models)."})
    seed: int = field(default=1000, metadata={"help": "Clip seeds derive from it and the prompt ids."})
    rewards: list[str] = field(
        default_factory=lambda: ["clap", "aesthetics", "verifier"], metadata={"help": "Scorers to report."}
    )
    clap_checkpoint: str = field(default="", metadata={"help": "CLAP checkpoint (default: bundled SynthCaps CLAP)."})
    aesthetics_checkpoint: str = field(default="", metadata={"help": "Aesthetics checkpoint (default: bundled)."})
    num_iterations: int = field(default=8, metadata={"help": "Decoding iterations."})
    num_steps: int = field(default=25, metadata={"help": "ODE steps per iteration."})
    cfg_scale: float = field(default=3.0, metadata={"help": "Classifier-free guidance scale."})
    batch_size: int = field(default=16, metadata={"help": "Clips per batch."})
    bootstrap: int = field(default=2000, metadata={"help": "Bootstrap resamples for the paired intervals."})
    output_json: str = field(default="", metadata={"help": "Also write the report here (atomically)."})


def _prompts(cfg: EvaluateConfig) -> tuple[list[dict], torch.Tensor | None]:
    """Prompt rows and, for SynthCaps, the real renders `(N, samples)` used as the Fréchet reference."""
    from rewardflow.rollout import load_prompts
    from rewardflow.rollout_config import RolloutConfig

    rows = load_prompts(
        RolloutConfig(prompts=cfg.prompts, caption_column=cfg.caption_column, max_prompts=cfg.max_prompts)
    )
    real = None
    if cfg.prompts.startswith("synthcaps:"):
        from base_model.data.synthcaps import example, render_audio

        split = cfg.prompts.split(":", 1)[1]
        real = torch.from_numpy(
            np.stack([render_audio(e["attributes"], e["seed"]) for e in (example(i, split) for i in range(len(rows)))])
        )
    return rows, real


def paired_interval(a: np.ndarray, b: np.ndarray, n: int, seed: int = 0) -> tuple[float, float, float]:
    """Mean of `b - a` over paired prompts and its 95% percentile-bootstrap interval (NaN pairs excluded)."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n, len(d)))].mean(1)
    return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


@torch.inference_mode()
def evaluate(cfg: EvaluateConfig) -> dict:
    from tqdm.auto import tqdm

    from base_model import MaskAudioFlowPipeline, MelSpectrogram
    from rewardflow.distributed import process_state
    from rewardflow.metrics import frechet_distance, mel_statistics
    from rewardflow.rollout import build_rewards, sample_seed, score_batch
    from rewardflow.rollout_config import RolloutConfig

    device = process_state().device
    rows, real = _prompts(cfg)
    rewards = build_rewards(
        RolloutConfig(
            rewards=cfg.rewards, clap_checkpoint=cfg.clap_checkpoint, aesthetics_checkpoint=cfg.aesthetics_checkpoint
        ),
        device,
    )
    items = [(i, s) for i in range(len(rows)) for s in range(cfg.num_generations)]
    mel_fn = MelSpectrogram()
    real_feats = mel_statistics(mel_fn(real)) if real is not None else None
    report: dict = {"settings": {k: v for k, v in vars(cfg).items()}, "models": {}}
    per_clip: dict[str, dict[str, np.ndarray]] = {}
    for name in cfg.models:
        pipe = MaskAudioFlowPipeline.from_pretrained(name, device=device)
        cols: dict[str, list] = {}
        feats = []
        start = time.perf_counter()
        for b in tqdm(range(0, len(items), cfg.batch_size), desc=f"evaluate {name}", unit="batch"):
            chunk = items[b : b + cfg.batch_size]
            texts = [rows[i]["prompt"] for i, _ in chunk]
            attrs = [rows[i]["attributes"] for i, _ in chunk]
            seeds = [sample_seed(cfg.seed, rows[i]["prompt_id"], s) for i, s in chunk]
            out = pipe(
                texts,
                num_iterations=cfg.num_iterations,
                num_steps=cfg.num_steps,
                cfg_scale=cfg.cfg_scale,
                seed=seeds,
            )
            for k, v in score_batch(rewards, out.waveforms.cpu(), out.sample_rate, texts, attrs).items():
                cols.setdefault(k, []).extend(v.tolist())
            if real is not None:
                n = min(out.waveforms.shape[1], real.shape[1])
                feats.append(mel_statistics(mel_fn(out.waveforms[:, :n].cpu())))
        seconds = time.perf_counter() - start
        per_clip[name] = {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}
        summary = {k: float(np.nanmean(v)) for k, v in per_clip[name].items() if "/" not in k[len("reward/") :]}
        summary["mel_frechet"] = frechet_distance(np.concatenate(feats), real_feats) if feats else None
        summary["seconds_per_clip"] = round(seconds / len(items), 3)
        report["models"][name] = summary
    # Paired differences to the first model, averaged per prompt first (clips of one prompt are not independent).
    first = cfg.models[0]
    prompt_of = np.asarray([i for i, _ in items])
    report["paired_vs_first"] = {}
    for name in cfg.models[1:]:
        diffs = {}
        for key in report["models"][first]:
            if not key.startswith("reward/"):
                continue
            a = np.array([np.nanmean(per_clip[first][key][prompt_of == i]) for i in range(len(rows))])
            b = np.array([np.nanmean(per_clip[name][key][prompt_of == i]) for i in range(len(rows))])
            mean, lo, hi = paired_interval(a, b, cfg.bootstrap)
            diffs[key] = {"mean": mean, "ci95": [lo, hi]}
        report["paired_vs_first"][name] = diffs
    report["table"] = format_table(report)
    print(report["table"])
    if cfg.output_json:
        from base_model.pipeline import atomic_write_text

        Path(cfg.output_json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(cfg.output_json), json.dumps(report, indent=2))
    return report


def format_table(report: dict) -> str:
    """A markdown table: one row per model, one column per metric; paired differences with 95% intervals below."""
    models = report["models"]
    keys = [k for k in next(iter(models.values()))]
    head = "| model | " + " | ".join(k.removeprefix("reward/") for k in keys) + " |"
    lines = [head, "|" + "---|" * (len(keys) + 1)]
    for name, m in models.items():
        cells = [("n/a" if m[k] is None else f"{m[k]:.4g}") for k in keys]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    for name, diffs in report.get("paired_vs_first", {}).items():
        parts = [
            f"{k.removeprefix('reward/')} {d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
            for k, d in diffs.items()
        ]
        lines.append(f"\n`{name}` minus `{next(iter(models))}` (paired, 95% CI): " + "; ".join(parts))
    return "\n".join(lines)


def make_parser():
    from trl import TrlParser

    return TrlParser((EvaluateConfig,))


def main(cfg: EvaluateConfig) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return evaluate(cfg)


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
