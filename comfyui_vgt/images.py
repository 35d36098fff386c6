"""Conversions between ComfyUI's IMAGE / MASK tensors and VGT's [-1, 1] channel-first images."""

from __future__ import annotations

import torch
import torch.nn.functional as F

STRIDE = 28
FIT_MODES = ("error", "center_crop", "resize")


def from_comfy(image: torch.Tensor, name: str = "image") -> torch.Tensor:
    """IMAGE [B, H, W, C] in 0..1 -> [B, 3, H, W] in [-1, 1] (alpha dropped, grey expanded).

    Anything else (NaN/inf, values outside 0..1, an empty batch, another layout) is an error naming the input.
    """
    from vgt_impl.validation import check_finite, check_nonempty, check_range, check_tensor

    check_tensor(name, image, shape_hint="(ComfyUI IMAGE [B, H, W, C])")
    if image.ndim != 4 or not 1 <= image.shape[-1] <= 4:
        raise ValueError(f"{name}: expected a ComfyUI IMAGE [B, H, W, C] (C = 1 to 4), got shape {tuple(image.shape)}")
    check_nonempty(name, image, "B, H, W, C")
    if image.is_floating_point():
        check_finite(name, image)
        check_range(name, image, 0.0, 1.0, " (a ComfyUI IMAGE holds 0..1 floats)")
    else:
        raise ValueError(f"{name} has dtype {image.dtype}: a ComfyUI IMAGE holds 0..1 floats")
    x = image[..., :3] if image.shape[-1] >= 3 else image[..., :1].expand(*image.shape[:3], 3)
    return x.permute(0, 3, 1, 2).float() * 2.0 - 1.0


def to_comfy(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> IMAGE [B, H, W, 3] in 0..1 (float32)."""
    return ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1).contiguous()


def fit_to_stride(x: torch.Tensor, mode: str, name: str = "image") -> torch.Tensor:
    """Make H and W multiples of 28: 'error', 'center_crop' (largest centred crop) or 'resize' (nearest multiples)."""
    h, w = x.shape[-2:]
    th, tw = max(STRIDE, round(h / STRIDE) * STRIDE), max(STRIDE, round(w / STRIDE) * STRIDE)
    if (h, w) == (th, tw):
        return x
    if mode == "error":
        lo_h, lo_w = max(STRIDE, h // STRIDE * STRIDE), max(STRIDE, w // STRIDE * STRIDE)
        raise ValueError(f"{name} is {w}x{h} px; VGT needs multiples of 28 (e.g. {lo_w}x{lo_h}): set fit to "
                         f"center_crop or resize, or resize the image first")
    if mode == "center_crop":
        ch, cw = max(STRIDE, h // STRIDE * STRIDE), max(STRIDE, w // STRIDE * STRIDE)
        if ch > h or cw > w:
            raise ValueError(f"{name} is {w}x{h} px, smaller than one 28x28 token: resize it first")
        top, left = (h - ch) // 2, (w - cw) // 2
        return x[..., top : top + ch, left : left + cw]
    if mode == "resize":
        return F.interpolate(x, size=(th, tw), mode="bicubic", align_corners=False, antialias=True).clamp(-1, 1)
    raise ValueError(f"fit={mode!r}: expected one of {FIT_MODES}")


def mask_to_pixels(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """ComfyUI MASK [B, H, W] or [H, W] -> [B, h, w] float in 0..1 at the image size (resized if it differs)."""
    from vgt_impl.validation import check_finite, check_nonempty, check_range, check_tensor

    check_tensor("mask", mask, shape_hint="(ComfyUI MASK [B, H, W])")
    m = mask.float()
    m = m.unsqueeze(0) if m.ndim == 2 else m
    if m.ndim != 3:
        raise ValueError(f"mask: expected a ComfyUI MASK [B, H, W], got shape {tuple(mask.shape)}")
    check_nonempty("mask", m, "B, H, W")
    check_finite("mask", m)
    check_range("mask", m, 0.0, 1.0, " (a ComfyUI MASK holds 0..1: 1 = regenerate)")
    if tuple(m.shape[-2:]) != (h, w):
        mh, mw = m.shape[-2:]
        if abs(mh / mw - h / w) > 0.01 * (h / w):
            raise ValueError(f"mask is {mw}x{mh} px but the image is {w}x{h} px: draw the mask on the same image "
                             f"(a mask with the same aspect ratio is resized)")
        m = F.interpolate(m.unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    return m.clamp(0, 1)
