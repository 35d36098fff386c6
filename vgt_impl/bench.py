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
REFERENCE = "reference"


@dataclass(frozen=True)
class BenchConfig:
    """A labelled set of ``generate`` options (sampler, steps, grid, group schedule, static cache, compile)."""

    label: str
    options: tuple[tuple[str, object], ...] = ()

    @classmethod
    def of(cls, label: str, **options) -> BenchConfig:
        return cls(label, tuple(sorted(options.items())))

    @property
    def kwargs(self) -> dict:
        return dict(self.options)

    @property
    def nfe(self) -> int:
        from .integrators import get_sampler

        kw = self.kwargs
        return get_sampler(kw.get("sampler", "sde")).nfe(int(kw.get("num_flow_steps", 30)))

    @property
    def compiled(self) -> bool:
        return bool(self.kwargs.get("compile")) or bool(self.kwargs.get("static_cache"))


@dataclass
class BenchResult:
    acc_ratio: int
    tokens: int
    seconds: float  # per image batch
    llm: float | None  # None: not measurable (static / compiled: the LLM and the head run inside one graph)
    flow_head: float | None
    peak_mb: float
    label: str = REFERENCE
    nfe: int = 30
    calls: int = 0  # LLM calls (token groups)
    warmup_s: float = 0.0  # the first (warm-up) run, compilation included
    cpu_s: float | None = None  # process CPU time of the run (CPU device only): steadier than wall time on a shared
    # machine, where other processes' load stretches wall time but not the work done

    @property
    def other(self) -> float | None:
        if self.llm is None or self.flow_head is None:
            return None
        return max(0.0, self.seconds - self.llm - self.flow_head)

    def row(self, batch: int) -> str:
        pct = lambda x: f"{100.0 * x / self.seconds:5.1f}%" if x is not None and self.seconds else "    -"  # noqa: E731
        return (
            f"{self.label:<16} acc_ratio={self.acc_ratio:>3}  NFE {self.nfe:>3}  calls {self.calls:>4}  "
            f"{self.seconds / batch:8.3f} s/image  {self.tokens * batch / self.seconds:8.1f} tok/s  "
            f"llm {pct(self.llm)}  flow-head {pct(self.flow_head)}  other {pct(self.other)}  "
            f"peak {self.peak_mb:8.0f} MB" + (f"  cpu {self.cpu_s / batch:8.3f} s/image" if self.cpu_s else "")
            + (f"  (warm-up {self.warmup_s:.1f} s)" if self.warmup_s else "")
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
    configs: Sequence[BenchConfig] | None = None,
) -> list[BenchResult]:
    """Time each config at each acc_ratio: warm-up runs (one per acc_ratio, plus one per static / compiled config:
    compilation), then ``repeats`` timed runs taken in rounds over the configs (so drift of a shared machine hits
    them alike); keep the fastest run of each.

    Without ``configs``: the reference sampler with ``num_flow_steps`` steps. Results are ordered by acc_ratio, then
    config.
    """
    configs = list(configs or [BenchConfig.of(REFERENCE, num_flow_steps=num_flow_steps)])
    base = dict(height=height, width=width, cfg_scale=cfg_scale, decode=False)
    results = []
    for acc in acc_ratios:
        warm = {}
        for i, cfg in enumerate(configs):
            if warmup and (i == 0 or cfg.compiled):
                t0 = time.perf_counter()
                _generate(pipe, prompts, acc, base, cfg, seed)
                warm[cfg] = time.perf_counter() - t0
        best: dict[BenchConfig, BenchResult] = {}
        for _ in range(max(1, repeats)):
            for cfg in configs:
                r = _one_run(pipe, prompts, acc, base, cfg, seed)
                if cfg not in best or r.seconds < best[cfg].seconds:
                    best[cfg] = r
        for cfg in configs:
            best[cfg].warmup_s = warm.get(cfg, 0.0) if cfg.compiled else 0.0
            results.append(best[cfg])
    return results


def _generate(pipe, prompts, acc, base, cfg: BenchConfig, seed):
    return pipe.generate(list(prompts), acc_ratio=acc, generator=torch.Generator().manual_seed(seed), **base,
                         **cfg.kwargs)


def _one_run(pipe, prompts, acc, base, cfg: BenchConfig, seed) -> BenchResult:
    """One timed generation; with the LLM / flow-head split on the eager path."""
    llm_t, head_t = [0.0], [0.0]
    mod = getattr(torch, pipe.device.type, None)
    if pipe.device.type != "cpu" and mod is not None and hasattr(mod, "reset_peak_memory_stats"):
        mod.reset_peak_memory_stats(pipe.device)
    split = not cfg.compiled  # wrapping the forwards would break the compiled graphs
    with contextlib.ExitStack() as stack:
        if split:
            stack.enter_context(_timed(pipe.ar.llm, llm_t))
            stack.enter_context(_timed(pipe.ar.flow_head, head_t, HEAD_METHODS))
        _sync(pipe.device)
        t0, c0 = time.perf_counter(), time.process_time()
        out = _generate(pipe, prompts, acc, base, cfg, seed)
        _sync(pipe.device)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = (base["height"] // pipe.latent_stride) * (base["width"] // pipe.latent_stride)
    return BenchResult(acc, n, total, llm_t[0] if split else None, head_t[0] if split else None,
                       _peak_mb(pipe.device), cfg.label, cfg.nfe, len(out.groups),
                       cpu_s=cpu if pipe.device.type == "cpu" else None)


def weight_bytes(pipe) -> tuple[int, int]:
    """Bytes of weights one LLM call and one flow-head evaluation read (the token embedding table excluded: a call
    reads only the rows it looks up)."""
    emb = pipe.ar.llm.get_input_embeddings().weight
    llm = sum(p.numel() * p.element_size() for p in pipe.ar.llm.parameters() if p is not emb)
    head = sum(p.numel() * p.element_size() for p in pipe.ar.flow_head.parameters())
    return llm, head


def floor_seconds(pipe, result: BenchResult, bandwidth_gbs: float) -> float:
    """The memory-bandwidth floor of a run: every LLM call and every flow-head evaluation reads its weights once."""
    llm, head = weight_bytes(pipe)
    return result.calls * (llm + result.nfe * head) / (bandwidth_gbs * 1e9)


def _ratio(base: BenchResult, r: BenchResult) -> str:
    cpu = f" (cpu time {base.cpu_s / r.cpu_s:.2f}x)" if r.cpu_s and base.cpu_s else ""
    return f"{base.seconds / r.seconds:.2f}x{cpu}"


def speedups(results: Sequence[BenchResult], baseline: str = REFERENCE) -> list[str]:
    """Per acc_ratio: each config's time ratio to the baseline config measured in the same run."""
    lines = []
    for acc in dict.fromkeys(r.acc_ratio for r in results):
        rows = [r for r in results if r.acc_ratio == acc]
        base = next((r for r in rows if r.label == baseline), None)
        if base is None or len(rows) < 2:
            continue
        lines.append(f"acc_ratio={acc:>3}: " + ", ".join(f"{r.label} {_ratio(base, r)}" for r in rows if r is not base)
                     + f" vs {baseline}")
    return lines


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
