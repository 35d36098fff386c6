"""Explicit downloads of the official files with huggingface_hub (never called at import or by loaders)."""

from __future__ import annotations

from pathlib import Path

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
