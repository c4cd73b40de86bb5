"""The reward-model contract, shared by every scorer.

A reward model is a frozen callable `reward(waveforms, sample_rate, prompts, **kw) -> dict[str, Tensor(B)]` that
runs under `torch.inference_mode()`, batched, on its own device. It resamples to the rate its model needs and
names its checkpoint (`model_id`, `checkpoint_hash`) so rollout tables can record it. A score that does not apply is
NaN (never 0), following TRL's reward-function contract: non-finite audio gives NaN scores for that row.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from base_model.files import DOCUMENTATION_FILES, file_hash  # noqa: F401 - re-exported: rewards name checkpoints

logger = logging.getLogger(__name__)


def resample(waveforms: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Resamples `(B, N)` with librosa's soxr (high quality); a no-op when the rates match."""
    if orig_sr == target_sr:
        return waveforms
    import librosa

    out = librosa.resample(waveforms.detach().cpu().float().numpy(), orig_sr=orig_sr, target_sr=target_sr, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(out))


class RewardModel:
    """Base class: input validation, device handling, NaN rows. Subclasses implement `score`."""

    names: tuple[str, ...] = ()
    model_id: str = ""
    checkpoint_hash: str = ""

    def score(
        self, waveforms: torch.Tensor, sample_rate: int, prompts: list[str], **kwargs
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def __call__(self, waveforms, sample_rate: int, prompts: list[str], **kwargs) -> dict[str, torch.Tensor]:
        if isinstance(waveforms, (list, tuple)):
            n = max(len(w) for w in waveforms) if waveforms else 0
            waveforms = (
                torch.stack(
                    [
                        torch.nn.functional.pad(torch.as_tensor(w, dtype=torch.float32), (0, n - len(w)))
                        for w in waveforms
                    ]
                )
                if waveforms
                else torch.zeros(0, 0)
            )
        waveforms = torch.as_tensor(waveforms, dtype=torch.float32)
        if waveforms.dim() == 1:
            waveforms = waveforms[None]
        if waveforms.dim() != 2:
            raise ValueError(f"{self.model_id}: waveforms must be (B, N) mono, got shape {tuple(waveforms.shape)}.")
        if isinstance(prompts, str):
            prompts = [prompts]
        B = waveforms.shape[0]
        if len(prompts) != B:
            raise ValueError(
                f"{self.model_id}: got {B} waveforms but {len(prompts)} prompts; pass one prompt per clip."
            )
        if not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(f"{self.model_id}: sample_rate must be a positive int, got {sample_rate!r}.")
        finite = torch.isfinite(waveforms).all(dim=1)
        out = {k: torch.full((B,), math.nan) for k in self.names}
        if finite.any():
            idx = finite.nonzero(as_tuple=True)[0]
            kw = {
                k: ([v[i] for i in idx.tolist()] if isinstance(v, (list, tuple)) and len(v) == B else v)
                for k, v in kwargs.items()
            }
            with torch.inference_mode():
                scores = self.score(waveforms[idx], sample_rate, [prompts[i] for i in idx.tolist()], **kw)
            for k, v in scores.items():
                out[k][idx] = v.detach().float().cpu()
        if not finite.all():
            logger.warning("%s: %d clip(s) with NaN/inf samples scored NaN", self.model_id, int((~finite).sum()))
        return out
