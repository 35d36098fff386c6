"""The ``vgt demo ...`` and ``vgt eval`` commands (this module prints; the rest of the package does not)."""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import numpy as np


# ---------------------------------------------------------------------------------------------------------- demo world
def cmd_world(args) -> int:
    check_args(args)
    from tqdm.auto import tqdm

    from .dataset import write_dataset

    bar = tqdm(total=args.n, desc="scenes", unit="img")
    t0 = time.perf_counter()
    try:
        manifest = write_dataset(args.out, args.n, args.seed, qa_per_kind=args.qa_per_kind, workers=args.workers,
                                 overwrite=args.overwrite, progress=lambda done, total: bar.update(done - bar.n))
    except FileExistsError as e:
        raise ValueError(f"{e} (--overwrite)") from e
    bar.close()
    dt = time.perf_counter() - t0
    print(f"wrote {args.n} scenes to {Path(args.out) / 'images'} (.png + .txt) and {manifest} "
          f"in {dt:.1f} s ({args.n / dt:.0f} scenes/s)")
    return 0


# ---------------------------------------------------------------------------------------------------------- check-detector
def cmd_check_detector(args) -> int:
    check_args(args)
    from .degrade import DEGRADATIONS
    from .geneval import CATEGORIES, OracleGenerator, evaluate, prompt_set
    from .palette import palette_margins

    for key, value in palette_margins().items():
        print(f"{key:<34} {value if isinstance(value, str) else round(value, 1)}")
    _print_speed(args.speed_scenes)
    specs = prompt_set(args.per_category)
    names = ["ground truth"] + (list(DEGRADATIONS) if args.degradations else [])
    print(f"\nshapes-GenEval on rendered ground truth: {len(specs)} prompts x {args.images_per_prompt} images")
    print(f"{'render':<40}" + "".join(f"{c:>14}" for c in CATEGORIES) + f"{'overall':>10}")
    for name in names:
        report = evaluate(OracleGenerator(specs, DEGRADATIONS.get(name)), specs,
                          images_per_prompt=args.images_per_prompt, batch_size=16)
        acc = report.accuracy
        print(f"{name:<40}" + "".join(f"{acc[c]:>14.3f}" for c in CATEGORIES) + f"{report.overall:>10.3f}")
    return 0


def _print_speed(n: int) -> None:
    """Scenes sampled / rendered / detected per second, and exact recovery of whole random scenes."""
    from .detector import detect, prototypes
    from .render import render_array
    from .world import sample_scene

    prototypes()  # measured once, outside the timing
    t0 = time.perf_counter()
    scenes = [sample_scene((12345, i)) for i in range(n)]
    t1 = time.perf_counter()
    images = [render_array(s) for s in scenes]
    t2 = time.perf_counter()
    found = [detect(img) for img in images]
    t3 = time.perf_counter()
    exact = np.mean([_same_objects(s, d) for s, d in zip(scenes, found)])
    print(f"\n{n} random scenes: sample {n / (t1 - t0):.0f}/s, render {n / (t2 - t1):.0f}/s, "
          f"detect {1000 * (t3 - t2) / n:.2f} ms/image; every object found with the right shape, colour and size "
          f"in {100 * exact:.1f} % of scenes")


def _same_objects(scene, detections) -> bool:
    truth = sorted((o.shape, o.color, o.size) for o in scene.objects)
    return truth == sorted((d.shape or "?", d.color, d.size) for d in detections)


# ---------------------------------------------------------------------------------------------------------- eval
def cmd_eval(args) -> int:
    check_args(args)
    from tqdm.auto import tqdm

    from .geneval import evaluate, limit_per_category, prompt_set, spec_from_prompt
    from .grid import make_grid

    if args.prompt:  # the user's prompts, read before any model loads
        specs = [spec_from_prompt(p) for p in args.prompt]
    else:
        specs = limit_per_category(prompt_set(args.per_category), args.limit)
    baseline = _read_baseline(args)  # before any model loads: a missing or mismatched file is an error now
    generator, label = _generator(args, specs)
    print(f"shapes-GenEval: {len(specs)} prompts x {args.images_per_prompt} images; {label}")
    bar = tqdm(total=len(specs) * args.images_per_prompt, desc="eval", unit="img")
    t0 = time.perf_counter()
    report = evaluate(generator, specs, images_per_prompt=args.images_per_prompt, batch_size=args.batch_size,
                      seed=args.seed, progress=lambda done, total: bar.update(done - bar.n),
                      keep_images=args.images_per_prompt if args.prompt else 1)  # a user's prompts: every sample
    bar.close()
    seconds = time.perf_counter() - t0
    print(f"\n{'category':<16}{'accuracy':>10}{'correct':>10}{'total':>8}")
    for tag, (c, n) in report.per_category.items():
        print(f"{tag:<16}{c / n:>10.3f}{c:>10}{n:>8}")
    print(f"{'overall':<16}{report.overall:>10.3f}   (mean of the categories; {seconds:.1f} s)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"model": label, "settings": _settings(args), "seconds": round(seconds, 2), **report.to_dict()}
    if baseline is not None:
        result["compared_to"] = _print_comparison(result, baseline, args.compare_to)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    make_grid(report.samples).save(out / "grid.png")
    print(f"wrote {out / 'results.json'} and {out / 'grid.png'}")
    return 0


def _read_baseline(args) -> dict | None:
    """The ``--compare-to`` results.json, checked to be an evaluation of the same prompts, images and seeds."""
    if not getattr(args, "compare_to", None):
        return None
    path = Path(args.compare_to)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise ValueError(f"--compare-to {args.compare_to}: no such results.json (write one with vgt eval --out DIR)")
    try:
        baseline = json.loads(path.read_text(encoding="utf-8"))
        theirs = baseline["settings"]
        rows = baseline["samples"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"--compare-to {path}: not a vgt eval results.json ({e})") from e
    mine = _settings(args)
    differ = [k for k in ("per_category", "limit", "images_per_prompt", "seed", "size", "prompts")
              if theirs.get(k) != mine.get(k)]
    if differ:
        raise ValueError(f"--compare-to {path} was evaluated with other " + ", ".join(
            f"--{k.replace('_', '-')} ({theirs.get(k)} there, {mine[k]} here)" for k in differ)
            + ": a paired comparison needs the same prompts, images and seeds")
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"--compare-to {path}: it holds no samples")
    return baseline


def _print_comparison(result: dict, baseline: dict, path) -> dict:
    from .geneval import paired_difference

    diff = paired_difference(result["samples"], baseline["samples"])
    print(f"\nagainst {path} ({baseline.get('model', '?')}):")
    print(f"{'category':<16}{'difference':>11}{'s.e.':>8}")
    for tag, c in diff["per_category"].items():
        print(f"{tag:<16}{c['delta']:>+11.3f}{c['se']:>8.3f}")
    print(f"{'overall':<16}{diff['delta']:>+11.3f}{diff['se']:>8.3f}   ({result['overall']:.3f} vs "
          f"{baseline['overall']:.3f}; paired over {diff['n']} samples, 1 standard error)")
    return {"path": str(path), "overall": baseline["overall"], **diff}


def _settings(args) -> dict:
    keys = ("per_category", "limit", "images_per_prompt", "batch_size", "seed", "size", "cfg", "cfg_schedule", "steps",
            "acc_ratio", "order", "sampler", "mode")
    settings = {k: getattr(args, k) for k in keys}
    if getattr(args, "prompt", None):
        settings["prompts"] = list(args.prompt)
    return settings


def _generator(args, specs):
    """(generator callable, a label for the report) from the command's arguments."""
    from .geneval import OracleGenerator, autoencoder_generator, noise_generator, pipeline_generator

    if args.generator == "oracle":
        return OracleGenerator(specs), "oracle (rendered ground truth)"
    if args.generator == "noise":
        return functools.partial(noise_generator, size=args.size), "noise images"
    if args.generator == "dcae":
        from .convergence import load_dcae_latents

        if not args.decoder or args.ar:
            raise ValueError("--generator dcae takes --decoder (a DC-AE folder with weights) and no --ar")
        folder = Path(args.decoder)
        if not any(folder.glob("diffusion_pytorch_model.*")):
            raise ValueError(f"--decoder {folder}: expected a diffusers AutoencoderDC folder with weights")
        codec = load_dcae_latents(folder, shift=0.0, scale=1.0)  # a round trip: the normalisation cancels
        return autoencoder_generator(specs, codec), f"ground truth through the DC-AE {folder} (256 px)"
    from ..cli import _load_pipeline, default_preset, sampling_options, use_builtin_model

    use_builtin_model(args)  # no --ar: the built-in vgt-demo model
    sampling = sampling_options(args, default_preset(args.ar))  # the preset (the model's, else reference) + overrides
    args.steps, args.sampler = sampling["num_flow_steps"], sampling["sampler"]  # what results.json records
    if args.acc_ratio is None:
        from ..cli import default_acc_ratio

        args.acc_ratio = default_acc_ratio(args.ar)
    pipe = _load_pipeline(args)
    if args.generator == "autoencoder":
        if getattr(pipe, "ae", None) is None:
            raise ValueError("--generator autoencoder needs the model's VGT-AE (load one with --ae)")
        return autoencoder_generator(specs, pipe.ae), f"ground truth through the VGT-AE of {args.ar}"
    gen = pipeline_generator(pipe, size=args.size, cfg_scale=args.cfg, cfg_schedule=args.cfg_schedule,
                             acc_ratio=args.acc_ratio, order=args.order, mode=args.mode, **sampling)
    speed = "".join(f", {k} {v}" for k, v in sampling.items() if k not in ("num_flow_steps", "sampler"))
    return gen, f"model {args.ar} (cfg {args.cfg} {args.cfg_schedule}, {sampling['sampler']} {sampling['num_flow_steps']} " \
                f"steps, acc_ratio {args.acc_ratio}, order {args.order or pipe.default_order}{speed}, {args.size} px)"


# ---------------------------------------------------------------------------------------------------------- train
def cmd_train(args) -> int:
    """``vgt demo train``: the whole vgt-demo recipe (see recipe.py)."""
    import logging
    import sys

    from .recipe import STAGES, Recipe, RecipeConfig

    overrides: dict[str, list[str]] = {}
    for item in args.set or []:
        stage, sep, kv = item.partition(":")
        if not sep or stage not in STAGES or "=" not in kv:
            raise ValueError(f"--set {item!r}: expected STAGE:key=value with STAGE one of {', '.join(STAGES)}")
        overrides.setdefault(stage, []).append(kv)
    stages = [s.strip() for s in args.stages.split(",")] if args.stages else None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("accelerate", "torch", "transformers", "diffusers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cfg = RecipeConfig(Path(args.out), scenes=args.scenes, threads=args.threads, smoke=args.smoke, overrides=overrides,
                       preset=args.preset)
    timings = Recipe(cfg).run(stages, progress=lambda stage, what: print(f"[{stage}] {what}", flush=True))
    print(f"\n{'stage':<12}{'wall s':>10}{'CPU s':>10}{'threads':>9}  load average (start -> end)")
    for name, t in timings["stages"].items():
        print(f"{name:<12}{t['wall_s']:>10.1f}{t['cpu_s']:>10.1f}{t['threads']:>9}  "
              f"{t['load_avg_start'][0]:.2f} -> {t['load_avg_end'][0]:.2f}")
    print(f"{'total':<12}{timings.get('total_wall_s', 0):>10.1f}{timings.get('total_cpu_s', 0):>10.1f}")
    print(f"wrote {Path(args.out) / 'timings.json'}; the model folder is {Path(args.out) / 'vgt-demo'}")
    return 0


def cmd_convergence(args) -> int:
    """``vgt demo convergence``: the same AR on VGT-AE latents and on DC-AE latents (see convergence.py)."""
    import logging
    import sys

    from .convergence import ConvergenceConfig, run_convergence

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("accelerate", "torch", "transformers", "diffusers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cfg = ConvergenceConfig(Path(args.recipe), Path(args.out), steps=args.steps, eval_every=args.eval_every,
                            eval_limit=args.limit, images_per_prompt=args.images_per_prompt, acc_ratio=args.acc_ratio,
                            overrides=tuple(args.set or []), runs=tuple(r.strip() for r in args.runs.split(",")))
    results = run_convergence(cfg, progress=lambda run, step, s: print(f"[{run}] step {step}: {s:.3f}", flush=True))
    print(f"\n{'step':>6}" + "".join(f"{n:>10}" for n in results["runs"]))
    steps = sorted({int(k) for r in results["runs"].values() for k in r["scores"]})
    for step in steps:
        row = [results["runs"][n]["scores"].get(str(step), {}).get("overall") for n in results["runs"]]
        print(f"{step:>6}" + "".join(f"{v:>10.3f}" if v is not None else f"{'-':>10}" for v in row))
    print(json.dumps(results.get("summary", "(both runs needed for the summary)"), indent=1))
    print(f"wrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'convergence.png'}")
    return 0


# ---------------------------------------------------------------------------------------------------------- parser
def add_commands(sub, model_args, sampling_args) -> None:
    """Register ``demo`` (world, check-detector) and ``eval`` on the ``vgt`` parser's subparsers; ``model_args`` and
    ``sampling_args`` add the options ``vgt generate`` takes (model files; cfg, steps, acc_ratio, order, ...)."""
    from ..presets import PRESETS

    demo = sub.add_parser("demo", help="the small world of shapes: datasets, detector check")
    demo_sub = demo.add_subparsers(dest="demo_command", required=True)

    p = demo_sub.add_parser("world", help="write N captioned scenes: PNG + .txt per image, manifest.jsonl")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n", type=int, required=True, help="number of scenes")
    p.add_argument("--seed", type=int, default=0, help="seed of the scene sampler (same seed, same dataset)")
    p.add_argument("--qa-per-kind", type=int, default=2, help="question/answer pairs per kind and image")
    p.add_argument("--workers", type=int, default=1, help="processes rendering in parallel (same output)")
    p.add_argument("--overwrite", action="store_true", help="write into a folder that already holds a dataset")
    p.set_defaults(func=cmd_world)

    p = demo_sub.add_parser("check-detector", help="the detector on rendered ground truth, clean and degraded")
    p.add_argument("--per-category", type=int, default=24, help="prompts per category")
    p.add_argument("--images-per-prompt", type=int, default=4, help="rendered images per prompt")
    p.add_argument("--no-degradations", dest="degradations", action="store_false",
                   help="check the clean renders only")
    p.add_argument("--speed-scenes", type=int, default=500, help="random scenes timed for sample/render/detect")
    p.set_defaults(func=cmd_check_detector)

    p = demo_sub.add_parser("train", help="rebuild the vgt-demo model from nothing: world, tokenizer, VLM, DC-AE, "
                                          "VGT-AE stages 1-2, latent cache, VGT-AR, export (resumable)")
    p.add_argument("--out", required=True, help="output folder: every stage's output, timings.json, recipe.log")
    p.add_argument("--stages", help="comma list of stages to run (default: all; finished ones are skipped)")
    p.add_argument("--scenes", type=int, default=30000, help="training scenes of the world")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice, all cores)")
    p.add_argument("--set", action="append", metavar="STAGE:KEY=VALUE",
                   help="override a stage's run config, e.g. ar:loop.max_steps=500 (repeatable)")
    p.add_argument("--smoke", action="store_true", help="tiny everything, two steps per stage (checks the wiring)")
    p.add_argument("--preset", choices=list(PRESETS), help="the sampling preset the exported model records (what "
                   "vgt generate / vgt eval / the sampler node's preset auto use; the shipped vgt-demo: the best one "
                   "measured with vgt eval --compare-to)")
    p.set_defaults(func=cmd_train)

    p = demo_sub.add_parser("convergence", help="the same VGT-AR on VGT-AE latents and on the DC-AE's (VAE-based "
                                                "AR): shapes-GenEval against training steps")
    p.add_argument("--recipe", required=True, help="a `vgt demo train` output folder")
    p.add_argument("--out", required=True, help="output folder (runs, results.json, convergence.png)")
    p.add_argument("--steps", type=int, default=4000, help="training steps of each run (the recipe's AR length)")
    p.add_argument("--runs", default="vgtae,vae", help="which runs to train and score now (vgtae: the recipe's own AR "
                   "run when it exported every --eval-every steps; vae: the DC-AE-latent baseline)")
    p.add_argument("--eval-every", type=int, default=500, help="export and score every N steps")
    p.add_argument("--limit", type=int, default=8, help="shapes-GenEval prompts per category")
    p.add_argument("--images-per-prompt", type=int, default=1, help="images scored per prompt")
    p.add_argument("--acc-ratio", type=int, help="tokens per decoding step of the scores (default: what each export "
                   "records, 1 for a raster-order run; else the project's default)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override both AR runs' config (repeatable)")
    p.set_defaults(func=cmd_convergence)

    p = sub.add_parser("eval", help="shapes-GenEval: per-category accuracy of a model on the small world")
    model_args(p, False)
    p.add_argument("--generator", default="pipeline", choices=["pipeline", "oracle", "noise", "autoencoder", "dcae"],
                   help="what draws the images: the model, or a reference (rendered ground truth / noise; "
                        "autoencoder: the ground truth through the model's VGT-AE, the ceiling of its decoder; "
                        "dcae: through the DC-AE folder given as --decoder, at 256 px)")
    p.add_argument("--per-category", type=int, default=24, help="size of the prompt set: prompts per category")
    p.add_argument("--limit", type=int, help="evaluate only the first N prompts of each category")
    p.add_argument("--prompt", action="append", metavar="TEXT", help="score this prompt instead of the prompt set "
                   "(repeatable; the world's caption grammar, e.g. \"two red circles left of a blue square\")")
    p.add_argument("--images-per-prompt", type=int, default=4, help="images generated per prompt")
    p.add_argument("--batch-size", type=int, default=8, help="images generated per batch")
    p.add_argument("--seed", type=int, default=0, help="sample k of prompt i uses seed + i * images_per_prompt + k")
    p.add_argument("--size", type=int, default=224, help="image size in px (the world is 224)")
    sampling_args(p)
    p.add_argument("--out", default="outputs/eval", help="folder for results.json and grid.png")
    p.add_argument("--compare-to", metavar="RESULTS", help="another run's results.json (or its folder) with the same "
                   "prompts, images and seeds: print the score difference per category with its paired standard error")
    p.set_defaults(func=cmd_eval)


def check_args(args: argparse.Namespace) -> None:
    """Errors a user can fix, before any model loads."""
    for name in ("n", "per_category", "limit", "images_per_prompt", "batch_size", "workers", "qa_per_kind"):
        value = getattr(args, name, None)
        if value is not None and value < (0 if name == "qa_per_kind" else 1):
            raise ValueError(f"--{name.replace('_', '-')} {value} must be at least {0 if name == 'qa_per_kind' else 1}")
    size = getattr(args, "size", None)
    if size is not None:  # not "use 28 or 28" for 0, nor "use 28 or 0" for negatives
        from ..validation import check_size_px

        check_size_px("--size", size, 28)
