"""The training loop on Hugging Face accelerate: one ``train_step``, the rest is bookkeeping.

The loop owns devices and wrapping (DDP / FSDP2 / DeepSpeed come from ``accelerate launch --config_file``), mixed
precision, gradient accumulation, clipping, one AdamW per task phase with its learning-rate schedule, the EMA,
resumable states, exports, trackers, tqdm on rank 0 and periodic sample grids. The task computes losses (``task.py``).

Run directory::

    config.yaml            the resolved run config
    state/step_0001000/    resumable state: accelerate save_state (model, optimizers, RNG) + ema*.safetensors
                           + trainer_state.json (step, data position); written to a temp folder, renamed when complete
    models/step_0001000/   exported model folders (EMA weights by default), loadable by VGTPipeline.from_pretrained
    samples/step_0001000.png
    logs/                  tracker logs (tensorboard);  metrics.jsonl: every logged value, one JSON line per log step

Data order, augmentation and every loss draw depend only on (seed, step, sample slot), so a resumed run continues
exactly, and N processes see the same global batches as one process with N times the batch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from .config import RunConfig, to_plain
from .data import StepSampler
from .optim import EMA, LRSchedule, build_optimizer
from .state import RunState, _full, _is_dtensor
from .task import BatchInfo, TrainTask, get_task_class

logger = logging.getLogger(__name__)

EXPORT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def make_accelerator(cfg: RunConfig, run_dir: Path, find_unused_parameters: bool = False):
    """An ``Accelerator`` for this run (distributed settings come from the environment / accelerate config)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, GradientAccumulationPlugin, ProjectConfiguration

    trackers = _trackers(cfg.loop.log_with)
    acc = getattr(torch, "accelerator", None)
    no_accelerator = not (acc is not None and acc.is_available()) and not torch.cuda.is_available()
    accelerator = Accelerator(
        cpu=no_accelerator,  # CPU-only machines: torchrun / accelerate launch processes join one gloo group
        mixed_precision=cfg.loop.mixed_precision,
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=cfg.loop.grad_accum, sync_with_dataloader=False),
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "logs")),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)],
    )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and accelerator.num_processes != world:
        raise RuntimeError(f"launched as {world} processes but accelerate sees {accelerator.num_processes}: every "
                           f"process would train alone; check the launcher / accelerate config")
    return accelerator


def _trackers(names: list[str]) -> list[str]:
    out = []
    for name in names:
        if name != "auto":
            out.append(name)
            continue
        import importlib.util

        if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
            out.append("tensorboard")
        else:
            logger.info("tensorboard is not installed: metrics go to metrics.jsonl only (pip install tensorboard)")
    return out


class Trainer(RunState):
    """Build everything for a run, then :meth:`train`. ``task`` may be given pre-built (tests, notebooks)."""

    def __init__(self, config: RunConfig, task: TrainTask | None = None, accelerator: Any = None):
        self.cfg = config
        loop = config.loop
        self.run_dir = Path(loop.output_dir)
        task_cls = type(task) if task is not None else get_task_class(config.task)
        self.accelerator = accelerator or make_accelerator(config, self.run_dir, task_cls.find_unused_parameters)
        acc = self.accelerator
        self._check_config()
        if task is None:
            from accelerate.utils import set_seed

            set_seed(loop.seed)  # identical random initialisation of new modules on every process
            task = task_cls.build(config)
        self.task = task
        if loop.gradient_checkpointing:
            task.enable_gradient_checkpointing()
        self.phase_names = task.phase_names()
        missing = [p for p in self.phase_names if p not in config.optim]
        if missing:
            raise ValueError(f"task {task.name!r} runs phases {self.phase_names} but the config has no optim.{missing[0]} "
                             f"section (have: {sorted(config.optim)})")
        task.to(acc.device)
        self._frozen = {n for n, p in task.named_parameters() if not p.requires_grad}
        self._configure_deepspeed()
        optimizers = [build_optimizer(task.param_groups(p), config.optim[p], acc.device) for p in self.phase_names]
        self.schedules = {p: LRSchedule(config.optim[p], loop.max_steps) for p in self.phase_names}
        acc.register_save_state_pre_hook(self._drop_frozen)  # frozen weights come from the config's checkpoints
        self.model, *opts = acc.prepare(task, *optimizers)
        self.optimizers = dict(zip(self.phase_names, opts))
        self.phase_params = {p: [prm for g in task.param_groups(p) for _, prm in g.params] for p in self.phase_names}
        self.ema = EMA(task.ema_parameters(), loop.ema) if loop.ema.enabled else None
        self.dataset = task.build_dataset(config.data)
        self.step = 0  # optimizer steps done
        self._resume()
        self._metrics: dict[str, list[torch.Tensor]] = {}
        self._latest: dict[str, float] = {}

    # ------------------------------------------------------------------ setup
    def _check_config(self) -> None:
        loop = self.cfg.loop
        for name in ("max_steps", "batch_size", "grad_accum"):
            if getattr(loop, name) < 1:
                raise ValueError(f"loop.{name}={getattr(loop, name)} must be >= 1")
        if loop.mixed_precision not in ("bf16", "fp16", "no"):
            raise ValueError(f"loop.mixed_precision={loop.mixed_precision!r}: expected bf16, fp16 or no")
        if loop.export_weights not in ("ema", "raw"):
            raise ValueError(f"loop.export_weights={loop.export_weights!r}: expected ema or raw")
        if loop.export_dtype not in EXPORT_DTYPES:
            raise ValueError(f"loop.export_dtype={loop.export_dtype!r}: expected one of {sorted(EXPORT_DTYPES)}")
        if loop.export_weights == "ema" and not loop.ema.enabled:
            raise ValueError("loop.export_weights=ema needs loop.ema.enabled=true (or export_weights=raw)")

    def _configure_deepspeed(self) -> None:
        """DeepSpeed takes the micro-batch, accumulation and clipping from its config: fill them from the run's."""
        from accelerate.utils import DistributedType

        if self.accelerator.distributed_type != DistributedType.DEEPSPEED:
            return
        if len(self.phase_names) != 1:
            raise ValueError(f"task {self.task.name!r} has {len(self.phase_names)} optimizer phases; DeepSpeed runs "
                             f"single-phase tasks only: use DDP or FSDP2 for it")
        loop, opt = self.cfg.loop, self.cfg.optim[self.phase_names[0]]
        ds = self.accelerator.state.deepspeed_plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = loop.batch_size
        ds["gradient_accumulation_steps"] = loop.grad_accum
        ds["gradient_clipping"] = opt.max_grad_norm or 0.0

    @property
    def global_batch(self) -> int:
        return self.accelerator.num_processes * self.cfg.loop.batch_size * self.cfg.loop.grad_accum

    def data_loader(self, start_step: int) -> torch.utils.data.DataLoader:
        """Micro-batches of this process from ``start_step`` on (``grad_accum`` per step)."""
        acc, loop = self.accelerator, self.cfg.loop
        sampler = StepSampler(len(self.dataset), seed=loop.seed, batch_size=loop.batch_size,
                              num_processes=acc.num_processes, rank=acc.process_index,
                              grad_accum=loop.grad_accum, start_step=start_step)
        return torch.utils.data.DataLoader(
            self.dataset, batch_sampler=sampler, collate_fn=_Collate(self.task), num_workers=loop.num_workers,
            pin_memory=acc.device.type == "cuda", persistent_workers=loop.num_workers > 0,
        )

    # ------------------------------------------------------------------ the step
    def train_step(self, micro_batches: list[dict[str, Any]], step: int) -> dict[str, torch.Tensor | float]:
        """One optimizer step per active phase over ``grad_accum`` micro-batches -> metrics (device tensors; the
        learning rates as floats)."""
        acc = self.accelerator
        metrics: dict[str, torch.Tensor | float] = {}
        for phase in self.active_phases(step):
            opt = self.optimizers[phase]
            for p in self.phase_params[phase]:
                p.grad = None  # a previous phase's backward may have reached these parameters
            metrics[f"lr/{phase}"] = self.schedules[phase].apply(opt, step)  # a float: logged as the latest value
            total: dict[str, torch.Tensor] = {}
            for batch in micro_batches:
                with acc.accumulate(self.model):
                    loss, m = self.model(phase, batch, step)
                    acc.backward(loss)
                    if acc.sync_gradients and self.cfg.optim[phase].max_grad_norm:
                        gn = acc.clip_grad_norm_(self.phase_params[phase], self.cfg.optim[phase].max_grad_norm)
                        if gn is not None:
                            metrics[f"grad_norm/{phase}"] = _full(torch.as_tensor(gn)).detach().float()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                for k, v in m.items():
                    total[k] = total.get(k, 0) + v.detach().float() / len(micro_batches)
            metrics.update(total)
        if self.ema is not None:
            self.ema.update(step)
        return metrics

    def active_phases(self, step: int) -> list[str]:
        return [p for p in self.task.phases(step) if step >= self.cfg.optim[p].start_step]

    # ------------------------------------------------------------------ the run
    def train(self) -> Path | None:
        """Run to ``loop.max_steps``; returns the last exported model folder (on the main process)."""
        if not self.cfg.loop.flush_denormal:
            return self._train()
        torch.set_flush_denormal(True)  # process-wide, CPU only (see LoopConfig.flush_denormal)
        try:
            return self._train()
        finally:
            torch.set_flush_denormal(False)  # torch's default again for the rest of the process

    def _train(self) -> Path | None:
        acc, loop = self.accelerator, self.cfg.loop
        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            import yaml

            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(to_plain(self.cfg), sort_keys=False))
        if acc.log_with:
            acc.init_trackers("vgt", config=_flat(to_plain(self.cfg)))
        self.model.train()
        batches = self._batches(self.step)
        from tqdm.auto import tqdm

        bar = tqdm(total=loop.max_steps, initial=self.step, disable=not acc.is_main_process, desc=f"train {self.task.name}")
        exported = None
        t0, n0 = time.perf_counter(), self.step
        while self.step < loop.max_steps:
            step = self.step
            metrics = self.train_step([next(batches) for _ in range(loop.grad_accum)], step)
            self.step = step + 1
            self._collect(metrics)
            bar.update(1)
            if self.step % loop.log_every == 0 or self.step == loop.max_steps:
                logged = self._log(bar, (self.step - n0) / max(time.perf_counter() - t0, 1e-9))
                t0, n0 = time.perf_counter(), self.step
                if not all(math.isfinite(v) for k, v in logged.items() if k.startswith("loss")):
                    raise FloatingPointError(f"non-finite loss at step {self.step}: {logged}; lower the learning rate "
                                             f"or resume from the last state in {self.run_dir / 'state'}")
            if loop.sample_every and self.step % loop.sample_every == 0:
                self.sample()
            if self.step % loop.save_every == 0 or self.step == loop.max_steps:
                self.save_state()
            if (loop.export_every and self.step % loop.export_every == 0) or self.step == loop.max_steps:
                exported = self.export()
        bar.close()
        for tracker in acc.trackers:
            tracker.finish()
        return exported

    def close(self) -> None:
        """End the trackers and the process group (the Trainer cannot train or save after this)."""
        self.accelerator.end_training()

    def _batches(self, start_step: int) -> Iterator[dict[str, Any]]:
        """Micro-batches on the device, each with ``info`` (step, micro index, sample slots, seed)."""
        loop = self.cfg.loop
        step, micro = start_step, 0
        for batch in self.data_loader(start_step):
            slots = batch.pop("slots").tolist()  # before the copy to the device: no host sync
            batch = _to_device(batch, self.accelerator.device)
            batch["info"] = BatchInfo(step=step, micro=micro, slots=slots, seed=loop.seed)
            yield batch
            micro += 1
            if micro == loop.grad_accum:
                step, micro = step + 1, 0

    # ------------------------------------------------------------------ metrics
    def _collect(self, metrics: dict[str, torch.Tensor | float]) -> None:
        """Device tensors are kept (averaged at the next log step, one host sync); floats keep their latest value."""
        for k, v in metrics.items():
            if torch.is_tensor(v):
                self._metrics.setdefault(k, []).append(v.to(self.accelerator.device))
            else:
                self._latest[k] = v

    def _log(self, bar, steps_per_s: float) -> dict[str, float]:
        acc = self.accelerator
        keys = sorted(self._metrics)
        means = torch.stack([torch.stack(self._metrics[k]).mean() for k in keys]) if keys else torch.zeros(0)
        means = acc.reduce(means, reduction="mean") if acc.num_processes > 1 else means
        values = {**dict(zip(keys, means.tolist())), **self._latest}  # one host sync per log step
        self._metrics.clear()
        values["samples_per_s"] = steps_per_s * self.global_batch
        if acc.is_main_process:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": self.step, **values}) + "\n")
            short = {k.replace("loss/", ""): f"{v:.4g}" for k, v in values.items() if k.startswith(("loss", "lr/"))}
            bar.set_postfix(short, refresh=False)
        if acc.log_with:
            acc.log(values, step=self.step)
        return values

    # ------------------------------------------------------------------ states (state.py)
    # ------------------------------------------------------------------ outputs
    def export(self) -> Path | None:
        """Export a model folder with the EMA (or raw) weights; every process takes part (FSDP gathers)."""
        use_ema = self.cfg.loop.export_weights == "ema" and self.ema is not None
        dtype = EXPORT_DTYPES[self.cfg.loop.export_dtype]
        with self._ema_weights() if use_ema else nullcontext():
            weights = {k: _full(v).detach().to("cpu", copy=True) for k, v in self.task.state_dict().items()}
        weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}
        folder = self.run_dir / "models" / f"step_{self.step:07d}"
        out = None
        if self.accelerator.is_main_process:
            out = self.task.export(folder, weights)
            logger.info("exported %s (%s weights)", out, "EMA" if use_ema else "raw")
        self.accelerator.wait_for_everyone()
        return out

    def sample(self) -> Path | None:
        """Write the task's sample grid (EMA weights) to samples/ and the trackers."""
        acc = self.accelerator
        sharded = any(_is_dtensor(p) for p in self.task.parameters())
        out = None
        if sharded or acc.is_main_process:
            with self._ema_weights(), _unsharded(self.model, sharded), torch.no_grad(), acc.autocast():
                was_training = self.task.training
                self.task.eval()
                images = self.task.sample(self.step)
                self.task.train(was_training)
            if images is not None and acc.is_main_process:
                out = self._write_grid(images)
        acc.wait_for_everyone()
        return out

    @contextmanager
    def _ema_weights(self):
        if self.ema is None:
            yield
            return
        self.ema.swap()
        try:
            yield
        finally:
            self.ema.swap()

    def _write_grid(self, images: torch.Tensor) -> Path:
        from PIL import Image

        grid = _grid(images)  # [H, W, 3] uint8
        path = self.run_dir / "samples" / f"step_{self.step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid.numpy()).save(path)
        for tracker in self.accelerator.trackers:
            if hasattr(tracker, "log_images"):
                tracker.log_images({"samples": grid.numpy()[None]}, step=self.step, dataformats="NHWC")
        return path


# ---------------------------------------------------------------------------------------------------------- helpers
class _Collate:
    """The task's collate plus the sample slots (picklable for DataLoader workers)."""

    def __init__(self, task: TrainTask):
        self.collate = task.collate

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collate(items)
        batch["slots"] = torch.tensor([it["slot"] for it in items], dtype=torch.long)
        return batch


def _to_device(obj: Any, device: torch.device) -> Any:
    if torch.is_tensor(obj):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_device(v, device) for v in obj]
    return obj


@contextmanager
def _unsharded(model: torch.nn.Module, sharded: bool):
    """FSDP2: gather the root's own parameters for calls that do not go through ``forward`` (sampling)."""
    if not sharded or not hasattr(model, "unshard"):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


def _grid(images: torch.Tensor, cols: int = 4) -> torch.Tensor:
    """[N, 3, H, W] in [-1, 1] -> a [rows*H, cols*W, 3] uint8 grid."""
    x = (images.float().cpu().clamp(-1, 1) * 127.5 + 127.5).round().to(torch.uint8)
    n, c, h, w = x.shape
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    canvas = torch.zeros(rows * h, cols * w, c, dtype=torch.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        canvas[r * h:(r + 1) * h, k * w:(k + 1) * w] = x[i].permute(1, 2, 0)
    return canvas


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> flat {"loop.max_steps": 10} with tracker-friendly values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
