"""VGTPipeline: text-to-image (and editing) with VGT-AR + VGT-AE.

Tests, docs, the CLI and the ComfyUI nodes all go through this API::

    pipe = VGTPipeline.from_pretrained(ar_checkpoint, base_model=base_dir, dtype=torch.bfloat16, device=device)
    out = pipe.generate(["a red apple"], height=448, width=448, acc_ratio=4, generator=torch.Generator().manual_seed(0))
    out.images  # [B, 3, H, W] in [-1, 1]; out.latents [B, 32, H/s, W/s] (s = pipe.latent_stride: 28 or 32)
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import config as C
from .orders import make_groups
from .queryar import MODES, Callback, Context, DecodeSettings, NoiseFn, PrefixInputs
from .queryar import decode as decode_tokens

logger = logging.getLogger(__name__)

CFG_SCHEDULES = ("linear", "constant")
SAMPLERS = ("sde", "ode")


@dataclass
class PromptBatch:
    """Tokenised prompts: one conditional and one negative token list per image row."""

    prompts: list[str]
    negative_prompts: list[str]
    input_ids: list[list[int]]  # formatted prompt tokens, one list per prompt
    negative_ids: list[list[int]]  # formatted negative tokens, one list per prompt

    def __len__(self) -> int:
        return len(self.prompts)

    def repeat(self, n: int) -> PromptBatch:
        """Each prompt ``n`` times in a row (p1, p1, p2, p2, ...)."""
        rep = lambda xs: [x for x in xs for _ in range(n)]  # noqa: E731
        return PromptBatch(rep(self.prompts), rep(self.negative_prompts), rep(self.input_ids), rep(self.negative_ids))

    def select(self, rows: Sequence[int]) -> PromptBatch:
        pick = lambda xs: [xs[i] for i in rows]  # noqa: E731
        return PromptBatch(pick(self.prompts), pick(self.negative_prompts), pick(self.input_ids), pick(self.negative_ids))


@dataclass
class GenerationOutput:
    images: torch.Tensor | None  # [B, 3, H, W] in [-1, 1] (None when decode=False or no VGT-AE)
    latents: torch.Tensor  # [B, 32, h, w], float32, channel-LayerNormed
    groups: list[list[int]]  # the token groups in decoding order (flat raster indices)


def format_prompt(prompt: str) -> str:
    """The reference template for a positive prompt."""
    return C.INSTRUCTION.format(input=C.GENERATION.format(input=prompt.strip()))


def format_negative(negative: str | None) -> str:
    """The reference template for a negative prompt; None / the CFG string gives the official unconditional one."""
    if negative is None or negative == C.CFG_PROMPT:
        return C.INSTRUCTION.format(input=C.CFG_PROMPT)
    return C.INSTRUCTION.format(input=C.GENERATION.format(input=negative.strip()))


def pad_right(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists -> ids [R, T] long, mask [R, T] bool."""
    t = max(len(r) for r in rows)
    ids = torch.full((len(rows), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), t), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = True
    return ids, mask


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on accelerators that support it, fp16 on other accelerators, fp32 on the CPU."""
    if device.type == "cpu":
        return torch.float32
    if device.type == "mps":
        return torch.float16
    is_bf16 = getattr(getattr(torch, device.type, None), "is_bf16_supported", None)
    return torch.bfloat16 if (is_bf16 is None or is_bf16()) else torch.float16


class VGTPipeline:
    """VGT-AR text-to-image with QueryAR parallel decoding, plus VGT-AE decoding of the result."""

    def __init__(self, ar, tokenizer, ae=None):
        from .backbones import get_family

        self.ar = ar  # VGTARModel
        self.tokenizer = tokenizer
        self.ae = ae  # VGTAutoencoder or None
        self.adapter = get_family(ar.family)
        self._start_ids = self.adapter.image_start_ids(tokenizer)
        if ae is not None:
            check_compatible(ar, ae)

    # ------------------------------------------------------------------ properties
    @property
    def family(self) -> str:
        return self.ar.family

    @property
    def device(self) -> torch.device:
        return self.ar.device

    @property
    def dtype(self) -> torch.dtype:
        return self.ar.dtype

    @property
    def max_latent_size(self) -> tuple[int, int]:
        return tuple(self.ar.config.query_grid)

    @property
    def latent_stride(self) -> int:
        """Pixels per latent token side (28 for the official families, 32 for Qwen3-VL's patch 16)."""
        return self.ar.latent_stride

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        ar_checkpoint: str | Path,
        *,
        ae: Any = None,
        base_model: str | Path | None = None,
        ae_base_model: str | Path | None = None,
        decoder_config: Any = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        attn_implementation: str = "sdpa",
        prefer_ema: bool = True,
    ) -> VGTPipeline:
        """Load an official VGT-AR checkpoint (or a converted one, or a model folder) on top of the base VLM folder.

        ``base_model`` supplies the config and the tokenizer; every weight comes from the checkpoint. A model folder
        (``model.safetensors`` beside the base's config and tokenizer files, as training exports) is its own base
        model. Without ``ae``, the VGT-AE embedded in the AR checkpoint is used (``ae_base_model`` = the VLM folder
        its encoder came from, needed for InternVL3 whose AE uses the 1B model; defaults to ``base_model``), with the
        decoder config stored in the checkpoint when ``decoder_config`` is not given.
        """
        from .loading import (
            ae_base_of,
            default_base,
            load_ar_model,
            load_embedded_ae,
            resolve_model_path,
            stored_decoder_config,
        )

        weights, folder = resolve_model_path(ar_checkpoint)
        base_model = default_base(str(ar_checkpoint), base_model, folder)
        device = torch.device(device) if device is not None else torch.device("cpu")
        dtype = dtype or default_dtype(device)
        ar, extras = load_ar_model(
            weights, base_model=base_model, dtype=dtype, device=device,
            attn_implementation=attn_implementation, prefer_ema=prefer_ema,
        )
        if ae is None and extras.get("ae_state_dict"):
            ae = load_embedded_ae(
                extras["ae_state_dict"], family=ar.family,
                base_model=ae_base_model or (ae_base_of(folder) if folder == base_model else None) or base_model,
                decoder_config=decoder_config if decoder_config is not None else stored_decoder_config(weights),
                dtype=dtype, device=device,
            )
        from .backbones import get_family

        tokenizer = get_family(ar.family).load_tokenizer(base_model)
        return cls(ar, tokenizer, ae)

    def to(self, device=None, dtype=None) -> VGTPipeline:
        self.ar.to(device=device, dtype=dtype)
        if self.ae is not None:
            self.ae.to(device=device, dtype=dtype)
        return self

    # ------------------------------------------------------------------ prompts
    def encode_prompts(
        self, prompts: str | Sequence[str], negative_prompts: str | Sequence[str | None] | None = None
    ) -> PromptBatch:
        """Template and tokenise prompts (cheap, no model call). None negatives = the official unconditional one."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError("prompts is empty: give at least one prompt")
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise TypeError(f"prompts[{i}] must be a string, got {type(p).__name__}")
        if negative_prompts is None or isinstance(negative_prompts, str):
            negs = [negative_prompts] * len(prompts)
        else:
            negs = list(negative_prompts)
            if len(negs) != len(prompts):
                raise ValueError(f"got {len(negs)} negative prompts for {len(prompts)} prompts: give one per prompt")
        enc = lambda s: self.tokenizer.encode(s, add_special_tokens=True)  # noqa: E731
        return PromptBatch(
            prompts=prompts,
            negative_prompts=[n if n is not None else C.CFG_PROMPT for n in negs],
            input_ids=[enc(format_prompt(p)) for p in prompts],
            negative_ids=[enc(format_negative(n)) for n in negs],
        )

    def _prefix(self, batch: PromptBatch, with_cfg: bool) -> PrefixInputs:
        rows = batch.input_ids + (batch.negative_ids if with_cfg else [])
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id or 0
        ids, mask = pad_right(rows, pad_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        start = torch.tensor(self._start_ids, dtype=torch.long, device=self.device)
        return PrefixInputs(self.ar.embed_tokens(ids), mask, self.ar.embed_tokens(start))

    # ------------------------------------------------------------------ generation
    @torch.inference_mode()
    def generate(
        self,
        prompts: str | Sequence[str] | PromptBatch,
        negative_prompts: str | Sequence[str | None] | None = None,
        *,
        height: int = 448,
        width: int = 448,
        num_images_per_prompt: int = 1,
        cfg_scale: float = 4.5,
        cfg_schedule: str = "linear",
        num_flow_steps: int = 30,
        acc_ratio: int = 1,
        order: str | Sequence[Sequence[int]] = "random",
        order_seed: int | None = None,
        sampler: str = "sde",
        mode: str = "reference",
        generator: torch.Generator | None = None,
        noise_fn: NoiseFn | None = None,
        context: tuple[torch.Tensor, torch.Tensor] | None = None,
        callback: Callback | None = None,
        decode: bool = True,
        output_size: tuple[int, int] | None = None,
        last_step_size: float = 0.04,
        interleave: bool | None = None,
    ) -> GenerationOutput:
        """Generate images; see the module docstring and README for every option.

        ``context=(latents [B,32,h,w], generate_mask [B,h,w] or [h,w] bool)`` regenerates only the True tokens, with
        the others as known context (editing). ``order_seed`` (default: the generator's seed) fixes a random order.
        """
        h, w = self.check_size(height, width)
        self._check_options(cfg_scale, cfg_schedule, num_flow_steps, acc_ratio, sampler, mode, num_images_per_prompt)
        batch = prompts if isinstance(prompts, PromptBatch) else self.encode_prompts(prompts, negative_prompts)
        batch = batch.repeat(num_images_per_prompt) if num_images_per_prompt > 1 else batch
        if order_seed is None:
            order_seed = generator.initial_seed() if generator is not None else random.randrange(2**31)
        full_groups = make_groups(h, w, acc_ratio=acc_ratio, order=order, seed=order_seed)
        settings = DecodeSettings(
            cfg_scale=float(cfg_scale), cfg_schedule=cfg_schedule, num_flow_steps=int(num_flow_steps),
            sampler=sampler, last_step_size=last_step_size, mode=mode,
            interleave=(acc_ratio > 1 if isinstance(order, str) else max(len(g) for g in full_groups) > 1)
            if interleave is None else interleave,
            position_rule=self.adapter.position_rule,
        )
        run = dict(noise_fn=noise_fn, generator=generator, callback=callback)
        if context is None:
            latents = decode_tokens(self.ar, self._prefix(batch, cfg_scale > 1), h, w, full_groups, settings, **run)
            groups = [list(g) for g in full_groups]
        else:
            latents, groups = self._decode_with_context(batch, h, w, full_groups, acc_ratio, settings, context, run)
        images = self.decode_latents(latents, output_size) if decode and self.ae is not None else None
        return GenerationOutput(images=images, latents=latents, groups=groups)

    def _decode_with_context(self, batch, h, w, full_groups, acc_ratio, settings, context, run):
        from .editing import check_context, context_groups

        known, gen_mask = check_context(context, len(batch), h, w, stride=self.latent_stride)  # [B,32,h,w], [B,h*w]
        latents = known.to(device=self.device, dtype=torch.float32).clone()
        order = [i for g in full_groups for i in g]
        groups_used: list[list[int]] = []
        for rows, mask_row in _rows_by_mask(gen_mask):
            groups = context_groups(order, mask_row, acc_ratio if isinstance(acc_ratio, int) else 1)
            if not groups:
                continue  # nothing to generate for these rows: a documented no-op
            known_idx = torch.tensor([i for i in range(h * w) if not mask_row[i]], dtype=torch.long)
            ctx_lat = known[rows].flatten(2).transpose(1, 2)[:, known_idx]  # [b, K, 32]
            ctx = Context(indices=known_idx, latents=ctx_lat.to(self.device))
            sub = batch.select(rows)
            out = decode_tokens(self.ar, self._prefix(sub, settings.cfg_scale > 1), h, w, groups, settings, context=ctx, **run)
            latents[rows] = out
            groups_used = groups
        return latents, groups_used

    def decode_latents(self, latents: torch.Tensor, output_size: tuple[int, int] | None = None) -> torch.Tensor:
        """VGT-AE decode -> images [B, 3, H, W] in [-1, 1]; ``output_size`` resizes as the reference does."""
        if self.ae is None:
            raise RuntimeError("this pipeline has no VGT-AE: load one to decode latents to images")
        images = self.ae.decode(latents.to(device=self.ae.device))
        if output_size is not None and tuple(images.shape[-2:]) != tuple(output_size):
            images = F.interpolate(images, size=tuple(output_size), mode="bilinear", align_corners=False)
        return images

    # ------------------------------------------------------------------ validation
    def check_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) in px -> latent (h, w); a clear error for sizes off the stride grid or beyond the queries."""
        s = self.latent_stride
        mh, mw = self.max_latent_size
        for name, v, m in (("height", height, mh), ("width", width, mw)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"{name} must be an int number of pixels, got {v!r}")
            if v < s or v % s:
                lo, hi = max(s, v // s * s), (v // s + 1) * s
                raise ValueError(f"{name}={v} is not a multiple of {s}: use {lo} or {hi} (this model makes one latent "
                                 f"token per {s}x{s} px)")
            if v // s > m:
                raise ValueError(f"{name}={v} exceeds the query grid: at most {m * s} px ({m} tokens of {s} px)")
        return height // s, width // s

    @staticmethod
    def _check_options(cfg_scale, cfg_schedule, steps, acc_ratio, sampler, mode, n_images) -> None:
        if cfg_scale < 1:
            raise ValueError(f"cfg_scale={cfg_scale} must be >= 1 (1 disables classifier-free guidance)")
        if cfg_schedule not in CFG_SCHEDULES:
            raise ValueError(f"cfg_schedule={cfg_schedule!r}: expected one of {CFG_SCHEDULES}")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"num_flow_steps={steps!r} must be a positive int (30 is the reference default)")
        if not isinstance(acc_ratio, int) or acc_ratio < 1:
            raise ValueError(f"acc_ratio={acc_ratio!r} must be an int >= 1 (tokens decoded per step)")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler={sampler!r}: expected one of {SAMPLERS}")
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: expected one of {MODES}")
        if not isinstance(n_images, int) or n_images < 1:
            raise ValueError(f"num_images_per_prompt={n_images!r} must be an int >= 1")


def check_compatible(ar, ae) -> None:
    """A VGT-AR model and a VGT-AE work together only with the same family and the same latent stride."""
    from .backbones import display_name

    if getattr(ae, "family", ar.family) != ar.family:
        raise ValueError(f"the VGT-AE is {display_name(ae.family)} but the VGT-AR model is {display_name(ar.family)}: "
                         f"use the VGT-AE of the same family")
    if getattr(ae, "stride", ar.latent_stride) != ar.latent_stride:
        raise ValueError(f"the VGT-AE has a latent stride of {ae.stride} px per token but the VGT-AR model "
                         f"{ar.latent_stride}: they come from different base models")


def _rows_by_mask(gen_mask: torch.Tensor) -> list[tuple[list[int], list[bool]]]:
    """Group batch rows that share the same token mask (each group is decoded in one batch)."""
    buckets: dict[tuple[bool, ...], list[int]] = {}
    for r in range(gen_mask.shape[0]):
        buckets.setdefault(tuple(gen_mask[r].tolist()), []).append(r)
    return [(rows, list(key)) for key, rows in buckets.items()]
