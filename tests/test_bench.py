"""vgt bench: configurations side by side, --vs-default, the sweep, the token Frechet distance, evaluator plug-in."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from vgt_impl.bench import REFERENCE, BenchConfig, floor_seconds, random_pipeline, run_bench, speedups, weight_bytes
from vgt_impl.cli import main
from vgt_impl.quality import frechet_distance, load_evaluator, run_sweep, shapes_geneval

TINY = dict(height=56, width=56, cfg_scale=3.0)


@pytest.fixture(scope="module")
def pipe():
    return random_pipeline("small")


def fake_evaluator(pipe, *, height, width, acc_ratio, cfg_scale, **options):
    """Scores from the options alone (a stand-in for shapes-GenEval): fewer steps, lower score."""
    return {"overall": 0.5 + options.get("num_flow_steps", 30) / 100, "counting": 0.25}


def test_frechet_distance_of_known_gaussians():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200_000, 4, generator=g)
    b = torch.randn(200_000, 4, generator=g) * 2 + torch.tensor([1.0, 0.0, 0.0, 2.0])
    # |mu|^2 + tr(I + 4I - 2 * 2I) = 5 + 4
    assert frechet_distance(a, b) == pytest.approx(9.0, abs=0.05)
    assert abs(frechet_distance(a, a)) < 1e-8


def test_configs_side_by_side(pipe):
    ref = BenchConfig.of(REFERENCE, num_flow_steps=4)
    fast = BenchConfig.of("ab2-2", sampler="ab2", num_flow_steps=2, time_grid="uniform", group_schedule="cosine")
    static = BenchConfig.of("static", num_flow_steps=4, static_cache=True)
    res = run_bench(pipe, prompts=["a cat"], acc_ratios=[2, 4], configs=[ref, fast, static], **TINY)
    assert [(r.acc_ratio, r.label) for r in res] == [(a, c.label) for a in (2, 4) for c in (ref, fast, static)]
    assert [r.nfe for r in res[:3]] == [4, 2, 4] and [r.calls for r in res] == [2, 2, 2, 1, 1, 1]
    assert res[0].llm > 0 and res[0].flow_head > 0 and res[2].llm is None and "-" in res[2].row(1)
    lines = speedups(res)
    assert len(lines) == 2 and "ab2-2" in lines[0] and "vs reference" in lines[0]
    llm, head = weight_bytes(pipe)
    emb = pipe.ar.llm.get_input_embeddings().weight.numel()
    assert llm == 4 * (sum(p.numel() for p in pipe.ar.llm.parameters()) - emb)  # fp32, embedding table excluded
    assert head == 4 * sum(p.numel() for p in pipe.ar.flow_head.parameters())
    assert floor_seconds(pipe, res[0], 1.0) == pytest.approx(2 * (llm + 4 * head) / 1e9)
    assert floor_seconds(pipe, res[1], 2.0) == pytest.approx(2 * (llm + 2 * head) / 2e9)


def test_sweep_rows(pipe):
    configs = [BenchConfig.of(REFERENCE, num_flow_steps=4), BenchConfig.of("ode-2", sampler="ode", num_flow_steps=2)]
    lines = []
    rows = run_sweep(pipe, configs, prompts=["a cat"], acc_ratio=2, seeds=[0, 1], evaluator=fake_evaluator,
                     emit=lines.append, **TINY)
    assert [r["label"] for r in rows] == [REFERENCE, "ode-2"] and rows[0]["fd"] == 0.0 and rows[1]["fd"] > 0
    assert rows[1]["delta"] == pytest.approx(-0.02) and rows[1]["scores"]["counting"] == 0.25
    assert rows[1]["nfe"] == 2 and rows[1]["calls"] == 2 and len(lines) == 3 and "FD floor" in lines[0]
    with pytest.raises(ValueError, match="reference"):
        run_sweep(pipe, configs[1:], prompts=["a cat"], acc_ratio=2, **TINY)


def test_evaluator_plug_in(monkeypatch, pipe):
    loaded = load_evaluator("tests.test_bench:fake_evaluator")
    assert loaded.__name__ == "fake_evaluator" and loaded(pipe, acc_ratio=1, num_flow_steps=10, **TINY)["overall"] == 0.6
    with pytest.raises(ValueError, match="module:function"):
        load_evaluator("fake_evaluator")
    with pytest.raises(ValueError, match="cannot be loaded"):
        load_evaluator("tests.test_bench:nothing")
    monkeypatch.setitem(sys.modules, "vgt_impl.demo.geneval", None)  # not installed
    assert load_evaluator() is None
    seen = {}

    def evaluate(generator, specs, *, images_per_prompt, batch_size, seed):
        images = generator(list(specs), [7] * len(specs))
        seen.update(shape=tuple(images.shape), n=images_per_prompt)
        return types.SimpleNamespace(overall=0.75, accuracy={"colors": 0.5})

    gv = types.ModuleType("vgt_impl.demo.geneval")
    gv.prompt_set, gv.evaluate = (lambda per_category: ["a red star"] * per_category), evaluate
    monkeypatch.setitem(sys.modules, "vgt_impl.demo.geneval", gv)
    assert load_evaluator() is shapes_geneval
    monkeypatch.setattr(pipe, "generate", lambda prompts, **kw: types.SimpleNamespace(
        images=torch.zeros(len(prompts), 3, kw["height"], kw["width"])))
    scores = shapes_geneval(pipe, per_category=2, num_flow_steps=3, **TINY, acc_ratio=1)
    assert scores == {"overall": 0.75, "colors": 0.5} and seen == {"shape": (2, 3, 56, 56), "n": 2}


def test_bench_command_vs_default(capsys):
    args = ["bench", "--random", "small", "--size", "56", "--acc-ratios", "2,4", "--cfg", "3", "--preset", "ab2-8-shift2",
            "--vs-default", "--evaluator", "tests.test_bench:fake_evaluator"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("reference ") >= 2 and out.count("ab2-8-shift2 ") >= 2 and "NFE  30" in out and "NFE   8" in out
    assert "speed-up acc_ratio=  4: ab2-8-shift2" in out and "quality acc_ratio=  2: reference 0.800, ab2-8-shift2 0.580" in out
    assert main(["bench", "--random", "small", "--size", "56", "--acc-ratios", "2", "--steps", "3",
                 "--sampler", "heun", "--group-schedule", "ramp", "--bandwidth", "100"]) == 0
    out = capsys.readouterr().out
    assert "heun-3-ramp" in out and "NFE   6" in out and "the floor" in out
    assert main(["bench", "--preset", "fastest"]) == 2  # a usage error: one line, exit code 2
    assert "--preset: invalid choice: 'fastest'" in capsys.readouterr().err
