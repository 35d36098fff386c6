"""VGT Text Encode."""

from __future__ import annotations

from ..comfyui_vgt import types as T
from .common import CATEGORY, model_input


class VGTTextEncode:
    DESCRIPTION = ("Turns a prompt into VGT conditioning (templated and tokenised as the official models expect). "
                   "Use a second one for a negative prompt; without it the official unconditional prompt is used.")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = (T.VGT_CONDITIONING,)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("The templated, tokenised prompt: the sampler's positive or negative.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                **model_input(),
                "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "default": "",
                                    "tooltip": "The prompt. It is wrapped as 'Generate an image: <text>' in the chat template."}),
            }
        }

    def encode(self, model, text):
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text is empty: write a prompt (for no negative prompt, leave the sampler's negative unconnected)")
        from vgt_impl.validation import PromptTooLongError

        try:
            batch = model.pipe.encode_prompts([text])  # validates and tokenises now: errors show on this node
        except PromptTooLongError as e:
            raise ValueError(f"text is {e.n_tokens} tokens after templating, more than the {e.limit} the VGT models "
                             f"were trained with: shorten it") from None
        return ({"text": text, "family": model.family, "num_tokens": len(batch.input_ids[0])},)
