"""Typed training configs, presets, config files (YAML / JSON) and ``key=value`` dotted overrides.

A run config has five sections::

    task: ar                 # which registered task (vgt train ar|ae)
    loop: {...}              # LoopConfig: steps, batch, precision, EMA, saving, logging
    optim: {main: {...}}     # OptimConfig per phase of the task
    data: {...}              # DataConfig: where the images / captions / latent cache are
    model: {...}             # the task's own config dataclass (e.g. ARTaskConfig)

A file may start from a preset or another file with ``base: ar_sft`` (or a relative path); its keys override the
base's, key by key. Presets ship in ``vgt_impl/training/presets/``; ``vgt train ar --config ar_tiny`` names one.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRESET_DIR = Path(__file__).resolve().parent / "presets"
ACCELERATE_DIR = Path(__file__).resolve().parent / "accelerate_configs"


@dataclass
class OptimConfig:
    """AdamW + linear warm-up + cosine decay for one phase (the reference: CustomAdamW, LinearLR, CosineAnnealingLR)."""

    lr: float = 1e-4  # peak learning rate
    min_lr: float = 0.0  # learning rate at the end of the cosine (eta_min)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas
    eps: float = 1e-8  # AdamW epsilon
    weight_decay: float = 0.05  # applied to parameters with >= 2 dims only (no biases / norms / 1-D)
    schedule: str = "cosine"  # "cosine" | "linear" | "constant" (after warm-up)
    warmup_steps: int | None = None  # linear warm-up length; None: warmup_ratio * (max_steps - start_step)
    warmup_ratio: float = 0.01  # warm-up as a fraction of the phase's steps (reference: 1 %)
    warmup_start_factor: float = 1e-5  # lr factor at step 0 of the warm-up (reference LinearLR start_factor)
    start_step: int = 0  # the phase starts at this step (e.g. a GAN discriminator); its schedule starts there too
    max_grad_norm: float | None = 1.0  # gradient clipping of this phase's parameters; None = off
    fused: bool | None = None  # fused AdamW kernel; None: on for CUDA


@dataclass
class EMAConfig:
    """Exponential moving average of the exported weights (the reference's EMAHook: momentum 2e-4)."""

    enabled: bool = True  # keep an EMA copy (fp32) of the task's ema_parameters()
    momentum: float = 2e-4  # ema <- (1 - m) * ema + m * param after each optimizer step
    start_step: int = 10000  # before this step the EMA copies the weights (reference: begin_iter)


@dataclass
class LoopConfig:
    """What the loop owns: sizes, precision, saving, logging, samples."""

    output_dir: str = "runs/vgt"  # run directory: state/, models/, samples/, logs/, metrics.jsonl, config.yaml
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 32  # samples per process per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step (global batch = processes * batch_size * grad_accum)
    mixed_precision: str = "bf16"  # "bf16" | "fp16" | "no" (fp32); parameters and optimizer stay fp32
    seed: int = 0  # seeds data order, augmentation, CFG dropout and every loss draw
    gradient_checkpointing: bool = False  # recompute transformer blocks in backward (less memory, ~30 % slower)
    log_every: int = 10  # log metrics every N steps (tqdm, trackers, metrics.jsonl)
    log_with: list[str] = field(default_factory=lambda: ["auto"])  # trackers: "tensorboard", "wandb", ...; "auto":
    #   tensorboard when installed; [] = metrics.jsonl and the console only
    save_every: int = 1000  # resumable state (accelerate save_state + EMA + data position) every N steps
    keep_states: int = 2  # resumable states kept (older ones are removed once a newer one is complete); 0 = all
    export_every: int = 0  # export a model folder every N steps (always at the end); 0 = only at the end
    export_weights: str = "ema"  # "ema" | "raw": which weights exported model folders carry
    export_dtype: str = "bf16"  # storage dtype of exported weights: "bf16" (as the official files) | "fp16" | "fp32"
    sample_every: int = 0  # write a sample grid every N steps (0 = never); uses the EMA weights when enabled
    resume: str = "auto"  # "auto" (latest state in output_dir if any) | "never" | path of a state folder
    num_workers: int = 2  # DataLoader worker processes
    flush_denormal: bool = True  # CPU: treat denormal floats as zero (torch.set_flush_denormal). Gradients deep in a
    #   conv decoder fall into the denormal range and make the CPU's convolution backward several times slower
    #   (DC-AE decoder, batch 16 at 256 px: backward 7.4 s -> 1.9 s on one core); no effect on GPUs; set during
    #   Trainer.train() only
    ema: EMAConfig = field(default_factory=EMAConfig)


# ---------------------------------------------------------------------------------------------------------- files
def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_config_path(name: str | Path, relative_to: Path | None = None) -> Path:
    """A preset name (``ar_sft``) or a file path -> the file."""
    path = Path(name)
    if relative_to is not None and not path.is_absolute() and (relative_to / path).is_file():
        return relative_to / path
    if path.is_file():
        return path
    preset = PRESET_DIR / f"{name}.yaml"
    if preset.is_file():
        return preset
    raise FileNotFoundError(f"config {name!r} is neither a file nor a preset (presets: {', '.join(preset_names())})")


def read_config_file(name: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML / JSON config, following ``base:`` chains; returns the merged raw dict."""
    import yaml

    path = resolve_config_path(name, _seen[-1].parent if _seen else None).resolve()
    if path in _seen:
        raise ValueError(f"config {path} includes itself through 'base:'")
    text = path.read_text(encoding="utf-8")
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}") from e
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a mapping of sections (task, loop, optim, data, model)")
    base = raw.pop("base", None)
    return deep_merge(read_config_file(base, _seen + (path,)), raw) if base else raw


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["loop.max_steps=10", "optim.main.lr=1e-4"]`` -> raw dict updated (values parsed as YAML scalars/lists)."""
    import yaml

    raw = json.loads(json.dumps(raw))  # deep copy of plain data
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} is not key=value (e.g. loop.max_steps=100)")
        node = raw
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    return raw


# ---------------------------------------------------------------------------------------------------------- typing
def from_dict(cls: type, raw: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a raw dict, coercing and checking types; unknown keys are an error."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"{where or cls.__name__}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in raw if k not in names]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(k, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(names)})"
        raise ValueError(f"unknown config key {_join(where, k)!r}{hint}")
    kwargs = {k: coerce(hints[k], v, _join(where, k)) for k, v in raw.items()}
    return cls(**kwargs)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def coerce(tp: Any, value: Any, where: str) -> Any:
    """Coerce a raw config value to the annotated type (ints/floats from strings, tuples from lists, ...)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return coerce(a, value, where)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else from_dict(tp, value, where)
    if tp is Any:
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return {k: coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        if isinstance(value, str) and origin is list:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ValueError(f"{where}: expected {len(args)} values, got {value!r}")
            return tuple(coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    return _scalar(tp, value, where)


def _scalar(tp: Any, value: Any, where: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        try:
            out = tp(value) if not isinstance(value, str) else tp(float(value)) if tp is int else float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected {'an integer' if tp is int else 'a number'}, got {value!r}") from None
        if tp is int and float(value) != out:
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return out
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        if isinstance(value, bool):  # YAML 1.1 reads a bare no/off/yes/on as a boolean: give the word back
            return "yes" if value else "no"
        return str(value)
    return value


def to_plain(obj: Any) -> Any:
    """Dataclasses -> plain dicts/lists (for config.yaml and trackers)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


@dataclass
class DataConfig:
    """Training images and captions (see ``data.py``), or a latent cache built from them."""

    source: list[str] = field(default_factory=list)  # image folders (same-name .txt captions), .jsonl manifests,
    #   .tar shards (webdataset layout); globs and {000..099} ranges allowed
    image_size: int = 448  # square training size in pixels (multiple of 28: one latent token per 28x28 pixels)
    crop: str = "random"  # square crop before resizing: "random" (reference crop2square) | "center"
    image_key: str = "image"  # JSONL: field with the image path (relative to the manifest); tar: image extensions
    caption_key: str = "caption"  # JSONL field / tar member extension / folder sidecar extension ("txt" for folders)
    latent_cache: str | None = None  # folder written by `vgt cache-latents`: latents + captions, no images read
    on_error: str = "raise"  # an unreadable image: "raise" (stop, naming it) | "skip" (warn, take the next item)


@dataclass
class RunConfig:
    """A whole run: the sections described in the module docstring."""

    task: str = "ar"  # the registered task: vgt train <task>
    loop: LoopConfig = field(default_factory=LoopConfig)  # what the loop owns
    optim: dict[str, OptimConfig] = field(default_factory=lambda: {"main": OptimConfig()})  # one per task phase
    data: DataConfig = field(default_factory=DataConfig)  # images + captions, or a latent cache
    model: Any = None  # the task's config dataclass (its `config_cls`)


SECTIONS = ("task", "loop", "optim", "data", "model")


def build_run_config(raw: dict[str, Any], task: str | None = None) -> RunConfig:
    """Raw merged dict -> typed :class:`RunConfig` (the task's ``config_cls`` types the ``model`` section)."""
    from .task import get_task_class

    unknown = [k for k in raw if k not in SECTIONS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], SECTIONS, n=1)
        raise ValueError(f"unknown config section {unknown[0]!r}" + (f" (did you mean {close[0]!r}?)" if close else
                                                                     f" (sections: {', '.join(SECTIONS)})"))
    name = task or raw.get("task") or "ar"
    if task and raw.get("task") not in (None, task):
        raise ValueError(f"the config is for task {raw['task']!r} but `vgt train {task}` was asked")
    task_cls = get_task_class(name)
    optim_raw = raw.get("optim") or {}
    if not isinstance(optim_raw, dict):
        raise ValueError("optim: expected a mapping of phase name -> optimizer settings")
    return RunConfig(
        task=name,
        loop=from_dict(LoopConfig, raw.get("loop"), "loop"),
        optim={k: from_dict(OptimConfig, v, f"optim.{k}") for k, v in optim_raw.items()},
        data=from_dict(DataConfig, raw.get("data"), "data"),
        model=from_dict(task_cls.config_cls, raw.get("model"), "model"),
    )


def load_run_config(name: str | Path, overrides: list[str] | None = None, task: str | None = None) -> RunConfig:
    """Config file or preset name + ``key=value`` overrides -> :class:`RunConfig`."""
    return build_run_config(apply_overrides(read_config_file(name), list(overrides or [])), task)
