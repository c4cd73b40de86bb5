"""Does a sampler setting help the bundled generator follow its prompts? One setting swept, picked, confirmed.

    python experiments/sampler_sweep.py --setting temperature   # MAR's temperature, both models, 28 min on 2 cores
    python experiments/sampler_sweep.py --setting cfg_scale     # the guidance scale
    python experiments/sampler_sweep.py --decide_prompts 4 --confirm_prompts 4 --num_steps 2 --values 1 0.5

`--setting` is a sampler flag: `temperature` (every ODE starts from `temperature * x_0`; 1 is the noise the models
were trained from) or `cfg_scale`. On the generator table's prompts (the first `--decide_prompts` held-out
compositions, `--samples` clips each, seed `1000 * (k + 1) + prompt index` for clip k) each model is sampled at every
value of `--values` (masked: 8 iterations; CFM: 1; `--num_steps` steps; the other settings at their defaults, CFG 3)
and scored by the SynthCaps verifier, overall and per attribute, with the mel Fréchet distance to the same prompts'
real renders. The first value is the reference (the default: temperature 1, CFG 3). Each model's best value is then
checked on fresh prompts (`--confirm_first` on) against the reference, for every model, with the masked model's clips
also scored against shuffled prompts as a control. Differences are paired by prompt (the mean over its clips) with
95 % bootstrap intervals. Each (prompt set, model, value) is saved when done and skipped on rerun, so the script
resumes. Results: `experiments/results/generator/sampler_<setting>.json`.
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

# Each setting's values by default, the reference (the sampler's default) first, and its file-name prefix.
SETTINGS = {"temperature": ([1.0, 0.9, 0.8, 0.7, 0.6], "t"), "cfg_scale": ([3.0, 1.0, 2.0, 4.5, 6.0], "cfg")}


@dataclass
class SweepArguments:
    setting: str = field(default="temperature", metadata={"help": "The sampler setting swept.",
                                                           "choices": list(SETTINGS)})  # fmt: skip
    values: list[float] = field(
        default_factory=list, metadata={"help": "Its values, the reference first (default: the setting's sweep)."}
    )
    models: list[str] = field(
        default_factory=lambda: ["synthcaps", "synthcaps-cfm"],
        metadata={"help": "Generators, the masked model first (its clips get the shuffled-prompt control)."},
    )
    decide_prompts: int = field(default=64, metadata={"help": "Held-out prompts from 0 the values are picked on."})
    confirm_first: int = field(default=2000, metadata={"help": "First held-out prompt of the fresh set."})
    confirm_prompts: int = field(default=128, metadata={"help": "Fresh held-out prompts the picks are checked on."})
    samples: int = field(default=2, metadata={"help": "Clips per prompt (seeds 1000·(k+1) + prompt index)."})
    num_steps: int = field(default=25, metadata={"help": "ODE steps per decoding iteration."})
    output_dir: str = field(default="", metadata={"help": "Per-run scores (resumes; default outputs/sampler_sweep/"
                                                          "<setting>)."})  # fmt: skip
    results_dir: str = field(default="experiments/results/generator", metadata={"help": "Committed JSON ('' skips)."})

    def __post_init__(self):
        if self.setting not in SETTINGS:
            raise ValueError(f"--setting must be one of {', '.join(SETTINGS)}, got {self.setting!r}.")
        self.values = [float(v) for v in (self.values or SETTINGS[self.setting][0])]
        if len(set(self.values)) != len(self.values) or len(self.values) < 2:
            raise ValueError(f"--values must be two or more distinct values, the reference first; got {self.values}.")
        from base_model.sampling import check_sampling

        for v in self.values:  # refused here, before any model is loaded
            check_sampling(8, self.num_steps, "euler", **{"cfg_scale": 3.0, self.setting: v})
        if min(self.decide_prompts, self.confirm_prompts) < 2 or self.samples < 1:
            raise ValueError("--decide_prompts and --confirm_prompts must be >= 2 (the shuffled control) and "
                             "--samples >= 1.")  # fmt: skip
        if self.confirm_first < self.decide_prompts:
            raise ValueError(f"--confirm_first {self.confirm_first} overlaps the prompts the values are picked on "
                             f"(0 to {self.decide_prompts - 1}); start the fresh set after them.")  # fmt: skip
        self.output_dir = self.output_dir or f"outputs/sampler_sweep/{self.setting}"


def run_one(pipe, rows: list[dict], samples: int, sampler: dict, num_steps: int, verifier, real) -> dict:
    """Clips at one sampler setting: per-prompt verifier scores (mean over its clips; per attribute over the prompts
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
        out = pipe(captions, seed=seeds, num_iterations=iterations, num_steps=num_steps, **sampler)
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


def sweep(a: SweepArguments, name: str, rows: list[dict], values, pipes, verifier, real) -> dict:
    """`{model: {value: run}}` for one prompt set, each run loaded from `output_dir` when already made."""
    from base_model.files import atomic_write_json

    prefix = SETTINGS[a.setting][1]
    made_with = {"prompts": [r["index"] for r in rows], "samples": a.samples, "num_steps": a.num_steps}
    out = {}
    for model in a.models:
        out[model] = {}
        for v in values:
            path = Path(a.output_dir) / name / f"{model}-{prefix}{v:g}.json"
            if not path.is_file():
                print(f"{name}: {model} at {a.setting} {v:g}", flush=True)
                run = run_one(pipes[model], rows, a.samples, {a.setting: v}, a.num_steps, verifier, real)
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_json(path, run | made_with)
            out[model][v] = json.loads(path.read_text())
            if {k: out[model][v].get(k) for k in made_with} != made_with:
                raise RuntimeError(f"{path} was made with other prompts, --samples or --num_steps; use another "
                                   "--output_dir to keep it, or delete it to make it again.")  # fmt: skip
    return out


def report(runs: dict, models: list[str], reference: float, controls: bool = False) -> dict:
    """Per model and value: the summary, and its difference to the reference paired by prompt; with `controls`, at
    each value the masked model against its shuffled-prompt control and each other model against the masked one."""
    from rewardflow.metrics import bootstrap_interval

    def ci(d):
        return [round(x, 4) for x in bootstrap_interval(d)]

    out = {}
    for model in models:
        base = _arrays(runs[model][reference])
        out[model] = {}
        for v, run in runs[model].items():
            row = summary(run)
            if v != reference:
                row["vs_reference"] = paired(_arrays(run), base)
            out[model][f"{v:g}"] = row
    if controls:
        first = models[0]
        for v in runs[first]:
            own = _arrays(runs[first][v])["verifier"]
            entry = {"own_minus_shuffled": ci(own - np.array(runs[first][v]["shuffled"]))}
            for other in models[1:]:
                entry[f"{other}_minus_{first}"] = ci(_arrays(runs[other][v])["verifier"] - own)
            out[f"controls_at_{v:g}"] = entry
    return out


def main(a: SweepArguments) -> dict:
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
    reference = a.values[0]
    rows, real = prompt_set(0, a.decide_prompts)
    decide = sweep(a, "decide", rows, a.values, pipes, verifier, real)
    picks = {}
    for model in a.models:  # each model's best value; a tie goes to the value listed first
        scores = {v: round(float(np.nanmean(_arrays(r)["verifier"])), 4) for v, r in decide[model].items()}
        picks[model] = max(a.values, key=lambda v: (scores[v], -a.values.index(v)))
    confirmed = [v for v in a.values if v == reference or v in picks.values()]
    rows, real = prompt_set(a.confirm_first, a.confirm_prompts)
    confirm = sweep(a, "confirm", rows, confirmed, pipes, verifier, real)
    result = {
        "settings": asdict(a),
        "reference": reference,
        "seeds": "1000 · (clip + 1) + prompt index",
        "picked": picks,
        "decide": {"prompts": [0, a.decide_prompts - 1], **report(decide, a.models, reference)},
        "confirm": {
            "prompts": [a.confirm_first, a.confirm_first + a.confirm_prompts - 1],
            **report(confirm, a.models, reference, controls=True),
        },  # fmt: skip
    }
    name = f"sampler_{a.setting}.json"
    atomic_write_json(Path(a.output_dir) / name, result)
    if a.results_dir:
        dest = Path(a.results_dir) if Path(a.results_dir).is_absolute() else ROOT / a.results_dir
        dest.mkdir(parents=True, exist_ok=True)
        atomic_write_json(dest / name, result)
    print(json.dumps({k: {m: {v: r["verifier"] for v, r in part[m].items()} for m in a.models}
                      for k, part in (("decide", result["decide"]), ("confirm", result["confirm"]))}))  # fmt: skip
    return result


def make_parser():
    from trl import TrlParser

    return TrlParser((SweepArguments,))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
