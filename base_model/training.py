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

from .data.synthcaps import SynthCapsConfig, corpus_fingerprint, example, render_audio
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


def synthcaps_mels(
    split: str,
    num_examples: int,
    config: SynthCapsConfig | None = None,
    mel_config: MelConfig | None = None,
    cache_dir: Path = DEFAULT_CACHE,
    frames_multiple: int = 1,
) -> tuple[np.ndarray, list[dict]]:
    """Log-mels `(N, n_mels, F)` (float16) of the first `num_examples` SynthCaps clips, cached on disk, and rows.

    `F` is cut to a multiple of `frames_multiple` (the VAE's downsampling factor).
    """
    config, mel_config = config or SynthCapsConfig(), mel_config or MelConfig()
    rows = [example(i, split, config) for i in range(num_examples)]
    key = (
        corpus_fingerprint(split, num_examples, config)
        + hashlib.sha1(json.dumps(mel_config.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    )
    path = Path(cache_dir) / f"synthcaps-mels-{key}.npz"
    if path.is_file():
        mels = np.load(path)["mels"]
    else:
        front = MelSpectrogram(mel_config)
        out = []
        for i in range(0, num_examples, 64):
            wav = np.stack([render_audio(r["attributes"], r["seed"], config.seconds) for r in rows[i : i + 64]])
            out.append(front(torch.from_numpy(wav)).numpy().astype(np.float16))
        mels = np.concatenate(out)
        _atomic_save_npz(path, mels=mels)
    F = mels.shape[-1] // frames_multiple * frames_multiple
    return mels[..., :F], rows


class MelDataset(torch.utils.data.Dataset):
    def __init__(self, mels: np.ndarray):
        self.mels = mels

    def __len__(self):
        return len(self.mels)

    def __getitem__(self, i):
        return {"mel": torch.from_numpy(self.mels[i].astype(np.float32))}


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
    """Per-caption hidden states `(L_i, D)` (float16), with the padding stripped."""
    out = []
    for i in range(0, len(captions), 64):
        enc = text_encoder(captions[i : i + 64])
        for h, m in zip(enc.hidden_states, enc.padding_mask):
            out.append(h[m].to(torch.float16).cpu())
    return out


@torch.inference_mode()
def encode_latents(vae, mels: np.ndarray, batch_size: int = 64) -> torch.Tensor:
    vae.eval()
    out = [
        vae.encode(torch.from_numpy(mels[i : i + batch_size].astype(np.float32)))
        for i in range(0, len(mels), batch_size)
    ]
    return torch.cat(out)


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
        from .pipeline import save_wav
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
