"""The ComfyUI nodes without a ComfyUI install (stand-ins in tests/comfy_stubs): contract, model folders, model
management, cancel, previews, errors, editing. The example workflows are tested in tests/test_workflows.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

STUBS = Path(__file__).resolve().parent / "comfy_stubs"
if str(STUBS) not in sys.path:
    sys.path.insert(0, str(STUBS))

import comfy.model_management as mm  # noqa: E402
import comfy.utils  # noqa: E402
import folder_paths  # noqa: E402
from pack_env import DCAE, NODES, PACK, wf  # noqa: E402

pytest_plugins = ["pack_env"]  # the comfy_env / comfy_folders fixtures


# ------------------------------------------------------------------------------------------------------ contract
@pytest.mark.parametrize("name", sorted(NODES))
def test_node_contract(name, comfy_folders):
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



# Saved workflows refer to node ids and input names: renaming one breaks users' files. Add, never rename.
STABLE = {
    "VGTUnifiedLoader": ["model", "download_missing", "dtype", "attention"],
    "VGTModelLoader": ["ar_checkpoint", "base_model", "vgt_ae", "ae_base_model", "decoder_config", "dtype", "attention"],
    "VGTAELoader": ["vgt_ae", "base_model", "decoder_config", "dtype"],
    "VGTTextEncode": ["model", "text"],
    "VGTQueryARSampler": ["model", "positive", "width", "height", "batch_size", "seed", "cfg", "cfg_schedule", "steps",
                          "parallel_tokens", "order", "negative", "sampler", "mode", "preview"],
    "VGTAEEncode": ["vgt_ae", "image", "fit"],
    "VGTAEDecode": ["vgt_ae", "samples"],
}


@pytest.mark.parametrize("name", sorted(STABLE))
def test_node_ids_and_input_names_are_stable(name, comfy_folders):
    spec = NODES[name].INPUT_TYPES()
    names = [n for section in ("required", "optional") for n in spec.get(section, {})]
    assert names[: len(STABLE[name])] == STABLE[name]


def test_seed_has_control_after_generate(comfy_folders):
    seed = NODES["VGTQueryARSampler"].INPUT_TYPES()["required"]["seed"]
    assert seed[0] == "INT" and seed[1]["control_after_generate"] and seed[1]["max"] == 0xFFFFFFFFFFFFFFFF


# ------------------------------------------------------------------------------------------------------ model folders
def test_register_keeps_extra_model_paths_and_creates_nothing(tmp_path, monkeypatch):
    extra = tmp_path / "shared" / "vgt"
    (extra / "base" / "Qwen2.5-VL-3B-Instruct").mkdir(parents=True)
    (extra / "base" / "Qwen2.5-VL-3B-Instruct" / "config.json").write_text("{}")
    (extra / "base" / "Qwen2.5-VL-3B-Instruct" / "model.safetensors").write_bytes(b"")
    (extra / "ar").mkdir()
    for f in ("ar/iter_5000.pth", "vgt_ae.safetensors", "notes.txt"):
        (extra / f).write_bytes(b"")
    monkeypatch.setattr(folder_paths, "folder_names_and_paths", {})
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path / "comfy" / "models"))
    folder_paths.add_model_folder_path("vgt", str(extra))  # what extra_model_paths.yaml does (no extensions)
    PACK._folders.register()
    PACK._folders.register()  # idempotent
    assert folder_paths.get_folder_paths("vgt") == [str(extra), str(tmp_path / "comfy" / "models" / "vgt")]
    assert not (tmp_path / "comfy").exists()
    folders = sys.modules[PACK.__name__ + ".comfyui_vgt.folders"]
    assert folders.checkpoint_names() == ["ar/iter_5000.pth", "vgt_ae.safetensors"]  # no .txt, nothing under base/
    assert folders.base_names("vlm") == ["Qwen2.5-VL-3B-Instruct"]
    assert folders.checkpoint_path("ar/iter_5000.pth") == extra / "ar" / "iter_5000.pth"


# ------------------------------------------------------------------------------------------------------ behaviour
def _model(comfy_env):
    loader = NODES["VGTModelLoader"]()
    args = dict(wf.MODEL, decoder_config=DCAE)
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


def test_auto_order_is_the_models_trained_order(comfy_env):
    """order=auto (the widget's default) samples in the order the model records: random for a VGT release."""
    model, ae, pos = _model(comfy_env)
    assert model.pipe.default_order == "random"
    auto = _sample(model, pos, seed=5, order="auto", preview=False)["samples"]
    assert torch.equal(auto, _sample(model, pos, seed=5, order="random", preview=False)["samples"])
    assert not torch.equal(auto, _sample(model, pos, seed=5, order="raster", preview=False)["samples"])


def test_sampler_speed_options_reach_the_pipeline(comfy_env):
    """group_schedule / sampler / time grid / preset widgets: a preset equals its widgets set by hand."""
    from vgt_impl.presets import PRESETS

    model, ae, pos = _model(comfy_env)
    kw = dict(seed=4, parallel_tokens=4, preview=False)
    p = PRESETS["ab2-10-cosine"]
    by_hand = _sample(model, pos, steps=p.num_flow_steps, sampler=p.sampler, time_grid=p.time_grid,
                      time_shift=p.time_shift, group_schedule=p.group_schedule, **kw)["samples"]
    assert torch.equal(_sample(model, pos, preset="ab2-10-cosine", steps=3, **kw)["samples"], by_hand)
    assert not torch.equal(_sample(model, pos, **kw)["samples"], by_hand)
    with pytest.raises(ValueError, match="group_schedule"):
        _sample(model, pos, group_schedule="exp", **kw)


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


def test_ar_checkpoint_without_embedded_ae(comfy_env, monkeypatch):
    import vgt_impl.loading as loading

    real = loading.load_ar_model
    monkeypatch.setattr(loading, "load_ar_model", lambda *a, **k: (real(*a, **k)[0], {"ae_state_dict": {}}))
    loader = NODES["VGTModelLoader"]()
    with pytest.raises(ValueError, match="embeds no VGT-AE"):
        loader.load(**dict(wf.MODEL, decoder_config=DCAE))
    model, ae = loader.load(**dict(wf.MODEL, decoder_config=DCAE, vgt_ae="vgt_ae/vgt_ae_qwen25vl.pth"))
    assert ae is model.ae and ae.family == "qwen2_5_vl"


def test_sd_latent_into_vgt_decode_is_refused(comfy_env):
    _, ae, _ = _model(comfy_env)
    with pytest.raises(ValueError, match="not a VGT latent"):
        NODES["VGTAEDecode"]().decode(ae, {"samples": torch.zeros(1, 4, 64, 64)})


def test_encode_fit_modes(comfy_env):
    ae = NODES["VGTAELoader"]().load(**dict(wf.AE, decoder_config=DCAE))[0]
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


def test_outpaint_pad(comfy_folders):
    latent = {"samples": torch.randn(1, 32, 4, 4), "vgt": True, "family": "qwen2_5_vl"}
    out, mask = NODES["VGTOutpaintPad"]().pad(latent, 28, 0, 56, 0)
    assert out["samples"].shape == (1, 32, 4, 7) and mask.shape == (1, 112, 196)
    assert torch.equal(out["samples"][..., 1:5], latent["samples"]) and mask[0, :, 28:140].max() == 0
    with pytest.raises(ValueError, match="multiple of 28"):
        NODES["VGTOutpaintPad"]().pad(latent, 30, 0, 0, 0)


def test_composite_keeps_original_outside_mask(comfy_folders):
    original = torch.rand(1, 130, 150, 3)
    edited = torch.rand(1, 112, 140, 3)
    mask = torch.zeros(1, 112, 140)
    mask[:, :56, :56] = 1
    (out,) = NODES["VGTComposite"]().composite(edited, original, mask, 0, "center_crop")
    crop = original[:, 9:121, 5:145]
    assert torch.allclose(out[:, 56:], crop[:, 56:], atol=1e-6) and torch.allclose(out[:, :56, :56], edited[:, :56, :56], atol=1e-6)
    (soft,) = NODES["VGTComposite"]().composite(edited, original, mask, 8, "center_crop")
    assert torch.allclose(soft[:, 80:], crop[:, 80:], atol=1e-6)


def test_models_run_under_model_management(comfy_env):
    model, ae, pos = _model(comfy_env)
    assert model.patcher.load_device == mm.get_torch_device()
    assert model.patcher.offload_device == mm.unet_offload_device() and model.patcher.model_size() > 0
    mm.loaded.clear()
    latent = _sample(model, pos, preview=False)
    assert mm.loaded == [model.patcher]  # loaded before sampling; no VGT-AE without previews
    mm.loaded.clear()
    _sample(model, pos, preview=True)
    assert mm.loaded == [model.patcher, ae.patcher]  # previews decode with the VGT-AE
    mm.loaded.clear()
    NODES["VGTAEDecode"]().decode(ae, latent)
    assert mm.loaded == [ae.patcher]


def test_results_go_to_the_intermediate_device(comfy_env, monkeypatch):
    model, ae, pos = _model(comfy_env)
    monkeypatch.setattr(mm, "intermediate_device", lambda: torch.device("meta"))
    assert _sample(model, pos, preview=False)["samples"].is_meta
    assert NODES["VGTAEEncode"]().encode(ae, torch.rand(1, 56, 56, 3), "error")[0]["samples"].is_meta


def test_preview_is_a_jpeg_of_the_image_size(comfy_env):
    model, _, pos = _model(comfy_env)
    previews = []
    comfy.utils.set_progress_bar_global_hook(lambda v, t, p, node_id=None: previews.append(p))
    _sample(model, pos, parallel_tokens=4, preview=True)
    sent = [p for p in previews if p is not None]
    assert len(previews) == 4 and sent and sent[-1] is previews[-1]  # the final state is always shown
    fmt, image, max_size = sent[-1]
    assert fmt == "JPEG" and image.size == (112, 112) and max_size >= 112
    previews.clear()
    _sample(model, pos, parallel_tokens=4, preview=False)
    assert len(previews) == 4 and not any(p is not None for p in previews)


def test_flash_attention_picked_but_missing_is_a_clear_error(comfy_env):
    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    assert "flash_attention_2" in NODES["VGTModelLoader"].INPUT_TYPES()["required"]["attention"][0]
    with pytest.raises(ValueError, match="flash-attn"):
        NODES["VGTModelLoader"]().load(**dict(wf.MODEL, attention="flash_attention_2"))


def test_empty_prompt_is_a_clear_error(comfy_env):
    model, _, _ = _model(comfy_env)
    with pytest.raises(ValueError, match="text is empty"):
        NODES["VGTTextEncode"]().encode(model, "   ")


# ------------------------------------------------------------------------------------------------------ entry point
_ENTRY = """
import importlib.util, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]  # as if vgt_impl were not pip-installed
sys.path[:] = [p for p in sys.path if p not in ("", {root!r})] + {extra!r}
if importlib.util.find_spec("vgt_impl") is not None:
    print("installed"); sys.exit(0)  # a regular (non-editable) install: nothing to test here
spec = importlib.util.spec_from_file_location("pack", {init!r}, submodule_search_locations=[{root!r}])
pack = importlib.util.module_from_spec(spec); sys.modules["pack"] = pack; spec.loader.exec_module(pack)
import vgt_impl
assert vgt_impl.__file__.startswith({root!r}), vgt_impl.__file__
assert importlib.util.find_spec("workflows") is None and {root!r} not in sys.path
print(len(pack.NODE_CLASS_MAPPINGS))
"""


@pytest.mark.slow
@pytest.mark.parametrize("with_comfy", [False, True])
def test_entry_point_without_install(with_comfy):
    """The pack folder as ComfyUI imports it, library not pip-installed: nodes only when ComfyUI is importable, and the
    bundled vgt_impl is used without adding the folder (generic names like nodes/tests) to sys.path."""
    import subprocess

    root = str(Path(__file__).resolve().parents[1])
    code = _ENTRY.format(root=root, init=root + "/__init__.py", extra=[str(STUBS)] if with_comfy else [])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    if out.stdout.strip() == "installed":
        pytest.skip("vgt_impl is pip-installed (not editable) here: the bundled-copy path cannot be exercised")
    assert int(out.stdout.strip()) == (len(NODES) if with_comfy else 0)


# ------------------------------------------------------------------------------------------------------ one-choice loader
def test_unified_loader_lists_releases_then_other_checkpoints(comfy_env):
    (comfy_env / "models" / "vgt" / "mine").mkdir()
    (comfy_env / "models" / "vgt" / "mine" / "ft.safetensors").write_bytes(b"")
    choices, opts = NODES["VGTUnifiedLoader"].INPUT_TYPES()["required"]["model"]
    assert choices == ["vgt-demo", "VGT-Qwen2.5-VL-2B-SFT", "VGT-Qwen2.5-VL-2B-Pretrain", "VGT-InternVL3-1.6B-SFT",
                       "VGT-InternVL3-1.6B-Pretrain", "mine/ft.safetensors"]  # the release's own file and vgt_ae/ not repeated
    assert opts["default"] == "vgt-demo"  # the built-in model: runs anywhere, nothing to download
    out = NODES["VGTUnifiedLoader"].OUTPUT_TOOLTIPS
    assert len(out) == 2 and all(out)


def test_unified_loader_loads_the_builtin_demo_in_place(comfy_folders, demo_folder, tmp_path_factory, monkeypatch):
    """vgt-demo loads from the package folder with downloads on and no hub: nothing goes to models/vgt. Listed even
    where the folder is missing (saved workflows stay valid), loading it then says what is wrong."""
    from demo_model import use_as_builtin

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    use_as_builtin(monkeypatch, demo_folder)
    model, ae = NODES["VGTUnifiedLoader"]().load("vgt-demo", True, "auto", "sdpa")
    assert model.family == "qwen3_vl" and ae is model.ae and ae.stride == 28
    (pos,) = NODES["VGTTextEncode"]().encode(model, "two red circles left of a blue square")
    assert _sample(model, pos, width=224, height=224, steps=2, preview=False)["samples"].shape == (1, 32, 8, 8)
    assert not (comfy_folders / "models" / "vgt").exists() or not any((comfy_folders / "models" / "vgt").iterdir())
    use_as_builtin(monkeypatch, tmp_path_factory.mktemp("empty") / "vgt-demo")
    assert NODES["VGTUnifiedLoader"].INPUT_TYPES()["required"]["model"][0][0] == "vgt-demo"
    with pytest.raises(FileNotFoundError, match=r"model: the built-in vgt-demo model is not in this install"):
        NODES["VGTUnifiedLoader"]().load("vgt-demo", True, "auto", "sdpa")


def test_unified_loader_finds_a_release_in_place_and_a_plain_checkpoint(comfy_env, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing may be downloaded here
    model, ae = NODES["VGTUnifiedLoader"]().load("VGT-Qwen2.5-VL-2B-SFT", True, "auto", "sdpa")
    assert model.family == "qwen2_5_vl" and ae is model.ae
    (pos,) = NODES["VGTTextEncode"]().encode(model, "a red apple")
    assert _sample(model, pos, steps=2)["samples"].shape == (1, 32, 4, 4)
    vgt = comfy_env / "models" / "vgt"
    (vgt / "finetune").mkdir()
    (vgt / "finetune" / "step_100.pth").symlink_to((vgt / "vgt_qwen25vl_2B_sft" / "iter_5000.pth").resolve())
    model2, _ = NODES["VGTUnifiedLoader"]().load("finetune/step_100.pth", False, "auto", "sdpa")
    assert model2.family == "qwen2_5_vl"
    with pytest.raises(ValueError, match="is a VGT-AE checkpoint"):
        NODES["VGTUnifiedLoader"]().load("vgt_ae/vgt_ae_qwen25vl.pth", False, "auto", "sdpa")


def test_unified_loader_with_an_empty_models_folder(comfy_folders, reference_dir, monkeypatch):
    """Empty models folder + the stand-in hub: the files arrive with progress and an image is made; with the hub
    unreachable (or download_missing off), one error lists the files and the commands."""
    import huggingface_hub.constants as constants
    from hub_server import StandInHub, fixture_repos

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    progress = []
    comfy.utils.set_progress_bar_global_hook(lambda v, t, p, node_id=None: progress.append((v, t)))
    loader = NODES["VGTUnifiedLoader"]()
    with pytest.raises(FileNotFoundError, match=r"(?s)download_missing is off.*hf download hustvl/vgt_qwen25vl_2B_sft"):
        loader.load("VGT-Qwen2.5-VL-2B-SFT", False, "auto", "sdpa")
    with StandInHub(fixture_repos(reference_dir)) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        model, ae = loader.load("VGT-Qwen2.5-VL-2B-SFT", True, "auto", "sdpa")
    assert (comfy_folders / "models" / "vgt" / "vgt_qwen25vl_2B_sft" / "iter_5000.pth").is_file()
    assert progress and progress[-1][0] == progress[-1][1] > 1_000_000  # bytes of every file
    (pos,) = NODES["VGTTextEncode"]().encode(model, "a red apple")
    (img,) = NODES["VGTAEDecode"]().decode(ae, _sample(model, pos, steps=2))
    assert img.shape == (1, 112, 112, 3)
    with pytest.raises(FileNotFoundError, match=r"(?s)9 file\(s\) missing .*hub unreachable"):  # the decoder config is there
        loader.load("VGT-InternVL3-1.6B-SFT", True, "auto", "sdpa")  # HF_ENDPOINT now points at a closed port
