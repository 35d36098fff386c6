"""Shared pieces of the training tests: tiny captioned images and tiny run configs on the reference fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

COLORS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40),
          "white": (240, 240, 240), "black": (15, 15, 15), "purple": (140, 40, 170), "orange": (240, 140, 20)}

FAMILIES = {
    # fixture folder: (AR base model, AE base model)
    "internvl3": ("InternVL3-2B-tiny", "InternVL3-1B-tiny"),
    "qwen25vl": ("Qwen2.5-VL-3B-Instruct-tiny", "Qwen2.5-VL-3B-Instruct-tiny"),
}


def make_images(folder: Path, n: int = 8, size: tuple[int, int] = (120, 112)) -> Path:
    """n images (a coloured square on a coloured background, distinct per index) with same-name .txt captions."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(COLORS)
    for i in range(n):
        bg, fg = names[i % len(names)], names[(3 * i + 1) % len(names)]
        arr = np.zeros((size[1], size[0], 3), dtype=np.uint8)
        arr[:] = COLORS[bg]
        y, x = (i * 13) % (size[1] - 40), (i * 29) % (size[0] - 40)
        arr[y:y + 40, x:x + 40] = COLORS[fg]
        Image.fromarray(arr).save(folder / f"img{i:02d}.png")
        (folder / f"img{i:02d}.txt").write_text(f"a {fg} square on a {bg} background")
    return folder


def model_section(reference_dir: Path, family: str = "internvl3") -> dict[str, Any]:
    root = reference_dir / family
    ar_base, ae_base = FAMILIES[family]
    return {
        "checkpoint": str(root / "ar" / "iter_5000.pth"),
        "base_model": str(root / "base" / ar_base),
        "ae_base_model": str(root / "base" / ae_base),
        "decoder_config": str(root / "base" / "dc-ae-f32c32-sana-1.1-diffusers-tiny"),
        "time_shift": 1.4 if family == "internvl3" else None,
    }


def tiny_raw(reference_dir: Path, run_dir: Path, data: dict[str, Any], family: str = "internvl3",
             **sections: dict[str, Any]) -> dict[str, Any]:
    """The ar_tiny preset pointed at a fixture family, a run folder and a data section; ``sections`` merge on top."""
    from vgt_impl.training.config import deep_merge, read_config_file

    raw = read_config_file("ar_tiny")
    raw = deep_merge(raw, {"loop": {"output_dir": str(run_dir)}, "data": data,
                           "model": model_section(reference_dir, family)})
    return deep_merge(raw, sections)


def run_config(raw: dict[str, Any]):
    from vgt_impl.training.config import build_run_config

    return build_run_config(raw)


def one_thread():
    """Tiny models run fastest on one thread (and far more predictably on a loaded machine); restore afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def tiny_feature_model(checkpoint=None):
    """A REPA feature-model plug-in for tests: a fixed random 4x4-patch convolution (no weights file needed)."""
    import torch
    from torch import nn

    class Features(nn.Module):
        feature_dim = 16

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, kernel_size=4, stride=4)
            with torch.no_grad():
                g = torch.Generator().manual_seed(0)
                self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.1)
                self.conv.bias.zero_()

        def forward(self, x):
            return self.conv(x)  # [B, 16, S/4, S/4]

    return Features()
