"""Drawing a scene with PIL: every shape upright and filling its square box, anti-aliased by supersampling.

Rendering is a pure function of the scene (no randomness), so a scene's seed fixes its pixels.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from .palette import BACKGROUND_COLORS, OBJECT_COLORS
from .scene import Scene, SceneObject

SUPERSAMPLE = 2  # draw at 2x and box-filter down: anti-aliased edges, cheap with PIL's reduce()
RING_INNER = 0.5  # inner diameter of a ring as a fraction of its outer diameter
CROSS_ARM = 1.0 / 3.0  # width of a cross's arms as a fraction of its extent
STAR_INNER = 0.5  # inner / outer radius of the five-pointed star (fat arms survive blur)


@lru_cache(maxsize=None)
def unit_polygon(shape: str) -> tuple[tuple[float, float], ...]:
    """Polygon vertices of a shape in the unit box [-0.5, 0.5]^2 (y down), touching all four sides."""
    if shape == "square":
        return ((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5))
    if shape == "triangle":  # isosceles, apex up
        return ((0.0, -0.5), (0.5, 0.5), (-0.5, 0.5))
    if shape == "diamond":
        return ((0.0, -0.5), (0.5, 0.0), (0.0, 0.5), (-0.5, 0.0))
    if shape == "cross":
        a = CROSS_ARM / 2
        return ((-a, -0.5), (a, -0.5), (a, -a), (0.5, -a), (0.5, a), (a, a), (a, 0.5), (-a, 0.5), (-a, a),
                (-0.5, a), (-0.5, -a), (-a, -a))
    if shape == "star":
        pts = [(math.sin(k * math.pi / 5) * (1 if k % 2 == 0 else STAR_INNER),
                -math.cos(k * math.pi / 5) * (1 if k % 2 == 0 else STAR_INNER)) for k in range(10)]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        cx, cy, w, h = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)
        return tuple(((x - cx) / w, (y - cy) / h) for x, y in pts)  # stretched a little to fill the box
    raise ValueError(f"{shape!r} has no polygon (circle and ring are ellipses)")


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, s: int) -> None:
    colour = OBJECT_COLORS[obj.color]
    x0, y0, x1, y1 = (v * s for v in obj.bbox)
    if obj.shape == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=colour)
    elif obj.shape == "ring":
        width = max(1, round((x1 - x0) * (1 - RING_INNER) / 2))
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), outline=colour, width=width)
    else:
        cx, cy, e = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0
        draw.polygon([(cx + px * e, cy + py * e) for px, py in unit_polygon(obj.shape)], fill=colour)


def render(scene: Scene, supersample: int = SUPERSAMPLE) -> Image.Image:
    """The scene as an RGB PIL image of ``canvas x canvas`` px."""
    s, n = supersample, scene.canvas * supersample
    bg = scene.background
    img = Image.new("RGB", (n, n), BACKGROUND_COLORS[bg.colors[0]])
    draw = ImageDraw.Draw(img)
    if bg.split != "none" and len(bg.colors) > 1:
        cut = round(bg.at * s)
        box = (0, cut, n, n) if bg.split == "horizontal" else (cut, 0, n, n)
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=BACKGROUND_COLORS[bg.colors[1]])
    for obj in scene.objects:
        _draw_object(draw, obj, s)
    return img.reduce(s) if s > 1 else img


def render_array(scene: Scene) -> np.ndarray:
    """The scene as uint8 [canvas, canvas, 3]."""
    return np.asarray(render(scene))
