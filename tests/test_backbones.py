"""Base-model folders in every format the hub ships, and the backbone builders' errors."""

from __future__ import annotations

import json

import pytest
import torch

from vgt_impl.backbones import detect_family_from_dir, get_family
from vgt_impl.backbones.common import set_attn


def _write(tmp_path, name, cfg):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_qwen_flat_and_nested_configs_agree(reference_dir, tmp_path):
    fam = get_family("qwen2_5_vl")
    flat = fam.load_base_config(reference_dir / "qwen25vl" / "base" / "Qwen2.5-VL-3B-Instruct-tiny")
    raw = json.loads((reference_dir / "qwen25vl" / "base" / "Qwen2.5-VL-3B-Instruct-tiny" / "config.json").read_text())
    nested_raw = {"model_type": "qwen2_5_vl", "vision_config": raw["vision_config"],
                  "text_config": {k: v for k, v in raw.items() if k not in ("vision_config", "architectures")}}
    nested = fam.load_base_config(_write(tmp_path, "nested", nested_raw))
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size"):
        assert getattr(flat.text_config, key) == getattr(nested.text_config, key), key
    assert flat.vision_config.hidden_size == nested.vision_config.hidden_size == 48


def test_internvl_native_hf_config_builds_the_same_encoder(reference_dir, tmp_path):
    """OpenGVLab/InternVL3-*-hf (native config) and the remote-code repo give identical networks."""
    from vgt_impl.autoencoder import VGTAutoencoder

    fam = get_family("internvl3")
    remote_dir = reference_dir / "internvl3" / "base" / "InternVL3-1B-tiny"
    remote = fam.load_base_config(remote_dir)
    native_raw = {"model_type": "internvl", "downsample_ratio": 0.5, "projector_hidden_act": "gelu",
                  "vision_config": dict(remote.vision_config.to_dict(), model_type="internvl_vision"),
                  "text_config": dict(remote.text_config.to_dict(), model_type="qwen2")}
    native_dir = _write(tmp_path, "InternVL3-1B-hf", native_raw)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"):
        (native_dir / name).write_bytes((remote_dir / name).read_bytes())
    assert detect_family_from_dir(native_dir) == "internvl3"
    r = reference_dir / "internvl3"
    kw = dict(decoder_config=r / "base" / "dc-ae-f32c32-sana-1.1-diffusers-tiny")
    a = VGTAutoencoder.from_pretrained(r / "ae" / "vgt_ae_internvl3.pth", base_model=remote_dir, **kw)
    b = VGTAutoencoder.from_pretrained(r / "ae" / "vgt_ae_internvl3.pth", base_model=native_dir, **kw)
    x = torch.rand(1, 3, 112, 84) * 2 - 1  # non-square works too
    z = a.encode(x)
    assert z.shape == (1, 32, 4, 3)
    torch.testing.assert_close(z, b.encode(x), atol=1e-6, rtol=0)


def test_unsupported_or_missing_base_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        detect_family_from_dir(tmp_path)
    with pytest.raises(ValueError, match="unsupported base model type 'llava'"):
        detect_family_from_dir(_write(tmp_path, "llava", {"model_type": "llava"}))


def test_flash_attention_only_when_installed():
    import importlib.util

    class Cfg:
        pass

    if importlib.util.find_spec("flash_attn") is None:
        with pytest.raises(ImportError, match="flash-attn"):
            set_attn(Cfg(), "flash_attention_2")
    assert set_attn(Cfg(), "sdpa")._attn_implementation == "sdpa"


def test_pruned_language_model(reference_dir):
    fam = get_family("qwen2_5_vl")
    base = fam.load_base_config(reference_dir / "qwen25vl" / "base" / "Qwen2.5-VL-3B-Instruct-tiny")
    llm = fam.build_language_model(base.text_config, num_layers=2)
    assert len(llm.layers) == 2 and base.text_config.num_hidden_layers == 4  # the base config is not modified
