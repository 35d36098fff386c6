"""The flow-matching head network: an AdaLN residual MLP that predicts a velocity for one latent token.

Only the network lives here (``forward(x, t, c)``); integrators and guidance are in ``sampling.py``. The layer names
match the official ``image_head.net.*`` keys (the head follows the NextStep-1 / VGT design).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import FlowHeadConfig


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def timestep_features(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of raw t in [0, 1]: [N] -> [N, dim] as [cos, sin], computed in fp32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # [N, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    def __init__(self, dim: int, frequency_embedding_size: int = 256, **factory: Any):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, dim, **factory), nn.SiLU(), nn.Linear(dim, dim, **factory)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        feats = timestep_features(t, self.frequency_embedding_size)  # [N, F] fp32
        return self.mlp(feats.to(self.mlp[0].weight.dtype))  # [N, dim]


class AdaLNBlock(nn.Module):
    """LayerNorm -> shift/scale from y -> MLP -> gated residual."""

    def __init__(self, dim: int, mlp_ratio: float = 1.0, **factory: Any):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.in_ln = nn.LayerNorm(dim, eps=1e-6, **factory)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden, **factory), nn.SiLU(), nn.Linear(hidden, dim, **factory))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim, **factory))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)  # [N, dim] each
        return x + gate * self.mlp(modulate(self.in_ln(x), shift, scale))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_dim: int, **factory: Any):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_dim, **factory)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim, **factory))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(y).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class FlowHead(nn.Module):
    """Velocity network v(x, t, c) for one 32-d token, conditioned on the LLM's (projected) hidden state c."""

    def __init__(self, input_dim: int = 32, cond_dim: int = 2048, dim: int = 1536, layers: int = 12,
                 mlp_ratio: float = 1.0, frequency_embedding_size: int = 256, *,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        super().__init__()
        factory = {"dtype": dtype, "device": device}
        self.input_dim = input_dim
        self.time_embed = TimestepEmbedder(dim, frequency_embedding_size, **factory)
        self.cond_embed = nn.Linear(cond_dim, dim, **factory)
        self.input_proj = nn.Linear(input_dim, dim, **factory)
        self.res_blocks = nn.ModuleList(AdaLNBlock(dim, mlp_ratio, **factory) for _ in range(layers))
        self.final_layer = FinalLayer(dim, input_dim, **factory)

    @classmethod
    def from_config(cls, config: FlowHeadConfig, **factory: Any) -> FlowHead:
        """Build from a :class:`FlowHeadConfig`; ``factory`` = ``dtype`` / ``device``."""
        return cls(config.input_dim, config.cond_dim, config.dim, config.layers, config.mlp_ratio,
                   config.frequency_embedding_size, **factory)

    @property
    def dtype(self) -> torch.dtype:
        return self.input_proj.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.input_proj.weight.device

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x [N, C], t [N] in [0, 1], c [N, cond_dim] -> velocity [N, C]."""
        return self.forward_embedded(x, self.embed_time(t), self.embed_condition(c))  # [N, C]

    def embed_condition(self, c: torch.Tensor) -> torch.Tensor:
        """The part that depends only on c: computed once per token group, not once per flow step."""
        return self.cond_embed(c.to(self.dtype))  # [N, dim]

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """Time embeddings: t [N] (or a scalar) -> [N, dim]; for a fixed time grid compute them once per generation."""
        return self.time_embed(t.reshape(-1))

    def forward_embedded(self, x: torch.Tensor, t_emb: torch.Tensor, c_emb: torch.Tensor) -> torch.Tensor:
        """Velocity from precomputed embeddings; t_emb broadcasts ([1, dim] or [N, dim]).

        Same math as the module-by-module forward, written with functional ops and SiLU(y) shared by every block's
        AdaLN modulation: the head runs thousands of times per image, so per-call overhead matters.
        """
        h = F.linear(x.to(self.dtype), self.input_proj.weight, self.input_proj.bias)  # [N, dim]
        sy = F.silu(t_emb + c_emb)  # [N, dim], shared by all modulations
        dim = h.shape[-1]
        for blk in self.res_blocks:
            mod = blk.adaLN_modulation[1]
            shift, scale, gate = F.linear(sy, mod.weight, mod.bias).chunk(3, dim=-1)
            hn = F.layer_norm(h, (dim,), blk.in_ln.weight, blk.in_ln.bias, blk.in_ln.eps)
            hn = torch.addcmul(shift, hn, 1 + scale)
            m = F.linear(F.silu(F.linear(hn, blk.mlp[0].weight, blk.mlp[0].bias)), blk.mlp[2].weight, blk.mlp[2].bias)
            h = torch.addcmul(h, gate, m)  # [N, dim]
        fl = self.final_layer
        shift, scale = F.linear(sy, fl.adaLN_modulation[1].weight, fl.adaLN_modulation[1].bias).chunk(2, dim=-1)
        hn = torch.addcmul(shift, F.layer_norm(h, (dim,), eps=fl.norm_final.eps), 1 + scale)
        return F.linear(hn, fl.linear.weight, fl.linear.bias)  # [N, C]


def config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> FlowHeadConfig:
    """Sizes of a head from its weights (keys as the official ``image_head.net.*`` without that prefix)."""
    dim, input_dim = state_dict["input_proj.weight"].shape
    layers = len({k.split(".")[1] for k in state_dict if k.startswith("res_blocks.")})
    hidden = state_dict["res_blocks.0.mlp.0.weight"].shape[0] if layers else dim
    return FlowHeadConfig(
        input_dim=int(input_dim), cond_dim=int(state_dict["cond_embed.weight"].shape[1]), dim=int(dim), layers=layers,
        mlp_ratio=hidden / dim, frequency_embedding_size=int(state_dict["time_embed.mlp.0.weight"].shape[1]),
    )
