"""A contact sheet of evaluated samples: each image with its prompt, framed green (correct) or red (wrong)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TILE = 224
BAND = 30  # px of text under each tile
FRAME = 4
OK, WRONG = (40, 170, 60), (210, 40, 40)


def pick_samples(samples: Sequence, max_images: int = 48) -> list:
    """Up to ``max_images`` samples that kept their image, spread evenly over the categories in order."""
    with_images = [s for s in samples if getattr(s, "image", None) is not None]
    tags = list(dict.fromkeys(s.tag for s in with_images))
    if not tags:
        return []
    per = max(1, max_images // len(tags))
    out = [s for t in tags for s in [x for x in with_images if x.tag == t][:per]]
    return out[:max_images]


def make_grid(samples: Sequence, columns: int = 8, max_images: int = 48) -> Image.Image:
    """The picked samples as one RGB image (tiles resized to 224 px)."""
    picked = pick_samples(samples, max_images)
    if not picked:
        raise ValueError("no sample kept an image: nothing to put in a grid")
    cols = min(columns, len(picked))
    rows = (len(picked) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * TILE, rows * (TILE + BAND)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for n, s in enumerate(picked):
        x, y = (n % cols) * TILE, (n // cols) * (TILE + BAND)
        tile = Image.fromarray(np.asarray(s.image)).convert("RGB").resize((TILE, TILE), Image.BILINEAR)
        sheet.paste(tile, (x, y))
        draw.rectangle((x, y, x + TILE - 1, y + TILE - 1), outline=OK if s.correct else WRONG, width=FRAME)
        draw.text((x + 4, y + TILE + 2), _fit(draw, s.prompt, font), fill=(0, 0, 0), font=font)
        draw.text((x + 4, y + TILE + 15), s.tag, fill=OK if s.correct else WRONG, font=font)
    return sheet


def _fit(draw: ImageDraw.ImageDraw, text: str, font) -> str:
    """The text, cut with an ellipsis to fit a tile's width."""
    if draw.textlength(text, font=font) <= TILE - 8:
        return text
    while text and draw.textlength(text + "...", font=font) > TILE - 8:
        text = text[:-1]
    return text + "..."
