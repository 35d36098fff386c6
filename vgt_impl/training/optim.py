"""Optimisation pieces: AdamW parameter groups, the learning-rate schedule, the EMA of the weights.

The schedule is a pure function of the step (no scheduler state), so a resumed run gets exactly the same learning
rates; it follows the reference: LinearLR warm-up from ``warmup_start_factor`` over 1 % of the steps, then cosine
annealing down to ``min_lr``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .config import EMAConfig, OptimConfig
from .task import ParamGroup


def build_optimizer(groups: Sequence[ParamGroup], cfg: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``groups``; weight decay only on tensors with >= 2 dims (the reference's CustomAdamW)."""
    torch_groups = []
    for g in groups:
        decay = [p for _, p in g.params if p.requires_grad and p.ndim >= 2]
        no_decay = [p for _, p in g.params if p.requires_grad and p.ndim < 2]
        for params, wd, kind in ((decay, cfg.weight_decay, "decay"), (no_decay, 0.0, "no_decay")):
            if params:
                torch_groups.append({"params": params, "weight_decay": wd, "lr": cfg.lr * g.lr_scale,
                                     "lr_scale": g.lr_scale, "name": f"{g.name}/{kind}"})
    if not torch_groups:
        raise ValueError("no trainable parameters for this phase: check which parts the config freezes")
    fused = cfg.fused if cfg.fused is not None else device.type == "cuda"
    return torch.optim.AdamW(torch_groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused or None)


@dataclass
class LRSchedule:
    """Warm-up then decay, as a function of the global step (a phase starting at ``start_step`` is offset)."""

    cfg: OptimConfig
    max_steps: int

    @property
    def warmup(self) -> int:
        span = max(1, self.max_steps - self.cfg.start_step)
        w = self.cfg.warmup_steps if self.cfg.warmup_steps is not None else int(self.cfg.warmup_ratio * span)
        return max(0, w)

    def lr(self, step: int) -> float:
        """Peak-relative learning rate at ``step`` (before any per-group ``lr_scale``)."""
        c = self.cfg
        s = step - c.start_step
        if s < 0:
            return 0.0
        if s < self.warmup:  # LinearLR: start_factor -> 1
            return c.lr * (c.warmup_start_factor + (1.0 - c.warmup_start_factor) * s / self.warmup)
        span = max(1, self.max_steps - c.start_step - self.warmup)
        frac = min(1.0, (s - self.warmup) / span)
        if c.schedule == "cosine":
            return c.min_lr + (c.lr - c.min_lr) * 0.5 * (1.0 + math.cos(math.pi * frac))
        if c.schedule == "linear":
            return c.lr + (c.min_lr - c.lr) * frac
        if c.schedule == "constant":
            return c.lr
        raise ValueError(f"unknown schedule {c.schedule!r}: expected cosine, linear or constant")

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self.lr(step)
        for g in optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        return lr


class EMA:
    """fp32 shadow copy of named parameters: ema <- (1 - m) ema + m p after each step; a plain copy before ``start``.

    Works on plain tensors and on FSDP2 shards (DTensors: every op stays local to the shard).
    """

    def __init__(self, named_params: Sequence[tuple[str, nn.Parameter]], cfg: EMAConfig):
        self.cfg = cfg
        self.params = {n: p for n, p in named_params}
        self.shadow = {n: p.detach().float().clone() for n, p in named_params}

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Call after the optimizer step of ``step`` (0-based); the EMA starts at ``step + 1 >= start_step``."""
        names = list(self.params)
        src = [self.params[n].detach() for n in names]
        dst = [self.shadow[n] for n in names]
        if step + 1 < self.cfg.start_step:
            torch._foreach_copy_(dst, src)
        else:
            src = [s.float() for s in src]
            torch._foreach_lerp_(dst, src, self.cfg.momentum)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the weights and the EMA (call twice to restore): samples and exports with EMA weights."""
        for n, p in self.params.items():
            tmp = p.detach().clone()
            p.copy_(self.shadow[n].to(p.dtype))
            self.shadow[n].copy_(tmp.float())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise ValueError(f"EMA state lacks {len(missing)} tensors (e.g. {missing[0]}): it is from another model")
        for n, t in self.shadow.items():
            t.copy_(state[n])
