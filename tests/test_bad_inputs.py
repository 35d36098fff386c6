"""Bad inputs to the library: each is a clear error naming the input and what was expected, raised before the LLM or
the VGT-AE runs; no input gives a silently wrong (NaN, noise, plausible but wrong) result."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_autoencoder import load_ae
from tests.test_generate_parity import _pipeline

FAST = dict(height=56, width=56, num_flow_steps=2, cfg_scale=2.0)


@pytest.fixture(scope="module")
def pipe(reference_dir):
    return _pipeline(str(reference_dir), "qwen25vl")


@pytest.fixture(scope="module")
def ae(reference_dir):
    return load_ae(str(reference_dir), "qwen25vl")


@pytest.fixture()
def no_decoding(monkeypatch):
    """Errors must come before the first LLM call."""
    import vgt_impl.pipeline as pipeline

    def refuse(*a, **k):
        raise AssertionError("decoding started before the arguments were checked")

    monkeypatch.setattr(pipeline, "decode_tokens", refuse)


# ------------------------------------------------------------------------------------------------------ numbers
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(cfg_scale=float("nan")), ValueError, r"cfg_scale=nan is not a finite number"),  # NaN used to mean cfg 1
    (dict(cfg_scale=float("inf")), ValueError, r"cfg_scale=inf is not a finite number"),
    (dict(cfg_scale="4.5"), TypeError, r"cfg_scale must be a number, got '4.5' \(str\)"),
    (dict(cfg_scale=None), TypeError, r"cfg_scale must be a number, got None"),
    (dict(cfg_scale=True), TypeError, r"cfg_scale must be a number"),
    (dict(cfg_scale=0.5), ValueError, r"cfg_scale=0.5 is out of range: expected a value >= 1"),
    (dict(last_step_size=2.0), ValueError, r"last_step_size=2 is out of range: expected a value > 0 and < 1"),
    (dict(last_step_size=0.0), ValueError, r"last_step_size=0 is out of range"),
    (dict(last_step_size=1.0), ValueError, r"last_step_size=1 is out of range"),
    (dict(last_step_size=float("nan")), ValueError, r"last_step_size=nan is not a finite number"),
    (dict(num_flow_steps=1), ValueError, r"num_flow_steps=1: at least 2 flow steps"),  # used to return pure noise
    (dict(num_flow_steps=0), ValueError, r"num_flow_steps=0"),
    (dict(num_flow_steps=2.5), TypeError, r"num_flow_steps must be an integer, got 2.5 \(float\)"),
    (dict(num_flow_steps=10**9), ValueError, r"num_flow_steps=1000000000 is out of range"),
    (dict(acc_ratio=True), TypeError, r"acc_ratio must be an integer"),
    (dict(acc_ratio=2.0), TypeError, r"acc_ratio must be an integer"),
    (dict(num_images_per_prompt=0), ValueError, r"num_images_per_prompt=0 is out of range"),
    (dict(output_size=(0, 0)), ValueError, r"output_size\[0\] \(height\)=0 is out of range: expected a value >= 1"),
    (dict(output_size=(56.0, 56)), TypeError, r"output_size\[0\] \(height\) must be an integer"),
    (dict(output_size=56), TypeError, r"output_size must be None or \(height, width\)"),
    (dict(output_size=(10**6, 56)), ValueError, r"output_size\[0\] \(height\)=1000000 is out of range"),
    (dict(height="448"), TypeError, r"height must be an integer, got '448' \(str\)"),
    (dict(height=None), TypeError, r"height must be an integer, got None"),
    (dict(width=56.0), TypeError, r"width must be an integer, got 56.0 \(float\)"),
    (dict(height=0), ValueError, r"height=0 is too small: at least 28 px"),  # was "use 28 or 28"
    (dict(width=-28), ValueError, r"width=-28 is too small: at least 28 px"),  # was "use 28 or 0"
    (dict(height=500), ValueError, r"height=500 is not a multiple of 28: use 476 or 504"),
    (dict(order_seed=1.5), TypeError, r"order_seed must be an integer"),
    (dict(callback="print"), TypeError, r"callback must be callable"),
    (dict(sampler=["sde"]), ValueError, r"sampler=\['sde'\]: expected one of sde, ode"),
])
def test_bad_numbers_and_types(pipe, no_decoding, kwargs, error, match):
    args = dict(FAST, **kwargs)
    with pytest.raises(error, match=match):
        pipe.generate(["a cat"], **args)


def test_numpy_and_tensor_integers_are_accepted_as_sizes(pipe):
    a = pipe.generate(["a cat"], generator=torch.Generator().manual_seed(0), decode=False, **FAST)
    np_args = dict(FAST, height=np.int64(56), width=np.int32(56), num_flow_steps=np.int64(2), cfg_scale=np.float32(2.0),
                   acc_ratio=torch.tensor(1), num_images_per_prompt=np.int64(1))
    b = pipe.generate(["a cat"], generator=torch.Generator().manual_seed(0), decode=False, **np_args)
    torch.testing.assert_close(a.latents, b.latents, atol=0, rtol=0)


@pytest.mark.parametrize("prompts, negative, error, match", [
    (5, None, TypeError, r"prompts must be a string or a list of strings, got 5 \(int\)"),
    (b"a cat", None, TypeError, r"prompts must be a string or a list of strings"),
    (["a cat", 3], None, TypeError, r"prompts\[1\] must be a string, got 3 \(int\)"),
    (["a cat"], 7, TypeError, r"negative_prompts must be a string or a list of strings, got 7 \(int\)"),
    (["a cat"], [None, "x"], ValueError, r"got 2 negative prompts for 1 prompts"),
    (["a cat"], [b"x"], TypeError, r"negative_prompts\[0\] must be a string or None"),
    ([], None, ValueError, r"prompts is empty"),
])
def test_bad_prompt_types(pipe, no_decoding, prompts, negative, error, match):
    with pytest.raises(error, match=match):
        pipe.generate(prompts, negative_prompts=negative, **FAST)


def test_generator_must_be_a_cpu_generator(pipe, no_decoding):
    with pytest.raises(TypeError, match="generator must be a torch.Generator, got int"):
        pipe.generate(["a cat"], generator=0, **FAST)

    class CudaGenerator(torch.Generator):  # what torch.Generator("cuda") reports, on a machine without CUDA
        @property
        def device(self):
            return torch.device("cuda", 0)

    with pytest.raises(ValueError, match="generator is on cuda:0: use a CPU torch.Generator"):
        pipe.generate(["a cat"], generator=CudaGenerator(), **FAST)


# ------------------------------------------------------------------------------------------------------ resources
def test_prompt_length_is_capped_at_the_training_length(pipe, no_decoding):
    """A 50,000-character prompt used to run (minutes and gigabytes); the cap is the reference's 256 tokens."""
    from vgt_impl.validation import PromptTooLongError

    with pytest.raises(PromptTooLongError, match=r"the prompt is \d+ tokens after templating, more than the 256"):
        pipe.generate(["a cat " * 10_000], **FAST)
    with pytest.raises(PromptTooLongError, match=r"the negative prompt is \d+ tokens"):
        pipe.generate(["a cat"], negative_prompts="blurry " * 500, **FAST)
    with pytest.raises(PromptTooLongError, match=r"prompts\[1\] is \d+ tokens"):
        pipe.encode_prompts(["a cat", "a dog " * 500])


def test_prompt_of_exactly_256_tokens_is_accepted(pipe):
    from vgt_impl.pipeline import format_prompt

    words, n = [], 0
    while n < 256:
        words.append("a")
        n = len(pipe.tokenizer.encode(format_prompt(" ".join(words))))
    assert n == 256
    assert len(pipe.encode_prompts([" ".join(words)]).input_ids[0]) == 256
    with pytest.raises(ValueError, match="257 tokens"):
        pipe.encode_prompts([" ".join(words + ["a"])])


# ------------------------------------------------------------------------------------------------------ tensors
def test_non_finite_context_latents(pipe, no_decoding):
    z = torch.zeros(1, 32, 2, 2)
    z[0, 3, 1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"context latents contains non-finite values \(1 NaN, 0 inf"):
        pipe.generate(["a cat"], context=(z, torch.ones(2, 2, dtype=torch.bool)), **FAST)


@pytest.mark.parametrize("latents, mask, error, match", [
    (np.zeros((1, 32, 2, 2), np.float32), torch.ones(2, 2, dtype=torch.bool), TypeError,
     r"context latents must be a torch.Tensor .*got numpy.ndarray"),
    (torch.zeros(1, 32, 2, 2), torch.full((2, 2), 0.3), ValueError, r"context mask must be boolean .* or hold only 0 and 1"),
    (torch.zeros(1, 32, 2, 2), torch.full((2, 2), float("nan")), ValueError, r"context mask contains non-finite"),
    (torch.zeros(1, 32, 2, 2, dtype=torch.long), torch.ones(2, 2, dtype=torch.bool), TypeError,
     r"context latents have dtype torch.int64"),
    (torch.zeros(0, 32, 2, 2), torch.ones(2, 2, dtype=torch.bool), ValueError, r"context latents is empty"),
])
def test_bad_context(pipe, no_decoding, latents, mask, error, match):
    with pytest.raises(error, match=match):
        pipe.generate(["a cat"], context=(latents, mask), **FAST)


def test_overflowing_generation_is_an_error_not_a_nan_image(pipe):
    """A finite but absurd cfg_scale overflows float32: an error, never NaN latents or a NaN image."""
    with pytest.raises(FloatingPointError, match="generation produced non-finite latents"):
        pipe.generate(["a cat"], **dict(FAST, cfg_scale=1e38), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("images, error, match", [
    (torch.full((1, 3, 56, 56), float("nan")), ValueError, r"images contains non-finite values \(9408 NaN"),
    (torch.full((1, 3, 56, 56), float("inf")), ValueError, r"images contains non-finite values \(0 NaN, 9408 inf"),
    (torch.full((1, 3, 56, 56), 200.0), ValueError, r"images has values in \[200, 200\] but must be in \[-1, 1\] .*127.5"),
    (torch.rand(1, 3, 56, 56) * 2, ValueError, r"must be in \[-1, 1\]"),
    (torch.zeros(1, 3, 56, 56, dtype=torch.int32), TypeError, r"images has dtype torch.int32"),
    (torch.zeros(0, 3, 56, 56), ValueError, r"images is empty: shape \(0, 3, 56, 56\)"),
    (torch.zeros(1, 3, 0, 56), ValueError, r"images is empty: shape \(1, 3, 0, 56\)"),
    (torch.zeros(1, 3, 20, 100), ValueError, r"image size 20x100 is not a multiple of 28: use height 28 and width 84 or 112"),
    (np.zeros((1, 3, 56, 56), np.float32), TypeError, r"images must be a torch.Tensor \[B, 3, H, W\], got numpy.ndarray"),
])
def test_vgt_ae_encode_input_contract(ae, images, error, match):
    with pytest.raises(error, match=match):
        ae.encode(images)


def test_vgt_ae_encode_converts_uint8_explicitly(ae):
    """uint8 images are 0..255 by definition: converted as x / 127.5 - 1 (the CLI's mapping), documented."""
    u8 = torch.randint(0, 256, (1, 3, 56, 56), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    torch.testing.assert_close(ae.encode(u8), ae.encode(u8.float() / 127.5 - 1.0), atol=0, rtol=0)


@pytest.mark.parametrize("latents, error, match", [
    (torch.full((1, 32, 2, 2), float("inf")), ValueError, r"latents contains non-finite values \(0 NaN, 128 inf"),
    (torch.zeros(0, 32, 2, 2), ValueError, r"latents is empty"),
    (torch.zeros(1, 32, 0, 2), ValueError, r"latents is empty: shape \(1, 32, 0, 2\)"),
    (torch.zeros(1, 32, 2, 2, dtype=torch.long), TypeError, r"latents has dtype torch.int64"),
])
def test_vgt_ae_decode_input_contract(ae, latents, error, match):
    with pytest.raises(error, match=match):
        ae.decode(latents)


def test_vgt_ae_never_returns_non_finite_pixels(reference_dir, monkeypatch):
    ae = load_ae(str(reference_dir), "qwen25vl")
    monkeypatch.setattr(ae.decoder, "forward", lambda x: torch.full((x.shape[0], 3, 64, 64), float("nan")))
    with pytest.raises(FloatingPointError, match="VGT-AE decode produced non-finite pixels"):
        ae.decode(torch.zeros(1, 32, 2, 2))


# ------------------------------------------------------------------------------------------------------ editing
def test_composite_checks_its_inputs():
    from vgt_impl.editing import composite

    gen, orig = torch.zeros(2, 3, 56, 56), torch.zeros(2, 3, 56, 56)
    with pytest.raises(ValueError, match=r"pixel_mask is \(3, 56, 56\) but the images are 2x56x56"):
        composite(gen, orig, torch.zeros(3, 56, 56))
    with pytest.raises(ValueError, match=r"pixel_mask is \(2, 28, 56\) but the images are 2x56x56"):
        composite(gen, orig, torch.zeros(2, 28, 56))
    with pytest.raises(ValueError, match=r"original is \(3, 3, 56, 56\) but generated is \(2, 3, 56, 56\)"):
        composite(gen, torch.zeros(3, 3, 56, 56), torch.zeros(56, 56))
    with pytest.raises(TypeError, match=r"pixel_mask must be a torch.Tensor .*numpy.ndarray"):
        composite(gen, orig, np.zeros((56, 56)))
    with pytest.raises(TypeError, match=r"generated must be a torch.Tensor"):
        composite(np.zeros((2, 3, 56, 56)), orig, torch.zeros(56, 56))
    with pytest.raises(ValueError, match=r"pixel_mask has values in \[0, 255\] but must be in \[0, 1\]"):
        composite(gen, orig, torch.full((56, 56), 255.0).index_fill_(0, torch.tensor([0]), 0))
    with pytest.raises(TypeError, match=r"feather must be an integer, got 2.5"):
        composite(gen, orig, torch.zeros(56, 56), feather=2.5)
    out = composite(gen, orig[:1], torch.zeros(56, 56, dtype=torch.bool))  # batch-1 original, bool mask: fine
    assert out.shape == (2, 3, 56, 56)


def test_outpaint_canvas_checks_pads():
    from vgt_impl.editing import outpaint_canvas

    z = torch.zeros(1, 32, 2, 2)
    with pytest.raises(TypeError, match=r"outpaint left \(tokens\) must be an integer, got 1.5"):
        outpaint_canvas(z, left=1.5)
    with pytest.raises(ValueError, match=r"outpaint top \(tokens\)=-1 is out of range"):
        outpaint_canvas(z, top=-1)
    with pytest.raises(TypeError, match=r"latents must be a torch.Tensor"):
        outpaint_canvas(np.zeros((1, 32, 2, 2)), left=1)
    canvas, mask = outpaint_canvas(z, left=np.int64(1))
    assert canvas.shape == (1, 32, 2, 3) and mask.sum() == 2


def test_pixel_mask_rules_check_values():
    from vgt_impl.editing import pixel_mask_to_tokens, variation_mask

    m255 = torch.zeros(28, 28)
    m255[:3, :3] = 255  # 9 of 784 pixels: "majority" must not regenerate this token
    with pytest.raises(ValueError, match=r"mask has values in \[0, 255\] .*divide by 255"):
        pixel_mask_to_tokens(m255, rule="majority")
    with pytest.raises(ValueError, match=r"threshold=nan is not a finite number"):
        pixel_mask_to_tokens(torch.zeros(28, 28), rule="threshold", threshold=float("nan"))
    with pytest.raises(ValueError, match=r"mask contains non-finite values"):
        pixel_mask_to_tokens(torch.full((28, 28), float("nan")))
    with pytest.raises(ValueError, match=r"dilate=-1 is out of range"):
        pixel_mask_to_tokens(torch.zeros(28, 28), dilate=-1)
    with pytest.raises(ValueError, match=r"mask is empty"):
        pixel_mask_to_tokens(torch.zeros(0, 28, 28))
    with pytest.raises(ValueError, match=r"strength=nan is not a finite number"):
        variation_mask(2, 2, float("nan"))
    with pytest.raises(TypeError, match=r"h must be an integer, got 2.5"):
        variation_mask(2.5, 2, 0.5)


def test_decode_latents_and_to_check_their_arguments(pipe):
    with pytest.raises(ValueError, match=r"output_size\[1\] \(width\)=0 is out of range"):
        pipe.decode_latents(torch.zeros(1, 32, 2, 2), output_size=(56, 0))
    with pytest.raises(ValueError, match=r"device='gpu' is not a device"):
        pipe.to(device="gpu")
    with pytest.raises(ValueError, match=r"dtype=torch.int64: expected torch.float32"):
        pipe.to(dtype=torch.long)
    assert pipe.dtype == torch.float32  # nothing was moved


def test_missing_base_folder_fails_before_the_checkpoint_is_read(reference_dir, tmp_path, monkeypatch):
    import vgt_impl.checkpoints as checkpoints
    from vgt_impl import VGTPipeline

    monkeypatch.setattr(checkpoints, "load_checkpoint_file", lambda *a, **k: pytest.fail("read before the check"))
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        VGTPipeline.from_pretrained(reference_dir / "qwen25vl" / "ar" / "iter_5000.pth", base_model=tmp_path)
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        VGTPipeline.from_pretrained(reference_dir / "qwen25vl" / "ar" / "iter_5000.pth",
                                    base_model=reference_dir / "qwen25vl" / "base" / "Qwen2.5-VL-3B-Instruct-tiny",
                                    ae_base_model=tmp_path / "nope")


def test_converted_config_that_is_not_json(reference_dir, tmp_path):
    import shutil

    from vgt_impl.checkpoints import CheckpointError, converted_config

    shutil.copy(reference_dir / "qwen25vl" / "ae" / "vgt_ae_qwen25vl.pth", tmp_path / "ae.pth")
    (tmp_path / "ae.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"the config stored with .*ae.pth is not valid JSON"):
        converted_config(tmp_path / "ae.pth")


def test_token_mask_stride_must_be_positive():
    from vgt_impl.editing import pixel_mask_to_tokens

    with pytest.raises(ValueError, match=r"stride=0 is out of range"):
        pixel_mask_to_tokens(torch.zeros(28, 28), stride=0)
