"""VGT-AE: the VLM's vision encoder -> 3 residual MLPs -> MLP to 32 channels -> channel LayerNorm; DC-AE decoder.

One latent token per ``stride`` x ``stride`` pixels (ViT patch x merge of the base VLM: 28 for the official families,
32 for Qwen3-VL). ``encode`` takes images in [-1, 1]; ``decode`` returns images in [-1, 1].
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import detect_family_from_dir, display_name, get_family
from .backbones.common import rebuild_meta_buffers
from .config import LATENT_CHANNELS, LATENT_STRIDE, AEConfig
from .validation import (
    check_attn_implementation,
    check_device,
    check_dtype,
    check_finite,
    check_nonempty,
    check_range,
    check_tensor,
)

logger = logging.getLogger(__name__)

# The official DC-AE f32c32 (SANA 1.1) decoder configuration (mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers), so a user
# needs no extra folder for it. Only decoder fields matter; the encoder is never built at full size.
DCAE_F32C32: dict[str, Any] = {
    "in_channels": 3, "latent_channels": 32, "attention_head_dim": 32,
    "encoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock", "EfficientViTBlock", "EfficientViTBlock"],
    "decoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock", "EfficientViTBlock", "EfficientViTBlock"],
    "encoder_block_out_channels": [128, 256, 512, 512, 1024, 1024],
    "decoder_block_out_channels": [128, 256, 512, 512, 1024, 1024],
    "encoder_layers_per_block": [2, 2, 2, 3, 3, 3], "decoder_layers_per_block": [3, 3, 3, 3, 3, 3],
    "encoder_qkv_multiscales": [[], [], [], [5], [5], [5]], "decoder_qkv_multiscales": [[], [], [], [5], [5], [5]],
    "upsample_block_type": "interpolate", "downsample_block_type": "Conv", "decoder_norm_types": "rms_norm",
    "decoder_act_fns": "silu", "scaling_factor": 0.41407,
}


class ResBlock(nn.Module):
    """x + MLP(LN(x)) at the vision-feature width."""

    def __init__(self, channels: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.LayerNorm(channels, eps=1e-6), nn.Linear(channels, channels), nn.GELU(), nn.Linear(channels, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(x)


def load_decoder_config(decoder_config: Any) -> dict[str, Any]:
    """A diffusers AutoencoderDC config: dict, folder with config.json, config.json path, or None (built-in f32c32).

    Anything else (a VLM folder's config, unknown fields, latents other than 32 channels) is an error naming it.
    """
    if decoder_config is None:
        return dict(DCAE_F32C32)
    if isinstance(decoder_config, dict):
        return _check_decoder_config(dict(decoder_config), "decoder_config")
    if not isinstance(decoder_config, (str, Path)):
        raise TypeError(f"decoder_config must be a dict, a folder or a config.json path, got {type(decoder_config).__name__}")
    path = Path(decoder_config)
    path = path / "config.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"DC-AE decoder config {path} not found (a diffusers AutoencoderDC folder or config.json)")
    import json

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"DC-AE decoder config {path} is not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise ValueError(f"DC-AE decoder config {path} is not a JSON object")
    cls = raw.get("_class_name")
    if "model_type" in raw or (cls is not None and cls != "AutoencoderDC"):
        kind = f"a {raw['model_type']!r} model config" if "model_type" in raw else f"a {cls} config"
        raise ValueError(f"DC-AE decoder config {path} is {kind}, not a DC-AE (AutoencoderDC) one: pass the folder of "
                         f"mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers, or nothing for the built-in f32c32 config")
    return _check_decoder_config({k: v for k, v in raw.items() if not k.startswith("_")}, str(path))


def _check_decoder_config(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    import inspect

    from diffusers import AutoencoderDC

    known = set(inspect.signature(AutoencoderDC.__init__).parameters) - {"self"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"DC-AE decoder config {where} has fields AutoencoderDC does not know: {', '.join(unknown)} "
                         f"(is it a DC-AE config?)")
    if cfg.get("latent_channels", LATENT_CHANNELS) != LATENT_CHANNELS:
        raise ValueError(f"DC-AE decoder config {where} has {cfg['latent_channels']} latent channels; a VGT-AE decoder "
                         f"takes {LATENT_CHANNELS}: use the f32c32 DC-AE config")
    return cfg


def check_decoder_fits(cfg: dict[str, Any], shape: Any, where: str, prefix: str = "decoder.") -> None:
    """The DC-AE decoder config builds the decoder the weights were saved from (from a few shapes, before anything is
    built); ``shape(key)`` gives a checkpoint tensor's shape, or None when it has no such key."""
    out = list(cfg.get("decoder_block_out_channels") or [])
    if not out:
        return
    found = {"conv_in output channels": (shape(prefix + "conv_in.weight"), 0, out[-1]),
             "conv_out input channels": (shape(prefix + "conv_out.weight"), 1, out[0])}
    for what, (s, dim, want) in found.items():
        if s is not None and s[dim] != want:
            raise ValueError(
                f"the DC-AE decoder config does not match the decoder in {where}: its {what} are {s[dim]}, the config "
                f"gives {want}: pass the decoder config it was trained with (the folder of "
                f"mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers, or --decoder / decoder_config)"
            )


def nearest_sizes(v: int, stride: int = LATENT_STRIDE) -> str:
    """"56 or 84": the multiples of ``stride`` around ``v`` (for size errors); one token's size below it."""
    if v < stride:
        return str(stride)
    lo, hi = v // stride * stride, (v // stride + 1) * stride
    return f"{lo} or {hi}" if lo != v else str(v)


class VGTAutoencoder(nn.Module):
    """VGT-AE (see module docstring). Build with :meth:`from_pretrained`; the constructor builds an empty network."""

    latent_channels = LATENT_CHANNELS

    def __init__(self, config: AEConfig, base_cfg: Any, *, attn_implementation: str = "sdpa"):
        super().__init__()
        from diffusers import AutoencoderDC

        fam = get_family(config.family)
        stride = fam.latent_stride(base_cfg)
        if config.latent_stride is not None and int(config.latent_stride) != stride:
            raise ValueError(f"AEConfig.latent_stride={config.latent_stride} but the base VLM's vision config gives "
                             f"{stride} px per token: build the VGT-AE from the base model it was trained with")
        self.config = dataclasses.replace(config, latent_stride=stride)
        mean, std = fam.pixel_norm(base_cfg)
        self.pixel_mean, self.pixel_std = tuple(mean), tuple(std)  # fp32 constants, applied in encode
        self.encoder = fam.build_vision_encoder(base_cfg, attn_implementation=attn_implementation,
                                                out_hidden=config.hidden_size)
        self.down_blocks = nn.ModuleList(ResBlock(config.hidden_size) for _ in range(config.num_res_blocks))
        self.down_mlp = nn.Sequential(
            nn.LayerNorm(config.hidden_size),
            nn.Linear(config.hidden_size, config.embed_dim),
            nn.GELU(),
            nn.Linear(config.embed_dim, config.embed_dim),
        )
        self.decoder = AutoencoderDC(**config.decoder_config).decoder

    # ------------------------------------------------------------------ properties
    @property
    def family(self) -> str:
        return self.config.family

    @property
    def stride(self) -> int:
        """Pixels per latent token side."""
        return int(self.config.latent_stride)

    @property
    def dtype(self) -> torch.dtype:
        return self.down_mlp[1].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.down_mlp[1].weight.device

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls, checkpoint: str | Path, *, base_model: str | Path | None = None, decoder_config: Any = None,
        dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", attn_implementation: str = "sdpa",
    ) -> VGTAutoencoder:
        """Load an official VGT-AE checkpoint (``.pth``/``.safetensors``), or the VGT-AE inside a VGT-AR checkpoint.

        ``checkpoint`` may be a model folder (its own base model; its ``ae_base/`` when present); the decoder config
        stored in a converted checkpoint is used when ``decoder_config`` is not given, and its ``encoder_norm`` says
        whether the latent is LayerNormed (stage-1 VGT-AE training has none). Device, dtype, attention kernel and the
        decoder config are checked before the checkpoint is read.
        """
        from .checkpoints import converted_config, detect_variant, load_checkpoint_file
        from .loading import ae_base_of, default_base, resolve_model_path, stored_decoder_config

        _check_runtime(dtype, device, attn_implementation)
        load_decoder_config(decoder_config)  # a wrong decoder config fails before the checkpoint is read
        checkpoint, folder = resolve_model_path(checkpoint)
        base_model = default_base(str(checkpoint), base_model, ae_base_of(folder))
        if decoder_config is None:
            decoder_config = stored_decoder_config(checkpoint)
        sd = load_checkpoint_file(checkpoint, lazy=True)  # structure only: from_state_dict reads what it keeps
        info = detect_variant(sd)
        stored = converted_config(checkpoint)  # what a converted / trained file recorded about itself
        stored = stored if isinstance(stored, dict) else {}
        stride = stored.get("latent_stride", (stored.get("ae") or {}).get("latent_stride"))
        if info.kind in ("ar", "converted_ar"):
            prefix = "vgt_ae." if info.kind == "ar" else "ae."
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            if not sd:
                raise ValueError(f"{checkpoint} is a VGT-AR checkpoint without an embedded VGT-AE")
        return cls.from_state_dict(sd, base_model=base_model, decoder_config=decoder_config, dtype=dtype,
                                   device=device, attn_implementation=attn_implementation, what=str(checkpoint),
                                   encoder_norm=bool(stored.get("encoder_norm", True)), latent_stride=stride)

    @classmethod
    def from_state_dict(
        cls, sd: dict[str, torch.Tensor], *, base_model: str | Path, decoder_config: Any = None,
        dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", attn_implementation: str = "sdpa",
        what: str = "VGT-AE checkpoint", encoder_norm: bool = True, latent_stride: int | None = None,
    ) -> VGTAutoencoder:
        """Build from official (or converted) VGT-AE weights; sizes come from the weights' shapes.

        ``latent_stride`` (what a converted checkpoint's config recorded) must agree with the base folder's.
        """
        from .checkpoints import detect_variant, load_strict
        from .loading import check_base_family

        dtype, device = _check_runtime(dtype, device, attn_implementation)
        info = detect_variant(sd)
        if info.kind not in ("ae", "converted_ae"):
            raise ValueError(f"{what} is not a VGT-AE state dict (it looks like {info.kind})")
        check_base_family(info.family, base_model, what, fix=(
            f"use the base model of this VGT-AE's encoder ({get_family(info.family).ae_base_model}), or the VGT-AE "
            f"of {display_name(detect_family_from_dir(base_model))}"))
        fam = get_family(info.family)
        base_cfg = fam.load_base_config(base_model)
        if not isinstance(decoder_config, dict) and decoder_config is None and "decoder.conv_in.weight" in sd:
            logger.debug("using the built-in DC-AE f32c32 decoder config")
        dec_cfg = load_decoder_config(decoder_config)
        check_decoder_fits(dec_cfg, lambda k: tuple(sd[k].shape) if k in sd else None, what)
        config = AEConfig(family=info.family, embed_dim=info.latent_channels, hidden_size=info.ae_width,
                          encoder_norm=encoder_norm, decoder_config=dec_cfg, latent_stride=latent_stride)
        mapped, dropped = fam.map_ae_state_dict(sd) if info.family else (sd, {})
        with torch.device("meta"):
            model = cls(config, base_cfg, attn_implementation=attn_implementation)
        from .checkpoints import check_fits, materialize

        what = f"{what} ({fam.display_name} VGT-AE)"
        check_fits(model, mapped, what=what)  # a mismatch is reported before any weight is read
        mapped = materialize(mapped, dtype, what=what)  # tensor by tensor, straight from the file when it can
        load_strict(model, mapped, dropped=dropped, what=what, assign=True)
        rebuild_meta_buffers(model, device)
        return model.to(device=device).eval().requires_grad_(False)

    # ------------------------------------------------------------------ encode / decode
    def check_images(self, images: torch.Tensor, name: str = "images") -> torch.Tensor:
        """Validate encoder input -> float images in [-1, 1].

        Contract: float images in [-1, 1] (a tolerance of 1e-3 absorbs resize rounding); ``uint8`` images are
        converted explicitly (x / 127.5 - 1, the CLI's mapping). Anything else (0..255 floats, other integer types,
        NaN/inf, empty batches, sizes off the 28 grid) is an error naming the input.
        """
        check_tensor(name, images, shape_hint="[B, 3, H, W]")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{name} must be a [B, 3, H, W] tensor in [-1, 1], got shape {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            images = images.float() / 127.5 - 1.0  # 0..255 -> [-1, 1], as the CLI's image loader
        elif not images.is_floating_point():
            raise TypeError(f"{name} has dtype {images.dtype}: expected float images in [-1, 1] (or uint8 in 0..255)")
        check_nonempty(name, images, "B, 3, H, W")
        h, w = images.shape[-2:]
        s = self.stride
        if h % s or w % s or h < s or w < s:
            raise ValueError(
                f"image size {h}x{w} is not a multiple of {s}: use height {nearest_sizes(h, s)} and width "
                f"{nearest_sizes(w, s)} (crop or resize the image first; this VGT-AE makes one token per {s}x{s} px)"
            )
        check_finite(name, images)
        check_range(name, images, -1.0, 1.0, " (VGT-AE takes images in [-1, 1]: for 0..255 values use x / 127.5 - 1, "
                    "for 0..1 values 2 * x - 1)")
        return images

    def check_latents(self, latents: torch.Tensor, name: str = "latents") -> None:
        check_tensor(name, latents, shape_hint=f"[B, {self.latent_channels}, h, w]")
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"VGT-AE decode expects {name} [B, {self.latent_channels}, h, w], got "
                             f"{tuple(latents.shape)}")
        if not latents.is_floating_point():
            raise TypeError(f"{name} has dtype {latents.dtype}: expected a float tensor")
        check_nonempty(name, latents, f"B, {self.latent_channels}, h, w")
        check_finite(name, latents)

    @torch.inference_mode()
    def encode(self, images: torch.Tensor, *, reference_nonneg_quirk: bool = False) -> torch.Tensor:
        """Images [B, 3, H, W] in [-1, 1] -> latents [B, 32, H/s, W/s] (float32, LayerNormed over channels).

        ``reference_nonneg_quirk`` reproduces the reference for an all-non-negative batch (treated as [0, 1] input;
        the InternVL one then skips normalisation). Off by default: inputs are always [-1, 1].
        """
        images = self.check_images(images)
        b, _, h, w = images.shape
        x = self.pixel_inputs(images, reference_nonneg_quirk=reference_nonneg_quirk)
        z = self.latent_tokens(self.features(x)).float()  # [B, hw, 32]
        if self.config.encoder_norm:
            z = F.layer_norm(z, (z.shape[-1],), eps=1e-6)  # channel LayerNorm, no affine
        _check_output("VGT-AE encode", "latents", z, self.dtype)
        return z.transpose(1, 2).reshape(b, -1, h // self.stride, w // self.stride)

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, 32, h, w] -> images [B, 3, s*h, s*w] in [-1, 1] (float32; the DC-AE's x32 output resized)."""
        self.check_latents(latents)
        x = self.decode_pixels(latents)
        _check_output("VGT-AE decode", "pixels", x, self.dtype)
        return x

    # ------------------------------------------------------------------ differentiable parts (encode / decode use them)
    def pixel_inputs(self, images: torch.Tensor, *, reference_nonneg_quirk: bool = False) -> torch.Tensor:
        """Images in [-1, 1] -> the vision encoder's normalised input (float32)."""
        x = images.to(device=self.device, dtype=torch.float32)
        mean = torch.tensor(self.pixel_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.pixel_std, device=x.device).view(1, 3, 1, 1)
        if reference_nonneg_quirk and bool(x.min() >= 0):
            return x if get_family(self.family).reference_nonneg_skips_norm else (x - mean) / std
        return ((x + 1.0) / 2.0 - mean) / std

    def features(self, x: torch.Tensor, encoder: nn.Module | None = None) -> torch.Tensor:
        """Normalised pixels -> vision features [B, hw, D] (encoder + merger / pixel shuffle + projector).

        ``encoder`` runs another module of the same architecture instead (a frozen copy, as a distillation teacher).
        """
        return get_family(self.family).vision_features(encoder or self.encoder, x.to(self.dtype))

    def latent_tokens(self, feats: torch.Tensor) -> torch.Tensor:
        """Vision features [B, hw, D] -> latent tokens [B, hw, 32] before the channel LayerNorm."""
        for block in self.down_blocks:
            feats = block(feats.to(self.dtype))
        return self.down_mlp(feats)

    def decode_pixels(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, 32, h, w] -> images [B, 3, s*h, s*w] (float32), differentiable."""
        h, w = latents.shape[-2:]
        x = self.decoder(latents.to(device=self.device, dtype=self.dtype)).float()  # [B, 3, 32h, 32w]
        if tuple(x.shape[-2:]) != (h * self.stride, w * self.stride):
            x = F.interpolate(x, size=(h * self.stride, w * self.stride), mode="bilinear", align_corners=False)
        return x

    def config_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.config.to_dict())


def _check_runtime(dtype: Any, device: Any, attn_implementation: Any) -> tuple[torch.dtype, torch.device]:
    """dtype, device and attention kernel are usable here (before any file is read or network built)."""
    check_attn_implementation(attn_implementation)
    return check_dtype(dtype), check_device(device)


def _check_output(what: str, name: str, x: torch.Tensor, dtype: torch.dtype) -> None:
    """Finite inputs can still overflow in fp16: never hand back NaN/inf as a result."""
    if not bool(torch.isfinite(x).all()):
        hint = " (float16 overflow: load the model in bfloat16 or float32)" if dtype == torch.float16 else \
            " (the checkpoint may hold NaN/inf weights: re-download it)"
        raise FloatingPointError(f"{what} produced non-finite {name}{hint}")
