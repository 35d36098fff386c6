"""The ``vgt`` command: generate, reconstruct, inspect, convert, bench, download, demo, eval.

Each subcommand is one small function registered in ``COMMANDS``; library code never prints, this module does.
The training commands (train, cache-latents, bench-train) live in ``training/cli.py``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------------------------------------- helpers
def _device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    acc = getattr(torch, "accelerator", None)
    if acc is not None and acc.is_available():
        return acc.current_accelerator()
    return torch.device("cpu")


def _dtype(name: str | None, device: torch.device) -> torch.dtype:
    from .pipeline import default_dtype

    return DTYPES[name] if name else default_dtype(device)


def to_pil(images: torch.Tensor):
    """[B, 3, H, W] in [-1, 1] -> list of PIL images (the reference's rounding: 127.5 x + 128, clamped)."""
    from PIL import Image

    arr = (images.float().cpu() * 127.5 + 128.0).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arr]


def load_image(path: str | Path, fit: str, stride: int = 28) -> torch.Tensor:
    """An image file -> [1, 3, H, W] in [-1, 1] with H, W multiples of ``stride`` (``fit``: crop, resize or error)."""
    import numpy as np
    from PIL import Image

    img = Image.open(path).convert("RGB")
    w, h = img.size
    tw, th = max(stride, w // stride * stride), max(stride, h // stride * stride)
    if (tw, th) != (w, h):
        if fit == "error":
            raise SystemExit(f"{path}: {w}x{h} is not a multiple of {stride} (the VGT-AE's latent stride); "
                             f"use --fit crop or --fit resize")
        if fit == "crop":
            left, top = (w - tw) // 2, (h - th) // 2
            img = img.crop((left, top, left + tw, top + th))
        else:
            img = img.resize((tw, th), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 127.5 - 1.0
    return x.unsqueeze(0)


def _progress(total_hint: str):
    from tqdm.auto import tqdm

    bar = {"bar": None}

    def callback(step: int, total: int, preview) -> None:
        if bar["bar"] is None:
            bar["bar"] = tqdm(total=total, desc=total_hint, unit="group")
        bar["bar"].update(step - bar["bar"].n)
        if step == total:
            bar["bar"].close()
            bar["bar"] = None

    return callback


# ---------------------------------------------------------------------------------------------------------- commands
def cmd_inspect(args) -> int:
    from .backbones import display_name, family_names, get_family
    from .checkpoints import converted_config, detect_variant, load_checkpoint_file, map_ar_state_dict

    sd, info = load_checkpoint_file(args.file, with_info=True)
    v = detect_variant(sd)
    cfg = converted_config(args.file)
    cfg = cfg if isinstance(cfg, dict) else {}
    if v.family == "unknown":
        v.family = cfg.get("family", v.family)
    print(f"file:      {args.file}")
    print(f"kind:      {'VGT-AR (autoregressive generator)' if 'ar' in v.kind else 'VGT-AE (autoencoder)'}"
          f"{' [converted]' if v.kind.startswith('converted') else ''}")
    print(f"family:    {display_name(v.family)} ({v.family})")
    print(f"weights:   {info.get('source')}" + (f", EMA steps {info['ema_steps']}" if "ema_steps" in info else ""))
    dtypes = sorted({str(t.dtype).replace('torch.', '') for t in sd.values()})
    groups: dict[str, int] = {}
    for k, t in sd.items():
        groups[k.split(".")[0]] = groups.get(k.split(".")[0], 0) + t.numel()
    print(f"dtypes:    {', '.join(dtypes)};  parameters: {sum(groups.values()) / 1e6:.1f}M")
    for g, n in sorted(groups.items(), key=lambda x: -x[1]):
        print(f"  {g:<24} {n / 1e6:10.2f}M")
    for name in ("llm_hidden", "llm_layers", "vocab_size", "head_dim", "head_layers", "query_grid", "latent_channels",
                 "vision_hidden", "vision_layers", "ae_width", "has_teacher", "has_embedded_ae"):
        value = getattr(v, name)
        if value not in (None, False):
            print(f"{name + ':':<18}{value}")
    if v.kind == "ar":
        _, _, dropped = map_ar_state_dict(sd, v.family)
        for group, reason in dropped.items():
            print(f"unused:    {group} ({reason})")
    if v.has_teacher:
        print("unused:    teacher.*, teacher_mlp1.* (distillation teacher, unused at inference)")
    if "latent_stride" in cfg:
        print(f"{'latent_stride:':<18}{cfg['latent_stride']} px per token")
    if v.family in family_names():
        print(f"needs:     a base model folder: {get_family(v.family).base_models}")
    return 0


def cmd_convert(args) -> int:
    from .backbones import get_family
    from .checkpoints import detect_variant, load_checkpoint_file, map_ar_state_dict, save_converted

    sd = load_checkpoint_file(args.file, prefer_ema=args.state_dict == "ema")
    v = detect_variant(sd)
    if v.kind.startswith("converted"):
        raise SystemExit(f"{args.file} is already in the converted layout")
    fam = get_family(v.family)
    if v.kind == "ae":
        out, dropped = fam.map_ae_state_dict(sd)
    else:
        ar, ae, dropped = map_ar_state_dict(sd, v.family)
        ae_mapped, ae_dropped = fam.map_ae_state_dict(ae) if ae else ({}, {})
        out = dict(ar, **{"ae." + k: t for k, t in ae_mapped.items()})
        dropped = dict(dropped, **{"vgt_ae." + k: r for k, r in ae_dropped.items()})
    config = {"format": "comfyui-vgt/1", "kind": v.kind, "family": v.family, "variant": v.to_dict(),
              "source": Path(args.file).name, "state_dict": args.state_dict}
    if fam.official_latent_stride is not None:  # otherwise the base folder's stride applies when it is loaded
        config["latent_stride"] = fam.official_latent_stride
    path = save_converted(args.out, out, config)
    print(f"wrote {path} ({len(out)} tensors) and {path.with_suffix('.json')}")
    for group, reason in dropped.items():
        print(f"dropped {group}: {reason}")
    return 0


def _load_pipeline(args):
    from .autoencoder import VGTAutoencoder
    from .pipeline import VGTPipeline

    device = _device(args.device)
    dtype = _dtype(args.dtype, device)
    ae = None
    if args.ae:
        ae = VGTAutoencoder.from_pretrained(args.ae, base_model=args.ae_base_model or args.base_model,
                                            decoder_config=args.decoder, dtype=dtype, device=device)
    return VGTPipeline.from_pretrained(args.ar, ae=ae, base_model=args.base_model, ae_base_model=args.ae_base_model,
                                       decoder_config=args.decoder, dtype=dtype, device=device,
                                       attn_implementation=args.attn)


def use_builtin_model(args) -> None:
    """No --ar: the built-in vgt-demo model (shipped in the package), with its own base folder."""
    if args.ar is None:
        if args.base_model is not None or args.ae is not None:
            raise ValueError("--base-model / --ae need --ar (without --ar the built-in vgt-demo model is used)")
        from .demo.model_folder import demo_dir

        args.ar = str(demo_dir())


def default_size(ar: str) -> int:
    """The image size a model folder recommends (the demo model: 224), else 448 (the official models)."""
    import json

    info = Path(ar) / "vgt_demo.json"
    return int(json.loads(info.read_text()).get("size", 448)) if info.is_file() else 448


def cmd_generate(args) -> int:
    from .backbones import latent_stride_of

    use_builtin_model(args)
    size = args.size or default_size(args.ar)
    height = args.height or size
    width = args.width or size
    from .loading import default_base, resolve_model_path

    base = default_base(f"--ar {args.ar}", args.base_model, resolve_model_path(args.ar)[1])
    s = latent_stride_of(base)  # config.json only: fail before loading any weights
    for name, v in (("height", height), ("width", width)):
        if v < s or v % s:
            raise ValueError(f"--{name} {v} is not a multiple of {s}: use {max(s, v // s * s)} or {(v // s + 1) * s} "
                             f"(this model makes one latent token per {s}x{s} px)")
    pipe = _load_pipeline(args)
    gen = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
    out = pipe.generate(
        args.prompts, negative_prompts=args.negative, height=height, width=width,
        num_images_per_prompt=args.num_images, cfg_scale=args.cfg, cfg_schedule=args.cfg_schedule,
        num_flow_steps=args.steps, acc_ratio=args.acc_ratio, order=args.order, sampler=args.sampler,
        mode=args.mode, generator=gen, callback=_progress("QueryAR"),
    )
    paths = _output_paths(args.out, len(out.images))
    for img, path in zip(to_pil(out.images), paths):
        img.save(path)
        print(f"wrote {path}")
    return 0


def _output_paths(out: str, n: int) -> list[Path]:
    p = Path(out)
    if n == 1 and p.suffix:
        p.parent.mkdir(parents=True, exist_ok=True)
        return [p]
    stem, suffix = (p.with_suffix(""), p.suffix) if p.suffix else (p / "vgt", ".png")
    stem.parent.mkdir(parents=True, exist_ok=True)
    return [Path(f"{stem}_{i:03d}{suffix}") for i in range(n)]


def cmd_reconstruct(args) -> int:
    from PIL import Image

    from .autoencoder import VGTAutoencoder

    device = _device(args.device)
    ae = VGTAutoencoder.from_pretrained(args.ae, base_model=args.base_model, decoder_config=args.decoder,
                                        dtype=_dtype(args.dtype, device), device=device)
    for path in args.images:
        x = load_image(path, args.fit, ae.stride)
        rec = ae.decode(ae.encode(x))
        a, b = to_pil(x)[0], to_pil(rec)[0]
        out = Path(args.out_dir) / f"{Path(path).stem}_vgt_recon.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        if args.side_by_side:
            canvas = Image.new("RGB", (a.width * 2, a.height))
            canvas.paste(a, (0, 0))
            canvas.paste(b, (a.width, 0))
            b = canvas
        b.save(out)
        mse = float(((rec.cpu() - x) ** 2).mean())
        print(f"wrote {out}  (PSNR {10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-12))):.2f} dB)")
    return 0


def cmd_bench(args) -> int:
    from .bench import SIZES, random_pipeline, run_bench

    device = _device(args.device)
    if args.ar:
        pipe = _load_pipeline(args)
        label = f"checkpoint {args.ar}"
    else:
        pipe = random_pipeline(args.random, dtype=_dtype(args.dtype, device), device=device)
        label = f"random-weight model '{args.random}' {SIZES[args.random]}"
    acc = [int(a) for a in args.acc_ratios.split(",")]
    print(f"QueryAR bench: {label}; {args.size}x{args.size} px = {(args.size // pipe.latent_stride) ** 2} tokens, "
          f"batch {args.batch}, "
          f"{args.steps} flow steps, cfg {args.cfg}, best of {args.repeats}; device {pipe.device}, dtype {pipe.dtype}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    results = run_bench(pipe, prompts=["a red apple on a wooden table"] * args.batch, height=args.size, width=args.size,
                        acc_ratios=acc, num_flow_steps=args.steps, cfg_scale=args.cfg, repeats=args.repeats)
    for r in results:
        print(r.row(args.batch))
    base = results[0].seconds
    print("speed-up vs acc_ratio " + str(results[0].acc_ratio) + ": " +
          ", ".join(f"{r.acc_ratio}: {base / r.seconds:.1f}x" for r in results))
    return 0


def cmd_download(args) -> int:
    from .hub import REPOS, download, plan

    if args.list:
        for name, (repo, folder, _) in REPOS.items():
            print(f"{name:<26} {repo:<46} -> {folder}")
        return 0
    if not args.names:
        raise SystemExit("name at least one model (see vgt download --list)")
    todo = plan(args.names, not args.no_base)
    print("downloading: " + ", ".join(f"{n} ({REPOS[n][0]})" for n in todo))
    for path in download(args.names, args.dir, with_bases=not args.no_base):
        print(f"  -> {path}")
    return 0


# ---------------------------------------------------------------------------------------------------------- parser
def _model_args(p: argparse.ArgumentParser, ar_required: bool) -> None:
    p.add_argument("--ar", required=ar_required, help="VGT-AR checkpoint (.pth or converted .safetensors) or model "
                   "folder" + ("" if ar_required else "; default: the built-in vgt-demo model"))
    p.add_argument("--base-model", help="base VLM folder (config.json + tokenizer); default: the --ar model folder")
    p.add_argument("--ae", help="VGT-AE checkpoint (default: the one embedded in the AR checkpoint)")
    p.add_argument("--ae-base-model", help="base VLM folder of the VGT-AE encoder (InternVL3: the 1B model)")
    p.add_argument("--decoder", help="DC-AE folder or config.json (default: built-in f32c32 config)")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="default: bf16 on GPUs, fp32 on the CPU")
    p.add_argument("--device", help="e.g. cuda:0, mps, cpu (default: the available accelerator)")
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])


def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cfg", type=float, default=4.5)
    p.add_argument("--cfg-schedule", default="linear", choices=["linear", "constant"])
    p.add_argument("--steps", type=int, default=30, help="flow-matching steps per token group")
    p.add_argument("--acc-ratio", type=int, default=1, help="tokens decoded in parallel per step")
    p.add_argument("--order", default="random", choices=["random", "raster", "center_out", "checkerboard"])
    p.add_argument("--sampler", default="sde", choices=["sde", "ode"])
    p.add_argument("--mode", default="reference", choices=["reference", "corrected"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vgt", description="VGT: Visual Generation Tuning (text-to-image, VGT-AE)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="text -> PNG images with QueryAR (no --ar: the built-in vgt-demo model)")
    p.add_argument("prompts", nargs="+")
    _model_args(p, False)
    p.add_argument("--negative", help="negative prompt (default: the official unconditional prompt)")
    p.add_argument("--size", type=int, help="image size (default: 224 for the vgt-demo model, 448 otherwise)")
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--num-images", type=int, default=1, help="images per prompt")
    _sampling_args(p)
    p.add_argument("--seed", type=int)
    p.add_argument("--out", default="outputs/vgt.png", help="a .png path (one image) or a folder")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("reconstruct", help="image -> VGT-AE -> image")
    p.add_argument("images", nargs="+")
    p.add_argument("--ae", required=True, help="VGT-AE checkpoint, or a model folder")
    p.add_argument("--base-model", help="base VLM folder of the encoder; default: the --ae model folder")
    p.add_argument("--decoder")
    p.add_argument("--dtype", choices=sorted(DTYPES))
    p.add_argument("--device")
    p.add_argument("--fit", default="crop", choices=["crop", "resize", "error"],
                   help="sizes that are not multiples of the latent stride (28, or 32 for Qwen3-VL)")
    p.add_argument("--side-by-side", action="store_true")
    p.add_argument("--out-dir", default="outputs")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("inspect", help="what a checkpoint file is")
    p.add_argument("file")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("convert", help="official checkpoint -> clean .safetensors + JSON config")
    p.add_argument("file")
    p.add_argument("--out", required=True)
    p.add_argument("--state-dict", default="ema", choices=["ema", "raw"])
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("bench", help="QueryAR speed: time per image, tokens/s, LLM / flow-head / other split")
    _model_args(p, False)
    p.add_argument("--random", default="small", help="random-weight size when no --ar: small, medium, 1.5b")
    p.add_argument("--size", type=int, default=448)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--cfg", type=float, default=4.5)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--acc-ratios", default="1,4,16")
    p.add_argument("--repeats", type=int, default=1, help="runs per acc_ratio; the fastest is reported")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("download", help="download official files with huggingface_hub (explicit, never automatic)")
    p.add_argument("names", nargs="*", help="e.g. qwen25vl-2b-sft vgt-ae (see --list)")
    p.add_argument("--dir", default="models/vgt", help="models folder (ComfyUI: ComfyUI/models/vgt)")
    p.add_argument("--no-base", action="store_true", help="skip the base config/tokenizer folders")
    p.add_argument("--list", action="store_true")
    p.set_defaults(func=cmd_download)

    from .training.cli import add_parsers  # vgt train / cache-latents / bench-train (imports nothing heavy)

    add_parsers(sub)

    from .demo.commands import add_commands  # demo (world, check-detector) and eval

    add_commands(sub, _model_args, _sampling_args)
    return parser


COMMANDS: dict[str, Callable] = {"generate": cmd_generate, "reconstruct": cmd_reconstruct, "inspect": cmd_inspect,
                                 "convert": cmd_convert, "bench": cmd_bench, "download": cmd_download}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "accepts_overrides", False):  # training commands: trailing key=value overrides
        from .training.cli import split_overrides

        try:
            args.overrides = split_overrides(extra)
        except argparse.ArgumentTypeError as e:
            parser.error(str(e))
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
