"""Qwen3-VL: its vision tower (patch embed + learned position embedding + blocks + merger) for VGT-AE and its text
model for VGT-AR, on transformers' own classes (``Qwen3VLVisionModel``, ``Qwen3VLTextModel``).

No official VGT checkpoint exists for this family; its VGT conventions are this project's:

- **Image-start marker**: ``<|vision_start|>``, one special token of the Qwen3-VL tokenizer (the token Qwen3-VL itself
  puts before every image), instead of the multi-piece ``"<img>"`` of the Qwen2.5-VL reference.
- **Pixel normalisation**: the base folder's ``preprocessor_config.json`` (``image_mean`` / ``image_std``; the real
  Qwen3-VL repos use 0.5 / 0.5, i.e. [-1, 1] pixels enter the ViT unchanged); 0.5 / 0.5 when the file is absent.
- **Latent stride**: ``patch_size x spatial_merge_size`` of the vision config (16 x 2 = 32 for the real models, so the
  DC-AE's x32 output needs no resize).
- **Positions**: the LLM gets 2-D ``[B, L]`` position ids; ``Qwen3VLTextModel`` copies them onto its temporal, height
  and width rotary axes, so the interleaved multimodal RoPE reduces to ordinary 1-D RoPE. That is exactly what Qwen3-VL
  assigns to text tokens, and image queries simply continue the sequence (their 2-D place comes from the learned query
  / position grid, as in every VGT family, since the token order is random). Cached decoding steps continue each row
  from its own last position (no padded-text-offset quirk to reproduce).
- **DeepStack**: the deepstack mergers feed intermediate ViT features into the first LLM layers when Qwen3-VL reads an
  image; VGT-AE uses only the final merger's output, so they are not built (``deepstack_visual_indexes=[]``) and their
  base weights are skipped with that reason.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from .adapter import BaseKeyMap, FamilyAdapter, PrefixRule, Shape, map_by_prefix, register
from .common import BaseConfig, build_text_model, count_indexed, read_config_json, set_attn
from .qwen2_5_vl import merged_output, qwen_vision_patches

DEEPSTACK_REASON = "DeepStack mergers (intermediate ViT features for the LLM's first layers), not used by VGT-AE"


def read_image_norm(base_dir: str | Path) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(image_mean, image_std) of a folder's preprocessor_config.json, or None when it has none."""
    path = Path(base_dir) / "preprocessor_config.json"
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}): re-download the base model's preprocessor_config.json") from e
    mean, std = raw.get("image_mean"), raw.get("image_std")
    if mean is None or std is None:
        return None
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"{path}: image_mean / image_std must be 3 values each (std > 0), got {mean} / {std}")
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


@register
class Qwen3VL(FamilyAdapter):
    name = "qwen3_vl"
    display_name = "Qwen3-VL"
    model_types = ("qwen3_vl",)
    base_models = "the Qwen3-VL repo it was tuned from, e.g. Qwen3-VL-2B-Instruct (config.json + tokenizer files)"
    image_start_marker = "<|vision_start|>"
    image_start_pieces = "one"  # a special token of the Qwen3-VL tokenizer
    ae_base_model = "the Qwen3-VL base folder it was tuned from"
    position_rule = "continue"
    pixel_mean = (0.5, 0.5, 0.5)  # the real repos' preprocessor_config.json values (used when the file is absent)
    pixel_std = (0.5, 0.5, 0.5)

    # ------------------------------------------------------------------ base folder
    def load_base_config(self, base_dir: str | Path) -> BaseConfig:
        from transformers import Qwen3VLConfig

        raw = read_config_json(base_dir)
        if raw.get("model_type") not in self.model_types:
            raise ValueError(f"{base_dir} is a {raw.get('model_type')!r} model, not Qwen3-VL (qwen3_vl)")
        cfg = Qwen3VLConfig.from_dict(raw)
        text = cfg.text_config
        norm = read_image_norm(base_dir) or (self.pixel_mean, self.pixel_std)
        extra = {"llm_hidden_size": text.hidden_size, "image_mean": norm[0], "image_std": norm[1]}
        return BaseConfig(self.name, cfg.vision_config, text, extra=extra)

    def pixel_norm(self, base_cfg: BaseConfig | None = None):
        if base_cfg is not None and "image_mean" in base_cfg.extra:
            return tuple(base_cfg.extra["image_mean"]), tuple(base_cfg.extra["image_std"])
        return self.pixel_mean, self.pixel_std

    def latent_stride(self, base_cfg: BaseConfig) -> int:
        vc = base_cfg.vision_config
        return int(vc.patch_size) * int(vc.spatial_merge_size)

    def image_start_ids(self, tokenizer) -> list[int]:
        """``<|vision_start|>`` must be one token of the tokenizer (it is in every Qwen3-VL repo)."""
        ids = list(tokenizer.encode(self.image_start_marker, add_special_tokens=False))
        pieces = tokenizer.convert_ids_to_tokens(ids) if hasattr(tokenizer, "convert_ids_to_tokens") else None
        if len(ids) != 1 or (pieces is not None and pieces[0] != self.image_start_marker):
            raise ValueError(
                f"the tokenizer has no {self.image_start_marker!r} token (it encodes it as {pieces or ids}): Qwen3-VL "
                f"VGT models start the image with that special token; use the tokenizer files of the Qwen3-VL base "
                f"folder the model was tuned from"
            )
        return ids

    # ------------------------------------------------------------------ networks
    def build_vision_encoder(self, base_cfg, *, attn_implementation="sdpa", out_hidden=None) -> nn.Module:
        """Qwen3VLVisionModel without its DeepStack mergers (output width = vision_config.out_hidden_size)."""
        from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel

        vc = set_attn(copy.deepcopy(base_cfg.vision_config), attn_implementation)
        vc.deepstack_visual_indexes = []
        return Qwen3VLVisionModel(vc)

    def vision_features(self, encoder: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels [B, 3, H, W] -> merged features [B, (H/s)*(W/s), D] in raster order."""
        cfg = encoder.config
        x, grid = qwen_vision_patches(pixels.to(encoder.dtype), cfg.patch_size, cfg.spatial_merge_size,
                                      cfg.temporal_patch_size)
        return merged_output(encoder(x, grid_thw=grid), pixels.shape[0])

    def build_language_model(self, text_config, *, num_layers=None, attn_implementation="sdpa") -> nn.Module:
        """transformers' Qwen3VLTextModel, keeping its first ``num_layers`` layers."""
        from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextModel

        return build_text_model(Qwen3VLTextModel, text_config, num_layers, attn_implementation)

    # ------------------------------------------------------------------ VGT checkpoints (this project's layout only)
    def owns_ae_keys(self, keys: list[str], prefix: str = "") -> bool:
        # Qwen3-VL's ViT has a learned position embedding and linear_fc MLPs (Qwen2.5-VL: gated MLP, ln_q merger).
        return any(k == prefix + "encoder.pos_embed.weight" or k.startswith(prefix + "encoder.merger.linear_fc1.")
                   for k in keys)

    def ae_vision_sizes(self, keys: list[str], shape: Shape, prefix: str = "") -> tuple[int, int]:
        layers = count_indexed(keys, re.escape(prefix) + r"encoder\.blocks\.(\d+)\.")
        return layers, shape(prefix + "encoder.blocks.0.norm1.weight")[0]

    def ar_llm_prefix(self, keys: list[str]) -> str | None:
        # An mmengine-style file laid out like the Qwen2.5-VL reference: the QK-norm tells the text models apart.
        p = "lmm.model.language_model."
        return p if any(k.startswith(p) and ".self_attn.q_norm." in k for k in keys) else None

    def map_ae_state_dict(self, sd):
        mapped = {k: v for k, v in sd.items() if not k.startswith("encoder.deepstack_merger_list.")}
        dropped = {"encoder.deepstack_merger_list.*": DEEPSTACK_REASON} if len(mapped) < len(sd) else {}
        return mapped, dropped

    def map_llm_state_dict(self, sd):
        mapped: dict[str, torch.Tensor] = {}
        dropped: dict[str, str] = {}
        prefix = "lmm.model.language_model."
        for key, value in sd.items():
            if not key.startswith("lmm."):
                continue
            if key.startswith(prefix):
                mapped[key[len(prefix):]] = value
            elif key.startswith("lmm.language_model."):
                dropped["lmm.language_model.*"] = "duplicate of lmm.model.language_model.* (same tensors)"
            elif key == "lmm.lm_head.weight":
                dropped[key] = "text output head, unused for image generation"
            elif key.startswith("lmm.model.visual."):
                dropped["lmm.model.visual.*"] = "vision tower, unused by VGT-AR (the VGT-AE has its own)"
            else:
                raise ValueError(f"unexpected Qwen3-VL LLM key {key!r}")
        return mapped, dropped

    # ------------------------------------------------------------------ base hub checkpoints
    BASE_RULES: list[PrefixRule] = [
        ("model.language_model.", "llm", ""),
        ("model.visual.deepstack_merger_list.", None, DEEPSTACK_REASON),
        ("model.visual.", "vision", ""),
        ("lm_head.", None, "text output head, unused by VGT (tied to the embeddings in the 2B/4B repos)"),
    ]

    def map_base_keys(self, keys: Iterable[str], part: str) -> BaseKeyMap:
        return map_by_prefix(keys, part, self.BASE_RULES, "Qwen3-VL")
