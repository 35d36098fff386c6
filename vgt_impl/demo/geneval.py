"""shapes-GenEval: GenEval's six categories and scoring rules on the small world, scored by the programmatic detector.

GenEval (Ghosh et al. 2023, djghosh13/geneval) generates prompts from templates per category and checks each image with
an object detector: ``include`` clauses (a class at least ``count`` times, optionally with a colour or a position
relative to an earlier clause's objects) are ANDed, ``exclude`` clauses (a class ``count`` times or more) fail the
image; the overall score is the mean of the six category accuracies. Here the classes are the world's shapes and the
colours its palette. Adaptations, because this detector has no confidence ranking: a colour clause passes when at least
``count`` objects of the class have the colour (GenEval checks the ``count`` most confident ones), and a position clause
when some object of the clause stands in the relation to some object of the target clause (GenEval: the most confident
of each). Prompts drop GenEval's "a photo of" lead-in: "a star", "a star and a ring", "three stars", "a red star",
"a star left of a ring", "a red star and a blue ring".
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .captions import NUMBER_WORDS, plural, with_article
from .detector import Detection, detect
from .palette import OBJECT_COLORS, SHAPES
from .render import render_array
from .scene import RELATIONS, relations
from .world import ObjectSpec, make_scene

CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
CUSTOM = "custom"  # the tag of a user's own prompt (spec_from_prompt), reported as a category of its own
PROMPT_SEED = 43  # GenEval's default prompt seed
MAX_COUNT = 4

# (prompts, seeds) -> images [B, 3, H, W] in [-1, 1]
Generator = Callable[[list[str], list[int]], torch.Tensor]


@dataclass(frozen=True)
class PromptSpec:
    """One evaluation prompt and what an image of it must contain (GenEval's metadata format)."""

    tag: str
    prompt: str
    include: tuple[dict, ...]
    exclude: tuple[dict, ...] = ()

    def to_dict(self) -> dict:
        return {"tag": self.tag, "prompt": self.prompt, "include": [dict(r) for r in self.include],
                "exclude": [dict(r) for r in self.exclude]}


# ---------------------------------------------------------------------------------------------------------- prompts
def _candidates(tag: str) -> list[PromptSpec]:
    """Every prompt of a category, in a fixed order."""
    one = lambda s, **kw: {"class": s, "count": 1, **kw}  # noqa: E731
    if tag == "single_object":
        return [PromptSpec(tag, with_article(s), (one(s),)) for s in SHAPES]
    if tag == "two_object":
        return [PromptSpec(tag, f"{with_article(a)} and {with_article(b)}", (one(a), one(b)))
                for a, b in itertools.permutations(SHAPES, 2)]
    if tag == "counting":
        return [PromptSpec(tag, f"{NUMBER_WORDS[n]} {plural(s)}", ({"class": s, "count": n},),
                           ({"class": s, "count": n + 1},)) for s in SHAPES for n in range(2, MAX_COUNT + 1)]
    if tag == "colors":
        return [PromptSpec(tag, with_article(f"{c} {s}"), (one(s, color=c),)) for s in SHAPES for c in OBJECT_COLORS]
    if tag == "position":
        return [PromptSpec(tag, f"{with_article(a)} {r} {with_article(b)}", (one(b), one(a, position=[r, 0])))
                for a, b in itertools.permutations(SHAPES, 2) for r in RELATIONS]
    if tag == "color_attr":
        return [PromptSpec(tag, f"{with_article(f'{ca} {a}')} and {with_article(f'{cb} {b}')}",
                           (one(a, color=ca), one(b, color=cb)))
                for a, b in itertools.permutations(SHAPES, 2) for ca, cb in itertools.permutations(OBJECT_COLORS, 2)]
    raise ValueError(f"unknown category {tag!r}: expected one of {CATEGORIES}")


def spec_from_prompt(prompt: str) -> PromptSpec:
    """A prompt in the world's caption grammar -> what an image of it must contain (tag "custom").

    Forms: noun phrases joined by "," / "and" ("two red circles and a blue star"), or two joined by a relation
    ("two red circles left of a blue square"; every phrasing of the captions: "to the left of", "over", "beneath", ...),
    with an optional lead-in ("an image of ...") and background ("... on a white background"). A noun phrase is
    "a" / "an" / a number word, then optional size and colour, then a shape. A count n > 1 also excludes n + 1 of that
    shape (exactly n, as the counting category). Anything else is a ValueError that says what was not understood.
    """
    from .captions import LEAD_INS, RELATION_PHRASES
    from .palette import SIZES

    text = " ".join(prompt.lower().replace(",", " , ").split())
    for lead in (*LEAD_INS, "there are "):
        if text.startswith(lead):
            text = text[len(lead):]
    text = re.sub(r" on an? [a-z ]*background$", "", text)  # "... on a white background"
    relation, parts = None, None
    for rel, phrases in RELATION_PHRASES.items():
        for phrase in sorted(phrases, key=len, reverse=True):
            if f" {phrase} " in f" {text} " and relation is None:
                left, right = f" {text} ".split(f" {phrase} ", 1)
                relation, parts = rel, [left.strip(), right.strip()]
    if parts is None:
        parts = [p.strip() for p in text.replace(" and ", " , ").split(",") if p.strip()]
    elif any(" and " in p or "," in p for p in parts):
        raise ValueError(f"prompt {prompt!r}: a relation joins exactly two noun phrases (\"a star left of a ring\"), "
                         "not lists")
    if not parts:
        raise ValueError(f"prompt {prompt!r}: nothing to draw; expected e.g. \"two red circles left of a blue square\"")
    singular = {s: s for s in SHAPES} | {plural(s): s for s in SHAPES}
    counts = {"a": 1, "an": 1} | {w: i for i, w in enumerate(NUMBER_WORDS) if i >= 1}
    clauses = []
    for part in parts:
        words = part.split()
        if len(words) < 2 or words[0] not in counts or words[-1] not in singular:
            raise ValueError(f"prompt {prompt!r}: cannot read {part!r}: expected a / an / a number word, an optional "
                             f"size ({', '.join(SIZES)}) and colour ({', '.join(OBJECT_COLORS)}), then a shape "
                             f"({', '.join(SHAPES)})")
        middle = [w for w in words[1:-1] if w not in SIZES]
        if len(middle) > 1 or (middle and middle[0] not in OBJECT_COLORS):
            raise ValueError(f"prompt {prompt!r}: {' '.join(middle)!r} in {part!r} is not a colour of the world "
                             f"({', '.join(OBJECT_COLORS)})")
        clause = {"class": singular[words[-1]], "count": counts[words[0]]}
        if middle:
            clause["color"] = middle[0]
        clauses.append(clause)
    if relation is not None:
        clauses = [clauses[1], dict(clauses[0], position=[relation, 0])]  # GenEval's form: the target first
    exclude = tuple({"class": c["class"], "count": c["count"] + 1} for c in clauses if c["count"] > 1)
    return PromptSpec(CUSTOM, prompt, tuple(clauses), exclude)


def prompt_set(per_category: int = 24, seed: int = PROMPT_SEED) -> list[PromptSpec]:
    """The fixed evaluation prompts: up to ``per_category`` per category, a seeded sample in a seeded order that cycles
    through counts, colours and relations, so the first k of each category (``limit``) is a stable, balanced subset.
    """
    rng = np.random.default_rng(seed)
    out = []
    for tag in CATEGORIES:
        cands = _candidates(tag)
        out.extend(_round_robin([cands[i] for i in rng.permutation(len(cands))[:per_category]], BALANCE.get(tag)))
    return out


# What a small subset of a category should cycle through: every relation, count and colour early on.
BALANCE: dict[str, Callable[[PromptSpec], object]] = {
    "counting": lambda s: s.include[0]["count"],
    "colors": lambda s: s.include[0]["color"],
    "position": lambda s: s.include[1]["position"][0],
}


def _round_robin(specs: list[PromptSpec], key: Callable[[PromptSpec], object] | None) -> list[PromptSpec]:
    """Reorder so that consecutive prompts take turns over the values of ``key`` (order within a value kept)."""
    if key is None:
        return specs
    groups: dict[object, list[PromptSpec]] = {}
    for s in specs:
        groups.setdefault(key(s), []).append(s)
    lanes = list(groups.values())
    return [lane[i] for i in range(max(len(lane) for lane in lanes)) for lane in lanes if i < len(lane)]


def limit_per_category(specs: Sequence[PromptSpec], limit: int | None) -> list[PromptSpec]:
    """The first ``limit`` prompts of each category (all when None)."""
    if limit is None:
        return list(specs)
    if limit < 1:
        raise ValueError(f"limit={limit} must be >= 1 prompt per category")
    seen: dict[str, int] = {}
    out = []
    for s in specs:
        seen[s.tag] = seen.get(s.tag, 0) + 1
        if seen[s.tag] <= limit:
            out.append(s)
    return out


# ---------------------------------------------------------------------------------------------------------- scoring
def score(spec: PromptSpec, detections: Sequence[Detection]) -> tuple[bool, str]:
    """GenEval's rule on detected objects -> (correct, reason; empty when correct)."""
    reasons: list[str] = []
    matched: list[list[Detection] | None] = []
    for req in spec.include:
        found = [d for d in detections if d.shape == req["class"]]
        group = [d for d in found if d.color == req["color"]] if "color" in req else found
        ok = True
        if len(found) < req["count"]:
            ok = False
            reasons.append(f"expected {req['class']}>={req['count']}, found {len(found)}")
        elif len(group) < req["count"]:
            ok = False
            seen = ", ".join(f"{n} {c}" for c, n in sorted(Counter(d.color for d in found).items()))
            reasons.append(f"expected {req['color']} {req['class']}>={req['count']}, found {len(group)} "
                           f"{req['color']}; and {seen}")
        elif "position" in req:
            rel, target = req["position"][0], int(req["position"][1])
            if matched[target] is None:
                ok = False
                reasons.append(f"no target for {req['class']} to be {rel}")
            elif not any(rel in relations(a.bbox, b.bbox) for a in group for b in matched[target]):
                ok = False
                found_rels = sorted({r for a in group for b in matched[target] for r in relations(a.bbox, b.bbox)})
                found_text = " and ".join(found_rels) if found_rels else "no relation to"
                reasons.append(f"expected {req['class']} {rel} target, found {found_text} target")
        matched.append(group if ok else None)
    for req in spec.exclude:
        n = sum(1 for d in detections if d.shape == req["class"])
        if n >= req["count"]:
            reasons.append(f"expected {req['class']}<{req['count']}, found {n}")
    return not reasons, "; ".join(reasons)


# ---------------------------------------------------------------------------------------------------------- evaluation
@dataclass
class SampleResult:
    index: int  # prompt index in the evaluated list
    tag: str
    prompt: str
    seed: int
    correct: bool
    reason: str
    detections: list[Detection]
    image: np.ndarray | None = field(default=None, repr=False)  # uint8 [H, W, 3], kept for the first sample per prompt

    def to_dict(self) -> dict:
        return {"index": self.index, "tag": self.tag, "prompt": self.prompt, "seed": self.seed, "correct": self.correct,
                "reason": self.reason, "detections": [d.to_dict() for d in self.detections]}


@dataclass
class EvalReport:
    samples: list[SampleResult]

    @property
    def per_category(self) -> dict[str, tuple[int, int]]:
        """category -> (correct, total), in CATEGORIES order, then CUSTOM (categories with no sample left out)."""
        out = {}
        for tag in (*CATEGORIES, CUSTOM):
            rows = [s.correct for s in self.samples if s.tag == tag]
            if rows:
                out[tag] = (sum(rows), len(rows))
        return out

    @property
    def accuracy(self) -> dict[str, float]:
        return {t: c / n for t, (c, n) in self.per_category.items()}

    @property
    def overall(self) -> float:
        """Mean of the category accuracies (GenEval's overall score)."""
        acc = self.accuracy
        return float(np.mean(list(acc.values()))) if acc else 0.0

    def to_dict(self) -> dict:
        return {"overall": self.overall, "per_category": {t: {"accuracy": c / n, "correct": c, "total": n}
                                                          for t, (c, n) in self.per_category.items()},
                "samples": [s.to_dict() for s in self.samples]}


def paired_difference(samples: Sequence[Mapping], baseline: Sequence[Mapping]) -> dict[str, Any]:
    """Score difference of two evaluations of the same prompts and seeds (``results.json`` sample rows), with its
    standard error: per category the mean of the per-sample differences (correct 1 / 0) and its s.e.; overall their
    mean over categories (GenEval's overall), s.e. from the categories' variances. Sampling noise shared through the
    seeds cancels in the pairing, which is why it is tighter than two independent scores."""
    def keyed(rows, what):
        out = {(int(r["index"]), int(r["seed"])): r for r in rows}
        if len(out) != len(rows):
            raise ValueError(f"{what}: two samples share a prompt index and seed")
        return out

    a, b = keyed(samples, "the evaluation"), keyed(baseline, "the baseline")
    if a.keys() != b.keys() or any(a[k]["tag"] != b[k]["tag"] for k in a):
        raise ValueError(f"the two evaluations are of different samples ({len(a)} vs {len(b)}): compare runs with the "
                         f"same --per-category, --limit, --images-per-prompt and --seed")
    per_category: dict[str, dict[str, float]] = {}
    for tag in (*CATEGORIES, CUSTOM):
        d = np.array([float(a[k]["correct"]) - float(b[k]["correct"]) for k in a if a[k]["tag"] == tag])
        if len(d):
            se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
            per_category[tag] = {"delta": float(d.mean()), "se": se, "n": int(len(d))}
    if not per_category:
        raise ValueError("the evaluations hold no samples")
    k = len(per_category)
    delta = float(np.mean([c["delta"] for c in per_category.values()]))
    se = float(np.sqrt(sum(c["se"] ** 2 for c in per_category.values())) / k)
    return {"delta": delta, "se": se, "n": len(a), "per_category": per_category}


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3] (the CLI's rounding: 127.5 x + 128, clamped)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"a generator must return images [B, 3, H, W], got shape {tuple(images.shape)}")
    x = images.detach().to(device="cpu", dtype=torch.float32).numpy()
    return np.clip(x * 127.5 + 128.0, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def evaluate(generator: Generator, specs: Sequence[PromptSpec], *, images_per_prompt: int = 4, batch_size: int = 8,
             seed: int = 0, progress: Callable[[int, int], None] | None = None, keep_images: int = 1) -> EvalReport:
    """Generate ``images_per_prompt`` images per prompt (sample k of prompt i gets seed ``seed + i*n + k``), score each;
    the first ``keep_images`` images of each prompt stay in the report (for the grid)."""
    if images_per_prompt < 1 or batch_size < 1:
        raise ValueError(f"images_per_prompt={images_per_prompt} and batch_size={batch_size} must be >= 1")
    jobs = [(i, k) for i in range(len(specs)) for k in range(images_per_prompt)]
    samples: list[SampleResult] = []
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start: start + batch_size]
        seeds = [seed + i * images_per_prompt + k for i, k in batch]
        images = to_uint8(generator([specs[i].prompt for i, _ in batch], seeds))
        if len(images) != len(batch):
            raise ValueError(f"the generator returned {len(images)} images for {len(batch)} prompts")
        for (i, k), s, img in zip(batch, seeds, images):
            dets = detect(img)
            ok, why = score(specs[i], dets)
            samples.append(SampleResult(i, specs[i].tag, specs[i].prompt, s, ok, why, dets,
                                        img if k < keep_images else None))
        if progress is not None:
            progress(min(start + batch_size, len(jobs)), len(jobs))
    return EvalReport(samples)


# ---------------------------------------------------------------------------------------------------------- generators
def scene_for_spec(spec: PromptSpec, rng: np.random.Generator):
    """A ground-truth scene that satisfies a prompt exactly (attributes the prompt leaves open drawn at random)."""
    objects: list[ObjectSpec] = []
    first: list[int] = []
    relation = None
    for req in spec.include:
        first.append(len(objects))
        objects.extend(ObjectSpec(req["class"], req.get("color")) for _ in range(req["count"]))
        if "position" in req:
            relation = (first[-1], req["position"][0], first[int(req["position"][1])])
    return make_scene(rng, objects, relation=relation)


class OracleGenerator:
    """Renders the ground truth of each prompt (optionally degraded): the detector's and the scorer's upper bound."""

    def __init__(self, specs: Sequence[PromptSpec], degradation=None):
        self.by_prompt = {s.prompt: s for s in specs}
        self.degradation = degradation

    def __call__(self, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        out = []
        for p, s in zip(prompts, seeds):
            if p not in self.by_prompt:
                raise KeyError(f"the oracle knows no spec for prompt {p!r}")
            rng = np.random.default_rng([s, 1])
            img = render_array(scene_for_spec(self.by_prompt[p], rng))
            out.append(img if self.degradation is None else self.degradation(img, rng))
        batch = np.stack(out).transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0  # [B, 3, H, W]
        return torch.from_numpy(batch)


def autoencoder_generator(specs: Sequence[PromptSpec], ae) -> Generator:
    """The rendered ground truth of each prompt through an autoencoder (encode, decode): the score's ceiling for a
    generator whose images come out of that decoder. ``ae``: a VGT-AE, or a DC-AE codec (``convergence.DCAELatents``)."""
    oracle = OracleGenerator(specs)
    decode = getattr(ae, "decode_pixels", None) or ae.decode

    def generate(prompts: list[str], seeds: list[int]) -> torch.Tensor:
        x = oracle(prompts, seeds).to(device=ae.device, dtype=ae.dtype)
        with torch.no_grad():
            return decode(ae.encode(x)).clamp(-1, 1).float().cpu()

    return generate


def noise_generator(prompts: list[str], seeds: list[int], size: int = 224) -> torch.Tensor:
    """Uniform noise images, one seeded draw per image: the score's lower bound."""
    return torch.stack([torch.rand(3, size, size, generator=torch.Generator().manual_seed(s)) * 2 - 1 for s in seeds])


def pipeline_generator(pipe, *, size: int = 224, cfg_scale: float = 4.5, cfg_schedule: str = "linear",
                       num_flow_steps: int = 30, acc_ratio: int = 1, order: str | None = None, sampler: str = "sde",
                       mode: str = "reference", **options: Any) -> Generator:
    """A VGTPipeline as a generator. A batch is seeded with its first seed (results depend on the batch size).
    ``options``: more ``generate`` options (time_grid, time_shift, group_schedule, static_cache, compile)."""
    if getattr(pipe, "ae", None) is None:
        raise ValueError("the pipeline has no VGT-AE to decode images: load one (--ae) to evaluate it")
    pipe.check_size(size, size)

    def generate(prompts: list[str], seeds: list[int]) -> torch.Tensor:
        out = pipe.generate(list(prompts), height=size, width=size, cfg_scale=cfg_scale, cfg_schedule=cfg_schedule,
                            num_flow_steps=num_flow_steps, acc_ratio=acc_ratio, order=order, sampler=sampler,
                            mode=mode, generator=torch.Generator().manual_seed(int(seeds[0])), **options)
        return out.images

    return generate
