"""Mel VAE: log-mel `(B, n_mels, F)` <-> latents `(B, T, C)` with `T = F / downsample_factor`.

A KL-regularised 1-D convolutional autoencoder in the spirit of Make-An-Audio 2's `autoencoder1d` (20 latent
channels, 2x time downsampling by default). The latent scaling (`latent_shift`, `latent_scale`, set from the
training data's statistics after training) is stored in the config so the flow model sees roughly
unit-variance latents.

Any object with `latent_channels`, `downsample_factor`, `encode(mel) -> (B, T, C)` and
`decode(latents) -> (B, n_mels, F)` can replace it in the pipeline (the latent-autoencoder interface).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput


class MelVAEConfig(PretrainedConfig):
    r"""Configuration of [`MelVAE`].

    Args:
        n_mels (`int`, defaults to 80): mel bins.
        latent_channels (`int`, defaults to 20): latent channels `C`.
        hidden_channels (`int`, defaults to 128): conv width at full time resolution (doubled per downsampling).
        downsample_factor (`int`, defaults to 2): time downsampling, a power of two.
        num_res_blocks (`int`, defaults to 2): residual blocks per resolution.
        kl_weight (`float`, defaults to 1e-4): weight of the KL term.
        latent_shift / latent_scale (`float`): `latents = (mu - shift) * scale`; set after training.
        spectral_convergence_weight (`float`, defaults to 0): weight of a spectral-convergence term
            `||exp(mel) - exp(recon)||_F / ||exp(mel)||_F` on linear mel magnitudes. L1 on log-mels treats a missing
            tone like a few wrong silent bins; this term weighs what is loud, so thin tonal lines survive.
        mel_mean / mel_std (`float`, default 0 / 1): the encoder sees `(mel - mel_mean) / mel_std` and the decoder's
            output is mapped back; set from the training data before training (log-mels sit around -5 with silence
            at -11.5, and an unnormalised input slows training badly). The defaults leave older checkpoints as they were.
        architecture (`str`, defaults to `"conv1d"`): `"conv1d"` convolves over time with the mel bins as channels
            (Make-An-Audio 2's `autoencoder1d`); `"conv2d"` convolves over (frequency, time) like an image VAE
            (AudioLDM), so a pattern at one frequency is the same pattern at another, and flattens its latent grid
            of `latent_channels / (n_mels / freq_downsample)` planes x `n_mels / freq_downsample` rows into the
            `C` channels of `(B, T, C)`: the flow model sees the same shape either way.
        freq_downsample (`int`, defaults to 4): `"conv2d"` only: frequency downsampling, a power of two.
        mse_weight (`float`, defaults to 0): weight of a squared-error term on log-mels beside the L1. L1 lets a
            thin tonal line (1-2 of 80 bins) come back several nats too quiet at little cost; the square makes such
            large errors dominate.
    """

    model_type = "mel_vae"

    def __init__(
        self,
        n_mels: int = 80,
        latent_channels: int = 20,
        hidden_channels: int = 128,
        downsample_factor: int = 2,
        num_res_blocks: int = 2,
        kl_weight: float = 1e-4,
        latent_shift: float = 0.0,
        latent_scale: float = 1.0,
        mel_mean: float = 0.0,
        mel_std: float = 1.0,
        spectral_convergence_weight: float = 0.0,
        mse_weight: float = 0.0,
        architecture: str = "conv1d",
        freq_downsample: int = 4,
        **kwargs,
    ):
        if downsample_factor < 1 or downsample_factor & (downsample_factor - 1):
            raise ValueError(f"downsample_factor must be a power of two, got {downsample_factor}.")
        if architecture not in ("conv1d", "conv2d"):
            raise ValueError(f"architecture must be 'conv1d' or 'conv2d', got {architecture!r}.")
        if architecture == "conv2d":
            rows = n_mels // freq_downsample if freq_downsample else 0
            if (
                not rows
                or n_mels % freq_downsample
                or freq_downsample & (freq_downsample - 1)
                or latent_channels % rows
            ):
                raise ValueError(
                    f"conv2d VAE: freq_downsample ({freq_downsample}) must be a power of two dividing n_mels ({n_mels}), "
                    f"and latent_channels ({latent_channels}) a multiple of n_mels / freq_downsample ({rows or '?'})."
                )
        self.n_mels = n_mels
        self.latent_channels = latent_channels
        self.hidden_channels = hidden_channels
        self.downsample_factor = downsample_factor
        self.num_res_blocks = num_res_blocks
        self.kl_weight = kl_weight
        self.latent_shift = latent_shift
        self.latent_scale = latent_scale
        self.mel_mean = mel_mean
        self.mel_std = mel_std
        self.spectral_convergence_weight = spectral_convergence_weight
        self.mse_weight = mse_weight
        self.architecture = architecture
        self.freq_downsample = freq_downsample
        super().__init__(**kwargs)


class ResBlock1d(nn.Module):
    def __init__(self, channels: int, kernel_size: int = 5):
        super().__init__()
        self.block = nn.Sequential(
            nn.GroupNorm(8, channels),
            nn.SiLU(),
            nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(8, channels),
            nn.SiLU(),
            nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2),
        )

    def forward(self, x):
        return x + self.block(x)


class ResBlock2d(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.GroupNorm(8, channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(8, channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x):
        return x + self.block(x)


def _down_steps(config) -> list[tuple[int, int]]:
    """Per level of the conv2d VAE, the (frequency, time) stride: both halve until time reaches its factor, then
    frequency alone (and the reverse order in the decoder)."""
    n_f, n_t = int(math.log2(config.freq_downsample)), int(math.log2(config.downsample_factor))
    return [(2 if i < n_f else 1, 2 if i < n_t else 1) for i in range(max(n_f, n_t))]


class MelEncoder2d(nn.Module):
    """Log-mel `(B, n_mels, F)` -> posterior parameters `(B, 2C, F / downsample_factor)` by 2-D convolutions over
    (frequency, time); the latent grid `(2 * planes, rows, T)` is flattened into channels."""

    def __init__(self, config):
        super().__init__()
        H = config.hidden_channels
        layers, ch = [nn.Conv2d(1, H, 3, padding=1)], H
        for sf, st in _down_steps(config):
            layers += [ResBlock2d(ch) for _ in range(config.num_res_blocks)]
            out = min(ch * 2, 2 * H)
            layers += [nn.Conv2d(ch, out, (2 * sf, 2 * st) if st > 1 else (2 * sf, 3), stride=(sf, st), padding=1)]
            ch = out
        layers += [ResBlock2d(ch) for _ in range(config.num_res_blocks)]
        planes = config.latent_channels // (config.n_mels // config.freq_downsample)
        layers += [nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv2d(ch, 2 * planes, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        z = self.net(mel[:, None])  # (B, 2 * planes, rows, T)
        return z.flatten(1, 2)  # (B, 2C, T): the first C channels are the mean planes


class MelDecoder2d(nn.Module):
    """Latents `(B, C, T)` -> log-mel `(B, n_mels, T * downsample_factor)`, the mirror of [`MelEncoder2d`]."""

    def __init__(self, config):
        super().__init__()
        H = config.hidden_channels
        self.rows = config.n_mels // config.freq_downsample
        planes = config.latent_channels // self.rows
        steps = _down_steps(config)
        ch = min(H * 2 ** len(steps), 2 * H)
        layers = [nn.Conv2d(planes, ch, 3, padding=1)]
        layers += [ResBlock2d(ch) for _ in range(config.num_res_blocks)]
        for i, (sf, st) in enumerate(reversed(steps)):
            out = H if i == len(steps) - 1 else min(ch, 2 * H)
            kernel = (2 * sf, 2 * st) if st > 1 else (2 * sf, 3)
            layers += [nn.ConvTranspose2d(ch, out, kernel, stride=(sf, st), padding=1)]
            ch = out
            layers += [ResBlock2d(ch) for _ in range(config.num_res_blocks)]
        layers += [nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv2d(ch, 1, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        B, C, T = z.shape
        return self.net(z.view(B, C // self.rows, self.rows, T))[:, 0]  # (B, n_mels, F)


@dataclass
class MelVAEOutput(ModelOutput):
    """`loss` `(B,)` = reconstruction L1 + kl_weight * KL per sample; `recon_loss`, `kl` `(B,)`; `mel` the
    reconstruction `(B, n_mels, F)`; `latents` the scaled posterior mean `(B, T, C)`."""

    loss: torch.Tensor | None = None
    recon_loss: torch.Tensor | None = None
    kl: torch.Tensor | None = None
    mel: torch.Tensor | None = None
    latents: torch.Tensor | None = None


class MelVAE(PreTrainedModel):
    """KL mel autoencoder (see module docstring).

    >>> vae = MelVAE(MelVAEConfig(hidden_channels=32))
    >>> vae.encode(torch.randn(1, 80, 100)).shape
    torch.Size([1, 50, 20])
    """

    config_class = MelVAEConfig
    main_input_name = "mel"

    def __init__(self, config: MelVAEConfig):
        super().__init__(config)
        if config.architecture == "conv2d":
            self.encoder, self.decoder = MelEncoder2d(config), MelDecoder2d(config)
            self.post_init()
            return
        H, n_down = config.hidden_channels, int(math.log2(config.downsample_factor))
        enc = [nn.Conv1d(config.n_mels, H, 5, padding=2)]
        ch = H
        for _ in range(n_down):
            enc += [ResBlock1d(ch) for _ in range(config.num_res_blocks)]
            enc += [nn.Conv1d(ch, ch * 2, 4, stride=2, padding=1)]
            ch *= 2
        enc += [ResBlock1d(ch) for _ in range(config.num_res_blocks)]
        enc += [nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv1d(ch, 2 * config.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec = [nn.Conv1d(config.latent_channels, ch, 3, padding=1)]
        dec += [ResBlock1d(ch) for _ in range(config.num_res_blocks)]
        for _ in range(n_down):
            dec += [nn.ConvTranspose1d(ch, ch // 2, 4, stride=2, padding=1)]
            ch //= 2
            dec += [ResBlock1d(ch) for _ in range(config.num_res_blocks)]
        dec += [nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv1d(ch, config.n_mels, 5, padding=2)]
        self.decoder = nn.Sequential(*dec)
        self.post_init()

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    def _pad(self, mel: torch.Tensor) -> torch.Tensor:
        rem = mel.shape[-1] % self.config.downsample_factor
        return mel if rem == 0 else F.pad(mel, (0, self.config.downsample_factor - rem), mode="replicate")

    def posterior(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance `(B, C, T)` of the unscaled posterior."""
        x = (self._pad(mel) - self.config.mel_mean) / self.config.mel_std
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(
        self, mel: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Log-mel `(B, n_mels, F)` -> scaled latents `(B, T, C)` (posterior mean unless `sample`)."""
        mean, logvar = self.posterior(mel)
        z = mean
        if sample:
            z = mean + torch.randn(mean.shape, generator=generator, device=mean.device) * (0.5 * logvar).exp()
        return ((z - self.config.latent_shift) * self.config.latent_scale).transpose(1, 2)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents `(B, T, C)` -> log-mel `(B, n_mels, T * downsample_factor)`."""
        z = latents.transpose(1, 2) / self.config.latent_scale + self.config.latent_shift
        return self._decode_unscaled(z)

    def _decode_unscaled(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z) * self.config.mel_std + self.config.mel_mean

    def forward(self, mel: torch.Tensor, generator: torch.Generator | None = None, **kwargs) -> MelVAEOutput:
        """Per-sample VAE loss on log-mel `(B, n_mels, F)`."""
        F_ = mel.shape[-1]
        mean, logvar = self.posterior(mel)
        z = mean + torch.randn(mean.shape, generator=generator, device=mean.device) * (0.5 * logvar).exp()
        recon = self._decode_unscaled(z)[..., :F_]
        recon_loss = (recon - mel).abs().mean(dim=(1, 2))
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean(dim=(1, 2))
        loss = recon_loss + self.config.kl_weight * kl
        if self.config.mse_weight:
            loss = loss + self.config.mse_weight * (recon - mel).pow(2).mean(dim=(1, 2))
        if self.config.spectral_convergence_weight:
            target, pred = mel.exp(), recon.clamp(max=mel.detach().amax() + 1.0).exp()
            sc = (pred - target).flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1).clamp_min(1e-5)
            loss = loss + self.config.spectral_convergence_weight * sc
        latents = ((mean - self.config.latent_shift) * self.config.latent_scale).transpose(1, 2)
        return MelVAEOutput(loss=loss, recon_loss=recon_loss, kl=kl, mel=recon, latents=latents)
