"""Packaging and test-suite promises: an SPDX license string, markers that do what they say, no leaked files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_is_an_spdx_string(pyproject):
    """A TOML table is deprecated by setuptools (a warning on every install); a string needs setuptools >= 77."""
    assert pyproject["project"]["license"] == "MIT"
    assert pyproject["project"]["license-files"] == ["LICENSE"] and (ROOT / "LICENSE").is_file()
    assert "setuptools>=77" in pyproject["build-system"]["requires"]


def test_slow_marker_is_used_and_described_truthfully(pyproject):
    opts = pyproject["tool"]["pytest"]["ini_options"]
    slow = next(m for m in opts["markers"] if m.startswith("slow:"))
    if "excluded by default" in slow:
        assert "not slow" in opts.get("addopts", "")
    else:
        assert "included by default" in slow
    marked = [p.name for p in (ROOT / "tests").glob("test_*.py") if "@pytest.mark.slow" in p.read_text()]
    assert marked, "the slow marker is declared but no test carries it"


def test_fixtures_marker_is_set_on_fixture_tests(request, reference_dir):
    assert request.node.get_closest_marker("fixtures") is not None


def test_fixture_free_tests_carry_no_fixtures_marker(request):
    assert request.node.get_closest_marker("fixtures") is None


METADATA = {"size", "mode", "width", "height", "info", "format"}


def test_no_image_file_is_left_open():
    """``Image.open(path).size`` leaves the file open until garbage collection (a ResourceWarning, as in the two
    unclosed files tests/test_cli.py had): open images in a ``with`` block. Checked over the library and the tests."""
    import ast

    leaks = []
    for path in [*(ROOT / "vgt_impl").rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "nodes").rglob("*.py"),
                 *(ROOT / "comfyui_vgt").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            # .size/.mode/... read the header only and leave the file open (.convert() and .load() close it)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Call) and node.attr in METADATA:
                f = node.value.func
                if isinstance(f, ast.Attribute) and f.attr == "open" and getattr(f.value, "id", "") == "Image":
                    leaks.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not leaks, f"Image.open(...).<attribute> leaves the file open: {leaks}"
