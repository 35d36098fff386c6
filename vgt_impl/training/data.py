"""Training data: image + caption sources, the square crop / resize to [-1, 1], and the resumable, sharded order.

Sources (``DataConfig.source``, any mix):
- a folder of images with same-name ``.txt`` captions (``cat.png`` + ``cat.txt``; searched recursively);
- a JSONL manifest, one ``{"image": "relative/or/absolute.png", "caption": "..."}`` per line;
- webdataset-style ``.tar`` shards: members grouped by key (``000123.jpg`` + ``000123.txt``; ``.json`` with a
  ``caption`` field works too). Globs and brace ranges (``shards/{00000..00099}.tar``) expand.

Order: for optimizer step ``s`` the global batch is the sample slots ``s*G .. s*G+G-1`` (G = processes x batch_size x
grad_accum); slot ``k`` is item ``perm_e[k % N]`` of epoch ``e = k // N`` (one seeded permutation per epoch). Process
``r`` takes, for micro-batch ``m``, the slots ``s*G + (m*P + r)*b + [0, b)``. Each item gets a seed derived from its
slot (random crop, CFG dropout): data position = step, so resuming needs nothing but the step.
"""

from __future__ import annotations

import bisect
import io
import json
import logging
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from glob import glob
from pathlib import Path
from typing import Any

import torch

from .task import stream_seed

logger = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class SampleKey:
    """What a dataset's ``__getitem__`` receives: the item index, its global slot and its own random seed."""

    index: int
    slot: int
    seed: int


class StepSampler(torch.utils.data.Sampler):
    """Infinite batch sampler: yields this process's micro-batches (lists of :class:`SampleKey`) from a step on."""

    def __init__(self, num_items: int, *, seed: int, batch_size: int, num_processes: int = 1, rank: int = 0,
                 grad_accum: int = 1, start_step: int = 0):
        if num_items < 1:
            raise ValueError("the dataset is empty: check data.source")
        self.n, self.seed, self.b = num_items, seed, batch_size
        self.p, self.r, self.accum, self.start = num_processes, rank, grad_accum, start_step
        self._epoch, self._perm = -1, None

    @property
    def global_batch(self) -> int:
        return self.p * self.b * self.accum

    def item(self, slot: int) -> int:
        epoch, k = divmod(slot, self.n)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(stream_seed(self.seed, "order", epoch))
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g).tolist()
        return self._perm[k]

    def keys(self, step: int, micro: int) -> list[SampleKey]:
        first = step * self.global_batch + (micro * self.p + self.r) * self.b
        return [SampleKey(self.item(s), s, stream_seed(self.seed, "sample", s)) for s in range(first, first + self.b)]

    def __iter__(self) -> Iterator[list[SampleKey]]:
        step = self.start
        while True:
            for m in range(self.accum):
                yield self.keys(step, m)
            step += 1

    def __len__(self) -> int:  # infinite; DataLoader only needs it for len(loader)
        return 2**62


# ---------------------------------------------------------------------------------------------------------- sources
def expand_sources(sources: list[str]) -> list[str]:
    """Globs and ``{000..099}`` ranges -> concrete paths, in order."""
    out: list[str] = []
    for src in sources:
        for s in _braces(str(src)):
            hits = sorted(glob(s)) if any(c in s for c in "*?[") else [s]
            if not hits:
                raise FileNotFoundError(f"data.source {src!r}: no file matches {s!r}")
            out.extend(hits)
    return out


def _braces(s: str) -> list[str]:
    m = re.search(r"\{(\d+)\.\.(\d+)\}", s)
    if not m:
        return [s]
    a, b = m.group(1), m.group(2)
    width = len(a)
    return [x for i in range(int(a), int(b) + 1) for x in _braces(s[:m.start()] + str(i).zfill(width) + s[m.end():])]


@dataclass
class Record:
    """One image + caption: ``path`` on disk, or (tar shard, member name)."""

    caption: str
    path: str | None = None
    tar: str | None = None
    member: str | None = None
    key: str = ""


def folder_records(root: Path, caption_ext: str = "txt") -> list[Record]:
    ext = caption_ext if caption_ext.startswith(".") else "." + caption_ext
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    records, missing = [], []
    for p in images:
        cap = p.with_suffix(ext)
        if cap.is_file():
            records.append(Record(cap.read_text(encoding="utf-8").strip(), path=str(p), key=str(p.relative_to(root))))
        else:
            missing.append(p.name)
    if missing:
        logger.warning("%s: %d images without a %s caption skipped (e.g. %s)", root, len(missing), ext, missing[0])
    return records


def jsonl_records(path: Path, image_key: str, caption_key: str) -> list[Record]:
    records = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i + 1} is not valid JSON ({e})") from e
        if image_key not in row or caption_key not in row:
            raise ValueError(f"{path}:{i + 1} lacks {image_key!r} or {caption_key!r} (data.image_key / data.caption_key)")
        img = Path(row[image_key])
        img = img if img.is_absolute() else path.parent / img
        records.append(Record(str(row[caption_key]).strip(), path=str(img), key=f"{path.name}:{i}"))
    return records


def tar_records(path: Path, caption_key: str) -> list[Record]:
    """Index a webdataset shard: members sharing a key (name before the first dot of the basename) form a sample."""
    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            if not m.isfile():
                continue
            base, ext = _split_member(m.name)
            groups.setdefault(base, {})[ext.lower()] = m
        records = []
        for key, members in groups.items():
            image = next((members[e] for e in ("png", "jpg", "jpeg", "webp") if e in members), None)
            if image is None:
                continue
            caption = _tar_caption(tf, members, caption_key)
            if caption is not None:
                records.append(Record(caption, tar=str(path), member=image.name, key=f"{path.name}:{key}"))
    return records


def _split_member(name: str) -> tuple[str, str]:
    """webdataset naming: "dir/000123.seg.jpg" -> key "dir/000123", extension "seg.jpg"."""
    head, _, tail = name.rpartition("/")
    base, _, ext = tail.partition(".")
    return (f"{head}/{base}" if head else base), ext


def _tar_caption(tf: tarfile.TarFile, members: dict[str, tarfile.TarInfo], caption_key: str) -> str | None:
    if caption_key in members or "txt" in members:
        return tf.extractfile(members.get(caption_key, members.get("txt"))).read().decode("utf-8").strip()
    if "json" in members:
        row = json.loads(tf.extractfile(members["json"]).read())
        return str(row[caption_key]).strip() if caption_key in row else None
    return None


def load_records(sources: list[str], image_key: str = "image", caption_key: str = "caption") -> list[Record]:
    """Every record of every source (folder / .jsonl / .tar), in source order."""
    if not sources:
        raise ValueError("data.source is empty: give an image folder, a .jsonl manifest or .tar shards")
    records: list[Record] = []
    for src in expand_sources(sources):
        p = Path(src)
        if p.is_dir():
            records += folder_records(p, "txt" if caption_key == "caption" else caption_key)
        elif p.suffix == ".jsonl":
            records += jsonl_records(p, image_key, caption_key)
        elif p.suffix == ".tar":
            records += tar_records(p, caption_key)
        elif not p.exists():
            raise FileNotFoundError(f"data.source {src!r} does not exist")
        else:
            raise ValueError(f"data.source {src!r}: expected a folder, a .jsonl manifest or a .tar shard")
    if not records:
        raise ValueError(f"no image + caption pairs found in {sources}")
    return records


# ---------------------------------------------------------------------------------------------------------- images
def open_image(rec: Record, cache: dict[str, tarfile.TarFile] | None = None):
    from PIL import Image

    if rec.path is not None:
        img = Image.open(rec.path)
    else:
        cache = {} if cache is None else cache
        tf = cache.get(rec.tar) or cache.setdefault(rec.tar, tarfile.open(rec.tar))
        img = Image.open(io.BytesIO(tf.extractfile(rec.member).read()))
    return img.convert("RGB")


def square_crop_resize(img, size: int, crop: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """PIL image -> square crop ("random" offset from ``generator``, or "center") -> bicubic resize -> [3, S, S] in [-1, 1]."""
    import numpy as np
    from PIL import Image

    w, h = img.size
    side = min(w, h)
    if crop == "random":
        off = int(torch.randint(0, max(w, h) - side + 1, (1,), generator=generator))
    elif crop == "center":
        off = (max(w, h) - side) // 2
    else:
        raise ValueError(f"data.crop={crop!r}: expected random or center")
    box = (off, 0, off + side, side) if w > h else (0, off, side, off + side)
    img = img.crop(box).resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float()
    return x / 127.5 - 1.0


class ImageCaptionDataset(torch.utils.data.Dataset):
    """Records -> {"pixels": [3, S, S] in [-1, 1], "caption": str, "key": str, "slot": int}."""

    def __init__(self, records: list[Record], image_size: int, crop: str = "random", stride: int = 28,
                 on_error: str = "raise"):
        if image_size % stride or image_size < stride:
            raise ValueError(f"data.image_size={image_size} must be a multiple of {stride} (this model makes one latent "
                             f"token per {stride}x{stride} px)")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"data.on_error={on_error!r}: expected raise or skip")
        self.records, self.size, self.crop, self.on_error = records, image_size, crop, on_error
        self._tars: dict[str, tarfile.TarFile] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(stream_seed(key.seed, "crop"))
        for attempt in range(16 if self.on_error == "skip" else 1):  # skip: the next items, deterministically
            rec = self.records[(key.index + attempt) % len(self.records)]
            try:
                pixels = square_crop_resize(open_image(rec, self._tars), self.size, self.crop, gen)
                return {"pixels": pixels, "caption": rec.caption, "key": rec.key, "slot": key.slot, "seed": key.seed}
            except (OSError, ValueError) as e:
                if self.on_error == "raise":
                    raise OSError(f"cannot read the image of {rec.key or rec.path}: {e} (data.on_error=skip skips "
                                  f"unreadable images)") from e
                logger.warning("skipping unreadable image %s: %s", rec.key or rec.path, e)
        raise OSError(f"16 unreadable images in a row from item {key.index}: check data.source")


# ---------------------------------------------------------------------------------------------------------- latent cache
class LatentCacheDataset(torch.utils.data.Dataset):
    """A latent cache folder (see ``latent_cache.py``) -> {"latents": [32, h, w], "caption", "key", "slot"}."""

    def __init__(self, folder: str | Path):
        from .latent_cache import read_index

        self.folder = Path(folder)
        self.info, self.shards = read_index(self.folder)
        self.offsets = [0]
        for s in self.shards:
            self.offsets.append(self.offsets[-1] + s["count"])
        self._open: dict[int, Any] = {}
        self._captions: dict[int, list[str]] = {}

    def __len__(self) -> int:
        return self.offsets[-1]

    def _shard(self, i: int):
        if i not in self._open:
            from safetensors import safe_open

            f = safe_open(str(self.folder / self.shards[i]["file"]), framework="pt", device="cpu")
            self._open[i] = f
            self._captions[i] = json.loads(f.metadata()["captions"])
        return self._open[i], self._captions[i]

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        i = bisect.bisect_right(self.offsets, key.index) - 1
        f, captions = self._shard(i)
        row = key.index - self.offsets[i]
        latents = f.get_slice("latents")[row:row + 1][0].float()
        return {"latents": latents, "caption": captions[row], "key": f"{i}:{row}", "slot": key.slot, "seed": key.seed}
