"""VGT-AR samples: the prompt template, CFG dropout and truncation on top of an image (or latent) dataset.

The reference (``CaptionDataset._process_text``): with probability 0.1 the caption is replaced by the unconditional
prompt "Generate an image."; the templated prompt is tokenised and cut to 256 tokens (``input_ids[:max_length]``);
batches are right padded. Every random choice comes from the item's own seed (see ``data.py``).
"""

from __future__ import annotations

from typing import Any

import torch

from .. import config as C
from ..pipeline import format_prompt
from .data import SampleKey
from .task import stream_seed

TRUNCATIONS = ("reference", "caption")


class PromptTokens:
    """Caption -> token ids of the templated prompt (conditional or the unconditional one)."""

    def __init__(self, tokenizer, max_tokens: int = 256, truncation: str = "reference"):
        if truncation not in TRUNCATIONS:
            raise ValueError(f"model.text_truncation={truncation!r}: expected one of {TRUNCATIONS}")
        self.tokenizer, self.max_tokens, self.truncation = tokenizer, max_tokens, truncation
        head, _, tail = C.INSTRUCTION.partition("{input}")
        self._suffix = self._enc(tail)  # "<|im_end|>\n<|im_start|>assistant\n"
        self._head = head

    def _enc(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=True))

    def __call__(self, caption: str | None) -> list[int]:
        """``None`` = the unconditional prompt (CFG dropout)."""
        if caption is None:
            return self._enc(C.INSTRUCTION.format(input=C.CFG_PROMPT))[: self.max_tokens]
        ids = self._enc(format_prompt(caption))
        if len(ids) <= self.max_tokens:
            return ids
        if self.truncation == "reference":  # cut the tail, template end included, as the reference does
            return ids[: self.max_tokens]
        # "caption": cut the caption and keep the template's end (it starts with a special token, so the
        # tokenisation of the head + caption part is unchanged by the split)
        body = self._enc(self._head + C.GENERATION.format(input=caption.strip()))
        keep = max(0, self.max_tokens - len(self._suffix))
        return body[:keep] + self._suffix


class ARDataset(torch.utils.data.Dataset):
    """Wraps an image (``pixels``) or latent-cache (``latents``) dataset; adds ``input_ids`` with CFG dropout."""

    def __init__(self, base: torch.utils.data.Dataset, tokens: PromptTokens, cfg_dropout: float = 0.1):
        if not 0.0 <= cfg_dropout <= 1.0:
            raise ValueError(f"model.cfg_dropout={cfg_dropout} must be in [0, 1]")
        self.base, self.tokens, self.cfg_dropout = base, tokens, cfg_dropout

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        item = self.base[key]
        gen = torch.Generator().manual_seed(stream_seed(key.seed, "cfg_dropout"))
        drop = float(torch.rand((), generator=gen)) < self.cfg_dropout
        item["input_ids"] = self.tokens(None if drop else item["caption"])
        item["unconditional"] = drop
        return item


def collate_ar(items: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Right-pad the prompts; stack pixels / latents."""
    t = max(len(it["input_ids"]) for it in items)
    ids = torch.full((len(items), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), t), dtype=torch.bool)
    for i, it in enumerate(items):
        ids[i, : len(it["input_ids"])] = torch.tensor(it["input_ids"], dtype=torch.long)
        mask[i, : len(it["input_ids"])] = True
    batch: dict[str, Any] = {"input_ids": ids, "attention_mask": mask,
                             "unconditional": torch.tensor([it["unconditional"] for it in items])}
    for key in ("pixels", "latents"):
        if key in items[0]:
            batch[key] = torch.stack([it[key] for it in items])
    return batch
