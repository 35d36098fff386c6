"""The ComfyUI nodes without a ComfyUI install (stand-ins in tests/comfy_stubs): contract, workflows, cancel, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
STUBS = Path(__file__).resolve().parent / "comfy_stubs"
if str(STUBS) not in sys.path:
    sys.path.insert(0, str(STUBS))

import comfy.model_management as mm  # noqa: E402
import comfy.utils  # noqa: E402
import folder_paths  # noqa: E402

sys.path.insert(0, str(ROOT / "workflows"))
import build as wf  # noqa: E402

PACK = wf.pack()
NODES = PACK.NODE_CLASS_MAPPINGS
WORKFLOWS = sorted(p for p in (ROOT / "workflows").glob("*.json") if not p.name.endswith(".api.json"))
TINY = {"width": 112, "height": 112, "steps": 2, "left": 28, "right": 28, "decoder_config": "dc-ae-f32c32-sana-1.1-diffusers"}


@pytest.fixture()
def comfy_env(tmp_path, reference_dir):
    """A ComfyUI-like base dir: models/vgt with the tiny reference models under the official names."""
    vgt = tmp_path / "models" / "vgt"
    q = reference_dir / "qwen25vl"
    links = {
        vgt / "vgt_qwen25vl_2B_sft" / "iter_5000.pth": q / "ar" / "iter_5000.pth",
        vgt / "vgt_ae" / "vgt_ae_qwen25vl.pth": q / "ae" / "vgt_ae_qwen25vl.pth",
        vgt / "base" / "Qwen2.5-VL-3B-Instruct": q / "base" / "Qwen2.5-VL-3B-Instruct-tiny",
        vgt / "base" / "dc-ae-f32c32-sana-1.1-diffusers": q / "base" / "dc-ae-f32c32-sana-1.1-diffusers-tiny",
    }
    for dst, src in links.items():
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(src)
    (tmp_path / "input").mkdir()
    rgba = np.random.default_rng(0).integers(0, 255, (126, 140, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[28:84, 28:84, 3] = 0  # transparent square = the mask-editor mask
    Image.fromarray(rgba, "RGBA").save(tmp_path / "input" / "example.png")
    old = dict(folder_paths.folder_names_and_paths)
    folder_paths.folder_names_and_paths["vgt"] = ([str(vgt)], {".pth", ".safetensors"})
    folder_paths.base_path = str(tmp_path)
    yield tmp_path
    folder_paths.folder_names_and_paths.clear()
    folder_paths.folder_names_and_paths.update(old)
    mm.interrupt_processing = False
    comfy.utils.PROGRESS_BAR_HOOK = None


# ------------------------------------------------------------------------------------------------------ contract
@pytest.mark.parametrize("name", sorted(NODES))
def test_node_contract(name, comfy_env):
    cls = NODES[name]
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"} and spec["required"]
    for section in ("required", "optional"):
        for inp, s in spec.get(section, {}).items():
            assert isinstance(s, tuple) and 1 <= len(s) <= 2, inp
            assert isinstance(s[0], (str, list)), inp
            assert len(s) == 2 and s[1].get("tooltip"), f"{name}.{inp} has no tooltip"
    assert isinstance(cls.RETURN_TYPES, tuple) and len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
    assert callable(getattr(cls(), cls.FUNCTION))
    assert cls.CATEGORY == "VGT" and len(cls.DESCRIPTION) > 30
    assert name in PACK.NODE_DISPLAY_NAME_MAPPINGS


# ------------------------------------------------------------------------------------------------------ workflows
def _check_widget(node_type, name, spec, value):
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    if isinstance(kind, list):
        assert value in kind, f"{node_type}.{name}: {value!r} not in {kind}"
    elif kind == "INT":
        assert isinstance(value, int) and opts.get("min", -2**63) <= value <= opts.get("max", 2**64), (node_type, name)
        assert (value - opts.get("min", 0)) % opts.get("step", 1) == 0 or opts.get("step", 1) == 1, (node_type, name)
    elif kind == "FLOAT":
        assert isinstance(value, (int, float)) and opts.get("min", -1e30) <= value <= opts.get("max", 1e30)
    elif kind == "BOOLEAN":
        assert isinstance(value, bool)
    elif kind in ("STRING", "FILE"):
        assert isinstance(value, str)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_ui_workflow_is_valid(path, comfy_env):
    specs = wf.node_specs()
    ui = json.loads(path.read_text())
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert ui["version"] == 0.4 and ui["last_node_id"] == max(nodes)
    for n in ui["nodes"]:
        assert n["type"] in specs, f"unknown node type {n['type']}"
        spec = specs[n["type"]]
        values = list(n["widgets_values"])
        for name, s, _ in wf.ordered_inputs(spec):
            if not wf.is_widget(s):
                continue
            _check_widget(n["type"], name, s, values.pop(0))
            if len(s) > 1 and s[1].get("control_after_generate"):
                assert values.pop(0) in ("fixed", "increment", "decrement", "randomize")
            if s[0] == "FILE":
                assert values.pop(0) == "image"
        assert not values, f"{n['type']}: extra widget values {values}"
        for inp in n["inputs"]:
            declared = dict((nm, s) for nm, s, _ in wf.ordered_inputs(spec))
            assert inp["name"] in declared and declared[inp["name"]][0] == inp["type"]
    for lid, src, slot, dst, dslot, typ in ui["links"]:
        out = nodes[src]["outputs"][slot]
        inp = nodes[dst]["inputs"][dslot]
        assert out["type"] == inp["type"] == typ, f"link {lid}: {out['type']} -> {inp['type']}"
        assert lid in out["links"] and inp["link"] == lid


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_api_workflow_matches_ui(path, comfy_env):
    specs = wf.node_specs()
    api = json.loads(path.with_name(path.stem + ".api.json").read_text())
    for nid, n in api.items():
        spec = specs[n["class_type"]]
        declared = {nm: s for nm, s, _ in wf.ordered_inputs(spec)}
        required = {nm for nm, s, req in wf.ordered_inputs(spec) if req}
        assert required <= set(n["inputs"]), f"node {nid} misses {required - set(n['inputs'])}"
        for name, value in n["inputs"].items():
            s = declared[name]
            if isinstance(value, list):
                src = api[value[0]]
                assert specs[src["class_type"]]["output"][value[1]] == s[0], f"node {nid}.{name}: type mismatch"
            else:
                _check_widget(n["class_type"], name, s, value)


# ------------------------------------------------------------------------------------------------------ execution
def _load_image(image):
    img = Image.open(Path(folder_paths.get_input_directory()) / image)
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    mask = 1.0 - np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr)[None], torch.from_numpy(mask)[None]


def _stitch(image1, direction, match_image_size, spacing_width, spacing_color, image2=None):
    h = max(image1.shape[1], image2.shape[1])
    pad = lambda x: torch.nn.functional.pad(x, (0, 0, 0, 0, 0, h - x.shape[1]))  # noqa: E731
    return (torch.cat([pad(image1), pad(image2)], dim=2),)


CORE_IMPL = {
    "LoadImage": lambda image: _load_image(image),
    "SaveImage": lambda images, filename_prefix: {"saved": images},
    "ImageStitch": _stitch,
}


def execute(api: dict, overrides: dict | None = None) -> dict:
    """Run an API-format workflow through the node classes (a tiny topological executor)."""
    results: dict[str, tuple] = {}

    def run(nid):
        if nid in results:
            return results[nid]
        node = api[nid]
        kwargs = {}
        for name, value in node["inputs"].items():
            kwargs[name] = run(value[0])[value[1]] if isinstance(value, list) else (overrides or {}).get(name, value)
        if node["class_type"] in NODES:
            obj = NODES[node["class_type"]]()
            results[nid] = getattr(obj, obj.FUNCTION)(**kwargs)
        else:
            results[nid] = CORE_IMPL[node["class_type"]](**kwargs)
        return results[nid]

    for nid in api:
        run(nid)
    return results


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs_on_tiny_model(path, comfy_env):
    api = json.loads(path.with_name(path.stem + ".api.json").read_text())
    out = execute(api, TINY)
    saved = [r["saved"] for r in out.values() if isinstance(r, dict) and "saved" in r]
    assert saved, "the workflow saves no image"
    for images in saved:
        assert images.ndim == 4 and images.shape[-1] == 3 and images.dtype == torch.float32
        assert images.min() >= 0 and images.max() <= 1 and torch.isfinite(images).all()
        assert images.shape[1] >= 112  # stitched with the original (126 px) where the workflow shows it
    for nid, node in api.items():
        if node["class_type"] == "VGTAEDecode":
            assert out[nid][0].shape[1:3] in ((112, 112), (112, 140), (112, 196))


# ------------------------------------------------------------------------------------------------------ behaviour
def _model(comfy_env):
    loader = NODES["VGTModelLoader"]()
    args = dict(wf.MODEL, decoder_config="dc-ae-f32c32-sana-1.1-diffusers")
    model, ae = loader.load(**args)
    (pos,) = NODES["VGTTextEncode"]().encode(model, "a red apple")
    return model, ae, pos


def _sample(model, pos, **kw):
    args = dict(wf.SAMPLING, width=112, height=112, batch_size=1, steps=2, preview=True)
    args.update(kw)
    return NODES["VGTQueryARSampler"]().sample(model, pos, **args)[0]


def test_cancel_stops_within_a_group_and_model_stays_usable(comfy_env):
    model, ae, pos = _model(comfy_env)
    seen = []

    def hook(value, total, preview, node_id=None):
        seen.append((value, total, preview is not None))
        if value == 2:
            mm.interrupt_current_processing()

    comfy.utils.set_progress_bar_global_hook(hook)
    with pytest.raises(mm.InterruptProcessingException):
        _sample(model, pos, parallel_tokens=1)
    assert [v for v, _, _ in seen] == [1, 2]
    comfy.utils.set_progress_bar_global_hook(None)
    latent = _sample(model, pos, parallel_tokens=1)
    assert latent["samples"].shape == (1, 32, 4, 4)
    assert any(p for _, _, p in seen), "no preview was sent"


def test_same_seed_same_latent_and_batch(comfy_env):
    model, ae, pos = _model(comfy_env)
    a = _sample(model, pos, seed=3, batch_size=2)["samples"]
    b = _sample(model, pos, seed=3, batch_size=2)["samples"]
    assert a.shape == (2, 32, 4, 4) and torch.equal(a, b)
    (img,) = NODES["VGTAEDecode"]().decode(ae, {"samples": a, "vgt": True, "family": "qwen2_5_vl"})
    assert img.shape == (2, 112, 112, 3)


@pytest.mark.parametrize("kw, match", [
    (dict(width=500), "multiple of 28"),
    (dict(height=28 * 9), "query grid"),
])
def test_sampler_bad_sizes(comfy_env, kw, match):
    model, _, pos = _model(comfy_env)
    with pytest.raises(ValueError, match=match):
        _sample(model, pos, **kw)


def test_missing_model_and_path_escape(comfy_env):
    loader = NODES["VGTModelLoader"]()
    with pytest.raises(FileNotFoundError, match="not found"):
        loader.load(**dict(wf.MODEL, ar_checkpoint="nope/iter_5000.pth"))
    with pytest.raises(ValueError, match="invalid model name"):
        loader.load(**dict(wf.MODEL, ar_checkpoint="../../secret.pth"))
    with pytest.raises(ValueError, match="invalid model name"):
        loader.load(**dict(wf.MODEL, base_model="../Qwen2.5-VL-3B-Instruct"))


def test_sd_latent_into_vgt_decode_is_refused(comfy_env):
    _, ae, _ = _model(comfy_env)
    with pytest.raises(ValueError, match="not a VGT latent"):
        NODES["VGTAEDecode"]().decode(ae, {"samples": torch.zeros(1, 4, 64, 64)})


def test_encode_fit_modes(comfy_env):
    ae = NODES["VGTAELoader"]().load(**dict(wf.AE, decoder_config="dc-ae-f32c32-sana-1.1-diffusers"))[0]
    image = torch.rand(1, 130, 150, 3)
    enc = NODES["VGTAEEncode"]()
    assert enc.encode(ae, image, "center_crop")[0]["samples"].shape == (1, 32, 4, 5)
    assert enc.encode(ae, image, "resize")[0]["samples"].shape == (1, 32, 5, 5)
    with pytest.raises(ValueError, match="multiples of 28"):
        enc.encode(ae, image, "error")


def test_inpaint_keeps_unmasked_tokens_and_empty_mask_is_a_noop(comfy_env):
    model, ae, pos = _model(comfy_env)
    image = torch.rand(2, 112, 140, 3)
    latent = NODES["VGTAEEncode"]().encode(ae, image, "error")[0]
    mask = torch.zeros(2, 112, 140)
    mask[0, :28, :56] = 1.0  # image 0: two tokens; image 1: nothing
    args = dict(wf.SAMPLING, steps=2, mask_rule="any", threshold=0.5, grow_tokens=0)
    out, tok = NODES["VGTInpaint"]().inpaint(model, pos, latent, mask, **args)
    z0, z1 = latent["samples"], out["samples"]
    assert torch.equal(z1[1], z0[1])  # no masked token: unchanged
    changed = (z1[0] != z0[0]).any(dim=0)  # [h, w]
    assert changed.sum() == 2 and changed[0, :2].all()
    assert tok.shape == (2, 112, 140) and tok[0, :28, :56].min() == 1 and tok[1].max() == 0
    none = NODES["VGTInpaint"]().inpaint(model, pos, latent, torch.zeros(2, 112, 140), **args)[0]
    assert torch.equal(none["samples"], z0)
    with pytest.raises(ValueError, match="mask is 64x64 px but the image is 140x112"):
        NODES["VGTInpaint"]().inpaint(model, pos, latent, torch.ones(1, 64, 64), **args)


def test_variation_strength_bounds(comfy_env):
    model, ae, pos = _model(comfy_env)
    latent = NODES["VGTAEEncode"]().encode(ae, torch.rand(1, 112, 112, 3), "error")[0]
    args = dict(wf.SAMPLING, steps=2)
    same = NODES["VGTVariation"]().vary(model, pos, latent, 0.0, **args)[0]
    assert torch.equal(same["samples"], latent["samples"])
    allnew = NODES["VGTVariation"]().vary(model, pos, latent, 1.0, **args)[0]
    assert ((allnew["samples"] != latent["samples"]).any(dim=1)).all()


def test_outpaint_pad(comfy_env):
    latent = {"samples": torch.randn(1, 32, 4, 4), "vgt": True, "family": "qwen2_5_vl"}
    out, mask = NODES["VGTOutpaintPad"]().pad(latent, 28, 0, 56, 0)
    assert out["samples"].shape == (1, 32, 4, 7) and mask.shape == (1, 112, 196)
    assert torch.equal(out["samples"][..., 1:5], latent["samples"]) and mask[0, :, 28:140].max() == 0
    with pytest.raises(ValueError, match="multiple of 28"):
        NODES["VGTOutpaintPad"]().pad(latent, 30, 0, 0, 0)


def test_composite_keeps_original_outside_mask(comfy_env):
    original = torch.rand(1, 130, 150, 3)
    edited = torch.rand(1, 112, 140, 3)
    mask = torch.zeros(1, 112, 140)
    mask[:, :56, :56] = 1
    (out,) = NODES["VGTComposite"]().composite(edited, original, mask, 0, "center_crop")
    crop = original[:, 9:121, 5:145]
    assert torch.allclose(out[:, 56:], crop[:, 56:], atol=1e-6) and torch.allclose(out[:, :56, :56], edited[:, :56, :56], atol=1e-6)
    (soft,) = NODES["VGTComposite"]().composite(edited, original, mask, 8, "center_crop")
    assert torch.allclose(soft[:, 80:], crop[:, 80:], atol=1e-6)


def test_workflow_files_match_their_generator(comfy_env):
    """workflows/*.json are generated by workflows/build.py: a stale file (or a changed node) shows up here."""
    specs = wf.node_specs()
    for name, graph in wf.GRAPHS.items():
        ui, api = wf.build(graph, specs)
        assert json.loads((ROOT / "workflows" / f"{name}.json").read_text()) == ui, name
        assert json.loads((ROOT / "workflows" / f"{name}.api.json").read_text()) == api, name
