"""VGT-AE training on the fixture checkpoints (both families): stage 1 / 2 / paper steps, teacher, exports."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vgt_impl import VGTAutoencoder
from vgt_impl.training.vgtae import VGTAETrainer, latent_noise, stage_config
from vgt_impl.training.vgtae_io import TEACHER_FILE, export_vgtae, vgtae_from_checkpoint

BASE = {"qwen25vl": "Qwen2.5-VL-3B-Instruct-tiny", "internvl3": "InternVL3-1B-tiny"}


def paths(root: Path, fam: str) -> dict:
    r = root / fam
    return {"checkpoint": r / "ae" / f"vgt_ae_{fam}.pth", "base_model": r / "base" / BASE[fam],
            "decoder_config": r / "base" / "dc-ae-f32c32-sana-1.1-diffusers-tiny"}


@lru_cache(maxsize=2)
def _state(root: str, fam: str):
    ae, teacher = vgtae_from_checkpoint(**paths(Path(root), fam))
    return {k: v.clone() for k, v in ae.state_dict().items()}, teacher


def fresh(root: Path, fam: str):
    """A trainable VGT-AE from the fixture checkpoint (cached weights, new module) and its teacher."""
    sd, teacher = _state(str(root), fam)
    ae = VGTAutoencoder.from_pretrained(**paths(root, fam))
    ae.load_state_dict(sd)
    import copy

    return ae, copy.deepcopy(teacher)


def tiny_cfg(stage: str, gan_start: int = 0):
    cfg = stage_config(stage)
    cfg.loss.gan.start_step = gan_start
    cfg.loss.gan.hidden_channels = 8
    return cfg


def images(n: int = 2, size: int = 56, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_stage_defaults_follow_the_reference():
    s1, s2, paper = stage_config("1"), stage_config("2"), stage_config("paper")
    assert (s1.encoder_norm, s1.noise_gamma, s1.loss.distill_weight, s1.loss.gan.start_step) == (False, 0.0, 1.0, 30_000)
    assert (s2.encoder_norm, s2.noise_gamma, s2.loss.distill_weight, s2.loss.gan.start_step) == (True, 0.1, 0.1, 10_000)
    for c in (s1, s2):
        assert c.train_encoder and c.encoder_lr_mult == 0.5 and c.loss.perceptual_weight == 1.1
        assert (c.loss.gan.weight, c.loss.gan.lecam_weight, c.loss.gan.adaptive) == (0.1, 0.001, False)
    assert not paper.train_encoder and paper.loss.distill_weight == 0 and not paper.loss.gan.enabled
    assert paper.loss.perceptual.logits_weight == 0.0  # L2 + LPIPS only
    with pytest.raises(ValueError, match="stage '3'"):
        stage_config("3")


def test_official_internvl_teacher_is_the_base_encoder(reference_dir):
    """The teacher.* tensors of the official checkpoint map onto our encoder and equal the base InternVL3-1B ViT."""
    from vgt_impl.backbones.base_weights import load_base_weights

    _, teacher = fresh(reference_dir, "internvl3")
    base = load_base_weights(paths(reference_dir, "internvl3")["base_model"], "vision", dtype=torch.float32)
    tsd = teacher.state_dict()
    assert set(base) == set(tsd)
    for k, v in base.items():
        torch.testing.assert_close(tsd[k], v, atol=0, rtol=0)


@pytest.mark.parametrize("fam", list(BASE))
def test_stage1_step_terms(reference_dir, fam):
    ae, teacher = fresh(reference_dir, fam)
    tr = VGTAETrainer(ae, tiny_cfg("1"), teacher=teacher)
    x = images()
    loss, m = tr.generator_loss(x, step=0)
    # each term by hand, from the networks' outputs
    with torch.no_grad():
        inp = ae.pixel_inputs(x)
        feats, t_feats = ae.features(inp), ae.features(inp, encoder=teacher)
        z = ae.latent_tokens(feats).float().transpose(1, 2).reshape(2, 32, 2, 2)  # stage 1: no norm, no noise
        recon = ae.decode_pixels(z)
        logits = tr.discriminator((recon + 1) / 2)
    torch.testing.assert_close(m["rec_loss"], ((recon - x) ** 2).mean() / 4, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(m["distill_loss"], F.mse_loss(feats, t_feats), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(m["gan_loss"], -logits.mean(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(loss.detach(), m["rec_loss"] + m["distill_loss"] + 0.1 * m["gan_loss"])
    loss.backward()
    assert all(p.grad is None for p in tr.discriminator.parameters())  # D is frozen in the generator phase
    assert all(p.grad is None for p in teacher.parameters())
    assert ae.encoder.training and not teacher.training
    enc_grads = [p.grad for p in ae.encoder.parameters()]
    assert all(g is not None for g in enc_grads) and any(g.abs().sum() > 0 for g in enc_grads)
    d_loss, dm = tr.discriminator_loss(x, step=0)
    d_loss.backward()
    assert all(p.grad is not None for p in tr.discriminator.parameters())
    torch.testing.assert_close(d_loss.detach(), dm["d_loss"] + dm["lecam_loss"])


def test_stage2_latents_are_the_inference_latents_plus_noise(reference_dir):
    ae, teacher = fresh(reference_dir, "internvl3")
    tr = VGTAETrainer(ae, tiny_cfg("2", gan_start=10), teacher=teacher)
    x = images(size=112)
    ref = ae.encode(x)  # inference path: per-token LayerNorm
    alpha, eps = torch.tensor([0.0, 0.05]), torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))
    out = tr.reconstruct(x, {"noise_alpha": alpha, "noise_eps": eps})
    torch.testing.assert_close(out["latents"][0], ref[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["latents"][1], ref[1] + 0.05 * eps[1], atol=1e-5, rtol=0)
    tr.eval()
    torch.testing.assert_close(tr.reconstruct(x)["latents"], ref, atol=1e-5, rtol=0)  # no noise outside training
    tr.train()
    loss, m = tr.generator_loss(x, step=9, draws={"noise_alpha": alpha, "noise_eps": eps})
    assert "gan_loss" not in m and tr.phases(9) == ["generator"] and tr.phases(10) == ["generator", "discriminator"]
    torch.testing.assert_close(loss.detach(), m["rec_loss"] + m["distill_loss"])
    with pytest.raises(RuntimeError, match="starts at step 10"):
        tr.discriminator_loss(x, step=9)


def test_decode_window_decodes_and_scores_the_matching_image_window(reference_dir):
    """decode_window=k: each image's k x k latent window at its drawn offset is decoded and compared with the same
    window of the image; the encoder still sees the whole image; outside training the whole grid is decoded."""
    ae, teacher = fresh(reference_dir, "internvl3")
    cfg = tiny_cfg("2", gan_start=0)
    cfg.decode_window = 2
    tr = VGTAETrainer(ae, cfg, teacher=teacher)
    x = images(size=112)  # stride 28: a 4 x 4 latent grid
    alpha, eps = torch.tensor([0.0, 0.0]), torch.zeros(2, 32, 4, 4)
    top, left = torch.tensor([0, 2]), torch.tensor([1, 0])
    out = tr.reconstruct(x, {"noise_alpha": alpha, "noise_eps": eps, "window_top": top, "window_left": left})
    with torch.no_grad():
        full = ae.encode(x)  # [2, 32, 4, 4]
    assert out["latents"].shape == (2, 32, 2, 2) and out["recon"].shape == (2, 3, 56, 56)
    torch.testing.assert_close(out["latents"][0], full[0, :, 0:2, 1:3], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["latents"][1], full[1, :, 2:4, 0:2], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["target"][0], x[0, :, 0:56, 28:84], atol=0, rtol=0)
    torch.testing.assert_close(out["target"][1], x[1, :, 56:112, 0:56], atol=0, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(out["recon"], ae.decode_pixels(out["latents"]), atol=1e-5, rtol=1e-5)
    assert out["features"].shape[1] == 16  # distillation on the whole image's tokens
    draws = {"noise_alpha": alpha, "noise_eps": eps, "window_top": top, "window_left": left}
    loss, m = tr.generator_loss(x, step=0, draws=draws)
    torch.testing.assert_close(m["rec_loss"], ((out["recon"] - out["target"]) ** 2).mean() / 4, atol=1e-6, rtol=1e-5)
    d_loss, _ = tr.discriminator_loss(x, step=0)  # the discriminator sees the same window as the generator
    assert torch.isfinite(d_loss)
    tr.eval()
    assert tr.reconstruct(x)["recon"].shape == (2, 3, 112, 112)
    cfg.decode_window = -1
    with pytest.raises(ValueError, match="decode_window=-1: expected a whole number"):
        VGTAETrainer(ae, cfg, teacher=teacher)


def test_decode_window_draws_are_per_sample_and_reproducible(tmp_path):
    from types import SimpleNamespace

    from vgt_impl.training.ae_tasks import AETask
    from vgt_impl.training.task import BatchInfo

    task = AETask.__new__(AETask)  # draw() only reads cfg, ae.stride, ae.latent_channels and training
    torch.nn.Module.__init__(task)
    task.cfg = SimpleNamespace(noise_gamma=0.0, decode_window=3)
    task.ae = SimpleNamespace(stride=28, latent_channels=32)
    x = torch.zeros(4, 3, 224, 224)
    batch = {"info": BatchInfo(step=5, micro=0, slots=[40, 41, 42, 43], seed=7)}
    a, b = task.draw(batch, x, 5), task.draw(batch, x, 5)
    assert set(a) == {"window_top", "window_left"}
    assert torch.equal(a["window_top"], b["window_top"]) and torch.equal(a["window_left"], b["window_left"])
    assert int(a["window_top"].min()) >= 0 and int(a["window_top"].max()) <= 5 and int(a["window_left"].max()) <= 5
    other = task.draw({"info": BatchInfo(step=6, micro=0, slots=[44, 45, 46, 47], seed=7)}, x, 6)
    assert not (torch.equal(a["window_top"], other["window_top"]) and torch.equal(a["window_left"], other["window_left"]))
    task.cfg.decode_window = 8  # the whole grid: nothing to draw
    assert task.draw(batch, x, 5) == {}


def test_latent_noise_draws():
    z = torch.zeros(3, 2, 1, 1)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    out = latent_noise(z, 0.1, generator=g1)
    a = torch.rand(3, generator=g2) * 0.1
    e = torch.randn(z.shape, generator=g2)
    torch.testing.assert_close(out, a.view(3, 1, 1, 1) * e)
    assert float(a.max()) <= 0.1


def test_paper_stage_freezes_the_encoder(reference_dir):
    ae, _ = fresh(reference_dir, "internvl3")
    paper = VGTAETrainer(ae, tiny_cfg("paper", gan_start=-1))
    assert paper.teacher is None and paper.discriminator is None
    assert not any(p.requires_grad for p in ae.encoder.parameters())
    paper.train()
    assert not ae.encoder.training and ae.decoder.training
    loss, m = paper.generator_loss(images(size=112), 0)
    assert set(m) == {"rec_loss", "loss"}
    loss.backward()
    assert ae.down_mlp[1].weight.grad is not None and ae.decoder.conv_out.weight.grad is not None
    assert all(p.grad is None for p in ae.encoder.parameters())


def test_decoder_only_tuning_keeps_the_latent_space(reference_dir):
    """model.train_latent=false: one optimiser step changes the decoder and not one latent, so an AR trained on the
    VGT-AE's latents stays valid; distilling a frozen encoder is refused."""
    import dataclasses

    ae, _ = fresh(reference_dir, "internvl3")
    x = images(size=112)
    with torch.no_grad():
        before = ae.encode(x)
    cfg = dataclasses.replace(tiny_cfg("2", gan_start=-1), train_latent=False)
    cfg.loss = dataclasses.replace(cfg.loss, distill_weight=0.0)
    tr = VGTAETrainer(ae, cfg).train()
    trainable = {n for n, p in ae.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("decoder.") for n in trainable)
    assert not ae.encoder.training and not ae.down_mlp.training and ae.decoder.training
    opt = torch.optim.AdamW([p for p in tr.parameters() if p.requires_grad], lr=1e-2)
    w0 = ae.decoder.conv_out.weight.detach().clone()
    loss, _ = tr.generator_loss(x, 0)
    loss.backward()
    opt.step()
    assert not torch.equal(w0, ae.decoder.conv_out.weight)
    with torch.no_grad():
        torch.testing.assert_close(ae.encode(x), before, rtol=0, atol=0)
    with pytest.raises(ValueError, match="nothing to distil"):
        VGTAETrainer(fresh(reference_dir, "internvl3")[0], dataclasses.replace(tiny_cfg("2"), train_latent=False))


def test_short_run_lowers_reconstruction_loss(reference_dir):
    torch.manual_seed(0)
    ae, teacher = fresh(reference_dir, "internvl3")
    tr = VGTAETrainer(ae, tiny_cfg("1", gan_start=-1), teacher=teacher)
    opt = torch.optim.AdamW([p for p in tr.parameters() if p.requires_grad], lr=3e-3, betas=(0.9, 0.95))
    x = F.interpolate(images(2, 4, seed=3), size=28, mode="bilinear")  # smooth colour fields, one token each
    first = None
    for _ in range(8):
        loss, m = tr.generator_loss(x, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else float(m["rec_loss"])
    assert float(m["rec_loss"]) < 0.5 * first, (first, float(m["rec_loss"]))


@pytest.mark.parametrize("fam", list(BASE))
def test_export_opens_in_from_pretrained_and_continues(reference_dir, tmp_path, fam):
    ae, teacher = fresh(reference_dir, fam)
    tr = VGTAETrainer(ae, tiny_cfg("1", gan_start=-1), teacher=teacher)
    x = images(size=28)
    loss, _ = tr.generator_loss(x, 0)
    loss.backward()
    with torch.no_grad():
        for p in ae.parameters():
            p.add_(1e-3 * torch.sign(p.grad) if p.grad is not None else 0)
    path = export_vgtae(ae, tmp_path / "stage1", base_model=paths(reference_dir, fam)["base_model"], teacher=teacher)
    assert (path.parent / TEACHER_FILE).is_file() and (path.parent / "config.json").is_file()
    loaded = VGTAutoencoder.from_pretrained(path, base_model=path.parent)  # no decoder config given: stored in the JSON
    assert loaded.config.encoder_norm is False
    tr.eval()
    with torch.no_grad():
        want = tr.reconstruct(x)
    torch.testing.assert_close(loaded.encode(x), want["latents"], atol=1e-5, rtol=0)  # stage 1: pre-norm latents
    torch.testing.assert_close(loaded.decode(want["latents"]), want["recon"], atol=1e-5, rtol=0)
    # stage 2 starts from that export: same weights, the teacher read back from teacher.safetensors
    ae2, teacher2 = vgtae_from_checkpoint(path, base_model=path.parent)
    for k, v in teacher.state_dict().items():
        torch.testing.assert_close(teacher2.state_dict()[k], v, atol=0, rtol=0)
    tr2 = VGTAETrainer(ae2, tiny_cfg("2", gan_start=-1), teacher=teacher2)
    loss2, m2 = tr2.generator_loss(x, 0, generator=torch.Generator().manual_seed(0))
    loss2.backward()
    assert torch.isfinite(loss2) and m2["distill_loss"] > 0
    path2 = export_vgtae(ae2, tmp_path / "stage2", base_model=path.parent)
    assert VGTAutoencoder.from_pretrained(path2, base_model=path2.parent).config.encoder_norm is True


@pytest.mark.parametrize("fam", list(BASE))
def test_new_vgtae_from_base_folder_and_dcae_folder(reference_dir, fam):
    from diffusers import AutoencoderDC

    from vgt_impl.backbones.base_weights import build_base_vision_encoder
    from vgt_impl.training.vgtae_io import new_vgtae

    p = paths(reference_dir, fam)
    ae = new_vgtae(p["base_model"], p["decoder_config"])  # the fixture's DC-AE folder carries weights
    want = build_base_vision_encoder(p["base_model"], dtype=torch.float32).state_dict()
    for k, v in ae.encoder.state_dict().items():
        torch.testing.assert_close(v, want[k], atol=0, rtol=0, msg=k)
    dec = AutoencoderDC.from_pretrained(str(p["decoder_config"])).decoder.state_dict()
    for k, v in ae.decoder.state_dict().items():
        torch.testing.assert_close(v, dec[k], atol=0, rtol=0, msg=k)
    assert ae.config.encoder_norm is False and ae.training
    for lin in (ae.down_mlp[1], ae.down_blocks[0].mlp[1]):
        w, b = lin.weight.detach(), lin.bias.detach()
        assert abs(float(w.std()) - 0.02) < 0.006 and float(b.abs().max()) == 0.0
    tr = VGTAETrainer(ae, tiny_cfg("1", gan_start=-1))
    loss, m = tr.generator_loss(images(), 0)
    assert float(m["distill_loss"]) == 0.0  # the teacher is the starting encoder itself
    loss.backward()
    assert torch.isfinite(loss) and ae.encoder.training
