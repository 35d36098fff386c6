"""Time grids and integrators for the flow-matching head, chosen by name and counted in velocity evaluations (NFE).

The path is the head's training path: ``x_t = t * x1 + (1 - t) * eps`` (t = 0 noise, t = 1 data) and the head predicts
the velocity ``v = x1 - eps``. From a velocity at (x, t): the data prediction ``D = x + (1 - t) v`` and the score
``(t v - x) / (1 - t)``. The reference samples the SDE ``dx = [(1 + t) v - x] dt + sqrt(2 (1 - t)) dW`` (the ODE plus
Langevin noise of weight ``1 - t``, SiT's "sigma" diffusion) with Euler-Maruyama, then one deterministic step.

An integrator is a function ``(velocity, x0, grid, noise) -> x1`` where ``velocity(x, k)`` evaluates the guided head at
grid time index ``k`` (``k = len(grid)`` is t = 1, used by Heun only) and ``noise()`` returns the next standard normal
draw of x's shape. Coefficients are Python floats computed from the grid: the loop has no host-device synchronisation
and unrolls into a fixed graph under ``torch.compile``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

Velocity = Callable[[torch.Tensor, int], torch.Tensor]
Noise = Callable[[], torch.Tensor]
GRIDS = ("reference", "uniform")


@dataclass(frozen=True)
class TimeGrid:
    """``times[k]``: the k-th evaluation time; ``steps[k]``: the step taken from it (the last one ends at t = 1)."""

    times: tuple[float, ...]
    steps: tuple[float, ...]
    tensor: torch.Tensor  # the times as the fp32 CPU tensor their time embeddings are computed from

    def __len__(self) -> int:
        return len(self.times)

    def end(self, k: int) -> float:
        """The time the k-th step ends at (exactly 1.0 for the last step)."""
        return self.times[k + 1] if k + 1 < len(self.times) else 1.0


def shift_times(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Warp times towards the noise end (t = 0) for shift > 1: ``t / (t + (1 - t) * shift)`` (1 = unchanged)."""
    return t / (t + (1.0 - t) * shift)


def make_grid(num_steps: int, kind: str = "reference", shift: float = 1.0, last_step_size: float = 0.04) -> TimeGrid:
    """A grid of ``num_steps`` evaluation times in [0, 1).

    ``reference``: ``linspace(0, 1 - last_step_size, num_steps)`` then a final step of ``last_step_size`` (the official
    sampler's grid); ``uniform``: ``num_steps`` equal steps over [0, 1]. ``shift`` warps either towards the noise end.
    """
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps={num_steps!r} must be an int >= 1")
    if kind not in GRIDS:
        raise ValueError(f"time_grid={kind!r}: expected one of {GRIDS}")
    if isinstance(shift, bool) or not (isinstance(shift, (int, float)) and math.isfinite(shift) and shift > 0):
        raise ValueError(f"time_shift={shift!r} must be a positive number (1 = no shift, > 1 = more steps near noise)")
    if kind == "reference":
        if not 0.0 < last_step_size < 1.0:
            raise ValueError(f"last_step_size={last_step_size!r} must be in (0, 1)")
        ts = torch.linspace(0.0, 1.0 - last_step_size, num_steps)  # fp32, exactly the reference's
    else:
        ts = torch.linspace(0.0, 1.0, num_steps + 1)[:-1]
    if shift != 1.0:
        ts = shift_times(ts.double(), float(shift)).float()
    times = ts.tolist()
    steps = [times[k + 1] - times[k] for k in range(num_steps - 1)]
    last = last_step_size if kind == "reference" and shift == 1.0 else 1.0 - times[-1]
    return TimeGrid(tuple(times), tuple(steps + [last]), ts)


# ---------------------------------------------------------------------------------------------------- ODE integrators
def euler(velocity: Velocity, x: torch.Tensor, grid: TimeGrid, noise: Noise | None = None) -> torch.Tensor:
    """First order, 1 evaluation per step."""
    for k, h in enumerate(grid.steps):
        x = x + velocity(x, k) * h
    return x


def heun(velocity: Velocity, x: torch.Tensor, grid: TimeGrid, noise: Noise | None = None) -> torch.Tensor:
    """Second order (explicit trapezoid), 2 evaluations per step: the reference point for the multistep methods."""
    n = len(grid)
    for k, h in enumerate(grid.steps):
        v = velocity(x, k)
        v_end = velocity(x + v * h, k + 1 if k + 1 < n else n)  # index n: t = 1
        x = x + (v + v_end) * (0.5 * h)
    return x


def adams_bashforth2(velocity: Velocity, x: torch.Tensor, grid: TimeGrid, noise: Noise | None = None) -> torch.Tensor:
    """Second order, 1 evaluation per step: extrapolates the velocity from the last two (variable step sizes)."""
    v_prev, h_prev = None, 0.0
    for k, h in enumerate(grid.steps):
        v = velocity(x, k)
        if v_prev is None:
            x = x + v * h  # first step: Euler
        else:
            r = h / (2.0 * h_prev)
            x = x + (v * (1.0 + r) - v_prev * r) * h
        v_prev, h_prev = v, h
    return x


def _lam(t: float) -> float:
    """log-SNR of the path, log(t / (1 - t)); -inf at t = 0, +inf at t = 1."""
    if t <= 0.0:
        return -math.inf
    return math.inf if t >= 1.0 else math.log(t) - math.log1p(-t)


def dpmpp_2m(velocity: Velocity, x: torch.Tensor, grid: TimeGrid, noise: Noise | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) on the data prediction D = x + (1 - t) v; 1 evaluation per step.

    With alpha = t and sigma = 1 - t the first-order update is exactly Euler; the second-order one extrapolates D
    linearly in log-SNR. First order where a neighbouring step is infinite in log-SNR (from t = 0, to t = 1). On grids
    uniform in t the log-SNR steps next to both ends do not shrink with the step count, so the observed order there is
    between 1 and 2; :func:`adams_bashforth2` is the clean second-order method at the same cost.
    """
    d_prev, h_prev = None, math.inf
    for k in range(len(grid)):
        t, t_next = grid.times[k], grid.end(k)
        d = x + velocity(x, k) * (1.0 - t)
        h = _lam(t_next) - _lam(t)
        d_hat = d
        if d_prev is not None and math.isfinite(h) and math.isfinite(h_prev):
            c = h / (2.0 * h_prev)  # = 1 / (2 r)
            d_hat = d * (1.0 + c) - d_prev * c
        ratio = (1.0 - t_next) / (1.0 - t)  # sigma_{k+1} / sigma_k
        x = x * ratio + d_hat * (t_next - t * ratio)
        d_prev, h_prev = d, h
    return x


# ---------------------------------------------------------------------------------------------------- SDE integrators
def euler_maruyama(velocity: Velocity, x: torch.Tensor, grid: TimeGrid, noise: Noise | None = None) -> torch.Tensor:
    """The reference sampler: Euler-Maruyama with drift (1 + t) v - x, then one deterministic step."""
    n = len(grid)
    for k in range(n - 1):
        t, dt = grid.times[k], grid.steps[k]
        v = velocity(x, k)  # [N, C]
        w = noise()  # [N, C]
        x = torch.add(x * (1.0 - dt), v, alpha=(1.0 + t) * dt).add_(w, alpha=(2.0 * (1.0 - t) * dt) ** 0.5)
    return x + velocity(x, n - 1) * grid.steps[-1]  # final deterministic step


def euler_maruyama_ab2(velocity: Velocity, x: torch.Tensor, grid: TimeGrid, noise: Noise | None = None) -> torch.Tensor:
    """The reference SDE with the velocity in its drift extrapolated Adams-Bashforth-2 style from the last two
    evaluations (a stochastic Adams method: 2nd order drift, additive noise as Euler-Maruyama); 1 evaluation per step.
    """
    n = len(grid)
    v_prev, h_prev = None, 0.0
    for k in range(n - 1):
        t, dt = grid.times[k], grid.steps[k]
        v = velocity(x, k)  # [N, C]
        v_hat = v if v_prev is None else v * (1.0 + dt / (2.0 * h_prev)) - v_prev * (dt / (2.0 * h_prev))
        w = noise()  # [N, C]
        x = torch.add(x * (1.0 - dt), v_hat, alpha=(1.0 + t) * dt).add_(w, alpha=(2.0 * (1.0 - t) * dt) ** 0.5)
        v_prev, h_prev = v, dt
    return x + velocity(x, n - 1) * grid.steps[-1]  # final deterministic step


# ---------------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class SamplerSpec:
    """A named integrator: what it costs (velocity evaluations) and what it draws."""

    integrate: Callable[..., torch.Tensor]
    stochastic: bool  # draws noise at every step but the last (else only the initial noise)
    evals_per_step: int  # velocity evaluations per grid step
    order: int  # order of accuracy of its deterministic part
    summary: str

    def nfe(self, num_steps: int) -> int:
        """Velocity evaluations (each on cond + uncond rows under CFG) per token group."""
        return self.evals_per_step * num_steps

    def draws(self, num_steps: int) -> int:
        """Standard normal draws per token group: the initial noise, then one per stochastic step."""
        return num_steps if self.stochastic else 1


SAMPLERS: dict[str, SamplerSpec] = {
    "sde": SamplerSpec(euler_maruyama, True, 1, 1, "the reference: Euler-Maruyama SDE + a final deterministic step"),
    "ode": SamplerSpec(euler, False, 1, 1, "Euler on the probability-flow ODE; deterministic given the initial noise"),
    "heun": SamplerSpec(heun, False, 2, 2, "Heun (2nd order ODE), 2 evaluations per step"),
    "ab2": SamplerSpec(adams_bashforth2, False, 1, 2, "Adams-Bashforth 2 (2nd order ODE), reuses the last velocity"),
    "dpmpp_2m": SamplerSpec(dpmpp_2m, False, 1, 2, "DPM-Solver++(2M) (2nd order ODE in log-SNR), reuses the last D"),
    "sde_ab2": SamplerSpec(euler_maruyama_ab2, True, 1, 2, "the reference SDE with an Adams-Bashforth-2 drift"),
}


def get_sampler(name: str) -> SamplerSpec:
    if name not in SAMPLERS:
        raise ValueError(f"sampler={name!r}: expected one of {tuple(SAMPLERS)}")
    return SAMPLERS[name]
