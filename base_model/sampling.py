"""Samplers: iterative masked decoding (paper Algorithm 1) and the CFM baseline's plain ODE.

Reads like `flow_matching/solver/ode_solver.py`: `method`, `num_steps` (fixed grid, step `1/num_steps`),
`atol`/`rtol` for adaptive methods, `return_intermediates`, and a `generator` argument. CFG is folded into the
ODE function with the conditional and unconditional halves in one batched forward (DiT `forward_with_cfg`).

Reproducibility: pass one `torch.Generator` per sample (a list) and each sample's noise and reveal order depend
only on its own generator, so the same seed gives the same clip at any batch size or batch position.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torchdiffeq import odeint
from transformers.utils import ModelOutput

from .flow import num_spans, spans_to_frames

# torchdiffeq's fixed-grid solvers step on the grid we give them; the rest are adaptive (atol/rtol).
FIXED_GRID_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams")
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")


@dataclass
class SamplingConfig:
    """The sampler settings, with their defaults in one place: the pipeline, `generate.py`, rollout and evaluation
    configs all read (or inherit) these fields, so a default is written once.

    >>> SamplingConfig().cfg_scale
    3.0
    """

    num_iterations: int = field(default=8, metadata={"help": "Decoding iterations s (paper Algorithm 1)."})
    num_steps: int = field(default=25, metadata={"help": "ODE steps per iteration (fixed grid, step 1/num_steps)."})
    method: str = field(default="euler", metadata={"help": "torchdiffeq method (euler, midpoint, rk4, dopri5, ...)."})
    cfg_scale: float = field(
        default=3.0, metadata={"help": "Classifier-free guidance scale: v_u + s (v_c - v_u); 1 disables guidance."}
    )
    temperature: float = field(
        default=1.0,
        metadata={
            "help": "Scale of the starting noise x_0 (MAR's temperature): 1 is the noise the model was trained "
            "from; below 1 starts nearer the noise's mode."
        },
    )

    def __post_init__(self):
        check_sampling(self.num_iterations, self.num_steps, self.method, self.cfg_scale, self.temperature)

    def sampler_kwargs(self) -> dict:
        return {k: getattr(self, k) for k in ("num_iterations", "num_steps", "method", "cfg_scale", "temperature")}


def check_sampling(
    num_iterations: int, num_steps: int, method: str, cfg_scale: float, temperature: float = 1.0
) -> None:
    """Refuses sampler settings that cannot run, naming the flag and the fix."""
    if not isinstance(num_iterations, int) or num_iterations < 1:
        raise ValueError(f"--num_iterations must be an integer >= 1 (paper: 8), got {num_iterations!r}.")
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"--num_steps must be an integer >= 1 (paper: 25), got {num_steps!r}.")
    if method not in FIXED_GRID_METHODS + ADAPTIVE_METHODS:
        raise ValueError(
            f"--method {method!r} is not a torchdiffeq solver; use one of {', '.join(FIXED_GRID_METHODS + ADAPTIVE_METHODS)}."
        )
    if not isinstance(cfg_scale, (int, float)) or not math.isfinite(cfg_scale) or cfg_scale < 0:
        raise ValueError(f"--cfg_scale must be a finite number >= 0 (1 disables guidance), got {cfg_scale!r}.")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"--temperature must be a finite number > 0 (1: the trained noise), got {temperature!r}.")


def check_masked_sampling(flow_type: str, head_on: str, *sampling) -> None:
    """[`check_sampling`] plus what masked decoding needs: a masked model and a known `head_on`."""
    if flow_type != "masked" or head_on not in ("revealed", "masked"):
        raise ValueError(f"sample_masked needs flow_type 'masked' (use sample_cfm for 'cfm') and head_on 'revealed' "
                         f"or 'masked'; got {flow_type!r} and {head_on!r}.")  # fmt: skip
    check_sampling(*sampling)


GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


def solve_ode(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x_0: torch.Tensor,
    method: str = SamplingConfig.method,
    num_steps: int = SamplingConfig.num_steps,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    return_intermediates: bool = False,
) -> torch.Tensor:
    """Integrates `dx/dt = velocity(t, x)` from `t = 0` (noise) to `t = 1` (data) with torchdiffeq.

    Fixed-grid methods take `num_steps` steps of size `1 / num_steps` (euler: `num_steps` evaluations);
    adaptive methods (`dopri5`, `bosh3`, ...) use `atol`/`rtol`.

    Returns the endpoint `x_1` (shape of `x_0`), or all grid points `(num_steps + 1, *x_0.shape)` when
    `return_intermediates` (adaptive methods then report `num_steps + 1` evenly spaced points).
    """
    t_dtype = torch.float64 if x_0.dtype == torch.float64 else torch.float32
    t_grid = torch.linspace(0.0, 1.0, num_steps + 1, device=x_0.device, dtype=t_dtype)
    if method in FIXED_GRID_METHODS:
        traj = odeint(velocity, x_0, t_grid, method=method)
    else:
        t_eval = t_grid if return_intermediates else t_grid[[0, -1]]
        traj = odeint(velocity, x_0, t_eval, method=method, atol=atol, rtol=rtol)
    return traj if return_intermediates else traj[-1]


def decoding_schedule(num_spans: int, num_iterations: int) -> list[int]:
    """Number of spans still masked after each decoding iteration (paper Algorithm 1, MaskGIT/MAR cosine).

    After iteration `i < s - 1`, `floor(N * cos(pi/2 * (i + 1) / s))` spans stay masked, clamped so that at least
    one stays masked and at least one is revealed; the last iteration reveals the rest. With fewer spans than
    iterations decoding finishes early, so the list may be shorter than `num_iterations`; it always ends in 0.

    >>> decoding_schedule(312, 8)
    [306, 288, 259, 220, 173, 119, 60, 0]
    >>> decoding_schedule(2, 8)
    [1, 0]
    """
    if num_spans < 1 or num_iterations < 1:
        raise ValueError(f"need at least one span and one iteration, got {num_spans} and {num_iterations}.")
    masked, schedule = num_spans, []
    for i in range(num_iterations):
        if i == num_iterations - 1 or masked == 1:
            nxt = 0
        else:
            nxt = math.floor(num_spans * math.cos(math.pi / 2 * (i + 1) / num_iterations))
            nxt = min(max(nxt, 1), masked - 1)
        schedule.append(nxt)
        masked = nxt
        if masked == 0:
            break
    return schedule


def draw_noise_and_order(batch_size, num_frames, channels, n_spans, generator: GeneratorArg, device, dtype,
                         temperature: float = 1.0):  # fmt: skip
    """Noise `x_0` `(B, T, C)`, scaled by `temperature`, and span reveal priorities `(B, N)`, drawn per sample when
    given a list of generators (so a clip's draws do not depend on its batch)."""
    if isinstance(generator, Sequence):
        if len(generator) != batch_size:
            raise ValueError(f"got {len(generator)} generators for a batch of {batch_size}; pass one per sample.")
        noise = torch.stack([torch.randn(num_frames, channels, generator=g, device=device) for g in generator])
        prio = torch.stack([torch.rand(n_spans, generator=g, device=device) for g in generator])
    else:
        noise = torch.randn(batch_size, num_frames, channels, generator=generator, device=device)
        prio = torch.rand(batch_size, n_spans, generator=generator, device=device)
    return (noise * temperature).to(dtype), prio


@dataclass
class SamplerOutput(ModelOutput):
    """Output of the samplers.

    Args:
        latents (`torch.Tensor` of shape `(B, T, C)`): the generated latents.
        intermediates (`torch.Tensor` of shape `(K, B, T, C)`, *optional*): masked decoding: the canvas after each
            iteration (unknown frames are 0); CFM: the ODE state on the step grid.
        infill_masks (`torch.BoolTensor` of shape `(K, B, T)`, *optional*): masked decoding: frames still masked
            after each iteration.
        head_rows (`int`): frames the head was integrated on, summed over iterations (per sample, CFG not counted).
    """

    latents: torch.Tensor | None = None
    intermediates: torch.Tensor | None = None
    infill_masks: torch.Tensor | None = None
    head_rows: int | None = None


def classifier_free_guidance(v: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """`v_uncond + cfg_scale * (v_cond - v_uncond)` from the `[cond; uncond]` halves of one batched forward
    (`(2B, ...)` -> `(B, ...)`), DiT's `forward_with_cfg`. Every sampler guides through this one function."""
    v_cond, v_uncond = v.chunk(2)
    return v_uncond + cfg_scale * (v_cond - v_uncond)


def _prepare_context(model, text_hidden_states, text_padding_mask, cfg_scale: float, dtype):
    """Projected text context, with the null half appended when guiding; returns `(context, mask, rep)`."""
    context, context_mask = model.encode_context(text_hidden_states.to(dtype), text_padding_mask)
    if cfg_scale == 1.0:
        return context, context_mask, 1
    context, context_mask = model.guidance_context(context, context_mask)
    return context, context_mask, 2


def _reveal_rows(model, x, x_0, z, reveal, ode: dict, cfg_scale: float, rep: int) -> int:
    """Per-token head: integrates only the rows revealed this iteration (MAR `sample_tokens`), writes them into
    the canvas `x` in place and returns how many rows were integrated."""
    rows = reveal.nonzero(as_tuple=True)
    cond = model.head_condition(torch.cat([z_half[rows] for z_half in z.chunk(rep)]))  # (rep*n, W), once per iteration

    def velocity(t, x_rows):
        v = model.velocity(x_rows.repeat(rep, 1), t, cond=cond)  # t: one scalar for every row
        return classifier_free_guidance(v, cfg_scale) if rep == 2 else v

    x[rows] = solve_ode(velocity, x_0[rows], **ode)
    return rows[0].numel()


def _reveal_rows_static(model, x, x_0, z, spans, num_frames: int, ode: dict, cfg_scale: float, rep: int):
    """`_reveal_rows` with shapes that depend only on the schedule: the spans revealed this iteration are gathered
    by index (`spans (B, k)`, span ids; every sample reveals the same `k`, since the schedule is shared), so nothing
    waits on the host (no `nonzero`) and each iteration has one fixed shape, what CUDA graphs and `torch.compile`
    need. `x` and `x_0` are padded to `N · L` frames: rows past the clip's end are integrated with the rest and left
    in the padding. Writes the rows into `x` in place; returns how many real rows were integrated (a tensor)."""
    B, k = spans.shape
    C, W, L = x.shape[-1], z.shape[-1], model.config.span_length
    frames = (spans[..., None] * L + torch.arange(L, device=spans.device)).reshape(B, k * L)  # (B, k·L)
    z = torch.nn.functional.pad(z, (0, 0, 0, x.shape[1] - z.shape[1]))  # (rep·B, N·L, W)
    z_rows = z.gather(1, frames.repeat(rep, 1)[..., None].expand(-1, -1, W))  # (rep·B, k·L, W): cond half first
    cond = model.head_condition(z_rows.reshape(rep * B * k * L, W))  # once per iteration

    def velocity(t, x_rows):
        v = model.velocity(x_rows.repeat(rep, 1), t, cond=cond)
        return classifier_free_guidance(v, cfg_scale) if rep == 2 else v

    index = frames[..., None].expand(-1, -1, C)  # (B, k·L, C)
    x_rows = solve_ode(velocity, x_0.gather(1, index).reshape(B * k * L, C), **ode)
    x.scatter_(1, index, x_rows.view(B, k * L, C))
    return (frames < num_frames).sum()


def _reveal_sequence(model, x, x_0, z, infill, reveal, ode: dict, cfg_scale: float, rep: int) -> torch.Tensor:
    """Sequence head: all currently masked frames evolve together while known frames sit at their values with
    `t = 1`; the revealed ones are kept. Returns the new canvas."""
    infill_r, known_r = infill.repeat(rep, 1), x.repeat(rep, 1, 1)
    cond = model.head_condition(z)  # (rep*B, T, W), once per iteration

    def velocity(t, x_cur):
        x_in = torch.where(infill_r[..., None], x_cur.repeat(rep, 1, 1), known_r)
        t_tok = torch.where(infill_r, t, torch.ones_like(t))
        v = model.velocity(x_in, t_tok, cond=cond)
        v = classifier_free_guidance(v, cfg_scale) if rep == 2 else v
        return v * infill[..., None]  # zero velocity on known frames

    x_new = solve_ode(velocity, torch.where(infill[..., None], x_0, x), **ode)
    return torch.where(reveal[..., None], x_new, x)


def _reveal(path: str, model, x, x_0, z, infill, reveal, spans, ode: dict, cfg_scale: float, rep: int):
    """One iteration's head ODE along `path` (`"static"`, `"rows"` or `"sequence"`); returns the canvas and how
    many rows the head integrated."""
    if path == "static":
        return x, _reveal_rows_static(model, x, x_0, z, spans, reveal.shape[1], ode, cfg_scale, rep)
    if path == "rows":
        return x, _reveal_rows(model, x, x_0, z, reveal, ode, cfg_scale, rep)
    return _reveal_sequence(model, x, x_0, z, infill, reveal, ode, cfg_scale, rep), int(infill.sum())


@torch.inference_mode()
def sample_masked(
    model,
    text_hidden_states: torch.Tensor,
    text_padding_mask: torch.Tensor | None,
    num_frames: int,
    num_iterations: int = SamplingConfig.num_iterations,
    num_steps: int = SamplingConfig.num_steps,
    method: str = SamplingConfig.method,
    cfg_scale: float = SamplingConfig.cfg_scale,
    temperature: float = SamplingConfig.temperature,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    generator: GeneratorArg = None,
    return_intermediates: bool = False,
    head_on: str = "revealed",
    static_shapes: bool | None = None,
) -> SamplerOutput:
    r"""Iterative masked decoding (paper Algorithm 1).

    All `N = ceil(T / span_length)` spans start masked and the canvas at 0. Each iteration runs the backbone once
    on the known frames, then solves the head ODE from noise for the frames revealed in that iteration and writes
    them into the canvas; frames already known never change. Which spans stay masked is a random subset of those
    masked now (a per-sample random order, as MAR), so masks only shrink.

    Args:
        model ([`MaskAudioFlow`]): with `config.flow_type == "masked"`.
        text_hidden_states (`torch.Tensor` of shape `(B, L, D_text)`), text_padding_mask (`(B, L)`).
        num_frames (`int`): latent frames `T` to generate.
        num_iterations (`int`), num_steps (`int`): decoding iterations `s`; fixed-grid ODE steps per iteration.
        method (`str`): any torchdiffeq method; generator (`torch.Generator` or a list of one per sample).
        cfg_scale (`float`): `v = v_uncond + cfg_scale * (v_cond - v_uncond)`; 1 skips the unconditional pass.
        temperature (`float`): every ODE starts from `temperature * x_0` (MAR's temperature); 1 is the trained noise.
        head_on (`str`): `"revealed"` integrates the per-token head only on frames revealed this iteration (MAR);
            `"masked"` integrates all currently masked frames and keeps the revealed ones. The transformer head
            always uses `"masked"` since its frames interact.
        static_shapes (`bool`, *optional*): per-token head only: gather the revealed spans by index on a canvas
            padded to whole spans, so every iteration's shapes follow from `(T, num_iterations)` alone and the loop
            never waits on the host (for CUDA graphs / `torch.compile`). Equal to the default path within float
            round-off (`tests/test_sampling.py`). Defaults to `True` on CUDA, `False` elsewhere.

    >>> from base_model import MaskAudioFlow, MaskAudioFlowConfig
    >>> model = MaskAudioFlow(MaskAudioFlowConfig.from_preset("tiny", text_hidden_size=32)).eval()
    >>> sample_masked(model, torch.randn(2, 5, 32), None, num_frames=16, num_steps=4).latents.shape
    torch.Size([2, 16, 20])
    """
    cfg = model.config
    check_masked_sampling(cfg.flow_type, head_on, num_iterations, num_steps, method, cfg_scale, temperature)
    per_token = head_on == "revealed" and cfg.head_type == "mlp"  # the transformer head's frames interact
    B, device = text_hidden_states.shape[0], text_hidden_states.device
    dtype = next(model.parameters()).dtype
    C, T, L = cfg.latent_channels, num_frames, cfg.span_length
    N = num_spans(T, L)
    x_0, prio = draw_noise_and_order(B, T, C, N, generator, device, dtype, temperature)
    by_position = prio.argsort(dim=1)  # (B, N): column p holds the span revealed p-th
    rank = by_position.argsort(dim=1)  # (B, N): reveal position of each span
    context, context_mask, rep = _prepare_context(model, text_hidden_states, text_padding_mask, cfg_scale, dtype)
    ode = dict(method=method, num_steps=num_steps, atol=atol, rtol=rtol)
    static = device.type == "cuda" if static_shapes is None else static_shapes
    path = ("static" if static else "rows") if per_token else "sequence"
    if path == "static":  # the noise (and so the canvas) padded to whole spans
        x_0 = torch.nn.functional.pad(x_0, (0, 0, 0, N * L - T))
    x = torch.zeros_like(x_0)
    masked_spans, head_rows, canvases, masks = N, 0, [], []
    for masked_next in decoding_schedule(N, num_iterations):
        infill = spans_to_frames(rank >= N - masked_spans, L, T)  # (B, T) masked now
        still_masked = spans_to_frames(rank >= N - masked_next, L, T)  # (B, T) masked after this iteration
        z = model.backbone(x[:, :T].repeat(rep, 1, 1), context, context_mask, infill_mask=infill.repeat(rep, 1))
        spans = by_position[:, N - masked_spans : N - masked_next]  # (B, k): the spans revealed now
        x, rows = _reveal(path, model, x, x_0, z, infill, infill & ~still_masked, spans, ode, cfg_scale, rep)
        head_rows += rows
        masked_spans = masked_next
        if return_intermediates:
            canvases.append(x[:, :T].clone())
            masks.append(still_masked)
    return SamplerOutput(
        latents=x[:, :T].contiguous(),
        intermediates=torch.stack(canvases) if return_intermediates else None,
        infill_masks=torch.stack(masks) if return_intermediates else None,
        head_rows=int(head_rows) // B,  # with static shapes, the one host sync, after the loop
    )


@torch.inference_mode()
def sample_cfm(
    model,
    text_hidden_states: torch.Tensor,
    text_padding_mask: torch.Tensor | None,
    num_frames: int,
    num_steps: int = SamplingConfig.num_steps,
    method: str = SamplingConfig.method,
    cfg_scale: float = SamplingConfig.cfg_scale,
    temperature: float = SamplingConfig.temperature,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    generator: GeneratorArg = None,
    return_intermediates: bool = False,
    **unused,
) -> SamplerOutput:
    """The CFM baseline: integrate the whole network (backbone sees `x_t` and `t`) from noise for `num_steps`.

    Same arguments as [`sample_masked`] without the decoding ones.
    """
    cfg = model.config
    if cfg.flow_type != "cfm":
        raise ValueError("sample_cfm needs flow_type='cfm'; use sample_masked for MaskAudioFlow.")
    check_sampling(1, num_steps, method, cfg_scale, temperature)
    B, device = text_hidden_states.shape[0], text_hidden_states.device
    dtype = next(model.parameters()).dtype
    x_0, _ = draw_noise_and_order(B, num_frames, cfg.latent_channels, 1, generator, device, dtype, temperature)
    context, context_mask, rep = _prepare_context(model, text_hidden_states, text_padding_mask, cfg_scale, dtype)

    def velocity(t, x):
        x_in, t_in = x.repeat(rep, 1, 1), t.expand(rep * B)
        v = model.velocity(x_in, t, model.backbone(x_in, context, context_mask, t=t_in))
        return classifier_free_guidance(v, cfg_scale) if rep == 2 else v

    traj = solve_ode(velocity, x_0, method, num_steps, atol, rtol, return_intermediates=return_intermediates)
    latents = traj[-1] if return_intermediates else traj
    return SamplerOutput(
        latents=latents, intermediates=traj if return_intermediates else None, head_rows=num_frames * num_steps
    )


def sample(model, *args, **kwargs) -> SamplerOutput:
    """Dispatches to [`sample_masked`] or [`sample_cfm`] by `model.config.flow_type`."""
    if model.config.flow_type == "cfm":
        kwargs.pop("num_iterations", None)
        kwargs.pop("head_on", None)
        return sample_cfm(model, *args, **kwargs)
    return sample_masked(model, *args, **kwargs)
