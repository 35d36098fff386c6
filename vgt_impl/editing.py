"""Latent editing helpers: token masks, context checks, variation masks, outpainting canvases, compositing.

VGT-AR is trained on random token orders, so any subset of an image's latent tokens is a valid prefix: editing feeds the
known tokens first as [query, latent] pairs and generates only the masked ones. It conditions on the known tokens;
it is not a diffusion inpainter (known tokens are never changed, and nothing blends across the mask border).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .config import LATENT_CHANNELS, LATENT_STRIDE
from .orders import group_sizes

MASK_RULES = ("any", "majority", "threshold")


def pixel_mask_to_tokens(
    mask: torch.Tensor, *, rule: str = "any", threshold: float = 0.5, dilate: int = 0, stride: int = LATENT_STRIDE
) -> torch.Tensor:
    """Pixel mask [B, H, W] or [H, W] (values in 0..1, 1 = regenerate) -> token mask [B, H/s, W/s] bool.

    ``stride`` (s) is the model's latent stride (``pipe.latent_stride``: 28 for the official families, 32 for
    Qwen3-VL). A token is regenerated when, over its s x s pixels: ``any`` pixel is above 0.5; the ``majority`` of them is
    (mean > 0.5); or their mean exceeds ``threshold``. ``dilate`` then grows the mask by that many whole tokens.
    """
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3:
        raise ValueError(f"mask must be [B, H, W] or [H, W], got shape {tuple(mask.shape)}")
    _, h, w = mask.shape
    if h % stride or w % stride:
        raise ValueError(f"mask size {h}x{w} is not a multiple of {stride}: it must match the image size")
    if rule not in MASK_RULES:
        raise ValueError(f"mask rule {rule!r}: expected one of {MASK_RULES}")
    m = mask.float().unsqueeze(1)  # [B, 1, H, W]
    if rule == "any":
        tok = F.max_pool2d((m > 0.5).float(), stride) > 0
    else:
        mean = F.avg_pool2d(m, stride)
        tok = mean > (0.5 if rule == "majority" else float(threshold))
    if dilate > 0:
        k = 2 * int(dilate) + 1
        tok = F.max_pool2d(tok.float(), k, stride=1, padding=int(dilate)) > 0
    return tok[:, 0]


def variation_mask(
    h: int, w: int, strength: float, *, batch: int = 1, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Regenerate round(strength * h * w) tokens chosen by the seeded generator -> [B, h, w] bool."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength={strength} must be in 0..1 (0 keeps the image, 1 regenerates every token)")
    n = h * w
    k = int(round(strength * n))
    out = torch.zeros(batch, n, dtype=torch.bool)
    for b in range(batch):
        perm = torch.randperm(n, generator=generator)  # drawn on the CPU: same choice on any device
        out[b, perm[:k]] = True
    return out.view(batch, h, w)


def check_context(
    context: tuple[torch.Tensor, torch.Tensor], batch: int, h: int, w: int, *, stride: int = LATENT_STRIDE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``(latents [B,32,h,w], mask [B,h,w] | [h,w])`` -> (latents, mask [B, h*w] bool on the CPU)."""
    if not isinstance(context, (tuple, list)) or len(context) != 2:
        raise TypeError("context must be a (latents, mask) pair: latents [B,32,h,w], mask [B,h,w] bool (True = generate)")
    latents, mask = context
    if latents.ndim != 4 or latents.shape[1] != LATENT_CHANNELS:
        raise ValueError(f"context latents must be [B, {LATENT_CHANNELS}, h, w], got {tuple(latents.shape)}")
    if tuple(latents.shape[-2:]) != (h, w):
        raise ValueError(
            f"context latents are {latents.shape[-2]}x{latents.shape[-1]} tokens but the requested size is {h}x{w} "
            f"tokens ({h * stride}x{w * stride} px): encode the image at the generation size"
        )
    if latents.shape[0] == 1 and batch > 1:
        latents = latents.expand(batch, -1, -1, -1)
    if latents.shape[0] != batch:
        raise ValueError(f"context has {latents.shape[0]} latents for {batch} images: give 1 or {batch}")
    mask = mask.to(device="cpu")
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3 or tuple(mask.shape[-2:]) != (h, w):
        raise ValueError(f"context mask must be [B, {h}, {w}] or [{h}, {w}] tokens, got {tuple(mask.shape)}")
    if mask.shape[0] == 1 and batch > 1:
        mask = mask.expand(batch, -1, -1)
    if mask.shape[0] != batch:
        raise ValueError(f"context mask has {mask.shape[0]} rows for {batch} images: give 1 or {batch}")
    return latents, mask.reshape(batch, h * w).bool()


def context_groups(order: Sequence[int], generate: Sequence[bool], acc_ratio: int) -> list[list[int]]:
    """Keep the tokens to generate in decoding order, grouped acc_ratio at a time (the reference grouping rule)."""
    todo = [i for i in order if generate[i]]
    if not todo:
        return []
    sizes = group_sizes(len(todo), min(max(1, acc_ratio), len(todo)))
    groups, start = [], 0
    for s in sizes:
        groups.append(todo[start : start + s])
        start += s
    return groups


def outpaint_canvas(
    latents: torch.Tensor, *, left: int = 0, top: int = 0, right: int = 0, bottom: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Place latents [B,32,h,w] on a larger token canvas; returns (canvas latents, mask True on the new tokens)."""
    for name, v in (("left", left), ("top", top), ("right", right), ("bottom", bottom)):
        if v < 0:
            raise ValueError(f"outpaint {name}={v} must be >= 0 tokens")
    b, c, h, w = latents.shape
    canvas = latents.new_zeros(b, c, h + top + bottom, w + left + right)
    canvas[:, :, top : top + h, left : left + w] = latents
    mask = torch.ones(b, h + top + bottom, w + left + right, dtype=torch.bool)
    mask[:, top : top + h, left : left + w] = False
    return canvas, mask


def composite(
    generated: torch.Tensor, original: torch.Tensor, pixel_mask: torch.Tensor, *, feather: int = 0
) -> torch.Tensor:
    """Blend images [B,3,H,W]: generated pixels inside the mask, original ones outside, feathered over ``feather`` px."""
    m = pixel_mask.float()
    m = m.unsqueeze(1) if m.ndim == 3 else m.view(1, 1, *m.shape)  # [B|1, 1, H, W]
    if feather > 0:
        k = 2 * int(feather) + 1
        grown = F.max_pool2d(m, k, stride=1, padding=feather)  # the generated area stays fully generated
        m = F.avg_pool2d(grown, k, stride=1, padding=feather, count_include_pad=False)  # ramp outside it
    m = m.to(generated)
    return generated * m + original.to(generated) * (1 - m)
