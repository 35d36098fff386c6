"""Autoencoder training losses: pixel reconstruction, feature distillation, perceptual, hinge GAN + LeCam, GAN weights.

Conventions follow the reference VGT-AE training (hustvl/VGT ``tokenizer/modeling/modules/losses.py``): images arrive
in [-1, 1] and the pixel, perceptual and GAN terms see them mapped to [0, 1]; the generator loss is

    L_G = w_rec * MSE + w_distill * distill + w_perc * perceptual + w_gan * factor(step) * (-mean D(x_hat))

and the discriminator loss is ``factor(step) * hinge + w_lecam * LeCam``. The reference weighs the GAN term with a
fixed ``w_gan`` (0.1); the VQGAN-style adaptive weight (gradient-norm ratio at the decoder's last layer) is offered
as an option (:func:`adaptive_gan_weight`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] in float32 (the space the reference computes its pixel, perceptual and GAN terms in)."""
    return (images.float() + 1.0) / 2.0


def reconstruction_loss(images: torch.Tensor, recon: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """Mean pixel loss between [-1, 1] images, measured in [0, 1] units: ``l2`` (MSE, the reference) or ``l1``."""
    if images.shape != recon.shape:
        raise ValueError(f"reconstruction {tuple(recon.shape)} does not match the images {tuple(images.shape)}")
    a, b = to_unit(images), to_unit(recon)
    if kind == "l2":
        return F.mse_loss(b, a)
    if kind == "l1":
        return F.l1_loss(b, a)
    raise ValueError(f"reconstruction loss {kind!r}: expected 'l2' or 'l1'")


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE between the trained encoder's features and the frozen teacher's (no gradient into the teacher)."""
    if student.shape != teacher.shape:
        raise ValueError(f"student features {tuple(student.shape)} vs teacher {tuple(teacher.shape)}")
    return F.mse_loss(student.float(), teacher.detach().float())


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: 0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat)))."""
    return 0.5 * (F.relu(1.0 - logits_real.float()).mean() + F.relu(1.0 + logits_fake.float()).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator side of the hinge GAN: -mean D(x_hat)."""
    return -logits_fake.float().mean()


def lecam_loss(real_mean: torch.Tensor, fake_mean: torch.Tensor, ema_real: torch.Tensor,
               ema_fake: torch.Tensor) -> torch.Tensor:
    """LeCam regulariser (Tseng et al. 2021): relu(real - ema_fake)^2 + relu(ema_real - fake)^2 (batch means)."""
    return (F.relu(real_mean - ema_fake).pow(2).mean() + F.relu(ema_real - fake_mean).pow(2).mean())


class LeCamEMA(nn.Module):
    """Running means of the discriminator's real / fake logits (buffers: saved, resumed and synced with the model)."""

    def __init__(self, decay: float = 0.999):
        super().__init__()
        self.decay = decay
        self.register_buffer("ema_real", torch.zeros(1))
        self.register_buffer("ema_fake", torch.zeros(1))

    def loss(self, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
        """LeCam term against the current EMAs, then the EMAs take this batch's means (as the reference orders it)."""
        real, fake = logits_real.float().mean(), logits_fake.float().mean()
        out = lecam_loss(real, fake, self.ema_real, self.ema_fake)
        with torch.no_grad():
            self.ema_real.mul_(self.decay).add_(real.detach() * (1 - self.decay))
            self.ema_fake.mul_(self.decay).add_(fake.detach() * (1 - self.decay))
        return out


def adaptive_gan_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor, *,
                        max_weight: float = 1e4, eps: float = 1e-4) -> torch.Tensor:
    """VQGAN's adaptive weight: ||dL_rec/dW|| / (||dL_gan/dW|| + eps) at the decoder's last layer W, clamped, detached.

    ``rec_loss`` is the non-adversarial part of the generator loss (pixel + perceptual). Both graphs are kept.
    """
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_gan.norm() + eps)).clamp(0.0, max_weight).detach()


class PerceptualLoss(nn.Module):
    """Weighted mean of LPIPS and the MSE between a classifier's logits, as the reference's ``lpips-convnext_s-1.0-0.1``.

    loss = (w_lpips * mean LPIPS(x, y) + w_logits * MSE(f(x'), f(y'))) / (w_lpips + w_logits), where x', y' are the
    [0, 1] images resized to ``logits_size`` (bilinear, antialiased) and ImageNet-normalised. Either network may be
    None (its term and weight are left out). Both are frozen and always run in eval mode.

    ``lpips(a, b)`` takes [-1, 1] images and returns per-sample distances (the ``lpips`` package's convention);
    ``logits_net(x)`` takes ImageNet-normalised images and returns logits.
    """

    def __init__(self, lpips: Callable | None = None, logits_net: nn.Module | None = None, *,
                 lpips_weight: float = 1.0, logits_weight: float = 0.1, logits_size: int = 224):
        super().__init__()
        if lpips is None and logits_net is None:
            raise ValueError("a perceptual loss needs at least one network (lpips or logits_net)")
        self.lpips = lpips
        self.logits_net = logits_net
        self.lpips_weight = lpips_weight if lpips is not None else 0.0
        self.logits_weight = logits_weight if logits_net is not None else 0.0
        if self.lpips_weight + self.logits_weight <= 0:
            raise ValueError("perceptual weights must add up to more than 0")
        self.logits_size = logits_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> PerceptualLoss:  # frozen feature networks stay in eval mode
        return super().train(False)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(to_unit(x), size=self.logits_size, mode="bilinear", align_corners=False, antialias=True)
        return self.logits_net((x - self.mean) / self.std).float()  # [B, classes]

    def forward(self, images: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        total = images.new_zeros((), dtype=torch.float32)
        if self.lpips is not None:
            total = total + self.lpips_weight * self.lpips(recon.float(), images.float()).float().mean()
        if self.logits_net is not None:
            total = total + self.logits_weight * F.mse_loss(self._logits(recon), self._logits(images))
        return total / (self.lpips_weight + self.logits_weight)
