"""SynthMusic: a procedural caption-music corpus whose every attribute is checkable from the audio.

A clip is a melody in a key and mode, at a tempo, in a rhythm pattern, played by one timbre family, at a dynamic,
optionally over a bass line (two parts). Attributes:

- `tempo`: slow (60-80 BPM), moderate (95-115) or fast (135-160);
- `key` (tonic pitch class, `C` ... `B`) and `mode` (major or natural minor); captions always name the mode and name
  the key on some clips (`key_named`), and the verifier checks the tonic only where the caption named it;
- `rhythm`: `steady` (a note on every beat) or `dotted` (dotted eighth + sixteenth pairs: long-short on each beat);
- `timbre`: `plucked` (bright harmonics decaying within each note), `organ` (sustained, a few harmonics), `flute`
  (sustained, nearly pure) or `brass` (sustained, buzzy: many harmonics);
- `dynamics`: soft, moderate, loud, crescendo or diminuendo;
- `parts`: 1 (melody alone) or 2 (melody over a sine bass on the tonic and dominant, two octaves down).

A melody opens on the tonic triad (1-3-5), ends on the tonic and draws the notes between from the scale with the
triad's degrees favoured, so a clip's pitch-class profile names its key and mode, as real tonal melodies tend to. Captions come from many templates.

Splits: `train` and `validation` share one distribution; `heldout` holds attribute combinations never seen in
`train` (`HELDOUT_COMBINATIONS`), to test composition. Everything is a function of `(seed, split, index)`; audio
is rendered on demand (`render_audio`), so a row stores only `id`, `caption`, `attributes` and its render `seed`.
The rows have SynthCaps' shape, so every loader, rollout and evaluation that takes SynthCaps takes SynthMusic.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

import numpy as np

from .synthcaps import _rms, active_rms_db, finish_clip

SAMPLE_RATE = 16000
DEFAULT_SECONDS = 4.0

TEMPI = {"slow": (60.0, 80.0), "moderate": (95.0, 115.0), "fast": (135.0, 160.0)}  # BPM
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MODES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
RHYTHMS = ("steady", "dotted")
TIMBRES = ("plucked", "organ", "flute", "brass")
DYNAMICS_DB = {"soft": -30.0, "moderate": -20.0, "loud": -12.0, "crescendo": -20.0, "diminuendo": -20.0}
SPLITS = {"train": 0, "validation": 1, "heldout": 2}
DEGREE_WEIGHTS = (4.0, 1.0, 3.0, 1.0, 3.0, 1.0, 1.0, 2.0)  # scale degrees 1-7 and the octave: tonic triad favoured
MELODY_MIDI = (62, 81)  # D4 .. A5: fundamentals 294-880 Hz, above the bass and inside the verifier's melody band

# Held-out compositions: (timbre, tempo, mode) combinations that never appear in `train`/`validation`.
HELDOUT_COMBINATIONS = {("flute", "fast", "minor"), ("brass", "slow", "major"), ("plucked", "moderate", "minor")}


def is_heldout(attrs: dict) -> bool:
    return (attrs["timbre"], attrs["tempo"], attrs["mode"]) in HELDOUT_COMBINATIONS


def sample_attributes(rng: np.random.Generator) -> dict:
    return {
        "tempo": str(rng.choice(list(TEMPI))),
        "key": str(rng.choice(PITCH_CLASSES)),
        "mode": str(rng.choice(list(MODES))),
        "key_named": bool(rng.random() < 0.5),
        "rhythm": str(rng.choice(RHYTHMS)),
        "timbre": str(rng.choice(TIMBRES)),
        "dynamics": str(rng.choice(list(DYNAMICS_DB), p=[0.2, 0.4, 0.2, 0.1, 0.1])),
        "parts": int(rng.choice([1, 2])),
    }


# ------------------------------------------------------------------------------------------------- captions
_TIMBRE_WORDS = {
    "plucked": ["plucked", "guitar-like", "harp-like", "pizzicato"],
    "organ": ["organ", "church organ", "electric organ"],
    "flute": ["flute", "soft flute", "whistle-like"],
    "brass": ["brass", "buzzy brass", "trumpet-like", "horn"],
}
_TEMPO_WORDS = {"slow": ["slow", "unhurried", "laid-back"], "moderate": ["moderate", "medium-tempo", "walking-pace"],
                "fast": ["fast", "quick", "lively"]}  # fmt: skip
_RHYTHM_PHRASES = {"steady": ["in steady quarter notes", "with an even beat", "one note per beat"],
                   "dotted": ["with a dotted rhythm", "in a skipping long-short rhythm", "with dotted notes"]}  # fmt: skip
_DYNAMIC_PHRASES = {"soft": ["played softly", "quiet"], "loud": ["played loudly", "loud"],
                    "crescendo": ["growing louder", "with a crescendo"],
                    "diminuendo": ["getting quieter", "with a diminuendo"]}  # fmt: skip
_TEMPLATES = [
    "a {tempo} {mode} melody on {timbre} {rhythm}",
    "{timbre} playing a {tempo} tune in {mode}, {rhythm}",
    "a {timbre} line {mode_in} at a {tempo} tempo {rhythm}",
    "{tempo} {timbre} music {mode_in}, {rhythm}",
]


def make_caption(attrs: dict, rng: np.random.Generator) -> str:
    """The mode is always named (with its tonic when `key_named`: "C minor"), and tempo, timbre and rhythm always;
    a bass part and any dynamic other than moderate are named too."""
    words = {
        "tempo": str(rng.choice(_TEMPO_WORDS[attrs["tempo"]])),
        "mode": f"{attrs['key']} {attrs['mode']}" if attrs["key_named"] else attrs["mode"],
        # never "in a minor key": lower-cased, a text encoder could not tell it from "in A minor"
        "mode_in": f"in {attrs['key']} {attrs['mode']}" if attrs["key_named"] else f"in the {attrs['mode']} mode",
        "timbre": str(rng.choice(_TIMBRE_WORDS[attrs["timbre"]])),
        "rhythm": str(rng.choice(_RHYTHM_PHRASES[attrs["rhythm"]])),
    }
    caption = str(rng.choice(_TEMPLATES)).format(**words)
    if attrs["parts"] == 2:
        caption += str(rng.choice([" over a bass line", ", with a bass part", " accompanied by a low bass"]))
    if attrs["dynamics"] in _DYNAMIC_PHRASES:
        caption += ", " + str(rng.choice(_DYNAMIC_PHRASES[attrs["dynamics"]]))
    caption = re.sub(r"\b([aA]) (?=[aeiouAEIO]|F\b|F#)", r"\1n ", caption)  # "an A minor", "an unhurried"
    return caption[0].upper() + caption[1:]


# ----------------------------------------------------------------------------------------------- rendering
def note_events(attrs: dict, seconds: float, rng: np.random.Generator) -> list[tuple[float, float, int]]:
    """The melody as `(onset seconds, duration seconds, MIDI note)`: opening on the tonic triad, ending on the
    tonic, scale degrees with the triad's favoured between, one note per beat (`steady`) or a long-short pair per beat (`dotted`)."""
    beat = 60.0 / rng.uniform(*TEMPI[attrs["tempo"]])
    tonic = PITCH_CLASSES.index(attrs["key"])
    scale = MODES[attrs["mode"]]
    # the tonic's octave inside the melody range, with room for a fifth above
    base = next(m for m in range(MELODY_MIDI[0], MELODY_MIDI[1]) if m % 12 == tonic)
    pitches = [base + d for d in scale] + [base + 12]
    weights = np.array(DEGREE_WEIGHTS)
    lengths = [1.0] if attrs["rhythm"] == "steady" else [0.75, 0.25]
    start = float(rng.uniform(0.0, 0.1))
    onsets: list[tuple[float, float]] = []
    t = start
    while t + 2 * beat <= seconds:
        for frac in lengths:
            onsets.append((t, frac * beat))
            t += frac * beat
    onsets.append((t, beat))  # the closing tonic: a whole beat, heard in full
    notes = []
    triad = [base + scale[0], base + scale[2], base + scale[4]]  # the opening's long notes: 1-3-5, the third names
    for i, (t0, dur) in enumerate(onsets):  # the mode
        if triad and i < len(onsets) - 1 and dur >= 0.5 * beat:
            midi = triad.pop(0)
        elif i == len(onsets) - 1:
            midi = base
        else:
            midi = int(rng.choice(pitches, p=weights / weights.sum()))
        notes.append((t0, dur, midi))
    return notes


def _midi_hz(m: float) -> float:
    return 440.0 * 2 ** ((m - 69) / 12)


def render_note(timbre: str, f0: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """One note of `n` samples: the timbre's harmonic recipe and envelope."""
    t = np.arange(n) / SAMPLE_RATE
    if timbre == "flute":
        amps = [1.0, 0.08]
    elif timbre == "organ":
        amps = [1.0, 0.5, 0.35, 0.25]
    elif timbre == "brass":
        amps = [1.0 / k for k in range(1, 16)]
    else:  # plucked
        amps = [1.0 / k**0.8 for k in range(1, 9)]
    x = np.zeros(n)
    for k, a in enumerate(amps, start=1):
        if k * f0 < 0.45 * SAMPLE_RATE:
            decay = np.exp(-t * (4.0 + 3.0 * k)) if timbre == "plucked" else 1.0  # upper partials die first
            x += a * decay * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
    if timbre == "flute":
        x += 0.02 * rng.standard_normal(n)  # breath
    attack = int(0.005 * SAMPLE_RATE) if timbre == "plucked" else int(0.02 * SAMPLE_RATE)
    release = min(int(0.03 * SAMPLE_RATE), n // 3)
    env = np.ones(n)
    env[:attack] = np.linspace(0.0, 1.0, attack)
    if release > 0:
        env[-release:] *= np.linspace(1.0, 0.0, release)
    if timbre == "plucked":
        env *= np.exp(-t / 0.12)  # the string rings down within the note
    return x * env


def render_audio(attrs: dict, seed: int, seconds: float = DEFAULT_SECONDS) -> np.ndarray:
    """Renders a clip (float32 mono at 16 kHz) from its attributes; deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SAMPLE_RATE))
    melody = np.zeros(n)
    end = 0
    for t0, dur, midi in note_events(attrs, seconds, rng):
        s = int(t0 * SAMPLE_RATE)
        m = min(int(dur * SAMPLE_RATE), n - s)
        if m > 16:
            melody[s : s + m] += render_note(attrs["timbre"], _midi_hz(midi), m, rng)
            end = s + m
    x = melody / _rms(melody)
    if attrs["parts"] == 2:  # a sine bass under the melody, C2-B2: the tonic, then the dominant, then the tonic
        tonic = PITCH_CLASSES.index(attrs["key"])
        f_tonic, f_fifth = _midi_hz(36 + tonic), _midi_hz(36 + (tonic + 7) % 12)
        t = np.arange(end) / SAMPLE_RATE
        third = end // 3
        freq = np.where((t >= third / SAMPLE_RATE) & (t < 2 * third / SAMPLE_RATE), f_fifth, f_tonic)
        bass = np.zeros(n)
        bass[:end] = np.sin(2 * np.pi * np.cumsum(freq) / SAMPLE_RATE)  # phase-continuous at the changes
        w = min(400, end // 4)
        bass[:w] *= np.linspace(0, 1, w)
        bass[end - w : end] *= np.linspace(1, 0, w)
        x = x + 10 ** (-9 / 20) * bass / _rms(bass)
    dyn = attrs["dynamics"]
    if dyn in ("crescendo", "diminuendo"):
        ramp = 10 ** (np.linspace(-18.0, 0.0, n) / 20)  # an 18 dB swell over the clip
        x *= ramp if dyn == "crescendo" else ramp[::-1]
    x *= 10 ** ((DYNAMICS_DB[dyn] - active_rms_db(x)) / 20)
    return finish_clip(x, "none", rng).astype(np.float32)  # SynthCaps' soft-knee limiter, no degradation


# -------------------------------------------------------------------------------------------------- corpus
@dataclass(frozen=True)
class SynthMusicConfig:
    seed: int = 0
    seconds: float = DEFAULT_SECONDS


def example(index: int, split: str = "train", config: SynthMusicConfig = SynthMusicConfig()) -> dict:
    """The `index`-th example of a split: `{"id", "caption", "attributes" (dict), "seed"}`."""
    if split not in SPLITS:
        raise ValueError(f"Unknown SynthMusic split {split!r}; choose one of {sorted(SPLITS)}.")
    want_heldout = split == "heldout"
    rng = np.random.default_rng([config.seed, SPLITS[split], index, 1])  # per-index stream, apart from SynthCaps
    while True:
        attrs = sample_attributes(rng)
        if is_heldout(attrs) == want_heldout:
            break
    caption = make_caption(attrs, rng)
    return {
        "id": f"synthmusic-{split}-{index:06d}",
        "caption": caption,
        "attributes": attrs,
        "seed": int(rng.integers(0, 2**31 - 1)),
    }


def load_synthmusic(split: str = "train", num_examples: int = 1000, config: SynthMusicConfig = SynthMusicConfig()):
    """SynthMusic as a `datasets.Dataset` with columns `id`, `caption`, `attributes` (JSON string), `seed`.

    >>> load_synthmusic("heldout", 2).column_names
    ['id', 'caption', 'attributes', 'seed']
    """
    import datasets

    rows = [example(i, split, config) for i in range(num_examples)]
    return datasets.Dataset.from_dict(
        {
            "id": [r["id"] for r in rows],
            "caption": [r["caption"] for r in rows],
            "attributes": [json.dumps(r["attributes"], sort_keys=True) for r in rows],
            "seed": [r["seed"] for r in rows],
        },
        info=datasets.DatasetInfo(description=f"SynthMusic {split} (seed {config.seed}, {config.seconds} s clips)"),
    )


def corpus_fingerprint(split: str, num_examples: int, config: SynthMusicConfig) -> str:
    """A short hash naming a corpus slice, used to key caches of mels and latents (apart from SynthCaps' keys)."""
    key = {"corpus": "synthmusic", "split": split, "n": num_examples, "seed": config.seed, "seconds": config.seconds}
    return hashlib.sha1(json.dumps({**key, "v": 1}).encode()).hexdigest()[:12]
