"""The paper's central claim at small scale: the same VGT-AR trained on VGT-AE latents and on a plain VAE's latents.

    vgt demo convergence --recipe DIR --out DIR/convergence

(a) **VGT-AE**: the recipe's latent cache (VGT-AE stage 2, 224 px -> 8 x 8 x 32, LayerNormed per token).
(b) **VAE baseline**: the recipe's small DC-AE on the same images resized to 256 px (-> the same 8 x 8 x 32 grid),
    decoded by the DC-AE's own decoder. A DC-AE trained on per-token LayerNormed latents (``model.latent_norm``, the
    recipe's) is used as it was trained: LayerNormed per token, in training and when sampling (``ARConfig.latent_norm``),
    like VGT-AE's. One trained without is normalised as a VAE-based AR does: one global shift and scale (the latents'
    mean and standard deviation over the first images of the training set), no per-token LayerNorm.

Both runs use the recipe's AR config (the same LLM initialisation from the world VLM, flow head, data order, seeds,
steps and learning-rate schedule), export every ``eval_every`` steps, and each export is scored with shapes-GenEval
(a fixed prompt subset, the default sampling). Run (a) is the recipe's own AR run when that one exported at every
``eval_every`` steps up to ``steps`` (the recipe's config does), so only the baseline is trained here. The result: the score against training steps for both (JSON, PNG),
and how many steps each needs to reach the other's best score.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..training.dcae import normalize_latent

logger = logging.getLogger(__name__)


class DCAELatents(nn.Module):
    """A diffusers ``AutoencoderDC`` as a VAE-based AR's latent space: images are resized to ``size`` (256 px: the
    same 8 x 8 grid as VGT-AE at 224 px) and the latents shifted and scaled to zero mean and unit variance."""

    latent_channels = 32

    def __init__(self, dcae: nn.Module, shift: float = 0.0, scale: float = 1.0, *, size: int = 256, stride: int = 28,
                 family: str = "qwen3_vl", latent_norm: bool = False):
        super().__init__()
        self.dcae = dcae.eval().requires_grad_(False)
        self.shift, self.scale, self.size, self.stride, self.family = float(shift), float(scale), size, stride, family
        self.latent_norm = latent_norm  # the DC-AE was trained on per-position LayerNormed latents (vgt_dcae.json)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @torch.no_grad()
    def raw_latents(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> unnormalised DC-AE latents [B, 32, h, w] (images resized by size / (h*stride))."""
        b, _, h, w = images.shape
        f = self.size / (h // self.stride * self.stride)
        x = F.interpolate(images.to(self.device, self.dtype), size=(round(h * f), round(w * f)), mode="bicubic",
                          align_corners=False, antialias=True)
        z = self.dcae.encode(x).latent.float()
        return normalize_latent(z) if self.latent_norm else z

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return (self.raw_latents(images) - self.shift) * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, 32, h, w] -> images [B, 3, h*stride, w*stride] in [-1, 1]."""
        z = latents.to(self.device, torch.float32) / self.scale + self.shift
        x = self.dcae.decode(z.to(self.dtype)).sample.float()
        h, w = latents.shape[-2] * self.stride, latents.shape[-1] * self.stride
        return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True).clamp(-1, 1)


def load_dcae_latents(folder: str | Path, images: torch.Tensor | None = None, *, shift: float | None = None,
                      scale: float | None = None) -> DCAELatents:
    """The DC-AE of ``folder``; shift / scale given, or measured on ``images`` [N, 3, 224, 224] (mean, 1 / std). A DC-AE
    trained on LayerNormed latents (``vgt_dcae.json``) encodes to them, already normalised: shift 0, scale 1."""
    from diffusers import AutoencoderDC

    from ..training.dcae import dcae_latent_norm

    norm = dcae_latent_norm(folder)
    codec = DCAELatents(AutoencoderDC.from_pretrained(str(folder), torch_dtype=torch.float32), latent_norm=norm)
    if norm and (shift is None or scale is None):
        shift, scale = 0.0, 1.0
    if shift is None or scale is None:
        if images is None:
            raise ValueError("give the DC-AE latents' shift and scale, or images to measure them on")
        z = torch.cat([codec.raw_latents(images[i:i + 32]) for i in range(0, len(images), 32)])
        shift, scale = float(z.mean()), float(1.0 / z.std())
    codec.shift, codec.scale = shift, scale
    return codec


@dataclass
class ConvergenceConfig:
    recipe: Path  # a `vgt demo train` output folder (vlm/, dcae/, ae2/, cache/, world/)
    out: Path
    steps: int = 4000  # training steps of each run (the recipe's AR length)
    eval_every: int = 500  # export + shapes-GenEval every N steps
    eval_limit: int = 8  # prompts per category
    images_per_prompt: int = 1
    acc_ratio: int | None = None  # tokens per step of the scores; None: what each export records (1 for a raster-order
    # run), else the project's default, as `vgt generate` and the ComfyUI sampler do
    stats_images: int = 256  # images the DC-AE latents' shift / scale are measured on
    overrides: tuple[str, ...] = ()  # extra key=value overrides of both AR runs
    runs: tuple[str, ...] = ("vgtae", "vae")  # which runs to train / score now (the others' scores are kept)

    def __post_init__(self):
        unknown = [r for r in self.runs if r not in ("vgtae", "vae")]
        if unknown or not self.runs:
            raise ValueError(f"runs {list(self.runs)}: expected some of 'vgtae', 'vae'")


def run_convergence(cfg: ConvergenceConfig, progress=None) -> dict[str, Any]:
    """Train both runs (resumable), score every export, write ``results.json`` and ``convergence.png``."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"runs": {}}
    codec = _dcae_codec(cfg, out)
    results["vae_normalisation"] = {"shift": codec.shift, "scale": codec.scale, "images": cfg.stats_images}
    for name in cfg.runs:
        run = results["runs"].setdefault(name, {"scores": {}})
        folders = _train(cfg, out, name, codec)
        for step, folder in folders:
            if str(step) in run["scores"]:
                continue
            report = _evaluate(folder, cfg, codec if name == "vae" else None)
            run["scores"][str(step)] = {"overall": report.overall, **report.accuracy}
            results_path.write_text(json.dumps(results, indent=1) + "\n")
            if progress:
                progress(name, step, report.overall)
    if not all(results["runs"].get(n, {}).get("scores") for n in ("vgtae", "vae")):
        results_path.write_text(json.dumps(results, indent=1) + "\n")
        return results  # one run so far: the summary and the plot come when both are scored
    results["summary"] = summarise(results["runs"])
    results_path.write_text(json.dumps(results, indent=1) + "\n")
    plot(results, out / "convergence.png")
    return results


def _dcae_codec(cfg: ConvergenceConfig, out: Path) -> DCAELatents:
    stats = out / "vae_latent_stats.json"
    if stats.is_file():
        s = json.loads(stats.read_text())
        return load_dcae_latents(cfg.recipe / "dcae", shift=s["shift"], scale=s["scale"])
    from ..training.data import ImageCaptionDataset, SampleKey, load_records

    records = load_records([str(cfg.recipe / "world" / "manifest.jsonl")])[: cfg.stats_images]
    ds = ImageCaptionDataset(records, 224, "center")
    images = torch.stack([ds[SampleKey(i, i, 0)]["pixels"] for i in range(len(records))])
    codec = load_dcae_latents(cfg.recipe / "dcae", images)
    stats.write_text(json.dumps({"shift": codec.shift, "scale": codec.scale, "images": len(records)}) + "\n")
    return codec


def _train(cfg: ConvergenceConfig, out: Path, name: str, codec: DCAELatents) -> list[tuple[int, Path]]:
    """One AR run (resumable) exporting every ``eval_every`` steps -> [(step, model folder)]."""
    from ..training.config import load_run_config
    from ..training.latent_cache import build_cache
    from ..training.loop import Trainer
    from .recipe import RECIPE_DIR

    r = cfg.recipe
    paths = [f"model.base_model={r / 'vlm'}", f"data.source=[{r / 'world' / 'manifest.jsonl'}]",
             f"loop.max_steps={cfg.steps}", f"loop.export_every={cfg.eval_every}", f"loop.output_dir={out / name}",
             "loop.keep_states=1", "model.sample_prompts=[]"] + list(cfg.overrides)
    if name == "vgtae":
        recipe_run = _exports(r / "runs" / "ar")  # the recipe's own AR run is this run when it exported every N steps
        if recipe_run and recipe_run[-1][0] == cfg.steps and {s for s, _ in recipe_run} >= set(
                range(cfg.eval_every, cfg.steps + 1, cfg.eval_every)):
            return recipe_run
        paths += [f"model.ae_checkpoint={r / 'ae2'}", f"data.latent_cache={r / 'cache'}"]
    else:
        cache = out / "cache_vae"
        if not (cache / "index.json").is_file():
            base = load_run_config(RECIPE_DIR / "ar.yaml", paths, task="ar")
            build_cache(base, cache, batch_size=32, dtype="fp32", shard_size=8192, encoder=codec)
        paths += [f"data.latent_cache={cache}"]
    done = _exports(out / name)
    if not done or done[-1][0] < cfg.steps:
        trainer = Trainer(load_run_config(RECIPE_DIR / "ar.yaml", paths, task="ar"))
        try:
            trainer.train()
        finally:
            trainer.close()
    return _exports(out / name)


def _exports(run_dir: Path) -> list[tuple[int, Path]]:
    models = run_dir / "models"
    if not models.is_dir():
        return []
    return sorted((int(p.name.split("_")[-1]), p) for p in models.iterdir() if (p / "model.safetensors").is_file())


def _evaluate(folder: Path, cfg: ConvergenceConfig, codec: DCAELatents | None):
    from ..cli import default_acc_ratio
    from ..pipeline import VGTPipeline
    from .geneval import evaluate, limit_per_category, pipeline_generator, prompt_set

    t0 = time.perf_counter()
    pipe = VGTPipeline.from_pretrained(str(folder), dtype=torch.float32, device="cpu")
    if codec is not None:
        pipe.ae = codec  # the baseline decodes with the DC-AE (its export embeds no VGT-AE)
        pipe.ar.config.latent_norm = codec.latent_norm  # LayerNormed per token only when the DC-AE was trained so
    acc_ratio = cfg.acc_ratio or default_acc_ratio(str(folder))
    specs = limit_per_category(prompt_set(), cfg.eval_limit)
    report = evaluate(pipeline_generator(pipe, acc_ratio=acc_ratio), specs, images_per_prompt=cfg.images_per_prompt, batch_size=8)
    logger.info("%s: shapes-GenEval %.3f (%.0f s)", folder, report.overall, time.perf_counter() - t0)
    return report


def steps_to_reach(scores: dict[int, float], target: float) -> float | None:
    """The first step at which a score curve reaches ``target`` (linear between evaluations), or None."""
    pts = sorted(scores.items())
    prev = (0, 0.0)
    for step, s in pts:
        if s >= target:
            if s == prev[1]:
                return float(step)
            return prev[0] + (target - prev[1]) * (step - prev[0]) / (s - prev[1])
        prev = (step, s)
    return None


def summarise(runs: dict[str, Any]) -> dict[str, Any]:
    curves = {n: {int(k): v["overall"] for k, v in r["scores"].items()} for n, r in runs.items()}
    out: dict[str, Any] = {n: {"best": max(c.values()), "final": c[max(c)]} for n, c in curves.items() if c}
    if "vgtae" in out and "vae" in out:
        target = min(out["vae"]["best"], out["vgtae"]["best"])
        a, b = steps_to_reach(curves["vgtae"], target), steps_to_reach(curves["vae"], target)
        out["common_score"] = target
        out["steps_to_common_score"] = {"vgtae": a, "vae": b}
        out["speedup"] = (b / a) if a and b else None
    return out


def plot(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"vgtae": "VGT-AE latents (VGT)", "vae": "DC-AE latents (VAE-based AR)"}
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    top = 0.0
    for name, run in results["runs"].items():
        pts = sorted((int(k), v["overall"]) for k, v in run["scores"].items())
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=labels.get(name, name))
            top = max(top, *(p[1] for p in pts))
    ax.set_xlabel("training steps")
    ax.set_ylabel("shapes-GenEval overall")
    ax.set_ylim(0, min(1.0, max(0.25, 1.25 * top)))  # low scores stay readable; the axis never passes 1
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Same VGT-AR, two latent spaces")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
