"""Losses of VGT-AR: flow matching on the latent tokens, and the optional REPA feature alignment.

Flow matching (the reference ``FlowMatchingHead.forward``): for clean tokens z and noise eps, t = sigmoid(u) with
u ~ N(0, 1), optionally time-shifted t <- 1 - s t / (1 + (s - 1) t); x_t = t z + (1 - t) eps; the head predicts the
velocity z - eps from (x_t, t, c); the loss is the squared error averaged over channels, then a masked mean over
tokens. ``batch_mul`` k > 1 draws k (t, eps) pairs per token (MAR's diffusion batch multiplier): the head is cheap next
to the LLM, so more draws per LLM pass lower the loss variance nearly for free; k = 1 is the reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

DrawFn = Callable[[str, tuple[int, ...]], torch.Tensor]


def shift_time(t: torch.Tensor, shift: float | None) -> torch.Tensor:
    """The reference's training time shift (``time_shift_fn_rae``): t <- 1 - s t / (1 + (s - 1) t); None = none."""
    if shift is None:
        return t
    return 1.0 - shift * t / (1.0 + (shift - 1.0) * t)


@dataclass
class FlowLoss:
    loss: torch.Tensor  # scalar
    per_token: torch.Tensor  # [k*N] squared error averaged over channels
    t: torch.Tensor  # [k*N] the times used
    features: torch.Tensor | None = None  # [k*N, dim] head features at the REPA depth (when asked)


def flow_matching_loss(
    head: nn.Module, target: torch.Tensor, cond: torch.Tensor, *, noise: torch.Tensor, u: torch.Tensor,
    time_shift: float | None = None, mask: torch.Tensor | None = None, feature_depth: int | None = None,
) -> FlowLoss:
    """target [N, C] clean tokens, cond [N, D], noise [k*N, C], u [k*N] -> :class:`FlowLoss` (k = noise rows / N).

    ``mask`` [N] weights tokens (default all ones). ``feature_depth`` d also returns the hidden state after the head's
    d-th block (REPA), computed by the same modules as ``head.forward``.
    """
    n, c = target.shape
    if noise.shape[0] % n or noise.shape[1:] != target.shape[1:] or u.shape != noise.shape[:1]:
        raise ValueError(f"draw shapes noise {tuple(noise.shape)} / u {tuple(u.shape)} do not fit target {(n, c)}")
    k = noise.shape[0] // n
    z = target.repeat(k, 1)  # [k*N, C] rows j*N + i
    cond = cond.repeat(k, 1)  # [k*N, D]
    t = shift_time(torch.sigmoid(u.float()), time_shift).to(device=z.device, dtype=z.dtype)  # [k*N]
    noise = noise.to(device=z.device, dtype=z.dtype)
    tt = t[:, None]
    x_t = tt * z + (1.0 - tt) * noise  # [k*N, C]
    velocity = z - noise  # [k*N, C]
    if feature_depth:
        pred, feats = head_forward_with_features(head, x_t, t, cond, feature_depth)
    else:
        pred, feats = head(x_t, t, cond), None
    per_token = (pred.float() - velocity.float()).pow(2).mean(dim=-1)  # [k*N]
    weights = torch.ones(n, device=z.device) if mask is None else mask.to(device=z.device, dtype=torch.float32)
    weights = weights.repeat(k)
    loss = (per_token * weights).sum() / (weights.sum() + 1e-8)
    return FlowLoss(loss, per_token.detach(), t.detach(), feats)


def head_forward_with_features(head: nn.Module, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor, depth: int):
    """The head's velocity and its hidden state after block ``depth`` (module by module, same math as forward)."""
    h = head.input_proj(x.to(head.dtype))  # [N, dim]
    y = head.embed_time(t) + head.embed_condition(c)  # [N, dim]
    feats = None
    for i, block in enumerate(head.res_blocks):
        h = block(h, y)
        if i + 1 == depth:
            feats = h
    if feats is None:
        raise ValueError(f"REPA depth {depth} exceeds the flow head's {len(head.res_blocks)} blocks")
    return head.final_layer(h, y), feats


def repa_loss(model_features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
    """Negative cosine similarity averaged over tokens (the reference's REPA term, before its weight)."""
    a = F.normalize(model_features.float(), dim=-1)
    b = F.normalize(target_features.float(), dim=-1)
    return -(a * b).sum(dim=-1).mean()
