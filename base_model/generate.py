"""Generate audio from text with a MaskAudioFlow pipeline: WAVs, a spectrogram PNG and a JSON summary.

python base_model/generate.py --model synthcaps --prompts "a high beep repeating quickly" --seed 0
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from trl import TrlParser

from base_model.sampling import SamplingConfig


@dataclass
class GenerateArguments(SamplingConfig):
    model: str = field(
        default="synthcaps",
        metadata={
            "help": "Pipeline folder or bundled name ('synthcaps'); 'random-tiny' builds an untrained tiny "
            "pipeline (for smoke tests only: its audio is noise)."
        },
    )
    prompts: list[str] = field(
        default_factory=lambda: [
            "a high pitched beep repeating quickly",
            "brown noise followed by a rising sweep",
            "a low tone with clicks in the background",
        ],
        metadata={"help": "Captions to generate, one clip each."},
    )
    heldout_prompts: int = field(
        default=0, metadata={"help": "Use the first N held-out SynthCaps captions instead of --prompts."}
    )
    output_dir: str = field(default="outputs/generate", metadata={"help": "Where WAVs, PNG and summary go."})
    seconds: float | None = field(default=None, metadata={"help": "Clip length (default: the pipeline's)."})
    seed: int = field(default=0, metadata={"help": "Clip i uses seed + i."})
    device: str = field(default="cpu", metadata={"help": "torch device."})


def random_tiny_pipeline(seed: int = 0):
    from base_model import GriffinLimVocoder, MaskAudioFlow, MaskAudioFlowConfig, MaskAudioFlowPipeline, MelVAE
    from base_model.text_encoders import TransformersTextEncoder
    from base_model.vae import MelVAEConfig

    torch.manual_seed(seed)
    model = MaskAudioFlow(MaskAudioFlowConfig.from_preset("tiny")).eval()
    vae = MelVAE(MelVAEConfig(hidden_channels=32)).eval()
    return MaskAudioFlowPipeline(model, vae, TransformersTextEncoder(), GriffinLimVocoder())


def main(args: GenerateArguments) -> dict:
    from base_model import MaskAudioFlowPipeline
    from base_model.files import save_wav
    from base_model.plotting import save_spectrograms

    if args.heldout_prompts > 0:
        from base_model.data.synthcaps import example

        args.prompts = [example(i, "heldout")["caption"] for i in range(args.heldout_prompts)]
    if args.model == "random-tiny":
        print("Note: --model random-tiny is an UNTRAINED tiny pipeline; its audio is noise (smoke test only).")
        pipe = random_tiny_pipeline(args.seed)
    else:
        pipe = MaskAudioFlowPipeline.from_pretrained(args.model, device=args.device)
    pipe.to(args.device)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    out = pipe(args.prompts, **args.sampler_kwargs(), seconds=args.seconds, seed=args.seed)
    elapsed = time.perf_counter() - start
    files = []
    for i, (prompt, wav) in enumerate(zip(args.prompts, out.waveforms)):
        path = out_dir / f"{i:03d}.wav"
        save_wav(path, wav, out.sample_rate)
        files.append({"prompt": prompt, "wav": str(path), "seed": args.seed + i})
    png = out_dir / "spectrograms.png"
    save_spectrograms(png, list(out.mel), [f"{i}: {p}" for i, p in enumerate(args.prompts)], out.sample_rate)
    summary = {
        "model": args.model,
        "clips": files,
        "spectrograms": str(png),
        "seconds_per_clip": out.waveforms.shape[1] / out.sample_rate,
        "generation_seconds": round(elapsed, 3),
        "sampler": args.sampler_kwargs(),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"Wrote {len(files)} clips, {png} and summary.json to {out_dir} in {elapsed:.1f} s:")
    for f in files:
        print(f"  {f['wav']}  <- {f['prompt']!r}")
    return summary


def make_parser() -> TrlParser:
    return TrlParser((GenerateArguments,))


if __name__ == "__main__":
    (args,) = make_parser().parse_args_and_config()
    main(args)
