"""A preference reward model: a Bradley–Terry head over frozen CLAP audio and text embeddings (and, optionally, the
clip's signal descriptors), trained on listeners' A/B judgements (`rewardflow/train_reward.py`), usable everywhere a
reward is: `load_reward("preference:<dir>")`.

    r(audio, text) = mean over K heads of MLP_k([e_a, e_t, e_a * e_t, z]),    P(a preferred to b | text) = sigmoid(r(a, t) - r(b, t))

`z` are the clip's standardised descriptors (`reward_models/descriptors.py`: level, envelope, modulation rates,
spectral shape), present when `descriptor_dim > 0`; the standardisation's mean and scale are stored with the weights.
K > 1 heads are an ensemble, each trained from its own seed.

The folder is a `save_pretrained` folder (`config.json` + `model.safetensors`) whose config names the CLAP the
embeddings come from (the bundled SynthCaps CLAP, or a checkpoint path), plus the model card.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from .base import RewardModel, file_hash


class PreferenceRewardConfig(PretrainedConfig):
    model_type = "rewardflow_preference"

    def __init__(self, embed_dim: int = 512, hidden_size: int = 128, clap_checkpoint: str = "", clap_model_id: str = "",
                 clap_hash: str = "", descriptor_dim: int = 0, num_heads: int = 1, **kwargs):  # fmt: skip
        self.embed_dim, self.hidden_size = embed_dim, hidden_size
        self.descriptor_dim, self.num_heads = descriptor_dim, num_heads
        self.clap_checkpoint, self.clap_model_id, self.clap_hash = clap_checkpoint, clap_model_id, clap_hash
        super().__init__(**kwargs)


class PreferenceRewardModel(PreTrainedModel):
    """The heads: `forward(audio_emb (B, E), text_emb (B, E), descriptors (B, D) | None) -> r (B,)`, the mean of
    the heads' scores (`head_scores` gives each)."""

    config_class = PreferenceRewardConfig

    def __init__(self, config: PreferenceRewardConfig):
        super().__init__(config)
        E, H, D = config.embed_dim, config.hidden_size, config.descriptor_dim
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(3 * E + D, H), nn.GELU(), nn.Linear(H, H), nn.GELU(), nn.Linear(H, 1))
            for _ in range(config.num_heads)
        )
        self.register_buffer("descriptor_mean", torch.zeros(D))
        self.register_buffer("descriptor_scale", torch.ones(D))
        self.post_init()

    def features(self, audio_emb, text_emb, descriptors=None) -> torch.Tensor:
        parts = [audio_emb, text_emb, audio_emb * text_emb]
        if self.config.descriptor_dim:
            if descriptors is None:
                raise ValueError("this preference model reads signal descriptors: pass them (descriptors=...).")
            parts.append((descriptors - self.descriptor_mean) / self.descriptor_scale)
        return torch.cat(parts, dim=-1)

    def head_scores(self, audio_emb, text_emb, descriptors=None) -> torch.Tensor:
        """`(K, B)`: every head's score."""
        x = self.features(audio_emb, text_emb, descriptors)
        return torch.stack([head(x).squeeze(-1) for head in self.heads])

    def forward(self, audio_emb, text_emb, descriptors=None) -> torch.Tensor:
        return self.head_scores(audio_emb, text_emb, descriptors).mean(0)


class PreferenceReward(RewardModel):
    """`{"preference": r (B,)}` from a trained head and the CLAP it was trained on."""

    names = ("preference",)

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu"):
        from .clap import ClapReward

        path = Path(path)
        if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
            raise FileNotFoundError(
                f"no preference reward model in {path}: train one with `python rewardflow/train_reward.py "
                f"--rollouts <rollout> --output_dir {path}`."
            )
        self.head = PreferenceRewardModel.from_pretrained(path).eval().to(device)
        cfg = self.head.config
        self.clap = ClapReward(checkpoint=cfg.clap_checkpoint or None, device=device)
        if cfg.clap_hash and self.clap.checkpoint_hash != cfg.clap_hash:
            raise ValueError(
                f"{path} was trained on CLAP {cfg.clap_model_id} ({cfg.clap_hash}) but {self.clap.checkpoint_hash} "
                "loaded: its embeddings would not mean what the head learned. Retrain it, or restore that CLAP."
            )
        self.model_id = f"preference:{path.name}"
        self.checkpoint_hash = file_hash(path)

    def score(self, waveforms, sample_rate, prompts, **kwargs):
        a = self.clap.embed_audio(waveforms, sample_rate)
        t = self.clap.embed_text(list(prompts))
        device = next(self.head.parameters()).device
        d = None
        if self.head.config.descriptor_dim:
            from .descriptors import batch_descriptors

            d = torch.as_tensor(batch_descriptors(waveforms, sample_rate), device=device)
        r = self.head(torch.as_tensor(a, device=device).float(), torch.as_tensor(t, device=device).float(), d)
        return {"preference": r.cpu()}
