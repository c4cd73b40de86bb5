"""Renders every table of figures in the documents from the committed JSON under `experiments/results/` (and
`experiments/benchmarks/results/`), so a number can never drift from its source.

    python experiments/render_results.py            # rewrite the tables in README.md and experiments/README.md
    python experiments/render_results.py --check    # exit 1 if a committed document differs from its rendering

A table lives between `<!-- table:NAME -->` and `<!-- /table:NAME -->` in a document; NAME picks a renderer below,
which reads its JSON and returns markdown. `tests/test_render_results.py` runs `--check`.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
BENCH = ROOT / "experiments" / "benchmarks" / "results"
DOCUMENTS = (ROOT / "README.md", ROOT / "experiments" / "README.md", ROOT / "experiments" / "earlier-generator.md")
TABLE = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table:(?P=name) -->)", re.S)


def _load(path: Path) -> dict:
    if not path.is_file():
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        raise FileNotFoundError(f"{shown} is missing: the table that renders it has no source.")
    return json.loads(path.read_text())


def _ci(d: dict, digits: int = 3) -> str:
    """`mean [low, high]` of a paired difference, bold when the interval excludes zero."""
    mean, (lo, hi) = d["mean"], d["ci95"]
    cell = f"{mean:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
    return f"**{cell}**" if lo > 0 or hi < 0 else cell


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


# ------------------------------------------------------------------------------------------------ renderers
def vocoder() -> str:
    r = _load(BENCH / "vocoder.json")
    v, sec, sc = r["verifier_round_trip"], r["seconds_per_batch"], r["spectral_convergence"]
    d = r["settings"]["default_vocoder"]
    lines = [
        _row(["vocoder", f"s per batch of {r['settings']['batch_size']}", "speed-up", "spectral convergence",
              "verifier, real audio -> mel -> vocoder"]),
        "|---|---|---|---|---|",
        _row(["librosa, 32 iterations (`griffin_lim_librosa`)", sec["librosa"], "1×", sc["librosa"], v["librosa"]["verifier"]]),
        _row(["torch, batched, 32 iterations (the same settings)", sec["torch"], f"**{r['speedup_vs_librosa']}×**",
              sc["torch"], v["torch"]["verifier"]]),
        _row([f"torch, batched, {d['n_iter']} iterations + {d['nnls_iter']} NNLS steps (`griffin_lim`, the default)",
              sec["default"], f"{r['default_speedup_vs_librosa']}×", sc["default"], v["default"]["verifier"]]),
        _row(["real audio itself", "", "", "0", v["real_audio"]["verifier"]]),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def vocoder_sweep() -> str:
    r = _load(BENCH / "vocoder.json")
    lines = [
        _row(["Griffin-Lim iterations", "NNLS steps", "s per batch", "speed-up vs librosa", "spectral convergence"])
    ]
    lines.append("|---|---|---|---|---|")
    for s in r["sweep"]:
        lines.append(
            _row([s["n_iter"], s["nnls_iter"], s["seconds"], f"{s['speedup_vs_librosa']}×", s["spectral_convergence"]])
        )
    return "\n".join(lines) + "\n"


def bench_headline() -> str:
    r = _load(BENCH / "latest.json")
    v, s, ro, f = r["vocoder"], r["sampler"], r["rollout"], r["finetune"]
    share = ro["stage_share"]
    top = max(share, key=share.get)
    rows = [
        (
            "vocoder speed-up over librosa's Griffin-Lim (16 clips, same settings)",
            f"{v['speedup_vs_librosa']:.1f}×",
            "≥ 10×",
        ),
        ("vocoder's share of rollout time", f"{share['vocode']:.3f}", "≤ 0.20"),
        (f"largest rollout stage: {top}", f"{share[top]:.3f}", ""),
        (f"sampler, fraction of the fp32 GEMM peak (batch {s['at_batch']})", f"{s['fraction_of_peak']:.3f}", "≥ 0.50"),
        ("library sampler over plain Algorithm 1 (same outputs)", f"{s['speedup_vs_naive']:.2f}×", "≥ 2×"),
        (
            "reward-weighted + reference step / plain flow-matching step",
            f"{f['reward_step_over_cfm_step']:.2f}",
            "≤ 1.4",
        ),
        ("rollout throughput, clips per second", f"{ro['clips_per_second']:.2f}", ""),
    ]
    cpu = f" ({r['machine']['cpu_model']})" if "cpu_model" in r["machine"] else ""
    head = f"`make bench` on {r['machine']['device']}{cpu}, `{r['settings']['preset']}` preset for the sampler and step; " \
           f"bundled pipeline for the rollout and vocoder ({r['measured_at'][:10]})."  # fmt: skip
    lines = [head, "", _row(["measure", "measured", "target"]), "|---|---|---|"]
    lines += [_row(x) for x in rows]
    return "\n".join(lines) + "\n"


def generation_scaling() -> str:
    r = _load(BENCH / "latest.json")
    g, share = r["generation"], r["rollout"]["stage_share"]
    lines = [_row(["clip s", "batch", "sample s", "VAE decode s", "vocode s", "total s", "s per clip"]),
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in [*g["by_length"], *g["by_batch"]]:
        lines.append(_row([row["seconds"], row["batch"], row["sample"], row["decode"], row["vocode"], row["total"],
                           row["per_clip"]]))  # fmt: skip
    lines += ["", _row(["rollout stage", *share]), "|---|" + "---|" * len(share)]
    lines.append(_row(["share of rollout time", *[f"{v:.3f}" for v in share.values()]]))
    lines.append(
        f"\nRollout: {r['settings']['rollout_prompts']} prompts × 1 clip of the bundled pipeline, "
        f"{r['rollout']['clips_per_second']:.2f} clips/s end to end in one process with the rollout's default "
        "single thread (`--cpu_threads 1`; on this 2-core machine a rollout runs two such processes)."
    )
    return "\n".join(lines) + "\n"


def clap_level_probe() -> str:
    r = _load(RESULTS / "clap_level_probe" / "results.json")
    lines = [_row(["captions", "clean clips", "after VAE + vocoder"]), "|---|---|---|"]
    for label, key in (
        ("that name a level (loud / quiet / soft)", "named"),
        ("that name none (normal clips)", "unnamed"),
    ):
        n = r["clean"][f"{key}_count"]
        lines.append(_row([f"{n} {label}", _f(r["clean"][f"{key}_level_accuracy"], 2),
                           _f(r["roundtrip"][f"{key}_level_accuracy"], 2)]))  # fmt: skip
    lines.append(
        f"\nHow often `{r['clap']['model_id']}` scores the caption's level highest of the three renders "
        f"(chance {r['chance']:.2f})."
    )
    return "\n".join(lines) + "\n"


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None or isinstance(v, str) else f"{v:.{digits}f}"


def _share(part: float, whole: float) -> str:
    """`part / whole` to two decimals; "n/a" unless the whole is positive (the oracle gained nothing to recover, and a
    ratio of two losses would read as a share)."""
    return f"{part / whole:.2f}" if whole > 0 else "n/a"


def _bci(x: list | dict, digits: int = 3) -> str:
    """`[mean, low, high]` or `{"mean", "low", "high"}` / `{"mean", "ci95"}` as `mean [low, high]`, bold when the
    interval excludes zero."""
    if isinstance(x, dict):
        lo, hi = x["ci95"] if "ci95" in x else (x["low"], x["high"])
        x = [x["mean"], lo, hi]
    cell = f"{x[0]:+.{digits}f} [{x[1]:+.{digits}f}, {x[2]:+.{digits}f}]"
    return f"**{cell}**" if x[1] > 0 or x[2] < 0 else cell


def decoder_ceiling() -> str:
    r = _load(RESULTS / "generator" / "report.json")["decoder_ceiling"]
    attrs = ["verifier", "type", "pitch", "tempo", "direction", "colour", "fade", "loudness"]
    lines = [_row(["audio", *attrs]), "|" + "---|" * (len(attrs) + 1)]
    for name, key in (("real held-out audio", "real_audio"), ("real audio → mel → vocoder", "real_mel_vocoder"),
                      ("real audio → mel → VAE → vocoder (the decoder's ceiling)", "real_mel_vae_vocoder")):  # fmt: skip
        lines.append(_row([name, *[_f(r[key].get(a)) for a in attrs]]))
    return "\n".join(lines) + "\n"


def generator(folder: str = "generator") -> str:
    """A bundled pair's measurement (`<folder>/report.json`, copied from its build's `report.json`)."""
    r = _load(RESULTS / folder / "report.json")
    m, c = r["masked_8_iterations"], r["cfm_25_steps"]
    lines = [_row(["", "verifier accuracy", "mel Fréchet distance", "s / clip"]), "|---|---|---|---|"]
    lines.append(_row(["real held-out audio", _f(r["decoder_ceiling"]["real_audio"]["verifier"]), "0", ""]))
    lines.append(
        _row(
            [
                "decoder ceiling (real audio → mel → VAE → vocoder)",
                _f(r["decoder_ceiling"]["real_mel_vae_vocoder"]["verifier"]),
                "",
                "",
            ]
        )
    )
    lines.append(
        _row(
            [
                "**MaskAudioFlow**, 8 iterations × 25 steps",
                f"**{_f(m['verifier'])}**",
                _f(m["mel_frechet"], 1),
                _f(m["seconds_per_clip"]),
            ]
        )
    )
    lines.append(_row(["the same clips checked against shuffled prompts", _f(r["shuffled_prompt_verifier"]), "", ""]))
    lines.append(_row(["own − shuffled prompt, paired", _bci(r["own_minus_shuffled"]), "", ""]))
    lines.append(
        _row(
            [
                "CFM baseline, 25 steps (same size, data, steps)",
                _f(c["verifier"]),
                _f(c["mel_frechet"], 1),
                _f(c["seconds_per_clip"]),
            ]
        )
    )
    lines.append(_row(["CFM − masked, paired", _bci(r["cfm_minus_masked"]), "", ""]))
    p = r["parameters"]
    lines.append(f"\n{r['eval_prompts']} held-out-composition prompts (the first of the split), seeds {r['seeds']}, CFG "
                 f"{r['cfg_scale']}. Parameters: MaskAudioFlow {p['masked'] / 1e6:.2f} M, CFM {p['cfm'] / 1e6:.2f} M, "
                 f"VAE {p['vae'] / 1e6:.2f} M; the bundled generator's weights take {r['files_mb']} MB.")  # fmt: skip
    return "\n".join(lines) + "\n"


def generator_seeds(
    name: str = "eight_seeds.json", more: tuple[str, ...] = ("eight_seeds_16_iterations.json",)
) -> str:
    """The bundled pair on the generator table's prompts with several clips per prompt (`rewardflow/evaluate.py
    --num_samples`): each model's verifier with its interval over prompts, per attribute, and CFM − masked; then each
    report in `more` (the masked model at other settings, the same prompts and seeds) against the masked model."""
    from rewardflow.metrics import bootstrap_interval

    r = _load(RESULTS / "generator" / name)
    s = r["settings"]
    first = s["models"][0]
    attrs = list(r["verifier_by_attribute"][first])  # the verifier's attributes, in its order
    lines = [_row(["model", "verifier", *attrs, "KL", "mel Fréchet"]), "|" + "---|" * (len(attrs) + 4)]

    def label(model: str, settings: dict) -> str:
        if model.endswith("-cfm"):
            return f"CFM baseline, {settings['num_steps']} steps"
        return f"MaskAudioFlow, {settings['num_iterations']} iterations × {settings['num_steps']} steps"

    def model_row(report: dict, model: str) -> str:
        m, by = report["models"][model], report["verifier_by_attribute"][model]
        mean, lo, hi = bootstrap_interval(report["per_prompt"][model]["verifier"], report["settings"]["bootstrap"])
        cells = [f"{mean:.3f} [{lo:.3f}, {hi:.3f}]", *[_f(by[a]["accuracy"]) for a in attrs]]
        return _row([label(model, report["settings"]), *cells, _f(m["kl"]), _f(m["mel_frechet"], 1)])

    for model in s["models"]:
        lines.append(model_row(r, model))
    for model, d in r["paired_vs_first"].items():
        title = f"{label(model, s).split(',')[0]} − {label(first, s).split(',')[0]}, paired"
        lines.append(_row([title, _bci(d["verifier"]), *[""] * len(attrs), _bci(d["kl"]), ""]))
    for extra in more:
        e = _load(RESULTS / "generator" / extra)
        model = e["settings"]["models"][0]
        if e["per_prompt"][model]["prompt_ids"] != r["per_prompt"][first]["prompt_ids"]:
            raise ValueError(f"{extra} was not evaluated on {name}'s prompts.")
        lines.append(model_row(e, model))
        d = {k: bootstrap_interval([x - y for x, y in zip(e["per_prompt"][model][k], r["per_prompt"][first][k])])
             for k in ("verifier", "kl")}  # fmt: skip
        lines.append(_row([f"{e['settings']['num_iterations']} − {s['num_iterations']} iterations, paired",
                           _bci(d["verifier"]), *[""] * len(attrs), _bci(d["kl"]), ""]))  # fmt: skip
    lines.append(f"\nThe first {s['max_prompts']} held-out-composition prompts (the generator table's), "
                 f"{s['num_samples']} clips per prompt (seeds from {s['seed']} and the prompt id, shared by every "
                 f"row), CFG {s['cfg_scale']:g}; the verifier's interval is over prompts, each the mean of its "
                 f"{s['num_samples']} clips.")  # fmt: skip
    return "\n".join(lines) + "\n"


def generator_builds() -> str:
    """The bundled pair as each build made it (`generator/builds.json`): size, budget, and what it carries."""
    r = _load(RESULTS / "generator" / "builds.json")
    attrs = ["verifier", "tempo", "colour", "loudness", "pitch", "mel_frechet"]
    head = ["build", "model", "parameters", "steps × batch", "clips", *attrs[:-1], "mel Fréchet"]
    lines = [_row(head), "|" + "---|" * len(head)]
    for b in r["builds"]:
        for ft, name in (("masked", "MaskAudioFlow"), ("cfm", "CFM baseline")):
            m = b[ft]
            lines.append(_row([b["name"], name, f"{b['parameters'][ft] / 1e6:.2f} M",
                               f"{b['steps'][ft]} × {b['batch_size']}", b["train_examples"],
                               *[_f(m[a]) for a in attrs[:-1]], _f(m["mel_frechet"], 1)]))  # fmt: skip
        lines.append(_row([b["name"], "CFM − masked, paired", "", "", "", _bci(b["cfm_minus_masked"]), *[""] * 5]))
    lines.append(
        f"\n{r['eval_prompts']} held-out-composition prompts, seeds {r['seeds']}, CFG {r['cfg_scale']}, "
        "8 iterations × 25 steps (masked) or 25 steps (CFM); both builds share the VAE and text encoder."
    )
    return "\n".join(lines) + "\n"


def build_progress() -> str:
    r = _load(RESULTS / "generator" / "build_progress.json")
    runs = r["runs"]
    steps = sorted({c["step"] for run in runs.values() for c in run["checkpoints"]})
    lines = [_row(["run", "recipe", *[f"step {s}" for s in steps]]), "|---|---|" + "---|" * len(steps)]
    for name, run in runs.items():
        at = {c["step"]: c["verifier"] for c in run["checkpoints"]}
        recipe = "CFM (no masking)" if run["flow_type"] == "cfm" else {
            "fixed": f"masked, fixed p = {r['settings']['mask_ratio']:g}", "cosine": "masked, cosine ratio"}[run["mask_ratio_mode"]]  # fmt: skip
        lines.append(_row([name, recipe, *[_f(at[s]) if s in at else "—" for s in steps]]))
    v = r["vae_ceiling"]
    n = next(iter(runs.values()))["checkpoints"][0]["prompts"]
    lines.append(f"\nVerifier accuracy of each checkpoint's EMA weights on the first {n} held-out prompts (8 iterations "
                 f"× 25 steps, CFG 3). The finished VAE's decoder ceiling on {v['prompts']} prompts: "
                 f"{v['real_mel_vae_vocoder']['verifier']:.3f} (loudness {v['real_mel_vae_vocoder']['loudness']:.3f}, "
                 f"pitch {v['real_mel_vae_vocoder']['pitch']:.3f}); real audio {v['real_audio']['verifier']:.3f}.")  # fmt: skip
    return "\n".join(lines) + "\n"


def decoding_scaling() -> str:
    r = _load(RESULTS / "decoding_scaling" / "results.json")
    cols = ["verifier", "clap", "kl", "fad_clap", "mel_frechet"]
    lines = [_row(["setting", "backbone passes", *cols, "Δ verifier vs 8 iterations"]), "|" + "---|" * (len(cols) + 3)]
    for name, row in r["rows"].items():
        d = row.get("vs_reference", {}).get("verifier")
        lines.append(_row([name, row["backbone_passes"], *[_f(row.get(k)) for k in cols], _bci(d) if d else "—"]))
    return "\n".join(lines) + "\n"


def continued_pretraining(flow: str = "masked") -> str:
    """`experiments/continued_pretraining.py` (`generator/continued_<flow>.json`): the bundled model and its CPU
    continuation on each prompt set, per verifier attribute, then their paired difference; the run's recipe and cost."""
    r = _load(RESULTS / "generator" / f"continued_{flow}.json")
    a, run = r["settings"], r["run"]
    attrs = list(r["decide"]["verifier_by_attribute"][r["decide"]["settings"]["models"][0]])
    lines = [_row(["prompts", "model", "verifier", *attrs, "KL", "mel Fréchet"]), "|" + "---|" * (len(attrs) + 5)]
    steps = run["sittings"][-1]["to_step"]
    for part in ("decide", "confirm"):
        e = r[part]
        s, (base, tuned) = e["settings"], e["settings"]["models"]
        where = f"{s['first_prompt']}–{s['first_prompt'] + s['max_prompts'] - 1}, {s['num_samples']} clips each"
        for model, name in ((base, f"{base} (bundled)"), (tuned, f"continued {steps} steps")):
            m, by = e["models"][model], e["verifier_by_attribute"][model]
            cells = [_f(m["verifier"]), *[_f(by.get(k, {}).get("accuracy")) for k in attrs], _f(m["kl"]),
                     _f(m["mel_frechet"], 1)]  # fmt: skip
            lines.append(_row([where, name, *cells]))
        d = e["paired_vs_first"][tuned]
        lines.append(_row([where, "continued − bundled, paired", _bci(d["verifier"]), *[""] * len(attrs),
                           _bci(d["kl"]), ""]))  # fmt: skip
    seconds = sum(x["seconds"] for x in run["sittings"])
    machines = sorted({f"{x['machine']}, {x['cpu_count']} cores" for x in run["sittings"]})
    lines.append(
        f"\nContinued from the bundled weights for {steps} steps × {a['batch_size']} clips (the first "
        f"{a['num_train_examples']} of the corpus), bf16, learning rate warmed up over {a['warmup_steps']} steps to "
        f"{a['learning_rate']:g} then linearly to 0, EMA {a['ema_decay']:g}; {seconds / 60:.0f} min of training "
        f"({seconds / max(steps, 1):.1f} s per step; {'; '.join(machines)}). Training loss {run['loss'][0][1]:.3f} "
        f"at step {run['loss'][0][0]}, {run['loss'][-1][1]:.3f} at step {run['loss'][-1][0]}. Paired differences "
        f"are over prompts (each the mean of its clips), with 95 % bootstrap intervals; CFG 3, "
        f"{r['decide']['settings']['num_iterations']} iterations × {a['num_steps']} steps."
    )
    return "\n".join(lines) + "\n"


def masking_ablation() -> str:
    r = _load(RESULTS / "masking_ablation" / "results.json")
    lines = [_row(["ratio p", "span l", "verifier", "KL", "mel Fréchet", f"Δ verifier vs {r['reference']}",
                   f"Δ KL vs {r['reference']}"]), "|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in r["runs"].values():
        p = "cosine (MaskGIT)" if row["mask_ratio_mode"] == "cosine" else row["mask_ratio"]
        d, k = row.get("verifier_vs_reference"), row.get("kl_vs_reference")
        lines.append(_row([p, row["span_length"], _f(row["verifier"]), _f(row["kl"]), _f(row["mel_frechet"], 1),
                           _bci(d) if d else "—", _bci(k) if k else "—"]))  # fmt: skip
    s = r["settings"]
    lines.append(f"\nEach: {s['max_steps']} steps, {s['hidden_size']} wide × {s['num_layers']} layers, "
                 f"{s['train_examples']} clips, seed {s['seed']}; {s['eval_prompts']} held-out prompts from "
                 f"{s['first_prompt']}.")  # fmt: skip
    return "\n".join(lines) + "\n"


def head_ablation() -> str:
    r = _load(RESULTS / "head_ablation" / "results.json")
    attrs = ["type", "pitch", "tempo", "direction", "colour", "fade", "loudness"]
    names = {"masked-mlp": "MaskAudioFlow, MLP head (per frame)", "masked-transformer": "MaskAudioFlow, transformer "
             "head", "cfm": "CFM baseline"}  # fmt: skip
    lines = [_row(["model", "parameters", "verifier", *attrs, "mel Fréchet", f"Δ verifier vs {r['reference']}",
                   f"Δ tempo vs {r['reference']}"]), "|" + "---|" * (len(attrs) + 6)]  # fmt: skip
    for name, row in r["runs"].items():
        d = row.get("vs_reference", {})
        cells = [_bci(d[k]) if k in d else "—" for k in ("verifier", "tempo")]
        lines.append(_row([names.get(name, name), f"{row['parameters'] / 1e6:.2f} M", _f(row["verifier"]),
                           *[_f(row[k]) for k in attrs], _f(row["mel_frechet"], 1), *cells]))  # fmt: skip
    s = r["settings"]
    tempo = r["runs"]["cfm"]["vs_reference"]["tempo"]["prompts"] if "cfm" in r["runs"] else "n/a"
    lines.append(f"\nEach: {s['max_steps']} steps, {s['hidden_size']} wide × {s['num_layers']} layers, "
                 f"{s['train_examples']} clips, seed {s['seed']}; {s['eval_prompts']} held-out prompts from "
                 f"{s['first_prompt']} ({tempo} name a tempo), seeds {r['seeds']}, CFG {r['cfg_scale']}; masked models "
                 f"8 iterations × {r['num_steps']} steps, CFM {r['num_steps']} steps.")  # fmt: skip
    return "\n".join(lines) + "\n"


def sampler_sweep(setting: str = "temperature") -> str:
    """`experiments/sampler_sweep.py`: each model at each value of one sampler setting on the prompts the values are
    picked on, then each model's pick against the reference on fresh prompts, with the shuffled-prompt control and
    CFM − masked."""
    r = _load(RESULTS / "generator" / f"sampler_{setting}.json")
    models, ref = r["settings"]["models"], f"{r['reference']:g}"
    names = {"synthcaps": "MaskAudioFlow", "synthcaps-cfm": "CFM baseline"}
    label = {"temperature": "temperature", "cfg_scale": "CFG"}.get(setting, setting)
    attrs = ["type", "pitch", "tempo", "colour", "fade", "loudness"]
    lines = [_row(["prompts", "model", label, "verifier", f"Δ verifier vs {ref}, paired", *attrs, "mel Fréchet"]),
             "|" + "---|" * (len(attrs) + 6)]  # fmt: skip
    for key, kind in (("decide", "picked on"), ("confirm", "fresh")):
        part = r[key]
        first, last = part["prompts"]
        for model in models:
            for v, row in part[model].items():
                d = row.get("vs_reference", {}).get("verifier")
                lines.append(_row([f"{first}–{last} ({kind})", names.get(model, model), v, _f(row["verifier"]),
                                   _bci(d) if d else "—", *[_f(row.get(k)) for k in attrs],
                                   _f(row["mel_frechet"], 1)]))  # fmt: skip
    s = r["settings"]
    picks = ", ".join(f"{names.get(m, m)} {v:g}" for m, v in r["picked"].items())
    lines.append(f"\nHeld-out-composition prompts, {s['samples']} clips each (seeds {r['seeds']}); MaskAudioFlow 8 "
                 f"iterations × {s['num_steps']} steps, CFM {s['num_steps']} steps; every other sampler setting at its "
                 "default (CFG 3, temperature 1). Differences are paired by prompt (the mean over its clips), 95 % "
                 f"bootstrap intervals. Each model's best {label} on the first set: {picks}.")  # fmt: skip
    masked = names.get(models[0], models[0])
    for v in r["confirm"][models[0]]:
        c = r["confirm"][f"controls_at_{v}"]
        others = "; ".join(f"{names.get(m, m)} − {masked} {_bci(c[f'{m}_minus_{models[0]}'])}" for m in models[1:])
        lines.append(f"\nFresh prompts at {label} {v}: {masked} − the same clips against shuffled prompts "
                     f"{_bci(c['own_minus_shuffled'])}; {others}.")  # fmt: skip
    return "\n".join(lines) + "\n"


def _delta(run: dict, key: str) -> str:
    d = run["paired_vs_base"].get(key)
    return _bci(d) if d else "n/a"


def _kept(settings: dict) -> str:
    """What a study's top-k runs keep of each prompt's clips, rounded up as `topk` does (studies made before
    `--top_k` kept 0.25)."""
    n = settings.get("num_generations", 4)
    k = math.ceil(settings.get("top_k", 0.25) * n)
    return f"best of {n}" if k == 1 else f"best {k} of {n}"


def oracle(names: tuple[str, ...] = ("results.json", "rollout_cfg1.json", "rollout_cfg1_n8.json")) -> str:
    """The oracle's online rounds of each study in `names` (under `results/alignment/`): by default, on the earlier
    generator, the guided (`results.json`) and the unguided (`rollout_cfg1.json`, 4 clips a prompt keeping the best;
    `rollout_cfg1_n8.json`, 8 keeping the best) rollout; each round against the base and, where the study measured
    it, against the round before."""
    notes = []
    lines = [
        _row(["rollout", "model", "verifier", "Δ verifier vs base", "Δ verifier vs previous round", "Δ CLAP", "KL",
              "mel Fréchet", "trained on: mean", "trained on: best of n"]),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name in names:
        r = _load(RESULTS / "alignment" / name)
        rollout = f"CFG {r['settings']['rollout_cfg_scale']:g}, {_kept(r['settings'])}"
        oracle_runs = ["verifier-topk"] + [n for n in r["runs"] if n.startswith("oracle-round-")]
        b, gains = r["base"], r.get("oracle_round_gains", {})
        spread = r.get("oracle_round_rollouts", {})
        lines.append(
            _row(
                [rollout, "base", _f(b["verifier"]), "", "", "", _f(b.get("kl")), _f(b.get("mel_frechet"), 1), "", ""]
            )
        )
        for i, n in enumerate(
            sorted(oracle_runs, key=lambda n: int(n.rsplit("-", 1)[1]) if n[-1].isdigit() else 1), 1
        ):
            m, gain = r["runs"][n], gains.get(f"round-{i}", {}).get("verifier")
            s = spread.get(f"round-{i}", {})
            lines.append(_row([rollout, f"verifier as reward, round {i}", _f(m["model"]["verifier"]),
                               _delta(m, "verifier"), _bci(gain) if gain else "", _delta(m, "clap"),
                               _f(m["model"].get("kl")), _f(m["model"].get("mel_frechet"), 1),
                               _f(s["mean"]) if s else "", _f(s["best_of_n"]) if s else ""]))  # fmt: skip
        if "oracle_on_tuned_prompts" in r:  # the rounds' rollouts: each model on the prompts it was tuned on
            parts = [f"round-{k.split('-')[1]} model {_bci(d['vs_base'])} vs base"
                     + (f", {_bci(d['vs_previous'])} vs the round before" if d["vs_previous"] else "")
                     for k, d in r["oracle_on_tuned_prompts"].items()]  # fmt: skip
            notes.append(f"On the {r['settings']['rollout_prompts']} prompts it was tuned on (its rounds' rollouts: "
                         f"fresh seeds, CFG {r['settings']['rollout_cfg_scale']:g}), the verifier moves: "
                         + "; ".join(parts) + ".")  # fmt: skip
    return "\n".join(lines) + "\n" + "".join(f"\n{n}\n" for n in notes)


def oracle_diagnostics(name: str = "gpu_build_diagnostics.json") -> str:
    """The oracle's round-1 model (and its last round's, when the study ran rounds) against the base on other prompt
    sets and guidance scales than the study's evaluation (`oracle_diagnostics.py`: one `evaluate.py` report per
    set, kept to its paired rows)."""
    r = _load(RESULTS / "alignment" / name)
    models = r["sets"][0]["models"]
    last = re.search(r"round-(\d+)", models[-1])
    tag = f"round {last.group(1)}" if last else "round 1"
    head = ["prompts", "CFG", "base verifier", "Δ verifier, round 1"]
    head += ([f"Δ verifier, {tag}"] if len(models) > 2 else []) + [f"Δ CLAP, {tag}", f"Δ KL, {tag}"]
    lines = [_row(head), "|" + "---|" * len(head)]
    for d in r["sets"]:
        base, first, final = d["models"][0], d["models"][1], d["models"][-1]
        pair = d["paired_vs_first"]
        cells = [d["label"], f"{d['settings']['cfg_scale']:g}", _f(d["verifier"][base]), _bci(pair[first]["verifier"])]
        cells += [_bci(pair[final]["verifier"])] if len(d["models"]) > 2 else []
        lines.append(_row([*cells, _bci(pair[final]["clap"]), _bci(pair[final]["kl"])]))
    return "\n".join(lines) + "\n"


def _run_cells(m: dict, keys: tuple[str, ...]) -> list[str]:
    """A study run's paired differences from the base for `keys`, then its mel Fréchet distance."""
    return [*(_delta(m, k) for k in keys), _f(m["model"].get("mel_frechet"), 1)]


def clap_control(name: str = "results.json") -> str:
    """CLAP-tuning against its control (uniform weights, same rollout and steps) and the oracle, from one study."""
    r = _load(RESULTS / "alignment" / name)
    kept = _kept(r["settings"])
    lines = [_row(["run", "Δ verifier", "Δ CLAP", "Δ aesthetics", "Δ KL", "mel Fréchet"]), "|---|---|---|---|---|---|"]
    for label, n in (("uniform weights (the control)", "control"), (f"CLAP, {kept}", "clap-topk"),
                     (f"aesthetics, {kept}", "aesthetics-topk"), (f"verifier, {kept} (oracle)", "verifier-topk")):  # fmt: skip
        if n not in r["runs"]:  # a study run with only some of the questions
            continue
        lines.append(_row([label, *_run_cells(r["runs"][n], ("verifier", "clap", "aesthetics", "kl"))]))
    for label, key in (("**CLAP − control**, paired", "clap_minus_control"),
                       ("aesthetics − control, paired", "aesthetics_minus_control")):  # fmt: skip
        if key in r:
            lines.append(_row([label, *[_bci(r[key][k]) for k in ("verifier", "clap", "aesthetics", "kl")], ""]))
    runs, agree = r["runs"], r["agreement"]
    gain = {n: runs[n]["paired_vs_base"]["verifier"]["mean"] for n in ("control", "clap-topk", "verifier-topk")}
    recovered = _share(gain["clap-topk"] - gain["control"], gain["verifier-topk"] - gain["control"])
    predicted = _share(agree["clap"]["top1_gain"][0], agree["verifier"]["top1_gain"][0])
    lines.append(f"\nShare of the oracle's gain over the control that CLAP recovers: **{recovered}**; the agreement "
                 f"diagnostic predicted {predicted} (CLAP's top-1 gain {agree['clap']['top1_gain'][0]:+.3f} of the "
                 f"oracle's {agree['verifier']['top1_gain'][0]:+.3f} on the rollout).")  # fmt: skip
    return "\n".join(lines) + "\n"


def heldout_rollout(name: str = "heldout_rollout_guided.json") -> str:
    """A study rolled out on held-out-composition prompts (`--rollout_split heldout`) with the guided loss: each run
    on all evaluated prompts and on those sharing no attributes with a rolled-out prompt, CLAP against its control,
    and what the rollout offered."""
    r = _load(RESULTS / "alignment" / name)
    a, runs, disjoint = r["settings"], r["runs"], r["disjoint_from_rollout"]
    scale = f"guided, s = {a['loss_cfg_scale']:g}"
    lines = [_row(["run", "loss", "Δ verifier vs base", f"Δ verifier, {disjoint['prompts']} prompts sharing no "
                   "attributes", "Δ CLAP", "Δ aesthetics", "Δ KL", "mel Fréchet"]),
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    kept = _kept(a)
    for label, n, loss in (("uniform weights (the control)", "control", scale), (f"CLAP, {kept}", "clap-topk", scale),
                           (f"verifier, {kept} (oracle)", "verifier-topk", scale),
                           (f"verifier, {kept} (oracle)", "verifier-topk-paper-loss", "the paper's (v_c)"),
                           *((f"verifier, {kept} (oracle), round {n.rsplit('-', 1)[1]}", n, scale)
                             for n in runs if n.startswith("oracle-round-"))):  # fmt: skip
        if n in runs:
            m = runs[n]
            lines.append(_row([label, loss, _delta(m, "verifier"), _bci(disjoint["paired_vs_base"][n]["verifier"]),
                               *_run_cells(m, ("clap", "aesthetics", "kl"))]))  # fmt: skip
    if "clap_minus_control" in r:
        d = r["clap_minus_control"]
        lines.append(_row(["**CLAP − control**, paired", scale, _bci(d["verifier"]), "", _bci(d["clap"]),
                           _bci(d["aesthetics"]), _bci(d["kl"]), ""]))  # fmt: skip
    b, agree = r["base"], r["agreement"]
    lines.append(f"\nBase: verifier {b['verifier']:.3f}, KL {b['kl']:.3f}, mel Fréchet {b['mel_frechet']:.1f} on "
                 f"{a['eval_prompts']} held-out prompts from {a['first_prompt']} (CFG 3). Rollout: held-out prompts "
                 f"{a['rollout_first_prompt']}–{a['rollout_first_prompt'] + a['rollout_prompts'] - 1}, "
                 f"{a['num_generations']} clips each at CFG {a['rollout_cfg_scale']:g}; {kept} on it gains "
                 f"{agree['verifier']['top1_gain'][0]:+.3f} on the verifier picked by the verifier, "
                 f"{agree['clap']['top1_gain'][0]:+.3f} picked by CLAP. {disjoint['of'] - disjoint['prompts']} of "
                 f"the {disjoint['of']} evaluated prompts share their attributes with a rolled-out prompt.")  # fmt: skip
    if "oracle_round_gains" in r:  # online rounds: round k rolls the same prompts out again with round k - 1's model
        steps = "; ".join(f"round {k.split('-')[1]} − round {int(k.split('-')[1]) - 1} {_bci(d['verifier'])}"
                          for k, d in r["oracle_round_gains"].items())  # fmt: skip
        lines.append(f"Each oracle round against the one before, on the evaluated prompts: {steps}.")
    if "oracle_on_tuned_prompts" in r:
        moves = "; ".join(f"round-{k.split('-')[1]} model {_bci(d['vs_base'])}"
                          for k, d in r["oracle_on_tuned_prompts"].items())  # fmt: skip
        lines.append(f"On the rolled-out prompts themselves (the rounds' rollouts: fresh seeds, CFG "
                     f"{a['rollout_cfg_scale']:g}), against the base: {moves}.")  # fmt: skip
    return "\n".join(lines) + "\n"


def oracle_beta(name: str = "heldout_rollout_guided.json") -> str:
    """The study's round-1 oracle at each β of `--oracle_betas` (`oracle_beta`): on the evaluated prompts and on the
    prompts it was tuned on (fresh seeds), against the base and against the study's own β."""
    r = _load(RESULTS / "alignment" / name)
    ob, a = r["oracle_beta"], r["settings"]
    study = f"{ob['study_beta']:g}"
    lines = [_row(["β", "Δ verifier vs base", f"Δ verifier vs β = {study}", "tuned prompts: Δ verifier vs base",
                   f"tuned prompts: Δ verifier vs β = {study}", "Δ CLAP", "Δ KL", "mel Fréchet",
                   "flow loss", "reference term"]), "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for key, m in sorted(ob["runs"].items(), key=lambda kv: -kv[1]["beta"]):
        tuned, vs = m["on_tuned_prompts"], m["paired_vs_study_beta"]
        lines.append(_row([key, _delta(m, "verifier"), _bci(vs["verifier"]) if vs else "",
                           _bci(tuned["vs_base"]), _bci(tuned["vs_study_beta"]) if key != study else "",
                           *_run_cells(m, ("clap", "kl")), _f(m["train"]["loss/flow"], 3),
                           _f(m["train"]["loss/reference"], 3)]))  # fmt: skip
    spread = ob["rollout_best_of_n"]
    lines.append(f"\nEvery run: the oracle's round 1 ({_kept(a)} by the verifier, {a['max_steps']} steps, loss "
                 f"guided at s = {a['loss_cfg_scale']:g}) on the study's rollout, whose {_kept(a)} is worth "
                 f"{spread['best_of_n'] - spread['mean']:+.3f} on the verifier over its mean; evaluated on "
                 f"{a['eval_prompts']} held-out prompts from {a['first_prompt']}, and on the "
                 f"{ob['runs'][study]['on_tuned_prompts']['vs_base']['prompts']} tuned prompts rolled out again "
                 f"(the rollout's CFG, its seed + 1). Flow loss and reference term (unweighted by β): each run's "
                 f"mean of its last {ob['runs'][study]['train']['logs']} logs, one every "
                 f"{ob['runs'][study]['train']['logging_steps']} steps.")  # fmt: skip
    return "\n".join(lines) + "\n"


def oracle_variants(name: str = "oracle_variants.json") -> str:
    """`experiments/oracle_variants.py`: the oracle's round 1 at each fine-tune seed, the first seed's run continued to
    more steps, and DPO on each prompt's best and worst clip, on one rollout; each against the base and against the
    first seed's run."""
    r = _load(RESULTS / "alignment" / name)
    a, runs = r["settings"], r["runs"]
    longer = bool(a.get("continue_steps"))  # results made before --continue_steps lack the key
    steps = f", {a['max_steps']} steps" if longer else ""
    logged = next(iter(runs.values()))["train"]["last_logs"]
    window = logged["logs"] * logged["logging_steps"]  # the steps each run's logged means cover
    paired = len(runs) > 1  # a column against the first seed's run only where there is another run
    head = [
        "run",
        "pairs or clips trained on",
        "Δ verifier vs base",
        *([f"Δ verifier vs oracle, seed {a['seeds'][0]}{steps}"] if paired else []),
        "Δ CLAP",
        "Δ KL",
        "mel Fréchet",
        *([f"flow loss, last {window} steps"] if longer else []),
    ]
    lines = [_row(head), "|" + "---|" * len(head)]  # fmt: skip
    for key, m in runs.items():
        rows, logs = m["train"]["rows"], m["train"]["last_logs"]
        if key.startswith("oracle-seed"):
            rest, _, rate = key.removeprefix("oracle-seed").partition("-lr")
            seed, _, more = rest.partition("-steps")
            n = int(more or a["max_steps"])
            label = (f"oracle ({_kept(a)}), seed {seed}" + (f", {n} steps" if longer else "")
                     + (f", learning rate {rate}" if rate else ""))  # fmt: skip
            trained = f"{rows} clips" + (f", {n * a['batch_size'] / rows:.1f} passes" if longer else "")
        else:
            label, trained = f"DPO, best vs worst by the verifier, β = {key.removeprefix('dpo-beta')}", f"{rows} pairs"
        vs = m["paired_vs_first_seed"]
        against = [_bci(vs["verifier"]) if vs else ""] if paired else []
        flow = logs.get("loss/flow")  # None for a DPO run, which logs its winners' and losers' flow losses
        fit = [f"{flow:.3f}" if flow is not None else ""] if longer else []
        lines.append(_row([label, trained, _delta(m, "verifier"), *against, *_run_cells(m, ("clap", "kl")), *fit]))
    seeds = [runs[f"oracle-seed{s}"]["paired_vs_base"]["verifier"]["mean"] for s in a["seeds"]]
    spread = r["rollout_best_of_n"]
    every = (f"{a['max_steps']} steps unless the row says more (a longer run is the {a['max_steps']}-step run "
             "continued from its last checkpoint, at the same constant learning rate)" if longer
             else f"{a['max_steps']} steps")  # fmt: skip
    who = "" if a.get("model", "synthcaps") == "synthcaps" else f"`{a['model']}`, "  # the bundled masked model
    lines.append(f"\nBase: {who}verifier {r['base']['verifier']:.3f}, mel Fréchet {r['base']['mel_frechet']:.1f} on "
                 f"{a['eval_prompts']} held-out prompts from {a['first_prompt']} (CFG 3). Every run: {every}, "
                 f"loss guided at s = {a['loss_cfg_scale']:g}, learning rate {a['learning_rate']:g}"
                 + (" unless the row says another" if a.get("learning_rates") else "") + ", on one "
                 f"rollout of held-out prompts {a['rollout_first_prompt']}–{a['rollout_first_prompt'] + a['rollout_prompts'] - 1}"
                 f" × {a['num_generations']} at CFG {a['rollout_cfg_scale']:g}, whose {_kept(a)} by the verifier is "
                 f"worth {spread['best_of_n'] - spread['mean']:+.3f} over its mean; the oracle runs {a['batch_size']} "
                 f"clips per step (β = {a['beta']:g})" + (f", DPO {a['batch_size'] // 2} pairs (no β term; λ = 1)" if
                 a["dpo_betas"] else "") + "." + (f" Across the {len(seeds)} seeds the oracle's Δ verifier ranges "
                 f"{min(seeds):+.3f} to {max(seeds):+.3f}." if len(seeds) > 1 else ""))  # fmt: skip
    return "\n".join(lines) + "\n"


def oracle_rounds(name: str = "oracle_rounds.json") -> str:
    """`experiments/oracle_variants.py --rounds`: the oracle's online rounds, each against the base and the round
    before on the evaluated prompts, on the prompts it was tuned on, and what its rollout offered; with
    `--compare_rounds`, also against the same round of the compared run (reference the base)."""
    r = _load(RESULTS / "alignment" / name)
    a, rounds, compared = r["settings"], r["rounds"], r.get("rounds_vs_compared")
    head = ["round", "Δ verifier vs base", "Δ verifier vs previous round",
            *(["Δ verifier vs the same round, reference the base"] if compared else []),
            "tuned prompts: Δ verifier vs base", f"its rollout: {_kept(a)} over the mean", "Δ CLAP", "Δ KL",
            "mel Fréchet", "reference term, last log"]  # fmt: skip
    lines = [_row(head), "|" + "---|" * len(head)]
    for key, m in rounds.items():
        prev, tuned, roll = m["paired_vs_previous"], m["tuned_prompts_vs_base"], m["rollout"]
        same = [_bci(compared[key]["verifier"]) if key in compared else ""] if compared else []
        lines.append(_row([key.removeprefix("round-"), _delta(m, "verifier"), _bci(prev["verifier"]) if prev else "",
                           *same, _bci(tuned) if tuned else "", f"{roll['best_of_n'] - roll['mean']:+.3f}",
                           *_run_cells(m, ("clap", "kl")), _f(m["train"].get("last_log", {}).get("loss/reference"))]))  # fmt: skip
    reference = ("the reference being round k − 1's model" if a.get("round_reference") == "previous"
                 else "the reference staying the base")  # fmt: skip
    lines.append(f"\nBase: verifier {r['base']['verifier']:.3f}, mel Fréchet {r['base']['mel_frechet']:.1f} on "
                 f"{a['eval_prompts']} held-out prompts from {a['first_prompt']} (CFG 3). Round 1 is the oracle "
                 f"({_kept(a)} by the verifier, seed {a['seeds'][0]}) on one rollout of held-out prompts "
                 f"{a['rollout_first_prompt']}–{a['rollout_first_prompt'] + a['rollout_prompts'] - 1} × "
                 f"{a['num_generations']} at CFG {a['rollout_cfg_scale']:g}; round k rolls the same prompts out with "
                 f"round k − 1's model (the rollout's seed + k − 1) and tunes {a['max_steps']} steps from its weights, "
                 f"{reference}; loss guided at s = {a['loss_cfg_scale']:g}, learning rate "
                 f"{a['learning_rate']:g}, β = {a['beta']:g}. Tuned prompts: round k's model on round k + 1's rollout "
                 "against the base's rollout, each prompt's mean over its clips. Reference term: the regulariser "
                 "(unweighted by β) against that round's reference, the round's last log (a mean over 20 steps).")  # fmt: skip
    if compared:
        lines[-1] += (" The same round, reference the base: each round against that round of the run whose reference"
                      f" stays the base (`{a['compare_rounds']}`), paired by prompt across the two evaluations, whose "
                      f"base figures differ by at most {compared['base_max_abs_difference']:.3g} per prompt.")  # fmt: skip
    attributes = list(next(iter(rounds.values()))["paired_by_attribute"])
    lines += ["", _row(["round", *(f"Δ {x}" for x in attributes)]), "|" + "---|" * (len(attributes) + 1)]
    for key, m in rounds.items():
        lines.append(_row([key.removeprefix("round-"), *(_bci(m["paired_by_attribute"][x]) for x in attributes)]))
    lines.append("\nEach attribute's change against the base on the evaluated prompts, paired by prompt over the "
                 "prompts that name it.")  # fmt: skip
    return "\n".join(lines) + "\n"


def rollout_guidance(
    names: tuple[str, ...] = ("results.json", "rollout_cfg1.json", "rollout_cfg1_768.json"),
    minus_control: bool = False,
    by: str = "rollout",
) -> str:
    """The same study runs tuned on each study's rollout in `names` (under `results/alignment/`), all evaluated at
    CFG 3: by default a CFG 3 rollout, a CFG 1 one and a CFG 1 one of four times the prompts, on the same evaluated
    prompts. With `by="evaluation"` the studies differ in the prompts they evaluate instead, and each row is labelled
    by those. `minus_control` adds each study's paired CLAP − control row."""
    if by not in ("rollout", "evaluation"):
        raise ValueError(f"by={by!r}: 'rollout' or 'evaluation'.")
    studies = [_load(RESULTS / "alignment" / f) for f in names]
    if by == "rollout":
        label = {id(r): f"CFG {r['settings']['rollout_cfg_scale']:g}, {r['settings']['rollout_prompts']} prompts"
                 for r in studies}  # fmt: skip
    else:
        label = {id(r): f"{r['settings']['eval_prompts']} held-out prompts from {r['settings']['first_prompt']}"
                 for r in studies}  # fmt: skip
    bases = " / ".join(dict.fromkeys(f"{r['base']['mel_frechet']:.1f}" for r in studies))
    columns = ("tuned on", "rollout") if by == "rollout" else ("tuned on (one rollout)", "evaluated on")
    lines = [_row([*columns, "Δ verifier vs base", "Δ CLAP", "Δ KL", f"mel Fréchet (base {bases})"]),
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name, n in (("uniform weights (the control)", "control"), ("CLAP, best of 4", "clap-topk"),
                    ("verifier, best of 4 (oracle)", "verifier-topk")):  # fmt: skip
        for r in studies:
            lines.append(_row([name, label[id(r)], *_run_cells(r["runs"][n], ("verifier", "clap", "kl"))]))
    if minus_control:
        for r in studies:
            d = r["clap_minus_control"]
            lines.append(_row(["**CLAP − control**, paired", label[id(r)], *(_bci(d[k]) for k in ("verifier", "clap",
                               "kl")), ""]))  # fmt: skip
    if by != "rollout":  # one rollout: its best-of-4 gains once, and each evaluation's base
        base = " / ".join(f"{r['base']['verifier']:.3f}" for r in studies)
        gain = studies[0]["agreement"]
        lines.append(f"\nBase verifier: {base}. Best of 4 on the rollout itself (the agreement diagnostic's top-1 "
                     f"gain on the verifier): oracle {gain['verifier']['top1_gain'][0]:+.3f}, CLAP "
                     f"{gain['clap']['top1_gain'][0]:+.3f}.")  # fmt: skip
        return "\n".join(lines) + "\n"
    gains = [f"{label[id(r)]}: oracle {r['agreement']['verifier']['top1_gain'][0]:+.3f}, CLAP "
             f"{r['agreement']['clap']['top1_gain'][0]:+.3f}" for r in studies]  # fmt: skip
    lines.append("\nBest of 4 on the rollout itself (the agreement diagnostic's top-1 gain on the verifier): "
                 + "; ".join(gains) + ".")  # fmt: skip
    return "\n".join(lines) + "\n"


def fresh_prompts() -> str:
    """The study's runs on one rollout, on the prompts the study evaluated and on fresh ones; then its CLAP run
    against the demo's run of the same recipe, on the demo's prompts."""
    table = rollout_guidance(
        ("heldout_rollout_guided.json", "heldout_rollout_guided_fresh.json"), minus_control=True, by="evaluation"
    )
    ev, demo = (
        _load(RESULTS / "alignment" / "heldout_rollout_guided_on_demo_prompts.json"),
        _load(RESULTS / "demo" / "results.json"),
    )
    s = ev["settings"]
    study = ev["paired_vs_first"][s["models"][1]]  # evaluate pairs each model with the first, the base
    base = {"study": ev["models"][s["models"][0]], "demo": next(iter(demo["models"].values()))}
    return table + (
        f"On the demo's {s['max_prompts']} prompts from {s['first_prompt']}, the study's CLAP run − base: verifier "
        f"{_bci(study['verifier'])}, CLAP {_bci(study['clap'])} (base verifier {base['study']['verifier']:.3f}); the "
        f"demo's own run of the same recipe: verifier {_bci(demo['paired']['verifier'])}, CLAP "
        f"{_bci(demo['paired']['clap'])} (base {base['demo']['verifier']:.3f}).\n"
    )


def pair_seeds(name: str = "heldout_rollout_guided_seeds.json", oracle_seeds: str = "oracle_seeds_fresh.json") -> str:
    """The study's CLAP run and its control at several fine-tune seeds (`--pair_seeds`): each seed's differences, then
    each prompt's difference averaged over the seeds, with the spread of the seeds' means."""
    r = _load(RESULTS / "alignment" / name)
    st, runs, over = r["settings"], r["runs"], r["over_seeds"]
    seeds = [st["seed"], *st["pair_seeds"]]
    suffix = {st["seed"]: ""} | {seed: f"-seed{seed}" for seed in st["pair_seeds"]}
    lines = [_row(["fine-tune seed", "control − base, verifier", "CLAP − base, verifier", "CLAP − control, verifier",
                   "CLAP − control, CLAP"]), "|---|---|---|---|---|"]  # fmt: skip
    for seed in seeds:
        control, clap = runs[f"control{suffix[seed]}"], runs[f"clap-topk{suffix[seed]}"]
        diff = r["clap_minus_control_by_seed"][str(seed)]
        lines.append(_row([seed, _bci(control["paired_vs_base"]["verifier"]), _bci(clap["paired_vs_base"]["verifier"]),
                           _bci(diff["verifier"]), _bci(diff["clap"])]))  # fmt: skip
    averaged = [over[k] for k in ("control_minus_base", "clap_minus_base", "clap_minus_control")]
    lines.append(_row([f"each prompt averaged over the {len(seeds)} seeds", *[_bci(d["verifier"]) for d in averaged],
                       _bci(over["clap_minus_control"]["clap"])]))  # fmt: skip
    lines.append(_row(["spread of the seeds' means (std)", *[f"{d['verifier']['seed_std']:.3f}" for d in averaged],
                       f"{over['clap_minus_control']['clap']['seed_std']:.3f}"]))  # fmt: skip
    ev = _load(RESULTS / "alignment" / oracle_seeds)  # the oracle at further seeds, evaluated on the same prompts
    if (ev["settings"]["first_prompt"], ev["settings"]["max_prompts"]) != (st["first_prompt"], st["eval_prompts"]):
        raise ValueError(f"{oracle_seeds} evaluates other prompts than {name}.")
    oracle = {f"the study's, seed {st['seed']}": runs["verifier-topk"]["paired_vs_base"]["verifier"]}
    for folder in ev["settings"]["models"][1:]:  # each named by its run folder (`oracle_variants.py --seeds`)
        oracle[Path(folder).parent.name] = ev["paired_vs_first"][folder]["verifier"]
    oracle_mean = sum(d["mean"] for d in oracle.values()) / len(oracle)  # a mean of means, not paired
    return "\n".join(lines) + (
        f"\n\n{st['eval_prompts']} held-out prompts from {st['first_prompt']}, base verifier {r['base']['verifier']:.3f}; "
        f"the oracle − base on them: verifier "
        + ", ".join(f"{_bci(d)} ({run})" for run, d in oracle.items())
        + f"; mean of the {len(oracle)} seeds' means {oracle_mean:+.3f}.\n"
    )


def oracle_steps() -> str:
    """One oracle fine-tune at several checkpoints (`oracle_steps.json`), per verifier attribute, and what the kept
    clips of its rollout win on."""
    r = _load(RESULTS / "alignment" / "oracle_steps.json")
    ev, sel = r["evaluation"], r["rollout_selection"]
    attrs = [k for k in sel if k != "verifier"]
    base = r["base"]
    lines = [_row(["model", "Δ verifier vs base", "Δ CLAP", "Δ KL", "mel Fréchet", *attrs]),
             "|" + "---|" * (len(attrs) + 5)]  # fmt: skip
    by_attr = ev["verifier_by_attribute"]
    for label, name in [("base", base), *((f"oracle, step {s['step']}", s["pipeline"]) for s in r["steps"].values())]:
        d = ev["paired_vs_first"].get(name, {})
        cells = [_bci(d[k]) if k in d else "" for k in ("verifier", "clap", "kl")]
        lines.append(_row([label, *cells, _f(ev["models"][name].get("mel_frechet"), 1),
                           *[_f(by_attr[name].get(a, {}).get("accuracy")) for a in attrs]]))  # fmt: skip
    lines += ["", "The rollout it was tuned on (train prompts, 4 clips each):", "",
              _row(["clips", "verifier", *attrs]), "|" + "---|" * (len(attrs) + 2)]  # fmt: skip
    lines.append(_row(["all", _f(sel["verifier"]["all"]), *[_f(sel[a]["all"]) for a in attrs]]))
    lines.append(
        _row(["each prompt's best (kept)", _f(sel["verifier"]["best"]), *[_f(sel[a]["best"]) for a in attrs]])
    )
    lines.append(_row(["variance within prompts", _f(sel["verifier"]["within_prompt_share"], 2),
                       *[_f(sel[a]["within_prompt_share"], 2) for a in attrs]]))  # fmt: skip
    return "\n".join(lines) + "\n"


def real_clips(name: str = "real_clips.json") -> str:
    """The oracle's recipe on real renders of the rollout's prompts (`experiments/real_clip_control.py`, `name` under
    `results/alignment/`) next to the oracle itself."""
    r = _load(RESULTS / "alignment" / name)
    evs = r["evaluations"]
    names = list(evs["heldout"]["models"])
    seed = f", fine-tune seed {r['settings']['seed']}" if "seed" in r["settings"] else ""  # older records: seed 0
    label = {names[0]: "base", r["tuned"]: f"tuned on real renders (verifier {r['real_table']['verifier']:.2f}){seed}"}
    label |= dict(zip(r["settings"]["compare"], r["settings"]["compare_labels"]))
    attrs = list(evs["heldout"]["verifier_by_attribute"][names[0]])
    lines = [_row(["prompts", "model", "Δ verifier vs base", "Δ CLAP", "Δ KL", "mel Fréchet", *attrs]),
             "|" + "---|" * (len(attrs) + 6)]  # fmt: skip
    for title, key in (("held-out", "heldout"), ("tuned on (fresh seeds)", "trained_prompts")):
        ev = evs[key]
        for n in names:
            d = ev["paired_vs_first"].get(n, {})
            lines.append(_row([title, label[n], *[_bci(d[k]) if k in d else "" for k in ("verifier", "clap", "kl")],
                               _f(ev["models"][n].get("mel_frechet"), 1),
                               *[_f(ev["verifier_by_attribute"][n].get(a, {}).get("accuracy")) for a in attrs]]))  # fmt: skip
    paired = evs["heldout"].get("paired_by_attribute")  # records made before evaluate.py kept it have none
    if paired:
        lines.append("\nEach attribute's change on the held-out prompts, tuned − base, paired by prompt over the "
                     "prompts that name it:")  # fmt: skip
        for n, diffs in paired.items():
            cells = ", ".join(f"{a} {_bci(diffs[a])}" for a in attrs if a in diffs)
            lines.append(f"- {label[n]}: {cells}.")
    a = r["settings"]
    if "loss_cfg_scale" in a:  # results made before the flag existed used the paper's loss
        base = evs["heldout"]["models"][names[0]]["verifier"]
        lines.append(f"\nEvery tuned model: best of 4 by the verifier, {a['max_steps']} steps, loss guided at s = "
                     f"{a['loss_cfg_scale']:g}, on the rollout `{a['rollout']}` ({r['real_table']['rows']} rows); base "
                     f"verifier {base:.3f} on {a['eval_prompts']} held-out prompts from {a['first_prompt']} (CFG 3).")  # fmt: skip
    return "\n".join(lines) + "\n"


PAIRS_FOR_INTERVAL = 20  # below this many pairs (a handful of prompts) a bootstrap interval says nothing


def _pair_share(x: list, pairs: int) -> str:
    """A pairwise agreement share `[share, low, high]` (chance 0.5), bold when the interval excludes 0.5; the share
    alone when it rests on fewer than `PAIRS_FOR_INTERVAL` pairs."""
    if pairs < PAIRS_FOR_INTERVAL:
        return f"{x[0]:.2f}"
    cell = f"{x[0]:.2f} [{x[1]:.2f}, {x[2]:.2f}]"
    return f"**{cell}**" if x[1] > 0.5 or x[2] < 0.5 else cell


def reward_hearing(name: str = "reward_hearing.json") -> str:
    """`experiments/reward_hearing.py`: per verifier attribute, the pairs of one prompt's clips it tells apart and the
    share CLAP orders the same way, on each rollout; fade and loudness also split by whether the prompt sets them."""
    r = _load(RESULTS / "alignment" / name)["rollouts"]
    labels = list(r)
    head = ["the verifier's check"] + [c for label in labels for c in (f"pairs: {label}", "CLAP orders alike")]
    lines = [_row(head), "|---|" + "---|---|" * len(labels)]
    first = r[labels[0]]
    rows = []
    for part in first["by_part"]["clap"]:
        rows.append((part, "by_part", part))
        which = {f"{part}, set": f"{part}: the prompt sets it", f"{part}, default": f"{part}: left at the default"}
        rows += [(title, "by_default", key) for key, title in which.items() if key in first["by_default"]["clap"]]
    for title, field, key in rows:
        title = "all (a clip's share of checks)" if key == first["referee"] else title
        cells = []
        for label in labels:
            a = r[label][field]["clap"][key]
            cells += [a["pairs"], _pair_share(a["share"], a["pairs"])]
        lines.append(_row([title, *cells]))
    notes = []
    for label in labels:
        res, s = r[label], r[label]["settings"]
        agree, aes = res["rewards"]["clap"], res["by_part"]["aesthetics"][res["referee"]]
        notes.append(f"{label} ({res['model']['id']}, {s['max_prompts']} prompts × {s['num_generations']} at CFG "
                     f"{s['cfg_scale']:g}): CLAP's pick of each prompt's best clip gains {_bci(agree['top1_gain'])} "
                     f"of the verifier's {_bci(agree['oracle_gain'])}; aesthetics orders the verifier's pairs "
                     f"{_pair_share(aes['share'], aes['pairs'])}")  # fmt: skip
    notes.append(f"A tie in the reward counts half, so 0.5 is a reward deaf to the check; with fewer than "
                 f"{PAIRS_FOR_INTERVAL} pairs the share is shown without an interval")  # fmt: skip
    return "\n".join(lines) + "\n\n" + ".\n".join(notes) + ".\n"


def reward_hearing_picks(name: str = "reward_hearing.json") -> str:
    """`experiments/reward_hearing.py`'s `pick_by_part`: per verifier check, what each prompt's best clip by the
    verifier (the oracle's pick) and by CLAP gains over the prompt's mean, on each rollout."""
    r = _load(RESULTS / "alignment" / name)["rollouts"]
    labels = list(r)
    head = ["the verifier's check"] + [c for label in labels for c in (f"verifier's pick: {label}", "CLAP's pick")]
    lines = [_row(head), "|---|" + "---|---|" * len(labels)]
    for part in r[labels[0]]["pick_by_part"]["verifier"]:
        lines.append(_row([part, *[_bci(r[label]["pick_by_part"][who][part]) for label in labels
                                   for who in ("verifier", "clap")]]))  # fmt: skip
    return "\n".join(lines) + "\n"


def aesthetics(name: str = "results.json") -> str:
    """Degraded clips (read from the audio by the SynthCaps classifier) of the base, the control and the
    aesthetics-tuned model of one study, and the aesthetics run against its control where the study paired them."""
    r = _load(RESULTS / "alignment" / name)
    deg = r["degradation"]
    lines = [
        _row(["model", "degraded (any)", "hiss", "clipping", "muffled", "Δ verifier vs base", "Δ aesthetics vs base"]),
        "|---|---|---|---|---|---|---|",
    ]
    for label, n in (
        ("base", "base"),
        ("uniform weights (control)", "control"),
        (f"aesthetics, {_kept(r['settings'])}", "aesthetics-topk"),
    ):
        d = deg[n]
        deltas = [_delta(r["runs"][n], k) for k in ("verifier", "aesthetics")] if n in r["runs"] else ["", ""]
        lines.append(_row([label, _f(d["degraded"]), _f(d["hiss"]), _f(d["clipping"]), _f(d["muffled"]), *deltas]))
    paired = deg["aesthetics-topk"].get("degraded_minus_control")
    if paired:  # studies made before the readings were kept per prompt have no interval
        control = deg["control"].get("degraded_minus_base")
        lines.append(f"\nDegraded share, aesthetics-tuned − control, paired by prompt: {_bci(paired)}; − base: "
                     f"{_bci(deg['aesthetics-topk']['degraded_minus_base'])}"
                     + (f"; control − base: {_bci(control)}." if control else "."))  # fmt: skip
    if "aesthetics_minus_control" in r:
        d = r["aesthetics_minus_control"]
        lines.append(f"\nAesthetics-tuned − control, paired by prompt: verifier {_bci(d['verifier'])}, aesthetics "
                     f"{_bci(d['aesthetics'])}, KL {_bci(d['kl'])}; {deg['base']['clips']} clips per model.")  # fmt: skip
    return "\n".join(lines) + "\n"


def tau(name: str = "results.json") -> str:
    """The paper's raw `exp(τ·r)` weights on CLAP per τ, then the safer weightings, on the same axes: the reward,
    the referee and the other reward (paired with the base), KL, the Fréchet distances and how concentrated the
    weights were (their effective sample size as a share of the table)."""
    r = _load(RESULTS / "alignment" / name)
    order = ["control"] + sorted((n for n in r["runs"] if n.startswith("clap-exp-tau")), key=lambda n: float(n[12:]))
    safer = ("clap-standardized", "clap-self_normalized", "clap-clipped", "clap-topk", "clap-advantage")
    order += [n for s in safer for n in r["runs"] if n == s or n.startswith(f"{s}-tau")]  # at --safer_tau
    lines = [_row(["weighting (CLAP reward)", "Δ CLAP", "Δ verifier", "Δ aesthetics", "Δ KL", "mel Fréchet",
                   "FAD (CLAP)", "weights ESS"]), "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    b = r["base"]
    lines.append(_row(["base", "", "", "", f"{b['kl']:.3f}", _f(b.get("mel_frechet"), 1), _f(b.get("fad_clap")), ""]))
    for n in order:
        m = r["runs"][n]
        label = {"control": "exp(τ·r), τ = 0 (uniform)", "clap-topk": f"topk ({_kept(r['settings'])})"}.get(
            n, n.replace("clap-exp-tau", "exp(τ·r), τ = ").replace("-tau", ", τ = ").replace("clap-", "")
        )
        lines.append(_row([label, _delta(m, "clap"), _delta(m, "verifier"), _delta(m, "aesthetics"), _delta(m, "kl"),
                           _f(m["model"].get("mel_frechet"), 1), _f(m["model"].get("fad_clap")),
                           _f(m["train"]["weights_ess"] if m.get("train") else None)]))  # fmt: skip
    return "\n".join(lines) + "\n"


def best_of_n(name: str = "results.json") -> str:
    """The tuned models against best-of-N reranking of the base by the same reward (N× the inference compute, and
    matched compute with fewer decoding iterations per clip), paired by prompt where the study paired them."""
    r = _load(RESULTS / "alignment" / name)
    kept = _kept(r["settings"])
    rows = [("base, 1 sample", r["base"], 1, None)]
    for reward, run in (("CLAP", "clap-topk"), ("verifier", "verifier-topk")):
        if run in r["runs"]:
            rows.append((f"{reward}-tuned ({kept}), 1 sample", r["runs"][run]["model"], 1, None))
    for key in sorted(r["best_of_n"], key=lambda k: (k.split("-")[0], int(k.split("-")[1]), k.endswith("matched"))):
        reward, n = key.split("-")[:2]
        matched = key.endswith("matched")
        label = f"base, best of {n} by {reward}" + (
            f" at {max(8 // int(n), 1)} iterations each (matched compute)" if matched else ""
        )
        m = r["best_of_n"][key]
        rows.append((label, m, 1 if matched else int(n), m.get("tuned_minus_this")))
    lines = [_row(["model", "inference cost (× one 8-iteration sample)", "CLAP", "verifier", "aesthetics",
                   "mel Fréchet", "tuned on the same reward − this: verifier", "… : that reward"]),
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, m, cost, paired in rows:
        reward = "verifier" if " by verifier" in label else "clap"
        cells = [_bci(paired["verifier"]), _bci(paired[reward])] if paired else ["", ""]
        lines.append(_row([label, f"{cost}×", _f(m.get("clap")), _f(m.get("verifier")), _f(m.get("aesthetics")),
                           _f(m.get("mel_frechet"), 1), *cells]))  # fmt: skip
    return "\n".join(lines) + "\n"


def guardrail(name: str = "results.json") -> str:
    g = _load(RESULTS / "alignment" / name)["guardrail"]
    keys = [k for k in ("mel_frechet", "kl", "clap", "aesthetics") if k in g["history"][0]]
    lines = [_row(["step", *keys, "kept"]), "|" + "---|" * (len(keys) + 2)]
    for h in g["history"]:
        lines.append(
            _row([h["step"], *[_f(h[k]) for k in keys], "**kept**" if h["step"] == g["best"]["step"] else ""])
        )
    lines.append(f"\nRule: {g['rule']}.")
    if "kept_minus_last" in g:
        d = g["kept_minus_last"]
        lines.append(f"The kept checkpoint (step {g['best']['step']}) − the last (step {g['history'][-1]['step']}) on the "
                     f"study's evaluated prompts, paired: verifier {_bci(d['verifier'])}, CLAP {_bci(d['clap'])}, "
                     f"aesthetics {_bci(d['aesthetics'])}, KL {_bci(d['kl'])}.")  # fmt: skip
    return "\n".join(lines) + "\n"


def _preference(folder: str = "preference") -> dict:
    return _load(RESULTS / folder / "results.json")


def preference_agreement(folder: str = "preference") -> str:
    """The preference models' within-prompt agreement with the verifier, against CLAP's, from `results/<folder>`."""
    r = _preference(folder)
    agree, models, confirm = r["agreement"], r["reward_models"], r.get("agreement_confirm")
    clap = agree["clap"]["top1_gain"][0]
    head = ["reward", "labelled pairs", "held-out pair accuracy", "Spearman with the verifier",
            "top-1 gain on the verifier", "× CLAP's", "oracle's top-1 gain"]  # fmt: skip
    if confirm:
        head += ["top-1 gain, confirmation prompts", "× CLAP's there"]
    lines = [_row(head), "|" + "---|" * len(head)]
    rows = [("CLAP", "", None, "clap")] + [(f"preference model ({b} pairs)", b, models[b], f"preference-{b}")
                                          for b in sorted(models, key=int)]  # fmt: skip
    for label, pairs, info, key in rows:
        a = agree[key]
        acc = _f(info.get("heldout_pair_accuracy")) if info else ""
        cells = [label, pairs, acc, _bci(a["spearman"]), _bci(a["top1_gain"]),
                 _share(a["top1_gain"][0], clap) if key != "clap" else "1", _f(a["oracle_gain"][0])]  # fmt: skip
        if confirm:
            c = confirm[key]["top1_gain"]
            cells += [_bci(c), _share(c[0], confirm["clap"]["top1_gain"][0]) if key != "clap" else "1"]
        lines.append(_row(cells))
    s = r["settings"]
    lines.append(f"\nSimulated listener: the verifier with error rate {s['error_rate']:g}"
                 + (f", bias '{s['bias']}' at {s['bias_strength']:g}" if s["bias"] else "")
                 + f"; {r['labelled_pairs']} pairs labelled on {s['label_prompts']} train prompts × "
                 f"{s['num_generations']} clips; agreement on {s['fresh_prompts']} fresh held-out prompts"
                 + (f", confirmed on {s['confirm_prompts']} more from held-out prompt {s['confirm_first_prompt']}"
                    if confirm else "") + ".")  # fmt: skip
    return "\n".join(lines) + "\n"


def reward_recipes() -> str:
    """The recipe study (`reward_recipes/results.json`): per recipe and budget, each ratio to CLAP's top-1 gain as the
    median over seeds with its range, on each fresh set and on all of them pooled."""
    r = _load(RESULTS / "reward_recipes" / "results.json")
    s = r["settings"]
    sets = ["fresh", "confirm"] + (["large"] if s.get("large_prompts") else [])
    names = {"fresh": "× CLAP's top-1 gain, first set", "confirm": "confirmation set",
             "large": f"{s.get('large_prompts')}-prompt set"}  # fmt: skip
    head = ["recipe", "trainer flags", "labelled pairs", *(names[k] for k in sets), "all sets pooled",
            "pooled top-1 gain − 2× CLAP's, worst seed", "held-out pair accuracy", "steps kept"]  # fmt: skip
    lines = [_row(head), "|" + "---|" * len(head)]

    def spread(values: list) -> str:
        v = [x for x in values if x is not None]
        return f"{statistics.median(v):.2f} [{min(v):.2f}, {max(v):.2f}]" if v else "n/a"

    for recipe in s["recipes"]:
        flags = " ".join(f"`--{k} {str(v).lower() if isinstance(v, bool) else v}`"
                         for k, v in s["recipe_fields"][recipe].items()) or "defaults"  # fmt: skip
        for budget in s["budgets"]:
            cells = [c for c in r["cells"] if c["recipe"] == recipe and c["budget"] == budget]
            if not cells:
                continue
            steps = sorted(x for c in cells for x in c["steps"])
            lines.append(_row([recipe, flags, budget, *(spread([c[f"ratio_{k}"] for c in cells])
                                                        for k in (*sets, "pooled")),
                               _bci(min((c["pooled"]["top1_minus_2clap"] for c in cells), key=lambda d: d[1])),
                               _f(float(statistics.median([c["heldout_pair_accuracy"] for c in cells]))),
                               f"{steps[0]}–{steps[-1]} (median {int(statistics.median(steps))})"]))  # fmt: skip
    clap = r["clap"]
    lines.append(f"\nRatios: median [min, max] over seeds {', '.join(map(str, s['seeds']))}. The difference is paired by "
                 "prompt over every set, with its 95 % interval, for the seed whose lower bound is lowest. CLAP's top-1 gain is "
                 f"{clap['fresh']['top1_gain'][0]:+.3f} on the first set ({clap['fresh']['prompts']} prompts ranked), "
                 f"{clap['confirm']['top1_gain'][0]:+.3f} on the confirmation set ({clap['confirm']['prompts']})"
                 + (f", {clap['large']['top1_gain'][0]:+.3f} on the {s['large_prompts']}-prompt set from held-out "
                    f"prompt {s['large_first_prompt']} ({clap['large']['prompts']})" if "large" in clap else "")
                 + "; "
                 f"{r['labelled_pairs']} answers from `{s['loop_dir']}`.")  # fmt: skip
    return "\n".join(lines) + "\n"


def preference_finetune() -> str:
    r = _preference()
    lines = [_row(["run", "verifier", "Δ verifier vs base", "Δ verifier vs CLAP-tuned", "Δ CLAP vs base",
                   "Δ KL vs base", "mel Fréchet"]), "|---|---|---|---|---|---|---|"]  # fmt: skip
    b = r["base"]
    lines.append(_row(["base", _f(b["verifier"]), "", "", "", "", _f(b.get("mel_frechet"), 1)]))
    kept = _kept(r["settings"])
    dpo = [(f"DPO on the listener's pairs, β = {n.removeprefix('dpo-preferences-beta')}", n)
           for n in sorted((n for n in r["runs"] if n.startswith("dpo-preferences-beta")),
                           key=lambda n: -float(n.removeprefix("dpo-preferences-beta")))]  # fmt: skip
    if "dpo-preferences" in r["runs"]:  # results made with one β
        dpo.append((f"DPO on the listener's pairs, β = {r['settings']['dpo_beta']:g}", "dpo-preferences"))
    for label, n in ((f"CLAP, {kept}", "clap-topk"),
                     (f"preference model ({r['best_budget']} pairs), {kept}", "preference-topk"), *dpo):  # fmt: skip
        m = r["runs"][n]
        vs_clap = _bci(m["paired_vs_clap"]["verifier"]) if m.get("paired_vs_clap") else ""
        lines.append(_row([label, _f(m["model"]["verifier"]), _delta(m, "verifier"), vs_clap, _delta(m, "clap"),
                           _delta(m, "kl"), _f(m["model"].get("mel_frechet"), 1)]))  # fmt: skip
    return "\n".join(lines) + "\n"


def demo() -> str:
    r = _load(RESULTS / "demo" / "results.json")
    names = list(r["models"])
    cols = [("clap", "CLAP"), ("aesthetics", "aesthetics"), ("verifier", "verifier"), ("kl", "KL"),
            ("mel_frechet", "mel Fréchet"), ("fad_clap", "FAD")]  # fmt: skip
    lines = [_row(["", *[c for _, c in cols]]), "|" + "---|" * (len(cols) + 1)]
    for label, n in (("base (bundled)", names[0]), ("tuned", names[1])):
        lines.append(_row([label, *[_f(r["models"][n].get(k)) for k, _ in cols]]))
    lines.append(_row(["tuned − base, paired", *[_bci(r["paired"][k]) if k in r["paired"] else "" for k, _ in cols]]))
    s = r["settings"]
    rolled = (
        "training prompts"
        if s.get("rollout_split", "train") == "train"
        else (f"held-out prompts from {s['rollout_first_prompt']}")
    )
    loss = f", the guided loss (`--loss_cfg_scale {s['loss_cfg_scale']:g}`)" if s.get("loss_cfg_scale", 1) != 1 else ""
    lines.append(f"\n`make demo`: {s['max_prompts']} {rolled} × {s['num_generations']} clips at CFG {s['cfg_scale']:g}, "
                 f"reward `{s['reward']}`, `--weighting {s['weighting']}`, {s['max_steps']} steps{loss}; evaluated on "
                 f"{s['eval_prompts']} fresh held-out prompts from {s['first_prompt']}; "
                 f"{sum(r['seconds'].values()) / 60:.0f} min on this 2-core CPU.")  # fmt: skip
    a = r["agreement"][s["reward"]]
    lines.append(f"Before fine-tuning, on the rollout: the reward's within-prompt Spearman with the verifier "
                 f"{_bci(a['spearman'])}; picking each prompt's best clip by the reward gains {_bci(a['top1_gain'])} "
                 f"verifier accuracy, of the {_bci(a['oracle_gain'])} the verifier itself would.")  # fmt: skip
    return "\n".join(lines) + "\n"


def synthmusic_verifier() -> str:
    result = _load(RESULTS / "synthmusic" / "results.json")
    r, vae = result["splits"], result["settings"]["vae"]
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from base_model.data import PROCEDURAL

    vae = PROCEDURAL[vae].name if vae in PROCEDURAL else f"`{vae}`"  # bundled names read as corpora
    attrs = ["verifier", "tempo", "rhythm", "key", "mode", "timbre", "dynamics", "parts"]
    lines = [_row(["split", "audio", *attrs]), "|" + "---|" * (len(attrs) + 2)]
    for split, row in r.items():
        for name, key in (("real", "real_audio"), ("real → mel → vocoder", "real_mel_vocoder"),
                          (f"real → mel → {vae} VAE → vocoder", "real_mel_vae_vocoder"),
                          ("real, another clip's attributes (chance)", "shuffled_attributes")):  # fmt: skip
            if key in row:
                lines.append(_row([f"{split} ({row['clips']} clips)", name, *[_f(row[key].get(a)) for a in attrs]]))
    return "\n".join(lines) + "\n"


def synthmusic_generator() -> str:
    """The bundled SynthMusic pair's measurement (`synthmusic/report.json`), then each model per verifier attribute."""
    r = _load(RESULTS / "synthmusic" / "report.json")
    m, c, ceiling = r["masked_8_iterations"], r["cfm_25_steps"], r["decoder_ceiling"]["real_mel_vae_vocoder"]
    attrs = [k for k in ceiling if k != "verifier"]
    lines = ["", _row(["held-out compositions", *attrs]), "|" + "---|" * (len(attrs) + 1)]
    for label, scores in (("decoder ceiling", ceiling), ("MaskAudioFlow", m), ("CFM baseline", c)):
        lines.append(_row([label, *(_f(scores.get(a)) for a in attrs)]))
    return generator("synthmusic") + "\n".join(lines) + "\n"


MUSIC_RUNS = {"control": "uniform weights (the control)", "clap-topk": "CLAP, {kept}",
              "aesthetics-topk": "aesthetics, {kept}", "verifier-topk": "music verifier, {kept} (oracle)"}  # fmt: skip


def music_alignment() -> str:
    """The alignment loop on SynthMusic (`synthmusic/music_alignment.json`): each run against the base and the
    control, per verifier attribute, and the agreement diagnostic's prediction."""
    r = _load(RESULTS / "synthmusic" / "music_alignment.json")
    ev, runs = r["evaluation"], r["runs"]
    base = r["settings"]["model"]
    attrs = list(ev["verifier_by_attribute"][base])
    keys = ("verifier", "clap", "aesthetics", "kl")
    label = {n: v.format(kept=_kept(r["settings"])) for n, v in MUSIC_RUNS.items()}  # its runs keep top_k 0.25
    lines = [_row(["model", "verifier", *(f"Δ {k} vs base" for k in keys), "mel Fréchet", *attrs]),
             "|" + "---|" * (len(attrs) + 7)]  # fmt: skip
    for name, folder in (("base", base), *((label[n], runs[n]) for n in MUSIC_RUNS if n in runs)):
        d = ev["paired_vs_first"].get(folder, {})
        m = ev["models"][folder]
        lines.append(_row([name, _f(m["verifier"]), *(_bci(d[k]) if k in d else "" for k in keys),
                           _f(m.get("mel_frechet"), 1),
                           *(_f(ev["verifier_by_attribute"][folder].get(a, {}).get("accuracy")) for a in attrs)]))  # fmt: skip
    for name, diff in r["versus_control"].items():
        lines.append(_row([f"{label[name]} − control, paired", "", *(_bci(diff[k]) for k in keys), "",
                           *[""] * len(attrs)]))  # fmt: skip
    agree = r["agreement"]
    gains = ", ".join(f"{n} {agree[n]['top1_gain'][0]:+.3f}" for n in ("clap", "aesthetics", "verifier") if n in agree)
    lines.append(f"\n{ev['settings']['max_prompts']} held-out-composition prompts from {ev['settings']['first_prompt']},"
                 f" one clip each, CFG {ev['settings']['cfg_scale']:g}; rollout {r['settings']['rollout_prompts']} train "
                 f"prompts × {r['settings']['num_generations']} at CFG {r['settings']['rollout_cfg_scale']:g}, "
                 f"{r['settings']['max_steps']} steps per run. Best of {r['settings']['num_generations']} on the rollout "
                 f"by each reward gains, on the music verifier (the agreement diagnostic's top-1 gain): {gains}.")  # fmt: skip
    return "\n".join(lines) + "\n"


RENDERERS: dict[str, Callable[[], str]] = {
    "oracle": oracle,
    "clap-control": clap_control,
    "oracle-gpu-build": lambda: oracle(("gpu_build_cfg1.json",)),
    "clap-control-gpu-build": lambda: clap_control("gpu_build_cfg1.json"),
    "oracle-diagnostics-gpu-build": oracle_diagnostics,
    "rollout-guidance": rollout_guidance,
    "rollout-size-heldout": lambda: rollout_guidance(
        ("heldout_rollout_guided.json", "heldout_rollout_guided_768.json"), minus_control=True
    ),
    "fresh-prompts-heldout": fresh_prompts,
    "pair-seeds-heldout": pair_seeds,
    "heldout-rollout": heldout_rollout,
    "oracle-beta": oracle_beta,
    "oracle-variants": oracle_variants,
    "oracle-variants-n8": lambda: oracle_variants("oracle_variants_n8.json"),
    "oracle-steps-768": lambda: oracle_variants("oracle_steps_768.json"),
    "oracle-learning-rates": lambda: oracle_variants("oracle_learning_rates.json"),
    "oracle-cfm": lambda: oracle_variants("oracle_cfm.json"),
    "oracle-rounds": oracle_rounds,
    "oracle-rounds-previous": lambda: oracle_rounds("oracle_rounds_previous.json"),
    "aesthetics-heldout": lambda: aesthetics("heldout_rollout_items.json"),
    "aesthetics-heldout-768": lambda: aesthetics("heldout_rollout_guided_768.json"),
    "aesthetics-fresh": lambda: aesthetics("heldout_rollout_aesthetics_fresh.json"),
    "best-of-n-heldout": lambda: best_of_n("heldout_rollout_items.json"),
    "guardrail-heldout": lambda: guardrail("heldout_rollout_items.json"),
    "tau-heldout": lambda: tau("heldout_rollout_tau.json"),
    "tau-heldout-guided": lambda: tau("heldout_rollout_tau_guided.json"),
    "tau-heldout-guided-normalized": lambda: tau("heldout_rollout_tau_guided_normalized.json"),
    "tau-heldout-guided-safer": lambda: tau("heldout_rollout_tau_guided_safer.json"),
    "oracle-steps": oracle_steps,
    "real-clips": real_clips,
    "real-clips-heldout": lambda: real_clips("real_clips_heldout.json"),
    "real-clips-heldout-seed1": lambda: real_clips("real_clips_heldout_seed1.json"),
    "reward-hearing": reward_hearing,
    "reward-hearing-picks": reward_hearing_picks,
    "aesthetics": aesthetics,
    "tau": tau,
    "best-of-n": best_of_n,
    "guardrail": guardrail,
    "demo": demo,
    "preference-agreement": preference_agreement,
    "preference-finetune": preference_finetune,
    "preference-agreement-label512": lambda: preference_agreement("preference_label512"),
    "reward-recipes": reward_recipes,
    "decoder-ceiling": decoder_ceiling,
    "generator": generator,
    "build-progress": build_progress,
    "generator-builds": generator_builds,
    "generator-seeds": generator_seeds,
    "decoding-scaling": decoding_scaling,
    "masking-ablation": masking_ablation,
    "continued-masked": continued_pretraining,
    "head-ablation": head_ablation,
    "sampler-temperature": sampler_sweep,
    "sampler-cfg-scale": lambda: sampler_sweep("cfg_scale"),
    "bench-headline": bench_headline,
    "vocoder": vocoder,
    "vocoder-sweep": vocoder_sweep,
    "generation-scaling": generation_scaling,
    "clap-level-probe": clap_level_probe,
    "synthmusic-verifier": synthmusic_verifier,
    "synthmusic-generator": synthmusic_generator,
    "music-alignment": music_alignment,
}


# ---------------------------------------------------------------------------------------------------- main
def render(text: str) -> str:
    """`text` with every table block re-rendered from its JSON."""

    def replace(m: re.Match) -> str:
        name = m.group("name")
        if name not in RENDERERS:
            raise KeyError(f"no renderer for table {name!r}; add one to experiments/render_results.py.")
        return m.group(1) + RENDERERS[name]() + m.group(4)

    return TABLE.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Exit 1 if a document differs from its rendering.")
    args = parser.parse_args(argv)
    stale = []
    for doc in DOCUMENTS:
        if not doc.is_file():
            continue
        text = doc.read_text()
        new = render(text)
        if new != text:
            stale.append(doc.relative_to(ROOT))
            if not args.check:
                doc.write_text(new)
    if args.check and stale:
        print(
            f"stale tables in {', '.join(map(str, stale))}: run python experiments/render_results.py", file=sys.stderr
        )
        return 1
    print("rewrote " + ", ".join(map(str, stale)) if stale else "every table matches its JSON")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
