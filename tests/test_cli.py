"""The vgt command: inspect, convert (round trip through the loaders), generate, reconstruct, download plan."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vgt_impl import VGTAutoencoder, VGTPipeline
from vgt_impl.cli import main
from vgt_impl.hub import plan


def test_inspect(reference_dir, capsys):
    assert main(["inspect", str(reference_dir / "internvl3" / "ar" / "iter_5000.pth")]) == 0
    out = capsys.readouterr().out
    assert "VGT-AR" in out and "InternVL3" in out and "EMA steps 5000" in out and "llm_layers:       2" in out
    assert main(["inspect", str(reference_dir / "qwen25vl" / "ae" / "vgt_ae_qwen25vl.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "VGT-AE" in out and "Qwen2.5-VL" in out


def test_convert_round_trip(reference_dir, tmp_path):
    r = reference_dir / "internvl3"
    out = tmp_path / "ivl.safetensors"
    assert main(["convert", str(r / "ar" / "iter_5000.pth"), "--out", str(out)]) == 0
    assert out.is_file() and out.with_suffix(".json").is_file()
    kw = dict(base_model=r / "base" / "InternVL3-2B-tiny", ae_base_model=r / "base" / "InternVL3-1B-tiny",
              decoder_config=r / "base" / "dc-ae-f32c32-sana-1.1-diffusers-tiny", dtype=torch.float32)
    a = VGTPipeline.from_pretrained(r / "ar" / "iter_5000.pth", **kw)
    b = VGTPipeline.from_pretrained(out, **kw)
    gen = dict(height=84, width=84, num_flow_steps=3, acc_ratio=3, cfg_scale=2.0)
    x = a.generate(["a cat"], generator=torch.Generator().manual_seed(0), **gen)
    y = b.generate(["a cat"], generator=torch.Generator().manual_seed(0), **gen)
    assert torch.equal(x.latents, y.latents)
    torch.testing.assert_close(x.images, y.images, atol=1e-5, rtol=0)  # same weights; conv kernels may differ in the last bit
    ae_out = tmp_path / "ae.safetensors"
    assert main(["convert", str(r / "ae" / "vgt_ae_internvl3.pth"), "--out", str(ae_out)]) == 0
    ae = VGTAutoencoder.from_pretrained(ae_out, base_model=kw["ae_base_model"], decoder_config=kw["decoder_config"])
    img = torch.rand(1, 3, 56, 56) * 2 - 1
    torch.testing.assert_close(ae.encode(img), b.ae.encode(img), atol=1e-5, rtol=0)


def test_generate_and_reconstruct_write_pngs(reference_dir, tmp_path):
    q = reference_dir / "qwen25vl"
    base = q / "base" / "Qwen2.5-VL-3B-Instruct-tiny"
    dec = q / "base" / "dc-ae-f32c32-sana-1.1-diffusers-tiny"
    converted = tmp_path / "vgt_qwen.safetensors"
    assert main(["convert", str(q / "ar" / "iter_5000.pth"), "--out", str(converted)]) == 0
    args = ["generate", "a red apple", "--ar", str(converted), "--base-model", str(base),
            "--decoder", str(dec), "--size", "112", "--steps", "3", "--acc-ratio", "4", "--seed", "1",
            "--num-images", "2", "--out", str(tmp_path / "gen")]
    assert main(args) == 0
    files = sorted((tmp_path / "gen").glob("*.png"))
    assert len(files) == 2
    with Image.open(files[0]) as img:
        assert img.size == (112, 112)
    Image.new("RGB", (130, 120), (200, 30, 30)).save(tmp_path / "in.png")
    assert main(["reconstruct", str(tmp_path / "in.png"), "--ae", str(q / "ae" / "vgt_ae_qwen25vl.pth"),
                 "--base-model", str(base), "--decoder", str(dec), "--side-by-side", "--out-dir", str(tmp_path)]) == 0
    with Image.open(tmp_path / "in_vgt_recon.png") as img:
        assert img.size == (224, 112)


def test_generate_reports_bad_size(reference_dir, capsys):
    q = reference_dir / "qwen25vl"
    code = main(["generate", "x", "--ar", str(q / "ar" / "iter_5000.pth"), "--base-model",
                 str(q / "base" / "Qwen2.5-VL-3B-Instruct-tiny"), "--size", "100"])
    assert code == 2 and "multiple of 28" in capsys.readouterr().err
    code = main(["generate", "x", "--ar", str(q / "ar" / "iter_5000.pth"), "--base-model",
                 str(q / "base" / "Qwen2.5-VL-3B-Instruct-tiny"), "--size", "112"])  # tiny decoder, built-in config
    assert code == 2 and "decoder config does not match" in capsys.readouterr().err


def test_download_plan_adds_base_folders():
    assert plan(["internvl3-1.6b-sft"]) == ["internvl3-1.6b-sft", "base-internvl3-2b", "base-internvl3-1b"]
    assert plan(["qwen25vl-2b-sft", "vgt-ae"]) == ["qwen25vl-2b-sft", "base-qwen2.5-vl-3b", "vgt-ae", "base-internvl3-1b"]
    with pytest.raises(ValueError, match="unknown model"):
        plan(["sd15"])
