"""Quality of a sampling option against the reference sampler: a distribution distance that needs no evaluator, and
a plug-in point for a prompt-set evaluator (shapes-GenEval on the demo model).

- :func:`token_frechet` : Frechet distance between the 32-d latent tokens of images sampled with an option and with the
  reference default, same prompts and seeds (FID's formula on latent tokens). Its noise floor is the distance between
  two reference runs with other seeds, reported beside it.
- An evaluator is any callable ``evaluate(pipe, **generate_kwargs) -> Mapping[str, float]`` with an ``"overall"`` score
  (per-category scores may come with it). It generates its own fixed prompt set with the sampling options it is
  given and scores the images. :func:`shapes_geneval` adapts the demo's shapes-GenEval (``vgt_impl.demo.geneval``:
  ``prompt_set`` + ``evaluate(generator, specs)``) and is used whenever that module is installed; any other
  ``module:function`` can be named instead (``vgt bench --evaluator``).
- :func:`run_sweep` measures a list of configurations against the reference in one run: time per image, NFE, LLM
  calls, token Frechet distance, and the evaluator's scores.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping, Sequence

import torch

logger = logging.getLogger(__name__)

Evaluator = Callable[..., Mapping[str, float]]
GENEVAL_MODULE = "vgt_impl.demo.geneval"


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to rows of a [N, D] and b [M, D] (float64):
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T), torch.cov(b.T)
    root_a = _sqrtm_psd(s_a)
    cross = _sqrtm_psd(root_a @ s_b @ root_a)
    return float((mu_a - mu_b).square().sum() + torch.trace(s_a) + torch.trace(s_b) - 2.0 * torch.trace(cross))


def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def sample_tokens_of(pipe, options: Mapping, *, prompts: Sequence[str], seeds: Sequence[int], height: int,
                     width: int, acc_ratio: int, cfg_scale: float) -> torch.Tensor:
    """Latent tokens [len(seeds) * len(prompts) * h * w, 32] sampled with ``options`` (one generation per seed)."""
    out = []
    for seed in seeds:
        lat = pipe.generate(list(prompts), height=height, width=width, acc_ratio=acc_ratio, cfg_scale=cfg_scale,
                            generator=torch.Generator().manual_seed(seed), decode=False, **options).latents
        out.append(lat.permute(0, 2, 3, 1).reshape(-1, lat.shape[1]).float().cpu())
    return torch.cat(out)


def shapes_geneval(pipe, *, height: int, width: int, acc_ratio: int, cfg_scale: float, per_category: int = 8,
                   images_per_prompt: int = 2, batch_size: int = 8, seed: int = 0, **options) -> dict[str, float]:
    """shapes-GenEval of the pipeline sampled with ``options``: overall score and per-category accuracies."""
    gv = importlib.import_module(GENEVAL_MODULE)
    for name in ("prompt_set", "evaluate"):
        if not callable(getattr(gv, name, None)):
            raise ValueError(f"{GENEVAL_MODULE} has no {name}(): pass an evaluator explicitly (--evaluator module:fn)")

    def generate(prompts: list[str], seeds: list[int]) -> torch.Tensor:
        out = pipe.generate(list(prompts), height=height, width=width, acc_ratio=acc_ratio, cfg_scale=cfg_scale,
                            generator=torch.Generator().manual_seed(int(seeds[0])), **options)
        return out.images

    report = gv.evaluate(generate, gv.prompt_set(per_category), images_per_prompt=images_per_prompt,
                         batch_size=batch_size, seed=seed)
    return {"overall": float(report.overall), **{k: float(v) for k, v in report.accuracy.items()}}


def load_evaluator(spec: str | None = None) -> Evaluator | None:
    """``module:function`` -> the callable. Without a spec: :func:`shapes_geneval` when the demo's shapes-GenEval is
    installed, else None (the sweep then reports the latent-token distance only)."""
    if spec is None:
        try:
            importlib.import_module(GENEVAL_MODULE)
        except ImportError as e:
            logger.info("no evaluator (%s): quality columns are the latent-token distance only", e)
            return None
        return shapes_geneval
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ValueError(f"evaluator {spec!r}: expected 'module:function'")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"evaluator {spec!r} cannot be loaded: {e}") from e
    if not callable(fn):
        raise ValueError(f"evaluator {spec!r} is not callable")
    return fn


def evaluate(evaluator: Evaluator, pipe, options: Mapping, **common) -> dict[str, float]:
    """Run an evaluator with generate options; checks it returns an ``overall`` score."""
    scores = dict(evaluator(pipe, **common, **options))
    if "overall" not in scores:
        raise ValueError(f"the evaluator returned {sorted(scores)}: it must return an 'overall' score")
    return {k: float(v) for k, v in scores.items()}


# ---------------------------------------------------------------------------------------------------------- sweep
def sweep_configs():
    """The default grid: fewer SDE steps, second-order ODE / SDE integrators at 6-15 NFE, shifted grids, and the
    group schedules on the reference sampler and on a 10-NFE one (all at the run's acc_ratio)."""
    from .bench import REFERENCE, BenchConfig
    from .presets import PRESETS

    def c(label: str, **kw) -> BenchConfig:  # every option spelled out, so equal settings compare equal
        return BenchConfig.of(label, **dict(PRESETS[REFERENCE].options(), **kw))

    out = [c(REFERENCE)]
    out += [c(f"sde-{n}", sampler="sde", num_flow_steps=n) for n in (20, 15, 10)]
    out += [c(f"sde_ab2-{n}", sampler="sde_ab2", num_flow_steps=n, time_grid="uniform") for n in (15, 10)]
    out += [c(f"ode-{n}", sampler="ode", num_flow_steps=n, time_grid="uniform") for n in (15, 10)]
    out += [c(f"ab2-{n}", sampler="ab2", num_flow_steps=n, time_grid="uniform") for n in (15, 10, 8, 6)]
    out += [c(f"ab2-{n}-shift{s}", sampler="ab2", num_flow_steps=n, time_grid="uniform", time_shift=float(s))
            for n in (10, 8) for s in (2, 3)]
    out += [c(f"dpmpp_2m-{n}", sampler="dpmpp_2m", num_flow_steps=n, time_grid="uniform") for n in (10, 8)]
    out += [c("heun-5", sampler="heun", num_flow_steps=5, time_grid="uniform")]
    out += [c(f"reference-{g}", sampler="sde", num_flow_steps=30, group_schedule=g) for g in ("cosine", "ramp")]
    out += [c(f"ab2-10-{g}", sampler="ab2", num_flow_steps=10, time_grid="uniform", group_schedule=g)
            for g in ("cosine", "ramp")]
    labels = {cfg.label: cfg for cfg in out}
    for name, preset in PRESETS.items():  # every preset is in the grid, under its own name
        cfg = c(name, **preset.options())
        if labels.get(name, cfg) != cfg:
            raise AssertionError(f"sweep label {name!r} differs from the preset of that name")
        if name not in labels:
            out.append(cfg)
    return out


def run_sweep(pipe, configs: Sequence, *, prompts: Sequence[str], height: int, width: int, acc_ratio: int,
              cfg_scale: float = 4.5, seeds: Sequence[int] = (0, 1, 2, 3), evaluator: Evaluator | None = None,
              repeats: int = 1, emit: Callable[[str], None] = logger.info) -> list[dict]:
    """For each config: time per image (side by side with the reference, same run), NFE, LLM calls, token FD to the
    reference's samples (same prompts and seeds) and the evaluator's scores. ``emit`` gets one table row per config."""
    from .bench import REFERENCE, run_bench

    configs = list(configs)
    ref = next((cfg for cfg in configs if cfg.label == REFERENCE), None)
    if ref is None:
        raise ValueError(f"the sweep needs a config labelled {REFERENCE!r} to compare against")
    common = dict(height=height, width=width, acc_ratio=acc_ratio, cfg_scale=cfg_scale)
    timed = {r.label: r for r in run_bench(pipe, prompts=prompts, height=height, width=width, acc_ratios=[acc_ratio],
                                           cfg_scale=cfg_scale, repeats=repeats, configs=configs)}
    seeds = list(seeds)
    tokens = (lambda cfg, ss: sample_tokens_of(pipe, cfg.kwargs, prompts=prompts, seeds=ss, **common)) if seeds else None
    ref_tokens = tokens(ref, seeds) if tokens else None
    floor = frechet_distance(ref_tokens, tokens(ref, [s + 10_000 for s in seeds])) if tokens else float("nan")
    ref_scores = evaluate(evaluator, pipe, ref.kwargs, **common) if evaluator else None
    cpu_col = f" {'(cpu)':>8}" if pipe.device.type == "cpu" else ""
    emit(f"{'config':<18} {'NFE':>4} {'calls':>5} {'s/image':>9} {'speed-up':>8}{cpu_col} {'token FD':>9}"
         + (f" {'score':>6} {'d score':>8}" if evaluator else "") + f"   (token FD floor, other seeds: {floor:.4f})")
    rows = []
    for cfg in configs:
        t = timed[cfg.label]
        fd = 0.0 if cfg is ref else frechet_distance(ref_tokens, tokens(cfg, seeds)) if tokens else float("nan")
        ref_t = timed[REFERENCE]
        row = dict(label=cfg.label, nfe=cfg.nfe, calls=t.calls, seconds=t.seconds / len(prompts),
                   speedup=ref_t.seconds / t.seconds, fd=fd, fd_floor=floor, options=cfg.kwargs,
                   cpu_speedup=ref_t.cpu_s / t.cpu_s if t.cpu_s and ref_t.cpu_s else None)
        line = (f"{cfg.label:<18} {cfg.nfe:>4} {t.calls:>5} {row['seconds']:>9.3f} {row['speedup']:>7.2f}x "
                + (f"{row['cpu_speedup']:>7.2f}x " if row["cpu_speedup"] else "") + f"{fd:>9.4f}")
        if evaluator is not None:
            scores = evaluate(evaluator, pipe, cfg.kwargs, **common) if cfg is not ref else ref_scores
            row.update(scores=scores, score=scores["overall"], delta=scores["overall"] - ref_scores["overall"])
            line += f" {row['score']:>6.3f} {row['delta']:>+8.3f}"
        emit(line)
        rows.append(row)
    return rows
