"""Integrators on toy velocity fields with known solutions: convergence orders, NFE, draws, grids, the registry."""

from __future__ import annotations

import math

import pytest
import torch

from vgt_impl.integrators import SAMPLERS, get_sampler, make_grid, shift_times

MU, S = 0.7, 0.5  # Gaussian data N(MU, S^2) per coordinate


def _k(t: float) -> float:
    """Slope of the exact flow-matching velocity for Gaussian data: v = MU + k(t) (x - t MU)."""
    return (t * S * S - (1 - t)) / (t * t * S * S + (1 - t) ** 2)


def gaussian_velocity(grid):
    """The exact velocity of the head's path for Gaussian data; its ODE maps eps to MU + S * eps."""

    def velocity(x, k):
        t = grid.times[k] if k < len(grid) else 1.0
        return MU + _k(t) * (x - t * MU)

    return velocity


def _orders(errors: list[float]) -> list[float]:
    return [math.log2(a / b) for a, b in zip(errors, errors[1:])]


def _ode_errors(name: str, field: str, steps=(8, 16, 32, 64), kind: str = "uniform", shift: float = 1.0):
    errors = []
    for n in steps:
        grid = make_grid(n, kind, shift)
        if field == "gaussian":
            x0 = torch.linspace(-2, 2, 9, dtype=torch.float64)
            exact, velocity = MU + S * x0, gaussian_velocity(grid)
        else:  # dx/dt = x^2: x(1) = x0 / (1 - x0)
            x0 = torch.linspace(-1, 0.5, 7, dtype=torch.float64)
            exact, velocity = x0 / (1 - x0), (lambda x, k: x * x)
        out = get_sampler(name).integrate(velocity, x0.clone(), grid, None)
        errors.append((out - exact).abs().max().item())
    return errors


@pytest.mark.parametrize("field", ["gaussian", "square"])
@pytest.mark.parametrize("name, order", [("ode", 1), ("heun", 2), ("ab2", 2)])
def test_ode_convergence_order(name, order, field):
    orders = _orders(_ode_errors(name, field))
    assert min(orders[1:]) > order - 0.25 and max(orders) < order + 0.6, orders


@pytest.mark.parametrize("shift", [0.5, 3.0])
def test_second_order_on_shifted_grids(shift):
    for name in ("heun", "ab2"):
        orders = _orders(_ode_errors(name, "square", steps=(16, 32, 64, 128), shift=shift))
        assert min(orders[1:]) > 1.75, (name, shift, orders)


def test_dpmpp_2m_converges_faster_than_euler():
    """Second order away from the ends (nonlinear field); on the Gaussian flow its log-SNR end steps limit it."""
    assert min(_orders(_ode_errors("dpmpp_2m", "square"))) > 1.5
    dpm, eul = _ode_errors("dpmpp_2m", "gaussian"), _ode_errors("ode", "gaussian")
    assert all(d < e / 2 for d, e in zip(dpm, eul)) and dpm[-1] < 3e-3


def _sde_moments(name: str, n: int, kind: str = "uniform") -> tuple[float, float]:
    """Exact mean and std of an SDE sampler's output on Gaussian data.

    The velocity is affine in x, so the output is affine in (initial noise, step noises): one row with all inputs 0
    gives the mean, one row per input set to 1 gives its coefficient; the variance is the sum of their squares.
    """
    grid, spec = make_grid(n, kind), get_sampler(name)
    rows = 1 + spec.draws(n)
    x = torch.zeros(rows, dtype=torch.float64)
    x[1] = 1.0
    drawn = []

    def noise():
        w = torch.zeros(rows, dtype=torch.float64)
        w[2 + len(drawn)] = 1.0
        drawn.append(w)
        return w

    out = spec.integrate(gaussian_velocity(grid), x, grid, noise)
    assert len(drawn) == spec.draws(n) - 1
    coef = out[1:] - out[0]
    return out[0].item(), coef.square().sum().sqrt().item()


@pytest.mark.parametrize("name", ["sde", "sde_ab2"])
def test_sde_weak_convergence_on_gaussian_data(name):
    """The final distribution's std converges to the data's at first order; the mean is exact (linear drift)."""
    errors = []
    for n in (32, 64, 128, 256):
        mean, std = _sde_moments(name, n)
        assert mean == pytest.approx(MU, abs=1e-12)
        errors.append(abs(std - S))
    assert min(_orders(errors)) > 0.8 and errors[-1] < 3e-3, errors


def test_reference_sde_grid_is_the_reference_loop():
    """The registry's "sde" on the reference grid is the official loop: linspace(0, 0.96, n), then a step of 0.04."""
    grid = make_grid(6)
    assert grid.tensor.dtype == torch.float32 and torch.equal(grid.tensor, torch.linspace(0, 0.96, 6))
    assert grid.steps[-1] == 0.04 and grid.steps[0] == grid.times[1] - grid.times[0]
    seen = []
    x = get_sampler("sde").integrate(lambda x, k: seen.append(k) or torch.zeros_like(x), torch.ones(3), grid,
                                    lambda: torch.zeros(3))
    assert seen == list(range(6))
    expected = 1.0
    for t, dt in zip(grid.times[:-1], grid.steps[:-1]):
        expected *= 1.0 - dt  # drift -x with v = 0, no noise
    assert x.tolist() == pytest.approx([expected] * 3, abs=1e-7)


def test_grids():
    uni = make_grid(4, "uniform")
    assert uni.times == pytest.approx((0.0, 0.25, 0.5, 0.75)) and sum(uni.steps) == pytest.approx(1.0)
    sh = make_grid(4, "uniform", shift=3.0)
    assert sh.times[1] == pytest.approx(0.25 / (0.25 + 0.75 * 3.0)) and sum(sh.steps) == pytest.approx(1.0)
    assert sh.steps[0] < uni.steps[0] and sh.steps[-1] > uni.steps[-1]  # more steps near the noise end
    assert sum(make_grid(5, "reference", 2.0).steps) == pytest.approx(1.0)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert torch.equal(shift_times(t, 1.0), t)
    for kwargs, match in [(dict(num_steps=0), "num_steps"), (dict(num_steps=3, kind="karras"), "reference"),
                          (dict(num_steps=3, shift=-1.0), "time_shift"), (dict(num_steps=3, shift=True), "time_shift"),
                          (dict(num_steps=3, last_step_size=1.5),
                                                                           "last_step_size")]:
        with pytest.raises(ValueError, match=match):
            make_grid(**kwargs)


def test_registry_counts_evaluations_and_draws():
    for name, spec in SAMPLERS.items():
        grid = make_grid(5, "uniform")
        calls, draws = [], []
        spec.integrate(lambda x, k: calls.append(k) or -x, torch.ones(2), grid,
                       lambda: draws.append(1) or torch.zeros(2))
        assert len(calls) == spec.nfe(5), name
        assert 1 + len(draws) == spec.draws(5), name
    assert SAMPLERS["heun"].nfe(10) == 20 and SAMPLERS["ab2"].nfe(10) == 10
    with pytest.raises(ValueError, match="rk4.*expected one of"):
        get_sampler("rk4")
