"""Full-size models built on the meta device match the official key sets and shapes exactly, after our key maps."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from vgt_impl.ar_model import VGTARModel, ar_config_from_shapes
from vgt_impl.autoencoder import VGTAutoencoder
from vgt_impl.backbones import get_family
from vgt_impl.checkpoints import detect_variant, map_ar_state_dict
from vgt_impl.config import AEConfig


def _manifest(manifests_dir: Path, name: str):
    keys = json.loads((manifests_dir / f"{name}.full.json").read_text())
    cfg = json.loads((manifests_dir / f"{name}.full.config.json").read_text())
    sd = {k: torch.empty(tuple(v), device="meta") for k, v in keys.items()}
    return sd, cfg


def _base_dir(tmp_path: Path, cfg: dict, key: str | None) -> Path:
    """A base-model folder holding just the config.json in the hub repo's own format."""
    if key is None:  # Qwen2.5-VL native config
        raw = dict(cfg["qwen_config"], model_type="qwen2_5_vl")
    else:  # InternVL3 remote-code InternVLChatConfig
        raw = dict(cfg[key], model_type="internvl_chat")
    d = tmp_path / (key or "qwen")
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(raw))
    return d


def _shapes(sd):
    return {k: tuple(v.shape) for k, v in sd.items()}


def _assert_same(ours: dict, official: dict):
    missing, extra = sorted(set(official) - set(ours)), sorted(set(ours) - set(official))
    assert not missing and not extra, f"missing in ours: {missing[:5]}, not in official: {extra[:5]}"
    bad = {k: (ours[k], official[k]) for k in ours if ours[k] != official[k]}
    assert not bad, f"shape mismatches: {list(bad.items())[:5]}"


def _check_ae(ae_sd: dict, cfg: dict, base: Path, family: str):
    info = detect_variant(ae_sd)
    assert info.family == family and info.kind == "ae"
    fam = get_family(family)
    mapped, dropped = fam.map_ae_state_dict(ae_sd)
    assert not any(k.startswith("teacher") for k in mapped)
    config = AEConfig(family=family, hidden_size=info.ae_width, decoder_config=cfg["dcae_config"])
    with torch.device("meta"):
        model = VGTAutoencoder(config, fam.load_base_config(base))
    _assert_same(_shapes(model.state_dict()), _shapes(mapped))
    return dropped


def test_qwen_ae_manifest(manifests_dir, tmp_path):
    sd, cfg = _manifest(manifests_dir, "VGTAE_Qwen25VL")
    _check_ae(sd, cfg, _base_dir(tmp_path, cfg, None), "qwen2_5_vl")


@pytest.mark.parametrize("name, teacher", [("VLVAE_InterVL3_Tokenizer", True), ("VGTAE_InternVL3_old", False)])
def test_internvl_ae_manifest(manifests_dir, tmp_path, name, teacher):
    sd, cfg = _manifest(manifests_dir, name)
    dropped = _check_ae(sd, cfg, _base_dir(tmp_path, cfg, "internvl_chat_config"), "internvl3")
    assert ("teacher.*" in dropped) == teacher


def _check_ar(sd: dict, cfg: dict, lmm_base: Path, ae_base: Path, family: str, keep_layers: int):
    info = detect_variant(sd)
    assert info.kind == "ar" and info.family == family and info.llm_layers == keep_layers
    ar_sd, ae_sd, dropped = map_ar_state_dict(sd, family)
    fam = get_family(family)
    text = fam.load_base_config(lmm_base).text_config
    config = ar_config_from_shapes(family, text, _shapes(ar_sd), keep_layers)
    assert config.flow_head.dim == cfg["image_head"]["dim"] and config.flow_head.layers == cfg["image_head"]["layers"]
    assert config.query_grid == tuple(cfg["adaptive_metaquery_max_size"])
    with torch.device("meta"):
        model = VGTARModel(config, text)
    _assert_same(_shapes(model.state_dict()), _shapes(ar_sd))
    _check_ae(ae_sd, cfg, ae_base, family)
    return dropped


def test_qwen_ar_manifest_with_18_of_36_layers(manifests_dir, tmp_path):
    sd, cfg = _manifest(manifests_dir, "VGT_Qwen25VL")
    # The reference builds all 36 layers; the released model keeps the first half (layer_ratio 0.5).
    keep = int(cfg["qwen_config"]["text_config"]["num_hidden_layers"] * 0.5)
    layer = re.compile(r"^lmm\.(model\.)?language_model\.layers\.(\d+)\.")
    sd = {k: v for k, v in sd.items() if not ((m := layer.match(k)) and int(m.group(2)) >= keep)}
    base = _base_dir(tmp_path, cfg, None)
    dropped = _check_ar(sd, cfg, base, base, "qwen2_5_vl", keep)
    assert "lmm.language_model.*" in dropped  # the duplicate LLM copy is recognised and dropped


@pytest.mark.parametrize("name", ["VGT_InternVL3", "VGT_InternVL3_oldAE"])
def test_internvl_ar_manifest(manifests_dir, tmp_path, name):
    sd, cfg = _manifest(manifests_dir, name)
    layers = cfg["lmm_internvl_chat_config"]["llm_config"]["num_hidden_layers"]
    _check_ar(sd, cfg, _base_dir(tmp_path, cfg, "lmm_internvl_chat_config"),
              _base_dir(tmp_path, cfg, "vgt_ae_internvl_chat_config"), "internvl3", layers)
