"""Where each released VGT model's files come from, and fetching only the missing ones with huggingface_hub.

Nothing here runs at import time and nothing downloads unless a caller asks (``vgt download``, a loader node run with
``download_missing``). Two layers:

- ``REPOS`` / ``plan`` / ``download``: whole-repo downloads by short name for the ``vgt download`` command.
- ``RELEASES`` / ``resolve_release``: a release = the exact files one model needs (AR checkpoint, base VLM folders with
  config + tokenizer only, the DC-AE decoder config), found under a models folder or fetched file by file.

A model shipped inside the package is one more entry made by :func:`builtin_release` (its folder is used in place and
never downloaded); :func:`available_releases` lists it only when its folder is present.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

# name -> (hub repo, local folder under the models dir, file patterns: None = everything)
REPOS: dict[str, tuple[str, str, list[str] | None]] = {
    "vgt-ae": ("hustvl/vgt_ae", "vgt_ae", None),
    "qwen25vl-2b-sft": ("hustvl/vgt_qwen25vl_2B_sft", "vgt_qwen25vl_2B_sft", None),
    "qwen25vl-2b-pretrain": ("hustvl/vgt_qwen25vl_2B_pretrain", "vgt_qwen25vl_2B_pretrain", None),
    "internvl3-1.6b-sft": ("hustvl/vgt_internvl3_1_6B_sft", "vgt_internvl3_1_6B_sft", None),
    "internvl3-1.6b-pretrain": ("hustvl/vgt_internvl3_1_6B_pretrain", "vgt_internvl3_1_6B_pretrain", None),
    # Base folders: configs and tokenizers only (every weight comes from the VGT checkpoints).
    "base-qwen2.5-vl-3b": ("Qwen/Qwen2.5-VL-3B-Instruct", "base/Qwen2.5-VL-3B-Instruct", ["*.json", "*.txt"]),
    "base-internvl3-2b": ("OpenGVLab/InternVL3-2B", "base/InternVL3-2B", ["*.json", "*.txt"]),
    "base-internvl3-1b": ("OpenGVLab/InternVL3-1B", "base/InternVL3-1B", ["*.json", "*.txt"]),
    "base-dcae": ("mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers", "base/dc-ae-f32c32-sana-1.1-diffusers", ["*.json"]),
}
# What each model needs besides itself.
NEEDS = {
    "qwen25vl-2b-sft": ["base-qwen2.5-vl-3b"],
    "qwen25vl-2b-pretrain": ["base-qwen2.5-vl-3b"],
    "internvl3-1.6b-sft": ["base-internvl3-2b", "base-internvl3-1b"],
    "internvl3-1.6b-pretrain": ["base-internvl3-2b", "base-internvl3-1b"],
    "vgt-ae": ["base-qwen2.5-vl-3b", "base-internvl3-1b"],
}


def plan(names: list[str], with_bases: bool = True) -> list[str]:
    """The download list for the requested names (bases added), in order, without repeats."""
    out: list[str] = []
    for name in names:
        if name not in REPOS:
            raise ValueError(f"unknown model {name!r}: choose from {', '.join(REPOS)}")
        for n in [name] + (NEEDS.get(name, []) if with_bases else []):
            if n not in out:
                out.append(n)
    return out


def download(names: list[str], models_dir: str | Path, *, with_bases: bool = True) -> list[Path]:
    """Download into ``models_dir`` (e.g. ComfyUI/models/vgt); returns the local folders."""
    from huggingface_hub import snapshot_download

    paths = []
    for name in plan(names, with_bases):
        repo, folder, patterns = REPOS[name]
        local = Path(models_dir) / folder
        snapshot_download(repo_id=repo, local_dir=str(local), allow_patterns=patterns)
        paths.append(local)
    return paths


# ---------------------------------------------------------------------------------------------------------- releases
CHECKPOINT_SUFFIXES = (".pth", ".safetensors", ".pt", ".bin")
# A base VLM folder as the pack reads it: config + tokenizer. The optional files are fetched when the repo has them.
TOKENIZER_REQUIRED = ("config.json", "tokenizer_config.json", "vocab.json", "merges.txt")
TOKENIZER_OPTIONAL = ("tokenizer.json", "special_tokens_map.json", "added_tokens.json", "generation_config.json")


@dataclass(frozen=True)
class Files:
    """The files of one folder under the models folder, and where they come from.

    ``required`` must all be present; ``optional`` are fetched beside them when the hub has them. ``required=()``
    with a ``repo`` means the repo's only checkpoint file, whose name is not published (found by listing the repo).
    ``builtin``: a folder shipped with the package, used in place and never downloaded.
    """

    folder: str  # relative to the models folder, e.g. "base/InternVL3-2B"
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    repo: str | None = None
    revision: str = "main"
    builtin: Path | None = None

    @property
    def discover_checkpoint(self) -> bool:
        return not self.required and self.builtin is None


@dataclass(frozen=True)
class Release:
    """A released VGT model: every file it needs, by role."""

    name: str  # shown in the loader; stable (saved workflows store it)
    family: str  # "qwen2_5_vl" | "internvl3"
    ar: Files  # the VGT-AR checkpoint (one file; it embeds the VGT-AE it was trained with)
    base: Files  # the LLM's base VLM folder (config + tokenizer)
    ae_base: Files | None = None  # the VGT-AE encoder's base folder when it differs from ``base``
    decoder: Files | None = None  # the DC-AE decoder config folder (None: the built-in f32c32 config)
    vgt_ae: Files | None = None  # a stand-alone VGT-AE, fetched only for a checkpoint that embeds none
    params: tuple[float, float] = (0.0, 0.0)  # parameters loaded (VGT-AR, VGT-AE), in billions
    note: str = ""

    def parts(self) -> list[tuple[str, Files]]:
        """(role, files) in download order: small folders first, the checkpoint last."""
        out = [("base_model", self.base)]
        if self.ae_base is not None:
            out.append(("ae_base_model", self.ae_base))
        if self.decoder is not None:
            out.append(("decoder_config", self.decoder))
        return out + [("ar_checkpoint", self.ar)]


def _base(repo: str) -> Files:
    return Files("base/" + repo.split("/")[-1], TOKENIZER_REQUIRED, TOKENIZER_OPTIONAL, repo=repo)


_DCAE = Files("base/dc-ae-f32c32-sana-1.1-diffusers", ("config.json",), repo="mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers")
_QWEN_BASE = _base("Qwen/Qwen2.5-VL-3B-Instruct")


def _hub_release(name, family, repo, checkpoint, base, ae_base, ae_file, params, note="") -> Release:
    folder = repo.split("/")[-1]
    ar = Files(folder, (checkpoint,) if checkpoint else (), repo=repo)
    return Release(name, family, ar, base, ae_base, _DCAE, Files("vgt_ae", (ae_file,), repo="hustvl/vgt_ae"),
                   params, note)


_Q = ("qwen2_5_vl", _QWEN_BASE, None, "vgt_ae_qwen25vl.pth", (1.872, 0.853))
_I = ("internvl3", _base("OpenGVLab/InternVL3-2B"), _base("OpenGVLab/InternVL3-1B"), "vgt_ae_internvl3.pth",
      (1.710, 0.473))
# The SFT checkpoints are iter_5000.pth (the reference README); the pretrain repos' file name is found by listing.
RELEASES: dict[str, Release] = {r.name: r for r in (
    _hub_release("VGT-Qwen2.5-VL-2B-SFT", _Q[0], "hustvl/vgt_qwen25vl_2B_sft", "iter_5000.pth", *_Q[1:]),
    _hub_release("VGT-Qwen2.5-VL-2B-Pretrain", _Q[0], "hustvl/vgt_qwen25vl_2B_pretrain", None, *_Q[1:]),
    _hub_release("VGT-InternVL3-1.6B-SFT", _I[0], "hustvl/vgt_internvl3_1_6B_sft", "iter_5000.pth", *_I[1:]),
    _hub_release("VGT-InternVL3-1.6B-Pretrain", _I[0], "hustvl/vgt_internvl3_1_6B_pretrain", None, *_I[1:]),
)}
# Base folders (and the hub repos they come from) by family, for checkpoints that are not a known release.
FAMILY_BASES: dict[str, tuple[Files, Files | None]] = {"qwen2_5_vl": (_Q[1], _Q[2]), "internvl3": (_I[1], _I[2])}


def builtin_release(name: str, folder: str | Path, family: str, checkpoint: str, *, note: str = "",
                    params: tuple[float, float] = (0.0, 0.0)) -> Release:
    """A model shipped inside the package: ``folder`` holds its config + tokenizer and the checkpoint file (which
    embeds its VGT-AE); ``folder/decoder/config.json``, when present, is its DC-AE decoder config."""
    folder = Path(folder)
    here = lambda *req: Files(folder.name, tuple(req), builtin=folder)  # noqa: E731
    decoder = Files(folder.name + "/decoder", ("config.json",), builtin=folder / "decoder")
    return Release(name, family, here(checkpoint), here("config.json"), None,
                   decoder if (folder / "decoder" / "config.json").is_file() else None, None, params, note)


DEMO_RELEASE = "vgt-demo"  # the small model trained on the world of shapes (vgt_impl/demo), shipped in the package
DEMO_FOLDER = Path(__file__).resolve().parent / "demo" / DEMO_RELEASE
BUILTIN_RELEASES: list[Release] = [  # models that ship inside the package (see builtin_release)
    builtin_release(DEMO_RELEASE, DEMO_FOLDER, "qwen3_vl", "model.safetensors", params=(0.004, 0.003),
                    note="built in: a tiny Qwen3-VL VGT model of the world of coloured shapes (224 px; "
                         "`vgt demo train` rebuilds it)"),
]


def available_releases() -> dict[str, Release]:
    """Built-in models whose folder is present, then the hub releases."""
    out = {r.name: r for r in BUILTIN_RELEASES if r.ar.builtin is not None and r.ar.builtin.is_dir()}
    return {**out, **RELEASES}


def release_for_checkpoint(name: str, family: str) -> Release:
    """A release-like description of a checkpoint found in the models folder (relative ``name``): its family's
    official base folders and decoder config resolve (and download) as for the releases."""
    base, ae_base = FAMILY_BASES[family]
    folder, _, file = name.replace("\\", "/").rpartition("/")
    return Release(name, family, Files(folder or ".", (file,)), base, ae_base, _DCAE, None)


# ---------------------------------------------------------------------------------------------------------- resolution
class MissingFilesError(FileNotFoundError):
    """Files a model needs are missing and could not be fetched; the message lists them and the commands to run."""


@dataclass
class Missing:
    files: Files
    names: list[str]  # missing file names (empty while the checkpoint's name is unknown)
    root: Path  # the models folder they are fetched into
    reason: str = ""

    @property
    def dest(self) -> Path:
        return self.root / self.files.folder

    def command(self) -> str:
        names = " ".join(self.names) if self.names else "--include '*.pth' '*.safetensors'"
        return f"hf download {self.files.repo} {names} --local-dir {self.dest}"

    def line(self) -> str:
        names = ", ".join(self.names) if self.names else "its checkpoint file"
        return f"{self.files.folder}/: {names} (from {self.files.repo})"


@dataclass
class ResolvedRelease:
    release: Release
    paths: dict[str, Path] = field(default_factory=dict)  # role -> file (ar_checkpoint) or folder (others)


def _checkpoints_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*") if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)


def pick_checkpoint(names: Iterable[str], repo: str) -> str:
    """The checkpoint among a repo's file names: the only one, else the latest ``iter_N``."""
    found = [n for n in names if "/" not in n and n.endswith(CHECKPOINT_SUFFIXES)]
    if len(found) == 1:
        return found[0]
    iters = [n for n in found if n.startswith("iter_") and n.split("_")[-1].split(".")[0].isdigit()]
    if iters:
        return max(iters, key=lambda n: int(n.split("_")[-1].split(".")[0]))
    raise MissingFilesError(f"{repo}: expected one checkpoint file, found {found or 'none'}")


def find_local(files: Files, roots: Sequence[Path]) -> Path | None:
    """The folder holding every required file (for a checkpoint: the file itself), or None."""
    if files.builtin is not None:
        ok = all((files.builtin / n).is_file() for n in files.required)
        return (files.builtin / files.required[0] if _is_file_role(files) else files.builtin) if ok else None
    for root in roots:
        folder = Path(root) / files.folder
        if files.discover_checkpoint:
            found = _checkpoints_in(folder) if folder.is_dir() else []
            if found:
                return folder / pick_checkpoint(found, str(folder))
        elif all((folder / n).is_file() for n in files.required):
            return folder / files.required[0] if _is_file_role(files) else folder
    return None


def _is_file_role(files: Files) -> bool:
    return len(files.required) == 1 and files.required[0].endswith(CHECKPOINT_SUFFIXES)


ProgressFn = Callable[[int, int, str], None]  # (bytes done, bytes total, what) -- may raise to cancel


def resolve_release(release: Release, roots: Sequence[str | Path], *, download_root: str | Path | None = None,
                    download: bool = True, progress: ProgressFn | None = None,
                    endpoint: str | None = None) -> ResolvedRelease:
    """Every file of ``release`` under one of ``roots``; missing ones fetched into ``download_root`` (default: the
    first root) when ``download``. Raises one :class:`MissingFilesError` listing everything still missing."""
    roots = [Path(r) for r in roots]
    dest_root = Path(download_root) if download_root is not None else roots[0]
    out = ResolvedRelease(release)
    missing: list[Missing] = []
    for role, files in release.parts():
        path = find_local(files, roots)
        if path is not None:
            out.paths[role] = path
            continue
        if files.builtin is not None or files.repo is None:
            raise FileNotFoundError(f"{release.name}: {files.builtin or dest_root / files.folder} is missing "
                                    f"{', '.join(files.required)}")
        names = [n for n in files.required if not (dest_root / files.folder / n).is_file()]
        missing.append(Missing(files, names, dest_root))
    if missing and download:
        fetched = fetch_missing(missing, progress=progress, endpoint=endpoint)
        for role, files in release.parts():
            if role not in out.paths and files in fetched:
                out.paths[role] = fetched[files]
        missing = [m for m in missing if m.files not in fetched]
    if missing:
        raise MissingFilesError(missing_message(release.name, missing, tried=download))
    return out


def missing_message(what: str, missing: list[Missing], *, tried: bool) -> str:
    """One message: what is missing (per folder), why, and the commands that fetch it."""
    root = missing[0].root
    reasons = {m.reason for m in missing}
    common = reasons.pop() if len(reasons) == 1 else ""
    why = common if tried else "download_missing is off"
    count = sum(max(1, len(m.names)) for m in missing)
    lines = [f"{what}: {count} file(s) missing in {root}" + (f" and not downloaded: {why}" if why else "")]
    lines += [f"  {m.line()}" + (f"  [{m.reason}]" if m.reason and not common else "") for m in missing]
    lines.append("Fetch them with huggingface_hub's command (set HF_ENDPOINT for a mirror), then run again:")
    lines += [f"  {m.command()}" for m in missing]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------- fetching
@dataclass
class _Job:
    missing: Missing
    name: str
    size: int
    etag: str | None
    optional: bool = False


NOT_FOUND = "not found on the hub"


def _explain(e: BaseException) -> tuple[str, bool]:
    """(short reason, whether the hub itself is unreachable so trying further files is pointless)."""
    kind = type(e).__name__
    status = getattr(getattr(e, "response", None), "status_code", None)
    if "EntryNotFound" in kind or status == 404:
        return NOT_FOUND, False
    if "RepositoryNotFound" in kind or "RepoNotFound" in kind or status == 401:
        return "repository not found or private", False
    if status is not None:
        return f"hub error {status}", False
    text = str(e).splitlines()[0][:160] if str(e) else kind
    return f"hub unreachable ({kind}: {text})", True


def _plan_jobs(missing: list[Missing], endpoint: str | None) -> tuple[list[_Job], bool]:
    """HEAD every missing (and optional) file: sizes for the progress bar, failures before any large transfer."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    jobs: list[_Job] = []
    for m in missing:
        current = ""
        try:
            if m.files.discover_checkpoint:
                m.names = [_discover(m.files, endpoint)]
            wanted = [(n, False) for n in m.names] + [(n, True) for n in m.files.optional if not (m.dest / n).is_file()]
            for current, optional in wanted:
                url = hf_hub_url(m.files.repo, current, revision=m.files.revision, endpoint=endpoint)
                try:
                    meta = get_hf_file_metadata(url)
                except Exception as e:  # noqa: BLE001 -- any failure is reported per file
                    if optional and _explain(e)[0] == NOT_FOUND:
                        continue
                    raise
                jobs.append(_Job(m, current, meta.size or 0, meta.etag, optional))
        except Exception as e:  # noqa: BLE001
            why, unreachable = _explain(e)
            m.reason = why if unreachable or not current else f"{current}: {why}"
            logger.warning("cannot fetch %s from %s: %s", m.names or "checkpoint", m.files.repo, m.reason)
            if unreachable:
                for other in missing:
                    other.reason = other.reason or m.reason
                return [], False
    return jobs, True


def _discover(files: Files, endpoint: str | None) -> str:
    from huggingface_hub import HfApi

    names = HfApi(endpoint=endpoint).list_repo_files(files.repo, revision=files.revision)
    return pick_checkpoint(names, files.repo)


def hub_problem(endpoint: str | None = None, timeout: float = 5.0) -> str | None:
    """Why the hub cannot be reached at all (offline mode, no connection), checked once and quickly; else None."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "offline mode is on (HF_HUB_OFFLINE=1)"
    url = urlparse(endpoint or constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as e:
        return f"hub unreachable at {url.scheme}://{url.netloc} ({e.strerror or e})"
    return None


def fetch_missing(missing: list[Missing], *, progress: ProgressFn | None = None,
                  endpoint: str | None = None) -> dict[Files, Path]:
    """Download what ``missing`` lists (only those files); returns the folders/files now complete. Failures are
    recorded in each ``Missing.reason``; ``progress`` may raise to cancel."""
    problem = hub_problem(endpoint)
    if problem:
        logger.warning("VGT files not downloaded: %s", problem)
        for m in missing:
            m.reason = problem
        return {}
    jobs, reachable = _plan_jobs(missing, endpoint)
    if not reachable:
        return {}
    total, done = sum(j.size for j in jobs), 0
    failed: set[int] = {id(m) for m in missing if m.reason}
    for job in jobs:
        if id(job.missing) in failed:
            continue
        label = f"{job.missing.files.repo}/{job.name}"
        logger.info("downloading %s (%.1f MB) into %s", label, job.size / 1e6, job.missing.dest)
        try:
            _download_file(job, endpoint, lambda n, base=done, lab=label: progress and progress(base + n, total, lab))
        except Exception as e:  # noqa: BLE001
            if job.optional and _explain(e)[0] == NOT_FOUND:
                continue
            job.missing.reason = f"{job.name}: {_explain(e)[0]}"
            failed.add(id(job.missing))
            continue
        done += job.size
        if progress:
            progress(done, total, label)
    out: dict[Files, Path] = {}
    for m in missing:
        if id(m) not in failed:
            names = m.names
            out[m.files] = m.dest / names[0] if (m.files.discover_checkpoint or _is_file_role(m.files)) else m.dest
    return out


def _download_file(job: _Job, endpoint: str | None, on_bytes: Callable[[int], None]) -> Path:
    """hf_hub_download into the folder (resumes a partial download), reporting bytes from the partial file."""
    from huggingface_hub import hf_hub_download

    files, dest = job.missing.files, job.missing.dest
    partial = _partial_path(dest, job.name, job.etag)
    result: dict = {}

    def work():
        try:
            result["path"] = hf_hub_download(files.repo, job.name, revision=files.revision, local_dir=str(dest),
                                             endpoint=endpoint)
        except BaseException as e:  # noqa: BLE001 -- handed to the caller's thread
            result["error"] = e

    thread = threading.Thread(target=work, name=f"vgt-download-{job.name}", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.25)
        if partial is not None and partial.is_file():
            on_bytes(partial.stat().st_size)
    if "error" in result:
        raise result["error"]
    return Path(result["path"])


def _partial_path(dest: Path, name: str, etag: str | None) -> Path | None:
    """Where huggingface_hub keeps the partial file of a ``local_dir`` download (private layout; None if unknown)."""
    if not etag:
        return None
    try:
        from huggingface_hub._local_folder import get_local_download_paths

        return get_local_download_paths(dest, name).incomplete_path(etag)
    except Exception:  # noqa: BLE001 -- progress then advances per file only
        return None


