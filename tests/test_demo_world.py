"""The small world: determinism, ground truth vs pixels, captions and answers true of the scene, the dataset writer."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from vgt_impl.cli import main
from vgt_impl.demo import (
    BACKGROUND_COLORS,
    OBJECT_COLORS,
    QA,
    QA_KINDS,
    RELATIONS,
    SHAPES,
    SIZES,
    ObjectSpec,
    Scene,
    answer_accuracy,
    caption,
    make_scene,
    questions,
    read_manifest,
    relations,
    render_array,
    sample_scene,
    scene_record,
    write_dataset,
)
from vgt_impl.demo.scene import normalised_offset
from vgt_impl.demo.world import EDGE_MARGIN, KIND_WEIGHTS, OBJECT_GAP

N_SCENES = 150
NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}
REL_WORDS = {"to the left of": "left of", "left of": "left of", "on the left of": "left of",
             "to the right of": "right of", "right of": "right of", "on the right of": "right of",
             "above": "above", "over": "above", "below": "below", "under": "below", "beneath": "below"}


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return [sample_scene((11, i)) for i in range(N_SCENES)]


# ---------------------------------------------------------------------------------------------------------- world
def test_same_seed_same_scene_and_pixels():
    a, b = sample_scene((3, 7)), sample_scene((3, 7))
    assert a == b and a.meta == b.meta == {"kind": a.meta["kind"], "seed": [3, 7]}
    assert np.array_equal(render_array(a), render_array(b))
    assert sample_scene((3, 8)) != a
    assert Scene.from_dict(json.loads(json.dumps(a.to_dict()))) == a


def test_scenes_keep_their_layout_rules(scenes):
    kinds = Counter(s.meta["kind"] for s in scenes)
    assert set(kinds) == set(KIND_WEIGHTS)
    for s in scenes:
        assert 1 <= len(s.objects) <= 4 and s.canvas == 224
        assert set(s.background.colors) <= set(BACKGROUND_COLORS) and len(s.background.colors) in (1, 2)
        for o in s.objects:
            assert o.shape in SHAPES and o.color in OBJECT_COLORS and abs(o.extent - SIZES[o.size]) <= 3.0
            x0, y0, x1, y1 = o.bbox
            assert min(x0, y0) >= EDGE_MARGIN - 1e-6 and max(x1, y1) <= 224 - EDGE_MARGIN + 1e-6
        for i, a in enumerate(s.objects):
            for b in s.objects[i + 1:]:
                ax0, ay0, ax1, ay1 = a.bbox
                bx0, by0, bx1, by1 = b.bbox
                assert max(bx0 - ax1, ax0 - bx1, by0 - ay1, ay0 - by1) >= OBJECT_GAP - 1e-6  # no overlap, a clear gap
                for v in normalised_offset(a.bbox, b.bbox):  # no relation is a near-tie
                    assert abs(abs(float(v)) - 0.5) >= 0.12 - 1e-9
        if s.meta["kind"] == "count":
            assert len({o.shape for o in s.objects}) == 1 and len(s.objects) >= 2


def _probe(o) -> tuple[int, int]:
    """A pixel well inside the shape (a ring's band, not its hole)."""
    x, y = o.center
    dy = 0.37 * o.extent if o.shape == "ring" else (0.2 * o.extent if o.shape == "triangle" else 0.0)
    return int(round(y + dy)), int(round(x))


def test_pixels_match_ground_truth(scenes):
    for s in scenes[:60]:
        img = render_array(s).astype(int)
        for o in s.objects:
            r, c = _probe(o)
            assert np.abs(img[r, c] - OBJECT_COLORS[o.color]).max() <= 2, (o, img[r, c])
            if o.shape == "ring":  # the hole shows the background
                assert tuple(img[int(round(o.center[1])), int(round(o.center[0]))]) in [
                    BACKGROUND_COLORS[n] for n in s.background.colors]
            x0, y0, x1, y1 = (int(round(v)) for v in o.bbox)  # the object's colour fills its box, and stops there
            colour = np.all(np.abs(img - OBJECT_COLORS[o.color]) <= 2, axis=-1)
            outside = np.zeros(img.shape[:2], bool)
            outside[max(0, y0 - 4): y1 + 4, max(0, x0 - 4): x1 + 4] = True
            outside[y0 - 1: y1 + 1, x0 - 1: x1 + 1] = False
            inside = colour[y0:y1, x0:x1].sum()
            assert inside > 0.3 * o.extent**2 and not (colour & outside & _far_from_others(s, o, img.shape)).any()
            rows, cols = np.nonzero(colour[y0:y1, x0:x1])
            assert rows.min() <= 1 and cols.min() <= 1 and rows.max() >= y1 - y0 - 2 and cols.max() >= x1 - x0 - 2


def _far_from_others(scene, obj, shape) -> np.ndarray:
    m = np.ones(shape[:2], bool)
    for o in scene.objects:
        if o is not obj:
            x0, y0, x1, y1 = (int(round(v)) for v in o.bbox)
            m[max(0, y0 - 2): y1 + 2, max(0, x0 - 2): x1 + 2] = False
    return m


def test_make_scene_honours_specs_and_relations():
    rng = np.random.default_rng(0)
    for rel in RELATIONS:
        s = make_scene(rng, [ObjectSpec("star", "red", "small"), ObjectSpec("ring")], relation=(0, rel, 1))
        assert (s.objects[0].shape, s.objects[0].color, s.objects[0].size, s.objects[1].shape) == (
            "star", "red", "small", "ring")
        assert rel in relations(s.objects[0].bbox, s.objects[1].bbox)
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        make_scene(rng, [ObjectSpec("hexagon")])
    with pytest.raises(ValueError, match="1 to 4 objects"):
        make_scene(rng, [ObjectSpec()] * 5)
    with pytest.raises(ValueError, match="relation"):
        make_scene(rng, [ObjectSpec(), ObjectSpec()], relation=(0, "near", 1))
    with pytest.raises(ValueError, match="kind="):
        sample_scene(0, kind="crowd")


# ---------------------------------------------------------------------------------------------------------- captions
_SHAPE = "|".join(SHAPES)
_COLOR = "|".join(OBJECT_COLORS)
NP = re.compile(rf"^(a|an|one|two|three|four) (?:(small|large) )?(?:({_COLOR}) )?({_SHAPE})(s|es)?$")


def _np(text: str) -> tuple[int, tuple]:
    """Parse one noun phrase, checking its grammar: -> (count, (size, color, shape))."""
    m = NP.match(text)
    assert m, f"not a noun phrase: {text!r}"
    det, size, color, shape, suffix = m.groups()
    n = NUMBERS[det]
    assert (n > 1) == (suffix is not None), text
    if suffix:
        assert suffix == ("es" if shape.endswith("s") else "s"), text
    if det in ("a", "an"):
        assert det == ("an" if text.split(" ", 1)[1][0] in "aeiou" else "a"), text
    return n, (size, color, shape)


def _definite(text: str) -> tuple:
    m = re.match(rf"^the (?:(small|large) )?(?:({_COLOR}) )?({_SHAPE})$", text)
    assert m, text
    return m.groups()


def _matches(obj, key) -> bool:
    size, color, shape = key
    return obj.shape == shape and (color is None or obj.color == color) and (size is None or obj.size == size)


def _check_caption(text: str, s: Scene) -> None:
    """An independent reading of a caption, checked against the ground truth."""
    m = re.match(r"^(an image of|a picture of|a drawing of|there is|there are) (.*)$", text)
    lead, body = (m.group(1), m.group(2)) if m else (None, text)
    m = re.match(r"^(.*) on (a|an) (.+) background$", body)
    if m:
        body, art, names = m.groups()
        assert names.split(" and ") == list(dict.fromkeys(s.background.colors)) and art == (
            "an" if names[0] in "aeiou" else "a")
    rel_alt = "|".join(sorted(REL_WORDS, key=len, reverse=True))
    clause = re.match(rf"^(.*), with (the [a-z ]+?) ({rel_alt}) (the [a-z ]+)$", body)
    pair = re.match(rf"^((?:a|an) [a-z ]+?) ({rel_alt}) ((?:a|an) [a-z ]+)$", body)
    if clause:
        body = clause.group(1)
    if pair and not clause:  # "a green square to the left of a yellow triangle": the whole two-object scene
        (na, ka), (nb, kb) = _np(pair.group(1)), _np(pair.group(3))
        objs = [[o for o in s.objects if _matches(o, k)] for k in (ka, kb)]
        assert na == nb == 1 and len(s.objects) == 2 and len(objs[0]) == len(objs[1]) == 1 and objs[0][0] is not objs[1][0], text
        assert REL_WORDS[pair.group(2)] in relations(objs[0][0].bbox, objs[1][0].bbox), text
        phrases = [pair.group(1)]
    else:
        phrases = re.split(r", | and ", body)
        parsed = [_np(p) for p in phrases]
        detail = {"size" if k[0] else "color" if k[1] else "shape" for _, k in parsed}
        assert len(detail) == 1, text  # one level of detail throughout
        d = detail.pop()
        truth = Counter((o.size if d == "size" else None, o.color if d != "shape" else None, o.shape)
                        for o in s.objects)
        assert truth == Counter({k: n for n, k in parsed}), (text, truth)
    if clause:
        ka, kb = _definite(clause.group(2)), _definite(clause.group(4))
        a = [o for o in s.objects if _matches(o, ka)]
        b = [o for o in s.objects if _matches(o, kb)]
        assert len(a) == len(b) == 1 and REL_WORDS[clause.group(3)] in relations(a[0].bbox, b[0].bbox), text
    if lead in ("there is", "there are"):
        assert (lead == "there are") == (_np(phrases[0])[0] > 1), text


def test_captions_are_true_and_grammatical(scenes):
    rng = np.random.default_rng(0)
    forms = Counter()
    for s in scenes:
        for _ in range(4):
            text = caption(s, rng)
            _check_caption(text, s)
            forms["relation" if any(f" {w} " in text for w in REL_WORDS) else "list"] += 1
            forms["background" if text.endswith(" background") else "plain"] += 1
    assert min(forms.values()) > 0.1 * N_SCENES  # every form occurs


def test_caption_checker_rejects_false_captions(scenes):
    s = next(x for x in scenes if len(x.objects) == 2 and x.objects[0].shape != x.objects[1].shape)
    a, b = s.objects
    wrong_count = f"two {a.shape}s and a {b.shape}" if a.shape != "cross" else f"two crosses and a {b.shape}"
    rel = sorted(relations(a.bbox, b.bbox))[0]
    flipped = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}[rel]
    for text in (wrong_count, f"a {a.shape} {flipped} a {b.shape}", f"an {a.shape} and a {b.shape}"):
        with pytest.raises(AssertionError):
            _check_caption(text, s)


# ---------------------------------------------------------------------------------------------------------- QA
def _unique(s: Scene, color: str, shape: str):
    found = [o for o in s.objects if o.color == color and o.shape == shape]
    assert len(found) == 1
    return found[0]


def _answer(q: str, s: Scene) -> str:
    """An independent answer from the ground truth."""
    words = ["zero", "one", "two", "three", "four"]
    if m := re.match(rf"^what color is the (?:(small|large) )?({_SHAPE})\?$", q):
        found = [o for o in s.objects if o.shape == m.group(2) and m.group(1) in (None, o.size)]
        assert len(found) == 1
        return found[0].color
    if m := re.match(rf"^(?:what shape is the ({_COLOR}) object|which shape is ({_COLOR}))\?$", q):
        found = [o for o in s.objects if o.color == (m.group(1) or m.group(2))]
        assert len(found) == 1
        return found[0].shape
    if m := re.match(r"^how many (.+) are there\?$", q):
        what = m.group(1)
        if what == "objects":
            return words[len(s.objects)]
        if what.endswith(" objects"):
            return words[s.count(color=what.split()[0])]
        shape = next(x for x in SHAPES if what in (x + "s", x + "es"))
        return words[s.count(shape=shape)]
    if m := re.match(rf"^is there (?:a|an) (?:({_COLOR}) )?({_SHAPE})\?$", q):
        return "yes" if s.count(shape=m.group(2), color=m.group(1)) else "no"
    rel_alt = "|".join(sorted(REL_WORDS, key=len, reverse=True))
    if m := re.match(rf"^is the ({_COLOR}) ({_SHAPE}) ({rel_alt}) the ({_COLOR}) ({_SHAPE})\?$", q):
        a, b = _unique(s, m.group(1), m.group(2)), _unique(s, m.group(4), m.group(5))
        return "yes" if REL_WORDS[m.group(3)] in relations(a.bbox, b.bbox) else "no"
    if m := re.match(rf"^is the ({_COLOR}) ({_SHAPE}) small or large\?$", q):
        return _unique(s, m.group(1), m.group(2)).size
    raise AssertionError(f"unknown question form {q!r}")


def test_answers_are_true(scenes):
    rng = np.random.default_rng(1)
    kinds, yes = Counter(), Counter()
    for s in scenes:
        qa = questions(s, rng, per_kind=4)
        assert len({q.question for q in qa}) == len(qa)  # no repeats
        for q in qa:
            assert q.kind in QA_KINDS and _answer(q.question, s) == q.answer, (q, s)
            kinds[q.kind] += 1
            yes[q.kind, q.answer] += 1
    assert set(kinds) == set(QA_KINDS)
    for kind in ("exist", "position"):  # yes/no kinds are balanced
        assert 0.35 < yes[kind, "yes"] / (yes[kind, "yes"] + yes[kind, "no"]) < 0.65


def test_answer_accuracy_per_kind():
    pairs = [QA("how many stars are there?", "two", "count"), QA("what color is the ring?", "red", "color"),
             QA("is there a star?", "yes", "exist"), QA("what shape is the red object?", "ring", "shape")]
    acc = answer_accuracy(pairs, [" 2.", "Red", "no", "a ring"])
    assert acc == {"count": 1.0, "color": 1.0, "exist": 0.0, "shape": 1.0, "all": 0.75}
    with pytest.raises(ValueError, match="one answer per question"):
        answer_accuracy(pairs, ["two"])


# ---------------------------------------------------------------------------------------------------------- dataset
def test_dataset_writer(tmp_path):
    out = tmp_path / "world"
    assert main(["demo", "world", "--out", str(out), "--n", "12", "--seed", "5"]) == 0
    rows = read_manifest(out / "manifest.jsonl")
    assert len(rows) == 12 and json.loads((out / "world.json").read_text())["n"] == 12
    for i, r in enumerate(rows):
        png = out / "images" / f"{i:06d}.png"
        assert r["image"] == str(png)
        assert (out / "images" / f"{i:06d}.txt").read_text().strip() == r["caption"] == r["captions"][0]
        scene = Scene.from_dict(r["scene"])
        assert np.array_equal(np.asarray(Image.open(png).convert("RGB")), render_array(scene))
        for text in r["captions"]:
            _check_caption(text, scene)
        assert all(_answer(q["question"], scene) == q["answer"] for q in r["qa"])
    from vgt_impl.training.data import load_records  # the training loaders read both layouts

    for source in (out / "images", out / "manifest.jsonl"):
        recs = sorted(load_records([str(source)]), key=lambda r: r.path)
        assert [(r.path, r.caption) for r in recs] == [(r["image"], r["caption"]) for r in rows]
    alone, _ = scene_record(5, 7)  # any index rebuilds alone, identically
    assert {**alone, "image": rows[7]["image"]} == rows[7]
    assert main(["demo", "world", "--out", str(out), "--n", "3"]) == 2  # an existing dataset is never overwritten
    with pytest.raises(FileExistsError):
        write_dataset(out, 3)
    with pytest.raises(ValueError, match="at least one"):
        write_dataset(tmp_path / "empty", 0)
