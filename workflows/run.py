"""Runs an API-format example workflow through the node classes, outside ComfyUI (a small topological executor with
plain stand-ins for the few core nodes the examples use). Used by the tests and by render_thumbnails.py."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def stitch(image1, direction="right", match_image_size=True, spacing_width=0, spacing_color="white", image2=None):
    """ImageStitch, direction right: image2 scaled to image1's height (match_image_size), white spacing."""
    if image2 is None:
        return (image1,)
    h = image1.shape[1]
    if match_image_size and image2.shape[1] != h:
        w = round(image2.shape[2] * h / image2.shape[1])
        image2 = F.interpolate(image2.movedim(-1, 1), size=(h, w), mode="bilinear", align_corners=False).movedim(1, -1)
    gap = torch.ones(image1.shape[0], h, spacing_width, 3)
    h2 = max(h, image2.shape[1])
    pad = lambda x: F.pad(x, (0, 0, 0, 0, 0, h2 - x.shape[1]), value=1.0)  # noqa: E731
    return (torch.cat([pad(image1), pad(gap), pad(image2)], dim=2),)


def crop(image, width, height, x, y):
    """ImageCrop as ComfyUI 0.8 does it: the start clamped inside the image, the end cut at its border."""
    x, y = min(x, image.shape[2] - 1), min(y, image.shape[1] - 1)
    return (image[:, y:y + height, x:x + width, :],)


CORE_IMPL: dict[str, Callable] = {
    "SaveImage": lambda images, filename_prefix: {"saved": images},
    "PreviewImage": lambda images: {"saved": images},
    "ImageStitch": stitch,
    "ImageCrop": crop,
}


def execute(api: dict, nodes: dict, overrides: dict | None = None, core: dict | None = None,
            after: Callable | None = None) -> dict:
    """{node id: outputs}. ``overrides``: widget values by input name (e.g. smaller sizes for tiny models);
    ``after(class_type, outputs) -> outputs`` may adjust a node's outputs (e.g. shrink an example image)."""
    impl = {**CORE_IMPL, **(core or {})}
    results: dict[str, tuple] = {}

    def run(nid: str):
        if nid in results:
            return results[nid]
        node = api[nid]
        kwargs = {name: run(v[0])[v[1]] if isinstance(v, list) else (overrides or {}).get(name, v)
                  for name, v in node["inputs"].items()}
        if node["class_type"] in nodes:
            obj = nodes[node["class_type"]]()
            out = getattr(obj, obj.FUNCTION)(**kwargs)
        else:
            out = impl[node["class_type"]](**kwargs)
        results[nid] = after(node["class_type"], out) if after else out
        return results[nid]

    for nid in api:
        run(nid)
    return results


def saved_images(results: dict) -> list[torch.Tensor]:
    return [r["saved"] for r in results.values() if isinstance(r, dict) and "saved" in r]
