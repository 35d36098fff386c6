"""The detector and shapes-GenEval: labelling, detection on ground truth (>= 99 % per category), scoring rules, eval."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vgt_impl.cli import main
from vgt_impl.demo import (
    CATEGORIES,
    SHAPES,
    Detection,
    ObjectSpec,
    OracleGenerator,
    detect,
    evaluate,
    limit_per_category,
    make_scene,
    noise_generator,
    prompt_set,
    render_array,
    sample_scene,
    scene_for_spec,
    score,
)
from vgt_impl.demo.components import label_components
from vgt_impl.demo.geneval import PromptSpec, paired_difference, spec_from_prompt


@pytest.fixture(scope="module")
def specs():
    return prompt_set()


# ---------------------------------------------------------------------------------------------------------- components
def _flood_labels(mask: np.ndarray) -> np.ndarray:
    """Reference 8-connected labelling by breadth-first search."""
    h, w = mask.shape
    out = np.zeros((h, w), int)
    n = 0
    for y in range(h):
        for x in range(w):
            if mask[y, x] and not out[y, x]:
                n += 1
                stack = [(y, x)]
                out[y, x] = n
                while stack:
                    cy, cx = stack.pop()
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            ny, nx = cy + dy, cx + dx
                            if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not out[ny, nx]:
                                out[ny, nx] = n
                                stack.append((ny, nx))
    return out


@pytest.mark.parametrize("density", [0.2, 0.45, 0.6])
def test_components_match_flood_fill(density):
    rng = np.random.default_rng(int(density * 100))
    mask = rng.random((37, 53)) < density
    labels, n = label_components(mask)
    ref = _flood_labels(mask)
    assert n == ref.max()
    assert np.array_equal(labels, ref)  # same partition and the same raster numbering
    assert label_components(np.zeros((4, 5), bool))[1] == 0


# ---------------------------------------------------------------------------------------------------------- detector
def test_detector_recovers_whole_scenes():
    for i in range(40):
        s = sample_scene((21, i))
        found = detect(render_array(s))
        assert sorted((d.shape, d.color, d.size) for d in found) == sorted((o.shape, o.color, o.size) for o in s.objects)
        for o in s.objects:  # each object's box, to within 2 px
            d = next(d for d in found if (d.shape, d.color) == (o.shape, o.color) and
                     max(abs(a - b) for a, b in zip(d.bbox, o.bbox)) <= 2.0)
            assert d.area > 0


def test_detector_inputs_and_noise():
    s = make_scene(np.random.default_rng(0), [ObjectSpec("star", "blue", "large")])
    img = render_array(s)
    big = Image.fromarray(img).resize((448, 448), Image.BICUBIC)
    assert [(d.shape, d.color, d.size) for d in detect(big)] == [("star", "blue", "large")]  # resized to 224
    noise = (np.random.default_rng(0).random((224, 224, 3)) * 255).astype(np.uint8)
    assert [d for d in detect(noise) if d.shape is not None] == []
    with pytest.raises(ValueError, match="uint8"):
        detect(img.astype(np.float32))


def test_detector_is_at_least_99_percent_right_on_ground_truth_per_category(specs):
    report = evaluate(OracleGenerator(specs), specs, images_per_prompt=2, batch_size=32, seed=7)
    acc = report.accuracy
    assert list(acc) == list(CATEGORIES)
    assert min(acc.values()) >= 0.99, {s.prompt: s.reason for s in report.samples if not s.correct}


# ---------------------------------------------------------------------------------------------------------- prompts / scoring
def test_prompt_set_is_fixed_and_follows_geneval(specs):
    assert [s.to_dict() for s in specs] == [s.to_dict() for s in prompt_set()]
    by_tag = {t: [s for s in specs if s.tag == t] for t in CATEGORIES}
    assert len(by_tag["single_object"]) == len(SHAPES) and len(by_tag["counting"]) == 21
    assert all(len(by_tag[t]) == 24 for t in ("two_object", "colors", "position", "color_attr"))
    assert len({s.prompt for s in specs}) == len(specs)
    count = by_tag["counting"][0]
    assert count.exclude[0]["count"] == count.include[0]["count"] + 1 and count.prompt.split()[0] in ("two", "three",
                                                                                                     "four")
    pos = by_tag["position"][0]
    assert pos.include[1]["position"][1] == 0 and pos.prompt.split()[-1] == pos.include[0]["class"]
    first4 = {t: [s for s in specs if s.tag == t][:4] for t in ("counting", "position")}
    assert {s.include[1]["position"][0] for s in first4["position"]} == {"left of", "right of", "above", "below"}
    assert {s.include[0]["count"] for s in first4["counting"][:3]} == {2, 3, 4}
    sub = limit_per_category(specs, 2)
    assert len(sub) == 12 and sub == [s for t in CATEGORIES for s in by_tag[t][:2]]
    with pytest.raises(ValueError, match="limit"):
        limit_per_category(specs, 0)


def _det(shape, color, x, y, size=40.0) -> Detection:
    box = (x - size / 2, y - size / 2, x + size / 2, y + size / 2)
    return Detection(shape, color, "small", (x, y), box, 900, 0.1)


def test_scoring_rules():
    count3 = PromptSpec("counting", "three stars", ({"class": "star", "count": 3},), ({"class": "star", "count": 4},))
    stars = [_det("star", "red", 30 + 50 * i, 60) for i in range(4)]
    assert score(count3, stars[:3]) == (True, "")
    assert score(count3, stars) == (False, "expected star<4, found 4")
    assert score(count3, stars[:2])[1] == "expected star>=3, found 2"
    red = PromptSpec("colors", "a red ring", ({"class": "ring", "count": 1, "color": "red"},))
    ok, why = score(red, [_det("ring", "blue", 50, 50)])
    assert not ok and why.startswith("expected red ring>=1, found 0 red; and 1 blue")
    assert score(red, [_det("ring", "blue", 50, 50), _det("ring", "red", 150, 50)])[0]
    left = PromptSpec("position", "a star left of a ring",
                      ({"class": "ring", "count": 1}, {"class": "star", "count": 1, "position": ["left of", 0]}))
    assert score(left, [_det("star", "red", 40, 100), _det("ring", "blue", 160, 100)]) == (True, "")
    ok, why = score(left, [_det("star", "red", 160, 100), _det("ring", "blue", 40, 100)])
    assert not ok and why == "expected star left of target, found right of target"
    ok, why = score(left, [_det("star", "red", 100, 100)])
    assert not ok and "expected ring>=1, found 0" in why and "no target" in why
    ok, why = score(left, [_det("star", "red", 100, 40), _det("ring", "blue", 104, 160)])
    assert not ok and why == "expected star left of target, found above target"


def test_prompts_are_read_into_the_specs_the_prompt_set_has(specs):
    """spec_from_prompt reads every prompt of the set back into its own clauses (all six categories' forms), and the
    caption grammar's other forms (counts with colours, relation phrasings, lead-ins, backgrounds)."""
    for spec in specs:
        read = spec_from_prompt(spec.prompt)
        assert (read.tag, read.include, read.exclude) == ("custom", spec.include, spec.exclude), spec.prompt
    readme = spec_from_prompt("two red circles left of a blue square")
    assert readme.include == ({"class": "square", "count": 1, "color": "blue"},
                              {"class": "circle", "count": 2, "color": "red", "position": ["left of", 0]})
    assert readme.exclude == ({"class": "circle", "count": 3},)
    circles = [_det("circle", "red", 30, 60), _det("circle", "red", 30, 160)]
    assert score(readme, [*circles, _det("square", "blue", 170, 110)]) == (True, "")
    assert not score(readme, [*circles, _det("square", "blue", 10, 110)])[0]  # square left of the circles
    assert not score(readme, [circles[0], _det("square", "blue", 170, 110)])[0]  # one circle
    other = spec_from_prompt("An image of a small green square on the left of a yellow triangle on a white background")
    assert other.include == ({"class": "triangle", "count": 1, "color": "yellow"},
                             {"class": "square", "count": 1, "color": "green", "position": ["left of", 0]})
    assert spec_from_prompt("a star beneath a ring").include[1]["position"] == ["below", 0]
    for bad, why in [("two red dogs", "cannot read 'two red dogs'"), ("a shiny star", "'shiny' in 'a shiny star'"),
                     ("a star left of a ring and a cross", "exactly two noun phrases"), ("", "nothing to draw")]:
        with pytest.raises(ValueError, match=why):
            spec_from_prompt(bad)


def test_eval_scores_the_users_prompts(tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--generator", "oracle", "--prompt", "two red circles left of a blue square", "--prompt",
                 "three stars", "--images-per-prompt", "2", "--out", str(out)]) == 0
    assert "custom" in capsys.readouterr().out
    result = json.loads((out / "results.json").read_text())
    assert result["per_category"] == {"custom": {"correct": 4, "total": 4, "accuracy": 1.0}}
    assert result["settings"]["prompts"] == ["two red circles left of a blue square", "three stars"]
    with Image.open(out / "grid.png") as grid:
        assert grid.size == (4 * 224, 224 + 30)  # every sample of a user's prompts, not one per prompt
    assert main(["eval", "--generator", "oracle", "--prompt", "a red dog", "--out", str(out)]) == 2
    assert "cannot read 'a red dog'" in capsys.readouterr().err


def test_oracle_scenes_satisfy_their_prompts(specs):
    rng = np.random.default_rng(0)
    for spec in specs:
        s = scene_for_spec(spec, rng)
        truth = [Detection(o.shape, o.color, o.size, o.center, o.bbox, 1, 0.0) for o in s.objects]
        assert score(spec, truth) == (True, ""), spec.prompt


# ---------------------------------------------------------------------------------------------------------- eval
def test_eval_oracle_scores_one_and_noise_scores_zero(specs):
    sub = limit_per_category(specs, 4)
    assert evaluate(OracleGenerator(sub), sub, images_per_prompt=1).overall == 1.0
    noise = evaluate(noise_generator, sub, images_per_prompt=1)
    assert noise.overall == 0.0 and set(noise.accuracy) == set(CATEGORIES)
    with pytest.raises(ValueError, match=r"images \[B, 3, H, W\]"):
        evaluate(lambda p, s: torch.zeros(len(p), 224, 224), sub[:1], images_per_prompt=1)
    with pytest.raises(ValueError, match="returned 1 images for 2"):
        evaluate(lambda p, s: torch.zeros(1, 3, 224, 224), sub[:2], images_per_prompt=1)


def test_eval_command_writes_table_json_and_grid(tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--generator", "oracle", "--limit", "2", "--images-per-prompt", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "overall" in text and all(t in text for t in CATEGORIES)
    result = json.loads((out / "results.json").read_text())
    assert result["overall"] == 1.0 and len(result["samples"]) == 24
    assert set(result["per_category"]) == set(CATEGORIES) and result["settings"]["limit"] == 2
    assert result["samples"][0]["detections"][0]["shape"] in SHAPES
    with Image.open(out / "grid.png") as grid:
        assert grid.size == (8 * 224, 2 * (224 + 30))  # 12 prompts: one image each, 8 per row
    assert main(["eval", "--base-model", str(tmp_path), "--out", str(out)]) == 2  # no --ar: the built-in model
    assert "--base-model / --ae need --ar" in capsys.readouterr().err
    assert main(["eval", "--generator", "oracle", "--size", "200", "--out", str(out)]) == 2
    assert "--size=200 is not a multiple of 28: use 196 or 224" in capsys.readouterr().err
    assert main(["eval", "--generator", "noise", "--limit", "0", "--out", str(out)]) == 2
    assert "--limit 0 must be at least 1" in capsys.readouterr().err


def test_paired_difference_pairs_samples_by_prompt_and_seed():
    def rows(correct):  # two categories: 4 samples of single_object, 2 of colors
        tags = ["single_object"] * 4 + ["colors"] * 2
        return [{"index": i // 2, "seed": i, "tag": t, "correct": c} for i, (t, c) in enumerate(zip(tags, correct))]

    a, b = rows([1, 1, 0, 1, 1, 0]), rows([0, 1, 0, 0, 1, 1])
    d = paired_difference(a, b)
    single = np.array([1, 0, 0, 1.0])  # per-sample differences
    assert d["per_category"]["single_object"]["delta"] == pytest.approx(0.5)
    assert d["per_category"]["single_object"]["se"] == pytest.approx(single.std(ddof=1) / 2)
    assert d["per_category"]["colors"]["delta"] == pytest.approx(-0.5)
    assert d["delta"] == pytest.approx(0.0) and d["n"] == 6  # the mean of the categories, as GenEval's overall
    se = np.sqrt(d["per_category"]["single_object"]["se"] ** 2 + d["per_category"]["colors"]["se"] ** 2) / 2
    assert d["se"] == pytest.approx(se)
    assert paired_difference(a, list(reversed(a)))["delta"] == 0.0  # matched by key, not by position
    with pytest.raises(ValueError, match="different samples"):
        paired_difference(a, b[:5])
    with pytest.raises(ValueError, match="share a prompt index and seed"):
        paired_difference(a + a[:1], b)


def test_eval_compare_to_prints_the_paired_difference(tmp_path, capsys):
    common = ["--limit", "2", "--images-per-prompt", "1"]
    assert main(["eval", "--generator", "noise", *common, "--out", str(tmp_path / "noise")]) == 0
    capsys.readouterr()
    out = tmp_path / "oracle"
    assert main(["eval", "--generator", "oracle", *common, "--out", str(out),
                 "--compare-to", str(tmp_path / "noise")]) == 0
    text = capsys.readouterr().out
    assert "+1.000" in text and "paired over 12 samples" in text
    cmp = json.loads((out / "results.json").read_text())["compared_to"]
    assert cmp["delta"] == 1.0 and cmp["se"] == 0.0 and cmp["overall"] == 0.0
    # refused before anything is generated: another prompt set, a missing file, not a results file
    assert main(["eval", "--generator", "oracle", "--limit", "3", "--images-per-prompt", "1", "--out", str(out),
                 "--compare-to", str(tmp_path / "noise" / "results.json")]) == 2
    assert "other --limit (2 there, 3 here)" in capsys.readouterr().err
    assert main(["eval", "--generator", "oracle", *common, "--compare-to", str(tmp_path / "none")]) == 2
    assert "no such results.json" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    assert main(["eval", "--generator", "oracle", *common, "--compare-to", str(tmp_path / "bad.json")]) == 2
    assert "not a vgt eval results.json" in capsys.readouterr().err


def test_check_detector_command_prints_the_table(capsys):
    assert main(["demo", "check-detector", "--per-category", "1", "--images-per-prompt", "1", "--speed-scenes", "5",
                 "--no-degradations"]) == 0
    text = capsys.readouterr().out
    assert "ground truth" in text and "min_object_distance" in text and "ms/image" in text


def test_eval_runs_a_vgt_pipeline(reference_dir, tmp_path, capsys):
    q = reference_dir / "qwen25vl"
    out = tmp_path / "eval"
    args = ["eval", "--ar", str(q / "ar" / "iter_5000.pth"), "--base-model", str(q / "base" / "Qwen2.5-VL-3B-Instruct-tiny"),
            "--decoder", str(q / "base" / "dc-ae-f32c32-sana-1.1-diffusers-tiny"), "--size", "112", "--steps", "2",
            "--acc-ratio", "4", "--limit", "1", "--images-per-prompt", "1", "--batch-size", "3", "--out", str(out)]
    assert main(args) == 0
    result = json.loads((out / "results.json").read_text())
    assert len(result["samples"]) == 6 and 0.0 <= result["overall"] <= 1.0  # random weights: a score, not a picture
    assert result["settings"]["acc_ratio"] == 4
    with Image.open(out / "grid.png") as grid:
        assert grid.size[0] == 6 * 224


def test_autoencoder_generator_is_the_ground_truth_through_the_vgtae(demo_folder, specs, tmp_path, capsys):
    """--generator autoencoder: the oracle's image of each prompt, encoded and decoded by the model's VGT-AE."""
    from vgt_impl.autoencoder import VGTAutoencoder
    from vgt_impl.demo.geneval import autoencoder_generator

    sub = limit_per_category(specs, 1)[:2]
    ae = VGTAutoencoder.from_pretrained(demo_folder)
    images = autoencoder_generator(sub, ae)([s.prompt for s in sub], [3, 4])
    truth = OracleGenerator(sub)([s.prompt for s in sub], [3, 4])
    with torch.no_grad():
        expected = ae.decode_pixels(ae.encode(truth)).clamp(-1, 1)
    assert images.shape == (2, 3, 224, 224) and images.dtype == torch.float32
    torch.testing.assert_close(images, expected)
    out = tmp_path / "eval"
    assert main(["eval", "--ar", str(demo_folder), "--generator", "autoencoder", "--limit", "1",
                 "--images-per-prompt", "1", "--out", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["model"].startswith("ground truth through the VGT-AE") and len(result["samples"]) == 6


def test_dcae_generator_is_the_ground_truth_through_a_dcae(reference_dir, tmp_path, capsys):
    """--generator dcae --decoder FOLDER: the oracle's image through a DC-AE at 256 px and back to 224 px."""
    from vgt_impl.demo.convergence import load_dcae_latents

    folder = reference_dir / "qwen25vl" / "base" / "dc-ae-f32c32-sana-1.1-diffusers-tiny"
    out = tmp_path / "eval"
    assert main(["eval", "--generator", "dcae", "--decoder", str(folder), "--limit", "1", "--images-per-prompt", "1",
                 "--out", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["model"].startswith("ground truth through the DC-AE") and len(result["samples"]) == 6
    codec = load_dcae_latents(folder, shift=0.0, scale=1.0)
    assert tuple(codec.encode(torch.zeros(1, 3, 224, 224)).shape) == (1, 32, 8, 8)  # 256 px: the 8 x 8 grid
    assert main(["eval", "--generator", "dcae", "--out", str(out)]) == 2
    assert "--generator dcae takes --decoder" in capsys.readouterr().err
    assert main(["eval", "--generator", "dcae", "--decoder", str(tmp_path), "--out", str(out)]) == 2
    assert "expected a diffusers AutoencoderDC folder with weights" in capsys.readouterr().err
