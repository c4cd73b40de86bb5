"""`MaskAudioFlowPipeline`: text -> latents -> log-mel -> waveform, diffusers-style.

A pipeline folder holds `pipeline.json` (text encoder, vocoder, mel settings, clip length), `flow/` (the
MaskAudioFlow or CFM model) and `vae/` (the mel VAE), each a `save_pretrained` folder. The bundled SynthCaps
pipeline resolves by the name `"synthcaps"`, like a hub id; any folder path works too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers.utils import ModelOutput

from .files import atomic_write_text
from .mel import MelConfig
from .modeling_maskaudioflow import MaskAudioFlow
from .sampling import SamplingConfig, sample
from .text_encoders import TextEncoder, load_text_encoder
from .vae import MelVAE
from .vocoders import Vocoder, load_vocoder

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
BUNDLED_PIPELINES = {
    name: PRETRAINED_DIR / name for name in ("synthcaps", "synthcaps-cfm", "synthmusic", "synthmusic-cfm")
}


def resolve_pipeline_path(name_or_path: str | os.PathLike) -> Path:
    """A bundled name (`"synthcaps"`; `"synthmusic"` once built) or a folder with `pipeline.json`, checked to be a complete, readable pipeline folder
    (its `flow/` a MaskAudioFlow and `vae/` a mel VAE, each with a readable `model.safetensors`) before anything
    loads, so a wrong or damaged folder fails at once with what to do."""
    path = BUNDLED_PIPELINES.get(str(name_or_path), Path(name_or_path))
    if not (path / "pipeline.json").is_file():
        if str(name_or_path) in BUNDLED_PIPELINES:
            corpus = str(name_or_path).removesuffix("-cfm")
            hint = (
                "the bundled checkpoint is missing from this checkout; build it with "
                f"`python bundled/build_synthcaps.py --corpus {corpus} --output_dir outputs/build-{corpus} --install true`"
            )
        elif path.is_file():
            hint = "that is a file; pass the pipeline's folder"
        else:
            hint = f"pass a folder written by MaskAudioFlowPipeline.save_pretrained, or one of {sorted(BUNDLED_PIPELINES)}"
        raise FileNotFoundError(f"No pipeline.json in {path}: {hint}.")
    for sub, kind in (("flow", "maskaudioflow"), ("vae", "mel_vae")):
        check_checkpoint(path / sub, kind)
    return path


def check_checkpoint(folder: Path, model_type: str) -> None:
    """Raises a clear error when `folder` is not a `save_pretrained` folder of `model_type` with readable weights."""
    from safetensors import safe_open

    config = folder / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"{folder} has no config.json: a pipeline folder needs flow/ and vae/ as written by save_pretrained."
        )
    try:
        kind = json.loads(config.read_text()).get("model_type")
    except json.JSONDecodeError as e:
        raise ValueError(f"{config} is not valid JSON ({e}); the checkpoint is damaged: save or copy it again.") from e
    if kind != model_type:
        raise ValueError(
            f"{folder} holds a {kind!r} model where a {model_type!r} is expected: is this the right folder?"
        )
    # one file, or the shards a `save_pretrained(max_shard_size=...)` index names (keeps each file small)
    index = folder / "model.safetensors.index.json"
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else []
    except (json.JSONDecodeError, KeyError, AttributeError) as e:
        raise ValueError(f"{index} is not a safetensors shard index ({e}); save or copy the checkpoint again.") from e
    for weights in [folder / s for s in shards] or [folder / "model.safetensors"]:
        try:
            with safe_open(str(weights), framework="pt") as f:
                f.keys()
        except Exception as e:  # noqa: BLE001 - any failure to read the header means the file is unusable
            raise ValueError(
                f"{weights} is missing or not a readable safetensors file ({type(e).__name__}: {e}); the checkpoint "
                "is incomplete or damaged: save or copy it again."
            ) from e


@dataclass
class AudioPipelineOutput(ModelOutput):
    """Output of [`MaskAudioFlowPipeline.__call__`].

    Args:
        latents (`torch.Tensor` of shape `(B, T, C)`), mel (`torch.Tensor` of shape `(B, n_mels, F)`),
        waveforms (`torch.Tensor` of shape `(B, N)`), sample_rate (`int`),
        intermediates (`torch.Tensor` of shape `(K, B, T, C)`, *optional*): see [`SamplerOutput`].
        infill_masks (`torch.BoolTensor` of shape `(K, B, T)`, *optional*).
    """

    latents: torch.Tensor | None = None
    mel: torch.Tensor | None = None
    waveforms: torch.Tensor | None = None
    sample_rate: int | None = None
    intermediates: torch.Tensor | None = None
    infill_masks: torch.Tensor | None = None


class MaskAudioFlowPipeline:
    """Text-to-audio with MaskAudioFlow (or its CFM baseline).

    Example:

    >>> from base_model import MaskAudioFlowPipeline
    >>> pipe = MaskAudioFlowPipeline.from_pretrained("synthcaps")  # doctest: +SKIP
    >>> out = pipe(["a high pitched beep repeating quickly"], seed=0)  # doctest: +SKIP
    >>> out.waveforms.shape, out.sample_rate  # doctest: +SKIP
    (torch.Size([1, 64000]), 16000)
    """

    def __init__(
        self,
        model: MaskAudioFlow,
        vae: MelVAE,
        text_encoder: TextEncoder,
        vocoder: Vocoder,
        mel_config: MelConfig | None = None,
        clip_seconds: float = 4.0,
    ):
        self.model, self.vae, self.text_encoder, self.vocoder = model, vae, text_encoder, vocoder
        self.mel_config = mel_config or MelConfig()
        self.clip_seconds = clip_seconds
        if model.config.latent_channels != vae.latent_channels:
            raise ValueError(
                f"flow model has {model.config.latent_channels} latent channels but the VAE has {vae.latent_channels}."
            )
        if model.config.text_hidden_size != text_encoder.hidden_size:
            raise ValueError(
                f"flow model expects text width {model.config.text_hidden_size} but the text encoder gives "
                f"{text_encoder.hidden_size}."
            )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def sample_rate(self) -> int:
        return self.vocoder.sample_rate

    def to(self, device) -> MaskAudioFlowPipeline:
        self.model.to(device)
        self.vae.to(device)
        if hasattr(self.text_encoder, "to"):
            self.text_encoder.to(device)
        return self

    def num_frames(self, seconds: float | None = None) -> int:
        """Latent frames for a clip of `seconds` (default: the pipeline's clip length)."""
        return latent_frames(self.mel_config, self.vae, seconds or self.clip_seconds)

    # ------------------------------------------------------------------------------------------ generate
    @torch.inference_mode()
    def __call__(
        self,
        prompts: list[str] | str,
        num_iterations: int = SamplingConfig.num_iterations,
        num_steps: int = SamplingConfig.num_steps,
        method: str = SamplingConfig.method,
        cfg_scale: float = SamplingConfig.cfg_scale,
        temperature: float = SamplingConfig.temperature,
        seconds: float | None = None,
        seed: int | list[int] | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_intermediates: bool = False,
        decode: bool = True,
        vocode: bool = True,
    ) -> AudioPipelineOutput:
        """Generates audio for `prompts`.

        Args:
            prompts: one caption or a list.
            num_iterations, num_steps, method, cfg_scale, temperature: sampler settings (see `base_model.sampling`).
            seconds: clip length (default: the pipeline's).
            seed: an int (sample `i` uses `seed + i`) or one int per prompt; each sample then depends only on its
                own seed, whatever the batch. Ignored when `generator` is given.
            decode / vocode: stop after the latents or the mel.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError("prompts is empty.")
        device = self.device
        if generator is None and seed is not None:
            seeds = [seed + i for i in range(len(prompts))] if isinstance(seed, int) else list(seed)
            if len(seeds) != len(prompts):
                raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts.")
            generator = [torch.Generator(device).manual_seed(int(s)) for s in seeds]
        enc = self.text_encoder(prompts)
        out = sample(
            self.model,
            enc.hidden_states.to(device),
            enc.padding_mask.to(device),
            self.num_frames(seconds),
            num_iterations=num_iterations,
            num_steps=num_steps,
            method=method,
            cfg_scale=cfg_scale,
            temperature=temperature,
            generator=generator,
            return_intermediates=return_intermediates,
        )
        mel = self.decode_latents(out.latents) if decode else None
        waveforms = self.vocode(mel) if decode and vocode else None
        return AudioPipelineOutput(
            latents=out.latents,
            mel=mel,
            waveforms=waveforms,
            sample_rate=self.sample_rate,
            intermediates=out.intermediates,
            infill_masks=out.infill_masks,
        )

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents `(B, T, C)` -> log-mel `(B, n_mels, F)` through the VAE."""
        return self.vae.decode(latents)

    def vocode(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel -> waveforms `(B, N)` through the vocoder."""
        return self.vocoder(mel)

    # ----------------------------------------------------------------------------------------- save/load
    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, device: str | torch.device = "cpu", vocoder: str | dict | None = None
    ) -> MaskAudioFlowPipeline:
        """Loads a pipeline folder (or the bundled `"synthcaps"`); `vocoder` overrides the saved choice
        (`"griffin_lim"` or a BigVGAN folder)."""
        path = resolve_pipeline_path(name_or_path)
        meta = json.loads((path / "pipeline.json").read_text())
        mel_config, vae, voc = load_decoder(path, device=device, vocoder=vocoder)
        model = MaskAudioFlow.from_pretrained(path / "flow").eval().to(device)
        text_encoder = load_text_encoder(meta["text_encoder"], device=device)
        pipe = cls(model, vae, text_encoder, voc, mel_config, meta.get("clip_seconds", 4.0))
        pipe.name_or_path = str(name_or_path)
        return pipe

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder / "flow")
        self.vae.save_pretrained(folder / "vae")
        meta = {
            "text_encoder": self.text_encoder.to_config(),
            "vocoder": self.vocoder.to_config(),
            "mel": self.mel_config.to_dict(),
            "clip_seconds": self.clip_seconds,
        }
        atomic_write_text(folder / "pipeline.json", json.dumps(meta, indent=2))


def latent_frames(mel_config: MelConfig, vae: MelVAE, seconds: float) -> int:
    """Latent frames for a clip of `seconds`: its mel frames cut to a multiple of the VAE's downsampling, divided."""
    samples = int(round(seconds * mel_config.sample_rate))
    return mel_config.num_frames(samples) // vae.downsample_factor


def load_decoder(
    name_or_path: str | os.PathLike = "synthcaps",
    device: str | torch.device = "cpu",
    vocoder: str | dict | None = None,
) -> tuple[MelConfig, MelVAE, Vocoder]:
    """A pipeline folder's decoder side (mel settings, VAE, vocoder) without its flow model or text encoder, e.g. to
    put audio through the generator's VAE + vocoder."""
    path = resolve_pipeline_path(name_or_path)
    meta = json.loads((path / "pipeline.json").read_text())
    mel_config = MelConfig(**meta.get("mel", {}))
    vae = MelVAE.from_pretrained(path / "vae").eval().to(device)
    voc = load_vocoder(vocoder or meta.get("vocoder", {"type": "griffin_lim"}), mel_config, device=device)
    return mel_config, vae, voc
