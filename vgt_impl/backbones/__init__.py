"""VLM family adapters: one file per family, each a :class:`FamilyAdapter` registered in ``adapter.FAMILY_MODULES``.

``get_family(name)`` gives a family's adapter; ``detect_family_from_dir(base_dir)`` reads a base folder's
``config.json``. See ``adapter.py`` for the interface and ``README.md`` ("Adding a VLM family") for the steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .adapter import (  # noqa: F401
    FAMILY_MODULES,
    BaseKeyMap,
    BaseTensor,
    FamilyAdapter,
    display_name,
    families,
    family_for_model_type,
    family_names,
    get_family,
    supported_model_types,
)
from .common import BaseConfig, read_config_json  # noqa: F401


def detect_family_from_config(config: dict[str, Any]) -> str:
    """The family name of a base config.json's contents (by ``model_type``)."""
    model_type = config.get("model_type", "")
    fam = family_for_model_type(model_type)
    if fam is None:
        raise ValueError(f"unsupported base model type {model_type!r}: VGT supports {supported_model_types()}")
    return fam.name


def detect_family_from_dir(base_dir: str | Path) -> str:
    return detect_family_from_config(read_config_json(base_dir))


def load_base(base_dir: str | Path) -> tuple[FamilyAdapter, BaseConfig]:
    """(adapter, base config) of a base VLM folder, detected from its config.json."""
    fam = get_family(detect_family_from_dir(base_dir))
    return fam, fam.load_base_config(base_dir)


def latent_stride_of(base_dir: str | Path) -> int:
    """Pixels per latent token side of VGT models tuned from this base folder (cheap: config.json only)."""
    fam, cfg = load_base(base_dir)
    return fam.latent_stride(cfg)
