"""Vocoder benchmark: the batched torch Griffin-Lim against librosa's, side by side in one process.

    python experiments/benchmarks/vocoder.py                     # 16 real SynthCaps clips, this machine
    python experiments/benchmarks/vocoder.py --verifier_prompts 64 --output results/vocoder.json

On real held-out SynthCaps clips (rendered, so the true waveform is known):
- seconds per batch of `--batch_size` clips for librosa (`mel_to_stft` + `griffinlim`) and the torch vocoder at the
  same settings (32 Griffin-Lim iterations, momentum 0.99), median of `--repeats`, and their ratio; the same for the
  default torch vocoder (its iteration counts chosen from the sweep);
- spectral convergence `|| |S| - |S'| ||_F / || |S| ||_F` between the clip's STFT magnitude and its reconstruction's;
- SynthCaps verifier accuracy of the clips round-tripped through mel -> vocoder (real audio's is the reference);
- an iteration sweep of the torch vocoder (Griffin-Lim iterations x NNLS steps): time and spectral convergence, from
  which the default is chosen;
- the largest difference between a clip vocoded alone and inside the batch, as a fraction of its peak.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


@dataclass
class VocoderBenchArguments:
    batch_size: int = field(default=16, metadata={"help": "Clips per timed batch."})
    seconds: float = field(default=4.0, metadata={"help": "Clip length."})
    repeats: int = field(default=5, metadata={"help": "Timed runs per setting (median)."})
    verifier_prompts: int = field(default=64, metadata={"help": "Held-out clips for the verifier round trip."})
    sweep_iterations: list[int] = field(default_factory=lambda: [8, 16, 32, 64], metadata={"help": "GL iterations."})
    sweep_nnls: list[int] = field(default_factory=lambda: [0, 8, 16, 32], metadata={"help": "NNLS steps."})
    threads: int = field(default=0, metadata={"help": "torch threads (0: torch's default)."})
    output: str = field(default="", metadata={"help": "Write the JSON results here."})


def _stft_mag(wav: torch.Tensor) -> torch.Tensor:
    win = torch.hann_window(1024)
    return torch.stft(wav, 1024, 256, 1024, win, center=True, pad_mode="constant", return_complex=True).abs()


def spectral_convergence(real: torch.Tensor, rebuilt: torch.Tensor) -> float:
    n = min(real.shape[1], rebuilt.shape[1])
    a, b = _stft_mag(real[:, :n]), _stft_mag(rebuilt[:, :n].float())
    return float(((a - b).flatten(1).norm(dim=1) / a.flatten(1).norm(dim=1)).mean())


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up (and the output)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def real_clips(n: int, seconds: float):
    from base_model.data.synthcaps import example, render_audio

    rows = [example(i, "heldout") for i in range(n)]
    wav = torch.from_numpy(np.stack([render_audio(r["attributes"], r["seed"], seconds) for r in rows]))
    return rows, wav


def verifier_accuracy(wav: torch.Tensor, rows: list[dict]) -> dict:
    from reward_models.verifier import SynthCapsVerifier

    s = SynthCapsVerifier()(wav, 16000, [r["caption"] for r in rows], attributes=[r["attributes"] for r in rows])
    return {k.removeprefix("verifier/"): round(float(v.nanmean()), 4) for k, v in s.items()}


def main(a: VocoderBenchArguments) -> dict:
    from base_model import MelSpectrogram
    from base_model.files import atomic_write_json
    from base_model.vocoders import GriffinLimVocoder, LibrosaGriffinLimVocoder

    if a.threads:
        torch.set_num_threads(a.threads)
    mel_fn = MelSpectrogram()
    _, wav = real_clips(a.batch_size, a.seconds)
    mel = mel_fn(wav)
    # librosa's settings (32 iterations, momentum 0.99) for the speed-up at the same settings; the default's own
    # iteration counts are chosen from the sweep below.
    theirs, ours, default = LibrosaGriffinLimVocoder(n_iter=32), GriffinLimVocoder(n_iter=32), GriffinLimVocoder()
    t_lib, y_lib = timed(lambda: theirs(mel), a.repeats)
    t_ours, y_ours = timed(lambda: ours(mel), a.repeats)
    t_default, y_default = timed(lambda: default(mel), a.repeats)
    alone = max(
        float((default(mel[i : i + 1])[0] - y_default[i]).abs().max() / y_default[i].abs().max())
        for i in range(a.batch_size)
    )
    sweep = []
    for n_iter in a.sweep_iterations:
        for nnls in a.sweep_nnls:
            voc = GriffinLimVocoder(n_iter=n_iter, nnls_iter=nnls)
            t, y = timed(lambda voc=voc: voc(mel), a.repeats)
            sweep.append({"n_iter": n_iter, "nnls_iter": nnls, "seconds": round(t, 4),
                          "speedup_vs_librosa": round(t_lib / t, 2), "spectral_convergence": round(spectral_convergence(wav, y), 4)})  # fmt: skip
            print(sweep[-1], flush=True)
    rows, wav_v = real_clips(a.verifier_prompts, a.seconds)
    mel_v = mel_fn(wav_v)
    result = {
        "settings": {
            **asdict(a),
            "threads_used": torch.get_num_threads(),
            "torch_vocoder": ours.to_config(),
            "default_vocoder": default.to_config(),
        },  # fmt: skip
        "seconds_per_batch": {"librosa": round(t_lib, 4), "torch": round(t_ours, 4), "default": round(t_default, 4)},
        "speedup_vs_librosa": round(t_lib / t_ours, 2),
        "default_speedup_vs_librosa": round(t_lib / t_default, 2),
        "spectral_convergence": {
            "librosa": round(spectral_convergence(wav, y_lib), 4),
            "torch": round(spectral_convergence(wav, y_ours), 4),
            "default": round(spectral_convergence(wav, y_default), 4),
        },  # fmt: skip
        "verifier_round_trip": {
            "real_audio": verifier_accuracy(wav_v, rows),
            "librosa": verifier_accuracy(theirs(mel_v), rows),
            "torch": verifier_accuracy(ours(mel_v), rows),
            "default": verifier_accuracy(default(mel_v), rows),
        },
        "batch_independence_max_relative_diff": alone,
        "sweep": sweep,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "sweep"}, indent=2))
    if a.output:
        Path(a.output).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(a.output, result)
    return result


def make_parser():
    from transformers import HfArgumentParser

    return HfArgumentParser(VocoderBenchArguments)


if __name__ == "__main__":
    main(*make_parser().parse_args_into_dataclasses())
