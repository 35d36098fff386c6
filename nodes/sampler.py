"""QueryAR Sampler: text-to-image latents with parallel decoding."""

from __future__ import annotations

from ..comfyui_vgt import generate
from ..comfyui_vgt import types as T
from .common import CATEGORY, MAX_SIZE, model_input, optional_inputs, positive_input, sampling_inputs


class VGTQueryARSampler:
    DESCRIPTION = ("Generates VGT latents from a prompt with QueryAR: the language model predicts latent tokens in "
                   "the chosen order, parallel_tokens at a time, each sampled by the flow-matching head with "
                   "classifier-free guidance. Decode with VGT-AE Decode.")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = (T.VGT_LATENT,)
    RETURN_NAMES = ("samples",)
    OUTPUT_TOOLTIPS = ("The generated VGT latents: decode them with VGT-AE Decode.",)

    @classmethod
    def INPUT_TYPES(cls):
        size = {"min": 28, "max": MAX_SIZE, "step": 28}
        return {
            "required": {
                **model_input(),
                **positive_input(),
                "width": ("INT", {"default": 448, **size, "tooltip": "Image width in pixels, a multiple of the model's token size (28 px; 32 for Qwen3-VL models, e.g. 448). The official models were trained at 448."}),
                "height": ("INT", {"default": 448, **size, "tooltip": "Image height in pixels, a multiple of the model's token size (28 px; 32 for Qwen3-VL models)."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Images generated from this prompt in one batch."}),
                **sampling_inputs(),
            },
            "optional": optional_inputs(),
        }

    def sample(self, model, positive, width, height, batch_size, seed, cfg, cfg_schedule, steps, parallel_tokens,
               order, negative=None, sampler="sde", mode="reference", preview=True):
        latent = generate.run(
            model, positive, negative, width=width, height=height, batch_size=batch_size, seed=seed, cfg=cfg,
            cfg_schedule=cfg_schedule, steps=steps, parallel_tokens=parallel_tokens, order=order, sampler=sampler,
            mode=mode, preview=preview,
        )
        return (latent,)
