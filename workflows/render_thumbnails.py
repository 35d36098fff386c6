"""Runs every template's API form (workflows/api/*.json) through the node classes and writes its thumbnail
(workflows/<name>.jpg, what ComfyUI's template browser shows) from the image it saves. One command, from the
repository root, with the built-in vgt-demo model the templates load (no ComfyUI install, no download):

    python workflows/render_thumbnails.py                      # all templates -> workflows/<name>.jpg
    python workflows/render_thumbnails.py --out /tmp/thumbs --images --only vgt_inpaint

--images also writes each saved image at full size (<name>.png). Another model: --model (a release or a checkpoint in
the models/vgt folder given by --models; nothing is downloaded here) with --size to fit its query grid (the example
picture is resized to match) and --steps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
STUBS = HERE.parent / "tests" / "comfy_stubs"  # stand-ins for the few ComfyUI modules the pack imports
sys.path[:0] = [str(HERE), str(HERE.parent)]  # this checkout's vgt_impl (and its built-in model) first

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


def to_pil(images: torch.Tensor):
    from PIL import Image

    return Image.fromarray((images[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy())


def thumbnail(images: torch.Tensor, path: Path, max_side: int = 512) -> None:
    img = to_pil(images)
    img.thumbnail((max_side, max_side))
    img.save(path, quality=88)


def comfy_folders(models: str | None) -> Path:
    """A ComfyUI-like base folder for the stand-ins: models/vgt is ``models`` (linked) or empty."""
    try:
        import folder_paths
    except ImportError:
        sys.path.insert(0, str(STUBS))
        import folder_paths
    base = Path(tempfile.mkdtemp(prefix="vgt-thumbs-"))
    (base / "models").mkdir()
    if models:
        os.symlink(Path(models).resolve(), base / "models" / "vgt")
    folder_paths.base_path, folder_paths.models_dir = str(base), str(base / "models")
    return base


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=build.RELEASE["model"], help="the loader's model choice (default: %(default)s)")
    p.add_argument("--models", help="a models/vgt folder holding --model's files (not needed for the built-in model)")
    p.add_argument("--size", type=int, help="image size, a multiple of 28 within the model's query grid "
                                            "(default: the templates' own, 224 for vgt-demo)")
    p.add_argument("--steps", type=int, help="flow-matching steps per token group (default: the templates' own)")
    p.add_argument("--only", nargs="*", choices=list(build.GRAPHS), help="template names (default: all)")
    p.add_argument("--out", type=Path, default=HERE, help="folder for the thumbnails (default: workflows/)")
    p.add_argument("--images", action="store_true", help="also write each saved image at full size (<name>.png)")
    args = p.parse_args(argv)
    comfy_folders(args.models)
    pack = build.pack()
    overrides: dict = {"model": args.model, "download_missing": False}
    if args.steps is not None:
        overrides["steps"] = args.steps
    after = None
    if args.size is not None:  # sampler sizes, outpaint crop and padding, the example picture
        half = max(28, args.size // 2 // 28 * 28)
        overrides.update(width=args.size, height=args.size, right=half)
        after = _shrink(args.size)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or list(build.GRAPHS):
        api = json.loads((build.API_DIR / f"{name}.json").read_text())
        if args.size is not None:
            for node in api.values():
                if node["class_type"] == "ImageCrop":
                    node["inputs"].update(width=half, height=args.size)
        start = time.perf_counter()
        results = run.execute(api, pack.NODE_CLASS_MAPPINGS, overrides, after=after)
        (images,) = run.saved_images(results)
        thumbnail(images, args.out / f"{name}.jpg")
        if args.images:
            to_pil(images).save(args.out / f"{name}.png")
        print(f"{name}: {images.shape[2]}x{images.shape[1]} in {time.perf_counter() - start:.1f} s -> "
              f"{args.out / name}.jpg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
