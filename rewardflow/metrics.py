"""Evaluation metrics that need no model: Fréchet distance between feature sets, mel statistics features."""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets `(N, D)` and `(M, D)` (FID/FAD formula).

    >>> x = np.random.default_rng(0).standard_normal((500, 4))
    >>> round(frechet_distance(x, x), 6)
    0.0
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with the same D, got {a.shape} and {b.shape}.")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("need at least two embeddings per set for a covariance.")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.isfinite(covmean).all():  # near-singular product: regularise as the FID reference code does
        eps = 1e-6 * np.eye(a.shape[1])
        covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = covmean.real
    fd = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))
    return max(fd, 0.0)  # non-negative by definition; round-off can dip a hair below 0 for identical sets


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A permutation of `range(n)` (n >= 2) that moves every index: each i goes to the one before it in a random
    cycle. Pairs each clip with another clip's prompt for a shuffled-prompt control, never its own."""
    order = np.random.default_rng(seed).permutation(n)
    perm = np.empty(n, dtype=int)
    perm[order] = np.roll(order, 1)
    return perm


def bootstrap_interval(values: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of `values` and its 95% percentile-bootstrap interval (non-finite values excluded; NaNs when none left).

    >>> bootstrap_interval(np.ones(5), 100)
    (1.0, 1.0, 1.0)
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    means = v[np.random.default_rng(seed).integers(0, len(v), size=(n, len(v)))].mean(1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def mel_statistics(mel: torch.Tensor) -> np.ndarray:
    """Per-clip features from log-mels `(B, n_mels, F)`: per-bin mean and std over time, `(B, 2 * n_mels)`."""
    mel = mel.detach().float().cpu()
    return torch.cat([mel.mean(-1), mel.std(-1)], dim=1).numpy()
