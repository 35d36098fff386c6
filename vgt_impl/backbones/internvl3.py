"""InternVL3 adapter: InternViT + pixel shuffle + projector (mlp1) for VGT-AE, the Qwen2 LLM for VGT-AR.

Uses transformers' native InternVL classes (no remote code); the remote-code weight names of the official checkpoints
(``vision_model.*`` / ``encoder.*``, ``mlp1.*``, fused ``attn.qkv``) are mapped onto them here.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import IMG_START_TOKEN
from .adapter import BaseKeyMap, BaseTensor, FamilyAdapter, PrefixRule, Shape, map_by_prefix, register
from .common import BaseConfig, build_text_model, count_indexed, read_config_json, set_attn


def _vision_from_remote(vc: dict[str, Any], image_size: int):
    from transformers import InternVLVisionConfig

    return InternVLVisionConfig(
        hidden_size=vc["hidden_size"], num_hidden_layers=vc["num_hidden_layers"],
        num_attention_heads=vc["num_attention_heads"], intermediate_size=vc["intermediate_size"],
        hidden_act=vc.get("hidden_act", "gelu"), layer_norm_eps=vc.get("layer_norm_eps", 1e-6),
        image_size=[image_size, image_size], patch_size=[vc["patch_size"], vc["patch_size"]],
        num_channels=vc.get("num_channels", 3), attention_bias=vc.get("qkv_bias", True),
        use_qk_norm=vc.get("qk_normalization", False), norm_type=vc.get("norm_type", "layer_norm"),
        use_mean_pooling=True, use_absolute_position_embeddings=True,
        attention_dropout=0.0, projection_dropout=0.0, hidden_dropout_prob=0.0,
    )


class InternVLEncoder(nn.Module):
    """InternViT + pixel shuffle + projector; names follow transformers' InternVLModel (vision_tower, projector)."""

    def __init__(self, vision_config: Any, text_hidden: int, downsample_ratio: float = 0.5):
        super().__init__()
        from transformers import InternVLConfig
        from transformers.models.internvl.modeling_internvl import InternVLMultiModalProjector, InternVLVisionModel

        self.downsample_ratio = downsample_ratio
        self.vision_tower = InternVLVisionModel(vision_config)
        proj_cfg = InternVLConfig(
            vision_config=vision_config.to_dict(), text_config={"model_type": "qwen2", "hidden_size": text_hidden},
            downsample_ratio=downsample_ratio, projector_hidden_act="gelu",
        )
        self.multi_modal_projector = InternVLMultiModalProjector(proj_cfg)

    @property
    def dtype(self) -> torch.dtype:
        return self.multi_modal_projector.linear_1.weight.dtype


def pixel_shuffle(x: torch.Tensor, scale: float = 0.5) -> torch.Tensor:
    """[B, H, W, C] -> [B, H*s, W*s, C/s^2] (InternVL ps_version v2 channel order)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h, int(w * scale), int(c / scale))
    x = x.permute(0, 2, 1, 3).reshape(b, int(w * scale), int(h * scale), int(c / scale**2))
    return x.permute(0, 2, 1, 3).contiguous()



_VIT_RENAMES = [
    (r"^embeddings\.class_embedding$", "vision_tower.embeddings.cls_token"),
    (r"^embeddings\.position_embedding$", "vision_tower.embeddings.position_embeddings"),
    (r"^embeddings\.patch_embedding\.", "vision_tower.embeddings.patch_embeddings.projection."),
    (r"^encoder\.layers\.(\d+)\.ls1$", r"vision_tower.encoder.layer.\1.lambda_1"),
    (r"^encoder\.layers\.(\d+)\.ls2$", r"vision_tower.encoder.layer.\1.lambda_2"),
    (r"^encoder\.layers\.(\d+)\.attn\.proj\.", r"vision_tower.encoder.layer.\1.attention.projection_layer."),
    (r"^encoder\.layers\.(\d+)\.attn\.q_norm\.", r"vision_tower.encoder.layer.\1.attention.q_norm."),
    (r"^encoder\.layers\.(\d+)\.attn\.k_norm\.", r"vision_tower.encoder.layer.\1.attention.k_norm."),
    (r"^encoder\.layers\.(\d+)\.mlp\.", r"vision_tower.encoder.layer.\1.mlp."),
    (r"^encoder\.layers\.(\d+)\.norm1\.", r"vision_tower.encoder.layer.\1.layernorm_before."),
    (r"^encoder\.layers\.(\d+)\.norm2\.", r"vision_tower.encoder.layer.\1.layernorm_after."),
]
_MLP1 = {"0": "layer_norm", "1": "linear_1", "3": "linear_2"}
_QKV = re.compile(r"^encoder\.layers\.(\d+)\.attn\.qkv\.(weight|bias)$")


def vit_key_targets(key: str) -> list[tuple[str, int, int]]:
    """One remote-code InternViT key (without prefix) -> [(native key, chunk, chunks)]; the fused qkv splits in 3."""
    m = _QKV.match(key)
    if m:
        base = f"vision_tower.encoder.layer.{m.group(1)}.attention."
        return [(f"{base}{name}_proj.{m.group(2)}", i, 3) for i, name in enumerate("qkv")]
    for pattern, repl in _VIT_RENAMES:
        if re.match(pattern, key):
            return [(re.sub(pattern, repl, key), 0, 1)]
    raise ValueError(f"unexpected InternViT key {key!r}")


def map_vit_key(key: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    """One remote-code InternViT key (without prefix) -> native key(s); the fused qkv splits into q, k, v."""
    return {name: (value.chunk(n, dim=0)[i] if n > 1 else value) for name, i, n in vit_key_targets(key)}


def mlp1_target(key: str) -> str:
    """``0.weight`` (remote-code ``mlp1`` index + tensor) -> ``multi_modal_projector.layer_norm.weight``."""
    idx, rest = key.split(".", 1)
    if idx not in _MLP1:
        raise ValueError(f"unexpected projector key mlp1.{key!r}")
    return f"multi_modal_projector.{_MLP1[idx]}.{rest}"


def _remote_vit(hub_key: str, rest: str) -> dict[str, BaseTensor]:
    return {name: BaseTensor(hub_key, i, n) for name, i, n in vit_key_targets(rest)}


def _remote_mlp1(hub_key: str, rest: str) -> dict[str, BaseTensor]:
    return {mlp1_target(rest): BaseTensor(hub_key)}


@register
class InternVL3(FamilyAdapter):
    """InternVL3: remote-code repos (``InternVLChatConfig``) and native ``-hf`` repos, both read without remote code."""

    name = "internvl3"
    display_name = "InternVL3"
    model_types = ("internvl_chat", "internvl")
    base_models = "InternVL3-2B (VGT-AR) / InternVL3-1B (its VGT-AE) (config.json + tokenizer files)"
    image_start_marker = IMG_START_TOKEN  # "<img>" is one special token of the InternVL3 tokenizer
    position_rule = "continue"
    # The InternVL VGT-AE was trained in bf16 with its ImageNet mean/std buffers rounded to bf16; the released weights
    # expect exactly these values.
    pixel_mean = (0.484375, 0.455078125, 0.40625)
    pixel_std = (0.228515625, 0.2236328125, 0.224609375)
    reference_nonneg_skips_norm = True  # the reference normalises only inside its "x.min() < 0" branch
    image_start_pieces = "one"
    layer_ratio = 1.0  # the AR model keeps every LLM layer of the base model
    ae_base_model = "InternVL3-1B"
    official_latent_stride = 28  # ViT patch 14 x 2x2 merge (the released checkpoints)

    # ------------------------------------------------------------------ base folder
    def load_base_config(self, base_dir: str | Path) -> BaseConfig:
        """Remote-code ``InternVLChatConfig`` folders (OpenGVLab/InternVL3-*) and native ``-hf`` folders."""
        from transformers import InternVLConfig, Qwen2Config

        raw = read_config_json(base_dir)
        kind = raw.get("model_type")
        if kind == "internvl_chat":
            for section in ("llm_config", "vision_config"):
                if not isinstance(raw.get(section), dict):
                    raise ValueError(f"{base_dir}/config.json (InternVL3, remote-code format) has no {section} "
                                     f"section: re-download the base model's config.json")
            llm = {k: v for k, v in raw["llm_config"].items() if k not in ("architectures", "auto_map")}
            try:
                text = Qwen2Config(**llm)
                image_size = raw.get("force_image_size") or raw["vision_config"]["image_size"]
                vision = _vision_from_remote(raw["vision_config"], int(image_size))
            except KeyError as e:
                raise ValueError(f"{base_dir}/config.json: vision_config has no {e.args[0]!r}: re-download the base "
                                 f"model's config.json") from None
            ratio = float(raw.get("downsample_ratio", 0.5))
        elif kind == "internvl":
            cfg = InternVLConfig.from_dict(raw)
            text, vision, ratio = cfg.text_config, cfg.vision_config, float(cfg.downsample_ratio)
        else:
            raise ValueError(f"{base_dir} is a {kind!r} model, not InternVL3 (internvl_chat or internvl)")
        extra = {"downsample_ratio": ratio, "llm_hidden_size": text.hidden_size}
        return BaseConfig(self.name, vision, text, extra=extra)

    def latent_stride(self, base_cfg: BaseConfig) -> int:
        p = base_cfg.vision_config.patch_size
        p = p[0] if isinstance(p, (list, tuple)) else p
        return int(round(int(p) / float(base_cfg.extra.get("downsample_ratio", 0.5))))

    # ------------------------------------------------------------------ networks
    def build_vision_encoder(self, base_cfg, *, attn_implementation="sdpa", out_hidden=None) -> nn.Module:
        vc = set_attn(copy.deepcopy(base_cfg.vision_config), attn_implementation)
        hidden = out_hidden or base_cfg.extra["llm_hidden_size"]
        return InternVLEncoder(vc, hidden, base_cfg.extra.get("downsample_ratio", 0.5))

    def vision_features(self, encoder: InternVLEncoder, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels [B, 3, H, W] -> projected features [B, (H/28)*(W/28), D] in raster order."""
        b, _, h, w = pixels.shape
        p = encoder.vision_tower.config.patch_size
        p = p[0] if isinstance(p, (list, tuple)) else p
        out = encoder.vision_tower(pixel_values=pixels.to(encoder.dtype))
        x = out.last_hidden_state[:, 1:]  # drop CLS: [B, (H/14)*(W/14), C]
        x = pixel_shuffle(x.reshape(b, h // p, w // p, -1), encoder.downsample_ratio)  # [B, H/28, W/28, 4C]
        return encoder.multi_modal_projector(x.reshape(b, -1, x.shape[-1]))

    def build_language_model(self, text_config, *, num_layers=None, attn_implementation="sdpa") -> nn.Module:
        """transformers' Qwen2Model (the InternVL3 LLM), optionally keeping the first ``num_layers`` layers."""
        from transformers import Qwen2Model

        return build_text_model(Qwen2Model, text_config, num_layers, attn_implementation)

    # ------------------------------------------------------------------ official VGT checkpoints
    def owns_ae_keys(self, keys: list[str], prefix: str = "") -> bool:
        starts = tuple(prefix + s for s in ("encoder.encoder.layers.", "mlp1.", "encoder.vision_tower."))
        return any(k.startswith(starts) for k in keys)

    def ae_vision_sizes(self, keys: list[str], shape: Shape, prefix: str = "") -> tuple[int, int]:
        p = re.escape(prefix)
        if any(k.startswith(prefix + "encoder.vision_tower.") for k in keys):  # our (native) layout
            layers = count_indexed(keys, p + r"encoder\.vision_tower\.encoder\.layer\.(\d+)\.")
            return layers, shape(prefix + "encoder.vision_tower.embeddings.cls_token")[-1]
        layers = count_indexed(keys, p + r"encoder\.encoder\.layers\.(\d+)\.")
        return layers, shape(prefix + "encoder.embeddings.class_embedding")[-1]

    def ar_llm_prefix(self, keys: list[str]) -> str | None:
        return "lmm.language_model.model." if any(k.startswith("lmm.language_model.model.") for k in keys) else None

    def map_ae_state_dict(self, sd):
        """Official InternVL3 VGT-AE keys -> ours: encoder.* / mlp1.* -> encoder.vision_tower.* / projector."""
        mapped: dict[str, torch.Tensor] = {}
        dropped: dict[str, str] = {}
        for key, value in sd.items():
            if key.startswith(("teacher.", "teacher_mlp1.")):
                dropped[key.split(".")[0] + ".*"] = "distillation teacher of VGT-AE training, unused at inference"
            elif key.startswith(("encoder.vision_tower.", "encoder.multi_modal_projector.")):
                mapped[key] = value  # already in the native layout (a converted checkpoint)
            elif key.startswith("encoder."):
                for k, v in map_vit_key(key[len("encoder."):], value).items():
                    mapped["encoder." + k] = v
            elif key.startswith("mlp1."):
                mapped["encoder." + mlp1_target(key[len("mlp1."):])] = value
            else:
                mapped[key] = value
        return mapped, dropped

    def map_llm_state_dict(self, sd):
        """AR checkpoint ``lmm.language_model.model.*`` -> Qwen2Model keys; lm_head and vision parts are dropped."""
        mapped: dict[str, torch.Tensor] = {}
        dropped: dict[str, str] = {}
        prefix = "lmm.language_model.model."
        for key, value in sd.items():
            if not key.startswith("lmm."):
                continue
            if key.startswith(prefix):
                mapped[key[len(prefix):]] = value
            elif key == "lmm.language_model.lm_head.weight":
                dropped["lmm.language_model.lm_head.weight"] = "text output head, unused for image generation"
            elif key.startswith(("lmm.vision_model.", "lmm.mlp1.")):
                dropped[".".join(key.split(".")[:2]) + ".*"] = "VLM vision tower, unused by VGT-AR (the VGT-AE has its own)"
            else:
                raise ValueError(f"unexpected InternVL3 LLM key {key!r}")
        return mapped, dropped

    # ------------------------------------------------------------------ base hub checkpoints
    BASE_RULES: list[PrefixRule] = [
        # remote-code repos (OpenGVLab/InternVL3-*): fused qkv, mlp1
        ("language_model.model.", "llm", ""),
        ("language_model.lm_head.", None, "text output head, unused by VGT"),
        ("vision_model.", "vision", _remote_vit),
        ("mlp1.", "vision", _remote_mlp1),
        # native -hf repos: as saved by transformers >= 4.52, and the earlier layout without "model."
        ("model.language_model.", "llm", ""),
        ("model.vision_tower.", "vision", "vision_tower."),
        ("model.multi_modal_projector.", "vision", "multi_modal_projector."),
        ("vision_tower.", "vision", "vision_tower."),
        ("multi_modal_projector.", "vision", "multi_modal_projector."),
        ("lm_head.", None, "text output head, unused by VGT"),
    ]

    def map_base_keys(self, keys: Iterable[str], part: str) -> BaseKeyMap:
        return map_by_prefix(keys, part, self.BASE_RULES, "InternVL3")
