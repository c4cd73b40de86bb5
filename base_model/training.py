"""Pretraining plumbing on `transformers.Trainer`: cached mels/latents/text, collation, EMA, audio samples.

The models compute their own per-sample loss; `MeanLossTrainer` only averages it (the one hook it overrides).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainerCallback

from .data.synthcaps import SynthCapsConfig, render_codec_clip
from .mel import MelConfig, MelSpectrogram

DEFAULT_CACHE = Path(os.environ.get("REWARDFLOW_CACHE", Path.home() / ".cache" / "rewardflow"))


class MeanLossTrainer(Trainer):
    """Trainer for models that return a per-sample loss `(B,)`."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Why: our models return the loss per sample so fine-tuning can weight it; pretraining takes the mean.
        outputs = model(**inputs)
        loss = outputs.loss.mean()
        return (loss, outputs) if return_outputs else loss


# ----------------------------------------------------------------------------------------------- caching
def _atomic_save_npz(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


_RENDER = None  # the `render` of the running `cached_mels`; forked workers inherit it


def _render_mels(args) -> np.ndarray:
    start, stop, mel_config = args
    wav = np.stack([_RENDER(j) for j in range(start, stop)])
    return MelSpectrogram(mel_config)(torch.from_numpy(wav)).numpy().astype(np.float16)


def cached_mels(
    path: Path, num_examples: int, render, mel_config: MelConfig, frames_multiple: int, workers: int = 1
) -> np.ndarray:
    """Log-mels `(N, n_mels, F)` (float16) of clips `render(i)` for `i < num_examples`, computed once and read back
    from `path` afterwards; `F` is cut to a multiple of `frames_multiple` (the VAE's downsampling factor). With
    `workers > 1` chunks of 64 clips render in that many forked processes; each clip's mel is computed on its own
    numbers either way, and chunks are joined in order."""
    global _RENDER
    if path.is_file():
        mels = np.load(path)["mels"]
    else:
        chunks = [(i, min(i + 64, num_examples), mel_config) for i in range(0, num_examples, 64)]
        _RENDER = render
        try:
            if workers > 1 and len(chunks) > 1:
                import multiprocessing

                with multiprocessing.get_context("fork").Pool(
                    workers, initializer=torch.set_num_threads, initargs=(1,)
                ) as pool:
                    out = pool.map(_render_mels, chunks, chunksize=4)
            else:
                out = [_render_mels(c) for c in chunks]
        finally:
            _RENDER = None
        mels = np.concatenate(out)
        _atomic_save_npz(path, mels=mels)
    F = mels.shape[-1] // frames_multiple * frames_multiple
    return mels[..., :F]


def _corpus_mels(corpus, prefix, split, num_examples, config, mel_config, cache_dir, frames_multiple, workers=1):
    """Log-mels and rows of the first `num_examples` clips of a corpus module's split (its `example`,
    `render_audio` and `corpus_fingerprint`), cached as `<prefix>-mels-<key>.npz` (see [`cached_mels`])."""
    mel_config = mel_config or MelConfig()
    rows = [corpus.example(i, split, config) for i in range(num_examples)]
    key = (
        corpus.corpus_fingerprint(split, num_examples, config)
        + hashlib.sha1(json.dumps(mel_config.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    )
    path = Path(cache_dir) / f"{prefix}-mels-{key}.npz"

    def render(i):
        return corpus.render_audio(rows[i]["attributes"], rows[i]["seed"], config.seconds)

    return cached_mels(path, num_examples, render, mel_config, frames_multiple, workers), rows


def synthcaps_mels(
    split: str,
    num_examples: int,
    config: SynthCapsConfig | None = None,
    mel_config: MelConfig | None = None,
    cache_dir: Path = DEFAULT_CACHE,
    frames_multiple: int = 1,
    workers: int = 1,
) -> tuple[np.ndarray, list[dict]]:
    """Log-mels of the first `num_examples` SynthCaps clips of a split (see [`cached_mels`]), and their rows."""
    from .data import synthcaps

    config = config or SynthCapsConfig()
    return _corpus_mels(
        synthcaps, "synthcaps", split, num_examples, config, mel_config, cache_dir, frames_multiple, workers
    )


def synthmusic_mels(
    split: str,
    num_examples: int,
    config=None,
    mel_config: MelConfig | None = None,
    cache_dir: Path = DEFAULT_CACHE,
    frames_multiple: int = 1,
    workers: int = 1,
) -> tuple[np.ndarray, list[dict]]:
    """Log-mels of the first `num_examples` SynthMusic clips of a split (see [`cached_mels`]), and their rows."""
    from .data import synthmusic

    config = config or synthmusic.SynthMusicConfig()
    return _corpus_mels(
        synthmusic, "synthmusic", split, num_examples, config, mel_config, cache_dir, frames_multiple, workers
    )


def codec_mels(
    num_examples: int,
    seconds: float,
    mel_config: MelConfig | None = None,
    cache_dir: Path = DEFAULT_CACHE,
    frames_multiple: int = 1,
) -> np.ndarray:
    """Log-mels of the first `num_examples` caption-less codec clips ([`render_codec_clip`], see [`cached_mels`]):
    extra training audio for the VAE only."""
    mel_config = mel_config or MelConfig()
    settings = {"codec": num_examples, "seconds": seconds, "v": 1, **mel_config.to_dict()}
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"codec-mels-{key}.npz"
    return cached_mels(path, num_examples, lambda i: render_codec_clip(i, seconds), mel_config, frames_multiple)


class MelDataset(torch.utils.data.Dataset):
    """Log-mel rows; with `crop_frames`, a random crop of that many frames (a multiple of `frames_multiple`) per
    access, so a convolutional VAE trains on more, shorter windows per second of compute."""

    def __init__(self, mels: np.ndarray, crop_frames: int = 0, frames_multiple: int = 1):
        self.mels, self.crop, self.multiple = mels, crop_frames, frames_multiple

    def __len__(self):
        return len(self.mels)

    def __getitem__(self, i):
        mel = self.mels[i]
        if self.crop and self.crop < mel.shape[-1]:
            start = int(torch.randint(0, (mel.shape[-1] - self.crop) // self.multiple + 1, ())) * self.multiple
            mel = mel[..., start : start + self.crop]
        return {"mel": torch.from_numpy(mel.astype(np.float32))}


class LatentTextDataset(torch.utils.data.Dataset):
    """Rows of `latents (T, C)` and text `hidden (L, D)`; the collator pads text into a batch."""

    def __init__(self, latents: torch.Tensor, text_hidden: list[torch.Tensor]):
        if len(latents) != len(text_hidden):
            raise ValueError(f"{len(latents)} latents but {len(text_hidden)} text encodings.")
        self.latents, self.text_hidden = latents, text_hidden

    def __len__(self):
        return len(self.latents)

    def __getitem__(self, i):
        return {"latents": self.latents[i].float(), "text": self.text_hidden[i].float()}


def collate_latent_text(rows: list[dict]) -> dict:
    L = max(r["text"].shape[0] for r in rows)
    D = rows[0]["text"].shape[1]
    hidden = torch.zeros(len(rows), L, D)
    mask = torch.zeros(len(rows), L, dtype=torch.bool)
    for i, r in enumerate(rows):
        hidden[i, : r["text"].shape[0]], mask[i, : r["text"].shape[0]] = r["text"], True
    return {
        "latents": torch.stack([r["latents"] for r in rows]),
        "text_hidden_states": hidden,
        "text_padding_mask": mask,
    }


def encode_texts(text_encoder, captions: list[str]) -> list[torch.Tensor]:
    """Per-caption hidden states `(L_i, D)` (float16), with the padding stripped. Encoders with `encode_unpadded`
    (the transformers one) encode each distinct caption once, batched with captions of its own token length."""
    if hasattr(text_encoder, "encode_unpadded"):
        unique = list(dict.fromkeys(captions))
        encoded = dict(zip(unique, (h.to(torch.float16).cpu() for h in text_encoder.encode_unpadded(unique))))
        return [encoded[c] for c in captions]
    out = []
    for i in range(0, len(captions), 64):
        enc = text_encoder(captions[i : i + 64])
        for h, m in zip(enc.hidden_states, enc.padding_mask):
            out.append(h[m].to(torch.float16).cpu())
    return out


@torch.inference_mode()
def encode_latents(vae, mels: np.ndarray, batch_size: int = 64, cache: Path | None = None) -> torch.Tensor:
    """VAE latents `(N, T, C)` of log-mels `(N, n_mels, F)`, computed on the VAE's device; with `cache` (a `.npz`
    path, e.g. named by the mels' and the VAE's hashes), computed once and read back on later runs; rounded to
    float16 either way."""
    if cache is not None and Path(cache).is_file():
        return torch.from_numpy(np.load(cache)["latents"].astype(np.float32))
    vae.eval()
    device = next(vae.parameters()).device
    out = torch.cat(
        [
            vae.encode(torch.from_numpy(mels[i : i + batch_size].astype(np.float32)).to(device)).cpu()
            for i in range(0, len(mels), batch_size)
        ]
    )
    out = out.half().float()  # what the cache holds: a cached run and a fresh one train on the same numbers
    if cache is not None:
        _atomic_save_npz(Path(cache), latents=out.numpy().astype(np.float16))
    return out


def latest_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest `checkpoint-<step>` folder that was written completely (Trainer writes `trainer_state.json` last),
    skipping any a killed run left half-written; None when there is none."""
    folders = sorted(
        (p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    for folder in reversed(folders):
        if (folder / "trainer_state.json").is_file() and any(
            folder.glob("*model*.safetensors")
        ):  # LoRA: adapter_model
            return str(folder)
    return None


# ------------------------------------------------------------------------------------------------- EMA
class EMACallback(TrainerCallback):
    """Exponential moving average of the trained weights, saved as `ema.safetensors` in every checkpoint and
    restored on resume, so resumed runs keep the same EMA."""

    def __init__(self, decay: float = 0.999, resume_from: str | None = None):
        self.decay = decay
        self.resume_from = resume_from
        self.shadow: dict[str, torch.Tensor] | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        ema_file = Path(self.resume_from) / "ema.safetensors" if self.resume_from else None
        if ema_file is not None and ema_file.is_file():
            self.shadow = load_file(str(ema_file))
        else:
            self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def on_step_end(self, args, state, control, model=None, **kwargs):
        # Warm-up as in timm/DiT practice: the effective decay ramps from 0 so early weights do not dominate.
        d = min(self.decay, (1 + state.global_step) / (10 + state.global_step))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach().float(), alpha=1 - d)
            else:
                self.shadow[k].copy_(v)

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".ema.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in self.shadow.items()}, str(tmp))
        os.replace(tmp, folder / "ema.safetensors")

    def copy_to(self, model: torch.nn.Module) -> None:
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()})


class AudioSampleCallback(TrainerCallback):
    """Every `every` steps, generates clips for fixed prompts and writes WAVs + a spectrogram PNG under
    `<output_dir>/samples/step-<N>/`, so a run can be listened to while it trains."""

    def __init__(self, build_pipeline, prompts: list[str], every: int, num_steps: int = 10):
        self.build_pipeline, self.prompts, self.every, self.num_steps = build_pipeline, prompts, every, num_steps

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every <= 0 or state.global_step % self.every or not state.is_world_process_zero:
            return
        from .files import save_wav
        from .plotting import save_spectrograms

        was_training = model.training
        model.eval()
        pipe = self.build_pipeline(model)
        out = pipe(self.prompts, num_steps=self.num_steps, seed=0)
        folder = Path(args.output_dir) / "samples" / f"step-{state.global_step}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, wav in enumerate(out.waveforms):
            save_wav(folder / f"{i:02d}.wav", wav, out.sample_rate)
        save_spectrograms(folder / "spectrograms.png", list(out.mel), self.prompts)
        model.train(was_training)


class MeasureOnSaveCallback(TrainerCallback):
    """At every checkpoint, calls `measure(step, model)` with a copy of the model holding the EMA weights (what would
    ship if training stopped there), so a long build is measured on the way. The measuring function comes from the
    caller (e.g. the build script scores clips with the SynthCaps verifier), so this layer imports no reward model."""

    def __init__(self, measure, ema: EMACallback):
        self.measure, self.ema = measure, ema

    def on_save(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        import copy

        snapshot = copy.deepcopy(model)
        self.ema.copy_to(snapshot)
        self.measure(state.global_step, snapshot.eval())


class TimeBudgetCallback(TrainerCallback):
    """Stops training, with a checkpoint, at the first step end after `seconds` of this sitting: a run sized by
    the time a machine is lent for still ends on a saved, resumable checkpoint."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_begin(self, args, state, control, **kwargs):
        import time

        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        import time

        if time.perf_counter() - self._start >= self.seconds:
            control.should_training_stop = True
            control.should_save = True


class SittingsCallback(TrainerCallback):
    """Keeps `<output_dir>/sittings.json`: one record per sitting of a resumable run (steps from/to, seconds, machine),
    updated at every checkpoint, so a build that ran over several sittings can say what it cost in all."""

    def __init__(self, output_dir: str | os.PathLike):
        self.path = Path(output_dir) / "sittings.json"
        self.record: dict | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        import platform
        import time

        self._start = time.perf_counter()
        self.record = {"from_step": state.global_step, "to_step": state.global_step, "seconds": 0.0,
                       "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                       "cpu_count": os.cpu_count(), "torch": torch.__version__}  # fmt: skip

    def _write(self, state) -> None:
        import time

        if not state.is_world_process_zero or self.record is None:
            return
        from .files import atomic_write_json

        self.record.update(to_step=state.global_step, seconds=round(time.perf_counter() - self._start, 1))
        sittings = json.loads(self.path.read_text()) if self.path.is_file() else []
        sittings = [s for s in sittings if s.get("from_step") != self.record["from_step"]] + [self.record]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, sittings)

    def on_save(self, args, state, control, **kwargs):
        self._write(state)

    def on_train_end(self, args, state, control, **kwargs):
        self._write(state)
