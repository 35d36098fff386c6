"""Benchmark of QueryAR decoding: time per image, tokens/s, and where the time goes.

The split is measured by timing every LLM forward and every flow-head forward (synchronising the device around each
one, which only the benchmark does); "other" is everything else in ``generate`` (prefix building, projections,
LayerNorms, scatter, CFG arithmetic). Runs on a loaded pipeline or on a random-weight model of a named size.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

# Random-weight model sizes (LLM text config + flow head); "1.5b" has the shape of the released Qwen AR model's
# 18-layer LLM and flow head; "small" keeps the same structure at a size a CPU runs in seconds.
SIZES: dict[str, dict] = {
    "small": dict(hidden=256, layers=4, heads=4, kv=2, mlp=512, head_dim=256, head_layers=3),
    "medium": dict(hidden=896, layers=12, heads=14, kv=2, mlp=4864, head_dim=768, head_layers=6),
    "1.5b": dict(hidden=2048, layers=18, heads=16, kv=2, mlp=11008, head_dim=1536, head_layers=12),
}


HEAD_METHODS = ("forward_embedded", "embed_condition", "embed_time")  # everything the sampler calls on the head


@dataclass
class BenchResult:
    acc_ratio: int
    tokens: int
    seconds: float  # per image batch
    llm: float
    flow_head: float
    peak_mb: float

    @property
    def other(self) -> float:
        return max(0.0, self.seconds - self.llm - self.flow_head)

    def row(self, batch: int) -> str:
        pct = lambda x: 100.0 * x / self.seconds if self.seconds else 0.0  # noqa: E731
        return (
            f"acc_ratio={self.acc_ratio:>3}  {self.seconds / batch:8.3f} s/image  "
            f"{self.tokens * batch / self.seconds:8.1f} tok/s  llm {pct(self.llm):5.1f}%  "
            f"flow-head {pct(self.flow_head):5.1f}%  other {pct(self.other):5.1f}%  peak {self.peak_mb:8.0f} MB"
        )


def _sync(device: torch.device) -> None:
    mod = getattr(torch, device.type, None)
    if device.type != "cpu" and mod is not None and hasattr(mod, "synchronize"):
        mod.synchronize()


@contextlib.contextmanager
def _timed(module: nn.Module, bucket: list[float], methods: Sequence[str] = ("forward",)) -> Iterator[None]:
    """Wrap ``module.<method>`` calls so their wall time (device-synchronised) is added to ``bucket[0]``."""
    with contextlib.ExitStack() as stack:
        for name in methods:
            stack.enter_context(_timed_method(module, name, bucket))
        yield


@contextlib.contextmanager
def _timed_method(module: nn.Module, name: str, bucket: list[float]) -> Iterator[None]:
    original = getattr(module, name)

    def timed(*args, **kwargs):
        dev = next(module.parameters()).device
        _sync(dev)
        t0 = time.perf_counter()
        out = original(*args, **kwargs)
        _sync(dev)
        bucket[0] += time.perf_counter() - t0
        return out

    setattr(module, name, timed)
    try:
        yield
    finally:
        delattr(module, name)


def _peak_mb(device: torch.device) -> float:
    mod = getattr(torch, device.type, None)
    if device.type != "cpu" and mod is not None and hasattr(mod, "max_memory_allocated"):
        return mod.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # process peak RSS (Linux: KiB)


def run_bench(
    pipe, *, prompts: Sequence[str], height: int, width: int, acc_ratios: Sequence[int] = (1, 4, 16),
    num_flow_steps: int = 30, cfg_scale: float = 4.5, warmup: bool = True, seed: int = 0, repeats: int = 1,
) -> list[BenchResult]:
    """Generate ``repeats`` times per acc_ratio (after one warm-up); keep the fastest run and its split."""
    head = pipe.ar.flow_head
    results = []
    kw = dict(height=height, width=width, num_flow_steps=num_flow_steps, cfg_scale=cfg_scale, decode=False)
    if warmup:
        pipe.generate(list(prompts), acc_ratio=max(acc_ratios), generator=torch.Generator().manual_seed(seed), **kw)
    for acc in acc_ratios:
        runs = [_one_run(pipe, head, prompts, acc, kw, seed) for _ in range(max(1, repeats))]
        results.append(min(runs, key=lambda r: r.seconds))
    return results


def _one_run(pipe, head, prompts, acc, kw, seed) -> BenchResult:
    """One timed generation with the LLM / flow-head split."""
    llm_t, head_t = [0.0], [0.0]
    mod = getattr(torch, pipe.device.type, None)
    if pipe.device.type != "cpu" and mod is not None and hasattr(mod, "reset_peak_memory_stats"):
        mod.reset_peak_memory_stats(pipe.device)
    with _timed(pipe.ar.llm, llm_t), _timed(head, head_t, HEAD_METHODS):
        _sync(pipe.device)
        t0 = time.perf_counter()
        pipe.generate(list(prompts), acc_ratio=acc, generator=torch.Generator().manual_seed(seed), **kw)
        _sync(pipe.device)
        total = time.perf_counter() - t0
    n = (kw["height"] // pipe.latent_stride) * (kw["width"] // pipe.latent_stride)
    return BenchResult(acc, n, total, llm_t[0], head_t[0], _peak_mb(pipe.device))


class ByteTokenizer:
    """A stand-in tokenizer for random-weight benchmarks: one id per UTF-8 byte (ids 0..255), pad 256."""

    pad_token_id = 256
    eos_token_id = 256

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(text.encode("utf-8"))


def random_pipeline(size: str = "small", *, family: str = "internvl3", dtype=None, device=None):
    """A VGTPipeline with random weights of a named size (no checkpoint, no tokenizer files, no VGT-AE)."""
    from transformers import Qwen2Config

    from .ar_model import VGTARModel
    from .config import ARConfig, FlowHeadConfig
    from .pipeline import VGTPipeline

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}: expected one of {sorted(SIZES)}")
    s = SIZES[size]
    text = Qwen2Config(
        vocab_size=512, hidden_size=s["hidden"], num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
        num_key_value_heads=s["kv"], intermediate_size=s["mlp"], max_position_embeddings=32768,
    )
    text_cfg = text if family == "internvl3" else _qwen_vl_text_config(text)
    cfg = ARConfig(
        family=family, hidden_size=s["hidden"], query_grid=(64, 64),
        flow_head=FlowHeadConfig(cond_dim=s["hidden"], dim=s["head_dim"], layers=s["head_layers"]),
    )
    gen = torch.Generator().manual_seed(0)
    ar = VGTARModel(cfg, text_cfg)
    with torch.no_grad():
        for p in ar.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    ar.to(device=device or "cpu", dtype=dtype or torch.float32).eval()
    return VGTPipeline(ar, ByteTokenizer(), ae=None)


def _qwen_vl_text_config(text):
    from transformers import Qwen2_5_VLConfig

    cfg = Qwen2_5_VLConfig(text_config=text.to_dict())
    tc = getattr(cfg, "text_config", cfg)
    tc.rope_scaling = {"type": "mrope", "rope_type": "default", "mrope_section": _mrope_section(text)}
    return tc


def _mrope_section(text) -> list[int]:
    half = text.hidden_size // text.num_attention_heads // 2
    t = half // 4
    return [half - 2 * ((half - t) // 2), (half - t) // 2, (half - t) // 2]
