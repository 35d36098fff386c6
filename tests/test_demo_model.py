"""The built-in vgt-demo model (shipped in the package): it loads with no arguments, the CLI and the hub registry use it,
and it draws what it is asked for: shapes-GenEval on a small fixed prompt subset stays above a floor."""

import json

import numpy as np
import pytest
import torch

from vgt_impl.demo.model_folder import DEMO_DIR, demo_available

pytestmark = pytest.mark.skipif(not demo_available(), reason="the built-in vgt-demo model is not in this checkout")

# What the shipped model must score with its recorded sampling (raster order, acc_ratio 1, cfg 4.5, the `fast` preset:
# 10-step SDE) on this fixed subset. The goal is 0.8 on the whole prompt set (docs/demo.md); the model shipped now
# scores 0.417 here and 0.339 on the whole set (124 prompts x 4 images). The floor catches a broken model or sampling
# path (noise images score 0) and a shipped model much worse than this one.
FLOOR = 0.25  # ~2.5 standard errors (72 samples) below what it scores, for CPUs that round differently


@pytest.fixture(scope="module")
def pipe():
    from vgt_impl.pipeline import VGTPipeline

    return VGTPipeline.from_pretrained(DEMO_DIR)


def test_shipped_folder_is_small_and_half_precision():
    from safetensors import safe_open

    size = sum(p.stat().st_size for p in DEMO_DIR.rglob("*") if p.is_file())
    assert size < 30 * 2**20
    with safe_open(str(DEMO_DIR / "model.safetensors"), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes <= {"BF16", "F16", "I64", "BOOL"} and dtypes & {"BF16", "F16"}
    info = json.loads((DEMO_DIR / "vgt_demo.json").read_text())
    assert info["size"] == 224 and info["name"] == "vgt-demo"


def test_shapes_geneval_floor(pipe):
    from vgt_impl.demo.geneval import evaluate, limit_per_category, pipeline_generator, prompt_set

    specs = limit_per_category(prompt_set(), 6)  # the first 6 prompts of each of the six categories
    from vgt_impl.cli import default_acc_ratio
    from vgt_impl.presets import preset_options

    acc = default_acc_ratio(str(DEMO_DIR))  # the model's recommended sampling, as `vgt generate` uses it
    assert pipe.default_preset == "fast"
    report = evaluate(pipeline_generator(pipe, acc_ratio=acc, **preset_options(pipe.default_preset)), specs,
                      images_per_prompt=2, batch_size=12)
    assert len(report.samples) == 72
    print(f"shapes-GenEval subset: {report.overall:.3f} {report.accuracy}")
    assert report.overall >= FLOOR, report.accuracy


def test_cli_generate_uses_the_builtin_model(tmp_path, capsys):
    from PIL import Image

    from vgt_impl.cli import main

    out = tmp_path / "demo.png"
    assert main(["generate", "two red circles left of a blue square", "--seed", "0", "--out", str(out)]) == 0
    with Image.open(out) as img:
        assert img.size == (224, 224)
        colours = np.asarray(img.convert("RGB")).reshape(-1, 3)
        assert len(np.unique(colours, axis=0)) > 2  # a picture, not a flat fill


def test_hub_lists_the_builtin_release(tmp_path):
    from vgt_impl.hub import DEMO_RELEASE, available_releases, resolve_release

    release = available_releases()[DEMO_RELEASE]
    assert list(available_releases())[0] == DEMO_RELEASE and release.ar.builtin == DEMO_DIR
    resolved = resolve_release(release, [tmp_path], download=False)  # nothing to fetch: all of it is in the package
    assert resolved.paths["ar_checkpoint"] == DEMO_DIR / "model.safetensors" and not any(tmp_path.iterdir())


def test_same_seed_same_image(pipe):
    a = pipe.generate(["a green star"], height=224, width=224, acc_ratio=16,
                      generator=torch.Generator().manual_seed(3)).images
    b = pipe.generate(["a green star"], height=224, width=224, acc_ratio=16,
                      generator=torch.Generator().manual_seed(3)).images
    assert torch.equal(a, b)
