"""AR components on their own: flow head + sampler against the reference draws, orders, queries, CFG schedules."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from vgt_impl.checkpoints import load_checkpoint_file
from vgt_impl.flow_head import FlowHead
from vgt_impl.orders import group_sizes, make_groups
from vgt_impl.queries import QueryGrid
from vgt_impl.sampling import cfg_for_group, sample_tokens

FAMS = ["qwen25vl", "internvl3"]
CASES = ["gen_acc1_linear", "gen_acc4_linear", "gen_acc1_constant", "gen_acc4_constant"]


def _head(reference_dir, fam) -> FlowHead:
    sd = load_checkpoint_file(reference_dir / fam / "ar" / "iter_5000.pth")
    net = {k[len("image_head.net."):]: v.float() for k, v in sd.items() if k.startswith("image_head.net.")}
    dim, c = net["input_proj.weight"].shape
    layers = len({k.split(".")[1] for k in net if k.startswith("res_blocks.")})
    head = FlowHead(input_dim=c, cond_dim=net["cond_embed.weight"].shape[1], dim=dim, layers=layers)
    head.load_state_dict(net, strict=True)
    return head.eval()


def _case(reference_dir, fam, name):
    spec = json.loads((reference_dir / fam / "cases" / "cases.json").read_text())["cases"][name]
    return spec, load_file(str(reference_dir / fam / "cases" / f"{name}.safetensors"))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("fam", FAMS)
def test_sampler_matches_reference_per_group(reference_dir, fam, case):
    spec, t = _case(reference_dir, fam, case)
    head = _head(reference_dir, fam)
    draws = iter(t[k] for k in sorted(k for k in t if k.startswith("noise.")))
    cfgs = t["cfg_per_group"].tolist()
    for j, cfg in enumerate(cfgs):
        out = sample_tokens(head, t[f"cond.g{j:03d}"], cfg_scale=cfg, num_steps=int(spec["num_steps"]),
                            noise_fn=lambda shape, dtype, device: next(draws))
        torch.testing.assert_close(out, t[f"sample_raw.g{j:03d}"], atol=1e-4, rtol=0)
        torch.testing.assert_close(F.layer_norm(out, (32,), eps=1e-6), t[f"latents.g{j:03d}"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("fam", FAMS)
def test_seeded_generator_replays_recorded_noise(reference_dir, fam):
    spec, t = _case(reference_dir, fam, "gen_acc4_linear")
    head = _head(reference_dir, fam)
    gen = torch.Generator().manual_seed(int(spec["noise_seed"]))
    for j, cfg in enumerate(t["cfg_per_group"].tolist()):
        out = sample_tokens(head, t[f"cond.g{j:03d}"], cfg_scale=cfg, num_steps=6, generator=gen)
        torch.testing.assert_close(out, t[f"sample_raw.g{j:03d}"], atol=1e-4, rtol=0)


def test_hoisted_conditioning_equals_plain_forward():
    torch.manual_seed(0)
    head = FlowHead(input_dim=32, cond_dim=48, dim=64, layers=3).eval()
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, t, c = torch.randn(5, 32), torch.rand(5), torch.randn(5, 48)
    plain = head(x, t, c)
    hoisted = head.forward_embedded(x, head.embed_time(t), head.embed_condition(c))
    torch.testing.assert_close(plain, hoisted, atol=1e-6, rtol=0)


def test_ode_is_deterministic_and_differs_from_sde():
    torch.manual_seed(0)
    head = FlowHead(input_dim=32, cond_dim=16, dim=32, layers=2).eval()
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.1)
    c = torch.randn(8, 16)
    ode = [sample_tokens(head, c, cfg_scale=2.0, num_steps=5, method="ode", generator=torch.Generator().manual_seed(1))
           for _ in range(2)]
    sde = sample_tokens(head, c, cfg_scale=2.0, num_steps=5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(ode[0], ode[1]) and ode[0].shape == (4, 32)
    assert (ode[0] - sde).abs().max() > 1e-3


@pytest.mark.parametrize("fam", FAMS)
@pytest.mark.parametrize("case", CASES)
def test_random_order_and_cfg_schedule_match_reference(reference_dir, fam, case):
    spec, t = _case(reference_dir, fam, case)
    h, w = spec["latent_hw"] if isinstance(spec["latent_hw"], list) else json.loads(spec["latent_hw"])
    groups = make_groups(h, w, acc_ratio=int(spec["acc_ratio"]), order="random", seed=int(spec["scheduler_seed"]))
    assert [i for g in groups for i in g] == t["schedule_order"].tolist()
    assert [len(g) for g in groups] == t["schedule_group_sizes"].tolist()
    cfgs = [cfg_for_group(spec["cfg_schedule"], float(spec["cfg_scale"]), k, len(groups)) for k in range(len(groups))]
    torch.testing.assert_close(torch.tensor(cfgs, dtype=torch.float64), t["cfg_per_group"], atol=1e-12, rtol=0)


def test_group_sizes_rule():
    assert group_sizes(9, 4) == [5, 4]
    assert group_sizes(12, 4) == [4, 4, 4]
    assert group_sizes(10, 3) == [4, 3, 3]
    assert group_sizes(7, 7) == [7]


@pytest.mark.parametrize("order", ["raster", "center_out", "checkerboard", "random"])
def test_named_orders_are_permutations(order):
    groups = make_groups(5, 7, acc_ratio=3, order=order, seed=3)
    assert sorted(i for g in groups for i in g) == list(range(35))
    if order == "center_out":
        assert groups[0][0] == 2 * 7 + 3  # the centre token first


@pytest.mark.parametrize("order, match", [
    ([[0, 1], [1, 2, 3]], "twice"),
    ([[0, 1], []], "empty"),
    ([[0, 1, 2]], "missing"),
    ([[0, 1, 2, 9]], "out of range"),
    ("spiral-ish", "order="),
])
def test_bad_orders(order, match):
    with pytest.raises(ValueError, match=match):
        make_groups(2, 2, order=order)


@pytest.mark.parametrize("acc", [0, 5, 2.5])
def test_acc_ratio_bounds(acc):
    with pytest.raises(ValueError, match="acc_ratio"):
        make_groups(2, 2, acc_ratio=acc)


def test_query_grid_centre_crop():
    q = QueryGrid(4, (6, 6))
    with torch.no_grad():
        q.query_grid.copy_(torch.arange(4 * 36, dtype=torch.float32).view(1, 4, 6, 6))
        q.pos_grid.zero_()
    queries, pos = q(2, 3)
    assert queries.shape == (1, 6, 4) and pos.shape == (1, 6, 4)
    # centre crop starts at row (6-2)//2 = 2, col (6-3)//2 = 1; raster order
    assert queries[0, :, 0].tolist() == [13.0, 14.0, 15.0, 19.0, 20.0, 21.0]
    with pytest.raises(ValueError, match="outside the query grid.*168x168 px"):
        q(7, 2)


def test_library_import_is_cheap_and_comfy_free():
    code = ("import sys, vgt_impl, vgt_impl.pipeline, vgt_impl.autoencoder, vgt_impl.editing; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('comfy', 'folder_paths', 'server', 'nodes')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
