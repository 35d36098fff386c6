"""The world's VLM: a tiny Qwen3-VL (transformers' ``Qwen3VLForConditionalGeneration``) that answers questions about
scenes, saved as a base VLM folder in the real Qwen3-VL hub layout, which the VGT trainers start from.

    cfg = vlm_config(tokenizer, VLMSize())                    # a Qwen3VLConfig: patch 14 x merge 2, 224 px = 8 x 8 tokens
    ids, labels = qa_sequence(tokenizer, [(question, answer), ...])   # one image, several question / answer turns
    acc = qa_accuracy(model, tokenizer, records)              # exact-match answers per question kind (held-out scenes)
    write_base_folder(model, tokenizer, folder)               # config.json + tokenizer + model.safetensors + ...

Conversation format (Qwen-VL's): ``<|im_start|>user\\n<|vision_start|><|image_pad|> x 64<|vision_end|>QUESTION
<|im_end|>\\n<|im_start|>assistant\\nANSWER<|im_end|>\\n`` then more ``user`` / ``assistant`` turns; the loss is on
the answer tokens and the ``<|im_end|>`` that ends each answer.

The DeepStack mergers (intermediate ViT features added to the first LLM layers) are left out
(``deepstack_visual_indexes = []``): VGT-AE reads only the final merger's output, so the VLM is trained to put what it
knows about an image there.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .tokenizer import IMAGE_TOKENS

logger = logging.getLogger(__name__)

IMAGE_SIZE = 224
PATCH, MERGE, TEMPORAL = 14, 2, 2


@dataclass
class VLMSize:
    """Sizes of the tiny Qwen3-VL (vision tower + text model)."""

    vision_hidden: int = 128  # ViT width
    vision_depth: int = 2  # ViT blocks
    vision_heads: int = 4
    vision_mlp: int = 256  # ViT MLP width
    text_hidden: int = 256  # LLM width (= the merger's output and the VGT-AR's hidden size)
    text_layers: int = 4  # LLM layers
    text_heads: int = 4
    text_kv_heads: int = 2
    text_head_dim: int = 64
    text_mlp: int = 512  # LLM MLP width
    rope_theta: float = 10000.0


def vlm_config(tokenizer, size: VLMSize) -> dict[str, Any]:
    """The Qwen3-VL ``config.json`` content for ``size`` with ``tokenizer``'s vocabulary and special-token ids."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                                             "<|vision_end|>", "<|im_end|>", "<|endoftext|>")}
    vocab = (len(tokenizer) + 63) // 64 * 64  # rounded up, as the real configs pad their vocabularies
    half = size.text_head_dim // 2
    section = [half - 2 * (half * 5 // 16), half * 5 // 16, half * 5 // 16]  # Qwen3-VL's [24, 20, 20] at head_dim 128
    text = {
        "model_type": "qwen3_vl_text", "hidden_size": size.text_hidden, "intermediate_size": size.text_mlp,
        "num_hidden_layers": size.text_layers, "num_attention_heads": size.text_heads,
        "num_key_value_heads": size.text_kv_heads, "head_dim": size.text_head_dim, "vocab_size": vocab,
        "hidden_act": "silu", "rms_norm_eps": 1e-6, "max_position_embeddings": 2048, "rope_theta": size.rope_theta,
        "rope_scaling": {"rope_type": "default", "mrope_interleaved": True, "mrope_section": section},
        "tie_word_embeddings": True, "attention_bias": False, "attention_dropout": 0.0, "initializer_range": 0.02,
        "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"], "dtype": "bfloat16",
    }
    vision = {
        "model_type": "qwen3_vl", "depth": size.vision_depth, "hidden_size": size.vision_hidden,
        "intermediate_size": size.vision_mlp, "num_heads": size.vision_heads, "in_channels": 3,
        "patch_size": PATCH, "spatial_merge_size": MERGE, "temporal_patch_size": TEMPORAL,
        "out_hidden_size": size.text_hidden, "num_position_embeddings": (IMAGE_SIZE // PATCH) ** 2,
        "hidden_act": "gelu_pytorch_tanh", "deepstack_visual_indexes": [], "initializer_range": 0.02,
    }
    return {
        "architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl", "text_config": text,
        "vision_config": vision, "image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"],
        "tie_word_embeddings": True, "dtype": "bfloat16",
    }


def build_vlm(config: dict[str, Any]):
    """A randomly initialised ``Qwen3VLForConditionalGeneration`` from a config dict (fp32)."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    cfg = Qwen3VLConfig.from_dict(config)
    cfg._attn_implementation = "sdpa"
    model = Qwen3VLForConditionalGeneration(cfg).float()
    return model


def load_vlm(folder: str | Path, dtype: torch.dtype = torch.float32):
    """A base VLM folder written by :func:`write_base_folder` -> (model, tokenizer)."""
    from transformers import AutoTokenizer, Qwen3VLForConditionalGeneration

    model = Qwen3VLForConditionalGeneration.from_pretrained(str(folder), dtype=dtype, trust_remote_code=False)
    return model.eval(), AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)


def image_inputs(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [B, 3, 224, 224] in [-1, 1] -> (pixel_values [B*256, 3*2*14*14], image_grid_thw [B, 3]).

    The world VLM's pixel normalisation is mean 0.5 / std 0.5 on [0, 1] pixels (its preprocessor_config.json), so
    [-1, 1] pixels enter unchanged; the patch order is the Qwen-VL processors' (as VGT-AE's encoder reads them).
    """
    from ..backbones.qwen2_5_vl import qwen_vision_patches

    return qwen_vision_patches(pixels, PATCH, MERGE, TEMPORAL)


# ---------------------------------------------------------------------------------------------------------- sequences
def _enc(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def qa_sequence(tokenizer, turns: Sequence[tuple[str, str]], image_tokens: int = IMAGE_TOKENS,
                ) -> tuple[list[int], list[int]]:
    """One image and question / answer turns -> (input ids, labels: -100 except the answers and their <|im_end|>)."""
    image = "<|vision_start|>" + "<|image_pad|>" * image_tokens + "<|vision_end|>"
    ids: list[int] = []
    labels: list[int] = []
    for k, (question, answer) in enumerate(turns):
        prompt = ("<|im_start|>user\n" + (image if k == 0 else "") + question + "<|im_end|>\n"
                  "<|im_start|>assistant\n")
        p, a = _enc(tokenizer, prompt), _enc(tokenizer, answer + "<|im_end|>")
        ids += p + a
        labels += [-100] * len(p) + a
        nl = _enc(tokenizer, "\n")
        ids += nl
        labels += [-100] * len(nl)
    return ids, labels


def collate_qa(items: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad ids / labels; stack pixels."""
    t = max(len(it["input_ids"]) for it in items)
    ids = torch.full((len(items), t), pad_id, dtype=torch.long)
    labels = torch.full((len(items), t), -100, dtype=torch.long)
    mask = torch.zeros((len(items), t), dtype=torch.long)
    for i, it in enumerate(items):
        n = len(it["input_ids"])
        ids[i, :n] = torch.tensor(it["input_ids"])
        labels[i, :n] = torch.tensor(it["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask,
            "pixels": torch.stack([it["pixels"] for it in items])}


def modality_kwargs(model, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """transformers >= 5 computes Qwen3-VL's M-RoPE from ``mm_token_type_ids`` (text 0, image 1), which its processor
    returns; 4.x finds the image tokens itself and takes no such argument."""
    if "mm_token_type_ids" not in inspect.signature(model.forward).parameters:
        return {}
    return {"mm_token_type_ids": (input_ids == model.config.image_token_id).int()}


def qa_forward(model, batch: dict[str, torch.Tensor]):
    """Teacher-forced forward of a QA batch -> transformers output (``loss``: mean over answer tokens)."""
    pixel_values, grid = image_inputs(batch["pixels"])
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                 pixel_values=pixel_values.to(next(model.parameters()).dtype), image_grid_thw=grid,
                 **modality_kwargs(model, batch["input_ids"]))


# ---------------------------------------------------------------------------------------------------------- accuracy
@torch.no_grad()
def qa_accuracy(model, tokenizer, records: Sequence[dict[str, Any]], *, batch_size: int = 32,
                ) -> tuple[dict[str, float], dict[str, int]]:
    """Exact-match accuracy of the model's greedy answers, per question kind (and "all"), on manifest records
    ({"image": path, "qa": [{"question", "answer", "kind"}]}); each question asked alone, with the image.

    Greedy decoding of an answer equals the gold answer exactly when every answer token (and the closing
    ``<|im_end|>``) is the argmax given the gold prefix, so one teacher-forced forward per question decides it.
    """
    from PIL import Image

    from ..training.data import square_crop_resize
    from .captions import QA, answer_accuracy

    jobs = [(r, q) for r in records for q in r["qa"]]
    pairs, preds = [], []
    device = next(model.parameters()).device
    model.eval()
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        items = []
        for rec, q in chunk:
            ids, labels = qa_sequence(tokenizer, [(q["question"], q["answer"])])
            pixels = square_crop_resize(Image.open(rec["image"]).convert("RGB"), IMAGE_SIZE, "center")
            items.append({"input_ids": ids, "labels": labels, "pixels": pixels})
        batch = {k: v.to(device) for k, v in collate_qa(items, tokenizer.pad_token_id).items()}
        logits = qa_forward(model, batch).logits  # [B, T, V]
        pred = logits[:, :-1].argmax(-1)  # predicts token t+1
        gold = batch["labels"][:, 1:]
        for i, (_, q) in enumerate(chunk):
            sel = gold[i] != -100
            ok = bool((pred[i][sel] == gold[i][sel]).all())
            pairs.append(QA(q["question"], q["answer"], q["kind"]))
            preds.append(q["answer"] if ok else "wrong: " + tokenizer.decode(pred[i][sel].tolist()))
    counts: dict[str, int] = {}
    for p in pairs:
        counts[p.kind] = counts.get(p.kind, 0) + 1
    counts["all"] = len(pairs)
    return answer_accuracy(pairs, preds), counts


# ---------------------------------------------------------------------------------------------------------- folders
PREPROCESSOR = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "patch_size": PATCH,
                "merge_size": MERGE, "temporal_patch_size": TEMPORAL, "image_processor_type": "Qwen2VLImageProcessorFast",
                "processor_class": "Qwen3VLProcessor",
                "size": {"shortest_edge": IMAGE_SIZE * IMAGE_SIZE, "longest_edge": IMAGE_SIZE * IMAGE_SIZE}}


def write_base_folder(model, tokenizer, folder: str | Path, info: dict[str, Any] | None = None,
                      dtype: torch.dtype = torch.float32) -> Path:
    """Save a base VLM folder in the Qwen3-VL hub layout: config.json, model.safetensors (``model.visual.*``,
    ``model.language_model.*``; the tied ``lm_head`` is not stored), tokenizer files, preprocessor_config.json,
    generation_config.json, and ``world_vlm.json`` (sizes, training summary) when ``info`` is given."""
    import copy

    from ..checkpoints import usual_permissions

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = copy.deepcopy(model).to(dtype)
    out.config.dtype = str(dtype).replace("torch.", "")
    out.save_pretrained(str(folder), safe_serialization=True)
    usual_permissions(folder)
    tokenizer.save_pretrained(str(folder))
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=1) + "\n")
    if info is not None:
        (folder / "world_vlm.json").write_text(json.dumps(info, indent=1) + "\n")
    return folder


def size_dict(size: VLMSize) -> dict[str, Any]:
    return asdict(size)
