"""Vocoders: log-mel `(B, n_mels, frames)` -> waveforms `(B, N)`.

Interface: an object with `sample_rate`, `__call__(mel) -> Tensor(B, N)` and `to_config() -> dict` (so a saved
pipeline can rebuild it with [`load_vocoder`]). Griffin-Lim (librosa) is the offline default; BigVGAN loads from a
local folder through the `bigvgan` package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .mel import MelConfig


class Vocoder(Protocol):
    sample_rate: int

    def __call__(self, mel: torch.Tensor) -> torch.Tensor: ...

    def to_config(self) -> dict: ...


class GriffinLimVocoder:
    """Inverts the log-mel with librosa's mel inversion + Griffin-Lim (no weights, CPU)."""

    def __init__(self, mel_config: MelConfig | None = None, n_iter: int = 32):
        self.mel_config = mel_config or MelConfig()
        self.n_iter = n_iter
        self.sample_rate = self.mel_config.sample_rate

    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        c = self.mel_config
        mag = np.exp(mel.detach().float().cpu().numpy())  # undo log compression, (B, n_mels, frames)
        import librosa  # imported here: the model code runs without it

        stft = librosa.feature.inverse.mel_to_stft(
            mag, sr=c.sample_rate, n_fft=c.n_fft, power=c.power, fmin=c.f_min, fmax=c.f_max
        )
        wav = librosa.griffinlim(
            stft,
            n_iter=self.n_iter,
            hop_length=c.hop_length,
            win_length=c.win_length,
            n_fft=c.n_fft,
            center=True,
            pad_mode="constant",
            init=None,  # zero-phase start: librosa's default random phases make audio differ run to run
        )
        return torch.from_numpy(np.ascontiguousarray(wav)).float().reshape(mel.shape[0], -1)

    def to_config(self) -> dict:
        return {"type": "griffin_lim", "n_iter": self.n_iter}


class BigVGANVocoder:
    """NVIDIA BigVGAN from a local folder (`config.json` + `bigvgan_generator.pt`), via the `bigvgan` package.

    Its mel settings must match the pipeline's (16 kHz, 80 bins, hop 256 for the default front end).
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        path = Path(path)
        if not (path / "config.json").is_file() or not (path / "bigvgan_generator.pt").is_file():
            raise FileNotFoundError(
                f"BigVGAN weights not found in {path}: it needs config.json and bigvgan_generator.pt. Download a "
                "BigVGAN release (e.g. nvidia/bigvgan_v2_22khz_80band_256x) into that folder on a machine with "
                "internet access, or use the offline default vocoder='griffin_lim'."
            )
        try:
            import bigvgan
        except ImportError as e:
            raise ImportError("BigVGAN needs the `bigvgan` package: pip install bigvgan") from e
        self.path = path
        self.model = bigvgan.BigVGAN.from_pretrained(str(path), use_cuda_kernel=False)
        self.model.remove_weight_norm()
        self.model.eval().to(device)
        self.sample_rate = int(self.model.h.sampling_rate)

    @torch.inference_mode()
    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        p = next(self.model.parameters())
        return self.model(mel.to(p.device, p.dtype)).squeeze(1).float().cpu()

    def to_config(self) -> dict:
        return {"type": "bigvgan", "path": str(self.path)}


def load_vocoder(config: dict | str, mel_config: MelConfig | None = None, device="cpu") -> Vocoder:
    """Builds a vocoder from `to_config()` output, `"griffin_lim"`, or a BigVGAN folder path."""
    if isinstance(config, str):
        config = {"type": "griffin_lim"} if config == "griffin_lim" else {"type": "bigvgan", "path": config}
    kind = config.get("type")
    if kind == "griffin_lim":
        return GriffinLimVocoder(mel_config, n_iter=config.get("n_iter", 32))
    if kind == "bigvgan":
        return BigVGANVocoder(config["path"], device=device)
    raise ValueError(f"Unknown vocoder type {kind!r}; use 'griffin_lim' or 'bigvgan' (with a local folder path).")
