"""The VLM family adapter interface and its registry.

Everything VGT needs to know about one VLM family lives in one :class:`FamilyAdapter` subclass, in one file of
``vgt_impl/backbones/``; the rest of the library asks the registry (:func:`get_family`, :func:`family_for_model_type`,
:func:`families`) and never names a family. Adding a family is that one file plus its line in :data:`FAMILY_MODULES`.

An adapter covers: names, the base ``config.json`` model types and how to read them, the vision encoder of VGT-AE and
its features, the LLM of VGT-AR, the tokenizer and the image-start marker, pixel normalisation, the latent stride,
the position rule of cached decoding steps, official VGT checkpoints (detection from keys, key maps), base hub
checkpoints (key maps onto our LLM / vision encoder) and the reference's quirks.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .common import BaseConfig
from .common import load_tokenizer as _load_tokenizer

# One line per family: the module of ``vgt_impl.backbones`` that defines and registers its adapter.
FAMILY_MODULES: tuple[str, ...] = ("qwen2_5_vl", "internvl3", "qwen3_vl")

# How later (cached) decoding steps number their positions:
# - "continue": each row continues from its own last position (prev_last + 1 + i);
# - "padded_text_offset": the reference Qwen2.5-VL formula text_len + k * call_len + i, the same for every row.
POSITION_RULES = ("continue", "padded_text_offset")

Shape = Callable[[str], tuple[int, ...]]


@dataclass(frozen=True)
class BaseTensor:
    """Where one tensor of our modules comes from in a base VLM checkpoint."""

    source: str  # the hub checkpoint key
    chunk: int = 0  # which dim-0 chunk (a fused qkv split into q, k, v), when chunks > 1
    chunks: int = 1  # how many equal dim-0 chunks the source tensor holds

    def read(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.chunk(self.chunks, dim=0)[self.chunk] if self.chunks > 1 else tensor

    def shape(self, source_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (source_shape[0] // self.chunks, *source_shape[1:])


@dataclass
class BaseKeyMap:
    """A base checkpoint's keys mapped onto one of our modules: our key -> source, plus what is left out and why."""

    tensors: dict[str, BaseTensor]
    dropped: dict[str, str]  # group of hub keys -> reason


class FamilyAdapter(ABC):
    """One VLM family. Subclasses set the class attributes and implement the abstract methods."""

    name: ClassVar[str]  # registry key, stored in converted checkpoints: "qwen2_5_vl"
    display_name: ClassVar[str]  # for messages: "Qwen2.5-VL"
    model_types: ClassVar[tuple[str, ...]]  # base config.json model_type values of this family
    base_models: ClassVar[str]  # which base folder to point at, for messages and `vgt inspect`
    image_start_marker: ClassVar[str]  # text of the image-start marker fed after the prompt
    position_rule: ClassVar[str]  # one of POSITION_RULES (reference mode; corrected mode always continues)
    pixel_mean: ClassVar[tuple[float, float, float]]  # VGT-AE input normalisation (defaults; see pixel_norm)
    pixel_std: ClassVar[tuple[float, float, float]]
    # Reference quirk: for an all-non-negative batch the reference VGT-AE skips its mean/std normalisation.
    reference_nonneg_skips_norm: ClassVar[bool] = False
    # How the tokenizer must encode image_start_marker for the prompts the checkpoints were trained on: "one" special
    # token, "several" ordinary pieces, or "" (not checked). Verified before any network is built.
    image_start_pieces: ClassVar[str] = ""
    # LLM layers a VGT-AR checkpoint keeps: int(base layers x layer_ratio); None = not checked.
    layer_ratio: ClassVar[float | None] = None
    ae_base_model: ClassVar[str] = "its base model folder"  # the VGT-AE encoder's base folder, for messages
    # Latent stride of the official VGT checkpoints of this family (None: no official checkpoint exists).
    official_latent_stride: ClassVar[int | None] = None

    # ------------------------------------------------------------------ base folder
    @abstractmethod
    def load_base_config(self, base_dir: str | Path) -> BaseConfig:
        """Read a base VLM folder's config.json (all formats the hub ships) -> :class:`BaseConfig`."""

    def pixel_norm(self, base_cfg: BaseConfig | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) applied to [0, 1] pixels before the vision encoder."""
        return tuple(self.pixel_mean), tuple(self.pixel_std)

    @abstractmethod
    def latent_stride(self, base_cfg: BaseConfig) -> int:
        """Pixels per latent token side, from the vision config (ViT patch x merge)."""

    def load_tokenizer(self, base_dir: str | Path):
        """The base model's tokenizer (no remote code), right padding as the reference."""
        return _load_tokenizer(base_dir)

    def image_start_ids(self, tokenizer) -> list[int]:
        """Token ids of the image-start marker fed after the prompt."""
        return list(tokenizer.encode(self.image_start_marker, add_special_tokens=True))

    # ------------------------------------------------------------------ networks
    @abstractmethod
    def build_vision_encoder(
        self, base_cfg: BaseConfig, *, attn_implementation: str = "sdpa", out_hidden: int | None = None
    ) -> nn.Module:
        """The VGT-AE encoder (vision tower + merger / projector), empty weights."""

    @abstractmethod
    def vision_features(self, encoder: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels [B, 3, H, W] -> features [B, (H/s)*(W/s), D] in raster order (s = latent stride)."""

    @abstractmethod
    def build_language_model(
        self, text_config: Any, *, num_layers: int | None = None, attn_implementation: str = "sdpa"
    ) -> nn.Module:
        """The VLM's text model (no lm_head), keeping its first ``num_layers`` layers."""

    # ------------------------------------------------------------------ official VGT checkpoints
    @abstractmethod
    def owns_ae_keys(self, keys: list[str], prefix: str = "") -> bool:
        """True when VGT-AE keys (official or our layout, under ``prefix``) have this family's encoder."""

    @abstractmethod
    def ae_vision_sizes(self, keys: list[str], shape: Shape, prefix: str = "") -> tuple[int, int]:
        """(vision layers, vision width) of a VGT-AE state dict of this family."""

    def ar_llm_prefix(self, keys: list[str]) -> str | None:
        """The LLM key prefix of an official VGT-AR checkpoint of this family, or None when not one."""
        return None

    @abstractmethod
    def map_ae_state_dict(self, sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """VGT-AE keys (official or ours) -> our VGTAutoencoder keys; returns (mapped, dropped group -> reason)."""

    @abstractmethod
    def map_llm_state_dict(self, sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Official VGT-AR ``lmm.*`` keys -> our LLM keys; returns (mapped, dropped group -> reason)."""

    # ------------------------------------------------------------------ base hub checkpoints
    @abstractmethod
    def map_base_keys(self, keys: Iterable[str], part: str) -> BaseKeyMap:
        """A base checkpoint's keys -> our LLM keys (``part="llm"``) or our vision-encoder keys (``"vision"``).

        Every hub key is either mapped or listed in ``dropped`` with its reason; an unknown key is an error.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} ({self.display_name})>"


# ---------------------------------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, FamilyAdapter] = {}
_LOADED = False


def register(cls: type[FamilyAdapter]) -> type[FamilyAdapter]:
    """Class decorator: add one adapter instance to the registry (each family module does this once)."""
    if cls.position_rule not in POSITION_RULES:
        raise ValueError(f"{cls.__name__}.position_rule={cls.position_rule!r}: expected one of {POSITION_RULES}")
    _REGISTRY[cls.name] = cls()
    return cls


def _load_all() -> None:
    global _LOADED
    if not _LOADED:
        for module in FAMILY_MODULES:
            importlib.import_module(f"{__package__}.{module}")
        _LOADED = True


def families() -> list[FamilyAdapter]:
    """Every registered family, in :data:`FAMILY_MODULES` order."""
    _load_all()
    return list(_REGISTRY.values())


def family_names() -> list[str]:
    return [f.name for f in families()]


def get_family(name: str) -> FamilyAdapter:
    """The adapter of a family name (``"qwen2_5_vl"``, ``"internvl3"``, ``"qwen3_vl"``, ...)."""
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown VLM family {name!r}: expected one of {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def display_name(name: str) -> str:
    """"Qwen2.5-VL" for "qwen2_5_vl"; unknown names come back unchanged (for messages)."""
    _load_all()
    fam = _REGISTRY.get(name)
    return fam.display_name if fam is not None else name


def family_for_model_type(model_type: str) -> FamilyAdapter | None:
    """The family whose base config.json has this ``model_type``, or None."""
    for fam in families():
        if model_type in fam.model_types:
            return fam
    return None


def supported_model_types() -> str:
    """"Qwen2.5-VL (qwen2_5_vl), InternVL3 (internvl_chat / internvl), ..." for error messages."""
    return ", ".join(f"{f.display_name} ({' / '.join(f.model_types)})" for f in families())


# ---------------------------------------------------------------------------------------------------------- key rules
# One rule of a base checkpoint layout: hub keys starting with ``prefix`` belong to ``part`` ("llm" / "vision") and
# are renamed by ``rename`` (a new prefix for the rest of the key, or a function rest -> {our key: BaseTensor}); with
# ``part=None`` they are dropped and ``rename`` is the reason.
Rename = str | Callable[[str, str], dict[str, BaseTensor]]
PrefixRule = tuple[str, str | None, Rename]


def map_by_prefix(keys: Iterable[str], part: str, rules: list[PrefixRule], layout: str) -> BaseKeyMap:
    """Apply the first matching rule to every key; ``layout`` names the family's layouts in the error message."""
    if part not in ("llm", "vision"):
        raise ValueError(f"part={part!r}: expected 'llm' or 'vision'")
    tensors: dict[str, BaseTensor] = {}
    dropped: dict[str, str] = {}
    for key in keys:
        rule = next((r for r in rules if key.startswith(r[0])), None)
        if rule is None:
            raise ValueError(f"unexpected key {key!r} in a {layout} base checkpoint: not a layout this project knows")
        prefix, owner, rename = rule
        if owner is None:
            dropped[_group(key, prefix)] = str(rename)
        elif owner != part:
            dropped[prefix + "*"] = f"{owner} weights (not part of the {part})"
        elif callable(rename):
            tensors.update(rename(key, key[len(prefix):]))
        else:
            tensors[rename + key[len(prefix):]] = BaseTensor(key)
    return BaseKeyMap(tensors, dropped)


def _group(key: str, prefix: str) -> str:
    return prefix + "*" if prefix.endswith(".") else prefix
