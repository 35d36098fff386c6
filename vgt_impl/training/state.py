"""Resumable training states: accelerate ``save_state`` + the EMA + the step, written atomically, pruned, resumed.

    state/step_0001000/   model.safetensors (trainable + buffers; frozen weights left out), optimizer*.bin,
                          random_states_*.pkl (accelerate), ema.safetensors (ema_rank<r>.safetensors under FSDP2),
                          trainer_state.json (step, data position, global batch, seed, the task's fingerprint)

A state folder is written as ``.tmp_step_*`` and renamed when every process has finished, so an interrupted save never
hides the previous state. Resuming needs the same global batch, seed and task fingerprint.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"


class RunState:
    """Mixin of :class:`~.loop.Trainer`: needs ``accelerator``, ``cfg``, ``task``, ``ema``, ``run_dir``, ``step``,
    ``global_batch`` and ``_frozen`` (names of frozen parameters)."""

    def _drop_frozen(self, models, weights, output_dir) -> None:
        """save_state pre-hook: keep frozen parameters (VGT-AE, feature models) out of resumable states."""
        for sd in weights:
            for k in [k for k in sd if k in self._frozen or k.removeprefix("module.") in self._frozen]:
                del sd[k]

    def state_dir(self) -> Path:
        return self.run_dir / "state"

    def save_state(self) -> Path:
        """Resumable state of the completed ``self.step`` steps; older states beyond ``keep_states`` are removed."""
        from ..checkpoints import usual_permissions

        acc = self.accelerator
        final = self.state_dir() / f"step_{self.step:07d}"
        tmp = self.state_dir() / f".tmp_step_{self.step:07d}"
        if acc.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        self._save_ema(tmp)
        if acc.is_main_process:
            (tmp / STATE_FILE).write_text(json.dumps(self._trainer_state(), indent=2))
            usual_permissions(tmp)  # accelerate's model.safetensors
        acc.wait_for_everyone()
        if acc.is_main_process:
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            self._prune_states()
        acc.wait_for_everyone()
        logger.info("saved state %s", final)
        return final

    def _trainer_state(self) -> dict[str, Any]:
        return {"step": self.step, "samples_seen": self.step * self.global_batch, "global_batch": self.global_batch,
                "batch_size": self.cfg.loop.batch_size, "grad_accum": self.cfg.loop.grad_accum,
                "num_processes": self.accelerator.num_processes, "seed": self.cfg.loop.seed,
                "task": self.task.resume_fingerprint()}

    def _save_ema(self, folder: Path) -> None:
        if self.ema is None:
            return
        from ..checkpoints import write_safetensors

        state = self.ema.state_dict()
        if any(_is_dtensor(t) for t in state.values()):  # FSDP2: each process saves its shards
            local = {k: (t.to_local() if _is_dtensor(t) else t).contiguous().cpu() for k, t in state.items()}
            write_safetensors(folder / f"ema_rank{self.accelerator.process_index}.safetensors", local)
        elif self.accelerator.is_main_process:
            write_safetensors(folder / "ema.safetensors", state)

    def _load_ema(self, folder: Path) -> None:
        if self.ema is None:
            return
        from safetensors.torch import load_file

        sharded = any(_is_dtensor(t) for t in self.ema.shadow.values())
        path = folder / (f"ema_rank{self.accelerator.process_index}.safetensors" if sharded else "ema.safetensors")
        if not path.is_file():
            logger.warning("state %s has no EMA (%s): the EMA restarts from the current weights", folder, path.name)
            return
        state = load_file(str(path))
        if sharded:
            state = {k: _local_view(self.ema.shadow[k], v) for k, v in state.items()}
        self.ema.load_state_dict(state)

    def latest_state(self) -> Path | None:
        states = sorted(p for p in self.state_dir().glob("step_*") if (p / STATE_FILE).is_file())
        return states[-1] if states else None

    def _resume(self) -> None:
        want = self.cfg.loop.resume
        if want == "never":
            return
        path = self.latest_state() if want == "auto" else Path(want)
        if path is None:
            return
        if not (path / STATE_FILE).is_file():
            raise FileNotFoundError(f"loop.resume={want}: {path} is not a complete training state (no {STATE_FILE})")
        saved = json.loads((path / STATE_FILE).read_text())
        now = self._trainer_state()
        for key in ("global_batch", "seed", "task"):
            if saved.get(key) != now[key]:
                raise ValueError(
                    f"cannot resume from {path}: {key} was {saved.get(key)!r}, now {now[key]!r}. Resuming needs the same "
                    f"global batch (processes x batch_size x grad_accum), seed and task settings; start a new "
                    f"output_dir (or set loop.resume=never) to train differently"
                )
        pruned = (path / "model.safetensors").is_file()  # DDP / single process: frozen weights left out
        if pruned:
            from safetensors import safe_open

            with safe_open(str(path / "model.safetensors"), "pt") as f:
                stored = {k.removeprefix("module.") for k in f.keys()}
            lost = sorted({n for n, p in self.task.named_parameters() if p.requires_grad} - stored)
            if lost:
                raise ValueError(f"state {path} lacks {len(lost)} trainable tensors (e.g. {lost[0]}): it is from "
                                 f"another model")
        self.accelerator.load_state(str(path), **({"strict": False} if pruned else {}))
        self._load_ema(path)
        self.step = int(saved["step"])
        logger.info("resumed from %s at step %d", path, self.step)

    def _prune_states(self) -> None:
        keep = self.cfg.loop.keep_states
        states = sorted(p for p in self.state_dir().glob("step_*") if (p / STATE_FILE).is_file())
        for old in states[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)


def _is_dtensor(t: Any) -> bool:
    return type(t).__name__ == "DTensor"


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if _is_dtensor(t) else t


def _local_view(like: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(local.to(like.device), like.device_mesh, like.placements, run_check=False)
