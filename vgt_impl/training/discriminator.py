"""PatchGAN discriminator of VGT-AE training: a grid of real/fake logits per image.

Architecture of the reference (hustvl/VGT ``tokenizer/modeling/modules/discriminator.py``, from MaskGIT/TiTok):
a 5x5 conv, ``num_stages`` stages of [3x3 conv, 4-tap blur downsample x2, GroupNorm, LeakyReLU(0.1)] doubling the width
after the first, an adaptive max pool to 16x16, then a 1x1 conv and a 5x5 conv to one logit channel. Every conv pads
like TensorFlow's "same". Inputs are images in [0, 1] (the reference's GAN convention).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def same_padding(size: int, kernel: int, stride: int = 1) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after) for one axis."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A stride-1 conv padded like TensorFlow's 'same' (asymmetric for even kernels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph = same_padding(x.shape[-2], self.kernel_size[0])
        pw = same_padding(x.shape[-1], self.kernel_size[1])
        return super().forward(F.pad(x, [*pw, *ph]))


class BlurDownsample(nn.Module):
    """Depthwise [1, 3, 3, 1] x [1, 3, 3, 1] blur with stride 2 ('same' padding for a 4-tap kernel)."""

    def __init__(self, taps: tuple[int, ...] = (1, 3, 3, 1)):
        super().__init__()
        k = torch.tensor(taps, dtype=torch.float32)
        k = k[None, :] * k[:, None]
        self.register_buffer("kernel", (k / k.sum())[None, None])  # [1, 1, 4, 4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel.shape[-1]
        ph, pw = same_padding(x.shape[-2], k, 2), same_padding(x.shape[-1], k, 2)
        x = F.pad(x, [*pw, *ph])
        weight = self.kernel.to(x.dtype).expand(x.shape[1], 1, k, k)
        return F.conv2d(x, weight, stride=2, groups=x.shape[1])


class PatchDiscriminator(nn.Module):
    """Images [B, 3, H, W] in [0, 1] -> logits [B, 1, 16, 16] (for inputs of at least 16 * 2^stages pixels)."""

    def __init__(self, in_channels: int = 3, hidden_channels: int = 128, num_stages: int = 3, pool_size: int = 16,
                 groups: int = 32):
        super().__init__()
        act = lambda: nn.LeakyReLU(0.1)  # noqa: E731
        self.block_in = nn.Sequential(SameConv2d(in_channels, hidden_channels, 5), act())
        mults = [1] + [2**i for i in range(num_stages)]
        blocks = []
        for i in range(num_stages):
            cin, cout = hidden_channels * mults[i], hidden_channels * mults[i + 1]
            blocks.append(nn.Sequential(SameConv2d(cin, cout, 3), BlurDownsample(), nn.GroupNorm(min(groups, cout), cout),
                                        act()))
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.AdaptiveMaxPool2d((pool_size, pool_size))
        self.to_logits = nn.Sequential(SameConv2d(cout, cout, 1), act(), SameConv2d(cout, 1, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block_in(x)  # [B, C, H, W]
        for block in self.blocks:
            h = block(h)  # [B, C', H/2, W/2] per stage
        return self.to_logits(self.pool(h))  # [B, 1, 16, 16]
