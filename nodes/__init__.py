"""VGT node classes (ComfyUI V1 node API). Node ids and input names are stable: saved workflows depend on them."""

from __future__ import annotations

from .autoencoder import VGTAEDecode, VGTAEEncode
from .editing import VGTComposite, VGTInpaint, VGTOutpaintPad, VGTVariation
from .examples import VGTExampleImage
from .loaders import VGTAELoader, VGTModelLoader, VGTUnifiedLoader
from .sampler import VGTQueryARSampler
from .text import VGTTextEncode

NODE_CLASS_MAPPINGS = {
    "VGTUnifiedLoader": VGTUnifiedLoader,
    "VGTModelLoader": VGTModelLoader,
    "VGTAELoader": VGTAELoader,
    "VGTTextEncode": VGTTextEncode,
    "VGTQueryARSampler": VGTQueryARSampler,
    "VGTAEEncode": VGTAEEncode,
    "VGTAEDecode": VGTAEDecode,
    "VGTInpaint": VGTInpaint,
    "VGTOutpaintPad": VGTOutpaintPad,
    "VGTVariation": VGTVariation,
    "VGTComposite": VGTComposite,
    "VGTExampleImage": VGTExampleImage,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "VGTUnifiedLoader": "VGT Unified Loader",
    "VGTModelLoader": "Load VGT Model",
    "VGTAELoader": "Load VGT-AE",
    "VGTTextEncode": "VGT Text Encode",
    "VGTQueryARSampler": "QueryAR Sampler",
    "VGTAEEncode": "VGT-AE Encode",
    "VGTAEDecode": "VGT-AE Decode",
    "VGTInpaint": "VGT Inpaint",
    "VGTOutpaintPad": "VGT Outpaint Pad",
    "VGTVariation": "VGT Variation",
    "VGTComposite": "VGT Composite Original",
    "VGTExampleImage": "VGT Example Image",
}
