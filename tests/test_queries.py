"""The learnable query grid: centre crop, raster order, size errors, and the queries the reference fed to its LLM."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from vgt_impl.queries import QueryGrid

FAMS = ["qwen25vl", "internvl3"]
CASES = ["gen_acc1_linear", "gen_acc4_linear", "gen_acc1_constant", "gen_acc4_constant"]


def numbered_grid(dim: int = 4, size: tuple[int, int] = (6, 6)) -> QueryGrid:
    """Queries numbered 0.. in [1, D, H, W] memory order; positions = 1000 * (channel + 1)."""
    q = QueryGrid(dim, size)
    with torch.no_grad():
        q.query_grid.copy_(torch.arange(q.query_grid.numel(), dtype=torch.float32).view_as(q.query_grid))
        q.pos_grid.copy_(1000.0 * torch.arange(1, dim + 1, dtype=torch.float32).view(1, dim, 1, 1).expand_as(q.pos_grid))
    return q


def test_centre_crop_in_raster_order():
    q = numbered_grid()
    assert q.max_size == (6, 6)
    queries, pos = q(2, 3)
    assert queries.shape == (1, 6, 4) and pos.shape == (1, 6, 4)
    # crop starts at row (6-2)//2 = 2, column (6-3)//2 = 1; tokens row-major
    assert (queries - pos)[0, :, 0].tolist() == [13.0, 14.0, 15.0, 19.0, 20.0, 21.0]
    assert (queries - pos)[0, :, 1].tolist() == [36 + v for v in (13.0, 14.0, 15.0, 19.0, 20.0, 21.0)]
    assert pos[0, 0].tolist() == [1000.0, 2000.0, 3000.0, 4000.0]  # queries include the positions


@pytest.mark.parametrize("h, w, top, left", [(6, 6, 0, 0), (1, 1, 2, 2), (5, 2, 0, 2), (3, 6, 1, 0)])
def test_crop_offsets(h, w, top, left):
    q = numbered_grid(dim=1)
    queries, pos = q(h, w)
    expected = torch.arange(36.0).view(6, 6)[top : top + h, left : left + w].reshape(-1)
    assert torch.equal((queries - pos)[0, :, 0], expected)


@pytest.mark.parametrize("h, w", [(7, 2), (2, 7), (0, 3)])
def test_sizes_beyond_the_grid(h, w):
    with pytest.raises(ValueError, match=rf"latent size {h}x{w} \({h * 28}x{w * 28} px\).*6x6 tokens \(168x168 px\)"):
        numbered_grid()(h, w)


def test_default_grid_names_the_pixel_limit():
    with torch.device("meta"):
        q = QueryGrid(8)
    assert q.max_size == (64, 64)
    with pytest.raises(ValueError, match=r"latent size 65x10 \(1820x280 px\).*64x64 tokens \(1792x1792 px\)"):
        q(65, 10)


def test_dtype_and_device_at_construction():
    q = QueryGrid(4, (3, 5), dtype=torch.bfloat16)
    assert q.query_grid.dtype == q.pos_grid.dtype == torch.bfloat16
    assert q.query_grid.shape == q.pos_grid.shape == (1, 4, 3, 5)


@pytest.mark.parametrize("fam", FAMS)
def test_queries_equal_what_the_reference_fed_its_llm(reference_dir, fam):
    """The first LLM call of each case ends with the first group's queries (metaquery + position, centre crop)."""
    ckpt = torch.load(reference_dir / fam / "ar" / "iter_5000.pth", map_location="cpu", weights_only=True)
    ema = ckpt["ema_state_dict"]
    grid = ema["module.adaptive_metaquery.max_metaquery"].float()
    q = QueryGrid(grid.shape[1], tuple(grid.shape[-2:]))
    q.load_state_dict({"query_grid": grid, "pos_grid": ema["module.adaptive_metaquery.pos_encoding.grid_embed"].float()})
    specs = json.loads((reference_dir / fam / "cases" / "cases.json").read_text())["cases"]
    for name in CASES:
        t = load_file(str(reference_dir / fam / "cases" / f"{name}.safetensors"))
        first = specs[name]["schedule"][0]
        with torch.no_grad():
            queries, _ = q(*specs[name]["latent_hw"])
        fed = t["llm.call000.inputs_embeds"][:, -len(first):]  # [2B, g, D]
        torch.testing.assert_close(fed, queries[:, first].expand_as(fed), atol=1e-6, rtol=0)
