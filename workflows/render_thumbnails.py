"""Renders each template's thumbnail (workflows/<name>.jpg, what ComfyUI's template browser shows) by running the
workflow and saving the image it makes.

    PYTHONPATH=tests/comfy_stubs python workflows/render_thumbnails.py --models ComfyUI/models/vgt \
        [--model VGT-Qwen2.5-VL-2B-SFT] [--size 448 --steps 30]

--models is a models/vgt folder holding the model (no download happens here). Small models need small sizes:
--size sets width/height/padding to fit their query grid, and the example picture is resized to match.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import build  # noqa: E402
import run  # noqa: E402


def _shrink(size: int):
    def after(class_type, out):
        if class_type != "VGTExampleImage" or out[0].shape[1] == size:
            return out
        image = F.interpolate(out[0].movedim(-1, 1), size=(size, size), mode="bilinear", antialias=True).movedim(1, -1)
        mask = F.interpolate(out[1][:, None], size=(size, size), mode="bilinear")[:, 0]
        return (image, mask)
    return after


def thumbnail(images: torch.Tensor, path: Path, max_side: int = 512) -> None:
    from PIL import Image

    arr = (images[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    img = Image.fromarray(arr)
    img.thumbnail((max_side, max_side))
    img.save(path, quality=88)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", required=True, help="a models/vgt folder holding the model")
    p.add_argument("--model", default=build.RELEASE["model"], help="the loader's model choice")
    p.add_argument("--size", type=int, default=448, help="image size (multiple of 28) within the model's query grid")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--only", nargs="*", help="template names (default: all)")
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="vgt-thumbs-"))
    (base / "models").mkdir()
    os.symlink(Path(args.models).resolve(), base / "models" / "vgt")
    import folder_paths

    folder_paths.base_path, folder_paths.models_dir = str(base), str(base / "models")
    pack = build.pack()
    pad = max(28, args.size // 4 // 28 * 28)
    overrides = {"model": args.model, "download_missing": False, "width": args.size, "height": args.size,
                 "steps": args.steps, "left": pad, "right": pad}
    for name in args.only or list(build.GRAPHS):
        api = json.loads((build.API_DIR / f"{name}.json").read_text())
        results = run.execute(api, pack.NODE_CLASS_MAPPINGS, overrides, after=_shrink(args.size))
        (images,) = run.saved_images(results)
        thumbnail(images, HERE / f"{name}.jpg")
        print(f"wrote workflows/{name}.jpg ({images.shape[2]}x{images.shape[1]})")


if __name__ == "__main__":
    main()
