"""Nodes and image helpers at a model's own latent stride (28 for the official models, 32 for Qwen3-VL)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

STUBS = Path(__file__).resolve().parent / "comfy_stubs"
if str(STUBS) not in sys.path:
    sys.path.insert(0, str(STUBS))

from pack_env import DCAE, NODES, PACK, wf  # noqa: E402

pytest_plugins = ["pack_env"]  # the comfy_env / comfy_folders fixtures
images = sys.modules[PACK.__name__ + ".comfyui_vgt.images"]
T = sys.modules[PACK.__name__ + ".comfyui_vgt.types"]


def test_fit_to_stride_32():
    x = torch.rand(1, 3, 130, 150) * 2 - 1
    assert images.fit_to_stride(x, "center_crop", stride=32).shape[-2:] == (128, 128)
    assert images.fit_to_stride(x, "resize", stride=32).shape[-2:] == (128, 160)
    with pytest.raises(ValueError, match=r"needs multiples of 32 \(e.g. 128x128\)"):
        images.fit_to_stride(x, "error", stride=32)
    with pytest.raises(ValueError, match="smaller than one 32x32 token"):
        images.fit_to_stride(torch.zeros(1, 3, 20, 40), "center_crop", stride=32)


@pytest.mark.parametrize("mode, stride", [("center_crop", 28), ("center_crop", 32), ("resize", 28), ("resize", 32)])
def test_fit_to_match_finds_the_encoding(mode, stride):
    """The composite node aligns the original with the edited image however it was fitted."""
    x = torch.rand(2, 3, 130, 150)
    fitted = images.fit_to_stride(x, mode, stride=stride)
    assert torch.equal(images.fit_to_match(x, tuple(fitted.shape[-2:]), mode), fitted)


def test_fit_to_match_refuses_an_outpainted_size():
    x = torch.rand(1, 3, 112, 140)
    with pytest.raises(ValueError, match=r"does not turn into 196x112 px at any token size"):
        images.fit_to_match(x, (112, 196), "center_crop")


def test_latents_record_their_stride():
    z = torch.zeros(1, 32, 2, 2)
    assert T.latent_stride(T.make_latent(z, "qwen3_vl", stride=32)) == 32
    assert T.latent_stride({"samples": z, "vgt": True}) == 28  # latents saved before strides were recorded


def test_nodes_refuse_a_latent_of_another_stride(comfy_env):
    ae = NODES["VGTAELoader"]().load(**dict(wf.AE, decoder_config=DCAE))[0]
    assert ae.stride == 28
    latent = NODES["VGTAEEncode"]().encode(ae, torch.rand(1, 112, 112, 3), "error")[0]
    assert latent["stride"] == 28 and latent["samples"].shape == (1, 32, 4, 4)
    foreign = dict(latent, stride=32)
    with pytest.raises(ValueError, match="samples have 32 px per token but this VGT-AE decodes 28"):
        NODES["VGTAEDecode"]().decode(ae, foreign)
    pad, mask = NODES["VGTOutpaintPad"]().pad(foreign, left=32, top=0, right=0, bottom=64)
    assert pad["samples"].shape == (1, 32, 6, 5) and pad["stride"] == 32 and mask.shape == (1, 192, 160)
    with pytest.raises(ValueError, match="left=28 is not a multiple of 32 pixels"):
        NODES["VGTOutpaintPad"]().pad(foreign, left=28, top=0, right=0, bottom=0)
