"""`ae` and `dcae` tasks through the training loop: phases, learning rates, resume, exports that the loaders open."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vgt_impl import VGTAutoencoder
from vgt_impl.training import Trainer, load_run_config
from vgt_impl.training.ae_tasks import AETask

FIX = {"internvl3": ("InternVL3-1B-tiny", "vgt_ae_internvl3.pth"),
       "qwen25vl": ("Qwen2.5-VL-3B-Instruct-tiny", "vgt_ae_qwen25vl.pth")}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Six smooth 64x64 colour fields with captions (the loaders' folder layout)."""
    from PIL import Image

    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(6):
        a = (rng.random((3, 3, 3)) * 255).astype(np.uint8)
        Image.fromarray(a).resize((64, 64), Image.BILINEAR).save(d / f"{i}.png")
        (d / f"{i}.txt").write_text(f"image {i}")
    return d


def ae_config(root: Path, fam: str, images: Path, out: Path, *extra: str):
    base, ckpt = FIX[fam]
    r = root / fam
    return load_run_config("ae_tiny", [
        f"data.source=[{images}]", f"model.checkpoint={r / 'ae' / ckpt}", f"model.base_model={r / 'base' / base}",
        f"model.decoder_config={r / 'base' / 'dc-ae-f32c32-sana-1.1-diffusers-tiny'}", f"loop.output_dir={out}",
        *extra], task="ae")


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_ae_task_phases_learning_rates_and_export(reference_dir, image_folder, tmp_path):
    cfg = ae_config(reference_dir, "internvl3", image_folder, tmp_path / "run", "loop.sample_every=4")
    trainer = Trainer(cfg)
    groups = {g["name"]: g for g in trainer.optimizers["generator"].param_groups}
    assert {g["lr_scale"] for n, g in groups.items() if n.startswith("encoder/")} == {0.5}
    assert {g["lr_scale"] for n, g in groups.items() if n.startswith("ae/")} == {1.0}
    assert cfg.optim["discriminator"].start_step == 2  # follows model.loss.gan.start_step
    out = trainer.train()
    rows = metrics(tmp_path / "run")
    assert [("loss/disc" in r, "loss/gan" in r) for r in rows] == [(False, False)] * 2 + [(True, True)] * 2
    assert all(r["loss"] > 0 and r["loss/distill"] > 0 for r in rows)
    assert (tmp_path / "run" / "samples" / "step_0000004.png").is_file()
    # the export: EMA weights, stage-1 config (no latent LayerNorm), the teacher beside it, its own base folder
    loaded = VGTAutoencoder.from_pretrained(out / "model.safetensors", base_model=out)
    assert loaded.config.encoder_norm is False and (out / "teacher.safetensors").is_file()
    shadow = trainer.ema.shadow["ae.down_mlp.1.weight"]
    saved = load_file(str(out / "model.safetensors"))["down_mlp.1.weight"]  # in the loop's export dtype
    torch.testing.assert_close(saved, shadow.to(saved.dtype), atol=0, rtol=0)
    torch.testing.assert_close(loaded.down_mlp[1].weight, saved.float(), atol=0, rtol=0)
    assert not torch.equal(shadow, trainer.task.ae.down_mlp[1].weight.detach())  # EMA, not the raw weights
    x = torch.rand(1, 3, 56, 56) * 2 - 1
    assert loaded.decode(loaded.encode(x)).shape == (1, 3, 56, 56)


def test_ae_task_resume_continues_exactly(reference_dir, image_folder, tmp_path):
    """Step 2 after a resume at 1 equals an uninterrupted run: both phases, LeCam EMAs, latent-noise draws."""
    common = ("loop.max_steps=2", "model.stage=2", "model.encoder_norm=true", "model.noise_gamma=0.1",
              "model.loss.gan.start_step=0", "loop.ema.start_step=0", "optim.generator.warmup_start_factor=0.5",
              "optim.discriminator.warmup_start_factor=0.5")
    straight = Trainer(ae_config(reference_dir, "internvl3", image_folder, tmp_path / "a", *common))
    straight.train()
    first = Trainer(ae_config(reference_dir, "internvl3", image_folder, tmp_path / "b", *common,
                              "loop.max_steps=1"))
    first.train()
    resumed = Trainer(ae_config(reference_dir, "internvl3", image_folder, tmp_path / "b", *common))
    assert resumed.step == 1
    resumed.train()
    a, b = straight.task.state_dict(), resumed.task.state_dict()
    for k in a:
        if k.startswith(("ae.", "discriminator.", "lecam.")):
            torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=k)
    assert metrics(tmp_path / "a")[-1]["loss"] == pytest.approx(metrics(tmp_path / "b")[-1]["loss"], abs=1e-6)


def test_official_qwen_checkpoint_continues_as_stage2(reference_dir, image_folder, tmp_path):
    cfg = ae_config(reference_dir, "qwen25vl", image_folder, tmp_path / "q", "loop.max_steps=2", "model.stage=2",
                    "model.encoder_norm=true", "model.noise_gamma=0.1", "model.loss.distill_weight=0.1",
                    "model.loss.gan.start_step=-1", "model.export_teacher=false")
    assert list(cfg.optim) == ["generator", "discriminator"]
    trainer = Trainer(cfg)
    assert trainer.phase_names == ["generator"]  # GAN off: one phase
    out = trainer.train()
    assert all(np.isfinite(r["loss"]) for r in metrics(tmp_path / "q"))
    loaded = VGTAutoencoder.from_pretrained(out / "model.safetensors", base_model=out)
    assert loaded.config.encoder_norm is True and loaded.family == "qwen2_5_vl"
    assert not (out / "teacher.safetensors").exists()
    z = loaded.encode(torch.rand(1, 3, 56, 56) * 2 - 1)
    torch.testing.assert_close(z.mean(1), torch.zeros(1, 2, 2), atol=1e-5, rtol=0)  # per-token LayerNorm


def test_ae_task_config_errors(reference_dir, image_folder, tmp_path):
    cfg = ae_config(reference_dir, "internvl3", image_folder, tmp_path / "e")
    del cfg.optim["discriminator"]
    with pytest.raises(ValueError, match="no optim.discriminator"):
        Trainer(cfg)
    with pytest.raises(ValueError, match="needs model.checkpoint"):
        AETask.build(load_run_config("ae_tiny", ["model.checkpoint=null"], task="ae"))
    with pytest.raises(ValueError, match="init=base"):
        AETask.build(load_run_config("ae_stage1", [], task="ae"))
    from vgt_impl.training.ae_bench import DECODERS
    from vgt_impl.training.dcae import build_dcae, export_dcae

    export_dcae(build_dcae(dict(DECODERS["tiny"], latent_channels=16)), tmp_path / "dcae16")
    with pytest.raises(ValueError, match="16 latent channels; a VGT-AE decoder takes 32"):
        AETask.build(load_run_config("ae_tiny", ["model.init=base", f"model.base_model={tmp_path}",
                                                 f"model.dcae={tmp_path / 'dcae16'}"], task="ae"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        AETask.build(load_run_config("ae_tiny", [f"model.checkpoint={tmp_path / 'nope.pth'}"], task="ae"))
    with pytest.raises(ValueError, match="unknown config key 'model.loss.gan.strat_step'"):
        load_run_config("ae_tiny", ["model.loss.gan.strat_step=3"], task="ae")


def test_dcae_task_learns_and_exports_a_diffusers_folder(image_folder, tmp_path):
    from diffusers import AutoencoderDC

    from vgt_impl.autoencoder import load_decoder_config

    cfg = load_run_config("dcae_tiny", [f"data.source=[{image_folder}]", f"loop.output_dir={tmp_path / 'd'}",
                                        "loop.max_steps=8", "optim.generator.lr=3e-3"], task="dcae")
    trainer = Trainer(cfg)
    batch = trainer.task.collate([trainer.dataset[k] for k in trainer.data_loader(0).batch_sampler.keys(0, 0)])
    assert batch["pixels"].shape == (2, 3, 32, 32)  # random 32 px crops of the 56 px images
    out = trainer.train()
    rows = metrics(tmp_path / "d")
    assert np.mean([r["loss/rec"] for r in rows[-2:]]) < 0.6 * np.mean([r["loss/rec"] for r in rows[:2]]), rows
    dcae = AutoencoderDC.from_pretrained(str(out))
    saved = load_file(str(out / "diffusion_pytorch_model.safetensors"))["decoder.conv_out.weight"]
    torch.testing.assert_close(saved, trainer.ema.shadow["dcae.decoder.conv_out.weight"].to(saved.dtype), atol=0, rtol=0)
    torch.testing.assert_close(dcae.decoder.conv_out.weight.float(), saved.float(), atol=0, rtol=0)
    assert load_decoder_config(out)["decoder_block_out_channels"] == [8, 16, 32]  # what a new VGT-AE reads


def test_dcae_latent_norm_trains_on_layernormed_latents_and_every_reader_follows(image_folder, tmp_path):
    """model.latent_norm: the decoder sees per-position LayerNormed latents; the export says so (vgt_dcae.json) and
    the DC-AE codec of the ceiling / VAE baseline encodes the same way, already normalised (no global shift / scale)."""
    from vgt_impl.demo.convergence import load_dcae_latents
    from vgt_impl.training.dcae import INFO_FILE, dcae_latent_norm

    cfg = load_run_config("dcae_tiny", [f"data.source=[{image_folder}]", f"loop.output_dir={tmp_path / 'd'}",
                                        "loop.max_steps=2", "model.latent_norm=true"], task="dcae")
    trainer = Trainer(cfg)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z = trainer.task.reconstruct(images)["latents"]  # [2, C, h, w]
    torch.testing.assert_close(z.mean(1), torch.zeros_like(z[:, 0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(1, unbiased=False), torch.ones_like(z[:, 0]), atol=1e-3, rtol=0)
    raw = trainer.task.dcae.encode(images).latent
    assert raw.var(1, unbiased=False).sub(1).abs().max() > 1e-2  # the raw encoder output is not normalised already
    out = trainer.train()
    assert json.loads((out / INFO_FILE).read_text()) == {"latent_norm": True} and dcae_latent_norm(out)
    codec = load_dcae_latents(out, torch.rand(2, 3, 224, 224) * 2 - 1)
    assert codec.latent_norm and (codec.shift, codec.scale) == (0.0, 1.0)
    zc = codec.encode(torch.rand(1, 3, 56, 56) * 2 - 1)
    torch.testing.assert_close(zc.var(1, unbiased=False), torch.ones_like(zc[:, 0]), atol=1e-3, rtol=0)
    # without the option: no normalisation, and the export says so
    plain = load_run_config("dcae_tiny", [f"data.source=[{image_folder}]", f"loop.output_dir={tmp_path / 'p'}",
                                          "loop.max_steps=1"], task="dcae")
    out_plain = Trainer(plain).train()
    assert not dcae_latent_norm(out_plain) and not load_dcae_latents(out_plain, shift=0.0, scale=1.0).latent_norm
    (out_plain / INFO_FILE).write_text('{"latent_norm": "yes"}')
    with pytest.raises(ValueError, match="latent_norm must be true or false"):
        dcae_latent_norm(out_plain)


QWEN3_TINY = {  # a tiny Qwen3-VL (patch 14: 28 px per latent token)
    "model_type": "qwen3_vl", "tie_word_embeddings": True,
    "text_config": {"model_type": "qwen3_vl_text", "vocab_size": 320, "hidden_size": 32, "intermediate_size": 64,
                    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
                    "rope_theta": 5000000.0, "max_position_embeddings": 4096, "tie_word_embeddings": True,
                    "rope_scaling": {"mrope_interleaved": True, "mrope_section": [2, 1, 1], "rope_type": "default"}},
    "vision_config": {"model_type": "qwen3_vl", "depth": 2, "hidden_size": 16, "intermediate_size": 32,
                      "num_heads": 2, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                      "out_hidden_size": 32, "num_position_embeddings": 256, "deepstack_visual_indexes": [1]},
}


def test_new_qwen3_vl_vgtae_from_base_and_dcae_folders(image_folder, tmp_path):
    """`vgt train ae` with model.init=base on a third family: base VLM folder + a DC-AE folder -> trained export."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from vgt_impl.training.ae_bench import DECODERS
    from vgt_impl.training.dcae import build_dcae, export_dcae

    torch.manual_seed(0)
    Qwen3VLForConditionalGeneration(Qwen3VLConfig.from_dict(QWEN3_TINY)).save_pretrained(tmp_path / "base")
    export_dcae(build_dcae(DECODERS["tiny"]), tmp_path / "dcae")
    cfg = load_run_config("ae_tiny", [
        f"data.source=[{image_folder}]", f"loop.output_dir={tmp_path / 'run'}", "loop.max_steps=2", "model.init=base",
        f"model.base_model={tmp_path / 'base'}", f"model.dcae={tmp_path / 'dcae'}", "model.loss.gan.start_step=1"],
        task="ae")
    out = Trainer(cfg).train()
    assert all(np.isfinite(r["loss"]) for r in metrics(tmp_path / "run"))
    loaded = VGTAutoencoder.from_pretrained(out / "model.safetensors", base_model=out)
    assert loaded.family == "qwen3_vl" and loaded.stride == 28
    assert loaded.decode(loaded.encode(torch.rand(1, 3, 56, 56) * 2 - 1)).shape == (1, 3, 56, 56)


def test_gradient_checkpointing_recomputes_the_vision_blocks(reference_dir):
    import copy

    from vgt_impl.training.ae_tasks import AETaskConfig
    from vgt_impl.training.vgtae_io import vgtae_from_checkpoint

    base, ckpt = FIX["internvl3"]
    r = reference_dir / "internvl3"
    ae, teacher = vgtae_from_checkpoint(r / "ae" / ckpt, base_model=r / "base" / base,
                                        decoder_config=r / "base" / "dc-ae-f32c32-sana-1.1-diffusers-tiny")
    cfg = AETaskConfig()
    cfg.loss.gan.start_step = -1
    x = torch.rand(2, 3, 28, 28) * 2 - 1
    grads, calls = [], []
    for ckpt_on in (False, True):
        task = AETask(cfg, copy.deepcopy(ae), teacher=teacher)
        if ckpt_on:
            task.enable_gradient_checkpointing()
        n = [0]
        task.ae.encoder.vision_tower.encoder.layer[0].attention.register_forward_hook(lambda *a: n.__setitem__(0, n[0] + 1))
        loss, _ = task.generator_loss(x, 0)
        loss.backward()
        calls.append(n[0])
        grads.append(task.ae.encoder.vision_tower.encoder.layer[0].attention.q_proj.weight.grad)
    assert calls == [1, 2]  # the student's block runs again in backward (the teacher's copy has its own module)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-7, rtol=0)


def test_presets_resolve_the_reference_stages(capsys):
    import yaml

    from vgt_impl.cli import main

    assert main(["train", "ae", "--config", "ae_stage2", "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    m, g, d = cfg["model"], cfg["optim"]["generator"], cfg["optim"]["discriminator"]
    assert (m["stage"], m["init"], m["encoder_norm"], m["noise_gamma"], m["encoder_lr_mult"]) == ("2", "checkpoint", True,
                                                                                              0.1, 0.5)
    assert (m["loss"]["distill_weight"], m["loss"]["perceptual_weight"], m["loss"]["gan"]["start_step"]) == (0.1, 1.1, 10000)
    assert (g["lr"], g["min_lr"], g["weight_decay"], g["warmup_steps"], tuple(g["betas"])) == (1e-4, 1e-5, 1e-4, 3000,
                                                                                               (0.9, 0.95))
    assert d["lr"] == 1e-4 and cfg["loop"]["max_steps"] == 100000 and cfg["loop"]["batch_size"] * 8 == 128
    assert main(["train", "ae", "--config", "ae_paper", "--print-config"]) == 0
    paper = yaml.safe_load(capsys.readouterr().out)["model"]
    assert not paper["train_encoder"] and paper["loss"]["gan"]["start_step"] == -1
    assert paper["loss"]["perceptual"]["logits_weight"] == 0.0 and paper["loss"]["distill_weight"] == 0.0


def test_cli_train_dcae_and_bench_train(image_folder, tmp_path, capsys):
    from vgt_impl.cli import main

    assert main(["train", "dcae", "--config", "dcae_tiny", f"data.source=[{image_folder}]", "loop.max_steps=2",
                 f"loop.output_dir={tmp_path / 'c'}"]) == 0
    assert "model folder" in capsys.readouterr().out
    assert (tmp_path / "c" / "models" / "step_0000002" / "diffusion_pytorch_model.safetensors").is_file()
    assert main(["bench-train", "--task", "dcae", "--random", "tiny", "--size", "32", "--batch", "1", "--steps", "1",
                 "--settings", "mse"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("dcae train step") and "samples/s" in lines[1] and len(lines) == 2
    assert main(["bench-train", "--task", "ae", "--random", "tiny", "--size", "28", "--batch", "1", "--steps", "1",
                 "--settings", "stage1"]) == 0
    assert "VGT-AE tiny stage 1" in capsys.readouterr().out
    assert main(["bench-train", "--task", "ae", "--random", "tiny", "--size", "28", "--settings", "stage3"]) == 2
    assert "stage1|stage2|paper" in capsys.readouterr().err
