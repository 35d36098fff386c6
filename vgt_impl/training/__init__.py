"""VGT training: tasks (what is trained and its losses) on one accelerate loop (how it is trained).

``vgt train ar|ae --config FILE [key=value ...]``; in Python::

    from vgt_impl.training import Trainer, load_run_config
    Trainer(load_run_config("ar_tiny", ["loop.max_steps=10"])).train()

Importing this package is cheap: tasks register by name and are imported when used.
"""

from __future__ import annotations

import importlib
from typing import Any

from .task import TASKS, TrainTask, get_task_class, register_task

register_task("ar", lambda: importlib.import_module("vgt_impl.training.ar_task").ARTask)
register_task("ae", lambda: importlib.import_module("vgt_impl.training.ae_tasks").AETask)
register_task("dcae", lambda: importlib.import_module("vgt_impl.training.ae_tasks").DCAETask)
register_task("vlm", lambda: importlib.import_module("vgt_impl.demo.vlm_task").VLMTask)

_LAZY = {
    "Trainer": "vgt_impl.training.loop",
    "RunConfig": "vgt_impl.training.config",
    "load_run_config": "vgt_impl.training.config",
}

__all__ = ["TASKS", "TrainTask", "get_task_class", "register_task", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vgt_impl.training' has no attribute {name!r}")
