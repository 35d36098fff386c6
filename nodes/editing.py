"""Latent editing: VGT Inpaint, VGT Outpaint Pad, VGT Variation.

Known tokens are fed to the model as context and only the masked tokens are generated; known tokens come back
bit-identical. This conditions on the rest of the image; it is not a diffusion inpainter.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from ..comfyui_vgt import generate
from ..comfyui_vgt import images as I
from ..comfyui_vgt import types as T
from ..comfyui_vgt.releases import show_on_node
from .common import CATEGORY, model_input, optional_inputs, positive_input, sampling_inputs

logger = logging.getLogger(__name__)


def _tokens_to_pixel_mask(tok: torch.Tensor, stride: int) -> torch.Tensor:
    """[B, h, w] bool -> MASK [B, s*h, s*w] float (s = px per token)."""
    return F.interpolate(tok.float().unsqueeze(1), scale_factor=stride, mode="nearest")[:, 0]


def _edit(model, positive, negative, samples, gen_mask, **kw) -> dict:
    """Regenerate the True tokens of gen_mask [B|1, h, w]; the prompt is repeated for every latent of the batch."""
    z = T.check_latent(samples)
    if samples.get("family") and samples["family"] != model.family:
        raise ValueError(f"samples are {samples['family']} latents but the model is {model.family}: encode with its VGT-AE")
    s = T.latent_stride(samples)
    if s != model.latent_stride:
        raise ValueError(f"samples have {s} px per token but the model makes {model.latent_stride}: encode the "
                         f"image with the model's own VGT-AE")
    b, _, h, w = z.shape
    mh, mw = model.pipe.max_latent_size
    if h > mh or w > mw:  # the sizes come from the samples here, not from a width/height input of this node
        raise ValueError(f"samples are {h}x{w} tokens ({h * s}x{w * s} px) but the model's query grid is at most "
                         f"{mh}x{mw} tokens ({mh * s}x{mw * s} px): encode a smaller image or pad less in VGT "
                         f"Outpaint Pad")
    if gen_mask.shape[0] not in (1, b):
        raise ValueError(f"mask batch {gen_mask.shape[0]} does not match the {b} latents: give 1 mask or {b}")
    gen_mask = gen_mask.expand(b, h, w)
    if not bool(gen_mask.any()):
        show_on_node("Nothing to regenerate: the mask covers no token, so the latents are returned unchanged.")
        return T.make_latent(z.clone(), samples.get("family") or model.family, stride=s)
    return generate.run(model, positive, negative, width=w * s, height=h * s, batch_size=b,
                        context=(z, gen_mask), **kw)


class VGTInpaint:
    DESCRIPTION = ("Regenerates the masked part of an image's VGT latents (from VGT-AE Encode) while the rest is fed to "
                   "the model as context. Works with any MASK (mask editor, segmentation nodes) and with batches.")
    CATEGORY = CATEGORY
    FUNCTION = "inpaint"
    RETURN_TYPES = (T.VGT_LATENT, "MASK")
    RETURN_NAMES = ("samples", "token_mask")
    OUTPUT_TOOLTIPS = ("The latents with the masked tokens regenerated (the others unchanged).", "The tokens that were regenerated, as a pixel MASK: feed it to VGT Composite Original.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                **model_input(), **positive_input(),
                "samples": (T.VGT_LATENT, {"tooltip": "The image's VGT latents (VGT-AE Encode)."}),
                "mask": ("MASK", {"tooltip": "White = regenerate. Reduced to whole tokens (28x28 px; 32x32 for Qwen3-VL) by mask_rule."}),
                "mask_rule": (["any", "majority", "threshold"], {"default": "any", "tooltip": "A token is regenerated when any of its pixels is masked, most of them are, or their mean exceeds threshold."}),
                "threshold": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "Used by mask_rule=threshold."}),
                "grow_tokens": ("INT", {"default": 0, "min": 0, "max": 16, "tooltip": "Grow the token mask by this many whole tokens."}),
                **sampling_inputs(),
            },
            "optional": optional_inputs(),
        }

    def inpaint(self, model, positive, samples, mask, mask_rule, threshold, grow_tokens, negative=None, **kw):
        from vgt_impl.editing import pixel_mask_to_tokens
        from vgt_impl.validation import check_choice, check_int, check_real

        z = T.check_latent(samples)
        h, w = z.shape[-2:]
        threshold = check_real("threshold", threshold, lo=0.0, hi=1.0)  # ComfyUI's min/max let NaN through
        grow_tokens = check_int("grow_tokens", grow_tokens, lo=0)
        check_choice("mask_rule", mask_rule, ("any", "majority", "threshold"))
        I.mask_to_pixels(mask.cpu(), *mask.shape[-2:])  # NaN, empty or out-of-range masks named before anything runs
        s = T.latent_stride(samples)
        if float(mask.max()) <= 0.0:  # an empty mask (e.g. LoadImage without alpha): a documented no-op
            show_on_node("The mask is empty: nothing was regenerated and the image comes back unchanged. Paint a mask "
                         "(right-click Load Image > Open in MaskEditor) or connect one.")
            return (T.make_latent(z.clone(), samples.get("family"), stride=s), torch.zeros(z.shape[0], h * s, w * s))
        m = mask.cpu().float()
        m = m.unsqueeze(0) if m.ndim == 2 else m
        if m.ndim == 3 and tuple(m.shape[-2:]) == tuple(samples.get("source_hw") or ()) != (h * s, w * s):
            m = I.fit_to_stride(m.unsqueeze(1), samples.get("fit", "center_crop"), "mask", stride=s)[:, 0].clamp(0, 1)
        pix = I.mask_to_pixels(m, h * s, w * s)
        tok = pixel_mask_to_tokens(pix, rule=mask_rule, threshold=threshold, dilate=grow_tokens, stride=s)
        latent = _edit(model, positive, negative, samples, tok, **_sampling(kw))
        return (latent, _tokens_to_pixel_mask(tok.expand(z.shape[0], h, w), s))


class VGTOutpaintPad:
    DESCRIPTION = ("Pads VGT latents with new (empty) tokens on any side and returns the mask of the new area: feed "
                   "both to VGT Inpaint to extend the image. Padding is in pixels, multiples of the token size (28 px; "
                   "32 for Qwen3-VL models).")
    CATEGORY = CATEGORY
    FUNCTION = "pad"
    RETURN_TYPES = (T.VGT_LATENT, "MASK")
    RETURN_NAMES = ("samples", "mask")
    OUTPUT_TOOLTIPS = ("The padded latents (new tokens empty).", "The new area as a pixel MASK: feed it with the latents to VGT Inpaint.")

    @classmethod
    def INPUT_TYPES(cls):
        side = {"default": 0, "min": 0, "max": 1792, "step": 28}
        return {
            "required": {
                "samples": (T.VGT_LATENT, {"tooltip": "The image's VGT latents (VGT-AE Encode)."}),
                "left": ("INT", {**side, "tooltip": "Pixels added on the left (a multiple of the token size: 28, or 32 for Qwen3-VL)."}),
                "top": ("INT", {**side, "tooltip": "Pixels added on top (a multiple of the token size: 28, or 32 for Qwen3-VL)."}),
                "right": ("INT", {**side, "tooltip": "Pixels added on the right (a multiple of the token size: 28, or 32 for Qwen3-VL)."}),
                "bottom": ("INT", {**side, "tooltip": "Pixels added at the bottom (a multiple of the token size: 28, or 32 for Qwen3-VL)."}),
            }
        }

    def pad(self, samples, left, top, right, bottom):
        from vgt_impl.editing import outpaint_canvas
        from vgt_impl.validation import check_int

        z = T.check_latent(samples)
        s = T.latent_stride(samples)
        for name, v in (("left", left), ("top", top), ("right", right), ("bottom", bottom)):
            v = check_int(name, v, lo=0, hint=" (pixels)")
            if v % s:
                raise ValueError(f"{name}={v} is not a multiple of {s} pixels (one latent token of these samples)")
        canvas, mask = outpaint_canvas(z, left=left // s, top=top // s, right=right // s, bottom=bottom // s)
        return (T.make_latent(canvas, samples.get("family"), stride=s), _tokens_to_pixel_mask(mask, s))


class VGTVariation:
    DESCRIPTION = ("Variations of an image: regenerates a random fraction (strength) of its latent tokens, chosen by "
                   "the seed, with the rest as context. strength 0 returns the input, 1 regenerates every token.")
    CATEGORY = CATEGORY
    FUNCTION = "vary"
    RETURN_TYPES = (T.VGT_LATENT,)
    RETURN_NAMES = ("samples",)
    OUTPUT_TOOLTIPS = ("The latents with a fraction of tokens regenerated.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                **model_input(), **positive_input(),
                "samples": (T.VGT_LATENT, {"tooltip": "The image's VGT latents (VGT-AE Encode)."}),
                "strength": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "Fraction of tokens to regenerate."}),
                **sampling_inputs(),
            },
            "optional": optional_inputs(),
        }

    def vary(self, model, positive, samples, strength, negative=None, **kw):
        from vgt_impl.editing import variation_mask
        from vgt_impl.validation import check_real

        strength = check_real("strength", strength, lo=0.0, hi=1.0)  # NaN passes ComfyUI's min/max
        z = T.check_latent(samples)
        b, _, h, w = z.shape
        gen = torch.Generator().manual_seed(int(kw["seed"]) ^ 0x5EED)  # token choice: its own stream, seeded
        mask = variation_mask(h, w, strength, batch=b, generator=gen)
        return (_edit(model, positive, negative, samples, mask, **_sampling(kw)),)


def _sampling(kw: dict) -> dict:
    keys = ("seed", "cfg", "cfg_schedule", "steps", "parallel_tokens", "order", "sampler", "mode", "preview",
            "group_schedule", "time_grid", "time_shift", "preset", "compile")
    return {k: kw[k] for k in keys if k in kw}


class VGTComposite:
    DESCRIPTION = ("Pastes the edited image over the original outside the mask, with a feathered border, so pixels "
                   "outside the regenerated tokens stay exactly the original (the VGT-AE round trip is not lossless).")
    CATEGORY = CATEGORY
    FUNCTION = "composite"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The edited image pasted over the original outside the mask.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "edited": ("IMAGE", {"tooltip": "The decoded result of VGT Inpaint / Variation."}),
                "original": ("IMAGE", {"tooltip": "The image that was encoded (cropped or resized with the same fit)."}),
                "mask": ("MASK", {"tooltip": "Where the edited pixels are used: VGT Inpaint's token_mask."}),
                "feather": ("INT", {"default": 8, "min": 0, "max": 128, "tooltip": "Width in pixels of the soft border outside the mask."}),
                "fit": (list(I.FIT_MODES), {"default": "center_crop", "tooltip": "The fit used by VGT-AE Encode, to align the original."}),
            }
        }

    def composite(self, edited, original, mask, feather, fit):
        from vgt_impl.editing import composite
        from vgt_impl.validation import check_int

        feather = check_int("feather", feather, lo=0, hint=" (pixels)")
        gen = I.from_comfy(edited, "edited")
        orig = I.fit_to_match(I.from_comfy(original, "original"), tuple(gen.shape[-2:]), fit, "original")
        if orig.shape[0] not in (1, gen.shape[0]):
            raise ValueError(f"original batch {orig.shape[0]} does not match the {gen.shape[0]} edited images")
        m = I.mask_to_pixels(mask.cpu(), *gen.shape[-2:])
        if m.shape[0] not in (1, gen.shape[0]):
            raise ValueError(f"mask batch {m.shape[0]} does not match the {gen.shape[0]} edited images: give 1 mask or "
                             f"{gen.shape[0]}")
        return (I.to_comfy(composite(gen, orig.expand_as(gen), m, feather=feather)),)
