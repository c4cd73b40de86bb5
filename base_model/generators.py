"""Which generator a name or folder is, loaded through one function: the interface the alignment stage drives.

    >>> from base_model.generators import load_generator
    >>> pipe = load_generator("synthcaps")                 # MaskAudioFlow (bundled or a save_pretrained folder)
    >>> pipe = load_generator("tangoflux:TangoFlux/")      # doctest: +SKIP  (a published TangoFlux folder)

Every generator offers the same duck interface (`docs/generators.md` writes it down and `tests/test_generators.py`
holds every backbone to it): `__call__(prompts, seed=..., num_steps=..., cfg_scale=..., decode=False)` -> latents
`(B, T, C)` (and waveforms), `decode_latents(latents)` and `vocode(decoded)` -> waveforms `(B, N)`, `sample_rate`,
`num_frames()`, `text_encoder(prompts)` -> `TextEncoding`, `model` (the trainable flow module: `config.latent_channels`,
`draw_flow_inputs(latents)`, `forward(latents, text_hidden_states, text_padding_mask, **drawn)` -> per-sample `loss`,
`v_t`, `infill_mask`; `lora_target_modules`), `save_pretrained(folder)` and `from_pretrained(folder)`.
"""

from __future__ import annotations

import os
from pathlib import Path

TANGOFLUX_PREFIX = "tangoflux:"


def generator_kind(spec: str | os.PathLike) -> str:
    """`"tangoflux"` for `tangoflux:<dir>` or a folder holding `tangoflux.safetensors`, else `"maskaudioflow"`."""
    spec = str(spec)
    if spec.startswith(TANGOFLUX_PREFIX) or (Path(spec) / "tangoflux.safetensors").is_file():
        return "tangoflux"
    return "maskaudioflow"


def generator_folder(spec: str | os.PathLike) -> Path:
    """The generator's folder, checked to be complete and readable (before anything loads)."""
    if generator_kind(spec) == "tangoflux":
        from .tangoflux import check_tangoflux_folder

        return check_tangoflux_folder(str(spec).removeprefix(TANGOFLUX_PREFIX))
    from .pipeline import resolve_pipeline_path

    return resolve_pipeline_path(spec)


def load_generator(spec: str | os.PathLike, device="cpu", **kwargs):
    """Loads a generator by name or folder (see the module docstring)."""
    if generator_kind(spec) == "tangoflux":
        from .tangoflux import TangoFluxPipeline

        return TangoFluxPipeline.from_pretrained(str(spec).removeprefix(TANGOFLUX_PREFIX), device=device, **kwargs)
    from .pipeline import MaskAudioFlowPipeline

    return MaskAudioFlowPipeline.from_pretrained(spec, device=device, **kwargs)


def generator_hash(spec: str | os.PathLike) -> str:
    """sha256 of the generator's weights and configuration (what a rollout table records as its model)."""
    from .files import file_hash

    folder = generator_folder(spec)
    return file_hash(folder / "flow") if generator_kind(spec) == "maskaudioflow" else file_hash(folder)
