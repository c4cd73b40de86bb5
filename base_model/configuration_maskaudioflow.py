"""Configuration of MaskAudioFlow (masked text-to-audio flow matching) and its CFM baseline."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

# Size presets, one dict as DiT's `DiT_models`. `base` is the paper's Table 3/4: 16 layers, 768 wide,
# 12 heads, a 4-block flow-matching head (~160 M parameters with the paper's leaner blocks).
MASKAUDIOFLOW_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=64, num_layers=2, num_heads=4, head_layers=2, head_hidden_size=64),
    "small": dict(hidden_size=256, num_layers=6, num_heads=4, head_layers=3, head_hidden_size=256),
    "base": dict(hidden_size=768, num_layers=16, num_heads=12, head_layers=4, head_hidden_size=768),
}


class MaskAudioFlowConfig(PretrainedConfig):
    r"""Configuration of [`MaskAudioFlow`].

    Args:
        latent_channels (`int`, defaults to 20): channels `C` of the VAE latents `x_1` of shape `(B, T, C)`.
        text_hidden_size (`int`, defaults to 384): width of the text encoder's hidden states (MiniLM: 384).
        hidden_size / num_layers / num_heads (`int`): backbone transformer width, depth and attention heads.
        mlp_ratio (`float`, defaults to 4.0): MLP width as a multiple of the block width.
        head_type (`str`, defaults to `"mlp"`): `"mlp"` for MAR's per-token MLP-AdaLN head (frames are independent
            given `z`), `"transformer"` for a small sequence transformer head as the paper's appendix figure draws.
        head_layers / head_hidden_size (`int`): depth and width of the flow-matching head.
        flow_type (`str`, defaults to `"masked"`): `"masked"` is MaskAudioFlow; `"cfm"` is the same architecture
            without masking (the backbone sees `x_t` and `t`), the paper's Table 1 "CFM" baseline.
        span_length (`int`, defaults to 4): latent frames per masked span; 1 gives frame-level masking ("no spans").
        mask_ratio (`float`, defaults to 0.6): fraction of spans masked in training when `mask_ratio_mode="fixed"`.
        mask_ratio_mode (`str`, defaults to `"fixed"`): `"fixed"` (the paper) or `"cosine"`, a per-sample ratio
            `cos(pi/2 * r)` with `r ~ U(0, 1)` as MaskGIT/MAR train their schedules.
        sigma_min (`float`, defaults to 1e-4): minimum noise of the rectified-flow path.
        text_dropout_prob (`float`, defaults to 0.1): probability of replacing the text by the learned null
            embedding in training, for classifier-free guidance.
        flow_batch_mul (`int`, defaults to 1): flow times `t` drawn per backbone pass (MAR's `diffusion_batch_mul`).
        rope_theta (`float`, defaults to 10000.0): RoPE base.
    """

    model_type = "maskaudioflow"

    def __init__(
        self,
        latent_channels: int = 20,
        text_hidden_size: int = 384,
        hidden_size: int = 256,
        num_layers: int = 6,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        head_type: str = "mlp",
        head_layers: int = 3,
        head_hidden_size: int = 256,
        flow_type: str = "masked",
        span_length: int = 4,
        mask_ratio: float = 0.6,
        mask_ratio_mode: str = "fixed",
        sigma_min: float = 1e-4,
        text_dropout_prob: float = 0.1,
        flow_batch_mul: int = 1,
        rope_theta: float = 10000.0,
        **kwargs,
    ):
        if head_type not in ("mlp", "transformer"):
            raise ValueError(f"head_type must be 'mlp' or 'transformer', got {head_type!r}.")
        if flow_type not in ("masked", "cfm"):
            raise ValueError(f"flow_type must be 'masked' (MaskAudioFlow) or 'cfm' (the baseline), got {flow_type!r}.")
        if mask_ratio_mode not in ("fixed", "cosine"):
            raise ValueError(f"mask_ratio_mode must be 'fixed' or 'cosine', got {mask_ratio_mode!r}.")
        if not 0.0 < mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1], got {mask_ratio}.")
        if span_length < 1:
            raise ValueError(f"span_length must be >= 1 (1 means frame-level masking), got {span_length}.")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads}).")
        if (hidden_size // num_heads) % 2:
            raise ValueError("hidden_size // num_heads must be even for RoPE.")
        if head_type == "transformer" and head_hidden_size % num_heads:
            raise ValueError(f"head_hidden_size ({head_hidden_size}) must be divisible by num_heads ({num_heads}).")
        self.latent_channels = latent_channels
        self.text_hidden_size = text_hidden_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.head_type = head_type
        self.head_layers = head_layers
        self.head_hidden_size = head_hidden_size
        self.flow_type = flow_type
        self.span_length = span_length
        self.mask_ratio = mask_ratio
        self.mask_ratio_mode = mask_ratio_mode
        self.sigma_min = sigma_min
        self.text_dropout_prob = text_dropout_prob
        self.flow_batch_mul = flow_batch_mul
        self.rope_theta = rope_theta
        super().__init__(**kwargs)

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> MaskAudioFlowConfig:
        """Builds a config from a size preset (`tiny`, `small`, `base`); keyword arguments override it.

        >>> MaskAudioFlowConfig.from_preset("base").num_layers
        16
        """
        if preset not in MASKAUDIOFLOW_PRESETS:
            raise ValueError(f"Unknown preset {preset!r}; choose one of {sorted(MASKAUDIOFLOW_PRESETS)}.")
        return cls(**{**MASKAUDIOFLOW_PRESETS[preset], **overrides})
