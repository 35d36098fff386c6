"""VGT-AR training task: teacher-forced QueryAR with a flow-matching loss on frozen VGT-AE latents.

Trainable: the LLM (its token embeddings only when untied from the text head, as the reference, whose frozen tied
``lm_head`` freezes them), the query and position grids, both projectors and the flow head. The VGT-AE is frozen and in
eval mode (no latent noise); the VLM's vision tower is not part of the AR model. The networks are the inference ones
(``ar_model.py``, ``flow_head.py``, ``autoencoder.py``); nothing here changes their forward.

Loss draws (replaceable through ``draws``): ``permutation`` [L]; ``noise`` [k*B*L, 32]; ``u`` [k*B*L] (t = sigmoid(u)),
rows ordered (repeat j, sample b, raster token l) -> j*B*L + b*L + l.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .ar_batch import assemble, latent_tokens
from .losses import flow_matching_loss, repa_loss
from .task import BatchInfo, Draws, Metrics, ParamGroup, TrainTask, make_generator, stream_seed

logger = logging.getLogger(__name__)

DEFAULT_PROMPTS = [
    "a red apple on a wooden table",
    "a small cabin near a quiet lake under the evening sky",
    "a white cat sleeping on a blue sofa",
    "a bowl of oranges next to a glass of water",
]


@dataclass
class RepaConfig:
    """REPA (in the reference code, not the paper): cosine alignment of a flow-head block's features with a frozen
    vision model's patch features. Off unless ``weight`` > 0; the feature model is loaded from local files only."""

    weight: float = 0.0  # loss weight (the reference configs use 0.5 when enabled)
    model: str = ""  # "timm:<architecture>" (with `checkpoint`) or "<python.module>:<factory>" returning a module
    checkpoint: str | None = None  # local weights file for a timm model (.safetensors / .pth, weights only)
    image_size: int = 256  # the feature model's input size (pixels are resized to it)
    depth: int | None = None  # flow-head block whose output is aligned; None: max(2, layers // 2) as the reference
    projector_dim: int = 2048  # hidden width of the projector MLP (head dim -> 2048 -> 2048 -> feature dim)


@dataclass
class ARTaskConfig:
    """The ``model`` section of a VGT-AR run."""

    init: str = "checkpoint"  # "checkpoint": continue a VGT-AR (official .pth, converted .safetensors or model folder);
    #   "base": a new VGT-AR from a base VLM folder WITH weights + a VGT-AE checkpoint
    checkpoint: str | None = None  # init=checkpoint: the VGT-AR to continue
    checkpoint_weights: str = "raw"  # official .pth: "raw" (state_dict, what the reference's load_from reads) | "ema"
    base_model: str | None = None  # base VLM folder (config.json + tokenizer; + weights for init=base); default: the
    #   checkpoint's folder when it is a model folder
    layer_ratio: float = 1.0  # init=base: keep the first int(N * ratio) LLM layers (the Qwen2.5-VL reference: 0.5)
    ae_checkpoint: str | None = None  # VGT-AE checkpoint; default: the VGT-AE embedded in `checkpoint`
    ae_base_model: str | None = None  # base VLM folder of the VGT-AE's encoder (InternVL3: the 1B); default base_model
    decoder_config: str | None = None  # DC-AE config (folder / config.json); default: stored with the AE, or f32c32
    head_dim: int = 1536  # init=base: flow-head width (reference 1536)
    head_layers: int = 12  # init=base: flow-head AdaLN blocks (reference 12)
    query_grid: tuple[int, int] = (64, 64)  # init=base: max latent grid of the learnable queries (64x64 = 1792 px)
    time_shift: float | None = None  # training time shift s (the InternVL3 reference: 1.4; Qwen2.5-VL: none)
    flow_batch_mul: int = 1  # k (t, noise) draws per token per step for the flow head (1 = reference)
    permutation: str = "process"  # "process": one token order per process micro-batch (the reference under DDP);
    #   "global": the same order on every process (N processes == 1 process with the global batch);
    #   "raster": always raster order (not VGT: a plain AR that must be sampled with order="raster")
    cfg_dropout: float = 0.1  # fraction of prompts replaced by the unconditional "Generate an image."
    max_text_tokens: int = 256  # prompt tokens kept
    text_truncation: str = "reference"  # "reference": cut the templated prompt's tail | "caption": cut the caption only
    train_embeddings: str = "auto"  # "auto": train token embeddings unless tied to the text head | "true" | "false"
    attn_implementation: str = "sdpa"  # "sdpa" | "eager" | "flash_attention_2"
    repa: RepaConfig = field(default_factory=RepaConfig)
    sample_prompts: list[str] = field(default_factory=lambda: list(DEFAULT_PROMPTS))  # periodic sample grid
    sample_size: int = 448  # sample resolution (multiple of 28)
    sample_cfg: float = 4.5  # sample CFG scale
    sample_steps: int = 30  # sample flow steps per token group
    sample_acc_ratio: int = 4  # tokens decoded per step in samples
    sample_seed: int = 0  # the same noise at every sample step


class ARTask(TrainTask):
    """VGT-AR training: see the module docstring."""

    name = "ar"
    config_cls = ARTaskConfig

    def __init__(self, config: ARTaskConfig, ar: nn.Module, tokenizer, ae: nn.Module | None = None,
                 sources: dict[str, Any] | None = None):
        super().__init__()
        self.cfg = config
        self.ar = ar
        self.ae = ae
        self.tokenizer = tokenizer
        self.sources = dict(sources or {})  # base folders / decoder config for exports
        from ..backbones import get_family

        start = get_family(ar.family).image_start_ids(tokenizer)  # "<img>" (or the family's marker) token ids
        self.register_buffer("start_ids", torch.tensor(start, dtype=torch.long), persistent=False)
        self.repa_model, self.repa_projector = None, None
        if config.repa.weight > 0:
            from .repa import build_repa

            self.repa_model, self.repa_projector = build_repa(config.repa, self.ar.flow_head)
        if config.flow_batch_mul < 1:
            raise ValueError(f"model.flow_batch_mul={config.flow_batch_mul} must be >= 1")
        if config.permutation not in ("process", "global", "raster"):
            raise ValueError(f"model.permutation={config.permutation!r}: expected process, global or raster")
        self._set_trainable()
        self._no_split_modules = [type(self.ar.llm.layers[0]).__name__]
        for p in self.parameters():  # FSDP2 shards contiguous tensors only (loaded conv weights may be channels-last)
            if not p.is_contiguous():
                p.data = p.data.contiguous()

    @classmethod
    def build(cls, config) -> ARTask:
        from .ar_init import build_ar_task

        return build_ar_task(cls, config)

    # ------------------------------------------------------------------ parameters
    def _set_trainable(self) -> None:
        self.requires_grad_(False)
        self.ar.requires_grad_(True)
        if not self.embeddings_trainable():
            self.ar.llm.get_input_embeddings().requires_grad_(False)
        if self.repa_projector is not None:
            self.repa_projector.requires_grad_(True)

    def embeddings_trainable(self) -> bool:
        mode = str(self.cfg.train_embeddings).lower()
        if mode == "auto":
            tied = self.sources.get("tied_embeddings", getattr(self.ar.llm.config, "tie_word_embeddings", False))
            return not bool(tied)
        if mode in ("true", "false"):
            return mode == "true"
        raise ValueError(f"model.train_embeddings={self.cfg.train_embeddings!r}: expected auto, true or false")

    def train(self, mode: bool = True) -> ARTask:
        super().train(mode)
        for frozen in (self.ae, self.repa_model):
            if frozen is not None:
                frozen.eval()
        return self

    def ema_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad and n.startswith("ar.")]

    def param_groups(self, phase: str) -> list[ParamGroup]:
        groups = [ParamGroup("ar", [(n, p) for n, p in self.named_parameters() if p.requires_grad and n.startswith("ar.")])]
        if self.repa_projector is not None:
            groups.append(ParamGroup("repa_projector", list(self.repa_projector.named_parameters())))
        return groups

    def enable_gradient_checkpointing(self) -> None:
        self.ar.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def no_split_modules(self) -> list[type]:
        return [type(self.ar.llm.layers[0])]

    def resume_fingerprint(self) -> dict[str, Any]:
        c = self.cfg
        return {"task": self.name, "flow_batch_mul": c.flow_batch_mul, "permutation": c.permutation,
                "cfg_dropout": c.cfg_dropout, "time_shift": c.time_shift}

    # ------------------------------------------------------------------ loss
    def loss(self, phase: str, batch: dict[str, Any], step: int, draws: Draws | None = None) -> tuple[torch.Tensor, Metrics]:
        out = self.teacher_forced(batch, step, draws)
        metrics = {"loss/flow": out["flow"].loss.detach()}
        total = out["flow"].loss
        if "repa" in out:
            total = total + self.cfg.repa.weight * out["repa"]
            metrics["loss/repa"] = out["repa"].detach()
        metrics["loss"] = total.detach()
        return total, metrics

    def teacher_forced(self, batch: dict[str, Any], step: int = 0, draws: Draws | None = None) -> dict[str, Any]:
        """The full forward: -> {"flow": FlowLoss, "sequence": TeacherForced, "conditions": [B, L, D], ...}."""
        draws = dict(draws or {})
        latents = self.latents(batch)  # [B, 32, h, w]
        b, c, h, w = latents.shape
        info = batch.get("info") or BatchInfo(step=step, micro=0, slots=list(range(b)))
        perm = draws.get("permutation")
        if perm is None:
            perm = self.draw_permutation(h * w, info)
        seq = assemble(self.ar, batch["input_ids"], batch["attention_mask"], self.start_ids, latents, perm)
        out = self.ar.llm(inputs_embeds=seq.inputs_embeds, attention_mask=seq.attention_mask,
                          position_ids=seq.position_ids, use_cache=False, return_dict=True)
        cond = self.ar.image_out_projector(seq.query_hidden(out.last_hidden_state))  # [B, L, D] raster order
        target = latent_tokens(latents).reshape(b * h * w, c)  # [B*L, C]
        k = self.cfg.flow_batch_mul
        noise, u = draws.get("noise"), draws.get("u")
        if noise is None or u is None:
            d_noise, d_u = self.draw_flow(info, h * w, c, k, target.device)
            noise = d_noise if noise is None else noise
            u = d_u if u is None else u
        depth = self.repa_depth() if self.repa_model is not None else None
        flow = flow_matching_loss(self.ar.flow_head, target, cond.reshape(b * h * w, -1), noise=noise, u=u,
                                  time_shift=self.cfg.time_shift, feature_depth=depth)
        result = {"flow": flow, "sequence": seq, "conditions": cond}
        if depth is not None:
            result["repa"] = self.repa_term(batch, flow.features, b, h, w, k)
        return result

    def latents(self, batch: dict[str, Any]) -> torch.Tensor:
        if "latents" in batch:
            return batch["latents"].float()
        if self.ae is None:
            raise ValueError("the batch has images but the task has no VGT-AE: give model.ae_checkpoint or use a latent cache")
        with torch.no_grad():
            return self.ae.encode(batch["pixels"]).clone()  # clone: a normal tensor, not an inference one

    @property
    def trained_order(self) -> str:
        """The token order the model learns (recorded in exports: what sampling uses by default)."""
        return "raster" if self.cfg.permutation == "raster" else "random"

    def draw_permutation(self, n: int, info: BatchInfo) -> torch.Tensor:
        if self.cfg.permutation == "raster":
            return torch.arange(n)
        scope = (info.step, info.micro) if self.cfg.permutation == "global" else (info.slots[0],)
        gen = torch.Generator().manual_seed(stream_seed(info.seed, "permutation", *scope))
        return torch.randperm(n, generator=gen)

    def draw_flow(self, info: BatchInfo, n: int, c: int, k: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample streams: noise [k*B*n, c] and u [k*B*n], rows j*B*n + b*n + l."""
        noise, u = [], []
        for slot in info.slots:
            gen = make_generator(device, info.seed, "flow", slot)
            noise.append(torch.randn((k, n, c), generator=gen, device=device))
            u.append(torch.randn((k, n), generator=gen, device=device))
        return torch.stack(noise, 1).reshape(-1, c), torch.stack(u, 1).reshape(-1)

    # ------------------------------------------------------------------ REPA
    def repa_depth(self) -> int:
        return self.cfg.repa.depth or max(2, len(self.ar.flow_head.res_blocks) // 2)

    def repa_term(self, batch, head_features: torch.Tensor, b: int, h: int, w: int, k: int) -> torch.Tensor:
        if "pixels" not in batch:
            raise ValueError("REPA needs the images (model.repa.weight > 0): it cannot train from a latent cache")
        from .repa import patch_features

        with torch.no_grad():
            target = patch_features(self.repa_model, batch["pixels"], self.cfg.repa.image_size, h, w)  # [B*L, F]
        pred = self.repa_projector(head_features)  # [k*B*L, F]
        return repa_loss(pred, target.to(pred.device).repeat(k, 1))

    # ------------------------------------------------------------------ data
    def build_dataset(self, data_config) -> torch.utils.data.Dataset:
        from .ar_data import ARDataset, PromptTokens
        from .data import ImageCaptionDataset, LatentCacheDataset, load_records

        if data_config.latent_cache:
            base = LatentCacheDataset(data_config.latent_cache)
            if self.ae is not None:
                from .latent_cache import check_cache_matches

                check_cache_matches(base.info, self.ae, data_config)
        else:
            base = ImageCaptionDataset(load_records(data_config.source, data_config.image_key, data_config.caption_key),
                                       data_config.image_size, data_config.crop, stride=self.ar.latent_stride,
                                       on_error=data_config.on_error)
        tokens = PromptTokens(self.tokenizer, self.cfg.max_text_tokens, self.cfg.text_truncation)
        return ARDataset(base, tokens, self.cfg.cfg_dropout)

    def collate(self, samples):
        from .ar_data import collate_ar

        return collate_ar(samples, self.pad_id)

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else (self.tokenizer.eos_token_id or 0)

    # ------------------------------------------------------------------ outputs
    def pipeline(self):
        from ..pipeline import VGTPipeline

        return VGTPipeline(self.ar, self.tokenizer, self.ae, default_order=self.trained_order)

    def sample(self, step: int) -> torch.Tensor | None:
        if self.ae is None or not self.cfg.sample_prompts:
            return None
        c = self.cfg
        out = self.pipeline().generate(
            list(c.sample_prompts), height=c.sample_size, width=c.sample_size, cfg_scale=c.sample_cfg,
            num_flow_steps=c.sample_steps, acc_ratio=c.sample_acc_ratio,
            generator=torch.Generator().manual_seed(c.sample_seed),
        )
        return out.images

    def export(self, folder: Path, weights: Mapping[str, torch.Tensor]) -> Path:
        from .export import export_ar_folder

        return export_ar_folder(self, folder, weights)
