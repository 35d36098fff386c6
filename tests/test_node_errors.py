"""Bad inputs through the ComfyUI nodes (stand-ins in tests/comfy_stubs): errors name the node's own inputs
(parallel_tokens, not acc_ratio), come before anything is loaded or sampled, and NaN (which ComfyUI's min/max checks let
through an API prompt) never reaches the model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

STUBS = Path(__file__).resolve().parent / "comfy_stubs"
if str(STUBS) not in sys.path:
    sys.path.insert(0, str(STUBS))

import comfy.model_management as mm  # noqa: E402
from pack_env import DCAE, NODES, wf  # noqa: E402

pytest_plugins = ["pack_env"]  # the comfy_env / comfy_folders fixtures

NAN = float("nan")


@pytest.fixture()
def loaded(comfy_env):
    model, ae = NODES["VGTModelLoader"]().load(**dict(wf.MODEL, decoder_config=DCAE))
    (pos,) = NODES["VGTTextEncode"]().encode(model, "a red apple")
    mm.loaded.clear()
    return model, ae, pos


def _sampler_args(**kw):
    args = dict(wf.SAMPLING, width=56, height=56, batch_size=1, steps=2, preview=False)
    args.update(kw)
    return args


@pytest.mark.parametrize("kw, error, match", [
    (dict(cfg=NAN), ValueError, r"^cfg=nan is not a finite number"),
    (dict(cfg=0.5), ValueError, r"^cfg=0.5 is out of range"),
    (dict(parallel_tokens=0), ValueError, r"^parallel_tokens=0 is out of range"),  # was "acc_ratio=0 ..."
    (dict(parallel_tokens=2.5), TypeError, r"^parallel_tokens must be an integer"),
    (dict(steps=1), ValueError, r"^steps=1: at least 2 flow steps"),  # was num_flow_steps
    (dict(batch_size=0), ValueError, r"^batch_size=0 is out of range"),  # was num_images_per_prompt
    (dict(seed=-1), ValueError, r"^seed=-1 is out of range"),
    (dict(width=0), ValueError, r"^width=0 is too small: at least 28 px"),
    (dict(height=500), ValueError, r"^height=500 is not a multiple of 28: use 476 or 504"),
    (dict(cfg_schedule="cosine"), ValueError, r"^cfg_schedule='cosine': expected one of linear, constant"),
])
def test_sampler_inputs_are_named_as_on_the_node(loaded, kw, error, match):
    model, _, pos = loaded
    with pytest.raises(error, match=match):
        NODES["VGTQueryARSampler"]().sample(model, pos, **_sampler_args(**kw))
    assert mm.loaded == []  # nothing was moved to the GPU


def test_editing_nodes_check_their_inputs(loaded):
    model, ae, pos = loaded
    latent = NODES["VGTAEEncode"]().encode(ae, torch.rand(1, 56, 56, 3), "error")[0]
    mm.loaded.clear()
    args = dict(wf.SAMPLING, steps=2, mask_rule="threshold", grow_tokens=0)
    inpaint = NODES["VGTInpaint"]().inpaint
    with pytest.raises(ValueError, match=r"^threshold=nan is not a finite number"):  # was: no token, silently
        inpaint(model, pos, latent, torch.ones(1, 56, 56), threshold=NAN, **args)
    with pytest.raises(ValueError, match=r"^grow_tokens=-1 is out of range"):
        inpaint(model, pos, latent, torch.ones(1, 56, 56), threshold=0.5, **dict(args, grow_tokens=-1))
    with pytest.raises(ValueError, match=r"^mask contains non-finite values"):
        inpaint(model, pos, latent, torch.full((1, 56, 56), NAN), threshold=0.5, **args)
    with pytest.raises(ValueError, match=r"^mask has values in \[255, 255\] but must be in \[0, 1\]"):
        inpaint(model, pos, latent, torch.full((1, 56, 56), 255.0), threshold=0.5, **args)
    with pytest.raises(ValueError, match=r"^mask is empty"):
        inpaint(model, pos, latent, torch.zeros(1, 0, 0), threshold=0.5, **args)
    with pytest.raises(ValueError, match=r"^strength=nan is not a finite number"):
        NODES["VGTVariation"]().vary(model, pos, latent, NAN, **dict(wf.SAMPLING, steps=2))
    with pytest.raises(ValueError, match=r"^parallel_tokens=0 is out of range"):
        NODES["VGTVariation"]().vary(model, pos, latent, 0.5, **dict(wf.SAMPLING, steps=2, parallel_tokens=0))
    assert mm.loaded == []


def test_outpaint_and_composite_inputs(comfy_folders):
    latent = {"samples": torch.randn(1, 32, 2, 2), "vgt": True, "family": "qwen2_5_vl"}
    with pytest.raises(ValueError, match=r"^left=-28 is out of range: expected a value >= 0 \(pixels\)"):
        NODES["VGTOutpaintPad"]().pad(latent, -28, 0, 0, 0)  # was reported in tokens (-1)
    comp = NODES["VGTComposite"]().composite
    img = torch.rand(1, 56, 56, 3)
    with pytest.raises(ValueError, match=r"^mask batch 3 does not match the 1 edited images"):
        comp(img, img, torch.zeros(3, 56, 56), 0, "error")
    with pytest.raises(TypeError, match=r"^feather must be an integer, got 2.5"):
        comp(img, img, torch.zeros(1, 56, 56), 2.5, "error")
    with pytest.raises(ValueError, match=r"^edited contains non-finite values"):
        comp(torch.full((1, 56, 56, 3), NAN), img, torch.zeros(1, 56, 56), 0, "error")
    with pytest.raises(ValueError, match=r"^original has values in \[255, 255\]"):
        comp(img, torch.full((1, 56, 56, 3), 255.0), torch.zeros(1, 56, 56), 0, "error")


def test_vgt_ae_nodes_check_images_and_latents(loaded):
    _, ae, _ = loaded
    enc = NODES["VGTAEEncode"]().encode
    with pytest.raises(ValueError, match=r"^image contains non-finite values"):
        enc(ae, torch.full((1, 56, 56, 3), NAN), "error")
    with pytest.raises(ValueError, match=r"^image has values in \[255, 255\] .*a ComfyUI IMAGE holds 0..1"):
        enc(ae, torch.full((1, 56, 56, 3), 255.0), "error")  # used to encode into plausible but wrong latents
    with pytest.raises(ValueError, match=r"^image is empty"):
        enc(ae, torch.zeros(0, 56, 56, 3), "error")
    bad = {"samples": torch.full((1, 32, 2, 2), float("inf")), "vgt": True, "family": "qwen2_5_vl"}
    with pytest.raises(ValueError, match=r"^samples contains non-finite values"):
        NODES["VGTAEDecode"]().decode(ae, bad)
    assert mm.loaded == []


def test_text_encode_names_text_for_long_prompts(loaded):
    model, _, _ = loaded
    with pytest.raises(ValueError, match=r"^text is \d+ tokens after templating, more than the 256"):
        NODES["VGTTextEncode"]().encode(model, "a cat " * 5000)


def _link(comfy_env, reference_dir, rel_dst, src):
    dst = comfy_env / "models" / "vgt" / rel_dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src)


def test_loader_errors_name_the_wrong_input(comfy_env, reference_dir, monkeypatch):
    """Picking the InternVL3 VGT-AE for a Qwen model used to say 'pick the matching base model'."""
    import vgt_impl.loading as loading

    monkeypatch.setattr(loading, "VGTARModel", lambda *a, **k: pytest.fail("a network was built before the check"))
    r = reference_dir / "internvl3"
    _link(comfy_env, reference_dir, "vgt_ae/vgt_ae_internvl3.pth", r / "ae" / "vgt_ae_internvl3.pth")
    _link(comfy_env, reference_dir, "base/InternVL3-1B", r / "base" / "InternVL3-1B-tiny")
    load = NODES["VGTModelLoader"]().load
    with pytest.raises(ValueError, match=r"^vgt_ae: vgt_ae/vgt_ae_internvl3.pth is the InternVL3 VGT-AE but "
                                         r"ar_checkpoint is a VGT-Qwen2.5-VL model: pick the Qwen2.5-VL VGT-AE"):
        load(**dict(wf.MODEL, vgt_ae="vgt_ae/vgt_ae_internvl3.pth"))
    with pytest.raises(ValueError, match=r"^ar_checkpoint: vgt_ae/vgt_ae_qwen25vl.pth is a VGT-AE checkpoint"):
        load(**dict(wf.MODEL, ar_checkpoint="vgt_ae/vgt_ae_qwen25vl.pth"))
    with pytest.raises(ValueError, match=r"^base_model: InternVL3-1B is InternVL3 but ar_checkpoint .* is a "
                                         r"VGT-Qwen2.5-VL model"):
        load(**dict(wf.MODEL, base_model="InternVL3-1B"))
    with pytest.raises(ValueError, match=r"^ae_base_model: InternVL3-1B is InternVL3 but the VGT-AE is Qwen2.5-VL"):
        load(**dict(wf.MODEL, ae_base_model="InternVL3-1B"))
    ae_load = NODES["VGTAELoader"]().load
    with pytest.raises(ValueError, match=r"^base_model: Qwen2.5-VL-3B-Instruct is Qwen2.5-VL but vgt_ae "
                                         r"vgt_ae/vgt_ae_internvl3.pth is the InternVL3 VGT-AE: pick InternVL3-1B"):
        ae_load(**dict(wf.AE, vgt_ae="vgt_ae/vgt_ae_internvl3.pth"))


def test_upper_case_checkpoint_names_listed_and_loaded(comfy_env, reference_dir):
    """ComfyUI lists VGT_AE.PTH (case-insensitive extensions); loading it used to be refused."""
    _link(comfy_env, reference_dir, "upper/VGT_AE.PTH", reference_dir / "qwen25vl" / "ae" / "vgt_ae_qwen25vl.pth")
    assert "upper/VGT_AE.PTH" in NODES["VGTAELoader"].INPUT_TYPES()["required"]["vgt_ae"][0]
    (ae,) = NODES["VGTAELoader"]().load(**dict(wf.AE, vgt_ae="upper/VGT_AE.PTH", decoder_config=DCAE))
    assert ae.family == "qwen2_5_vl"


def test_cli_and_node_default_acc_ratio_agree(comfy_folders):
    from vgt_impl.cli import DEFAULT_ACC_RATIO, build_parser

    node_default = NODES["VGTQueryARSampler"].INPUT_TYPES()["required"]["parallel_tokens"][1]["default"]
    assert build_parser().parse_args(["generate", "x", "--ar", "a", "--base-model", "b"]).acc_ratio is None  # the model's
    assert DEFAULT_ACC_RATIO == node_default  # a model that records none (the VGT releases): the same in both


def test_editing_beyond_the_query_grid_names_the_samples(loaded):
    """The editing nodes have no width/height input: the error speaks of the samples (e.g. after Outpaint Pad)."""
    model, ae, pos = loaded
    latent = NODES["VGTAEEncode"]().encode(ae, torch.rand(1, 56, 56, 3), "error")[0]
    padded, mask = NODES["VGTOutpaintPad"]().pad(latent, 28 * 8, 0, 0, 0)  # 2 + 8 > the tiny model's 8 tokens
    with pytest.raises(ValueError, match=r"^samples are 2x10 tokens \(56x280 px\) but the model's query grid is at "
                                         r"most 8x8 tokens"):
        NODES["VGTInpaint"]().inpaint(model, pos, padded, mask, mask_rule="any", threshold=0.5, grow_tokens=0,
                                      **dict(wf.SAMPLING, steps=2))
