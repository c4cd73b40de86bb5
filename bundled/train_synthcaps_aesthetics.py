"""Train the bundled SynthCaps quality predictor: audiobox-aesthetics' `AesMultiOutput` with a small WavLM (the
package's own `WavLM` class), on SynthCaps' labels, saved in the Hub folder layout `AestheticsReward` loads.

    python bundled/train_synthcaps_aesthetics.py --output_dir outputs/aesthetics --install true

Labels (SynthCaps has no human ratings, so the four axes come from what the corpus knows):
* PQ (production quality), CE, CU: the degradation's quality label (none 5, muffled 3, hiss 2.5, clipping 2);
* PC (production complexity): 2 for one event, 4 for a sequence, 6 for an overlap.
The model card reports Spearman correlation of predicted PQ with held-out quality labels.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from scipy.stats import spearmanr
from transformers import Trainer, TrainingArguments
from trl import TrlParser

from base_model.data.synthcaps import example, render_audio
from reward_models.aesthetics import AXES, BUNDLED_AESTHETICS, AestheticsReward, build_aesthetics_model

WAVLM_SMALL = {
    # "layer_norm" extractor: per-frame norms, so a clip scores the same alone or zero-padded in a 10 s window
    # (the default extractor's GroupNorm normalises over time, padding included)
    "extractor_mode": "layer_norm",
    "encoder_layers": 2,
    "encoder_embed_dim": 128,
    "encoder_ffn_embed_dim": 256,
    "encoder_attention_heads": 2,
    "activation_fn": "gelu",
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "dropout_input": 0.0,
    "dropout_features": 0.0,
    "layer_norm_first": False,
    "conv_feature_layers": "[(64,10,5)] + [(64,3,2)] * 4 + [(64,2,2)] * 2",
    "conv_bias": False,
    "feature_grad_mult": 1.0,
    "mask_length": 10,
    "mask_prob": 0.0,
    "mask_selection": "static",
    "mask_other": 0.0,
    "no_mask_overlap": False,
    "mask_min_space": 1,
    "mask_channel_length": 10,
    "mask_channel_prob": 0.0,
    "mask_channel_selection": "static",
    "mask_channel_other": 0.0,
    "no_mask_channel_overlap": False,
    "mask_channel_min_space": 1,
    "conv_pos": 32,
    "conv_pos_groups": 4,
    "relative_position_embedding": True,
    "num_buckets": 320,
    "max_distance": 800,
    "gru_rel_pos": True,
    "normalize": False,
}
PC_LABEL = {"single": 2.0, "sequence": 4.0, "overlap": 6.0}


@dataclass
class AesTrainingConfig(TrainingArguments):
    output_dir: str = field(default="outputs/aesthetics", metadata={"help": "Where checkpoints and the model go."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Batch size."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    max_steps: int = field(default=500, metadata={"help": "Training steps."})
    warmup_steps: int = field(default=30, metadata={"help": "Warm-up steps."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Schedule."})
    logging_steps: int = field(default=50, metadata={"help": "Log every N steps."})
    save_steps: int = field(default=300, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int | None = field(default=1, metadata={"help": "Checkpoints kept."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep our columns."})


@dataclass
class AesDataArguments:
    train_examples: int = field(default=2000, metadata={"help": "SynthCaps training clips."})
    eval_examples: int = field(default=300, metadata={"help": "Validation clips for Spearman correlation."})
    install: bool = field(default=False, metadata={"help": "Copy the result to reward_models/pretrained/."})


def labels(attrs: dict, quality: float) -> dict[str, float]:
    return {"PQ": quality, "CE": quality, "CU": quality, "PC": PC_LABEL[attrs["structure"]]}


class AesRegression(torch.nn.Module):
    """MSE on normalised targets per axis, on the package's `{"wav", "mask"}` batch (10 s windows, masked)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, wav, mask, targets):
        preds = self.model({"wav": wav, "mask": mask})
        loss = sum(F.mse_loss(preds[a], targets[:, i]) for i, a in enumerate(AXES)) / len(AXES)
        return {"loss": loss}


def _data(split: str, n: int):
    rows = [example(i, split) for i in range(n)]
    wavs = np.stack([render_audio(r["attributes"], r["seed"]) for r in rows]).astype(np.float16)
    y = np.array([[labels(r["attributes"], r["quality"])[a] for a in AXES] for r in rows], dtype=np.float32)
    return wavs, y


def main(args: AesTrainingConfig, data: AesDataArguments) -> dict:
    torch.manual_seed(args.seed)
    wavs, y = _data("train", data.train_examples)
    mean, std = y.mean(0), y.std(0) + 1e-6
    target_transform = {a: {"mean": float(mean[i]), "std": float(std[i])} for i, a in enumerate(AXES)}
    model_cfg = {
        "proj_num_layer": 1,
        "proj_ln": False,
        "proj_act_fn": "gelu",
        "proj_dropout": 0.0,
        "nth_layer": WAVLM_SMALL["encoder_layers"] + 1,
        "use_weighted_layer_sum": True,
        "precision": "32",
        # No L2 normalisation of the pooled embedding: level is what hiss and clipping change most.
        "normalize_embed": False,
        "output_dim": 1,
        "freeze_encoder": False,
        "wavlm_cfg": WAVLM_SMALL,
    }
    model = build_aesthetics_model(model_cfg, target_transform)
    model.freeze_encoder = False
    yn = (y - mean) / std

    class Windows(torch.utils.data.Dataset):
        # Clips are shorter than the 10 s scoring window; with the layer-norm extractor and masked pooling, the
        # unpadded clip gives the features the padded window gives at scoring time, at 40 % of the cost.
        def __len__(self):
            return len(wavs)

        def __getitem__(self, i):
            w = torch.from_numpy(wavs[i].astype(np.float32))
            return {
                "wav": w[None],
                "mask": torch.ones(1, len(w), dtype=torch.bool),
                "targets": torch.from_numpy(yn[i]),
            }

    trainer = Trainer(
        model=AesRegression(model),
        args=args,
        train_dataset=Windows(),
        data_collator=lambda rows: {k: torch.stack([r[k] for r in rows]) for k in rows[0]},
    )
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    seconds = time.perf_counter() - start
    final = Path(args.output_dir) / "final"
    final.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(final / "model.safetensors"))
    (final / "config.json").write_text(json.dumps({**model_cfg, "target_transform": target_transform}, indent=2))
    reward = AestheticsReward(final)
    ev_wavs, ev_y = _data("validation", data.eval_examples)
    scores = {a: [] for a in AXES}
    for i in range(0, len(ev_wavs), 16):
        out = reward(torch.from_numpy(ev_wavs[i : i + 16].astype(np.float32)), 16000, [""] * len(ev_wavs[i : i + 16]))
        for a in AXES:
            scores[a].append(out[f"aesthetics/{a}"])
    pred = {a: torch.cat(v).numpy() for a, v in scores.items()}
    metrics = {
        "spearman_PQ_vs_quality_label": round(float(spearmanr(pred["PQ"], ev_y[:, AXES.index("PQ")])[0]), 4),
        "spearman_PC_vs_complexity_label": round(float(spearmanr(pred["PC"], ev_y[:, AXES.index("PC")])[0]), 4),
        "eval_clips": len(ev_wavs),
        "eval_split": "validation",
        "train_seconds": round(seconds, 1),
        "steps": trainer.state.global_step,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_examples": data.train_examples,
    }
    (final / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (final / "README.md").write_text(
        "# SynthCaps quality predictor (bundled aesthetics model)\n\naudiobox-aesthetics' `AesMultiOutput` with a "
        "2-layer 128-wide WavLM (the package's `WavLM` class, config in `config.json` under `wavlm_cfg`), trained on "
        f"SynthCaps labels (PQ/CE/CU: degradation quality; PC: structure complexity) by\n\n```\npython "
        f"bundled/train_synthcaps_aesthetics.py --max_steps {args.max_steps} --seed {args.seed}\n```\n\non "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}.\n\n## Metrics\n\n```json\n"
        f"{json.dumps(metrics, indent=2)}\n```\n\nToy model for offline development; not a judge of real audio.\n"
    )
    if data.install:
        if BUNDLED_AESTHETICS.exists():
            shutil.rmtree(BUNDLED_AESTHETICS)
        shutil.copytree(final, BUNDLED_AESTHETICS)
    print(json.dumps(metrics, indent=2))
    return metrics


def make_parser() -> TrlParser:
    return TrlParser((AesTrainingConfig, AesDataArguments))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
