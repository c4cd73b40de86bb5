"""The SynthMusic verifier: checks a clip against its prompt's musical attributes by signal analysis alone.

Like the SynthCaps verifier it has no learned parts, so it can referee what it never saw trained:
- onsets from rises of the melody band's energy (above 250 Hz, where the bass never reaches) give the inter-onset
  intervals: their spread tells `steady` from `dotted` rhythm, and their mean (one beat, or half of one when
  dotted) gives the tempo;
- the melody's pitch per frame (the strongest peak between 250 and 1000 Hz of a 4096-point spectrum, interpolated)
  gives a pitch-class profile, correlated with the 24 major and minor Krumhansl-Kessler profiles: key and mode;
- the energy above 1.5 f0 and above 4.5 f0 (harmonic richness) and the fall of energy within each note give the
  timbre family (flute: nearly pure; organ: a few harmonics; brass: many; plucked: decays within the note);
- active RMS and the first against the last quarter give the dynamics; energy under 200 Hz gives the bass part.

Checked: `tempo`, `rhythm`, `mode`, `timbre`, `dynamics`, `parts`, and `key` only where the caption names it.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from base_model.data.synthmusic import DEGREE_WEIGHTS, MODES, PITCH_CLASSES, TEMPI, active_rms_db

from .base import RewardModel

SAMPLE_RATE = 16000
# Krumhansl-Kessler probe-tone profiles (major, minor), tonic first.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def _corpus_profile(scale: tuple[int, ...]) -> np.ndarray:
    """How often SynthMusic's melodies use each pitch class of a scale (tonic first): tonic (and its octave), third
    and fifth favoured, as `note_events` draws them."""
    out = np.zeros(12)
    for degree, w in zip((*scale, 12), DEGREE_WEIGHTS):
        out[degree % 12] += w
    return out


PROFILES = {"kk": (KK_MAJOR, KK_MINOR), "corpus": (_corpus_profile(MODES["major"]), _corpus_profile(MODES["minor"]))}


def _frames(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    n = 1 + (len(x) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n)[:, None]
    return x[idx] * np.hanning(n_fft)[None, :]


def onsets(x: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Onset times (s): frames where the melody band's energy rose by more than 9 dB within the last 30 ms,
    peak-picked at least 50 ms apart."""
    hop, n_fft = 80, 320  # 5 ms hop, 20 ms window
    spec = np.abs(np.fft.rfft(_frames(x, n_fft, hop), axis=1)) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    env = 10 * np.log10(spec[:, freqs >= 250.0].sum(1) + 1e-10)
    floor = env.max() - 50.0  # ignore rises out of the silence floor's noise
    back = 6
    rise = np.array([env[i] - env[max(i - back, 0) : i + 1].min() for i in range(len(env))])
    picks: list[int] = []
    for i in range(1, len(env) - 1):
        if rise[i] > 9.0 and env[i] > floor and rise[i] >= rise[i - 1] and rise[i] > rise[i + 1]:
            if picks and i - picks[-1] < 10:  # 50 ms
                if rise[i] > rise[picks[-1]]:
                    picks[-1] = i
                continue
            picks.append(i)
    return (np.array(picks) * hop + n_fft / 2) / sr


def rhythm_and_tempo(times: np.ndarray) -> tuple[str | None, str | None, float]:
    """(`steady`/`dotted`, tempo class, BPM) from onset times; `(None, None, nan)` with fewer than 3 onsets."""
    if len(times) < 3:
        return None, None, math.nan
    ioi = np.diff(times)
    q25, q75 = np.quantile(ioi, [0.25, 0.75])
    rhythm = "dotted" if q25 / q75 < 0.6 else "steady"
    beat = float(np.median(ioi)) if rhythm == "steady" else 2.0 * float(np.mean(ioi))
    bpm = 60.0 / beat
    edges = sorted(TEMPI.items(), key=lambda kv: kv[1][0])  # slow, moderate, fast
    tempo = edges[0][0]
    for (_, (_, hi)), (name, (lo, _)) in zip(edges, edges[1:]):
        if bpm >= (hi + lo) / 2:
            tempo = name
    return rhythm, tempo, bpm


def spectral_features(x: np.ndarray, sr: int = SAMPLE_RATE) -> dict:
    """The melody's pitch-class profile, harmonic richness and the bass band's share of the energy."""
    n_fft, hop = 4096, 512
    P = np.abs(np.fft.rfft(_frames(x, n_fft, hop), axis=1)) ** 2 + 1e-16
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    df = freqs[1]
    total = P.sum(1)
    active = total > 1e-3 * total.max()  # -30 dB: the quiet start of a crescendo still counts
    band = (freqs >= 250.0) & (freqs <= 1000.0)
    lo_bin = int(np.argmax(band))
    above = freqs >= 250.0  # the melody and its harmonics; the bass sits below
    fb = freqs[above]
    profile = np.zeros(12)
    mid, high = [], []
    for row, on in zip(P, active):
        if not on:
            continue
        k = lo_bin + int(np.argmax(row[band]))
        a, b, c = np.log(row[k - 1]), np.log(row[k]), np.log(row[k + 1])
        shift = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
        f0 = (k + float(np.clip(shift, -0.5, 0.5))) * df
        midi = 69 + 12 * np.log2(f0 / 440.0)
        profile[int(round(midi)) % 12] += 1.0  # frames, i.e. duration: a plucked note counts as long as it lasts
        body = row[above]
        e = body.sum()
        mid.append(body[(fb > 1.5 * f0) & (fb <= 4.5 * f0)].sum() / e)
        high.append(body[fb > 4.5 * f0].sum() / e)
    bass = P[:, freqs < 200.0].sum() / P.sum()
    return {
        "profile": profile / max(profile.sum(), 1e-12),
        "harmonic_mid": float(np.median(mid)) if mid else math.nan,
        "harmonic_high": float(np.median(high)) if high else math.nan,
        "bass_share": float(bass),
    }


def key_and_mode(profile: np.ndarray, profiles: str = "corpus") -> tuple[str, str]:
    """The most likely of the 24 keys for a pitch-class profile: the log-likelihood of the profile under the corpus'
    own pitch-class distribution (`corpus`: notes outside the scale nearly impossible), or the best correlation with
    Krumhansl-Kessler's profiles (`kk`, for melodies from elsewhere)."""
    best, best_r = ("C", "major"), -np.inf
    for tonic in range(12):
        for mode, template in zip(("major", "minor"), PROFILES[profiles]):
            t = np.roll(template, tonic)
            if profiles == "corpus":
                r = float(profile @ np.log(t / t.sum() + 1e-3))
            else:
                r = float(np.corrcoef(profile, t)[0, 1])
            if r > best_r:
                best, best_r = (PITCH_CLASSES[tonic], mode), r
    return best


def note_decay_db(x: np.ndarray, times: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Median over notes of at least 150 ms of the melody band's level 100-130 ms after the onset against its
    first 30 ms (dB): a plucked note has fallen by then, a sustained one has not."""
    falls = []
    ends = np.append(times[1:], len(x) / sr)
    for t0, t1 in zip(times, ends):
        if t1 - t0 < 0.15:
            continue
        s = int(t0 * sr)
        head, tail = x[s : s + int(0.03 * sr)], x[s + int(0.10 * sr) : s + int(0.13 * sr)]
        if len(tail) == 0:
            continue
        falls.append(10 * np.log10((np.mean(tail**2) + 1e-12) / (np.mean(head**2) + 1e-12)))
    return float(np.median(falls)) if falls else math.nan


def _highpass(x: np.ndarray, cutoff: float = 250.0, sr: int = SAMPLE_RATE) -> np.ndarray:
    spec = np.fft.rfft(x)
    spec[np.fft.rfftfreq(len(x), 1 / sr) < cutoff] = 0.0
    return np.fft.irfft(spec, len(x))


def _sounding(x: np.ndarray, frame: int = 512) -> np.ndarray:
    """`x` from its first to its last frame within 30 dB of the loudest."""
    n = len(x) // frame * frame
    if n == 0:
        return x
    e = (x[:n].reshape(-1, frame) ** 2).mean(1)
    on = np.flatnonzero(e > 1e-3 * e.max())
    return x[on[0] * frame : (on[-1] + 1) * frame] if len(on) else x


def analyse(wav: np.ndarray, sr: int = SAMPLE_RATE) -> dict:
    """Every attribute the verifier reads from one clip (16 kHz mono), with the descriptors behind them."""
    x = np.asarray(wav, dtype=np.float64)
    times = onsets(x, sr)
    rhythm, tempo, bpm = rhythm_and_tempo(times)
    f = spectral_features(x, sr)
    key, mode = key_and_mode(f["profile"])
    decay = note_decay_db(_highpass(x, 250.0, sr), times, sr)
    if not math.isnan(decay) and decay < -4.0:
        timbre = "plucked"
    elif f["harmonic_mid"] + f["harmonic_high"] < 0.05:
        timbre = "flute"
    elif f["harmonic_high"] > 0.04:
        timbre = "brass"
    else:
        timbre = "organ"
    span = _sounding(x)  # the quarters of the sounding span: the silence after the last note is no diminuendo
    q = len(span) // 4
    first, last = (10 * np.log10(np.mean(span[s] ** 2) + 1e-12) for s in (slice(0, q), slice(len(span) - q, None)))
    if last - first > 8.0:
        dynamics = "crescendo"
    elif first - last > 8.0:
        dynamics = "diminuendo"
    else:
        rms = active_rms_db(x)
        dynamics = "soft" if rms < -25.0 else ("moderate" if rms < -16.0 else "loud")
    return {
        "tempo": tempo, "rhythm": rhythm, "key": key, "mode": mode, "timbre": timbre, "dynamics": dynamics,
        "parts": 2 if f["bass_share"] > 0.02 else 1,
        "descriptors": {"bpm": bpm, "onsets": len(times), "note_decay_db": decay, **{k: v for k, v in f.items()
                        if k != "profile"}},
    }  # fmt: skip


def verify_clip(wav: np.ndarray, attrs: dict, sr: int = SAMPLE_RATE) -> dict[str, bool]:
    """Per-attribute pass/fail for one clip; `key` only when the caption named it (`key_named`)."""
    if sr != SAMPLE_RATE:
        import librosa

        wav = librosa.resample(np.asarray(wav, dtype=np.float32), orig_sr=sr, target_sr=SAMPLE_RATE)
    guess = analyse(wav)
    checks = {k: guess[k] == attrs[k] for k in ("tempo", "rhythm", "mode", "timbre", "dynamics", "parts")}
    if attrs.get("key_named"):
        checks["key"] = guess["key"] == attrs["key"]
    return checks


class SynthMusicVerifier(RewardModel):
    """Reward-model interface over [`verify_clip`]: `(waveforms, sample_rate, prompts, attributes=...)`.

    Returns `{"verifier": fraction of attributes passed (B,), "verifier/<attribute>": 1.0/0.0 or NaN}`; clips with
    no attributes (not SynthMusic prompts) score NaN, never 0.
    """

    model_id = "synthmusic-verifier-v1"
    checkpoint_hash = "signal-analysis"
    attributes = ("tempo", "rhythm", "key", "mode", "timbre", "dynamics", "parts")
    names = ("verifier", *(f"verifier/{a}" for a in attributes))

    def score(self, waveforms, sample_rate, prompts, attributes=None, **kwargs) -> dict:
        B = len(waveforms)
        if attributes is None:
            attributes = [None] * B
        if len(attributes) != B:
            raise ValueError(f"music verifier: got {B} waveforms but {len(attributes)} attribute sets.")
        out = {k: torch.full((B,), math.nan) for k in self.names}
        for b, (wav, attrs) in enumerate(zip(waveforms, attributes)):
            if attrs is None or attrs == "":
                continue
            attrs = json.loads(attrs) if isinstance(attrs, str) else attrs
            audio = wav.detach().float().cpu().numpy()
            if not np.isfinite(audio).all():
                continue
            checks = verify_clip(audio, attrs, sample_rate)
            out["verifier"][b] = float(np.mean(list(checks.values())))
            for key, ok in checks.items():
                out[f"verifier/{key}"][b] = float(ok)
        return out
