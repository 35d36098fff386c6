"""The small world: seeded random scenes of 1-4 coloured shapes on plain or two-tone backgrounds.

    scene = sample_scene(seed=(7, 42))            # one scene; the same seed always gives the same scene
    image = render(scene)                         # PIL RGB, 224 x 224
    scene = make_scene(rng, [ObjectSpec("star", "red"), ObjectSpec("circle")], relation=(0, "left of", 1))

Placement keeps objects inside the canvas with a margin, apart from each other by a clear gap, and every spatial
relation between every pair clearly true or clearly false (see scene.py), so captions and answers are never borderline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from .palette import BACKGROUND_COLORS, OBJECT_COLORS, SHAPES, SIZES, srgb_to_lab
from .scene import OPPOSITE, RELATIONS, Background, Scene, SceneObject, box_gap, relation_holds, relations_are_clear

CANVAS = 224
EDGE_MARGIN = 8.0  # px between any object and the canvas edge
OBJECT_GAP = 12.0  # px of empty space between the boxes of any two objects
SIZE_JITTER = 3.0  # extent = SIZES[size] +- this many px
TWO_TONE_PROB = 0.4
TWO_TONE_MIN_DL = 20.0  # the two halves of a two-tone background differ by at least this much CIELAB lightness
MAX_OBJECTS = 4

# Scene kinds and how often sample_scene draws each: the evaluation's categories all appear in training data.
KIND_WEIGHTS: dict[str, float] = {"single": 0.15, "two": 0.2, "count": 0.2, "position": 0.2, "mixed": 0.25}

SeedLike = int | Sequence[int] | np.random.Generator


@dataclass(frozen=True)
class ObjectSpec:
    """What an object must be; None leaves the attribute to chance."""

    shape: str | None = None
    color: str | None = None
    size: str | None = None


def rng_from(seed: SeedLike) -> np.random.Generator:
    """A numpy Generator from an int, a tuple of ints (e.g. (dataset_seed, index)) or a Generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(list(seed) if isinstance(seed, (tuple, list)) else seed)


def sample_scene(seed: SeedLike, kind: str | None = None, canvas: int = CANVAS) -> Scene:
    """A random scene; ``kind`` ("single", "two", "count", "position", "mixed") or drawn from KIND_WEIGHTS."""
    rng = rng_from(seed)
    if kind is None:
        kind = str(rng.choice(list(KIND_WEIGHTS), p=np.array(list(KIND_WEIGHTS.values())) / sum(KIND_WEIGHTS.values())))
    if kind not in KIND_WEIGHTS:
        raise ValueError(f"kind={kind!r}: expected one of {sorted(KIND_WEIGHTS)}")
    specs, relation = _kind_specs(rng, kind)
    scene = make_scene(rng, specs, relation=relation, canvas=canvas)
    meta: dict = {"kind": kind}
    if not isinstance(seed, np.random.Generator):
        meta["seed"] = list(seed) if isinstance(seed, (tuple, list)) else seed
    return replace(scene, meta=meta)


def _kind_specs(rng: np.random.Generator, kind: str) -> tuple[list[ObjectSpec], tuple[int, str, int] | None]:
    if kind == "single":
        return [ObjectSpec()], None
    if kind == "two":
        a, b = rng.choice(SHAPES, size=2, replace=False)
        return [ObjectSpec(str(a)), ObjectSpec(str(b))], None
    if kind == "count":
        shape, n = str(rng.choice(SHAPES)), int(rng.integers(2, MAX_OBJECTS + 1))
        color = str(rng.choice(list(OBJECT_COLORS))) if rng.random() < 0.5 else None
        return [ObjectSpec(shape, color) for _ in range(n)], None
    if kind == "position":
        a, b = rng.choice(SHAPES, size=2, replace=rng.random() < 0.2)
        ca, cb = rng.choice(list(OBJECT_COLORS), size=2, replace=a != b)  # same shape -> different colours
        return [ObjectSpec(str(a), str(ca)), ObjectSpec(str(b), str(cb))], (0, str(rng.choice(RELATIONS)), 1)
    return [ObjectSpec() for _ in range(int(rng.integers(1, MAX_OBJECTS + 1)))], None


def make_scene(rng: np.random.Generator, specs: Sequence[ObjectSpec], *, relation: tuple[int, str, int] | None = None,
               background: Background | None = None, canvas: int = CANVAS, max_tries: int = 400) -> Scene:
    """A scene with one object per spec (unset attributes drawn at random), placed by rejection sampling.

    ``relation=(i, "left of", j)`` makes object i clearly left of object j (any of RELATIONS).
    """
    _check_specs(specs, relation)
    objects = [_fill(rng, s) for s in specs]
    for _ in range(max_tries):
        placed = _place(rng, objects, relation, canvas)
        if placed is not None:
            bg = background or sample_background(rng, canvas)
            return Scene(tuple(placed), bg, canvas)
    raise RuntimeError(f"could not place {len(specs)} objects with relation {relation} in {max_tries} tries")


def _check_specs(specs: Sequence[ObjectSpec], relation) -> None:
    if not 1 <= len(specs) <= MAX_OBJECTS:
        raise ValueError(f"a scene holds 1 to {MAX_OBJECTS} objects, got {len(specs)}")
    for s in specs:
        for value, allowed, name in ((s.shape, SHAPES, "shape"), (s.color, OBJECT_COLORS, "color"),
                                     (s.size, SIZES, "size")):
            if value is not None and value not in allowed:
                raise ValueError(f"unknown {name} {value!r}: expected one of {list(allowed)}")
    if relation is not None:
        i, rel, j = relation
        if rel not in RELATIONS or not (0 <= i < len(specs) and 0 <= j < len(specs)) or i == j:
            raise ValueError(f"relation {relation!r}: expected (i, one of {RELATIONS}, j) with i != j object indices")


def _fill(rng: np.random.Generator, spec: ObjectSpec) -> tuple[str, str, str, float]:
    shape = spec.shape or str(rng.choice(SHAPES))
    color = spec.color or str(rng.choice(list(OBJECT_COLORS)))
    size = spec.size or str(rng.choice(list(SIZES)))
    extent = float(SIZES[size] + rng.uniform(-SIZE_JITTER, SIZE_JITTER))
    return shape, color, size, round(extent, 2)


def _place(rng, objects, relation, canvas, candidates: int = 64) -> list[SceneObject] | None:
    """One attempt at positions for all objects (a batch of candidate centres each); None when it fails.

    A candidate must keep its gap to every placed object, with every relation clear; the second object of
    ``relation`` must also stand in it to the first.
    """
    placed: list[SceneObject] = []
    for k, (shape, color, size, extent) in enumerate(objects):
        lo, hi = EDGE_MARGIN + extent / 2, canvas - EDGE_MARGIN - extent / 2
        c = np.round(rng.uniform(lo, hi, size=(candidates, 2)), 2)  # [N, 2]
        boxes = np.concatenate([c - extent / 2, c + extent / 2], axis=1)  # [N, 4]
        ok = np.ones(candidates, dtype=bool)
        for p in placed:
            ok &= (box_gap(boxes, p.bbox) >= OBJECT_GAP) & relations_are_clear(boxes, p.bbox)
        if relation is not None and k == max(relation[0], relation[2]):
            i, rel, j = relation
            other = placed[min(i, j)]
            ok &= relation_holds(boxes, other.bbox, rel if k == i else OPPOSITE[rel])
        if not ok.any():
            return None
        n = int(np.argmax(ok))
        placed.append(SceneObject(shape, color, size, (float(c[n, 0]), float(c[n, 1])), extent))
    return placed


@lru_cache(maxsize=1)
def _background_lightness() -> dict[str, float]:
    return {n: float(srgb_to_lab(np.array(c))[0]) for n, c in BACKGROUND_COLORS.items()}


def sample_background(rng: np.random.Generator, canvas: int = CANVAS) -> Background:
    """Plain (60 %) or two-tone (40 %, split horizontally or vertically between 30 % and 70 % of the canvas)."""
    names = list(BACKGROUND_COLORS)
    first = str(rng.choice(names))
    if rng.random() >= TWO_TONE_PROB:
        return Background((first,))
    light = _background_lightness()
    others = [n for n in names if abs(light[n] - light[first]) >= TWO_TONE_MIN_DL]
    second = str(rng.choice(others))
    split = str(rng.choice(["horizontal", "vertical"]))
    return Background((first, second), split, round(float(rng.uniform(0.3, 0.7)) * canvas, 1))
