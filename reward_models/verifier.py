"""The SynthCaps verifier: checks a clip against its prompt's structured attributes by signal analysis alone.

It is the independent referee of the offline demo, so it has no learned parts: spectral peakiness tells tonal
events from noise and clicks, temporal crest tells clicks from steady noise, the peak-frequency track gives
pitch band and sweep direction, the energy envelope gives tempo, fades and loudness, spectral slope gives the
noise colour. Per-attribute pass/fail plus the overall fraction.

Checked per event: `type`, and where the event has them `pitch`, `tempo`, `direction`, `colour`; per clip:
`fade`, `loudness`. A sequence is checked half by half; in an overlap only the foreground event is checked (the
background sits 12 dB under it). Degradations are not checked (captions rarely mention them).
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch
from scipy.ndimage import maximum_filter1d

from .base import RewardModel

SAMPLE_RATE = 16000
N_FFT, HOP = 1024, 256
PITCH_EDGES = {"low": (0.0, 400.0), "medium": (400.0, 1500.0), "high": (1500.0, 8000.0)}


def active_rms_db(x: np.ndarray, frame: int = 1024) -> float:
    """RMS (dBFS) over frames with energy above 5 % of the loudest: SynthCaps' loudness definition (the same
    formula as `base_model.data.synthcaps.active_rms_db`, restated so this referee imports nothing from the
    generator side)."""
    n = len(x) // frame * frame
    e = (x[:n].reshape(-1, frame) ** 2).mean(1) if n else np.array([np.mean(x**2)])
    return float(10 * np.log10(e[e > 0.05 * e.max()].mean() + 1e-20))


def _stft_power(x: np.ndarray) -> np.ndarray:
    """Power spectrogram `(frames, bins)` with a Hann window (no centring)."""
    if len(x) < N_FFT:
        x = np.pad(x, (0, N_FFT - len(x)))
    n = 1 + (len(x) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    frames = x[idx] * np.hanning(N_FFT)[None, :]
    return np.abs(np.fft.rfft(frames, axis=1)) ** 2


def segment_features(x: np.ndarray, sr: int = SAMPLE_RATE) -> dict:
    """Descriptors of one segment of audio (mono float, 16 kHz)."""
    P = _stft_power(x) + 1e-12
    freqs = np.fft.rfftfreq(N_FFT, 1 / sr)
    energy = P.sum(1)
    # Gaps are judged against the loudest frame within +-0.5 s, so a fade is not mistaken for gaps while beeps and
    # clicks (periods under 0.7 s) still show theirs.
    local_max = maximum_filter1d(energy, size=2 * int(0.5 * sr / HOP) + 1)
    active = energy > 0.05 * local_max  # frames carrying the event
    Pa = P[active][:, freqs >= 60.0]  # ignore DC and rumble
    fa = freqs[freqs >= 60.0]
    # per-frame tonality: prominence of the strongest bin over the median of its +-24-bin neighbourhood, in dB
    # (a sinusoid: > 40 dB; noise of any colour is locally flat: ~10 dB; a click is broadband)
    k = Pa.argmax(1)
    lo, hi = np.clip(k - 24, 0, None), np.clip(k + 25, None, Pa.shape[1])
    neigh = np.array([np.median(row[a:b]) for row, a, b in zip(Pa, lo, hi)]) if len(Pa) else np.array([1.0])
    prominence = 10 * np.log10(Pa[np.arange(len(Pa)), k] / neigh) if len(Pa) else np.array([0.0])
    peak_freq = fa[k]
    # temporal crest of the frame energies: clicks are a few spiky frames, steady noise is flat
    frame_energy = energy[active] if active.any() else energy
    crest = float(frame_energy.max() / (np.median(energy) + 1e-12))
    # spectral slope of the mean spectrum (dB per octave, 100 Hz - 6 kHz): white ~0, pink ~-3, brown ~-6
    mean_spec = P.mean(0)
    band = (freqs > 100) & (freqs < 6000)
    slope = float(np.polyfit(np.log2(freqs[band]), 10 * np.log10(mean_spec[band]), 1)[0])
    # pulse rate from the energy envelope: count rising edges through half the max (in log energy)
    above = energy > 0.1 * local_max
    onsets = int(np.sum(above[1:] & ~above[:-1])) + int(above[0])
    seconds = len(x) / sr
    t = np.arange(len(peak_freq))
    track_corr = float(np.corrcoef(t, np.log(peak_freq + 1))[0, 1]) if len(t) > 2 and np.std(peak_freq) > 0 else 0.0
    return {
        "prominence_db": float(np.median(prominence)),
        "median_peak_hz": float(np.median(peak_freq)) if len(peak_freq) else 0.0,
        "track_corr": track_corr,
        "crest": crest,
        "slope_db_per_octave": slope,
        "onset_rate": onsets / seconds,
        "active_fraction": float(active.mean()),
        "rms_db": float(10 * np.log10(np.mean(x**2) + 1e-12)),
        "active_rms_db": active_rms_db(x),
    }


def classify_event(f: dict) -> dict:
    """Best guess of an event's attributes from [`segment_features`]."""
    if f["prominence_db"] > 25.0:
        if abs(f["track_corr"]) > 0.8:
            return {"type": "sweep", "direction": "rising" if f["track_corr"] > 0 else "falling"}
        pitch = next(k for k, (lo, hi) in PITCH_EDGES.items() if lo <= f["median_peak_hz"] < hi)
        if f["active_fraction"] < 0.8:
            return {"type": "beeps", "pitch": pitch, "tempo": "fast" if f["onset_rate"] > 3.75 else "slow"}
        return {"type": "tone", "pitch": pitch}
    if f["active_fraction"] < 0.6:
        return {"type": "clicks", "tempo": "fast" if f["onset_rate"] > 3.75 else "slow"}
    s = f["slope_db_per_octave"]
    return {"type": "noise", "colour": "white" if s > -1.5 else ("pink" if s > -4.5 else "brown")}


def verify_clip(wav: np.ndarray, attrs: dict, sr: int = SAMPLE_RATE) -> dict[str, bool]:
    """Per-attribute pass/fail for one clip (16 kHz mono)."""
    if sr != SAMPLE_RATE:
        import librosa

        wav = librosa.resample(np.asarray(wav, dtype=np.float32), orig_sr=sr, target_sr=SAMPLE_RATE)
    wav = np.asarray(wav, dtype=np.float64)
    n = len(wav)
    checks: dict[str, bool] = {}
    events = attrs["events"]
    if attrs["structure"] == "sequence":
        margin = int(0.05 * n)  # keep the crossfade out of both halves
        segments = [wav[: n // 2 - margin], wav[n // 2 + margin :]]
    else:
        segments = [wav]
    for i, (ev, seg) in enumerate(zip(events, segments)):
        guess = classify_event(segment_features(seg))
        checks[f"event{i}.type"] = guess["type"] == ev["type"]
        for key in ("pitch", "tempo", "direction", "colour"):
            if key in ev:
                checks[f"event{i}.{key}"] = guess.get(key) == ev[key]
    q = n // 4
    first, last = (10 * np.log10(np.mean(wav[s] ** 2) + 1e-12) for s in (slice(0, q), slice(n - q, n)))
    fade = "in" if last - first > 10 else ("out" if first - last > 10 else "none")
    checks["fade"] = fade == attrs["fade"]
    rms = active_rms_db(wav)  # SynthCaps' own loudness definition (nominal -30 / -20 / -11 dBFS)
    loud = "quiet" if rms < -25 else ("normal" if rms < -15.5 else "loud")
    checks["loudness"] = loud == attrs["loudness"]
    return checks


class SynthCapsVerifier(RewardModel):
    """Reward-model interface over [`verify_clip`]: `(waveforms, sample_rate, prompts, attributes=...)`.

    Returns `{"verifier": fraction of attributes passed (B,), "verifier/<attribute>": 1.0/0.0 or NaN}`; clips with
    no attributes (not SynthCaps prompts) or with NaN samples score NaN, never 0.

    >>> import torch
    >>> v = SynthCapsVerifier()
    >>> attrs = {"structure": "single", "events": [{"type": "noise", "colour": "white"}], "fade": "none",
    ...          "loudness": "normal", "degradation": "none"}
    >>> wav = torch.randn(1, 64000, generator=torch.Generator().manual_seed(0)) * 10 ** (-20 / 20)
    >>> v(wav, 16000, ["white noise"], attributes=[attrs])["verifier"]
    tensor([1.])
    """

    model_id = "synthcaps-verifier-v1"
    checkpoint_hash = "signal-analysis"
    names = (
        "verifier",
        "verifier/type",
        "verifier/pitch",
        "verifier/tempo",
        "verifier/direction",
        "verifier/colour",
        "verifier/fade",
        "verifier/loudness",
    )

    def score(self, waveforms, sample_rate, prompts, attributes=None, **kwargs) -> dict:
        B = len(waveforms)
        if attributes is None:
            attributes = [None] * B
        if len(attributes) != B:
            raise ValueError(f"verifier: got {B} waveforms but {len(attributes)} attribute sets.")
        out = {k: torch.full((B,), math.nan) for k in self.names}
        for b, (wav, attrs) in enumerate(zip(waveforms, attributes)):
            if attrs is None or attrs == "":
                continue
            attrs = json.loads(attrs) if isinstance(attrs, str) else attrs
            checks = verify_clip(wav.detach().float().cpu().numpy(), attrs, sample_rate)
            out["verifier"][b] = float(np.mean(list(checks.values())))
            for key in ("type", "pitch", "tempo", "direction", "colour"):
                vals = [v for k, v in checks.items() if k.endswith("." + key)]
                if vals:
                    out[f"verifier/{key}"][b] = float(np.mean(vals))
            out["verifier/fade"][b] = float(checks["fade"])
            out["verifier/loudness"][b] = float(checks["loudness"])
        return out
