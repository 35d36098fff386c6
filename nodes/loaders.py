"""Load VGT Model / Load VGT-AE."""

from __future__ import annotations

from ..comfyui_vgt import folders
from ..comfyui_vgt import model as M
from ..comfyui_vgt import releases as R
from ..comfyui_vgt import types as T
from .common import CATEGORY

EMBEDDED = "(embedded in the AR checkpoint)"
SAME_BASE = "(same as base_model)"
BUILTIN_DCAE = "(built-in DC-AE f32c32)"
DTYPE_CHOICES = ["auto", "bf16", "fp16", "fp32"]


# Always listed (saved workflows stay valid on any machine); picking flash_attention_2 without flash-attn is an error.
ATTENTION_CHOICES = ["sdpa", "eager", "flash_attention_2"]


def _check_attention(attention: str) -> None:
    import importlib.util

    if attention == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ValueError("attention=flash_attention_2 needs the flash-attn package (pip install flash-attn, CUDA only): "
                         "pick sdpa")


def _decoder(name: str):
    return None if name == BUILTIN_DCAE else folders.base_path(name)


def _check_model_choice(ar_name, ar_path, base_name, base, ae_name, ae_path, ae_base_name, ae_base) -> None:
    """The picked files pair up, checked from their keys and config.json alone; errors name the node's inputs."""
    from vgt_impl.backbones import detect_family_from_dir, display_name, get_family
    from vgt_impl.checkpoints import peek

    info = peek(ar_path)
    if info.kind not in ("ar", "converted_ar"):
        raise ValueError(f"ar_checkpoint: {ar_name} is a VGT-AE checkpoint: pick it in vgt_ae (or use Load VGT-AE), "
                         f"and a VGT-AR checkpoint here")
    fam = info.family
    if detect_family_from_dir(base) != fam:
        raise ValueError(f"base_model: {base_name} is {display_name(detect_family_from_dir(base))} but ar_checkpoint "
                         f"{ar_name} is a VGT-{display_name(fam)} model: pick {get_family(fam).base_models}")
    if ae_path is None and not info.has_embedded_ae:
        raise ValueError(f"vgt_ae: {ar_name} embeds no VGT-AE: pick the VGT-AE checkpoint (vgt_ae/vgt_ae_qwen25vl.pth "
                         f"or vgt_ae_internvl3.pth) in vgt_ae")
    if ae_path is not None:
        ae = peek(ae_path)
        if ae.kind in ("ar", "converted_ar") and not ae.has_embedded_ae:
            raise ValueError(f"vgt_ae: {ae_name} is a VGT-AR checkpoint without a VGT-AE: pick a VGT-AE checkpoint")
        if ae.family != fam:
            raise ValueError(f"vgt_ae: {ae_name} is the {display_name(ae.family)} VGT-AE but ar_checkpoint is a "
                             f"VGT-{display_name(fam)} model: pick the {display_name(fam)} VGT-AE, or {EMBEDDED}")
    if detect_family_from_dir(ae_base) != fam:
        raise ValueError(f"ae_base_model: {ae_base_name} is {display_name(detect_family_from_dir(ae_base))} but the "
                         f"VGT-AE is {display_name(fam)}: pick {get_family(fam).ae_base_model}")


OUTPUT_TIPS = ("The VGT model (language model + queries + flow head): wire it into VGT Text Encode and the sampler.",
               "Its VGT-AE (encoder + DC-AE decoder): wire it into VGT-AE Decode / Encode.")


class VGTUnifiedLoader:
    DESCRIPTION = ("One choice loads a VGT model: the built-in vgt-demo (shipped with the pack, the default), a "
                   "released model (its checkpoint, base config + tokenizer and "
                   "decoder config are found in models/vgt, and the missing files are downloaded when the node runs, "
                   "with progress) or any VGT-AR checkpoint in models/vgt (its family's base folders are fetched "
                   "the same way). For hand-picked files use Load VGT Model.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (T.VGT_MODEL, T.VGT_AE)
    RETURN_NAMES = ("model", "vgt_ae")
    OUTPUT_TOOLTIPS = OUTPUT_TIPS

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (R.choices(), {"default": R.default_choice(),
                                        "tooltip": "vgt-demo: the small model built into the pack (a world of "
                                                   "coloured shapes at 224x224; nothing to download). A released VGT "
                                                   "model (its missing files are downloaded into models/vgt on first "
                                                   "use, several GB) or a VGT-AR checkpoint found in models/vgt."}),
                "download_missing": ("BOOLEAN", {"default": True, "tooltip": "Download missing files from the "
                                                 "Hugging Face hub when the node runs (only the files this model "
                                                 "needs). Off: a missing file is an error that lists the download "
                                                 "commands."}),
                "dtype": (DTYPE_CHOICES, {"default": "auto", "tooltip": "Weight dtype; auto lets ComfyUI choose (bf16 on recent GPUs)."}),
                "attention": (ATTENTION_CHOICES, {"default": "sdpa", "tooltip": "Attention kernel of the language model: sdpa (PyTorch), eager, or flash_attention_2 (needs flash-attn on a CUDA GPU)."}),
            }
        }

    def load(self, model, download_missing, dtype, attention):
        _check_attention(attention)
        release, res = R.resolve(model, download_missing)
        base = res.paths["base_model"]
        handle = M.load_model(res.paths["ar_checkpoint"], base, ae_base_dir=res.paths.get("ae_base_model", base),
                              decoder=res.paths.get("decoder_config"), dtype_name=dtype, attention=attention)
        if handle.ae is None:  # a checkpoint without its VGT-AE: the release's stand-alone one
            ae = M.load_ae(R.resolve_ae(release, download_missing), res.paths.get("ae_base_model", base),
                           decoder=res.paths.get("decoder_config"), dtype_name=dtype)
            handle.attach_ae(ae)
        return (handle, handle.ae)


class VGTModelLoader:
    DESCRIPTION = ("Loads a VGT-AR checkpoint (VGT-Qwen2.5-VL or VGT-InternVL3, detected from the file) with its base "
                   "VLM folder (config + tokenizer) and its VGT-AE. Outputs the model and the VGT-AE.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (T.VGT_MODEL, T.VGT_AE)
    RETURN_NAMES = ("model", "vgt_ae")
    OUTPUT_TOOLTIPS = OUTPUT_TIPS

    @classmethod
    def INPUT_TYPES(cls):
        ckpts = folders.checkpoint_names()
        vlm = folders.base_names("vlm")
        return {
            "required": {
                "ar_checkpoint": (ckpts, {"tooltip": "VGT-AR checkpoint in models/vgt (e.g. vgt_qwen25vl_2B_sft/iter_5000.pth)."}),
                "base_model": (vlm, {"tooltip": "Base VLM folder in models/vgt/base: Qwen2.5-VL-3B-Instruct or InternVL3-2B (config.json + tokenizer)."}),
                "vgt_ae": ([EMBEDDED] + ckpts, {"default": EMBEDDED, "tooltip": "VGT-AE checkpoint; the AR checkpoint already embeds the one it was trained with."}),
                "ae_base_model": ([SAME_BASE] + vlm, {"default": SAME_BASE, "tooltip": "Base folder of the VGT-AE's encoder: InternVL3-1B for VGT-InternVL3, the same Qwen2.5-VL folder for VGT-Qwen."}),
                "decoder_config": ([BUILTIN_DCAE] + folders.base_names("dcae"), {"default": BUILTIN_DCAE, "tooltip": "DC-AE decoder config; the official f32c32 one is built in."}),
                "dtype": (DTYPE_CHOICES, {"default": "auto", "tooltip": "Weight dtype; auto lets ComfyUI choose (bf16 on recent GPUs)."}),
                "attention": (ATTENTION_CHOICES, {"default": "sdpa", "tooltip": "Attention kernel of the language model: sdpa (PyTorch, fast everywhere), eager, or flash_attention_2 (needs flash-attn on a CUDA GPU)."}),
            }
        }

    def load(self, ar_checkpoint, base_model, vgt_ae, ae_base_model, decoder_config, dtype, attention):
        _check_attention(attention)
        base = folders.base_path(base_model)
        ar_path = folders.checkpoint_path(ar_checkpoint)
        ae_path = None if vgt_ae == EMBEDDED else folders.checkpoint_path(vgt_ae)
        ae_base = base if ae_base_model == SAME_BASE else folders.base_path(ae_base_model)
        _check_model_choice(ar_checkpoint, ar_path, base_model, base, vgt_ae, ae_path,
                            base_model if ae_base_model == SAME_BASE else ae_base_model, ae_base)
        handle = M.load_model(ar_path, base, ae_path=ae_path, ae_base_dir=ae_base, decoder=_decoder(decoder_config),
                              dtype_name=dtype, attention=attention)
        if handle.ae is None:
            raise ValueError(f"{ar_checkpoint} embeds no VGT-AE: pick the VGT-AE checkpoint (vgt_ae/vgt_ae_qwen25vl.pth "
                             f"or vgt_ae_internvl3.pth) in vgt_ae")
        return (handle, handle.ae)


class VGTAELoader:
    DESCRIPTION = "Loads a VGT-AE on its own (reconstruction and encoding need no LLM)."
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (T.VGT_AE,)
    RETURN_NAMES = ("vgt_ae",)
    OUTPUT_TOOLTIPS = ("The VGT-AE: wire it into VGT-AE Encode / Decode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vgt_ae": (folders.checkpoint_names(), {"tooltip": "VGT-AE checkpoint in models/vgt (vgt_ae_qwen25vl.pth / vgt_ae_internvl3.pth), or a VGT-AR checkpoint to use its embedded VGT-AE."}),
                "base_model": (folders.base_names("vlm"), {"tooltip": "Base folder of the encoder: Qwen2.5-VL-3B-Instruct or InternVL3-1B."}),
                "decoder_config": ([BUILTIN_DCAE] + folders.base_names("dcae"), {"default": BUILTIN_DCAE, "tooltip": "DC-AE decoder config; the official f32c32 one is built in."}),
                "dtype": (DTYPE_CHOICES, {"default": "auto", "tooltip": "Weight dtype; auto lets ComfyUI choose."}),
            }
        }

    def load(self, vgt_ae, base_model, decoder_config, dtype):
        from vgt_impl.backbones import detect_family_from_dir, display_name, get_family
        from vgt_impl.checkpoints import peek_family

        path, base = folders.checkpoint_path(vgt_ae), folders.base_path(base_model)
        try:
            fam = peek_family(path, want="ae")
        except ValueError as e:
            raise ValueError(f"vgt_ae: {e}") from None
        if detect_family_from_dir(base) != fam:
            raise ValueError(f"base_model: {base_model} is {display_name(detect_family_from_dir(base))} but vgt_ae "
                             f"{vgt_ae} is the {display_name(fam)} VGT-AE: pick {get_family(fam).ae_base_model}")
        return (M.load_ae(path, base, decoder=_decoder(decoder_config), dtype_name=dtype),)
