"""``vgt train vlm``: understanding pretraining of a Qwen3-VL on image question / answer pairs, on the training loop.

Data: JSONL manifests whose rows carry ``image`` and ``qa`` (``[{"question", "answer", "kind"}]``), as
``vgt demo world`` writes them. Each sample is one image (centre square, 224 px, [-1, 1]) with ``model.turns``
question / answer turns drawn from its pairs by the sample's own seed; the loss is the mean cross-entropy over the
answer tokens (and the ``<|im_end|>`` closing each answer). The whole model trains: vision tower, merger and LLM.

The export is a base VLM folder (``vlm.write_base_folder``) that ``vgt train ae`` / ``vgt train ar`` start from; with
``model.eval_source`` its answers on held-out scenes are scored per question kind into ``world_vlm.json``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..training.task import Draws, Metrics, TrainTask, stream_seed
from .tokenizer import DESCRIBE
from .vlm import IMAGE_SIZE, VLMSize, build_vlm, collate_qa, qa_accuracy, qa_forward, qa_sequence, vlm_config

logger = logging.getLogger(__name__)


@dataclass
class VLMTaskConfig:
    """The ``model`` section of ``vgt train vlm``."""

    tokenizer: str | None = None  # tokenizer folder (a new model takes its vocabulary and special-token ids)
    init_from: str | None = None  # a base VLM folder to continue from; None: a new model of `size`
    size: VLMSize = field(default_factory=VLMSize)  # sizes of a new model
    turns: int = 4  # question / answer turns per image and sample
    describe: bool = True  # also a "describe the image." turn answered with one of the image's captions (dense
    #   supervision: every object's shape and colour; the captions are what the VGT-AR later reads)
    eval_source: str | None = None  # held-out manifest scored at export (per question kind)
    eval_images: int = 200  # images of eval_source scored (all their questions)


class VLMTask(TrainTask):
    """A Qwen3-VL answering questions about images: see the module docstring."""

    name = "vlm"
    config_cls = VLMTaskConfig

    def __init__(self, config: VLMTaskConfig, vlm: torch.nn.Module, tokenizer):
        super().__init__()
        if config.turns < 1:
            raise ValueError(f"model.turns={config.turns} must be >= 1")
        self.cfg, self.vlm, self.tokenizer = config, vlm, tokenizer
        self.vlm.train()

    @classmethod
    def build(cls, config) -> VLMTask:
        from transformers import AutoTokenizer

        mc = config.model
        if mc.init_from:
            from .vlm import load_vlm

            vlm, tokenizer = load_vlm(mc.init_from)
            return cls(mc, vlm.float(), tokenizer)
        if not mc.tokenizer:
            raise ValueError("model.tokenizer is required for a new VLM (a tokenizer folder, e.g. from "
                             "`vgt demo train`), or give model.init_from (a base VLM folder)")
        tokenizer = AutoTokenizer.from_pretrained(mc.tokenizer, trust_remote_code=False)
        return cls(mc, build_vlm(vlm_config(tokenizer, mc.size)), tokenizer)

    def enable_gradient_checkpointing(self) -> None:
        self.vlm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def loss(self, phase: str, batch: dict[str, Any], step: int, draws: Draws | None = None) -> tuple[torch.Tensor, Metrics]:
        out = qa_forward(self.vlm, batch)
        return out.loss, {"loss": out.loss.detach()}

    # ------------------------------------------------------------------ data
    def build_dataset(self, data_config) -> torch.utils.data.Dataset:
        from ..training.data import expand_sources

        if data_config.image_size != IMAGE_SIZE:
            raise ValueError(f"data.image_size={data_config.image_size}: the world VLM reads {IMAGE_SIZE} px images")
        return QADataset(expand_sources(data_config.source), self.tokenizer, self.cfg.turns, self.cfg.describe)

    def collate(self, samples) -> dict[str, Any]:
        return collate_qa(samples, self.tokenizer.pad_token_id)

    # ------------------------------------------------------------------ outputs
    def export(self, folder: Path, weights: Mapping[str, torch.Tensor]) -> Path:
        from .vlm import write_base_folder

        state = {k[len("vlm."):]: v for k, v in weights.items() if k.startswith("vlm.")}
        vlm = build_vlm(self.vlm.config.to_dict())
        missing, unexpected = vlm.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if k != "lm_head.weight"]:
            raise RuntimeError(f"VLM export: missing {missing}, unexpected {unexpected}")
        vlm.tie_weights()
        info: dict[str, Any] = {"format": "vgt-demo-vlm/1", "turns": self.cfg.turns,
                                "parameters": sum(p.numel() for p in vlm.parameters())}
        if self.cfg.eval_source:
            info["heldout"] = heldout_accuracy(vlm, self.tokenizer, self.cfg.eval_source, self.cfg.eval_images)
        return write_base_folder(vlm, self.tokenizer, folder, info)


def heldout_accuracy(vlm, tokenizer, source: str, images: int) -> dict[str, Any]:
    """Per-kind answer accuracy on the first ``images`` records of a manifest."""
    from .dataset import read_manifest

    t0 = time.perf_counter()
    records = read_manifest(source)[:images]
    acc, counts = qa_accuracy(vlm, tokenizer, records)
    logger.info("VLM held-out accuracy (%d images): %s", len(records),
                ", ".join(f"{k} {v:.3f}" for k, v in sorted(acc.items())))
    where = Path(source)  # the manifest's folder and name only: the model folder ships, the build machine's paths do not
    return {"source": f"{where.parent.name}/{where.name}", "images": len(records), "accuracy": acc, "questions": counts,
            "seconds": round(time.perf_counter() - t0, 1)}


class QADataset(torch.utils.data.Dataset):
    """Manifest rows -> {"pixels", "input_ids", "labels", "slot"} with ``turns`` QA turns chosen by the sample seed."""

    def __init__(self, manifests: list[str], tokenizer, turns: int, describe: bool = False):
        from .dataset import read_manifest

        self.rows: list[dict[str, Any]] = []
        for m in manifests:
            if not str(m).endswith(".jsonl"):
                raise ValueError(f"data.source {m!r}: vgt train vlm reads .jsonl manifests with image and qa fields")
            self.rows += [{"image": r["image"], "qa": r["qa"], "captions": r.get("captions") or [r.get("caption")]}
                          for r in read_manifest(m)]
        if not self.rows or not all(r["qa"] for r in self.rows):
            raise ValueError(f"{manifests}: every row needs a non-empty 'qa' list (vgt demo world writes them)")
        self.tokenizer, self.turns, self.describe = tokenizer, turns, describe

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key) -> dict[str, Any]:
        from PIL import Image

        from ..training.data import square_crop_resize

        row = self.rows[key.index]
        gen = torch.Generator().manual_seed(stream_seed(key.seed, "qa"))
        pick = torch.randperm(len(row["qa"]), generator=gen)[: self.turns].tolist()
        turns = [(row["qa"][i]["question"], row["qa"][i]["answer"]) for i in pick]
        if self.describe and row["captions"][0]:
            cap = row["captions"][int(torch.randint(len(row["captions"]), (1,), generator=gen))]
            turns.insert(int(torch.randint(len(turns) + 1, (1,), generator=gen)), (DESCRIBE, cap))
        ids, labels = qa_sequence(self.tokenizer, turns)
        pixels = square_crop_resize(Image.open(row["image"]).convert("RGB"), IMAGE_SIZE, "center")
        return {"pixels": pixels, "input_ids": ids, "labels": labels, "slot": key.slot}


def read_vlm_info(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "world_vlm.json"
    return json.loads(path.read_text()) if path.is_file() else {}
