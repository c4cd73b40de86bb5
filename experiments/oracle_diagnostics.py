"""Where does the oracle's fine-tune act? Its round-1 and (when the study ran rounds) last-round models against the
base on the prompts it was tuned on, on unseen prompts of the training split, and on held-out prompts sampled
without guidance.

`alignment_study.py` evaluates every model on held-out prompts at CFG 3; its rollout says how the models sample
what they were tuned on. This script fills the gap between the two, one `evaluate.py` report per prompt set (kept
when it exists with the same settings, so a rerun resumes), and writes their paired rows to `--results_json`:

    python experiments/oracle_diagnostics.py --study outputs/alignment-gpu-cfg1 \\
        --results_json experiments/results/alignment/gpu_build_diagnostics.json

The first set is read from the study's rollout (`<study>/rollout/run.json`: its prompt split and first prompt), so
a study that rolled out held-out prompts (`--rollout_split heldout`) is checked on those.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

EVAL_CFG = 3.0  # the study's evaluation guidance
TRAIN_UNSEEN = 5000  # first training-split prompt no study rolls out (they roll out 192 or 768 from 0)
HELDOUT_FIRST = 128  # the study's evaluated held-out prompts start here


def prompt_sets(rollout: dict) -> list[tuple[str, str, str, int, float]]:
    """(label, file stem, prompt split, first prompt, CFG) of each set, the first from the study's rollout
    settings (`run.json["settings"]`)."""
    split = rollout["prompts"].split(":")[-1]
    return [
        (f"{split.replace('heldout', 'held-out')} prompts tuned on (fresh seeds)", f"eval-{split}-tuned",
         rollout["prompts"], rollout["first_prompt"], EVAL_CFG),
        ("train prompts not tuned on", "eval-train-unseen", "synthcaps:train", TRAIN_UNSEEN, EVAL_CFG),
        ("held-out prompts, unguided", "eval-heldout-cfg1", "synthcaps:heldout", HELDOUT_FIRST, 1.0),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="An alignment_study.py --output_dir with the oracle's run.")
    parser.add_argument("--max_prompts", type=int, default=128, help="Prompts per set.")
    parser.add_argument("--results_json", default="", help="Also write the paired rows here (committed record).")
    a = parser.parse_args(argv)
    if a.max_prompts < 2:
        parser.error(f"--max_prompts must be >= 2 (paired intervals), got {a.max_prompts}.")
    from base_model.files import atomic_write_json
    from rewardflow.evaluate import EvaluateConfig, evaluate

    study = Path(a.study)
    first = study / "runs" / "verifier-topk" / "final"
    run_json = study / "rollout" / "run.json"
    if not (first / "metrics.json").is_file() or not run_json.is_file():
        raise SystemExit(f"--study {study}: needs rollout/run.json and runs/verifier-topk/final; run "
                         "experiments/alignment_study.py --questions oracle first.")  # fmt: skip
    rollout = {"first_prompt": 0, **json.loads(run_json.read_text())["settings"]}  # older rollouts began at 0
    rounds = sorted(
        (study / "runs" / "verifier-topk-rounds").glob("round-*/final/metrics.json"),
        key=lambda p: int(p.parent.parent.name.split("-")[1]),
    )
    models = ["synthcaps", str(first)] + ([str(rounds[-1].parent)] if len(rounds) >= 2 else [])
    out = {"study": str(study), "rollout": {k: rollout[k] for k in ("prompts", "first_prompt", "cfg_scale")},
           "sets": []}  # fmt: skip
    for label, stem, prompts, start, cfg in prompt_sets(rollout):
        path = study / f"{stem}.json"
        wanted = {"models": models, "prompts": prompts, "first_prompt": start, "max_prompts": a.max_prompts,
                  "cfg_scale": cfg}  # fmt: skip
        r = json.loads(path.read_text()) if path.is_file() else None
        if r is None or any(r["settings"].get(k) != v for k, v in wanted.items()):
            r = evaluate(EvaluateConfig(**wanted, rewards=["clap", "verifier"], output_json=str(path)))
        out["sets"].append({"label": label, "settings": r["settings"], "models": r["settings"]["models"],
                            "verifier": {m: r["models"][m]["verifier"] for m in r["settings"]["models"]},
                            "paired_vs_first": r["paired_vs_first"],
                            "verifier_by_attribute": r["verifier_by_attribute"]})  # fmt: skip
    atomic_write_json(study / "diagnostics.json", out)
    if a.results_json:
        Path(a.results_json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(a.results_json), out)
    return out


if __name__ == "__main__":
    main()
