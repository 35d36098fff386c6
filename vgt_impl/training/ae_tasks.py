"""The autoencoder training tasks on the loop's contract (``task.py``): ``vgt train ae`` and ``vgt train dcae``.

Both run two optimizer phases per step once the GAN has started: "generator" (the autoencoder: pixel + perceptual
+ task terms + adversarial term) then "discriminator" (PatchGAN hinge + LeCam, its own AdamW and schedule starting at
``model.loss.gan.start_step``). The generator phase leaves its detached reconstruction in the batch for the second.

- ``ae``: VGT-AE stage 1 / 2 / the paper's stage 2 (``vgtae.py``); the vision encoder's parameters at
  ``encoder_lr_mult`` x the phase's lr; exports a model folder ``VGTAutoencoder.from_pretrained`` opens.
- ``dcae``: a diffusers ``AutoencoderDC`` trained on random crops (``dcae.py``); exports a diffusers folder.

Random draws (latent noise a, eps; crop offsets) come from per-sample streams (seed, purpose, sample slot), so a
resumed or multi-process run draws the same; ``draws={"noise_alpha": [B], "noise_eps": [B, C, h, w]}`` replaces them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .ae_common import AELossConfig, GANConfig
from .dcae import DCAEConfig, DCAETrainer, build_dcae, export_dcae, random_crop
from .perceptual import build_perceptual
from .task import BatchInfo, Draws, Metrics, ParamGroup, TrainTask, make_generator, stream_seed
from .vgtae import VGTAEConfig, VGTAETrainer

logger = logging.getLogger(__name__)

_METRIC_NAMES = {"rec_loss": "loss/rec", "perceptual_loss": "loss/perceptual", "distill_loss": "loss/distill",
                 "gan_loss": "loss/gan", "gan_weight": "gan/weight", "loss": "loss", "d_loss": "loss/disc",
                 "lecam_loss": "loss/lecam", "logits_real": "gan/logits_real", "logits_fake": "gan/logits_fake"}


class _AETask(TrainTask):
    """What both autoencoder tasks share (mixed into the AETrainer subclasses below)."""

    find_unused_parameters = True  # the generator phase leaves the discriminator unused, and the other way round

    def phase_names(self) -> list[str]:
        return ["generator", "discriminator"] if self.discriminator is not None else ["generator"]

    def param_groups(self, phase: str) -> list[ParamGroup]:
        if phase == "discriminator":
            return [ParamGroup("discriminator", list(self.discriminator.named_parameters()))]
        return [ParamGroup("autoencoder", [(n, p) for n, p in self.named_parameters()
                                           if p.requires_grad and not n.startswith("discriminator.")])]

    def ema_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad and not n.startswith("discriminator.")]

    def images(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["pixels"]

    def loss(self, phase: str, batch: dict[str, Any], step: int, draws: Draws | None = None) -> tuple[torch.Tensor, Metrics]:
        images = self.images(batch)
        if phase == "generator":
            loss, m = self.generator_loss(images, step, dict(draws) if draws else self.draw(batch, images, step))
            batch["recon"] = self._recon  # detached, for the discriminator phase of this step
        elif phase == "discriminator":
            loss, m = self.discriminator_loss(images, step, batch.get("recon"))
        else:
            raise ValueError(f"unknown phase {phase!r} (expected generator or discriminator)")
        return loss, {_METRIC_NAMES.get(k, k): v for k, v in m.items()}

    def draw(self, batch: dict[str, Any], images: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        return {}

    def collate(self, samples) -> dict[str, Any]:
        return {"pixels": torch.stack([s["pixels"] for s in samples])}

    def build_dataset(self, data_config: Any) -> torch.utils.data.Dataset:
        from .data import ImageCaptionDataset, load_records

        records = load_records(data_config.source, data_config.image_key, data_config.caption_key)
        self._dataset = ImageCaptionDataset(records, data_config.image_size, data_config.crop, stride=self.image_stride())
        return self._dataset

    def image_stride(self) -> int:
        """Training images are a multiple of this many pixels: the VGT-AE's latent stride, the DC-AE's compression."""
        return int(self.ae.stride) if hasattr(self, "ae") else int(self.compression)

    def sample_batch(self) -> torch.Tensor | None:
        """The first ``sample_images`` images of the dataset (fixed crops), for the periodic sample grid."""
        ds = getattr(self, "_dataset", None)
        if ds is None or self.cfg.sample_images <= 0:
            return None
        from .data import SampleKey

        n = min(self.cfg.sample_images, len(ds))
        return torch.stack([ds[SampleKey(i, i, stream_seed(0, "sample_images", i))]["pixels"] for i in range(n)])

    def sample(self, step: int) -> torch.Tensor | None:
        """Originals and reconstructions side by side: [2N, 3, H, W]."""
        images = self.sample_batch()
        if images is None:
            return None
        images = images.to(next(self.parameters()).device)
        recon = self.reconstruct(images)["recon"].clamp(-1, 1)
        return torch.stack([images, recon.to(images.dtype)], 1).flatten(0, 1)


# ---------------------------------------------------------------------------------------------------------- VGT-AE
@dataclass
class AETaskConfig(VGTAEConfig):
    """The ``model`` section of ``vgt train ae`` (stage settings: see ``VGTAEConfig`` and the presets)."""

    init: str = "checkpoint"  # "checkpoint": continue a VGT-AE | "base": new, from a base VLM folder + a DC-AE folder
    checkpoint: str | None = None  # init=checkpoint: official .pth / .safetensors, an exported file or model folder
    base_model: str | None = None  # base VLM folder (config.json; + weights for init=base); default: the checkpoint's folder
    decoder_config: str | None = None  # DC-AE config for an official checkpoint; default: stored with it, else f32c32
    dcae: str | None = None  # init=base: a diffusers AutoencoderDC folder whose decoder initialises ours
    teacher: str | None = None  # distillation teacher weights; default: teacher.safetensors beside the checkpoint,
    #   the official checkpoint's teacher.* tensors, else a frozen copy of the starting encoder
    attn_implementation: str = "sdpa"  # vision encoder attention: sdpa | eager | flash_attention_2
    export_teacher: bool = True  # write teacher.safetensors into exported folders (stage 2 starts from them)
    sample_images: int = 4  # images reconstructed in the periodic sample grid


class AETask(VGTAETrainer, _AETask):
    """``vgt train ae``: VGT-AE training (see ``vgtae.py`` for the stages)."""

    name = "ae"
    config_cls = AETaskConfig

    def __init__(self, config: AETaskConfig, ae, *, teacher=None, perceptual=None, sources: dict | None = None):
        super().__init__(ae, config, teacher=teacher, perceptual=perceptual)
        self.sources = dict(sources or {})

    @classmethod
    def build(cls, config) -> AETask:
        from .vgtae_io import build_vgtae

        mc: AETaskConfig = config.model
        ae, teacher, sources = build_vgtae(mc)
        task = cls(mc, ae, teacher=teacher, perceptual=build_perceptual(mc.loss.perceptual), sources=sources)
        _sync_gan_start(config, mc.loss.gan)
        return task

    def param_groups(self, phase: str) -> list[ParamGroup]:
        if phase == "discriminator":
            return super().param_groups(phase)
        named = [(n, p) for n, p in self.ae.named_parameters() if p.requires_grad]
        groups = [ParamGroup("encoder", [("ae." + n, p) for n, p in named if n.startswith("encoder.")],
                             lr_scale=self.cfg.encoder_lr_mult),
                  ParamGroup("ae", [("ae." + n, p) for n, p in named if not n.startswith("encoder.")])]
        return [g for g in groups if g.params]

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the vision encoder's transformer blocks in backward (transformers' own checkpointing)."""
        from transformers import PreTrainedModel

        towers = [m for m in self.ae.encoder.modules()
                  if isinstance(m, PreTrainedModel) and m.supports_gradient_checkpointing]
        if not towers:
            raise NotImplementedError(f"the {self.ae.family} vision encoder does not support gradient checkpointing")
        towers[0].gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})  # outermost

    def draw(self, batch: dict[str, Any], images: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """Per sample slot: latent noise a ~ U(0, gamma) [B], eps ~ N(0, I) [B, C, h, w] (stage 2), and the decoded
        window's offsets in tokens [B] (``decode_window``)."""
        if not self.training:
            return {}
        b, _, h, w = images.shape
        info = batch.get("info") or BatchInfo(step=step, micro=0, slots=list(range(b)))
        gh, gw = h // self.ae.stride, w // self.ae.stride
        out = {}
        if self.cfg.noise_gamma > 0:
            alpha, eps = [], []
            for slot in info.slots:
                gen = make_generator(images.device, info.seed, "ae_latent_noise", slot)
                alpha.append(torch.rand((), generator=gen, device=images.device) * self.cfg.noise_gamma)
                eps.append(torch.randn((self.ae.latent_channels, gh, gw), generator=gen, device=images.device))
            out.update(noise_alpha=torch.stack(alpha), noise_eps=torch.stack(eps))
        k = self.cfg.decode_window
        if 0 < k < min(gh, gw):
            top, left = [], []
            for slot in info.slots:
                gen = torch.Generator().manual_seed(stream_seed(info.seed, "ae_decode_window", slot))
                top.append(int(torch.randint(0, gh - k + 1, (), generator=gen)))
                left.append(int(torch.randint(0, gw - k + 1, (), generator=gen)))
            out.update(window_top=torch.tensor(top), window_left=torch.tensor(left))
        return out

    def resume_fingerprint(self) -> dict[str, Any]:
        c = self.cfg
        fp = {"task": self.name, "stage": c.stage, "encoder_norm": c.encoder_norm, "noise_gamma": c.noise_gamma,
              "train_encoder": c.train_encoder, "gan": c.loss.gan.enabled}
        if c.decode_window:
            fp["decode_window"] = c.decode_window  # only when set: runs saved before the option still resume
        if not c.train_latent:
            fp["train_latent"] = False  # likewise
        return fp

    def export(self, folder: Path, weights: Mapping[str, torch.Tensor]) -> Path:
        from .vgtae_io import export_vgtae_weights

        return export_vgtae_weights(self, Path(folder), weights)


# ---------------------------------------------------------------------------------------------------------- DC-AE
@dataclass
class DCAETaskConfig(DCAEConfig):
    """The ``model`` section of ``vgt train dcae``."""

    loss: AELossConfig = field(default_factory=lambda: AELossConfig(distill_weight=0.0, perceptual_weight=0.0,
                                                                    gan=GANConfig(start_step=-1)))
    sample_images: int = 4  # whole images reconstructed in the periodic sample grid


class DCAETask(DCAETrainer, _AETask):
    """``vgt train dcae``: a diffusers AutoencoderDC as a plain autoencoder on random crops."""

    name = "dcae"
    config_cls = DCAETaskConfig

    @classmethod
    def build(cls, config) -> DCAETask:
        mc: DCAETaskConfig = config.model
        task = cls(build_dcae(mc.model), mc, perceptual=build_perceptual(mc.loss.perceptual))
        _sync_gan_start(config, mc.loss.gan)
        return task

    def collate(self, samples) -> dict[str, Any]:
        """Stack the images, each cut to a random ``crop_size`` window drawn from its own seed."""
        size = self.cfg.crop_size
        crops = []
        for s in samples:
            x = s["pixels"]
            if size is not None and (x.shape[-1] != size or x.shape[-2] != size):
                x = random_crop(x[None], size, torch.Generator().manual_seed(stream_seed(s["seed"], "dcae_crop")))[0]
            crops.append(x)
        return {"pixels": torch.stack(crops)}

    def sample_batch(self) -> torch.Tensor | None:
        images = super().sample_batch()
        if images is None:
            return None
        f = self.compression
        h, w = images.shape[-2] // f * f, images.shape[-1] // f * f  # whole images, cut to the compression grid
        return images[..., :h, :w]

    def resume_fingerprint(self) -> dict[str, Any]:
        fingerprint = {"task": self.name, "crop_size": self.cfg.crop_size, "gan": self.cfg.loss.gan.enabled}
        if self.cfg.latent_norm:  # only when on: states saved before the option existed still resume
            fingerprint["latent_norm"] = True
        return fingerprint

    def export(self, folder: Path, weights: Mapping[str, torch.Tensor]) -> Path:
        """A diffusers folder with ``weights`` (the loop's ``dcae.*``; stored in their dtype)."""
        import copy

        dcae = copy.deepcopy(self.dcae).cpu()
        state = dcae.state_dict()
        state.update({k[len("dcae."):]: v for k, v in weights.items() if k.startswith("dcae.")})
        dcae.load_state_dict(state)
        dtype = next((v.dtype for k, v in weights.items() if k.startswith("dcae.") and v.is_floating_point()), None)
        return export_dcae(dcae, folder, dtype=dtype, latent_norm=self.cfg.latent_norm)


def _sync_gan_start(config, gan: GANConfig) -> None:
    """The discriminator phase's optimizer and schedule start where the GAN starts (model.loss.gan.start_step)."""
    if not gan.enabled:
        return
    if "discriminator" not in config.optim:
        raise ValueError("the GAN is on (model.loss.gan.start_step >= 0) but the config has no optim.discriminator "
                         "section: add one (lr, betas, weight_decay) or set model.loss.gan.start_step=-1")
    config.optim["discriminator"].start_step = gan.start_step
