"""VGT Example Image: the pictures shipped with the pack (with a painted mask), so the editing templates run as
shipped without copying anything into ComfyUI's input folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .common import CATEGORY

FOLDER = Path(__file__).resolve().parents[1] / "example_inputs"


def example_names() -> list[str]:
    return sorted(p.name for p in FOLDER.glob("*.png"))


class VGTExampleImage:
    DESCRIPTION = ("An example picture shipped with the pack and its mask (the transparent area, as Load Image "
                   "reads it). Swap it for Load Image to use your own picture; paint a mask there with the mask editor.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    OUTPUT_TOOLTIPS = ("The picture (IMAGE, 0..1).", "Its mask: 1 where the picture is transparent (regenerate).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (example_names(), {"tooltip": "A picture from the pack's example_inputs folder."})}}

    def load(self, image):
        from PIL import Image

        if image not in example_names():
            raise ValueError(f"image: {image!r} is not one of the pack's examples {example_names()}")
        with Image.open(FOLDER / image) as im:
            rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        pixels = torch.from_numpy(rgba[..., :3].copy())[None]  # [1, H, W, 3]
        mask = 1.0 - torch.from_numpy(rgba[..., 3].copy())[None]  # [1, H, W]
        return (pixels, mask)
