"""Iterative masked decoding (paper Algorithm 1) and the CFM baseline sampler."""

import math

import pytest
import torch
from conftest import gen, randomize_zero_init

from base_model import MaskAudioFlow, MaskAudioFlowConfig
from base_model.sampling import decoding_schedule, sample, sample_cfm, sample_masked

TEXT_DIM = 32


def model_for(**kw) -> MaskAudioFlow:
    torch.manual_seed(0)
    m = MaskAudioFlow(MaskAudioFlowConfig.from_preset("tiny", text_hidden_size=TEXT_DIM, **kw))
    return randomize_zero_init(m).eval()


def schedule_by_hand(N: int, s: int) -> list[int]:
    """DESIGN.md's rule, written independently: masked-after counts for iterations 0..s-1, stopping at 0."""
    out, m = [], N
    for i in range(s):
        if m == 0:
            break
        target = 0 if i == s - 1 else int(N * math.cos(math.pi / 2 * (i + 1) / s) // 1)
        if i < s - 1:
            target = max(1, min(target, m - 1)) if m > 1 else 0
        out.append(target)
        m = target
    return out


@pytest.mark.parametrize(
    "N,s", [(312, 8), (32, 8), (16, 16), (8, 8), (5, 8), (2, 8), (1, 8), (40, 1), (40, 2), (7, 3)]
)
def test_decoding_schedule(N, s):
    sched = decoding_schedule(N, s)
    assert sched == schedule_by_hand(N, s)
    assert sched[-1] == 0 and len(sched) <= s
    counts = [N] + sched
    assert all(a > b for a, b in zip(counts, counts[1:]))  # at least one span revealed every iteration
    assert all(c >= 1 for c in sched[:-1])  # at least one span stays masked until the last iteration
    if N >= s:
        assert len(sched) == s


def test_mar_schedule_numbers():
    # MAR's cosine schedule for 312 tokens and 8 iterations (research/performance-anchors.md, section 6.3)
    assert decoding_schedule(312, 8) == [306, 288, 259, 220, 173, 119, 60, 0]


@pytest.mark.parametrize("head_type", ["mlp", "transformer"])
@pytest.mark.parametrize("T,s", [(22, 8), (16, 4), (6, 8)])
def test_masks_shrink_and_known_frames_never_change(head_type, T, s):
    model = model_for(head_type=head_type)
    L = model.config.span_length
    N = math.ceil(T / L)
    out = sample_masked(
        model,
        torch.randn(3, 4, TEXT_DIM, generator=gen()),
        None,
        T,
        num_iterations=s,
        num_steps=3,
        generator=gen(),
        return_intermediates=True,
    )
    masks, canvases = out.infill_masks, out.intermediates
    sched = decoding_schedule(N, s)
    assert masks.shape[0] == len(sched)
    # per iteration, exactly the scheduled number of spans stays masked
    for k, m_after in enumerate(sched):
        assert (masks[k][:, ::L].sum(1) == m_after).all()
    prev_mask = torch.ones(3, T, dtype=torch.bool)
    prev = torch.zeros(3, T, 20)
    for k in range(len(sched)):
        m = masks[k]
        assert not (m & ~prev_mask).any()  # masks only shrink
        known_before = ~prev_mask
        assert torch.equal(canvases[k][known_before], prev[known_before])  # known frames never change
        assert (canvases[k][m] == 0).all()  # still-masked frames are untouched
        prev_mask, prev = m, canvases[k]
    assert not masks[-1].any()
    torch.testing.assert_close(canvases[-1], out.latents)


@pytest.mark.parametrize("flow_type,head_type", [("masked", "mlp"), ("masked", "transformer"), ("cfm", "mlp")])
def test_same_seed_same_sample_whatever_the_batch(flow_type, head_type):
    model = model_for(flow_type=flow_type, head_type=head_type)
    text = torch.randn(4, 6, TEXT_DIM, generator=gen())
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[0, 3:], mask[2, 5:] = False, False  # different prompt lengths, so padding differs across the batch
    seeds = [11, 12, 13, 14]
    full = sample(model, text, mask, 18, num_steps=4, generator=[gen(s) for s in seeds]).latents
    for i in range(4):
        L = int(mask[i].sum())
        alone = sample(model, text[i : i + 1, :L], None, 18, num_steps=4, generator=[gen(seeds[i])]).latents
        torch.testing.assert_close(alone[0], full[i], atol=1e-5, rtol=1e-4)
    # moving a sample to another position in the batch does not change it either
    perm = [2, 0, 3, 1]
    moved = sample(model, text[perm], mask[perm], 18, num_steps=4, generator=[gen(seeds[p]) for p in perm]).latents
    torch.testing.assert_close(moved, full[perm], atol=1e-5, rtol=1e-4)
    # and a different seed gives a different sample
    other = sample(model, text[:1], mask[:1], 18, num_steps=4, generator=[gen(99)]).latents
    assert (other[0] - full[0]).abs().max() > 1e-2


@pytest.mark.parametrize("flow_type", ["masked", "cfm"])
def test_cfg_scale_one_equals_conditional_pass(flow_type):
    # cfg_scale=1 skips the unconditional half; a scale a hair above 1 runs the batched [cond; uncond] forward.
    # Both must agree, so the conditional half of the batched forward is the plain conditional pass.
    model = model_for(flow_type=flow_type)
    text = torch.randn(2, 4, TEXT_DIM, generator=gen())
    a = sample(model, text, None, 12, num_steps=4, cfg_scale=1.0, generator=[gen(1), gen(2)]).latents
    b = sample(model, text, None, 12, num_steps=4, cfg_scale=1.0 + 1e-6, generator=[gen(1), gen(2)]).latents
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    c = sample(model, text, None, 12, num_steps=4, cfg_scale=3.0, generator=[gen(1), gen(2)]).latents
    assert (c - a).abs().max() > 1e-3  # guidance does something


def test_revealed_only_head_equals_all_frames_head():
    model = model_for(head_type="mlp")
    text = torch.randn(3, 4, TEXT_DIM, generator=gen())
    T = 30
    fast = sample_masked(model, text, None, T, num_steps=5, generator=[gen(s) for s in range(3)])
    full = sample_masked(model, text, None, T, num_steps=5, generator=[gen(s) for s in range(3)], head_on="masked")
    torch.testing.assert_close(fast.latents, full.latents, atol=1e-5, rtol=1e-5)
    assert fast.head_rows == T  # every frame goes through the head exactly once
    assert full.head_rows > 2 * T  # the plain version integrates every masked frame every iteration


@pytest.mark.parametrize("T,cfg_scale", [(30, 3.0), (32, 1.0), (9, 3.0)])
def test_static_shapes_equal_the_gathered_rows(T, cfg_scale):
    """The GPU path (revealed spans gathered by index on a canvas padded to whole spans: fixed shapes, no host
    sync) computes the same rows as `nonzero`, in another order, so the same clips within BLAS round-off; a short
    last span (T = 30, 9 with spans of 4) is integrated in the padding and dropped."""
    model = model_for(head_type="mlp")
    text = torch.randn(3, 4, TEXT_DIM, generator=gen())
    kw = dict(num_steps=5, cfg_scale=cfg_scale, return_intermediates=True)
    rows = sample_masked(model, text, None, T, generator=[gen(s) for s in range(3)], static_shapes=False, **kw)
    static = sample_masked(model, text, None, T, generator=[gen(s) for s in range(3)], static_shapes=True, **kw)
    assert static.latents.shape == (3, T, model.config.latent_channels)
    torch.testing.assert_close(static.latents, rows.latents, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(static.intermediates, rows.intermediates, atol=1e-5, rtol=1e-5)
    assert torch.equal(static.infill_masks, rows.infill_masks) and static.head_rows == rows.head_rows == T


@pytest.mark.parametrize("method", ["euler", "midpoint", "dopri5"])
def test_any_torchdiffeq_method(method):
    model = model_for()
    out = sample(
        model, torch.randn(1, 3, TEXT_DIM, generator=gen()), None, 8, num_steps=4, method=method, generator=[gen()]
    )
    assert out.latents.shape == (1, 8, 20) and torch.isfinite(out.latents).all()


def test_cfm_sampler_intermediates_and_type_checks():
    cfm = model_for(flow_type="cfm")
    out = sample_cfm(
        cfm,
        torch.randn(2, 3, TEXT_DIM, generator=gen()),
        None,
        10,
        num_steps=5,
        generator=gen(),
        return_intermediates=True,
    )
    assert out.intermediates.shape == (6, 2, 10, 20)
    torch.testing.assert_close(out.intermediates[-1], out.latents)
    with pytest.raises(ValueError, match="sample_masked"):
        sample_cfm(model_for(), torch.randn(1, 3, TEXT_DIM), None, 8)
    with pytest.raises(ValueError, match="sample_cfm"):
        sample_masked(cfm, torch.randn(1, 3, TEXT_DIM), None, 8)
    with pytest.raises(ValueError, match="one per sample"):
        sample_masked(model_for(), torch.randn(2, 3, TEXT_DIM), None, 8, generator=[gen()])


@pytest.mark.parametrize("flow_type", ["masked", "cfm"])
def test_temperature_scales_the_starting_noise(flow_type):
    """With the velocity zeroed, every frame ends where its ODE started: `temperature * x_0`, the same draws."""
    model = model_for(flow_type=flow_type)
    text = torch.randn(2, 4, TEXT_DIM, generator=gen())
    kw = dict(num_steps=4, cfg_scale=3.0)
    trained = sample(model, text, None, 12, generator=[gen(1), gen(2)], **kw).latents
    cooled = sample(model, text, None, 12, generator=[gen(1), gen(2)], temperature=0.5, **kw).latents
    assert (cooled - trained).abs().max() > 1e-3  # the start moved, and so did the sample
    model.velocity = lambda x, *args, **kwargs: torch.zeros_like(x)
    noise = sample(model, text, None, 12, generator=[gen(1), gen(2)], **kw).latents
    half = sample(model, text, None, 12, generator=[gen(1), gen(2)], temperature=0.5, **kw).latents
    torch.testing.assert_close(half, 0.5 * noise)
    assert noise.std() > 0.5  # the trained noise, not a canvas of zeros
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="--temperature"):
            sample(model, text, None, 12, temperature=bad)
