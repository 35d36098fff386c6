"""One-choice loading inside ComfyUI: the known releases and the checkpoints in models/vgt, every needed file found
under the vgt folders or fetched into ComfyUI's models/vgt when the node runs, with progress on the node."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from . import folders

logger = logging.getLogger(__name__)


def _hub():
    from vgt_impl import hub

    return hub


def choices() -> list[str]:
    """Releases first (built-in, then hub), then every checkpoint in models/vgt that is not a release's own file.

    The built-in models are always listed (the first one, vgt-demo, is the default): saved workflows naming them stay
    valid; loading one whose folder is missing from the install is a clear error (see :func:`release_for`)."""
    hub = _hub()
    releases = hub.available_releases()
    taken = {f"{r.ar.folder}/{n}" for r in releases.values() for n in r.ar.required}
    release_folders = {r.ar.folder for r in releases.values() if r.ar.discover_checkpoint}
    local = [n for n in folders.checkpoint_names()
             if n not in taken and n.rpartition("/")[0] not in release_folders and not n.startswith("vgt_ae/")]
    builtin = [r.name for r in hub.BUILTIN_RELEASES]
    return builtin + [n for n in releases if n not in builtin] + local


def default_choice() -> str:
    """The loader's default: the built-in demo model (runs anywhere, nothing to download)."""
    return _hub().BUILTIN_RELEASES[0].name


def download_root() -> Path:
    """Where missing files go: ComfyUI's own models/vgt (created on the first download)."""
    import folder_paths

    return Path(folder_paths.models_dir) / folders.FOLDER


def release_for(choice: str):
    """The release named ``choice``, or a release-like entry for a checkpoint file in models/vgt."""
    hub = _hub()
    releases = hub.available_releases()
    if choice in releases:
        return releases[choice]
    for r in hub.BUILTIN_RELEASES:
        if r.name == choice:  # listed, but its folder is not in this install
            raise FileNotFoundError(f"model: the built-in {choice} model is not in this install ({r.ar.builtin} is "
                                    f"missing from this install): pick a released model, or build it with "
                                    f"`vgt demo train --out DIR` and copy DIR/{choice} there")
    path = folders.checkpoint_path(choice)  # clear errors for unknown names and path escapes
    return hub.release_for_checkpoint(choice, _family_of(path))


def _family_of(path: Path) -> str:
    from vgt_impl.checkpoints import detect_variant, load_checkpoint_file

    info = detect_variant(load_checkpoint_file(path))
    if info.kind in ("ae", "converted_ae"):
        raise ValueError(f"model: {path.name} is a VGT-AE checkpoint, not a VGT model: pick a VGT-AR checkpoint "
                         f"or a release (load a VGT-AE alone with Load VGT-AE)")
    if info.family not in _hub().FAMILY_BASES:
        from vgt_impl.backbones import display_name, family_names

        what = (f"is a {display_name(info.family)} checkpoint with no official base folder to fetch"
                if info.family in family_names() else "is of a family this loader cannot tell")
        raise ValueError(f"model: {path.name} {what}: use Load VGT Model and pick its base folder")
    return info.family


class NodeProgress:
    """Download progress on the running node: ComfyUI's progress bar (bytes) plus a text line naming the file."""

    def __init__(self):
        import comfy.utils

        self.bar = None
        self.total = 0
        self.text = _text_sender()
        self.last = ""
        self._utils = comfy.utils

    def finish(self) -> None:
        if self.text and self.last:
            self.text(f"downloaded {self.total / 1e6:.1f} MB into {download_root()}")

    def __call__(self, done: int, total: int, what: str) -> None:
        self.total = total
        if self.bar is None:
            self.bar = self._utils.ProgressBar(max(total, 1))
        self.bar.update_absolute(min(done, total), max(total, 1))
        line = f"downloading {what.rsplit('/', 1)[-1]}: {done / 1e6:.1f} / {total / 1e6:.1f} MB"
        if self.text and line != self.last:
            self.last = line
            self.text(line)


def _text_sender():
    """``send(text)`` showing text on the running node (ComfyUI's progress text), or None outside a server."""
    try:
        from comfy_execution.utils import get_executing_context
        from server import PromptServer
    except ImportError:
        return None
    ctx = get_executing_context()
    server = getattr(PromptServer, "instance", None)
    if ctx is None or server is None:
        return None
    return lambda text: server.send_progress_text(text, ctx.node_id)


def show_on_node(text: str) -> None:
    """A warning or status line shown on the running node (logged too)."""
    logger.warning(text)
    send = _text_sender()
    if send is not None:
        send(text)


def resolve(choice: str, download_missing: bool):
    """Every file of the chosen model -> (release, ResolvedRelease)."""
    hub = _hub()
    release = release_for(choice)
    roots = folders.roots() or [download_root()]
    progress = NodeProgress()
    resolved = hub.resolve_release(release, roots, download_root=download_root(), download=download_missing,
                                   progress=progress, endpoint=os.environ.get("HF_ENDPOINT") or None)
    progress.finish()
    return release, resolved


def resolve_ae(release, download_missing: bool) -> Path:
    """The stand-alone VGT-AE of a release (for a checkpoint that embeds none)."""
    hub = _hub()
    if release.vgt_ae is None:
        raise ValueError(f"{release.name} embeds no VGT-AE and has no stand-alone one: use Load VGT Model and pick "
                         f"the VGT-AE file")
    fake = hub.Release(release.name + " (VGT-AE)", release.family, release.vgt_ae, release.ae_base or release.base)
    res = hub.resolve_release(fake, folders.roots() or [download_root()], download_root=download_root(),
                              download=download_missing, progress=NodeProgress(),
                              endpoint=os.environ.get("HF_ENDPOINT") or None)
    return res.paths["ar_checkpoint"]
