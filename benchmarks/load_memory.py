"""Peak RSS while loading an official-layout VGT-AR checkpoint (``state_dict`` + ``ema_state_dict``, bf16) of a
random model of a few hundred MB, and the same model converted to one .safetensors file, side by side:

- whole-dict: the chosen dict read whole, then converted at once (what a plain state-dict load does);
- mmap: the memory-mapped path (``torch.load(mmap=True)`` / ``safe_open``; each tensor copied, its file pages
  released after it);
- library: the loader as shipped (structure only, each tensor read from the file into its own memory), in bf16, in
  fp16 (converted through a bounded buffer), and in a cold process (imports counted).

    python benchmarks/load_memory.py [--dir /tmp/vgt-load-bench] [--fixtures tests' reference fixtures]

Each load runs in a fresh process. Imports and one-time set-up are done first (the tiny fixture checkpoint loaded
once, as in a running ComfyUI where transformers is imported already), except in the cold row; the figure is the peak
RSS during the load minus the RSS before it, compared with the bytes of the weights actually loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

FIXTURE_BASE = "internvl3/base/InternVL3-2B-tiny"


def write_checkpoint(folder: Path, layers: int, fixtures: Path) -> Path:
    """A random InternVL3-layout VGT-AR file (no embedded VGT-AE) and a base folder config of the same sizes."""
    from vgt_impl.bench import random_pipeline

    ckpt = folder / "iter_1.pth"
    if ckpt.is_file():
        return ckpt
    folder.mkdir(parents=True, exist_ok=True)
    pipe = random_pipeline("medium", family="internvl3", dtype=torch.bfloat16)
    llm_cfg = pipe.ar.llm.config
    names = {"queries.query_grid": "adaptive_metaquery.max_metaquery",
             "queries.pos_grid": "adaptive_metaquery.pos_encoding.grid_embed"}
    sd = {}
    for k, v in pipe.ar.state_dict().items():
        if k.startswith("llm."):
            k = "lmm.language_model.model." + k[4:]
        elif k.startswith("flow_head."):
            k = "image_head.net." + k[len("flow_head."):]
        sd[names.get(k, k)] = v.contiguous()
    ema = {"steps": torch.tensor(1)} | {"module." + k: v + 0.001 for k, v in sd.items()}
    torch.save({"meta": {"iter": 1}, "state_dict": sd, "ema_state_dict": ema}, ckpt)
    base = folder / "base"
    base.mkdir(exist_ok=True)
    cfg = json.loads((fixtures / FIXTURE_BASE / "config.json").read_text())
    cfg["llm_config"].update(hidden_size=llm_cfg.hidden_size, num_hidden_layers=llm_cfg.num_hidden_layers,
                             num_attention_heads=llm_cfg.num_attention_heads, intermediate_size=llm_cfg.intermediate_size,
                             num_key_value_heads=llm_cfg.num_key_value_heads, vocab_size=llm_cfg.vocab_size)
    (base / "config.json").write_text(json.dumps(cfg))
    return ckpt


def write_converted(ckpt: Path) -> Path:
    """The same model converted to our layout (``vgt convert``: EMA weights, one .safetensors file)."""
    out = ckpt.with_suffix(".safetensors")
    if not out.is_file():
        from vgt_impl.cli import main as vgt

        vgt(["convert", str(ckpt), "--out", str(out)])
    return out


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _reset_peak() -> None:
    """Start the peak RSS (VmHWM) afresh (Linux >= 4.0); ru_maxrss cannot be reset and also counts the parent's RSS
    copied at fork, before exec."""
    Path("/proc/self/clear_refs").write_text("5")


def _peak_mb() -> float:
    return _status_mb("VmHWM")


def _warm_up(fixtures: Path) -> None:
    """Imports and one-time set-up (transformers' model classes, the family registry) done before measuring, as in a
    running ComfyUI: the tiny fixture checkpoint of the same family loaded once through the library and dropped."""
    import gc

    from vgt_impl.loading import load_ar_model

    ar, _ = load_ar_model(fixtures / "internvl3" / "ar" / "iter_5000.pth", base_model=fixtures / FIXTURE_BASE,
                          dtype=torch.bfloat16, device=torch.device("cpu"))
    del ar
    gc.collect()


def child(method: str, ckpt: Path, fixtures: Path) -> None:
    from vgt_impl import file_tensors
    from vgt_impl.checkpoints import load_checkpoint_file, map_ar_state_dict
    from vgt_impl.loading import load_ar_model

    cold = _rss_mb()
    if "cold" not in method:
        _warm_up(fixtures)
    before = _rss_mb()
    _reset_peak()
    if method != "whole-dict":
        if method.startswith("mmap"):  # the memory-mapped path: tensors copied one by one, file pages released
            file_tensors.load_structure = lambda path: None  # (safe_open for .safetensors)
            file_tensors.safetensors_structure = lambda path: None
        dtype = torch.float16 if "fp16" in method else torch.bfloat16
        ckpt = ckpt.with_suffix(".safetensors") if "safetensors" in method else ckpt
        ar, _ = load_ar_model(ckpt, base_model=ckpt.parent / "base", dtype=dtype, device=torch.device("cpu"))
        loaded = sum(p.numel() * p.element_size() for p in ar.state_dict().values())
    else:  # the whole chosen dict read, then converted at once
        sd = load_checkpoint_file(ckpt)
        mapped, _, _ = map_ar_state_dict(sd, "internvl3")
        for v in sd.values():
            v.sum()  # touch every page of the chosen dict, as a full load does
        conv = {k: v.to(torch.float32).to(torch.bfloat16) for k, v in mapped.items()}
        loaded = sum(v.numel() * v.element_size() for v in conv.values())
    peak = _peak_mb()
    print(json.dumps({"method": method, "peak_minus_before_mb": peak - before, "loaded_mb": loaded / 2**20,
                      "warm_up_mb": before - cold}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", default="/tmp/vgt-load-bench")
    p.add_argument("--fixtures", default=os.environ.get("VGT_REFERENCE_FIXTURES", "../shared/fixtures/reference"))
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child[0], Path(args.child[1]), Path(args.fixtures))
    ckpt = write_checkpoint(Path(args.dir), 12, Path(args.fixtures))
    print(f"checkpoint {ckpt}: {ckpt.stat().st_size / 2**20:.0f} MiB (state_dict + ema_state_dict, bf16)")
    write_converted(ckpt)
    methods = ("whole-dict", "mmap", "library", "library fp16", "library cold", "mmap safetensors",
               "library safetensors")
    for method in methods:
        out = subprocess.run([sys.executable, __file__, "--child", method, str(ckpt), "--fixtures", args.fixtures],
                             capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-2000:])
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        note = ("imports counted" if "cold" in method else
                f"imports and set-up before it: {r['warm_up_mb']:.0f} MiB, not counted")
        print(f"{method:>19}: peak RSS during load {r['peak_minus_before_mb']:5.0f} MiB for {r['loaded_mb']:.0f} MiB "
              f"of weights = {r['peak_minus_before_mb'] / r['loaded_mb']:.2f}x  ({note})")


if __name__ == "__main__":
    main()
