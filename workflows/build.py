"""Writes the example workflows from compact graphs: the UI form in workflows/ (ComfyUI's template browser lists
every .json there, with the .jpg of the same name as its thumbnail) and the API form in workflows/api/ (for the HTTP
API; the browser does not read sub-folders).

Run from the repository root with the test stand-ins of ComfyUI on the path (no ComfyUI needed):
    PYTHONPATH=tests/comfy_stubs python workflows/build.py
The JSON files are committed; tests/test_workflows.py checks them against the node definitions. Thumbnails come from
workflows/render_thumbnails.py, which runs each workflow.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
API_DIR = HERE / "api"

# The core ComfyUI nodes the examples use, as ComfyUI 0.8 declares them (V1 form).
CORE_NODES: dict[str, dict] = {
    "LoadImage": {"input": {"required": {"image": ("FILE", {"image_upload": True})}},
                  "output": ["IMAGE", "MASK"], "output_name": ["IMAGE", "MASK"], "extra_widgets": ["image"]},
    "SaveImage": {"input": {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})}},
                  "output": [], "output_name": []},
    "PreviewImage": {"input": {"required": {"images": ("IMAGE",)}}, "output": [], "output_name": []},
    "ImageStitch": {"input": {"required": {"image1": ("IMAGE",), "direction": (["right", "down", "left", "up"], {}),
                                           "match_image_size": ("BOOLEAN", {"default": True}),
                                           "spacing_width": ("INT", {"default": 0, "min": 0, "max": 1024, "step": 2}),
                                           "spacing_color": (["white", "black", "red", "green", "blue"], {})},
                              "optional": {"image2": ("IMAGE",)}},
                    "output": ["IMAGE"], "output_name": ["IMAGE"]},
    "ImageCompositeMasked": {"input": {"required": {"destination": ("IMAGE",), "source": ("IMAGE",),
                                                    "x": ("INT", {"default": 0, "min": 0, "max": 16384}),
                                                    "y": ("INT", {"default": 0, "min": 0, "max": 16384}),
                                                    "resize_source": ("BOOLEAN", {"default": False})},
                                       "optional": {"mask": ("MASK",)}},
                             "output": ["IMAGE"], "output_name": ["IMAGE"]},
    "GrowMask": {"input": {"required": {"mask": ("MASK",), "expand": ("INT", {"default": 0, "min": -16384, "max": 16384}),
                                        "tapered_corners": ("BOOLEAN", {"default": True})}},
                 "output": ["MASK"], "output_name": ["MASK"]},
    "ImageCrop": {"input": {"required": {"image": ("IMAGE",),
                                         "width": ("INT", {"default": 512, "min": 1, "max": 16384, "step": 1}),
                                         "height": ("INT", {"default": 512, "min": 1, "max": 16384, "step": 1}),
                                         "x": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 1}),
                                         "y": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 1})}},
                  "output": ["IMAGE"], "output_name": ["IMAGE"]},
}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "FILE"}

# The templates load the built-in vgt-demo model with the one-choice loader (shipped in the package: nothing to
# download) and run on its world of coloured shapes at its size, 224x224 = its whole 8x8 token grid. Pick a released
# model in the loader (and 448x448 on the sampler, vgt_example.png on the example node) for real pictures.
DEMO = "vgt-demo"
DEMO_SIZE = 224  # the demo model's image size: 8 x 8 tokens of 28 px, its whole query grid
RELEASE = {"model": DEMO, "download_missing": True, "dtype": "auto", "attention": "sdpa"}
# The granular loader's choices for a release in models/vgt (for custom setups; the tests use it).
MODEL = {"ar_checkpoint": "vgt_qwen25vl_2B_sft/iter_5000.pth", "base_model": "Qwen2.5-VL-3B-Instruct",
         "vgt_ae": "(embedded in the AR checkpoint)", "ae_base_model": "(same as base_model)",
         "decoder_config": "(built-in DC-AE f32c32)", "dtype": "auto", "attention": "sdpa"}
# 224x224 scene of the small world; alpha = the mask over its blue square (vgt_example.png: the 448 px one)
EXAMPLE = {"image": "vgt_demo_example.png"}
# Widths at which every widget's name and value show in ComfyUI 0.8's editor (frontend 1.35.9).
WIDTHS = {"VGTUnifiedLoader": 400, "VGTModelLoader": 440, "VGTAELoader": 420, "VGTQueryARSampler": 360,
          "VGTInpaint": 360, "VGTVariation": 360, "VGTExampleImage": 320, "SaveImage": 360}
AE = {"vgt_ae": "vgt_ae/vgt_ae_qwen25vl.pth", "base_model": "Qwen2.5-VL-3B-Instruct",
      "decoder_config": "(built-in DC-AE f32c32)", "dtype": "auto"}
# What vgt-demo records as its sampling (`vgt generate` uses it): its own order (auto = raster) one token per step,
# 64 LLM steps for the 64 tokens; a raster-order AR was never trained on parallel neighbours.
SAMPLING = {"seed": 42, "cfg": 4.5, "cfg_schedule": "linear", "steps": 30, "parallel_tokens": 1, "order": "auto"}
SIZE = {"width": DEMO_SIZE, "height": DEMO_SIZE}


def pack():
    """Import this folder as a package (ComfyUI stand-ins must be importable)."""
    name = "comfyui_vgt_pack"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def node_specs() -> dict[str, dict]:
    """Every node type usable in the examples: ours (from the classes) and the core ones above."""
    specs = dict(CORE_NODES)
    for name, cls in pack().NODE_CLASS_MAPPINGS.items():
        specs[name] = {"input": cls.INPUT_TYPES(), "output": list(cls.RETURN_TYPES),
                       "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES))}
    return specs


def is_widget(spec) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def ordered_inputs(spec: dict) -> list[tuple[str, tuple, bool]]:
    out = []
    for section in ("required", "optional"):
        for name, s in spec["input"].get(section, {}).items():
            out.append((name, s, section == "required"))
    return out


def widget_values(spec: dict, values: dict) -> list:
    vals = []
    for name, s, _req in ordered_inputs(spec):
        if not is_widget(s):
            continue
        opts = s[1] if len(s) > 1 else {}
        default = opts.get("default", s[0][0] if isinstance(s[0], list) and s[0] else None)
        vals.append(values.get(name, default))
        if opts.get("control_after_generate"):
            vals.append("fixed")
        if s[0] == "FILE":
            vals.append("image")  # the upload button's value
    return vals


def build(graph: list[dict], specs: dict) -> tuple[dict, dict]:
    """graph: [{"id", "type", "pos", "widgets": {..}, "links": {input: (src_id, slot)}, "title"?}] -> (ui, api)."""
    by_id = {n["id"]: n for n in graph}
    links, api = [], {}
    out_links: dict[tuple[int, int], list[int]] = {}
    in_link: dict[tuple[int, str], int] = {}
    for n in graph:
        for inp, (src, slot) in n.get("links", {}).items():
            lid = len(links) + 1
            links.append([lid, src, slot, n["id"], inp, specs[by_id[src]["type"]]["output"][slot]])
            out_links.setdefault((src, slot), []).append(lid)
            in_link[(n["id"], inp)] = lid
    ui_nodes = []
    for order, n in enumerate(graph):
        spec = specs[n["type"]]
        sockets = [(name, s) for name, s, req in ordered_inputs(spec)
                   if not is_widget(s) and (req or (n["id"], name) in in_link)]
        inputs = [{"name": name, "type": s[0], "link": in_link.get((n["id"], name))} for name, s in sockets]
        for link in links:  # UI links name the target slot by index
            if link[3] == n["id"] and isinstance(link[4], str):
                link[4] = [i for i, (name, _) in enumerate(sockets) if name == link[4]][0]
        outputs = [{"name": nm, "type": t, "links": out_links.get((n["id"], i), []), "slot_index": i}
                   for i, (t, nm) in enumerate(zip(spec["output"], spec["output_name"]))]
        ui_nodes.append({
            "id": n["id"], "type": n["type"], "pos": [round(n["pos"][0] * 1.15), n["pos"][1]],
            "size": [WIDTHS.get(n["type"], 340), 60 + 26 * (len(inputs) + 4)],
            "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
            "properties": {"Node name for S&R": n["type"]}, "widgets_values": widget_values(spec, n.get("widgets", {})),
            **({"title": n["title"]} if "title" in n else {}),
        })
        api_inputs = {name: n.get("widgets", {}).get(name, _default(s)) for name, s, _ in ordered_inputs(spec)
                      if is_widget(s) and s[0] != "FILE"}
        if spec is CORE_NODES.get("LoadImage"):
            api_inputs["image"] = n["widgets"]["image"]
        api_inputs.update({k: [str(src), slot] for k, (src, slot) in n.get("links", {}).items()})
        api[str(n["id"])] = {"class_type": n["type"], "inputs": api_inputs, "_meta": {"title": n.get("title", n["type"])}}
    ui = {"last_node_id": max(by_id), "last_link_id": len(links), "nodes": ui_nodes, "links": links, "groups": [],
          "config": {}, "extra": {}, "version": 0.4}
    return ui, api


def _default(s):
    opts = s[1] if len(s) > 1 else {}
    return opts.get("default", s[0][0] if isinstance(s[0], list) and s[0] else None)


def loader(i, pos=(0, 0)):
    return {"id": i, "type": "VGTUnifiedLoader", "pos": pos, "widgets": RELEASE}


def example(i, pos=(0, 300), title=None):
    n = {"id": i, "type": "VGTExampleImage", "pos": pos, "widgets": EXAMPLE}
    return dict(n, title=title) if title else n


def prompt(i, model_id, text, pos, title=None):
    n = {"id": i, "type": "VGTTextEncode", "pos": pos, "widgets": {"text": text}, "links": {"model": (model_id, 0)}}
    return dict(n, title=title) if title else n


PROMPTS = {  # captions of the demo world (vgt_impl/demo/captions.py): counts, colours, shapes, relations
    "vgt_text_to_image": "two red circles left of a blue square",
    "vgt_parallel_decoding": "a yellow star above a green triangle",
    "vgt_inpaint": "a red circle left of a green star",  # the masked blue square becomes a green star
    "vgt_outpaint": "a red circle to the left of a yellow triangle",  # the right half is new
    "vgt_variations": "a red circle left of a blue square",
}

GRAPHS = {
    "vgt_text_to_image": [
        loader(1),
        prompt(2, 1, PROMPTS["vgt_text_to_image"], (380, 0)),
        {"id": 3, "type": "VGTQueryARSampler", "pos": (760, 0), "widgets": dict(SAMPLING, **SIZE),
         "links": {"model": (1, 0), "positive": (2, 0)}},
        {"id": 4, "type": "VGTAEDecode", "pos": (1140, 0), "links": {"vgt_ae": (1, 1), "samples": (3, 0)}},
        {"id": 5, "type": "SaveImage", "pos": (1440, 0), "widgets": {"filename_prefix": "vgt/t2i"}, "links": {"images": (4, 0)}},
    ],
    "vgt_reconstruction": [
        loader(1),
        example(2, (0, 260)),
        {"id": 3, "type": "VGTAEEncode", "pos": (380, 0), "widgets": {"fit": "center_crop"},
         "links": {"vgt_ae": (1, 1), "image": (2, 0)}},
        {"id": 4, "type": "VGTAEDecode", "pos": (760, 0), "links": {"vgt_ae": (1, 1), "samples": (3, 0)}},
        {"id": 5, "type": "ImageStitch", "pos": (1100, 0), "title": "original | reconstruction",
         "widgets": {"direction": "right", "match_image_size": True, "spacing_width": 8, "spacing_color": "white"},
         "links": {"image1": (2, 0), "image2": (4, 0)}},
        {"id": 6, "type": "SaveImage", "pos": (1440, 0), "widgets": {"filename_prefix": "vgt/recon"}, "links": {"images": (5, 0)}},
    ],
    "vgt_parallel_decoding": [
        loader(1),
        prompt(2, 1, PROMPTS["vgt_parallel_decoding"], (380, 0)),
        *[{"id": 3 + k, "type": "VGTQueryARSampler", "pos": (760, 560 * k), "title": f"QueryAR, {acc} token(s) per step",
           "widgets": dict(SAMPLING, **SIZE, parallel_tokens=acc), "links": {"model": (1, 0), "positive": (2, 0)}}
          for k, acc in enumerate((1, 4, 16))],
        *[{"id": 6 + k, "type": "VGTAEDecode", "pos": (1140, 560 * k), "links": {"vgt_ae": (1, 1), "samples": (3 + k, 0)}}
          for k in range(3)],
        {"id": 9, "type": "ImageStitch", "pos": (1440, 0), "widgets": {"direction": "right", "spacing_width": 8},
         "links": {"image1": (6, 0), "image2": (7, 0)}},
        {"id": 10, "type": "ImageStitch", "pos": (1440, 300), "title": "acc_ratio 1 | 4 | 16",
         "widgets": {"direction": "right", "spacing_width": 8}, "links": {"image1": (9, 0), "image2": (8, 0)}},
        {"id": 11, "type": "SaveImage", "pos": (1780, 0), "widgets": {"filename_prefix": "vgt/parallel"}, "links": {"images": (10, 0)}},
    ],
    "vgt_inpaint": [
        loader(1),
        example(2, title="Example image + mask (or Load Image + MaskEditor)"),
        prompt(3, 1, PROMPTS["vgt_inpaint"], (380, 0)),
        {"id": 4, "type": "VGTAEEncode", "pos": (380, 300), "widgets": {"fit": "center_crop"},
         "links": {"vgt_ae": (1, 1), "image": (2, 0)}},
        {"id": 5, "type": "VGTInpaint", "pos": (760, 0), "widgets": dict(SAMPLING, mask_rule="any", grow_tokens=0),
         "links": {"model": (1, 0), "positive": (3, 0), "samples": (4, 0), "mask": (2, 1)}},
        {"id": 6, "type": "VGTAEDecode", "pos": (1140, 0), "links": {"vgt_ae": (1, 1), "samples": (5, 0)}},
        {"id": 8, "type": "VGTComposite", "pos": (1440, 0), "widgets": {"feather": 8, "fit": "center_crop"},
         "links": {"edited": (6, 0), "original": (2, 0), "mask": (5, 1)}},
        {"id": 7, "type": "SaveImage", "pos": (1780, 0), "widgets": {"filename_prefix": "vgt/inpaint"}, "links": {"images": (8, 0)}},
    ],
    # The left half of the example (its red circle, 112x224 = 4x8 tokens) grown by 112 px of new tokens on the right:
    # 224x224 again, the demo model's whole grid.
    "vgt_outpaint": [
        loader(1),
        example(2),
        prompt(3, 1, PROMPTS["vgt_outpaint"], (380, 0)),
        {"id": 9, "type": "ImageCrop", "pos": (0, 560), "title": "left half",
         "widgets": {"width": DEMO_SIZE // 2, "height": DEMO_SIZE, "x": 0, "y": 0}, "links": {"image": (2, 0)}},
        {"id": 4, "type": "VGTAEEncode", "pos": (380, 300), "widgets": {"fit": "center_crop"},
         "links": {"vgt_ae": (1, 1), "image": (9, 0)}},
        {"id": 5, "type": "VGTOutpaintPad", "pos": (760, 300), "widgets": {"left": 0, "right": DEMO_SIZE // 2},
         "links": {"samples": (4, 0)}},
        {"id": 6, "type": "VGTInpaint", "pos": (1100, 0), "widgets": dict(SAMPLING),
         "links": {"model": (1, 0), "positive": (3, 0), "samples": (5, 0), "mask": (5, 1)}},
        {"id": 7, "type": "VGTAEDecode", "pos": (1440, 0), "links": {"vgt_ae": (1, 1), "samples": (6, 0)}},
        {"id": 8, "type": "SaveImage", "pos": (1780, 0), "widgets": {"filename_prefix": "vgt/outpaint"}, "links": {"images": (7, 0)}},
    ],
    "vgt_variations": [
        loader(1),
        example(2),
        prompt(3, 1, PROMPTS["vgt_variations"], (380, 0)),
        {"id": 4, "type": "VGTAEEncode", "pos": (380, 300), "widgets": {"fit": "center_crop"},
         "links": {"vgt_ae": (1, 1), "image": (2, 0)}},
        *[{"id": 5 + k, "type": "VGTVariation", "pos": (760, 560 * k), "title": f"variation, strength {s}",
           "widgets": dict(SAMPLING, strength=s), "links": {"model": (1, 0), "positive": (3, 0), "samples": (4, 0)}}
          for k, s in enumerate((0.25, 0.5, 0.75))],
        *[{"id": 8 + k, "type": "VGTAEDecode", "pos": (1140, 560 * k), "links": {"vgt_ae": (1, 1), "samples": (5 + k, 0)}}
          for k in range(3)],
        {"id": 11, "type": "ImageStitch", "pos": (1440, 0), "widgets": {"direction": "right", "spacing_width": 8},
         "links": {"image1": (2, 0), "image2": (8, 0)}},
        {"id": 12, "type": "ImageStitch", "pos": (1440, 250), "widgets": {"direction": "right", "spacing_width": 8},
         "links": {"image1": (11, 0), "image2": (9, 0)}},
        {"id": 13, "type": "ImageStitch", "pos": (1440, 500), "title": "original | 0.25 | 0.5 | 0.75",
         "widgets": {"direction": "right", "spacing_width": 8}, "links": {"image1": (12, 0), "image2": (10, 0)}},
        {"id": 14, "type": "SaveImage", "pos": (1780, 0), "widgets": {"filename_prefix": "vgt/variations"}, "links": {"images": (13, 0)}},
    ],
}


def main() -> None:
    specs = node_specs()
    for name, graph in GRAPHS.items():
        ui, api = build(graph, specs)
        API_DIR.mkdir(exist_ok=True)
        (HERE / f"{name}.json").write_text(json.dumps(ui, indent=1) + "\n")
        (API_DIR / f"{name}.json").write_text(json.dumps(api, indent=1) + "\n")
        print(f"wrote workflows/{name}.json and workflows/api/{name}.json")


if __name__ == "__main__":
    main()
