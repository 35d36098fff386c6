"""Ground truth of a scene (dataclasses that round-trip through JSON) and the spatial relations between objects.

Relations follow GenEval's rule (djghosh13/geneval, ``relative_position``): the offset between two box centres, each axis
shrunk by 0.1 x the sum of the boxes' extents on that axis, divided by the length of the raw offset; "left of" when the
x part is below -0.5, "above" when the y part is below -0.5 (image y grows downwards), and so on. The world only places
objects where every relation between every pair is clearly true or clearly false (:func:`relations_are_clear`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) in px, x1/y1 exclusive

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
POSITION_THRESHOLD = 0.1  # GenEval's position_threshold: shrink of the offset per unit of box extent
RELATION_CUT = 0.5  # a normalised offset beyond +-0.5 makes the relation true
CLEAR_MARGIN = 0.12  # the world keeps every normalised offset at least this far from the cut


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    size: str  # "small" | "large"
    center: tuple[float, float]  # (x, y) in px
    extent: float  # side of the square box the shape fills, px

    @property
    def bbox(self) -> Box:
        h = self.extent / 2
        return (self.center[0] - h, self.center[1] - h, self.center[0] + h, self.center[1] + h)

    def to_dict(self) -> dict:
        return {"shape": self.shape, "color": self.color, "size": self.size, "center": list(self.center),
                "extent": self.extent, "bbox": [round(v, 2) for v in self.bbox]}

    @classmethod
    def from_dict(cls, d: dict) -> SceneObject:
        return cls(d["shape"], d["color"], d["size"], (float(d["center"][0]), float(d["center"][1])), float(d["extent"]))


@dataclass(frozen=True)
class Background:
    colors: tuple[str, ...]  # one colour (plain) or two (two-tone), names from BACKGROUND_COLORS
    split: str = "none"  # "none" | "horizontal" (top / bottom halves) | "vertical" (left / right)
    at: float = 0.0  # the split line in px (y for horizontal, x for vertical)

    def to_dict(self) -> dict:
        return {"colors": list(self.colors), "split": self.split, "at": self.at}

    @classmethod
    def from_dict(cls, d: dict) -> Background:
        return cls(tuple(d["colors"]), d.get("split", "none"), float(d.get("at", 0.0)))


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: Background
    canvas: int = 224  # the image is canvas x canvas px
    meta: dict = field(default_factory=dict, compare=False)  # e.g. {"kind": "count", "seed": [7, 3]}

    def to_dict(self) -> dict:
        return {"canvas": self.canvas, "background": self.background.to_dict(),
                "objects": [o.to_dict() for o in self.objects], **({"meta": self.meta} if self.meta else {})}

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        return cls(tuple(SceneObject.from_dict(o) for o in d["objects"]), Background.from_dict(d["background"]),
                   int(d.get("canvas", 224)), dict(d.get("meta", {})))

    def count(self, shape: str | None = None, color: str | None = None, size: str | None = None) -> int:
        """Objects matching every attribute given."""
        return sum(1 for o in self.objects if (shape is None or o.shape == shape) and
                   (color is None or o.color == color) and (size is None or o.size == size))


# ---------------------------------------------------------------------------------------------------------- relations
def normalised_offset(box_a, box_b):
    """GenEval's shrunk, normalised offset of box A's centre from box B's centre: (dx, dy), each in [-1, 1].

    Boxes are (x0, y0, x1, y1) tuples or arrays [..., 4] (broadcast; the world checks many candidates at once).
    """
    a, b = np.asarray(box_a, dtype=np.float64), np.asarray(box_b, dtype=np.float64)
    off = (a[..., :2] + a[..., 2:]) / 2 - (b[..., :2] + b[..., 2:]) / 2  # [..., 2]
    shrink = POSITION_THRESHOLD * ((a[..., 2:] - a[..., :2]) + (b[..., 2:] - b[..., :2]))  # [..., 2]
    revised = np.sign(off) * np.maximum(np.abs(off) - shrink, 0.0)
    norm = np.hypot(off[..., 0], off[..., 1])[..., None]
    out = np.where(norm > 0, revised / np.where(norm > 0, norm, 1.0), 0.0)
    return out[..., 0], out[..., 1]


def relation_holds(box_a, box_b, relation: str):
    """Whether "A <relation> B" holds (boxes broadcast like normalised_offset)."""
    dx, dy = normalised_offset(box_a, box_b)
    if relation not in RELATIONS:
        raise ValueError(f"unknown relation {relation!r}: expected one of {RELATIONS}")
    value = {"left of": -dx, "right of": dx, "above": -dy, "below": dy}[relation]
    return value > RELATION_CUT


def relations(box_a: Box, box_b: Box) -> set[str]:
    """Which of RELATIONS hold for A relative to B ("A is left of B", ...)."""
    return {r for r in RELATIONS if relation_holds(box_a, box_b, r)}


def relations_are_clear(box_a, box_b, margin: float = CLEAR_MARGIN):
    """True when no relation between A and B is a near-tie (each |offset| at least ``margin`` from the cut)."""
    dx, dy = normalised_offset(box_a, box_b)
    return (np.abs(np.abs(dx) - RELATION_CUT) >= margin) & (np.abs(np.abs(dy) - RELATION_CUT) >= margin)


def box_gap(box_a, box_b):
    """The empty space between two boxes along the axis that separates them most (negative when they overlap)."""
    a, b = np.asarray(box_a, dtype=np.float64), np.asarray(box_b, dtype=np.float64)
    return np.maximum(np.maximum(b[..., 0] - a[..., 2], a[..., 0] - b[..., 2]),
                      np.maximum(b[..., 1] - a[..., 3], a[..., 1] - b[..., 3]))
