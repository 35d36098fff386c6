"""Writing the world to disk in the layouts the training data loaders read.

    out/
      images/000000.png, images/000000.txt, ...   a folder of images with same-name .txt captions
      manifest.jsonl                              one JSON object per image (paths relative to out/):
                                                  {"image", "caption", "captions", "qa", "scene"}
      world.json                                  what wrote it: format, seed, count, canvas, palettes

Scene ``i`` of a dataset with seed ``s`` is drawn from ``numpy.random.default_rng([s, i])``: any slice of a dataset
can be rebuilt alone, in any order or number of processes, and comes out identical.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from .captions import caption, questions
from .palette import BACKGROUND_COLORS, OBJECT_COLORS, SHAPES, SIZES
from .render import render
from .world import CANVAS, sample_scene

logger = logging.getLogger(__name__)

FORMAT = "vgt-demo-world/1"
ALT_CAPTIONS = 3  # extra captions per image in the manifest (other phrasings of the same scene)


def scene_record(seed: int, index: int, qa_per_kind: int = 2, render_image: bool = True) -> tuple[dict, object]:
    """Scene ``index`` of dataset ``seed`` -> (manifest record without the image path, PIL image or None)."""
    rng = np.random.default_rng([seed, index])
    scene = sample_scene(rng)
    scene = replace(scene, meta={**scene.meta, "seed": [seed, index]})
    first = caption(scene, rng)
    alts = list(dict.fromkeys([first] + [caption(scene, rng) for _ in range(ALT_CAPTIONS)]))
    record = {"caption": first, "captions": alts, "qa": [q.to_dict() for q in questions(scene, rng, qa_per_kind)],
              "scene": scene.to_dict()}
    return record, render(scene) if render_image else None


def _write_chunk(args: tuple[str, int, int, int, int]) -> list[dict]:
    """Render and save scenes [start, stop) -> their manifest records (runs in worker processes)."""
    out, seed, start, stop, qa_per_kind = args
    records = []
    for i in range(start, stop):
        record, image = scene_record(seed, i, qa_per_kind)
        name = f"images/{i:06d}"
        image.save(os.path.join(out, name + ".png"), compress_level=1)
        with open(os.path.join(out, name + ".txt"), "w", encoding="utf-8") as f:
            f.write(record["caption"] + "\n")
        records.append({"image": name + ".png", **record})
    return records


def _chunks(out: Path, seed: int, n: int, qa_per_kind: int, size: int) -> Iterator[tuple[str, int, int, int, int]]:
    for start in range(0, n, size):
        yield (str(out), seed, start, min(n, start + size), qa_per_kind)


def write_dataset(out: str | Path, n: int, seed: int = 0, *, qa_per_kind: int = 2, workers: int = 1,
                  overwrite: bool = False, progress: Callable[[int, int], None] | None = None) -> Path:
    """Write ``n`` scenes to ``out`` (see the module docstring); returns the manifest path.

    Refuses a folder that already holds a dataset unless ``overwrite``. ``workers`` > 1 renders in that many processes
    (same output).
    """
    if n < 1:
        raise ValueError(f"n={n}: write at least one scene")
    if n > 1_000_000:
        raise ValueError(f"n={n}: the file names have six digits; write at most 1,000,000 scenes per folder")
    out = Path(out)
    manifest = out / "manifest.jsonl"
    if manifest.exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a dataset ({manifest.name}): choose another folder or overwrite it")
    (out / "images").mkdir(parents=True, exist_ok=True)
    chunks = list(_chunks(out, seed, n, qa_per_kind, 256))
    done = 0
    tmp = manifest.with_suffix(".jsonl.partial")
    with open(tmp, "w", encoding="utf-8") as f:
        for records in _map(_write_chunk, chunks, workers):
            for r in records:
                f.write(json.dumps(r) + "\n")
            done += len(records)
            if progress is not None:
                progress(done, n)
    tmp.replace(manifest)  # the manifest appears only once every image is written
    info = {"format": FORMAT, "seed": seed, "n": n, "canvas": CANVAS, "qa_per_kind": qa_per_kind,
            "shapes": list(SHAPES), "colors": OBJECT_COLORS, "backgrounds": BACKGROUND_COLORS, "sizes": SIZES}
    (out / "world.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    logger.info("wrote %d scenes to %s", n, out)
    return manifest


def _map(fn, items: list, workers: int) -> Iterator:
    if workers <= 1:
        yield from map(fn, items)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(fn, items)


def read_manifest(path: str | Path) -> list[dict]:
    """The records of a manifest.jsonl, with ``image`` made absolute."""
    path = Path(path)
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                r["image"] = str(path.parent / r["image"])
                rows.append(r)
    return rows
