"""The teacher-forced VGT-AR sequence: [prompt (right padded) | image start | Q_pi1, G_pi1, Q_pi2, G_pi2, ...].

Adapted from the reference ``text2image_loss``: Q = query grid + position, G = image_in_projector(z) + position, both
in the order of ONE permutation pi shared by the batch; position ids cumsum(mask) - 1 (pads repeat the last real
position); the LLM's ordinary causal mask plus the padding mask. The hidden state of Q_pi_j (which sees the prompt and
every earlier pair, not G_pi_j itself) conditions the flow head for token pi_j.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TeacherForced:
    inputs_embeds: torch.Tensor  # [B, S, D], S = T + n + 2L
    attention_mask: torch.Tensor  # [B, S] bool, False on text padding
    position_ids: torch.Tensor  # [B, S] long
    permutation: torch.Tensor  # [L] long, the token order used
    image_start: int  # T + n: index of the first query in the sequence

    def query_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """LLM output [B, S, D] -> hidden states of the queries [B, L, D] back in raster order."""
        q = hidden[:, self.image_start::2]  # [B, L, D] in permuted order
        return q[:, torch.argsort(self.permutation)]


def interleave(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[B, L, D], [B, L, D] -> [B, 2L, D] as a0, b0, a1, b1, ..."""
    bsz, n, d = a.shape
    return torch.stack([a, b], dim=2).reshape(bsz, 2 * n, d)


def latent_tokens(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, h*w, C] in raster order (p = 1 patches)."""
    return latents.flatten(2).transpose(1, 2)


def assemble(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, start_ids: torch.Tensor, latents: torch.Tensor,
    permutation: torch.Tensor,
) -> TeacherForced:
    """Build the sequence for a VGTARModel. input_ids/attention_mask [B, T] (right padded), start_ids [n],
    latents [B, C, h, w] (clean, channel-LayerNormed), permutation [h*w]."""
    b, _, h, w = latents.shape
    if permutation.shape != (h * w,):
        raise ValueError(f"permutation has shape {tuple(permutation.shape)}, expected ({h * w},) for a {h}x{w} latent")
    text = model.embed_tokens(input_ids)  # [B, T, D]
    dtype = text.dtype
    start = model.embed_tokens(start_ids.to(input_ids.device)).to(dtype)[None].expand(b, -1, -1)  # [B, n, D]
    queries, pos = model.queries(h, w)  # [1, L, D] each; queries already include pos
    gt = model.image_in_projector(latent_tokens(latents).to(model.image_in_projector.weight.dtype)) + pos  # [B, L, D]
    perm = permutation.to(text.device)
    pairs = interleave(queries[:, perm].expand(b, -1, -1).to(dtype), gt[:, perm].to(dtype))  # [B, 2L, D]
    embeds = torch.cat([text, start, pairs], dim=1)  # [B, S, D]
    mask = torch.cat([attention_mask.bool(), attention_mask.new_ones(b, embeds.shape[1] - text.shape[1],
                                                                      dtype=torch.bool)], dim=1)  # [B, S]
    position_ids = (mask.long().cumsum(dim=1) - 1).clamp_(min=0)  # [B, S]
    return TeacherForced(embeds, mask, position_ids, perm, text.shape[1] + start.shape[1])
