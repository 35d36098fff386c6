"""ComfyUI entry point for comfyui-vgt.

ComfyUI imports every custom-node pack at start-up, so this file stays cheap: no model loading, no downloads, no
directory creation. Nodes are registered only when ComfyUI itself is importable, so the library (``vgt_impl``) and the
tests import this folder without ComfyUI installed.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

logger = logging.getLogger(__name__)

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

if importlib.util.find_spec("vgt_impl") is None:  # not pip-installed: use the copy in this folder
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))

if importlib.util.find_spec("folder_paths") is not None and importlib.util.find_spec("comfy") is not None:
    from .comfyui_vgt import folders as _folders
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: F811

    _folders.register()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
