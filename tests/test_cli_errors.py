"""The vgt command with bad input: one 'error: ...' line, exit code 2, never a traceback, before anything is loaded;
--help documents every option with its default; --version."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest
import torch
from PIL import Image

from vgt_impl.cli import build_parser, main


@pytest.fixture()
def nothing_loads(monkeypatch):
    """Fail if a model gets loaded: these errors must come first."""
    from vgt_impl import VGTAutoencoder, VGTPipeline

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the command line was checked")

    monkeypatch.setattr(VGTPipeline, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(VGTAutoencoder, "from_pretrained", classmethod(refuse))


def run(argv, capsys) -> str:
    """Run the command; it must fail with exactly one 'error:' line and exit code 2."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture()
def q(reference_dir):
    r = reference_dir / "qwen25vl"
    return {"ar": r / "ar" / "iter_5000.pth", "base": r / "base" / "Qwen2.5-VL-3B-Instruct-tiny",
            "ae": r / "ae" / "vgt_ae_qwen25vl.pth", "dec": r / "base" / "dc-ae-f32c32-sana-1.1-diffusers-tiny"}


def gen(q, *extra):
    return ["generate", "a red apple", "--ar", q["ar"], "--base-model", q["base"], "--decoder", q["dec"],
            "--size", "56", "--steps", "2", *extra]


@pytest.mark.parametrize("extra, match", [
    (["--size", "100"], r"--size=100 is not a multiple of 28: use 84 or 112"),  # was reported as --height
    (["--width", "100"], r"--width=100 is not a multiple of 28"),
    (["--height", "0"], r"--height=0 is too small: at least 28 px"),
    (["--cfg", "nan"], r"--cfg=nan is not a finite number"),
    (["--cfg", "inf"], r"--cfg=inf is not a finite number"),
    (["--steps", "1"], r"--steps=1: at least 2 flow steps"),
    (["--acc-ratio", "0"], r"--acc-ratio=0 is out of range"),
    (["--num-images", "0"], r"--num-images=0 is out of range"),
    (["--seed", "-1"], r"--seed=-1 is out of range"),
    (["--size", "x"], r"argument --size: invalid int value: 'x' \(see vgt generate --help\)"),
    (["--out", "image.txt"], r"--out image.txt: '.txt' is not an image format"),
    (["--order", "zigzag"], r"argument --order: invalid choice"),
])
def test_generate_bad_values(q, capsys, nothing_loads, extra, match):
    assert re.search(match, run(gen(q, *extra), capsys))


def test_generate_bad_files(q, reference_dir, tmp_path, capsys, nothing_loads):
    ivl = reference_dir / "internvl3"
    assert "--ar nope.pth does not exist" in run(gen(q) + ["--ar", "nope.pth"], capsys)
    line = run(["generate", "x", "--ar", q["ar"]], capsys)
    assert "base_model is required (the base VLM folder with config.json and tokenizer files)" in line
    assert "is not a base model folder (no config.json)" in run(gen(q) + ["--base-model", tmp_path], capsys)
    line = run(gen(q) + ["--ae", ivl / "ae" / "vgt_ae_internvl3.pth"], capsys)
    assert "is the InternVL3 VGT-AE but --ar is a Qwen2.5-VL model: pick the Qwen2.5-VL VGT-AE" in line
    assert "is a VGT-AE checkpoint: pass it as --ae" in run(gen(q) + ["--ar", q["ae"]], capsys)
    line = run(gen(q) + ["--base-model", ivl / "base" / "InternVL3-2B-tiny"], capsys)
    assert "is a Qwen2.5-VL checkpoint but the base model folder" in line and "pick the matching --base-model" in line
    assert "is a 'qwen2_5_vl' model config, not a DC-AE" in run(gen(q) + ["--decoder", q["base"]], capsys)
    sd = torch.load(q["ar"], weights_only=True)
    torch.save({"state_dict": {k: v for k, v in sd["state_dict"].items() if not k.startswith("vgt_ae.")}},
               tmp_path / "no_ae.pth")
    assert "embeds no VGT-AE: pass one with --ae" in run(gen(q) + ["--ar", tmp_path / "no_ae.pth"], capsys)
    line = run(gen(q) + ["--ar", tmp_path / "no_ae.pth", "--ae", tmp_path / "no_ae.pth"], capsys)
    assert "is a VGT-AR checkpoint without an embedded VGT-AE" in line


def test_generate_prompt_too_long_before_loading(q, capsys, nothing_loads):
    line = run(["generate", "cat " * 2000] + gen(q)[2:], capsys)
    assert "the prompt is" in line and "more than the 256 the VGT models were trained with" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(q, capsys, nothing_loads):
    assert "--device=cuda but CUDA is not available" in run(gen(q, "--device", "cuda"), capsys)


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed")
def test_flash_attention_without_flash_attn(q, capsys, nothing_loads):
    assert "--attn=flash_attention_2 needs the flash-attn package" in run(gen(q, "--attn", "flash_attention_2"), capsys)


def test_mismatch_reports_are_one_line(q, tmp_path, capsys):
    """A grouped report (several lines in the library) is joined into the one error line."""
    sd = torch.load(q["ae"], weights_only=True)
    sd = sd.get("state_dict", sd)
    del sd["down_mlp.3.weight"]
    torch.save(sd, tmp_path / "partial.pth")
    line = run(["inspect", tmp_path / "partial.pth"], capsys)
    assert "VGT-AE checkpoint is incomplete: missing 1 tensors its sizes are read from: down_mlp.3.weight" in line
    line = run(["generate", "x", "--ar", q["ar"], "--base-model", q["base"], "--size", "56", "--steps", "2"], capsys)
    assert "the DC-AE decoder config does not match the decoder in the VGT-AE embedded in" in line


def test_reconstruct_bad_inputs(q, tmp_path, capsys, nothing_loads):
    args = ["--ae", q["ae"], "--base-model", q["base"], "--decoder", q["dec"], "--out-dir", tmp_path / "out"]
    assert "input image missing.png does not exist" in run(["reconstruct", "missing.png", *args], capsys)
    (tmp_path / "notes.png").write_text("not an image")
    assert "notes.png is not an image PIL can read" in run(["reconstruct", tmp_path / "notes.png", *args], capsys)
    Image.new("RGB", (130, 120)).save(tmp_path / "odd.png")
    line = run(["reconstruct", tmp_path / "odd.png", "--fit", "error", *args], capsys)
    assert "odd.png: 130x120 px is not a multiple of 28 (the VGT-AE's latent stride; nearest below: 112x112)" in line
    (tmp_path / "a").mkdir()
    Image.new("RGB", (56, 56)).save(tmp_path / "a" / "x.png")
    Image.new("RGB", (56, 56)).save(tmp_path / "x.png")
    line = run(["reconstruct", tmp_path / "x.png", tmp_path / "a" / "x.png", *args], capsys)
    assert "would both be written to" in line  # the second used to overwrite the first
    (tmp_path / "file").write_text("")
    line = run(["reconstruct", tmp_path / "x.png", *args[:-1], tmp_path / "file" / "out"], capsys)
    assert "--out-dir: " in line and "is a file, not a folder" in line


def test_convert_bad_outputs(q, tmp_path, capsys, monkeypatch):
    import vgt_impl.checkpoints as checkpoints

    monkeypatch.setattr(checkpoints, "load_checkpoint_file", lambda *a, **k: pytest.fail("read before the check"))
    line = run(["convert", q["ae"], "--out", tmp_path / "ae.pth"], capsys)
    assert "converted checkpoints are .safetensors files, got ae.pth" in line
    (tmp_path / "ae.json").write_text("{}")
    assert "ae.json exists and is not a comfyui-vgt config" in run(
        ["convert", q["ae"], "--out", tmp_path / "ae.safetensors"], capsys)


def test_convert_refuses_converted_files(q, tmp_path, capsys):
    assert main(["convert", str(q["ae"]), "--out", str(tmp_path / "c.safetensors")]) == 0
    capsys.readouterr()
    line = run(["convert", tmp_path / "c.safetensors", "--out", tmp_path / "d.safetensors"], capsys)
    assert "is already in the converted layout" in line


def test_inspect_names_converted_ema_weights(q, tmp_path, capsys):
    """A converted file used to be reported as 'weights: raw' whatever it held."""
    assert main(["convert", str(q["ar"]), "--out", str(tmp_path / "c.safetensors")]) == 0
    assert main(["inspect", str(tmp_path / "c.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "weights:   EMA (ema_state_dict), converted from iter_5000.pth" in out
    assert main(["convert", str(q["ar"]), "--state-dict", "raw", "--out", str(tmp_path / "r.safetensors")]) == 0
    assert main(["inspect", str(tmp_path / "r.safetensors")]) == 0
    assert "weights:   raw (state_dict), converted from iter_5000.pth" in capsys.readouterr().out
    from vgt_impl.checkpoints import load_checkpoint_file, save_converted

    save_converted(tmp_path / "t.safetensors", load_checkpoint_file(q["ae"]),
                   {"format": "comfyui-vgt/1", "kind": "ae", "family": "qwen2_5_vl", "source": "vgt train ae"})
    assert main(["inspect", str(tmp_path / "t.safetensors")]) == 0
    assert "weights:   as stored, written from vgt train ae" in capsys.readouterr().out  # a training export


def test_inspect_bad_files(tmp_path, capsys):
    (tmp_path / "x.pth").write_bytes(b"\x00" * 100)
    assert "is not a PyTorch checkpoint" in run(["inspect", tmp_path / "x.pth"], capsys)
    assert "is a folder" in run(["inspect", tmp_path], capsys)


@pytest.mark.parametrize("argv, match", [
    (["bench", "--random", "huge"], r"argument --random: invalid choice: 'huge'"),
    (["bench", "--acc-ratios", "1,a"], r"--acc-ratios '1,a': expected comma-separated integers"),
    (["bench", "--size", "56", "--acc-ratios", "1,8"], r"--acc-ratios=8 is out of range: expected a value >= 1 and "
                                                       r"<= 4 \(4 tokens at --size 56\)"),
    (["bench", "--repeats", "0"], r"--repeats=0 is out of range"),
    (["bench", "--size", "30"], r"--size=30 is not a multiple of 28"),
    (["bench", "--ar", "x.pth"], r"--ar x.pth does not exist"),
    (["download"], r"name at least one model \(see vgt download --list\)"),
    (["download", "sd15"], r"unknown model 'sd15'"),
    (["frobnicate"], r"argument COMMAND: invalid choice: 'frobnicate'"),
])
def test_other_commands(capsys, argv, match):
    assert re.search(match, run(argv, capsys))


def _commands(parser, prefix="vgt"):
    """(name, parser) of every command and nested subcommand."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from _commands(sub, f"{prefix} {name}")


def test_help_documents_every_option_with_its_default():
    import argparse

    commands = dict(_commands(build_parser()))
    assert {"vgt generate", "vgt reconstruct", "vgt inspect", "vgt convert", "vgt bench", "vgt download"} <= set(commands)
    for name, sub in commands.items():
        text = " ".join(sub.format_help().split())
        for action in sub._actions:
            if action.dest == "help" or isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
            if action.option_strings and action.default not in (None, False):
                assert f"(default: {action.default})" in text, f"{name} {action.option_strings}"
    # --acc-ratio defaults to the model's recorded sampling, else 4: the help says both
    assert "default: what the model recommends, else 4" in " ".join(commands["vgt generate"].format_help().split())


def test_version(capsys):
    from vgt_impl import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"vgt {__version__}"


@pytest.mark.slow
def test_version_from_a_shell():
    from vgt_impl import __version__

    out = subprocess.run([sys.executable, "-m", "vgt_impl.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"vgt {__version__}"


def test_vgt_debug_shows_the_traceback_and_bugs_keep_theirs(capsys, monkeypatch):
    import vgt_impl.cli as cli

    def user_error(args):
        raise ValueError("bad value")

    monkeypatch.setattr(cli, "cmd_inspect", user_error)
    assert run(["inspect", "x"], capsys) == "error: bad value"
    monkeypatch.setenv("VGT_DEBUG", "1")
    with pytest.raises(ValueError, match="bad value"):
        main(["inspect", "x"])
    monkeypatch.delenv("VGT_DEBUG")

    def bug(args):
        raise RuntimeError("internal")

    monkeypatch.setattr(cli, "cmd_inspect", bug)
    with pytest.raises(RuntimeError, match="internal"):  # not a user error: the traceback is the useful report
        main(["inspect", "x"])


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    """PIL's convert('RGB') clips 16-bit greyscale at 255: a mid grey (40000 of 65535) came out white."""
    import numpy as np

    from vgt_impl.cli import load_image

    Image.fromarray(np.full((56, 56), 40000, dtype=np.uint16)).save(tmp_path / "grey16.png")
    x = load_image(tmp_path / "grey16.png", "error")
    assert x.shape == (1, 3, 56, 56)
    torch.testing.assert_close(x, torch.full_like(x, round(40000 / 257) / 127.5 - 1.0))
    Image.fromarray(np.zeros((56, 56), dtype=np.float32), mode="F").save(tmp_path / "f.tiff")
    with pytest.raises(ValueError, match="floating-point images have no fixed range"):
        load_image(tmp_path / "f.tiff", "error")
