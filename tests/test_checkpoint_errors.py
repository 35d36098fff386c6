"""Checkpoint files, base folders and runtime choices that cannot work: a clear error naming the file or option, raised
before any network is built; nothing the user made is overwritten by ``convert``."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from vgt_impl import VGTAutoencoder, VGTPipeline
from vgt_impl.checkpoints import CheckpointError, CheckpointMismatchError, detect_variant, load_checkpoint_file

Q_BASE = "qwen25vl/base/Qwen2.5-VL-3B-Instruct-tiny"
Q_DCAE = "qwen25vl/base/dc-ae-f32c32-sana-1.1-diffusers-tiny"


def _qwen(reference_dir, ar=None, **kw):
    r = reference_dir
    args = dict(base_model=r / Q_BASE, decoder_config=r / Q_DCAE)
    args.update(kw)
    return VGTPipeline.from_pretrained(ar or r / "qwen25vl" / "ar" / "iter_5000.pth", **args)


# ------------------------------------------------------------------------------------------------------ files
def test_random_bytes_are_not_reported_as_code(tmp_path):
    path = tmp_path / "model.pth"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint .*re-download it"):
        load_checkpoint_file(path)
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        load_checkpoint_file(tmp_path / "empty.pth")


def test_safetensors_file_with_a_pth_name(reference_dir, tmp_path):
    path = tmp_path / "vgt_ae.pth"
    shutil.copy(reference_dir / "qwen25vl" / "ae" / "vgt_ae_qwen25vl.safetensors", path)
    with pytest.raises(CheckpointError, match="is a safetensors file with a .pth name: rename it to vgt_ae.safetensors"):
        load_checkpoint_file(path)


@pytest.mark.parametrize("obj, match", [
    (torch.zeros(3), r"holds a bare Tensor of shape \(3,\), not a dict of named weights"),
    ([torch.zeros(3)], r"holds a bare list, not a dict of named weights"),
    ({0: torch.zeros(1)}, r"has non-string keys \(0, \.\.\.\)"),
    ({"model_ema": {"w": torch.zeros(1)}, "optimizer": {}}, r"contains no tensors \(top-level keys: model_ema, optimizer\)"),
])
def test_pth_that_is_not_a_state_dict(tmp_path, obj, match):
    path = tmp_path / "x.pth"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint_file(path)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder: give the checkpoint file inside it"):
        load_checkpoint_file(tmp_path)


def test_upper_case_suffixes_load(reference_dir, tmp_path):
    """ComfyUI lists IMAGE.PTH (its extension test is case-insensitive): it must also load."""
    for name, src in (("AE.PTH", "vgt_ae_qwen25vl.pth"), ("AE.SafeTensors", "vgt_ae_qwen25vl.safetensors")):
        shutil.copy(reference_dir / "qwen25vl" / "ae" / src, tmp_path / name)
        assert detect_variant(load_checkpoint_file(tmp_path / name)).kind == "ae"


@pytest.mark.parametrize("drop, match", [
    ("down_mlp.3.weight", r"VGT-AE checkpoint is incomplete:\n  missing 1 tensors its sizes are read from: "
                          r"down_mlp.3.weight\n  likely cause: .*re-download it"),
    ("encoder.blocks.0.norm1.weight", r"missing 1 tensors its sizes are read from: encoder.blocks.0.norm1.weight"),
])
def test_ae_missing_a_key_detection_reads(reference_dir, drop, match):
    sd = load_checkpoint_file(reference_dir / "qwen25vl" / "ae" / "vgt_ae_qwen25vl.pth")
    del sd[drop]
    with pytest.raises(CheckpointMismatchError, match=match):
        detect_variant(sd)


@pytest.mark.parametrize("drop", ["adaptive_metaquery.max_metaquery", "image_head.net.input_proj.weight",
                                  "lmm.model.language_model.embed_tokens.weight"])
def test_ar_missing_a_key_detection_reads(reference_dir, tmp_path, drop, no_network_build):
    sd = load_checkpoint_file(reference_dir / "qwen25vl" / "ar" / "iter_5000.pth")
    del sd[drop]
    torch.save({"state_dict": sd}, tmp_path / "ar.pth")
    with pytest.raises(CheckpointMismatchError, match=rf"VGT-AR checkpoint is incomplete:\n  missing 1 tensors .*{drop}"):
        _qwen(reference_dir, tmp_path / "ar.pth")


def test_ar_missing_its_last_llm_layer_is_not_a_smaller_model(reference_dir, tmp_path, no_network_build):
    """Layers are counted from the keys: without the last one the file used to load as a 1-layer model."""
    sd = load_checkpoint_file(reference_dir / "qwen25vl" / "ar" / "iter_5000.pth")
    sd = {k: v for k, v in sd.items() if ".layers.1." not in k}
    torch.save({"state_dict": sd}, tmp_path / "ar.pth")
    with pytest.raises(ValueError, match=r"has 1 LLM layers but a VGT-Qwen2.5-VL model on this base model \(4 layers, "
                                         r"layer_ratio 0.5\) has 2: the checkpoint is truncated"):
        _qwen(reference_dir, tmp_path / "ar.pth")


def test_internvl_config_without_llm_config(reference_dir, tmp_path):
    from vgt_impl.backbones import get_family

    base = tmp_path / "InternVL3-2B"
    shutil.copytree(reference_dir / "internvl3" / "base" / "InternVL3-2B-tiny", base)
    cfg = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "llm_config"}))
    with pytest.raises(ValueError, match=r"config.json \(InternVL3, remote-code format\) has no llm_config section"):
        get_family("internvl3").load_base_config(base)
    cfg["vision_config"].pop("hidden_size")
    (base / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"vision_config has no 'hidden_size'"):
        get_family("internvl3").load_base_config(base)


def test_decoder_config_that_is_a_vlm_folder(reference_dir, no_network_build):
    with pytest.raises(ValueError, match=r"DC-AE decoder config .*config.json is a 'qwen2_5_vl' model config, not a "
                                         r"DC-AE \(AutoencoderDC\) one"):
        VGTAutoencoder.from_pretrained(reference_dir / "qwen25vl" / "ae" / "vgt_ae_qwen25vl.pth",
                                       base_model=reference_dir / Q_BASE, decoder_config=reference_dir / Q_BASE)
    with pytest.raises(ValueError, match=r"is a 'qwen2_5_vl' model config"):
        _qwen(reference_dir, decoder_config=reference_dir / Q_BASE)
    with pytest.raises(ValueError, match=r"fields AutoencoderDC does not know: vocab_size"):
        VGTAutoencoder.from_pretrained(reference_dir / "qwen25vl" / "ae" / "vgt_ae_qwen25vl.pth",
                                       base_model=reference_dir / Q_BASE, decoder_config={"vocab_size": 3})
    with pytest.raises(ValueError, match=r"has 4 latent channels; a VGT-AE decoder takes 32"):
        VGTAutoencoder.from_pretrained(reference_dir / "qwen25vl" / "ae" / "vgt_ae_qwen25vl.pth",
                                       base_model=reference_dir / Q_BASE, decoder_config={"latent_channels": 4})


# ------------------------------------------------------------------------------------------------------ pairing
def test_vgt_ae_of_the_other_family_names_the_vgt_ae(reference_dir, no_network_build):
    """It used to say 'pick the matching base model' (and 'a InternVL3'), while the VGT-AE was the wrong part."""
    ivl_ae = reference_dir / "internvl3" / "ae" / "vgt_ae_internvl3.pth"
    with pytest.raises(ValueError, match=r"the VGT-AE checkpoint .*vgt_ae_internvl3.pth is for InternVL3 but the VGT-AR "
                                         r"checkpoint .* is a Qwen2.5-VL model: pick the Qwen2.5-VL VGT-AE, or leave "
                                         r"the VGT-AE unset"):
        _qwen(reference_dir, ae=ivl_ae)


def test_loaded_vgt_ae_of_the_other_family_is_refused_before_building(reference_dir, monkeypatch):
    from tests.test_autoencoder import load_ae

    ivl = load_ae(str(reference_dir), "internvl3")
    import vgt_impl.loading as loading

    monkeypatch.setattr(loading, "VGTARModel", lambda *a, **k: pytest.fail("built before the check"))
    with pytest.raises(ValueError, match=r"the VGT-AE is for InternVL3 but the VGT-AR checkpoint .* is a Qwen2.5-VL "
                                         r"model"):
        _qwen(reference_dir, ae=ivl)


def test_ar_checkpoint_given_as_the_vgt_ae_without_one_embedded(reference_dir, tmp_path, no_network_build):
    sd = load_checkpoint_file(reference_dir / "qwen25vl" / "ar" / "iter_5000.pth")
    torch.save({"state_dict": {k: v for k, v in sd.items() if not k.startswith("vgt_ae.")}}, tmp_path / "ar.pth")
    with pytest.raises(ValueError, match=r"ar.pth is a VGT-AR checkpoint without an embedded VGT-AE: pick a VGT-AE "
                                         r"checkpoint"):
        _qwen(reference_dir, ae=tmp_path / "ar.pth")


def test_internvl_embedded_ae_on_the_wrong_base_is_checked_before_building(reference_dir, no_network_build):
    r = reference_dir / "internvl3"
    with pytest.raises(ValueError, match=r"the VGT-AE embedded in the AR checkpoint is an InternVL3 checkpoint but the "
                                         r"base model folder .* is Qwen2.5-VL: pass the base model folder of its "
                                         r"encoder \(InternVL3-1B\) as ae_base_model"):
        VGTPipeline.from_pretrained(r / "ar" / "iter_5000.pth", base_model=r / "base" / "InternVL3-2B-tiny",
                                    ae_base_model=reference_dir / Q_BASE)


# ------------------------------------------------------------------------------------------------------ runtime
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda_fails_before_reading(reference_dir, monkeypatch):
    import vgt_impl.checkpoints as checkpoints

    monkeypatch.setattr(checkpoints, "load_checkpoint_file", lambda *a, **k: pytest.fail("read before the check"))
    with pytest.raises(ValueError, match=r"device=cuda but CUDA is not available"):
        _qwen(reference_dir, device="cuda")
    with pytest.raises(ValueError, match=r"device=cuda:1 but CUDA is not available"):
        VGTAutoencoder.from_pretrained(reference_dir / "qwen25vl" / "ae" / "vgt_ae_qwen25vl.pth",
                                       base_model=reference_dir / Q_BASE, device="cuda:1")
    with pytest.raises(ValueError, match=r"device='gpu' is not a device"):
        _qwen(reference_dir, device="gpu")


def test_bad_dtype_and_attention_fail_before_reading(reference_dir, monkeypatch):
    import importlib.util

    import vgt_impl.checkpoints as checkpoints

    monkeypatch.setattr(checkpoints, "load_checkpoint_file", lambda *a, **k: pytest.fail("read before the check"))
    with pytest.raises(ValueError, match=r"dtype=torch.int8: expected torch.float32, torch.bfloat16 or torch.float16"):
        _qwen(reference_dir, dtype=torch.int8)
    with pytest.raises(ValueError, match=r"attn_implementation='flash': expected one of sdpa, eager, flash_attention_2"):
        _qwen(reference_dir, attn_implementation="flash")
    if importlib.util.find_spec("flash_attn") is None:
        with pytest.raises(ValueError, match=r"attn_implementation=flash_attention_2 needs the flash-attn package"):
            _qwen(reference_dir, attn_implementation="flash_attention_2")


# ------------------------------------------------------------------------------------------------------ convert
def test_converted_files_get_the_usual_permissions_and_never_overwrite(reference_dir, tmp_path):
    from vgt_impl.checkpoints import check_converted_target, save_converted

    sd = load_checkpoint_file(reference_dir / "qwen25vl" / "ae" / "vgt_ae_qwen25vl.pth")
    old = os.umask(0o022)
    try:
        path = save_converted(tmp_path / "ae.safetensors", sd, {"format": "comfyui-vgt/1", "kind": "ae"})
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)  # safetensors alone writes 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ae.json", "ae.safetensors"]  # no partial file left
    save_converted(tmp_path / "ae.safetensors", sd, {"format": "comfyui-vgt/1", "kind": "ae"})  # our own: re-written
    (tmp_path / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
    with pytest.raises(FileExistsError, match=r"config.json exists and is not a comfyui-vgt config"):
        save_converted(tmp_path / "config.safetensors", sd, {"format": "comfyui-vgt/1"})
    assert json.loads((tmp_path / "config.json").read_text()) == {"model_type": "qwen2_5_vl"}
    src = tmp_path / "official.safetensors"
    shutil.copy(reference_dir / "qwen25vl" / "ae" / "vgt_ae_qwen25vl.safetensors", src)
    with pytest.raises(ValueError, match="is the file being converted"):
        check_converted_target(src, source=src)
    with pytest.raises(ValueError, match=r"converted checkpoints are .safetensors files, got x.pth"):
        check_converted_target(tmp_path / "x.pth")


def test_decoder_config_that_does_not_fit_the_weights_fails_before_building(reference_dir, no_network_build):
    """The built-in full-size f32c32 config with the tiny decoder's weights used to fail in strict loading, after the
    whole model was built."""
    match = (r"the DC-AE decoder config does not match the decoder in .*: its conv_in output channels are 32, the "
             r"config gives 1024")
    with pytest.raises(ValueError, match=match):
        VGTAutoencoder.from_pretrained(reference_dir / "qwen25vl" / "ae" / "vgt_ae_qwen25vl.pth",
                                       base_model=reference_dir / Q_BASE)
    with pytest.raises(ValueError, match=match):
        _qwen(reference_dir, decoder_config=None)
