"""DC-AE training: a diffusers ``AutoencoderDC`` (encoder + decoder) as a plain autoencoder.

Loss: pixel MSE (+ perceptual and PatchGAN terms when configured, as for VGT-AE). Being convolutional (with
size-agnostic linear attention), it trains on random crops of the images, which makes small models fast on a CPU.
The export is a diffusers folder (``save_pretrained``) whose decoder a new VGT-AE starts from.

``latent_norm``: the latent is LayerNormed per position over its channels (no affine) before the decoder, as VGT-AE's
stage-2 latent is. Without it nothing bounds the latent's scale: a small DC-AE trained with plain MSE drifts to latents
of standard deviation in the hundreds to thousands, and a decoder calibrated for those decodes a VGT-AE's unit-scale
latents badly (the VGT-AE then has to learn the scale back, slowly). The export records the choice in
``vgt_dcae.json`` next to the diffusers files, so every reader encodes the same way (``dcae_latent_norm``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .ae_common import AELossConfig, AETrainer, GANConfig
from .ae_losses import PerceptualLoss

logger = logging.getLogger(__name__)

# A small f32c32 DC-AE (same stage layout as SANA's f32c32, narrow): x32 down / up like the VGT-AE decoder needs.
DCAE_SMALL: dict[str, Any] = {
    "in_channels": 3, "latent_channels": 32, "attention_head_dim": 8,
    "encoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock", "EfficientViTBlock",
                            "EfficientViTBlock"],
    "decoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock", "EfficientViTBlock",
                            "EfficientViTBlock"],
    "encoder_block_out_channels": [16, 32, 64, 64, 128, 128], "decoder_block_out_channels": [16, 32, 64, 64, 128, 128],
    "encoder_layers_per_block": [1, 1, 1, 1, 1, 1], "decoder_layers_per_block": [1, 1, 1, 1, 1, 1],
    "encoder_qkv_multiscales": [[], [], [], [5], [5], [5]], "decoder_qkv_multiscales": [[], [], [], [5], [5], [5]],
    "upsample_block_type": "interpolate", "downsample_block_type": "Conv", "decoder_norm_types": "rms_norm",
    "decoder_act_fns": "silu", "scaling_factor": 1.0,
}


@dataclass
class DCAEConfig:
    model: Any = None  # AutoencoderDC config (dict / JSON file) or a diffusers folder (its weights are the start); None = DCAE_SMALL
    crop_size: int | None = 64  # random square crops while training (a multiple of the spatial compression); None = whole images
    latent_norm: bool = False  # LayerNorm each latent position over its channels (no affine) before decoding
    loss: AELossConfig = field(default_factory=lambda: AELossConfig(distill_weight=0.0, perceptual_weight=0.0,
                                                                    gan=GANConfig(start_step=-1)))


INFO_FILE = "vgt_dcae.json"  # next to a DC-AE export: how its latents are made


def normalize_latent(z: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> the same, LayerNormed over C at each position (no affine): what ``latent_norm`` decodes."""
    return F.layer_norm(z.movedim(1, -1), (z.shape[1],), eps=1e-6).movedim(-1, 1)


def dcae_latent_norm(folder: str | Path) -> bool:
    """Whether the DC-AE export in ``folder`` was trained on LayerNormed latents (``vgt_dcae.json``; absent: no)."""
    info = Path(folder) / INFO_FILE
    if not info.is_file():
        return False
    value = json.loads(info.read_text()).get("latent_norm", False)
    if not isinstance(value, bool):
        raise ValueError(f"{info}: latent_norm must be true or false, got {value!r}")
    return value


def _read_json(path: Path) -> dict[str, Any]:
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}


def build_dcae(model: Any = None, *, dtype: torch.dtype = torch.float32) -> nn.Module:
    """An ``AutoencoderDC`` from a config dict, a config.json, or a diffusers folder (with weights: loaded)."""
    from diffusers import AutoencoderDC

    if model is None or isinstance(model, dict):
        return _cast(AutoencoderDC(**dict(model or DCAE_SMALL)), dtype)
    path = Path(model)
    if path.is_dir() and any(path.glob("diffusion_pytorch_model.*")):
        return AutoencoderDC.from_pretrained(str(path), torch_dtype=dtype)
    cfg_path = path / "config.json" if path.is_dir() else path
    if not cfg_path.is_file():
        raise FileNotFoundError(f"DC-AE model {model}: expected a config dict, a config.json or a diffusers folder")
    return _cast(AutoencoderDC(**_read_json(cfg_path)), dtype)


def _cast(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    return model if next(model.parameters()).dtype == dtype else model.to(dtype)


def random_crop(images: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One random [size x size] window per image of a [B, 3, H, W] batch (offsets drawn on the CPU generator)."""
    b, _, h, w = images.shape
    if size > min(h, w):
        raise ValueError(f"crop_size {size} is larger than the images ({h}x{w})")
    top = torch.randint(0, h - size + 1, (b,), generator=generator).tolist()
    left = torch.randint(0, w - size + 1, (b,), generator=generator).tolist()
    return torch.stack([images[i, :, t:t + size, s:s + size] for i, (t, s) in enumerate(zip(top, left))])


class DCAETrainer(AETrainer):
    """Owns ``dcae`` (an AutoencoderDC, trained whole), ``discriminator`` and ``lecam`` when the GAN is on."""

    def __init__(self, dcae: nn.Module, cfg: DCAEConfig, *, perceptual: PerceptualLoss | None = None):
        super().__init__(cfg.loss, perceptual)
        self.cfg = cfg
        self.dcae = dcae.train().requires_grad_(True)
        ratio = int(getattr(dcae, "spatial_compression_ratio", 2 ** (len(dcae.config.encoder_block_out_channels) - 1)))
        if cfg.crop_size is not None and cfg.crop_size % ratio:
            raise ValueError(f"crop_size {cfg.crop_size} is not a multiple of the DC-AE's compression {ratio}")
        self.compression = ratio

    def last_layer(self) -> torch.Tensor:
        return self.dcae.decoder.conv_out.weight

    def prepare(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The training view of a batch: a random crop per image when ``crop_size`` is set."""
        size = self.cfg.crop_size
        if size is None or (images.shape[-2] == size and images.shape[-1] == size):
            return images
        return random_crop(images, size, generator)

    def reconstruct(self, images: torch.Tensor, draws: dict | None = None,
                    generator: torch.Generator | None = None) -> dict:
        h, w = images.shape[-2:]
        if h % self.compression or w % self.compression:
            raise ValueError(f"DC-AE input {h}x{w} is not a multiple of its compression {self.compression}")
        dtype = next(self.dcae.parameters()).dtype
        z = self.dcae.encode(images.to(dtype)).latent  # [B, C, H/f, W/f]
        if self.cfg.latent_norm:
            z = normalize_latent(z)
        return {"latents": z, "recon": self.dcae.decode(z).sample.float()}  # [B, 3, H, W]



def export_dcae(dcae: nn.Module, folder: str | Path, *, dtype: torch.dtype | None = None,
                latent_norm: bool = False) -> Path:
    """A diffusers folder (config.json + diffusion_pytorch_model.safetensors + vgt_dcae.json) that VGT-AE training
    starts from."""
    import copy

    from ..checkpoints import usual_permissions

    folder = Path(folder)
    model = dcae if dtype is None else _cast(copy.deepcopy(dcae), dtype)
    model.save_pretrained(str(folder), safe_serialization=True)
    (folder / INFO_FILE).write_text(json.dumps({"latent_norm": bool(latent_norm)}) + "\n")
    usual_permissions(folder)
    return folder
