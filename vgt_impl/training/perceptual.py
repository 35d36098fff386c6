"""Perceptual-loss networks, built only from local weight files the user names (nothing is ever downloaded).

- LPIPS-VGG through the ``lpips`` package: the VGG16 backbone from a torchvision ``vgg16`` weights file (or a saved
  LPIPS state dict), the linear heads from the weights the package ships (or a file given).
- A ConvNeXt-S classifier for the logits term: a timm ``convnext_small`` state dict, or a torchvision one.

Both packages (and torchvision, which they import) are optional extras: ``pip install "comfyui-vgt[perceptual]"``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..checkpoints import load_checkpoint_file
from .ae_losses import PerceptualLoss

logger = logging.getLogger(__name__)

# torchvision vgg16.features indices -> LPIPS slice (taps after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3)
_VGG_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))


@dataclass
class PerceptualConfig:
    lpips_vgg: str | None = None  # VGG16 weights file (torchvision vgg16 state dict, or a whole LPIPS state dict)
    lpips_lin: str | None = None  # LPIPS linear-head weights; None = the file shipped inside the lpips package
    convnext: str | None = None  # ConvNeXt classifier weights (timm or torchvision layout)
    convnext_arch: str = "convnext_small"  # timm / torchvision architecture name of those weights
    lpips_weight: float = 1.0  # relative weight of LPIPS inside the perceptual term (reference 1.0)
    logits_weight: float = 0.1  # relative weight of the logits MSE (reference 0.1)

    @property
    def enabled(self) -> bool:
        return bool(self.lpips_vgg or self.convnext)


def _need(package: str):
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as e:  # torchvision missing or built for another torch also lands here
        raise ImportError(
            f"the perceptual loss needs the {package!r} package ({e}): pip install \"comfyui-vgt[perceptual]\" "
            f"(lpips, timm and a torchvision that matches your torch), or leave the perceptual weight files unset"
        ) from e


def _vgg_to_lpips(sd: dict) -> dict:
    if any(k.startswith("net.slice") for k in sd):
        return {k: v for k, v in sd.items() if k.startswith("net.")}
    out = {}
    for key, value in sd.items():
        if not key.startswith("features."):
            continue  # the classifier of a full vgg16 file
        idx = int(key.split(".")[1])
        part = next((i for i, (a, b) in enumerate(_VGG_SLICES) if a <= idx < b), None)
        if part is not None:
            out[f"net.slice{part + 1}.{key[len('features.'):]}"] = value
    return out


def load_lpips_vgg(vgg_weights: str | Path, lin_weights: str | Path | None = None) -> nn.Module:
    """LPIPS (VGG16, v0.1) with every weight read from local files; frozen, eval mode."""
    lpips = _need("lpips")
    model = lpips.LPIPS(net="vgg", pretrained=False, pnet_rand=True, verbose=False)  # random init: no download
    backbone = _vgg_to_lpips(load_checkpoint_file(vgg_weights))
    if lin_weights is None:
        lin_weights = Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"
    lin = {k: v for k, v in load_checkpoint_file(lin_weights).items() if k.startswith("lin")}
    expected = {k for k in model.state_dict() if k.startswith(("net.", "lin"))}
    missing = sorted(expected - set(backbone) - set(lin))
    if missing:
        raise ValueError(f"LPIPS weights {vgg_weights} / {lin_weights} lack {len(missing)} tensors (e.g. {missing[:3]}): "
                         f"pass torchvision's vgg16 weights file (features.* keys) as lpips_vgg")
    model.load_state_dict({**backbone, **lin}, strict=False)
    return model.eval().requires_grad_(False)


def load_convnext(weights: str | Path, arch: str = "convnext_small") -> nn.Module:
    """An ImageNet ConvNeXt classifier from a local state dict (timm layout, or torchvision's), frozen."""
    sd = load_checkpoint_file(weights)
    if any(k.startswith("features.") for k in sd):  # torchvision layout (what the reference uses)
        models = _need("torchvision.models")
        net = getattr(models, arch)(weights=None)
    else:
        net = _need("timm").create_model(arch, pretrained=False)
    net.load_state_dict(sd, strict=True)
    return net.eval().requires_grad_(False)


def build_perceptual(cfg: PerceptualConfig) -> PerceptualLoss | None:
    """The configured perceptual loss, or None (with a log line saying how to turn it on) when no file is set."""
    if not cfg.enabled:
        logger.warning("perceptual loss off: no local weights configured (set perceptual.lpips_vgg to a torchvision "
                       "vgg16 weights file and/or perceptual.convnext to a convnext_small one to enable it)")
        return None
    lp = load_lpips_vgg(cfg.lpips_vgg, cfg.lpips_lin) if cfg.lpips_vgg else None
    cn = load_convnext(cfg.convnext, cfg.convnext_arch) if cfg.convnext else None
    return PerceptualLoss(lp, cn, lpips_weight=cfg.lpips_weight, logits_weight=cfg.logits_weight)
