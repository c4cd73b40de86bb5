"""The fine-tuning objective, top to bottom: which reward, its per-sample weights, and the loss (paper §4).

    L = mean_b[(w_b − b) · ‖v_θ − u_t‖²_b] + β · mean_b[‖v_θ − v_ref‖²_b]

1. `resolve_reward`: the `--reward` spec -> one reward `r` per rollout row.
2. `reward_weights`: `r` -> `w` by `--weighting` (the paper's `exp(τ·r)` and safer alternatives). Plain numpy on the
   whole table, computed once before training, so the weights do not depend on batch composition, process count or
   resume point.
3. `RewardWeightedObjective`: the per-batch loss from the policy's per-sample flow loss and the frozen reference's
   velocity at the same `(x_t, t, z)`; `b` is `--advantage_baseline` with `--weighting advantage` and 0 otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from base_model.flow import masked_flow_loss
from reward_models.compose import parse_reward_spec

# Raw exp weights above e^30 (~1e13) break float32 training before exp itself overflows (e^88.7): the gradient
# norm squares them (seen: τ = 10 on aesthetics scores near 4.8 gave weights ~e^48 and an infinite gradient norm).
_MAX_LOG_WEIGHT = 30.0


def reward_columns(column_names: list[str]) -> list[str]:
    """The score names a rollout table offers (`reward/clap` -> `clap`)."""
    return sorted(c[len("reward/") :] for c in column_names if c.startswith("reward/"))


def resolve_reward(spec: str, table: dict[str, np.ndarray] | None = None, column_names: list[str] | None = None):
    """`--reward` -> `(r (N,), parts)`: one score column or a weighted sum (`clap:1,aesthetics:0.5`).

    Args:
        spec: the `--reward` string.
        table: `{"reward/<name>": values (N,)}`; when None only the names are checked (against `column_names`).

    Raises a `ValueError` listing the available columns when a name is unknown. NaN in any used column gives NaN.
    """
    parts = parse_reward_spec(spec)
    names = list(table) if table is not None else list(column_names or [])
    available = reward_columns(names)
    missing = [n for n, _ in parts if n not in available]
    if missing:
        raise ValueError(
            f"--reward {spec!r}: no score column {', '.join(repr(m) for m in missing)} in the rollout table. "
            f"Available: {', '.join(available) or '(none)'}. Add one with `python rewardflow/rollout.py --rescore "
            "--rewards <name> --output_dir <rollout>`."
        )
    if table is None:
        return None, parts
    r = sum(w * np.asarray(table[f"reward/{n}"], dtype=np.float64) for n, w in parts)
    return np.asarray(r, dtype=np.float64), parts


def group_indices(groups: list) -> list[np.ndarray]:
    """Row indices of each group (prompt), in order of first appearance."""
    index: dict = {}
    for i, g in enumerate(groups):
        index.setdefault(g, []).append(i)
    return [np.asarray(v) for v in index.values()]


def standardize_per_group(r: np.ndarray, groups: list) -> np.ndarray:
    """`(r − mean_p) / (std_p + 1e-4)` over each prompt's own samples: equal rewards give 0, never a division by 0."""
    z = np.zeros_like(r)
    for idx in group_indices(groups):
        g = r[idx]
        z[idx] = (g - g.mean()) / ((g.std() if len(g) > 1 else 0.0) + 1e-4)
    return z


def reward_weights(
    rewards: np.ndarray,
    groups: list,
    tau: float,
    weighting: str = "exp",
    weight_clip: float = 10.0,
    top_k: float = 0.5,
) -> np.ndarray:
    """Per-sample loss weights `(N,)` (float64) for finite `rewards` `(N,)`; `groups` holds each sample's prompt id.

    See `RewardFlowConfig` for the modes. Raw `exp` raises when `τ·r` would overflow float32, naming the safe modes.
    Equal rewards give uniform weights in every mode (`standardized` guards the zero std).
    """
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 1 or len(r) != len(groups):
        raise ValueError(f"rewards {r.shape} and groups ({len(groups)}) must be (N,) and N long.")
    if len(r) == 0:
        raise ValueError("no samples to weight.")
    if not np.isfinite(r).all():
        raise ValueError("rewards must be finite here; drop NaN rows first (see `finite_rows`).")
    if weighting == "exp":
        logw = tau * r
        if logw.max() > _MAX_LOG_WEIGHT or logw.min() < -_MAX_LOG_WEIGHT:
            worst = float(np.abs(logw).max())
            raise ValueError(
                f"--weighting exp: tau * reward reaches {worst:.4g}; weights exp(tau * r) beyond e^{_MAX_LOG_WEIGHT:.0f} "
                "overflow float32 gradients. Lower --tau, or use --weighting self_normalized (the same weights "
                "up to a constant, computed with log-sum-exp), standardized or clipped."
            )
        return np.exp(logw)
    if weighting == "self_normalized":
        logw = tau * r
        logw = logw - logw.max()  # log-sum-exp: exp of at most 0
        w = np.exp(logw)
        return w * (len(w) / w.sum())
    if weighting == "standardized":
        w = np.exp(tau * standardize_per_group(r, groups))
        return w * (len(w) / w.sum())
    if weighting == "advantage":
        w = np.exp(tau * standardize_per_group(r, groups))
        for idx in group_indices(groups):
            w[idx] /= w[idx].mean()  # mean 1 within each prompt: the trainer subtracts this baseline in the loss
        return w
    if weighting == "clipped":
        c = math.log(weight_clip)
        w = np.exp(np.clip(tau * (r - r.mean()), -c, c))
        return w * (len(w) / w.sum())
    if weighting == "topk":
        w = np.zeros_like(r)
        for idx in group_indices(groups):
            k = max(1, math.ceil(top_k * len(idx)))
            order = idx[np.argsort(-r[idx], kind="stable")]  # ties keep table order
            w[order[:k]] = 1.0
        return w
    raise ValueError(f"unknown weighting {weighting!r}.")


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size as a fraction of N: `(Σw)² / (N Σw²)`, 1 for uniform weights."""
    w = np.asarray(weights, dtype=np.float64)
    s2 = float((w**2).sum())
    return float(w.sum() ** 2 / (len(w) * s2)) if s2 > 0 else 0.0


def finite_rows(rewards: np.ndarray, max_nan_fraction: float) -> tuple[np.ndarray, int]:
    """Boolean keep-mask of rows with a finite reward and the number dropped; raises above `max_nan_fraction`."""
    r = np.asarray(rewards, dtype=np.float64)
    keep = np.isfinite(r)
    dropped = int((~keep).sum())
    if len(r) and dropped / len(r) > max_nan_fraction:
        raise ValueError(
            f"{dropped} of {len(r)} rows have a NaN/inf reward, above --max_nan_fraction {max_nan_fraction}. "
            "Check the reward model (rescore with `rewardflow/rollout.py --rescore`) or raise --max_nan_fraction."
        )
    return keep, dropped


# ------------------------------------------------------------------------------------------------- the loss
@dataclass
class ObjectiveTerms:
    """One batch's loss and its parts, each `(B,)` but `loss` (a scalar)."""

    loss: torch.Tensor
    flow: torch.Tensor  # ‖v_θ − u_t‖² per sample (masked frames), unweighted
    reference: torch.Tensor  # ‖v_θ − v_ref‖² per sample (zeros when β = 0)
    loss_weights: torch.Tensor  # w_b − b, what multiplies `flow`


class RewardWeightedObjective:
    r"""Reward-weighted flow matching against a frozen reference (paper §4, Algorithm 2).

    `loss = mean_b[(w_b − b) · flow_b] + β · mean_b[reference_b]` with `flow_b = ‖v_θ − u_t‖²` and
    `reference_b = ‖v_θ − v_ref‖²`, both averaged over the masked frames of sample `b` exactly like the model's own
    loss (and over the `M = flow_batch_mul` flow times of each sample).

    Args:
        beta: weight of the reference term (paper: λ = 1); 0 drops it.
        baseline: `b`, subtracted from every weight (`--weighting advantage`; 0 otherwise).
    """

    def __init__(self, beta: float, baseline: float = 0.0):
        self.beta, self.baseline = beta, baseline

    def __call__(self, out, v_ref: torch.Tensor | None, weights: torch.Tensor) -> ObjectiveTerms:
        """`out`: the policy's output (`loss (B,)`, `v_t`, `infill_mask`); `v_ref`: the reference velocity `(M*B, T, C)` at the same
        inputs, or None when β = 0; `weights`: `(B,)` from [`reward_weights`]."""
        flow = out.loss  # (B,), already averaged over masked frames and flow times
        loss_weights = weights - self.baseline
        loss = (loss_weights * flow).mean()
        reference = torch.zeros_like(flow)
        if self.beta > 0:
            B = flow.shape[0]
            M = out.v_t.shape[0] // B
            mask = out.infill_mask.repeat(M, 1)
            reference = masked_flow_loss(out.v_t, v_ref, mask).view(M, B).mean(0)  # (B,)
            loss = loss + self.beta * reference.mean()
        return ObjectiveTerms(loss=loss, flow=flow, reference=reference, loss_weights=loss_weights)


# ----------------------------------------------------------------------------------------- preference pairs
def ranked_pairs(rewards: np.ndarray, groups: list) -> list[tuple[int, int]]:
    """CRPO-style pairs from a reward: per prompt, (best clip, worst clip) by `rewards`, skipping prompts whose clips
    all score the same (no preference to learn)."""
    pairs = []
    for idx in group_indices(groups):
        r = rewards[idx]
        ok = np.isfinite(r)
        if ok.sum() < 2 or np.ptp(r[ok]) == 0:
            continue
        idx, r = idx[ok], r[ok]
        pairs.append((int(idx[np.argmax(r)]), int(idx[np.argmin(r)])))
    return pairs


class PreferenceObjective:
    r"""Diffusion-DPO for flow matching (Wallace et al.; as Tango 2 and TangoFlux's CRPO train), on pairs of one
    prompt's clips (winner `w`, loser `l`) with one draw of noise, `t` and mask shared by the pair and the reference:

        loss = −log σ(−β/2 · [(L_θ(w) − L_θ(l)) − (L_ref(w) − L_ref(l))]) + λ · L_θ(w)

    `L` is the per-sample flow-matching loss (lower = more likely), so the first term raises the policy's likelihood
    of winners over losers relative to the frozen reference; λ (`--dpo_sft_weight`, TangoFlux: 1) keeps fitting the
    winners themselves. The reference is required: it is what keeps the policy near the pretrained model.
    """

    def __init__(self, beta: float, sft_weight: float = 1.0):
        self.beta, self.sft_weight = beta, sft_weight

    def __call__(self, loss_policy: torch.Tensor, loss_ref: torch.Tensor) -> dict:
        """`loss_policy`, `loss_ref`: per-sample flow losses `(2P,)`, winners first then losers."""
        win, lose = loss_policy.chunk(2)
        ref_win, ref_lose = loss_ref.chunk(2)
        inside = -0.5 * self.beta * ((win - lose) - (ref_win - ref_lose))  # (P,)
        dpo = -F.logsigmoid(inside)
        loss = dpo.mean() + self.sft_weight * win.mean()
        return {"loss": loss, "dpo": dpo, "implicit_accuracy": (inside > 0).float(), "flow_w": win, "flow_l": lose}
