"""VGT models under ComfyUI's model management: ModelPatcher, load before use, offload after."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class PatcherModule(nn.Module):
    """What a ModelPatcher manages: the VGT network plus the plain attributes ModelPatcher writes (``device``)."""

    def __init__(self, net: nn.Module, device: torch.device):
        super().__init__()
        self.net = net
        self.device = device


def choose_devices(dtype_name: str) -> tuple[torch.device, torch.device, torch.dtype]:
    """(load device, offload device, dtype) from ComfyUI's model management; ``auto`` lets ComfyUI pick."""
    import comfy.model_management as mm

    load, offload = mm.get_torch_device(), mm.unet_offload_device()
    if dtype_name == "auto":
        dtype = mm.unet_dtype(load, supported_dtypes=[torch.bfloat16, torch.float16, torch.float32])
    else:
        dtype = DTYPES[dtype_name]
    return load, offload, dtype


def make_patcher(net: nn.Module, load: torch.device, offload: torch.device):
    import comfy.model_patcher

    size = sum(p.numel() * p.element_size() for p in net.parameters())
    return comfy.model_patcher.ModelPatcher(PatcherModule(net, offload), load_device=load, offload_device=offload,
                                            size=size)


@dataclass
class VGTAEHandle:
    """A VGT-AE on ComfyUI's model management (the value of a VGT_AE socket)."""

    ae: Any  # vgt_impl.VGTAutoencoder
    patcher: Any

    @property
    def family(self) -> str:
        return self.ae.family

    @property
    def stride(self) -> int:
        """Pixels per latent token side (28; 32 for Qwen3-VL models)."""
        return self.ae.stride

    def load(self) -> None:
        import comfy.model_management as mm

        mm.load_models_gpu([self.patcher], force_full_load=True)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        self.load()
        return self.ae.encode(images.to(self.ae.device))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self.load()
        return self.ae.decode(latents.to(self.ae.device))


@dataclass
class VGTModelHandle:
    """A VGT-AR pipeline on ComfyUI's model management (the value of a VGT_MODEL socket)."""

    pipe: Any  # vgt_impl.VGTPipeline (its .ae is the VGT-AE used for previews)
    patcher: Any
    ae: VGTAEHandle | None = None

    @property
    def family(self) -> str:
        return self.pipe.family

    @property
    def latent_stride(self) -> int:
        """Pixels per latent token side (28; 32 for Qwen3-VL models)."""
        return self.pipe.latent_stride

    def load(self, with_ae: bool = False) -> None:
        import comfy.model_management as mm

        patchers = [self.patcher] + ([self.ae.patcher] if with_ae and self.ae is not None else [])
        # Full loads: the networks are plain torch modules (no comfy.ops weight casting), so a partial low-VRAM load
        # would leave some layers on the CPU. ComfyUI still frees other models to make room and offloads these after.
        mm.load_models_gpu(patchers, force_full_load=True)

    def attach_ae(self, ae: VGTAEHandle) -> None:
        """Use a separately loaded VGT-AE for previews and as this model's VGT-AE."""
        if ae.family != self.family:
            raise ValueError(f"the VGT-AE is {ae.family} but the model is {self.family}")
        self.ae = ae
        self.pipe.ae = ae.ae


def load_model(ar_path, base_dir, *, ae_path=None, ae_base_dir=None, decoder=None, dtype_name="auto",
               attention="sdpa") -> VGTModelHandle:
    """Load VGT-AR (+ its VGT-AE) onto the offload device, wrapped for ComfyUI."""
    from vgt_impl import VGTPipeline

    load, offload, dtype = choose_devices(dtype_name)
    # A VGT-AE path is loaded by the pipeline after its checks (family, tokenizer) and the AR network.
    pipe = VGTPipeline.from_pretrained(ar_path, ae=ae_path, base_model=base_dir, ae_base_model=ae_base_dir,
                                       decoder_config=decoder, dtype=dtype, device=offload,
                                       attn_implementation=attention)
    ae_handle = VGTAEHandle(pipe.ae, make_patcher(pipe.ae, load, offload)) if pipe.ae is not None else None
    logger.info("loaded VGT %s (%s) for %s", pipe.family, dtype, load)
    return VGTModelHandle(pipe, make_patcher(pipe.ar, load, offload), ae_handle)


def load_ae(ae_path, base_dir, *, decoder=None, dtype_name="auto") -> VGTAEHandle:
    from vgt_impl import VGTAutoencoder

    load, offload, dtype = choose_devices(dtype_name)
    ae = VGTAutoencoder.from_pretrained(ae_path, base_model=base_dir, decoder_config=decoder, dtype=dtype,
                                        device=offload)
    return VGTAEHandle(ae, make_patcher(ae, load, offload))
