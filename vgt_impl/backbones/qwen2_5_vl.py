"""Qwen2.5-VL: its vision tower (+ merger) for VGT-AE and its text model for VGT-AR (transformers classes)."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch import nn

from ..config import CLIP_MEAN, CLIP_STD, IMG_START_TOKEN
from .adapter import BaseKeyMap, FamilyAdapter, PrefixRule, Shape, map_by_prefix, register
from .common import BaseConfig, build_text_model, count_indexed, read_config_json, set_attn


def qwen_vision_patches(pixels: torch.Tensor, patch: int, merge: int, temporal: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, 3, H, W] -> (flattened patches [B*(H/p)*(W/p), 3*tp*p*p] in the Qwen processor's order, grid_thw [B, 3]).

    A still image is repeated on the time axis; patches are grouped by merge window, as the Qwen-VL processors do.
    """
    b, c, h, w = pixels.shape
    x = pixels[:, None].expand(b, temporal, c, h, w)
    x = x.reshape(b, 1, temporal, c, h // patch // merge, merge, patch, w // patch // merge, merge, patch)
    x = rearrange(x, "b t tp c h m p w n q -> (b t h w m n) (c tp p q)")  # [B*patches, C*tp*p*p]
    grid = torch.tensor([[1, h // patch, w // patch]] * b, dtype=torch.long, device=pixels.device)
    return x, grid


def merged_output(out: Any, batch: int) -> torch.Tensor:
    """A Qwen vision tower's merged tokens -> [B, tokens, D] (transformers 5 returns a ModelOutput, 4.57 a tensor or
    a (merged, deepstack) tuple)."""
    out = getattr(out, "pooler_output", out)
    out = out[0] if isinstance(out, tuple) else out
    return out.reshape(batch, -1, out.shape[-1])


@register
class Qwen25VL(FamilyAdapter):
    name = "qwen2_5_vl"
    display_name = "Qwen2.5-VL"
    model_types = ("qwen2_5_vl",)
    base_models = "Qwen2.5-VL-3B-Instruct (config.json + tokenizer files)"
    # The reference feeds "<img>", which the Qwen2.5-VL tokenizer splits into several ordinary pieces.
    image_start_marker = IMG_START_TOKEN
    position_rule = "padded_text_offset"  # reference: text_len + k * call_len + i for every cached call
    pixel_mean, pixel_std = CLIP_MEAN, CLIP_STD  # the Qwen VGT-AE normalises with the CLIP constants, in fp32
    image_start_pieces = "several"  # the tokenizer has no <img> token: a tokenizer that has one is not the base's
    layer_ratio = 0.5  # the AR model keeps the first half of the base model's LLM layers (18 of 36)
    ae_base_model = "Qwen2.5-VL-3B-Instruct"
    official_latent_stride = 28  # ViT patch 14 x 2x2 merge (the released checkpoints)

    # ------------------------------------------------------------------ base folder
    def load_base_config(self, base_dir: str | Path) -> BaseConfig:
        """A Qwen2.5-VL folder's config.json (old flat format or nested text_config)."""
        from transformers import Qwen2_5_VLConfig

        raw = read_config_json(base_dir)
        if raw.get("model_type") not in self.model_types:
            raise ValueError(f"{base_dir} is a {raw.get('model_type')!r} model, not Qwen2.5-VL (qwen2_5_vl)")
        cfg = Qwen2_5_VLConfig.from_dict(raw)
        text = getattr(cfg, "text_config", None) or cfg
        return BaseConfig(self.name, cfg.vision_config, text, extra={"llm_hidden_size": text.hidden_size})

    def latent_stride(self, base_cfg: BaseConfig) -> int:
        vc = base_cfg.vision_config
        return int(vc.patch_size) * int(vc.spatial_merge_size)

    # ------------------------------------------------------------------ networks
    def build_vision_encoder(self, base_cfg, *, attn_implementation="sdpa", out_hidden=None) -> nn.Module:
        """The Qwen2.5-VL vision transformer with its patch merger (output width = LLM hidden size)."""
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

        vc = set_attn(copy.deepcopy(base_cfg.vision_config), attn_implementation)
        return Qwen2_5_VisionTransformerPretrainedModel(vc)

    def vision_features(self, encoder: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels [B, 3, H, W] -> merged features [B, (H/28)*(W/28), D] in raster order."""
        cfg = encoder.config
        x, grid = qwen_vision_patches(pixels.to(encoder.dtype), cfg.patch_size, cfg.spatial_merge_size,
                                      cfg.temporal_patch_size)
        return merged_output(encoder(x, grid_thw=grid), pixels.shape[0])

    def build_language_model(self, text_config, *, num_layers=None, attn_implementation="sdpa") -> nn.Module:
        """transformers' Qwen2.5-VL text model, keeping the first ``num_layers`` layers (the AR model keeps 18 of 36)."""
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLTextModel

        return build_text_model(Qwen2_5_VLTextModel, text_config, num_layers, attn_implementation)

    # ------------------------------------------------------------------ official VGT checkpoints
    def owns_ae_keys(self, keys: list[str], prefix: str = "") -> bool:
        # Qwen2.5-VL's vision blocks have a gated MLP and its merger a ln_q / mlp pair.
        return any(k.startswith(prefix + "encoder.merger.ln_q.") or (
            k.startswith(prefix + "encoder.blocks.") and ".mlp.gate_proj." in k) for k in keys)

    def ae_vision_sizes(self, keys: list[str], shape: Shape, prefix: str = "") -> tuple[int, int]:
        layers = count_indexed(keys, re.escape(prefix) + r"encoder\.blocks\.(\d+)\.")
        return layers, shape(prefix + "encoder.blocks.0.norm1.weight")[0]

    def ar_llm_prefix(self, keys: list[str]) -> str | None:
        if any(k.startswith("lmm.model.language_model.") for k in keys):
            if any(k.startswith("lmm.model.language_model.") and ".self_attn.q_norm." in k for k in keys):
                return None  # a QK-norm text model: Qwen3-VL
            return "lmm.model.language_model."
        if any(k.startswith("lmm.model.layers.") for k in keys):
            return "lmm.model."  # pre-4.52 transformers layout
        return None

    def map_ae_state_dict(self, sd):
        """Official VGTAE_Qwen25VL keys are transformers' own names already: nothing to rename or drop."""
        return dict(sd), {}

    def map_llm_state_dict(self, sd):
        """AR checkpoint ``lmm.*`` keys -> Qwen2_5_VLTextModel keys; returns (mapped, dropped group -> reason)."""
        mapped: dict[str, torch.Tensor] = {}
        dropped: dict[str, str] = {}
        prefixes = ("lmm.model.language_model.", "lmm.model.")  # current / pre-4.52 transformers layouts
        for key, value in sd.items():
            if not key.startswith("lmm."):
                continue
            if key.startswith("lmm.language_model."):
                dropped["lmm.language_model.*"] = "duplicate of lmm.model.language_model.* (same tensors)"
            elif key == "lmm.lm_head.weight":
                dropped["lmm.lm_head.weight"] = "text output head, unused for image generation"
            elif key.startswith("lmm.model.visual."):
                dropped["lmm.model.visual.*"] = "vision tower, unused by VGT-AR (the VGT-AE has its own)"
            else:
                prefix = next((p for p in prefixes if key.startswith(p)), None)
                if prefix is None:
                    raise ValueError(f"unexpected Qwen2.5-VL LLM key {key!r}")
                mapped[key[len(prefix):]] = value
        return mapped, dropped

    # ------------------------------------------------------------------ base hub checkpoints
    BASE_RULES: list[PrefixRule] = [
        ("model.language_model.", "llm", ""),  # transformers >= 4.52 save_pretrained
        ("model.visual.", "vision", ""),
        ("visual.", "vision", ""),  # hub repos (pre-4.52 layout): model.* is the LLM, visual.* the vision tower
        ("model.", "llm", ""),
        ("lm_head.", None, "text output head, unused by VGT"),
    ]

    def map_base_keys(self, keys: Iterable[str], part: str) -> BaseKeyMap:
        return map_by_prefix(keys, part, self.BASE_RULES, "Qwen2.5-VL")
