"""The static-KV-cache decode path and its compiled form against the eager path and the reference fixtures (fp32)."""

from __future__ import annotations

import pytest
import torch

from tests.test_generate_parity import CASES, FAMILIES, NoiseReplay, _case, _groups, _pipeline
from vgt_impl.queryar import DecodeSettings
from vgt_impl.queryar import decode as decode_tokens
from vgt_impl.static_decode import release

P = ["a red apple", "a small cabin near a quiet lake under the evening sky, soft warm light"]


def _gen(pipe, **kw):
    args = dict(height=84, width=112, num_flow_steps=4, cfg_scale=3.0, decode=False)
    args.update(kw)
    return pipe.generate(P, generator=torch.Generator().manual_seed(1), **args).latents


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("fam", list(FAMILIES))
def test_static_cache_matches_reference_fixtures(reference_dir, fam, case):
    """The recorded reference outputs, reproduced by the static path with the recorded noise."""
    common, spec, t = _case(reference_dir, fam, case)
    pipe = _pipeline(str(reference_dir), fam)
    lh, lw = spec["latent_hw"]
    replay = NoiseReplay(t)
    out = pipe.generate(
        common["prompts"], height=lh * 28, width=lw * 28, cfg_scale=float(spec["cfg_scale"]),
        cfg_schedule=spec["cfg_schedule"], num_flow_steps=int(spec["num_steps"]), acc_ratio=int(spec["acc_ratio"]),
        order=_groups(t), interleave=int(spec["acc_ratio"]) > 1, noise_fn=replay, static_cache=True, decode=False,
    )
    assert replay.i == len(replay.draws)
    torch.testing.assert_close(out.latents, t["final_latents"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("fam", list(FAMILIES))
@pytest.mark.parametrize("kw", [
    dict(acc_ratio=1), dict(acc_ratio=4, group_schedule="cosine"), dict(acc_ratio=3, mode="corrected"),
    dict(acc_ratio=2, cfg_scale=1.0, sampler="ab2", time_grid="uniform", time_shift=2.0),
    dict(acc_ratio=5, sampler="heun", cfg_schedule="constant", num_flow_steps=2),
])
def test_static_cache_equals_eager(reference_dir, fam, kw):
    pipe = _pipeline(str(reference_dir), fam)
    torch.testing.assert_close(_gen(pipe, static_cache=True, **kw), _gen(pipe, **kw), atol=1e-5, rtol=0)


def test_static_cache_with_context_and_reuse(reference_dir):
    """Editing (context tokens in the prefill) and a cache reused by a second, shorter prompt batch."""
    pipe = _pipeline(str(reference_dir), "qwen25vl")
    known = _gen(pipe, acc_ratio=3)
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[1:, 1:3] = True
    out = _gen(pipe, acc_ratio=2, context=(known, mask), static_cache=True)
    torch.testing.assert_close(out, _gen(pipe, acc_ratio=2, context=(known, mask)), atol=1e-5, rtol=0)
    assert torch.equal(out[:, :, ~mask], known[:, :, ~mask])
    one = pipe.generate(P[:1] * 2, height=84, width=112, num_flow_steps=4, cfg_scale=3.0, acc_ratio=3, decode=False,
                        generator=torch.Generator().manual_seed(5), static_cache=True).latents
    ref = pipe.generate(P[:1] * 2, height=84, width=112, num_flow_steps=4, cfg_scale=3.0, acc_ratio=3, decode=False,
                        generator=torch.Generator().manual_seed(5)).latents
    torch.testing.assert_close(one, ref, atol=1e-5, rtol=0)
    release(pipe.ar)
    assert "_vgt_static_engines" not in pipe.ar.__dict__


def _decode(pipe, settings, groups, seed=2):
    batch = pipe.encode_prompts(P)
    return decode_tokens(pipe.ar, pipe._prefix(batch, settings.cfg_scale > 1), 3, 4, groups, settings,
                         generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("fam", list(FAMILIES))
def test_compiled_step_equals_eager(reference_dir, fam):
    """The whole per-group step traced by torch.compile (fullgraph: no graph break anywhere in the LLM call or the
    flow-head loop), one graph per group size, equal to the eager path. The "aot_eager" backend traces exactly what
    inductor compiles but skips code generation, which keeps this test fast on CPU."""
    pipe = _pipeline(str(reference_dir), fam)
    groups = [[5, 1, 8], [2, 6, 0, 7, 3], [11, 9, 4, 10]]  # three sizes, three graphs
    base = dict(cfg_scale=3.0, num_flow_steps=3, interleave=True, position_rule="padded_text_offset" if fam == "qwen25vl" else "continue")
    eager = _decode(pipe, DecodeSettings(**base), groups)
    compiled = _decode(pipe, DecodeSettings(**base, compile_mode="default", compile_backend="aot_eager"), groups)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=0)
    again = _decode(pipe, DecodeSettings(**base, compile_mode="default", compile_backend="aot_eager"), groups)
    assert torch.equal(again, compiled)
    release(pipe.ar)


def test_inductor_compiled_generation_equals_eager(reference_dir):
    """generate(compile=True) end to end with real code generation (inductor, CPU), one group size."""
    pipe = _pipeline(str(reference_dir), "qwen25vl")
    kw = dict(height=56, width=56, acc_ratio=2, num_flow_steps=2, sampler="ab2", time_grid="uniform")
    torch.testing.assert_close(_gen(pipe, compile=True, **kw), _gen(pipe, **kw), atol=1e-5, rtol=0)
    release(pipe.ar)


def test_static_cache_refuses_flash_attention(reference_dir, monkeypatch):
    pipe = _pipeline(str(reference_dir), "internvl3")
    monkeypatch.setattr(pipe.ar.llm.config, "_attn_implementation", "flash_attention_2")
    with pytest.raises(ValueError, match="sdpa"):
        _gen(pipe, static_cache=True)
