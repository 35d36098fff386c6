"""Flow-matching samplers: parity with the reference's recorded draws and outputs, noise order, CFG schedules, ODE."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from tests.test_flow_head import fixture_head, random_head
from vgt_impl.sampling import CFG_SCHEDULES, cfg_for_group, embed_time_grid, sample_tokens, time_grid

FAMS = ["qwen25vl", "internvl3"]
CASES = ["gen_acc1_linear", "gen_acc4_linear", "gen_acc1_constant", "gen_acc4_constant"]


def load_case(reference_dir, fam: str, name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    spec = json.loads((reference_dir / fam / "cases" / "cases.json").read_text())["cases"][name]
    return spec, load_file(str(reference_dir / fam / "cases" / f"{name}.safetensors"))


def recorded_draws(tensors: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return [tensors[k] for k in sorted(k for k in tensors if k.startswith("noise."))]


class Replay:
    """A ``noise_fn`` handing out recorded draws in order, checking each requested shape."""

    def __init__(self, draws: list[torch.Tensor]):
        self.draws, self.calls = list(draws), 0

    def __call__(self, shape, dtype, device) -> torch.Tensor:
        draw = self.draws[self.calls]
        assert tuple(shape) == tuple(draw.shape) and dtype == torch.float32
        self.calls += 1
        return draw


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("fam", FAMS)
def test_sde_matches_reference_per_group(reference_dir, fam, case):
    spec, t = load_case(reference_dir, fam, case)
    head = fixture_head(reference_dir, fam)
    replay = Replay(recorded_draws(t))
    for j, cfg in enumerate(t["cfg_per_group"].tolist()):
        out = sample_tokens(head, t[f"cond.g{j:03d}"], cfg_scale=cfg, num_steps=int(spec["num_steps"]),
                            last_step_size=float(spec["last_step_size"]), noise_fn=replay)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, t[f"sample_raw.g{j:03d}"], atol=1e-4, rtol=0)
        torch.testing.assert_close(F.layer_norm(out, (32,), eps=1e-6), t[f"latents.g{j:03d}"], atol=1e-4, rtol=0)
    assert replay.calls == len(replay.draws) == int(spec["n_noise_draws"])


class Recorder:
    """A ``noise_fn`` drawing from a CPU generator exactly as the library does, keeping every draw."""

    def __init__(self, seed: int):
        self.gen, self.draws = torch.Generator().manual_seed(seed), []

    def __call__(self, shape, dtype, device) -> torch.Tensor:
        self.draws.append(torch.randn(shape, generator=self.gen))
        return self.draws[-1]


@pytest.mark.parametrize("fam", FAMS)
def test_seeded_generator_is_a_full_replay(reference_dir, fam):
    """A CPU generator seeded with noise_seed gives exactly the recorded draws, in the recorded order and shapes."""
    head = random_head(cond_dim=64)
    for name in CASES:
        spec, t = load_case(reference_dir, fam, name)
        rec = Recorder(int(spec["noise_seed"]))
        gen = torch.Generator().manual_seed(int(spec["noise_seed"]))
        for j in range(int(spec["num_groups"])):
            c = t[f"cond.g{j:03d}"]
            ours = sample_tokens(head, c, cfg_scale=2.0, num_steps=6, noise_fn=rec)
            torch.testing.assert_close(sample_tokens(head, c, cfg_scale=2.0, num_steps=6, generator=gen), ours,
                                       atol=0, rtol=0)
        table = spec["noise_draws"]
        assert [tuple(e["shape"]) for e in table] == [tuple(d.shape) for d in rec.draws]
        assert [e["kind"] for e in table[:6]] == ["initial_noise"] + [f"sde_w_step{i}" for i in range(5)]
        for recorded, drawn in zip(recorded_draws(t), rec.draws, strict=True):
            assert torch.equal(recorded, drawn)


@pytest.mark.parametrize("fam", FAMS)
def test_generator_reproduces_reference_samples(reference_dir, fam):
    spec, t = load_case(reference_dir, fam, "gen_acc4_linear")
    head = fixture_head(reference_dir, fam)
    gen = torch.Generator().manual_seed(int(spec["noise_seed"]))
    t_emb = embed_time_grid(head, 6)  # once per generation
    for j, cfg in enumerate(t["cfg_per_group"].tolist()):
        out = sample_tokens(head, t[f"cond.g{j:03d}"], cfg_scale=cfg, num_steps=6, generator=gen, time_embeddings=t_emb)
        torch.testing.assert_close(out, t[f"sample_raw.g{j:03d}"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("fam", FAMS)
@pytest.mark.parametrize("case", CASES)
def test_cfg_schedule_matches_reference(reference_dir, fam, case):
    spec, t = load_case(reference_dir, fam, case)
    g = int(spec["num_groups"])
    cfgs = [cfg_for_group(spec["cfg_schedule"], float(spec["cfg_scale"]), k, g) for k in range(g)]
    torch.testing.assert_close(torch.tensor(cfgs, dtype=torch.float64), t["cfg_per_group"], atol=1e-12, rtol=0)


def test_cfg_schedules():
    assert [cfg_for_group("linear", 3.0, k, 4) for k in range(4)] == [3.0, 2.5, 2.0, 1.5]
    assert [cfg_for_group("constant", 3.0, k, 4) for k in range(4)] == [3.0] * 4
    with pytest.raises(ValueError, match="cosine.*linear.*constant"):
        cfg_for_group("cosine", 3.0, 0, 4)
    assert set(CFG_SCHEDULES) == {"linear", "constant"}


def test_time_grid():
    grid = time_grid(6)
    assert grid.dtype == torch.float32
    assert torch.equal(grid, torch.linspace(0, 0.96, 6))
    assert time_grid(3, 0.1).tolist() == pytest.approx([0.0, 0.45, 0.9])


def test_without_cfg_conditions_have_one_row_per_token():
    head = random_head(cond_dim=16)
    c = torch.randn(3, 16)
    out = sample_tokens(head, c, cfg_scale=1.0, num_steps=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 32)
    # CFG with identical cond and uncond rows is the unguided sampler
    guided = sample_tokens(head, torch.cat([c, c]), cfg_scale=2.5, num_steps=4,
                           generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(guided, out, atol=1e-5, rtol=0)


def test_precomputed_time_embeddings_give_the_same_samples():
    head = random_head(cond_dim=16)
    c = torch.randn(8, 16)
    plain = sample_tokens(head, c, cfg_scale=2.0, num_steps=5, generator=torch.Generator().manual_seed(3))
    cached = sample_tokens(head, c, cfg_scale=2.0, num_steps=5, generator=torch.Generator().manual_seed(3),
                           time_embeddings=embed_time_grid(head, 5))
    assert torch.equal(plain, cached)
    with pytest.raises(ValueError, match="num_steps=6"):
        sample_tokens(head, c, cfg_scale=2.0, num_steps=6, time_embeddings=embed_time_grid(head, 5))


def test_ode_is_deterministic_given_initial_noise_and_differs_from_sde():
    head = random_head(cond_dim=16)
    c = torch.randn(8, 16)
    x0 = torch.randn(4, 32)
    calls = []

    def once(shape, dtype, device):
        calls.append(shape)
        return x0

    ode = [sample_tokens(head, c, cfg_scale=2.0, num_steps=5, method="ode", noise_fn=once) for _ in range(2)]
    assert torch.equal(ode[0], ode[1]) and ode[0].shape == (4, 32)
    assert len(calls) == 2  # one draw (the initial noise) per call
    sde = sample_tokens(head, c, cfg_scale=2.0, num_steps=5, generator=torch.Generator().manual_seed(1))
    assert (ode[0] - sde).abs().max() > 1e-3


def test_low_precision_head_samples_in_fp32():
    head32 = random_head(cond_dim=16)
    head16 = random_head(cond_dim=16).to(torch.bfloat16)
    c = torch.randn(8, 16)
    out16 = sample_tokens(head16, c, cfg_scale=2.0, num_steps=5, generator=torch.Generator().manual_seed(2))
    out32 = sample_tokens(head32, c, cfg_scale=2.0, num_steps=5, generator=torch.Generator().manual_seed(2))
    assert out16.dtype == torch.float32
    assert (out16 - out32).abs().max() < 0.1


@pytest.mark.parametrize("kwargs, match", [
    (dict(cfg_scale=2.0, num_steps=4, method="rk45"), "sde.*ab2"),
    (dict(cfg_scale=2.0, num_steps=4, time_grid="cosine"), "reference.*uniform"),
    (dict(cfg_scale=2.0, num_steps=4, time_shift=0.0), "time_shift"),
    (dict(cfg_scale=2.0, num_steps=0), "num_steps"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_tokens(random_head(cond_dim=16), torch.randn(4, 16), **kwargs)


def test_odd_condition_rows_with_cfg():
    with pytest.raises(ValueError, match=r"\[2N, D\]"):
        sample_tokens(random_head(cond_dim=16), torch.randn(3, 16), cfg_scale=2.0, num_steps=4)
