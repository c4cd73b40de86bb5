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
    paired differences and per-attribute verifier accuracy (not the per-prompt arrays or the printed table)."""
    keys = ("settings", "metric_info", "models", "paired_vs_first", "verifier_by_attribute")
    return {k: report[k] for k in keys if k in report}
