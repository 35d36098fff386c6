"""Qwen2.5-VL adapter: its vision tower (+ merger) for VGT-AE and its text model for VGT-AR (transformers classes)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch import nn

from ..config import CLIP_MEAN, CLIP_STD
from .common import BaseConfig, build_text_model, load_tokenizer, read_config_json, set_attn  # noqa: F401

FAMILY = "qwen2_5_vl"
PIXEL_MEAN = CLIP_MEAN  # the Qwen VGT-AE normalises with the CLIP constants, in fp32
PIXEL_STD = CLIP_STD
IMG_START_TOKENS = "several"  # Qwen2.5-VL's tokenizer has no <img> token: the marker is ordinary text pieces
LAYER_RATIO = 0.5  # the AR model keeps the first half of the base model's LLM layers


def load_base_config(base_dir: str | Path) -> BaseConfig:
    """Read a Qwen2.5-VL folder's config.json (old flat format or nested text_config)."""
    from transformers import Qwen2_5_VLConfig

    raw = read_config_json(base_dir)
    if raw.get("model_type") != "qwen2_5_vl":
        raise ValueError(f"{base_dir} is a {raw.get('model_type')!r} model, not Qwen2.5-VL (qwen2_5_vl)")
    cfg = Qwen2_5_VLConfig.from_dict(raw)
    text = getattr(cfg, "text_config", None) or cfg
    return BaseConfig(FAMILY, cfg.vision_config, text, extra={"llm_hidden_size": text.hidden_size})


def build_vision_encoder(base_cfg: BaseConfig, *, attn_implementation: str = "sdpa", **_: Any) -> nn.Module:
    """The Qwen2.5-VL vision transformer with its patch merger (output width = LLM hidden size)."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    vc = set_attn(copy.deepcopy(base_cfg.vision_config), attn_implementation)
    return Qwen2_5_VisionTransformerPretrainedModel(vc)


def vision_features(encoder: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Normalised pixels [B, 3, H, W] -> merged features [B, (H/28)*(W/28), D] in raster order."""
    cfg = encoder.config
    p, m, tp = cfg.patch_size, cfg.spatial_merge_size, cfg.temporal_patch_size
    b, c, h, w = pixels.shape
    x = pixels.to(encoder.dtype)[:, None].expand(b, tp, c, h, w)  # a still image repeated on the time axis
    x = x.reshape(b, 1, tp, c, h // p // m, m, p, w // p // m, m, p)
    x = rearrange(x, "b t tp c h m p w n q -> (b t h w m n) (c tp p q)")  # [B*patches, C*tp*p*p]
    grid = torch.tensor([[1, h // p, w // p]] * b, dtype=torch.long, device=pixels.device)
    out = encoder(x, grid_thw=grid)
    out = getattr(out, "pooler_output", out)  # transformers 5 returns a ModelOutput, 4.57 a tensor
    return out.reshape(b, -1, out.shape[-1])


def build_language_model(
    text_config: Any, *, num_layers: int | None = None, attn_implementation: str = "sdpa", **_: Any
) -> nn.Module:
    """transformers' Qwen2.5-VL text model, keeping the first ``num_layers`` layers (the AR model keeps 18 of 36)."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLTextModel

    return build_text_model(Qwen2_5_VLTextModel, text_config, num_layers, attn_implementation)


def map_ae_state_dict(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Official VGTAE_Qwen25VL keys are transformers' own names already: nothing to rename or drop."""
    return dict(sd), {}


_LLM_PREFIXES = ("lmm.model.language_model.", "lmm.model.")  # current / pre-4.52 transformers layouts


def map_llm_state_dict(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """AR checkpoint ``lmm.*`` keys -> Qwen2_5_VLTextModel keys; returns (mapped, dropped group -> reason)."""
    mapped: dict[str, torch.Tensor] = {}
    dropped: dict[str, str] = {}
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
            prefix = next((p for p in _LLM_PREFIXES if key.startswith(p)), None)
            if prefix is None:
                raise ValueError(f"unexpected Qwen2.5-VL LLM key {key!r}")
            mapped[key[len(prefix):]] = value
    return mapped, dropped
