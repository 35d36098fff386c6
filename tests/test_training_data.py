"""Training data: sources (folder / JSONL / tar shards), crops, the sharded resumable order, prompts, latent cache."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch
from training_helpers import make_images, model_section, one_thread, run_config, tiny_raw

from vgt_impl.training.ar_data import ARDataset, PromptTokens, collate_ar
from vgt_impl.training.data import (
    ImageCaptionDataset,
    SampleKey,
    StepSampler,
    expand_sources,
    load_records,
    square_crop_resize,
)

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def _as_jsonl_and_tar(folder: Path, tmp: Path) -> tuple[Path, Path]:
    rows, tar_path = [], tmp / "shard-000.tar"
    with tarfile.open(tar_path, "w") as tf:
        for i, img in enumerate(sorted(folder.glob("*.png"))):
            cap = img.with_suffix(".txt").read_text()
            rows.append(json.dumps({"image": f"images/{img.name}", "caption": cap}))
            tf.add(img, arcname=f"{i:06d}.png")
            tf.add(img.with_suffix(".txt"), arcname=f"{i:06d}.txt")
    manifest = tmp / "manifest.jsonl"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest, tar_path


def test_sources_agree(tmp_path):
    folder = make_images(tmp_path / "images", 5)
    manifest, shard = _as_jsonl_and_tar(folder, tmp_path)
    sets = [load_records([str(s)]) for s in (folder, manifest, shard)]
    assert [len(s) for s in sets] == [5, 5, 5]
    datasets = [ImageCaptionDataset(recs, 112, "center") for recs in sets]
    key = SampleKey(index=3, slot=0, seed=1)
    items = [d[key] for d in datasets]
    assert items[0]["caption"] == items[1]["caption"] == items[2]["caption"]
    for it in items[1:]:
        assert torch.equal(it["pixels"], items[0]["pixels"])
    x = items[0]["pixels"]
    assert x.shape == (3, 112, 112) and x.min() >= -1 and x.max() <= 1
    assert len(load_records([str(folder), str(manifest)])) == 10


def test_source_errors(tmp_path):
    with pytest.raises(ValueError, match="data.source is empty"):
        load_records([])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_records([str(tmp_path / "nope")])
    with pytest.raises(FileNotFoundError, match="no file matches"):
        expand_sources([str(tmp_path / "x-*.tar")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "a.png"}\n')
    with pytest.raises(ValueError, match="lacks 'image' or 'caption'"):
        load_records([str(bad)])
    with pytest.raises(ValueError, match="multiple of 28"):
        ImageCaptionDataset([], 100)
    assert expand_sources([str(tmp_path / "s-{08..10}.tar")]) == [str(tmp_path / f"s-{i:02d}.tar") for i in (8, 9, 10)]


def test_square_crops():
    from PIL import Image

    img = Image.new("RGB", (300, 100))
    img.paste((255, 0, 0), (0, 0, 100, 100))  # left third red, rest black
    center = square_crop_resize(img, 56, "center")
    assert center.shape == (3, 56, 56) and center[0].max() < -0.99  # the middle square is black
    offsets = {float(square_crop_resize(img, 56, "random", torch.Generator().manual_seed(s))[0].mean()) for s in range(8)}
    assert len(offsets) > 1  # the random crop moves with the seed ...
    a = square_crop_resize(img, 56, "random", torch.Generator().manual_seed(3))
    assert torch.equal(a, square_crop_resize(img, 56, "random", torch.Generator().manual_seed(3)))  # ... reproducibly


def test_order_is_sharded_resumable_and_covers_each_epoch():
    one = StepSampler(10, seed=7, batch_size=4, num_processes=1)
    two = [StepSampler(10, seed=7, batch_size=2, num_processes=2, rank=r) for r in (0, 1)]
    accum = StepSampler(10, seed=7, batch_size=2, num_processes=1, grad_accum=2)
    for step in range(6):
        full = one.keys(step, 0)
        assert two[0].keys(step, 0) + two[1].keys(step, 0) == full  # 2 processes = 1 process, same global batch
        assert accum.keys(step, 0) + accum.keys(step, 1) == full  # accumulation = the same samples too
    slots = [k for s in range(5) for k in one.keys(s, 0)]  # 20 slots = 2 epochs of 10
    assert sorted(k.index for k in slots[:10]) == list(range(10)) == sorted(k.index for k in slots[10:])
    assert [k.index for k in slots[:10]] != [k.index for k in slots[10:]]  # a new permutation per epoch
    it = iter(StepSampler(10, seed=7, batch_size=4, start_step=3))
    assert next(it) == one.keys(3, 0) and next(it) == one.keys(4, 0)  # resuming at step 3 continues the order
    assert len({k.seed for k in slots}) == 20


class _Tok:
    """A tokenizer stand-in: one id per character; '<' opens a special token up to '>'."""

    pad_token_id = 0

    def encode(self, text, add_special_tokens=True):
        out, i = [], 0
        while i < len(text):
            if text[i] == "<" and ">" in text[i:]:
                j = text.index(">", i)
                out.append(1000 + len(text[i:j]))
                i = j + 1
            else:
                out.append(ord(text[i]))
                i += 1
        return out


def test_prompt_tokens_truncation_and_cfg_dropout():
    tok = _Tok()
    full = PromptTokens(tok, 10_000)("a long caption " * 30)
    ref = PromptTokens(tok, 40, "reference")("a long caption " * 30)
    cap = PromptTokens(tok, 40, "caption")("a long caption " * 30)
    assert ref == full[:40]  # the reference cuts the tail, template end included
    assert len(cap) == 40 and cap[-3:] == full[-3:] and cap[:20] == full[:20]  # template end kept
    assert PromptTokens(tok, 40)(None) == tok.encode("<|im_start|>user\nGenerate an image.<|im_end|>\n<|im_start|>assistant\n")[:40]
    base = [{"caption": "x", "slot": i} for i in range(2000)]

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(base)

        def __getitem__(self, key):
            return dict(base[key.index])

    ds = ARDataset(DS(), PromptTokens(tok, 256), cfg_dropout=0.1)
    drops = [ds[SampleKey(i, i, 1000 + i)]["unconditional"] for i in range(2000)]
    assert 0.08 < sum(drops) / 2000 < 0.12
    assert drops == [ds[SampleKey(i, i, 1000 + i)]["unconditional"] for i in range(2000)]
    batch = collate_ar([{"input_ids": [5, 6, 7], "unconditional": False}, {"input_ids": [8], "unconditional": True}], 0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[True, True, True], [True, False, False]]


def test_latent_cache_matches_on_the_fly_encoding(reference_dir, tmp_path):
    """The cache holds what the frozen VGT-AE encodes; training from it gives the on-the-fly loss; another AE is refused."""
    from vgt_impl.training.ar_task import ARTask
    from vgt_impl.training.data import LatentCacheDataset
    from vgt_impl.training.latent_cache import build_cache

    images = make_images(tmp_path / "images", 5)
    raw = tiny_raw(reference_dir, tmp_path / "run", {"source": [str(images)], "crop": "center"})
    cfg = run_config(raw)
    index = build_cache(cfg, tmp_path / "cache", batch_size=2, dtype="fp32", shard_size=3)
    assert index["count"] == 5 and [s["count"] for s in index["shards"]] == [3, 2] and index["latent_shape"] == [32, 4, 4]
    cached = LatentCacheDataset(tmp_path / "cache")
    task = ARTask.build(cfg)
    pixels_ds = task.build_dataset(cfg.data)
    cfg.data.latent_cache = str(tmp_path / "cache")
    cache_ds = task.build_dataset(cfg.data)
    keys = [SampleKey(i, i, 100 + i) for i in (4, 1)]
    a = task.collate([pixels_ds[k] for k in keys])
    b = task.collate([cache_ds[k] for k in keys])
    assert torch.equal(a["input_ids"], b["input_ids"])
    torch.testing.assert_close(b["latents"], task.ae.encode(a["pixels"]), atol=1e-5, rtol=0)
    with torch.no_grad():
        la, _ = task.loss("main", a, 0)
        lb, _ = task.loss("main", b, 0)
    torch.testing.assert_close(la, lb, atol=1e-5, rtol=0)
    assert cached[SampleKey(2, 0, 0)]["caption"] == (images / "img02.txt").read_text()
    half = build_cache(cfg, tmp_path / "cache16", dtype="fp16")
    assert half["dtype"] == "fp16"
    lat16 = LatentCacheDataset(tmp_path / "cache16")[SampleKey(4, 0, 0)]["latents"]
    torch.testing.assert_close(lat16, cached[SampleKey(4, 0, 0)]["latents"], atol=5e-3, rtol=0)
    qwen = dict(raw, model=model_section(reference_dir, "qwen25vl"))
    qwen["data"] = dict(raw["data"], latent_cache=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="another VGT-AE"):
        qtask = ARTask.build(run_config(qwen))
        qtask.build_dataset(run_config(qwen).data)


def test_unreadable_images_raise_or_skip(tmp_path):
    folder = make_images(tmp_path / "images", 3)
    (folder / "img01.png").write_bytes(b"not a png")
    recs = load_records([str(folder)])
    with pytest.raises(OSError, match="img01.png.*data.on_error=skip"):
        ImageCaptionDataset(recs, 56, "center")[SampleKey(1, 0, 0)]
    item = ImageCaptionDataset(recs, 56, "center", on_error="skip")[SampleKey(1, 0, 0)]
    assert item["key"] == "img02.png" and item["pixels"].shape == (3, 56, 56)


def test_latent_cache_with_another_encoder(tmp_path):
    """Any frozen encoder (a plain VAE for a baseline) can fill a cache: the cache records which one."""
    from torch import nn

    from vgt_impl.training.config import build_run_config
    from vgt_impl.training.data import LatentCacheDataset
    from vgt_impl.training.latent_cache import build_cache

    class Pool(nn.Module):
        stride, family = 32, "plain-vae"

        def __init__(self):
            super().__init__()
            self.proj = nn.Conv2d(3, 32, kernel_size=32, stride=32)

        def encode(self, x):
            return self.proj(x)

    images = make_images(tmp_path / "images", 3)
    cfg = build_run_config({"data": {"source": [str(images)], "image_size": 64, "crop": "center"}})
    enc = Pool()
    index = build_cache(cfg, tmp_path / "cache", encoder=enc, dtype="fp32")
    assert index["latent_shape"] == [32, 2, 2] and index["ae_family"] == "plain-vae"
    item = LatentCacheDataset(tmp_path / "cache")[SampleKey(1, 0, 0)]
    pixels = ImageCaptionDataset(load_records([str(images)]), 64, "center", stride=32)[SampleKey(1, 0, 0)]["pixels"]
    with torch.no_grad():
        torch.testing.assert_close(item["latents"], enc.encode(pixels[None])[0], atol=1e-5, rtol=0)
