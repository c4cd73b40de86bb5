"""Train the mel VAE on SynthCaps (or an AudioCaps-style table) with `transformers.Trainer`.

    accelerate launch base_model/train_vae.py --output_dir outputs/vae --max_steps 1500

After training the latent statistics of the training set set `latent_shift`/`latent_scale` in the config, so the
flow model sees roughly unit-variance latents; the final model is written with `save_pretrained`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import TrainingArguments


@dataclass
class VAETrainingConfig(TrainingArguments):
    output_dir: str = field(default="outputs/vae", metadata={"help": "Where checkpoints and the model go."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Batch size per device."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    max_steps: int = field(default=1500, metadata={"help": "Training steps."})
    warmup_steps: int = field(default=50, metadata={"help": "Linear warm-up steps."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    logging_steps: int = field(default=50, metadata={"help": "Log every N steps."})
    save_steps: int = field(default=500, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the mel column."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "Data loader workers."})


@dataclass
class VAEModelArguments:
    hidden_channels: int = field(default=64, metadata={"help": "Conv width at full resolution."})
    latent_channels: int = field(default=20, metadata={"help": "Latent channels (paper: 20)."})
    downsample_factor: int = field(default=2, metadata={"help": "Time downsampling (power of two)."})
    num_res_blocks: int = field(default=2, metadata={"help": "Residual blocks per resolution."})
    kl_weight: float = field(default=1e-4, metadata={"help": "Weight of the KL term."})
    spectral_convergence_weight: float = field(
        default=0.0, metadata={"help": "Weight of the spectral-convergence term (linear mel magnitudes)."}
    )
    codec_clips: int = field(
        default=0,
        metadata={
            "help": "Extra caption-less clips (tones, sweeps, noise, clicks over wide continuous ranges) the VAE also "
            "trains on, so that it carries signals the SynthCaps train split never combines. VAE only."
        },
    )
    mse_weight: float = field(default=0.0, metadata={"help": "Weight of a squared-error term on log-mels."})
    architecture: str = field(default="conv1d", metadata={"help": "'conv1d' (mel bins as channels) or 'conv2d'."})
    freq_downsample: int = field(default=4, metadata={"help": "conv2d: frequency downsampling (power of two)."})
    crop_frames: int = field(default=0, metadata={"help": "Train on random crops of N mel frames (0: whole clips)."})
    normalize_input: bool = field(
        default=True,
        metadata={"help": "Standardise log-mels with the training set's mean/std (stored in the config)."},
    )


@dataclass
class CorpusArguments:
    dataset: str = field(
        default="synthcaps",
        metadata={
            "help": "'synthcaps', 'synthmusic', or an AudioCaps-style table: datasets folder/Hub id, .csv/.jsonl."
        },
    )
    audio_column: str = field(default="audio", metadata={"help": "Audio column of a caption table."})
    caption_column: str = field(default="caption", metadata={"help": "Caption column of a caption table."})
    num_train_examples: int = field(
        default=4000, metadata={"help": "Training clips (SynthCaps, SynthMusic: the first N)."}
    )
    num_eval_examples: int = field(default=200, metadata={"help": "Held-out clips for metrics."})
    clip_seconds: float = field(default=4.0, metadata={"help": "Clip length in seconds."})
    corpus_seed: int = field(default=0, metadata={"help": "SynthCaps or SynthMusic corpus seed."})
    cache_dir: str = field(default="", metadata={"help": "Cache for mels/latents (default ~/.cache/rewardflow)."})
    render_workers: int = field(
        default=1, metadata={"help": "Processes that render SynthCaps/SynthMusic clips the first time (the cache)."}
    )


def corpus_mels(data: CorpusArguments, split: str, n: int, frames_multiple: int):
    """Log-mels and captions for SynthCaps, SynthMusic or a caption table."""
    from base_model.data.synthcaps import SynthCapsConfig
    from base_model.data.synthmusic import SynthMusicConfig
    from base_model.mel import MelSpectrogram
    from base_model.training import DEFAULT_CACHE, synthcaps_mels, synthmusic_mels

    procedural = {"synthcaps": (synthcaps_mels, SynthCapsConfig), "synthmusic": (synthmusic_mels, SynthMusicConfig)}
    if data.dataset in procedural:
        mels_of, config = procedural[data.dataset]
        mels, rows = mels_of(
            split,
            n,
            config(data.corpus_seed, data.clip_seconds),
            cache_dir=Path(data.cache_dir) if data.cache_dir else DEFAULT_CACHE,
            frames_multiple=frames_multiple,
            workers=data.render_workers,
        )
        return mels, [r["caption"] for r in rows], rows
    from base_model.data.captions import load_caption_audio

    corpus = load_caption_audio(
        data.dataset, data.audio_column, data.caption_column, seconds=data.clip_seconds, max_examples=n
    )
    front = MelSpectrogram()
    mels = np.concatenate(
        [front(torch.from_numpy(np.stack(corpus.audio[i : i + 64]))).numpy() for i in range(0, len(corpus.audio), 64)]
    )
    F = mels.shape[-1] // frames_multiple * frames_multiple
    return mels[..., :F].astype(np.float16), corpus.captions, [{"id": i} for i in corpus.ids]


def main(args: VAETrainingConfig, model_args: VAEModelArguments, data: CorpusArguments) -> dict:
    from base_model.training import MeanLossTrainer, MelDataset, SittingsCallback, encode_latents
    from base_model.vae import MelVAE, MelVAEConfig

    torch.manual_seed(args.seed)
    train_mels, _, _ = corpus_mels(data, "train", data.num_train_examples, model_args.downsample_factor)
    if model_args.codec_clips:
        from base_model.training import DEFAULT_CACHE, codec_mels

        cache = Path(data.cache_dir) if data.cache_dir else DEFAULT_CACHE
        extra = codec_mels(
            model_args.codec_clips, data.clip_seconds, cache_dir=cache, frames_multiple=model_args.downsample_factor
        )
        train_mels = np.concatenate([train_mels, extra[..., : train_mels.shape[-1]]])
    eval_split = "validation" if data.dataset in ("synthcaps", "synthmusic") else "train"
    eval_mels, _, _ = corpus_mels(data, eval_split, data.num_eval_examples, model_args.downsample_factor)
    config = MelVAEConfig(
        hidden_channels=model_args.hidden_channels,
        latent_channels=model_args.latent_channels,
        downsample_factor=model_args.downsample_factor,
        num_res_blocks=model_args.num_res_blocks,
        kl_weight=model_args.kl_weight,
        spectral_convergence_weight=model_args.spectral_convergence_weight,
        mse_weight=model_args.mse_weight,
        architecture=model_args.architecture,
        freq_downsample=model_args.freq_downsample,
    )
    if model_args.normalize_input:
        sample = train_mels[:512].astype(np.float32)
        config.mel_mean, config.mel_std = float(sample.mean()), float(sample.std())
    model = MelVAE(config)
    trainer = MeanLossTrainer(
        model=model,
        args=args,
        train_dataset=MelDataset(train_mels, model_args.crop_frames, model_args.downsample_factor),
        data_collator=lambda rows: {"mel": torch.stack([r["mel"] for r in rows])},
        callbacks=[SittingsCallback(args.output_dir)],
    )
    start = time.perf_counter()
    resume = args.resume_from_checkpoint
    if resume == "latest":
        from base_model.training import latest_complete_checkpoint

        resume = latest_complete_checkpoint(args.output_dir)
    trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.perf_counter() - start

    # Latent scaling from the training set's posterior means (Stable Diffusion's scale_factor idea).
    model.eval()
    z = encode_latents(model, train_mels[:512])
    model.config.latent_shift = float(z.mean())
    model.config.latent_scale = float(1.0 / z.std())
    with torch.inference_mode():
        mel = torch.from_numpy(eval_mels.astype(np.float32))
        recon = torch.cat([model.decode(model.encode(mel[i : i + 64])) for i in range(0, len(mel), 64)])
        l1 = (recon - mel).abs().mean().item()
        z_eval = model.encode(mel)
    metrics = {
        "eval_mel_l1": round(l1, 4),
        "eval_latent_std": round(float(z_eval.std()), 3),
        "train_seconds": round(train_seconds, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "latent_shape_per_clip": list(z_eval.shape[1:]),
    }
    final = Path(args.output_dir) / "final"
    model.save_pretrained(final)
    (final / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))
    return metrics


def make_parser():
    from trl import TrlParser

    return TrlParser((VAETrainingConfig, VAEModelArguments, CorpusArguments))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
