"""export_demo_folder's records and swaps. The recorded sampling preset (config ``sampling.preset``): validated on
export and load, followed by `vgt generate` (unless --preset is given) and by the sampler node's preset "auto". A
decoder tuned on the same latents replaces the embedded one; one from another latent space is refused."""

from __future__ import annotations

import json

import pytest
import torch

from vgt_impl.demo.model_folder import export_demo_folder
from vgt_impl.loading import stored_sampling
from vgt_impl.presets import preset_options


@pytest.fixture(scope="module")
def recorded(demo_folder, tmp_path_factory):
    """The tiny demo-layout folder, exported with a recorded preset and raster order."""
    dest = tmp_path_factory.mktemp("rec") / "vgt-demo"
    return export_demo_folder(demo_folder, dest, dtype="fp32", sampling={"order": "raster", "acc_ratio": 1,
                                                                         "preset": "sde-15"})


def test_export_records_the_preset_in_weights_and_sidecar(recorded):
    assert stored_sampling(recorded / "model.safetensors") == {"order": "raster", "acc_ratio": 1, "preset": "sde-15"}
    assert json.loads((recorded / "model.json").read_text())["sampling"]["preset"] == "sde-15"


def test_unknown_preset_fails_at_export_and_leaves_nothing(demo_folder, tmp_path):
    dest = tmp_path / "vgt-demo"
    with pytest.raises(ValueError, match="sampling.preset is 'sde-7'"):
        export_demo_folder(demo_folder, dest, dtype="fp32", sampling={"preset": "sde-7"})
    assert not any(tmp_path.iterdir())  # neither the folder nor its temporary copy


def test_pipeline_exposes_it_and_a_model_without_one_has_none(recorded, demo_folder):
    from vgt_impl.pipeline import VGTPipeline

    assert VGTPipeline.from_pretrained(recorded).default_preset == "sde-15"
    assert VGTPipeline.from_pretrained(demo_folder).default_preset is None
    with pytest.raises(ValueError, match="default_preset 'fast-2'"):
        VGTPipeline(None, None, default_preset="fast-2")


@pytest.mark.parametrize("flags, steps", [([], 15), (["--preset", "reference"], 30), (["--steps", "4"], 4)])
def test_cli_generate_follows_the_record_unless_told(recorded, tmp_path, monkeypatch, flags, steps):
    from vgt_impl.cli import main
    from vgt_impl.pipeline import VGTPipeline

    seen = {}
    original = VGTPipeline.generate

    def spy(self, *a, **kw):
        seen.update(kw)
        return original(self, *a, **dict(kw, num_flow_steps=2))  # the tiny model: only the options matter

    monkeypatch.setattr(VGTPipeline, "generate", spy)
    out = tmp_path / "x.png"
    assert main(["generate", "a red circle", "--ar", str(recorded), "--seed", "0", "--out", str(out), *flags]) == 0
    assert seen["num_flow_steps"] == steps and seen["sampler"] == "sde" and seen["acc_ratio"] == 1
    assert out.is_file()


def test_node_preset_auto_is_the_record_else_the_widgets():
    from comfyui_vgt.generate import sampling_options

    widgets = dict(steps=7, sampler="ode", group_schedule="equal", time_grid="uniform", time_shift=1.0, compile=False)
    auto = sampling_options(preset="auto", recorded="sde-15", **widgets)
    assert auto == dict(preset_options("sde-15"), compile=False)
    none = sampling_options(preset="auto", recorded=None, **widgets)
    assert (none["num_flow_steps"], none["sampler"], none["time_grid"]) == (7, "ode", "uniform")
    custom = sampling_options(preset="custom", recorded="sde-15", **widgets)
    assert custom == none  # custom: the widgets, whatever the model records


def _ae_folder(root, tensors, config, change: str):
    """A VGT-AE folder with the demo folder's embedded VGT-AE, the weights under ``change`` shifted by 0.5."""
    from vgt_impl.checkpoints import save_converted

    root.mkdir()
    ae = {k[len("ae."):]: v.clone() + (0.5 if k.startswith("ae." + change) else 0) for k, v in tensors.items()
          if k.startswith("ae.")}
    save_converted(root / "model.safetensors", ae, {"decoder_config": config["ae"]["decoder_config"]})
    return root


def test_export_swaps_in_a_decoder_tuned_on_the_same_latents(demo_folder, tmp_path):
    from safetensors.torch import load_file

    from vgt_impl.checkpoints import converted_config

    weights = demo_folder / "model.safetensors"
    tensors, config = load_file(str(weights)), converted_config(weights)
    tuned = _ae_folder(tmp_path / "tuned", tensors, config, "decoder.")
    out = export_demo_folder(demo_folder, tmp_path / "out", dtype="fp32", decoder=tuned)
    new = load_file(str(out / "model.safetensors"))
    changed = {k for k in tensors if not torch.equal(new[k], tensors[k])}
    assert changed and all(k.startswith("ae.decoder.") for k in changed)
    assert len(changed) == sum(k.startswith("ae.decoder.") and v.is_floating_point() for k, v in tensors.items())
    moved = _ae_folder(tmp_path / "moved", tensors, config, "down_mlp.")  # another latent space
    with pytest.raises(ValueError, match="latent path differs from the model's \\(down_mlp"):
        export_demo_folder(demo_folder, tmp_path / "bad", dtype="fp32", decoder=moved)
    assert not (tmp_path / "bad").exists() and not (tmp_path / ".tmp_bad").exists()
