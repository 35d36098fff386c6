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
from .validation import (
    check_choice,
    check_finite,
    check_generator,
    check_int,
    check_nonempty,
    check_range,
    check_real,
    check_tensor,
)

MASK_RULES = ("any", "majority", "threshold")


def pixel_mask_to_tokens(
    mask: torch.Tensor, *, rule: str = "any", threshold: float = 0.5, dilate: int = 0, stride: int = LATENT_STRIDE
) -> torch.Tensor:
    """Pixel mask [B, H, W] or [H, W] (values in 0..1, 1 = regenerate) -> token mask [B, H/s, W/s] bool.

    ``stride`` (s) is the model's latent stride (``pipe.latent_stride``: 28 for the official families, 32 for
    Qwen3-VL). A token is regenerated when, over its s x s pixels: ``any`` pixel is above 0.5; the ``majority`` of them is
    (mean > 0.5); or their mean exceeds ``threshold``. ``dilate`` then grows the mask by that many whole tokens.
    """
    stride = check_int("stride", stride, lo=1)
    mask = _check_pixel_mask("mask", mask)
    _, h, w = mask.shape
    if h % stride or w % stride or h < stride or w < stride:
        raise ValueError(f"mask size {h}x{w} is not a multiple of {stride}: it must match the image size")
    check_choice("mask rule", rule, MASK_RULES)
    threshold = check_real("threshold", threshold, lo=0.0, hi=1.0)
    dilate = check_int("dilate", dilate, lo=0, hint=" (whole tokens to grow the mask by)")
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
    strength = check_real("strength", strength, lo=0.0, hi=1.0,
                          hint=" (0 keeps the image, 1 regenerates every token)")
    h, w = check_int("h", h, lo=1), check_int("w", w, lo=1)
    batch = check_int("batch", batch, lo=1)
    check_generator(generator)
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
    check_tensor("context latents", latents, shape_hint=f"[B, {LATENT_CHANNELS}, h, w]")
    check_tensor("context mask", mask, shape_hint="[B, h, w] bool")
    if latents.ndim != 4 or latents.shape[1] != LATENT_CHANNELS:
        raise ValueError(f"context latents must be [B, {LATENT_CHANNELS}, h, w], got {tuple(latents.shape)}")
    if not latents.is_floating_point():
        raise TypeError(f"context latents have dtype {latents.dtype}: expected float latents from VGT-AE encode")
    check_nonempty("context latents", latents, f"B, {LATENT_CHANNELS}, h, w")
    check_finite("context latents", latents)
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
    if mask.dtype != torch.bool:
        if mask.is_floating_point():
            check_finite("context mask", mask)
        if bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError("context mask must be boolean (True = generate) or hold only 0 and 1: threshold a soft "
                             "mask first (e.g. pixel_mask_to_tokens)")
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3 or tuple(mask.shape[-2:]) != (h, w):
        raise ValueError(f"context mask must be [B, {h}, {w}] or [{h}, {w}] tokens, got {tuple(mask.shape)}")
    if mask.shape[0] == 1 and batch > 1:
        mask = mask.expand(batch, -1, -1)
    if mask.shape[0] != batch:
        raise ValueError(f"context mask has {mask.shape[0]} rows for {batch} images: give 1 or {batch}")
    return latents, mask.reshape(batch, h * w).bool()


def context_groups(order: Sequence[int], generate: Sequence[bool], acc_ratio: int,
                   schedule: str = "equal") -> list[list[int]]:
    """Keep the tokens to generate in decoding order, grouped by ``schedule`` (default: acc_ratio at a time, the
    reference grouping rule)."""
    todo = [i for i in order if generate[i]]
    if not todo:
        return []
    sizes = group_sizes(len(todo), min(max(1, acc_ratio), len(todo)), schedule)
    groups, start = [], 0
    for s in sizes:
        groups.append(todo[start : start + s])
        start += s
    return groups


def outpaint_canvas(
    latents: torch.Tensor, *, left: int = 0, top: int = 0, right: int = 0, bottom: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Place latents [B,32,h,w] on a larger token canvas; returns (canvas latents, mask True on the new tokens)."""
    left, top, right, bottom = (check_int(f"outpaint {name} (tokens)", v, lo=0)
                                for name, v in (("left", left), ("top", top), ("right", right), ("bottom", bottom)))
    check_tensor("latents", latents, shape_hint=f"[B, {LATENT_CHANNELS}, h, w]")
    if latents.ndim != 4:
        raise ValueError(f"latents must be [B, {LATENT_CHANNELS}, h, w], got {tuple(latents.shape)}")
    b, c, h, w = latents.shape
    canvas = latents.new_zeros(b, c, h + top + bottom, w + left + right)
    canvas[:, :, top : top + h, left : left + w] = latents
    mask = torch.ones(b, h + top + bottom, w + left + right, dtype=torch.bool)
    mask[:, top : top + h, left : left + w] = False
    return canvas, mask


def composite(
    generated: torch.Tensor, original: torch.Tensor, pixel_mask: torch.Tensor, *, feather: int = 0
) -> torch.Tensor:
    """Blend images [B,3,H,W]: generated pixels inside the mask, original ones outside, feathered over ``feather`` px.

    ``original`` has the same shape or a batch of 1; ``pixel_mask`` is [B|1, H, W] or [H, W] in 0..1.
    """
    check_tensor("generated", generated, shape_hint="[B, 3, H, W]")
    check_tensor("original", original, shape_hint="[B, 3, H, W]")
    if generated.ndim != 4 or generated.shape[1] != 3:
        raise ValueError(f"generated must be [B, 3, H, W], got {tuple(generated.shape)}")
    b, _, hh, ww = generated.shape
    if original.ndim != 4 or original.shape[1:] != generated.shape[1:] or original.shape[0] not in (1, b):
        raise ValueError(f"original is {tuple(original.shape)} but generated is {tuple(generated.shape)}: give the "
                         f"same size, with a batch of 1 or {b}")
    m = _check_pixel_mask("pixel_mask", pixel_mask)
    if tuple(m.shape[-2:]) != (hh, ww) or m.shape[0] not in (1, b):
        raise ValueError(f"pixel_mask is {tuple(pixel_mask.shape)} but the images are {b}x{hh}x{ww}: give [{hh}, {ww}] "
                         f"or [1 or {b}, {hh}, {ww}]")
    feather = check_int("feather", feather, lo=0, hint=" (pixels)")
    for name, x in (("generated", generated), ("original", original)):
        check_finite(name, x)
    m = m.float().unsqueeze(1)  # [B|1, 1, H, W]
    if feather > 0:
        k = 2 * int(feather) + 1
        grown = F.max_pool2d(m, k, stride=1, padding=feather)  # the generated area stays fully generated
        m = F.avg_pool2d(grown, k, stride=1, padding=feather, count_include_pad=False)  # ramp outside it
    m = m.to(generated)
    return generated * m + original.to(generated) * (1 - m)


def _check_pixel_mask(name: str, mask: torch.Tensor) -> torch.Tensor:
    """A pixel mask [B, H, W] or [H, W], non-empty, finite, with values in 0..1 (bool allowed) -> [B, H, W]."""
    check_tensor(name, mask, shape_hint="[B, H, W] in 0..1")
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3:
        raise ValueError(f"{name} must be [B, H, W] or [H, W], got shape {tuple(mask.shape)}")
    check_nonempty(name, mask, "B, H, W")
    if mask.dtype != torch.bool:
        check_finite(name, mask)
        check_range(name, mask.float(), 0.0, 1.0, " (1 = regenerate; for a 0..255 mask divide by 255)", tol=0.0)
    return mask
