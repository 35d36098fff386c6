"""``vgt demo train --out DIR``: the whole ``vgt-demo`` model from nothing, every stage on the training loop.

Stages (each one's output lands in ``DIR`` and marks it done; a training stage interrupted half way resumes from its
last state in ``DIR/runs/<stage>/state``; run the same command again to continue):

==========  ==================================================================  =====================================
stage       what                                                                output
==========  ==================================================================  =====================================
world       the world's scenes (images, captions, QA) for training + held out    ``world/``, ``heldout/``
tokenizer   byte-level BPE on the world's text, Qwen special tokens             ``tokenizer/``
vlm         ``vgt train vlm``: a tiny Qwen3-VL pretrained for understanding      ``vlm/`` (base VLM folder)
dcae        ``vgt train dcae``: a small DC-AE (the pixel decoder to start from)  ``dcae/`` (diffusers folder)
ae1, ae2    ``vgt train ae``: VGT-AE stage 1 and stage 2 on the world VLM       ``ae1/``, ``ae2/`` (model folders)
cache       ``vgt cache-latents``: the training images through the VGT-AE       ``cache/``
ar          ``vgt train ar``: VGT-AR pretraining, LLM from the world VLM        ``ar/`` (model folder)
ar_long     the ``ar`` run continued from its last state, a second cosine       ``ar_long/`` (model folder)
decoder     ``vgt train ae``: the VGT-AE's decoder tuned, latents frozen        ``decoder/`` (model folder)
export      the final model folder (``ar_long``, else ``ar``; ``decoder``'s     ``vgt-demo/``
            pixel decoder when done), half-precision weights
==========  ==================================================================  =====================================

The run configs are the YAML files next to this module (``recipe/*.yaml``); ``overrides`` adds ``key=value`` per
stage. ``smoke=True`` shrinks everything (a 24-image world, tiny networks, two steps per stage) to check that every
stage wires up. ``DIR/timings.json`` records each stage's wall time, process CPU time, thread count and the host's
load average; ``DIR/recipe.log`` the log. Stages that do not depend on each other (``vlm`` and ``dcae``; ``decoder``
and ``cache`` / ``ar`` / ``ar_long``) can run side by side in two processes on the same ``DIR`` (e.g. ``--stages vlm
--threads 1`` beside ``--stages dcae --threads 1`` on a 2-core machine, faster than one after the other with 2 threads
each: small ops do not scale across cores).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RECIPE_DIR = Path(__file__).resolve().parent / "recipe"
STAGES = ("world", "tokenizer", "vlm", "dcae", "ae1", "ae2", "cache", "ar", "ar_long", "decoder", "export")
WORLD_SEED, HELDOUT_SEED = 0, 1


@dataclass
class RecipeConfig:
    """What the recipe builds and how big."""

    out: Path
    scenes: int = 30000  # training scenes
    heldout: int = 500  # held-out scenes (VLM accuracy)
    vocab_size: int = 512  # tokenizer vocabulary (incl. special tokens)
    threads: int | None = None  # torch CPU threads (None: torch's default)
    smoke: bool = False  # tiny everything (tests)
    overrides: dict[str, list[str]] = field(default_factory=dict)  # stage -> ["key=value", ...]
    export_dtype: str = "bf16"  # storage of the final model folder
    preset: str | None = None  # the sampling preset the final model records (measured with vgt eval --compare-to)


# Smoke run: a few images, tiny networks, two optimizer steps per training stage.
SMOKE_TINY_DCAE = {
    "in_channels": 3, "latent_channels": 32, "attention_head_dim": 8,
    "encoder_block_types": ["ResBlock"] * 6, "decoder_block_types": ["ResBlock"] * 6,
    "encoder_block_out_channels": [4, 4, 8, 8, 16, 32], "decoder_block_out_channels": [4, 4, 8, 8, 16, 32],
    "encoder_layers_per_block": [0, 1, 1, 1, 1, 1], "decoder_layers_per_block": [0, 1, 1, 1, 1, 1],
    "encoder_qkv_multiscales": [[]] * 6, "decoder_qkv_multiscales": [[]] * 6,
    "upsample_block_type": "interpolate", "downsample_block_type": "Conv", "decoder_norm_types": "rms_norm",
    "decoder_act_fns": "silu", "scaling_factor": 1.0,
}
_STEPS = ["loop.max_steps=2", "loop.batch_size=2", "loop.log_every=1", "loop.save_every=1", "loop.num_workers=0",
          "loop.sample_every=0"]
SMOKE: dict[str, list[str]] = {
    "vlm": _STEPS + ["model.size.vision_hidden=16", "model.size.vision_mlp=32", "model.size.vision_heads=2",
                     "model.size.text_hidden=32", "model.size.text_mlp=64", "model.size.text_layers=2",
                     "model.size.text_heads=2", "model.size.text_kv_heads=1", "model.size.text_head_dim=16",
                     "model.eval_images=2", "model.turns=2"],
    "dcae": _STEPS + ["model.crop_size=32", "model.sample_images=1", "model.model=" + json.dumps(SMOKE_TINY_DCAE)],
    "ae1": _STEPS + ["model.sample_images=1"],
    "ae2": _STEPS + ["model.sample_images=1"],
    "ar": _STEPS + ["model.head_dim=16", "model.head_layers=1", "model.sample_prompts=[a red circle]",
                    "model.sample_steps=2"],
    "ar_long": _STEPS + ["loop.max_steps=4", "model.head_dim=16", "model.head_layers=1"],
    "decoder": _STEPS + ["model.sample_images=1"],
}


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (data-loader workers, world writers), user + system."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Recipe:
    """Runs the stages in order, skipping those whose output exists (see the module docstring)."""

    def __init__(self, cfg: RecipeConfig):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.timings_path = self.out / "timings.json"

    # ------------------------------------------------------------------ paths
    def path(self, name: str) -> Path:
        return self.out / name

    @property
    def manifest(self) -> Path:
        return self.path("world") / "manifest.jsonl"

    def done(self, stage: str) -> bool:
        marks = {"world": [self.manifest, self.path("heldout") / "manifest.jsonl"],
                 "tokenizer": [self.path("tokenizer") / "tokenizer.json"],
                 "vlm": [self.path("vlm") / "model.safetensors"],
                 "dcae": [self.path("dcae") / "config.json"],
                 "ae1": [self.path("ae1") / "model.safetensors"], "ae2": [self.path("ae2") / "model.safetensors"],
                 "cache": [self.path("cache") / "index.json"], "ar": [self.path("ar") / "model.safetensors"],
                 "ar_long": [self.path("ar_long") / "model.safetensors"],
                 "decoder": [self.path("decoder") / "model.safetensors"],
                 "export": [self.path("vgt-demo") / "model.safetensors"]}
        return all(p.exists() for p in marks[stage])

    # ------------------------------------------------------------------ running
    def run(self, stages: list[str] | None = None, progress: Callable[[str, str], None] | None = None) -> dict:
        """Run ``stages`` (default: all, in order) that are not done; returns the timings record."""
        stages = list(stages or STAGES)
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage {unknown[0]!r}: expected some of {', '.join(STAGES)}")
        self.out.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.out / "recipe.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("vgt_impl").addHandler(handler)
        if self.cfg.threads:
            import torch

            torch.set_num_threads(self.cfg.threads)
        try:
            timings = self._read_timings()
            for stage in (s for s in STAGES if s in stages):
                if self.done(stage):
                    logger.info("stage %s: done already (%s)", stage, self.out)
                    if progress:
                        progress(stage, "done already")
                    continue
                if progress:
                    progress(stage, "running")
                record = self._timed(stage)
                timings = self._read_timings()  # re-read: another process may have run other stages meanwhile
                timings["stages"][stage] = record
                timings["total_wall_s"] = round(sum(t["wall_s"] for t in timings["stages"].values()), 1)
                timings["total_cpu_s"] = round(sum(t["cpu_s"] for t in timings["stages"].values()), 1)
                self.timings_path.write_text(json.dumps(timings, indent=1) + "\n")
                if progress:
                    progress(stage, f"{timings['stages'][stage]['wall_s']:.1f} s")
            return timings
        finally:
            logging.getLogger("vgt_impl").removeHandler(handler)
            handler.close()

    def _read_timings(self) -> dict:
        if self.timings_path.is_file():
            return json.loads(self.timings_path.read_text())
        return {"format": "vgt-demo-timings/1", "stages": {}}

    def _timed(self, stage: str) -> dict[str, Any]:
        import torch

        load0, t0, c0 = os.getloadavg(), time.perf_counter(), _cpu_seconds()
        getattr(self, "stage_" + stage)()
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
        record = {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "threads": torch.get_num_threads(),
                  "cpus": os.cpu_count(), "load_avg_start": [round(x, 2) for x in load0],
                  "load_avg_end": [round(x, 2) for x in os.getloadavg()], "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        logger.info("stage %s: %.1f s wall, %.1f s CPU", stage, wall, cpu)
        return record

    def overrides(self, stage: str) -> list[str]:
        return (SMOKE.get(stage, []) if self.cfg.smoke else []) + list(self.cfg.overrides.get(stage, []))

    def train(self, stage: str, config: str, task: str, paths: list[str]) -> Path:
        """Run (or resume) one training stage in this process -> its exported model folder."""
        from ..training.config import load_run_config
        from ..training.loop import Trainer

        run_dir = self.path("runs") / stage
        cfg = load_run_config(RECIPE_DIR / config, paths + [f"loop.output_dir={run_dir}"] + self.overrides(stage),
                              task=task)
        trainer = Trainer(cfg)
        try:
            exported = trainer.train()
        finally:
            trainer.close()
        if exported is None:
            raise RuntimeError(f"stage {stage}: the run in {run_dir} exported no model")
        return Path(exported)

    def publish(self, exported: Path, name: str) -> Path:
        """Copy a run's exported folder to ``DIR/name`` (atomically: a temp folder renamed)."""
        dest, tmp = self.path(name), self.path(f".tmp_{name}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(exported, tmp)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        return dest

    # ------------------------------------------------------------------ stages
    def stage_world(self) -> None:
        from .dataset import write_dataset

        n, held = (24, 8) if self.cfg.smoke else (self.cfg.scenes, self.cfg.heldout)
        workers = max(1, min(self.cfg.threads or os.cpu_count() or 1, 4))
        write_dataset(self.path("world"), n, WORLD_SEED, workers=workers if n >= 2000 else 1, overwrite=True)
        write_dataset(self.path("heldout"), held, HELDOUT_SEED, overwrite=True)

    def stage_tokenizer(self) -> None:
        from .tokenizer import build_tokenizer

        build_tokenizer(self.path("tokenizer"), self.cfg.vocab_size, n_scenes=200 if self.cfg.smoke else 4000)

    def stage_vlm(self) -> None:
        exported = self.train("vlm", "vlm.yaml", "vlm", [
            f"model.tokenizer={self.path('tokenizer')}", f"data.source=[{self.manifest}]",
            f"model.eval_source={self.path('heldout') / 'manifest.jsonl'}"])
        self.publish(exported, "vlm")

    def stage_dcae(self) -> None:
        self.publish(self.train("dcae", "dcae.yaml", "dcae", [f"data.source=[{self.manifest}]"]), "dcae")

    def stage_ae1(self) -> None:
        exported = self.train("ae1", "ae_stage1.yaml", "ae", [
            f"model.base_model={self.path('vlm')}", f"model.dcae={self.path('dcae')}", f"data.source=[{self.manifest}]"])
        self.publish(exported, "ae1")

    def stage_ae2(self) -> None:
        exported = self.train("ae2", "ae_stage2.yaml", "ae", [
            f"model.checkpoint={self.path('ae1')}", f"data.source=[{self.manifest}]"])
        self.publish(exported, "ae2")

    def ar_paths(self) -> list[str]:
        return [f"model.base_model={self.path('vlm')}", f"model.ae_checkpoint={self.path('ae2')}",
                f"data.source=[{self.manifest}]"]

    def stage_cache(self) -> None:
        from ..training.config import load_run_config
        from ..training.latent_cache import build_cache

        cfg = load_run_config(RECIPE_DIR / "ar.yaml", self.ar_paths() + self.overrides("ar"), task="ar")
        tmp = self.path(".tmp_cache")
        shutil.rmtree(tmp, ignore_errors=True)
        build_cache(cfg, tmp, batch_size=32, dtype="fp16", shard_size=8192)
        shutil.rmtree(self.path("cache"), ignore_errors=True)
        tmp.rename(self.path("cache"))

    def stage_ar(self) -> None:
        exported = self.train("ar", "ar.yaml", "ar", self.ar_paths() + [f"data.latent_cache={self.path('cache')}"])
        self.publish(exported, "ar")

    def stage_ar_long(self) -> None:
        states = sorted((self.path("runs") / "ar" / "state").glob("step_*"))
        if not states:
            raise FileNotFoundError(f"stage ar_long continues the ar stage's run: no saved state in "
                                    f"{self.path('runs') / 'ar' / 'state'} (run the ar stage first)")
        step = int(states[-1].name.split("_")[-1])
        exported = self.train("ar_long", "ar_continue.yaml", "ar", self.ar_paths() + [
            f"data.latent_cache={self.path('cache')}", f"loop.resume={states[-1]}", f"optim.main.start_step={step}"])
        self.publish(exported, "ar_long")

    def stage_decoder(self) -> None:
        exported = self.train("decoder", "ae_decoder.yaml", "ae", [
            f"model.checkpoint={self.path('ae2')}", f"data.source=[{self.manifest}]"])
        self.publish(exported, "decoder")

    def stage_export(self) -> None:
        from .model_folder import export_demo_folder

        src = self.path("ar_long") if self.done("ar_long") else self.path("ar")
        decoder = self.path("decoder") if self.done("decoder") else None
        export_demo_folder(src, self.path("vgt-demo"), dtype=self.cfg.export_dtype, decoder=decoder,
                           sampling={"preset": self.cfg.preset} if self.cfg.preset else None,
                           info={"recipe": "vgt demo train", "ar": src.name, "decoder": bool(decoder),
                                 "timings": self._read_timings().get("stages", {})})
