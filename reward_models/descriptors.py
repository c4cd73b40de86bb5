"""Generic signal descriptors of a clip, for learned rewards that must see what a normalised embedding hides.

CLAP embeddings are unit-norm and pooled over time, so a clip's level, its envelope over time and its modulation
rate are largely gone from them. These 91 numbers keep them, and assume nothing about any corpus's captions:

    32 log-mel band means and 32 band standard deviations over time (dB; 1024-point FFT, hop 256)
     8 frame-energy means over eight equal stretches of the clip (dB): the envelope, fades
     8 log magnitudes of the peak-normalised energy envelope's spectrum in modulation bands 0.5-16 Hz: pulse rates
     2 frame-energy 95th and 50th percentiles (dB): level and its spread
     4 log spectral flatness and 4 log spectral centroid means over the clip's quarters, 1 log centroid spread

`descriptors(wav, sample_rate) -> (91,) float32`; clips are resampled to 16 kHz first.
"""

from __future__ import annotations

import numpy as np

DESCRIPTOR_RATE = 16000
N_FFT, HOP, N_MELS = 1024, 256, 32
MODULATION_EDGES = (0.5, 1, 2, 3, 4, 6, 8, 12, 16)
DESCRIPTOR_DIM = 2 * N_MELS + 8 + (len(MODULATION_EDGES) - 1) + 2 + 4 + 4 + 1


def descriptors(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """The 91 descriptors of one mono clip (see the module docstring)."""
    import librosa

    wav = np.asarray(wav, dtype=np.float32)
    if sample_rate != DESCRIPTOR_RATE:
        wav = librosa.resample(wav, orig_sr=sample_rate, target_sr=DESCRIPTOR_RATE)
    if len(wav) < N_FFT:
        wav = np.pad(wav, (0, N_FFT - len(wav)))
    power = np.abs(librosa.stft(wav, n_fft=N_FFT, hop_length=HOP)) ** 2  # (bins, T)
    mel = librosa.feature.melspectrogram(S=power, sr=DESCRIPTOR_RATE, n_mels=N_MELS)
    db = 10 * np.log10(mel + 1e-10)
    energy = mel.sum(0)
    energy_db = 10 * np.log10(energy + 1e-10)
    frames = len(energy_db)
    envelope = [energy_db[s].mean() for s in np.array_split(np.arange(frames), 8)]
    lin = energy / (energy.max() + 1e-12)
    spectrum = np.abs(np.fft.rfft(lin - lin.mean()))
    rates = np.fft.rfftfreq(frames, d=HOP / DESCRIPTOR_RATE)
    modulation = []
    for lo, hi in zip(MODULATION_EDGES[:-1], MODULATION_EDGES[1:]):
        band = spectrum[(rates >= lo) & (rates < hi)]
        modulation.append(np.log((band.mean() if band.size else 0.0) + 1e-6))
    flatness = librosa.feature.spectral_flatness(S=power, power=1.0)[0]
    centroid = librosa.feature.spectral_centroid(S=np.sqrt(power), sr=DESCRIPTOR_RATE)[0]
    quarters = np.array_split(np.arange(len(flatness)), 4)
    shape = [np.log(flatness[q].mean() + 1e-8) for q in quarters] + [np.log(centroid[q].mean() + 1) for q in quarters]
    out = np.concatenate(
        [
            db.mean(1),
            db.std(1),
            envelope,
            modulation,
            np.percentile(energy_db, [95, 50]),
            shape,
            [np.log(centroid.std() + 1)],
        ]
    )
    return out.astype(np.float32)


def batch_descriptors(waveforms, sample_rate: int) -> np.ndarray:
    """`(B, 91)` for a `(B, N)` batch (tensor or array)."""
    wavs = waveforms.detach().cpu().numpy() if hasattr(waveforms, "detach") else np.asarray(waveforms)
    return np.stack([descriptors(w, sample_rate) for w in wavs])
