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
    if not isinstance(cond, dict) or not isinstance(cond.get("text"), str):
        raise ValueError(f"{name}: expected a VGT conditioning from VGT Text Encode, got {type(cond).__name__}")
    return cond["text"]


def sampling_options(*, steps: int, sampler: str, group_schedule: str, time_grid: str, time_shift: float,
                     preset: str, compile: bool, recorded: str | None = None) -> dict:
    """The node's sampling widgets as generate options; a preset other than "custom" sets the five it covers.
    "auto" is the model's ``recorded`` preset (``VGTPipeline.default_preset``), or "custom" when it records none."""
    from vgt_impl.presets import preset_options

    opts = dict(num_flow_steps=steps, sampler=sampler, group_schedule=group_schedule, time_grid=time_grid,
                time_shift=time_shift)
    if preset == "auto":
        preset = recorded or "custom"
    if preset != "custom":
        opts = preset_options(preset)
    return dict(opts, compile=bool(compile))


# Library argument -> the node input a user sees (errors name the input, e.g. parallel_tokens, not acc_ratio).
NODE_NAMES = {"cfg_scale": "cfg", "num_flow_steps": "steps", "acc_ratio": "parallel_tokens",
              "num_images_per_prompt": "batch_size"}
MAX_SEED = 0xFFFFFFFFFFFFFFFF


def check_inputs(handle, *, width, height, batch_size, seed, cfg, cfg_schedule, steps, parallel_tokens,
                 sampler="sde", mode="reference") -> tuple[int, int]:
    """The sampling inputs of a node, named as on the node; ComfyUI's min/max let NaN through. -> latent (h, w)."""
    from vgt_impl.pipeline import check_generate_options
    from vgt_impl.validation import check_int

    h, w = handle.pipe.check_size(height, width)
    check_generate_options(cfg_scale=cfg, cfg_schedule=cfg_schedule, num_flow_steps=steps, acc_ratio=parallel_tokens,
                           sampler=sampler, mode=mode, num_images_per_prompt=batch_size, names=NODE_NAMES)
    check_int("seed", seed, lo=0, hi=MAX_SEED)
    return h, w


def run(handle, positive, negative, *, width: int, height: int, batch_size: int, seed: int, cfg: float,
        cfg_schedule: str, steps: int, parallel_tokens: int, order: str, sampler: str = "sde",
        mode: str = "reference", preview: bool = True, context=None, group_schedule: str = "equal",
        time_grid: str = "reference", time_shift: float = 1.0, preset: str = "auto", compile: bool = False) -> dict:
    """Generate (or regenerate the masked tokens of ``context``) -> a VGT latent dict."""
    import comfy.model_management as mm

    sampling = sampling_options(steps=steps, sampler=sampler, group_schedule=group_schedule, time_grid=time_grid,
                                time_shift=time_shift, preset=preset, compile=compile,
                                recorded=getattr(handle.pipe, "default_preset", None))
    h, w = check_inputs(handle, width=width, height=height, batch_size=batch_size, seed=seed, cfg=cfg,
                        cfg_schedule=cfg_schedule, steps=sampling["num_flow_steps"], parallel_tokens=parallel_tokens,
                        sampler=sampling["sampler"], mode=mode)  # before anything is moved to the GPU
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
        cfg_scale=cfg, cfg_schedule=cfg_schedule, acc_ratio=acc, order=None if order == "auto" else order, mode=mode,
        generator=gen,
        context=context, callback=make_callback(None, preview_decoder=decoder), decode=False, **sampling,
    )
    return make_latent(out.latents.to(mm.intermediate_device()), handle.family, stride=handle.latent_stride)
