"""`make bench`: the four benchmarks on this machine, ratios printed, `results/latest.json` written.

    python experiments/benchmarks/run_all.py            # under 10 minutes on a 2-core CPU

1. FLOP accounting per preset and clip length (counted on the real modules by `torch.utils.flop_counter`):
   backbone passes, head steps × frames actually integrated, CFG, VAE decode; Griffin-Lim is FFT work, timed only.
2. Sampler: `sampler.py` (library vs plain Algorithm 1, masked vs CFM, fraction of the matmul peak).
3. Fine-tuning step: `finetune_step.py` (plain flow matching vs reward-weighted + reference vs LoRA + reference,
   plus LoRA without a reference for the memory overhead of the disabled-adapter reference).
4. Rollout: a small real rollout of the bundled pipeline, clips/s end to end and each stage's share.
5. Vocoder: `vocoder.py` (the torch Griffin-Lim against librosa's, side by side, on real SynthCaps clips).
6. Generation: `generation.py` (the bundled pipeline's cost by clip length and batch size, per stage).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "experiments" / "benchmarks" / "results"


@dataclass
class BenchAllArguments:
    preset: str = field(default="small", metadata={"help": "Preset of the sampler and fine-tuning benchmarks."})
    rollout_prompts: int = field(default=16, metadata={"help": "Prompts of the rollout benchmark (one clip each)."})
    repeats: int = field(default=2, metadata={"help": "Timed runs per sampler setting (median)."})
    main_seconds: float = field(default=2.5, metadata={"help": "Clip length of the sampler's batch sweep."})


def flop_table(presets=("tiny", "small", "base"), seconds=(2.5, 5.0, 10.0), iterations=8, steps=25) -> list[dict]:
    """FLOPs of one generation (batch 1, CFG 3) by part, counted on one real call of each part and scaled by how
    often the sampler calls it: 8 backbone passes and, for the per-token head, each frame integrated once."""
    from torch.utils.flop_counter import FlopCounterMode

    from base_model import MaskAudioFlow, MaskAudioFlowConfig, MelVAE, MelVAEConfig

    def flops(fn):
        with FlopCounterMode(display=False) as c, torch.inference_mode():
            fn()
        return c.get_total_flops()

    vae = MelVAE(MelVAEConfig()).eval().requires_grad_(False)
    rows = []
    for preset in presets:
        model = MaskAudioFlow(MaskAudioFlowConfig.from_preset(preset)).eval().requires_grad_(False)
        cfm = MaskAudioFlow(MaskAudioFlowConfig.from_preset(preset, flow_type="cfm")).eval().requires_grad_(False)
        D, C = model.config.text_hidden_size, model.config.latent_channels
        for s in seconds:
            T = int(round(s * 31.25))
            text = torch.randn(2, 16, D)  # CFG: conditional and unconditional halves in one batch
            ctx, mask = model.encode_context(text)
            x, infill = torch.zeros(2, T, C), torch.ones(2, T, dtype=torch.bool)
            backbone = flops(lambda: model.backbone(x, ctx, mask, infill_mask=infill))  # noqa: B023 - called at once
            z = torch.zeros(2, T, model.config.hidden_size)
            # one head step on all T frames of both halves, as the plain algorithm calls it (t and z per frame)
            head_all = flops(lambda: model.velocity(x, torch.ones(2, T), z))  # noqa: B023 - called at once
            # the library sampler projects z once per frame and embeds each step's t once
            cond = model.head_condition(z)
            head_cond = flops(lambda: model.head_condition(z))  # noqa: B023 - called at once
            head_step = flops(lambda: model.velocity(x, torch.ones(()), cond=cond))  # noqa: B023 - called at once
            cfm_step = flops(lambda: cfm.velocity(x, torch.ones(2), cfm.backbone(x, ctx, mask, t=torch.ones(2))))  # noqa: B023 - called at once
            mel = torch.zeros(1, 80, 2 * T)
            # encode + decode: the encoder is small, so this is an upper bound on decoding
            vae_decode = flops(lambda: vae.decode(vae.encode(mel)))  # noqa: B023 - called at once
            masked = iterations * backbone + head_cond + steps * head_step  # revealed-only: each frame once
            naive = iterations * backbone + iterations * steps * head_all
            rows.append(
                {
                    "preset": preset,
                    "seconds": s,
                    "frames": T,
                    "backbone_pass_gflop": backbone / 1e9,
                    "masked_gflop": masked / 1e9,
                    "naive_all_frames_gflop": naive / 1e9,
                    "cfm_25_steps_gflop": steps * cfm_step / 1e9,
                    "masked_over_cfm": masked / (steps * cfm_step),
                    "vae_gflop": vae_decode / 1e9,
                }
            )
    return rows


def _run(cmd: list[str]) -> None:
    print("\n$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The processor's model name (`cpuinfo`), so that runs on different machines are told apart: ratios such as the
    sampler's over plain Algorithm 1 differ between processors. Without that file, what `platform` knows."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(a: BenchAllArguments) -> dict:
    start = time.perf_counter()
    py = sys.executable
    from base_model.files import atomic_write_text

    flops = flop_table()
    print("| preset | clip s | backbone pass GFLOP | masked (8 it.) GFLOP | naive Alg. 1 GFLOP | CFM 25 steps GFLOP |"
          " masked / CFM | VAE GFLOP |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    for r in flops:
        print(
            f"| {r['preset']} | {r['seconds']} | {r['backbone_pass_gflop']:.2f} | {r['masked_gflop']:.1f} | "
            f"{r['naive_all_frames_gflop']:.1f} | {r['cfm_25_steps_gflop']:.1f} | {r['masked_over_cfm']:.2f} | "
            f"{r['vae_gflop']:.2f} |"
        )
    tmp = Path(tempfile.mkdtemp(prefix="rewardflow-bench-"))
    _run([py, "experiments/benchmarks/sampler.py", "--preset", a.preset, "--repeats", str(a.repeats),
          "--main_seconds", str(a.main_seconds), "--output", str(tmp / "sampler.json")])  # fmt: skip
    sampler = json.loads((tmp / "sampler.json").read_text())
    _run([py, "experiments/benchmarks/finetune_step.py", "--preset", a.preset, "--latent_frames", "156",
          "--steps", "8", "--warmup", "3", "--output", str(tmp / "finetune.json")])  # fmt: skip
    finetune = json.loads((tmp / "finetune.json").read_text())["results"]
    _run([py, "rewardflow/rollout.py", "--output_dir", str(tmp / "rollout"), "--max_prompts", str(a.rollout_prompts),
          "--num_generations", "1"])  # fmt: skip
    rollout = json.loads((tmp / "rollout" / "summary.json").read_text())
    # the vocoder's full record (with its iteration sweep) is committed beside latest.json: its tables render from it
    _run([py, "experiments/benchmarks/vocoder.py", "--output", str(RESULTS / "vocoder.json")])
    vocoder = json.loads((RESULTS / "vocoder.json").read_text())
    _run([py, "experiments/benchmarks/generation.py", "--repeats", str(a.repeats), "--output", str(tmp / "gen.json")])
    generation = json.loads((tmp / "gen.json").read_text())
    total = sum(rollout["seconds_main_process"].values())
    latest = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "device": sampler["device"],
        },  # fmt: skip
        "settings": {**vars(a), "sampler": sampler["settings"]},
        "flops": flops,
        "sampler": {
            **sampler["summary"],
            "by_batch": sampler["results"]["batch"],
            "by_length": sampler["results"]["length"],
        },
        "finetune": {
            "reward_step_over_cfm_step": finetune["reward_ref"]["median_step_s"] / finetune["flow"]["median_step_s"],
            "lora_ref_step_over_cfm_step": finetune["lora_ref"]["median_step_s"] / finetune["flow"]["median_step_s"],
            "lora_ref_memory_overhead": finetune["lora_ref"]["peak_memory_gib"] / finetune["lora"]["peak_memory_gib"]
            - 1,
            "by_mode": finetune,
        },
        "vocoder": {
            k: vocoder[k]
            for k in (
                "speedup_vs_librosa",
                "default_speedup_vs_librosa",
                "seconds_per_batch",
                "spectral_convergence",
                "verifier_round_trip",
                "batch_independence_max_relative_diff",
                "settings",
            )
        },
        "generation": generation,
        "rollout": {
            "clips_per_second": rollout["rows"] / total,
            "stage_share": {k: v / total for k, v in rollout["seconds_main_process"].items()},
            "write_fraction": rollout["write_fraction"],
        },
        "wall_seconds": round(time.perf_counter() - start, 1),
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "latest.json"
    atomic_write_text(out, json.dumps(latest, indent=2, default=str))
    s, f, r = latest["sampler"], latest["finetune"], latest["rollout"]
    print(f"\n== {latest['machine']['device']}, {a.preset} preset ==")
    print(f"sampler.speedup_vs_naive      {s['speedup_vs_naive']:.2f}x   (target >= 2)")
    print(
        f"sampler.masked_over_cfm       {s['masked_over_cfm']:.2f}    (target <= 0.5; FLOP ratio {s['masked_over_cfm_flops']:.2f})"
    )
    print(f"sampler.fraction_of_peak      {s['fraction_of_peak']:.3f}   (target >= 0.5)")
    print(f"finetune.reward_step_over_cfm_step {f['reward_step_over_cfm_step']:.2f} (target <= 1.4)")
    print(f"finetune.lora_ref_memory_overhead  {f['lora_ref_memory_overhead']:+.3f} (target <= +0.05)")
    print(f"rollout.write_fraction        {r['write_fraction']:.4f} (target <= 0.05)")
    print(f"rollout.stage_share.vocode    {r['stage_share']['vocode']:.3f}  (target <= 0.20)")
    print(f"vocoder.speedup_vs_librosa    {latest['vocoder']['speedup_vs_librosa']:.1f}x  (target >= 10)")
    print(f"wrote {out} in {latest['wall_seconds']} s")
    return latest


def make_parser():
    from transformers import HfArgumentParser

    return HfArgumentParser(BenchAllArguments)


if __name__ == "__main__":
    main(*make_parser().parse_args_into_dataclasses())
