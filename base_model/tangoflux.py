"""TangoFlux (declare-lab) as a generator rewardflow can align: diffusers' `FluxTransformer2DModel` over Stable Audio
Open's Oobleck VAE latents, conditioned on FLAN-T5 text and a duration embedding, sampled with flow-matching Euler.

A published TangoFlux folder (`huggingface.co/declare-lab/TangoFlux`) holds three files, read here as the reference
code (`tangoflux/__init__.py`, `tangoflux/model.py`) reads them:
    config.json            num_layers, num_single_layers, in_channels, attention_head_dim, joint_attention_dim,
                           num_attention_heads, audio_seq_len, max_duration, text_encoder_name
    tangoflux.safetensors  the TangoFlux module: `transformer.*`, `fc.*`, `duration_emebdder.*` (sic) and the T5
                           encoder's weights `text_encoder.*` (its tied `embed_tokens` aside)
    vae.safetensors        `AutoencoderOobleck()` with the default config (44.1 kHz stereo, hop 2048, 64 channels)
An optional `"vae"` entry of config.json gives the Oobleck's constructor arguments (the published file has none, so
the default applies); tests use it for a tiny model in the same layout.

Conventions (TangoFlux's): `σ` runs from 1 (noise) to 0 (data), `x_σ = (1 − σ) x_1 + σ x_0`, the network predicts
`v = x_0 − x_1`, a sampler step is `x ← x + (σ_next − σ) v` from σ = 1 down the grid `linspace(1, 1/N, N)` then 0,
and the transformer takes `timestep = σ` (TangoFlux divides the scheduler's 0..1000 timesteps by 1000). Training
draws σ from a logit-normal (mean 0, std 1), continuously (the reference draws it on the scheduler's 1000-step
grid). Classifier-free guidance uses the T5 encoding of `""` as the unconditional prompt, `guidance_scale` 4.5 by
default in TangoFlux's demo (rewardflow's `cfg_scale`). Audio is mixed to mono for the rewards.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.utils import ModelOutput

from .text_encoders import TextEncoding

PUBLISHED = "https://huggingface.co/declare-lab/TangoFlux"
FILES = ("config.json", "tangoflux.safetensors", "vae.safetensors")
DEFAULT_LORA_TARGETS = r".*transformer_blocks\.\d+\.(attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)|ff\.net\.(0\.proj|2))"


class TangoFluxConfig(PretrainedConfig):
    """The published config.json's fields (plus `clip_seconds`, the duration clips are generated at)."""

    model_type = "tangoflux"

    def __init__(self, num_layers=6, num_single_layers=18, in_channels=64, attention_head_dim=128,
                 joint_attention_dim=1024, num_attention_heads=8, audio_seq_len=645, max_duration=30,
                 text_encoder_name="google/flan-t5-large", text_hidden_size=1024, clip_seconds=10.0, vae=None,
                 axes_dims_rope=(16, 56, 56), **kwargs):  # fmt: skip
        self.num_layers, self.num_single_layers, self.in_channels = num_layers, num_single_layers, in_channels
        self.attention_head_dim, self.joint_attention_dim = attention_head_dim, joint_attention_dim
        self.num_attention_heads, self.audio_seq_len, self.max_duration = (
            num_attention_heads,
            audio_seq_len,
            max_duration,
        )
        self.text_encoder_name, self.text_hidden_size, self.clip_seconds = (
            text_encoder_name,
            text_hidden_size,
            clip_seconds,
        )
        self.vae, self.axes_dims_rope = vae, tuple(axes_dims_rope)  # RoPE axes: diffusers' default unless given
        self.latent_channels = in_channels  # what rewardflow checks a rollout's latents against
        self.flow_type = "tangoflux"
        super().__init__(**kwargs)


class StableAudioPositionalEmbedding(nn.Module):
    """Fourier features of a continuous value with learned frequencies (Stable Audio Open's, as TangoFlux uses)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weights = nn.Parameter(torch.randn(dim // 2))

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        values = values[..., None]
        freqs = values * self.weights[None] * 2 * math.pi
        return torch.cat([values, freqs.sin(), freqs.cos()], dim=-1)


class DurationEmbedder(nn.Module):
    """Seconds -> one extra text token `(B, 1, D)`, normalised to `[0, max_duration]` (TangoFlux's)."""

    def __init__(self, dim: int, max_value: float, internal_dim: int = 256):
        super().__init__()
        self.time_positional_embedding = nn.Sequential(
            StableAudioPositionalEmbedding(internal_dim), nn.Linear(internal_dim + 1, dim)
        )
        self.dim, self.max_value = dim, max_value

    def forward(self, seconds: torch.Tensor) -> torch.Tensor:
        x = seconds.clamp(0, self.max_value) / self.max_value
        p = next(self.time_positional_embedding.parameters())
        return self.time_positional_embedding(x.to(p.dtype)).view(-1, 1, self.dim)


@dataclass
class TangoFluxOutput(ModelOutput):
    """`loss (B,)` flow-matching loss per sample; `v_t`, `u_t` `(B, T, C)`; `infill_mask (B, T)`, all True: every
    frame is generated (what rewardflow's reference term averages over)."""

    loss: torch.Tensor | None = None
    v_t: torch.Tensor | None = None
    u_t: torch.Tensor | None = None
    infill_mask: torch.Tensor | None = None


class TangoFluxFlow(nn.Module):
    """The trainable part of TangoFlux (`transformer`, `fc`, `duration_emebdder`) with rewardflow's training API:
    `draw_flow_inputs(latents)` and `forward(latents, text_hidden_states, text_padding_mask, t, noise)` returning the
    per-sample loss, so the reward-weighted trainer drives it as it drives MaskAudioFlow."""

    lora_target_modules = DEFAULT_LORA_TARGETS

    def __init__(self, config: TangoFluxConfig):
        super().__init__()
        from diffusers import FluxTransformer2DModel

        self.config = config
        self.fc = nn.Sequential(nn.Linear(config.text_hidden_size, config.joint_attention_dim), nn.ReLU())
        self.duration_emebdder = DurationEmbedder(config.text_hidden_size, config.max_duration)  # the published key
        self.transformer = FluxTransformer2DModel(
            in_channels=config.in_channels, num_layers=config.num_layers, num_single_layers=config.num_single_layers,
            attention_head_dim=config.attention_head_dim, num_attention_heads=config.num_attention_heads,
            joint_attention_dim=config.joint_attention_dim, pooled_projection_dim=config.text_hidden_size,
            guidance_embeds=False, axes_dims_rope=config.axes_dims_rope,
        )  # fmt: skip

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None, **kwargs) -> None:
        """What `TrainingArguments(gradient_checkpointing=True)` calls: diffusers' checkpointing of the blocks."""
        self.transformer.enable_gradient_checkpointing()

    def conditioning(self, text_hidden_states, text_padding_mask, batch: int):
        """`(encoder_hidden_states (B, L + 1, D), pooled (B, D))`: the text with the duration token appended, and
        the masked mean of the text through `fc` (TangoFlux's pooled projection)."""
        mask = text_padding_mask[..., None].to(text_hidden_states.dtype)
        pooled = self.fc((text_hidden_states * mask).sum(1) / mask.sum(1).clamp_min(1.0))
        seconds = torch.full((batch,), float(self.config.clip_seconds), device=text_hidden_states.device)
        duration = self.duration_emebdder(seconds).to(text_hidden_states.dtype)
        return torch.cat([text_hidden_states, duration], dim=1), pooled

    def velocity(self, x_sigma, sigma, encoder_hidden_states, pooled) -> torch.Tensor:
        B, T, _ = x_sigma.shape
        txt_ids = torch.zeros(encoder_hidden_states.shape[1], 3, device=x_sigma.device)
        audio_ids = torch.arange(T, device=x_sigma.device)[:, None].repeat(1, 3).to(x_sigma.dtype)
        return self.transformer(
            hidden_states=x_sigma, encoder_hidden_states=encoder_hidden_states, pooled_projections=pooled,
            timestep=sigma.expand(B).to(x_sigma.dtype), img_ids=audio_ids, txt_ids=txt_ids, return_dict=False,
        )[0]  # fmt: skip

    def draw_flow_inputs(self, latents: torch.Tensor, generator=None, drop_text: bool = True) -> dict:
        B, T, _ = latents.shape
        sigma = torch.sigmoid(torch.randn(B, generator=generator, device=latents.device))  # logit-normal(0, 1)
        noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        return {"t": sigma, "noise": noise, "infill_mask": torch.ones(B, T, dtype=torch.bool, device=latents.device),
                "text_drop_mask": None}  # fmt: skip

    def forward(self, latents, text_hidden_states, text_padding_mask=None, t=None, noise=None, **kwargs):
        x_1 = latents
        B = x_1.shape[0]
        if t is None or noise is None:
            drawn = self.draw_flow_inputs(x_1)
            t, noise = (drawn["t"] if t is None else t), (drawn["noise"] if noise is None else noise)
        if text_padding_mask is None:
            text_padding_mask = torch.ones(text_hidden_states.shape[:2], dtype=torch.bool, device=x_1.device)
        sigma = t.view(B, 1, 1).to(x_1.dtype)
        x_sigma = (1.0 - sigma) * x_1 + sigma * noise
        u_t = noise - x_1  # TangoFlux's target: the velocity from data towards noise
        context, pooled = self.conditioning(text_hidden_states, text_padding_mask.bool(), B)
        v_t = self.velocity(x_sigma, t.to(x_1.dtype), context, pooled)
        loss = (v_t.float() - u_t.float()).pow(2).mean(dim=(1, 2))
        return TangoFluxOutput(
            loss=loss, v_t=v_t, u_t=u_t, infill_mask=torch.ones(x_1.shape[:2], dtype=torch.bool, device=x_1.device)
        )


class T5TextEncoder:
    """FLAN-T5's encoder as a rewardflow text encoder: prompts -> `TextEncoding` (hidden states, padding mask)."""

    def __init__(self, folder: str | os.PathLike, state_dict: dict | None = None, device="cpu", max_length: int = 64):
        from transformers import AutoTokenizer, T5EncoderModel

        self.folder = str(folder)
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)  # FLAN-T5's T5TokenizerFast
        self.model = T5EncoderModel.from_pretrained(self.folder).eval().to(device)
        if state_dict:  # the T5 weights TangoFlux saved inside tangoflux.safetensors
            self.model.load_state_dict(state_dict, strict=False)
        self.hidden_size, self.max_length = self.model.config.d_model, max_length

    @torch.inference_mode()
    def __call__(self, prompts: list[str], pad_to: int | None = None) -> TextEncoding:
        """With `pad_to`, every prompt is padded to that many tokens and T5 encodes the pad tokens too (masked), as
        TangoFlux encodes its unconditional `""` to the conditional batch's length: Flux's joint attention has no
        text mask, so what stands at the padded positions reaches the audio tokens."""
        device = next(self.model.parameters()).device
        padding = {"padding": "max_length", "max_length": pad_to} if pad_to else {"padding": True}
        batch = self.tokenizer(
            list(prompts), truncation=True, return_tensors="pt", **({"max_length": self.max_length} | padding)
        )
        hidden = self.model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device))[0]
        return TextEncoding(hidden_states=hidden, padding_mask=batch.attention_mask.bool().to(device))

    def to(self, device):
        self.model.to(device)
        return self

    def to_config(self) -> dict:
        return {"type": "t5", "name_or_path": self.folder}


def check_tangoflux_folder(path: str | os.PathLike) -> Path:
    """Raises a clear error naming the missing file and where the published weights come from."""
    path = Path(path)
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path} is not a complete TangoFlux folder: missing {', '.join(missing)}. The published weights are at "
            f"{PUBLISHED} (config.json, tangoflux.safetensors, vae.safetensors); download them on a machine with "
            "internet access into one folder and pass `tangoflux:<that folder>`."
        )
    return path


def resolve_text_encoder(path: Path, config: TangoFluxConfig, text_encoder: str | None) -> str:
    """The FLAN-T5 folder to load: the argument, `<folder>/text_encoder/`, or config.json's `text_encoder_name` when it
    is a local folder; a Hub id only where the Hub is reachable."""
    for candidate in (text_encoder, path / "text_encoder", config.text_encoder_name):
        if candidate and (Path(candidate) / "config.json").is_file():
            return str(candidate)
    if os.environ.get("HF_HUB_OFFLINE") not in ("1", "true", "yes") and text_encoder is None:
        return config.text_encoder_name  # a Hub id: downloads where the Hub is reachable
    raise FileNotFoundError(
        f"TangoFlux needs its text encoder ({config.text_encoder_name}) on disk: save it with "
        "`T5EncoderModel.from_pretrained(...).save_pretrained(dir)` and its tokenizer beside it, then put it in "
        f"{path / 'text_encoder'} or pass text_encoder=<dir>."
    )


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


class TangoFluxPipeline:
    """A TangoFlux folder as a rewardflow generator: the same duck interface as `MaskAudioFlowPipeline`
    (`__call__(prompts, seed=..., num_steps=..., cfg_scale=..., decode=...)`, `decode_latents`, `vocode`,
    `text_encoder`, `model` (the trainable `TangoFluxFlow`), `num_frames()`, `save_pretrained`, `from_pretrained`).

    >>> pipe = TangoFluxPipeline.from_pretrained("TangoFlux/", text_encoder="flan-t5-large/")  # doctest: +SKIP
    >>> pipe(["a dog barks"], seed=0, num_steps=50, cfg_scale=4.5).waveforms.shape  # doctest: +SKIP
    """

    def __init__(self, model: TangoFluxFlow, vae, text_encoder: T5TextEncoder):
        self.model, self.vae, self.text_encoder = model, vae, text_encoder
        self.config = model.config
        self.clip_seconds = self.config.clip_seconds
        self._null: dict = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def sample_rate(self) -> int:
        return int(self.vae.config.sampling_rate)

    def num_frames(self, seconds: float | None = None) -> int:
        return self.config.audio_seq_len  # TangoFlux always generates its full latent length and crops the audio

    def to(self, device):
        self.model.to(device)
        self.vae.to(device)
        self.text_encoder.to(device)
        return self

    @torch.inference_mode()
    def __call__(self, prompts, num_iterations: int = 1, num_steps: int = 50, method: str = "euler",
                 cfg_scale: float = 4.5, temperature: float = 1.0, seconds: float | None = None, seed=None,
                 generator=None, decode: bool = True, vocode: bool = True, **unused):  # fmt: skip
        """Flow-matching Euler from σ = 1 on `linspace(1, 1/N, N)` then 0 (TangoFlux's `inference_flow`), one
        generator per clip for its noise (batch-independent), scaled by `temperature`; `num_iterations` is
        MaskAudioFlow's and is ignored."""
        from .pipeline import AudioPipelineOutput
        from .sampling import check_sampling

        if method != "euler":
            raise ValueError(f"TangoFlux samples with flow-matching Euler; got --method {method!r}.")
        check_sampling(1, num_steps, method, cfg_scale, temperature)
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        device, B = self.device, len(prompts)
        if generator is None:
            seeds = [seed + i for i in range(B)] if isinstance(seed, int) else list(seed or range(B))
            generator = [torch.Generator(device).manual_seed(int(s)) for s in seeds]
        T, C = self.config.audio_seq_len, self.config.in_channels
        dtype = next(self.model.parameters()).dtype
        x = torch.stack([torch.randn(T, C, generator=g, device=device) for g in generator]).to(dtype) * temperature
        enc = self.text_encoder(prompts)
        hidden, mask = enc.hidden_states.to(dtype), enc.padding_mask
        guide = cfg_scale != 1.0
        if guide:  # the unconditional half: T5 of "" padded to the prompts' length (TangoFlux's)
            null = self.text_encoder([""] * B, pad_to=hidden.shape[1])
            hidden, mask = torch.cat([hidden, null.hidden_states.to(dtype)]), torch.cat([mask, null.padding_mask])
        context, pooled = self.model.conditioning(hidden, mask, hidden.shape[0])
        sigmas = torch.cat([torch.linspace(1.0, 1.0 / num_steps, num_steps), torch.zeros(1)]).to(device)
        for i in range(num_steps):
            x_in = torch.cat([x, x]) if guide else x
            v = self.model.velocity(x_in, sigmas[i : i + 1], context, pooled)
            if guide:
                from .sampling import classifier_free_guidance

                v = classifier_free_guidance(v, cfg_scale)
            x = x + (sigmas[i + 1] - sigmas[i]) * v
        audio = self.decode_latents(x) if decode else None
        waveforms = self.vocode(audio, seconds) if decode and vocode else None
        return AudioPipelineOutput(latents=x, waveforms=waveforms, sample_rate=self.sample_rate)

    @torch.inference_mode()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Oobleck decode: latents `(B, T, C)` -> audio `(B, channels, N)`."""
        p = next(self.vae.parameters())
        return self.vae.decode(latents.transpose(1, 2).to(p.dtype)).sample.float()

    def vocode(self, audio: torch.Tensor, seconds: float | None = None) -> torch.Tensor:
        """The decoded audio mixed to mono and cropped to the clip length: `(B, N)` (TangoFlux needs no vocoder)."""
        n = int((seconds or self.clip_seconds) * self.sample_rate)
        return audio.mean(1)[:, :n]

    # ------------------------------------------------------------------------------------------- save/load
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device="cpu", text_encoder: str | None = None, **unused):
        from diffusers import AutoencoderOobleck
        from safetensors.torch import load_file

        path = check_tangoflux_folder(path)
        config = TangoFluxConfig(**load_json(path / "config.json"))
        weights = load_file(str(path / "tangoflux.safetensors"))
        t5_state = {k.removeprefix("text_encoder."): v for k, v in weights.items() if k.startswith("text_encoder.")}
        t5 = T5TextEncoder(resolve_text_encoder(path, config, text_encoder), t5_state or None, device)
        config.text_hidden_size = t5.hidden_size
        model = TangoFluxFlow(config)
        own = {k: v for k, v in weights.items() if not k.startswith("text_encoder.")}
        missing, unexpected = model.load_state_dict(own, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path / 'tangoflux.safetensors'} does not fit config.json: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}.")  # fmt: skip
        vae = AutoencoderOobleck(**(config.vae or {}))
        vae.load_state_dict(load_file(str(path / "vae.safetensors")))
        pipe = cls(model.eval().to(device), vae.eval().to(device), t5)
        pipe.name_or_path = f"tangoflux:{path}"
        return pipe

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """The published layout (config.json, tangoflux.safetensors with the T5 weights, vae.safetensors); config.json
        names the T5 folder this pipeline was loaded with, so the saved folder loads offline."""
        from safetensors.torch import save_file

        from .files import atomic_write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        state |= {f"text_encoder.{k}": v.detach().cpu().contiguous() for k, v in self.text_encoder.model.state_dict().items()
                  if "embed_tokens" not in k}  # fmt: skip
        save_file(state, str(folder / "tangoflux.safetensors"))
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.vae.state_dict().items()},
            str(folder / "vae.safetensors"),
        )
        keys = ("num_layers", "num_single_layers", "in_channels", "attention_head_dim", "joint_attention_dim",
                "num_attention_heads", "audio_seq_len", "max_duration", "clip_seconds", "vae", "axes_dims_rope")  # fmt: skip
        meta = {k: getattr(self.config, k) for k in keys} | {"text_encoder_name": self.text_encoder.folder}
        atomic_write_json(folder / "config.json", meta)
