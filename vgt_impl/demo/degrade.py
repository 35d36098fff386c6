"""Image degradations that stand in for a small generator's output: blur, noise, colour shift, lost resolution.

Each takes a uint8 [H, W, 3] image and a numpy Generator (for the random ones) and returns a uint8 image; DEGRADATIONS
names the settings the detector's robustness report uses.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

Degradation = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def blur(radius: float) -> Degradation:
    def apply(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius)))

    return apply


def noise(sigma: float) -> Degradation:
    """Additive Gaussian noise, ``sigma`` in 0..255 units."""

    def apply(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.clip(img + rng.normal(0.0, sigma, img.shape), 0, 255).astype(np.uint8)

    return apply


def colour_shift(max_hue_deg: float = 8.0, saturation: tuple[float, float] = (0.75, 1.0),
                 gain: tuple[float, float] = (0.92, 1.08)) -> Degradation:
    """A random hue rotation (up to +-max_hue_deg), saturation scale and per-channel gain, one draw per image."""

    def apply(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        hsv = np.asarray(Image.fromarray(img).convert("HSV")).astype(np.float64)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-max_hue_deg, max_hue_deg) * 256 / 360) % 256
        hsv[..., 1] *= rng.uniform(*saturation)
        rgb = np.asarray(Image.fromarray(np.clip(hsv, 0, 255).astype(np.uint8), "HSV").convert("RGB"))
        return np.clip(rgb * rng.uniform(*gain, size=3), 0, 255).astype(np.uint8)

    return apply


def resample(factor: int) -> Degradation:
    """Downsample by ``factor`` (box) and back up (bicubic): detail finer than the low resolution is lost."""

    def apply(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = img.shape[:2]
        small = Image.fromarray(img).resize((w // factor, h // factor), Image.BOX)
        return np.asarray(small.resize((w, h), Image.BICUBIC))

    return apply


def chain(*steps: Degradation) -> Degradation:
    def apply(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for step in steps:
            img = step(img, rng)
        return img

    return apply


DEGRADATIONS: dict[str, Degradation] = {
    "blur r=1.5": blur(1.5),
    "blur r=3": blur(3.0),
    "noise s=12": noise(12.0),
    "noise s=25": noise(25.0),
    "colour shift": colour_shift(),
    "strong colour shift": colour_shift(12.0, (0.6, 1.0), (0.85, 1.15)),
    "down-up x4": resample(4),
    "down-up x8": resample(8),
    "all (blur 1.5, x4, shift, noise 8)": chain(blur(1.5), resample(4), colour_shift(), noise(8.0)),
}
