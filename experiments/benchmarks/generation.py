"""Whole-generation cost of the bundled pipeline by clip length and batch size, per stage, so a user can size a
rollout: sampling (Algorithm 1), VAE decode and vocoding, seconds per batch and per clip.

    python experiments/benchmarks/generation.py                          # bundled pipeline, this machine
    python experiments/benchmarks/generation.py --lengths 2.5 5 10 --batch_sizes 1 4 16 --output gen.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


@dataclass
class GenerationBenchArguments:
    model: str = field(default="synthcaps", metadata={"help": "Pipeline to time."})
    lengths: list[float] = field(
        default_factory=lambda: [2.5, 5.0, 10.0], metadata={"help": "Clip lengths (s), batch 1."}
    )
    batch_sizes: list[int] = field(
        default_factory=lambda: [1, 4, 16], metadata={"help": "Batch sizes at --batch_seconds."}
    )
    batch_seconds: float = field(default=4.0, metadata={"help": "Clip length of the batch-size sweep."})
    repeats: int = field(default=2, metadata={"help": "Timed runs per setting (median), after a warm-up."})
    output: str = field(default="", metadata={"help": "Write the JSON results here."})


def time_generation(pipe, batch: int, seconds: float, repeats: int) -> dict:
    """Median seconds per batch of each stage (sample, decode, vocode) and of the whole generation."""
    from base_model.data.synthcaps import example

    prompts = [example(i, "heldout")["caption"] for i in range(batch)]
    runs = []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        out = pipe(prompts, seconds=seconds, seed=r, decode=False)
        t1 = time.perf_counter()
        mel = pipe.vae.decode(out.latents)
        t2 = time.perf_counter()
        pipe.vocoder(mel)
        t3 = time.perf_counter()
        runs.append({"sample": t1 - t0, "decode": t2 - t1, "vocode": t3 - t2, "total": t3 - t0})
    runs = runs[1:]  # the first is a warm-up
    med = {k: round(statistics.median(r[k] for r in runs), 4) for k in runs[0]}
    return {**med, "per_clip": round(med["total"] / batch, 4), "batch": batch, "seconds": seconds}


def main(a: GenerationBenchArguments) -> dict:
    from base_model import MaskAudioFlowPipeline
    from base_model.files import atomic_write_json

    pipe = MaskAudioFlowPipeline.from_pretrained(a.model)
    result = {
        "settings": {
            **asdict(a),
            "threads": torch.get_num_threads(),
            "sampler": "8 iterations x 25 euler steps, CFG 3",
        },
        "parameters": sum(p.numel() for p in pipe.model.parameters()),
        "by_length": [time_generation(pipe, 1, s, a.repeats) for s in a.lengths],
        "by_batch": [time_generation(pipe, b, a.batch_seconds, a.repeats) for b in a.batch_sizes],
    }
    print(json.dumps(result, indent=2))
    if a.output:
        atomic_write_json(a.output, result)
    return result


def make_parser():
    from transformers import HfArgumentParser

    return HfArgumentParser(GenerationBenchArguments)


if __name__ == "__main__":
    main(*make_parser().parse_args_into_dataclasses())
