"""Shared by the experiment scripts: the rollout they start from, and copying a run's small artefacts into the
committed `experiments/results/`."""

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


def ensure_rollout(rollout_dir: str, out: Path, **settings) -> str:
    """The rollout table to train on: `rollout_dir` when given, else one made (or completed, on rerun) in
    `<out>/rollout` with `settings` (`RolloutConfig` fields)."""
    if rollout_dir:
        return rollout_dir
    from rewardflow.rollout import rollout
    from rewardflow.rollout_config import RolloutConfig

    made = str(out / "rollout")
    rollout(RolloutConfig(output_dir=made, **settings))
    return made
