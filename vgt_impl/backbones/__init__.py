"""VLM family adapters: one module per family exposes the same functions (see ``qwen2_5_vl.py``).

``FAMILY``, ``PIXEL_MEAN``/``PIXEL_STD``, ``load_base_config(dir)``, ``build_vision_encoder(cfg)``,
``vision_features(encoder, pixels)``, ``build_language_model(text_config)``, ``load_tokenizer(dir)``,
``map_ae_state_dict(sd)``, ``map_llm_state_dict(sd)``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from .common import read_config_json

_MODULES = {"qwen2_5_vl": "vgt_impl.backbones.qwen2_5_vl", "internvl3": "vgt_impl.backbones.internvl3"}
_MODEL_TYPES = {"qwen2_5_vl": "qwen2_5_vl", "internvl_chat": "internvl3", "internvl": "internvl3"}


def get_family(name: str) -> ModuleType:
    if name not in _MODULES:
        raise ValueError(f"unknown VLM family {name!r}: expected one of {sorted(_MODULES)}")
    return importlib.import_module(_MODULES[name])


def detect_family_from_config(config: dict[str, Any]) -> str:
    model_type = config.get("model_type", "")
    if model_type in _MODEL_TYPES:
        return _MODEL_TYPES[model_type]
    raise ValueError(
        f"unsupported base model type {model_type!r}: VGT supports Qwen2.5-VL (qwen2_5_vl) and InternVL3 "
        f"(internvl_chat / internvl)"
    )


def detect_family_from_dir(base_dir: str | Path) -> str:
    return detect_family_from_config(read_config_json(base_dir))
