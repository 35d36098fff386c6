"""VGT-AE Encode / Decode."""

from __future__ import annotations

from ..comfyui_vgt import images as I
from ..comfyui_vgt import types as T
from .common import CATEGORY


def _intermediate(x):
    import comfy.model_management as mm

    return x.to(mm.intermediate_device())


class VGTAEEncode:
    DESCRIPTION = ("Encodes images into VGT latents (one 32-channel token per 28x28 pixels; 32x32 for Qwen3-VL models) "
                   "with the VGT-AE.")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = (T.VGT_LATENT,)
    RETURN_NAMES = ("samples",)
    OUTPUT_TOOLTIPS = ("VGT latents [B, 32, H/s, W/s] (s = 28 px per token; 32 for Qwen3-VL): for VGT-AE Decode or the editing nodes.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vgt_ae": (T.VGT_AE, {"tooltip": "From Load VGT-AE or Load VGT Model."}),
                "image": ("IMAGE", {"tooltip": "Images to encode."}),
                "fit": (list(I.FIT_MODES), {"default": "center_crop", "tooltip": "Sizes that are not multiples of the token size (28 px, or 32 for Qwen3-VL): error, crop the centre, or resize to the nearest multiples."}),
            }
        }

    def encode(self, vgt_ae, image, fit):
        src = I.from_comfy(image)
        x = I.fit_to_stride(src, fit, stride=vgt_ae.stride)
        # The source size and fit let editing nodes apply the same crop/resize to a mask drawn on the original image.
        latent = T.make_latent(_intermediate(vgt_ae.encode(x)), vgt_ae.family, stride=vgt_ae.stride,
                               source_hw=tuple(src.shape[-2:]), fit=fit)
        return (latent,)


class VGTAEDecode:
    DESCRIPTION = "Decodes VGT latents into images with the VGT-AE's DC-AE decoder."
    CATEGORY = CATEGORY
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The decoded images (IMAGE, 0..1).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vgt_ae": (T.VGT_AE, {"tooltip": "The VGT-AE matching the model that made the latents."}),
                "samples": (T.VGT_LATENT, {"tooltip": "VGT latents from the QueryAR Sampler, VGT-AE Encode or an editing node."}),
            }
        }

    def decode(self, vgt_ae, samples):
        z = T.check_latent(samples)
        fam = samples.get("family")
        if fam and fam != vgt_ae.family:
            raise ValueError(f"samples are {fam} VGT latents but this VGT-AE is {vgt_ae.family}: use the matching VGT-AE")
        if T.latent_stride(samples) != vgt_ae.stride:
            raise ValueError(f"samples have {T.latent_stride(samples)} px per token but this VGT-AE decodes "
                             f"{vgt_ae.stride} px per token: use the VGT-AE of the model that made them")
        return (_intermediate(I.to_comfy(vgt_ae.decode(z))),)
