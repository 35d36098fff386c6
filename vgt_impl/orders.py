"""Token orders and grouping for QueryAR decoding.

An order is a permutation of the h*w latent tokens (flat raster indices); a schedule splits it into groups decoded in
parallel, ``acc_ratio`` tokens per group (the first ``n % G`` groups get one extra token, as in the reference).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

ORDERS = ("random", "raster", "center_out", "checkerboard")


def group_sizes(n_tokens: int, acc_ratio: int) -> list[int]:
    """Reference grouping: G = max(1, n // acc_ratio) groups, the first n % G of them one token larger."""
    check_acc_ratio(acc_ratio, n_tokens)
    g = max(1, n_tokens // acc_ratio)
    base, extra = divmod(n_tokens, g)
    return [base + 1] * extra + [base] * (g - extra)


def check_acc_ratio(acc_ratio: int, n_tokens: int) -> None:
    if not isinstance(acc_ratio, int) or isinstance(acc_ratio, bool) or not 1 <= acc_ratio <= n_tokens:
        raise ValueError(f"acc_ratio={acc_ratio!r} must be an int from 1 to the number of tokens ({n_tokens})")


def _random(n: int, seed: int | None) -> list[int]:
    gen = torch.Generator()  # CPU generator: the same permutation as the reference's manual_seed + randperm
    gen.manual_seed(int(seed) if seed is not None else random.randrange(2**63))  # never seeds the global RNG
    return torch.randperm(n, generator=gen).tolist()


def _center_out(h: int, w: int) -> list[int]:
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    key = lambda i: ((i // w - cy) ** 2 + (i % w - cx) ** 2, i)  # noqa: E731  ties: raster order
    return sorted(range(h * w), key=key)


def _checkerboard(h: int, w: int) -> list[int]:
    return sorted(range(h * w), key=lambda i: (((i // w) + (i % w)) % 2, i))


def named_order(name: str, h: int, w: int, seed: int | None = None) -> list[int]:
    """A permutation of range(h*w) by name."""
    if name == "random":
        return _random(h * w, seed)
    if name == "raster":
        return list(range(h * w))
    if name == "center_out":
        return _center_out(h, w)
    if name == "checkerboard":
        return _checkerboard(h, w)
    raise ValueError(f"order={name!r}: expected one of {ORDERS} or an explicit list of token groups")


def split(order: Sequence[int], acc_ratio: int) -> list[list[int]]:
    groups, start = [], 0
    for size in group_sizes(len(order), acc_ratio):
        groups.append(list(order[start : start + size]))
        start += size
    return groups


def validate_groups(groups: Sequence[Sequence[int]], n_tokens: int) -> list[list[int]]:
    """Explicit groups must be non-empty and together a permutation of range(n_tokens)."""
    out, seen = [], set()
    for k, g in enumerate(groups):
        g = [int(i) for i in g]
        if not g:
            raise ValueError(f"order: group {k} is empty")
        for i in g:
            if not 0 <= i < n_tokens:
                raise ValueError(f"order: token {i} in group {k} is out of range 0..{n_tokens - 1}")
            if i in seen:
                raise ValueError(f"order: token {i} appears twice (group {k}); the order must be a permutation")
            seen.add(i)
        out.append(g)
    if len(seen) != n_tokens:
        missing = sorted(set(range(n_tokens)) - seen)
        raise ValueError(f"order: not a permutation of the {n_tokens} tokens, missing {missing[:8]}")
    return out


def make_groups(
    h: int, w: int, *, acc_ratio: int = 1, order: str | Sequence = "random", seed: int | None = None
) -> list[list[int]]:
    """Groups of flat token indices in decoding order.

    ``order``: a name from :data:`ORDERS`, a flat permutation (grouped by ``acc_ratio``), or explicit groups.
    """
    n = h * w
    check_acc_ratio(acc_ratio, n)
    if isinstance(order, str):
        return split(named_order(order, h, w, seed), acc_ratio)
    items = list(order)
    if items and all(isinstance(i, int) or (torch.is_tensor(i) and i.ndim == 0) for i in items):
        return split(validate_groups([items], n)[0], acc_ratio)
    return validate_groups(items, n)
