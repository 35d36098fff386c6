"""The built-in ``vgt-demo`` model folder: where it ships, and writing it from a trained VGT-AR model folder.

The folder is an ordinary exported model folder (``model.safetensors`` with the VGT-AR and its VGT-AE, ``model.json``,
the world VLM's ``config.json``, tokenizer and ``preprocessor_config.json``) with half-precision weights and a
``vgt_demo.json`` that records how it was made. ``VGTPipeline.from_pretrained(DEMO_DIR)`` opens it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..hub import DEMO_FOLDER as DEMO_DIR
from ..hub import DEMO_RELEASE as DEMO_NAME

DEMO_SIZE = 224  # the world's image size: 8 x 8 latent tokens of 28 px
INFO_FILE = "vgt_demo.json"
STORAGE = ("bf16", "fp16", "fp32")


def demo_available() -> bool:
    """Whether the built-in model's files are present (they are in the package)."""
    return (DEMO_DIR / "model.safetensors").is_file() and (DEMO_DIR / "config.json").is_file()


def demo_dir() -> Path:
    """The built-in model folder; a clear error when it is missing."""
    if not demo_available():
        raise FileNotFoundError(f"the built-in {DEMO_NAME} model is not in {DEMO_DIR} (missing from this install): "
                                f"build it with `vgt demo train --out DIR` and pass --ar DIR/{DEMO_NAME}, or pass --ar "
                                f"with another model")
    return DEMO_DIR


def replace_decoder(tensors: dict[str, Any], config: dict[str, Any], ae_folder: str | Path) -> dict[str, Any]:
    """The VGT-AR folder's ``tensors`` with the pixel decoder (``ae.decoder.*``) of the VGT-AE in ``ae_folder``.

    Only a decoder tuned on the same latents fits (``vgt train ae model.train_latent=false``): the VGT-AE's encoder,
    ResBlocks and down-MLP must equal the embedded ones (to the precision of either's storage) and the decoder config
    must be the same, or the AR's latents would decode wrong. Anything else is a ValueError.
    """
    import torch
    from safetensors.torch import load_file

    from ..loading import stored_decoder_config

    weights = Path(ae_folder) / "model.safetensors"
    if not weights.is_file():
        raise ValueError(f"decoder {ae_folder}: expected a VGT-AE model folder with model.safetensors")
    ae = load_file(str(weights))
    mine = {k[len("ae."):] for k in tensors if k.startswith("ae.")}
    if set(ae) != mine:
        extra = sorted(set(ae) ^ mine)
        raise ValueError(f"decoder {ae_folder}: its VGT-AE has other weights than the model's ({extra[0]} ...)")
    if stored_decoder_config(weights) != (config.get("ae") or {}).get("decoder_config"):
        raise ValueError(f"decoder {ae_folder}: its DC-AE decoder config differs from the model's")
    for k, v in ae.items():
        if k.startswith("decoder."):
            continue
        ours = tensors["ae." + k]
        rtol = 2**-7 if torch.finfo(ours.dtype).bits < 32 or torch.finfo(v.dtype).bits < 32 else 1e-5
        if not torch.allclose(v.float(), ours.float(), rtol=rtol, atol=1e-6):
            raise ValueError(f"decoder {ae_folder}: its latent path differs from the model's ({k}): the AR was "
                             "trained on other latents. Tune the decoder with model.train_latent=false")
    out = dict(tensors)
    out.update({"ae." + k: v.to(tensors["ae." + k].dtype) for k, v in ae.items() if k.startswith("decoder.")})
    return out


def export_demo_folder(src: str | Path, dest: str | Path, *, dtype: str = "bf16", info: dict[str, Any] | None = None,
                       sampling: dict[str, Any] | None = None, decoder: str | Path | None = None) -> Path:
    """Copy a trained model folder to ``dest`` with its floating-point weights stored in ``dtype``.

    ``sampling`` updates the sampling record of its config (``order``, ``acc_ratio``, ``preset``: what ``vgt
    generate``, ``vgt eval`` and the sampler node use by default), e.g. the best preset ``vgt eval --compare-to`` found.
    ``decoder``: a VGT-AE folder whose decoder replaces the embedded one (``replace_decoder``).
    """
    import torch
    from safetensors.torch import load_file

    from ..checkpoints import converted_config, save_converted
    from ..loading import stored_sampling

    if dtype not in STORAGE:
        raise ValueError(f"dtype {dtype!r}: expected one of {sorted(STORAGE)}")
    src, dest = Path(src), Path(dest)
    tmp = dest.with_name(f".tmp_{dest.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    weights = tmp / "model.safetensors"
    config = converted_config(weights)
    if config is None:
        raise ValueError(f"{src} is not a model folder written by vgt train (no config in model.safetensors)")
    if sampling:
        config["sampling"] = {**(config.get("sampling") or {}), **sampling}
    store = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    tensors = load_file(str(weights))
    if decoder is not None:
        try:
            tensors = replace_decoder(tensors, config, decoder)
        except ValueError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    tensors = {k: v.to(store) if v.is_floating_point() else v for k, v in tensors.items()}
    save_converted(weights, tensors, config)
    try:
        stored_sampling(weights)  # a wrong order / acc_ratio / preset fails here, not when a user loads the model
    except ValueError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if (tmp / "model.json").is_file():  # the readable copy of the config says the same
        (tmp / "model.json").write_text(json.dumps(config, indent=2))
    record = {"name": DEMO_NAME, "size": DEMO_SIZE, "storage": dtype,
              "parameters": sum(t.numel() for t in tensors.values()), **(info or {})}
    (tmp / INFO_FILE).write_text(json.dumps(record, indent=1) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def folder_bytes(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
