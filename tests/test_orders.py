"""Token orders and grouping: the reference's random schedule, named orders, explicit orders and their validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vgt_impl.orders import GROUP_SCHEDULES, ORDERS, group_sizes, make_groups

FAMS = ["qwen25vl", "internvl3"]
CASES = ["gen_acc1_linear", "gen_acc4_linear", "gen_acc1_constant", "gen_acc4_constant"]


@pytest.mark.parametrize("fam", FAMS)
@pytest.mark.parametrize("case", CASES)
def test_seeded_random_order_is_the_reference_schedule(reference_dir, fam, case):
    spec = json.loads((reference_dir / fam / "cases" / "cases.json").read_text())["cases"][case]
    t = load_file(str(reference_dir / fam / "cases" / f"{case}.safetensors"))
    h, w = spec["latent_hw"]
    acc = int(spec["acc_ratio"])
    assert spec["scheduler_seed"] == 1234
    state = torch.get_rng_state()
    groups = make_groups(h, w, acc_ratio=acc, order="random", seed=1234)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is neither seeded nor advanced
    assert groups == spec["schedule"]
    assert [i for g in groups for i in g] == t["schedule_order"].tolist()
    assert [len(g) for g in groups] == t["schedule_group_sizes"].tolist()
    gen = torch.Generator().manual_seed(1234)
    assert make_groups(h, w, acc_ratio=acc, order="random", generator=gen) == groups


def test_private_generator_equals_global_seeding():
    """What the reference does (global manual_seed + randperm), reproduced without touching the global RNG."""
    for seed, n in [(0, 7), (1234, 64), (2**40 + 3, 300)]:
        state = torch.get_rng_state()
        torch.manual_seed(seed)
        expected = torch.randperm(n).tolist()
        torch.set_rng_state(state)
        h = 1 if n % 2 else 2
        assert [i for g in make_groups(h, n // h, order="random", seed=seed) for i in g] == expected


def test_group_sizes_rule():
    assert group_sizes(9, 4) == [5, 4]  # G = 9 // 4 = 2, the first 9 % 2 groups one larger
    assert group_sizes(12, 4) == [4, 4, 4]
    assert group_sizes(10, 3) == [4, 3, 3]
    assert group_sizes(16, 1) == [1] * 16
    assert group_sizes(7, 7) == [7]
    assert group_sizes(4096, 5) == [6] * 1 + [5] * 818  # sizes differ by at most one
    assert sum(group_sizes(4096, 5)) == 4096


@pytest.mark.parametrize("order", ORDERS)
def test_named_orders_are_permutations(order):
    groups = make_groups(5, 7, acc_ratio=3, order=order, seed=3)
    assert sorted(i for g in groups for i in g) == list(range(35))
    assert [len(g) for g in groups] == group_sizes(35, 3)


def test_named_order_shapes():
    assert make_groups(3, 4, order="raster", acc_ratio=4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    centre = make_groups(5, 7, order="center_out")
    assert centre[0] == [2 * 7 + 3] and sorted(g[0] for g in centre[1:5]) == [10, 16, 18, 24]  # then 4 neighbours
    assert make_groups(3, 4, order="center_out") == make_groups(3, 4, order="center_out", seed=99)  # deterministic
    flat = [g[0] for g in make_groups(3, 4, order="spiral")]
    assert flat == [0, 1, 2, 3, 7, 11, 10, 9, 8, 4, 5, 6]
    board = [g[0] for g in make_groups(2, 3, order="checkerboard")]
    assert board == [0, 2, 4, 1, 3, 5]


def test_random_without_seed_varies_and_keeps_global_rng():
    state = torch.get_rng_state()
    orders = {tuple(i for g in make_groups(8, 8, order="random") for i in g) for _ in range(3)}
    assert len(orders) > 1 and torch.equal(torch.get_rng_state(), state)


def test_explicit_orders():
    assert make_groups(2, 2, order=[[3], [0, 2], [1]], acc_ratio=1) == [[3], [0, 2], [1]]  # groups used as given
    assert make_groups(2, 3, order=[5, 4, 3, 2, 1, 0], acc_ratio=2) == [[5, 4], [3, 2], [1, 0]]  # flat: by acc_ratio
    assert make_groups(2, 3, order=torch.tensor([5, 4, 3, 2, 1, 0]), acc_ratio=4) == [[5, 4, 3, 2, 1, 0]]
    assert make_groups(2, 2, order=np.array([[1, 0], [3, 2]])) == [[1, 0], [3, 2]]


@pytest.mark.parametrize("order, match", [
    ([[0, 1], [1, 2, 3]], "token 1 appears twice"),
    ([[0, 1], [], [2, 3]], "group 1 is empty"),
    ([[0, 1, 2]], r"missing \[3\]"),
    ([[0, 1, 2, 9]], "token 9 in group 0 is out of range 0..3"),
    ([[0, 1], [2, -1]], "out of range"),
    ([[0, 1], [2, 3.0]], "not an integer token index"),
    ([0, 1, [2, 3]], "mixes token indices"),
    ([3, 2, 1], r"missing \[0\]"),
    ([], "missing"),
    ("spiral-ish", "order='spiral-ish': expected one of"),
])
def test_bad_orders(order, match):
    with pytest.raises(ValueError, match=match):
        make_groups(2, 2, order=order)


@pytest.mark.parametrize("acc", [0, -1, 5, 2.5, True])
def test_acc_ratio_bounds(acc):
    with pytest.raises(ValueError, match=r"acc_ratio=.* from 1 to the number of tokens \(4\)"):
        make_groups(2, 2, acc_ratio=acc)


def test_bad_latent_size():
    with pytest.raises(ValueError, match="latent size 0x3"):
        make_groups(0, 3)


@pytest.mark.parametrize("schedule", GROUP_SCHEDULES)
@pytest.mark.parametrize("n, acc", [(256, 1), (256, 4), (256, 16), (256, 64), (256, 256), (12, 4), (10, 3), (5, 2),
                                    (1, 1), (100, 7)])
def test_group_schedules_sum_count_and_order(schedule, n, acc):
    sizes = group_sizes(n, acc, schedule)
    assert sum(sizes) == n and min(sizes) >= 1
    assert len(sizes) == max(1, n // acc)  # the same number of LLM calls as the reference grouping
    if schedule == "equal":
        assert sizes == sorted(sizes, reverse=True) and max(sizes) - min(sizes) <= 1
    else:
        assert sizes == sorted(sizes)  # small groups first


def test_cosine_and_ramp_sizes():
    assert group_sizes(256, 16, "cosine") == [1, 4, 6, 8, 11, 13, 15, 17, 19, 20, 21, 23, 24, 24, 25, 25]
    assert group_sizes(256, 16, "ramp") == [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31]
    assert group_sizes(256, 128, "cosine") == [75, 181]  # 256 (1 - cos(pi/4)) = 75
    assert group_sizes(10, 3, "equal") == [4, 3, 3]  # the default is the reference rule


def test_make_groups_with_a_schedule():
    groups = make_groups(4, 4, acc_ratio=4, order="raster", schedule="cosine")
    assert [len(g) for g in groups] == [1, 4, 5, 6] and [i for g in groups for i in g] == list(range(16))
    flat = list(range(15, -1, -1))
    assert [len(g) for g in make_groups(4, 4, acc_ratio=4, order=flat, schedule="ramp")] == [1, 3, 5, 7]
    assert make_groups(4, 4, acc_ratio=4, order="random", seed=3) == make_groups(
        4, 4, acc_ratio=4, order="random", seed=3, schedule="equal")
    with pytest.raises(ValueError, match="explicit groups"):
        make_groups(2, 2, order=[[0, 1], [2, 3]], schedule="cosine")
    with pytest.raises(ValueError, match="group_schedule='linear'.*equal.*cosine"):
        make_groups(2, 2, schedule="linear")
