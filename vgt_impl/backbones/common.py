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


# tokenizer_config.json classes that are the Qwen2 byte-level BPE both families use (any other is refused).
QWEN2_TOKENIZER_CLASSES = (None, "Qwen2Tokenizer", "Qwen2TokenizerFast", "PreTrainedTokenizerFast", "TokenizersBackend")


def load_tokenizer(base_dir: str | Path):
    """The base model's Qwen2 tokenizer, padding on the right as the reference.

    The class is constructed directly (never ``AutoTokenizer``, which consults the folder's ``auto_map``), with
    ``trust_remote_code=False`` and ``local_files_only=True``: no Python file of the folder is ever run (transformers
    5 would otherwise ask on a terminal) and nothing is downloaded. Check it with ``validation.verify_tokenizer``.
    """
    import transformers

    from ..validation import check_tokenizer_files

    check_tokenizer_files(base_dir)
    cfg_path = Path(base_dir) / "tokenizer_config.json"
    declared = None
    if cfg_path.is_file():
        try:
            declared = json.loads(cfg_path.read_text(encoding="utf-8")).get("tokenizer_class")
        except json.JSONDecodeError as e:
            raise ValueError(f"{cfg_path} is not valid JSON ({e}): re-download the base model's tokenizer files") from e
    if declared not in QWEN2_TOKENIZER_CLASSES:
        raise ValueError(f"{cfg_path} declares tokenizer_class {declared!r}; VGT's base models use the Qwen2 "
                         f"tokenizer (Qwen2Tokenizer): this folder is not one of them")
    cls = getattr(transformers, "Qwen2TokenizerFast", None) or transformers.Qwen2Tokenizer
    try:
        return cls.from_pretrained(str(base_dir), padding_side="right", trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ValueError(f"the tokenizer files in {base_dir} cannot be read ({type(e).__name__}: {e}): re-download "
                         f"the base model's *.json and *.txt files") from e


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
