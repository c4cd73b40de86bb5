"""Reward composition: a weighted sum of named scores, e.g. `clap:1,aesthetics:0.5`, with optional standardisation;
user rewards by dotted import path (`mypkg.rewards:loudness`)."""

from __future__ import annotations

import importlib
import math

import torch

from .base import RewardModel


def parse_reward_spec(spec: str) -> list[tuple[str, float]]:
    """`"clap:1,aesthetics:0.5"` -> `[("clap", 1.0), ("aesthetics", 0.5)]`; a bare name has weight 1.

    A dotted import path keeps its own colon: `"mypkg.rewards:loudness:2"` -> `[("mypkg.rewards:loudness", 2.0)]`.
    """
    parts = []
    for item in (p.strip() for p in spec.split(",")):
        if not item:
            raise ValueError(f"empty entry in reward spec {spec!r}.")
        name, weight = item, 1.0
        head, sep, tail = item.rpartition(":")
        if sep:
            try:
                weight = float(tail)
                name = head
            except ValueError:
                name = item  # "module:function" with no weight
        if not math.isfinite(weight):
            raise ValueError(f"reward weight for {name!r} must be finite, got {weight}.")
        parts.append((name, weight))
    return parts


def import_reward_function(path: str):
    """`"package.module:function"` -> the callable, with a clear error when it cannot be found."""
    module_name, sep, attr = path.partition(":")
    if not sep or not attr:
        raise ValueError(f"a user reward is 'package.module:function', got {path!r}.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(f"cannot import {module_name!r} for reward {path!r}: {e}") from e
    if not hasattr(module, attr):
        raise AttributeError(f"module {module_name!r} has no {attr!r} (reward {path!r}).")
    return getattr(module, attr)


class FunctionReward(RewardModel):
    """Wraps a user function `f(waveforms, sample_rate, prompts, **kw) -> Tensor(B) | dict[str, Tensor(B)]`."""

    def __init__(self, path: str):
        self.fn = import_reward_function(path)
        self.model_id = path
        self.key = path.rpartition(":")[2]
        self.names = (self.key,)

    def score(self, waveforms, sample_rate, prompts, **kwargs):
        out = self.fn(waveforms, sample_rate, prompts, **kwargs)
        if not isinstance(out, dict):
            out = {self.key: torch.as_tensor(out, dtype=torch.float32)}
        for k, v in out.items():
            if v.shape != (len(prompts),):
                raise ValueError(
                    f"reward {self.model_id!r} returned {tuple(v.shape)} scores for key {k!r}; "
                    f"expected ({len(prompts)},)."
                )
        self.names = tuple(out)
        return out


def combine_scores(
    scores: dict[str, torch.Tensor], weights: list[tuple[str, float]], standardize: bool = False
) -> torch.Tensor:
    """Weighted sum of named score columns `(B,)`; with `standardize`, each column is z-scored over the batch first
    (a constant column contributes 0). NaN in any used column gives NaN for that row."""
    missing = [n for n, _ in weights if n not in scores]
    if missing:
        raise KeyError(f"no score named {missing}; available: {sorted(scores)}.")
    total = None
    for name, w in weights:
        s = scores[name].float()
        if standardize:
            finite = s[torch.isfinite(s)]
            std = finite.std() if finite.numel() > 1 else torch.tensor(0.0)
            s = (s - finite.mean()) / std if std > 0 else torch.where(torch.isfinite(s), 0.0, s)
        total = w * s if total is None else total + w * s
    return total
