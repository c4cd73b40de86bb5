"""Is the oracle's small gain a matter of training steps? One oracle fine-tune (verifier, best of 4) measured at several
of its checkpoints, per verifier attribute, next to what the kept clips win on in the rollout.

    python rewardflow/finetune.py --rollout outputs/alignment-cfg1/rollout --model synthcaps --reward verifier \\
        --weighting topk --top_k 0.25 --beta 1 --max_steps 1800 --save_steps 600 \\
        --output_dir outputs/alignment-cfg1/runs/verifier-topk-1800
    python experiments/oracle_steps.py --checkpoints outputs/alignment-cfg1/runs/verifier-topk/checkpoint-600 \\
        outputs/alignment-cfg1/runs/verifier-topk-1800/checkpoint-1200 \\
        outputs/alignment-cfg1/runs/verifier-topk-1800/checkpoint-1800 \\
        --results_json experiments/results/alignment/oracle_steps.json

(the 600-step checkpoint is the alignment study's run of the same recipe: the trainer keeps the last two). Each
checkpoint becomes a pipeline folder (its run's base pipeline with the checkpoint's flow weights) under
`<run>/pipelines/`, and the base and every checkpoint are evaluated on the same held-out prompts and seeds as the
alignment study (`--first_prompt`, `--eval_prompts`). The rollout part reads the run's rollout table: per attribute,
the verifier's accuracy over all clips, over each prompt's best clip (what the fine-tune is taught) and the share of
the attribute's variance that lies within prompts (seed to seed, where selection can pick).
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


RUN_KEYS = ("command", "model", "rollout", "learning_rate", "batch_size", "objective")


@dataclass
class OracleStepsArguments:
    checkpoints: list[str] = field(
        default_factory=list, metadata={"help": "checkpoint-N folders of full (not LoRA) finetune.py runs."}
    )
    first_prompt: int = field(default=128, metadata={"help": "First held-out prompt evaluated."})
    eval_prompts: int = field(default=256, metadata={"help": "Held-out prompts evaluated."})
    results_json: str = field(default="", metadata={"help": "Where the result goes ('' skips)."})

    def __post_init__(self):
        if not self.checkpoints:
            raise ValueError("--checkpoints needs at least one finetune.py checkpoint-N folder.")
        for c in map(Path, self.checkpoints):
            if not (c.parent / "finetune_run.json").is_file() or not (c / "model.safetensors").is_file():
                raise ValueError(
                    f"--checkpoints {c}: not a full checkpoint of a finetune.py run (needs model.safetensors, and "
                    "finetune_run.json in the folder above; LoRA checkpoints cannot be measured here)."
                )
        bases = {json.loads((Path(c).parent / "finetune_run.json").read_text())["model"] for c in self.checkpoints}
        if len(bases) > 1:
            raise ValueError(f"--checkpoints come from runs on different base models {sorted(bases)}: pick one.")


def checkpoint_pipeline(ckpt: Path) -> str:
    """`<run>/pipelines/<checkpoint-N>`: the run's base pipeline with the checkpoint's flow weights. Made again when the
    checkpoint's weights differ from those it was made from (a restarted run rewrites checkpoint-N)."""
    from base_model.files import atomic_write_json, file_hash
    from base_model.pipeline import resolve_pipeline_path

    run = ckpt.parent
    out = run / "pipelines" / ckpt.name
    source = {"checkpoint": str(ckpt), "weights": file_hash(ckpt / "model.safetensors")}
    made = out / "made_from.json"
    if made.is_file() and json.loads(made.read_text()) == source:  # written last, so the folder is complete
        return str(out)
    base = resolve_pipeline_path(json.loads((run / "finetune_run.json").read_text())["model"])
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(base, tmp, ignore=shutil.ignore_patterns("README.md", "metrics.json"))
    for name in ("model.safetensors", "config.json"):
        shutil.copyfile(ckpt / name, tmp / "flow" / name)
    atomic_write_json(tmp / "made_from.json", source)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return str(out)


def rollout_selection(rollout: str) -> dict:
    """Per verifier attribute: accuracy over all clips, over each prompt's best clip, and the within-prompt share of
    its variance."""
    import pandas as pd

    files = sorted(Path(rollout, "data").glob("*.parquet"))
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    best = df.loc[df.groupby("prompt_id")["reward/verifier"].idxmax()]  # ties: the first in table order, as topk
    out = {}
    for col in ["reward/verifier", *sorted(c for c in df.columns if c.startswith("reward/verifier/"))]:
        v = df[col].astype(float)
        within = (v - df.groupby("prompt_id")[col].transform("mean")).pow(2).mean()
        total = (v - v.mean()).pow(2).mean()
        out[col.removeprefix("reward/verifier").lstrip("/") or "verifier"] = {
            "all": round(float(v.mean()), 4),
            "best": round(float(best[col].astype(float).mean()), 4),
            "within_prompt_share": round(float(within / total), 3) if total > 0 else None,
            "checked": int(v.notna().sum()),
        }
    return out


def main(a: OracleStepsArguments) -> dict:
    from base_model.files import atomic_write_json
    from experiments.results_io import evaluation_summary
    from rewardflow.evaluate import EvaluateConfig, evaluate

    ckpts = [Path(c) for c in a.checkpoints]
    info = json.loads((ckpts[0].parent / "finetune_run.json").read_text())
    models = [info["model"], *(checkpoint_pipeline(c) for c in ckpts)]
    report = evaluate(
        EvaluateConfig(
            models=models, prompts="synthcaps:heldout", first_prompt=a.first_prompt, max_prompts=a.eval_prompts,
            output_json=str(ckpts[-1].parent / "oracle_steps_eval.json"),
        )
    )  # fmt: skip
    result = {
        "settings": asdict(a),
        "runs": {
            str(c): {k: json.loads((c.parent / "finetune_run.json").read_text())[k] for k in RUN_KEYS} for c in ckpts
        },
        "steps": {str(c): {"step": int(c.name.split("-")[-1]), "pipeline": m} for c, m in zip(ckpts, models[1:])},
        "base": info["model"],
        "rollout_selection": rollout_selection(info["rollout"]),
        "evaluation": evaluation_summary(report),
    }
    if a.results_json:
        atomic_write_json(Path(a.results_json), result)
    print(report["table"])
    return result


def make_parser():
    from trl import TrlParser

    return TrlParser((OracleStepsArguments,))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
