"""Does a CLAP hear the loudness a caption names? Loudness is the SynthCaps attribute with the largest oracle gain in
the rollouts (a prompt's clips differ most in level) and the one CLAP agrees with the verifier on least.

Each probed caption's clip is rendered three times, identical but for the loudness attribute (quiet / normal /
loud: -30 / -20 / -11 dBFS active RMS, the counterfactual renders CLAP v2+ trained against), and CLAP scores all
three against the caption. A CLAP that hears level scores the captioned level highest:

    python experiments/clap_level_probe.py                      # bundled CLAP, clean renders
    python experiments/clap_level_probe.py --roundtrip true     # also through the generator's VAE + vocoder
    python experiments/clap_level_probe.py --clap outputs/clap4/final

Printed and written to `<output_dir>/results.json` (and `experiments/results/clap_level_probe/`):
`named_level_accuracy` (captions that say loud / quiet / soft: how often the captioned level scores highest; chance
1/3), `unnamed_level_accuracy` (captions without a loudness word, whose clips are normal: how often -20 dBFS scores
highest), the mean margin of the captioned level over the best other one, and the mean score per level.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `experiments.*` when run as a script

from base_model.data.synthcaps import _LOUD_PHRASES, LOUDNESS_DB  # noqa: E402

LEVELS = tuple(LOUDNESS_DB)  # quiet, normal, loud
LOUDNESS_WORDS = tuple(w for words in _LOUD_PHRASES.values() for w in words)  # the words captions use for them


@dataclass
class ProbeArguments:
    output_dir: str = field(default="outputs/clap_level_probe", metadata={"help": "Where results.json goes."})
    clap: str = field(default="", metadata={"help": "A CLAP checkpoint (folder or .pt); empty: the bundled one."})
    split: str = field(default="heldout", metadata={"help": "SynthCaps split the captions come from."})
    first_example: int = field(default=2000, metadata={"help": "First example index scanned."})
    num_named: int = field(default=60, metadata={"help": "Captions that name the loudness (loud / quiet)."})
    num_unnamed: int = field(default=40, metadata={"help": "Captions without a loudness word (normal clips)."})
    roundtrip: bool = field(default=False, metadata={"help": "Also score the renders after the decoder round trip."})
    workers: int = field(default=1, metadata={"help": "Processes for the round trip (about 0.8 s a clip each)."})
    results_dir: str = field(
        default="experiments/results/clap_level_probe", metadata={"help": "Committed copy of results.json; '' skips."}
    )


def names_loudness(caption: str) -> bool:
    words = caption.lower().replace(",", " ").split()
    return any(w in words for w in LOUDNESS_WORDS)


def probe_rows(a: ProbeArguments) -> list[dict]:
    """The first `num_named` examples whose caption names their (non-normal) loudness and the first `num_unnamed`
    normal ones whose caption does not, scanning the split from `first_example`."""
    from base_model.data.synthcaps import example

    named, unnamed, i = [], [], a.first_example
    while len(named) < a.num_named or len(unnamed) < a.num_unnamed:
        r = example(i, a.split)
        i += 1
        if i - a.first_example > 100 * (a.num_named + a.num_unnamed + 1):
            raise RuntimeError(f"too few probe captions in SynthCaps {a.split!r} from {a.first_example}.")
        if names_loudness(r["caption"]) and r["attributes"]["loudness"] != "normal":
            if len(named) < a.num_named:
                named.append({**r, "named": True})
        elif not names_loudness(r["caption"]) and r["attributes"]["loudness"] == "normal":
            if len(unnamed) < a.num_unnamed:
                unnamed.append({**r, "named": False})
    return named + unnamed


def renders(rows: list[dict]) -> np.ndarray:
    """`(len(rows), 3, N)`: each row's clip rendered at every level, everything else (seed included) unchanged."""
    from base_model.data.synthcaps import render_audio

    return np.stack(
        [np.stack([render_audio({**r["attributes"], "loudness": level}, r["seed"]) for level in LEVELS]) for r in rows]
    ).astype(np.float32)


def level_scores(clap, wavs: np.ndarray, rows: list[dict]) -> np.ndarray:
    """`(len(rows), 3)` CLAP scores of each row's three renders against its caption."""
    out = []
    for r, three in zip(rows, wavs):
        out.append(clap(torch.from_numpy(three), 16000, [r["caption"]] * len(LEVELS))["clap"].numpy())
    return np.stack(out)


def summarise(scores: np.ndarray, rows: list[dict]) -> dict:
    want = np.array([LEVELS.index(r["attributes"]["loudness"]) for r in rows])
    named = np.array([r["named"] for r in rows])
    right = scores.argmax(1) == want
    others = np.where(np.eye(len(LEVELS), dtype=bool)[want], -np.inf, scores).max(1)
    margin = scores[np.arange(len(rows)), want] - others
    out = {}
    for key, sel in (("named", named), ("unnamed", ~named)):
        if sel.any():
            out[f"{key}_level_accuracy"] = round(float(right[sel].mean()), 4)
            out[f"{key}_margin_mean"] = round(float(margin[sel].mean()), 4)
            out[f"{key}_mean_score_per_level"] = dict(
                zip(LEVELS, np.round(scores[sel].mean(0).astype(np.float64), 4).tolist())
            )
            out[f"{key}_count"] = int(sel.sum())
    return out


def main(a: ProbeArguments) -> dict:
    from tqdm.auto import tqdm

    from reward_models.clap import ClapReward

    clap = ClapReward(a.clap or None)
    rows = probe_rows(a)
    wavs = renders(rows)
    result = {"settings": asdict(a), "clap": {"model_id": clap.model_id, "checkpoint_hash": clap.checkpoint_hash}}
    result["chance"] = round(1 / len(LEVELS), 4)
    result["clean"] = summarise(level_scores(clap, tqdm(wavs, desc="clean"), rows), rows)
    if a.roundtrip:
        from bundled.train_synthcaps_clap import roundtrip

        flat = roundtrip(wavs.reshape(-1, wavs.shape[-1]), Path(a.output_dir) / "roundtrip.npy", workers=a.workers)
        rt = flat.reshape(wavs.shape).astype(np.float32)
        result["roundtrip"] = summarise(level_scores(clap, tqdm(rt, desc="round trip"), rows), rows)
    from base_model.files import atomic_write_text
    from experiments.results_io import publish

    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(result, indent=2))

    publish(out, a.results_dir, ("results.json",))
    print(json.dumps({k: v for k, v in result.items() if k != "settings"}, indent=2))
    return result


def make_parser():
    from trl import TrlParser

    return TrlParser((ProbeArguments,))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
