"""Importing the library is cheap and never pulls in ComfyUI."""

from __future__ import annotations

import subprocess
import sys


def test_library_import_is_cheap_and_comfy_free():
    code = ("import sys, vgt_impl, vgt_impl.pipeline, vgt_impl.autoencoder, vgt_impl.editing; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('comfy', 'folder_paths', 'server', 'nodes')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
