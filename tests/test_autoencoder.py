"""VGT-AE against the reference outputs (both families, fp32) and its input contract."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vgt_impl import VGTAutoencoder
from vgt_impl.backbones import get_family

AE = {"qwen25vl": "Qwen2.5-VL-3B-Instruct-tiny", "internvl3": "InternVL3-1B-tiny"}


@lru_cache(maxsize=4)
def load_ae(root: str, fam: str, ext: str = "pth") -> VGTAutoencoder:
    r = Path(root) / fam
    return VGTAutoencoder.from_pretrained(
        r / "ae" / f"vgt_ae_{fam}.{ext}", base_model=r / "base" / AE[fam],
        decoder_config=r / "base" / "dc-ae-f32c32-sana-1.1-diffusers-tiny", dtype=torch.float32,
    )


@pytest.mark.parametrize("case", ["ae_112px", "ae_140px", "ae_112px_nonneg"])
@pytest.mark.parametrize("fam", list(AE))
def test_encode_decode_match_reference(reference_dir, fam, case):
    t = load_file(str(reference_dir / fam / "cases" / f"{case}.safetensors"))
    ae = load_ae(str(reference_dir), fam)
    z = ae.encode(t["images"], reference_nonneg_quirk=case.endswith("nonneg"))
    assert z.shape == t["latents"].shape and z.dtype == torch.float32
    torch.testing.assert_close(z, t["latents"], atol=1e-4, rtol=0)
    torch.testing.assert_close(ae.decode(t["latents"]), t["recon"], atol=2e-4, rtol=0)
    torch.testing.assert_close(ae.decode(z), t["recon"], atol=2e-4, rtol=0)


@pytest.mark.parametrize("fam", list(AE))
def test_safetensors_checkpoint_equals_pth(reference_dir, fam):
    t = load_file(str(reference_dir / fam / "cases" / "ae_112px.safetensors"))
    z = load_ae(str(reference_dir), fam, "safetensors").encode(t["images"])
    torch.testing.assert_close(z, t["latents"], atol=1e-4, rtol=0)


def test_nonneg_batch_is_normalised_by_default(reference_dir):
    """Without the compatibility flag a [0, 1]-valued batch is still treated as [-1, 1] input."""
    t = load_file(str(reference_dir / "internvl3" / "cases" / "ae_112px_nonneg.safetensors"))
    ae = load_ae(str(reference_dir), "internvl3")
    z = ae.encode(t["images"])
    assert (z - t["latents"]).abs().max() > 1e-2
    torch.testing.assert_close(z, ae.encode(t["images"] * 1.0), atol=0, rtol=0)


def test_internvl_uses_bf16_rounded_constants():
    mean, std = get_family("internvl3").pixel_norm()
    assert mean == tuple(torch.tensor([0.485, 0.456, 0.406]).bfloat16().float().tolist())
    assert std == tuple(torch.tensor([0.229, 0.224, 0.225]).bfloat16().float().tolist())


@pytest.mark.parametrize("shape, match", [
    ((1, 3, 100, 112), r"100x112 is not a multiple of 28: use height 84 or 112"),
    ((1, 3, 112, 20), r"multiple of 28"),
    ((1, 4, 112, 112), r"\[B, 3, H, W\]"),
    ((3, 112, 112), r"\[B, 3, H, W\]"),
])
def test_bad_image_sizes(reference_dir, shape, match):
    with pytest.raises(ValueError, match=match):
        load_ae(str(reference_dir), "qwen25vl").encode(torch.zeros(shape))


def test_decode_rejects_non_vgt_latents(reference_dir):
    with pytest.raises(ValueError, match=r"\[B, 32, h, w\]"):
        load_ae(str(reference_dir), "qwen25vl").decode(torch.zeros(1, 4, 8, 8))  # an SD latent


def test_ae_from_ar_checkpoint_equals_standalone(reference_dir):
    """The VGT-AE embedded in the AR checkpoint is the same network as the released VGT-AE file."""
    r = reference_dir / "qwen25vl"
    ae = VGTAutoencoder.from_pretrained(r / "ar" / "iter_5000.pth", base_model=r / "base" / AE["qwen25vl"],
                                        decoder_config=r / "base" / "dc-ae-f32c32-sana-1.1-diffusers-tiny")
    t = load_file(str(r / "cases" / "ae_112px.safetensors"))
    torch.testing.assert_close(ae.encode(t["images"]), t["latents"], atol=1e-4, rtol=0)


def test_wrong_family_base_model(reference_dir):
    r = reference_dir
    with pytest.raises(ValueError, match="InternVL3 checkpoint but the base model folder .* is Qwen2.5-VL"):
        VGTAutoencoder.from_pretrained(r / "internvl3" / "ae" / "vgt_ae_internvl3.pth",
                                       base_model=r / "qwen25vl" / "base" / AE["qwen25vl"])
