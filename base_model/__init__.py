"""MaskAudioFlow: masked text-to-audio flow matching (the generator half of rewardflow)."""

from .configuration_maskaudioflow import MASKAUDIOFLOW_PRESETS, MaskAudioFlowConfig
from .mel import MelConfig, MelSpectrogram
from .modeling_maskaudioflow import MaskAudioFlow, MaskAudioFlowOutput
from .pipeline import AudioPipelineOutput, MaskAudioFlowPipeline
from .sampling import SamplerOutput, decoding_schedule, sample, sample_cfm, sample_masked, solve_ode
from .text_encoders import TextEncoding, TransformersTextEncoder
from .vae import MelVAE, MelVAEConfig
from .vocoders import BigVGANVocoder, GriffinLimVocoder

__all__ = [
    "MASKAUDIOFLOW_PRESETS",
    "AudioPipelineOutput",
    "BigVGANVocoder",
    "GriffinLimVocoder",
    "MaskAudioFlow",
    "MaskAudioFlowConfig",
    "MaskAudioFlowOutput",
    "MaskAudioFlowPipeline",
    "MelConfig",
    "MelSpectrogram",
    "MelVAE",
    "MelVAEConfig",
    "SamplerOutput",
    "TextEncoding",
    "TransformersTextEncoder",
    "decoding_schedule",
    "sample",
    "sample_cfm",
    "sample_masked",
    "solve_ode",
]
