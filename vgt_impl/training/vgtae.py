"""VGT-AE training: the trained autoencoder and its frozen teacher, on the shared generator / discriminator phases.

Stages (reference ``tokenizer/configs/vgtae_intervl3/*.yaml`` and ``modeling/vlvae_intervl.py`` of hustvl/VGT):

- stage 1: no latent LayerNorm, no latent noise, distillation weight 1.0, GAN from step 30k;
- stage 2 (from stage 1): per-token LayerNorm, training-only noise z + a * eps with a ~ U(0, gamma) per sample
  (gamma 0.1), distillation weight 0.1, GAN from step 10k;
- ``paper`` (the paper's stage 2): encoder frozen, decoder + projector trained with L2 + LPIPS only (no distillation,
  no ConvNeXt term, no GAN).

The distillation target is the vision features (encoder + merger / mlp1) of a frozen copy of the starting encoder.
The inference class is used as is: training reads the pre-norm latent through its differentiable parts and adds the
LayerNorm and the noise here, outside the network.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..autoencoder import VGTAutoencoder
from .ae_common import AELossConfig, AETrainer, GANConfig
from .ae_losses import PerceptualLoss, distillation_loss
from .perceptual import PerceptualConfig

logger = logging.getLogger(__name__)


@dataclass
class VGTAEConfig:
    stage: str = "1"  # "1", "2" or "paper": a label; stage_config() / the ae_stage* presets set the values below
    encoder_norm: bool = False  # per-token LayerNorm on the latent (stage 2)
    noise_gamma: float = 0.0  # training-only latent noise z + a * eps, a ~ U(0, gamma) per sample (stage 2: 0.1)
    train_encoder: bool = True  # False: the paper's stage 2 (vision encoder frozen)
    train_latent: bool = True  # False: decoder-only tuning. The encoder, ResBlocks and down-MLP are frozen, so the
    #   latent space, and any AR trained on it, stays valid while the decoder improves (implies train_encoder=False)
    encoder_lr_mult: float = 0.5  # lr of the vision encoder relative to the rest (reference encoder_lr_muti)
    decode_window: int = 0  # training only: decode a random k x k window of latent tokens per image, not the whole
    #   grid (the encoder and distillation still see the whole image); 0 = the whole grid. The DC-AE decoder is
    #   convolutional, so a window costs ~(k / grid)^2 of the decoder, the dominant cost of a step
    loss: AELossConfig = field(default_factory=AELossConfig)


STAGE_DEFAULTS = {
    "1": dict(encoder_norm=False, noise_gamma=0.0, train_encoder=True, distill_weight=1.0, gan_start=30_000),
    "2": dict(encoder_norm=True, noise_gamma=0.1, train_encoder=True, distill_weight=0.1, gan_start=10_000),
    "paper": dict(encoder_norm=True, noise_gamma=0.1, train_encoder=False, distill_weight=0.0, gan_start=-1,
                  logits_weight=0.0),
}


def stage_config(stage: str) -> VGTAEConfig:
    """The reference's settings for a stage: "1", "2", or "paper" (the paper's frozen-encoder stage 2)."""
    if stage not in STAGE_DEFAULTS:
        raise ValueError(f"VGT-AE stage {stage!r}: expected one of {sorted(STAGE_DEFAULTS)}")
    d = STAGE_DEFAULTS[stage]
    loss = AELossConfig(distill_weight=d["distill_weight"], gan=GANConfig(start_step=d["gan_start"]),
                        perceptual=PerceptualConfig(logits_weight=d.get("logits_weight", 0.1)))
    return VGTAEConfig(stage=stage, encoder_norm=d["encoder_norm"], noise_gamma=d["noise_gamma"],
                       train_encoder=d["train_encoder"], loss=loss)


def latent_window(z: torch.Tensor, images: torch.Tensor, k: int, stride: int, top: torch.Tensor,
                  left: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The k x k latent window at (top, left) [B] (in tokens) of each image, and the matching pixel window."""
    offsets = list(zip(top.tolist(), left.tolist()))  # CPU draws: no device sync
    zs = [z[i, :, t:t + k, s:s + k] for i, (t, s) in enumerate(offsets)]
    ps = [images[i, :, t * stride:(t + k) * stride, s * stride:(s + k) * stride] for i, (t, s) in enumerate(offsets)]
    return torch.stack(zs), torch.stack(ps)


def latent_noise(z: torch.Tensor, gamma: float, *, alpha: torch.Tensor | None = None, eps: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """z + a * eps, a ~ U(0, gamma) per sample, eps ~ N(0, I); ``alpha`` [B] / ``eps`` (z's shape) replace the draws."""
    b = z.shape[0]
    dev = generator.device if generator is not None else z.device
    if alpha is None:
        alpha = torch.rand(b, generator=generator, device=dev) * gamma
    if eps is None:
        eps = torch.randn(z.shape, generator=generator, device=dev)
    return z + alpha.to(z).view(b, *([1] * (z.ndim - 1))) * eps.to(z)


class VGTAETrainer(AETrainer):
    """Owns ``ae`` (trained), ``teacher`` (frozen encoder copy, when distilling), ``discriminator``, ``lecam``."""

    def __init__(self, ae: VGTAutoencoder, cfg: VGTAEConfig, *, teacher: nn.Module | None = None,
                 perceptual: PerceptualLoss | None = None):
        if not isinstance(cfg.decode_window, int) or cfg.decode_window < 0:
            raise ValueError(f"model.decode_window={cfg.decode_window!r}: expected a whole number of latent tokens "
                             ">= 0 (0 decodes the whole grid)")
        super().__init__(cfg.loss, perceptual)
        self.cfg = cfg
        self.ae = ae.train().requires_grad_(True)
        self.ae.config.encoder_norm = cfg.encoder_norm  # what the exported config says
        self.ae.encoder.requires_grad_(cfg.train_encoder and cfg.train_latent)
        if not cfg.train_latent:
            if cfg.loss.distill_weight > 0:
                raise ValueError("model.train_latent=false freezes the encoder, so there is nothing to distil: set "
                                 "model.loss.distill_weight=0")
            for m in self._latent_path():
                m.requires_grad_(False)
        self.teacher = None
        if cfg.loss.distill_weight > 0:
            if teacher is None:
                logger.info("distillation teacher: a frozen copy of the starting vision encoder")
                teacher = copy.deepcopy(ae.encoder)
            self.teacher = teacher.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> VGTAETrainer:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # frozen: never in train mode
        if not self.cfg.train_encoder or not self.cfg.train_latent:
            self.ae.encoder.eval()
        if not self.cfg.train_latent:
            for m in self._latent_path():
                m.eval()
        return self

    def _latent_path(self) -> list[nn.Module]:
        """Everything between the pixels and the latent: the vision encoder, ResBlocks and down-MLP."""
        return [self.ae.encoder, self.ae.down_blocks, self.ae.down_mlp]

    def last_layer(self) -> torch.Tensor:
        return self.ae.decoder.conv_out.weight

    def reconstruct(self, images: torch.Tensor, draws: dict | None = None,
                    generator: torch.Generator | None = None) -> dict:
        """Images [B, 3, H, W] in [-1, 1] -> features, latents (normed / noised as configured), reconstruction."""
        ae, draws = self.ae, draws or {}
        ae.check_images(images)
        b, _, h, w = images.shape
        x = ae.pixel_inputs(images)  # normalised encoder input
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.cfg.train_latent):  # frozen: no graph to keep
            feats = ae.features(x)  # [B, hw, D]: distillation student
            z = ae.latent_tokens(feats).float()  # [B, hw, C] before the LayerNorm
        if self.cfg.encoder_norm:
            z = F.layer_norm(z, (z.shape[-1],), eps=1e-6)
        z = z.transpose(1, 2).reshape(b, -1, h // ae.stride, w // ae.stride)  # [B, C, h, w]
        if self.training and self.cfg.noise_gamma > 0:
            z = latent_noise(z, self.cfg.noise_gamma, alpha=draws.get("noise_alpha"), eps=draws.get("noise_eps"),
                             generator=generator)
        target = images
        k = self.cfg.decode_window
        if self.training and 0 < k < min(z.shape[-2:]):
            if "window_top" in draws:
                top, left = draws["window_top"], draws["window_left"]
            else:
                dev = generator.device if generator is not None else "cpu"  # offsets are indices: keep them off the GPU
                top = torch.randint(0, z.shape[-2] - k + 1, (b,), generator=generator, device=dev)
                left = torch.randint(0, z.shape[-1] - k + 1, (b,), generator=generator, device=dev)
            z, target = latent_window(z, images, k, ae.stride, top, left)
        out = {"features": feats, "latents": z, "recon": ae.decode_pixels(z), "target": target, "extra_losses": {}}
        if self.teacher is not None:
            with torch.no_grad():
                out["teacher_features"] = ae.features(x, encoder=self.teacher)  # [B, hw, D]
            out["extra_losses"]["distill_loss"] = self.cfg.loss.distill_weight * distillation_loss(
                feats, out["teacher_features"])
        return out

