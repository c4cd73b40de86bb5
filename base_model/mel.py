"""Log-mel front end: 16 kHz mono -> log-mel `(B, n_mels, frames)`, in torch, matching librosa's mel.

Defaults follow the paper and Make-An-Audio 2 / BigVGAN: n_fft 1024, hop 256, 80 bins, magnitude (power 1)
spectrogram, Slaney mel filters from `librosa.filters.mel`, `log(clamp(mel, 1e-5))` compression.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass
class MelConfig:
    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = 8000.0
    power: float = 1.0
    log_floor: float = 1e-5

    def to_dict(self) -> dict:
        return asdict(self)

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for `num_samples` samples (centred STFT, as librosa)."""
        return 1 + num_samples // self.hop_length


class MelSpectrogram(torch.nn.Module):
    """Waveforms `(B, N)` -> log-mel `(B, n_mels, 1 + N // hop)`.

    >>> mel = MelSpectrogram()
    >>> mel(torch.zeros(1, 16000)).shape
    torch.Size([1, 80, 63])
    """

    def __init__(self, config: MelConfig | None = None):
        super().__init__()
        self.config = config or MelConfig()
        c = self.config
        import librosa  # imported here: the model code runs without it (e.g. on a GPU box)

        fb = librosa.filters.mel(sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.f_min, fmax=c.f_max)
        self.register_buffer("mel_basis", torch.from_numpy(fb).float(), persistent=False)  # (n_mels, n_fft//2+1)
        self.register_buffer("window", torch.hann_window(c.win_length), persistent=False)

    def magnitude_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        c = self.config
        spec = torch.stft(
            waveforms.float(),
            c.n_fft,
            c.hop_length,
            c.win_length,
            self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )  # (B, F, frames)
        mag = spec.abs().pow(c.power)
        return self.mel_basis @ mag  # (B, n_mels, frames)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        return torch.log(self.magnitude_mel(waveforms).clamp_min(self.config.log_floor))


def librosa_log_mel(waveform: np.ndarray, config: MelConfig | None = None) -> np.ndarray:
    """The same log-mel computed by librosa, the reference the torch front end is tested against."""
    c = config or MelConfig()
    import librosa

    m = librosa.feature.melspectrogram(
        y=waveform,
        sr=c.sample_rate,
        n_fft=c.n_fft,
        hop_length=c.hop_length,
        win_length=c.win_length,
        center=True,
        pad_mode="constant",
        power=c.power,
        n_mels=c.n_mels,
        fmin=c.f_min,
        fmax=c.f_max,
    )
    return np.log(np.maximum(m, c.log_floor))
