"""The world's own tokenizer: a small byte-level BPE trained with ``tokenizers`` on the world's text.

Built like the Qwen family's tokenizers (so the Qwen3-VL adapter and ``AutoTokenizer`` treat it as one): NFC
normalisation, Qwen2's pre-tokenizer regex then byte-level, a BPE model with no unknown token, and the Qwen chat and
vision special tokens (``<|endoftext|>`` pads, ``<|im_end|>`` ends a turn, ``<|vision_start|>`` starts an image).
It is saved as a ``Qwen2Tokenizer`` folder: ``tokenizer.json``, ``vocab.json``, ``merges.txt``,
``tokenizer_config.json`` (with a chat template that places images as Qwen3-VL does).

The training text is every caption phrasing, question and answer of a few thousand scenes, plus the generation prompt
template, so every word the world uses is a handful of tokens at most.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from .. import config as C

logger = logging.getLogger(__name__)

# The Qwen2 / Qwen2.5-VL / Qwen3-VL special tokens, in the order the real tokenizers add them.
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
)
# Qwen2's pre-tokenizer split (contractions, letters, single digits, punctuation runs, newlines, spaces).
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
              r"|\s+(?!\S)|\s+")
DESCRIBE = "describe the image."  # the VLM's caption question (its answer: one of the image's captions)
IMAGE_TOKENS = 64  # <|image_pad|> tokens per 224 px image (8 x 8 merged patches)
# Qwen-VL chat template (images as <|vision_start|><|image_pad|><|vision_end|>, expanded by the caller).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% elif item['type'] == 'text' %}"
    "{{ item['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def world_text(n_scenes: int = 4000, seed: int = 0) -> Iterator[str]:
    """Captions (every phrasing), questions, answers and prompt templates of ``n_scenes`` scenes."""
    from .dataset import scene_record

    head, _, tail = C.INSTRUCTION.partition("{input}")
    for i in range(n_scenes):  # the templates as often as the scenes: each becomes a few tokens
        yield from (head, tail, C.CFG_PROMPT, C.GENERATION.format(input=""), DESCRIBE)
        record, _ = scene_record(seed, i, render_image=False)
        yield from record["captions"]
        for qa in record["qa"]:
            yield qa["question"]
            yield qa["answer"]


def train_tokenizer(vocab_size: int = 512, n_scenes: int = 4000, seed: int = 0):
    """-> a ``tokenizers.Tokenizer`` (BPE, byte level, Qwen pre-tokenizer, the special tokens)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(SPECIAL_TOKENS), min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(world_text(n_scenes, seed), trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))  # after the BPE vocabulary, as in the real Qwen tokenizers
    return tok


def save_tokenizer(tok, folder: str | Path):
    """Save as a transformers ``Qwen2Tokenizer`` folder; returns the loaded transformers tokenizer."""
    from transformers import AutoTokenizer, Qwen2TokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fast = Qwen2TokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                              unk_token=None, bos_token=None, errors="replace", clean_up_tokenization_spaces=False,
                              model_max_length=4096, split_special_tokens=False, chat_template=CHAT_TEMPLATE)
    fast.save_pretrained(str(folder))
    return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)


def build_tokenizer(folder: str | Path, vocab_size: int = 512, n_scenes: int = 4000, seed: int = 0):
    """Train and save the world's tokenizer into ``folder``; returns the transformers tokenizer."""
    tok = save_tokenizer(train_tokenizer(vocab_size, n_scenes, seed), folder)
    logger.info("tokenizer: %d tokens (%d special) -> %s", len(tok), len(SPECIAL_TOKENS), folder)
    return tok
