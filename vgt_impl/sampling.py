"""Flow-matching sampling of the head, separate from the network: CFG and its schedules, noise, time embeddings.

The integrators and time grids live in ``integrators.py`` and are chosen by name (``FlowSampler.method``). The default,
``"sde"``, is the VGT/NextStep-1 reference sampler: Euler-Maruyama over ``linspace(0, 1 - last_step_size)`` with the
score derived from the velocity, then one deterministic step of ``last_step_size``. All sampler math runs in fp32
whatever the head's dtype; the loop has no host-device synchronisation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .integrators import SAMPLERS, SamplerSpec, TimeGrid, get_sampler, heun, make_grid

NoiseFn = Callable[[tuple[int, ...], torch.dtype, torch.device], torch.Tensor]
CFG_SCHEDULES = ("linear", "constant")
METHODS = tuple(SAMPLERS)


def time_grid(num_steps: int, last_step_size: float = 0.04) -> torch.Tensor:
    """The reference grid: ``num_steps`` times from 0 to 1 - last_step_size (fp32, CPU)."""
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps} must be >= 1")
    return torch.linspace(0.0, 1.0 - last_step_size, num_steps)


def cfg_for_group(schedule: str, cfg_scale: float, group_index: int, num_groups: int) -> float:
    """Guidance of a token group: ``constant``; ``linear`` = full scale on group 0, then 1 + (s-1)(G-k)/G."""
    if schedule == "constant" or group_index == 0:
        if schedule not in CFG_SCHEDULES:
            raise ValueError(f"cfg_schedule={schedule!r}: expected one of {CFG_SCHEDULES}")
        return float(cfg_scale)
    if schedule == "linear":
        return 1.0 + (cfg_scale - 1.0) * (num_groups - group_index) / num_groups
    raise ValueError(f"cfg_schedule={schedule!r}: expected one of {CFG_SCHEDULES}")


class NoiseSource:
    """The sampler's random draws for one token group, in the reference order (initial noise, then one per SDE step).

    ``noise_fn`` (replay) is called once per draw. Otherwise all draws of the group come from the CPU generator (so a
    seed means the same image on any device) and reach the device in ONE copy, pinned where that applies, instead of
    one blocking host-to-device copy per flow step.
    """

    def __init__(self, draws: int, shape: tuple[int, int], device: torch.device, noise_fn: NoiseFn | None,
                 generator: torch.Generator | None):
        self.shape, self.device, self.noise_fn, self.draws = shape, device, noise_fn, draws
        self.tensor: torch.Tensor | None = None  # [draws, *shape] on the device
        self.i = 0
        if noise_fn is None:
            cpu = torch.device("cpu")  # noise is drawn on CPU so a seed gives the same image on any device
            block = torch.stack([torch.randn(shape, generator=generator, device=cpu) for _ in range(draws)])
            if device.type != cpu.type and torch.cuda.is_available():
                block = block.pin_memory()
            self.tensor = block.to(device, non_blocking=True)

    def stacked(self) -> torch.Tensor:
        """Every draw of the group at once, [draws, *shape] on the device (``noise_fn`` is called once per draw)."""
        if self.tensor is None:
            self.tensor = torch.stack([self.next() for _ in range(self.draws)])
        return self.tensor

    def next(self) -> torch.Tensor:
        if self.tensor is not None:
            self.i += 1
            return self.tensor[self.i - 1]
        w = self.noise_fn(self.shape, torch.float32, self.device)
        if tuple(w.shape) != self.shape:
            raise ValueError(f"noise_fn returned shape {tuple(w.shape)}, expected {self.shape}")
        return w.to(device=self.device, dtype=torch.float32)


def embed_time_grid(head, num_steps: int, last_step_size: float = 0.04, *, time_grid: str = "reference",
                    time_shift: float = 1.0, endpoint: bool = False) -> torch.Tensor:
    """Time embeddings of the whole grid, [S(+1), 1, dim]: data-independent, so once per generation suffices.

    ``endpoint`` appends t = 1 (Heun evaluates there); it is embedded separately so the grid rows do not change.
    """
    grid = make_grid(num_steps, time_grid, time_shift, last_step_size)
    embs = head.embed_time(grid.tensor.to(device=head.device))  # [S, dim]
    if endpoint:
        embs = torch.cat([embs, head.embed_time(torch.ones(1, device=head.device))], dim=0)  # [S+1, dim]
    return embs.unsqueeze(1)


@dataclass(frozen=True)
class FlowSampler:
    """How the head samples each token group: integrator by name, steps, time grid (see ``integrators.py``)."""

    method: str = "sde"  # a name from integrators.SAMPLERS; "sde" is the reference
    num_steps: int = 30  # grid steps per token group (NFE = steps x evaluations per step)
    time_grid: str = "reference"  # "reference" (linspace to 1 - last_step_size, then that step) or "uniform"
    time_shift: float = 1.0  # > 1 puts more steps near the noise end
    last_step_size: float = 0.04  # the reference grid's final deterministic step

    @property
    def spec(self) -> SamplerSpec:
        return get_sampler(self.method)

    @property
    def grid(self) -> TimeGrid:
        return make_grid(self.num_steps, self.time_grid, self.time_shift, self.last_step_size)

    @property
    def nfe(self) -> int:
        return self.spec.nfe(self.num_steps)

    @property
    def draws(self) -> int:
        return self.spec.draws(self.num_steps)

    @property
    def endpoint(self) -> bool:
        return self.spec.integrate is heun

    def time_embeddings(self, head) -> torch.Tensor:
        return embed_time_grid(head, self.num_steps, self.last_step_size, time_grid=self.time_grid,
                               time_shift=self.time_shift, endpoint=self.endpoint)


def _velocity(head, x: torch.Tensor, t_emb: torch.Tensor, c_emb: torch.Tensor, cfg, guided: bool):
    """Guided velocity in fp32: x [N, C] -> v [N, C] (cond rows first in c_emb when guided; cfg a float or 0-d tensor)."""
    xin = torch.cat([x, x], dim=0) if guided else x  # [2N|N, C]
    v = head.forward_embedded(xin, t_emb, c_emb).float()  # [2N|N, C]
    if not guided:
        return v
    v_c, v_u = v.chunk(2, dim=0)  # [N, C] each
    return torch.lerp(v_u, v_c, cfg)  # v_u + cfg * (v_c - v_u)


def integrate(head, sampler: FlowSampler, grid: TimeGrid, t_embs: torch.Tensor, c_emb: torch.Tensor, x: torch.Tensor,
              cfg, guided: bool, noise: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Run the named integrator from x [N, C] (fp32) at t = 0 to t = 1 with the guided head; no host syncs."""
    velocity = lambda y, k: _velocity(head, y, t_embs[k], c_emb, cfg, guided)  # noqa: E731
    return sampler.spec.integrate(velocity, x, grid, noise)


def _check(c: torch.Tensor, guided: bool, sampler: FlowSampler, t_embs: torch.Tensor | None) -> int:
    """Validate the arguments of :func:`sample_tokens`; returns the number of tokens N."""
    get_sampler(sampler.method)
    sampler.grid  # noqa: B018  validates steps, grid name and shift
    if c.ndim != 2 or (guided and c.shape[0] % 2):
        raise ValueError(f"conditions of shape {tuple(c.shape)}: expected [2N, D] (cond rows, then uncond rows) "
                         "when cfg_scale > 1, else [N, D]")
    rows = sampler.num_steps + int(sampler.endpoint)
    if t_embs is not None and t_embs.shape[0] != rows:
        raise ValueError(f"time_embeddings has {t_embs.shape[0]} steps, expected num_steps={sampler.num_steps}"
                         + (" + the t = 1 endpoint" if sampler.endpoint else ""))
    return c.shape[0] // 2 if guided else c.shape[0]


@torch.no_grad()
def sample_tokens(
    head, c: torch.Tensor, *, cfg_scale: float, num_steps: int, method: str = "sde", last_step_size: float = 0.04,
    time_grid: str = "reference", time_shift: float = 1.0, noise_fn: NoiseFn | None = None,
    generator: torch.Generator | None = None, time_embeddings: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample tokens [N, C] (fp32) for conditions c ([2N, D], cond rows first, when cfg_scale > 1, else [N, D]).

    ``method``: an integrator from :data:`integrators.SAMPLERS`; ``time_embeddings``: :func:`embed_time_grid` of the
    same grid, to compute them once per generation.
    """
    guided = cfg_scale > 1.0
    sampler = FlowSampler(method, num_steps, time_grid, time_shift, last_step_size)
    n = _check(c, guided, sampler, time_embeddings)
    t_embs = sampler.time_embeddings(head) if time_embeddings is None else time_embeddings
    c_emb = head.embed_condition(c)  # [2N|N, dim]: once per group, not once per step
    noise = NoiseSource(sampler.draws, (n, head.input_dim), c.device, noise_fn, generator)
    x = noise.next()  # [N, C]
    return integrate(head, sampler, sampler.grid, t_embs, c_emb, x, cfg_scale, guided, noise.next)
