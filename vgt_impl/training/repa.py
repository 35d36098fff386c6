"""REPA for VGT-AR (in the reference code, not in the paper): align a flow-head block's features, through a small
projector, with a frozen vision model's patch features (negative cosine similarity, weight 0.5 in the reference).

Feature models are plug-ins, built from local files only (nothing is downloaded):
- ``"timm:<architecture>"`` with ``checkpoint`` = a local weights file (``pip install timm``); ViTs give their patch
  tokens (prefix tokens dropped), CNNs their last feature map; pixels are normalised with the model's own mean/std.
- ``"<python.module>:<factory>"``: ``factory(checkpoint=...)`` returns an ``nn.Module`` with a ``feature_dim``
  attribute mapping pixels [B, 3, S, S] in [-1, 1] to features [B, C, h, w] or patch tokens [B, N, C].
The features are resized (bilinear) to the latent grid, one vector per latent token.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def build_repa(cfg, flow_head: nn.Module) -> tuple[nn.Module, nn.Module]:
    """-> (frozen feature model, trainable projector head dim -> projector_dim -> projector_dim -> feature dim)."""
    model = load_feature_model(cfg.model, cfg.checkpoint)
    model.eval().requires_grad_(False)
    dim = flow_head.input_proj.weight.shape[0]
    proj = nn.Sequential(nn.Linear(dim, cfg.projector_dim), nn.SiLU(), nn.Linear(cfg.projector_dim, cfg.projector_dim),
                         nn.SiLU(), nn.Linear(cfg.projector_dim, int(model.feature_dim)))
    for m in proj:
        if isinstance(m, nn.Linear):  # the reference head's xavier init
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model, proj


def load_feature_model(spec: str, checkpoint: str | None) -> nn.Module:
    if not spec:
        raise ValueError("model.repa.weight > 0 needs model.repa.model: 'timm:<architecture>' or 'module:factory'")
    kind, _, name = spec.partition(":")
    if kind == "timm":
        return TimmFeatures(name, checkpoint)
    if not name:
        raise ValueError(f"model.repa.model={spec!r}: expected 'timm:<architecture>' or '<python.module>:<factory>'")
    factory = getattr(importlib.import_module(kind), name)
    model = factory(checkpoint=checkpoint)
    if not isinstance(model, nn.Module) or not hasattr(model, "feature_dim"):
        raise TypeError(f"{spec} must return an nn.Module with a feature_dim attribute")
    return model


class TimmFeatures(nn.Module):
    """A timm backbone (weights from a local file) -> patch features [B, C, h, w]."""

    def __init__(self, arch: str, checkpoint: str | None):
        super().__init__()
        try:
            import timm
        except ImportError as e:
            raise ImportError("REPA with a timm feature model needs timm: pip install timm") from e
        if not checkpoint or not Path(checkpoint).is_file():
            raise FileNotFoundError(f"model.repa.checkpoint={checkpoint!r}: give the local weights file of {arch} "
                                    f"(nothing is downloaded)")
        self.model = timm.create_model(arch, pretrained=False, num_classes=0)
        from ..checkpoints import load_checkpoint_file

        sd = load_checkpoint_file(checkpoint, prefer_ema=False)
        missing, unexpected = self.model.load_state_dict(sd, strict=False)
        if missing:
            raise ValueError(f"{checkpoint} does not fit timm {arch}: {len(missing)} missing tensors (e.g. {missing[0]})")
        cfg = timm.data.resolve_model_data_config(self.model)
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, 3, 1, 1), persistent=False)
        self.feature_dim = self.model.num_features
        self.prefix = int(getattr(self.model, "num_prefix_tokens", 0))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = ((pixels + 1) / 2 - self.mean) / self.std
        f = self.model.forward_features(x)
        if f.ndim == 3:  # ViT tokens [B, T, C]
            return f[:, self.prefix:]
        return f


def patch_features(model: nn.Module, pixels: torch.Tensor, size: int, h: int, w: int) -> torch.Tensor:
    """Pixels [B, 3, H, W] in [-1, 1] -> one feature per latent token: [B*h*w, C] (raster order)."""
    x = F.interpolate(pixels.float(), size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    f = model(x.clamp(-1, 1))
    if f.ndim == 3:  # [B, N, C] tokens on a square grid
        b, n, c = f.shape
        g = math.isqrt(n)
        if g * g != n:
            raise ValueError(f"the REPA feature model returned {n} tokens, not a square grid")
        f = f.transpose(1, 2).reshape(b, c, g, g)
    f = F.interpolate(f.float(), size=(h, w), mode="bilinear", align_corners=False)  # [B, C, h, w]
    return f.flatten(2).transpose(1, 2).reshape(-1, f.shape[1])
