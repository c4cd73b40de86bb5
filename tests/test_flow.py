"""Masks, path and loss (base_model/flow.py) and the ODE solver wrapper."""

import math

import pytest
import torch
from conftest import gen

from base_model.flow import masked_flow_loss, num_spans, path_sample, sample_mask_ratio, sample_span_mask
from base_model.sampling import solve_ode


def _runs(row: torch.Tensor) -> list[tuple[int, int]]:
    runs, start = [], None
    for i, v in enumerate(row.tolist() + [False]):
        if v and start is None:
            start = i
        if not v and start is not None:
            runs.append((start, i - start))
            start = None
    return runs


@pytest.mark.parametrize("span_length,num_frames", [(4, 64), (4, 62), (1, 50), (3, 31)])
def test_span_mask_spans_and_ratio(span_length, num_frames):
    mask = sample_span_mask(512, num_frames, span_length, 0.6, generator=gen())
    n = num_spans(num_frames, span_length)
    expected = round(0.6 * n)
    for row in mask[:64]:
        for start, length in _runs(row):
            assert start % span_length == 0  # runs start on span boundaries
            end = start + length
            assert end % span_length == 0 or end == num_frames  # and end on one (or the clip's end)
    spans = mask[:, ::span_length]  # first frame of each span tells its state
    assert (spans.sum(1) == expected).all()  # fixed ratio: exactly round(N * ratio) spans per sample
    # every span is equally likely to be masked
    assert (spans.float().mean(0) - expected / n).abs().max() < 0.12


def test_cosine_ratio_mode_matches_maskgit_distribution():
    r = sample_mask_ratio(20000, "cosine", 0.6, generator=gen())
    assert abs(r.mean().item() - 2 / math.pi) < 0.01  # E[cos(pi/2 U)] = 2/pi
    assert r.min() >= 0 and r.max() <= 1
    mask = sample_span_mask(4000, 40, 4, r[:4000], generator=gen(1))
    assert (mask[:, ::4].sum(1) >= 1).all()  # never an empty mask


def test_path_endpoints_and_target():
    x_0, x_1 = torch.randn(3, 5, 2, generator=gen()), torch.randn(3, 5, 2, generator=gen(1))
    sigma = 1e-3
    x_t, u_t = path_sample(x_0, x_1, torch.zeros(3), sigma)
    torch.testing.assert_close(x_t, x_0)
    x_t, _ = path_sample(x_0, x_1, torch.ones(3), sigma)
    torch.testing.assert_close(x_t, sigma * x_0 + x_1)
    # u_t is the time derivative of x_t (finite difference along t)
    t, h = torch.full((3,), 0.3), 1e-3
    d = (path_sample(x_0, x_1, t + h, sigma)[0] - path_sample(x_0, x_1, t, sigma)[0]) / h
    torch.testing.assert_close(d, u_t, atol=1e-3, rtol=1e-3)


def test_masked_loss_ignores_off_mask_frames():
    v, u = torch.randn(2, 8, 3, generator=gen()), torch.randn(2, 8, 3, generator=gen(1))
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[0, 2:5], mask[1, 6:] = True, True
    loss = masked_flow_loss(v, u, mask)
    v2, u2 = v.clone(), u.clone()
    v2[~mask] = float("nan")  # even non-finite values off the mask must not leak in
    u2[~mask] = 100.0
    torch.testing.assert_close(masked_flow_loss(v2, u2, mask), loss)
    # independent formula, one sample at a time
    for b in range(2):
        ref = ((v[b][mask[b]] - u[b][mask[b]]) ** 2).mean()
        torch.testing.assert_close(loss[b], ref)
    # exact prediction on the mask gives exactly zero
    v3 = torch.where(mask[..., None], u, v)
    assert (masked_flow_loss(v3, u, mask) == 0).all()


# --- ODE solver: closed-form endpoints of dx/dt = a x, per method's own discrete update -------------------
A = -0.7


def _discrete_growth(method: str, h: float) -> float:
    ah = A * h
    return {
        "euler": 1 + ah,
        "midpoint": 1 + ah + ah**2 / 2,
        "rk4": 1 + ah + ah**2 / 2 + ah**3 / 6 + ah**4 / 24,
    }[method]


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
@pytest.mark.parametrize("num_steps", [1, 4, 25])
def test_fixed_grid_solver_endpoints(method, num_steps):
    x_0 = torch.randn(4, 3, generator=gen(), dtype=torch.float64)
    x_1 = solve_ode(lambda t, x: A * x, x_0, method=method, num_steps=num_steps)
    expected = x_0 * _discrete_growth(method, 1 / num_steps) ** num_steps
    torch.testing.assert_close(x_1, expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_adaptive_solver_endpoint(method):
    x_0 = torch.randn(4, 3, generator=gen(), dtype=torch.float64)
    x_1 = solve_ode(lambda t, x: A * x, x_0, method=method, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(x_1, x_0 * math.exp(A), atol=1e-5, rtol=1e-5)


def test_euler_is_exact_on_the_straight_path():
    # The rectified-flow velocity of a single pair is constant, so one Euler step lands on x_1 exactly.
    x_0, target = torch.randn(4, 3, generator=gen()), torch.randn(4, 3, generator=gen(1))
    u = target - x_0
    traj = solve_ode(lambda t, x: u, x_0, "euler", num_steps=25, return_intermediates=True)
    assert traj.shape == (26, 4, 3)
    torch.testing.assert_close(traj[-1], target, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(traj[10], x_0 + 0.4 * u, atol=1e-5, rtol=1e-5)
