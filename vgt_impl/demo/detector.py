"""A programmatic detector for the small world (no learned model): colour segmentation, connected components, geometry.

1. The image is box-filtered (3 x 3, against noise) and every pixel gets a palette class from a lookup table over 5-bit
   RGB: background when its CIELAB chroma is low (or only a little higher and nearer a background colour than any object
   colour: a tinted background); the nearest object colour when that is within ``COLOR_TOLERANCE``; otherwise nothing.
2. Object pixels (any colour) form 8-connected components, so the blended fringe around an object joins it. A component
   takes the majority colour of its core (its fringe peeled off) and is split by colour when a second colour holds a
   large share of the core (two touching objects).
3. Each component's geometry (fill of its box, solidity against its convex hull, fill at its centre for rings, where its
   widest rows are, width of its top rows) picks the nearest shape prototype; prototypes are measured on renders of each
   shape, sharp and blurred. Components too small, too large or fitting no prototype are dropped. Size: the box side.

Images of any size are resized to the world's 224 px canvas first.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

from .components import label_components
from .palette import BACKGROUND_COLORS, OBJECT_COLORS, SHAPES, SIZES, chroma, colour_distance, srgb_to_lab

CANVAS = 224
CHROMA_MIN = 20.0  # below this CIELAB chroma a pixel is background (object colours have >= 43, backgrounds <= 12)
TINT_MAX = 28.0  # up to this chroma, a pixel nearer a background colour than any object colour is background too
COLOR_TOLERANCE = 55.0  # farther than this from every object colour (weighted CIELAB) -> not an object pixel
MIN_AREA = 200  # px; the smallest object (a small star, box 39 px) covers about 720
MAX_SIDE = 110  # px; the largest object's box is 73
SPLIT_SHARE = 0.3  # a second colour with at least this share of a component's core splits it
CORE_EROSION = 2  # px peeled off a component before its colours are counted (the blended fringe)
SIZE_CUT = (SIZES["small"] + SIZES["large"]) / 2  # box side separating small from large
MAX_SHAPE_DISTANCE = 3.0  # farther than this from every prototype (in feature units) -> no shape
COLOR_NAMES = tuple(OBJECT_COLORS)
PROTOTYPE_BLURS = (0.0, 1.0, 2.0)  # Gaussian blur radii of the renders prototypes are measured on
FEATURES = ("fill", "solidity", "centre", "peak", "top")
FEATURE_SCALE = np.array([0.1, 0.1, 0.25, 0.05, 0.06])  # one unit of distance per feature: blur moves fill and solidity most


@dataclass
class Detection:
    shape: str | None  # None: an object-coloured blob that fits no shape
    color: str
    size: str  # "small" | "large"
    center: tuple[float, float]  # (x, y) px of the box centre
    bbox: tuple[float, float, float, float]  # (x0, y0, x1, y1) px, x1/y1 exclusive
    area: int
    shape_distance: float  # distance to the nearest prototype (lower = cleaner shape)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["center"], d["bbox"] = list(self.center), list(self.bbox)
        d["shape_distance"] = round(self.shape_distance, 3)
        return d


# ---------------------------------------------------------------------------------------------------------- colour
@lru_cache(maxsize=1)
def colour_table() -> np.ndarray:
    """uint8 [32**3]: class of each 5-bit RGB cell: 0 background / nothing, k = 1..8 object colour COLOR_NAMES[k-1]."""
    q = (np.arange(32) * 8 + 4).astype(np.float64)
    rgb = np.stack(np.meshgrid(q, q, q, indexing="ij"), -1).reshape(-1, 3)
    lab = srgb_to_lab(rgb)  # [N, 3]
    obj = srgb_to_lab(np.array(list(OBJECT_COLORS.values())))  # [8, 3]
    bg = srgb_to_lab(np.array(list(BACKGROUND_COLORS.values())))  # [10, 3]
    d_obj = colour_distance(lab[:, None], obj[None])  # [N, 8]
    d_bg = colour_distance(lab[:, None], bg[None]).min(1)  # [N]
    nearest, best = d_obj.argmin(1), d_obj.min(1)
    c = chroma(lab)
    is_obj = (c >= CHROMA_MIN) & ((best < d_bg) | (c > TINT_MAX)) & (best <= COLOR_TOLERANCE)
    return np.where(is_obj, nearest + 1, 0).astype(np.uint8)


def classify_pixels(rgb: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [H, W] palette classes (see colour_table)."""
    q = rgb >> 3
    idx = q[..., 0].astype(np.int32) << 10
    idx |= q[..., 1].astype(np.int32) << 5
    idx |= q[..., 2]
    return colour_table()[idx]


# ---------------------------------------------------------------------------------------------------------- geometry
def _chain(points: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """One half of Andrew's monotone-chain convex hull over points sorted by (x, y)."""
    out: list[tuple[int, int]] = []
    for p in points:
        while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                                 - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])) <= 0:
            out.pop()
        out.append(p)
    return out


def _hull_area(left: np.ndarray, right: np.ndarray, ys: np.ndarray) -> float:
    """Area of the convex hull of the pixels, given each occupied row's first and last+1 column (rows at mid-height,
    plus the top edge of the first row and the bottom edge of the last)."""
    mid = (ys + 0.5).tolist()
    pts = list(zip(left.tolist(), mid)) + list(zip(right.tolist(), mid))
    pts += [(left[0], ys[0]), (right[0], ys[0]), (left[-1], ys[-1] + 1), (right[-1], ys[-1] + 1)]
    pts = sorted(set((float(x), float(y)) for x, y in pts))
    if len(pts) < 3:
        return 0.0
    hull = _chain(pts)[:-1] + _chain(pts[::-1])[:-1]
    return 0.5 * abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(hull, hull[1:] + hull[:1])))


def shape_features(mask: np.ndarray) -> np.ndarray:
    """Geometry of one component cropped to its box (bool [h, w]) -> the FEATURES vector (measured after an opening,
    so specks and spurs glued on by noise do not count; the component's box and area stay the raw ones)."""
    mask = opening(mask)[0]
    h, w = mask.shape
    area = float(mask.sum())
    occupied = mask.any(1)
    ys = np.nonzero(occupied)[0]
    left = mask[ys].argmax(1)
    right = w - mask[ys, ::-1].argmax(1)
    hull = _hull_area(left, right, ys)
    span = np.zeros(h)
    span[ys] = right - left  # row extent, holes included
    widest = np.nonzero(span >= 0.95 * span.max())[0]
    yy, xx = np.mgrid[0:h, 0:w]
    r = 0.15 * min(h, w)
    centre = ((yy + 0.5 - h / 2) ** 2 + (xx + 0.5 - w / 2) ** 2) <= r * r
    top = span[: max(1, round(0.2 * h))].mean() / w
    return np.array([
        area / (h * w),  # fill of the box: square 1, circle 0.79, triangle / diamond 0.5
        area / hull if hull else 0.0,  # solidity: 1 for convex shapes
        float(mask[centre].mean()) if centre.any() else 0.0,  # a ring's centre is empty
        (widest.mean() + 0.5) / h,  # where the widest rows are: triangle near the bottom, most shapes mid-way
        top,  # width of the top fifth: cross 1/3, star and triangle narrow
    ])


@lru_cache(maxsize=1)
def prototypes() -> tuple[tuple[str, ...], np.ndarray]:
    """Feature vectors of each shape: the mean over renders at both sizes, a few sub-pixel offsets, sharp and blurred."""
    from .render import render_array
    from .scene import Background, Scene, SceneObject

    feats = []
    for shape in SHAPES:
        rows = []
        for size, off, radius in itertools.product(SIZES, (0.0, 0.25, 0.5, 0.75), PROTOTYPE_BLURS):
            obj = SceneObject(shape, "red", size, (112.0 + off, 112.0 + off / 2), float(SIZES[size]))
            img = Image.fromarray(render_array(Scene((obj,), Background(("gray",)))))
            img = img.filter(ImageFilter.GaussianBlur(radius)) if radius else img
            rows.extend(shape_features(mask) for mask in _component_masks(np.asarray(img)))
        feats.append(np.mean(rows, 0))
    return SHAPES, np.stack(feats)


def _component_masks(rgb: np.ndarray) -> list[np.ndarray]:
    return [mask for mask, _, _, _ in components(classify_pixels(rgb))]


def components(classes: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, int, int]]:
    """Object-pixel components of a class map that are big enough and not too big: (mask, classes, x0, y0) crops."""
    labels, n = label_components(classes > 0)
    if n == 0:
        return []
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    out = []
    for k in np.nonzero(np.bincount(lab, minlength=n + 1) >= MIN_AREA)[0]:
        sel = lab == k
        cy, cx = ys[sel], xs[sel]
        y0, y1, x0, x1 = int(cy.min()), int(cy.max()) + 1, int(cx.min()), int(cx.max()) + 1
        if max(y1 - y0, x1 - x0) > MAX_SIDE:
            continue
        mask = labels[y0:y1, x0:x1] == k
        out.append((mask, np.where(mask, classes[y0:y1, x0:x1], 0), x0, y0))
    return out


def _square3(mask: np.ndarray, grow: bool) -> np.ndarray:
    """Dilation (grow) or erosion by a 3x3 square, separably; outside the array counts as empty."""
    op = np.logical_or if grow else np.logical_and
    p = np.pad(mask, 1)
    rows = op(op(p[:, :-2], p[:, 1:-1]), p[:, 2:])  # [h + 2, w]
    return op(op(rows[:-2], rows[1:-1]), rows[2:])  # [h, w]


def opening(mask: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Morphological opening (3x3 square): specks and thin spurs that noise glues to an object come off, straight edges
    and corners stay. Returns the opened mask cropped to its box and the crop's offset (dy, dx); an empty result keeps
    the input."""
    opened = _square3(_square3(np.pad(mask, 1), grow=False), grow=True)[1:-1, 1:-1]  # [h, w]
    rows, cols = np.nonzero(opened.any(1))[0], np.nonzero(opened.any(0))[0]
    if len(rows) == 0:
        return mask, 0, 0
    return opened[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1], int(rows[0]), int(cols[0])


def classify_shape(features: np.ndarray) -> tuple[str | None, float]:
    """Nearest prototype in scaled feature space -> (shape or None when too far, distance)."""
    names, protos = prototypes()
    d = np.sqrt((((features[None] - protos) / FEATURE_SCALE) ** 2).sum(1))
    k = int(d.argmin())
    return (names[k] if d[k] <= MAX_SHAPE_DISTANCE else None), float(d[k])


# ---------------------------------------------------------------------------------------------------------- detect
def to_rgb_array(image) -> np.ndarray:
    """PIL image or uint8 [H, W, 3] -> uint8 [224, 224, 3] (resized when needed)."""
    if isinstance(image, Image.Image):
        img = image.convert("RGB")
    else:
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"expected a PIL image or a uint8 [H, W, 3] array, got {arr.dtype} {arr.shape}")
        if arr.shape[:2] == (CANVAS, CANVAS):
            return arr
        img = Image.fromarray(arr)
    if img.size != (CANVAS, CANVAS):
        img = img.resize((CANVAS, CANVAS), Image.BILINEAR)
    return np.asarray(img)


def detect(image) -> list[Detection]:
    """Objects in an image of the world, largest first."""
    rgb = to_rgb_array(image)
    classes = classify_pixels(denoise(rgb))  # [224, 224] uint8
    out: list[Detection] = []
    for mask, cls, x0, y0 in components(classes):
        out.extend(_objects_in(mask, cls, x0, y0))
    return sorted(out, key=lambda d: -d.area)


def denoise(rgb: np.ndarray) -> np.ndarray:
    """A 3x3 box filter: pixel noise drops threefold, edges move by less than a pixel."""
    return np.asarray(Image.fromarray(rgb).filter(ImageFilter.BoxBlur(1)))


def erode(mask: np.ndarray, steps: int = 1) -> np.ndarray:
    """Binary erosion with a 3x3 cross, ``steps`` times (pixels outside the array count as empty)."""
    m = mask.copy()
    for _ in range(steps):
        inner = np.zeros_like(m)
        inner[1:-1, 1:-1] = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
        m = inner
    return m


def _objects_in(mask: np.ndarray, cls: np.ndarray, x0: int, y0: int) -> list[Detection]:
    """One component -> detections. Colours are counted on its core (the blended fringe left out); a second colour
    holding a large share of the core splits it (two touching objects)."""
    core = erode(mask, CORE_EROSION)
    core = core if core.sum() >= MIN_AREA // 4 else mask
    counts = np.bincount(cls[core], minlength=len(COLOR_NAMES) + 1)[1:]
    order = np.argsort(-counts)
    if counts[order[1]] < SPLIT_SHARE * core.sum():
        return [_detection(mask, int(order[0]), x0, y0)]
    parts = []
    for c in order[:2]:
        for sub, _, sx, sy in components(np.where(mask & (cls == c + 1), cls, 0)):
            parts.append(_detection(sub, int(c), x0 + sx, y0 + sy))
    return parts


def _detection(mask: np.ndarray, colour: int, x0: int, y0: int) -> Detection:
    h, w = mask.shape
    shape, dist = classify_shape(shape_features(mask))
    box = (float(x0), float(y0), float(x0 + w), float(y0 + h))
    return Detection(shape=shape, color=COLOR_NAMES[colour], size="large" if max(h, w) >= SIZE_CUT else "small",
                     center=((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), bbox=box, area=int(mask.sum()),
                     shape_distance=dist)
