"""The QueryAR decoding loop: prefill, token groups, KV cache, context tokens, callbacks.

Decoding follows the VGT reference ``generate()``: the prompt rows (conditional first, then unconditional for CFG)
are prefilled together with the image-start embedding and the first group's queries; each later LLM call feeds the
previous group's sampled latents (interleaved with their queries when several tokens are decoded per step) followed by
the next group's queries. The flow head samples one 32-d token per query; each is LayerNormed before it is fed back.

Two modes:
- ``"reference"`` reproduces the official code, quirks included (no attention mask after the prefill, so cached pad
  tokens stay visible; each family's position rule for cached calls, e.g. Qwen2.5-VL's ``text_len + k * call_len + i``),
  which is what published scores used.
- ``"corrected"`` masks padding in every cached step and continues each row's positions from its own last one,
  which makes a prompt's result independent of what it is batched with.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .sampling import FlowSampler, cfg_for_group, sample_tokens

Callback = Callable[[int, int, torch.Tensor], None]
NoiseFn = Callable[[tuple[int, ...], torch.dtype, torch.device], torch.Tensor]
MODES = ("reference", "corrected")


@dataclass
class DecodeSettings:
    cfg_scale: float = 4.5  # guidance on the first group; >1 adds unconditional rows
    cfg_schedule: str = "linear"  # "linear" (decays towards 1 over the groups) or "constant"
    num_flow_steps: int = 30  # flow-matching steps per token group
    sampler: str = "sde"  # integrator name (integrators.SAMPLERS); "sde" is the reference
    last_step_size: float = 0.04  # size of the reference grid's final deterministic step
    time_grid: str = "reference"  # "reference" or "uniform" (integrators.make_grid)
    time_shift: float = 1.0  # > 1: more flow steps near the noise end
    mode: str = "reference"  # "reference" (quirks of the official code) or "corrected"
    interleave: bool = False  # feed [query, latent] pairs after each group (the reference does when acc_ratio > 1)
    position_rule: str = "continue"  # reference-mode positions of cached calls (FamilyAdapter.position_rule)
    static_cache: bool = False  # preallocated KV cache, fixed shapes per group size (static_decode.py)
    compile_mode: str | None = None  # torch.compile mode of the per-group step (implies static_cache); None = eager
    compile_backend: str = "inductor"  # torch.compile backend ("aot_eager" traces without code generation)

    @property
    def flow_sampler(self) -> FlowSampler:
        return FlowSampler(self.sampler, self.num_flow_steps, self.time_grid, self.time_shift, self.last_step_size)


@dataclass
class PrefixInputs:
    text_embeds: torch.Tensor  # [R, T, D] prompt embeddings, right padded; R = B or 2B (cond rows, then uncond)
    text_mask: torch.Tensor  # [R, T] bool, True for real tokens
    start_embeds: torch.Tensor  # [n, D] image-start marker embeddings


@dataclass
class Context:
    """Known tokens for editing: fed as [query, latent] pairs in the prefix, never resampled."""

    indices: torch.Tensor  # [K] long, flat raster indices of the known tokens (same for every row)
    latents: torch.Tensor  # [B, K, C] their latents


def _interleave(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[R, L, D], [R, L, D] -> [R, 2L, D] as a0, b0, a1, b1, ..."""
    r, n, d = a.shape
    return torch.stack([a, b], dim=2).reshape(r, 2 * n, d)


class _Decoder:
    """State of one QueryAR generation (KV cache, positions, running attention mask)."""

    def __init__(self, model, prefix: PrefixInputs, h: int, w: int, settings: DecodeSettings):
        self.model, self.settings = model, settings
        self.rows = prefix.text_embeds.shape[0]
        queries, pos = model.queries(h, w, model.latent_stride)  # [1, N, D] each (queries already include pos)
        self.queries, self.pos = queries.to(model.dtype), pos.to(model.dtype)
        self.cache = _new_cache()
        self._cache_kw = cache_kwarg(model.llm)
        self.prefix = prefix
        self.mask: torch.Tensor | None = None  # running attention mask (corrected mode)
        self.last_pos: torch.Tensor | None = None  # [R, 1] last position id per row
        self.text_len = prefix.text_embeds.shape[1]
        self.groups_done = 0  # groups sampled so far

    def _llm(self, embeds: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        out = self.model.llm(
            inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids,
            use_cache=True, return_dict=True, **{self._cache_kw: self.cache},
        )
        new = out.get("cache", None)
        self.cache = new if new is not None else out.get("past_key_values", self.cache)
        self.last_pos = position_ids[:, -1:]
        return out.last_hidden_state

    def prefill(self, tail: torch.Tensor) -> torch.Tensor:
        """[text | image start | tail] with the padding mask; returns hidden states [R, L, D]."""
        p = self.prefix
        r = self.rows
        start = p.start_embeds.to(self.model.dtype).unsqueeze(0).expand(r, -1, -1)
        embeds = torch.cat([p.text_embeds.to(self.model.dtype), start, tail], dim=1)  # [R, T+n+L, D]
        extra = embeds.shape[1] - p.text_mask.shape[1]
        mask = torch.cat([p.text_mask.bool(), p.text_mask.new_ones(r, extra, dtype=torch.bool)], dim=1)
        position_ids = (mask.long().cumsum(dim=1) - 1).clamp_(min=0)  # pads repeat the last real position
        self.mask = mask
        return self._llm(embeds, position_ids, mask)

    def step(self, embeds: torch.Tensor) -> torch.Tensor:
        """A cached call on [R, L, D]; positions and mask by mode."""
        r, n = embeds.shape[:2]
        steps = torch.arange(n, device=embeds.device).unsqueeze(0)  # [1, L]
        if self.settings.mode == "reference" and self.settings.position_rule == "padded_text_offset":
            position_ids = (self.text_len + self.groups_done * n + steps).expand(r, -1)  # reference Qwen2.5-VL rule
        else:
            position_ids = self.last_pos + 1 + steps  # [R, L]
        mask = None
        if self.settings.mode == "corrected":
            self.mask = torch.cat([self.mask, self.mask.new_ones(r, n)], dim=1)
            mask = self.mask
        return self._llm(embeds, position_ids, mask)

    def feed_for(self, idx: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Embeddings that feed sampled tokens back: [R, g(*2), D] from latents [B, g, C]."""
        reps = self.rows // latents.shape[0]
        lat = self.model.embed_latents(latents, self.pos[:, idx]).repeat(reps, 1, 1)  # [R, g, D]
        if self.settings.interleave:
            return _interleave(self.queries[:, idx].expand(self.rows, -1, -1), lat)
        return lat


def cache_kwarg(llm) -> str:
    """The name a language model's forward takes its KV cache by: ``cache`` from transformers 5.2x (where
    ``past_key_values`` is deprecated, to be removed in 5.40), ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(llm.forward).parameters else "past_key_values"


def _new_cache():
    from transformers import DynamicCache

    return DynamicCache()


def decode(
    model,
    prefix: PrefixInputs,
    h: int,
    w: int,
    groups: Sequence[Sequence[int]],
    settings: DecodeSettings,
    *,
    context: Context | None = None,
    noise_fn: NoiseFn | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Generate the tokens listed in ``groups`` (flat raster indices); returns latents [B, C, h, w].

    ``context`` tokens are fed first as [query, latent] pairs and copied unchanged into the output. With
    ``settings.static_cache`` or ``settings.compile_mode`` the same decoding runs on a static KV cache
    (``static_decode.py``).
    """
    if settings.static_cache or settings.compile_mode is not None:
        from .static_decode import decode_static

        return decode_static(model, prefix, h, w, groups, settings, context=context, noise_fn=noise_fn,
                             generator=generator, callback=callback)
    dec = _Decoder(model, prefix, h, w, settings)
    cfg_rows = 2 if settings.cfg_scale > 1.0 else 1
    batch = dec.rows // cfg_rows
    c = model.config.latent_dim
    device = model.device
    out = torch.zeros(batch, h * w, c, device=device, dtype=torch.float32)  # [B, N, C] raster order
    flat = torch.tensor([i for g in groups for i in g], dtype=torch.long, device=device)
    bounds = [0]
    for g in groups:
        bounds.append(bounds[-1] + len(g))
    tail = dec.queries.new_zeros(dec.rows, 0, dec.queries.shape[-1])
    if context is not None and context.indices.numel() > 0:
        idx = context.indices.to(device)
        out[:, idx] = context.latents.to(device=device, dtype=torch.float32)
        ctx_lat = dec.model.embed_latents(context.latents.to(device), dec.pos[:, idx]).repeat(cfg_rows, 1, 1)
        tail = _interleave(dec.queries[:, idx].expand(dec.rows, -1, -1), ctx_lat)  # [R, 2K, D]
    num_groups = len(groups)
    flow = settings.flow_sampler
    t_embs = flow.time_embeddings(model.flow_head)  # once per generation
    pending = None
    for k in range(num_groups):
        idx = flat[bounds[k]:bounds[k + 1]]  # [g] (a view: no host-device copy per group)
        g = bounds[k + 1] - bounds[k]
        q = dec.queries[:, idx].expand(dec.rows, -1, -1)  # [R, g, D]
        if k == 0:
            hidden = dec.prefill(torch.cat([tail, q], dim=1))
        else:
            hidden = dec.step(torch.cat([pending, q], dim=1))
        dec.groups_done = k + 1
        cond = model.image_out_projector(hidden[:, -g:]).reshape(dec.rows * g, -1)  # rows r*g + j
        cfg = cfg_for_group(settings.cfg_schedule, settings.cfg_scale, k, num_groups) if cfg_rows == 2 else 1.0
        x = sample_tokens(
            model.flow_head, cond, cfg_scale=cfg, num_steps=flow.num_steps, method=flow.method,
            last_step_size=flow.last_step_size, time_grid=flow.time_grid, time_shift=flow.time_shift,
            noise_fn=noise_fn, generator=generator, time_embeddings=t_embs,
        )  # [B*g, C]
        x = x.float().view(batch, g, c)
        if getattr(model.config, "latent_norm", True):
            x = F.layer_norm(x, (c,), eps=1e-6)  # per-token LayerNorm, no affine
        out[:, idx] = x
        if k + 1 < num_groups:
            pending = dec.feed_for(idx, x)
        if callback is not None:
            callback(k + 1, num_groups, out.view(batch, h, w, c).permute(0, 3, 1, 2))
    return out.view(batch, h, w, c).permute(0, 3, 1, 2).contiguous()
