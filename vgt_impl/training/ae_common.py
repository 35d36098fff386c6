"""What VGT-AE and DC-AE training share: loss configs, the generator / discriminator phases, parameter groups.

A subclass of :class:`AETrainer` implements ``reconstruct(images, draws, generator) -> dict`` (at least ``recon``;
plus ``extra_losses`` such as distillation) and names the decoder's last layer; the two phases are built here:

    generator:      w_rec * pixel + w_perc * perceptual + extra + w_gan * factor * (-mean D(x_hat))   (D frozen)
    discriminator:  factor * hinge(D(x), D(x_hat.detach())) + w_lecam * LeCam                         (from start_step)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from .ae_losses import (
    LeCamEMA,
    PerceptualLoss,
    adaptive_gan_weight,
    hinge_d_loss,
    hinge_g_loss,
    reconstruction_loss,
    to_unit,
)
from .discriminator import PatchDiscriminator
from .perceptual import PerceptualConfig


@dataclass
class GANConfig:
    start_step: int = 30_000  # first step with the adversarial terms (reference: 30k stage 1, 10k stage 2); -1 = off
    weight: float = 0.1  # w_gan (reference discriminator_weight)
    factor: float = 1.0  # multiplies both GAN losses once started (reference discriminator_factor)
    adaptive: bool = False  # VQGAN adaptive weight (grad-norm ratio at the decoder's last layer) times `weight`
    lecam_weight: float = 0.001  # LeCam regulariser of the discriminator loss (0 = off)
    lecam_decay: float = 0.999  # EMA decay of the logit means LeCam compares against
    hidden_channels: int = 128  # PatchGAN width (reference 128)
    num_stages: int = 3  # PatchGAN downsampling stages (reference 3)

    @property
    def enabled(self) -> bool:
        return self.start_step >= 0 and self.weight > 0


@dataclass
class AELossConfig:
    reconstruction: str = "l2"  # pixel loss in [0, 1] units: l2 (reference) or l1
    reconstruction_weight: float = 1.0
    distill_weight: float = 1.0  # VGT-AE feature distillation to the frozen teacher (stage 1: 1.0, stage 2: 0.1)
    perceptual_weight: float = 1.1  # times the weighted mean (LPIPS 1.0, ConvNeXt logits 0.1) / 1.1
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)
    gan: GANConfig = field(default_factory=GANConfig)


@contextlib.contextmanager
def frozen(module: nn.Module):
    """Parameters temporarily without gradients (the discriminator inside the generator phase)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


class AETrainer(nn.Module):
    """Base of the autoencoder tasks: owns ``discriminator`` and ``lecam``; the subclass owns the autoencoder."""

    def __init__(self, loss: AELossConfig, perceptual: PerceptualLoss | None = None):
        super().__init__()
        self.loss_cfg = loss
        gan = loss.gan
        self.discriminator = PatchDiscriminator(hidden_channels=gan.hidden_channels, num_stages=gan.num_stages) \
            if gan.enabled else None
        self.lecam = LeCamEMA(gan.lecam_decay) if gan.enabled and gan.lecam_weight > 0 else None
        self.perceptual = perceptual  # frozen, built from local files (see perceptual.py); not trained
        self._recon: torch.Tensor | None = None
        self._target: torch.Tensor | None = None

    # subclass hooks
    def reconstruct(self, images: torch.Tensor, draws: dict | None = None,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def last_layer(self) -> torch.Tensor:
        raise NotImplementedError

    # phases
    def gan_active(self, step: int) -> bool:
        return self.discriminator is not None and step >= self.loss_cfg.gan.start_step

    def phases(self, step: int) -> list[str]:
        """Optimizer phases of this step: the generator, then the discriminator once the GAN has started."""
        return ["generator", "discriminator"] if self.gan_active(step) else ["generator"]

    def generator_loss(self, images: torch.Tensor, step: int, draws: dict | None = None,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        lc = self.loss_cfg
        out = self.reconstruct(images, draws, generator)
        recon = out["recon"]  # [B, 3, H, W] in [-1, 1]
        images = out.get("target", images)  # the window of the images that was decoded (VGT-AE decode_window)
        nll = lc.reconstruction_weight * reconstruction_loss(images, recon, lc.reconstruction)
        metrics = {"rec_loss": nll.detach()}
        if self.perceptual is not None and lc.perceptual_weight > 0:
            perc = lc.perceptual_weight * self.perceptual(images, recon)
            nll = nll + perc
            metrics["perceptual_loss"] = perc.detach()
        total = nll
        for name, value in out.get("extra_losses", {}).items():
            total = total + value
            metrics[name] = value.detach()
        if self.gan_active(step):
            with frozen(self.discriminator):
                g = hinge_g_loss(self.discriminator(to_unit(recon)))
            weight = torch.tensor(lc.gan.weight * lc.gan.factor, device=g.device)
            if lc.gan.adaptive:
                weight = weight * adaptive_gan_weight(nll, g, self.last_layer())
            total = total + weight * g
            metrics.update(gan_loss=g.detach(), gan_weight=weight.detach())
        metrics["loss"] = total.detach()
        self._recon = recon.detach()
        self._target = images
        return total, metrics

    def discriminator_loss(self, images: torch.Tensor, step: int,
                           recon: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Hinge + LeCam on real images and the generator phase's (detached) reconstruction of the same batch."""
        if not self.gan_active(step):
            raise RuntimeError(f"the discriminator phase starts at step {self.loss_cfg.gan.start_step} (now {step})")
        recon = recon if recon is not None else self._recon
        if self._target is not None and recon is not None and self._target.shape == recon.shape \
                and images.shape != recon.shape:
            images = self._target  # the generator phase decoded a window: the discriminator sees the same window
        if recon is None:
            raise RuntimeError("the discriminator phase needs the generator phase's reconstruction of this batch")
        real = self.discriminator(to_unit(images))  # [B, 1, 16, 16]
        fake = self.discriminator(to_unit(recon.detach()))
        loss = self.loss_cfg.gan.factor * hinge_d_loss(real, fake)
        metrics = {"d_loss": loss.detach(), "logits_real": real.detach().mean(), "logits_fake": fake.detach().mean()}
        if self.lecam is not None:
            lecam = self.loss_cfg.gan.lecam_weight * self.lecam.loss(real, fake)
            loss = loss + lecam
            metrics["lecam_loss"] = lecam.detach()
        return loss, metrics
