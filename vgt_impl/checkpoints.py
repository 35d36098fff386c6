"""Checkpoint files: safe opening, EMA choice, prefix stripping, variant detection, key maps, strict loading.

- ``.pth``/``.pt``/``.bin`` open with ``torch.load(weights_only=True)`` only (a pickle that would run code is refused);
  ``.safetensors`` open lazily.
- Official VGT-AR checkpoints are mmengine dicts ``{'meta', 'state_dict', 'ema_state_dict'}``; the EMA weights are the
  ones the published results used and are preferred. VGT-AE files are raw, ``state_dict`` or ``model`` wrapped.
- Variants are detected from keys and shapes, never from file names.
- Loading is strict: whatever is missing or unexpected after the key map is an error, grouped and explained.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_STRIP = ("module.", "_orig_mod.")


class _FamilyNames(Mapping):
    """Family name -> display name, read from the family registry ("qwen2_5_vl" -> "Qwen2.5-VL")."""

    def __getitem__(self, name: str) -> str:
        from .backbones import family_names, get_family

        if name not in family_names():
            raise KeyError(name)
        return get_family(name).display_name

    def __iter__(self) -> Iterator[str]:
        from .backbones import family_names

        return iter(family_names())

    def __len__(self) -> int:
        from .backbones import family_names

        return len(family_names())


FAMILY_NAMES: Mapping[str, str] = _FamilyNames()


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message says which file and what to do."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint does not fit the model it is loaded into (missing / unexpected keys, shapes)."""


# ---------------------------------------------------------------------------------------------------------- opening
class LazySafetensors(Mapping):
    """Read-only mapping over a .safetensors file: keys and shapes without reading data; tensors on access."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        self.path = path
        self._file = safe_open(str(path), framework="pt", device="cpu")
        self._keys = list(self._file.keys())
        self.metadata = self._file.metadata() or {}

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._file.get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._file.get_slice(key).get_shape())

    def dtype(self, key: str) -> str:
        return str(self._file.get_slice(key).get_dtype())


def _sniff(path: Path) -> str:
    """'zip' (torch.save), 'pickle' (legacy torch.save or a plain pickle), 'safetensors' or 'unknown'."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle PROTO opcode
        return "pickle"
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "safetensors"
    return "unknown"


def _first_line(e: BaseException) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def _open_pickle(path: Path, mmap: bool, lazy: bool = False) -> Any:
    kind = _sniff(path)
    if kind == "safetensors":
        raise CheckpointError(f"{path} is a safetensors file with a {path.suffix} name: rename it to "
                              f"{path.with_suffix('.safetensors').name}")
    if kind == "unknown":
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (neither a torch.save zip nor a pickle; empty, "
                              f"truncated or another kind of file): re-download it")
    try:
        if lazy and kind == "zip":
            from .file_tensors import load_structure

            obj = load_structure(path)
            if obj is not None:
                return obj
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap and kind == "zip")
    except pickle.UnpicklingError as e:
        code = "GLOBAL" in str(e) or kind == "pickle"
        if not code:  # a zip whose data.pkl is damaged
            raise CheckpointError(f"{path} is truncated or corrupted ({_first_line(e)}): re-download it") from e
        raise CheckpointError(
            f"{path} is not a plain weights file: it holds Python objects that torch.load(weights_only=True) refuses "
            f"to build, and loading it otherwise could run code. Use the official checkpoint or a .safetensors file; "
            f"never load untrusted pickles."
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path} is truncated or corrupted ({type(e).__name__}: {_first_line(e)}): "
                              f"re-download it") from e


def open_checkpoint(path: str | Path, *, mmap: bool = True, lazy: bool = False) -> Any:
    """The raw object of a checkpoint file (dict for .pth, lazy mapping for .safetensors); suffixes in any case.

    ``lazy``: a ``torch.save`` zip or ``.safetensors`` file is read for its structure only: its tensors are meta
    tensors that know where their bytes are in the file, read by :func:`materialize` (falls back to the memory map /
    ``safe_open`` when the file does not allow it).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint {path} is a folder: give the checkpoint file inside it "
                                f"(e.g. {path}/iter_5000.pth)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            lazy_file = LazySafetensors(path)
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise CheckpointError(f"{path} is truncated or corrupted ({e}): re-download it") from e
        if lazy:
            from .file_tensors import safetensors_structure

            return safetensors_structure(path) or lazy_file
        return lazy_file
    if suffix in PICKLE_SUFFIXES:
        return _open_pickle(path, mmap, lazy)
    raise CheckpointError(f"{path}: unsupported checkpoint type {path.suffix!r} (expected .safetensors or .pth/.pt/.bin)")


def strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _STRIP:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def unwrap(obj: Any, *, prefer_ema: bool = True) -> tuple[Mapping, dict[str, Any]]:
    """Pick the weight dict out of a checkpoint object -> (state dict mapping, info)."""
    info: dict[str, Any] = {"source": "raw"}
    if isinstance(obj, Mapping) and not isinstance(obj, LazySafetensors):
        order = ("ema_state_dict", "state_dict", "model") if prefer_ema else ("state_dict", "ema_state_dict", "model")
        for name in order:
            if isinstance(obj.get(name), Mapping):
                info["source"] = name
                info["has_ema"] = "ema_state_dict" in obj
                return obj[name], info
    return obj, info


def load_checkpoint_file(
    path: str | Path, *, prefer_ema: bool = True, mmap: bool = True, with_info: bool = False, lazy: bool = False,
) -> dict[str, torch.Tensor] | tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Open a checkpoint -> {key: tensor} with EMA preferred, ``module.``/``_orig_mod.`` stripped, ``steps`` dropped.

    ``lazy``: nothing is read but the structure (see :func:`open_checkpoint`); the tensors are meta tensors with
    shapes and dtypes, only for :func:`materialize` to read (the dict not chosen is never read at all).
    """
    sd, info = unwrap(open_checkpoint(path, mmap=mmap, lazy=lazy), prefer_ema=prefer_ema)
    if not isinstance(sd, Mapping):
        what = f"a bare {type(sd).__name__}" + (f" of shape {tuple(sd.shape)}" if torch.is_tensor(sd) else "")
        raise CheckpointError(f"{path} holds {what}, not a dict of named weights: it is not a model checkpoint")
    bad = [k for k in sd if not isinstance(k, str)]
    if bad:
        raise CheckpointError(f"{path} has non-string keys ({bad[0]!r}, ...): it is not a model state dict")
    out: dict[str, torch.Tensor] = {}
    for key in sd:
        value = sd[key]
        if key == "steps" and torch.is_tensor(value) and value.is_meta:
            value = materialize({key: value}, value.dtype, what=path)[key]
        if key == "steps":  # EMA step counter of mmengine checkpoints
            info["ema_steps"] = int(value) if torch.is_tensor(value) and value.numel() == 1 else value
        elif torch.is_tensor(value):
            out[strip_prefixes(key)] = value
    if not out:
        keys = ", ".join(sorted(map(str, sd))[:6])
        raise CheckpointError(f"{path} contains no tensors (top-level keys: {keys or 'none'}): it is not a model "
                              f"checkpoint")
    return (out, info) if with_info else out


def _madvise_dontneed():
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return lambda start, length: libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), 4)  # DONTNEED
    except (OSError, AttributeError):
        return None


def _checkpoint_mappings() -> list[tuple[int, int]]:
    """Address ranges of this process's memory maps of checkpoint files (``torch.load(mmap=True)``); Linux only."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].strip().endswith(PICKLE_SUFFIXES):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out.append((lo, hi))
    return out


def release_pages(tensor: torch.Tensor, mappings: list[tuple[int, int]]) -> None:
    """Drop the resident pages of a tensor memory-mapped from a checkpoint file (re-read from the file if touched
    again), so reading a large file tensor by tensor does not keep it all in RAM. Only tensors inside a checkpoint
    file's mapping are touched (never heap memory); whole pages inside the tensor only."""
    import mmap

    if tensor.device.type != "cpu" or tensor.numel() == 0:
        return
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    if not any(lo <= start and end <= hi for lo, hi in mappings):
        return
    madvise = _madvise_dontneed()
    page = mmap.PAGESIZE
    start, end = (start + page - 1) // page * page, end // page * page
    if madvise is not None and end > start:
        madvise(start, end - start)


def materialize(tensors: Mapping[str, torch.Tensor], dtype: torch.dtype, *,
                what: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """Own copies of checkpoint tensors, floating ones converted to ``dtype``, one tensor at a time.

    Tensors of a lazily opened file (meta tensors, see :func:`load_checkpoint_file`) are read from the file
    straight into their copy; memory-mapped ones are copied and their file pages released right after. Either way the
    peak is about the bytes kept, not the file's size.
    """
    from .file_tensors import TensorFileReader, file_source

    mappings = None
    out: dict[str, torch.Tensor] = {}
    with TensorFileReader() as reader:
        for key, value in tensors.items():
            target = dtype if value.is_floating_point() else value.dtype
            if file_source(value) is not None:
                try:
                    out[key] = reader.read(value, target)
                except (EOFError, OSError) as e:
                    raise CheckpointError(f"{what} is truncated or corrupted ({e}; reading {key}): re-download "
                                          f"it") from e
                continue
            if value.is_meta:
                raise ValueError(f"{what}: {key} is a meta tensor without data (not read from a checkpoint file)")
            if mappings is None:
                mappings = _checkpoint_mappings()
            out[key] = value.to(dtype=target, copy=True)
            release_pages(value, mappings)
    return out


# ---------------------------------------------------------------------------------------------------------- variants
@dataclass
class VariantInfo:
    kind: str  # "ae" | "ar" | "converted_ae" | "converted_ar"
    family: str  # a registered family name ("qwen2_5_vl", "internvl3", "qwen3_vl", ...) or "unknown"
    llm_hidden: int | None = None
    llm_layers: int | None = None
    vocab_size: int | None = None
    head_dim: int | None = None
    head_layers: int | None = None
    query_grid: tuple[int, int] | None = None
    latent_channels: int | None = None
    vision_hidden: int | None = None
    vision_layers: int | None = None
    ae_width: int | None = None
    has_teacher: bool = False
    has_embedded_ae: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _count(keys, pattern: str) -> int:
    from .backbones.common import count_indexed

    return count_indexed(keys, pattern)


def _ae_family(keys: list[str], prefix: str = "") -> str | None:
    """The family whose VGT-AE encoder keys these are (official or our layout), or None."""
    from .backbones import families

    owners = [f.name for f in families() if f.owns_ae_keys(keys, prefix)]
    if len(owners) > 1:
        raise CheckpointError(f"VGT-AE encoder keys match several families ({owners}): cannot tell which it is")
    return owners[0] if owners else None


def _groups(keys) -> list[str]:
    return sorted({k.split(".")[0] for k in keys})


def detect_variant(sd: Mapping, shapes: Mapping[str, tuple[int, ...]] | None = None) -> VariantInfo:
    """Kind, family and sizes of a state dict (official or converted) from its keys and shapes."""
    keys = list(sd.keys())
    shape = (lambda k: tuple(shapes[k])) if shapes is not None else (lambda k: tuple(sd[k].shape))
    top = set(_groups(keys))
    if {"lmm", "image_head"} <= top or {"llm", "flow_head"} <= top:
        return _detect_ar(keys, shape, converted="llm" in top)
    if "down_mlp" in top and "decoder" in top:
        fam = _ae_family(keys)
        if fam is None:
            raise CheckpointError(f"VGT-AE checkpoint with an unknown encoder layout (top-level groups: {sorted(top)})")
        return _detect_ae(keys, shape, fam, "")
    raise CheckpointError(
        f"not a VGT checkpoint: expected VGT-AR groups (lmm, image_head, adaptive_metaquery, ...) or VGT-AE groups "
        f"(encoder, down_blocks, down_mlp, decoder); found top-level groups {sorted(top)}"
    )


def _require(keys, needed: list[str], kind: str) -> None:
    """The tensors a variant's sizes are read from are present, else the grouped report strict loading gives."""
    have = set(keys)
    missing = [k for k in needed if k not in have]
    if missing:
        raise CheckpointMismatchError(
            f"{kind} checkpoint is incomplete:\n  missing {len(missing)} tensors its sizes are read from: "
            + "; ".join(compress_keys(missing))
            + "\n  likely cause: the checkpoint is truncated or was saved partially: re-download it"
        )


def _detect_ae(keys, shape, fam: str, prefix: str) -> VariantInfo:
    from .backbones import get_family

    _require(keys, [prefix + "down_mlp.1.weight", prefix + "down_mlp.3.weight"], "VGT-AE")
    info = VariantInfo(kind="ae", family=fam)
    info.latent_channels = shape(prefix + "down_mlp.3.weight")[0]
    info.ae_width = shape(prefix + "down_mlp.1.weight")[1]
    info.has_teacher = any(k.startswith(prefix + "teacher") for k in keys)
    try:
        info.vision_layers, info.vision_hidden = get_family(fam).ae_vision_sizes(keys, shape, prefix)
    except KeyError as e:  # a key the family reads its vision sizes from
        _require(keys, [str(e.args[0])], "VGT-AE")
        raise
    return info


def _detect_ar(keys, shape, converted: bool) -> VariantInfo:
    if converted:
        fam = None  # converted files carry their family in their config; the embedded AE tells otherwise
        llm, head, mq, ae_prefix = "llm.", "flow_head.", "queries.query_grid", "ae."
    else:
        from .backbones import families

        head, mq, ae_prefix = "image_head.net.", "adaptive_metaquery.max_metaquery", "vgt_ae."
        found = [(f.name, p) for f in families() if (p := f.ar_llm_prefix(keys)) is not None]
        if len(found) != 1:
            raise CheckpointError(f"VGT-AR checkpoint with an unknown LLM layout (groups: {_groups(keys)}"
                                  + (f"; matches {[f for f, _ in found]}" if found else "") + ")")
        fam, llm = found[0]
    _require(keys, [llm + "embed_tokens.weight", head + "input_proj.weight", mq], "VGT-AR")
    info = VariantInfo(kind="converted_ar" if converted else "ar", family=fam or "unknown")
    info.llm_layers = _count(keys, re.escape(llm) + r"layers\.(\d+)\.")
    emb = shape(llm + "embed_tokens.weight")
    info.vocab_size, info.llm_hidden = emb
    info.head_layers = _count(keys, re.escape(head) + r"res_blocks\.(\d+)\.")
    info.head_dim = shape(head + "input_proj.weight")[0]
    info.latent_channels = shape(head + "input_proj.weight")[1]
    g = shape(mq)
    info.query_grid = (g[2], g[3])
    info.has_embedded_ae = any(k.startswith(ae_prefix) for k in keys)
    ae_fam = _ae_family(keys, ae_prefix) if info.has_embedded_ae else None
    if ae_fam or (info.has_embedded_ae and fam):
        info.extra["ae"] = _detect_ae(keys, shape, ae_fam or fam, ae_prefix).to_dict()
        if info.family == "unknown" and ae_fam:
            info.family = ae_fam
    return info


def peek(path: str | Path) -> VariantInfo:
    """What a checkpoint file (or model folder) is (kind, family, sizes) from its keys and shapes, building nothing."""
    from .loading import resolve_model_path

    path = resolve_model_path(path)[0]
    sd = load_checkpoint_file(path)
    info = detect_variant(sd)
    if info.family in ("unknown", None):
        info.family = (converted_config(path) or {}).get("family", info.family)
    return info


def peek_family(path: str | Path, want: str) -> str:
    """The family of a checkpoint that must be a VGT-AE (``want="ae"``; an AR file embedding one will do) or a VGT-AR
    (``want="ar"``); anything else is an error naming the file."""
    info = peek(path)
    is_ar = info.kind in ("ar", "converted_ar")
    if want == "ar" and not is_ar:
        raise ValueError(f"{path} is a VGT-AE checkpoint, not a VGT-AR one: use it as the VGT-AE")
    if want == "ae" and is_ar and not info.has_embedded_ae:
        raise ValueError(f"{path} is a VGT-AR checkpoint without an embedded VGT-AE: pick a VGT-AE checkpoint "
                         f"(vgt_ae_qwen25vl.pth or vgt_ae_internvl3.pth)")
    return info.family


# ---------------------------------------------------------------------------------------------------------- key maps
AR_RENAMES = {
    "adaptive_metaquery.max_metaquery": "queries.query_grid",
    "adaptive_metaquery.pos_encoding.grid_embed": "queries.pos_grid",
}


def map_ar_state_dict(
    sd: Mapping[str, torch.Tensor], family: str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, str]]:
    """Official VGT-AR keys -> (our AR model keys, the embedded VGT-AE keys (prefix removed), dropped groups)."""
    from .backbones import get_family

    if any(k.startswith("llm.") for k in sd):  # already in our layout (converted)
        ar = {k: v for k, v in sd.items() if not k.startswith("ae.")}
        ae = {k[3:]: v for k, v in sd.items() if k.startswith("ae.")}
        return ar, ae, {}
    llm, dropped = get_family(family).map_llm_state_dict(dict(sd))
    out = {"llm." + k: v for k, v in llm.items()}
    ae: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.startswith("lmm."):
            continue
        if key.startswith("vgt_ae."):
            ae[key[len("vgt_ae."):]] = value
        elif key in AR_RENAMES:
            out[AR_RENAMES[key]] = value
        elif key.startswith("image_head.net."):
            out["flow_head." + key[len("image_head.net."):]] = value
        elif key.startswith(("image_in_projector.", "image_out_projector.")):
            out[key] = value
        else:
            out[key] = value  # left for the strict load to report
    return out, ae, dropped


# ---------------------------------------------------------------------------------------------------------- strict load
def _range(ids: set[int]) -> str:
    lo, hi = min(ids), max(ids)
    if len(ids) == 1:
        return str(lo)
    return f"{lo}..{hi}" if len(ids) == hi - lo + 1 else ",".join(map(str, sorted(ids)))


def compress_keys(keys: list[str], limit: int = 6) -> list[str]:
    """Short groups: 'llm.layers.{18..35}.mlp.up_proj.weight', 'layers.{0..3}.{bias,weight}', 'decoder.* (12)'."""
    numbered: dict[str, tuple[set[int], set[str]]] = {}
    plain: dict[str, list[str]] = {}
    for k in keys:
        m = re.search(r"(^|\.)(\d+)\.", k)
        if m:
            head, tail = k[: m.start(2)], k[m.end(2) + 1:]
            ids, tails = numbered.setdefault(head, (set(), set()))
            ids.add(int(m.group(2)))
            tails.add(tail)
        else:
            plain.setdefault(".".join(k.split(".")[:2]), []).append(k)
    lines = []
    for head, (ids, tails) in sorted(numbered.items()):
        t = sorted(tails)
        tail = t[0] if len(t) == 1 else ("{" + ",".join(t) + "}" if len(t) <= 3 else f"* ({len(t)} tensors each)")
        lines.append(f"{head}{next(iter(ids))}.{tail}" if len(ids) == 1 else f"{head}{{{_range(ids)}}}.{tail}")
    for head, ks in sorted(plain.items()):
        lines.append(ks[0] if len(ks) == 1 else f"{head}.* ({len(ks)} tensors)")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more groups"]
    return lines


def _guess_cause(missing: list[str], unexpected: list[str], model: nn.Module, shapes: list[str] = ()) -> str:
    probe = {k: None for k in unexpected}
    fam_unexp = _ae_family(list(probe)) or _ae_family([k.removeprefix("ae.") for k in probe])
    mine = getattr(model, "family", None)
    if fam_unexp and mine and fam_unexp != mine:
        name = FAMILY_NAMES.get(fam_unexp, fam_unexp)
        return (f"this looks like {'an' if name[:1] in 'AEIOU' else 'a'} {name} checkpoint but the model is "
                f"{FAMILY_NAMES.get(mine, mine)}: pick the checkpoint and base model of the same family")
    touched = missing + unexpected + [s.split(":")[0] for s in shapes]
    if touched and all(k.startswith("decoder.") for k in touched):
        return ("the DC-AE decoder config does not match the checkpoint's decoder: pass the decoder config it was "
                "trained with (the folder of mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers, or --decoder / decoder_config)")
    if any(k.startswith(("lmm.", "image_head.", "llm.")) for k in unexpected):
        return "this looks like a VGT-AR checkpoint: load it with the VGT model loader, not as a VGT-AE"
    if any(k.startswith(("down_mlp.", "decoder.")) for k in unexpected) and not any(
            k.startswith("decoder.") for k in missing):
        return "this looks like a VGT-AE checkpoint: load it as the autoencoder, not as the VGT-AR model"
    if missing and not unexpected:
        return "the checkpoint is incomplete (or for a smaller variant): re-download it or check the base model"
    return "the checkpoint and the base model folder do not match: check that both are for the same VGT variant"


def check_fits(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, what: str = "checkpoint") -> None:
    """Every tensor of ``module`` is in ``state_dict`` with its shape and nothing else is, else one short, grouped
    error. Reads only keys and shapes (meta tensors do), so it runs before any weight is read."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state_dict))
        if tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = [f"{what} does not fit {type(module).__name__}:"]
        if missing:
            parts.append(f"  missing {len(missing)} tensors: " + "; ".join(compress_keys(missing)))
        if unexpected:
            parts.append(f"  unexpected {len(unexpected)} tensors: " + "; ".join(compress_keys(unexpected)))
        if shapes:
            parts.append(f"  {len(shapes)} shape mismatches: " + "; ".join(shapes[:4]) + (" ..." if len(shapes) > 4 else ""))
        parts.append("  likely cause: " + _guess_cause(missing, unexpected, module, shapes))
        raise CheckpointMismatchError("\n".join(parts))


def load_strict(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, dropped: Mapping[str, str] | None = None,
    what: str = "checkpoint", assign: bool = False,
) -> None:
    """Load every tensor; anything missing, unexpected or mis-shaped raises one short, grouped error."""
    check_fits(module, state_dict, what=what)
    module.load_state_dict(dict(state_dict), strict=True, assign=assign)
    for group, reason in (dropped or {}).items():
        logger.debug("%s: ignored %s (%s)", what, group, reason)


# ---------------------------------------------------------------------------------------------------------- converted
def save_converted(path: str | Path, state_dict: Mapping[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """Write our layout as .safetensors (+ ``<name>.json`` config beside it)."""
    path = check_converted_target(path)
    write_safetensors(path, state_dict, {"format": "pt", "vgt_config": json.dumps(config)})
    path.with_suffix(".json").write_text(json.dumps(config, indent=2))
    return path


def usual_permissions(folder: str | Path) -> None:
    """The .safetensors files a library's ``save_pretrained`` wrote into ``folder`` get the usual permissions
    (safetensors creates files 0600, unreadable for the other users of a shared models folder)."""
    for f in Path(folder).glob("*.safetensors"):
        os.chmod(f, 0o666 & ~_umask())


def write_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None,
                      ) -> Path:
    """``tensors`` -> a .safetensors file, written beside the target and renamed (an interrupted run never leaves a
    half file under the real name), with the usual permissions (safetensors itself creates files 0600)."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


CONVERTED_FORMAT = "comfyui-vgt/1"


def check_converted_target(path: str | Path, source: str | Path | None = None) -> Path:
    """Where ``vgt convert`` may write: a .safetensors path that is not its source, whose sidecar ``.json`` (if
    present) is one of ours: nothing the user made is overwritten. Cheap: checked before any checkpoint is read."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"converted checkpoints are .safetensors files, got {path.name}: use --out "
                         f"{path.with_suffix('.safetensors').name}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: give a file name ending in .safetensors")
    if source is not None and path.resolve() == Path(source).resolve():
        raise ValueError(f"{path} is the file being converted: write the converted checkpoint to another name")
    side = path.with_suffix(".json")
    if side.exists() and (source is not None and side.resolve() == Path(source).resolve() or not _is_ours(side)):
        raise FileExistsError(f"{side} exists and is not a comfyui-vgt config: writing {path.name} would overwrite "
                              f"it; pick another output name")
    if not path.parent.exists():
        raise FileNotFoundError(f"output folder {path.parent} does not exist")
    return path


def _is_ours(side: Path) -> bool:
    try:
        return json.loads(side.read_text(encoding="utf-8")).get("format") == CONVERTED_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would, briefly, for every thread)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def converted_config(path: str | Path) -> dict[str, Any] | None:
    """The JSON config stored with a converted checkpoint (metadata or sidecar), or None for official files."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            meta = LazySafetensors(path).metadata
            if "vgt_config" in meta:
                return json.loads(meta["vgt_config"])
        side = path.with_suffix(".json")
        return json.loads(side.read_text(encoding="utf-8")) if side.is_file() else None
    except ValueError as e:
        raise CheckpointError(f"the config stored with {path} is not valid JSON ({e}): convert the checkpoint again") from e
