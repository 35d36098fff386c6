"""Shared test setup: reference fixtures, thread count, CPU warm-up.

Fixture tests find the reference fixtures through ``VGT_REFERENCE_FIXTURES``. Unset: they skip with a visible reason.
Set but missing: they fail. With ``VGT_REQUIRE_FIXTURES=1`` (CI) any fixture skip fails the run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FIXTURE_SKIP_REASON = "VGT_REFERENCE_FIXTURES is not set: reference-fixture parity tests skipped"
MANIFEST_SKIP_REASON = "VGT_REFERENCE_FIXTURES is not set: full-size key manifests not available"

torch.set_num_threads(2)


def _warm_up() -> None:
    # A first multi-threaded call of some transcendental CPU kernels can be off by ~1e-4 (see fixture README).
    x = torch.linspace(-3, 3, 4096)
    for fn in (torch.sin, torch.cos, torch.exp, torch.erf, torch.tanh, torch.sigmoid, torch.log1p, torch.rsqrt):
        fn(x.abs() + 0.1 if fn in (torch.rsqrt,) else x)
    torch.nn.functional.gelu(x)
    torch.nn.functional.silu(x)


_warm_up()


def fixtures_root() -> Path | None:
    value = os.environ.get("VGT_REFERENCE_FIXTURES")
    if not value:
        return None
    return Path(value).resolve()


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    root = fixtures_root()
    if root is None:
        pytest.skip(FIXTURE_SKIP_REASON)
    if not root.is_dir():
        pytest.fail(f"VGT_REFERENCE_FIXTURES={root} does not exist: fixture tests cannot run")
    return root


@pytest.fixture(scope="session")
def manifests_dir(reference_dir: Path) -> Path:
    path = reference_dir.parent / "manifests"
    if not path.is_dir():
        pytest.fail(f"key manifests expected at {path}")
    return path


@pytest.fixture(scope="session")
def demo_folder(tmp_path_factory) -> Path:
    """A tiny random-weight model folder of the built-in vgt-demo model's layout and shape (tests/demo_model.py);
    shared: copy it before changing it."""
    from demo_model import make_demo_folder

    return make_demo_folder(tmp_path_factory.mktemp("demo"))


@pytest.fixture()
def no_network_build(monkeypatch):
    """Fail the test if a VGT-AR or VGT-AE network gets built: its checks must come first."""
    import vgt_impl.autoencoder as autoencoder
    import vgt_impl.loading as loading

    def refuse(*a, **k):
        raise AssertionError("a network was built before the inputs were checked")

    monkeypatch.setattr(loading, "VGTARModel", refuse)
    monkeypatch.setattr(autoencoder.VGTAutoencoder, "__init__", refuse)


def pytest_collection_modifyitems(config, items):  # noqa: D103
    for item in items:  # the "fixtures" marker: every test that uses the reference fixtures, directly or not
        if "reference_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.fixtures)


_fixture_skips: list[str] = []


def pytest_runtest_logreport(report):  # noqa: D103
    if report.skipped and isinstance(report.longrepr, tuple) and "VGT_REFERENCE_FIXTURES" in str(report.longrepr[2]):
        _fixture_skips.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):  # noqa: D103
    if os.environ.get("VGT_REQUIRE_FIXTURES") == "1" and _fixture_skips:
        print(f"\nERROR: {len(_fixture_skips)} reference-fixture tests were skipped but VGT_REQUIRE_FIXTURES=1")
        session.exitstatus = 1
