"""A tiny random-weight model folder with the built-in vgt-demo model's layout and shape, and the loader's built-in
release pointed at it, so the templates and the loader's built-in path are tested without the shipped weights.

Same architecture and geometry as the real one (the world's Qwen3-VL, its tokenizer and preprocessor config; patch 14
x merge 2: 224 px = 8 x 8 tokens = the whole query grid; the VGT-AE with its DC-AE config embedded in
model.safetensors; vgt_demo.json), at a few thousand parameters.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_DCAE = {  # a small DC-AE decoder (f32, 32 latent channels) for the tiny VGT-AE
    "attention_head_dim": 8, "decoder_act_fns": "silu", "decoder_block_out_channels": [4, 4, 8, 8, 16, 32],
    "decoder_block_types": ["ResBlock"] * 6, "decoder_conv_act_fn": "relu", "decoder_in_shortcut": True,
    "decoder_layers_per_block": [0, 1, 1, 1, 1, 1], "decoder_norm_types": "rms_norm",
    "decoder_qkv_multiscales": [[]] * 6, "downsample_block_type": "Conv",
    "encoder_block_out_channels": [4, 4, 8, 8, 16, 32], "encoder_block_types": ["ResBlock"] * 6,
    "encoder_layers_per_block": [0, 1, 1, 1, 1, 1], "encoder_out_shortcut": True,
    "encoder_qkv_multiscales": [[]] * 6, "in_channels": 3, "latent_channels": 32, "scaling_factor": 1.0,
    "upsample_block_type": "interpolate",
}


def make_demo_folder(root: Path, name: str = "vgt-demo") -> Path:
    """Writes ``root/name`` (the model folder) from a tiny world VLM in ``root/vlm``; seeded."""
    from vgt_impl.ar_model import VGTARModel
    from vgt_impl.autoencoder import VGTAutoencoder
    from vgt_impl.backbones import get_family
    from vgt_impl.backbones.base_weights import build_base_language_model, build_base_vision_encoder
    from vgt_impl.config import AEConfig, ARConfig, FlowHeadConfig
    from vgt_impl.demo.tokenizer import build_tokenizer
    from vgt_impl.demo.vlm import VLMSize, build_vlm, vlm_config, write_base_folder
    from vgt_impl.training.export import write_model_folder

    torch.manual_seed(0)
    base = root / "vlm"
    tok = build_tokenizer(base, vocab_size=384, n_scenes=40)
    size = VLMSize(vision_hidden=16, vision_depth=1, vision_heads=2, vision_mlp=32, text_hidden=32, text_layers=2,
                   text_heads=2, text_kv_heads=1, text_head_dim=16, text_mlp=64)
    write_base_folder(build_vlm(vlm_config(tok, size)), tok, base)
    cfg = get_family("qwen3_vl").load_base_config(base)
    ae = VGTAutoencoder(AEConfig(family="qwen3_vl", hidden_size=32, decoder_config=TINY_DCAE), cfg)
    ae.encoder = build_base_vision_encoder(base, dtype=torch.float32)
    ar = VGTARModel(ARConfig(family="qwen3_vl", hidden_size=32, query_grid=(8, 8), latent_stride=ae.stride,
                             flow_head=FlowHeadConfig(cond_dim=32, dim=32, layers=1)), cfg.text_config)
    ar.llm = build_base_language_model(base, dtype=torch.float32)
    tensors = {**ar.state_dict(), **{"ae." + k: v for k, v in ae.state_dict().items()}}
    config = {"format": "comfyui-vgt/1", "kind": "converted_ar", "family": "qwen3_vl", "latent_stride": ae.stride,
              "ae": {"family": "qwen3_vl", "latent_stride": ae.stride, "decoder_config": TINY_DCAE}}
    folder = write_model_folder(root / name, tensors, config, base_model=base)
    (folder / "vgt_demo.json").write_text(json.dumps({"name": name, "size": 224, "storage": "fp32"}) + "\n")
    return folder


def use_as_builtin(monkeypatch, folder: Path) -> None:
    """The built-in vgt-demo release of vgt_impl.hub, pointed at ``folder`` for one test."""
    from vgt_impl import hub

    release = hub.builtin_release(hub.DEMO_RELEASE, folder, "qwen3_vl", "model.safetensors")
    monkeypatch.setattr(hub, "BUILTIN_RELEASES", [release])
