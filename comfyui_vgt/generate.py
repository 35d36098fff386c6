"""One QueryAR run inside ComfyUI: load under model management, progress/cancel/preview, results on the
intermediate device. Shared by the sampler and the editing nodes."""

from __future__ import annotations

import logging
from typing import Any

import torch

from .progress import make_callback
from .types import make_latent

logger = logging.getLogger(__name__)


def conditioning_text(cond: Any, name: str) -> str:
    if not isinstance(cond, dict) or "text" not in cond:
        raise ValueError(f"{name}: expected a VGT conditioning from VGT Text Encode, got {type(cond).__name__}")
    return cond["text"]


def run(handle, positive, negative, *, width: int, height: int, batch_size: int, seed: int, cfg: float,
        cfg_schedule: str, steps: int, parallel_tokens: int, order: str, sampler: str = "sde",
        mode: str = "reference", preview: bool = True, context=None) -> dict:
    """Generate (or regenerate the masked tokens of ``context``) -> a VGT latent dict."""
    import comfy.model_management as mm

    h, w = handle.pipe.check_size(height, width)  # before anything is moved to the GPU
    text = conditioning_text(positive, "positive")
    neg = conditioning_text(negative, "negative") if negative is not None else None
    acc = min(int(parallel_tokens), h * w)
    if acc != parallel_tokens:
        logger.info("parallel_tokens %d > %d tokens: using %d", parallel_tokens, h * w, acc)
    use_preview = preview and handle.ae is not None
    handle.load(with_ae=use_preview)
    decoder = handle.pipe.decode_latents if use_preview else None
    gen = torch.Generator().manual_seed(int(seed))
    out = handle.pipe.generate(
        [text], negative_prompts=neg, height=height, width=width, num_images_per_prompt=batch_size,
        cfg_scale=cfg, cfg_schedule=cfg_schedule, num_flow_steps=steps, acc_ratio=acc, order=order,
        sampler=sampler, mode=mode, generator=gen, context=context,
        callback=make_callback(None, preview_decoder=decoder), decode=False,
    )
    return make_latent(out.latents.to(mm.intermediate_device()), handle.family, stride=handle.latent_stride)
