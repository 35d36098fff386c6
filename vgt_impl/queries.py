"""The learnable 2-D query grid and position grid of VGT-AR, centre-cropped to the target latent size."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import LATENT_STRIDE


class QueryGrid(nn.Module):
    """Learnable queries + positions on a max grid (64x64 tokens = 1792 px at stride 28), centre-cropped to (h, w)."""

    def __init__(self, dim: int, max_size: tuple[int, int] = (64, 64), *, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None):
        super().__init__()
        mh, mw = max_size
        shape, factory = (1, dim, mh, mw), {"dtype": dtype, "device": device}
        self.query_grid = nn.Parameter(torch.randn(shape, **factory) / math.sqrt(dim))  # official max_metaquery
        self.pos_grid = nn.Parameter(torch.randn(shape, **factory) * 0.02)  # official pos_encoding.grid_embed

    @property
    def max_size(self) -> tuple[int, int]:
        return tuple(self.query_grid.shape[-2:])

    def crop(self, grid: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """[1, D, Hmax, Wmax] -> [1, h*w, D], centre crop, raster order."""
        mh, mw = self.max_size
        top, left = (mh - h) // 2, (mw - w) // 2
        return grid[:, :, top : top + h, left : left + w].flatten(2).transpose(1, 2)

    def forward(self, h: int, w: int, stride: int = LATENT_STRIDE) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (queries = query + pos, pos), each [1, h*w, D]; ``stride`` (px per token) only words the size error."""
        mh, mw = self.max_size
        if not (1 <= h <= mh and 1 <= w <= mw):
            raise ValueError(
                f"latent size {h}x{w} ({h * stride}x{w * stride} px) is outside the query grid: "
                f"at most {mh}x{mw} tokens ({mh * stride}x{mw * stride} px)"
            )
        pos = self.crop(self.pos_grid, h, w)  # [1, h*w, D]
        return self.crop(self.query_grid, h, w) + pos, pos  # the reference adds pos to the metaquery
