"""Typed configs for the VGT networks, and named presets.

Every size here is a default or a preset; the real values of a checkpoint are read from its keys and shapes
(see ``checkpoints.detect_variant``) and from the base model's ``config.json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# The VLM families are the registered adapters of ``vgt_impl.backbones`` (``backbones.family_names()``).

# Prompt template shared by both official families (configs/datasets/*/processors.py of the reference).
INSTRUCTION = "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n"
GENERATION = "Generate an image: {input}"
CFG_PROMPT = "Generate an image."  # the official unconditional (negative) prompt, before INSTRUCTION wrapping
IMG_START_TOKEN = "<img>"
MAX_PROMPT_TOKENS = 256  # templated prompt length the official models were trained with (longer is an error)

# Pixels per latent token side of the official families (ViT patch 14 x 2x2 merge). A model's own stride comes from its
# base VLM's vision config (``FamilyAdapter.latent_stride``): Qwen3-VL's patch 16 x 2 gives 32.
LATENT_STRIDE = 28
LATENT_CHANNELS = 32

# Normalisation constants of the vision encoders.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class FlowHeadConfig:
    input_dim: int = LATENT_CHANNELS  # latent channels per token
    cond_dim: int = 2048  # LLM hidden size (condition from image_out_projector)
    dim: int = 1536  # width of the AdaLN MLP
    layers: int = 12  # number of AdaLN residual blocks
    mlp_ratio: float = 1.0  # hidden width of each block's MLP, relative to dim
    frequency_embedding_size: int = 256  # sinusoidal timestep features


@dataclass
class AEConfig:
    family: str = "qwen2_5_vl"
    embed_dim: int = LATENT_CHANNELS  # latent channels
    hidden_size: int = 2048  # width of the vision features after merger / mlp1 (= down_blocks width)
    encoder_norm: bool = True  # channel LayerNorm on the latent
    num_res_blocks: int = 3
    latent_stride: int | None = None  # pixels per latent token side; None = read from the base VLM's vision config
    # The DC-AE decoder config (diffusers AutoencoderDC); the vision tower's comes from the base model folder.
    decoder_config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ARConfig:
    family: str = "qwen2_5_vl"  # the LLM's own config comes from the base model folder
    num_layers: int | None = None  # LLM layers kept (Qwen AR keeps the first half); None = all
    hidden_size: int = 2048
    query_grid: tuple[int, int] = (64, 64)  # max latent grid (h, w) of the learnable queries
    latent_dim: int = LATENT_CHANNELS
    latent_stride: int = LATENT_STRIDE  # pixels per latent token side (set from the base VLM's vision config)
    flow_head: FlowHeadConfig = field(default_factory=FlowHeadConfig)
    latent_norm: bool = True  # sampled tokens are LayerNormed per token, as VGT-AE latents are; False for latents
    #   that are not (a VAE-based AR baseline on scaled VAE latents)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
