"""``vgt bench-train``: speed and memory of one VGT-AR training step (forward, backward, AdamW) on random weights.

Settings (``--settings``, comma separated): ``latents`` (a latent-cache batch), ``pixels`` (images encoded by a frozen
random VGT-AE inside the step, as without a cache), with ``+ckpt`` (gradient checkpointing of the LLM blocks) and
``+k4`` (4 flow-head draws per token). Each setting: one warm-up step, then ``--steps`` timed steps, synchronised.
``--clock cpu`` times the process's CPU time instead of the wall clock: with ``--threads 1`` it is the compute time even
on a shared, oversubscribed host. Peak memory: the device's peak allocation on GPUs, the process's peak RSS on the CPU (monotonic: read it as an upper
bound for the settings after the first).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch

from ..bench import SIZES, ByteTokenizer, _peak_mb, _sync, random_pipeline

# A random VGT-AE encoder per size: the Qwen2.5-VL vision tower shape ("1.5b": the real 3B model's 32-block ViT).
AE_SIZES = {
    "small": dict(depth=4, hidden_size=256, num_heads=4, intermediate_size=512, fullatt_block_indexes=[3]),
    "medium": dict(depth=12, hidden_size=640, num_heads=10, intermediate_size=1708, fullatt_block_indexes=[5, 11]),
    "1.5b": dict(depth=32, hidden_size=1280, num_heads=16, intermediate_size=3420,
                 fullatt_block_indexes=[7, 15, 23, 31]),
}
TINY_DECODER = {"in_channels": 3, "latent_channels": 32, "attention_head_dim": 8,
                "encoder_block_types": ["ResBlock"] * 6, "decoder_block_types": ["ResBlock"] * 6,
                "encoder_block_out_channels": [8] * 6, "decoder_block_out_channels": [8] * 6,
                "encoder_layers_per_block": [1] * 6, "decoder_layers_per_block": [1] * 6,
                "encoder_qkv_multiscales": [[]] * 6, "decoder_qkv_multiscales": [[]] * 6,
                "upsample_block_type": "interpolate", "downsample_block_type": "Conv", "decoder_norm_types": "rms_norm",
                "decoder_act_fns": "silu"}


def random_ae(size: str, out_hidden: int, device: torch.device):
    """A frozen random VGT-AE (Qwen2.5-VL vision tower of ``size``; a tiny decoder, unused by encode)."""
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig

    from ..autoencoder import VGTAutoencoder
    from ..backbones.common import BaseConfig
    from ..config import AEConfig

    vision = Qwen2_5_VLVisionConfig(out_hidden_size=out_hidden, window_size=112, patch_size=14, spatial_merge_size=2,
                                    temporal_patch_size=2, **AE_SIZES[size])
    base = BaseConfig("qwen2_5_vl", vision, None, extra={"llm_hidden_size": out_hidden})
    cfg = AEConfig(family="qwen2_5_vl", hidden_size=out_hidden, latent_stride=28, decoder_config=dict(TINY_DECODER))
    ae = VGTAutoencoder(cfg, base).to(device)
    return ae.eval().requires_grad_(False)


def _settings(spec: str) -> Iterator[tuple[str, bool, bool, int]]:
    for name in (s.strip() for s in spec.split(",") if s.strip()):
        parts = name.split("+")
        if parts[0] not in ("latents", "pixels") or any(p not in ("ckpt", "k4") for p in parts[1:]):
            raise ValueError(f"bench-train setting {name!r}: latents|pixels with optional +ckpt, +k4")
        yield name, parts[0] == "pixels", "ckpt" in parts, 4 if "k4" in parts else 1


def run_bench_train(args) -> Iterator[str]:
    from ..cli import _device
    from .ar_task import ARTask, ARTaskConfig

    if args.random not in SIZES:
        raise ValueError(f"--random {args.random!r}: expected one of {sorted(SIZES)}")
    if args.size % 28:
        raise ValueError(f"--size {args.size} must be a multiple of 28")
    device = _device(args.device)
    precision = args.precision or ("bf16" if device.type != "cpu" else "no")
    settings = list(_settings(args.settings))
    ar = random_pipeline(args.random, family=args.family, device=device, dtype=torch.float32).ar
    ae = random_ae(args.random, ar.config.hidden_size, device) if any(s[1] for s in settings) else None
    task = ARTask(ARTaskConfig(sample_prompts=[]), ar, ByteTokenizer(), ae).to(device).train()
    h = args.size // 28
    trainable = sum(p.numel() for p in task.parameters() if p.requires_grad)
    yield (f"VGT-AR train step: random-weight '{args.random}' {SIZES[args.random]} ({trainable / 1e6:.1f}M trainable), "
           f"{args.family}; {args.size}x{args.size} px = {h * h} image tokens, {args.text_tokens} text tokens, "
           f"batch {args.batch}; device {device}, precision {precision}, AdamW; torch {torch.__version__}, "
           f"{torch.get_num_threads()} threads; {args.steps} timed steps after 1 warm-up, {args.clock} clock, best of "
           f"{args.repeats} interleaved rounds")
    best: dict[str, tuple[float, float]] = {}
    for _ in range(max(1, args.repeats)):  # settings interleaved per round, the fastest round kept (noisy hosts)
        for name, pixels, ckpt, k in settings:
            seconds, peak = _time_setting(task, args, device, precision, pixels, ckpt, k)
            old = best.get(name)
            best[name] = (min(seconds, old[0]), old[1]) if old else (seconds, peak)
    seq = args.text_tokens + task.start_ids.numel() + 2 * h * h
    for name, (seconds, peak) in best.items():
        yield (f"{name:<16} {args.batch / seconds:8.2f} samples/s  {args.batch * h * h / seconds:10.0f} image tok/s  "
               f"{args.batch * seq / seconds:10.0f} seq tok/s  {1000 * seconds:9.1f} ms/step  peak {peak:9.0f} MB")
    first = best[settings[0][0]][0]
    yield "relative to " + settings[0][0] + ": " + ", ".join(f"{n} {first / s:.2f}x" for n, (s, _) in best.items())


def _batch(args, device, pixels: bool, h: int) -> dict:
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(0, 256, (args.batch, args.text_tokens), generator=g),
             "attention_mask": torch.ones(args.batch, args.text_tokens, dtype=torch.bool)}
    if pixels:
        batch["pixels"] = torch.rand(args.batch, 3, args.size, args.size, generator=g) * 2 - 1
    else:
        z = torch.randn(args.batch, h, h, 32, generator=g)
        batch["latents"] = torch.nn.functional.layer_norm(z, (32,)).permute(0, 3, 1, 2).contiguous()
    return {k: v.to(device) for k, v in batch.items()}


def _time_setting(task, args, device, precision, pixels, ckpt, k) -> tuple[float, float]:
    if ckpt:
        task.enable_gradient_checkpointing()
    else:
        task.ar.llm.gradient_checkpointing_disable()
    task.cfg.flow_batch_mul = k
    params = [p for p in task.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda" or None)
    batch = _batch(args, device, pixels, args.size // 28)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    amp = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    mod = getattr(torch, device.type, None)

    def step():
        with amp:
            loss, _ = task.loss("main", batch, 0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    if device.type != "cpu" and hasattr(mod, "reset_peak_memory_stats"):
        mod.reset_peak_memory_stats(device)
    clock = time.process_time if getattr(args, "clock", "wall") == "cpu" else time.perf_counter
    _sync(device)
    t0 = clock()
    for _ in range(max(1, args.steps)):
        step()
    _sync(device)
    seconds = (clock() - t0) / max(1, args.steps)
    return seconds, _peak_mb(device)
