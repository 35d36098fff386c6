"""Base VLM hub checkpoints -> our LLM / VGT-AE vision encoder, in every layout the hub ships.

The loaded modules must equal transformers' own submodules of the same checkpoint (weights and outputs).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from vgt_impl.backbones import BaseTensor, get_family
from vgt_impl.backbones.base_weights import (
    INDEX_FILE,
    BaseCheckpoint,
    build_base_language_model,
    build_base_vision_encoder,
    load_base_weights,
)
from vgt_impl.backbones.qwen2_5_vl import qwen_vision_patches

QWEN = "qwen25vl/base/Qwen2.5-VL-3B-Instruct-tiny"
INTERN_1B = "internvl3/base/InternVL3-1B-tiny"
INTERN_2B = "internvl3/base/InternVL3-2B-tiny"


def _assert_same_state(ours: torch.nn.Module, theirs: torch.nn.Module):
    a, b = ours.state_dict(), theirs.state_dict()
    b = {k: v for k, v in b.items() if not k.startswith("deepstack_merger_list.")}
    assert sorted(a) == sorted(b)
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), atol=0, rtol=0, msg=k)


def _llm_outputs_match(ours, theirs, hidden: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, hidden, generator=g)
    pos = torch.arange(7).unsqueeze(0).expand(2, -1)
    with torch.no_grad():
        a = ours(inputs_embeds=x, position_ids=pos).last_hidden_state
        b = theirs(inputs_embeds=x, position_ids=pos).last_hidden_state
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def _vision_output(out, batch: int) -> torch.Tensor:
    out = getattr(out, "pooler_output", out)
    out = out[0] if isinstance(out, (tuple, list)) else out
    return out.reshape(batch, -1, out.shape[-1])


def _copy_config(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.glob("*.json"):
        if f.name != INDEX_FILE:
            shutil.copy(f, dst / f.name)
    return dst


def _rewrite_keys(src: Path, dst: Path, rename) -> Path:
    """A copy of a base folder whose checkpoint keys are renamed (another hub layout), as one safetensors file."""
    ckpt = BaseCheckpoint(src)
    tensors = {rename(k): ckpt.read(BaseTensor(k)) for k in ckpt.keys()}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(_copy_config(src, dst) / "model.safetensors"))
    return dst


# ---------------------------------------------------------------------------------------------------------- Qwen2.5-VL
def test_qwen25_flat_layout_equals_transformers(reference_dir):
    """The hub layout (model.* LLM, visual.*): our modules equal transformers' own, weights and outputs."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    base = reference_dir / QWEN
    hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(base, dtype=torch.float32).eval()
    llm = build_base_language_model(base, dtype=torch.float32).eval()
    enc = build_base_vision_encoder(base, dtype=torch.float32).eval()
    _assert_same_state(llm, hf.model.language_model)
    _assert_same_state(enc, hf.model.visual)
    _llm_outputs_match(llm, hf.model.language_model, hf.config.text_config.hidden_size)
    x = torch.rand(2, 3, 56, 84) * 2 - 1
    cfg = enc.config
    patches, grid = qwen_vision_patches(x, cfg.patch_size, cfg.spatial_merge_size, cfg.temporal_patch_size)
    with torch.no_grad():
        ours = get_family("qwen2_5_vl").vision_features(enc, x)
        theirs = _vision_output(hf.model.visual(patches, grid_thw=grid), 2)
    assert ours.shape == (2, 6, 64)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_qwen25_nested_layout_and_layer_subset(reference_dir, tmp_path):
    """transformers >= 4.52 names (model.language_model.*, model.visual.*) give the same tensors; num_layers keeps
    the first layers only."""
    base = reference_dir / QWEN

    def nested(k: str) -> str:
        return "model." + k if k.startswith("visual.") else k.replace("model.", "model.language_model.", 1)

    other = _rewrite_keys(base, tmp_path / "nested", nested)
    for part in ("llm", "vision"):
        a, b = load_base_weights(base, part), load_base_weights(other, part)
        assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    sub = load_base_weights(base, "llm", num_layers=3, dtype=torch.float32)
    assert {k.split(".")[1] for k in sub if k.startswith("layers.")} == {"0", "1", "2"}
    assert all(v.dtype == torch.float32 for v in sub.values())
    llm = build_base_language_model(base, num_layers=3)
    assert len(llm.layers) == 3 and llm.embed_tokens.weight.dtype == torch.bfloat16  # the checkpoint's dtype
    with pytest.raises(ValueError, match=r"num_layers=5: the base LLM has 4 layers"):
        load_base_weights(base, "llm", num_layers=5)


# ---------------------------------------------------------------------------------------------------------- InternVL3
def test_internvl_remote_vision_equals_the_ae_teacher(reference_dir):
    """The fixture VGT-AE's teacher.* / teacher_mlp1.* are the unperturbed InternVL3-1B weights: our base map of the
    remote-code repo (fused qkv split, mlp1) must give exactly them."""
    path = reference_dir / "internvl3" / "ae" / "vgt_ae_internvl3.pth"
    ae = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    teacher = {"encoder." + k[len("teacher."):]: v for k, v in ae.items() if k.startswith("teacher.")}
    teacher.update({"mlp1." + k[len("teacher_mlp1."):]: v for k, v in ae.items() if k.startswith("teacher_mlp1.")})
    mapped, _ = get_family("internvl3").map_ae_state_dict(teacher)
    expected = {k[len("encoder."):] if k.startswith("encoder.") else k: v for k, v in mapped.items()}
    ours = load_base_weights(reference_dir / INTERN_1B, "vision")
    assert sorted(ours) == sorted(expected)
    assert all(torch.equal(ours[k], expected[k]) for k in ours)
    enc = build_base_vision_encoder(reference_dir / INTERN_1B)
    assert enc.multi_modal_projector.linear_2.weight.shape[0] == 48  # the 1B LLM width


def _native_internvl(reference_dir, tmp_path):
    """A native (-hf) InternVL model with the fixture's sizes, saved by transformers."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    remote = get_family("internvl3").load_base_config(reference_dir / INTERN_2B)
    cfg = InternVLConfig(vision_config=dict(remote.vision_config.to_dict(), model_type="internvl_vision"),
                         text_config=dict(remote.text_config.to_dict(), model_type="qwen2"), downsample_ratio=0.5)
    torch.manual_seed(0)
    hf = InternVLForConditionalGeneration(cfg).eval()
    hf.save_pretrained(tmp_path / "native")
    return hf, tmp_path / "native"


def test_internvl_native_layouts_equal_transformers(reference_dir, tmp_path):
    hf, native = _native_internvl(reference_dir, tmp_path)
    enc = build_base_vision_encoder(native).eval()
    llm = build_base_language_model(native).eval()
    assert sorted(enc.state_dict()) == sorted(
        ["vision_tower." + k for k in hf.model.vision_tower.state_dict()]
        + ["multi_modal_projector." + k for k in hf.model.multi_modal_projector.state_dict()])
    _assert_same_state(enc.vision_tower, hf.model.vision_tower)
    _assert_same_state(enc.multi_modal_projector, hf.model.multi_modal_projector)
    _assert_same_state(llm, hf.model.language_model)
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        ours = get_family("internvl3").vision_features(enc, x)
        theirs = _vision_output(hf.model.get_image_features(pixel_values=x), 2)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    # the earlier -hf layout: language_model.model.*, vision_tower.*, multi_modal_projector.*, language_model.lm_head
    legacy = {"model.language_model.": "language_model.model.", "model.vision_tower.": "vision_tower.",
              "model.multi_modal_projector.": "multi_modal_projector.", "lm_head.": "language_model.lm_head."}

    def old(k: str) -> str:
        src = next((p for p in legacy if k.startswith(p)), None)
        return legacy[src] + k[len(src):] if src else k

    older = _rewrite_keys(native, tmp_path / "older", old)
    for part in ("llm", "vision"):
        a, b = load_base_weights(native, part), load_base_weights(older, part)
        assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------------------- Qwen3-VL
TINY_QWEN3 = {
    "model_type": "qwen3_vl", "tie_word_embeddings": True,
    "text_config": {"model_type": "qwen3_vl_text", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
                    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "vocab_size": 96,
                    "rope_theta": 5000000, "tie_word_embeddings": True, "max_position_embeddings": 4096,
                    "rope_scaling": {"mrope_interleaved": True, "mrope_section": [2, 1, 1], "rope_type": "default"}},
    "vision_config": {"model_type": "qwen3_vl", "depth": 2, "hidden_size": 16, "intermediate_size": 32,
                      "num_heads": 2, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                      "out_hidden_size": 32, "num_position_embeddings": 64, "deepstack_visual_indexes": [0, 1]},
}


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory):
    """A tiny Qwen3-VL (patch 14) saved by transformers' save_pretrained, in shards with an index."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    torch.manual_seed(0)
    hf = Qwen3VLForConditionalGeneration(Qwen3VLConfig.from_dict(TINY_QWEN3)).eval()
    d = tmp_path_factory.mktemp("qwen3vl") / "Qwen3-VL-tiny"
    hf.save_pretrained(d, max_shard_size="20KB")
    return hf, d


def test_qwen3_sharded_checkpoint_equals_transformers(tiny_qwen3):
    hf, base = tiny_qwen3
    assert (base / INDEX_FILE).is_file() and len(list(base.glob("model-*.safetensors"))) > 1
    llm = build_base_language_model(base).eval()
    enc = build_base_vision_encoder(base).eval()
    _assert_same_state(llm, hf.model.language_model)
    _assert_same_state(enc, hf.model.visual)  # minus the DeepStack mergers VGT-AE does not use
    assert not hasattr(enc, "deepstack_merger_list") or len(enc.deepstack_merger_list) == 0
    _llm_outputs_match(llm, hf.model.language_model, 32)
    x = torch.rand(2, 3, 84, 56) * 2 - 1
    patches, grid = qwen_vision_patches(x, 14, 2, 2)
    with torch.no_grad():
        ours = get_family("qwen3_vl").vision_features(enc, x)
        theirs = _vision_output(hf.model.visual(patches, grid_thw=grid), 2)
    assert ours.shape == (2, 6, 32)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    kept = load_base_weights(base, "llm", num_layers=2)
    assert not any(k.startswith("layers.2.") for k in kept) and "layers.1.mlp.up_proj.weight" in kept


# ---------------------------------------------------------------------------------------------------------- errors
def test_missing_or_broken_base_weights(reference_dir, tmp_path):
    cfg_only = _copy_config(reference_dir / QWEN, tmp_path / "cfg_only")
    with pytest.raises(FileNotFoundError, match=r"has no weights .*download the whole hub repo"):
        load_base_weights(cfg_only)
    shard = _copy_config(reference_dir / QWEN, tmp_path / "shard")
    (shard / INDEX_FILE).write_text(json.dumps({"weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(FileNotFoundError, match=r"shards listed in .* are missing: model-00001-of-00002"):
        load_base_weights(shard)
    odd = _copy_config(reference_dir / QWEN, tmp_path / "odd")
    sd = load_file(str(reference_dir / QWEN / "model.safetensors"))
    save_file(dict(sd, **{"projector.weight": torch.zeros(2)}), str(odd / "model.safetensors"))
    with pytest.raises(ValueError, match=r"unexpected key 'projector.weight' in a Qwen2.5-VL base checkpoint"):
        load_base_weights(odd, "vision")
    with pytest.raises(ValueError, match=r"part='text'"):
        load_base_weights(reference_dir / QWEN, "text")
