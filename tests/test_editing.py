"""Editing helpers: pixel mask -> token mask rules, variation masks, outpaint canvas, compositing."""

from __future__ import annotations

import pytest
import torch

from vgt_impl.editing import (
    check_context,
    composite,
    context_groups,
    outpaint_canvas,
    pixel_mask_to_tokens,
    variation_mask,
)


def test_token_mask_rules():
    m = torch.zeros(56, 84)
    m[0:10, 0:10] = 1  # 100 of 784 px in token (0, 0)
    m[28:56, 28:56] = 1  # all of token (1, 1)
    m[0:20, 56:84] = 1  # 560 of 784 px in token (0, 2)
    assert pixel_mask_to_tokens(m, rule="any")[0].tolist() == [[True, False, True], [False, True, False]]
    assert pixel_mask_to_tokens(m, rule="majority")[0].tolist() == [[False, False, True], [False, True, False]]
    assert pixel_mask_to_tokens(m, rule="threshold", threshold=0.9)[0].tolist() == [[False, False, False], [False, True, False]]
    grown = pixel_mask_to_tokens(m, rule="threshold", threshold=0.9, dilate=1)[0]
    assert grown.all()


def test_token_mask_errors():
    with pytest.raises(ValueError, match="multiple of 28"):
        pixel_mask_to_tokens(torch.zeros(50, 56))
    with pytest.raises(ValueError, match="mask rule"):
        pixel_mask_to_tokens(torch.zeros(28, 28), rule="median")


def test_variation_mask_strength():
    g = torch.Generator().manual_seed(0)
    assert not variation_mask(4, 5, 0.0, generator=g).any()
    assert variation_mask(4, 5, 1.0, generator=g).all()
    half = variation_mask(4, 5, 0.5, batch=3, generator=g)
    assert half.shape == (3, 4, 5) and half.flatten(1).sum(1).tolist() == [10, 10, 10]
    a = variation_mask(4, 5, 0.5, generator=torch.Generator().manual_seed(1))
    b = variation_mask(4, 5, 0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="strength"):
        variation_mask(4, 5, 1.5)


def test_context_groups_follow_order_and_grouping():
    order = [5, 0, 3, 1, 4, 2]
    gen = [True, False, True, True, False, True]
    assert context_groups(order, gen, 1) == [[5], [0], [3], [2]]
    assert context_groups(order, gen, 3) == [[5, 0, 3, 2]]
    assert context_groups(order, [False] * 6, 2) == []


def test_check_context_errors():
    z = torch.zeros(2, 32, 3, 4)
    with pytest.raises(ValueError, match="3x4 tokens but the requested size is 4x4"):
        check_context((z, torch.ones(3, 4, dtype=torch.bool)), 2, 4, 4)
    with pytest.raises(ValueError, match="mask must be"):
        check_context((z, torch.ones(4, 4, dtype=torch.bool)), 2, 3, 4)
    with pytest.raises(ValueError, match=r"\[B, 32, h, w\]"):
        check_context((torch.zeros(2, 4, 3, 4), torch.ones(3, 4, dtype=torch.bool)), 2, 3, 4)
    _, mask = check_context((z, torch.ones(3, 4, dtype=torch.bool)), 2, 3, 4)
    assert mask.shape == (2, 12) and mask.all()


def test_outpaint_canvas_and_composite():
    z = torch.randn(1, 32, 2, 2)
    canvas, mask = outpaint_canvas(z, left=1, bottom=2)
    assert canvas.shape == (1, 32, 4, 3) and torch.equal(canvas[:, :, :2, 1:], z)
    assert mask.sum() == 12 - 4 and not mask[0, :2, 1:].any()
    gen, orig = torch.ones(1, 3, 56, 56), -torch.ones(1, 3, 56, 56)
    pm = torch.zeros(1, 56, 56)
    pm[:, :, 28:] = 1
    hard = composite(gen, orig, pm)
    assert hard[..., :28].eq(-1).all() and hard[..., 28:].eq(1).all()
    soft = composite(gen, orig, pm, feather=4)
    assert soft[..., 32:].eq(1).all() and soft[..., :20].eq(-1).all() and (soft[..., 26] > -1).all()
