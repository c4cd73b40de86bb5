"""Scoring clips with reward models, as rollout and evaluation both do: which rewards, with which checkpoints,
and one score column per reward output (`reward/<name>`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class RewardArguments:
    """The reward-model flags shared by rollout and evaluation."""

    rewards: list[str] = field(
        default_factory=lambda: ["clap", "aesthetics", "verifier"],
        metadata={"help": "Reward models to score with (names or 'package.module:function')."},
    )
    clap_checkpoint: str = field(default="", metadata={"help": "CLAP checkpoint (default: bundled SynthCaps CLAP)."})
    aesthetics_checkpoint: str = field(
        default="", metadata={"help": "audiobox-aesthetics checkpoint or folder (default: bundled)."}
    )

    def check_rewards(self) -> None:
        """Fails early on checkpoints that are not there (a wrong path would otherwise fail after generation)."""
        from pathlib import Path

        if not self.rewards:
            raise ValueError("--rewards is empty: name at least one reward (clap, aesthetics, verifier, ...).")
        for flag, path in (
            ("--clap_checkpoint", self.clap_checkpoint),
            ("--aesthetics_checkpoint", self.aesthetics_checkpoint),
        ):
            if path and not Path(path).exists():
                raise FileNotFoundError(f"{flag} {path}: no such file or folder. Pass the checkpoint's path.")


def check_rewards_apply(names: list[str], prompts: list[dict]) -> None:
    """A verifier scores only prompts with its own corpus's attributes (SynthCaps: `verifier`, SynthMusic:
    `music_verifier`): asking for one on other prompts would give NaN or fail after all the generation, so it is
    refused before."""
    from base_model.data import PROCEDURAL, corpus_of_attributes

    corpora = {corpus_of_attributes(p.get("attributes")) for p in prompts} - {None}
    for corpus in PROCEDURAL.values():
        if corpus.verifier not in names or corpus in corpora:
            continue
        other = next(iter(corpora), None)
        fix = (
            f"use --rewards ... {other.verifier} for these {other.key} prompts"
            if other
            else f"drop {corpus.verifier!r} from --rewards, or use --prompts {corpus.key}:<split>"
        )
        raise ValueError(
            f"--rewards {corpus.verifier} checks a clip against {corpus.key} prompt attributes and these prompts "
            f"have none: {fix}."
        )


def build_rewards(names: list[str], clap_checkpoint: str = "", aesthetics_checkpoint: str = "", device="cpu") -> dict:
    """`{name: reward model}` for each name; CLAP and aesthetics take their checkpoint and device."""
    from reward_models import load_reward

    out = {}
    for name in names:
        opts = {}
        if name == "clap" and clap_checkpoint:
            opts["checkpoint"] = clap_checkpoint
        if name == "aesthetics" and aesthetics_checkpoint:
            opts["checkpoint"] = aesthetics_checkpoint
        if name in ("clap", "aesthetics"):
            opts["device"] = device
        out[name] = load_reward(name, **opts)
    return out


def score_batch(
    rewards: dict, wavs: torch.Tensor, sample_rate: int, prompts: list[str], attributes: list[str]
) -> dict[str, np.ndarray]:
    """`{"reward/<score>": (B,) float32}` from every reward model on one batch of clips."""
    cols = {}
    for name, reward in rewards.items():
        scores = reward(wavs, sample_rate, prompts, attributes=attributes)
        for key, val in scores.items():
            if val.shape != (len(prompts),):
                raise ValueError(
                    f"reward {name!r} returned {tuple(val.shape)} scores for {key!r}; expected "
                    f"({len(prompts)},), one per clip."
                )
            cols[f"reward/{key}"] = val.float().numpy()
    return cols
