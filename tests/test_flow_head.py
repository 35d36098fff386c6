"""The flow-head network: official key names, sizes read from weights, hoisted embeddings, dtype handling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vgt_impl.config import FlowHeadConfig
from vgt_impl.flow_head import FlowHead, config_from_state_dict, timestep_features

FAMS = ["qwen25vl", "internvl3"]
PREFIX = "image_head.net."


def official_head_weights(reference_dir: Path, fam: str) -> dict[str, torch.Tensor]:
    """``image_head.net.*`` of the fixture AR checkpoint's EMA weights, prefix removed, cast to fp32."""
    ckpt = torch.load(reference_dir / fam / "ar" / "iter_5000.pth", map_location="cpu", weights_only=True)
    ema = {k.removeprefix("module."): v for k, v in ckpt["ema_state_dict"].items()}
    return {k[len(PREFIX):]: v.float() for k, v in ema.items() if k.startswith(PREFIX)}


def fixture_head(reference_dir: Path, fam: str) -> FlowHead:
    """A FlowHead built from the checkpoint's shapes and loaded strictly."""
    sd = official_head_weights(reference_dir, fam)
    head = FlowHead.from_config(config_from_state_dict(sd))
    head.load_state_dict(sd, strict=True)
    return head.eval()


def random_head(cond_dim: int = 48, dim: int = 64, layers: int = 3, seed: int = 0, **kw) -> FlowHead:
    """A small head with every weight random (the official init zeroes the modulations, which would hide bugs)."""
    head = FlowHead(input_dim=32, cond_dim=cond_dim, dim=dim, layers=layers, **kw).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return head


def module_forward(head: FlowHead, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The plain per-module computation: y = time_embed(t) + cond_embed(c); blocks; final layer."""
    y = head.time_embed(t) + head.cond_embed(c)
    h = head.input_proj(x)
    for blk in head.res_blocks:
        h = blk(h, y)
    return head.final_layer(h, y)


@pytest.mark.parametrize("fam", FAMS)
def test_official_keys_load_strictly(reference_dir, fam):
    sd = official_head_weights(reference_dir, fam)
    config = config_from_state_dict(sd)
    assert (config.input_dim, config.dim, config.layers, config.mlp_ratio) == (32, 64, 2, 1.0)
    head = fixture_head(reference_dir, fam)
    assert set(head.state_dict()) == set(sd)
    assert "final_layer.norm_final.weight" not in sd  # no affine on the final norm
    assert head.dtype == torch.float32 and head.device.type == "cpu"


def test_config_round_trip():
    config = FlowHeadConfig(input_dim=16, cond_dim=40, dim=24, layers=3, mlp_ratio=2.0, frequency_embedding_size=64)
    head = FlowHead.from_config(config)
    assert config_from_state_dict(head.state_dict()) == config
    assert head.res_blocks[0].mlp[0].weight.shape == (48, 24)


def test_timestep_features_are_cos_then_sin_in_fp32():
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.bfloat16)
    feats = timestep_features(t, 256)
    assert feats.shape == (3, 256) and feats.dtype == torch.float32
    assert torch.equal(feats[0, :128], torch.ones(128)) and torch.equal(feats[0, 128:], torch.zeros(128))
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(128) / 128)
    torch.testing.assert_close(feats[2, :128], torch.cos(freqs))  # raw t, no x1000
    torch.testing.assert_close(feats[2, 128:], torch.sin(freqs))


def test_hoisted_embeddings_equal_module_forward():
    head = random_head()
    gen = torch.Generator().manual_seed(1)
    x, t, c = torch.randn(5, 32, generator=gen), torch.rand(5, generator=gen), torch.randn(5, 48, generator=gen)
    with torch.no_grad():
        plain = module_forward(head, x, t, c)
        torch.testing.assert_close(head(x, t, c), plain, atol=1e-6, rtol=0)
        hoisted = head.forward_embedded(x, head.embed_time(t), head.embed_condition(c))
        torch.testing.assert_close(hoisted, plain, atol=1e-6, rtol=0)
        # one time for all rows: a [1, dim] time embedding broadcasts against [N, dim] conditions
        t0 = torch.full((5,), 0.3)
        shared = head.forward_embedded(x, head.embed_time(torch.tensor(0.3)), head.embed_condition(c))
        torch.testing.assert_close(shared, module_forward(head, x, t0, c), atol=1e-6, rtol=0)


def test_low_precision_head_keeps_fp32_time_features():
    head = random_head().to(torch.bfloat16)
    assert head.dtype == torch.bfloat16
    t = torch.tensor([0.123456])
    emb = head.embed_time(t)
    assert emb.dtype == torch.bfloat16
    expected = head.time_embed.mlp(timestep_features(t).to(torch.bfloat16))
    assert torch.equal(emb, expected)
    out = head(torch.randn(2, 32), t.expand(2), torch.randn(2, 48))  # fp32 inputs are cast to the weights' dtype
    assert out.dtype == torch.bfloat16 and out.shape == (2, 32)


def test_constructor_takes_dtype_and_device():
    with torch.device("meta"):
        big = FlowHead(input_dim=32, cond_dim=2048, dim=1536, layers=12)
    assert big.device.type == "meta"
    head = FlowHead(input_dim=32, cond_dim=8, dim=16, layers=1, dtype=torch.float16)
    assert head.dtype == torch.float16 and all(p.dtype == torch.float16 for p in head.parameters())
    assert sum(p.numel() for p in big.final_layer.norm_final.parameters()) == 0
