"""What would the oracle's recipe gain from clips that are right by rule, not by a lucky seed? The loop's ceiling on
this generator, measured by fine-tuning on real SynthCaps renders of the rollout's own prompts.

    python experiments/real_clip_control.py --rollout outputs/alignment-cfg1/rollout \\
        --output_dir outputs/alignment-cfg1/real-clips --compare outputs/alignment-cfg1/runs/verifier-topk/final \\
        outputs/alignment-cfg1/runs/verifier-topk-rounds/round-2/final \\
        --compare_labels "the oracle, round 1 (its own best of 4)" "the oracle, round 2" \\
        --results_json experiments/results/alignment/real_clips.json

A copy of `--rollout` where every row's latent is the VAE latent of a real render of the row's prompt (its
attributes, with the row's own seed, so each prompt's clips differ), scored by the verifier on that render. The
oracle's recipe (best of 4 by the verifier, β = 1, 600 steps, batch 16, learning rate 1e-4, seed `--seed`, the loss of
`--loss_cfg_scale`) is then run on it with `rewardflow/finetune.py`, and the base, the tuned model and any
`--compare` models are evaluated on the alignment study's held-out prompts and seeds, and on the rollout's own
prompts with fresh seeds. Every step resumes: a finished table, run or evaluation is read back.

On the held-out study's rollout with its guided loss (`results/alignment/real_clips_heldout.json`):

    python experiments/real_clip_control.py --rollout outputs/align-heldout/lr/rollout --loss_cfg_scale 3 \\
        --output_dir outputs/align-heldout/real-clips --compare outputs/align-heldout/lr/runs/verifier-topk-seed0/final
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass
class RealClipArguments:
    rollout: str = field(default="outputs/alignment-cfg1/rollout", metadata={"help": "A SynthCaps rollout."})
    output_dir: str = field(default="outputs/alignment-cfg1/real-clips", metadata={"help": "Table, run, evaluation."})
    max_steps: int = field(default=600, metadata={"help": "Fine-tuning steps (the oracle's)."})
    top_k: float = field(default=0.25, metadata={"help": "Share of each prompt's clips kept (the oracle's)."})
    loss_cfg_scale: float = field(
        default=1.0,
        metadata={"help": "finetune.py's --loss_cfg_scale (1: the paper's loss; 3: the held-out study's)."},
    )
    seed: int = field(default=0, metadata={"help": "The fine-tune's seed (the oracle's: 0)."})
    first_prompt: int = field(default=128, metadata={"help": "First held-out prompt evaluated."})
    eval_prompts: int = field(default=256, metadata={"help": "Held-out prompts evaluated."})
    compare: list[str] = field(
        default_factory=list, metadata={"help": "Other tuned pipelines evaluated alongside (e.g. the oracle's)."}
    )
    compare_labels: list[str] = field(default_factory=list, metadata={"help": "Their names in the table."})
    results_json: str = field(default="", metadata={"help": "Where the result goes ('' skips)."})

    def __post_init__(self):
        if self.compare_labels and len(self.compare_labels) != len(self.compare):
            raise ValueError(
                f"--compare_labels names {len(self.compare_labels)} models, --compare {len(self.compare)}."
            )
        self.compare_labels = self.compare_labels or list(self.compare)
        from rewardflow.finetune_config import check_loss_cfg_scale

        check_loss_cfg_scale(self.loss_cfg_scale)
        if not (Path(self.rollout) / "manifest.json").is_file():
            raise ValueError(f"--rollout {self.rollout!r} is not a finished rollout (no manifest.json).")


def real_table(rollout: Path, out: Path, model: str) -> Path:
    """`out`: `rollout` with real-render latents and verifier columns; written once (the folder appears complete)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from base_model import MaskAudioFlowPipeline, MelSpectrogram
    from base_model.data.synthcaps import render_audio
    from reward_models.verifier import SynthCapsVerifier
    from rewardflow.rollout_table import put_column

    if (out / "manifest.json").is_file():
        return out
    pipe, verifier = MaskAudioFlowPipeline.from_pretrained(model), SynthCapsVerifier()
    mel_fn, frames = MelSpectrogram(pipe.mel_config), 2 * pipe.num_frames()
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(rollout, tmp, ignore=shutil.ignore_patterns("audio", "*.flac", "*.wav"))
    for shard in sorted((tmp / "data").glob("*.parquet")):
        table = pq.read_table(shard)
        rows = table.to_pylist()
        attrs = [json.loads(r["attributes"]) for r in rows]
        wav = torch.from_numpy(np.stack([render_audio(a, r["seed"] % 2**32) for a, r in zip(attrs, rows)]))
        with torch.inference_mode():
            latents = pipe.vae.encode(mel_fn(wav)[..., :frames]).to(torch.float16).numpy()
        scores = verifier(wav, 16000, [r["prompt"] for r in rows], attributes=attrs)
        cols = {"latent": pa.array([x.tobytes() for x in latents], pa.binary()),
                "latent_shape": pa.array([list(x.shape) for x in latents], table.schema.field("latent_shape").type),
                "audio_path": pa.array([""] * len(rows))}  # fmt: skip
        for name, values in scores.items():
            cols[f"reward/{name}"] = pa.array(values.numpy().astype(np.float64))
        keep = [c for c in table.column_names if not c.startswith("reward/") or c in cols]
        table = table.select(keep)
        for name, values in cols.items():
            table = put_column(table, name, values)
        pq.write_table(table, shard)
    tmp.rename(out)
    return out


def evaluation_sets(a: RealClipArguments, made: dict) -> list[tuple[str, str, int, int]]:
    """`(name, prompts, first prompt, count)` of the two evaluations: the study's held-out prompts, and the rollout's
    own prompts (from its first, so a held-out-split rollout is evaluated on the prompts it rolled out)."""
    return [("heldout", "synthcaps:heldout", a.first_prompt, a.eval_prompts),
            ("trained_prompts", made["prompts"], made.get("first_prompt", 0), made["max_prompts"])]  # fmt: skip


def main(a: RealClipArguments) -> dict:
    import pandas as pd

    from base_model.files import atomic_write_json
    from experiments.results_io import cached_evaluate, evaluation_summary
    from rewardflow.evaluate import EvaluateConfig
    from rewardflow.finetune import finetune
    from rewardflow.finetune_config import RewardFlowConfig

    out = Path(a.output_dir)
    model = json.loads((Path(a.rollout) / "run.json").read_text())["model"]["id"]
    table = real_table(Path(a.rollout), out / "rollout", model)
    run = out / "run"
    if not (run / "final" / "metrics.json").is_file():
        finetune(RewardFlowConfig(output_dir=str(run), rollout=str(table), model=model, reward="verifier",
                                  weighting="topk", top_k=a.top_k, beta=1.0, max_steps=a.max_steps,
                                  per_device_train_batch_size=16, learning_rate=1e-4, seed=a.seed,
                                  loss_cfg_scale=a.loss_cfg_scale,
                                  save_steps=max(a.max_steps // 3, 1), logging_steps=50,
                                  resume_from_checkpoint="latest", disable_tqdm=True, report_to="none"))  # fmt: skip
    models = [model, str(run / "final"), *a.compare]
    made = json.loads((Path(a.rollout) / "run.json").read_text())["settings"]  # the rollout's own prompts
    evaluations = {}
    for name, prompts, first, n in evaluation_sets(a, made):
        cfg = EvaluateConfig(models=models, prompts=prompts, first_prompt=first, max_prompts=n,
                             output_json=str(out / f"eval-{name}.json"))  # fmt: skip
        evaluations[name] = evaluation_summary(cached_evaluate(cfg))

    df = pd.concat([pd.read_parquet(f) for f in sorted((table / "data").glob("*.parquet"))], ignore_index=True)
    result = {
        "settings": asdict(a),
        "real_table": {"verifier": round(float(df["reward/verifier"].mean()), 4), "rows": len(df)},
        "tuned": str(run / "final"),
        "evaluations": evaluations,
    }
    if a.results_json:
        atomic_write_json(Path(a.results_json), result)
    return result


def make_parser():
    from trl import TrlParser

    return TrlParser((RealClipArguments,))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
