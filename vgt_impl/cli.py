"""The ``vgt`` command: generate, reconstruct, inspect, convert, bench, download, demo, eval.

Each subcommand is one small function registered in ``COMMANDS``; library code never prints, this module does.
The training commands (train, cache-latents, bench-train) live in ``training/cli.py``.
Every user error ends as one ``error: ...`` line on stderr with exit code 2 (never a traceback; ``VGT_DEBUG=1`` shows
it), and everything that can be checked without loading a model is checked before loading one.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
DEFAULT_ACC_RATIO = 4  # the ComfyUI sampler's parallel_tokens default too: same image from the same settings
MAX_SEED = 2**64 - 1


class UsageError(ValueError):
    """A command-line value that cannot work (reported as one ``error:`` line, exit code 2)."""


# ---------------------------------------------------------------------------------------------------------- helpers
def _device(name: str | None) -> torch.device:
    from .validation import check_device

    if name:
        return check_device(name, "--device")
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


def _fit_size(w: int, h: int, stride: int) -> tuple[int, int]:
    return max(stride, w // stride * stride), max(stride, h // stride * stride)


def check_image_file(path: str | Path, fit: str, stride: int = 28) -> tuple[int, int]:
    """An input image exists, is readable and fits ``--fit`` -> (width, height); nothing is decoded."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input image {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        with Image.open(path) as img:
            w, h = img.size
    except UnidentifiedImageError:
        raise UsageError(f"{path} is not an image PIL can read (png, jpg, webp, ...)") from None
    fw, fh = _fit_size(w, h, stride)
    if fit == "error" and (fw, fh) != (w, h):
        raise UsageError(f"{path}: {w}x{h} px is not a multiple of {stride} (the VGT-AE's latent stride; nearest "
                         f"below: {fw}x{fh}); use --fit crop or --fit resize")
    return w, h


def _to_rgb8(img, path):
    """8-bit RGB; 16-bit greyscale is scaled (PIL's convert('RGB') clips it at 255: a mid grey came out white)."""
    import numpy as np
    from PIL import Image

    if img.mode.startswith("I"):
        a = np.asarray(img, dtype=np.float64)
        if a.min() < 0 or a.max() > 65535:
            raise UsageError(f"{path}: {img.mode} pixel values outside 0..65535 cannot be read as an image")
        return Image.fromarray(np.round(a / 257.0).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        raise UsageError(f"{path}: floating-point images have no fixed range: save it as an 8- or 16-bit image")
    return img.convert("RGB")


def load_image(path: str | Path, fit: str, stride: int = 28) -> torch.Tensor:
    """An image file -> [1, 3, H, W] in [-1, 1] with H, W multiples of ``stride`` (``fit``: crop, resize or error)."""
    import numpy as np
    from PIL import Image

    check_image_file(path, fit, stride)
    with Image.open(path) as src:
        img = _to_rgb8(src, path)
    w, h = img.size
    tw, th = _fit_size(w, h, stride)
    if (tw, th) != (w, h):
        if fit == "crop" and tw <= w and th <= h:
            left, top = (w - tw) // 2, (h - th) // 2
            img = img.crop((left, top, left + tw, top + th))
        else:  # resize, or an image smaller than one token
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


def _existing_file(path: str | None, flag: str) -> None:
    if path is not None and not Path(path).is_file():
        raise FileNotFoundError(f"{flag} {path} does not exist" + (" (it is a folder)" if Path(path).is_dir() else ""))


def _base_folder(path: str | None, flag: str) -> None:
    if path is not None and not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"{flag} {path} is not a base model folder (no config.json): point to the folder "
                                f"of the hub repo with its config and tokenizer files")


def _writable_dir(folder: Path, flag: str) -> None:
    """``folder`` exists as a folder, or can be created (its nearest existing parent is a writable folder)."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{flag}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK):
        raise UsageError(f"{flag}: cannot write in {probe} (permission denied)")


def _output_paths(out: str, n: int) -> list[Path]:
    """Where ``n`` images go: ``out`` itself (one image, a file name) or numbered files; checked, not created."""
    p = Path(out)
    if p.suffix and not p.is_dir():
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise UsageError(f"--out {out}: {p.suffix!r} is not an image format; use one of {', '.join(IMAGE_SUFFIXES)}"
                             f" (or a folder name)")
        paths = [p] if n == 1 else [Path(f"{p.with_suffix('')}_{i:03d}{p.suffix}") for i in range(n)]
    else:
        paths = [p / f"vgt_{i:03d}.png" for i in range(n)]
    _writable_dir(paths[0].parent, "--out")
    return paths


# ---------------------------------------------------------------------------------------------------------- checks
def _resolve_base(args, flag: str = "--ar", attr: str = "ar") -> None:
    """--base-model defaults to the model folder given as --ar / --ae (training exports carry their base files)."""
    from .loading import default_base, resolve_model_path

    path = getattr(args, attr)
    if path is not None and not Path(path).exists():
        raise FileNotFoundError(f"{flag} {path} does not exist")
    if path is not None:
        args.base_model = str(default_base(f"{flag} {path}", args.base_model, resolve_model_path(path)[1]))
    _base_folder(args.base_model, "--base-model")


def _check_model_files(args) -> None:
    """Files and folders named on the command line exist; VGT-AR / VGT-AE / base folders pair up (no model built)."""
    from .checkpoints import peek, peek_family
    from .loading import check_base_family, family_name, resolve_model_path

    args.ar = str(resolve_model_path(args.ar)[0])  # a model folder -> its weights file
    _existing_file(args.ar, "--ar")
    if args.ae is not None:
        args.ae = str(resolve_model_path(args.ae)[0])
        _existing_file(args.ae, "--ae")
    _base_folder(args.base_model, "--base-model")
    _base_folder(args.ae_base_model, "--ae-base-model")
    if args.decoder is not None:
        from .autoencoder import load_decoder_config

        load_decoder_config(args.decoder)
    info = peek(args.ar)
    if info.kind not in ("ar", "converted_ar"):
        raise UsageError(f"--ar {args.ar} is a VGT-AE checkpoint: pass it as --ae (and a VGT-AR checkpoint as --ar)")
    check_base_family(info.family, args.base_model, f"--ar {args.ar}", fix="pick the matching --base-model")
    if args.ae:
        ae_family = peek_family(args.ae, want="ae")
        if ae_family != info.family:
            raise UsageError(f"--ae {args.ae} is the {family_name(ae_family)} VGT-AE but --ar is "
                             f"{family_name(info.family, True)} model: pick the {family_name(info.family)} VGT-AE, or "
                             f"leave --ae out to use the one embedded in the AR checkpoint")
    elif not info.has_embedded_ae:
        raise UsageError(f"--ar {args.ar} embeds no VGT-AE: pass one with --ae (vgt_ae_qwen25vl.pth or "
                         f"vgt_ae_internvl3.pth)")
    if args.ae or info.has_embedded_ae:
        check_base_family(info.family, args.ae_base_model or args.base_model, "the VGT-AE",
                          fix="pass the base folder of its encoder with --ae-base-model (InternVL3: InternVL3-1B)")
    args.variant = info


def _check_runtime(args) -> torch.device:
    from .validation import check_attn_implementation

    device = _device(args.device)
    check_attn_implementation(getattr(args, "attn", "sdpa"), "--attn")
    return device


def _check_generate(args, stride: int) -> tuple[tuple[int, int], tuple[str, str]]:
    """Numbers and sizes of ``generate`` -> ((height, width), the flags they came from)."""
    from .pipeline import check_generate_options
    from .validation import check_int, check_size_px

    names = {"cfg_scale": "--cfg", "num_flow_steps": "--steps", "acc_ratio": "--acc-ratio",
             "num_images_per_prompt": "--num-images"}
    check_generate_options(cfg_scale=args.cfg, num_flow_steps=args.steps, acc_ratio=args.acc_ratio,
                           num_images_per_prompt=args.num_images, names=names)
    if args.seed is not None:
        check_int("--seed", args.seed, lo=0, hi=MAX_SEED)
    h_name = "--height" if args.height is not None else "--size"
    w_name = "--width" if args.width is not None else "--size"
    height = args.height if args.height is not None else args.size
    width = args.width if args.width is not None else args.size
    check_size_px(h_name, height, stride)
    check_size_px(w_name, width, stride)
    return (height, width), (h_name, w_name)


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
    source = info.get("source")
    if cfg.get("format") == "comfyui-vgt/1":  # a converted file keeps the choice made at conversion
        source = {"ema": "EMA (ema_state_dict)", "raw": "raw (state_dict)"}.get(cfg.get("state_dict"), "as stored")
        source += f", {'converted' if cfg.get('state_dict') else 'written'} from {cfg.get('source', '?')}"
    elif source == "raw":
        source = "plain state dict"
    print(f"file:      {args.file}")
    print(f"kind:      {'VGT-AR (autoregressive generator)' if 'ar' in v.kind else 'VGT-AE (autoencoder)'}"
          f"{' [converted]' if v.kind.startswith('converted') or cfg else ''}")
    print(f"family:    {display_name(v.family)} ({v.family})")
    print(f"weights:   {source}" + (f", EMA steps {info['ema_steps']}" if "ema_steps" in info else ""))
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
    from .checkpoints import (
        CONVERTED_FORMAT,
        check_converted_target,
        converted_config,
        detect_variant,
        load_checkpoint_file,
        map_ar_state_dict,
        save_converted,
    )

    _existing_file(args.file, "file")
    check_converted_target(args.out, source=args.file)  # before reading a multi-GB file
    sd = load_checkpoint_file(args.file, prefer_ema=args.state_dict == "ema")
    v = detect_variant(sd)
    done = (converted_config(args.file) or {}).get("format") == CONVERTED_FORMAT
    if done or v.kind.startswith("converted") or any(k.startswith("encoder.vision_tower.") for k in sd):
        raise UsageError(f"{args.file} is already in the converted layout: nothing to do")
    fam = get_family(v.family)
    if v.kind == "ae":
        out, dropped = fam.map_ae_state_dict(sd)
    else:
        ar, ae, dropped = map_ar_state_dict(sd, v.family)
        ae_mapped, ae_dropped = fam.map_ae_state_dict(ae) if ae else ({}, {})
        out = dict(ar, **{"ae." + k: t for k, t in ae_mapped.items()})
        dropped = dict(dropped, **{"vgt_ae." + k: r for k, r in ae_dropped.items()})
    config = {"format": CONVERTED_FORMAT, "kind": v.kind, "family": v.family, "variant": v.to_dict(),
              "source": Path(args.file).name, "state_dict": args.state_dict}
    if fam.official_latent_stride is not None:  # otherwise the base folder's stride applies when it is loaded
        config["latent_stride"] = fam.official_latent_stride
    path = save_converted(args.out, out, config)
    print(f"wrote {path} ({len(out)} tensors) and {path.with_suffix('.json')}")
    for group, reason in dropped.items():
        print(f"dropped {group}: {reason}")
    return 0


def _load_pipeline(args, device: torch.device | None = None):
    from .pipeline import VGTPipeline

    device = device if device is not None else _check_runtime(args)
    return VGTPipeline.from_pretrained(args.ar, ae=args.ae, base_model=args.base_model,
                                       ae_base_model=args.ae_base_model, decoder_config=args.decoder,
                                       dtype=_dtype(args.dtype, device), device=device, attn_implementation=args.attn)


def use_builtin_model(args) -> None:
    """No --ar: the built-in vgt-demo model (shipped in the package), with its own base folder."""
    if args.ar is None:
        if args.base_model is not None or args.ae is not None:
            raise UsageError("--base-model / --ae need --ar (without --ar the built-in vgt-demo model is used)")
        from .demo.model_folder import demo_dir

        args.ar = str(demo_dir())


def default_size(ar: str) -> int:
    """The image size a model folder recommends (the demo model: 224), else 448 (the official models)."""
    import json

    info = Path(ar) / "vgt_demo.json"
    return int(json.loads(info.read_text()).get("size", 448)) if info.is_file() else 448


def default_acc_ratio(ar: str) -> int:
    """The acc_ratio a model recommends (its config's sampling.acc_ratio: 1 for the raster-order vgt-demo), else
    DEFAULT_ACC_RATIO."""
    from .loading import resolve_model_path, stored_sampling

    weights, _ = resolve_model_path(ar)
    return stored_sampling(weights)["acc_ratio"] or DEFAULT_ACC_RATIO


def cmd_generate(args) -> int:
    from .backbones import latent_stride_of
    from .pipeline import load_tokenizer, tokenize_prompts

    use_builtin_model(args)
    # the preset (--preset, else the model's recorded one) + flags; generate's checks below see its steps / sampler
    sampling = sampling_options(args, default_preset(args.ar))
    args.steps, args.sampler = sampling["num_flow_steps"], sampling["sampler"]
    if args.size is None:
        args.size = default_size(args.ar)
    _resolve_base(args)
    if args.acc_ratio is None:
        args.acc_ratio = default_acc_ratio(args.ar)
    s = latent_stride_of(args.base_model)  # config.json only
    (height, width), names = _check_generate(args, s)
    device = _check_runtime(args)
    paths = _output_paths(args.out, len(args.prompts) * args.num_images)
    _check_model_files(args)
    v = args.variant
    for name, px, limit in ((names[0], height, v.query_grid[0]), (names[1], width, v.query_grid[1])):
        if px // s > limit:
            raise UsageError(f"{name} {px} exceeds this model's query grid: at most {limit * s} px")
    tokenizer = load_tokenizer(args.base_model, v.family, vocab_size=v.vocab_size)
    tokenize_prompts(tokenizer, args.prompts, args.negative)  # prompt length errors before loading
    pipe = _load_pipeline(args, device)
    gen = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
    out = pipe.generate(
        args.prompts, negative_prompts=args.negative, height=height, width=width,
        num_images_per_prompt=args.num_images, cfg_scale=args.cfg, cfg_schedule=args.cfg_schedule,
        acc_ratio=min(args.acc_ratio, (height // s) * (width // s)), order=args.order, mode=args.mode, generator=gen,
        callback=_progress("QueryAR"), **sampling,
    )
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for img, path in zip(to_pil(out.images), paths):
        img.save(path)
        print(f"wrote {path}")
    return 0


def default_preset(ar: str) -> str | None:
    """The sampling preset a model recommends (its config's sampling.preset: vgt-demo records its best measured one),
    else None (the reference sampler)."""
    from .loading import resolve_model_path, stored_sampling

    weights, _ = resolve_model_path(ar)
    return stored_sampling(weights)["preset"]


def sampling_options(args, recorded: str | None = None) -> dict:
    """Sampler, steps, time grid and group schedule: the preset's (``--preset``, else the model's ``recorded`` one,
    else ``reference``), then explicit flags; plus how the decode runs (static cache, compile)."""
    from .presets import preset_options

    opts = preset_options(args.preset or recorded or "reference")
    flags = {"sampler": args.sampler, "num_flow_steps": args.steps, "time_grid": args.time_grid,
             "time_shift": args.time_shift, "group_schedule": args.group_schedule}
    opts.update({k: v for k, v in flags.items() if v is not None})
    opts["static_cache"] = bool(args.static_cache)
    opts["compile"] = False if args.compile is None else (True if args.compile == "auto" else args.compile)
    return opts


def cmd_reconstruct(args) -> int:
    from PIL import Image

    from .autoencoder import VGTAutoencoder, load_decoder_config
    from .backbones import get_family, latent_stride_of
    from .checkpoints import peek_family
    from .loading import ae_base_of, check_base_family, resolve_model_path

    if not Path(args.ae).exists():
        raise FileNotFoundError(f"--ae {args.ae} does not exist")
    weights, folder = resolve_model_path(args.ae)
    if args.base_model is None:
        args.base_model = ae_base_of(folder)
        if args.base_model is None:
            raise UsageError(f"--ae {args.ae}: --base-model is required (the base VLM folder of its encoder), unless "
                             f"--ae is a model folder that carries it")
    _base_folder(args.base_model, "--base-model")
    stride = latent_stride_of(args.base_model)
    outs = {}
    for path in args.images:  # every input readable and fitting before the VGT-AE is loaded
        check_image_file(path, args.fit, stride)
        out = Path(args.out_dir) / f"{Path(path).stem}_vgt_recon.png"
        if out in outs.values():
            raise UsageError(f"{path} and another input would both be written to {out}: rename one of them")
        outs[path] = out
    _writable_dir(Path(args.out_dir), "--out-dir")
    device = _check_runtime(args)
    load_decoder_config(args.decoder)
    fam = peek_family(weights, want="ae")
    check_base_family(fam, args.base_model, f"--ae {args.ae}",
                      fix=f"pass the base folder of its encoder ({get_family(fam).ae_base_model}) as --base-model")
    ae = VGTAutoencoder.from_pretrained(args.ae, base_model=args.base_model, decoder_config=args.decoder,
                                        dtype=_dtype(args.dtype, device), device=device)
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    for path, out in outs.items():
        x = load_image(path, args.fit, ae.stride)
        rec = ae.decode(ae.encode(x))
        a, b = to_pil(x)[0], to_pil(rec)[0]
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
    from .backbones import latent_stride_of
    from .bench import REFERENCE, SIZES, BenchConfig, floor_seconds, random_pipeline, run_bench, speedups
    from .pipeline import check_generate_options
    from .presets import preset_options
    from .quality import load_evaluator, run_sweep, sweep_configs
    from .validation import check_int, check_size_px

    opts = sampling_options(args)
    check_generate_options(cfg_scale=args.cfg, num_flow_steps=opts["num_flow_steps"], sampler=opts["sampler"],
                           names={"cfg_scale": "--cfg", "num_flow_steps": "--steps", "sampler": "--sampler"})
    check_int("--fd-seeds", args.fd_seeds, lo=0)
    if args.ar:
        _resolve_base(args)
    stride = latent_stride_of(args.base_model) if args.ar else 28  # random-weight models: the official layout
    tokens = check_size_px("--size", args.size, stride) ** 2
    check_int("--batch", args.batch, lo=1)
    check_int("--repeats", args.repeats, lo=1)
    try:
        acc = [int(a) for a in args.acc_ratios.split(",")]
    except ValueError:
        raise UsageError(f"--acc-ratios {args.acc_ratios!r}: expected comma-separated integers, e.g. 1,4,16") from None
    for a in acc:
        check_int("--acc-ratios", a, lo=1, hi=tokens, hint=f" ({tokens} tokens at --size {args.size})")
    evaluator = load_evaluator(args.evaluator) if (args.vs_default or args.sweep or args.evaluator) else None
    device = _check_runtime(args)
    if args.ar:
        _check_model_files(args)
        pipe = _load_pipeline(args, device)
        label = f"checkpoint {args.ar}"
    else:
        pipe = random_pipeline(args.random, dtype=_dtype(args.dtype, device), device=device)
        label = f"random-weight model '{args.random}' {SIZES[args.random]}"
    if evaluator is not None and args.evaluator is None and pipe.ae is None:
        evaluator = None  # the auto-detected shapes-GenEval scores decoded images: this model has no VGT-AE
    prompts = ["a red apple on a wooden table"] * args.batch
    print(f"QueryAR bench: {label}; {args.size}x{args.size} px = {(args.size // pipe.latent_stride) ** 2} tokens, "
          f"batch {args.batch}, cfg {args.cfg}, best of {args.repeats}; device {pipe.device}, dtype {pipe.dtype}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    reference = BenchConfig.of(REFERENCE, **preset_options(REFERENCE))
    option = BenchConfig.of(_option_label(args, opts), **opts)
    if args.sweep:
        print(f"evaluator: {getattr(evaluator, '__name__', evaluator) if evaluator else 'none (token FD only)'}")
        grid = sweep_configs()
        if args.only:
            wanted = {REFERENCE, *args.only.split(",")}
            unknown = wanted - {c.label for c in grid}
            if unknown:
                raise UsageError(f"--only {sorted(unknown)}: not in the sweep grid {[c.label for c in grid]}")
            grid = [c for c in grid if c.label in wanted]
        for a in acc:
            print(f"-- sweep at acc_ratio {a}")
            run_sweep(pipe, grid, prompts=prompts, height=args.size, width=args.size, acc_ratio=a,
                      cfg_scale=args.cfg, seeds=range(args.fd_seeds), evaluator=evaluator, repeats=args.repeats,
                      emit=print)
        return 0
    configs = [reference, option] if args.vs_default and option.options != reference.options else [option]
    results = run_bench(pipe, prompts=prompts, height=args.size, width=args.size, acc_ratios=acc,
                        cfg_scale=args.cfg, repeats=args.repeats, configs=configs)
    print("options: " + "; ".join(f"{c.label} = {c.kwargs}" for c in configs))
    for r in results:
        print(r.row(args.batch))
    if args.bandwidth:
        for r in results:
            fl = floor_seconds(pipe, r, args.bandwidth)
            print(f"floor {r.label:<16} acc_ratio={r.acc_ratio:>3}: {fl / args.batch:8.4f} s/image at "
                  f"{args.bandwidth:g} GB/s (weights read once per call); measured {r.seconds / fl:6.1f}x the floor")
    if len(configs) > 1:
        for line in speedups(results):
            print("speed-up " + line)
        if evaluator is not None:
            _print_quality(pipe, evaluator, configs, acc, args)
    else:
        base = results[0].seconds
        print("speed-up vs acc_ratio " + str(results[0].acc_ratio) + ": " +
              ", ".join(f"{r.acc_ratio}: {base / r.seconds:.1f}x" for r in results))
    return 0


def _option_label(args, opts: dict) -> str:
    if args.preset:
        return args.preset
    label = f"{opts['sampler']}-{opts['num_flow_steps']}"
    if opts["group_schedule"] != "equal":
        label += f"-{opts['group_schedule']}"
    if opts["compile"]:
        label += "+compile"
    elif opts["static_cache"]:
        label += "+static"
    return "reference" if label == "sde-30" and opts["time_grid"] == "reference" and opts["time_shift"] == 1.0 \
        else label


def _print_quality(pipe, evaluator, configs, acc, args) -> None:
    from .quality import evaluate

    for a in acc:
        common = dict(height=args.size, width=args.size, acc_ratio=a, cfg_scale=args.cfg)
        scores = [evaluate(evaluator, pipe, c.kwargs, **common) for c in configs]
        print(f"quality acc_ratio={a:>3}: " + ", ".join(f"{c.label} {s['overall']:.3f}" for c, s in zip(configs, scores))
              + f" (difference {scores[1]['overall'] - scores[0]['overall']:+.3f})")


def cmd_download(args) -> int:
    from .hub import REPOS, download, plan

    if args.list:
        for name, (repo, folder, _) in REPOS.items():
            print(f"{name:<26} {repo:<46} -> {folder}")
        return 0
    if not args.names:
        raise UsageError("name at least one model (see vgt download --list)")
    todo = plan(args.names, not args.no_base)
    _writable_dir(Path(args.dir), "--dir")
    print("downloading: " + ", ".join(f"{n} ({REPOS[n][0]})" for n in todo))
    for path in download(args.names, args.dir, with_bases=not args.no_base):
        print(f"  -> {path}")
    return 0


# ---------------------------------------------------------------------------------------------------------- parser
class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows '(default: X)' where there is a default worth showing."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse's usage errors as one 'error: ...' line (exit code 2), like every other user error."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _model_args(p: argparse.ArgumentParser, ar_required: bool) -> None:
    p.add_argument("--ar", required=ar_required, help="VGT-AR checkpoint (.pth or converted .safetensors) or model "
                   "folder" + ("" if ar_required else "; default: the built-in vgt-demo model"))
    p.add_argument("--base-model", help="base VLM folder (config.json + tokenizer); default: the --ar model folder")
    p.add_argument("--ae", help="VGT-AE checkpoint (default: the one embedded in the AR checkpoint)")
    p.add_argument("--ae-base-model", help="base VLM folder of the VGT-AE encoder (InternVL3: the 1B model; "
                                           "default: --base-model)")
    p.add_argument("--decoder", help="DC-AE folder or config.json (default: built-in f32c32 config)")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="weight dtype (default: bf16 on GPUs, fp32 on the CPU)")
    p.add_argument("--device", help="e.g. cuda:0, mps, cpu (default: the available accelerator)")
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"],
                   help="attention kernel of the language model (flash_attention_2 needs flash-attn)")


def _sampling_args(p: argparse.ArgumentParser) -> None:
    """The sampling options of ``vgt generate`` (shared with ``vgt eval``)."""
    from .orders import ORDERS

    p.add_argument("--cfg", type=float, default=4.5, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--cfg-schedule", default="linear", choices=["linear", "constant"],
                   help="linear: guidance decays towards 1 over the token groups (the reference)")
    p.add_argument("--acc-ratio", type=int, default=None,
                   help=f"tokens decoded in parallel per step (1 = best quality); default: what the model recommends, "
                        f"else {DEFAULT_ACC_RATIO} (the ComfyUI sampler's default too)")
    p.add_argument("--order", default=None, choices=list(ORDERS),
                   help="token decoding order (default: the order the model was trained on; random for VGT)")
    p.add_argument("--mode", default="reference", choices=["reference", "corrected"],
                   help="reference: the official code's behaviour; corrected: padding masked in every step")
    _speed_args(p)


def _speed_args(p: argparse.ArgumentParser) -> None:
    """Sampler, steps, time grid, group schedule (a preset and its overrides) and how the decode runs."""
    from .integrators import GRIDS, SAMPLERS
    from .orders import GROUP_SCHEDULES
    from .presets import PRESETS
    from .static_decode import COMPILE_MODES

    p.add_argument("--preset", choices=list(PRESETS), help="sampler + steps + time grid + group schedule "
                   "(default: the one the model records, else reference); the flags below override its parts")
    p.add_argument("--steps", type=int, help="flow-matching steps per token group (reference: 30)")
    p.add_argument("--sampler", choices=list(SAMPLERS), help="flow-head integrator (reference: sde)")
    p.add_argument("--time-grid", choices=list(GRIDS), help="flow time grid (reference: reference)")
    p.add_argument("--time-shift", type=float, help="> 1 puts more flow steps near the noise end (reference: 1)")
    p.add_argument("--group-schedule", choices=list(GROUP_SCHEDULES),
                   help="token group sizes for the same number of LLM calls (reference: equal)")
    p.add_argument("--static-cache", action="store_true", help="static KV cache, fixed shapes per group size")
    p.add_argument("--compile", nargs="?", const="auto", choices=["auto", *COMPILE_MODES],
                   help="torch.compile the per-group decode step (auto: CUDA graphs on CUDA)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="vgt", description="VGT: Visual Generation Tuning (text-to-image, VGT-AE)",
                     epilog="Set VGT_DEBUG=1 to see the traceback behind an error.")
    parser.add_argument("--version", action="version", version=f"vgt {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("generate", help="text -> PNG images with QueryAR (no --ar: the built-in vgt-demo model)",
                       description="text -> images with QueryAR (no --ar: the built-in vgt-demo model)")
    p.add_argument("prompts", nargs="+", help="one or more prompts (each gives --num-images images)")
    _model_args(p, False)
    p.add_argument("--negative", help="negative prompt (default: the official unconditional prompt)")
    p.add_argument("--size", type=int, help="height and width in pixels, a multiple of the latent stride (28; 32 for "
                                            "Qwen3-VL); default: the model's own size (224 for vgt-demo), else 448")
    p.add_argument("--height", type=int, help="height in pixels (default: --size)")
    p.add_argument("--width", type=int, help="width in pixels (default: --size)")
    p.add_argument("--num-images", type=int, default=1, help="images per prompt")
    _sampling_args(p)
    p.add_argument("--seed", type=int, help="seed of the noise and the random order (default: random)")
    p.add_argument("--out", default="outputs/vgt.png", help="an image path (one image) or a folder")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("reconstruct", help="image -> VGT-AE -> image", description="image -> VGT-AE -> image")
    p.add_argument("images", nargs="+", help="input image files")
    p.add_argument("--ae", required=True, help="VGT-AE checkpoint (or a VGT-AR checkpoint embedding one), or a model "
                                               "folder")
    p.add_argument("--base-model", help="base VLM folder of the encoder (config.json; default: the --ae model folder)")
    p.add_argument("--decoder", help="DC-AE folder or config.json (default: built-in f32c32 config)")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="weight dtype (default: bf16 on GPUs, fp32 on the CPU)")
    p.add_argument("--device", help="e.g. cuda:0, mps, cpu (default: the available accelerator)")
    p.add_argument("--fit", default="crop", choices=["crop", "resize", "error"],
                   help="sizes that are not multiples of the latent stride (28, or 32 for Qwen3-VL)")
    p.add_argument("--side-by-side", action="store_true", help="write input and reconstruction side by side")
    p.add_argument("--out-dir", default="outputs", help="folder for <name>_vgt_recon.png")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("inspect", help="what a checkpoint file is", description="what a checkpoint file is")
    p.add_argument("file", help="a .pth / .safetensors checkpoint")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("convert", help="official checkpoint -> clean .safetensors + JSON config",
                       description="official checkpoint -> clean .safetensors + JSON config")
    p.add_argument("file", help="an official .pth / .safetensors checkpoint")
    p.add_argument("--out", required=True, help="the .safetensors file to write (a .json config is written beside)")
    p.add_argument("--state-dict", default="ema", choices=["ema", "raw"],
                   help="which weights of an AR checkpoint: EMA (what the published results used) or raw")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("bench", help="QueryAR speed: time per image, tokens/s, LLM / flow-head / other split",
                       description="QueryAR speed: time per image, tokens/s, LLM / flow-head / other split")
    _model_args(p, False)
    from .bench import SIZES

    p.add_argument("--random", default="small", choices=list(SIZES), help="random-weight model size when no --ar")
    p.add_argument("--size", type=int, default=448, help="height and width in pixels, a multiple of the latent stride")
    p.add_argument("--cfg", type=float, default=4.5, help="classifier-free guidance scale")
    p.add_argument("--batch", type=int, default=1, help="images per run")
    p.add_argument("--acc-ratios", default="1,4,16", help="comma-separated acc_ratio values to compare")
    p.add_argument("--repeats", type=int, default=1, help="runs per acc_ratio; the fastest is reported")
    _speed_args(p)
    p.add_argument("--vs-default", action="store_true",
                   help="time (and score, with an evaluator) the options against the reference default, side by side")
    p.add_argument("--sweep", action="store_true",
                   help="a grid of samplers / steps / grids / group schedules against the reference: time, NFE, LLM "
                        "calls, latent-token Frechet distance and (with an evaluator) score")
    p.add_argument("--evaluator", help="module:function scoring a pipeline (default: the demo's shapes-GenEval when "
                                       "installed)")
    p.add_argument("--fd-seeds", type=int, default=4,
                   help="generations per config for the sweep's token distance (0: time only)")
    p.add_argument("--bandwidth", type=float, help="memory bandwidth in GB/s (e.g. 3350 for an H100 SXM): also print "
                   "the floor of each run, weights read once per LLM call and per flow-head evaluation")
    p.add_argument("--only", help="comma-separated labels of the sweep grid to run (the reference always runs)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("download", help="download official files with huggingface_hub (explicit, never automatic)",
                       description="download official files with huggingface_hub (explicit, never automatic)")
    p.add_argument("names", nargs="*", help="e.g. qwen25vl-2b-sft vgt-ae (see --list)")
    p.add_argument("--dir", default="models/vgt", help="models folder (ComfyUI: ComfyUI/models/vgt)")
    p.add_argument("--no-base", action="store_true", help="skip the base config/tokenizer folders")
    p.add_argument("--list", action="store_true", help="list the known models and exit")
    p.set_defaults(func=cmd_download)

    from .training.cli import add_parsers  # vgt train / cache-latents / bench-train (imports nothing heavy)

    add_parsers(sub)

    from .demo.commands import add_commands  # demo (world, check-detector) and eval

    add_commands(sub, _model_args, _sampling_args)
    return parser


COMMANDS: dict[str, Callable] = {"generate": cmd_generate, "reconstruct": cmd_reconstruct, "inspect": cmd_inspect,
                                 "convert": cmd_convert, "bench": cmd_bench, "download": cmd_download}

# What a user can cause (files, values, missing packages, devices): one line, exit code 2. Anything else is a bug
# and keeps its traceback.
USER_ERRORS = (ValueError, TypeError, OSError, ImportError, ArithmeticError)


def _one_line(e: BaseException) -> str:
    """Multi-line reports (strict loading) joined into one line."""
    return " ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if getattr(args, "accepts_overrides", False):  # training commands: trailing key=value overrides
            from .training.cli import split_overrides

            try:
                args.overrides = split_overrides(extra)
            except argparse.ArgumentTypeError as e:
                parser.error(str(e))
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # --help, --version, usage errors (already printed)
        return int(e.code or 0)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("VGT_DEBUG"):
            raise
        oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
        if isinstance(e, oom):
            print("error: out of memory: try --dtype bf16, a smaller --size/--num-images, or --device cpu",
                  file=sys.stderr)
            return 2
        if not isinstance(e, USER_ERRORS):
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
