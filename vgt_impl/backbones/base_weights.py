"""Base VLM hub checkpoints -> weights of our LLM (VGT-AR) and of our VGT-AE vision encoder.

Training starts from a base VLM folder with weights (``model.safetensors`` or shards listed in
``model.safetensors.index.json``). Each family's adapter maps the hub key layouts it knows onto our modules
(:meth:`FamilyAdapter.map_base_keys`); this module reads the files lazily (only the tensors it needs, fused tensors by
slice) and builds ready modules::

    llm = build_base_language_model("Qwen3-VL-2B-Instruct", num_layers=14, dtype=torch.bfloat16)
    enc = build_base_vision_encoder("Qwen3-VL-2B-Instruct", dtype=torch.bfloat16)   # VGT-AE ``encoder``
    sd = load_base_weights("InternVL3-2B", part="llm", num_layers=None)         # {our key: tensor}
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from .adapter import BaseKeyMap, BaseTensor, FamilyAdapter
from .common import BaseConfig, rebuild_meta_buffers

logger = logging.getLogger(__name__)

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
PARTS = ("llm", "vision")
_LAYER = re.compile(r"^layers\.(\d+)\.")


class BaseCheckpoint:
    """The tensors of a base folder's safetensors file(s), opened lazily: keys and shapes without reading data."""

    def __init__(self, base_dir: str | Path):
        from safetensors import safe_open

        self.base_dir = Path(base_dir)
        self._where = self._file_of_each_key()  # hub key -> file
        self._handles = {f: safe_open(str(f), framework="pt", device="cpu") for f in sorted(set(self._where.values()))}

    def _file_of_each_key(self) -> dict[str, Path]:
        index, single = self.base_dir / INDEX_FILE, self.base_dir / SINGLE_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"{index} is not a safetensors index (no weight_map): re-download it") from e
            files = {k: self.base_dir / f for k, f in weight_map.items()}
            missing = sorted({f.name for f in files.values() if not f.is_file()})
            if missing:
                raise FileNotFoundError(f"{self.base_dir}: shards listed in {INDEX_FILE} are missing: "
                                        f"{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}; download them")
            return files
        if single.is_file():
            from safetensors import safe_open

            with safe_open(str(single), framework="pt", device="cpu") as f:
                return dict.fromkeys(f.keys(), single)
        raise FileNotFoundError(
            f"base model folder {self.base_dir} has no weights ({SINGLE_FILE} or {INDEX_FILE}): training starts from "
            f"the base VLM's weights, so download the whole hub repo (not only its *.json / *.txt files)"
        )

    def keys(self) -> list[str]:
        return list(self._where)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._handles[self._where[key]].get_slice(key).get_shape())

    def read(self, ref: BaseTensor) -> torch.Tensor:
        """One of our tensors: the whole source tensor, or only its dim-0 chunk (read by slice)."""
        sl = self._handles[self._where[ref.source]].get_slice(ref.source)
        if ref.chunks == 1:
            return sl[:]
        rows = sl.get_shape()[0] // ref.chunks
        return sl[ref.chunk * rows:(ref.chunk + 1) * rows]

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)


def base_key_map(
    fam: FamilyAdapter, keys: list[str], part: str, num_layers: int | None = None, total_layers: int | None = None
) -> BaseKeyMap:
    """The family's key map for ``part``, keeping only LLM layers below ``num_layers``."""
    if part not in PARTS:
        raise ValueError(f"part={part!r}: expected one of {PARTS}")
    kmap = fam.map_base_keys(keys, part)
    if part != "llm" or num_layers is None:
        return kmap
    if num_layers < 1 or (total_layers is not None and num_layers > total_layers):
        raise ValueError(f"num_layers={num_layers}: the base LLM has {total_layers} layers; keep 1..{total_layers}")
    kept = {k: t for k, t in kmap.tensors.items() if not ((m := _LAYER.match(k)) and int(m.group(1)) >= num_layers)}
    dropped = dict(kmap.dropped)
    if len(kept) < len(kmap.tensors):
        dropped[f"layers.{num_layers}+"] = f"LLM layers beyond the first {num_layers} (not kept by the VGT-AR model)"
    return BaseKeyMap(kept, dropped)


def _open(base_dir: str | Path) -> tuple[FamilyAdapter, BaseConfig, BaseCheckpoint]:
    from . import load_base

    fam, cfg = load_base(base_dir)
    return fam, cfg, BaseCheckpoint(base_dir)


def load_base_weights(
    base_dir: str | Path, part: str = "llm", *, num_layers: int | None = None, dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """A base VLM folder's weights under our module keys: ``part="llm"`` -> the LLM of VGT-AR (its first
    ``num_layers`` layers; no lm_head), ``part="vision"`` -> the VGT-AE ``encoder`` (vision tower + merger/projector).

    ``dtype`` casts floating tensors (None keeps the checkpoint's dtype). Only the needed tensors are read.
    """
    fam, cfg, ckpt = _open(base_dir)
    kmap = base_key_map(fam, ckpt.keys(), part, num_layers, cfg.text_config.num_hidden_layers)
    out: dict[str, torch.Tensor] = {}
    for key, ref in kmap.tensors.items():
        t = ckpt.read(ref)
        out[key] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
    for group, reason in kmap.dropped.items():
        logger.debug("%s (%s): skipped %s (%s)", base_dir, part, group, reason)
    return out


def _finish(module: nn.Module, sd: dict[str, torch.Tensor], what: str, device) -> nn.Module:
    from ..checkpoints import load_strict

    load_strict(module, sd, what=what, assign=True)
    device = torch.device(device)
    rebuild_meta_buffers(module, device)  # rotary tables: rebuilt in fp32, as transformers builds them
    return module.to(device=device)


def build_base_language_model(
    base_dir: str | Path, *, num_layers: int | None = None, dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu", attn_implementation: str = "sdpa",
) -> nn.Module:
    """The base VLM's LLM (our VGT-AR ``llm``) with the base weights, keeping its first ``num_layers`` layers."""
    fam, cfg, _ = _open(base_dir)
    sd = load_base_weights(base_dir, "llm", num_layers=num_layers, dtype=dtype)
    with torch.device("meta"):
        llm = fam.build_language_model(cfg.text_config, num_layers=num_layers, attn_implementation=attn_implementation)
    return _finish(llm, sd, f"{base_dir} ({fam.display_name} LLM)", device)


def build_base_vision_encoder(
    base_dir: str | Path, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
    attn_implementation: str = "sdpa",
) -> nn.Module:
    """The base VLM's vision encoder as VGT-AE builds it (``VGTAutoencoder.encoder``), with the base weights."""
    fam, cfg, _ = _open(base_dir)
    sd = load_base_weights(base_dir, "vision", dtype=dtype)
    with torch.device("meta"):
        enc = fam.build_vision_encoder(cfg, attn_implementation=attn_implementation)
    return _finish(enc, sd, f"{base_dir} ({fam.display_name} vision encoder)", device)
