"""How well does the SynthMusic verifier read its attributes back from real audio, and does the default decoder
path (mel -> vocoder) keep them? The music verifier's calibration, before any music generator is judged by it.

    python experiments/synthmusic_verifier.py --results_dir experiments/results/synthmusic

Per attribute, on `--clips` real clips of each split: the verifier on the rendered audio, on the same audio through
the `--vae` pipeline's mel front end and vocoder, through mel -> its VAE (encode, decode) -> vocoder (the ceiling of
a music generator built on that decoder; `bundled/measure_synthcaps.decoder_ceiling`), and on the rendered audio
checked against another clip's attributes (a derangement: what a clip that ignores its prompt would score, i.e.
chance for this corpus).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass
class MusicVerifierArguments:
    clips: int = field(default=200, metadata={"help": "Real clips per split (train and heldout)."})
    vae: str = field(
        default="synthcaps",
        metadata={"help": "Pipeline name or folder whose mel front end, VAE and vocoder make the round trips."},
    )
    results_dir: str = field(default="", metadata={"help": "Where results.json goes ('' skips)."})

    def __post_init__(self):
        if self.clips < 2:
            raise ValueError(f"--clips must be at least 2 (a derangement needs two clips), got {self.clips}.")
        if not self.vae:
            raise ValueError("--vae needs a pipeline name or folder (e.g. synthcaps): its decoder is measured.")


def main(a: MusicVerifierArguments) -> dict:
    from base_model import MaskAudioFlowPipeline
    from base_model.data.synthmusic import example
    from bundled.measure_synthcaps import accuracy_by_attribute, decoder_ceiling
    from experiments.results_io import publish_json
    from reward_models.music_verifier import SynthMusicVerifier
    from rewardflow.metrics import derangement

    verifier, pipe = SynthMusicVerifier(), MaskAudioFlowPipeline.from_pretrained(a.vae)
    start = time.perf_counter()
    result: dict = {"settings": asdict(a), "splits": {}}
    for split in ("train", "heldout"):
        rows = [example(i, split) for i in range(a.clips)]
        ceiling, real = decoder_ceiling(pipe, rows, verifier, corpus="synthmusic")
        perm = derangement(len(rows))  # never a clip's own attributes
        shuffled = [{"caption": "", "attributes": rows[i]["attributes"]} for i in perm]
        result["splits"][split] = {
            "clips": len(rows),
            **{k: v for k, v in ceiling.items() if k != "vae_mel_l1"},
            "shuffled_attributes": accuracy_by_attribute(verifier, real, shuffled)[0],
            "vae_mel_l1": ceiling["vae_mel_l1"],
        }
    result["seconds"] = round(time.perf_counter() - start, 1)
    publish_json(result, a.results_dir)
    print(json.dumps(result, indent=2))
    return result


def make_parser():
    from trl import TrlParser

    return TrlParser((MusicVerifierArguments,))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
