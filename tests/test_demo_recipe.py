"""`vgt demo train`: the whole recipe at smoke size (tiny networks, two steps per stage) wires up, every stage's output
loads, a finished stage is skipped on a second run, and the exported model folder generates an image."""

import json
import os

import pytest
import torch

from vgt_impl.demo.recipe import STAGES, Recipe, RecipeConfig


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe")
    timings = Recipe(RecipeConfig(out, smoke=True, threads=1)).run()
    return out, timings


def test_every_stage_runs_and_records_its_time(smoke_run):
    out, timings = smoke_run
    assert list(timings["stages"]) == list(STAGES)
    assert all(t["wall_s"] >= 0 and t["threads"] == 1 for t in timings["stages"].values())
    on_disk = json.loads((out / "timings.json").read_text())
    assert on_disk["stages"].keys() == timings["stages"].keys()
    recipe = Recipe(RecipeConfig(out, smoke=True, threads=1))
    assert all(recipe.done(s) for s in STAGES)
    umask = os.umask(0)
    os.umask(umask)
    modes = {str(f.relative_to(out)): oct(f.stat().st_mode & 0o777) for f in out.rglob("*.safetensors")}
    assert any("state" in f and "ema" in f for f in modes) and any("cache" in f for f in modes)
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes  # weights, EMA, cache: not safetensors' 0600
    info = json.loads((out / "vgt-demo" / "vgt_demo.json").read_text())
    assert info["name"] == "vgt-demo" and info["size"] == 224 and info["storage"] == "bf16"
    assert info["ar"] == "ar_long" and info["decoder"]  # the continued AR, with the tuned decoder swapped in
    resumed = [json.loads(x) for x in (out / "runs" / "ar_long" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed] == [3, 4]  # continued from the ar run's step 2, not from scratch


def test_a_second_run_skips_finished_stages(smoke_run):
    out, _ = smoke_run
    before = (out / "vgt-demo" / "model.safetensors").stat().st_mtime_ns
    seen = []
    Recipe(RecipeConfig(out, smoke=True, threads=1)).run(progress=lambda stage, what: seen.append((stage, what)))
    assert seen == [(s, "done already") for s in STAGES]
    assert (out / "vgt-demo" / "model.safetensors").stat().st_mtime_ns == before


def test_the_stage_outputs_load(smoke_run):
    from transformers import AutoTokenizer

    from vgt_impl.autoencoder import VGTAutoencoder
    from vgt_impl.demo.vlm import load_vlm
    from vgt_impl.pipeline import VGTPipeline

    out, _ = smoke_run
    tok = AutoTokenizer.from_pretrained(out / "vlm", trust_remote_code=False)
    assert tok.convert_tokens_to_ids("<|image_pad|>") != tok.unk_token_id
    assert load_vlm(out / "vlm")[0].config.model_type == "qwen3_vl"
    ae = VGTAutoencoder.from_pretrained(out / "ae2")
    z = ae.encode(torch.zeros(1, 3, 224, 224))
    assert z.shape == (1, 32, 8, 8)
    pipe = VGTPipeline.from_pretrained(out / "vgt-demo")
    assert pipe.dtype == torch.float32 and pipe.latent_stride == 28  # half-precision storage, loaded in fp32 on CPU
    res = pipe.generate(["a red circle"], height=224, width=224, num_flow_steps=2, acc_ratio=64,
                        generator=torch.Generator().manual_seed(0))
    assert res.images.shape == (1, 3, 224, 224) and bool(torch.isfinite(res.images).all())


def test_unknown_stage_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown stage 'vae'"):
        Recipe(RecipeConfig(tmp_path, smoke=True)).run(["vae"])
