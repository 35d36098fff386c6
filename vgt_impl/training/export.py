"""Exports: a self-contained VGT model folder that every loader opens directly.

    <folder>/model.safetensors   our converted layout: llm.*, queries.*, image_in_projector.*, image_out_projector.*,
                                 flow_head.*, ae.* (the embedded VGT-AE); the JSON config in its metadata
    <folder>/model.json          the same JSON config (family, sizes, the DC-AE decoder config, training info)
    <folder>/config.json, tokenizer files   copied from the base VLM folder (the folder is its own base model)
    <folder>/ae_base/config.json the VGT-AE encoder's base config, when it came from another folder (InternVL3-1B)

``VGTPipeline.from_pretrained(folder)``, ``VGTAutoencoder.from_pretrained(folder)``, ``vgt generate --ar folder`` and
the ComfyUI loaders (checkpoint ``<folder>/model.safetensors``, base model ``<folder>``) need nothing else.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..loading import AE_BASE_DIR, MODEL_FILE

BASE_FILE_SUFFIXES = (".json", ".txt", ".model", ".jinja", ".tiktoken")
SKIP_BASE_FILES = ("model.safetensors.index.json", "model.json", "pytorch_model.bin.index.json")


def copy_base_files(base: Path, dest: Path, max_bytes: int = 64 << 20) -> list[str]:
    """Config, generation config and tokenizer files of a base VLM folder (no weights)."""
    copied = []
    for p in sorted(base.iterdir()):
        if (p.is_file() and p.suffix in BASE_FILE_SUFFIXES and p.name not in SKIP_BASE_FILES
                and not p.name.startswith(".") and p.stat().st_size <= max_bytes):
            shutil.copy2(p, dest / p.name)
            copied.append(p.name)
    if "config.json" not in copied:
        raise FileNotFoundError(f"base model folder {base} has no config.json to copy into the model folder")
    return copied


def write_model_folder(
    folder: Path, tensors: Mapping[str, torch.Tensor], config: dict[str, Any], *, base_model: Path,
    ae_base_model: Path | None = None,
) -> Path:
    """Write the folder atomically (a temp folder renamed at the end); an existing folder is replaced."""
    from ..checkpoints import save_converted

    folder = Path(folder)
    tmp = folder.with_name(f".tmp_{folder.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_converted(tmp / MODEL_FILE, {k: v.contiguous() for k, v in tensors.items()}, config)
    copy_base_files(Path(base_model), tmp)
    if ae_base_model is not None and Path(ae_base_model).resolve() != Path(base_model).resolve():
        (tmp / AE_BASE_DIR).mkdir()
        shutil.copy2(Path(ae_base_model) / "config.json", tmp / AE_BASE_DIR / "config.json")
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def export_ar_folder(task, folder: Path, weights: Mapping[str, torch.Tensor]) -> Path:
    """A VGT-AR task's full state (``ar.*``, ``ae.*``; EMA weights swapped in by the loop) -> model folder."""
    from ..checkpoints import detect_variant

    tensors = {k[len("ar."):]: v for k, v in weights.items() if k.startswith("ar.")}
    tensors.update({k: v for k, v in weights.items() if k.startswith("ae.")})
    variant = detect_variant(tensors)
    variant.family = task.ar.family
    config: dict[str, Any] = {
        "format": "comfyui-vgt/1", "kind": "converted_ar", "family": task.ar.family, "variant": variant.to_dict(),
        "latent_stride": task.ar.latent_stride, "source": "vgt train ar", "training": dict(task.sources.get("training", {})),
    }
    if task.trained_order != "random":  # sampling defaults (VGTPipeline.default_order); absent = VGT's random orders
        # a raster-order AR samples one token per step: parallel neighbours were never trained (vgt-demo: 0.217 at
        # acc_ratio 1, 0.065 at 4 on shapes-GenEval)
        config["sampling"] = {"order": task.trained_order, "acc_ratio": 1}
    if task.ae is not None:
        config["ae"] = {"family": task.ae.family, "latent_stride": task.ae.stride,
                        "decoder_config": task.ae.config.decoder_config}
    return write_model_folder(folder, tensors, config, base_model=Path(task.sources["base_model"]),
                              ae_base_model=task.sources.get("ae_base_model"))
