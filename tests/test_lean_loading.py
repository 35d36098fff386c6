"""Lean loading: tensors read from the file straight into their own memory give the same bits as the plain path
(torch.load / safe_open), for both families and both dicts; damaged files give the same clear errors."""

from __future__ import annotations

import zipfile

import pytest
import torch

from vgt_impl import file_tensors
from vgt_impl.checkpoints import CheckpointError, CheckpointMismatchError, load_checkpoint_file, materialize
from vgt_impl.file_tensors import TensorFileReader, file_source, load_structure

AR = {"qwen2_5_vl": "qwen25vl/ar/iter_5000.pth", "internvl3": "internvl3/ar/iter_5000.pth"}
BASE = {"qwen2_5_vl": "qwen25vl/base/Qwen2.5-VL-3B-Instruct-tiny", "internvl3": "internvl3/base/InternVL3-2B-tiny"}
AE_BASE = {"qwen2_5_vl": BASE["qwen2_5_vl"], "internvl3": "internvl3/base/InternVL3-1B-tiny"}
DCAE = {"qwen2_5_vl": "qwen25vl/base/dc-ae-f32c32-sana-1.1-diffusers-tiny",
        "internvl3": "internvl3/base/dc-ae-f32c32-sana-1.1-diffusers-tiny"}
AE = ["qwen25vl/ae/vgt_ae_qwen25vl.pth", "qwen25vl/ae/vgt_ae_qwen25vl.safetensors",
      "internvl3/ae/vgt_ae_internvl3.pth", "internvl3/ae/vgt_ae_internvl3.safetensors"]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


def _same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(_bits(a[k]), _bits(b[k])), k


@pytest.fixture
def plain(monkeypatch):
    """The plain path: the memory-mapped torch.load / safe_open tensors, copied one by one."""
    def use_plain():
        monkeypatch.setattr(file_tensors, "load_structure", lambda path: None)
        monkeypatch.setattr(file_tensors, "safetensors_structure", lambda path: None)
    return use_plain


@pytest.mark.parametrize("rel", list(AR.values()) + AE)
@pytest.mark.parametrize("ema", [True, False])
def test_lean_tensors_match_the_plain_path(reference_dir, rel, ema):
    path = reference_dir / rel
    lean, lean_info = load_checkpoint_file(path, prefer_ema=ema, lazy=True, with_info=True)
    full, info = load_checkpoint_file(path, prefer_ema=ema, with_info=True)
    assert lean_info == info  # same dict chosen, same EMA step count
    assert all(v.is_meta and file_source(v) is not None for v in lean.values())  # nothing read yet
    for dtype in (torch.bfloat16, torch.float32):
        _same(materialize(full, dtype), materialize(lean, dtype))


@pytest.mark.parametrize("family", list(AR))
@pytest.mark.parametrize("ema", [True, False])
def test_loaded_models_are_bit_identical(reference_dir, plain, family, ema):
    from vgt_impl.autoencoder import VGTAutoencoder
    from vgt_impl.loading import load_ar_model

    r = reference_dir
    kw = dict(base_model=r / BASE[family], dtype=torch.bfloat16, device=torch.device("cpu"), prefer_ema=ema)
    ar, extras = load_ar_model(r / AR[family], **kw)
    assert all(file_source(v) is not None for v in extras["ae_state_dict"].values())
    ae_kw = dict(base_model=r / AE_BASE[family], decoder_config=r / DCAE[family], dtype=torch.float32)
    ae = VGTAutoencoder.from_state_dict(extras["ae_state_dict"], **ae_kw)
    plain()
    ar_ref, extras_ref = load_ar_model(r / AR[family], **kw)
    assert not any(v.is_meta for v in extras_ref["ae_state_dict"].values())
    ae_ref = VGTAutoencoder.from_state_dict(extras_ref["ae_state_dict"], **ae_kw)
    _same(ar_ref.state_dict(), ar.state_dict())
    _same(ae_ref.state_dict(), ae.state_dict())
    assert not any(t.is_meta for t in list(ar.parameters()) + list(ar.buffers()))


def test_dtype_conversion_views_and_shared_storage(tmp_path):
    """fp32 file tensors converted to bf16 through a buffer smaller than a tensor; strided views and tensors that
    share one storage are read at their own offsets."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(37, 41, generator=g)
    sd = {"w": base, "t": base.t(), "row": base[5], "col": base[:, 3], "i": torch.arange(7), "e": torch.zeros(0, 3),
          "h": torch.randn(300, generator=g).half()}
    torch.save({"state_dict": sd}, tmp_path / "m.pth")
    lean = load_structure(tmp_path / "m.pth")["state_dict"]
    with TensorFileReader(chunk_bytes=100) as reader:
        for k, v in sd.items():
            target = torch.bfloat16 if v.is_floating_point() else v.dtype
            got = reader.read(lean[k], target)
            assert got.dtype == target and got.shape == v.shape and got.is_contiguous(), k
            assert torch.equal(_bits(got), _bits(v.to(target))), k


def test_the_dict_not_chosen_is_never_read(reference_dir, tmp_path, monkeypatch):
    """Only the chosen dict's bytes are read: zeroing the other dict's bytes in the file changes nothing."""
    src = reference_dir / AR["internvl3"]
    path = tmp_path / src.name
    path.write_bytes(src.read_bytes())
    raw = load_checkpoint_file(path, prefer_ema=False, lazy=True)
    ema = load_checkpoint_file(path, prefer_ema=True, lazy=True)
    mine = {file_source(v)[1] for v in ema.values()}
    with open(path, "r+b") as f:
        for v in raw.values():
            offset = file_source(v)[1]
            if offset not in mine:
                f.seek(offset)
                f.write(b"\0" * v.untyped_storage().nbytes())
    expected = materialize(load_checkpoint_file(src, lazy=False), torch.float32)
    _same(expected, materialize(load_checkpoint_file(path, lazy=True), torch.float32))
    zeroed = materialize(load_checkpoint_file(path, prefer_ema=False, lazy=True), torch.float32)
    cleared = [k for k, v in raw.items() if file_source(v)[1] not in mine and v.numel()]
    assert len(cleared) > 50  # the trained tensors; frozen ones (the VGT-AE) are one storage in both dicts
    assert all(float(zeroed[k].abs().sum()) == 0 for k in cleared)


@pytest.mark.parametrize("rel", [AR["qwen2_5_vl"], AE[0], AE[1]])
def test_truncated_files_give_the_same_error(reference_dir, tmp_path, rel):
    src = reference_dir / rel
    dst = tmp_path / src.name
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    for lazy in (False, True):
        with pytest.raises(CheckpointError, match="truncated or corrupted.*re-download"):
            load_checkpoint_file(dst, lazy=lazy)


def test_file_cut_after_opening_names_the_tensor(reference_dir, tmp_path):
    src = reference_dir / AE[0]
    dst = tmp_path / src.name
    dst.write_bytes(src.read_bytes())
    lean = load_checkpoint_file(dst, lazy=True)
    with open(dst, "r+b") as f:
        f.truncate(max(file_source(v)[1] for v in lean.values()))
    with pytest.raises(CheckpointError, match=r"truncated or corrupted \(the file ends .* bytes before .*reading .*"
                                              r"re-download"):
        materialize(lean, torch.float32, what=dst)


def test_compressed_zip_falls_back_to_the_plain_path(reference_dir, tmp_path):
    """A torch zip re-packed with compression cannot be read in place: it loads as before (when torch can read it),
    with the same values."""
    src = reference_dir / AE[0]
    dst = tmp_path / src.name
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info), compress_type=zipfile.ZIP_DEFLATED)
    assert load_structure(dst) is None
    try:
        full = load_checkpoint_file(dst)
    except CheckpointError as e:  # the plain path refuses it: the lean one says the same
        with pytest.raises(CheckpointError) as lean_error:
            load_checkpoint_file(dst, lazy=True)
        assert str(lean_error.value) == str(e)
        return
    lean = load_checkpoint_file(dst, lazy=True)
    assert not any(v.is_meta for v in lean.values())
    _same(materialize(full, torch.float32), materialize(lean, torch.float32))


def test_mismatch_is_reported_before_any_weight_is_read(reference_dir, monkeypatch):
    from vgt_impl.loading import load_ar_model

    r = reference_dir
    sd = load_checkpoint_file(r / AR["qwen2_5_vl"], lazy=True)
    monkeypatch.setattr(TensorFileReader, "read", lambda *a, **k: pytest.fail("weights read before the check"))
    monkeypatch.setattr("vgt_impl.checkpoints.load_checkpoint_file",
                        lambda *a, **k: {k2: v for k2, v in sd.items() if "image_out_projector" not in k2})
    with pytest.raises(CheckpointMismatchError, match="missing .* tensors: image_out_projector"):
        load_ar_model(r / AR["qwen2_5_vl"], base_model=r / BASE["qwen2_5_vl"], dtype=torch.float32,
                      device=torch.device("cpu"))
