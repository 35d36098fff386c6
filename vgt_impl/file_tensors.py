"""Checkpoint tensors read straight from a ``torch.save`` zip (or a ``.safetensors`` file) into the memory that keeps
them.

``torch.load(map_location="meta")`` reads only the pickle: every tensor comes back on the meta device, its storage
carrying the offset of its bytes in the file. :func:`load_structure` checks those offsets against the zip's own
directory (members stored uncompressed, little-endian data) and tags each storage with its file and offset;
:class:`TensorFileReader` then reads a tagged tensor's bytes with ``readinto`` into a fresh tensor (the model's own
weight), converting dtype through a bounded buffer when the file holds another dtype. Nothing else of the file is
read: the dict that is not chosen (``state_dict`` vs ``ema_state_dict``), dropped groups and unused tensors never
leave the disk, and no memory map keeps file pages resident, so a load peaks at about the bytes it keeps.
:func:`safetensors_structure` does the same for ``.safetensors`` files from their JSON header.
"""

from __future__ import annotations

import ctypes
import functools
import io
import json
import logging
import math
import struct
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch

logger = logging.getLogger(__name__)

_SOURCE = "_vgt_file_source"  # attribute of a meta storage: (file path, offset of its bytes in the file)
_LOCAL_HEADER = b"PK\x03\x04"
CHUNK_BYTES = 16 << 20  # dtype conversion buffer


def _zip_data_offsets(path: Path) -> dict[int, int] | None:
    """Offset of each zip member's data -> its size; None when a tensor cannot be read in place (a compressed
    member, data written on a big-endian machine, not a readable zip)."""
    try:
        with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
            out: dict[int, int] = {}
            order = None
            for info in zf.infolist():
                if info.filename.endswith("/byteorder"):
                    order = zf.read(info).decode(errors="replace")
                if info.compress_type != zipfile.ZIP_STORED:
                    return None
                f.seek(info.header_offset)
                head = f.read(30)
                if len(head) < 30 or head[:4] != _LOCAL_HEADER:
                    return None
                name_len, extra_len = struct.unpack("<HH", head[26:30])
                out[info.header_offset + 30 + name_len + extra_len] = info.file_size
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return None
    if (order or "little") != sys.byteorder:  # torch.load would byteswap these; leave them to it
        return None
    return out


def _tensors(obj: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    if torch.is_tensor(obj):
        yield obj
    elif depth < 8 and isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v, depth + 1)
    elif depth < 8 and isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v, depth + 1)


@functools.cache
def _torch_gives_offsets() -> bool:
    """Whether this torch's ``torch.load(map_location="meta")`` reads no data and records each storage's offset in
    the file (newer releases do; older ones read every storage first, which is what this module avoids)."""
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    buf.seek(0)
    try:
        t = torch.load(buf, map_location="meta", weights_only=True)["w"]
    except Exception:  # noqa: BLE001 (any failure means: not available)
        return False
    return t.device.type == "meta" and getattr(t.untyped_storage(), "_checkpoint_offset", None) is not None


def load_structure(path: str | Path) -> Any | None:
    """The object of a ``torch.save`` zip with every tensor on the meta device and tagged with where its bytes are
    in the file (``weights_only=True``: nothing but tensors and plain containers). None when this file or this torch
    does not allow it (the caller loads the file the usual way). Errors of a damaged or unsafe file are torch.load's."""
    path = Path(path)
    if not _torch_gives_offsets():
        return None
    offsets = _zip_data_offsets(path)
    if offsets is None:
        return None
    try:
        obj = torch.load(str(path), map_location="meta", weights_only=True)
    except AssertionError:  # torch's offset bookkeeping assumes the layout torch.save writes
        return None
    tagged = []
    for t in _tensors(obj):
        if t.device.type != "meta":
            return None
        storage = t.untyped_storage()
        offset = getattr(storage, "_checkpoint_offset", None)  # set by torch.load for meta / fake tensors
        if offset is None or offsets.get(offset, -1) < storage.nbytes():
            logger.debug("%s: tensor offsets not available (torch %s); loading it through a memory map", path,
                         torch.__version__)
            return None
        tagged.append((storage, offset))
    for storage, offset in tagged:
        setattr(storage, _SOURCE, (str(path), offset))
    return obj


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
    "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}


def safetensors_structure(path: str | Path) -> dict[str, torch.Tensor] | None:
    """The tensors of a ``.safetensors`` file as meta tensors tagged with where their bytes are (read from its JSON
    header only). None when a dtype is not handled here or an entry does not fit the file (the caller reads the file
    with ``safetensors`` itself, which reports a damaged file)."""
    path = Path(path)
    if sys.byteorder != "little":
        return None
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        size = path.stat().st_size
    except (OSError, ValueError):
        return None
    out: dict[str, torch.Tensor] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
            shape = [int(d) for d in entry["shape"]]
            lo, hi = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            return None
        numel = math.prod(shape)
        if hi - lo != numel * dtype.itemsize or 8 + n + hi > size or lo < 0:
            return None
        storage = torch.UntypedStorage(hi - lo, device="meta")
        setattr(storage, _SOURCE, (str(path), 8 + n + lo))
        out[name] = torch.empty(0, dtype=dtype, device="meta").set_(storage, 0, shape)
    return out


def file_source(t: torch.Tensor) -> tuple[str, int] | None:
    """(file, offset of the tensor's storage) for a tensor from :func:`load_structure`, else None."""
    if not torch.is_tensor(t) or t.device.type != "meta":
        return None
    return getattr(t.untyped_storage(), _SOURCE, None)


def _writable_bytes(t: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, writable (no copy)."""
    n = t.numel() * t.element_size()
    return memoryview((ctypes.c_char * n).from_address(t.data_ptr())).cast("B")


def _read_exact(f: BinaryIO, offset: int, buf: memoryview) -> None:
    f.seek(offset)
    done = 0
    while done < len(buf):
        n = f.readinto(buf[done:])
        if not n:
            raise EOFError(f"the file ends {len(buf) - done} bytes before the tensor stored at offset {offset}")
        done += n


class TensorFileReader:
    """Reads tagged meta tensors from their files (kept open while the reader is)."""

    def __init__(self, chunk_bytes: int = CHUNK_BYTES):
        self._files: dict[str, BinaryIO] = {}
        self._chunk = chunk_bytes

    def __enter__(self) -> TensorFileReader:
        return self

    def __exit__(self, *exc) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def _file(self, path: str) -> BinaryIO:
        if path not in self._files:
            self._files[path] = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by __exit__)
        return self._files[path]

    def read(self, t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A new CPU tensor with ``t``'s values (converted to ``dtype`` when given); ``t`` from load_structure."""
        source = file_source(t)
        if source is None:
            raise ValueError("not a tensor from load_structure (a meta tensor without file data)")
        path, base = source
        out = torch.empty(t.shape, dtype=dtype or t.dtype, device="cpu")
        if t.numel() == 0:
            return out
        f, size = self._file(path), t.element_size()
        start = base + t.storage_offset() * size
        if not t.is_contiguous():  # a strided view: read the span it covers, then gather
            span = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
            tmp = torch.empty(span, dtype=t.dtype)
            _read_exact(f, start, _writable_bytes(tmp))
            return out.copy_(tmp.as_strided(tuple(t.shape), tuple(t.stride())))
        if out.dtype == t.dtype:  # straight into the destination
            _read_exact(f, start, _writable_bytes(out))
            return out
        flat = out.view(-1)
        step = max(1, self._chunk // size)
        buf = torch.empty(min(step, t.numel()), dtype=t.dtype)
        for i in range(0, t.numel(), step):  # bounded buffer, converted on the copy
            k = min(step, t.numel() - i)
            _read_exact(f, start + i * size, _writable_bytes(buf[:k]))
            flat[i:i + k].copy_(buf[:k])
        return out
