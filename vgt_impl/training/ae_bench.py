"""Training-step figures of the autoencoder tasks: samples/s and peak memory of one VGT-AE / DC-AE optimizer step.

Random weights (nothing to download): a VGT-AE of a named size (the Qwen2.5-VL vision tower layout; ``1.5b`` has the
released Qwen2.5-VL-3B tower and the official DC-AE f32c32 decoder) or a DC-AE config. A step is what the loop runs:
the generator phase (forward, backward, AdamW) and, with ``gan``, the discriminator phase. Timed after warm-up
steps, with the device synchronised around the timed region only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..autoencoder import DCAE_F32C32, VGTAutoencoder
from ..bench import _peak_mb, _sync
from ..config import AEConfig
from .dcae import DCAE_SMALL, DCAEConfig, DCAETrainer, build_dcae
from .vgtae import VGTAETrainer, stage_config

# Random-weight VGT-AE sizes: the Qwen2.5-VL vision towers of `vgt bench-train` (output width = the LLM width of the
# same size in `vgt bench`) and a DC-AE decoder; "1.5b" has the released Qwen2.5-VL-3B tower and the official
# DC-AE f32c32 decoder; "tiny" is for tests.
_TINY_DECODER = dict(DCAE_SMALL, encoder_block_out_channels=[8, 8, 8, 16, 16, 32],
                     decoder_block_out_channels=[8, 8, 8, 16, 16, 32], attention_head_dim=8)
_TINY_TOWER = dict(depth=2, hidden_size=48, num_heads=3, intermediate_size=96, fullatt_block_indexes=[1])
DECODERS = {"tiny": _TINY_DECODER, "small": DCAE_SMALL, "medium": DCAE_SMALL, "1.5b": DCAE_F32C32}


def _tower(size: str) -> tuple[dict[str, Any], int]:
    """(Qwen2.5-VL vision config kwargs, output width) of a named size."""
    from ..bench import SIZES
    from .bench_train import AE_SIZES as TOWERS

    if size == "tiny":
        return _TINY_TOWER, 64
    if size not in TOWERS:
        raise ValueError(f"VGT-AE size {size!r}: expected one of {sorted(DECODERS)}")
    return TOWERS[size], SIZES[size]["hidden"]


def random_vgtae(size: str = "small", *, device: str | torch.device = "cpu") -> VGTAutoencoder:
    """A random-weight Qwen2.5-VL-layout VGT-AE of a named size (fp32 master weights, train mode)."""
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig

    from ..backbones.common import BaseConfig

    tower, out = _tower(size)
    vision = Qwen2_5_VLVisionConfig(out_hidden_size=out, window_size=112, patch_size=14, spatial_merge_size=2,
                                    temporal_patch_size=2, **tower)
    base = BaseConfig("qwen2_5_vl", vision, None, extra={"llm_hidden_size": out})
    cfg = AEConfig(family="qwen2_5_vl", hidden_size=out, latent_stride=28, decoder_config=dict(DECODERS[size]))
    with torch.device(device):
        ae = VGTAutoencoder(cfg, base)
    return ae.train()


@dataclass
class StepFigures:
    what: str
    batch: int
    image_size: int
    seconds: float  # per optimizer step (all phases)
    peak_mb: float  # peak device memory (CUDA) or peak process RSS (CPU)

    def row(self) -> str:
        return (f"{self.what:<44} batch {self.batch:>3} @ {self.image_size:>3}px  {self.seconds * 1000:9.1f} ms/step  "
                f"{self.batch / self.seconds:8.2f} samples/s  peak {self.peak_mb:9.0f} MB")


def time_steps(trainer, images: torch.Tensor, *, steps: int, warmup: int, dtype: torch.dtype | None,
               lr: float = 1e-4, clock: str = "wall") -> tuple[float, float]:
    """Mean seconds per step (generator + discriminator phases, AdamW) and peak memory in MB.

    ``clock="cpu"``: this process's CPU time (with one thread, the compute time even on a busy host)."""
    device = images.device
    gen_params = [p for n, p in trainer.named_parameters() if p.requires_grad and not n.startswith("discriminator.")]
    opt_g = torch.optim.AdamW(gen_params, lr=lr, betas=(0.9, 0.95))
    opt_d = torch.optim.AdamW(trainer.discriminator.parameters(), lr=lr) if trainer.discriminator is not None else None
    amp = torch.autocast(device.type, dtype=dtype) if dtype is not None else torch.autocast(device.type, enabled=False)

    def step() -> None:
        with amp:
            loss, _ = trainer.generator_loss(images, step=0)
        loss.backward()
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)
        if opt_d is not None:
            with amp:
                d_loss, _ = trainer.discriminator_loss(images, step=0)
            d_loss.backward()
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    mod = getattr(torch, device.type, None)
    if hasattr(mod, "reset_peak_memory_stats"):
        mod.reset_peak_memory_stats(device)
    timer = time.process_time if clock == "cpu" else time.perf_counter
    _sync(device)
    t0 = timer()
    for _ in range(steps):
        step()
    _sync(device)
    return (timer() - t0) / steps, _peak_mb(device)


def bench_vgtae(size: str = "small", *, batch: int = 4, image_size: int = 224, stage: str = "2", gan: bool = True,
                checkpointing: bool = False, steps: int = 3, warmup: int = 1, device: str | torch.device = "cpu",
                dtype: torch.dtype | None = None, clock: str = "wall") -> StepFigures:
    """One VGT-AE training step (stage 1 / 2 / paper; with or without the GAN phase) on random weights and images."""
    device = torch.device(device)
    cfg = stage_config(stage)
    cfg.loss.gan.start_step = 0 if gan else -1
    trainer = VGTAETrainer(random_vgtae(size, device=device), cfg).to(device).train()
    if checkpointing:
        from .ae_tasks import AETask

        AETask.enable_gradient_checkpointing(trainer)
    images = torch.rand(batch, 3, image_size, image_size, device=device) * 2 - 1
    sec, peak = time_steps(trainer, images, steps=steps, warmup=warmup, dtype=dtype, clock=clock)
    name = f"VGT-AE {size} stage {stage}{' + GAN' if gan else ''}{' + ckpt' if checkpointing else ''}"
    return StepFigures(name, batch, image_size, sec, peak)


def bench_dcae(model: Any = None, *, batch: int = 8, crop: int = 64, gan: bool = False, steps: int = 3,
               warmup: int = 1, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
               clock: str = "wall") -> StepFigures:
    """One DC-AE training step on ``crop`` px crops (random weights; ``model`` as ``vgt train dcae`` takes it)."""
    device = torch.device(device)
    cfg = DCAEConfig(model=model, crop_size=crop)
    cfg.loss.gan.start_step = 0 if gan else -1
    trainer = DCAETrainer(build_dcae(model), cfg).to(device).train()
    images = torch.rand(batch, 3, crop, crop, device=device) * 2 - 1
    sec, peak = time_steps(trainer, images, steps=steps, warmup=warmup, dtype=dtype, clock=clock)
    n = sum(p.numel() for p in trainer.dcae.parameters()) / 1e6
    return StepFigures(f"DC-AE {n:.1f}M params{' + GAN' if gan else ''}", batch, crop, sec, peak)


AE_SETTINGS = "stage1,stage2+gan,stage2+gan+ckpt"
DCAE_SETTINGS = "mse,mse+gan"
PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": None}


def run_bench_ae(task: str, *, size: str = "small", image_size: int = 224, batch: int = 8, steps: int = 3,
                 device: torch.device, precision: str = "no", settings: str | None = None,
                 clock: str = "wall") -> Iterator[str]:
    """`vgt bench-train --task ae|dcae` lines: a header, then one row per setting.

    ae settings: ``stage1`` / ``stage2`` / ``paper`` with ``+gan`` (discriminator phase) and ``+ckpt`` (gradient
    checkpointing of the vision blocks); dcae settings: ``mse`` / ``mse+gan`` on ``image_size`` px crops.
    """
    dtype = PRECISIONS[precision]
    dec = DECODERS[size]["decoder_block_out_channels"]
    what = f"VGT-AE '{size}' {_tower(size)[0]}, decoder {dec}" if task == "ae" else f"DC-AE '{size}' channels {dec}"
    yield (f"{task} train step: random weights, {what}"
           f"; batch {batch} at {image_size}px; device {device}, precision {precision}, AdamW; torch {torch.__version__},"
           f" {torch.get_num_threads()} threads; {steps} timed steps after 1 warm-up, {clock} clock")
    for name in (x.strip() for x in (settings or (AE_SETTINGS if task == "ae" else DCAE_SETTINGS)).split(",")):
        parts = name.split("+")
        if task == "ae":
            if parts[0] not in ("stage1", "stage2", "paper") or any(p not in ("gan", "ckpt") for p in parts[1:]):
                raise ValueError(f"ae setting {name!r}: stage1|stage2|paper with optional +gan, +ckpt")
            fig = bench_vgtae(size, batch=batch, image_size=image_size, stage=parts[0].removeprefix("stage"),
                              gan="gan" in parts, checkpointing="ckpt" in parts, steps=steps, device=device,
                              dtype=dtype, clock=clock)
        else:
            if parts[0] != "mse" or any(p != "gan" for p in parts[1:]):
                raise ValueError(f"dcae setting {name!r}: mse with optional +gan")
            fig = bench_dcae(DECODERS[size], batch=batch, crop=image_size, gan="gan" in parts, steps=steps,
                             device=device, dtype=dtype, clock=clock)
        yield fig.row()


def run_bench_train_ae(args) -> Iterator[str]:
    """``vgt bench-train --task ae|dcae`` (the parser's ``--random``, ``--size``, ``--batch``, ``--steps``, ``--device``,
    ``--precision``, ``--settings``)."""
    from ..cli import _device

    if args.random not in DECODERS:
        raise ValueError(f"--random {args.random!r}: expected one of {sorted(DECODERS)}")
    device = _device(args.device)
    precision = args.precision or ("bf16" if device.type != "cpu" else "no")
    yield from run_bench_ae(args.task, size=args.random, image_size=args.size, batch=args.batch, steps=args.steps,
                            device=device, precision=precision, settings=args.settings,
                            clock=getattr(args, "clock", "wall"))
