"""Releases: which files each one needs, finding them under the models folder, and fetching only the missing ones
from a stand-in hub on 127.0.0.1 (resumed and repeated downloads, a missing file, a server error, no hub at all)."""

from __future__ import annotations

import hashlib
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hub_server import StandInHub, fixture_repos  # noqa: E402

from vgt_impl import hub as H  # noqa: E402

TOKENIZER = ["config.json", "tokenizer_config.json", "vocab.json", "merges.txt"]
EXPECTED = {  # release -> role -> (folder under models/vgt, hub repo, required files)
    "VGT-Qwen2.5-VL-2B-SFT": {
        "ar_checkpoint": ("vgt_qwen25vl_2B_sft", "hustvl/vgt_qwen25vl_2B_sft", ["iter_5000.pth"]),
        "base_model": ("base/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-3B-Instruct", TOKENIZER)},
    "VGT-Qwen2.5-VL-2B-Pretrain": {
        "ar_checkpoint": ("vgt_qwen25vl_2B_pretrain", "hustvl/vgt_qwen25vl_2B_pretrain", []),
        "base_model": ("base/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-3B-Instruct", TOKENIZER)},
    "VGT-InternVL3-1.6B-SFT": {
        "ar_checkpoint": ("vgt_internvl3_1_6B_sft", "hustvl/vgt_internvl3_1_6B_sft", ["iter_5000.pth"]),
        "base_model": ("base/InternVL3-2B", "OpenGVLab/InternVL3-2B", TOKENIZER),
        "ae_base_model": ("base/InternVL3-1B", "OpenGVLab/InternVL3-1B", TOKENIZER)},
    "VGT-InternVL3-1.6B-Pretrain": {
        "ar_checkpoint": ("vgt_internvl3_1_6B_pretrain", "hustvl/vgt_internvl3_1_6B_pretrain", []),
        "base_model": ("base/InternVL3-2B", "OpenGVLab/InternVL3-2B", TOKENIZER),
        "ae_base_model": ("base/InternVL3-1B", "OpenGVLab/InternVL3-1B", TOKENIZER)},
}
DCAE = ("base/dc-ae-f32c32-sana-1.1-diffusers", "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers", ["config.json"])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_release_names_exactly_the_files_it_needs(name):
    release = H.RELEASES[name]
    parts = {role: (f.folder, f.repo, list(f.required)) for role, f in release.parts()}
    assert parts == {**EXPECTED[name], "decoder_config": DCAE}
    assert [role for role, _ in release.parts()][-1] == "ar_checkpoint"  # small folders first
    assert release.vgt_ae.repo == "hustvl/vgt_ae"  # only for a checkpoint without its embedded VGT-AE
    assert release.family == ("qwen2_5_vl" if "Qwen" in name else "internvl3")
    for _, files in release.parts():
        assert not any(n.endswith((".safetensors", ".bin")) for n in files.required + files.optional)  # no base weights


def _link(dst: Path, src: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src)


def test_resolves_in_place_under_any_root_without_network(tmp_path, reference_dir):
    q = reference_dir / "qwen25vl"
    a, b = tmp_path / "a", tmp_path / "b"
    _link(b / "vgt_qwen25vl_2B_sft" / "iter_5000.pth", q / "ar" / "iter_5000.pth")
    _link(a / "base" / "Qwen2.5-VL-3B-Instruct", q / "base" / "Qwen2.5-VL-3B-Instruct-tiny")
    _link(a / DCAE[0], q / "base" / "dc-ae-f32c32-sana-1.1-diffusers-tiny")
    res = H.resolve_release(H.RELEASES["VGT-Qwen2.5-VL-2B-SFT"], [a, b], download=True, endpoint="http://127.0.0.1:9")
    assert res.paths == {"ar_checkpoint": b / "vgt_qwen25vl_2B_sft" / "iter_5000.pth",
                         "base_model": a / "base" / "Qwen2.5-VL-3B-Instruct", "decoder_config": a / DCAE[0]}


def test_missing_files_with_downloads_off_list_the_commands(tmp_path, reference_dir):
    _link(tmp_path / "base" / "InternVL3-2B", reference_dir / "internvl3" / "base" / "InternVL3-2B-tiny")
    with pytest.raises(H.MissingFilesError) as err:
        H.resolve_release(H.RELEASES["VGT-InternVL3-1.6B-SFT"], [tmp_path], download=False)
    msg = str(err.value)
    assert "6 file(s) missing" in msg and "download_missing is off" in msg and "InternVL3-2B" not in msg
    assert f"hf download OpenGVLab/InternVL3-1B config.json tokenizer_config.json vocab.json merges.txt " \
           f"--local-dir {tmp_path}/base/InternVL3-1B" in msg
    assert f"hf download hustvl/vgt_internvl3_1_6B_sft iter_5000.pth --local-dir {tmp_path}/vgt_internvl3_1_6B_sft" in msg


def test_pick_checkpoint():
    assert H.pick_checkpoint(["README.md", "iter_40000.pth"], "r") == "iter_40000.pth"
    assert H.pick_checkpoint(["iter_5000.pth", "iter_40000.pth", "x/iter_9.pth"], "r") == "iter_40000.pth"
    with pytest.raises(H.MissingFilesError, match="expected one checkpoint"):
        H.pick_checkpoint(["a.pth", "b.safetensors"], "r")


def test_builtin_release_is_used_in_place(tmp_path, reference_dir):
    folder = tmp_path / "vgt-tiny"
    folder.mkdir()
    for f in (reference_dir / "qwen25vl" / "base" / "Qwen2.5-VL-3B-Instruct-tiny").iterdir():
        _link(folder / f.name, f)
    _link(folder / "model.pth", reference_dir / "qwen25vl" / "ar" / "iter_5000.pth")
    release = H.builtin_release("vgt-tiny", folder, "qwen2_5_vl", "model.pth")
    res = H.resolve_release(release, [tmp_path / "models"], endpoint="http://127.0.0.1:9")
    assert res.paths == {"ar_checkpoint": folder / "model.pth", "base_model": folder}
    assert "vgt-tiny" not in H.available_releases()  # not registered: only entries of BUILTIN_RELEASES are listed


def test_demo_release_is_built_in_first_with_nothing_to_download():
    """vgt-demo: the package's own folder, listed before the hub releases; no file of it has a hub repo."""
    demo = H.BUILTIN_RELEASES[0]
    assert demo.name == H.DEMO_RELEASE == "vgt-demo" and demo.family == "qwen3_vl"
    assert H.DEMO_FOLDER == Path(H.__file__).resolve().parent / "demo" / "vgt-demo"
    parts = dict(demo.parts())
    assert parts["ar_checkpoint"].builtin == parts["base_model"].builtin == H.DEMO_FOLDER
    assert parts["ar_checkpoint"].required == ("model.safetensors",) and parts["base_model"].required == ("config.json",)
    assert all(f.repo is None for f in parts.values()) and demo.vgt_ae is None and demo.ae_base is None
    if H.DEMO_FOLDER.is_dir():  # shipped: listed first
        assert list(H.available_releases())[0] == "vgt-demo"


def test_demo_release_resolves_in_place_never_fetching(tmp_path, monkeypatch, demo_folder):
    """A folder of the demo's layout resolves to itself with downloads on and the hub unreachable; a missing file
    is a plain error about the install (no hub, no download command)."""
    import shutil

    from demo_model import use_as_builtin

    folder = shutil.copytree(demo_folder, tmp_path / "vgt-demo")
    use_as_builtin(monkeypatch, folder)
    assert list(H.available_releases())[0] == "vgt-demo"
    models = tmp_path / "models"
    res = H.resolve_release(H.available_releases()["vgt-demo"], [models], endpoint="http://127.0.0.1:9")
    assert res.paths == {"ar_checkpoint": folder / "model.safetensors", "base_model": folder}
    assert not models.exists()  # nothing fetched or created
    (folder / "model.safetensors").rename(tmp_path / "moved.safetensors")
    with pytest.raises(FileNotFoundError, match=r"vgt-demo: .*vgt-demo is missing model.safetensors") as err:
        H.resolve_release(H.available_releases()["vgt-demo"], [models], endpoint="http://127.0.0.1:9")
    assert not isinstance(err.value, H.MissingFilesError) and "hf download" not in str(err.value)


# ------------------------------------------------------------------------------------------------------ stand-in hub
@pytest.fixture()
def online(monkeypatch):
    """huggingface_hub allowed online (CI sets HF_HUB_OFFLINE=1), without retry back-off sleeps."""
    import huggingface_hub.constants as constants
    import huggingface_hub.utils._http as http

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    if hasattr(http, "reset_sessions"):
        http.reset_sessions()
    monkeypatch.setattr(http.time, "sleep", lambda s: None)
    yield
    if hasattr(http, "reset_sessions"):
        http.reset_sessions()


@pytest.fixture()
def hub(reference_dir, online):
    with StandInHub(fixture_repos(reference_dir)) as h:
        yield h


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_fetches_only_needed_files_with_progress_then_nothing(tmp_path, hub, reference_dir):
    seen = []
    release = H.RELEASES["VGT-InternVL3-1.6B-Pretrain"]  # checkpoint name found by listing the repo
    res = H.resolve_release(release, [tmp_path], endpoint=hub.endpoint, progress=lambda *a: seen.append(a))
    ckpt = tmp_path / "vgt_internvl3_1_6B_pretrain" / "iter_40000.pth"
    assert res.paths["ar_checkpoint"] == ckpt and _sha(ckpt) == _sha(reference_dir / "internvl3" / "ar" / "iter_5000.pth")
    got = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file() and ".cache" not in p.parts}
    tok = ["config.json", "tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer.json",
           "special_tokens_map.json", "generation_config.json"]  # the optional added_tokens.json is not on this hub
    assert got == {ckpt.relative_to(tmp_path).as_posix(), "base/dc-ae-f32c32-sana-1.1-diffusers/config.json",
                   *[f"base/InternVL3-{s}/{n}" for s in ("2B", "1B") for n in tok]}
    assert not any(name.endswith("model.safetensors") for _, _, name, _ in hub.log)  # base weights never fetched
    total = seen[-1][1]
    assert total == sum((tmp_path / g).stat().st_size for g in got)
    assert seen[-1][0] == total and all(a <= b for (a, *_), (b, *_) in zip(seen, seen[1:]))
    n = len(hub.log)
    H.resolve_release(release, [tmp_path], endpoint=hub.endpoint)  # repeated: everything is there
    assert len(hub.log) == n, "a complete model must not touch the hub"


def test_interrupted_download_resumes_where_it_stopped(tmp_path, hub, reference_dir, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)  # bytes reach the partial file in 64 KiB steps
    src = reference_dir / "qwen25vl" / "ar" / "iter_5000.pth"
    size = src.stat().st_size
    hub.faults[("hustvl/vgt_qwen25vl_2B_sft", "iter_5000.pth")] = ("cut", size // 3)
    release = H.RELEASES["VGT-Qwen2.5-VL-2B-SFT"]
    try:
        H.resolve_release(release, [tmp_path], endpoint=hub.endpoint)
    except H.MissingFilesError:  # huggingface_hub versions that do not retry: the next run resumes
        H.resolve_release(release, [tmp_path], endpoint=hub.endpoint)
    gets = [r for r in hub.requests("GET") if r[2] == "iter_5000.pth"]
    assert len(gets) == 2 and gets[0][3] is None
    resumed_at = int(gets[1][3].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= size // 3  # the second transfer starts where the partial file ends
    assert _sha(tmp_path / "vgt_qwen25vl_2B_sft" / "iter_5000.pth") == _sha(src)


def test_file_missing_on_the_hub_is_one_clear_error(tmp_path, hub):
    del hub.repos["OpenGVLab/InternVL3-1B"]["vocab.json"]
    with pytest.raises(H.MissingFilesError) as err:
        H.resolve_release(H.RELEASES["VGT-InternVL3-1.6B-SFT"], [tmp_path], endpoint=hub.endpoint)
    msg = str(err.value)
    assert "base/InternVL3-1B/: config.json, tokenizer_config.json, vocab.json, merges.txt" in msg
    assert "not downloaded: vocab.json: not found on the hub" in msg and msg.count("hf download") == 1
    assert (tmp_path / "vgt_internvl3_1_6B_sft" / "iter_5000.pth").is_file()  # the rest did arrive


def test_server_error_is_one_clear_error(tmp_path, hub):
    hub.faults[("hustvl/vgt_qwen25vl_2B_sft", "iter_5000.pth")] = 500
    with pytest.raises(H.MissingFilesError, match=r"(?s)1 file\(s\) missing .*iter_5000.pth: hub error 500.*"
                                                  r"hf download hustvl/vgt_qwen25vl_2B_sft iter_5000.pth"):
        H.resolve_release(H.RELEASES["VGT-Qwen2.5-VL-2B-SFT"], [tmp_path], endpoint=hub.endpoint)


def test_unreachable_hub_fails_fast_listing_everything(tmp_path, online):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(H.MissingFilesError) as err:
        H.resolve_release(H.RELEASES["VGT-Qwen2.5-VL-2B-SFT"], [tmp_path], endpoint=f"http://127.0.0.1:{port}")
    msg = str(err.value)
    assert f"6 file(s) missing in {tmp_path} and not downloaded: hub unreachable at http://127.0.0.1:{port}" in msg
    assert msg.count("hf download") == 3 and not (tmp_path / "vgt_qwen25vl_2B_sft").exists()


def test_offline_mode_is_named(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(H.MissingFilesError, match=r"offline mode is on \(HF_HUB_OFFLINE=1\)"):
        H.resolve_release(H.RELEASES["VGT-Qwen2.5-VL-2B-SFT"], [tmp_path])
