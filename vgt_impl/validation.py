"""Argument checks shared by the library, the ``vgt`` command and the ComfyUI nodes.

Every check takes the *name* the caller's user knows (``cfg_scale`` in the library, ``--cfg`` in the CLI, ``cfg`` on a
node) and raises a ``ValueError``/``TypeError`` saying which input is wrong and what is expected, before any heavy work.
Nothing here loads a model; tensor checks cost one reduction each.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch

ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
WEIGHT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type(value: Any) -> str:
    t = type(value)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__name__}"


# ---------------------------------------------------------------------------------------------------------- numbers
def check_int(name: str, value: Any, *, lo: int | None = None, hi: int | None = None, hint: str = "") -> int:
    """An integer (Python or numpy/0-d integer tensor, never bool or float) within [lo, hi] -> int."""
    if torch.is_tensor(value) and value.ndim == 0 and not value.is_floating_point() and value.dtype != torch.bool:
        value = int(value)
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {_shown(value)} ({_type(value)}){hint}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{name}={value} is out of range: expected {_range(lo, hi)}{hint}")
    return value


def check_real(
    name: str, value: Any, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
    hi_open: bool = False, hint: str = "",
) -> float:
    """A finite real number (int, float, numpy scalar; never bool or str) within the given bounds -> float."""
    if torch.is_tensor(value) and value.ndim == 0 and not value.is_complex() and value.dtype != torch.bool:
        value = value.item()
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {_shown(value)} ({_type(value)}){hint}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}={value} is not a finite number: expected {_range(lo, hi, lo_open, hi_open)}{hint}")
    below = lo is not None and (value <= lo if lo_open else value < lo)
    above = hi is not None and (value >= hi if hi_open else value > hi)
    if below or above:
        raise ValueError(f"{name}={value:g} is out of range: expected {_range(lo, hi, lo_open, hi_open)}{hint}")
    return value


def _range(lo, hi, lo_open: bool = False, hi_open: bool = False) -> str:
    f = lambda v: f"{v:g}" if isinstance(v, float) else str(v)  # noqa: E731
    if lo is not None and hi is not None:
        return f"a value {'>' if lo_open else '>='} {f(lo)} and {'<' if hi_open else '<='} {f(hi)}"
    if lo is not None:
        return f"a value {'>' if lo_open else '>='} {f(lo)}"
    if hi is not None:
        return f"a value {'<' if hi_open else '<='} {f(hi)}"
    return "a finite number"


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={_shown(value)}: expected one of {', '.join(map(str, choices))}")
    return value


def check_size_px(name: str, value: Any, stride: int, max_tokens: int | None = None) -> int:
    """An image side in pixels: an int multiple of ``stride``, at least one token, within the query grid -> tokens."""
    value = check_int(name, value)
    if value < stride:
        raise ValueError(f"{name}={value} is too small: at least {stride} px (one latent token of {stride}x{stride} px)")
    if value % stride:
        lo, hi = value // stride * stride, (value // stride + 1) * stride
        raise ValueError(f"{name}={value} is not a multiple of {stride}: use {lo} or {hi}")
    if max_tokens is not None and value // stride > max_tokens:
        raise ValueError(f"{name}={value} exceeds the query grid: at most {max_tokens * stride} px "
                         f"({max_tokens} tokens of {stride} px)")
    return value // stride


# ---------------------------------------------------------------------------------------------------------- tensors
def check_tensor(name: str, value: Any, *, shape_hint: str = "") -> torch.Tensor:
    """A torch.Tensor (numpy arrays are refused with the conversion to use: their layout is not ours to guess)."""
    if not torch.is_tensor(value):
        extra = " (convert it with torch.from_numpy and check its layout)" if _type(value).startswith("numpy") else ""
        raise TypeError(f"{name} must be a torch.Tensor{' ' + shape_hint if shape_hint else ''}, got "
                        f"{_type(value)}{extra}")
    return value


def check_finite(name: str, x: torch.Tensor) -> None:
    """NaN or inf anywhere in ``x`` is an error naming ``name`` (one reduction, one host sync)."""
    if x.is_floating_point() or x.is_complex():
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            n_nan, n_inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
            raise ValueError(f"{name} contains non-finite values ({n_nan} NaN, {n_inf} inf of {x.numel()}): "
                             f"fix the step that produced it")


def check_nonempty(name: str, x: torch.Tensor, dims: str) -> None:
    """Every dimension of ``x`` is at least 1 (``dims`` names them for the message, e.g. 'B, 3, H, W')."""
    if x.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)} ([{dims}]); give at least one item of at least "
                         f"one pixel / token")


def check_range(name: str, x: torch.Tensor, lo: float, hi: float, hint: str, tol: float = 1e-3) -> None:
    """Values of ``x`` within [lo - tol, hi + tol] (the tolerance absorbs rounding of upstream resizes)."""
    mn, mx = float(x.min()), float(x.max())
    if mn < lo - tol or mx > hi + tol:
        raise ValueError(f"{name} has values in [{mn:g}, {mx:g}] but must be in [{lo:g}, {hi:g}]{hint}")


# ---------------------------------------------------------------------------------------------------------- runtime
def check_device(device: Any, name: str = "device") -> torch.device:
    """A device string / torch.device that exists on this machine (checked before any model is built)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"{name}={_shown(device)} is not a device: use cpu, cuda, cuda:N, mps, ... ({e})") from None
    if dev.type == "meta":
        raise ValueError(f"{name}=meta holds no data: use cpu or an accelerator")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only torch build" if torch.version.cuda is None else "no visible CUDA device"
            raise ValueError(f"{name}={dev} but CUDA is not available ({build}): use cpu, or install a CUDA build "
                             f"of torch on a machine with an NVIDIA GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name}={dev} but only {torch.cuda.device_count()} CUDA device(s) exist "
                             f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"{name}=mps but the MPS backend is not available on this machine: use cpu")
    elif dev.type != "cpu":
        mod = getattr(torch, dev.type, None)
        if mod is None or not getattr(mod, "is_available", lambda: False)():
            raise ValueError(f"{name}={dev} is not available on this machine: use cpu")
    return dev


def check_dtype(dtype: Any, name: str = "dtype") -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or dtype not in WEIGHT_DTYPES:
        raise ValueError(f"{name}={_shown(dtype)}: expected torch.float32, torch.bfloat16 or torch.float16")
    return dtype


def check_attn_implementation(attn: Any, name: str = "attn_implementation") -> str:
    """sdpa / eager / flash_attention_2, the last only when flash-attn is installed."""
    check_choice(name, attn, ATTN_IMPLEMENTATIONS)
    if attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ValueError(f"{name}=flash_attention_2 needs the flash-attn package (pip install 'comfyui-vgt[flash]', "
                         f"CUDA only): use sdpa")
    return attn


def check_generator(generator: Any, name: str = "generator") -> None:
    """None or a CPU torch.Generator (noise is drawn on the CPU so that a seed means the same image everywhere)."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator, got {_type(generator)}")
    if generator.device.type != "cpu":
        raise ValueError(f"{name} is on {generator.device}: use a CPU torch.Generator() (noise is drawn on the CPU, "
                         f"so a seed gives the same image on any device)")


# ---------------------------------------------------------------------------------------------------------- prompts
class PromptTooLongError(ValueError):
    """A templated prompt is longer than the models were trained with."""

    def __init__(self, name: str, n_tokens: int, limit: int):
        self.name, self.n_tokens, self.limit = name, n_tokens, limit
        super().__init__(f"{name} is {n_tokens} tokens after templating, more than the {limit} the VGT models were "
                         f"trained with: shorten it")


def check_prompts(name: str, prompts: Any, *, allow_none: bool = False) -> list:
    """A string or a list/tuple of strings (None items allowed where ``allow_none``) -> list."""
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, (list, tuple)):
        raise TypeError(f"{name} must be a string or a list of strings, got {_shown(prompts)} ({_type(prompts)})")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) and not (allow_none and p is None):
            raise TypeError(f"{name}[{i}] must be a string{' or None' if allow_none else ''}, got {_shown(p)} "
                            f"({_type(p)})")
    return list(prompts)


# ---------------------------------------------------------------------------------------------------------- tokenizer
TEMPLATE_SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>")  # the chat template's markers: one token each
TOKENIZER_PROBE = "Generate an image: a red apple on a wooden table, 3 cats & a café"


def check_tokenizer_files(base_dir: Any) -> None:
    """The base folder holds a tokenizer: ``tokenizer.json``, or ``vocab.json`` + ``merges.txt`` (Qwen2 BPE)."""
    from pathlib import Path

    d = Path(base_dir)
    if (d / "tokenizer.json").is_file() or ((d / "vocab.json").is_file() and (d / "merges.txt").is_file()):
        return
    raise FileNotFoundError(
        f"base model folder {d} has no tokenizer files (tokenizer.json, or vocab.json + merges.txt), so prompts "
        f"could not be read: download them with the config, e.g. hf download <repo> --include '*.json' '*.txt' "
        f"--local-dir {d}"
    )


def verify_tokenizer(tokenizer: Any, *, where: Any, marker: str = "<img>", marker_pieces: str = "",
                     vocab_size: int | None = None) -> None:
    """The tokenizer reads prompts the way the checkpoint was trained (checked before any network is built).

    - the chat template's ``<|im_start|>`` / ``<|im_end|>`` are one token each;
    - the image-start ``marker`` is one token (``marker_pieces="one"``: InternVL3's ``<img>``, Qwen3-VL's
      ``<|vision_start|>``) or several ordinary pieces (``"several"``: Qwen2.5-VL has no ``<img>`` token);
    - ordinary text survives an encode/decode round trip (a tokenizer that maps text to nothing would make every
      prompt give the same image);
    - every id it can produce indexes the checkpoint's embedding table (``vocab_size`` rows), and it covers at least
      half of that table (a tokenizer from another, smaller model does not).
    """
    def fail(what: str) -> None:
        raise ValueError(f"the tokenizer in {where} {what}: use the tokenizer files of the base model the checkpoint "
                         f"was trained on (re-download its *.json and *.txt files)")

    enc = lambda s: list(tokenizer.encode(s, add_special_tokens=True))  # noqa: E731
    for tok in TEMPLATE_SPECIAL_TOKENS:
        ids = enc(tok)
        if len(ids) != 1:
            fail(f"does not know the chat template's special token {tok} (it encodes to {len(ids)} pieces)")
    ids = enc(marker)
    if marker_pieces == "one" and len(ids) != 1:
        fail(f"encodes the image-start marker {marker} to {len(ids)} pieces, not one special token")
    if marker_pieces == "several" and len(ids) < 2:
        fail(f"has {marker} as a single token; this model family was trained with it as ordinary text")
    probe = enc(TOKENIZER_PROBE)
    if not probe or tokenizer.decode(probe) != TOKENIZER_PROBE:
        fail(f"does not read ordinary text (round trip of {TOKENIZER_PROBE!r} gave {tokenizer.decode(probe)!r})")
    n = len(tokenizer)
    if vocab_size is not None and not vocab_size // 2 <= n <= vocab_size:
        fail(f"has {n} tokens but the checkpoint's embedding table has {vocab_size} rows (a matching tokenizer has "
             f"at most that many and at least half)")
