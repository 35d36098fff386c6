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



def _provide_vgt_impl() -> None:
    """Not pip-installed: import the library bundled in this folder as ``vgt_impl`` (its ``__init__`` is lazy and
    cheap), without putting this folder and its generic names (``nodes``, ``tests``) on ``sys.path``."""
    if "vgt_impl" in sys.modules or importlib.util.find_spec("vgt_impl") is not None:
        return
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vgt_impl")
    spec = importlib.util.spec_from_file_location("vgt_impl", os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    module = importlib.util.module_from_spec(spec)
    sys.modules["vgt_impl"] = module
    spec.loader.exec_module(module)


_provide_vgt_impl()

# Registered only when imported as a package (ComfyUI imports custom-node folders as packages); a plain import of
# this file, e.g. by a test runner collecting a folder whose name is not a Python identifier, registers nothing.
if __package__ and importlib.util.find_spec("folder_paths") is not None and importlib.util.find_spec("comfy") is not None:
    from .comfyui_vgt import folders as _folders
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: F811

    _folders.register()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
