"""Train the bundled SynthCaps CLAP: laion-clap's own model code (PANN Cnn6 audio at 16 kHz + a small 'transformer'
text branch on the part of laion-clap's BPE vocabulary SynthCaps captions use), contrastive loss,
`transformers.Trainer`.

    python bundled/train_synthcaps_clap.py --output_dir outputs/clap --install true

A reward model must rank one prompt's clips, which differ in details, not tell a beep from a sweep. So besides the
in-batch negatives of CLIP/CLAP each clip brings a hard-negative caption that differs from its own in one attribute
(`counterfactual_attributes`, after NegCLIP), and part of the training audio has been through the bundled
generator's decoder (VAE + vocoder) so that the model reads generated audio, not only clean renders. With
`--audio_negatives true` each caption also brings a hard-negative *clip*: its render with one attribute changed, most
often the loudness or the fade (`audio_counterfactual_attributes`), which is how one prompt's generated clips differ.
The README's CLAP v3 experiment (not bundled) continued v2 that way:

    python bundled/train_synthcaps_clap.py --output_dir outputs/clap3 --audio_negatives true \
        --model_id synthcaps-clap-v3 --init_from reward_models/pretrained/synthcaps-clap --max_steps 400 \
        --learning_rate 3e-4 --warmup_steps 20 --seed 42

The bundled CLAP v4 is the same recipe at scale, from scratch, on one GPU (2000 steps in 115 s on an H100; the data
preparation, mostly the decoder round trip of 2048 clips, took about 3 min on its 16 cores with `--workers 16`):

    python bundled/train_synthcaps_clap.py --output_dir outputs/clap4 --model_id synthcaps-clap-v4 \
        --train_examples 24000 --roundtrip_examples 2048 --roundtrip_probability 0.8 --audio_negatives true \
        --per_device_train_batch_size 128 --max_steps 2000 --warmup_steps 100 --learning_rate 1e-3 \
        --workers 16 --dataloader_num_workers 6 --seed 42

For scale: v2 trained at 1.1 s a step at batch 32 on this project's 2-core CPU (its card).

Writes `clap_config.json` + `model.safetensors` + a model card, the folder layout `ClapReward` loads, and reports
on held-out SynthCaps clips: text-to-audio retrieval R@1 / R@10 and how often a clip's own caption beats its
one-attribute counterfactual, on clean and on decoder round-tripped audio, and how often a caption scores its own clip
higher than the counterfactual clip.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import Trainer, TrainingArguments
from trl import TrlParser

from base_model.data.synthcaps import (
    SPLITS,
    audio_counterfactual_attributes,
    counterfactual_attributes,
    example,
    make_caption,
    render_audio,
)
from reward_models.clap import BUNDLED_CLAP, ClapReward, build_clap, clap_transformer_tokens, token_map

AMODEL = "SynthCapsCLAP-Cnn6-16k"
CONTEXT = 32


def model_config(vocab_size: int) -> dict:
    return {
        "embed_dim": 512,  # PANN Cnn6's embedding width
        "audio_cfg": {
            "audio_length": 1024,
            "clip_samples": 64000,
            "mel_bins": 64,  # Cnn6's first batch norm is 64 wide
            "sample_rate": 16000,
            "window_size": 1024,
            "hop_size": 640,  # 40 ms frames: a quarter of PANN's cost at 10 ms, ample for SynthCaps' events
            "fmin": 50,
            "fmax": 8000,
            "class_num": 527,
            "model_type": "PANN",
            "model_name": "Cnn6",
        },
        "text_cfg": {"context_length": CONTEXT, "vocab_size": vocab_size, "width": 128, "heads": 2, "layers": 2},
    }


@dataclass
class ClapTrainingConfig(TrainingArguments):
    output_dir: str = field(default="outputs/clap", metadata={"help": "Where checkpoints and the model go."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Contrastive batch size."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    max_steps: int = field(default=1000, metadata={"help": "Training steps."})
    warmup_steps: int = field(default=50, metadata={"help": "Warm-up steps."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Schedule."})
    logging_steps: int = field(default=50, metadata={"help": "Log every N steps."})
    save_steps: int = field(default=250, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int | None = field(default=1, metadata={"help": "Checkpoints kept."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep our columns."})


@dataclass
class ClapDataArguments:
    train_examples: int = field(default=4000, metadata={"help": "SynthCaps training clips."})
    roundtrip_examples: int = field(
        default=768,
        metadata={"help": "How many of them also exist decoded by the bundled generator's VAE + vocoder (cached)."},
    )
    roundtrip_probability: float = field(
        default=0.5, metadata={"help": "Chance that a clip with a round-tripped version is seen through it."}
    )
    hard_negatives: bool = field(default=True, metadata={"help": "Add one counterfactual caption per clip."})
    audio_negatives: bool = field(
        default=False,
        metadata={"help": "Add one counterfactual clip per caption (text-to-audio side; clean renders only)."},
    )
    init_from: str = field(
        default="", metadata={"help": "Start from this CLAP folder (same text vocabulary) instead of from scratch."}
    )
    model_id: str = field(default="synthcaps-clap-v2", metadata={"help": "Name recorded in clap_config.json."})
    eval_examples: int = field(default=200, metadata={"help": "Held-out (and validation) clips for the metrics."})
    workers: int = field(
        default=1,
        metadata={"help": "Processes that render clips and run the decoder round trip (1: this process alone)."},
    )
    measure_only: bool = field(
        default=False,
        metadata={"help": "Re-measure <output_dir>/final and rewrite its metrics and card; no training."},
    )
    install: bool = field(default=False, metadata={"help": "Copy the result to reward_models/pretrained/."})


class ContrastiveClap(torch.nn.Module):
    """Symmetric InfoNCE between unit-norm audio and text embeddings, temperature `logit_scale_a` (CLIP/CLAP).

    With `negative_tokens`, the audio-to-text side also scores each clip against the batch's counterfactual
    captions (B more columns), so the only way to win is to read the attribute that differs. With
    `negative_waveform`, the text-to-audio side likewise scores each caption against the batch's counterfactual clips
    (B more columns; those whose `negative_valid` is False, when given, are left out): it learns to rank one caption's clips.
    """

    def __init__(self, clap):
        super().__init__()
        self.clap = clap

    def _audio(self, waveform):
        return F.normalize(self.clap.audio_projection(self.clap.audio_branch(waveform)["embedding"]), dim=-1)

    def forward(self, waveform, tokens, negative_tokens=None, negative_waveform=None, negative_valid=None):
        B = len(waveform)
        if negative_waveform is not None:  # one pass through the audio branch (its batch norm sees both)
            both = self._audio(torch.cat([waveform, negative_waveform]))
            audio, negative_audio = both[:B], both[B:]
        else:
            audio = self._audio(waveform)
        text = F.normalize(self.clap.encode_text(tokens, device=waveform.device), dim=-1)
        scale = self.clap.logit_scale_a.exp().clamp(max=100)
        target = torch.arange(B, device=audio.device)
        logits_t2a = scale * text @ audio.T
        if negative_waveform is not None:
            extra = scale * text @ negative_audio.T
            if negative_valid is not None:
                extra = extra.masked_fill(~negative_valid[None, :], float("-inf"))
            logits_t2a = torch.cat([logits_t2a, extra], dim=1)
        columns = text
        if negative_tokens is not None:
            negatives = F.normalize(self.clap.encode_text(negative_tokens, device=waveform.device), dim=-1)
            columns = torch.cat([text, negatives])
        logits_a2t = scale * audio @ columns.T
        return {"loss": (F.cross_entropy(logits_a2t, target) + F.cross_entropy(logits_t2a, target)) / 2}


class ClipDataset(torch.utils.data.Dataset):
    """Clean renders, their round-tripped versions (the first `len(roundtrip)` clips) and tokenised captions."""

    def __init__(
        self, wavs, tokens, negative_tokens=None, roundtrip=None, roundtrip_probability=0.0, negative_wavs=None
    ):
        self.wavs, self.tokens, self.negative_tokens = wavs, tokens, negative_tokens
        self.negative_wavs = negative_wavs
        self.roundtrip = roundtrip if roundtrip is not None else np.zeros((0, wavs.shape[1]), np.float16)
        self.p = roundtrip_probability

    def __len__(self):
        return len(self.wavs)

    def __getitem__(self, i):
        # torch's generator: Trainer seeds it, so the choice is reproducible (and restored on resume).
        use_rt = i < len(self.roundtrip) and float(torch.rand(())) < self.p
        wav = self.roundtrip[i] if use_rt else self.wavs[i]
        row = {"waveform": torch.from_numpy(wav.astype(np.float32)), "tokens": self.tokens[i]}
        if self.negative_tokens is not None:
            row["negative_tokens"] = self.negative_tokens[i]
        if self.negative_wavs is not None:
            # A clean counterfactual beside a round-tripped clip would teach "decoder artefacts = right": left out.
            row["negative_waveform"] = torch.from_numpy(self.negative_wavs[i].astype(np.float32))
            row["negative_valid"] = torch.tensor(not use_rt)
        return row


def _rows(split: str, n: int) -> list[dict]:
    return [example(i, split) for i in range(n)]


def _render_one(args: tuple[dict, int]) -> np.ndarray:
    return render_audio(*args).astype(np.float16)


def _map(fn, items: list, workers: int, chunksize: int = 64) -> list:
    """`[fn(x) for x in items]`, in `workers` spawned processes when workers > 1 (order kept; results equal)."""
    if workers <= 1 or len(items) <= chunksize:
        return [fn(x) for x in items]
    import multiprocessing as mp

    # spawn, not fork: the parent may already run torch's thread pools, which a forked child can deadlock on
    with mp.get_context("spawn").Pool(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        return pool.map(fn, items, chunksize=chunksize)


def _render(rows: list[dict], workers: int = 1) -> np.ndarray:
    return np.stack(_map(_render_one, [(r["attributes"], r["seed"]) for r in rows], workers))


def _row_rng(row: dict, stream: int) -> np.random.Generator:
    """A generator fixed by the row's id (`synthcaps-<split>-<index>`) and a stream number."""
    return np.random.default_rng([SPLITS[row["id"].split("-")[1]], int(row["id"].rsplit("-", 1)[1]), stream])


def counterfactual_captions(rows: list[dict]) -> list[str]:
    """One hard-negative caption per row, deterministic in the row's id."""
    out = []
    for r in rows:
        rng = _row_rng(r, 7)
        out.append(make_caption(counterfactual_attributes(r["attributes"], rng), rng))
    return out


def counterfactual_clips(rows: list[dict], workers: int = 1) -> np.ndarray:
    """One hard-negative clip per row: its render with one attribute changed, deterministic in the row's id."""
    jobs = [(audio_counterfactual_attributes(r["attributes"], _row_rng(r, 11)), r["seed"]) for r in rows]
    return np.stack(_map(_render_one, jobs, workers))


def synthcaps_token_ids(n: int = 3000) -> list[int]:
    """The BPE ids SynthCaps captions use (all splits, counterfactuals included): the reduced text vocabulary."""
    rows = [r for split in SPLITS for r in _rows(split, n)]
    captions = [r["caption"] for r in rows] + counterfactual_captions(rows)
    tokens = torch.cat(
        [clap_transformer_tokens(captions[i : i + 1024], CONTEXT) for i in range(0, len(captions), 1024)]
    )
    return sorted(int(t) for t in tokens.unique() if t != 0)


_DECODER = None


def _decoder():
    """The bundled generator's decoder side (mel front end, VAE, vocoder, mel frames per clip), loaded once per
    process and without its text encoder."""
    global _DECODER
    if _DECODER is None:
        from base_model.mel import MelSpectrogram
        from base_model.pipeline import latent_frames, load_decoder, resolve_pipeline_path

        mel_config, vae, vocoder = load_decoder("synthcaps")
        seconds = json.loads((resolve_pipeline_path("synthcaps") / "pipeline.json").read_text()).get(
            "clip_seconds", 4.0
        )
        frames = latent_frames(mel_config, vae, seconds) * vae.downsample_factor
        _DECODER = (MelSpectrogram(mel_config), vae, vocoder, frames)
    return _DECODER


def _roundtrip_batch(wavs: np.ndarray) -> np.ndarray:
    mel_fn, vae, vocoder, frames = _decoder()
    with torch.inference_mode():
        mel = mel_fn(torch.from_numpy(wavs.astype(np.float32)))[..., :frames]
        audio = vocoder(vae.decode(vae.encode(mel))).numpy()
    out = np.zeros_like(wavs)
    n = min(audio.shape[1], wavs.shape[1])
    out[:, :n] = audio[:, :n]
    return out


def roundtrip(wavs: np.ndarray, cache: Path, batch_size: int = 32, workers: int = 1) -> np.ndarray:
    """`wavs` through the bundled generator's decoder (log-mel -> VAE encode/decode -> vocoder), cached in `cache`
    (written atomically; a rerun with the same count reuses it). Batches of `batch_size` are spread over `workers`
    processes; the vocoder (librosa's mel inversion + Griffin-Lim) is what costs, about 0.8 s a clip on one core."""
    if cache.is_file():
        cached = np.load(cache)
        if len(cached) == len(wavs):
            return cached
    batches = [wavs[i : i + batch_size] for i in range(0, len(wavs), batch_size)]
    if workers > 1:
        out = np.concatenate(_map(_roundtrip_batch, batches, workers, chunksize=1))
    else:
        out = np.concatenate([_roundtrip_batch(b) for b in tqdm(batches, desc="decoder round trip")])
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, out)
    os.replace(tmp, cache)
    return out


def _embed_audio(reward: ClapReward, wavs: np.ndarray) -> torch.Tensor:
    return torch.cat(
        [
            reward.embed_audio(torch.from_numpy(wavs[i : i + 32].astype(np.float32)), 16000)
            for i in range(0, len(wavs), 32)
        ]
    )


def _embed_text(reward: ClapReward, captions: list[str]) -> torch.Tensor:
    return torch.cat([reward.embed_text(captions[i : i + 32]) for i in range(0, len(captions), 32)])


def retrieval(audio: torch.Tensor, text: torch.Tensor) -> dict:
    """Text-to-audio retrieval from unit-norm embeddings `(N, D)` of clips and their own captions."""
    rank = (text @ audio.T).argsort(dim=1, descending=True)
    pos = (rank == torch.arange(len(text))[:, None]).float().argmax(1)
    return {
        "R@1": round(float((pos < 1).float().mean()), 4),
        "R@10": round(float((pos < 10).float().mean()), 4),
        "chance_R@1": round(1 / len(text), 4),
        "eval_clips": len(text),
    }


def counterfactual_accuracy(audio: torch.Tensor, text: torch.Tensor, negatives: torch.Tensor) -> float:
    """Fraction of clips scored higher against their own caption than against its one-attribute counterfactual
    (chance 0.5), from unit-norm embeddings. With the roles swapped, `(text, audio, negative clips)`: how often a
    caption scores its own clip higher than the counterfactual clip."""
    return round(float(((audio * text).sum(-1) > (audio * negatives).sum(-1)).float().mean()), 4)


def measure(final: Path, cache_dir: Path, eval_examples: int, workers: int = 1) -> dict:
    """Metrics of a trained folder: held-out compositions (clean and through the generator's decoder) and the
    validation split (the training distribution)."""
    reward = ClapReward(final)
    out = {}
    for split in ("heldout", "validation"):
        rows = _rows(split, eval_examples)
        wavs = _render(rows, workers)
        text = _embed_text(reward, [r["caption"] for r in rows])
        negatives = _embed_text(reward, counterfactual_captions(rows))
        audio = _embed_audio(reward, wavs)
        out[f"{split}_text_to_audio"] = retrieval(audio, text)
        out[f"{split}_counterfactual_accuracy"] = counterfactual_accuracy(audio, text, negatives)
        negative_audio = _embed_audio(reward, counterfactual_clips(rows, workers))
        # the same comparison from the caption's side: its own clip against the counterfactual clip
        out[f"{split}_audio_counterfactual_accuracy"] = counterfactual_accuracy(text, audio, negative_audio)
        if split == "heldout":
            rt = _embed_audio(
                reward, roundtrip(wavs, cache_dir / f"roundtrip-{split}-{eval_examples}.npy", workers=workers)
            )
            out[f"{split}_text_to_audio_roundtrip"] = retrieval(rt, text)
            out[f"{split}_counterfactual_accuracy_roundtrip"] = counterfactual_accuracy(rt, text, negatives)
    return out


def _hardware() -> str:
    """Where the training ran, for the model card."""
    if torch.cuda.is_available():
        return f"one {torch.cuda.get_device_name()} ({os.cpu_count()} CPU cores)"
    return f"{os.cpu_count()} CPU cores"


def model_card(metrics: dict, command: str) -> str:
    rt, p = metrics["roundtrip_examples"], metrics["roundtrip_probability"]
    return (
        f"# SynthCaps CLAP `{metrics.get('model_id', 'synthcaps-clap-v2')}` (bundled)\n\nA small CLAP built with laion-clap's model code: PANN Cnn6 audio branch at "
        "16 kHz (64 mel bins, 40 ms hop, 4 s window, SpecAugment off) and a 2-layer 128-wide 'transformer' text "
        f"branch on the {metrics['vocabulary']} BPE tokens of laion-clap's vocabulary that SynthCaps captions use "
        "(others map to one unknown token; context 32), stored in float16. Trained contrastively on the first "
        f"{metrics['train_examples']} SynthCaps `train` clips, "
        + (
            f"the first {rt} also decoded by the bundled generator's VAE + Griffin-Lim and seen that way with "
            f"probability {p}, "
            if rt
            else ""
        )
        + (
            "with one one-attribute counterfactual caption per clip as a hard negative (audio-to-text side), "
            if metrics["hard_negatives"]
            else ""
        )
        + (
            "with one counterfactual clip per caption (the same render with one attribute changed, two thirds of them "
            "the loudness or the fade) as a hard negative on the text-to-audio side for clean clips, "
            if metrics.get("audio_negatives")
            else ""
        )
        + (f"starting from `{metrics['init_from']}`, " if metrics.get("init_from") else "")
        + f"by\n\n```\n{command}\n```\n\non {_hardware()}, torch {torch.__version__}.\n\n## Metrics\n\n"
        f"On {metrics['heldout_text_to_audio']['eval_clips']} clips each of the held-out compositions and of the validation split (the training distribution). "
        "`counterfactual_accuracy`: how often a clip scores higher with its own caption than with the same caption "
        "changed in one attribute (chance 0.5); `audio_counterfactual_accuracy`: how often a caption scores its own "
        "clip higher than the counterfactual clip (chance 0.5); `_roundtrip`: the clips decoded by the generator's VAE + vocoder "
        f"first.\n\n```json\n{json.dumps(metrics, indent=2)}\n```\n\nToy model for offline development; not a "
        "model of real-world audio.\n"
    )


def _changed_flags(config, *names: str) -> str:
    """` --name value` for each of `names` whose value differs from the dataclass default."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    return "".join(f" --{n} {getattr(config, n)}" for n in names if getattr(config, n) != defaults[n])


def recorded_command(args: ClapTrainingConfig, data: ClapDataArguments) -> str:
    """The command the model card records: every flag that decides the weights. `--dataloader_num_workers` is one,
    because which clips are drawn round-tripped follows each loader worker's random stream; `--workers` is not
    (the same clips in any number of processes)."""
    return (
        f"python bundled/train_synthcaps_clap.py --max_steps {args.max_steps} --train_examples "
        f"{data.train_examples} --roundtrip_examples {data.roundtrip_examples} --seed {args.seed}"
        f" --learning_rate {args.learning_rate} --audio_negatives {data.audio_negatives}"
        + (f" --init_from {data.init_from}" if data.init_from else "")
        # left out where they are the defaults, so that the bundled v2's card keeps its recorded command
        + _changed_flags(args, "per_device_train_batch_size", "warmup_steps", "dataloader_num_workers")
        + _changed_flags(data, "roundtrip_probability", "model_id")
    )


def main(args: ClapTrainingConfig, data: ClapDataArguments) -> dict:
    final = Path(args.output_dir) / "final"
    command = recorded_command(args, data)
    if data.measure_only:
        if not (final / "metrics.json").is_file():
            raise FileNotFoundError(
                f"--measure_only: no trained model in {final}; train it first (same --output_dir)."
            )
        info = json.loads((final / "metrics.json").read_text())
        info = {k: v for k, v in info.items() if k in TRAIN_KEYS}
        info.setdefault("roundtrip_probability", data.roundtrip_probability)  # not recorded by the first v2 run
    else:
        info = train(args, data, final)
    metrics = {**measure(final, Path(args.output_dir), data.eval_examples, data.workers), **info}
    (final / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (final / "README.md").write_text(model_card(metrics, command))
    if data.install:
        if BUNDLED_CLAP.exists():
            shutil.rmtree(BUNDLED_CLAP)
        shutil.copytree(final, BUNDLED_CLAP)
    print(json.dumps(metrics, indent=2))
    return metrics


TRAIN_KEYS = ("train_seconds", "steps", "parameters", "vocabulary", "train_examples", "roundtrip_examples",
              "roundtrip_probability", "hard_negatives", "audio_negatives", "init_from", "model_id")  # fmt: skip


def train(args: ClapTrainingConfig, data: ClapDataArguments, final: Path) -> dict:
    torch.manual_seed(args.seed)
    token_ids = synthcaps_token_ids()
    lookup = token_map(token_ids)
    cfg = model_config(len(token_ids) + 2)
    clap, _ = build_clap(cfg, AMODEL, "transformer")
    if data.init_from:
        start = json.loads((Path(data.init_from) / "clap_config.json").read_text())
        if start.get("token_ids") != token_ids or start.get("model_cfg") != cfg:
            raise ValueError(
                f"--init_from {data.init_from} has another text vocabulary or model shape than this script builds; "
                "train from scratch (no --init_from)."
            )
        clap.load_state_dict(
            {k: v.float() for k, v in load_file(str(Path(data.init_from) / "model.safetensors")).items()}
        )
    # SpecAugment (PANN's default) can blank 2 x 64 of the 100 frames: most of a SynthCaps sequence. The corpus is
    # procedural, so fresh clips do augmentation's job.
    clap.audio_branch.spec_augmenter = torch.nn.Identity()
    rows = _rows("train", data.train_examples)
    wavs = _render(rows, data.workers)
    tokens = lookup[clap_transformer_tokens([r["caption"] for r in rows], CONTEXT)]
    negative_tokens = (
        lookup[clap_transformer_tokens(counterfactual_captions(rows), CONTEXT)] if data.hard_negatives else None
    )
    rt = None
    if data.roundtrip_examples:
        rt = roundtrip(
            wavs[: data.roundtrip_examples],
            Path(args.output_dir) / f"roundtrip-{data.roundtrip_examples}.npy",
            workers=data.workers,
        )
    negative_wavs = counterfactual_clips(rows, data.workers) if data.audio_negatives else None
    dataset = ClipDataset(wavs, tokens, negative_tokens, rt, data.roundtrip_probability, negative_wavs)
    trainer = Trainer(
        model=ContrastiveClap(clap),
        args=args,
        train_dataset=dataset,
        data_collator=lambda batch: {k: torch.stack([r[k] for r in batch]) for k in batch[0]},
    )
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    seconds = time.perf_counter() - start
    final.mkdir(parents=True, exist_ok=True)
    # Stored in float16 and loaded back into float32; the metrics are measured on the stored weights.
    save_file(
        {
            k: v.contiguous().to(torch.float16) if v.is_floating_point() else v.contiguous()
            for k, v in clap.state_dict().items()
        },
        str(final / "model.safetensors"),
    )
    meta = {"amodel": AMODEL, "tmodel": "transformer", "model_cfg": cfg, "model_id": data.model_id}
    (final / "clap_config.json").write_text(json.dumps({**meta, "token_ids": token_ids}, indent=2))
    return {
        "train_seconds": round(seconds, 1),
        "steps": trainer.state.global_step,
        "parameters": sum(p.numel() for p in clap.parameters()),
        "vocabulary": len(token_ids),
        "train_examples": data.train_examples,
        "roundtrip_examples": data.roundtrip_examples,
        "roundtrip_probability": data.roundtrip_probability,
        "hard_negatives": data.hard_negatives,
        "audio_negatives": data.audio_negatives,
        "init_from": data.init_from,
        "model_id": data.model_id,
    }


def make_parser() -> TrlParser:
    return TrlParser((ClapTrainingConfig, ClapDataArguments))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
