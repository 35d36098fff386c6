"""vgt_impl: a PyTorch implementation of VGT (Visual Generation Tuning).

Pure library: never imports ComfyUI. Heavy submodules are imported lazily so that ``import vgt_impl`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "VGTAutoencoder": "vgt_impl.autoencoder",
    "VGTPipeline": "vgt_impl.pipeline",
    "GenerationOutput": "vgt_impl.pipeline",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vgt_impl' has no attribute {name!r}")
