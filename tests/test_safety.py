"""No Python file of a base folder is ever run, and a base folder's tokenizer is verified before any network is built."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vgt_impl import VGTAutoencoder, VGTPipeline
from vgt_impl.backbones import get_family

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")
REMOTE_FILE = """
import pathlib
pathlib.Path({marker!r}).write_text("remote code ran: {name}")
from transformers import PretrainedConfig, PreTrainedTokenizerFast
class InternVLChatConfig(PretrainedConfig):
    model_type = "internvl_chat"
class Qwen2VLTokenizerRemote(PreTrainedTokenizerFast):
    pass
"""


def _remote_code_folder(src: Path, dst: Path, marker: Path) -> Path:
    """A copy of a remote-code base folder (no weights) whose Python files would leave a marker if they were run, with
    auto_map entries pointing at them from config.json and tokenizer_config.json (as the hub repos have)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors"))
    for name in ("configuration_internvl_chat", "modeling_internvl_chat", "tokenization_internvl_chat"):
        (dst / f"{name}.py").write_text(REMOTE_FILE.format(marker=str(marker), name=name))
    cfg = json.loads((dst / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                       "AutoModel": "modeling_internvl_chat.InternVLChatModel"}
    (dst / "config.json").write_text(json.dumps(cfg))
    tok = json.loads((dst / "tokenizer_config.json").read_text())
    tok["auto_map"] = {"AutoTokenizer": ["tokenization_internvl_chat.Qwen2VLTokenizerRemote", None]}
    (dst / "tokenizer_config.json").write_text(json.dumps(tok))
    return dst


LOAD_SCRIPT = """
import sys, torch
sys.path.insert(0, {root!r})
from vgt_impl import VGTAutoencoder, VGTPipeline
r = {r!r}
pipe = VGTPipeline.from_pretrained(r + "/ar/iter_5000.pth", base_model={llm!r}, ae_base_model={enc!r},
                                   decoder_config=r + "/base/dc-ae-f32c32-sana-1.1-diffusers-tiny")
ae = VGTAutoencoder.from_pretrained(r + "/ae/vgt_ae_internvl3.pth", base_model={enc!r},
                                    decoder_config=r + "/base/dc-ae-f32c32-sana-1.1-diffusers-tiny")
out = pipe.generate(["a cat"], height=56, width=56, num_flow_steps=2, generator=torch.Generator().manual_seed(0))
print("loaded", tuple(out.images.shape), ae.family)
"""


@pytest.mark.slow
def test_remote_code_in_base_folders_is_never_run(reference_dir, tmp_path):
    """transformers 5 asks "Do you wish to run the custom code? [y/N]" on a terminal for remote-code folders and runs
    the folder's files on "y"; the loaders must never let it consider remote code: a stdin answering "y" to every
    question changes nothing, nothing is asked (so nothing blocks), and no file of the folder runs."""
    r = reference_dir / "internvl3"
    marker = tmp_path / "MARKER"
    llm = _remote_code_folder(r / "base" / "InternVL3-2B-tiny", tmp_path / "InternVL3-2B", marker)
    enc = _remote_code_folder(r / "base" / "InternVL3-1B-tiny", tmp_path / "InternVL3-1B", marker)
    code = LOAD_SCRIPT.format(root=str(ROOT), r=str(r), llm=str(llm), enc=str(enc))
    out = subprocess.run([sys.executable, "-c", code], input="y\n" * 20, capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                              "OMP_NUM_THREADS": "2"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "loaded (1, 3, 56, 56) internvl3" in out.stdout
    assert not marker.exists(), marker.read_text()
    assert "custom code" not in out.stdout + out.stderr  # never asked (an unanswered question blocks for 15 s)


def test_tokenizer_loader_passes_no_remote_code_and_reads_only_local_files(reference_dir, tmp_path, monkeypatch):
    """Belt and braces for the subprocess test: the tokenizer class is built directly with trust_remote_code=False
    and local_files_only=True (never AutoTokenizer, which follows auto_map)."""
    import transformers

    calls = []
    cls = getattr(transformers, "Qwen2TokenizerFast", None) or transformers.Qwen2Tokenizer
    real = cls.from_pretrained.__func__

    def spy(klass, path, *a, **kw):
        calls.append(kw)
        return real(klass, path, *a, **kw)

    monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        classmethod(lambda *a, **k: pytest.fail("AutoTokenizer follows auto_map: not allowed")))
    folder = _remote_code_folder(reference_dir / "internvl3" / "base" / "InternVL3-1B-tiny", tmp_path / "b",
                                 tmp_path / "MARKER")
    tok = get_family("internvl3").load_tokenizer(folder)
    assert len(tok) == 543 and calls and all(c["trust_remote_code"] is False and c["local_files_only"] for c in calls)
    assert not (tmp_path / "MARKER").exists()


# ------------------------------------------------------------------------------------------------------ tokenizer
def _base_copy(src: Path, dst: Path, keep_tokenizer: tuple[str, ...] = TOKENIZER_FILES) -> Path:
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    for name in keep_tokenizer:
        if (src / name).exists():
            shutil.copy(src / name, dst / name)
    return dst


def _load_qwen(reference_dir, base):
    q = reference_dir / "qwen25vl"
    return VGTPipeline.from_pretrained(q / "ar" / "iter_5000.pth", base_model=base,
                                       decoder_config=q / "base" / "dc-ae-f32c32-sana-1.1-diffusers-tiny")


def test_base_folder_without_tokenizer_files_fails_before_building(reference_dir, tmp_path, no_network_build):
    """transformers 5 builds a 1-token tokenizer from such a folder: every prompt became nothing, every image the same."""
    base = _base_copy(reference_dir / "qwen25vl" / "base" / "Qwen2.5-VL-3B-Instruct-tiny", tmp_path / "q", ())
    with pytest.raises(FileNotFoundError, match=r"has no tokenizer files \(tokenizer.json, or vocab.json \+ merges.txt\)"):
        _load_qwen(reference_dir, base)
    config_only = _base_copy(reference_dir / "qwen25vl" / "base" / "Qwen2.5-VL-3B-Instruct-tiny", tmp_path / "q2",
                             ("tokenizer_config.json", "special_tokens_map.json"))
    with pytest.raises(FileNotFoundError, match="has no tokenizer files"):
        _load_qwen(reference_dir, config_only)


def test_tokenizer_without_the_template_tokens_is_refused(reference_dir, tmp_path, no_network_build):
    """vocab.json + merges.txt alone load, but <|im_start|> then encodes to seven ordinary pieces: a different prompt
    than the model was trained on, silently."""
    base = _base_copy(reference_dir / "qwen25vl" / "base" / "Qwen2.5-VL-3B-Instruct-tiny", tmp_path / "q",
                      ("vocab.json", "merges.txt"))
    with pytest.raises(ValueError, match=r"does not know the chat template's special token <\|im_start\|>"):
        _load_qwen(reference_dir, base)


def test_tokenizer_of_the_other_family_is_refused(reference_dir, tmp_path, no_network_build):
    """The image-start marker must encode as in training: one special token (InternVL3), ordinary pieces (Qwen)."""
    ivl, q = reference_dir / "internvl3" / "base" / "InternVL3-2B-tiny", reference_dir / "qwen25vl" / "base"
    qwen_cfg_ivl_tok = _base_copy(q / "Qwen2.5-VL-3B-Instruct-tiny", tmp_path / "q", ())
    for name in TOKENIZER_FILES:
        shutil.copy(ivl / name, qwen_cfg_ivl_tok / name)
    with pytest.raises(ValueError, match="has <img> as a single token"):
        _load_qwen(reference_dir, qwen_cfg_ivl_tok)
    ivl_cfg_qwen_tok = _base_copy(ivl, tmp_path / "i", ())
    for name in TOKENIZER_FILES:
        shutil.copy(q / "Qwen2.5-VL-3B-Instruct-tiny" / name, ivl_cfg_qwen_tok / name)
    r = reference_dir / "internvl3"
    with pytest.raises(ValueError, match="encodes the image-start marker <img> to 2 pieces"):
        VGTPipeline.from_pretrained(r / "ar" / "iter_5000.pth", base_model=ivl_cfg_qwen_tok,
                                    ae_base_model=r / "base" / "InternVL3-1B-tiny",
                                    decoder_config=r / "base" / "dc-ae-f32c32-sana-1.1-diffusers-tiny")


def test_tokenizer_vocabulary_must_fit_the_embedding_table(reference_dir):
    from vgt_impl.pipeline import load_tokenizer
    from vgt_impl.validation import verify_tokenizer

    base = reference_dir / "qwen25vl" / "base" / "Qwen2.5-VL-3B-Instruct-tiny"
    tok = get_family("qwen2_5_vl").load_tokenizer(base)  # 534 tokens; the AR checkpoint's table has 576 rows
    verify_tokenizer(tok, where="x", marker_pieces="several", vocab_size=576)
    with pytest.raises(ValueError, match="has 534 tokens but the checkpoint's embedding table has 500 rows"):
        verify_tokenizer(tok, where="x", marker_pieces="several", vocab_size=500)
    with pytest.raises(ValueError, match="has 534 tokens but the checkpoint's embedding table has 151936 rows"):
        verify_tokenizer(tok, where="x", marker_pieces="several", vocab_size=151936)
    assert len(load_tokenizer(base, "qwen2_5_vl", vocab_size=576)) == 534


def test_tokenizer_that_maps_text_to_nothing_is_refused():
    from vgt_impl.validation import verify_tokenizer

    class Empty:  # what transformers 5 builds from a folder without tokenizer files
        def encode(self, text, add_special_tokens=True):
            return [0] if text in ("<|im_start|>", "<|im_end|>") else []

        def decode(self, ids):
            return ""

        def __len__(self):
            return 1

    with pytest.raises(ValueError, match="does not read ordinary text"):
        verify_tokenizer(Empty(), where="x", marker_pieces="", vocab_size=None)


def test_unknown_tokenizer_class_is_refused(reference_dir, tmp_path):
    base = _base_copy(reference_dir / "qwen25vl" / "base" / "Qwen2.5-VL-3B-Instruct-tiny", tmp_path / "q")
    cfg = json.loads((base / "tokenizer_config.json").read_text())
    cfg["tokenizer_class"] = "LlamaTokenizer"
    (base / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="declares tokenizer_class 'LlamaTokenizer'"):
        get_family("qwen2_5_vl").load_tokenizer(base)


def test_verified_tokenizer_gives_different_prompts_different_images(reference_dir):
    """The end-to-end symptom of a broken tokenizer: two prompts, the same image."""
    from tests.test_generate_parity import _pipeline

    pipe = _pipeline(str(reference_dir), "qwen25vl")
    kw = dict(height=56, width=56, num_flow_steps=2, decode=False, order="raster")
    a = pipe.generate(["a red apple"], generator=torch.Generator().manual_seed(0), **kw).latents
    b = pipe.generate(["a blue car"], generator=torch.Generator().manual_seed(0), **kw).latents
    assert (a - b).abs().max() > 1e-3


def test_ae_loader_checks_its_base_folder_family_with_a_useful_fix(reference_dir):
    r = reference_dir
    with pytest.raises(ValueError, match=r"is an InternVL3 checkpoint but the base model folder .* is Qwen2.5-VL: "
                                         r"use the base model of this VGT-AE's encoder \(InternVL3-1B\)"):
        VGTAutoencoder.from_pretrained(r / "internvl3" / "ae" / "vgt_ae_internvl3.pth",
                                       base_model=r / "qwen25vl" / "base" / "Qwen2.5-VL-3B-Instruct-tiny")
