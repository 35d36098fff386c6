"""The small world: captioned scenes of coloured shapes, a programmatic detector and shapes-GenEval.

    from vgt_impl.demo import sample_scene, render, caption, questions, write_dataset, detect, prompt_set, evaluate

Everything here is numpy + PIL (torch only where images meet a generator) and needs no network.
"""

from .captions import QA, QA_KINDS, answer_accuracy, caption, questions
from .dataset import read_manifest, scene_record, write_dataset
from .detector import Detection, detect
from .geneval import (
    CATEGORIES,
    EvalReport,
    OracleGenerator,
    PromptSpec,
    evaluate,
    limit_per_category,
    noise_generator,
    pipeline_generator,
    prompt_set,
    scene_for_spec,
    score,
)
from .grid import make_grid
from .palette import BACKGROUND_COLORS, OBJECT_COLORS, SHAPES, SIZES
from .render import render, render_array
from .scene import RELATIONS, Background, Scene, SceneObject, relations
from .world import KIND_WEIGHTS, ObjectSpec, make_scene, sample_scene

__all__ = [
    "BACKGROUND_COLORS", "CATEGORIES", "KIND_WEIGHTS", "OBJECT_COLORS", "QA", "QA_KINDS", "RELATIONS", "SHAPES", "SIZES",
    "Background", "Detection", "answer_accuracy", "EvalReport", "ObjectSpec", "OracleGenerator", "PromptSpec", "Scene", "SceneObject",
    "caption", "detect", "evaluate", "limit_per_category", "make_grid", "make_scene", "noise_generator",
    "pipeline_generator", "prompt_set", "questions", "read_manifest", "relations", "render", "render_array",
    "sample_scene", "scene_for_spec", "scene_record", "score", "write_dataset",
]
