"""Train time per step and peak memory of three objectives on the same model, data and batch, side by side:

- `flow`: plain (unweighted) masked flow matching, the pretraining step (`MeanLossTrainer`);
- `reward_ref`: reward-weighted flow matching + `beta·‖v_θ − v_ref‖²` with a frozen copy (`RewardFlowTrainer`);
- `lora_ref`: the same with LoRA adapters, the reference being the network with adapters disabled;
- `lora`: LoRA without the reference (`beta = 0`), to isolate what the disabled-adapter reference costs.

    python experiments/benchmarks/finetune_step.py                          # bundled-size model, this machine
    python experiments/benchmarks/finetune_step.py --preset base --latent_frames 312 --text_hidden_size 768

Each mode runs in its own process (so CPU peak RSS is its own) through the real Trainer code path on synthetic
latents; step times are medians over the timed steps after `--warmup` steps (CUDA synchronised). Results print as a
table with ratios to `flow` measured in the same run, and are written to `experiments/benchmarks/results/`.
"""

from __future__ import annotations

import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MODES = ("flow", "reward_ref", "lora_ref", "lora")


@dataclass
class BenchArguments:
    preset: str = field(
        default="bundled", metadata={"help": "'bundled' (the SynthCaps model's size) or tiny/small/base."}
    )
    latent_frames: int = field(default=62, metadata={"help": "T (bundled 4 s clips: 62; 10 s at factor 2: 312)."})
    text_hidden_size: int = field(default=384, metadata={"help": "Text encoder width (MiniLM 384, FLAN-T5-base 768)."})
    text_tokens: int = field(default=24, metadata={"help": "Prompt length in tokens."})
    batch_size: int = field(default=16, metadata={"help": "Per-device batch size."})
    steps: int = field(default=20, metadata={"help": "Timed steps."})
    warmup: int = field(default=5, metadata={"help": "Untimed first steps."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank for lora_ref."})
    bf16: bool = field(default=True, metadata={"help": "bf16 autocast on CUDA (ignored on CPU)."})
    threads: int = field(default=0, metadata={"help": "CPU torch threads (0: torch's default)."})
    output: str = field(default="", metadata={"help": "Results JSON (default: results/finetune_step-<device>.json)."})
    mode: str = field(default="", metadata={"help": "Internal: run one mode and print its JSON."})


def build_config(a: BenchArguments):
    from base_model import MaskAudioFlowConfig

    if a.preset == "bundled":
        cfg = json.loads((ROOT / "base_model/pretrained/synthcaps/flow/config.json").read_text())
        keep = {k: cfg[k] for k in ("hidden_size", "num_layers", "num_heads", "head_layers", "head_hidden_size")}
        return MaskAudioFlowConfig(**keep, text_hidden_size=a.text_hidden_size, mask_ratio_mode="cosine")
    return MaskAudioFlowConfig.from_preset(a.preset, text_hidden_size=a.text_hidden_size, mask_ratio_mode="cosine")


def run_mode(a: BenchArguments) -> dict:
    import torch
    from transformers import TrainerCallback

    from base_model import MaskAudioFlow
    from base_model.training import MeanLossTrainer
    from rewardflow.finetune_config import RewardFlowConfig
    from rewardflow.finetune_trainer import RewardFlowTrainer, RewardLatentDataset

    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    model = MaskAudioFlow(build_config(a))
    n = a.batch_size * (a.steps + a.warmup)
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(n, a.latent_frames, model.config.latent_channels, generator=g)
    text = [torch.randn(a.text_tokens, a.text_hidden_size, generator=g) for _ in range(n)]
    rewards = torch.rand(n, generator=g)
    dataset = RewardLatentDataset(latents, text, torch.exp(0.1 * rewards), rewards)

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.t0 = [], 0.0

        def on_step_begin(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.t0)

        def on_train_begin(self, args, state, control, **kw):
            if cuda:
                torch.cuda.reset_peak_memory_stats()

    timer = Timer()
    args = RewardFlowConfig(
        output_dir=f"/tmp/rewardflow-bench-{a.mode}",
        per_device_train_batch_size=a.batch_size,
        max_steps=a.steps + a.warmup,
        save_strategy="no",
        logging_steps=10**6,
        report_to="none",
        bf16=bool(cuda and a.bf16),
        beta=0.0 if a.mode == "lora" else 1.0,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
    )
    kwargs = dict(callbacks=[timer])
    if a.mode == "flow":
        from rewardflow.finetune_trainer import collate_reward_batch

        def collate(rows):
            batch = collate_reward_batch(rows)
            batch.pop("weights"), batch.pop("rewards")
            return batch

        trainer = MeanLossTrainer(model=model, args=args, train_dataset=dataset, data_collator=collate, **kwargs)
    elif a.mode == "reward_ref":
        trainer = RewardFlowTrainer(model, args, dataset, **kwargs)
    else:
        from peft import LoraConfig

        lora = LoraConfig(r=a.lora_r, lora_alpha=2 * a.lora_r, target_modules=MaskAudioFlow.lora_target_modules)
        trainer = RewardFlowTrainer(model, args, dataset, peft_config=lora, **kwargs)
    trainer.train()
    timed = timer.times[a.warmup :]
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return {
        "mode": a.mode,
        "median_step_s": statistics.median(timed),
        "min_step_s": min(timed),
        "peak_memory_gib": (
            torch.cuda.max_memory_allocated() / 2**30
            if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        ),
        "peak_memory_kind": "cuda max allocated" if cuda else "process peak RSS",
        "parameters": sum(p.numel() for p in MaskAudioFlow(build_config(a)).parameters())
        if a.mode == "flow"
        else None,
        "trainable_parameters": trainable,
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def main(a: BenchArguments) -> dict:
    if a.mode:
        print("RESULT " + json.dumps(run_mode(a)))
        return {}
    from base_model.files import atomic_write_text

    results = {}
    for mode in MODES:
        argv = [sys.executable, __file__, "--mode", mode]
        for k, v in asdict(a).items():
            if k not in ("mode", "output"):
                argv += [f"--{k}", str(v)]
        res = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
        line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if res.returncode != 0 or line is None:
            raise RuntimeError(f"mode {mode} failed:\n{res.stderr[-3000:]}")
        results[mode] = json.loads(line[len("RESULT ") :])
    base = results["flow"]
    print(f"\n{a.preset} model, T={a.latent_frames}, batch {a.batch_size}, device {base['device']}")
    print("| objective | median s/step | × flow | peak memory GiB | × flow | trainable params |")
    print("|---|---|---|---|---|---|")
    for mode, r in results.items():
        print(
            f"| {mode} | {r['median_step_s']:.4f} | {r['median_step_s'] / base['median_step_s']:.2f} | "
            f"{r['peak_memory_gib']:.3f} | {r['peak_memory_gib'] / base['peak_memory_gib']:.2f} | "
            f"{r['trainable_parameters']:,} |"
        )
    report = {"settings": asdict(a), "results": results, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    tag = "cuda" if "cuda" in base["peak_memory_kind"] else "cpu"
    out = Path(a.output or ROOT / "experiments/benchmarks/results" / f"finetune_step-{a.preset}-{tag}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=2))
    return report


def make_parser():
    from transformers import HfArgumentParser  # not TrlParser: this also runs where trl is not installed

    return HfArgumentParser(BenchArguments)


if __name__ == "__main__":
    main(*make_parser().parse_args_into_dataclasses())
