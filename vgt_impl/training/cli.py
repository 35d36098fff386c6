"""``vgt train``, ``vgt cache-latents`` and ``vgt bench-train`` (registered into the ``vgt`` command by ``cli.py``).

Every command takes ``--config FILE|PRESET`` and any number of ``key=value`` overrides (``loop.max_steps=100``).
Multi-GPU: ``accelerate launch --config_file <ddp|fsdp2|deepspeed_zero2>.yaml -m vgt_impl.cli train ar ...``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def add_parsers(sub) -> None:
    from .config import ACCELERATE_DIR, preset_names

    presets = ", ".join(preset_names())
    p = sub.add_parser("train", help="train a VGT task: vgt train ar|ae|dcae --config FILE [key=value ...]",
                       description=f"Presets: {presets}. Accelerate configs (multi-GPU): {ACCELERATE_DIR}")
    p.add_argument("task", help="registered task: ar (VGT-AR), ae (VGT-AE), dcae (a DC-AE pixel decoder)")
    p.add_argument("--config", required=True, help="YAML/JSON config file or preset name")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=cmd_train, accepts_overrides=True)

    p = sub.add_parser("cache-latents", help="encode a dataset once with the frozen VGT-AE (AR training reads latents)")
    p.add_argument("--config", required=True, help="the AR run config (its data and model sections are used)")
    p.add_argument("--out", required=True, help="cache folder to write (then train with data.latent_cache=<out>)")
    p.add_argument("--batch-size", type=int, default=32, help="images encoded per VGT-AE call")
    p.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"], help="storage dtype of the latents")
    p.add_argument("--shard-size", type=int, default=4096, help="latents per safetensors shard")
    p.set_defaults(func=cmd_cache_latents, accepts_overrides=True)

    p = sub.add_parser("bench-train", help="samples/s, tokens/s and peak memory of one training step (ar, ae, dcae)")
    p.add_argument("--task", default="ar", choices=["ar", "ae", "dcae"],
                   help="ar: VGT-AR; ae: VGT-AE (generator + discriminator phases); dcae: DC-AE on --size px crops")
    p.add_argument("--random", default="small", help="random-weight size: small, medium, 1.5b (ae / dcae: also tiny)")
    p.add_argument("--family", default="qwen2_5_vl", choices=["qwen2_5_vl", "internvl3"],
                   help="VLM family of the random-weight model")
    p.add_argument("--size", type=int, default=448, help="image size in pixels (tokens = (size/28)^2)")
    p.add_argument("--batch", type=int, default=8, help="images per training step")
    p.add_argument("--text-tokens", type=int, default=64, help="prompt length")
    p.add_argument("--steps", type=int, default=3, help="timed steps per setting (after one warm-up)")
    p.add_argument("--device", help="default: the available accelerator")
    p.add_argument("--precision", default=None, choices=["bf16", "fp16", "no"], help="default: bf16 on GPUs, no on CPU")
    p.add_argument("--settings", default=None,
                   help="comma list. ar (default latents,latents+ckpt,pixels): latents (cached latents), pixels "
                        "(VGT-AE encode in the step), +ckpt (gradient checkpointing), +k4 (flow_batch_mul 4). ae "
                        "(default stage1,stage2+gan,stage2+gan+ckpt): stage1|stage2|paper, +gan, +ckpt. dcae "
                        "(default mse,mse+gan): mse, +gan")
    p.add_argument("--repeats", type=int, default=1, help="rounds over the settings; the fastest round is kept")
    p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="wall time, or this process's CPU time (with --threads 1: robust on a busy CPU host)")
    p.set_defaults(func=cmd_bench_train, accepts_overrides=False)


def _setup_logging() -> None:
    import os

    main_process = os.environ.get("RANK", "0") == "0"  # other processes log warnings and errors only
    logging.basicConfig(level=logging.INFO if main_process else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("accelerate", "torch", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_train(args) -> int:
    import yaml

    from .config import load_run_config, to_plain

    cfg = load_run_config(args.config, args.overrides, task=args.task)
    if args.print_config:
        print(yaml.safe_dump(to_plain(cfg), sort_keys=False), end="")
        return 0
    _setup_logging()
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizers in DataLoader worker processes
    from .loop import Trainer

    trainer = Trainer(cfg)
    out = trainer.train()
    main_process = trainer.accelerator.is_main_process
    trainer.close()
    if main_process:
        print(f"done: {trainer.step} steps; run directory {trainer.run_dir}" + (f"; model folder {out}" if out else ""))
    return 0


def cmd_cache_latents(args) -> int:
    from .config import load_run_config
    from .latent_cache import build_cache

    _setup_logging()
    cfg = load_run_config(args.config, args.overrides, task="ar")
    index = build_cache(cfg, Path(args.out), batch_size=args.batch_size, dtype=args.dtype, shard_size=args.shard_size)
    if index is not None:
        print(f"wrote {index['count']} latents {index['latent_shape']} in {len(index['shards'])} shards to {args.out} "
              f"({index['seconds']:.1f} s, {index['count'] / max(index['seconds'], 1e-9):.1f} images/s)")
    return 0


def cmd_bench_train(args) -> int:
    import torch

    from .ae_bench import run_bench_train_ae
    from .bench_train import run_bench_train

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.task == "ar":
        args.settings = args.settings or "latents,latents+ckpt,pixels"
    for line in run_bench_train(args) if args.task == "ar" else run_bench_train_ae(args):
        print(line, flush=True)
    return 0


def split_overrides(extra: list[str]) -> list[str]:
    """Unparsed command-line words -> overrides; anything that is not key=value is an error."""
    bad = [e for e in extra if "=" not in e or e.startswith("-")]
    if bad:
        raise argparse.ArgumentTypeError(f"unrecognized arguments: {' '.join(bad)} (overrides are key=value)")
    return extra
