"""The world's tokenizer and VLM: Qwen special tokens, the adapter's checks, QA sequences, training and the base folder."""

from __future__ import annotations

import json

import pytest
import torch

from vgt_impl.backbones import detect_family_from_dir, get_family
from vgt_impl.backbones.base_weights import build_base_language_model, build_base_vision_encoder
from vgt_impl.demo.tokenizer import DESCRIBE, SPECIAL_TOKENS, build_tokenizer
from vgt_impl.demo.vlm import (
    VLMSize,
    build_vlm,
    collate_qa,
    image_inputs,
    load_vlm,
    qa_accuracy,
    qa_forward,
    qa_sequence,
    vlm_config,
    write_base_folder,
)

TINY = VLMSize(vision_hidden=16, vision_depth=1, vision_heads=2, vision_mlp=32, text_hidden=32, text_layers=2,
               text_heads=2, text_kv_heads=1, text_head_dim=16, text_mlp=64)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tok"), vocab_size=512, n_scenes=300)


def test_tokenizer_is_qwen_like(tokenizer):
    """Byte-level BPE with every Qwen special token as one token; the family adapter accepts it; words are few tokens."""
    assert len(tokenizer) <= 512
    for t in SPECIAL_TOKENS:
        ids = tokenizer.encode(t, add_special_tokens=False)
        assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids)[0] == t
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.eos_token == "<|im_end|>"
    assert get_family("qwen3_vl").image_start_ids(tokenizer) == [tokenizer.convert_tokens_to_ids("<|vision_start|>")]
    text = "two red circles to the left of a blue square"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text and len(ids) <= 12  # world words are whole tokens or nearly
    odd = "Zebra 42 ünïcode!"  # byte level: anything round-trips
    assert tokenizer.decode(tokenizer.encode(odd, add_special_tokens=False)) == odd
    assert tokenizer.encode(DESCRIBE, add_special_tokens=False) != []


def test_qa_sequence_labels_only_answers(tokenizer):
    ids, labels = qa_sequence(tokenizer, [("what color is the star?", "red"), ("how many objects are there?", "two")],
                              image_tokens=4)
    assert len(ids) == len(labels)
    pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert ids.count(pad) == 4 and ids.count(tokenizer.convert_tokens_to_ids("<|vision_start|>")) == 1
    answers = [t for t in labels if t != -100]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.decode(answers) == "red<|im_end|>two<|im_end|>" and answers.count(end) == 2
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_start|>user\n<|vision_start|><|image_pad|>") and "<|im_start|>assistant\nred" in text


def _rows(n: int) -> list[dict]:
    from vgt_impl.demo.dataset import scene_record

    return [scene_record(3, i) for i in range(n)]


def test_vlm_learns_and_saves_base_folder(tokenizer, tmp_path):
    """A tiny Qwen3-VL: image tokens reach the answers, the loss falls on a fixed batch, the base folder round-trips
    through transformers and this project's base-weight loaders."""
    from vgt_impl.training.data import square_crop_resize

    torch.manual_seed(0)
    model = build_vlm(vlm_config(tokenizer, TINY)).train()
    rows = _rows(4)
    items = []
    for rec, image in rows:
        qa = rec["qa"][0]
        ids, labels = qa_sequence(tokenizer, [(qa["question"], qa["answer"])])
        items.append({"input_ids": ids, "labels": labels, "pixels": square_crop_resize(image, 224, "center")})
    batch = collate_qa(items, tokenizer.pad_token_id)
    pv, grid = image_inputs(batch["pixels"])
    assert pv.shape == (4 * 256, 3 * 2 * 14 * 14) and grid.tolist() == [[1, 16, 16]] * 4
    opt = torch.optim.AdamW(model.parameters(), 1e-2)
    first = None
    for _ in range(20):
        loss = qa_forward(model, batch).loss
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 0.5 * first
    with torch.no_grad():  # the answers depend on the image
        other = dict(batch, pixels=batch["pixels"].roll(1, 0))
        assert not torch.allclose(qa_forward(model, batch).logits, qa_forward(model, other).logits)
    folder = write_base_folder(model, tokenizer, tmp_path / "vlm", info={"x": 1})
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "qwen3_vl" and cfg["vision_config"]["deepstack_visual_indexes"] == []
    assert detect_family_from_dir(folder) == "qwen3_vl"
    reloaded, tok = load_vlm(folder)
    sd = reloaded.state_dict()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in sd.items())
    llm = build_base_language_model(folder, num_layers=None, dtype=torch.float32)
    enc = build_base_vision_encoder(folder, dtype=torch.float32)
    assert all(torch.equal(v, sd["model.language_model." + k]) for k, v in llm.state_dict().items() if "rotary" not in k)
    assert all(torch.equal(v, sd["model.visual." + k]) for k, v in enc.state_dict().items())
    # accuracy: exact-match greedy answers, per kind
    manifest = [{"image": str(tmp_path / f"{i}.png"), "qa": rec["qa"][:3]} for i, (rec, img) in enumerate(rows)]
    for i, (_, img) in enumerate(rows):
        img.save(tmp_path / f"{i}.png")
    acc, counts = qa_accuracy(reloaded, tok, manifest, batch_size=5)
    assert counts["all"] == 12 and set(acc) >= {"all"} and 0.0 <= acc["all"] <= 1.0
