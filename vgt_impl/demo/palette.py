"""The small world's vocabulary: object colours, background colours, shapes, sizes, and the colour space they are
measured in.

Colours were chosen for detectability after a lossy round trip (blur, noise, colour shift): the eight object colours are
saturated (CIELAB chroma >= 40) and at least 44 apart from each other in CIELAB with lightness weighted 0.5 (the
detector's metric, :func:`colour_distance`); the background palette holds only greys and desaturated tones (chroma <= 12),
so a background pixel can never be taken for an object colour. ``vgt demo check-detector`` prints the margins.
"""

from __future__ import annotations

import itertools

import numpy as np

# Object colours (sRGB). Hues spread round the circle; blue leans azure and purple violet so that the two stay apart.
OBJECT_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 40),
    "orange": (245, 135, 10),
    "yellow": (245, 225, 25),
    "green": (30, 190, 70),
    "cyan": (20, 205, 195),
    "blue": (30, 110, 240),
    "purple": (135, 30, 215),
    "pink": (240, 60, 190),
}

# Background colours (sRGB) and the words captions use for them: greys and desaturated tones only.
BACKGROUND_COLORS: dict[str, tuple[int, int, int]] = {
    "white": (236, 236, 236),
    "light gray": (205, 205, 205),
    "gray": (150, 150, 150),
    "dark gray": (70, 70, 70),
    "black": (32, 32, 32),
    "beige": (222, 212, 192),
    "sand": (190, 180, 160),
    "sage": (170, 182, 165),
    "slate": (88, 96, 110),
    "charcoal": (50, 55, 68),
}

# Shapes, each drawn upright and filling a square box of the object's extent (see world.py for the geometry).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross", "ring")

# Two size classes: the side of the object's box in px on the 224 px canvas (a latent token covers 28 px).
SIZES: dict[str, int] = {"small": 42, "large": 70}

LIGHTNESS_WEIGHT = 0.5  # CIELAB distances weigh L* by this: generators shift brightness more than hue


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (uint8 or 0..255 floats) [..., 3] -> CIELAB (D65) [..., 3] float64."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    d = 6.0 / 29.0
    f = np.where(xyz > d**3, np.cbrt(xyz), xyz / (3 * d * d) + 4.0 / 29.0)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def colour_distance(lab_a: np.ndarray, lab_b: np.ndarray) -> np.ndarray:
    """Weighted CIELAB distance (L* weighted by LIGHTNESS_WEIGHT), broadcasting over leading axes."""
    d = (np.asarray(lab_a) - np.asarray(lab_b)) * np.array([LIGHTNESS_WEIGHT, 1.0, 1.0])
    return np.sqrt((d * d).sum(-1))


def chroma(lab: np.ndarray) -> np.ndarray:
    return np.hypot(lab[..., 1], lab[..., 2])


def palette_margins() -> dict[str, float]:
    """The figures the palettes were chosen by: smallest distances and chroma gap."""
    obj = {k: srgb_to_lab(np.array(v)) for k, v in OBJECT_COLORS.items()}
    bg = {k: srgb_to_lab(np.array(v)) for k, v in BACKGROUND_COLORS.items()}
    pairs = [(float(colour_distance(obj[a], obj[b])), a, b) for a, b in itertools.combinations(obj, 2)]
    cross = [(float(colour_distance(obj[a], bg[b])), a, b) for a in obj for b in bg]
    closest, closest_bg = min(pairs), min(cross)
    return {
        "min_object_distance": closest[0], "closest_objects": f"{closest[1]}/{closest[2]}",
        "min_object_background_distance": closest_bg[0], "closest_object_background": f"{closest_bg[1]}/{closest_bg[2]}",
        "min_object_chroma": float(min(chroma(v) for v in obj.values())),
        "max_background_chroma": float(max(chroma(v) for v in bg.values())),
    }

