"""Frozen reward models: `(waveforms, sample_rate, prompts, **kw) -> {name: Tensor(B)}`.

>>> from reward_models import load_reward
>>> verifier = load_reward("verifier")
>>> sorted(verifier.names)[:2]
['verifier', 'verifier/colour']

Names: `clap` (laion-clap; bundled SynthCaps CLAP when no checkpoint is given), `aesthetics` (audiobox-aesthetics;
bundled SynthCaps quality predictor when no checkpoint is given), `verifier` (SynthCaps attributes, signal
analysis), `music_verifier` (SynthMusic attributes, signal analysis), `preference:<dir>` (a Bradley–Terry head trained on listeners' judgements), a dotted path `package.module:function` for your own reward, or a composition such as
`"clap:1,aesthetics:0.5"` (a weighted sum, optionally standardised per reward).
"""

from __future__ import annotations

import torch

from .base import RewardModel
from .compose import FunctionReward, combine_scores, parse_reward_spec

__all__ = ["ComposedReward", "RewardModel", "combine_scores", "load_reward", "parse_reward_spec"]


def _load_single(name: str, **options) -> RewardModel:
    if name == "clap":
        from .clap import ClapReward

        return ClapReward(**options)
    if name == "aesthetics":
        from .aesthetics import AestheticsReward

        return AestheticsReward(**options)
    if name == "verifier":
        from .verifier import SynthCapsVerifier

        return SynthCapsVerifier()
    if name == "music_verifier":
        from .music_verifier import SynthMusicVerifier

        return SynthMusicVerifier()
    if name.startswith("preference:"):
        from .preference import PreferenceReward

        return PreferenceReward(name.split(":", 1)[1], **{k: v for k, v in options.items() if k == "device"})
    if ":" in name and name.partition(":")[2].isidentifier():
        return FunctionReward(name)
    raise ValueError(
        f"Unknown reward {name!r}: use 'clap', 'aesthetics', 'verifier', 'music_verifier', 'package.module:function', or a "
        "weighted composition like 'clap:1,aesthetics:0.5'."
    )


class ComposedReward(RewardModel):
    """Runs each named reward once and adds `reward` = the weighted (optionally standardised) sum.

    Score names are the reward names (`clap`, `aesthetics`, `aesthetics/PQ`, ...), so weights may also target a
    sub-score: `"aesthetics/PQ:1,clap:0.5"`.
    """

    def __init__(self, spec: str, standardize: bool = False, options: dict | None = None):
        self.weights = parse_reward_spec(spec)
        options = options or {}
        self.models: dict[str, RewardModel] = {}
        for name, _ in self.weights:
            base = name if name.count(":") or "/" not in name else name.split("/")[0]
            if base not in self.models:
                self.models[base] = _load_single(base, **options.get(base, {}))
        # a user reward's scores are named by its function ("mypkg.rewards:loudness" -> "loudness")
        self.weights = [
            (self.models[n].key if isinstance(self.models.get(n), FunctionReward) else n, w) for n, w in self.weights
        ]
        self.standardize = standardize
        self.names = ("reward",) + tuple(n for m in self.models.values() for n in m.names)
        self.model_id = "compose(" + ",".join(f"{m.model_id}" for m in self.models.values()) + ")"
        self.checkpoint_hash = ",".join(m.checkpoint_hash for m in self.models.values())

    def score(self, waveforms, sample_rate, prompts, **kwargs):
        scores: dict[str, torch.Tensor] = {}
        for model in self.models.values():
            scores.update(model(waveforms, sample_rate, prompts, **kwargs))
        scores["reward"] = combine_scores(scores, self.weights, self.standardize)
        return scores


def load_reward(name: str, standardize: bool = False, **options) -> RewardModel:
    """Builds a frozen reward model by name (see the module docstring). Options go to the reward's constructor,
    e.g. `load_reward("clap", checkpoint="630k-audioset-best.pt", roberta_path="roberta-base/")`."""
    if name.startswith("preference:"):
        return _load_single(name, **options)
    if "," in name or (name.count(":") == 1 and _is_weight(name)) or name.count(":") > 1:
        return ComposedReward(
            name, standardize=standardize, options={k: v for k, v in options.items() if isinstance(v, dict)}
        )
    return _load_single(name, **options)


def _is_weight(spec: str) -> bool:
    try:
        float(spec.rpartition(":")[2])
        return True
    except ValueError:
        return False
