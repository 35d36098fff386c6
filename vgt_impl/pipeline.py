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
from .integrators import SAMPLERS
from .orders import make_groups
from .queryar import MODES, Callback, Context, DecodeSettings, NoiseFn, PrefixInputs
from .queryar import decode as decode_tokens
from .sampling import FlowSampler
from .validation import (
    PromptTooLongError,
    check_choice,
    check_device,
    check_dtype,
    check_generator,
    check_int,
    check_prompts,
    check_real,
    check_size_px,
    verify_tokenizer,
)

logger = logging.getLogger(__name__)

CFG_SCHEDULES = ("linear", "constant")


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

    def __init__(self, ar, tokenizer, ae=None, default_order: str = "random", default_preset: str | None = None):
        from .backbones import get_family
        from .orders import ORDERS
        from .presets import PRESETS

        if default_order not in ORDERS:
            raise ValueError(f"default_order {default_order!r}: expected one of {list(ORDERS)}")
        if default_preset is not None and default_preset not in PRESETS:
            raise ValueError(f"default_preset {default_preset!r}: expected None or one of {list(PRESETS)}")
        self.ar = ar  # VGTARModel
        self.tokenizer = tokenizer
        self.ae = ae  # VGTAutoencoder or None
        self.default_order = default_order  # generate(order=None): the order the model was trained on
        # the sampling preset the model's record recommends (None: the reference sampler). generate() keeps its
        # explicit defaults; the CLI (no --preset) and the sampler node (preset "auto") follow this
        self.default_preset = default_preset
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
        model. ``ae``: a loaded VGTAutoencoder, a VGT-AE checkpoint path (loaded on ``ae_base_model``), or None for
        the VGT-AE embedded in the AR checkpoint (``ae_base_model`` = the VLM folder its encoder came from, needed for
        InternVL3 whose AE uses the 1B model; defaults to ``base_model``), with the decoder config stored in the
        checkpoint when ``decoder_config`` is not given.

        Everything cheap is checked before any network is built: device, dtype, attention kernel, the checkpoint's
        variant against the base model, the VGT-AE's family, the decoder config and the tokenizer (files present,
        template tokens, vocabulary against the checkpoint's embedding table).
        """
        from .autoencoder import VGTAutoencoder, _check_runtime, check_decoder_fits, load_decoder_config
        from .backbones import detect_family_from_dir
        from .loading import (
            ae_base_of,
            default_base,
            load_ar_model,
            load_embedded_ae,
            resolve_model_path,
            stored_decoder_config,
            stored_sampling,
        )

        device = check_device(device if device is not None else "cpu")
        dtype, _ = _check_runtime(dtype or default_dtype(device), device, attn_implementation)
        if ae is not None and not isinstance(ae, (VGTAutoencoder, str, Path)):
            raise TypeError(f"ae must be a VGTAutoencoder, a VGT-AE checkpoint path or None, got {type(ae).__name__}")
        weights, folder = resolve_model_path(ar_checkpoint)
        base_model = default_base(str(ar_checkpoint), base_model, folder)
        for base in (base_model, ae_base_model):  # config.json present and supported, before the checkpoint is read
            if base is not None:
                detect_family_from_dir(base)
        embedded_base = ae_base_model or (ae_base_of(folder) if folder == base_model else None) or base_model
        embedded_decoder = decoder_config if decoder_config is not None else stored_decoder_config(weights)
        recorded = stored_sampling(weights)
        default_order = recorded["order"]
        found: dict[str, Any] = {}

        def before_build(family: str, info: Any, ae_sd: dict) -> None:
            ae_base = embedded_base if ae is None else ae_base_model or base_model
            _check_ae_choice(ae, family, info, ar_checkpoint, ae_base)
            if not isinstance(ae, VGTAutoencoder):
                dec = load_decoder_config(embedded_decoder if ae is None else decoder_config)
                if ae is None and ae_sd:
                    check_decoder_fits(dec, lambda k: tuple(ae_sd[k].shape) if k in ae_sd else None,
                                       f"the VGT-AE embedded in {ar_checkpoint}")
            found["tokenizer"] = load_tokenizer(base_model, family, vocab_size=info.vocab_size)

        ar, extras = load_ar_model(
            weights, base_model=base_model, dtype=dtype, device=device,
            attn_implementation=attn_implementation, prefer_ema=prefer_ema, before_build=before_build,
        )
        if isinstance(ae, (str, Path)):
            ae = VGTAutoencoder.from_pretrained(ae, base_model=ae_base_model or base_model, decoder_config=decoder_config,
                                                dtype=dtype, device=device, attn_implementation=attn_implementation)
        elif ae is None and extras.get("ae_state_dict"):
            ae = load_embedded_ae(extras["ae_state_dict"], family=ar.family, base_model=embedded_base,
                                  decoder_config=embedded_decoder, dtype=dtype, device=device)
        return cls(ar, found["tokenizer"], ae, default_order=default_order, default_preset=recorded["preset"])

    def to(self, device=None, dtype=None) -> VGTPipeline:
        device = check_device(device) if device is not None else None
        dtype = check_dtype(dtype) if dtype is not None else None
        self.ar.to(device=device, dtype=dtype)
        if self.ae is not None:
            self.ae.to(device=device, dtype=dtype)
        return self

    # ------------------------------------------------------------------ prompts
    def encode_prompts(
        self, prompts: str | Sequence[str], negative_prompts: str | Sequence[str | None] | None = None
    ) -> PromptBatch:
        """Template and tokenise prompts (cheap, no model call). None negatives = the official unconditional one.

        A templated prompt longer than ``MAX_PROMPT_TOKENS`` (256, the training length) is an error
        (:class:`~vgt_impl.validation.PromptTooLongError`), never silently truncated.
        """
        return tokenize_prompts(self.tokenizer, prompts, negative_prompts)

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
        order: str | Sequence[Sequence[int]] | None = None,
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
        time_grid: str = "reference",
        time_shift: float = 1.0,
        group_schedule: str = "equal",
        static_cache: bool = False,
        compile: bool | str = False,
    ) -> GenerationOutput:
        """Generate images; see the module docstring and README for every option.

        ``context=(latents [B,32,h,w], generate_mask [B,h,w] or [h,w] bool)`` regenerates only the True tokens, with
        the others as known context (editing). ``order``: a name of ``orders.ORDERS`` or explicit token groups; None
        is the order the model was trained on (``default_order``: "random" for VGT, recorded in its config).
        ``order_seed`` (default: the generator's seed) fixes a random order.
        Speed options: ``sampler`` (an integrator of ``integrators.SAMPLERS``), ``time_grid`` / ``time_shift``, and
        ``group_schedule`` (``"equal"``, ``"cosine"``, ``"ramp"``: token group sizes for the same number of LLM calls)
        change the sampling; ``static_cache`` / ``compile`` (True: the device's default mode, CUDA graphs on CUDA;
        or a ``torch.compile`` mode name) change only how it runs.
        """
        h, w = self.check_size(height, width)
        order = self.default_order if order is None else order
        o = check_generate_options(
            cfg_scale=cfg_scale, cfg_schedule=cfg_schedule, num_flow_steps=num_flow_steps, acc_ratio=acc_ratio,
            sampler=sampler, mode=mode, num_images_per_prompt=num_images_per_prompt, last_step_size=last_step_size,
        )
        acc_ratio, num_images_per_prompt = o["acc_ratio"], o["num_images_per_prompt"]
        output_size = check_output_size(output_size)
        check_generator(generator)
        compile_mode = self._check_speed_options(o["num_flow_steps"], sampler, o["last_step_size"], time_grid,
                                                 time_shift, group_schedule, static_cache, compile)
        for name, fn in (("callback", callback), ("noise_fn", noise_fn)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None, got {type(fn).__name__}")
        if isinstance(prompts, PromptBatch):
            if negative_prompts is not None:
                raise ValueError("negative_prompts must be None when prompts is a PromptBatch (it holds its negatives)")
            batch = prompts
        else:
            batch = self.encode_prompts(prompts, negative_prompts)
        batch = batch.repeat(num_images_per_prompt) if num_images_per_prompt > 1 else batch
        if order_seed is None:
            order_seed = generator.initial_seed() if generator is not None else random.randrange(2**31)
        order_seed = check_int("order_seed", order_seed, lo=0)
        full_groups = make_groups(h, w, acc_ratio=acc_ratio, order=order, seed=order_seed,
                                  schedule=group_schedule)
        settings = DecodeSettings(
            cfg_scale=o["cfg_scale"], cfg_schedule=cfg_schedule, num_flow_steps=o["num_flow_steps"],
            sampler=sampler, last_step_size=o["last_step_size"], time_grid=time_grid, time_shift=float(time_shift),
            mode=mode,
            interleave=(acc_ratio > 1 if isinstance(order, str) else max(len(g) for g in full_groups) > 1)
            if interleave is None else bool(interleave),
            position_rule=self.adapter.position_rule,
            static_cache=bool(static_cache) or compile_mode is not None, compile_mode=compile_mode,
        )
        run = dict(noise_fn=noise_fn, generator=generator, callback=callback)
        if context is None:
            latents = decode_tokens(self.ar, self._prefix(batch, cfg_scale > 1), h, w, full_groups, settings, **run)
            groups = [list(g) for g in full_groups]
        else:
            latents, groups = self._decode_with_context(batch, h, w, full_groups, acc_ratio, group_schedule, settings,
                                                        context, run)
        if not bool(torch.isfinite(latents).all()):  # one sync per generation: never a NaN image
            hint = "float16 overflow: load the model in bfloat16 or float32" if self.dtype == torch.float16 else \
                "the checkpoint may hold NaN/inf weights (re-download it), or cfg_scale is too large"
            raise FloatingPointError(f"generation produced non-finite latents (cfg_scale={settings.cfg_scale:g}, "
                                     f"dtype {self.dtype}): {hint}")
        images = self.decode_latents(latents, output_size) if decode and self.ae is not None else None
        return GenerationOutput(images=images, latents=latents, groups=groups)

    def _decode_with_context(self, batch, h, w, full_groups, acc_ratio, group_schedule, settings, context, run):
        from .editing import check_context, context_groups

        known, gen_mask = check_context(context, len(batch), h, w, stride=self.latent_stride)  # [B,32,h,w], [B,h*w]
        latents = known.to(device=self.device, dtype=torch.float32).clone()
        order = [i for g in full_groups for i in g]
        groups_used: list[list[int]] = []
        for rows, mask_row in _rows_by_mask(gen_mask):
            groups = context_groups(order, mask_row, acc_ratio if isinstance(acc_ratio, int) else 1, group_schedule)
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
        output_size = check_output_size(output_size)
        images = self.ae.decode(latents.to(device=self.ae.device))
        if output_size is not None and tuple(images.shape[-2:]) != tuple(output_size):
            images = F.interpolate(images, size=tuple(output_size), mode="bilinear", align_corners=False)
        return images

    # ------------------------------------------------------------------ validation
    def check_size(self, height: int, width: int, names: tuple[str, str] = ("height", "width")) -> tuple[int, int]:
        """(height, width) in px -> latent (h, w); a clear error for sizes off the stride grid or beyond the queries.

        ``names``: how the caller's user calls the two sizes (``--height``/``--size`` in the CLI).
        """
        mh, mw = self.max_latent_size
        s = self.latent_stride
        return check_size_px(names[0], height, s, mh), check_size_px(names[1], width, s, mw)

    def _check_speed_options(self, steps, sampler, last_step_size, time_grid, time_shift, group_schedule,
                             static_cache, compile) -> str | None:
        """Validate the sampling and execution options before any work; returns the torch.compile mode or None."""
        from .orders import check_group_schedule
        from .static_decode import COMPILE_MODES

        check_real("time_shift", time_shift, lo=0.0, lo_open=True, hint=" (1: no shift; > 1 puts more steps near the noise end)")
        FlowSampler(sampler, steps, time_grid, float(time_shift), last_step_size).grid  # noqa: B018  checks the grid
        check_group_schedule(group_schedule)
        if not isinstance(static_cache, bool):
            raise TypeError(f"static_cache={static_cache!r} must be True or False")
        if compile is False or compile is None:
            mode = None
        elif compile is True:
            mode = "reduce-overhead" if self.device.type == "cuda" else "default"
        elif isinstance(compile, str) and compile in COMPILE_MODES:
            mode = compile
        else:
            raise ValueError(f"compile={compile!r}: expected True, False or a torch.compile mode {COMPILE_MODES}")
        attn = getattr(self.ar.llm.config, "_attn_implementation", "sdpa")
        if (mode is not None or static_cache) and attn not in ("sdpa", "eager"):
            raise ValueError(f"static_cache / compile need attention 'sdpa' or 'eager' (the static cache uses a 4-D "
                             f"mask); this model uses {attn!r}: reload it with attn_implementation='sdpa'")
        return mode


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


# ---------------------------------------------------------------------------------------------------------- checks
MAX_FLOW_STEPS = 1000  # the reference samples with 30-100; more only costs time
MAX_OUTPUT_SIDE = 16384  # output_size: a typo of a few zeros must not allocate tens of GB


def check_generate_options(
    *, cfg_scale: Any = 4.5, cfg_schedule: Any = "linear", num_flow_steps: Any = 30, acc_ratio: Any = 1,
    sampler: Any = "sde", mode: Any = "reference", num_images_per_prompt: Any = 1, last_step_size: Any = 0.04,
    names: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Validate ``generate``'s numeric/choice options (no model needed) -> normalised values (Python int/float).

    ``names`` maps option names to the caller's (e.g. ``{"acc_ratio": "parallel_tokens"}`` for a node).
    """
    n = {k: k for k in ("cfg_scale", "cfg_schedule", "num_flow_steps", "acc_ratio", "sampler", "mode",
                        "num_images_per_prompt", "last_step_size")}
    n.update(names or {})
    steps = check_int(n["num_flow_steps"], num_flow_steps, hi=MAX_FLOW_STEPS)
    if steps < 2:
        raise ValueError(f"{n['num_flow_steps']}={steps}: at least 2 flow steps are needed (with 1 the sampler never "
                         f"leaves t=0 and returns noise); 30 is the reference default")
    return {
        "cfg_scale": check_real(n["cfg_scale"], cfg_scale, lo=1.0,
                                hint=" (1 disables classifier-free guidance; the reference uses 4.5)"),
        "cfg_schedule": check_choice(n["cfg_schedule"], cfg_schedule, CFG_SCHEDULES),
        "num_flow_steps": steps,
        "acc_ratio": check_int(n["acc_ratio"], acc_ratio, lo=1, hint=" (tokens decoded in parallel per step)"),
        "sampler": check_choice(n["sampler"], sampler, SAMPLERS),
        "mode": check_choice(n["mode"], mode, MODES),
        "num_images_per_prompt": check_int(n["num_images_per_prompt"], num_images_per_prompt, lo=1),
        "last_step_size": check_real(n["last_step_size"], last_step_size, lo=0.0, hi=1.0, lo_open=True,
                                     hi_open=True, hint=" (the reference uses 0.04)"),
    }


def check_output_size(output_size: Any) -> tuple[int, int] | None:
    """None or (height, width) in pixels, positive ints."""
    if output_size is None:
        return None
    if not isinstance(output_size, (tuple, list)) or len(output_size) != 2:
        raise TypeError(f"output_size must be None or (height, width) in pixels, got {output_size!r}")
    return (check_int("output_size[0] (height)", output_size[0], lo=1, hi=MAX_OUTPUT_SIDE),
            check_int("output_size[1] (width)", output_size[1], lo=1, hi=MAX_OUTPUT_SIDE))


def tokenize_prompts(tokenizer, prompts: Any, negative_prompts: Any = None,
                     max_tokens: int = C.MAX_PROMPT_TOKENS) -> PromptBatch:
    """Template and tokenise prompts with any (verified) tokenizer: usable before a model is loaded."""
    prompts = check_prompts("prompts", prompts)
    if not prompts:
        raise ValueError("prompts is empty: give at least one prompt")
    if negative_prompts is None or isinstance(negative_prompts, str):
        negs = [negative_prompts] * len(prompts)
    else:
        negs = check_prompts("negative_prompts", negative_prompts, allow_none=True)
        if len(negs) != len(prompts):
            raise ValueError(f"got {len(negs)} negative prompts for {len(prompts)} prompts: give one per prompt")

    def enc(text: str, name: str) -> list[int]:
        ids = tokenizer.encode(text, add_special_tokens=True)
        if len(ids) > max_tokens:
            raise PromptTooLongError(name, len(ids), max_tokens)
        return ids

    one = len(prompts) == 1
    return PromptBatch(
        prompts=prompts,
        negative_prompts=[n if n is not None else C.CFG_PROMPT for n in negs],
        input_ids=[enc(format_prompt(p), "the prompt" if one else f"prompts[{i}]") for i, p in enumerate(prompts)],
        negative_ids=[enc(format_negative(x), "the negative prompt" if one else f"negative_prompts[{i}]")
                      for i, x in enumerate(negs)],
    )


def load_tokenizer(base_model: str | Path, family: str, vocab_size: int | None = None):
    """The base folder's tokenizer, verified for ``family`` (and the checkpoint's embedding table when given)."""
    from .backbones import get_family

    fam = get_family(family)
    tokenizer = fam.load_tokenizer(base_model)
    verify_tokenizer(tokenizer, where=f"base model folder {base_model}", marker=fam.image_start_marker,
                     marker_pieces=fam.image_start_pieces, vocab_size=vocab_size)
    return tokenizer


def _check_ae_choice(ae: Any, family: str, info: Any, ar_checkpoint: Any, ae_base: Any) -> None:
    """The VGT-AE to use belongs to the AR model's family (and, when embedded, its base folder too)."""
    from .backbones import get_family
    from .checkpoints import peek_family
    from .loading import check_base_family, family_name

    encoder_base = get_family(family).ae_base_model
    if ae is None:
        if info.has_embedded_ae:
            check_base_family(family, ae_base, "the VGT-AE embedded in the AR checkpoint",
                              fix=f"pass the base model folder of its encoder ({encoder_base}) as ae_base_model")
        return
    ae_family = ae.family if not isinstance(ae, (str, Path)) else peek_family(ae, want="ae")
    if ae_family != family:
        what = "the VGT-AE" if not isinstance(ae, (str, Path)) else f"the VGT-AE checkpoint {ae}"
        raise ValueError(f"{what} is for {family_name(ae_family)} but the VGT-AR checkpoint {ar_checkpoint} is "
                         f"{family_name(family, True)} model: pick the {family_name(family)} VGT-AE, or leave the "
                         f"VGT-AE unset to use the one embedded in the AR checkpoint")
    if isinstance(ae, (str, Path)):
        check_base_family(family, ae_base, f"the VGT-AE checkpoint {ae}",
                          fix=f"pass the base model folder of its encoder ({encoder_base}) as ae_base_model")
