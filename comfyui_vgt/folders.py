"""The ``vgt`` model folder: registration with ComfyUI's folder_paths and safe name -> path resolution.

Layout (every folder listed for ``vgt`` in ComfyUI, so ``extra_model_paths.yaml`` works)::

    models/vgt/<any>/*.pth|*.safetensors     VGT-AR and VGT-AE checkpoints
    models/vgt/base/<name>/config.json ...   base VLM folders (config + tokenizer) and DC-AE config folders
"""

from __future__ import annotations

import os
from pathlib import Path

FOLDER = "vgt"
BASE_SUBDIR = "base"
EXTENSIONS = {".pth", ".pt", ".bin", ".safetensors"}


def register() -> None:
    """Add ``models/vgt`` to folder_paths, after any ``vgt:`` entries of extra_model_paths.yaml (nothing is created)."""
    import folder_paths

    folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER))
    paths, exts = folder_paths.folder_names_and_paths[FOLDER]
    # extra_model_paths.yaml creates unknown folder names with no extensions (= every file): list checkpoints only.
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(exts) | EXTENSIONS)


def roots() -> list[Path]:
    import folder_paths

    return [Path(p) for p in folder_paths.get_folder_paths(FOLDER)]


def checkpoint_names() -> list[str]:
    """Checkpoint files under the vgt folders, excluding the weights inside base-model folders."""
    import folder_paths

    names = folder_paths.get_filename_list(FOLDER)
    return sorted(n for n in names if not n.replace("\\", "/").startswith(BASE_SUBDIR + "/"))


def base_names(kind: str = "any") -> list[str]:
    """Folders under ``vgt/base`` holding a config.json (``kind``: 'vlm', 'dcae' or 'any')."""
    out = set()
    for root in roots():
        base = root / BASE_SUBDIR
        if not base.is_dir():
            continue
        for cfg in base.glob("*/config.json"):
            is_dcae = "AutoencoderDC" in cfg.read_text(errors="ignore")[:2000]
            if kind == "any" or (kind == "dcae") == is_dcae:
                out.add(cfg.parent.name)
    return sorted(out)


def _inside(root: Path, name: str) -> Path:
    if not name or name.startswith(("/", "\\")) or ".." in Path(name.replace("\\", "/")).parts:
        raise ValueError(f"invalid model name {name!r}: names are relative to the ComfyUI models/vgt folder")
    # Lexical check (symlinked model folders are fine; names that climb out of the folder are not).
    path = Path(os.path.normpath(root / name))
    if not path.is_relative_to(Path(os.path.normpath(root))):
        raise ValueError(f"invalid model name {name!r}: it points outside the models/vgt folder")
    return path


def checkpoint_path(name: str) -> Path:
    """Resolve a checkpoint name from the vgt folders; clear errors for missing files and path escapes."""
    for root in roots():
        path = _inside(root, name)
        if path.is_file():
            return path
    raise FileNotFoundError(f"VGT checkpoint {name!r} not found in {[str(r) for r in roots()]}: put it in models/vgt/")


def base_path(name: str) -> Path:
    """Resolve a base folder name (under vgt/base)."""
    for root in roots():
        path = _inside(root / BASE_SUBDIR, name)
        if (path / "config.json").is_file():
            return path
    raise FileNotFoundError(
        f"base model folder {name!r} not found: put the hub repo's config.json and tokenizer files in models/vgt/base/{name}/"
    )
