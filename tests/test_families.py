"""The family registry: every adapter is complete and distinct; a new family is one registered class."""

from __future__ import annotations

import json

import pytest

from vgt_impl.backbones import (
    FAMILY_MODULES,
    detect_family_from_config,
    detect_family_from_dir,
    display_name,
    families,
    family_names,
    get_family,
)
from vgt_impl.backbones import adapter as registry
from vgt_impl.checkpoints import FAMILY_NAMES, CheckpointError, _ae_family


def test_every_module_registers_one_complete_adapter():
    fams = families()
    assert len(fams) == len(FAMILY_MODULES) == len(set(family_names()))
    assert family_names() == ["qwen2_5_vl", "internvl3", "qwen3_vl"]
    seen: set[str] = set()
    for fam in fams:
        assert fam.position_rule in registry.POSITION_RULES and fam.image_start_marker and fam.base_models
        assert len(fam.pixel_mean) == len(fam.pixel_std) == 3 and min(fam.pixel_std) > 0
        assert not seen & set(fam.model_types), "a model_type claimed by two families"
        seen |= set(fam.model_types)
        for model_type in fam.model_types:
            assert detect_family_from_config({"model_type": model_type}) == fam.name
    assert dict(FAMILY_NAMES) == {"qwen2_5_vl": "Qwen2.5-VL", "internvl3": "InternVL3", "qwen3_vl": "Qwen3-VL"}
    assert display_name("nope") == "nope"
    with pytest.raises(ValueError, match=r"unknown VLM family 'nope': expected one of \['internvl3', 'qwen2_5_vl', 'qwen3_vl'\]"):
        get_family("nope")


def test_official_ae_layouts_have_exactly_one_owner():
    qwen25 = ["encoder.blocks.0.mlp.gate_proj.weight", "encoder.merger.ln_q.weight"]
    intern = ["encoder.encoder.layers.0.attn.qkv.weight", "mlp1.0.weight"]
    qwen3 = ["encoder.blocks.0.mlp.linear_fc1.weight", "encoder.pos_embed.weight", "encoder.merger.linear_fc1.weight"]
    for keys, name in ((qwen25, "qwen2_5_vl"), (intern, "internvl3"), (qwen3, "qwen3_vl")):
        assert _ae_family(keys) == name
        assert _ae_family(["vgt_ae." + k for k in keys], "vgt_ae.") == name
    with pytest.raises(CheckpointError, match="match several families"):
        _ae_family(qwen25 + qwen3)


def test_a_new_family_is_one_registered_class(tmp_path, monkeypatch):
    """Registering an adapter makes base folders of its model_type detectable and its name known everywhere."""
    qwen25 = type(get_family("qwen2_5_vl"))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @registry.register
    class Toy(qwen25):
        name = "toy_vl"
        display_name = "Toy-VL"
        model_types = ("toy_vl",)

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "toy_vl"}))
    assert detect_family_from_dir(tmp_path) == "toy_vl" and FAMILY_NAMES["toy_vl"] == "Toy-VL"
    with pytest.raises(ValueError, match=r"position_rule='diagonal'"):

        @registry.register
        class Bad(qwen25):
            name = "bad"
            position_rule = "diagonal"


def test_convert_records_the_official_stride(reference_dir, tmp_path, capsys):
    from vgt_impl.checkpoints import converted_config
    from vgt_impl.cli import main

    out = tmp_path / "ar.safetensors"
    assert main(["convert", str(reference_dir / "qwen25vl" / "ar" / "iter_5000.pth"), "--out", str(out)]) == 0
    cfg = converted_config(out)
    assert cfg["family"] == "qwen2_5_vl" and cfg["latent_stride"] == 28
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "latent_stride:    28 px per token" in text and "needs:     a base model folder: Qwen2.5-VL-3B" in text


def test_mmengine_style_ar_keys_are_told_apart_by_the_text_model():
    """An lmm.* VGT-AR file of Qwen3-VL (QK-norm) is not taken for Qwen2.5-VL, whose layout it shares."""
    import torch

    from vgt_impl.checkpoints import detect_variant, map_ar_state_dict

    def ar(extra: dict) -> dict:
        p = "lmm.model.language_model."
        sd = {p + "embed_tokens.weight": torch.zeros(10, 8), p + "layers.0.self_attn.q_proj.weight": torch.zeros(8, 8),
              p + "norm.weight": torch.zeros(8), "image_head.net.input_proj.weight": torch.zeros(16, 32),
              "adaptive_metaquery.max_metaquery": torch.zeros(1, 8, 4, 4)}
        return {**sd, **{p + k: v for k, v in extra.items()}}

    assert detect_variant(ar({})).family == "qwen2_5_vl"
    qwen3 = ar({"layers.0.self_attn.q_norm.weight": torch.zeros(4)})
    assert detect_variant(qwen3).family == "qwen3_vl"
    qwen3["lmm.language_model.norm.weight"] = torch.zeros(8)  # the reference's duplicate LLM copy
    mapped, _, dropped = map_ar_state_dict(qwen3, "qwen3_vl")
    assert "llm.layers.0.self_attn.q_norm.weight" in mapped and "lmm.language_model.*" in dropped
