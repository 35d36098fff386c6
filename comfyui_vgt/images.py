"""Conversions between ComfyUI's IMAGE / MASK tensors and VGT's [-1, 1] channel-first images."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

STRIDE = 28  # the official models' px per token; nodes pass the loaded model's own stride
# px per token considered when matching an original image to an edited one (ViT patch x merge of real VLMs)
MIN_STRIDE, MAX_STRIDE = 14, 64
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


def fit_to_stride(x: torch.Tensor, mode: str, name: str = "image", stride: int = STRIDE) -> torch.Tensor:
    """Make H and W multiples of ``stride`` (the VGT-AE's px per token): 'error', 'center_crop' (largest centred
    crop) or 'resize' (nearest multiples)."""
    s = int(stride)
    h, w = x.shape[-2:]
    th, tw = max(s, round(h / s) * s), max(s, round(w / s) * s)
    if (h, w) == (th, tw):
        return x
    if mode == "error":
        lo_h, lo_w = max(s, h // s * s), max(s, w // s * s)
        raise ValueError(f"{name} is {w}x{h} px; this VGT model needs multiples of {s} (e.g. {lo_w}x{lo_h}): set fit "
                         f"to center_crop or resize, or resize the image first")
    if mode == "center_crop":
        ch, cw = max(s, h // s * s), max(s, w // s * s)
        if ch > h or cw > w:
            raise ValueError(f"{name} is {w}x{h} px, smaller than one {s}x{s} token: resize it first")
        top, left = (h - ch) // 2, (w - cw) // 2
        return x[..., top : top + ch, left : left + cw]
    if mode == "resize":
        return F.interpolate(x, size=(th, tw), mode="bicubic", align_corners=False, antialias=True).clamp(-1, 1)
    raise ValueError(f"fit={mode!r}: expected one of {FIT_MODES}")


def _fitted_size(h: int, w: int, mode: str, s: int) -> tuple[int, int] | None:
    """The size ``fit_to_stride`` gives an h x w image at stride ``s`` (None when it would refuse)."""
    if mode == "center_crop":
        size = (max(s, h // s * s), max(s, w // s * s))
        return size if size[0] <= h and size[1] <= w else None
    if mode == "resize":
        return max(s, round(h / s) * s), max(s, round(w / s) * s)
    return (h, w) if h % s == 0 and w % s == 0 else None


def fit_to_match(x: torch.Tensor, size: tuple[int, int], mode: str, name: str = "image") -> torch.Tensor:
    """Fit ``x`` as VGT-AE Encode did for the image that became ``size`` (H, W): at a stride that divides both and
    gives exactly that size. An error when none does (e.g. the other image was outpainted)."""
    th, tw = int(size[0]), int(size[1])
    h, w = x.shape[-2:]
    g = math.gcd(th, tw)
    for s in (d for d in range(MIN_STRIDE, min(g, MAX_STRIDE) + 1) if g % d == 0):
        if _fitted_size(h, w, mode, s) == (th, tw):
            return fit_to_stride(x, mode, name, stride=s)
    raise ValueError(f"{name} is {w}x{h} px, which fit={mode} does not turn into {tw}x{th} px at any token size: "
                     f"give the image that was encoded (for outpainting, compositing is not needed)")


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
