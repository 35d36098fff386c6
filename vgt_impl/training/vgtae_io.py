"""VGT-AE starting points and exports for training.

- continue from a VGT-AE checkpoint (official ``.pth`` / ``.safetensors``, or one this training exported);
- the distillation teacher: ``teacher.safetensors`` beside the checkpoint (what export writes), the ``teacher.*`` /
  ``teacher_mlp1.*`` tensors of an official InternVL3 checkpoint, or else a frozen copy of the starting encoder;
- export: a model folder that ``VGTAutoencoder.from_pretrained`` opens directly: ``model.safetensors`` in the
  converted layout with its JSON config (family, ``encoder_norm``, the DC-AE ``decoder_config``) in the metadata and
  a ``model.json`` sidecar, the base VLM's ``config.json`` (+ tokenizer / preprocessor files) and, for stage 2,
  the teacher's weights in ``teacher.safetensors``.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..autoencoder import VGTAutoencoder
from ..backbones import get_family
from ..checkpoints import detect_variant, load_checkpoint_file, load_strict

logger = logging.getLogger(__name__)

TEACHER_FILE = "teacher.safetensors"


def init_new_layers(ae: VGTAutoencoder, generator: torch.Generator | None = None) -> None:
    """Fresh ResBlocks and down-MLP as the reference initialises them: trunc-normal(0.02) weights, zero biases."""
    for module in (*ae.down_blocks, ae.down_mlp):
        for m in module.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, generator=generator)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def _official_teacher(sd: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor] | None:
    """``teacher.*`` + ``teacher_mlp1.*`` of an official InternVL3 checkpoint -> our encoder keys (no prefix)."""
    raw = {"encoder." + k[len("teacher."):]: v for k, v in sd.items() if k.startswith("teacher.")}
    raw.update({"mlp1." + k[len("teacher_mlp1."):]: v for k, v in sd.items() if k.startswith("teacher_mlp1.")})
    if not raw:
        return None
    mapped, _ = get_family(family).map_ae_state_dict(raw)
    return {k[len("encoder."):]: v for k, v in mapped.items() if k.startswith("encoder.")}


def load_teacher(ae: VGTAutoencoder, checkpoint: str | Path, sd: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The frozen distillation teacher for continuing from ``checkpoint`` (see the module docstring for the order)."""
    teacher = copy.deepcopy(ae.encoder)
    side = Path(checkpoint).parent / TEACHER_FILE
    weights, source = None, "a copy of the checkpoint's encoder"
    if side.is_file():
        weights, source = load_checkpoint_file(side), str(side)
    elif sd is not None:
        weights = _official_teacher(sd, ae.family)
        source = "the checkpoint's teacher tensors" if weights else source
    if weights is not None:
        weights = {k: v.to(next(teacher.parameters()).dtype) for k, v in weights.items()}
        load_strict(teacher, weights, what=f"VGT-AE teacher ({source})")
    else:
        logger.warning("no teacher weights beside %s: the distillation teacher is a frozen copy of its encoder "
                       "(the base VLM's own encoder is the reference's teacher)", checkpoint)
    logger.info("distillation teacher: %s", source)
    return teacher.eval().requires_grad_(False)


def vgtae_from_checkpoint(
    checkpoint: str | Path, *, base_model: str | Path, decoder_config: Any = None, dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu", with_teacher: bool = True,
) -> tuple[VGTAutoencoder, nn.Module | None]:
    """A trainable VGT-AE (fp32 master weights by default) from a checkpoint, and its teacher when asked for."""
    ae = VGTAutoencoder.from_pretrained(checkpoint, base_model=base_model, decoder_config=decoder_config,
                                        dtype=dtype, device=device)
    ae.train().requires_grad_(True)
    teacher = None
    if with_teacher:
        sd = load_checkpoint_file(checkpoint)
        teacher = load_teacher(ae, checkpoint, sd if detect_variant(sd).has_teacher else None)
    return ae, teacher


def export_vgtae(ae: VGTAutoencoder, folder: str | Path, *, base_model: str | Path, teacher: Any = None,
                 extra: dict[str, Any] | None = None, dtype: torch.dtype | None = None,
                 state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a VGT-AE model folder (see the module docstring); returns the ``model.safetensors`` path.

    ``state`` replaces ``ae``'s own tensors (e.g. EMA weights); ``dtype`` casts floating tensors.
    """
    from .export import write_model_folder

    state = state if state is not None else ae.state_dict()
    sd = {k: v.detach().to("cpu", dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype)
          for k, v in state.items()}
    info = detect_variant(sd)
    config = {"format": "comfyui-vgt/1", "kind": "ae", "family": ae.family, "variant": info.to_dict(),
              "encoder_norm": bool(ae.config.encoder_norm), "latent_stride": ae.stride,
              "decoder_config": ae.config.decoder_config, "source": "vgt train ae", **(extra or {})}
    folder = write_model_folder(Path(folder), sd, config, base_model=Path(base_model))
    if teacher is not None:
        from ..checkpoints import write_safetensors

        write_safetensors(folder / TEACHER_FILE, teacher.state_dict(),
                          {"format": "pt", "what": "VGT-AE distillation teacher"})
    return folder / "model.safetensors"


# ---------------------------------------------------------------------------------------------------------- tasks
def new_vgtae(base_model: str | Path, dcae: str | Path, *, attn_implementation: str = "sdpa",
              device: str | torch.device = "cpu") -> VGTAutoencoder:
    """A new VGT-AE (fp32, train mode): the base VLM's vision tower + merger / projector with its hub weights, fresh
    ResBlocks and down-MLP (reference init), and the decoder of a diffusers ``AutoencoderDC`` folder with its weights.
    """
    from diffusers import AutoencoderDC

    from ..autoencoder import load_decoder_config
    from ..backbones import load_base
    from ..backbones.base_weights import load_base_weights
    from ..config import AEConfig

    dcae = Path(dcae)
    if not (dcae / "config.json").is_file():
        raise FileNotFoundError(f"model.dcae={dcae}: expected a diffusers AutoencoderDC folder (config.json + weights)")
    dec_cfg = load_decoder_config(dcae)
    if dec_cfg.get("latent_channels") != VGTAutoencoder.latent_channels:
        raise ValueError(f"model.dcae={dcae} has {dec_cfg.get('latent_channels')} latent channels; a VGT-AE decoder takes "
                         f"{VGTAutoencoder.latent_channels}: train the DC-AE with latent_channels "
                         f"{VGTAutoencoder.latent_channels}")
    fam, base_cfg = load_base(base_model)
    hidden = base_cfg.extra.get("llm_hidden_size", base_cfg.text_config.hidden_size)  # merger / mlp1 output width
    cfg = AEConfig(family=fam.name, hidden_size=hidden, encoder_norm=False, decoder_config=dec_cfg)
    with torch.device(device):
        ae = VGTAutoencoder(cfg, base_cfg, attn_implementation=attn_implementation)
    load_strict(ae.encoder, load_base_weights(base_model, "vision", dtype=torch.float32),
                what=f"{base_model} (vision encoder weights)")
    decoder = AutoencoderDC.from_pretrained(str(dcae), torch_dtype=torch.float32).decoder
    load_strict(ae.decoder, decoder.state_dict(), what=f"{dcae} (DC-AE decoder)")
    init_new_layers(ae)
    logger.info("new %s VGT-AE: encoder from %s, decoder from %s", fam.display_name, base_model, dcae)
    return ae.train()


def build_vgtae(mc) -> tuple[VGTAutoencoder, nn.Module | None, dict[str, Any]]:
    """The ``ae`` task's starting point from its ``model`` config -> (autoencoder, teacher or None, sources)."""
    if mc.init == "base":
        if not mc.base_model or not mc.dcae:
            raise ValueError("model.init=base needs model.base_model (a base VLM folder with weights) and model.dcae "
                             "(a diffusers AutoencoderDC folder, e.g. one `vgt train dcae` exported)")
        ae = new_vgtae(mc.base_model, mc.dcae, attn_implementation=mc.attn_implementation)
        teacher = _teacher_file(ae, mc.teacher) if mc.teacher else copy.deepcopy(ae.encoder).eval().requires_grad_(False)
        return ae, teacher if mc.loss.distill_weight > 0 else None, {"base_model": str(mc.base_model),
                                                                       "checkpoint": None, "dcae": str(mc.dcae)}
    if mc.init != "checkpoint":
        raise ValueError(f"model.init={mc.init!r}: expected checkpoint or base")
    if not mc.checkpoint:
        raise ValueError("model.init=checkpoint needs model.checkpoint (a VGT-AE .pth / .safetensors or model folder)")
    from ..loading import ae_base_of, resolve_model_path

    ckpt, folder = resolve_model_path(mc.checkpoint)
    if not ckpt.is_file():
        raise FileNotFoundError(f"model.checkpoint={mc.checkpoint}: {ckpt} does not exist")
    base = Path(mc.base_model) if mc.base_model else ae_base_of(folder)
    if base is None:
        raise ValueError(f"model.base_model is needed for {ckpt}: the base VLM folder of its vision encoder "
                         f"(config.json), e.g. Qwen2.5-VL-3B-Instruct or InternVL3-1B")
    ae, teacher = vgtae_from_checkpoint(ckpt, base_model=base, decoder_config=mc.decoder_config,
                                        with_teacher=mc.loss.distill_weight > 0 and not mc.teacher)
    if mc.loss.distill_weight > 0 and mc.teacher:
        teacher = _teacher_file(ae, mc.teacher)
    return ae, teacher, {"base_model": str(base), "checkpoint": str(ckpt)}


def _teacher_file(ae: VGTAutoencoder, path: str | Path) -> nn.Module:
    teacher = copy.deepcopy(ae.encoder)
    load_strict(teacher, load_checkpoint_file(path), what=f"teacher weights {path}")
    return teacher.eval().requires_grad_(False)


def export_vgtae_weights(task, folder: Path, weights: dict[str, torch.Tensor]) -> Path:
    """The ``ae`` task's export: ``weights`` (the loop's, EMA by default, in its export dtype; names ``ae.*``,
    ``teacher.*``) over the task's own tensors -> model folder."""
    dtype = next((v.dtype for k, v in weights.items() if k.startswith("ae.") and v.is_floating_point()), None)
    state = _prefixed(task.ae.state_dict(), weights, "ae.", dtype)
    ae = copy.deepcopy(task.ae).cpu()  # carries the config; its tensors are not what is written
    teacher = None
    if task.teacher is not None and task.cfg.export_teacher:
        teacher = _StateOnly(_prefixed(task.teacher.state_dict(), weights, "teacher.", dtype))
    extra = {"training": {"stage": task.cfg.stage, "encoder_norm": task.cfg.encoder_norm,
                          "noise_gamma": task.cfg.noise_gamma, "from": task.sources.get("checkpoint")}}
    return export_vgtae(ae, folder, base_model=task.sources["base_model"], teacher=teacher, extra=extra,
                        state=state).parent


def _prefixed(own: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], prefix: str,
              dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """A module's state with the loop's ``prefix``-named weights taking precedence, floats in ``dtype``."""
    out = {}
    for k, v in own.items():
        t = weights.get(prefix + k, v).detach().cpu()
        out[k] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
    return out


class _StateOnly:
    """Something with a ``state_dict()`` (the teacher's tensors for export)."""

    def __init__(self, state: dict[str, torch.Tensor]):
        self._state = state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state
