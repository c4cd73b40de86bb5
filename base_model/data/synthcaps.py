"""SynthCaps: a procedural caption-audio corpus whose every attribute is checkable from the audio.

Events: steady tones (low / medium / high pitch), repeated beeps (pitch, slow or fast tempo), rising or falling
sweeps, white / pink / brown noise, and clicks (slow or fast). A clip holds one event, two in sequence
("A followed by B") or two overlapping ("A with B in the background", B quieter). Clip-level attributes: fade
(in / out / none), loudness (quiet / normal / loud) and a quality degradation (hiss, clipping, muffling) that
captions usually do not mention. Captions come from many templates per structure.

Splits: `train` and `validation` share one distribution; `heldout` holds attribute combinations never seen in
`train` (event-type pairs and single-event combinations listed in `HELDOUT_*`), to test composition.

Everything is a function of `(seed, split, index)`: the same corpus on any machine. Audio is rendered on demand
from the attributes (`render_audio`), so a dataset row stores only `id`, `caption`, `attributes` (JSON) and its
render `seed`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
DEFAULT_SECONDS = 4.0

EVENT_TYPES = ("tone", "beeps", "sweep", "noise", "clicks")
PITCH_BANDS = {"low": (150.0, 300.0), "medium": (500.0, 1000.0), "high": (2000.0, 4000.0)}
TEMPI = {"slow": (1.5, 2.5), "fast": (5.0, 7.0)}  # events per second
NOISE_COLOURS = ("white", "pink", "brown")
SWEEP_RANGE = (300.0, 3000.0)
LOUDNESS_DB = {"quiet": -30.0, "normal": -20.0, "loud": -11.0}  # active RMS (dBFS) before degradation
DEGRADATIONS = ("none", "hiss", "clipping", "muffled")
QUALITY = {"none": 5.0, "muffled": 3.0, "hiss": 2.5, "clipping": 2.0}  # quality label per degradation
SPLITS = {"train": 0, "validation": 1, "heldout": 2}

# Held-out compositions: event-type pairs (either order, sequence or overlap) and single-event combinations that
# never appear in `train`/`validation` and make up `heldout`.
HELDOUT_PAIRS = {frozenset(("sweep", "clicks")), frozenset(("noise", "beeps")), frozenset(("tone", "sweep"))}
HELDOUT_SINGLES = {("beeps", "low", "fast"), ("tone", "high", None), ("noise", "brown", None)}


# ----------------------------------------------------------------------------------------------- attributes
def _sample_event(rng: np.random.Generator) -> dict:
    kind = str(rng.choice(EVENT_TYPES))
    ev: dict = {"type": kind}
    if kind in ("tone", "beeps"):
        ev["pitch"] = str(rng.choice(list(PITCH_BANDS)))
    if kind in ("beeps", "clicks"):
        ev["tempo"] = str(rng.choice(list(TEMPI)))
    if kind == "sweep":
        ev["direction"] = str(rng.choice(["rising", "falling"]))
    if kind == "noise":
        ev["colour"] = str(rng.choice(NOISE_COLOURS))
    return ev


def _single_key(ev: dict) -> tuple:
    if ev["type"] == "beeps":
        return ("beeps", ev["pitch"], ev["tempo"])
    if ev["type"] == "tone":
        return ("tone", ev["pitch"], None)
    if ev["type"] == "noise":
        return ("noise", ev["colour"], None)
    return (ev["type"], None, None)


def is_heldout(attrs: dict) -> bool:
    """True when the clip uses a held-out combination."""
    events = attrs["events"]
    if len(events) == 2 and frozenset((events[0]["type"], events[1]["type"])) in HELDOUT_PAIRS:
        return True
    return any(_single_key(ev) in HELDOUT_SINGLES for ev in events)


def sample_attributes(rng: np.random.Generator) -> dict:
    structure = str(rng.choice(["single", "sequence", "overlap"], p=[0.4, 0.3, 0.3]))
    events = [_sample_event(rng)]
    if structure != "single":
        second = _sample_event(rng)
        while second["type"] == events[0]["type"]:  # two events of one type would be ambiguous to check
            second = _sample_event(rng)
        events.append(second)
    return {
        "structure": structure,
        "events": events,
        "fade": str(rng.choice(["none", "in", "out"], p=[0.6, 0.2, 0.2])),
        "loudness": str(rng.choice(list(LOUDNESS_DB), p=[0.2, 0.6, 0.2])),
        "degradation": str(rng.choice(DEGRADATIONS, p=[0.55, 0.15, 0.15, 0.15])),
    }


def counterfactual_attributes(attrs: dict, rng: np.random.Generator) -> dict:
    """A copy of `attrs` with one caption-visible attribute changed: an event's pitch, tempo, sweep direction, noise
    colour or type, the order of a sequence, sequence <-> overlap, or the fade. Its caption (`make_caption`) is a
    hard negative for the clip of `attrs`: it differs in exactly one thing the audio shows (NegCLIP-style).

    Loudness and quality are never changed: captions often leave them out, so the edit could still describe the clip.
    """
    new = json.loads(json.dumps(attrs))
    events = new["events"]
    edits = []
    for i, ev in enumerate(events):
        for key, values in (
            ("pitch", list(PITCH_BANDS)),
            ("tempo", list(TEMPI)),
            ("direction", ["rising", "falling"]),
            ("colour", list(NOISE_COLOURS)),
        ):
            if key in ev:
                edits.append(("value", i, key, [v for v in values if v != ev[key]]))
        others = {e["type"] for e in events}
        edits.append(("type", i, None, [t for t in EVENT_TYPES if t not in others]))
    if len(events) == 2:
        edits.append(("structure", None, None, None))
    edits.append(("fade", None, None, [f for f in ("none", "in", "out") if f != new["fade"]]))
    kind, i, key, options = edits[int(rng.integers(len(edits)))]
    if kind == "value":
        events[i][key] = str(rng.choice(options))
    elif kind == "type":
        while True:  # a fresh event of another type (not the other event's type)
            ev = _sample_event(rng)
            if ev["type"] in options:
                break
        events[i] = ev
    elif kind == "structure":
        if new["structure"] == "sequence" and rng.random() < 0.5:
            new["events"] = events[::-1]
        else:
            new["structure"] = "overlap" if new["structure"] == "sequence" else "sequence"
    else:
        new["fade"] = str(rng.choice(options))
    return new


def audio_counterfactual_attributes(attrs: dict, rng: np.random.Generator, envelope_share: float = 2 / 3) -> dict:
    """A copy of `attrs` to render a hard-negative *clip* for the caption of `attrs` (the caption is kept).

    With probability `envelope_share` the change is the loudness or the fade (half each), the attributes in which a
    generator's samples for one prompt differ most; otherwise it is one of `counterfactual_attributes`' edits.
    Unlike a caption edit, a loudness or fade edit is a fair negative even when the caption leaves them out: a
    caption without a loudness word belongs to a clip at normal loudness 88 % of the time, and one without a fade
    word to a clip without a fade 88 % of the time.
    """
    if rng.random() >= envelope_share:
        return counterfactual_attributes(attrs, rng)
    new = json.loads(json.dumps(attrs))
    key, values = ("loudness", list(LOUDNESS_DB)) if rng.random() < 0.5 else ("fade", ["none", "in", "out"])
    new[key] = str(rng.choice([v for v in values if v != new[key]]))
    return new


# ------------------------------------------------------------------------------------------------- captions
_EVENT_PHRASES = {
    "tone": ["a {pitch} tone", "a steady {pitch} pitched tone", "a {pitch} hum", "a continuous {pitch} note"],
    "beeps": [
        "{tempo} {pitch} beeps",
        "a {pitch} beep repeating {tempo_adv}",
        "{pitch} pitched beeping at a {tempo} pace",
    ],
    "sweep": ["a {direction} sweep", "a tone sweeping {dir_adv}", "a {direction} siren-like sweep"],
    "noise": ["{colour} noise", "a burst of {colour} noise", "steady {colour} noise"],
    "clicks": ["{tempo} clicks", "clicking at a {tempo} pace", "a series of {tempo} clicks"],
}
_PITCH_WORDS = {"low": ["low", "deep"], "medium": ["medium", "mid"], "high": ["high", "shrill"]}
_TEMPO_ADV = {"slow": "slowly", "fast": "quickly"}
_DIR_ADV = {"rising": "upward", "falling": "downward"}
_STRUCTURE_TEMPLATES = {
    "single": ["{a}", "the sound of {a}", "{a} is heard", "there is {a}"],
    "sequence": ["{a} followed by {b}", "{a}, then {b}", "first {a}, and after that {b}", "{a} and then {b}"],
    "overlap": [
        "{a} with {b} in the background",
        "{a} over {b} in the background",
        "{a} while {b} plays quietly behind",
    ],
}
_FADE_PHRASES = {"in": ["fading in", "that fades in"], "out": ["fading out", "that fades out"]}
_LOUD_PHRASES = {"quiet": ["quiet", "soft"], "loud": ["loud"]}


def _phrase(ev: dict, rng: np.random.Generator) -> str:
    tpl = str(rng.choice(_EVENT_PHRASES[ev["type"]]))
    words = {
        "pitch": str(rng.choice(_PITCH_WORDS[ev["pitch"]])) if "pitch" in ev else "",
        "tempo": ev.get("tempo", ""),
        "tempo_adv": _TEMPO_ADV.get(ev.get("tempo", ""), ""),
        "direction": ev.get("direction", ""),
        "dir_adv": _DIR_ADV.get(ev.get("direction", ""), ""),
        "colour": ev.get("colour", ""),
    }
    return tpl.format(**words)


def make_caption(attrs: dict, rng: np.random.Generator) -> str:
    a = _phrase(attrs["events"][0], rng)
    if attrs["loudness"] in _LOUD_PHRASES and rng.random() < 0.8:
        word = str(rng.choice(_LOUD_PHRASES[attrs["loudness"]]))
        a = a.replace("a ", f"a {word} ", 1) if a.startswith("a ") else f"{word} {a}"
    b = _phrase(attrs["events"][1], rng) if len(attrs["events"]) > 1 else ""
    caption = str(rng.choice(_STRUCTURE_TEMPLATES[attrs["structure"]])).format(a=a, b=b)
    if attrs["fade"] in _FADE_PHRASES and rng.random() < 0.8:
        caption += " " + str(rng.choice(_FADE_PHRASES[attrs["fade"]]))
    if attrs["degradation"] != "none" and rng.random() < 0.15:  # captions rarely mention quality
        caption += {"hiss": ", with hiss", "clipping": ", distorted", "muffled": ", muffled"}[attrs["degradation"]]
    return caption[0].upper() + caption[1:]


# ----------------------------------------------------------------------------------------------- rendering
def _colored_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if colour == "white":
        x = white
    else:
        spec = np.fft.rfft(white)
        f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        f[0] = 1.0
        spec /= np.sqrt(f) if colour == "pink" else f  # 1/f power (pink) or 1/f^2 (brown)
        spec[f < 40.0] = 0.0  # no DC or sub-audio rumble
        x = np.fft.irfft(spec, n)
    return x / (np.std(x) + 1e-12)


def _envelope_pulses(n: int, rate: float, width: float, rng: np.random.Generator) -> np.ndarray:
    env = np.zeros(n)
    period = int(SAMPLE_RATE / rate)
    w = max(int(width * SAMPLE_RATE), 8)
    ramp = np.hanning(2 * min(w // 4, 160) + 1)
    start = int(rng.integers(0, max(period // 2, 1)))
    for s in range(start, n, period):
        seg = np.ones(min(w, n - s))
        r = min(len(ramp) // 2, len(seg) // 2)
        if r > 0:
            seg[:r], seg[-r:] = ramp[:r], ramp[-r:]
        env[s : s + len(seg)] = seg
    return env


def render_event(ev: dict, n: int, rng: np.random.Generator) -> np.ndarray:
    """One event of `n` samples at unit RMS-ish level."""
    t = np.arange(n) / SAMPLE_RATE
    kind = ev["type"]
    if kind in ("tone", "beeps"):
        f = rng.uniform(*PITCH_BANDS[ev["pitch"]])
        x = np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
        if kind == "beeps":
            x = x * _envelope_pulses(n, rng.uniform(*TEMPI[ev["tempo"]]), 0.08, rng)
    elif kind == "sweep":
        f0, f1 = SWEEP_RANGE if ev["direction"] == "rising" else SWEEP_RANGE[::-1]
        dur = n / SAMPLE_RATE
        k = np.log(f1 / f0) / dur  # exponential sweep
        x = np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)
    elif kind == "noise":
        x = _colored_noise(n, ev["colour"], rng)
    elif kind == "clicks":
        rate = rng.uniform(*TEMPI[ev["tempo"]])
        x = np.zeros(n)
        period = int(SAMPLE_RATE / rate)
        decay = np.exp(-np.arange(400) / 80.0)
        for s in range(int(rng.integers(0, period // 2 + 1)), n - 400, period):
            x[s : s + 400] += rng.standard_normal(400) * decay
    else:
        raise ValueError(f"unknown SynthCaps event type {kind!r}")
    return x


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)) + 1e-12)


def active_rms_db(x: np.ndarray, frame: int = 1024) -> float:
    """Loudness as SynthCaps defines it: RMS (dBFS) over the frames that carry sound (energy above 5 % of the
    loudest frame), so sparse events (clicks, beeps) are as loud as they sound, not as their average."""
    n = len(x) // frame * frame
    e = (x[:n].reshape(-1, frame) ** 2).mean(1) if n else np.array([np.mean(x**2)])
    active = e > 0.05 * e.max()
    return float(10 * np.log10(e[active].mean() + 1e-20))


def render_audio(attrs: dict, seed: int, seconds: float = DEFAULT_SECONDS) -> np.ndarray:
    """Renders a clip (float32 mono at 16 kHz) from its attributes; deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SAMPLE_RATE))
    events = attrs["events"]
    if attrs["structure"] == "single":
        x = render_event(events[0], n, rng)
        x /= _rms(x)
    elif attrs["structure"] == "sequence":
        half = n // 2
        a, b = render_event(events[0], half, rng), render_event(events[1], n - half, rng)
        x = np.concatenate([a / _rms(a), b / _rms(b)])
        fade = np.ones(n)  # short crossfade so the boundary is not a click
        w = 320
        fade[half - w : half] = np.linspace(1, 0.2, w)
        fade[half : half + w] = np.linspace(0.2, 1, w)
        x *= fade
    else:  # overlap: the background event sits 12 dB below the foreground
        a, b = render_event(events[0], n, rng), render_event(events[1], n, rng)
        x = a / _rms(a) + 0.25 * b / _rms(b)
    if attrs["fade"] != "none":
        ramp = np.linspace(0.0, 1.0, n) ** 2
        x *= ramp if attrs["fade"] == "in" else ramp[::-1]
    x *= 10 ** ((LOUDNESS_DB[attrs["loudness"]] - active_rms_db(x)) / 20)
    return finish_clip(x, attrs["degradation"], rng).astype(np.float32)


def finish_clip(x: np.ndarray, degradation: str, rng: np.random.Generator) -> np.ndarray:
    """Applies a quality degradation (`hiss`, `clipping`, `muffled` or `none`) and the soft-knee limiter."""
    n = len(x)
    if degradation == "hiss":
        x = x + 10 ** (-36 / 20) * rng.standard_normal(n)
    elif degradation == "clipping":
        limit = 0.3 * np.max(np.abs(x))
        x = np.clip(x * 1.0, -limit, limit) * (np.max(np.abs(x)) / max(limit, 1e-9)) ** 0.5
    elif degradation == "muffled":
        spec = np.fft.rfft(x)
        f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        spec *= 1 / (1 + (f / 700.0) ** 4)  # 4th-order low-pass at 700 Hz
        x = np.fft.irfft(spec, n)
    # Soft-knee limiter: loud sparse events (clicks) keep their loudness instead of being scaled down as a whole.
    knee, a = 0.7, np.abs(x)
    return np.where(a > knee, np.sign(x) * (knee + 0.29 * np.tanh((a - knee) / 0.29)), x)


# ------------------------------------------------------------------------------------------- codec clips
def render_codec_clip(seed: int, seconds: float = DEFAULT_SECONDS) -> np.ndarray:
    """A caption-less clip for training the codec (the mel VAE), never the generator: 1-3 layers of tones, pulse
    trains, sweeps, noise and clicks whose frequencies, rates, spans, levels and fades are drawn from continuous
    ranges wider than SynthCaps' attribute bands, then a degradation and the limiter as in [`render_audio`].

    Why: a codec trained only on `train` clips never hears, say, a steady tone above 2 kHz (that combination is
    held out from the generator), and it drops what it has not heard. The codec should carry any such signal, so
    that held-out prompts test the generator's composition, not the codec's coverage. These clips have no captions,
    so they teach the generator nothing.
    """
    rng = np.random.default_rng([seed, 7919])  # a stream of its own, apart from every SynthCaps split
    n = int(round(seconds * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    x = np.zeros(n)
    for _ in range(int(rng.integers(1, 4))):
        kind = str(rng.choice(["tone", "pulses", "sweep", "noise", "clicks"]))
        a, b = sorted(rng.uniform(0, 1, 2)) if rng.random() < 0.4 else (0.0, 1.0)
        lo, hi = int(a * n), max(int(b * n), int(a * n) + SAMPLE_RATE // 4)
        seg = slice(lo, min(hi, n))
        m = seg.stop - seg.start
        if kind in ("tone", "pulses"):
            f = np.exp(rng.uniform(np.log(80.0), np.log(7000.0)))
            ev = np.sin(2 * np.pi * f * t[:m] + rng.uniform(0, 2 * np.pi))
            if kind == "pulses":
                ev *= _envelope_pulses(m, rng.uniform(1.0, 8.0), rng.uniform(0.03, 0.2), rng)
        elif kind == "sweep":
            f0, f1 = np.exp(rng.uniform(np.log(100.0), np.log(6000.0), 2))
            k = np.log(f1 / f0) / (m / SAMPLE_RATE)
            ev = (
                np.sin(2 * np.pi * f0 * (np.exp(k * t[:m]) - 1) / k)
                if abs(k) > 1e-6
                else np.sin(2 * np.pi * f0 * t[:m])
            )
        elif kind == "noise":
            spec = np.fft.rfft(rng.standard_normal(m))
            f = np.fft.rfftfreq(m, 1 / SAMPLE_RATE)
            f[0] = 1.0
            spec /= f ** rng.uniform(0.0, 1.0)  # any slope from white to brown
            spec[f < 40.0] = 0.0
            ev = np.fft.irfft(spec, m)
        else:
            ev = np.zeros(m)
            period = max(int(SAMPLE_RATE / rng.uniform(1.0, 8.0)), 401)
            decay = np.exp(-np.arange(400) / rng.uniform(30.0, 150.0))
            for s in range(int(rng.integers(0, period // 2 + 1)), m - 400, period):
                ev[s : s + 400] += rng.standard_normal(400) * decay
        if rng.random() < 0.3:
            ramp = np.linspace(0.0, 1.0, m) ** 2
            ev *= ramp if rng.random() < 0.5 else ramp[::-1]
        x[seg] += ev / _rms(ev) * 10 ** (rng.uniform(-42.0, -8.0) / 20)
    degradation = str(rng.choice(DEGRADATIONS, p=[0.55, 0.15, 0.15, 0.15]))
    return finish_clip(x, degradation, rng).astype(np.float32)
    return x.astype(np.float32)


# -------------------------------------------------------------------------------------------------- corpus
@dataclass(frozen=True)
class SynthCapsConfig:
    seed: int = 0
    seconds: float = DEFAULT_SECONDS


def example(index: int, split: str = "train", config: SynthCapsConfig = SynthCapsConfig()) -> dict:
    """The `index`-th example of a split: `{"id", "caption", "attributes" (dict), "seed", "quality"}`."""
    if split not in SPLITS:
        raise ValueError(f"Unknown SynthCaps split {split!r}; choose one of {sorted(SPLITS)}.")
    want_heldout = split == "heldout"
    # Rejection-sample from a per-index stream so that the n-th example never depends on how many came before.
    rng = np.random.default_rng([config.seed, SPLITS[split], index])
    while True:
        attrs = sample_attributes(rng)
        if is_heldout(attrs) == want_heldout:
            break
    caption = make_caption(attrs, rng)
    seed = int(rng.integers(0, 2**31 - 1))
    return {
        "id": f"synthcaps-{split}-{index:06d}",
        "caption": caption,
        "attributes": attrs,
        "seed": seed,
        "quality": QUALITY[attrs["degradation"]],
    }


def load_synthcaps(
    split: str = "train",
    num_examples: int = 1000,
    config: SynthCapsConfig = SynthCapsConfig(),
    with_audio: bool = False,
):
    """SynthCaps as a `datasets.Dataset` with columns `id`, `caption`, `attributes` (JSON string), `seed`, `quality`.

    With `with_audio=True` an `audio` column (float32 array, 16 kHz) is rendered lazily on access.

    >>> ds = load_synthcaps("heldout", 4)
    >>> ds.column_names
    ['id', 'caption', 'attributes', 'seed', 'quality']
    """
    import datasets

    rows = [example(i, split, config) for i in range(num_examples)]
    ds = datasets.Dataset.from_dict(
        {
            "id": [r["id"] for r in rows],
            "caption": [r["caption"] for r in rows],
            "attributes": [json.dumps(r["attributes"], sort_keys=True) for r in rows],
            "seed": [r["seed"] for r in rows],
            "quality": [r["quality"] for r in rows],
        },
        info=datasets.DatasetInfo(description=f"SynthCaps {split} (seed {config.seed}, {config.seconds} s clips)"),
    )
    if with_audio:

        def _render(batch):
            batch["audio"] = [
                render_audio(json.loads(a), s, config.seconds) for a, s in zip(batch["attributes"], batch["seed"])
            ]
            return batch

        ds.set_transform(_render, output_all_columns=True)
    return ds


def corpus_fingerprint(split: str, num_examples: int, config: SynthCapsConfig) -> str:
    """A short hash naming a corpus slice, used to key caches of mels and latents."""
    key = json.dumps({"split": split, "n": num_examples, "seed": config.seed, "seconds": config.seconds, "v": 2})
    return hashlib.sha1(key.encode()).hexdigest()[:12]
