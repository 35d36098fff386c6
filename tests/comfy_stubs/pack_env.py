"""The pack as ComfyUI loads it (on the stand-ins in this folder) and a ComfyUI-like base dir with the tiny models.

Shared by tests/test_nodes.py and tests/test_workflows.py, which load it as a pytest plugin (``pytest_plugins``) for the
``comfy_env`` and ``comfy_folders`` fixtures. No asserts here: PYTEST_DONT_REWRITE (it is imported before pytest
registers it as a plugin).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "workflows") not in sys.path:
    sys.path.insert(0, str(ROOT / "workflows"))

import build as wf  # noqa: E402
import comfy.model_management as mm  # noqa: E402
import comfy.utils  # noqa: E402
import folder_paths  # noqa: E402

PACK = wf.pack()
NODES = PACK.NODE_CLASS_MAPPINGS
DCAE = "dc-ae-f32c32-sana-1.1-diffusers"


def _link_models(vgt: Path, reference_dir: Path) -> None:
    """The tiny reference models under the official file and folder names."""
    q = reference_dir / "qwen25vl"
    links = {
        vgt / "vgt_qwen25vl_2B_sft" / "iter_5000.pth": q / "ar" / "iter_5000.pth",
        vgt / "vgt_ae" / "vgt_ae_qwen25vl.pth": q / "ae" / "vgt_ae_qwen25vl.pth",
        vgt / "base" / "Qwen2.5-VL-3B-Instruct": q / "base" / "Qwen2.5-VL-3B-Instruct-tiny",
        vgt / "base" / DCAE: q / "base" / "dc-ae-f32c32-sana-1.1-diffusers-tiny",
    }
    for dst, src in links.items():
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(src)


def _example_image(path: Path) -> None:
    """126x140 RGBA (not a multiple of 28) with a transparent square: the mask-editor mask of Load Image."""
    rgba = np.random.default_rng(0).integers(0, 255, (126, 140, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[28:84, 28:84, 3] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba, "RGBA").save(path)


def comfy_base(tmp_path: Path, reference_dir: Path | None):
    """Generator for a ``comfy_env`` fixture: a ComfyUI base dir (models/vgt registered by the pack's own register(),
    holding the tiny models unless ``reference_dir`` is None; input/example.png); undoes every change afterwards."""
    if reference_dir is not None:
        _link_models(tmp_path / "models" / "vgt", reference_dir)
    _example_image(tmp_path / "input" / "example.png")
    old = dict(folder_paths.folder_names_and_paths)
    old_base, old_models = folder_paths.base_path, folder_paths.models_dir
    folder_paths.folder_names_and_paths.clear()
    folder_paths.base_path, folder_paths.models_dir = str(tmp_path), str(tmp_path / "models")
    PACK._folders.register()
    yield tmp_path
    folder_paths.folder_names_and_paths.clear()
    folder_paths.folder_names_and_paths.update(old)
    folder_paths.base_path, folder_paths.models_dir = old_base, old_models
    mm.interrupt_processing = False
    mm.loaded.clear()
    comfy.utils.PROGRESS_BAR_HOOK = None


@pytest.fixture()
def comfy_env(tmp_path, reference_dir):
    yield from comfy_base(tmp_path, reference_dir)


@pytest.fixture()
def comfy_folders(tmp_path):
    """The same without models: for what needs no weights (runs without the reference fixtures)."""
    yield from comfy_base(tmp_path, None)
