"""Build the VGT-AR network from a checkpoint: detect the variant, build on the meta device, load strictly."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .ar_model import VGTARModel, ar_config_from_shapes
from .backbones import detect_family_from_dir, display_name, get_family
from .backbones.common import rebuild_meta_buffers

logger = logging.getLogger(__name__)


def count_layers(keys, prefix: str = "llm.layers.") -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    ids = {int(m.group(1)) for k in keys if (m := pat.match(k))}
    return max(ids) + 1 if ids else 0


def family_name(family: str, article: bool = False) -> str:
    """'Qwen2.5-VL' / 'InternVL3'; with ``article``: 'a Qwen2.5-VL' / 'an InternVL3'."""
    name = display_name(family)
    return (("an " if name[:1].lower() in "aeiou" else "a ") + name) if article else name


def check_base_family(family: str, base_model: str | Path, what: str, fix: str | None = None) -> None:
    """The base folder's model type is ``family``; ``what`` names the checkpoint, ``fix`` says what to change."""
    base_family = detect_family_from_dir(base_model)
    if base_family != family:
        raise ValueError(
            f"{what} is {family_name(family, True)} checkpoint but the base model folder {base_model} is "
            f"{display_name(base_family)}: {fix or f'pick the matching base model ({get_family(family).base_models})'}"
        )


def check_layer_count(family: str, text_config: Any, num_layers: int, what: str, *, official: bool = True,
                      stored: int | None = None) -> None:
    """The checkpoint holds every LLM layer it should (layers are counted from the keys, so a file missing its last
    layers would otherwise load silently as a smaller model): for an official checkpoint, the base model's layers x
    its family's layer_ratio; for a converted or trained one, the count its JSON config recorded; never more than the
    base model has."""
    full = int(getattr(text_config, "num_hidden_layers", 0) or 0)
    ratio = get_family(family).layer_ratio
    if official and ratio is not None and full:
        expected, why = int(full * ratio), f"on this base model ({full} layers, layer_ratio {ratio:g})"
    elif stored is not None:
        expected, why = int(stored), "according to its JSON config"
    else:
        expected, why = None, ""
    if expected is not None and num_layers != expected:
        raise ValueError(
            f"{what} has {num_layers} LLM layers but a VGT-{display_name(family)} model {why} has {expected}: the "
            f"checkpoint is truncated or incomplete (re-download it), or the base model folder is not the one it was "
            f"trained on"
        )
    if full and num_layers > full:
        raise ValueError(f"{what} has {num_layers} LLM layers but the base model has only {full}: pick the base model "
                         f"it was trained on")


def check_stride(base_stride: int, stored: int | None, path: str | Path, base_model: str | Path) -> int:
    """The latent stride of a model: its base folder's, which must agree with the one its converted config stored."""
    if stored is not None and int(stored) != int(base_stride):
        raise ValueError(
            f"{path} was made with a latent stride of {stored} px per token but the base model folder {base_model} "
            f"gives {base_stride} (ViT patch x merge): pick the base model it was tuned from"
        )
    return int(base_stride)


def load_ar_model(
    path: str | Path, *, base_model: str | Path, dtype: torch.dtype, device: torch.device,
    attn_implementation: str = "sdpa", prefer_ema: bool = True,
    before_build: Callable[[str, Any, dict], None] | None = None,
) -> tuple[VGTARModel, dict[str, Any]]:
    """Load an official (or converted) VGT-AR checkpoint -> (model, extras with the embedded VGT-AE weights).

    ``before_build(family, variant_info, embedded_ae_state_dict)`` runs the caller's checks (tokenizer, VGT-AE family,
    decoder config) once the checkpoint has been read and checked against the base model, before any network is built.

    Only the chosen dict is read, each tensor from the file straight into the model's weight (see
    ``vgt_impl.file_tensors``); the embedded VGT-AE weights come back unread (meta tensors that know where their bytes
    are), for ``load_embedded_ae`` / ``VGTAutoencoder.from_state_dict`` to read in their own dtype.
    """
    from .checkpoints import (
        check_fits,
        converted_config,
        detect_variant,
        load_checkpoint_file,
        load_strict,
        map_ar_state_dict,
        materialize,
    )

    sd = load_checkpoint_file(path, prefer_ema=prefer_ema, lazy=True)  # structure only: nothing read yet
    info = detect_variant(sd)
    if info.kind in ("ae", "converted_ae"):
        raise ValueError(f"{path} is a VGT-AE checkpoint, not a VGT-AR one: load it as the autoencoder instead")
    family = info.family
    stored = (converted_config(path) or {}) if info.kind == "converted_ar" else {}
    if family == "unknown":  # a converted file names its family in its config
        family = stored.get("family", family)
    if family == "unknown":
        raise ValueError(f"{path}: cannot tell which VLM family this converted checkpoint is (its JSON config is "
                         f"missing): re-convert it with `vgt convert`, or keep its .json sidecar beside it")
    check_base_family(family, base_model, str(path))
    fam = get_family(family)
    base_cfg = fam.load_base_config(base_model)
    stride = check_stride(fam.latent_stride(base_cfg), stored.get("latent_stride"), path, base_model)
    mapped, ae_sd, dropped = map_ar_state_dict(sd, family)
    shapes = {k: tuple(v.shape) for k, v in mapped.items()}
    check_layer_count(family, base_cfg.text_config, count_layers(mapped), str(path), official=info.kind == "ar",
                      stored=(stored.get("variant") or {}).get("llm_layers"))
    cfg = ar_config_from_shapes(family, base_cfg.text_config, shapes, count_layers(mapped), latent_stride=stride)
    if before_build is not None:
        before_build(family, info, ae_sd)
    with torch.device("meta"):
        ar = VGTARModel(cfg, base_cfg.text_config, attn_implementation=attn_implementation)
    check_fits(ar, mapped, what=str(path))  # a mismatch is reported before any weight is read
    mapped = materialize(mapped, dtype, what=path)  # only the chosen dict, each tensor read from the file into its copy
    load_strict(ar, mapped, dropped=dropped, what=str(path), assign=True)
    rebuild_meta_buffers(ar, device)  # rotary tables stay fp32, as transformers builds them
    ar.to(device=device).eval().requires_grad_(False)
    logger.info("loaded %s VGT-AR (%d LLM layers) from %s", family, cfg.num_layers, path)
    return ar, {"ae_state_dict": ae_sd, "variant": info}


def load_embedded_ae(
    ae_sd: dict[str, torch.Tensor], *, family: str, base_model: str | Path, decoder_config: Any,
    dtype: torch.dtype, device: torch.device,
):
    """The VGT-AE stored inside an AR checkpoint (``vgt_ae.*``, prefix already removed)."""
    from .autoencoder import VGTAutoencoder

    check_base_family(family, base_model, "the VGT-AE embedded in the AR checkpoint",
                      fix=f"pass the base model folder of its encoder ({get_family(family).ae_base_model}) as "
                          f"ae_base_model")
    return VGTAutoencoder.from_state_dict(
        ae_sd, base_model=base_model, decoder_config=decoder_config, dtype=dtype, device=device
    )


MODEL_FILE = "model.safetensors"  # the weights file of a model folder (written by training exports)
AE_BASE_DIR = "ae_base"  # a model folder's sub-folder with the VGT-AE encoder's base config, when it differs


def resolve_model_path(path: str | Path) -> tuple[Path, Path | None]:
    """A checkpoint file or a model folder -> (weights file, the model folder when there is one).

    A model folder holds ``model.safetensors`` (our converted layout) beside the base VLM's ``config.json`` and
    tokenizer files, so it is its own base model; a converted file inside such a folder counts as well.
    """
    from .checkpoints import converted_config

    path = Path(path)
    if path.is_dir():
        weights = path / MODEL_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"{path} is a folder without {MODEL_FILE}: give a checkpoint file or a model folder")
        return weights, path
    if path.suffix.lower() == ".safetensors" and path.is_file() and (path.parent / "config.json").is_file():
        if converted_config(path) is not None:
            return path, path.parent
    return path, None


def default_base(what: str, given: str | Path | None, folder: Path | None) -> Path:
    """``base_model`` if given, else the model folder; a clear error when neither."""
    if given is not None:
        return Path(given)
    if folder is not None:
        return folder
    raise ValueError(f"{what}: base_model is required (the base VLM folder with config.json and tokenizer files), "
                     f"unless the checkpoint is a model folder that carries them")


def ae_base_of(folder: Path | None) -> Path | None:
    """The base folder of a model folder's VGT-AE encoder: ``ae_base/`` when present, else the folder itself."""
    if folder is None:
        return None
    sub = folder / AE_BASE_DIR
    return sub if (sub / "config.json").is_file() else folder


def stored_sampling(path: str | Path) -> dict[str, Any]:
    """The sampling defaults a converted checkpoint records (its config's ``sampling``): ``order``, the token order
    it was trained on ("random" for VGT, the default; "raster"), ``acc_ratio`` when it recommends one, and
    ``preset`` (a name of ``presets.PRESETS``) when a measurement found a better sampler than the reference."""
    from .checkpoints import converted_config
    from .orders import ORDERS
    from .presets import PRESETS

    cfg = converted_config(path) if Path(path).suffix == ".safetensors" else None
    raw = (cfg or {}).get("sampling") or {}
    order, acc = raw.get("order", "random"), raw.get("acc_ratio")
    if order not in ORDERS:
        raise ValueError(f"{path}: its config's sampling.order is {order!r}, expected one of {list(ORDERS)}")
    if acc is not None and (isinstance(acc, bool) or not isinstance(acc, int) or acc < 1):
        raise ValueError(f"{path}: its config's sampling.acc_ratio is {acc!r}, expected an integer >= 1")
    preset = raw.get("preset")
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"{path}: its config's sampling.preset is {preset!r}, expected one of {list(PRESETS)}")
    return {"order": order, "acc_ratio": acc, "preset": preset}



def stored_decoder_config(path: str | Path) -> dict[str, Any] | None:
    """The DC-AE decoder config a converted checkpoint carries in its JSON config, if any."""
    from .checkpoints import converted_config

    cfg = converted_config(path) if Path(path).suffix == ".safetensors" else None
    if not cfg:
        return None
    return (cfg.get("ae") or {}).get("decoder_config") or cfg.get("decoder_config")
