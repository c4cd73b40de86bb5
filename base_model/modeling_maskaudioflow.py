"""MaskAudioFlow: a bidirectional text-conditioned transformer backbone plus a flow-matching head (MAR-style).

    backbone  w(text, x_known, infill_mask) -> z        runs once per decoding iteration (it does not see t)
    head      w_f(x_t, t, z) -> v_t                      AdaLN-Zero blocks conditioned on t + z

With `config.flow_type == "cfm"` the same network becomes the paper's CFM baseline: the backbone also sees `x_t`
and `t`, and the whole network is integrated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_maskaudioflow import MaskAudioFlowConfig
from .flow import masked_flow_loss, path_sample, sample_mask_ratio, sample_span_mask, sample_time


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    # DiT's modulate, but shift/scale already carry the token dimension (conditioning is per token here).
    return x * (1 + scale) + shift


def _zero(module: nn.Linear) -> nn.Linear:
    """Marks a Linear for zero init (AdaLN-Zero); `_init_weights` honours the mark."""
    module._zero_init = True
    return module


class TimestepEmbedder(nn.Module):
    """Embeds scalar flow times with sinusoids and an MLP (DiT's `TimestepEmbedder`)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        # t in [0, 1] is scaled by 1000 so the sinusoids span the same range as DiT's integer steps.
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = 1000.0 * t.float()[..., None] * freqs  # (..., half)
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))  # (..., D)


class RotaryEmbedding(nn.Module):
    """RoPE over latent frame positions (Su et al.), cos/sin tables built per length."""

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        # Computed on the fly rather than kept as a non-persistent buffer: `from_pretrained` builds models on the
        # meta device and would leave such a buffer uninitialised.
        self.head_dim, self.theta = head_dim, theta

    def forward(self, seq_len: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, device=device) / self.head_dim))
        pos = torch.arange(seq_len, device=device, dtype=torch.float32)
        freqs = torch.outer(pos, inv_freq.float())  # (T, Dh/2)
        emb = torch.cat([freqs, freqs], dim=-1)  # (T, Dh)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def sinusoidal_positions(length: int, dim: int, device, dtype) -> torch.Tensor:
    """Transformer sinusoidal position table `(T, D)` (Vaswani et al.)."""
    emb = TimestepEmbedder.timestep_embedding(torch.arange(length, device=device) / 1000.0, dim)
    return emb.to(dtype)


class Attention(nn.Module):
    """Multi-head attention on `scaled_dot_product_attention`; self-attention with RoPE or cross-attention."""

    def __init__(self, dim: int, num_heads: int, context_dim: int | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        B, T, D = x.shape
        context = x if context is None else context
        q = self.q(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)
        k, v = self.kv(context).view(B, context.shape[1], 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        attn_mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]  # True = attend
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, T, Dh)
        return self.out(out.transpose(1, 2).reshape(B, T, D))


class Mlp(nn.Sequential):
    def __init__(self, dim: int, ratio: float):
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


class BackboneBlock(nn.Module):
    """Pre-norm block: RoPE self-attention over frames, cross-attention to the text, MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, num_heads)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, x, context, context_mask, rope):
        x = x + self.self_attn(self.norm1(x), rope=rope)  # (B, T, D)
        x = x + self.cross_attn(self.norm2(x), context=context, key_padding_mask=context_mask)
        return x + self.mlp(self.norm3(x))


class AdaLNResBlock(nn.Module):
    """MAR's head `ResBlock`: LN -> modulate -> MLP -> gated residual, conditioned per token."""

    def __init__(self, width: int):
        super().__init__()
        self.in_ln = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        # AdaLN-Zero: the modulation starts at zero, so each block starts as the identity.
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), _zero(nn.Linear(width, 3 * width)))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.adaLN_modulation(c).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.in_ln(x), shift, scale))


class AdaLNTransformerBlock(nn.Module):
    """DiT block with adaLN-Zero, attending across frames (the paper's appendix "head transformer")."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, num_heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(width, mlp_ratio)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), _zero(nn.Linear(width, 6 * width)))  # zero init

    def forward(self, x, c, rope):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate_msa * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), rope=rope)
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """adaLN -> Linear to latent channels; both zero-initialised so the head's first output is exactly 0."""

    def __init__(self, width: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = _zero(nn.Linear(width, out_channels))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), _zero(nn.Linear(width, 2 * width)))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class FlowHead(nn.Module):
    """`w_f(x_t, t, z) -> v_t`, conditioned on `t_emb + cond_embed(z)` per frame.

    `mlp` treats every frame independently (MAR's `SimpleMLPAdaLN`), so it accepts any leading shape, e.g.
    only the rows being revealed. `transformer` attends across the frames of a `(B, T, C)` sequence.
    """

    def __init__(self, config: MaskAudioFlowConfig):
        super().__init__()
        width = config.head_hidden_size
        self.head_type = config.head_type
        self.input_proj = nn.Linear(config.latent_channels, width)
        self.time_embed = TimestepEmbedder(width)
        self.cond_embed = nn.Linear(config.hidden_size, width)
        if self.head_type == "mlp":
            self.blocks = nn.ModuleList([AdaLNResBlock(width) for _ in range(config.head_layers)])
        else:
            self.blocks = nn.ModuleList(
                [AdaLNTransformerBlock(width, config.num_heads, config.mlp_ratio) for _ in range(config.head_layers)]
            )
            self.rope = RotaryEmbedding(width // config.num_heads, config.rope_theta)
        self.final_layer = FinalLayer(width, config.latent_channels)

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor | None = None, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """
        Args:
            x_t (`torch.Tensor` of shape `(..., C)`): points on the path; `(B, T, C)` for the transformer head.
            t (`torch.Tensor`): flow times broadcastable to `x_t.shape[:-1]` from the left, e.g. `()`, `(B,)`,
                `(B, T)` or `(N,)`. Each distinct entry is embedded once: a scalar `t` (one ODE step) costs one
                time embedding, not one per frame.
            z (`torch.Tensor` of shape `(..., D)`): backbone features of the same frames, or
            cond (`torch.Tensor` of shape `(..., W)`): `condition(z)`, computed once when `z` is fixed over many
                ODE steps (masked decoding).
        """
        lead = x_t.shape[:-1]
        t_emb = self.time_embed(t)  # (*t.shape, W)
        t_emb = t_emb.reshape(*t.shape, *([1] * (len(lead) - t.dim())), t_emb.shape[-1])
        c = t_emb + (self.condition(z) if cond is None else cond)  # (..., W)
        x = self.input_proj(x_t)  # (..., W)
        if self.head_type == "mlp":
            for block in self.blocks:
                x = block(x, c)
        else:
            rope = self.rope(x.shape[1], x.device, x.dtype)
            for block in self.blocks:
                x = block(x, c, rope)
        return self.final_layer(x, c)  # (..., C)

    def condition(self, z: torch.Tensor) -> torch.Tensor:
        """The head's projection of backbone features `(..., D) -> (..., W)`."""
        return self.cond_embed(z)


@dataclass
class MaskAudioFlowOutput(ModelOutput):
    """Output of [`MaskAudioFlow.forward`].

    Args:
        loss (`torch.Tensor` of shape `(B,)`): masked flow-matching loss per sample (average it to pretrain,
            weight it to fine-tune).
        v_t (`torch.Tensor` of shape `(M*B, T, C)`): predicted velocities (`M = flow_batch_mul`).
        u_t (`torch.Tensor` of shape `(M*B, T, C)`): target velocities.
        x_t (`torch.Tensor` of shape `(M*B, T, C)`): the head's input.
        t (`torch.Tensor` of shape `(M*B,)`): flow times.
        infill_mask (`torch.BoolTensor` of shape `(B, T)`): frames the loss averages over.
        z (`torch.Tensor` of shape `(B, T, D)`): backbone features.
    """

    loss: torch.Tensor | None = None
    v_t: torch.Tensor | None = None
    u_t: torch.Tensor | None = None
    x_t: torch.Tensor | None = None
    t: torch.Tensor | None = None
    infill_mask: torch.Tensor | None = None
    z: torch.Tensor | None = None


class MaskAudioFlowPreTrainedModel(PreTrainedModel):
    config_class = MaskAudioFlowConfig
    base_model_prefix = "maskaudioflow"
    main_input_name = "latents"

    def _init_weights(self, module: nn.Module) -> None:
        # DiT's initialize_weights: xavier for Linear, zeros where adaLN-Zero asks (marked by `_zero`).
        if isinstance(module, nn.Linear):
            if getattr(module, "_zero_init", False):
                nn.init.zeros_(module.weight)
            else:
                nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, MaskAudioFlow):
            nn.init.normal_(module.mask_embedding, std=0.02)
            nn.init.normal_(module.null_text_embedding, std=0.02)
        elif isinstance(module, TimestepEmbedder):
            for layer in (module.mlp[0], module.mlp[2]):
                nn.init.normal_(layer.weight, std=0.02)


class MaskAudioFlow(MaskAudioFlowPreTrainedModel):
    r"""MaskAudioFlow (Huang et al.), or its CFM baseline when `config.flow_type == "cfm"`.

    The model computes its own loss, per sample, so one forward serves pretraining (mean) and reward fine-tuning
    (weighted). Everything random in the forward can be passed in (`infill_mask`, `t`, `noise`,
    `text_drop_mask`) so that a policy and a frozen reference can see exactly the same `(x_t, t, z)` inputs.

    Example:

    >>> import torch
    >>> from base_model import MaskAudioFlow, MaskAudioFlowConfig
    >>> model = MaskAudioFlow(MaskAudioFlowConfig.from_preset("tiny", text_hidden_size=32))
    >>> out = model(torch.randn(2, 16, 20), torch.randn(2, 5, 32))
    >>> out.loss.shape
    torch.Size([2])
    """

    # LoRA targets when `--lora_target_modules` is not given: the backbone's attention and MLP projections and the
    # head's MLPs (PEFT reads a string as a regular expression over module names).
    lora_target_modules = r".*blocks\.\d+\.(self_attn\.(q|kv|out)|cross_attn\.(q|kv|out)|mlp\.(0|2))"

    def __init__(self, config: MaskAudioFlowConfig):
        super().__init__(config)
        D = config.hidden_size
        self.input_proj = nn.Linear(config.latent_channels, D)
        self.mask_embedding = nn.Parameter(torch.zeros(D))
        self.text_proj = nn.Linear(config.text_hidden_size, D)
        # Learned "empty prompt" (one token in text space) that replaces the text for CFG.
        self.null_text_embedding = nn.Parameter(torch.zeros(1, config.text_hidden_size))
        if config.flow_type == "cfm":
            self.time_embed = TimestepEmbedder(D)
        self.rope = RotaryEmbedding(D // config.num_heads, config.rope_theta)
        self.blocks = nn.ModuleList(
            [BackboneBlock(D, config.num_heads, config.mlp_ratio) for _ in range(config.num_layers)]
        )
        self.norm = nn.LayerNorm(D)
        self.head = FlowHead(config)
        self.post_init()

    # ----------------------------------------------------------------------------------------------- text
    def encode_context(
        self,
        text_hidden_states: torch.Tensor,
        text_padding_mask: torch.Tensor | None = None,
        text_drop_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Projects text hidden states for cross-attention, replacing dropped prompts by the null embedding.

        Args:
            text_hidden_states (`torch.Tensor` of shape `(B, L, D_text)`).
            text_padding_mask (`torch.BoolTensor` of shape `(B, L)`, True = real token).
            text_drop_mask (`torch.BoolTensor` of shape `(B,)`, True = use the null prompt).

        Returns: context `(B, L, D)` and its padding mask `(B, L)`.
        """
        B, L, _ = text_hidden_states.shape
        if text_padding_mask is None:
            text_padding_mask = torch.ones(B, L, dtype=torch.bool, device=text_hidden_states.device)
        text_padding_mask = text_padding_mask.bool()
        if text_drop_mask is not None and text_drop_mask.any():
            # The null prompt sits at position 0 with every other position padded out.
            null = self.null_text_embedding.to(text_hidden_states.dtype).expand(B, L, -1)
            drop = text_drop_mask[:, None, None]
            text_hidden_states = torch.where(drop, null, text_hidden_states)
            null_mask = torch.zeros_like(text_padding_mask)
            null_mask[:, 0] = True
            text_padding_mask = torch.where(text_drop_mask[:, None], null_mask, text_padding_mask)
        return self.text_proj(text_hidden_states), text_padding_mask

    def null_context(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The unconditional context `(B, 1, D)` and mask `(B, 1)` used by classifier-free guidance."""
        ctx = self.text_proj(self.null_text_embedding)[None].expand(batch_size, -1, -1)
        return ctx, torch.ones(batch_size, 1, dtype=torch.bool, device=ctx.device)

    def guidance_context(self, context: torch.Tensor, context_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`[cond; null]` contexts `(2B, L, D)` and masks `(2B, L)` for one batched CFG forward, the null prompt
        padded to `L` (its padding is masked out, so it equals [`null_context`] in attention)."""
        B, L = context.shape[:2]
        null_ctx, null_mask = self.null_context(B)
        null_ctx = F.pad(null_ctx, (0, 0, 0, L - 1))
        null_mask = F.pad(null_mask, (0, L - 1), value=False)
        return torch.cat([context, null_ctx]), torch.cat([context_mask, null_mask])

    def velocity(
        self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor | None = None, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The flow head `w_f(x_t, t, z) -> v_t`; pass `cond=model.head_condition(z)` instead of `z` when `z` stays
        fixed over many calls (see [`FlowHead.forward`] for the shapes it accepts)."""
        return self.head(x_t, t, z, cond)

    def head_condition(self, z: torch.Tensor) -> torch.Tensor:
        """The flow head's projection of backbone features, reusable across the ODE steps of one iteration."""
        return self.head.condition(z)

    # ------------------------------------------------------------------------------------------- backbone
    def backbone(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        infill_mask: torch.Tensor | None = None,
        t: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`w(text, x_known, infill_mask) -> z` (masked) or `w(text, x_t, t) -> z` (CFM baseline).

        Args:
            x (`torch.Tensor` of shape `(B, T, C)`): known latents (masked model; values under the mask are
                ignored) or `x_t` (CFM).
            context, context_mask: from [`encode_context`].
            infill_mask (`torch.BoolTensor` of shape `(B, T)`): True on frames to generate (masked model).
            t (`torch.Tensor` of shape `(B,)`): flow time (CFM only).

        Returns: `z` of shape `(B, T, D)`.
        """
        if self.config.flow_type == "masked":
            keep = (~infill_mask)[..., None].to(x.dtype)
            h = self.input_proj(x * keep) + self.mask_embedding * (1 - keep)  # (B, T, D)
        else:
            h = self.input_proj(x) + self.time_embed(t)[:, None]  # (B, T, D)
        # Absolute sinusoidal positions as well as RoPE: on a fully masked canvas every input token is the same
        # mask embedding, and attention over identical values is position-blind whatever RoPE does to the
        # weights, so without this the first decoding iteration could not tell frames apart (MAR adds learned
        # absolute position embeddings for the same reason).
        h = h + sinusoidal_positions(h.shape[1], h.shape[2], h.device, h.dtype)
        rope = self.rope(h.shape[1], h.device, h.dtype)
        for block in self.blocks:
            h = block(h, context, context_mask, rope)
        return self.norm(h)

    # -------------------------------------------------------------------------------------------- forward
    def draw_flow_inputs(
        self, latents: torch.Tensor, generator: torch.Generator | None = None, drop_text: bool = True
    ) -> dict[str, torch.Tensor | None]:
        """Draws everything random in the training forward, with the config's masking settings: the span mask
        (all frames for the CFM baseline), flow times, noise `x_0` and the CFG text dropout.

        Reward fine-tuning draws these once and passes them to both the policy and the frozen reference, so both
        see the same `(x_t, t, z)` inputs; pretraining lets `forward` draw them.

        Args:
            latents (`torch.Tensor` of shape `(B, T, C)`): clean latents `x_1` (only shape, dtype and device used).
            drop_text: draw `text_drop_mask` with `config.text_dropout_prob` (else it is None: keep every prompt).

        Returns: `{"infill_mask": (B, T) bool, "t": (M*B,), "noise": (M*B, T, C), "text_drop_mask": (B,) or None}`.
        """
        cfg = self.config
        B, T, C = latents.shape
        device, M = latents.device, cfg.flow_batch_mul
        text_drop_mask = None
        if drop_text and cfg.text_dropout_prob > 0:
            text_drop_mask = torch.rand(B, generator=generator, device=device) < cfg.text_dropout_prob
        if cfg.flow_type == "masked":
            ratio = sample_mask_ratio(B, cfg.mask_ratio_mode, cfg.mask_ratio, generator, device)
            infill_mask = sample_span_mask(B, T, cfg.span_length, ratio, generator, device)
        else:
            infill_mask = torch.ones(B, T, dtype=torch.bool, device=device)
        t = sample_time(M * B, generator, device)
        noise = torch.randn(M * B, T, C, generator=generator, device=device, dtype=latents.dtype)
        return {"infill_mask": infill_mask, "t": t, "noise": noise, "text_drop_mask": text_drop_mask}

    def forward(
        self,
        latents: torch.Tensor,
        text_hidden_states: torch.Tensor,
        text_padding_mask: torch.Tensor | None = None,
        infill_mask: torch.Tensor | None = None,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        text_drop_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        **kwargs,
    ) -> MaskAudioFlowOutput:
        r"""Masked conditional flow-matching loss on clean latents `x_1`.

        Args:
            latents (`torch.Tensor` of shape `(B, T, C)`): clean VAE latents `x_1`.
            text_hidden_states (`torch.Tensor` of shape `(B, L, D_text)`), text_padding_mask (`(B, L)`).
            infill_mask (`torch.BoolTensor` of shape `(B, T)`, *optional*): frames to generate; drawn as span masks
                from the config when omitted (all frames for the CFM baseline).
            t (`torch.Tensor` of shape `(M*B,)`, *optional*): flow times, `M = config.flow_batch_mul`.
            noise (`torch.Tensor` of shape `(M*B, T, C)`, *optional*): `x_0`.
            text_drop_mask (`torch.BoolTensor` of shape `(B,)`, *optional*): prompts replaced by the null prompt;
                drawn with `config.text_dropout_prob` in training mode when omitted.
            generator (`torch.Generator`, *optional*): for everything drawn here.
        """
        cfg = self.config
        x_1 = latents
        B, T, C = x_1.shape
        if C != cfg.latent_channels:
            raise ValueError(f"latents have {C} channels but the model expects {cfg.latent_channels}.")
        M = cfg.flow_batch_mul
        drop_text = self.training and text_drop_mask is None and cfg.text_dropout_prob > 0
        if infill_mask is None or t is None or noise is None or drop_text:
            drawn = self.draw_flow_inputs(x_1, generator, drop_text=drop_text)
            infill_mask = drawn["infill_mask"] if infill_mask is None else infill_mask
            t = drawn["t"] if t is None else t
            noise = drawn["noise"] if noise is None else noise
            text_drop_mask = drawn["text_drop_mask"] if text_drop_mask is None else text_drop_mask
        infill_mask = infill_mask.bool()
        context, context_mask = self.encode_context(text_hidden_states, text_padding_mask, text_drop_mask)

        x_1m, mask_m = x_1.repeat(M, 1, 1), infill_mask.repeat(M, 1)  # several t per backbone pass
        x_t, u_t = path_sample(noise, x_1m, t, cfg.sigma_min)  # (M*B, T, C)
        if cfg.flow_type == "masked":
            z = self.backbone(x_1, context, context_mask, infill_mask=infill_mask)  # (B, T, D), once
            # Known frames enter the head as clean data at t = 1, exactly as at sampling time (only matters
            # for the transformer head; the per-token head never mixes frames).
            x_t = torch.where(mask_m[..., None], x_t, x_1m)
            t_tok = torch.where(mask_m, t[:, None], torch.ones_like(t[:, None]))  # (M*B, T)
            v_t = self.velocity(x_t, t_tok, z.repeat(M, 1, 1))
        else:
            ctx_m, ctx_mask_m = context.repeat(M, 1, 1), context_mask.repeat(M, 1)
            z = self.backbone(x_t, ctx_m, ctx_mask_m, t=t)
            v_t = self.velocity(x_t, t, z)
        loss = masked_flow_loss(v_t, u_t, mask_m).view(M, B).mean(0)  # (B,)
        return MaskAudioFlowOutput(loss=loss, v_t=v_t, u_t=u_t, x_t=x_t, t=t, infill_mask=infill_mask, z=z)
