"""Vocoders: log-mel `(B, n_mels, frames)` -> waveforms `(B, N)`.

Interface: an object with `sample_rate`, `__call__(mel) -> Tensor(B, N)` and `to_config() -> dict` (so a saved
pipeline can rebuild it with [`load_vocoder`]).

- [`GriffinLimVocoder`] (the offline default): torch, batched, on the mel's device. Mel -> linear magnitude by
  non-negative least squares solved with a few accelerated projected-gradient steps from the pseudo-inverse, then fast
  Griffin-Lim (Perraudin et al. 2013, momentum 0.99, as librosa's `griffinlim`) over `torch.stft`/`torch.istft`.
- [`LibrosaGriffinLimVocoder`]: librosa's `mel_to_stft` (L-BFGS-B NNLS, in numpy, per clip) + `griffinlim`; the
  vocoder of pipelines saved before the torch one, kept so their clips can be made again exactly as they were.
- [`BigVGANVocoder`]: NVIDIA BigVGAN from a local folder through the `bigvgan` package.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .mel import MelConfig


class Vocoder(Protocol):
    sample_rate: int

    def __call__(self, mel: torch.Tensor) -> torch.Tensor: ...

    def to_config(self) -> dict: ...


def mel_filterbank(config: MelConfig) -> torch.Tensor:
    """Slaney mel filters `(n_mels, n_fft // 2 + 1)`, the same matrix as the front end's (`librosa.filters.mel`)."""
    import librosa  # imported here: the model code runs without it

    c = config
    fb = librosa.filters.mel(sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.f_min, fmax=c.f_max)
    return torch.from_numpy(fb).float()


class GriffinLimVocoder:
    r"""Batched torch Griffin-Lim: log-mel -> linear magnitude (NNLS) -> fast Griffin-Lim.

    Every clip of a batch is computed by the same element-wise operations, FFTs and one matmul over its own frames,
    so a clip does not depend on the other clips of its batch beyond floating-point reassociation in the matmul
    (measured: a few 1e-7 relative; `tests/test_vocoders.py` holds it to 1e-4 of the clip's peak). Phase starts at
    zero, so the same mel always gives the same waveform.

    Args:
        mel_config ([`MelConfig`]): the front end's settings (the inversion uses the same filters and STFT).
        n_iter (`int`, defaults to 16): Griffin-Lim iterations.
        momentum (`float`, defaults to 0.99): fast Griffin-Lim's momentum (0 is plain Griffin-Lim).
        nnls_iter (`int`, defaults to 32): accelerated projected-gradient (FISTA) steps of the mel -> linear NNLS,
            from the clamped pseudo-inverse (0 keeps the clamped pseudo-inverse alone).

    Example:

    >>> voc = GriffinLimVocoder()
    >>> voc(torch.full((2, 80, 63), -5.0)).shape
    torch.Size([2, 15872])
    """

    def __init__(
        self, mel_config: MelConfig | None = None, n_iter: int = 16, momentum: float = 0.99, nnls_iter: int = 32
    ):
        if n_iter < 0 or nnls_iter < 0:
            raise ValueError(f"n_iter and nnls_iter must be >= 0, got {n_iter} and {nnls_iter}.")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        self.mel_config = mel_config or MelConfig()
        self.n_iter, self.momentum, self.nnls_iter = n_iter, momentum, nnls_iter
        self.sample_rate = self.mel_config.sample_rate
        self._basis: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]] = {}

    def _operators(self, device: torch.device):
        """Mel basis `M`, its pseudo-inverse, NNLS's step `1 / ||M||_2^2`, the window and the overlap-add envelope."""
        if device not in self._basis:
            c = self.mel_config
            if c.n_fft != c.win_length or c.n_fft % c.hop_length:
                raise ValueError(
                    f"GriffinLimVocoder needs win_length == n_fft and a hop dividing n_fft, got n_fft {c.n_fft}, "
                    f"win_length {c.win_length}, hop {c.hop_length}; use vocoder='griffin_lim_librosa'."
                )
            basis = mel_filterbank(c).double()
            pinv = torch.linalg.pinv(basis)
            step = 1.0 / float(torch.linalg.matrix_norm(basis, ord=2) ** 2)  # Lipschitz constant of the gradient
            window = torch.hann_window(c.win_length, dtype=torch.float64)  # periodic, as librosa's "hann"
            self._basis[device] = {
                "basis": basis.float().to(device),  # (n_mels, n_freq)
                "basis_t": basis.T.float().contiguous().to(device),  # (n_freq, n_mels)
                "pinv_t": pinv.T.float().contiguous().to(device),
                "step": step,
                "window": window.float().to(device),
                "window_sq": window.pow(2).view(-1, c.hop_length).float().to(device),  # (n_fft / hop, hop)
            }
        return self._basis[device]

    def mel_to_linear(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel `(B, n_mels, F)` -> linear magnitude `(B, F, n_fft // 2 + 1)` (frames first, as the Griffin-Lim
        loop keeps them), `argmin_{S >= 0} ||M S - exp(mel)||` by projected gradient from the clamped pseudo-inverse."""
        if self.mel_config.power != 1.0:
            raise ValueError(f"GriffinLimVocoder inverts magnitude mels (power 1), got power {self.mel_config.power}.")
        ops = self._operators(mel.device)
        basis, basis_t, step = ops["basis"], ops["basis_t"], ops["step"]
        B, _, F = mel.shape
        target = mel.float().exp().transpose(1, 2).reshape(B * F, -1)  # undo the log compression, (B·F, n_mels)
        S = (target @ ops["pinv_t"]).clamp_min_(0.0)  # (B·F, n_freq)
        # Accelerated projected gradient (FISTA, Beck & Teboulle 2009): the gradient of 0.5 ||Y M^T - target||^2 is
        # taken at the extrapolated point Y, which reaches in 16 steps the residual plain steps reach in ~32. Each
        # row (one frame of one clip) is solved on its own; the two fused matmuls per step serve the whole batch.
        Y, t = S, 1.0
        for _ in range(self.nnls_iter):
            residual = torch.addmm(target, Y, basis_t, beta=-1.0)  # Y M^T - target, (B·F, n_mels)
            S_next = torch.addmm(Y, residual, basis, alpha=-step).clamp_min_(0.0)  # Y - step · residual M
            t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
            Y = torch.lerp(S_next, S, -(t - 1.0) / t_next)  # S_next + (t - 1) / t_next * (S_next - S)
            S, t = S_next, t_next
        return S.view(B, F, -1)

    # STFT pair over frames-first spectra `(B, F, n_freq)`: centred, zero-padded, Hann window, the same numbers as
    # `torch.stft`/`torch.istft` (tested), with the overlap-add done as `n_fft / hop` shifted slice additions,
    # which is about twice as fast as `torch.istft` on CPU.
    def _stft(self, wav: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        c = self.mel_config
        padded = torch.nn.functional.pad(wav, (c.n_fft // 2, c.n_fft // 2))
        return torch.fft.rfft(padded.unfold(-1, c.n_fft, c.hop_length) * window, dim=-1)  # (B, F, n_freq)

    def _istft(self, spec: torch.Tensor, window: torch.Tensor, window_sq: torch.Tensor, length: int) -> torch.Tensor:
        c = self.mel_config
        B, F, _ = spec.shape
        R = c.n_fft // c.hop_length  # frames overlapping each hop
        frames = (torch.fft.irfft(spec, n=c.n_fft, dim=-1) * window).view(B, F, R, c.hop_length)
        out = frames.new_zeros(B, F + R - 1, c.hop_length)
        envelope = window_sq.new_zeros(F + R - 1, c.hop_length)
        for k in range(R):
            out[:, k : k + F] += frames[:, :, k]
            envelope[k : k + F] += window_sq[k]
        out = out.view(B, -1) / envelope.view(-1).clamp_min(1e-11)
        return out[:, c.n_fft // 2 : c.n_fft // 2 + length]

    def griffin_lim(self, magnitude: torch.Tensor, length: int) -> torch.Tensor:
        """Fast Griffin-Lim from a linear magnitude `(B, F, n_freq)` to waveforms `(B, length)`, zero-phase start.

        The phase is kept as a real view `(..., 2)`: element-wise complex arithmetic is several times slower on CPU.
        """
        ops = self._operators(magnitude.device)
        window, window_sq = ops["window"], ops["window_sq"]
        # `spec` is the magnitude with the current phase estimate, (B, F, n_freq, 2); zero phase to start.
        spec = torch.stack([magnitude, torch.zeros_like(magnitude)], dim=-1)
        previous = None
        alpha = self.momentum / (1.0 + self.momentum)  # librosa's form of the momentum step
        for _ in range(self.n_iter):
            wav = self._istft(torch.view_as_complex(spec), window, window_sq, length)
            rebuilt = torch.view_as_real(self._stft(wav, window))
            phase = torch.add(rebuilt, previous, alpha=-alpha) if previous is not None else rebuilt
            # magnitude / |phase|, so that one multiplication both normalises the phase and applies the magnitude
            gain = torch.addcmul(phase[..., 0].square(), phase[..., 1], phase[..., 1]).add_(1e-32).rsqrt_()
            spec = phase * gain.mul_(magnitude)[..., None]
            previous = rebuilt
        return self._istft(torch.view_as_complex(spec), window, window_sq, length)

    @torch.inference_mode()
    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        length = self.mel_config.hop_length * (mel.shape[-1] - 1)  # what librosa's istft gives for F frames
        return self.griffin_lim(self.mel_to_linear(mel), length)

    def to_config(self) -> dict:
        return {
            "type": "griffin_lim",
            "backend": "torch",
            "n_iter": self.n_iter,
            "momentum": self.momentum,
            "nnls_iter": self.nnls_iter,
        }


class LibrosaGriffinLimVocoder:
    """librosa's mel inversion (`mel_to_stft`, NNLS by L-BFGS-B in numpy) + `griffinlim` (momentum 0.99), on CPU.

    The vocoder of pipelines saved before [`GriffinLimVocoder`]; select it by name (`"griffin_lim_librosa"`) to make
    an old table's clips again as they were made.
    """

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
        return {"type": "griffin_lim", "backend": "librosa", "n_iter": self.n_iter}


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
        return self.model(mel.to(p.device, p.dtype)).squeeze(1).float()

    def to_config(self) -> dict:
        return {"type": "bigvgan", "path": str(self.path)}


VOCODER_NAMES = ("griffin_lim", "griffin_lim_librosa")


def load_vocoder(config: dict | str, mel_config: MelConfig | None = None, device="cpu") -> Vocoder:
    """Builds a vocoder from `to_config()` output, a name (`"griffin_lim"`: torch, `"griffin_lim_librosa"`), or a
    BigVGAN folder path. A saved `{"type": "griffin_lim"}` without a `backend` is librosa's: that is what pipelines
    saved before the torch vocoder used, so they keep making the same clips."""
    if isinstance(config, str):
        if config == "griffin_lim":
            config = {"type": "griffin_lim", "backend": "torch"}
        elif config == "griffin_lim_librosa":
            config = {"type": "griffin_lim", "backend": "librosa"}
        else:
            config = {"type": "bigvgan", "path": config}
    kind = config.get("type")
    if kind == "griffin_lim":
        backend = config.get("backend", "librosa")
        if backend == "librosa":
            return LibrosaGriffinLimVocoder(mel_config, n_iter=config.get("n_iter", 32))
        if backend == "torch":
            opts = {k: config[k] for k in ("n_iter", "momentum", "nnls_iter") if k in config}
            return GriffinLimVocoder(mel_config, **opts)
        raise ValueError(f"Unknown Griffin-Lim backend {backend!r}; use 'torch' or 'librosa'.")
    if kind == "bigvgan":
        return BigVGANVocoder(config["path"], device=device)
    raise ValueError(f"Unknown vocoder type {kind!r}; use one of {', '.join(VOCODER_NAMES)} or a BigVGAN folder path.")
