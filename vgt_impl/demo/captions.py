"""Captions and question/answer pairs for a scene, always true of its ground truth.

A caption is a complete description of the scene at one level of detail (shapes only, colour + shape, or size + colour +
shape), grouped and counted ("two red circles and a blue star"), optionally with a spatial relation ("a green square to
the left of a yellow triangle"), a lead-in ("an image of ...") or the background ("... on a white background"). The
evaluation's prompt forms ("a star", "three stars", "a red star", "a star left of a circle", "a red star and a blue
circle") are among them, so evaluation prompts are in the training distribution.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from .palette import OBJECT_COLORS, SHAPES
from .scene import RELATIONS, Scene, SceneObject, relations

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
DETAIL_WEIGHTS = {"shape": 0.15, "color": 0.55, "size": 0.3}  # how often captions name colours and sizes
RELATION_PHRASES = {
    "left of": ("to the left of", "left of", "on the left of"),
    "right of": ("to the right of", "right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
LEAD_INS = ("an image of ", "a picture of ", "a drawing of ", "there is ")  # "there are" before a plural
QA_KINDS = ("color", "shape", "count", "exist", "position", "size")


# ---------------------------------------------------------------------------------------------------------- grammar
def with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def noun_phrase(count: int, shape: str, color: str | None = None, size: str | None = None) -> str:
    """"a small red circle", "two circles", "three large blue crosses"."""
    words = " ".join(w for w in (size, color, shape if count == 1 else plural(shape)) if w)
    return with_article(words) if count == 1 else f"{NUMBER_WORDS[count]} {words}"


def join_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def object_key(obj: SceneObject, detail: str) -> tuple[str | None, str | None, str]:
    """(size, color, shape) with the attributes a level of detail leaves out set to None."""
    return (obj.size if detail == "size" else None, obj.color if detail in ("color", "size") else None, obj.shape)


def describe(obj: SceneObject, detail: str, definite: bool = False) -> str:
    size, color, shape = object_key(obj, detail)
    words = " ".join(w for w in (size, color, shape) if w)
    return "the " + words if definite else with_article(words)


# ---------------------------------------------------------------------------------------------------------- captions
def caption(scene: Scene, rng: np.random.Generator) -> str:
    """One caption of the scene, its form drawn with ``rng``."""
    detail = str(rng.choice(list(DETAIL_WEIGHTS), p=list(DETAIL_WEIGHTS.values())))
    body = None
    if len(scene.objects) == 2 and rng.random() < 0.6:
        body = relation_caption(scene, detail, rng)
    if body is None:
        body = enumeration(scene, detail, rng)
        if len(scene.objects) > 2 and rng.random() < 0.3:
            clause = relation_clause(scene, detail, rng)
            body = body + clause if clause else body
    if rng.random() < 0.15:
        lead = str(rng.choice(LEAD_INS))
        if lead == "there is " and _first_count(body) > 1:
            lead = "there are "
        body = lead + body
    if rng.random() < 0.2:
        body += " on " + background_phrase(scene)
    return body


def _first_count(body: str) -> int:
    first = body.split(" ", 1)[0]
    return NUMBER_WORDS.index(first) if first in NUMBER_WORDS else 1


def enumeration(scene: Scene, detail: str, rng: np.random.Generator) -> str:
    """Every object, grouped by the detail's attributes and counted: "two red circles and a blue star"."""
    groups = Counter(object_key(o, detail) for o in scene.objects)
    keys = list(groups)
    order = rng.permutation(len(keys))
    return join_list([noun_phrase(groups[keys[i]], keys[i][2], keys[i][1], keys[i][0]) for i in order])


def _unique(scene: Scene, detail: str) -> list[int]:
    """Indices of the objects that the detail's description picks out uniquely."""
    keys = Counter(object_key(o, detail) for o in scene.objects)
    return [i for i, o in enumerate(scene.objects) if keys[object_key(o, detail)] == 1]


def _related_pair(scene: Scene, detail: str, rng: np.random.Generator) -> tuple[int, str, int] | None:
    """A random (i, relation, j) between two uniquely described objects, or None."""
    idx = _unique(scene, detail)
    triples = [(i, r, j) for i in idx for j in idx if i != j
               for r in sorted(relations(scene.objects[i].bbox, scene.objects[j].bbox))]
    return triples[int(rng.integers(len(triples)))] if triples else None


def relation_caption(scene: Scene, detail: str, rng: np.random.Generator) -> str | None:
    """"a green square to the left of a yellow triangle" for a two-object scene (None when no relation applies)."""
    return _relation_text(scene, detail, rng, definite=False)


def relation_clause(scene: Scene, detail: str, rng: np.random.Generator) -> str | None:
    """", with the red circle above the green square" (None when no two objects are uniquely described)."""
    text = _relation_text(scene, detail, rng, definite=True)
    return None if text is None else ", with " + text


def _relation_text(scene: Scene, detail: str, rng: np.random.Generator, definite: bool) -> str | None:
    pair = _related_pair(scene, detail, rng)
    if pair is None:
        return None
    i, rel, j = pair
    phrase = str(rng.choice(RELATION_PHRASES[rel]))
    return f"{describe(scene.objects[i], detail, definite)} {phrase} {describe(scene.objects[j], detail, definite)}"


def background_phrase(scene: Scene) -> str:
    """"a white background", "a beige and slate background"."""
    return with_article(" and ".join(dict.fromkeys(scene.background.colors)) + " background")


# ---------------------------------------------------------------------------------------------------------- QA
@dataclass(frozen=True)
class QA:
    question: str
    answer: str  # one or two words: a colour, a shape, a number word, yes / no, small / large, left / right
    kind: str  # one of QA_KINDS

    def to_dict(self) -> dict:
        return {"question": self.question, "answer": self.answer, "kind": self.kind}


def questions(scene: Scene, rng: np.random.Generator, per_kind: int = 2) -> list[QA]:
    """Up to ``per_kind`` question/answer pairs of each kind (yes/no kinds balanced when they can be)."""
    out: list[QA] = []
    for build in (_color_qa, _shape_qa, _count_qa, _exist_qa, _position_qa, _size_qa):  # QA_KINDS in order
        out.extend(_pick(build(scene, rng), per_kind, rng))
    return out


def _pick(cands: list[QA], k: int, rng: np.random.Generator) -> list[QA]:
    """k distinct candidates at random, alternating yes and no answers when both exist."""
    cands = list({q.question: q for q in cands}.values())
    yes = [q for q in cands if q.answer == "yes"]
    no = [q for q in cands if q.answer == "no"]
    if yes and no:
        rng.shuffle(yes)
        rng.shuffle(no)
        mixed = [q for pair in zip(yes, no) for q in pair]
        return mixed[:k]
    return [cands[i] for i in rng.permutation(len(cands))[:k]]


def _color_qa(scene: Scene, rng) -> list[QA]:
    shapes = Counter(o.shape for o in scene.objects)
    sized = Counter((o.size, o.shape) for o in scene.objects)
    out = [QA(f"what color is the {o.shape}?", o.color, "color") for o in scene.objects if shapes[o.shape] == 1]
    out += [QA(f"what color is the {o.size} {o.shape}?", o.color, "color") for o in scene.objects
            if sized[(o.size, o.shape)] == 1 and shapes[o.shape] > 1]
    return out


def _shape_qa(scene: Scene, rng) -> list[QA]:
    colors = Counter(o.color for o in scene.objects)
    return [QA(str(rng.choice([f"what shape is the {o.color} object?", f"which shape is {o.color}?"])), o.shape, "shape")
            for o in scene.objects if colors[o.color] == 1]


def _count_qa(scene: Scene, rng) -> list[QA]:
    absent = [s for s in SHAPES if scene.count(shape=s) == 0]
    shapes = sorted({o.shape for o in scene.objects}) + ([str(rng.choice(absent))] if absent else [])
    out = [QA(f"how many {plural(s)} are there?", NUMBER_WORDS[scene.count(shape=s)], "count") for s in shapes]
    out += [QA(f"how many {c} objects are there?", NUMBER_WORDS[scene.count(color=c)], "count")
            for c in sorted({o.color for o in scene.objects})]
    out.append(QA("how many objects are there?", NUMBER_WORDS[len(scene.objects)], "count"))
    return out


def _exist_qa(scene: Scene, rng) -> list[QA]:
    present = {(o.color, o.shape) for o in scene.objects}
    out = [QA(f"is there {with_article(f'{c} {s}')}?", "yes", "exist") for c, s in sorted(present)]
    for _ in range(len(present) + 1):  # about as many absent colour-shape combinations
        c, s = str(rng.choice(list(OBJECT_COLORS))), str(rng.choice(SHAPES))
        if (c, s) not in present:
            out.append(QA(f"is there {with_article(f'{c} {s}')}?", "no", "exist"))
    absent_shapes = [s for s in SHAPES if scene.count(shape=s) == 0]
    if absent_shapes:
        out.append(QA(f"is there {with_article(str(rng.choice(absent_shapes)))}?", "no", "exist"))
    out.append(QA(f"is there {with_article(scene.objects[int(rng.integers(len(scene.objects)))].shape)}?", "yes",
                  "exist"))
    return out


def _position_qa(scene: Scene, rng) -> list[QA]:
    idx = _unique(scene, "color")
    out = []
    for i in idx:
        for j in idx:
            if i == j:
                continue
            a, b = scene.objects[i], scene.objects[j]
            true = relations(a.bbox, b.bbox)
            for rel in RELATIONS:
                phrase = RELATION_PHRASES[rel][0]
                out.append(QA(f"is {describe(a, 'color', True)} {phrase} {describe(b, 'color', True)}?",
                              "yes" if rel in true else "no", "position"))
    return out


def _size_qa(scene: Scene, rng) -> list[QA]:
    idx = _unique(scene, "color")
    return [QA(f"is {describe(scene.objects[i], 'color', True)} small or large?", scene.objects[i].size, "size")
            for i in idx]


def normalise_answer(text: str) -> str:
    """A model's answer in the QA vocabulary: lower case, no surrounding punctuation, digits as number words."""
    t = text.strip().lower().strip(" .!?,;:'\"")
    t = t[2:] if t.startswith(("a ", "an ")) and t.split(" ", 1)[1] in SHAPES else t
    return NUMBER_WORDS[int(t)] if t.isdigit() and int(t) < len(NUMBER_WORDS) else t


def answer_accuracy(pairs: list[QA], predictions: list[str]) -> dict[str, float]:
    """Exact-match accuracy of predicted answers per QA kind (after normalise_answer), plus "all"."""
    if len(pairs) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(pairs)} questions: give one answer per question")
    hits: dict[str, list[bool]] = {}
    for qa, pred in zip(pairs, predictions):
        ok = normalise_answer(pred) == qa.answer
        hits.setdefault(qa.kind, []).append(ok)
        hits.setdefault("all", []).append(ok)
    return {k: sum(v) / len(v) for k, v in hits.items()}
