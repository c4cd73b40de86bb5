"""Where does the oracle's fine-tune act? Its round-1 and last-round models against the base on the prompts it was tuned
on, on unseen prompts of the training split, and on held-out prompts sampled without guidance.

`alignment_study.py` evaluates every model on held-out prompts at CFG 3; its rollouts (CFG 1, training prompts) say
how the models sample what they were tuned on. This script fills the gap between the two, one `evaluate.py` report
per prompt set (kept when it exists, so a rerun resumes), and writes their paired rows to `--results_json`:

    python experiments/oracle_diagnostics.py --study outputs/alignment-gpu-cfg1 \\
        --results_json experiments/results/alignment/gpu_build_diagnostics.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# (label, file stem, prompt split, first prompt, CFG): the study's rollout uses train prompts 0.., its evaluation
# held-out prompts from 128 at CFG 3
SETS = (
    ("train prompts tuned on (fresh seeds)", "eval-train-tuned", "synthcaps:train", 0, 3.0),
    ("train prompts not tuned on", "eval-train-unseen", "synthcaps:train", 5000, 3.0),
    ("held-out prompts, unguided", "eval-heldout-cfg1", "synthcaps:heldout", 128, 1.0),
)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="An alignment_study.py --output_dir with oracle rounds.")
    parser.add_argument("--max_prompts", type=int, default=128, help="Prompts per set.")
    parser.add_argument("--results_json", default="", help="Also write the paired rows here (committed record).")
    a = parser.parse_args(argv)
    from base_model.files import atomic_write_json

    study = Path(a.study)
    rounds = sorted(
        (study / "runs" / "verifier-topk-rounds").glob("round-*/final"), key=lambda p: int(p.parent.name.split("-")[1])
    )
    first = study / "runs" / "verifier-topk" / "final"
    if not (first / "metrics.json").is_file() or len(rounds) < 2:
        raise SystemExit(f"--study {study}: needs runs/verifier-topk/final and two oracle rounds; run "
                         "experiments/alignment_study.py --questions oracle --oracle_rounds 3 first.")  # fmt: skip
    models = ["synthcaps", str(first), str(rounds[-1])]
    out = {"study": str(study), "sets": []}
    for label, stem, prompts, start, cfg in SETS:
        path = study / f"{stem}.json"
        if not path.is_file():
            subprocess.run([sys.executable, str(ROOT / "rewardflow" / "evaluate.py"), "--models", *models,
                            "--prompts", prompts, "--first_prompt", str(start), "--max_prompts", str(a.max_prompts),
                            "--cfg_scale", str(cfg), "--rewards", "clap", "verifier", "--output_json", str(path)],
                           check=True)  # fmt: skip
        r = json.loads(path.read_text())
        out["sets"].append({"label": label, "settings": r["settings"], "models": r["settings"]["models"],
                            "verifier": {m: r["models"][m]["verifier"] for m in r["settings"]["models"]},
                            "paired_vs_first": r["paired_vs_first"],
                            "verifier_by_attribute": r["verifier_by_attribute"]})  # fmt: skip
    atomic_write_json(study / "diagnostics.json", out)
    if a.results_json:
        atomic_write_json(Path(a.results_json), out)
    return out


if __name__ == "__main__":
    main()
