"""What every VLM family adapter shares: the base-config container, config reading, meta-buffer repair."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass
class BaseConfig:
    """The parts of a base VLM folder VGT needs (transformers config objects; no weights)."""

    family: str
    vision_config: Any  # transformers vision config
    text_config: Any  # transformers text config (the LLM)
    extra: dict[str, Any] = field(default_factory=dict)  # family specifics (downsample_ratio, ...)


def read_config_json(base_dir: str | Path) -> dict[str, Any]:
    """config.json of a base-model folder, with a clear error when it is not one."""
    path = Path(base_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"base model folder {base_dir} has no config.json: point to the folder of the hub repo "
            f"(e.g. Qwen/Qwen2.5-VL-3B-Instruct or OpenGVLab/InternVL3-2B), with its config and tokenizer files"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}): re-download the base model's config.json") from e


def count_indexed(keys, pattern: str) -> int:
    """1 + the largest index captured by ``pattern`` (group 1) over ``keys``; 0 when none matches."""
    pat = re.compile(pattern)
    ids = {int(m.group(1)) for k in keys if (m := pat.match(k))}
    return max(ids) + 1 if ids else 0


def set_attn(config: Any, attn_implementation: str) -> Any:
    """Set the attention kernel on a transformers config (sdpa / eager / flash_attention_2)."""
    if attn_implementation == "flash_attention_2":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None:
            raise ImportError("attn_implementation='flash_attention_2' needs flash-attn: pip install 'comfyui-vgt[flash]'")
    config._attn_implementation = attn_implementation
    return config


def build_text_model(model_cls: type, text_config: Any, num_layers: int | None, attn_implementation: str) -> nn.Module:
    """A transformers text model keeping its first ``num_layers`` layers (the base config is not modified)."""
    import copy

    tc = set_attn(copy.deepcopy(text_config), attn_implementation)
    if num_layers is not None:
        tc.num_hidden_layers = num_layers
        if getattr(tc, "layer_types", None):
            tc.layer_types = list(tc.layer_types)[:num_layers]
    return model_cls(tc)


def load_tokenizer(base_dir: str | Path):
    """The base model's tokenizer (no remote code), padding on the right as the reference."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(base_dir), padding_side="right")


def rebuild_meta_buffers(module: nn.Module, device: torch.device) -> None:
    """Recreate submodules whose buffers are still on the meta device after an ``assign`` load.

    Only deterministic, non-persistent buffers can be in that state (rotary ``inv_freq`` tables): they are rebuilt from
    the submodule's config, or from the table size for config-less vision rotary embeddings.
    """
    for name, child in list(module.named_modules()):
        if not any(b.is_meta for b in child.buffers(recurse=False)):
            continue
        fresh = _fresh_rotary(child)
        fresh.to(device)
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, fresh)


def _fresh_rotary(child: nn.Module) -> nn.Module:
    cls = type(child)
    cfg = getattr(child, "config", None)
    with torch.device("cpu"):
        if cfg is not None:
            try:
                return cls(config=cfg)
            except TypeError:
                return cls(cfg)
        inv = getattr(child, "inv_freq", None)
        if inv is not None:
            return cls(inv.shape[0] * 2)
    raise RuntimeError(f"cannot rebuild meta buffers of {cls.__name__}: it has no config and no inv_freq")
