"""Qwen3-VL: the real 2B / 4B configs map on the meta device; a tiny patch-14 model runs end to end.

The tiny model mirrors the demo model's shape (Qwen3-VL architecture, patch 14 x merge 2: 224 px = 8x8 tokens) and is
built from a base folder saved by transformers, with a small tokenizer that has the chat and vision special tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vgt_impl.ar_model import VGTARModel
from vgt_impl.autoencoder import DCAE_F32C32, VGTAutoencoder
from vgt_impl.backbones import detect_family_from_dir, get_family, latent_stride_of
from vgt_impl.backbones.base_weights import base_key_map, build_base_language_model, build_base_vision_encoder
from vgt_impl.checkpoints import detect_variant, save_converted
from vgt_impl.config import AEConfig, ARConfig, FlowHeadConfig

DATA = Path(__file__).parent / "data" / "qwen3_vl"
REAL = ["Qwen3-VL-2B-Instruct", "Qwen3-VL-4B-Instruct"]


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _numel(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(torch.Size(s).numel() for s in shapes.values())


# ---------------------------------------------------------------------------------------------------------- real configs
@pytest.mark.parametrize("name", REAL)
def test_real_config_maps_on_meta(name):
    """Our LLM / vision encoder equal the hub checkpoint's tensors through the base map, names and shapes."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    base = DATA / name
    fam = get_family(detect_family_from_dir(base))
    cfg = fam.load_base_config(base)
    assert fam.name == "qwen3_vl" and fam.latent_stride(cfg) == 32 == latent_stride_of(base)
    assert fam.pixel_norm(cfg) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    with torch.device("meta"):
        hf = Qwen3VLForConditionalGeneration(Qwen3VLConfig.from_dict(json.loads((base / "config.json").read_text())))
        llm = fam.build_language_model(cfg.text_config)
        enc = fam.build_vision_encoder(cfg)
    hub = _shapes(hf)
    assert hf.config.tie_word_embeddings and "lm_head.weight" in hub  # tied: save_pretrained writes no lm_head
    for keys in (list(hub), [k for k in hub if k != "lm_head.weight"]):  # with and without the tied head
        for part, ours in (("llm", llm), ("vision", enc)):
            kmap = base_key_map(fam, keys, part)
            mapped = {k: ref.shape(hub[ref.source]) for k, ref in kmap.tensors.items()}
            assert mapped == _shapes(ours), part
    llm_map, vis_map = base_key_map(fam, list(hub), "llm"), base_key_map(fam, list(hub), "vision")
    used = {r.source for r in llm_map.tensors.values()} | {r.source for r in vis_map.tensors.values()}
    left = {k for k in hub if k not in used}
    assert left == {"lm_head.weight"} | {k for k in hub if k.startswith("model.visual.deepstack_merger_list.")}
    assert "model.visual.deepstack_merger_list.*" in vis_map.dropped
    # every hub parameter is ours, or the tied head, or a DeepStack merger VGT-AE does not use
    deepstack = _numel({k: hub[k] for k in left if "deepstack" in k})
    assert sum(p.numel() for p in hf.parameters()) == _numel(_shapes(llm)) + _numel(_shapes(enc)) + deepstack


@pytest.mark.parametrize("name", REAL)
def test_real_config_vgt_models_on_meta(name):
    """VGT-AE (full vision tower, no DeepStack) and VGT-AR (first half of the LLM) build at full size."""
    base = DATA / name
    fam = get_family("qwen3_vl")
    cfg = fam.load_base_config(base)
    text, vision = cfg.text_config, cfg.vision_config
    with torch.device("meta"):
        ae = VGTAutoencoder(AEConfig(family="qwen3_vl", hidden_size=vision.out_hidden_size,
                                     decoder_config=DCAE_F32C32), cfg)
        keep = text.num_hidden_layers // 2
        ar = VGTARModel(ARConfig(family="qwen3_vl", num_layers=keep, hidden_size=text.hidden_size,
                                 latent_stride=fam.latent_stride(cfg),
                                 flow_head=FlowHeadConfig(cond_dim=text.hidden_size)), text)
    assert ae.stride == ar.latent_stride == 32
    assert len(ar.llm.layers) == keep and ae.encoder.merger.linear_fc2.out_features == text.hidden_size
    assert len(getattr(ae.encoder, "deepstack_merger_list", [])) == 0
    sd = {**{"ae." + k: v for k, v in ae.state_dict().items()}, **ar.state_dict()}
    info = detect_variant(sd)
    assert info.kind == "converted_ar" and info.family == "qwen3_vl" and info.llm_layers == keep
    assert info.extra["ae"]["vision_layers"] == vision.depth


# ---------------------------------------------------------------------------------------------------------- tiny model
TINY = {
    "model_type": "qwen3_vl", "tie_word_embeddings": True,
    "text_config": {"model_type": "qwen3_vl_text", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "vocab_size": 320,
                    "rope_theta": 5000000, "tie_word_embeddings": True, "max_position_embeddings": 4096,
                    "rope_scaling": {"mrope_interleaved": True, "mrope_section": [2, 1, 1], "rope_type": "default"}},
    "vision_config": {"model_type": "qwen3_vl", "depth": 2, "hidden_size": 16, "intermediate_size": 32,
                      "num_heads": 2, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                      "out_hidden_size": 32, "num_position_embeddings": 256, "deepstack_visual_indexes": [1]},
}
TINY_DCAE = dict(DCAE_F32C32, attention_head_dim=8, decoder_block_out_channels=[8, 8, 8, 16, 16, 32],
                 decoder_layers_per_block=[1, 1, 1, 1, 1, 1], encoder_block_out_channels=[8, 8, 8, 16, 16, 32],
                 encoder_layers_per_block=[1, 1, 1, 1, 1, 1])
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]


def _tokenizer(folder: Path) -> None:
    """A small byte-level BPE with the Qwen chat and vision special tokens, saved as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["Generate an image: a red circle left of a blue square", "Generate an image.", "user assistant"] * 4
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny Qwen3-VL base folder (weights + tokenizer) and a VGT-AR/AE made from it in our converted layout."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    root = tmp_path_factory.mktemp("qwen3tiny")
    base = root / "Qwen3-VL-tiny"
    torch.manual_seed(0)
    Qwen3VLForConditionalGeneration(Qwen3VLConfig.from_dict(TINY)).save_pretrained(base)
    _tokenizer(base)
    fam = get_family("qwen3_vl")
    cfg = fam.load_base_config(base)
    ae = VGTAutoencoder(AEConfig(family="qwen3_vl", hidden_size=32, decoder_config=TINY_DCAE), cfg)
    ae.encoder = build_base_vision_encoder(base, dtype=torch.float32)
    ar = VGTARModel(ARConfig(family="qwen3_vl", hidden_size=32, query_grid=(10, 10), latent_stride=ae.stride,
                             flow_head=FlowHeadConfig(cond_dim=32, dim=32, layers=2)), cfg.text_config)
    ar.llm = build_base_language_model(base, dtype=torch.float32)
    ae_path = save_converted(root / "vgt_ae_qwen3vl_tiny.safetensors", ae.state_dict(),
                             {"format": "comfyui-vgt/1", "kind": "ae", "family": "qwen3_vl",
                              "latent_stride": ae.stride, "ae": ae.config_dict()})
    sd = {**ar.state_dict(), **{"ae." + k: v for k, v in ae.state_dict().items()}}
    ar_path = save_converted(root / "vgt_qwen3vl_tiny.safetensors", sd,
                             {"format": "comfyui-vgt/1", "kind": "converted_ar", "family": "qwen3_vl",
                              "latent_stride": ar.latent_stride})
    return {"base": base, "ae": ae_path, "ar": ar_path, "decoder": TINY_DCAE}


def test_tiny_patch14_end_to_end(tiny):
    """224 px = 8x8 tokens: encode, decode, generate (reference and corrected), edit."""
    from vgt_impl import VGTPipeline

    ae = VGTAutoencoder.from_pretrained(tiny["ae"], base_model=tiny["base"], decoder_config=tiny["decoder"])
    assert ae.family == "qwen3_vl" and ae.stride == 28
    x = torch.rand(1, 3, 224, 224) * 2 - 1
    z = ae.encode(x)
    assert z.shape == (1, 32, 8, 8) and ae.decode(z).shape == (1, 3, 224, 224)
    pipe = VGTPipeline.from_pretrained(tiny["ar"], base_model=tiny["base"], decoder_config=tiny["decoder"],
                                       dtype=torch.float32)
    assert pipe.latent_stride == 28 and pipe.ae.stride == 28
    assert pipe._start_ids == [pipe.tokenizer.convert_tokens_to_ids("<|vision_start|>")]
    for mode, decode in (("reference", True), ("corrected", False)):
        out = pipe.generate(["a red circle", "a blue square left of a green star"], height=224, width=224,
                            cfg_scale=2.0, num_flow_steps=2, acc_ratio=16, mode=mode, decode=decode,
                            generator=torch.Generator().manual_seed(0))
        assert out.latents.shape == (2, 32, 8, 8) and torch.isfinite(out.latents).all()
        assert out.images is None if not decode else out.images.shape == (2, 3, 224, 224)
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, 2:5, 2:5] = True
    edit = pipe.generate(["a red circle"], height=224, width=224, cfg_scale=1.0, num_flow_steps=2, acc_ratio=4,
                         context=(z, mask), decode=False, generator=torch.Generator().manual_seed(1))
    assert torch.equal(edit.latents[:, :, ~mask[0]], z[:, :, ~mask[0]])  # known tokens come back bit-identical
    with pytest.raises(ValueError, match=r"height=230 is not a multiple of 28"):
        pipe.generate(["a"], height=230, width=224)


def test_tiny_cached_steps_continue_each_row(tiny):
    """Reference mode for Qwen3-VL: every cached call continues each row from its own last position."""
    from vgt_impl import VGTPipeline

    pipe = VGTPipeline.from_pretrained(tiny["ar"], base_model=tiny["base"], decoder_config=tiny["decoder"],
                                       dtype=torch.float32)
    calls = []
    forward = pipe.ar.llm.forward

    def spy(*args, **kwargs):
        calls.append(kwargs["position_ids"].clone())
        return forward(*args, **kwargs)

    pipe.ar.llm.forward = spy
    pipe.generate(["a", "a blue square left of a green star"], height=56, width=56, cfg_scale=2.0,
                  num_flow_steps=2, acc_ratio=1, decode=False, generator=torch.Generator().manual_seed(0))
    assert len(calls) == 4
    first_last = calls[0][:, -1]
    assert len(set(first_last.tolist())) > 1  # rows of different prompt lengths end at different positions
    for prev, cur in zip(calls, calls[1:]):
        assert torch.equal(cur[:, 0], prev[:, -1] + 1)


def test_tiny_stride_mismatch_and_tokenizer_errors(tiny, tmp_path):
    from vgt_impl import VGTPipeline

    base32 = tmp_path / "patch16"
    base32.mkdir()
    raw = json.loads((tiny["base"] / "config.json").read_text())
    raw["vision_config"]["patch_size"] = 16
    (base32 / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"latent stride of 28 px per token but the base model folder .* gives 32"):
        VGTPipeline.from_pretrained(tiny["ar"], base_model=base32)
    fam = get_family("qwen3_vl")

    class NoMarker:
        def encode(self, text, add_special_tokens=True):
            return [1, 2, 3]

        def convert_ids_to_tokens(self, ids):
            return ["<|", "vision", "_start|>"]

    with pytest.raises(ValueError, match=r"has no '<\|vision_start\|>' token"):
        fam.image_start_ids(NoMarker())


def test_tiny_cli_inspect_and_generate(tiny, tmp_path, capsys):
    from vgt_impl.cli import main

    assert main(["inspect", str(tiny["ar"])]) == 0
    out = capsys.readouterr().out
    assert "family:    Qwen3-VL (qwen3_vl)" in out and "latent_stride:    28 px per token" in out
    assert "Qwen3-VL" in out.split("needs:")[1]
    assert main(["generate", "a red circle", "--ar", str(tiny["ar"]), "--base-model", str(tiny["base"]),
                 "--size", "100", "--dtype", "fp32"]) == 2
    assert "--size=100 is not a multiple of 28: use 84 or 112" in capsys.readouterr().err
    png = tmp_path / "x.png"
    assert main(["generate", "a red circle", "--ar", str(tiny["ar"]), "--base-model", str(tiny["base"]),
                 "--decoder", str(_write_json(tmp_path / "dcae.json", tiny["decoder"])), "--size", "56",
                 "--steps", "2", "--acc-ratio", "4", "--seed", "0", "--dtype", "fp32", "--device", "cpu",
                 "--out", str(png)]) == 0
    from PIL import Image

    with Image.open(png) as img:
        assert img.size == (56, 56)


def _write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def test_stride_32_needs_no_resize(tmp_path, monkeypatch):
    """Patch 16 x merge 2 = 32 px per token: the DC-AE's x32 output is the image size, nothing is resized."""
    import torch.nn.functional as F

    raw = json.loads(json.dumps(TINY))
    raw["vision_config"]["patch_size"] = 16
    (tmp_path / "config.json").write_text(json.dumps(raw))
    cfg = get_family("qwen3_vl").load_base_config(tmp_path)
    torch.manual_seed(0)
    ae = VGTAutoencoder(AEConfig(family="qwen3_vl", hidden_size=32, decoder_config=TINY_DCAE), cfg).eval()
    assert ae.stride == 32 and ae.config.latent_stride == 32
    z = ae.encode(torch.rand(1, 3, 64, 96) * 2 - 1)
    assert z.shape == (1, 32, 2, 3)

    resized, interpolate = [], F.interpolate

    def spy(*args, **kwargs):  # the DC-AE upsamples by scale_factor; a resize to a size would be ours
        resized.append(kwargs.get("size"))
        return interpolate(*args, **kwargs)

    monkeypatch.setattr(F, "interpolate", spy)
    assert ae.decode(z).shape == (1, 3, 64, 96)
    assert resized and not any(resized)
    with pytest.raises(ValueError, match=r"image size 56x96 is not a multiple of 32: use height 32 or 64"):
        ae.encode(torch.zeros(1, 3, 56, 96))
    with pytest.raises(ValueError, match=r"AEConfig.latent_stride=28 but the base VLM's vision config gives 32"):
        VGTAutoencoder(AEConfig(family="qwen3_vl", hidden_size=32, decoder_config=TINY_DCAE, latent_stride=28), cfg)
