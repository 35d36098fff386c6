"""Progress, cancellation and live previews for QueryAR sampling inside ComfyUI."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

MAX_PREVIEWS = 8  # decoded previews per generation (plus the final state): cheap next to the sampling itself


def image_to_pil(image: torch.Tensor):
    """[3, H, W] in [-1, 1] -> PIL image."""
    from PIL import Image

    arr = ((image.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr)


def make_callback(total_hint: int | None, *, preview_decoder: Callable | None = None) -> Callable:
    """A ``callback(step, total, preview_latents)`` that reports progress, honours the queue's cancel button (raises
    ComfyUI's interrupt within one token group) and sends a preview of the image filling in.

    ``preview_decoder(latents[:1]) -> [1, 3, H, W]`` decodes the partial latent grid (VGT-AE); None: no previews.
    """
    import comfy.model_management as mm
    import comfy.utils

    state: dict = {"bar": None}

    def callback(step: int, total: int, preview_latents: torch.Tensor) -> None:
        mm.throw_exception_if_processing_interrupted()
        if state["bar"] is None:
            state["bar"] = comfy.utils.ProgressBar(total)
        every = max(1, math.ceil(total / MAX_PREVIEWS))
        preview = None
        if preview_decoder is not None and (step % every == 0 or step == total):
            pil = image_to_pil(preview_decoder(preview_latents[:1].clone())[0])
            # max_size = the image's own size: ComfyUI would otherwise scale it (up, too) to fit 512 px and the
            # editor would caption a 224x224 image as 512x512.
            preview = ("JPEG", pil, max(pil.size))
        state["bar"].update_absolute(step, total, preview)

    return callback
