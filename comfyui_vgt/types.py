"""Socket types and the VGT latent container.

VGT latents travel on their own socket type, ``VGT_LATENT``, not ComfyUI's ``LATENT``: a VGT latent is 32 channels at
stride 28 (32 for Qwen3-VL models) and an SD/Flux VAE would crash deep in a convolution on it, while a distinct type
makes ComfyUI refuse the link (in the editor and when validating an API prompt) with a clear message. The value is a
dict shaped like a LATENT (``{"samples": tensor, ...}``) plus VGT metadata (family, stride), checked again by every
node that receives one.
"""

from __future__ import annotations

from typing import Any

import torch

VGT_MODEL = "VGT_MODEL"
VGT_AE = "VGT_AE"
VGT_CONDITIONING = "VGT_CONDITIONING"
VGT_LATENT = "VGT_LATENT"
LATENT_CHANNELS = 32
STRIDE = 28  # pixels per latent token of the official models; each latent records its own


def make_latent(samples: torch.Tensor, family: str, stride: int = STRIDE, **extra: Any) -> dict[str, Any]:
    """Wrap latents [B, 32, h, w] (float32, on ComfyUI's intermediate device); ``stride`` = pixels per token."""
    return {"samples": samples, "vgt": True, "family": family, "stride": int(stride), **extra}


def latent_stride(latent: dict[str, Any]) -> int:
    """Pixels per token side of a VGT latent (latents made before strides were recorded: 28)."""
    return int(latent.get("stride") or STRIDE)


def check_latent(latent: Any, name: str = "samples") -> torch.Tensor:
    """Validate a VGT latent dict -> its samples; a clear error for anything else (e.g. an SD latent)."""
    if not isinstance(latent, dict) or "samples" not in latent:
        raise ValueError(f"{name}: expected a VGT latent (from VGT-AE Encode or QueryAR Sampler), got {type(latent).__name__}")
    samples = latent["samples"]
    if not torch.is_tensor(samples):
        raise ValueError(f"{name}: its samples are a {type(samples).__name__}, not a tensor")
    if not latent.get("vgt") or samples.ndim != 4 or samples.shape[1] != LATENT_CHANNELS:
        raise ValueError(
            f"{name}: this is not a VGT latent (shape {tuple(samples.shape)}; VGT latents are [B, 32, H/s, W/s], s = 28 "
            f"or 32 px per token). "
            f"An SD/Flux LATENT cannot be decoded by VGT-AE: use VGT-AE Encode on the image instead"
        )
    from vgt_impl.validation import check_finite, check_nonempty

    check_nonempty(name, samples, "B, 32, h, w")
    check_finite(name, samples)
    return samples
