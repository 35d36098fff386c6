"""Token orders and grouping for QueryAR decoding.

An order is a permutation of the h*w latent tokens (flat raster indices); a group schedule splits it into G groups
decoded in parallel, one LLM call each, with G = max(1, n // acc_ratio) as in the reference. ``equal`` is the
reference (``acc_ratio`` tokens per group, the first ``n % G`` groups one larger); ``cosine`` (MaskGIT / MAR) and
``ramp`` start with small groups, while little of the image is known, and end with large ones, for the same G.
"""

from __future__ import annotations

import math
import numbers
import random
from collections.abc import Sequence

import torch

ORDERS = ("random", "raster", "center_out", "checkerboard", "spiral")
# fraction of the tokens decoded after a fraction x of the groups (MaskGIT's 1 - gamma(x))
_DECODED = {
    "cosine": lambda x: 1.0 - math.cos(0.5 * math.pi * x),  # MaskGIT / MAR: group sizes grow like sin
    "ramp": lambda x: x * x,  # group sizes grow linearly
}
GROUP_SCHEDULES = ("equal", *_DECODED)


def group_sizes(n_tokens: int, acc_ratio: int, schedule: str = "equal") -> list[int]:
    """Sizes of the G = max(1, n // acc_ratio) groups, in decoding order; they sum to n, each is >= 1.

    ``equal`` is the reference: the first n % G groups one token larger. ``cosine`` / ``ramp``: non-decreasing sizes
    following the schedule's decoded fraction, rounded so every group keeps at least one token.
    """
    check_acc_ratio(acc_ratio, n_tokens)
    check_group_schedule(schedule)
    g = max(1, n_tokens // acc_ratio)
    if schedule == "equal":
        base, extra = divmod(n_tokens, g)
        return [base + 1] * extra + [base] * (g - extra)
    decoded = _DECODED[schedule]
    done, sizes = 0, []
    for k in range(1, g + 1):
        target = round(n_tokens * decoded(k / g)) if k < g else n_tokens
        target = min(max(target, done + 1), n_tokens - (g - k))  # >= 1 token now and for every later group
        sizes.append(target - done)
        done = target
    return sorted(sizes)  # rounding and the clamps can swap neighbours: keep small groups first


def check_group_schedule(schedule: object) -> None:
    if schedule not in GROUP_SCHEDULES:
        raise ValueError(f"group_schedule={schedule!r}: expected one of {GROUP_SCHEDULES}")


def check_acc_ratio(acc_ratio: int, n_tokens: int) -> None:
    if not isinstance(acc_ratio, int) or isinstance(acc_ratio, bool) or not 1 <= acc_ratio <= n_tokens:
        raise ValueError(f"acc_ratio={acc_ratio!r} must be an int from 1 to the number of tokens ({n_tokens})")


def random_order(n: int, seed: int | None = None, generator: torch.Generator | None = None) -> list[int]:
    """The reference's random order: ``torch.randperm(n)`` after ``torch.manual_seed(seed)``, from a private generator.

    A CPU generator seeded with ``seed`` gives the same permutation as the reference's global seeding, without touching
    the global RNG. ``generator`` (a CPU generator) is used as is; with neither, the order is fresh each call.
    """
    if generator is None:
        generator = torch.Generator()  # CPU: randperm's stream is then the reference's
        generator.manual_seed(int(seed) if seed is not None else random.randrange(2**63))
    return torch.randperm(n, generator=generator).tolist()


def _center_out(h: int, w: int) -> list[int]:
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    key = lambda i: ((i // w - cy) ** 2 + (i % w - cx) ** 2, i)  # noqa: E731  ties: raster order
    return sorted(range(h * w), key=key)


def _checkerboard(h: int, w: int) -> list[int]:
    return sorted(range(h * w), key=lambda i: (((i // w) + (i % w)) % 2, i))


def _spiral(h: int, w: int) -> list[int]:
    """Clockwise from the top-left corner inwards."""
    out, top, bottom, left, right = [], 0, h - 1, 0, w - 1
    while top <= bottom and left <= right:
        out += [top * w + x for x in range(left, right + 1)]
        out += [y * w + right for y in range(top + 1, bottom + 1)]
        if top < bottom:
            out += [bottom * w + x for x in range(right - 1, left - 1, -1)]
        if left < right:
            out += [y * w + left for y in range(bottom - 1, top, -1)]
        top, bottom, left, right = top + 1, bottom - 1, left + 1, right - 1
    return out


def named_order(name: str, h: int, w: int, seed: int | None = None,
                generator: torch.Generator | None = None) -> list[int]:
    """A permutation of range(h*w) by name (see :data:`ORDERS`)."""
    if name == "random":
        return random_order(h * w, seed, generator)
    builders = {"raster": lambda: list(range(h * w)), "center_out": lambda: _center_out(h, w),
                "checkerboard": lambda: _checkerboard(h, w), "spiral": lambda: _spiral(h, w)}
    if name not in builders:
        raise ValueError(f"order={name!r}: expected one of {ORDERS} or an explicit list of token groups")
    return builders[name]()


def split(order: Sequence[int], acc_ratio: int, schedule: str = "equal") -> list[list[int]]:
    """A flat order -> consecutive groups of the schedule's sizes (the reference's by default)."""
    groups, start = [], 0
    for size in group_sizes(len(order), acc_ratio, schedule):
        groups.append(list(order[start : start + size]))
        start += size
    return groups


def _is_index(i: object) -> bool:
    if torch.is_tensor(i):
        return i.ndim == 0 and not i.is_floating_point() and not i.is_complex() and i.dtype != torch.bool
    return isinstance(i, numbers.Integral) and not isinstance(i, bool)


def _token(i: object, k: int, n_tokens: int) -> int:
    if not _is_index(i):
        raise ValueError(f"order: group {k} holds {i!r}, not an integer token index")
    i = int(i)
    if not 0 <= i < n_tokens:
        raise ValueError(f"order: token {i} in group {k} is out of range 0..{n_tokens - 1}")
    return i


def validate_groups(groups: Sequence[Sequence[int]], n_tokens: int) -> list[list[int]]:
    """Explicit groups must be non-empty lists of ints that together are a permutation of range(n_tokens)."""
    out, seen = [], set()
    for k, g in enumerate(groups):
        if _is_index(g) or isinstance(g, (str, bytes)) or not hasattr(g, "__iter__"):
            raise ValueError(f"order: item {k} is {g!r}; give a flat list of token indices or a list of groups")
        g = [_token(i, k, n_tokens) for i in g]
        if not g:
            raise ValueError(f"order: group {k} is empty")
        for i in g:
            if i in seen:
                raise ValueError(f"order: token {i} appears twice (group {k}); the order must be a permutation")
            seen.add(i)
        out.append(g)
    if len(seen) != n_tokens:
        missing = sorted(set(range(n_tokens)) - seen)
        raise ValueError(f"order: not a permutation of the {n_tokens} tokens, missing {missing[:8]}")
    return out


def make_groups(
    h: int, w: int, *, acc_ratio: int = 1, order: str | Sequence = "random", seed: int | None = None,
    generator: torch.Generator | None = None, schedule: str = "equal",
) -> list[list[int]]:
    """Groups of flat token indices in decoding order.

    ``order``: a name from :data:`ORDERS` (``random`` uses ``generator`` or ``seed``), a flat permutation (grouped by
    ``acc_ratio`` and ``schedule``), or explicit groups (used as given). Never seeds the global RNG.
    """
    if not all(isinstance(v, numbers.Integral) and v >= 1 for v in (h, w)):
        raise ValueError(f"latent size {h!r}x{w!r}: expected positive ints")
    n = int(h) * int(w)
    check_acc_ratio(acc_ratio, n)
    check_group_schedule(schedule)
    if isinstance(order, str):
        return split(named_order(order, h, w, seed, generator), acc_ratio, schedule)
    items = list(order)
    flat = [_is_index(i) for i in items]
    if any(flat) and not all(flat):
        bad = items[flat.index(False)]
        raise ValueError(f"order mixes token indices with {bad!r}: give a flat permutation or a list of groups")
    if any(flat):
        return split(validate_groups([items], n)[0], acc_ratio, schedule)
    if schedule != "equal":
        raise ValueError(f"group_schedule={schedule!r} applies to a named order or a flat permutation; explicit "
                         "groups set their own sizes (use group_schedule='equal')")
    return validate_groups(items, n)
