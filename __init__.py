"""ComfyUI entry point for comfyui-vgt.

ComfyUI imports every custom-node pack at start-up, so this file stays cheap: no model loading, no downloads, no
directory creation. Nodes are registered only when ComfyUI itself is importable, so the library (``vgt_impl``) and the
tests import this package without ComfyUI installed.
"""

from __future__ import annotations

import importlib.util
import logging

logger = logging.getLogger(__name__)

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
WEB_DIRECTORY = None

if importlib.util.find_spec("folder_paths") is not None and importlib.util.find_spec("comfy") is not None:
    try:
        from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: F401
    except ImportError:  # pragma: no cover - reported in ComfyUI's log, never fatal for ComfyUI
        logger.exception("comfyui-vgt: failed to register nodes")

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
