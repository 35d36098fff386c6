"""Checkpoint opening, EMA choice, variant detection, safety and readable errors."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from torch import nn

from vgt_impl.checkpoints import (
    CheckpointError,
    CheckpointMismatchError,
    compress_keys,
    detect_variant,
    load_checkpoint_file,
    load_strict,
    map_ar_state_dict,
)

FILES = {
    "qwen25vl/ae/vgt_ae_qwen25vl.pth": ("ae", "qwen2_5_vl"),
    "qwen25vl/ae/vgt_ae_qwen25vl.safetensors": ("ae", "qwen2_5_vl"),
    "qwen25vl/ar/iter_5000.pth": ("ar", "qwen2_5_vl"),
    "internvl3/ae/vgt_ae_internvl3.pth": ("ae", "internvl3"),
    "internvl3/ae/vgt_ae_internvl3.safetensors": ("ae", "internvl3"),
    "internvl3/ar/iter_5000.pth": ("ar", "internvl3"),
}


@pytest.mark.parametrize("rel", list(FILES))
def test_detect_variant(reference_dir, rel):
    sd = load_checkpoint_file(reference_dir / rel)
    info = detect_variant(sd)
    assert (info.kind, info.family) == FILES[rel]
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in sd)
    if info.kind == "ar":
        assert info.llm_layers == 2 and info.head_layers == 2 and info.head_dim == 64 and info.query_grid == (8, 8)
        assert info.has_embedded_ae
    else:
        assert info.latent_channels == 32 and info.vision_layers == 2
        assert info.has_teacher == (FILES[rel][1] == "internvl3")


def test_ema_preferred_and_configurable(reference_dir):
    path = reference_dir / "qwen25vl" / "ar" / "iter_5000.pth"
    ema, info = load_checkpoint_file(path, with_info=True)
    raw, raw_info = load_checkpoint_file(path, prefer_ema=False, with_info=True)
    assert info["source"] == "ema_state_dict" and info["ema_steps"] == 5000 and "steps" not in ema
    assert raw_info["source"] == "state_dict"
    assert set(ema) == set(raw)
    key = "image_head.net.input_proj.weight"
    assert not torch.equal(ema[key], raw[key])


def test_qwen_duplicate_llm_and_lm_head_are_dropped(reference_dir):
    sd = load_checkpoint_file(reference_dir / "qwen25vl" / "ar" / "iter_5000.pth")
    ar, ae, dropped = map_ar_state_dict(sd, "qwen2_5_vl")
    assert "lmm.language_model.*" in dropped and "lmm.lm_head.weight" in dropped
    assert all(k.startswith(("llm.", "queries.", "image_", "flow_head.")) for k in ar)
    assert "queries.query_grid" in ar and "flow_head.final_layer.linear.weight" in ar
    assert "decoder.conv_in.weight" in ae


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_running_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = Evil()
    evil.marker = marker
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"w": evil}}, f)
    with pytest.raises(CheckpointError, match="not a plain weights file"):
        load_checkpoint_file(path)
    assert not marker.exists()


@pytest.mark.parametrize("rel", ["qwen25vl/ae/vgt_ae_qwen25vl.pth", "qwen25vl/ae/vgt_ae_qwen25vl.safetensors"])
def test_truncated_file(reference_dir, tmp_path, rel):
    src = reference_dir / rel
    dst = tmp_path / src.name
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted.*re-download"):
        load_checkpoint_file(dst)


def test_missing_file_and_bad_extension(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint_file(tmp_path / "nope.pth")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="unsupported checkpoint type"):
        load_checkpoint_file(tmp_path / "x.txt")


def test_not_a_vgt_checkpoint(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"unet.conv.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not a VGT checkpoint.*unet"):
        detect_variant(load_checkpoint_file(path))


class Tiny(nn.Module):
    family = "qwen2_5_vl"

    def __init__(self, n=40):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(2, 2) for _ in range(n))


def test_strict_errors_are_grouped_and_short():
    model = Tiny()
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith(tuple(f"layers.{i}." for i in range(18, 40)))}
    sd["extra.head.weight"] = torch.zeros(1)
    sd["layers.0.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointMismatchError) as e:
        load_strict(model, sd, what="test.pth")
    msg = str(e.value)
    assert "missing 44 tensors" in msg and "layers.{18..39}.{bias,weight}" in msg
    assert "unexpected 1 tensors" in msg and "shape mismatches" in msg and "(3, 3)" in msg
    assert len(msg.splitlines()) <= 6 and len(msg) < 1200


def test_wrong_family_is_explained(reference_dir):
    """InternVL3 VGT-AE weights offered to a Qwen2.5-VL model are named as such."""
    sd = load_checkpoint_file(reference_dir / "internvl3" / "ae" / "vgt_ae_internvl3.pth")
    with pytest.raises(CheckpointMismatchError, match="looks like an InternVL3 checkpoint but the model is Qwen2.5-VL"):
        load_strict(Tiny(2), sd, what="vgt_ae_internvl3.pth")


def test_compress_keys_ranges():
    keys = [f"llm.layers.{i}.mlp.up_proj.weight" for i in range(18, 36)]
    assert compress_keys(keys) == ["llm.layers.{18..35}.mlp.up_proj.weight"]
