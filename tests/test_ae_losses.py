"""Autoencoder loss terms against hand computations on tiny tensors; the PatchGAN discriminator's shapes and padding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vgt_impl.training.ae_losses import (
    LeCamEMA,
    PerceptualLoss,
    adaptive_gan_weight,
    distillation_loss,
    hinge_d_loss,
    hinge_g_loss,
    lecam_loss,
    reconstruction_loss,
)
from vgt_impl.training.discriminator import BlurDownsample, PatchDiscriminator, same_padding


def test_reconstruction_loss_is_measured_in_unit_range():
    x = torch.zeros(1, 3, 2, 2)
    y = torch.full((1, 3, 2, 2), 0.5)
    y[0, 0, 0, 0] = -1.0  # one pixel off by 1.0 in [-1, 1] = 0.5 in [0, 1]
    # in [0, 1]: eleven pixels differ by 0.25, one by 0.5
    assert reconstruction_loss(x, y).item() == pytest.approx((11 * 0.25**2 + 0.5**2) / 12)
    assert reconstruction_loss(x, y, "l1").item() == pytest.approx((11 * 0.25 + 0.5) / 12)
    with pytest.raises(ValueError, match="'l2' or 'l1'"):
        reconstruction_loss(x, y, "huber")
    with pytest.raises(ValueError, match="does not match"):
        reconstruction_loss(x, y[:, :, :1])


def test_distillation_loss_and_no_teacher_gradient():
    student = torch.tensor([[[1.0, 2.0], [0.0, -1.0]]], requires_grad=True)
    teacher = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]], requires_grad=True)
    loss = distillation_loss(student, teacher)
    assert loss.item() == pytest.approx((1 + 4 + 1 + 4) / 4)
    loss.backward()
    assert teacher.grad is None
    torch.testing.assert_close(student.grad, 2 * (student.detach() - teacher.detach()) / 4)


def test_hinge_losses():
    real = torch.tensor([2.0, 0.5])
    fake = torch.tensor([-2.0, 0.0])
    # real: relu(1-2)=0, relu(1-0.5)=0.5 -> 0.25; fake: relu(1-2)=0, relu(1+0)=1 -> 0.5
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (0.25 + 0.5))
    assert hinge_g_loss(fake).item() == pytest.approx(1.0)


def test_lecam_against_ema_then_update():
    assert lecam_loss(torch.tensor(1.0), torch.tensor(-1.0), torch.tensor(0.5), torch.tensor(-0.25)).item() == \
        pytest.approx(1.25**2 + 1.5**2)
    assert lecam_loss(torch.tensor(-1.0), torch.tensor(1.0), torch.tensor(0.0), torch.tensor(0.0)).item() == 0.0
    ema = LeCamEMA(decay=0.9)
    real, fake = torch.tensor([[1.0, 3.0]]), torch.tensor([[-1.0, -3.0]])  # means 2, -2
    assert ema.loss(real, fake).item() == pytest.approx(2.0**2 + 2.0**2)  # EMAs start at 0
    assert ema.ema_real.item() == pytest.approx(0.2) and ema.ema_fake.item() == pytest.approx(-0.2)
    assert ema.loss(real, fake).item() == pytest.approx(2.2**2 + 2.2**2)
    assert set(ema.state_dict()) == {"ema_real", "ema_fake"}  # saved and resumed with the trainer


def test_adaptive_gan_weight_is_the_gradient_norm_ratio():
    w = nn.Parameter(torch.tensor([2.0, -1.0]))
    x = torch.tensor([3.0, 4.0])
    rec = ((w * x).sum() - 1.0) ** 2  # (6 - 4 - 1)^2 = 1; d/dw = 2 * 1 * x = [6, 8] -> norm 10
    gan = -(w * x).sum() * 0.5  # d/dw = -x / 2 -> norm 2.5
    weight = adaptive_gan_weight(rec, gan, w)
    assert weight.item() == pytest.approx(10.0 / (2.5 + 1e-4))
    assert not weight.requires_grad
    assert adaptive_gan_weight(rec, gan, w, max_weight=3.0).item() == 3.0
    (rec + gan).backward()  # both graphs survive the weight computation
    torch.testing.assert_close(w.grad, torch.tensor([6.0, 8.0]) - x / 2)


class _Logits(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_perceptual_loss_weighted_mean_by_hand():
    torch.manual_seed(0)
    a, b = torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 8, 8) * 2 - 1
    lp_calls = []

    def lpips(x, y):  # stand-in with the lpips package's signature: [-1, 1] images -> per-sample distances
        lp_calls.append((x.min().item() >= -1, x.max().item() <= 1))
        return ((x - y) ** 2).mean(dim=(1, 2, 3), keepdim=True)  # [B, 1, 1, 1]

    net = _Logits()
    loss = PerceptualLoss(lpips, net, lpips_weight=1.0, logits_weight=0.1, logits_size=8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    lp = ((a - b) ** 2).mean()
    la, lb = net(((a + 1) / 2 - mean) / std), net(((b + 1) / 2 - mean) / std)
    expected = (1.0 * lp + 0.1 * ((la - lb) ** 2).mean()) / 1.1
    torch.testing.assert_close(loss(a, b), expected, atol=1e-6, rtol=1e-6)
    assert lp_calls == [(True, True)]
    assert not any(p.requires_grad for p in loss.parameters())
    loss.train()
    assert not net.training  # frozen feature nets stay in eval mode
    only_lpips = PerceptualLoss(lpips, None)
    torch.testing.assert_close(only_lpips(a, b), lp)  # weights renormalise to the networks present
    with pytest.raises(ValueError, match="at least one network"):
        PerceptualLoss(None, None)


def test_perceptual_builders_need_local_files():
    from vgt_impl.training.perceptual import PerceptualConfig, build_perceptual

    assert build_perceptual(PerceptualConfig()) is None  # off when nothing is configured (logged)
    with pytest.raises((ImportError, FileNotFoundError)):
        build_perceptual(PerceptualConfig(lpips_vgg="/nonexistent/vgg16.pth"))


def test_same_padding_and_blur():
    assert same_padding(5, 4, 2) == (1, 2)  # ceil(5/2)=3 -> (3-1)*2 + 4 - 5 = 3
    assert same_padding(8, 4, 2) == (1, 1)
    assert same_padding(8, 5) == (2, 2) and same_padding(8, 1) == (0, 0)
    x = torch.full((1, 2, 8, 8), 3.0)
    y = BlurDownsample()(x)
    assert y.shape == (1, 2, 4, 4)
    torch.testing.assert_close(y[..., 1:-1, 1:-1], torch.full((1, 2, 2, 2), 3.0))  # kernel sums to 1
    # corner: the 4x4 kernel sees one zero-padded row/column: (sum of the inner 3x3 weights) * 3
    k = torch.tensor([1.0, 3, 3, 1])
    k2 = k[None] * k[:, None] / 64
    assert y[0, 0, 0, 0].item() == pytest.approx(3.0 * k2[1:, 1:].sum().item())


def test_patch_discriminator_shapes_and_gradients():
    d = PatchDiscriminator(hidden_channels=8, num_stages=3)
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    out = d(x)
    assert out.shape == (2, 1, 16, 16)
    out.mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in d.parameters())
    widths = [b[0].out_channels for b in d.blocks]
    assert widths == [8, 16, 32]  # doubling after the first stage, as the reference's (128, 256, 512)
    assert PatchDiscriminator().blocks[-1][0].out_channels == 512


def test_vgg16_keys_map_onto_lpips_slices():
    from vgt_impl.training.perceptual import _vgg_to_lpips

    t = torch.zeros(1)
    sd = {f"features.{i}.{p}": t for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28) for p in ("weight", "bias")}
    sd["classifier.0.weight"] = t
    out = _vgg_to_lpips(sd)
    # LPIPS slices: features[0:4], [4:9], [9:16], [16:23], [23:30] keep their torchvision indices
    assert {k for k in out if k.endswith("weight")} == {
        "net.slice1.0.weight", "net.slice1.2.weight", "net.slice2.5.weight", "net.slice2.7.weight",
        "net.slice3.10.weight", "net.slice3.12.weight", "net.slice3.14.weight", "net.slice4.17.weight",
        "net.slice4.19.weight", "net.slice4.21.weight", "net.slice5.24.weight", "net.slice5.26.weight",
        "net.slice5.28.weight"}
    assert len(out) == 26  # the classifier is not part of LPIPS
    whole = {"net.slice1.0.weight": t, "lin0.model.1.weight": t}  # an LPIPS state dict: its backbone as is
    assert _vgg_to_lpips(whole) == {"net.slice1.0.weight": t}
