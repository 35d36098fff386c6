"""Flow-matching samplers for the head, separate from the network: time grid, SDE / ODE, CFG and its schedules.

Flow-matching SDE follows the VGT/NextStep-1 reference sampler: Euler-Maruyama over ``linspace(0, 1 - last_step_size)``
with the score derived from the velocity, then one deterministic step of ``last_step_size``. All sampler math runs in
fp32 whatever the head's dtype; the loop has no host-device synchronisation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

NoiseFn = Callable[[tuple[int, ...], torch.dtype, torch.device], torch.Tensor]
CFG_SCHEDULES = ("linear", "constant")
METHODS = ("sde", "ode")


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
        self.shape, self.device, self.noise_fn = shape, device, noise_fn
        self.block: list[torch.Tensor] | None = None
        if noise_fn is None:
            cpu = torch.device("cpu")  # noise is drawn on CPU so a seed gives the same image on any device
            block = torch.stack([torch.randn(shape, generator=generator, device=cpu) for _ in range(draws)])
            if device.type != cpu.type and torch.cuda.is_available():
                block = block.pin_memory()
            self.block = list(block.to(device, non_blocking=True).unbind(0))

    def next(self) -> torch.Tensor:
        if self.block is not None:
            return self.block.pop(0)
        w = self.noise_fn(self.shape, torch.float32, self.device)
        if tuple(w.shape) != self.shape:
            raise ValueError(f"noise_fn returned shape {tuple(w.shape)}, expected {self.shape}")
        return w.to(device=self.device, dtype=torch.float32)


def embed_time_grid(head, num_steps: int, last_step_size: float = 0.04) -> torch.Tensor:
    """Time embeddings of the whole grid, [num_steps, 1, dim]: data-independent, so once per generation suffices."""
    ts = time_grid(num_steps, last_step_size).to(device=head.device)
    return head.embed_time(ts).unsqueeze(1)  # [S, 1, dim]


def _velocity(head, x: torch.Tensor, t_emb: torch.Tensor, c_emb: torch.Tensor, cfg: float, guided: bool):
    """Guided velocity in fp32: x [N, C] -> v [N, C] (cond rows first in c_emb when guided)."""
    xin = torch.cat([x, x], dim=0) if guided else x  # [2N|N, C]
    v = head.forward_embedded(xin, t_emb, c_emb).float()  # [2N|N, C]
    if not guided:
        return v
    v_c, v_u = v.chunk(2, dim=0)  # [N, C] each
    return torch.lerp(v_u, v_c, cfg)  # v_u + cfg * (v_c - v_u)


def _check(c: torch.Tensor, guided: bool, method: str, num_steps: int, t_embs: torch.Tensor | None) -> int:
    """Validate the arguments of :func:`sample_tokens`; returns the number of tokens N."""
    if method not in METHODS:
        raise ValueError(f"sampler method {method!r}: expected one of {METHODS}")
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps} must be >= 1")
    if c.ndim != 2 or (guided and c.shape[0] % 2):
        raise ValueError(f"conditions of shape {tuple(c.shape)}: expected [2N, D] (cond rows, then uncond rows) "
                         "when cfg_scale > 1, else [N, D]")
    if t_embs is not None and t_embs.shape[0] != num_steps:
        raise ValueError(f"time_embeddings has {t_embs.shape[0]} steps, expected num_steps={num_steps}")
    return c.shape[0] // 2 if guided else c.shape[0]


@torch.no_grad()
def sample_tokens(
    head, c: torch.Tensor, *, cfg_scale: float, num_steps: int, method: str = "sde", last_step_size: float = 0.04,
    noise_fn: NoiseFn | None = None, generator: torch.Generator | None = None,
    time_embeddings: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample tokens [N, C] (fp32) for conditions c ([2N, D], cond rows first, when cfg_scale > 1, else [N, D]).

    ``time_embeddings``: :func:`embed_time_grid` of the same grid, to compute them once per generation.
    """
    guided = cfg_scale > 1.0
    n = _check(c, guided, method, num_steps, time_embeddings)
    tl = time_grid(num_steps, last_step_size).tolist()  # CPU floats: no device sync in the loop
    t_embs = embed_time_grid(head, num_steps, last_step_size) if time_embeddings is None else time_embeddings
    c_emb = head.embed_condition(c)  # [2N|N, dim]: once per group, not once per step
    noise = NoiseSource(num_steps if method == "sde" else 1, (n, head.input_dim), c.device, noise_fn, generator)
    x = noise.next()  # [N, C]
    for i in range(num_steps - 1):
        t, dt = tl[i], tl[i + 1] - tl[i]
        v = _velocity(head, x, t_embs[i], c_emb, cfg_scale, guided)  # [N, C]
        if method == "ode":
            x = x + v * dt
            continue
        # Euler-Maruyama with drift v + (1-t) * score, score = (t v - x) / (1-t): drift = (1+t) v - x.
        w = noise.next()  # [N, C]
        x = torch.add(x * (1.0 - dt), v, alpha=(1.0 + t) * dt).add_(w, alpha=(2.0 * (1.0 - t) * dt) ** 0.5)
    v = _velocity(head, x, t_embs[-1], c_emb, cfg_scale, guided)
    return x + v * last_step_size  # final deterministic step
