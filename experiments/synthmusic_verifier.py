"""How well does the SynthMusic verifier read its attributes back from real audio, and does the default decoder
path (mel -> vocoder) keep them? The music verifier's calibration, before any music generator is judged by it.

    python experiments/synthmusic_verifier.py --results_dir experiments/results/synthmusic

Per attribute, on `--clips` real clips of each split: the verifier on the rendered audio, on the same audio through
the default mel front end and vocoder, through mel -> `--vae` (encode, decode) -> vocoder (the ceiling of a music
generator built on that VAE), and on the rendered audio checked against another clip's attributes (a derangement:
what a clip that ignores its prompt would score, i.e. chance for this corpus).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ATTRIBUTES = ("tempo", "rhythm", "key", "mode", "timbre", "dynamics", "parts")


@dataclass
class MusicVerifierArguments:
    clips: int = field(default=200, metadata={"help": "Real clips per split (train and heldout)."})
    vae: str = field(
        default="synthcaps", metadata={"help": "Pipeline name or folder whose VAE round-trips ('' skips)."}
    )
    results_dir: str = field(default="", metadata={"help": "Where results.json goes ('' skips)."})


def _accuracy(verifier, wav, attrs) -> dict:
    s = verifier(wav, 16000, [""] * len(attrs), attributes=attrs)
    return {k.removeprefix("verifier/"): round(float(np.nanmean(v.numpy())), 4) for k, v in s.items()}


def main(a: MusicVerifierArguments) -> dict:
    import torch

    from base_model import GriffinLimVocoder, MelSpectrogram
    from base_model.data.synthmusic import example, render_audio
    from experiments.results_io import publish_json
    from reward_models.music_verifier import SynthMusicVerifier
    from rewardflow.metrics import derangement

    if a.clips < 2:
        raise ValueError(f"--clips must be at least 2 (a derangement needs two clips), got {a.clips}.")
    verifier, mel, vocoder = SynthMusicVerifier(), MelSpectrogram(), GriffinLimVocoder()
    vae = None
    if a.vae:
        from base_model.pipeline import resolve_pipeline_path
        from base_model.vae import MelVAE

        vae = MelVAE.from_pretrained(resolve_pipeline_path(a.vae) / "vae").eval()
    start = time.perf_counter()
    result: dict = {"settings": asdict(a), "splits": {}}
    for split in ("train", "heldout"):
        rows = [example(i, split) for i in range(a.clips)]
        attrs = [r["attributes"] for r in rows]
        wav = torch.from_numpy(np.stack([render_audio(r["attributes"], r["seed"]) for r in rows]))
        with torch.inference_mode():
            mels = [mel(wav[i : i + 32]) for i in range(0, len(wav), 32)]
            vocoded = torch.cat([vocoder(m) for m in mels])
        perm = derangement(len(rows))  # never a clip's own attributes
        row = {
            "clips": len(rows),
            "real_audio": _accuracy(verifier, wav, attrs),
            "real_mel_vocoder": _accuracy(verifier, vocoded, attrs),
            "shuffled_attributes": _accuracy(verifier, wav, [attrs[i] for i in perm]),
        }
        if vae is not None:
            with torch.inference_mode():
                cut = [m[..., : m.shape[-1] // vae.downsample_factor * vae.downsample_factor] for m in mels]
                back = [vae.decode(vae.encode(m)) for m in cut]
                row["real_mel_vae_vocoder"] = _accuracy(verifier, torch.cat([vocoder(m) for m in back]), attrs)
            row["vae_mel_l1"] = round(float(torch.cat([(b - m).abs().flatten() for b, m in zip(back, cut)]).mean()), 4)
        result["splits"][split] = row
    result["seconds"] = round(time.perf_counter() - start, 1)
    publish_json(result, a.results_dir)
    print(json.dumps(result, indent=2))
    return result


def make_parser():
    from trl import TrlParser

    return TrlParser((MusicVerifierArguments,))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
