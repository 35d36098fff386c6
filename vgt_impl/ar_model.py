"""The VGT-AR network: the VLM's language model, the 2-D query grid, the latent projectors and the flow head.

Only the network lives here; the decoding loop is in ``queryar.py`` and the user-facing API in ``pipeline.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .backbones import get_family
from .config import LATENT_STRIDE, ARConfig, FlowHeadConfig
from .flow_head import FlowHead
from .queries import QueryGrid


class VGTARModel(nn.Module):
    """LLM + learnable queries + ``image_in_projector`` / ``image_out_projector`` + flow-matching head."""

    def __init__(self, config: ARConfig, text_config: Any, *, attn_implementation: str = "sdpa"):
        super().__init__()
        self.config = config
        family = get_family(config.family)
        self.llm = family.build_language_model(
            text_config, num_layers=config.num_layers, attn_implementation=attn_implementation
        )
        d = config.hidden_size
        self.queries = QueryGrid(d, config.query_grid)
        self.image_in_projector = nn.Linear(config.latent_dim, d)  # latent token -> LLM embedding
        self.image_out_projector = nn.Linear(d, d)  # LLM hidden state -> flow-head condition
        fh = config.flow_head
        self.flow_head = FlowHead(
            input_dim=fh.input_dim, cond_dim=fh.cond_dim, dim=fh.dim, layers=fh.layers, mlp_ratio=fh.mlp_ratio
        )

    @property
    def dtype(self) -> torch.dtype:
        return self.image_out_projector.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.image_out_projector.weight.device

    @property
    def family(self) -> str:
        return self.config.family

    @property
    def latent_stride(self) -> int:
        """Pixels per latent token side (the stride of the VGT-AE this model was tuned with)."""
        return int(self.config.latent_stride)

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids [B, T] -> embeddings [B, T, D]."""
        return self.llm.get_input_embeddings()(input_ids)

    def embed_latents(self, latents: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Sampled (LayerNormed) latents [B, g, C] + their position embeddings [1|B, g, D] -> LLM inputs [B, g, D]."""
        return self.image_in_projector(latents.to(self.dtype)) + pos


def ar_config_from_shapes(
    family: str, text_config: Any, shapes: dict[str, tuple[int, ...]], num_layers: int | None,
    latent_stride: int = LATENT_STRIDE,
) -> ARConfig:
    """Build an :class:`ARConfig` from the shapes of a mapped (our layout) state dict."""
    qg = shapes["queries.query_grid"]  # [1, D, Hmax, Wmax]
    hidden = int(qg[1])
    head_layers = len({k.split(".")[2] for k in shapes if k.startswith("flow_head.res_blocks.")})
    in_dim, head_dim = shapes["flow_head.input_proj.weight"][1], shapes["flow_head.input_proj.weight"][0]
    mlp_hidden = shapes.get("flow_head.res_blocks.0.mlp.0.weight", (head_dim, head_dim))[0]
    fh = FlowHeadConfig(
        input_dim=int(in_dim), cond_dim=hidden, dim=int(head_dim), layers=head_layers,
        mlp_ratio=float(mlp_hidden) / float(head_dim),
    )
    return ARConfig(
        family=family, num_layers=num_layers, hidden_size=hidden,
        query_grid=(int(qg[2]), int(qg[3])), latent_dim=int(in_dim), latent_stride=int(latent_stride), flow_head=fh,
    )
