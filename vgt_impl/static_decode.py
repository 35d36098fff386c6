"""QueryAR decoding on a static KV cache with fixed shapes per group size, optionally compiled.

The same steps and arithmetic as :func:`queryar.decode` (which it replaces when ``DecodeSettings.static_cache`` or
``compile_mode`` is set), arranged so a GPU can run each token group without the Python loop in the way:

- The KV cache is preallocated per layer, ``[R, kv_heads, max_len, head_dim]`` (``max_len`` rounded up so prompts of
  other lengths reuse it), and each LLM call writes at precomputed slots. Attention reads the whole buffer through an
  explicit 4-D mask (causal over the written slots, plus the prompt padding in corrected mode, as in the eager path),
  so every call of a given group size has the same shapes.
- One function per group runs the LLM call, the output projector, the whole flow-head integration (unrolled), the
  per-token LayerNorm and the embeddings that feed the tokens back. Compiled (``torch.compile``, ``fullgraph``,
  static shapes), it is one graph per group size; on CUDA the default mode (``reduce-overhead``) records it as a CUDA
  graph, so a group costs one launch.
- Everything that changes from group to group (guidance, cache slots, positions, queries) is a slice of a tensor built
  once per generation; noise is drawn per group on the CPU and reaches the device in one copy, as in the eager path.
  Nothing in the loop waits for the device.

Prefill (the prompt, variable length) runs eagerly. The compiled functions and the cache live on the model and are
reused across generations with the same batch rows, dtype and device.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import types
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .queryar import Callback, Context, DecodeSettings, NoiseFn, PrefixInputs, _interleave, cache_kwarg
from .sampling import FlowSampler, NoiseSource, cfg_for_group, integrate

logger = logging.getLogger(__name__)

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_LEN_BUCKET = 256  # cache length granularity: prompts of similar length share one cache and one set of graphs
_MAX_ENGINES = 4


class StaticKVCache:
    """Keys and values of every layer in preallocated buffers; each call writes at ``slots`` (set before the call).

    Implements the part of transformers' cache interface its attention layers call (``update``), identically under
    transformers 4.57 and 5.x. Buffers are allocated on the first (eager) call and keep their addresses afterwards.
    """

    is_compileable = True

    def __init__(self, max_len: int):
        self.max_len = max_len
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.slots: torch.Tensor | None = None  # [L] long: where the current call's keys/values go
        self.length = 0  # slots written so far (host-side bookkeeping)

    def _allocate(self, layer_idx: int, key: torch.Tensor, value: torch.Tensor) -> None:
        r, heads, _, dim = key.shape
        self.keys[layer_idx] = key.new_zeros(r, heads, self.max_len, dim)
        self.values[layer_idx] = value.new_zeros(r, heads, self.max_len, value.shape[-1])
        if not torch.compiler.is_compiling():
            torch._dynamo.mark_static_address(self.keys[layer_idx])
            torch._dynamo.mark_static_address(self.values[layer_idx])

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Write [R, heads, L, dim] at ``slots``; return the whole buffers [R, heads, max_len, dim]."""
        if layer_idx not in self.keys:
            self._allocate(layer_idx, key_states, value_states)
        k, v = self.keys[layer_idx], self.values[layer_idx]
        k.index_copy_(2, self.slots, key_states)
        v.index_copy_(2, self.slots, value_states)
        return k, v

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def get_max_cache_shape(self, layer_idx: int = 0) -> int:
        return self.max_len


class StaticEngine:
    """Static cache, persistent buffers and the (compiled) per-group functions for one rows/length/settings key."""

    def __init__(self, model, rows: int, max_len: int, settings: DecodeSettings, flow: FlowSampler):
        self.model, self.rows, self.flow = model, rows, flow
        self.grid = flow.grid
        self.guided = settings.cfg_scale > 1.0
        self.interleave, self.corrected = settings.interleave, settings.mode == "corrected"
        self.cache = StaticKVCache(max_len)
        dev = model.device
        self.key_index = torch.arange(max_len, device=dev)  # [Lmax]
        self.valid = torch.ones(rows, max_len, dtype=torch.bool, device=dev)  # keys that may be attended (corrected)
        self.row_base = torch.zeros(rows, 1, dtype=torch.long, device=dev)  # position base per row
        self.t_embs = flow.time_embeddings(model.flow_head)  # [S(+1), 1, dim], refreshed per generation
        for buf in (self.key_index, self.valid, self.row_base, self.t_embs):  # fixed addresses: no copies per replay
            torch._dynamo.mark_static_address(buf)
        params = inspect.signature(model.llm.forward).parameters
        self._cache_kw = cache_kwarg(model.llm)
        self._pass_cache_position = "cache_position" in params  # transformers 4.x
        self.compiled = settings.compile_mode is not None
        self.first, self.step = self._sample_feed, self._step
        if self.compiled:
            opts = dict(fullgraph=True, dynamic=False, backend=settings.compile_backend)
            if settings.compile_backend == "inductor":
                opts["mode"] = settings.compile_mode
            self.first = torch.compile(self._sample_feed, **opts)
            self.step = torch.compile(self._step, **opts)

    # ------------------------------------------------------------------ traced functions (fixed shapes per group size)
    def _mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """bool [R|1, 1, L, Lmax] -> additive mask in the model dtype (what eager and sdpa attention both accept)."""
        dtype = self.model.dtype
        zero = torch.zeros((), dtype=dtype, device=allowed.device)
        return torch.where(allowed, zero, torch.finfo(dtype).min).expand(self.rows, -1, -1, -1)

    def _llm(self, embeds: torch.Tensor, slots: torch.Tensor, positions: torch.Tensor, allowed: torch.Tensor):
        self.cache.slots = slots
        kw = {self._cache_kw: self.cache, "cache_position": slots} if self._pass_cache_position else {
            self._cache_kw: self.cache}
        out = self.model.llm(inputs_embeds=embeds, attention_mask={"full_attention": self._mask(allowed)},
                             position_ids=positions, use_cache=True, return_dict=True, **kw)
        return out.last_hidden_state  # [R, L, D]

    def _sample_feed(self, hidden: torch.Tensor, q: torch.Tensor, pos: torch.Tensor, noise: torch.Tensor,
                     cfg: torch.Tensor):
        """Hidden states of a group's queries [R, g, D] -> tokens [B, g, C] (fp32) and their feed [R, g(*2), D]."""
        model, head = self.model, self.model.flow_head
        r, g = hidden.shape[:2]
        c = model.config.latent_dim
        cond = model.image_out_projector(hidden).reshape(r * g, -1)  # rows r*g + j
        c_emb = head.embed_condition(cond)  # [R*g, dim]
        draws = _Draws(noise)
        x = integrate(head, self.flow, self.grid, self.t_embs, c_emb, draws(), cfg, self.guided, draws)  # [B*g, C]
        batch = x.shape[0] // g
        x = F.layer_norm(x.float(), (c,), eps=1e-6).view(batch, g, c)  # per-token LayerNorm, no affine
        lat = model.embed_latents(x, pos).repeat(r // batch, 1, 1)  # [R, g, D]
        feed = _interleave(q.expand(r, -1, -1), lat) if self.interleave else lat
        return x, feed

    def _step(self, pending: torch.Tensor, q: torch.Tensor, pos: torch.Tensor, slots: torch.Tensor,
              rel: torch.Tensor, noise: torch.Tensor, cfg: torch.Tensor):
        """One cached LLM call on [pending feed | next queries], then :meth:`_sample_feed` for that group."""
        g = q.shape[1]
        embeds = torch.cat([pending, q.expand(self.rows, -1, -1)], dim=1)  # [R, L, D]
        positions = self.row_base + rel  # [R, L]
        allowed = (self.key_index[None, :] <= slots[:, None])[None, None]  # causal over written slots [1,1,L,Lmax]
        if self.corrected:
            allowed = allowed & self.valid[:, None, None, :]  # [R, 1, L, Lmax]
        hidden = self._llm(embeds, slots, positions, allowed)
        return self._sample_feed(hidden[:, -g:], q, pos, noise, cfg)

    # ------------------------------------------------------------------ eager parts
    def prefill(self, prefix: PrefixInputs, tail: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[text | image start | tail] with the padding mask, written at slots 0..T0-1.

        Returns the hidden states [R, T0, D] and each row's last position [R, 1].
        """
        r, dtype = self.rows, self.model.dtype
        start = prefix.start_embeds.to(dtype).unsqueeze(0).expand(r, -1, -1)
        embeds = torch.cat([prefix.text_embeds.to(dtype), start, tail], dim=1)  # [R, T0, D]
        t0 = embeds.shape[1]
        extra = t0 - prefix.text_mask.shape[1]
        mask = torch.cat([prefix.text_mask.bool(), prefix.text_mask.new_ones(r, extra, dtype=torch.bool)], dim=1)
        positions = (mask.long().cumsum(dim=1) - 1).clamp_(min=0)  # pads repeat the last real position
        self.valid.fill_(True)
        self.valid[:, :t0] = mask
        slots = self.key_index[:t0]
        allowed = (self.key_index[None, :] <= slots[:, None])[None, None] & self.valid[:, None, None, :]
        hidden = self._llm(embeds, slots, positions, allowed)
        self.cache.length = t0
        return hidden, positions[:, -1:]

    def refresh(self) -> None:
        """Per generation: time embeddings from the current head weights, into the same buffer."""
        self.t_embs.copy_(self.flow.time_embeddings(self.model.flow_head))


class _Draws:
    """The group's noise block [draws, N, C] handed out in the sampler's order."""

    def __init__(self, block: torch.Tensor):
        self.block, self.i = block, 0

    def __call__(self) -> torch.Tensor:
        w = self.block[self.i]
        self.i += 1
        return w


def _engine(model, rows: int, need: int, settings: DecodeSettings, flow: FlowSampler) -> StaticEngine:
    """The model's engine for this key, created (or replaced when too short) on demand."""
    max_len = -(-need // _LEN_BUCKET) * _LEN_BUCKET
    key = (rows, model.device, model.dtype, settings.cfg_scale > 1.0, settings.interleave, settings.mode,
           settings.compile_mode, settings.compile_backend, flow)
    engines: dict = model.__dict__.setdefault("_vgt_static_engines", {})
    for stale in [k for k in engines if k[1] != model.device or k[2] != model.dtype]:  # the model moved: free them
        del engines[stale]
    eng = engines.get(key)
    if eng is None or eng.cache.max_len < need:
        engines.pop(key, None)
        while len(engines) >= _MAX_ENGINES:
            engines.pop(next(iter(engines)))
        eng = engines[key] = StaticEngine(model, rows, max_len, settings, flow)
    return eng


def release(model) -> None:
    """Drop the model's static caches and compiled functions (e.g. before moving or offloading it)."""
    model.__dict__.pop("_vgt_static_engines", None)


def _plan(prefix: PrefixInputs, tail_len: int, sizes: Sequence[int], settings: DecodeSettings):
    """Call lengths, cache slots and relative positions of every cached call, built on the host once."""
    t0 = prefix.text_embeds.shape[1] + prefix.start_embeds.shape[0] + tail_len + sizes[0]
    feed = 2 if settings.interleave else 1
    lengths = [feed * sizes[k - 1] + sizes[k] for k in range(1, len(sizes))]
    slots, rel, offset, done = [], [], t0, 0
    qwen_rule = settings.mode == "reference" and settings.position_rule == "padded_text_offset"
    for k, n in enumerate(lengths, start=1):
        slots += range(offset, offset + n)
        # reference Qwen2.5-VL rule: text_len + k * call_len + i; otherwise continue each row from its last position
        rel += range(prefix.text_embeds.shape[1] + k * n, prefix.text_embeds.shape[1] + k * n + n) if qwen_rule else \
            range(done, done + n)
        offset, done = offset + n, done + n
    return t0, lengths, offset, slots, rel


@contextlib.contextmanager
def _plain_rope(llm, max_position: int):
    """Dynamic-NTK RoPE (InternVL3's LLM) re-checks the sequence length on every call: a data-dependent branch (a
    host sync in eager mode, a graph break under compile). Below the original context length it is the plain RoPE,
    so decoding uses that; beyond it (never in practice: > 32k positions) it is an error here."""
    patched = []
    for mod in llm.modules():
        if "dynamic" not in str(getattr(mod, "rope_type", "")):
            continue
        limit = getattr(mod, "original_max_seq_len", 0)
        if max_position >= limit or getattr(mod, "max_seq_len_cached", limit) > limit:
            raise ValueError(f"position {max_position} is beyond the LLM's original context ({limit}), where its "
                             "dynamic RoPE rescales: use the eager path (no static_cache / compile)")
        mod.forward = types.MethodType(inspect.unwrap(type(mod).forward), mod)
        patched.append(mod)
    try:
        yield
    finally:
        for mod in patched:
            del mod.forward  # back to the class's method


def _compile_limits(settings: DecodeSettings, distinct: int):
    """Raise dynamo's recompile limit for this generation: one graph per distinct group size is expected."""
    if settings.compile_mode is None:
        return contextlib.nullcontext()
    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    return cfg.patch(**{name: max(getattr(cfg, name), 2 * distinct + 8)})


def decode_static(
    model, prefix: PrefixInputs, h: int, w: int, groups: Sequence[Sequence[int]], settings: DecodeSettings, *,
    context: Context | None = None, noise_fn: NoiseFn | None = None, generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """:func:`queryar.decode` on the static cache (compiled when ``settings.compile_mode`` is set); same results."""
    rows = prefix.text_embeds.shape[0]
    cfg_rows = 2 if settings.cfg_scale > 1.0 else 1
    batch, c, device = rows // cfg_rows, model.config.latent_dim, model.device
    flow = settings.flow_sampler
    sizes = [len(g) for g in groups]
    queries, pos = model.queries(h, w, model.latent_stride)  # [1, N, D] each (queries already include pos)
    flat = torch.tensor([i for g in groups for i in g], dtype=torch.long, device=device)
    q_ord, pos_ord = queries.to(model.dtype)[:, flat], pos.to(model.dtype)[:, flat]  # decoding order: groups are slices
    tail = q_ord.new_zeros(rows, 0, q_ord.shape[-1])
    out = torch.zeros(batch, h * w, c, device=device, dtype=torch.float32)  # [B, N, C] raster order
    if context is not None and context.indices.numel() > 0:
        idx = context.indices.to(device)
        out[:, idx] = context.latents.to(device=device, dtype=torch.float32)
        ctx_lat = model.embed_latents(context.latents.to(device), pos.to(model.dtype)[:, idx]).repeat(cfg_rows, 1, 1)
        tail = _interleave(queries.to(model.dtype)[:, idx].expand(rows, -1, -1), ctx_lat)  # [R, 2K, D]
    t0, lengths, need, slots, rel = _plan(prefix, tail.shape[1], sizes, settings)
    eng = _engine(model, rows, need, settings, flow)
    eng.refresh()
    slots_all = torch.tensor(slots, dtype=torch.long).to(device, non_blocking=True)  # one copy per generation
    rel_all = torch.tensor(rel, dtype=torch.long).to(device, non_blocking=True)
    num_groups = len(groups)
    cfgs = [cfg_for_group(settings.cfg_schedule, settings.cfg_scale, k, num_groups)
            if cfg_rows == 2 else 1.0 for k in range(num_groups)]
    cfg_all = torch.tensor(cfgs, dtype=torch.float32).to(device, non_blocking=True)
    bounds = [0]
    for s in sizes:
        bounds.append(bounds[-1] + s)
    max_position = t0 + (max(rel) if rel else 0)  # an upper bound on every position id of either rule
    with _compile_limits(settings, len(set(sizes))), _plain_rope(model.llm, max_position):
        hidden, last = eng.prefill(prefix, torch.cat([tail, q_ord[:, : sizes[0]].expand(rows, -1, -1)], dim=1))
        qwen_rule = settings.mode == "reference" and settings.position_rule == "padded_text_offset"
        eng.row_base.copy_(torch.zeros_like(last) if qwen_rule else last + 1)
        pending, off = None, 0
        for k in range(num_groups):
            a, b, g = bounds[k], bounds[k + 1], sizes[k]
            noise = NoiseSource(flow.draws, (batch * g, c), device, noise_fn, generator).stacked()  # [draws, B*g, C]
            q, p = q_ord[:, a:b], pos_ord[:, a:b]
            if eng.compiled:
                torch.compiler.cudagraph_mark_step_begin()
            if k == 0:
                x, feed = eng.first(hidden[:, -g:], q, p, noise, cfg_all[k])
            else:
                n = lengths[k - 1]
                x, feed = eng.step(pending, q, p, slots_all[off:off + n], rel_all[off:off + n], noise, cfg_all[k])
                off += n
                eng.cache.length = t0 + off
            out[:, flat[a:b]] = x
            pending = feed.clone() if eng.compiled else feed  # graph outputs are overwritten by the next replay
            if callback is not None:
                callback(k + 1, num_groups, out.view(batch, h, w, c).permute(0, 3, 1, 2))
    return out.view(batch, h, w, c).permute(0, 3, 1, 2).contiguous()
