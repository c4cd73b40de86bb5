"""Masks, the rectified-flow path and the masked flow-matching loss.

Kept apart from the network (as F5-TTS splits `cfm.py` from its backbone and facebookresearch/flow_matching
splits path from solver): everything here is a pure function of tensors, so tests can recompute it by hand.

Conventions (flow_matching / TorchCFM): `x_0` noise, `x_1` data, `x_t` the point on the path, `u_t` the target
velocity, `v_t` the prediction; `t` runs from 0 (noise) to 1 (data). `infill_mask` is True on frames to generate.
"""

from __future__ import annotations

import math

import torch


def num_spans(num_frames: int, span_length: int) -> int:
    """`N = ceil(T / L)` spans cover `T` frames (the last span may be short)."""
    return math.ceil(num_frames / span_length)


def spans_to_frames(span_mask: torch.Tensor, span_length: int, num_frames: int) -> torch.Tensor:
    """Expands a span mask `(B, N)` to a frame mask `(B, T)`."""
    return span_mask.repeat_interleave(span_length, dim=1)[:, :num_frames]


def sample_mask_ratio(
    batch_size: int, mode: str, mask_ratio: float, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """Per-sample fraction of spans to mask, `(B,)`.

    `fixed` uses `mask_ratio` (the paper); `cosine` draws `r ~ U(0, 1)` and masks `cos(pi/2 * r)`, the
    distribution MaskGIT trains with so that every decoding step's mask level is seen in training.
    """
    if mode == "fixed":
        return torch.full((batch_size,), float(mask_ratio), device=device)
    if mode == "cosine":
        r = torch.rand(batch_size, generator=generator, device=device)
        return torch.cos(0.5 * math.pi * r)
    raise ValueError(f"Unknown mask_ratio_mode {mode!r}; use 'fixed' or 'cosine'.")


def sample_span_mask(
    batch_size: int,
    num_frames: int,
    span_length: int,
    mask_ratio: float | torch.Tensor,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draws an `infill_mask` `(B, T)` that masks `round(N * ratio)` random spans of `span_length` frames.

    At least one span is always masked, so the loss (an average over masked frames) is always defined.

    Args:
        mask_ratio (`float` or `torch.Tensor` of shape `(B,)`): fraction of the `N = ceil(T / L)` spans to mask.
    """
    n = num_spans(num_frames, span_length)
    ratio = torch.as_tensor(mask_ratio, dtype=torch.float32, device=device).expand(batch_size)
    num_masked = torch.round(ratio * n).long().clamp(1, n)  # (B,)
    # A random permutation per sample (argsort of uniform noise); its first `num_masked` spans are masked.
    order = torch.rand(batch_size, n, generator=generator, device=device).argsort(dim=1)  # (B, N)
    rank = order.argsort(dim=1)  # rank of each span in the permutation
    span_mask = rank < num_masked[:, None]  # (B, N)
    return spans_to_frames(span_mask, span_length, num_frames)


def sample_time(batch_size: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Uniform flow times `t ~ U(0, 1)`, `(B,)`."""
    return torch.rand(batch_size, generator=generator, device=device)


def path_sample(
    x_0: torch.Tensor, x_1: torch.Tensor, t: torch.Tensor, sigma_min: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rectified-flow (conditional OT) path: `x_t = (1 - (1 - sigma_min) t) x_0 + t x_1`, `u_t = x_1 - (1 - sigma_min) x_0`.

    Args:
        x_0 (`torch.Tensor` of shape `(B, T, C)`): noise.
        x_1 (`torch.Tensor` of shape `(B, T, C)`): data.
        t (`torch.Tensor` of shape `(B,)` or `(B, T)`): flow time per sample or per frame.
    """
    t = t.reshape(*t.shape, *([1] * (x_1.dim() - t.dim())))  # broadcast over the trailing dims
    x_t = (1 - (1 - sigma_min) * t) * x_0 + t * x_1
    u_t = x_1 - (1 - sigma_min) * x_0
    return x_t, u_t


def masked_flow_loss(v_t: torch.Tensor, u_t: torch.Tensor, infill_mask: torch.Tensor) -> torch.Tensor:
    """`||v_t - u_t||^2` averaged over channels and masked frames only, per sample: returns `(B,)`.

    Pretraining averages it over the batch; reward fine-tuning weights it per sample.

    Args:
        v_t, u_t (`torch.Tensor` of shape `(B, T, C)`): predicted and target velocities.
        infill_mask (`torch.BoolTensor` of shape `(B, T)`): True on frames that count.
    """
    per_frame = (v_t - u_t).pow(2).mean(dim=-1)  # (B, T)
    weights = infill_mask.to(per_frame.dtype)
    # where() rather than a product so that non-finite values on frames outside the mask cannot leak in.
    per_frame = torch.where(infill_mask, per_frame, torch.zeros_like(per_frame))
    return per_frame.sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
