"""Latent cache: the VGT-AE is frozen in AR training, so encode the dataset once and train from the latents.

    <cache>/index.json                  format, count, latent shape, image size / crop, the VGT-AE's fingerprint
    <cache>/latents-00000.safetensors   "latents" [n, 32, h, w] (fp16 by default); captions + keys in the metadata

Each image is cropped once (data.crop with the item's epoch-0 seed), so a cache freezes one crop per image; train
with ``data.latent_cache=<cache>``. Several processes (``accelerate launch``) encode disjoint shards in parallel.
A cache remembers which VGT-AE wrote it; training with another VGT-AE is refused.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

FORMAT = "vgt-latent-cache/1"
INDEX = "index.json"
STORE = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def ae_fingerprint(ae: torch.nn.Module) -> str:
    """A cheap identity of a VGT-AE's weights (sums per tensor, hashed)."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(ae.state_dict().items()):
        x = t.detach().double()
        h.update(f"{name}:{tuple(t.shape)}:{float(x.sum()):.6e}:{float(x.abs().sum()):.6e};".encode())
    return h.hexdigest()[:16]


def read_index(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    path = Path(folder) / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"data.latent_cache={folder}: no {INDEX} (write one with `vgt cache-latents`)")
    info = json.loads(path.read_text())
    if info.get("format") != FORMAT:
        raise ValueError(f"{path}: not a latent cache of this version (format {info.get('format')!r}, expected {FORMAT})")
    return info, info["shards"]


def check_cache_matches(info: dict[str, Any], ae, data_config) -> None:
    """Refuse a cache written by another VGT-AE or at another image size."""
    if info.get("ae_fingerprint") != ae_fingerprint(ae):
        raise ValueError(f"the latent cache was written by another VGT-AE ({info.get('ae_checkpoint')}); rebuild it "
                         f"with `vgt cache-latents` for this model, or drop data.latent_cache")
    if info.get("image_size") != data_config.image_size:
        raise ValueError(f"the latent cache holds {info.get('image_size')} px images but data.image_size is "
                         f"{data_config.image_size}")


def build_cache(run_config, out: Path, *, batch_size: int = 32, dtype: str = "fp16", shard_size: int = 4096,
                device: torch.device | None = None, encoder: torch.nn.Module | None = None) -> dict[str, Any] | None:
    """Encode ``run_config.data`` with the task's VGT-AE into ``out``; returns the index (on the main process).

    ``encoder`` replaces the VGT-AE: any module with ``encode(pixels [-1, 1]) -> [B, C, h, w]``, ``stride`` and
    ``family`` attributes (e.g. a plain VAE, to train the same AR on its latents as a baseline).
    """
    from accelerate import PartialState

    from .data import ImageCaptionDataset, SampleKey, load_records

    state = PartialState()
    device = device or state.device
    data = run_config.data
    records = load_records(data.source, data.image_key, data.caption_key)
    ae = (encoder if encoder is not None else load_task_ae(run_config.model)).to(device)
    dataset = ImageCaptionDataset(records, data.image_size, data.crop, stride=ae.stride, on_error=data.on_error)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_shards = (len(records) + shard_size - 1) // shard_size
    t0 = time.perf_counter()
    for shard in range(state.process_index, n_shards, state.num_processes):
        lo, hi = shard * shard_size, min(len(records), (shard + 1) * shard_size)
        keys = [SampleKey(i, i, _seed(run_config, i)) for i in range(lo, hi)]
        _write_shard(out / f"latents-{shard:05d}.safetensors", dataset, keys, ae, batch_size, STORE[dtype])
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    index = _index(out, n_shards, shard_size, len(records), run_config, ae, dtype, time.perf_counter() - t0)
    (out / INDEX).write_text(json.dumps(index, indent=1))
    return index


def _seed(run_config, i: int) -> int:
    from .task import stream_seed

    return stream_seed(run_config.loop.seed, "sample", i)


def load_task_ae(model_cfg):
    """The VGT-AE an AR run config names: ``ae_checkpoint``, else the one embedded in ``checkpoint``."""
    from ..autoencoder import VGTAutoencoder

    src = model_cfg.ae_checkpoint or model_cfg.checkpoint
    if not src:
        raise ValueError("no VGT-AE in the config: set model.ae_checkpoint (or model.checkpoint with an embedded one)")
    ae = VGTAutoencoder.from_pretrained(src, base_model=model_cfg.ae_base_model or model_cfg.base_model,
                                        decoder_config=model_cfg.decoder_config, dtype=torch.float32, device="cpu")
    ae.ae_source = str(src)
    return ae


def _write_shard(path: Path, dataset, keys, ae, batch_size: int, store: torch.dtype) -> None:
    from ..checkpoints import write_safetensors

    latents, captions, names = [], [], []
    for i in range(0, len(keys), batch_size):
        items = [dataset[k] for k in keys[i:i + batch_size]]
        pixels = torch.stack([it["pixels"] for it in items]).to(next(ae.parameters()).device)
        with torch.no_grad():
            latents.append(ae.encode(pixels).to(store).cpu())
        captions += [it["caption"] for it in items]
        names += [it["key"] for it in items]
    meta = {"captions": json.dumps(captions), "keys": json.dumps(names)}
    write_safetensors(path, {"latents": torch.cat(latents)}, meta)


def _index(out: Path, n_shards: int, shard_size: int, count: int, run_config, ae, dtype: str, seconds: float):
    from safetensors import safe_open

    shards = []
    for s in range(n_shards):
        f = f"latents-{s:05d}.safetensors"
        with safe_open(str(out / f), framework="pt") as h:
            shape = h.get_slice("latents").get_shape()
        shards.append({"file": f, "count": int(shape[0])})
    if sum(s["count"] for s in shards) != count:
        raise RuntimeError(f"latent cache {out}: shards hold {sum(s['count'] for s in shards)} latents, expected {count}")
    return {"format": FORMAT, "count": count, "latent_shape": list(shape[1:]), "dtype": dtype, "shards": shards,
            "image_size": run_config.data.image_size, "crop": run_config.data.crop, "source": run_config.data.source,
            "ae_checkpoint": getattr(ae, "ae_source", None), "ae_family": ae.family, "ae_fingerprint": ae_fingerprint(ae),
            "seconds": seconds}
