"""VGTPipeline behaviour on the tiny fixture model: reproducibility, batching, modes, validation, callbacks, context."""

from __future__ import annotations

import pytest
import torch

from tests.test_generate_parity import _pipeline

P1 = "a red apple on a wooden table"
P2 = "a small cabin near a quiet lake under the evening sky, soft warm light and gentle fog over the water"
FAST = dict(height=84, width=112, num_flow_steps=3, cfg_scale=3.0)


@pytest.fixture(scope="module")
def pipe(reference_dir):
    return _pipeline(str(reference_dir), "qwen25vl")


class PerPromptNoise:
    """Noise that depends only on (prompt, draw index): the same for a prompt alone or inside a batch."""

    def __init__(self, seeds):
        self.gens = [torch.Generator().manual_seed(s) for s in seeds]

    def __call__(self, shape, dtype, device):
        rows = shape[0] // len(self.gens)
        return torch.cat([torch.randn(rows, shape[1], generator=g) for g in self.gens]).to(device, dtype)


def test_same_seed_same_image_different_seed_differs(pipe):
    a = pipe.generate([P1], generator=torch.Generator().manual_seed(7), **FAST)
    b = pipe.generate([P1], generator=torch.Generator().manual_seed(7), **FAST)
    c = pipe.generate([P1], generator=torch.Generator().manual_seed(8), **FAST)
    assert torch.equal(a.latents, b.latents) and torch.equal(a.images, b.images)
    assert (a.latents - c.latents).abs().max() > 1e-2
    assert a.images.shape == (1, 3, 84, 112) and a.latents.shape == (1, 32, 3, 4)


def test_batch_equals_single_prompts_in_corrected_mode(pipe):
    order = [[i] for i in range(12)][::-1]
    kw = dict(FAST, order=order, mode="corrected", decode=False)
    both = pipe.generate([P1, P2], noise_fn=PerPromptNoise([1, 2]), **kw).latents
    one = pipe.generate([P1], noise_fn=PerPromptNoise([1]), **kw).latents
    two = pipe.generate([P2], noise_fn=PerPromptNoise([2]), **kw).latents
    torch.testing.assert_close(both[0:1], one, atol=1e-5, rtol=0)
    torch.testing.assert_close(both[1:2], two, atol=1e-5, rtol=0)


def test_reference_mode_depends_on_batch_padding(pipe):
    """The reference quirk (pads visible after the prefill) makes a short prompt's result depend on its batch."""
    order = [[i] for i in range(12)]
    kw = dict(FAST, order=order, mode="reference", decode=False)
    both = pipe.generate([P1, P2], noise_fn=PerPromptNoise([1, 2]), **kw).latents
    one = pipe.generate([P1], noise_fn=PerPromptNoise([1]), **kw).latents
    assert (both[0:1] - one).abs().max() > 1e-4


def test_num_images_per_prompt_and_groups(pipe):
    out = pipe.generate([P1, P2], num_images_per_prompt=2, acc_ratio=4, generator=torch.Generator().manual_seed(0),
                        decode=False, **{k: v for k, v in FAST.items()})
    assert out.latents.shape == (4, 32, 3, 4)
    assert [len(g) for g in out.groups] == [4, 4, 4]
    assert sorted(i for g in out.groups for i in g) == list(range(12))


def test_callback_progress_and_cancel(pipe):
    calls = []
    pipe.generate([P1], acc_ratio=3, callback=lambda s, t, p: calls.append((s, t, tuple(p.shape))), **FAST)
    assert calls == [(1, 4, (1, 32, 3, 4)), (2, 4, (1, 32, 3, 4)), (3, 4, (1, 32, 3, 4)), (4, 4, (1, 32, 3, 4))]

    class Stop(Exception):
        pass

    def stop_at_two(step, total, preview):
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        pipe.generate([P1], callback=stop_at_two, **FAST)
    out = pipe.generate([P1], **FAST)  # still usable after a cancelled run
    assert torch.isfinite(out.images).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(height=100), "multiple of 28"),
        (dict(width=500), "multiple of 28"),
        (dict(height=28 * 9), "exceeds the query grid"),
        (dict(acc_ratio=0), "acc_ratio"),
        (dict(acc_ratio=13), "acc_ratio"),
        (dict(num_flow_steps=0), "num_flow_steps"),
        (dict(cfg_scale=0.5), "cfg_scale"),
        (dict(cfg_schedule="cosine"), "cfg_schedule"),
        (dict(order=[[0, 1], [1, 2]]), "order|permutation|duplicate"),
        (dict(order=[[0, 1, 2]]), "order|permutation|missing"),
        (dict(order="zigzag"), "order"),
        (dict(mode="fast"), "mode"),
        (dict(sampler="euler_a"), "sampler"),
        (dict(time_grid="karras"), "time_grid"),
        (dict(time_shift=0), "time_shift"),
        (dict(group_schedule="exp"), "group_schedule"),
        (dict(group_schedule="cosine", order=[list(range(12))]), "explicit groups"),
        (dict(compile="fastest"), "compile"),
    ],
)
def test_bad_inputs_fail_before_heavy_work(pipe, kwargs, match):
    args = dict(FAST)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        pipe.generate([P1], **args)


def test_empty_prompt_list(pipe):
    with pytest.raises(ValueError, match="empty"):
        pipe.generate([], **FAST)


def test_context_all_known_returns_input_exactly(pipe):
    known = torch.randn(1, 32, 3, 4)
    out = pipe.generate([P1], context=(known, torch.zeros(3, 4, dtype=torch.bool)), decode=False, **FAST)
    assert torch.equal(out.latents, known)


def test_context_all_masked_equals_text_to_image(pipe):
    order = [[i] for i in (5, 2, 9, 0, 11, 3, 7, 1, 10, 4, 8, 6)]
    kw = dict(FAST, order=order, decode=False)
    plain = pipe.generate([P1], noise_fn=PerPromptNoise([3]), **kw).latents
    ctx = (torch.randn(1, 32, 3, 4), torch.ones(1, 3, 4, dtype=torch.bool))
    edited = pipe.generate([P1], noise_fn=PerPromptNoise([3]), context=ctx, **kw).latents
    torch.testing.assert_close(edited, plain, atol=0, rtol=0)


@pytest.mark.parametrize("mode", ["reference", "corrected"])
def test_context_keeps_known_tokens_bit_identical(pipe, mode):
    g = torch.Generator().manual_seed(5)
    known = torch.randn(2, 32, 3, 4, generator=g)
    mask = torch.rand(2, 3, 4, generator=g) > 0.5
    out = pipe.generate([P1, P2], context=(known, mask), mode=mode, acc_ratio=2,
                        generator=torch.Generator().manual_seed(1), decode=False, **FAST).latents
    keep = ~mask.unsqueeze(1).expand_as(known)
    assert torch.equal(out[keep], known[keep])
    assert (out[~keep] - known[~keep]).abs().min() > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_weights_run_end_to_end(reference_dir, dtype):
    """What GPUs run: bf16/fp16 weights, fp32 sampler math, float32 latents and images out."""
    from vgt_impl import VGTPipeline

    q = reference_dir / "internvl3" / "base"
    pipe = VGTPipeline.from_pretrained(reference_dir / "internvl3" / "ar" / "iter_5000.pth",
                                       base_model=q / "InternVL3-2B-tiny", ae_base_model=q / "InternVL3-1B-tiny",
                                       decoder_config=q / "dc-ae-f32c32-sana-1.1-diffusers-tiny", dtype=dtype)
    assert pipe.dtype == dtype and pipe.ae.dtype == dtype
    out = pipe.generate([P1, P2], height=112, width=84, num_flow_steps=3, acc_ratio=3, mode="corrected",
                        generator=torch.Generator().manual_seed(0))
    assert out.latents.dtype == out.images.dtype == torch.float32 and torch.isfinite(out.images).all()
    z = pipe.ae.encode(out.images.clamp(-1, 1))
    edited = pipe.generate([P1, P2], height=112, width=84, num_flow_steps=2, context=(z, torch.rand(2, 4, 3) > 0.5),
                           generator=torch.Generator().manual_seed(1), decode=False)
    assert edited.latents.shape == (2, 32, 4, 3)
