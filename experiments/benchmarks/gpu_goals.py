"""The GPU goals of the decoding work, measured in one run on a lent accelerator.

    python experiments/benchmarks/gpu_goals.py                     # on a GPU: base preset, 10 s clips, bf16
    python experiments/benchmarks/gpu_goals.py --preset tiny --seconds 1 --batch_sizes 1 2 --compile false \
        --rollout_prompts 4 --output /tmp/gpu_goals.json           # the same path on CPU shapes (the test's)

What it measures, each as the median of `--repeats` timed runs after warm-ups, written to `--output` after every row
so a run cut off when the lent time ends still leaves what it measured (`complete` is true only at the end):

- `generation`: the whole generation (text encoding, Algorithm 1 with CFG, VAE decode, vocoder) of a `--preset`
  MaskAudioFlow with the bundled pipeline's text encoder, VAE and vocoder, at each batch size: seconds per batch and
  clips per second; eager, and with the backbone and the head's velocity under `torch.compile(mode=
  "reduce-overhead")` (CUDA graphs over the static-shape sampler) when `--compile true`. A variant that fails records
  its error and the run goes on. The model's weights are random (no paper-size checkpoint is offline); cost does
  not depend on them.
- `rollout`: an end-to-end rollout of the bundled pipeline (generate, decode, vocode, score with CLAP, aesthetics and
  the verifier, write) and the share of its time in each stage, from the rollout's own `summary.json`.

Targets (issue 19): batch 1 whole generation <= 0.050 s; batch 64 >= 300 clips/s; no CPU stage of the rollout above
0.20 of its time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from experiments.benchmarks.sampler import fill_zero_init, timed  # noqa: E402  (needs ROOT on the path)


@dataclass
class GpuGoalsArguments:
    preset: str = field(default="base", metadata={"help": "MaskAudioFlow size preset (tiny, small, base)."})
    seconds: float = field(default=10.0, metadata={"help": "Clip length."})
    batch_sizes: list[int] = field(default_factory=lambda: [1, 64], metadata={"help": "Batch sizes timed."})
    dtype: str = field(default="bfloat16", metadata={"help": "The flow model's dtype: bfloat16 or float32."})
    compile: str = field(default="auto", metadata={"help": "Also time torch.compile: auto (on CUDA), true, false."})
    num_iterations: int = field(default=8, metadata={"help": "Decoding iterations."})
    num_steps: int = field(default=25, metadata={"help": "ODE steps per iteration."})
    cfg_scale: float = field(default=3.0, metadata={"help": "Classifier-free guidance."})
    repeats: int = field(default=5, metadata={"help": "Timed runs per setting (median)."})
    rollout_prompts: int = field(default=256, metadata={"help": "Prompts of the end-to-end rollout (0 skips it)."})
    rollout_batch_size: int = field(default=64, metadata={"help": "The rollout's batch size."})
    output: str = field(default="", metadata={"help": "JSON results (default: results/gpu_goals-<device>.json)."})

    def __post_init__(self):
        if self.compile not in ("auto", "true", "false"):
            raise ValueError(f"--compile must be auto, true or false, got {self.compile!r}.")
        if self.dtype not in ("bfloat16", "float32"):
            raise ValueError(f"--dtype must be bfloat16 or float32, got {self.dtype!r}.")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"--batch_sizes must be positive integers, got {self.batch_sizes}.")


def build_model(preset: str, latent_channels: int, text_hidden_size: int, device, dtype):
    """A `preset` MaskAudioFlow fitting the bundled VAE and text encoder, random weights (heads made non-zero)."""
    from base_model import MaskAudioFlow, MaskAudioFlowConfig

    torch.manual_seed(0)
    cfg = MaskAudioFlowConfig.from_preset(preset, latent_channels=latent_channels, text_hidden_size=text_hidden_size)
    return fill_zero_init(MaskAudioFlow(cfg).eval().requires_grad_(False)).to(device, dtype)


def compile_model(model) -> None:
    """The backbone and the head's velocity under `torch.compile(mode="reduce-overhead")`, in place."""
    model.backbone = torch.compile(model.backbone, mode="reduce-overhead", dynamic=False)
    object.__setattr__(model, "velocity", torch.compile(model.velocity, mode="reduce-overhead", dynamic=False))


def generation_fn(pipe, model, batch: int, a: GpuGoalsArguments):
    """One whole generation of `batch` clips: text encoding, the sampler, VAE decode, vocoder."""
    from base_model.data.synthcaps import example
    from base_model.sampling import sample

    prompts = [example(i, "heldout")["caption"] for i in range(batch)]
    device = next(model.parameters()).device
    frames = pipe.num_frames(a.seconds)

    def run():
        with torch.inference_mode():
            enc = pipe.text_encoder(prompts)
            gens = [torch.Generator(device).manual_seed(i) for i in range(batch)]
            out = sample(model, enc.hidden_states.to(device), enc.padding_mask.to(device), frames,
                         num_iterations=a.num_iterations, num_steps=a.num_steps, cfg_scale=a.cfg_scale,
                         generator=gens)  # fmt: skip
            return pipe.vocode(pipe.decode_latents(out.latents.float()))

    return run


def main(a: GpuGoalsArguments) -> dict:
    from base_model import MaskAudioFlowPipeline
    from base_model.files import atomic_write_text

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev_name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    tag = "cuda" if device.type == "cuda" else "cpu"
    out = Path(a.output or ROOT / "experiments/benchmarks/results" / f"gpu_goals-{a.preset}-{tag}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict = {"generation": {}, "rollout": None}
    start = time.perf_counter()

    def save(complete: bool) -> dict:
        report = {"settings": asdict(a), "device": dev_name, "torch": torch.__version__, "complete": complete,
                  "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]), "results": results,
                  "wall_seconds": round(time.perf_counter() - start, 1),
                  "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
        atomic_write_text(out, json.dumps(report, indent=2, default=str))
        return report

    pipe = MaskAudioFlowPipeline.from_pretrained("synthcaps", device=str(device))
    model = build_model(a.preset, pipe.vae.latent_channels, pipe.model.config.text_hidden_size, device,
                        getattr(torch, a.dtype))  # fmt: skip
    results["parameters"] = sum(p.numel() for p in model.parameters())
    variants = ["eager"] + (["compiled"] if a.compile == "true" or (a.compile == "auto" and tag == "cuda") else [])
    for variant in variants:
        if variant == "compiled":
            try:
                compile_model(model)
            except Exception as err:  # an unsupported torch or platform: recorded, the rest still runs
                results["generation"]["compiled"] = {"error": f"{type(err).__name__}: {err}"[:500]}
                save(False)
                continue
        rows = results["generation"].setdefault(variant, {})
        for batch in a.batch_sizes:
            try:
                s = timed(generation_fn(pipe, model, batch, a), a.repeats, device, warmups=2)  # CUDA graphs record
                rows[str(batch)] = {"seconds_per_batch": round(s, 5), "clips_per_second": round(batch / s, 2)}
            except Exception as err:
                rows[str(batch)] = {"error": f"{type(err).__name__}: {err}"[:500]}
            print(f"{variant} batch {batch}: {rows[str(batch)]}", flush=True)
            save(False)
    del model
    if a.rollout_prompts:
        tmp = Path(tempfile.mkdtemp(prefix="rewardflow-gpu-rollout-"))
        cmd = [sys.executable, "rewardflow/rollout.py", "--output_dir", str(tmp), "--max_prompts",
               str(a.rollout_prompts), "--num_generations", "1", "--batch_size", str(a.rollout_batch_size)]  # fmt: skip
        print("$ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        summary = json.loads((tmp / "summary.json").read_text())
        total = sum(summary["seconds_main_process"].values())
        results["rollout"] = {
            "clips": summary["rows"],
            "clips_per_second": round(summary["rows"] / total, 2),
            "stage_share": {k: round(v / total, 4) for k, v in summary["seconds_main_process"].items()},
        }
    report = save(True)
    print(json.dumps(report["results"], indent=2))
    return report


def make_parser():
    from transformers import HfArgumentParser

    return HfArgumentParser(GpuGoalsArguments)


if __name__ == "__main__":
    main(*make_parser().parse_args_into_dataclasses())
