"""Shared by the experiment scripts: copying a run's small artefacts into the committed `experiments/results/`."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def publish(out: Path, results_dir: str, names: tuple[str, ...]) -> None:
    """Copies `names` (tables, plots, results.json; never checkpoints or audio) from `out` to `results_dir`
    (relative to the repository root unless absolute); `''` skips."""
    if not results_dir:
        return
    dest = Path(results_dir) if Path(results_dir).is_absolute() else ROOT / results_dir
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (out / name).is_file():
            shutil.copyfile(out / name, dest / name)


def publish_json(obj: dict, results_dir: str, name: str = "results.json") -> None:
    """Writes `obj` atomically to `results_dir/name` (relative to the repository root unless absolute); `''` skips."""
    from base_model.files import atomic_write_json

    if not results_dir:
        return
    dest = Path(results_dir) if Path(results_dir).is_absolute() else ROOT / results_dir
    dest.mkdir(parents=True, exist_ok=True)
    atomic_write_json(dest / name, obj)


def evaluation_summary(report: dict) -> dict:
    """The parts of an `evaluate` report a committed result keeps: settings, metric descriptions, per-model means,
    paired differences and per-attribute verifier accuracy and its paired differences (not the per-prompt arrays or
    the printed table)."""
    keys = ("settings", "metric_info", "models", "paired_vs_first", "verifier_by_attribute", "paired_by_attribute")
    return {k: report[k] for k in keys if k in report}


def cached_evaluate(cfg) -> dict:
    """`rewardflow.evaluate.evaluate(cfg)`, or its report read back from `cfg.output_json` when that report was made
    with exactly these settings."""
    import json
    from dataclasses import asdict

    from rewardflow.evaluate import evaluate

    path = Path(cfg.output_json)
    report = json.loads(path.read_text()) if path.is_file() else None
    if report is None or report["settings"] != asdict(cfg):
        report = evaluate(cfg)
    return report


def paired_between(per_prompt: dict, first: str, second: str, cols=("verifier", "clap", "aesthetics", "kl")) -> dict:
    """`first - second` per score from an evaluate report's `per_prompt` means, paired by prompt, with a 95 %
    bootstrap interval."""
    import numpy as np

    from rewardflow.metrics import bootstrap_interval

    out = {}
    for col in cols:
        mean, lo, hi = bootstrap_interval(np.asarray(per_prompt[first][col]) - np.asarray(per_prompt[second][col]))
        out[col] = {"mean": mean, "ci95": [lo, hi]}
    return out
