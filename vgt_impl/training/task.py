"""The contract between a training task and the loop.

A task is an ``nn.Module`` that OWNS its networks (trainable and frozen) and COMPUTES its losses; the loop
(``loop.py``) owns everything else: devices, mixed precision, gradient accumulation, clipping, optimizers and learning
rates, EMA, save/resume, trackers, periodic samples and exports.

One training step runs the task's active phases in order (``phases(step)``); each phase has its own optimizer built by
the loop from ``param_groups(phase)`` and the run config's ``optim.<phase>`` section, and its own ``start_step``.
A GAN uses two phases ("generator", then "discriminator"); VGT-AR uses one ("main"). For each phase the loop calls the
(wrapped) task ``grad_accum`` times, once per micro-batch::

    loss, metrics = model(phase, batch, step, draws)     # = task.loss(...) through DDP / FSDP / DeepSpeed
    accelerator.backward(loss) ... clip ... optimizer.step()

Calling through the wrapper's ``forward`` (never a submodule directly) is what lets DDP sync gradients and FSDP gather
parameters. The micro-batch dicts of one step are the same objects in every phase, so a phase may leave detached
tensors in them for a later phase (e.g. the reconstruction a discriminator phase scores).

Random draws: every loss takes ``draws``, a mapping from a draw's name to a tensor that replaces that draw (tests replay
recorded draws); whatever is not given is drawn from ``self.generator(...)`` streams that depend only on the run seed,
the step and each sample's global slot, so a run is reproducible, resumable and independent of the number of processes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

Draws = Mapping[str, torch.Tensor]
Metrics = dict[str, torch.Tensor]


@dataclass
class ParamGroup:
    """Parameters one phase's optimizer updates, with a learning-rate multiplier (e.g. 0.5 for an encoder)."""

    name: str
    params: list[tuple[str, nn.Parameter]]
    lr_scale: float = 1.0


@dataclass
class BatchInfo:
    """Where a micro-batch sits in the run: the loop adds it to every batch as ``batch["info"]``."""

    step: int  # optimizer step (0-based) this micro-batch belongs to
    micro: int  # index of the micro-batch inside the step (gradient accumulation)
    slots: list[int] = field(default_factory=list)  # global sample slot of each row (same for any number of processes)
    seed: int = 0  # the run seed


def stream_seed(*parts: int | str) -> int:
    """A 63-bit seed from a tuple (run seed, purpose, step, slot, ...): independent, reproducible random streams."""
    text = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & ((1 << 63) - 1)


def make_generator(device: torch.device | str, *parts: int | str) -> torch.Generator:
    """A generator on ``device`` seeded from ``parts`` (see :func:`stream_seed`)."""
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(stream_seed(*parts))
    return gen


class TrainTask(nn.Module):
    """Base class of training tasks (see the module docstring). Subclasses set ``name`` and implement ``loss``.

    Register a task with :func:`register_task` so ``vgt train <name>`` finds it.
    """

    name: ClassVar[str] = "task"
    config_cls: ClassVar[type] = dict  # the dataclass of the run config's ``model`` section
    find_unused_parameters: ClassVar[bool] = False  # DDP: True when a phase leaves trainable parameters unused

    @classmethod
    def build(cls, config: Any) -> TrainTask:
        """Build the task (networks loaded, frozen parts frozen) from a :class:`~.config.RunConfig`."""
        raise NotImplementedError

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations of the big blocks in backward (``loop.gradient_checkpointing``)."""
        raise NotImplementedError(f"task {self.name!r} does not support gradient checkpointing")

    # ------------------------------------------------------------------ phases and parameters
    def phase_names(self) -> list[str]:
        """Every phase this task may run, in execution order (each gets an optimizer)."""
        return ["main"]

    def phases(self, step: int) -> list[str]:
        """Phases active at ``step``; by default all (the loop also honours each phase's ``start_step``)."""
        return self.phase_names()

    def param_groups(self, phase: str) -> list[ParamGroup]:
        """The parameters ``phase`` updates. Default: every trainable parameter in one group."""
        return [ParamGroup("all", [(n, p) for n, p in self.named_parameters() if p.requires_grad])]

    def ema_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Parameters the EMA tracks (the exported weights). Default: every trainable parameter."""
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    # ------------------------------------------------------------------ losses
    def forward(self, phase: str, batch: dict[str, Any], step: int, draws: Draws | None = None):
        return self.loss(phase, batch, step, draws)

    def loss(self, phase: str, batch: dict[str, Any], step: int, draws: Draws | None = None) -> tuple[torch.Tensor, Metrics]:
        """-> (scalar loss to backpropagate, detached metrics to log)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ data
    def build_dataset(self, data_config: Any) -> torch.utils.data.Dataset:
        """The training dataset; its ``__getitem__`` receives ``(index, sample_seed)`` (see ``data.py``)."""
        raise NotImplementedError

    def collate(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """List of dataset items -> one batch dict of CPU tensors (moved to the device by the loop)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ outputs
    def sample(self, step: int) -> torch.Tensor | None:
        """Images [N, 3, H, W] in [-1, 1] for the periodic sample grid, or None. Called with EMA weights swapped in."""
        return None

    def export(self, folder: Path, weights: Mapping[str, torch.Tensor]) -> Path:
        """Write a self-contained model folder from ``weights`` (names as in ``ema_parameters``); return its path."""
        raise NotImplementedError

    def resume_fingerprint(self) -> dict[str, Any]:
        """What must not change between a run and its resumption (checked on resume)."""
        return {"task": self.name}

    # ------------------------------------------------------------------ distributed hints
    def no_split_modules(self) -> list[type]:
        """Module classes FSDP shards as units and gradient checkpointing wraps (transformer blocks)."""
        return []


TASKS: dict[str, Callable[[], type[TrainTask]]] = {}


def register_task(name: str, loader: Callable[[], type[TrainTask]]) -> None:
    """Register ``loader`` (returns the task class; imported lazily) under ``name`` for ``vgt train <name>``."""
    TASKS[name] = loader


def get_task_class(name: str) -> type[TrainTask]:
    if name not in TASKS:
        raise ValueError(f"unknown training task {name!r}: expected one of {sorted(TASKS)}")
    return TASKS[name]()
