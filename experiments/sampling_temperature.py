"""Does a cooler start help the bundled generator follow its prompts? The sampler's `--temperature` (MAR's), swept.

    python experiments/sampling_temperature.py                      # both bundled models, about 25 min on 2 cores
    python experiments/sampling_temperature.py --decide_prompts 4 --confirm_prompts 4 --num_steps 2 --temperatures 1 0.5

Every ODE of the sampler starts from `temperature * x_0`; 1 is the noise the models were trained from. On the
generator table's prompts (the first `--decide_prompts` held-out compositions, `--samples` clips each, seed
`1000 * (k + 1) + prompt index` for clip k) each model is sampled at every temperature of `--temperatures` (masked:
8 iterations; CFM: 1; `--num_steps` steps, CFG 3) and scored by the SynthCaps verifier, overall and per attribute,
with the mel Fréchet distance to the same prompts' real renders (what a cooler start costs in spread). The
temperature the masked model scores best at is then checked on fresh prompts (`--confirm_first` on), against
temperature 1, for both models, with the same clips scored against shuffled prompts as a control. Differences are
paired by prompt (the mean over its clips) with 95 % bootstrap intervals. Each (prompt set, model, temperature) is
saved when done and skipped on rerun, so the script resumes. Results:
`experiments/results/generator/temperature.json`.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.head_ablation import paired  # noqa: E402

TRAINED = 1.0


@dataclass
class TemperatureArguments:
    models: list[str] = field(
        default_factory=lambda: ["synthcaps", "synthcaps-cfm"],
        metadata={"help": "Generators: the masked model first (its best temperature is the one confirmed)."},
    )
    temperatures: list[float] = field(
        default_factory=lambda: [1.0, 0.9, 0.8, 0.7, 0.6], metadata={"help": "Temperatures to sweep (1 included)."}
    )
    decide_prompts: int = field(default=64, metadata={"help": "Held-out prompts from 0 the temperature is picked on."})
    confirm_first: int = field(default=2000, metadata={"help": "First held-out prompt of the fresh set."})
    confirm_prompts: int = field(default=128, metadata={"help": "Fresh held-out prompts the pick is checked on."})
    samples: int = field(default=2, metadata={"help": "Clips per prompt (seeds 1000·(k+1) + prompt index)."})
    num_steps: int = field(default=25, metadata={"help": "ODE steps per decoding iteration."})
    output_dir: str = field(default="outputs/sampling_temperature", metadata={"help": "Per-run scores (resumes)."})
    results_dir: str = field(default="experiments/results/generator", metadata={"help": "Committed JSON ('' skips)."})

    def __post_init__(self):
        if TRAINED not in self.temperatures:
            raise ValueError(f"--temperatures must include {TRAINED} (the trained noise, what each is paired with).")
        if any(not t > 0 for t in self.temperatures):
            raise ValueError(f"--temperatures must all be > 0, got {self.temperatures}.")
        if min(self.decide_prompts, self.confirm_prompts) < 2 or self.samples < 1:
            raise ValueError("--decide_prompts and --confirm_prompts must be >= 2 (the shuffled control) and "
                             "--samples >= 1.")  # fmt: skip
        if self.confirm_first < self.decide_prompts:
            raise ValueError(f"--confirm_first {self.confirm_first} overlaps the prompts the temperature is picked "
                             f"on (0 to {self.decide_prompts - 1}); start the fresh set after them.")  # fmt: skip


def run_one(pipe, rows: list[dict], samples: int, temperature: float, num_steps: int, verifier, real) -> dict:
    """Clips at one temperature: per-prompt verifier scores (mean over its clips; per attribute over the prompts
    naming it), the same clips against shuffled prompts, mel Fréchet distance to the real renders, seconds."""
    from bundled.measure_synthcaps import mel_frechet
    from rewardflow.metrics import derangement

    iterations = 1 if pipe.model.config.flow_type == "cfm" else 8
    captions, attrs = [r["caption"] for r in rows], [r["attributes"] for r in rows]
    perm = derangement(len(rows))
    own, shuffled, waves, seconds = [], [], [], 0.0
    for k in range(samples):
        seeds = [1000 * (k + 1) + r["index"] for r in rows]
        start = time.perf_counter()
        out = pipe(captions, seed=seeds, num_iterations=iterations, num_steps=num_steps, temperature=temperature)
        seconds += time.perf_counter() - start
        s = verifier(out.waveforms, 16000, captions, attributes=attrs)
        own.append({n.removeprefix("verifier/"): v.numpy().astype(np.float64) for n, v in s.items()})
        x = verifier(out.waveforms, 16000, [captions[i] for i in perm], attributes=[attrs[i] for i in perm])
        shuffled.append(x["verifier"].numpy().astype(np.float64))
        waves.append(out.waveforms)
    with warnings.catch_warnings():  # an attribute a prompt does not name is NaN in every clip
        warnings.simplefilter("ignore", RuntimeWarning)
        per_prompt = {n: np.nanmean(np.stack([o[n] for o in own]), axis=0) for n in own[0]}
    return {
        "per_prompt": {n: [None if not np.isfinite(x) else float(x) for x in v] for n, v in per_prompt.items()},
        "shuffled": np.mean(np.stack(shuffled), axis=0).tolist(),
        "mel_frechet": round(mel_frechet(torch.cat(waves), real), 3),
        "seconds_per_clip": round(seconds / (samples * len(rows)), 3),
        "decoding_iterations": iterations,
    }


def _arrays(run: dict) -> dict:
    return {n: np.array([np.nan if x is None else x for x in v]) for n, v in run["per_prompt"].items()}


def summary(run: dict) -> dict:
    """Means over prompts (an attribute: over those naming it), the mel Fréchet distance and the timing."""
    means = {n: round(float(np.nanmean(v)), 4) if np.isfinite(v).any() else None for n, v in _arrays(run).items()}
    return means | {k: run[k] for k in ("mel_frechet", "seconds_per_clip", "decoding_iterations")}


def sweep(a: TemperatureArguments, name: str, rows: list[dict], temperatures, pipes, verifier, real) -> dict:
    """`{model: {temperature: run}}` for one prompt set, each run loaded from `output_dir` when already made."""
    from base_model.files import atomic_write_json

    out = {}
    for model in a.models:
        out[model] = {}
        for t in temperatures:
            path = Path(a.output_dir) / name / f"{model}-t{t:g}.json"
            if not path.is_file():
                print(f"{name}: {model} at temperature {t:g}", flush=True)
                run = run_one(pipes[model], rows, a.samples, t, a.num_steps, verifier, real)
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_json(path, run | {"prompts": [r["index"] for r in rows], "samples": a.samples,
                                               "num_steps": a.num_steps})  # fmt: skip
            out[model][t] = json.loads(path.read_text())
    return out


def report(runs: dict, models: list[str], pick: float | None = None) -> dict:
    """Per model and temperature: the summary, and its difference to temperature 1 paired by prompt; with `pick`,
    the masked model against its shuffled-prompt control and each other model against the masked one, at 1 and at
    `pick`."""
    from rewardflow.metrics import bootstrap_interval

    def ci(d):
        return [round(x, 4) for x in bootstrap_interval(d)]

    out = {}
    for model in models:
        base = _arrays(runs[model][TRAINED])
        out[model] = {}
        for t, run in runs[model].items():
            row = summary(run)
            if t != TRAINED:
                row["vs_temperature_1"] = paired(_arrays(run), base)
            out[model][f"{t:g}"] = row
    if pick is not None:
        first = models[0]
        for t in sorted({TRAINED, pick}, reverse=True):
            own = _arrays(runs[first][t])["verifier"]
            entry = {"own_minus_shuffled": ci(own - np.array(runs[first][t]["shuffled"]))}
            for other in models[1:]:
                entry[f"{other}_minus_{first}"] = ci(_arrays(runs[other][t])["verifier"] - own)
            out[f"controls_at_{t:g}"] = entry
    return out


def main(a: TemperatureArguments) -> dict:
    from base_model import MaskAudioFlowPipeline
    from base_model.data.synthcaps import example, render_audio
    from base_model.files import atomic_write_json
    from reward_models.verifier import SynthCapsVerifier

    def prompt_set(first: int, n: int):
        rows = [example(i, "heldout") | {"index": i} for i in range(first, first + n)]
        real = torch.from_numpy(np.stack([render_audio(r["attributes"], r["seed"]) for r in rows]))
        return rows, real

    pipes = {m: MaskAudioFlowPipeline.from_pretrained(m) for m in a.models}
    verifier = SynthCapsVerifier()
    rows, real = prompt_set(0, a.decide_prompts)
    decide = sweep(a, "decide", rows, a.temperatures, pipes, verifier, real)
    masked = {t: float(np.nanmean(_arrays(r)["verifier"])) for t, r in decide[a.models[0]].items()}
    pick = max(masked, key=lambda t: (round(masked[t], 4), t))  # a tie goes to the higher temperature
    rows, real = prompt_set(a.confirm_first, a.confirm_prompts)
    confirm = sweep(a, "confirm", rows, sorted({TRAINED, pick}, reverse=True), pipes, verifier, real)
    result = {
        "settings": asdict(a),
        "cfg_scale": 3.0,
        "seeds": "1000 · (clip + 1) + prompt index",
        "picked_temperature": pick,
        "decide": {"prompts": [0, a.decide_prompts - 1], **report(decide, a.models)},
        "confirm": {
            "prompts": [a.confirm_first, a.confirm_first + a.confirm_prompts - 1],
            **report(confirm, a.models, pick),
        },  # fmt: skip
    }
    atomic_write_json(Path(a.output_dir) / "temperature.json", result)
    if a.results_dir:
        dest = Path(a.results_dir) if Path(a.results_dir).is_absolute() else ROOT / a.results_dir
        dest.mkdir(parents=True, exist_ok=True)
        atomic_write_json(dest / "temperature.json", result)
    print(json.dumps({k: {m: {t: r["verifier"] for t, r in v[m].items()} for m in a.models}
                      for k, v in (("decide", result["decide"]), ("confirm", result["confirm"]))}))  # fmt: skip
    return result


def make_parser():
    from trl import TrlParser

    return TrlParser((TemperatureArguments,))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
