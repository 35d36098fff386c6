"""Starting points of VGT-AR training.

- ``init: checkpoint``: continue a VGT-AR (SFT on top of pretrain): an official mmengine ``.pth`` (its ``state_dict``
  by default, as the reference's ``load_from``; ``checkpoint_weights: ema`` for the EMA), a converted
  ``.safetensors`` or an exported model folder. Its embedded VGT-AE is used unless ``ae_checkpoint`` is given.
- ``init: base``: a new VGT-AR from a base VLM folder with weights (its first ``layer_ratio`` LLM layers) plus a VGT-AE
  checkpoint; the queries, projectors and flow head start from the reference's initialisation.

Weights are loaded in fp32 (bf16 autocast runs the math); frozen parts stay frozen.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

INITS = ("checkpoint", "base")


def build_ar_task(cls, run_config):
    """RunConfig -> ARTask with its networks loaded."""
    from ..backbones import get_family

    mc = run_config.model
    if mc.init not in INITS:
        raise ValueError(f"model.init={mc.init!r}: expected one of {INITS}")
    if mc.init == "checkpoint":
        ar, ae_sd, base, folder, weights = _from_checkpoint(mc)
    else:
        ar, base = _from_base(mc)
        ae_sd, folder, weights = None, None, None
    family = ar.family
    ae_base = Path(mc.ae_base_model) if mc.ae_base_model else _ae_base(folder, base, mc.base_model)
    ae = _load_ae(mc, ae_sd, family, ae_base, weights, needed=not run_config.data.latent_cache)
    tokenizer = get_family(family).load_tokenizer(base)
    if ae is not None:
        from ..pipeline import check_compatible

        check_compatible(ar, ae)
        if ae.config.embed_dim != ar.config.latent_dim:
            raise ValueError(f"the VGT-AE makes {ae.config.embed_dim}-channel latents but the VGT-AR models "
                             f"{ar.config.latent_dim}: use the VGT-AE the model was made for")
    ar.float().train()
    sources: dict[str, Any] = {"base_model": str(base), "ae_base_model": str(ae_base) if ae is not None else None,
                               "tied_embeddings": tied_embeddings(base),
                               "training": {"init": mc.init, "checkpoint": mc.checkpoint, "base_model": mc.base_model}}
    return cls(mc, ar, tokenizer, ae, sources=sources)


def tied_embeddings(base: Path) -> bool:
    """Whether the base VLM ties its text head to the token embeddings (config.json, any nesting the hub uses)."""
    from ..backbones.common import read_config_json

    raw = read_config_json(base)
    return any(bool(c.get("tie_word_embeddings")) for c in (raw, raw.get("text_config") or {}, raw.get("llm_config") or {}))


def _ae_base(folder: Path | None, base: Path, given_base: str | None) -> Path:
    from ..loading import ae_base_of

    if folder is not None and given_base is None:
        return ae_base_of(folder)
    return base


def _from_checkpoint(mc):
    from ..loading import default_base, load_ar_model, resolve_model_path

    if not mc.checkpoint:
        raise ValueError("model.init=checkpoint needs model.checkpoint (a VGT-AR .pth / .safetensors / model folder)")
    if mc.checkpoint_weights not in ("raw", "ema"):
        raise ValueError(f"model.checkpoint_weights={mc.checkpoint_weights!r}: expected raw or ema")
    weights, folder = resolve_model_path(mc.checkpoint)
    base = default_base("model.checkpoint", mc.base_model, folder)
    ar, extras = load_ar_model(weights, base_model=base, dtype=torch.float32, device=torch.device("cpu"),
                               attn_implementation=mc.attn_implementation,
                               prefer_ema=mc.checkpoint_weights == "ema")
    logger.info("VGT-AR from %s (%s weights)", weights, mc.checkpoint_weights)
    return ar, extras.get("ae_state_dict") or None, base, folder, weights


def _from_base(mc):
    """A new VGT-AR: the base VLM's first int(N * layer_ratio) LLM layers with their weights; new queries, projectors
    and flow head with the reference's initialisation."""
    from ..ar_model import VGTARModel
    from ..backbones import load_base
    from ..backbones.base_weights import build_base_language_model
    from ..config import ARConfig, FlowHeadConfig

    if not mc.base_model:
        raise ValueError("model.init=base needs model.base_model: the base VLM folder with its weights")
    if not 0.0 < mc.layer_ratio <= 1.0:
        raise ValueError(f"model.layer_ratio={mc.layer_ratio} must be in (0, 1]")
    base = Path(mc.base_model)
    fam, base_cfg = load_base(base)
    total = int(base_cfg.text_config.num_hidden_layers)
    keep = max(1, int(total * mc.layer_ratio))  # the reference's prune_language_model_layers
    hidden = int(base_cfg.text_config.hidden_size)
    cfg = ARConfig(family=fam.name, num_layers=keep, hidden_size=hidden, query_grid=tuple(mc.query_grid),
                   latent_stride=fam.latent_stride(base_cfg),
                   flow_head=FlowHeadConfig(cond_dim=hidden, dim=mc.head_dim, layers=mc.head_layers))
    with torch.device("meta"):
        ar = VGTARModel(cfg, base_cfg.text_config, attn_implementation=mc.attn_implementation)
    ar.llm = build_base_language_model(base, num_layers=keep, dtype=torch.float32, device="cpu",
                                       attn_implementation=mc.attn_implementation)
    for name in ("queries", "image_in_projector", "image_out_projector", "flow_head"):
        getattr(ar, name).to_empty(device="cpu")
    init_new_modules(ar)
    logger.info("new %s VGT-AR from %s: %d of %d LLM layers", fam.display_name, base, keep, total)
    return ar, base


@torch.no_grad()
def init_new_modules(ar) -> None:
    """The reference's initialisation of the parts a base VLM does not have (AdaptiveMetaQuery, projectors,
    FlowMatchingHead.initialize_weights): adaLN modulations and the output layer start at zero."""
    nn = torch.nn
    for part in (ar.queries, ar.image_in_projector, ar.image_out_projector, ar.flow_head):
        for m in part.modules():  # LayerNorms etc.: their defaults (memory from to_empty is garbage)
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    q = ar.queries
    nn.init.normal_(q.query_grid, std=q.query_grid.shape[1] ** -0.5)  # normal(0, 1/sqrt(D))
    nn.init.trunc_normal_(q.pos_grid, std=0.02)
    for proj in (ar.image_in_projector, ar.image_out_projector):
        nn.init.normal_(proj.weight, std=0.02)
        nn.init.zeros_(proj.bias)
    head = ar.flow_head
    for m in head.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    nn.init.normal_(head.time_embed.mlp[0].weight, std=0.02)
    nn.init.normal_(head.time_embed.mlp[2].weight, std=0.02)
    for block in head.res_blocks:
        nn.init.zeros_(block.adaLN_modulation[-1].weight)
        nn.init.zeros_(block.adaLN_modulation[-1].bias)
    for lin in (head.final_layer.adaLN_modulation[-1], head.final_layer.linear):
        nn.init.zeros_(lin.weight)
        nn.init.zeros_(lin.bias)


def _load_ae(mc, ae_sd, family: str, ae_base: Path, ar_weights: Path | None, needed: bool):
    """The frozen VGT-AE: ``ae_checkpoint`` if given, else the one embedded in the AR checkpoint."""
    from ..autoencoder import VGTAutoencoder
    from ..loading import load_embedded_ae, stored_decoder_config

    if mc.ae_checkpoint:
        ae = VGTAutoencoder.from_pretrained(mc.ae_checkpoint, base_model=mc.ae_base_model or ae_base,
                                            decoder_config=mc.decoder_config, dtype=torch.float32, device="cpu",
                                            attn_implementation=mc.attn_implementation)
    elif ae_sd:
        decoder = mc.decoder_config if mc.decoder_config is not None else (
            stored_decoder_config(ar_weights) if ar_weights is not None else None)
        ae = load_embedded_ae(ae_sd, family=family, base_model=ae_base, decoder_config=decoder,
                              dtype=torch.float32, device=torch.device("cpu"))
    elif needed:
        raise ValueError("no VGT-AE: the VGT-AR checkpoint embeds none; give model.ae_checkpoint (and "
                         "model.ae_base_model), or train from a latent cache (data.latent_cache)")
    else:
        logger.warning("no VGT-AE: training from the latent cache; samples are off and exports embed no VGT-AE")
        return None
    return ae.eval().requires_grad_(False)
