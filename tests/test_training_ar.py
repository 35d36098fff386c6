"""VGT-AR training against the reference (teacher-forced parity) and as a whole run: learning, resume, exports."""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import make_images, model_section, one_thread, run_config, tiny_raw

from vgt_impl.training.ar_task import ARTask
from vgt_impl.training.config import DataConfig, RunConfig, build_run_config
from vgt_impl.training.loop import Trainer

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


@pytest.fixture(scope="module")
def qwen3_tiny(tmp_path_factory):
    """The tiny Qwen3-VL base folder (weights + tokenizer) and VGT-AE of the Qwen3-VL tests."""
    from test_qwen3_vl import tiny

    return tiny.__wrapped__(tmp_path_factory)


@lru_cache(maxsize=2)
def _task(root: str, family: str) -> ARTask:
    raw = {"model": dict(model_section(Path(root), family), checkpoint_weights="ema"),
           "data": {"latent_cache": "unused"}}
    return ARTask.build(build_run_config(raw))


def _fresh_task(reference_dir, family: str) -> ARTask:
    import copy

    return copy.deepcopy(_task(str(reference_dir), family))


def test_teacher_forced_parity_internvl3(reference_dir):
    """The recorded reference text2image_loss (InternVL3): loss, LLM inputs/positions, conditions within 1e-5."""
    task = _task(str(reference_dir), "internvl3").eval()
    t = load_file(str(reference_dir / "internvl3" / "cases" / "teacher_forced.safetensors"))
    batch = {"latents": t["image_latents"], "input_ids": t["input_ids"], "attention_mask": t["attention_mask"]}
    draws = {"permutation": t["permutation"], "noise": t["fm_noise"], "u": t["fm_u"]}
    with torch.no_grad():
        out = task.teacher_forced(batch, 0, draws)
    seq = out["sequence"]
    assert torch.equal(seq.position_ids, t["llm_position_ids"])
    torch.testing.assert_close(seq.inputs_embeds, t["llm_inputs_embeds"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["conditions"], t["query_conditions"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["flow"].loss.reshape(1), t["loss_text2image"], atol=1e-5, rtol=0)
    # a different permutation changes the loss: the injected draws are really used
    with torch.no_grad():
        other = task.teacher_forced(batch, 0, dict(draws, permutation=t["permutation"].flip(0)))
    assert abs(other["flow"].loss.item() - out["flow"].loss.item()) > 1e-4


def test_default_draws_are_reproducible_and_scoped(reference_dir):
    from vgt_impl.training.task import BatchInfo

    task = _task(str(reference_dir), "internvl3")
    info = BatchInfo(step=3, micro=0, slots=[8, 9], seed=5)
    n1, u1 = task.draw_flow(info, 16, 32, 2, "cpu")
    n2, u2 = task.draw_flow(info, 16, 32, 2, "cpu")
    assert n1.shape == (2 * 2 * 16, 32) and u1.shape == (64,) and torch.equal(n1, n2) and torch.equal(u1, u2)
    # each sample's draws depend on its slot only: sample 9 alone gets the rows it had in the pair
    n9, _ = task.draw_flow(BatchInfo(step=3, micro=0, slots=[9], seed=5), 16, 32, 2, "cpu")
    torch.testing.assert_close(n9[:16], n1[16:32])
    p_rank0 = task.draw_permutation(16, info)
    p_rank1 = task.draw_permutation(16, BatchInfo(step=3, micro=0, slots=[10, 11], seed=5))
    assert sorted(p_rank0.tolist()) == list(range(16)) and not torch.equal(p_rank0, p_rank1)  # "process" scope
    task.cfg.permutation = "global"
    try:
        assert torch.equal(task.draw_permutation(16, info),
                           task.draw_permutation(16, BatchInfo(step=3, micro=0, slots=[10, 11], seed=5)))
        task.cfg.permutation = "raster"  # a plain raster-order AR: the same order at every step
        assert torch.equal(task.draw_permutation(16, info), torch.arange(16))
    finally:
        task.cfg.permutation = "process"


def test_unknown_permutation_is_refused(reference_dir):
    raw = {"model": dict(model_section(reference_dir, "internvl3"), checkpoint_weights="ema", permutation="zigzag"),
           "data": {"latent_cache": "unused"}}
    with pytest.raises(ValueError, match="permutation='zigzag'.*process, global or raster"):
        ARTask.build(build_run_config(raw))


def test_trainable_parts(reference_dir):
    ivl, qwen = _task(str(reference_dir), "internvl3"), _task(str(reference_dir), "qwen25vl")
    for task in (ivl, qwen):
        names = {n for n, p in task.named_parameters() if p.requires_grad}
        assert not any(n.startswith("ae.") for n in names)  # VGT-AE frozen
        assert {"ar.queries.query_grid", "ar.queries.pos_grid", "ar.image_in_projector.weight",
                "ar.image_out_projector.weight", "ar.flow_head.input_proj.weight", "ar.llm.norm.weight"} <= names
        assert not any("lm_head" in n for n in task.state_dict())
    # InternVL3's LLM has an untied text head: its embeddings train; Qwen2.5-VL ties them: frozen, as the reference
    assert ivl.ar.llm.embed_tokens.weight.requires_grad and not qwen.ar.llm.embed_tokens.weight.requires_grad
    opt_groups = __import__("vgt_impl.training.optim", fromlist=["x"]).build_optimizer(
        ivl.param_groups("main"), __import__("vgt_impl.training.config", fromlist=["x"]).OptimConfig(), torch.device("cpu"))
    for g in opt_groups.param_groups:  # weight decay on >= 2-D tensors only
        assert all((p.ndim >= 2) == (g["weight_decay"] > 0) for p in g["params"])


def test_qwen_family_trains(reference_dir):
    """Qwen2.5-VL: 2-D positions act as three identical M-RoPE rows, shapes hold, and the loss falls."""
    task = _fresh_task(reference_dir, "qwen25vl").train()
    g = torch.Generator().manual_seed(0)
    latents = torch.nn.functional.layer_norm(torch.randn(4, 32, 3, 3, generator=g).permute(0, 2, 3, 1), (32,))
    latents = latents.permute(0, 3, 1, 2)
    ids = torch.randint(0, 500, (4, 12), generator=g)
    mask = torch.ones(4, 12, dtype=torch.bool)
    mask[2:, 9:] = False
    batch = {"latents": latents, "input_ids": ids, "attention_mask": mask}
    out = task.teacher_forced(batch, 0)
    seq = out["sequence"]
    n_start = task.start_ids.numel()
    assert n_start == 2  # Qwen has no <img> token: two BPE pieces
    assert seq.inputs_embeds.shape == (4, 12 + n_start + 2 * 9, 64) and out["conditions"].shape == (4, 9, 64)
    assert seq.position_ids[2, 8:12].tolist() == [8, 8, 8, 8] and seq.position_ids[2, 12].item() == 9
    with torch.no_grad():
        h2 = task.ar.llm(inputs_embeds=seq.inputs_embeds, attention_mask=seq.attention_mask,
                         position_ids=seq.position_ids).last_hidden_state
        h3 = task.ar.llm(inputs_embeds=seq.inputs_embeds, attention_mask=seq.attention_mask,
                         position_ids=seq.position_ids[None].expand(3, -1, -1)).last_hidden_state
    torch.testing.assert_close(h2, h3, atol=1e-6, rtol=0)
    opt = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(30):
        loss, _ = task.loss("main", batch, 0)  # same draws every step: a fixed objective
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.fixture(scope="module")
def learned_run(reference_dir, tmp_path_factory):
    """8 tiny images, 100 steps of the tiny InternVL3 model from its fixture checkpoint (a few seconds)."""
    tmp = tmp_path_factory.mktemp("ar_learn")
    images = make_images(tmp / "images", 8)
    raw = tiny_raw(reference_dir, tmp / "run", {"source": [str(images)]},
                   loop={"max_steps": 100, "batch_size": 8, "log_every": 10, "save_every": 100, "sample_every": 100,
                         "ema": {"momentum": 0.05, "start_step": 50}},
                   optim={"main": {"lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 10}},
                   model={"cfg_dropout": 0.0})
    trainer = Trainer(run_config(raw))
    folder = trainer.train()
    rows = [json.loads(x) for x in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    return trainer, folder, rows


def test_learning_loss_falls_by_half(learned_run):
    trainer, folder, rows = learned_run
    assert rows[0]["step"] == 10 and rows[-1]["step"] == 100
    first, last = rows[0]["loss/flow"], rows[-1]["loss/flow"]
    assert last <= 0.5 * first, [r["loss/flow"] for r in rows]
    assert (trainer.run_dir / "samples" / "step_0000100.png").is_file()
    assert (trainer.run_dir / "state" / "step_0000100" / "trainer_state.json").is_file()


def test_exported_folder_loads_and_generates(learned_run):
    """The exported model folder (EMA weights) opens with no other argument and generates what the EMA generates."""
    from vgt_impl import VGTAutoencoder, VGTPipeline
    from vgt_impl.cli import main

    trainer, folder, _ = learned_run
    assert folder == trainer.run_dir / "models" / "step_0000100"
    assert {"model.safetensors", "model.json", "config.json", "tokenizer.json", "ae_base"} <= {p.name for p in folder.iterdir()}
    cfg = json.loads((folder / "model.json").read_text())
    assert cfg["family"] == "internvl3" and cfg["ae"]["decoder_config"]["decoder_block_out_channels"] == [8, 8, 8, 16, 16, 32]
    pipe = VGTPipeline.from_pretrained(folder, dtype=torch.float32)
    ema = trainer.ema.shadow
    torch.testing.assert_close(pipe.ar.flow_head.input_proj.weight, ema["ar.flow_head.input_proj.weight"])
    torch.testing.assert_close(pipe.ar.llm.layers[1].mlp.up_proj.weight, ema["ar.llm.layers.1.mlp.up_proj.weight"])
    kw = dict(height=112, width=112, num_flow_steps=3, acc_ratio=4, cfg_scale=2.0)
    out = pipe.generate(["a red square on a blue background"], generator=torch.Generator().manual_seed(1), **kw)
    with trainer._ema_weights():
        ref = trainer.task.pipeline().generate(["a red square on a blue background"],
                                               generator=torch.Generator().manual_seed(1), **kw)
    torch.testing.assert_close(out.latents, ref.latents, atol=1e-4, rtol=0)
    assert out.images.shape == (1, 3, 112, 112) and torch.isfinite(out.images).all()
    # the ComfyUI loaders' call: the file, the folder as base model (and as the VGT-AE's), the built-in decoder choice
    comfy = VGTPipeline.from_pretrained(folder / "model.safetensors", base_model=folder, ae_base_model=folder,
                                        decoder_config=None, dtype=torch.float32)
    again = comfy.generate(["a red square on a blue background"], generator=torch.Generator().manual_seed(1), **kw)
    torch.testing.assert_close(again.images, out.images, atol=1e-5, rtol=0)
    ae = VGTAutoencoder.from_pretrained(folder)
    img = torch.rand(1, 3, 56, 56) * 2 - 1
    torch.testing.assert_close(ae.encode(img), trainer.task.ae.encode(img), atol=1e-5, rtol=0)
    png = folder.parent / "cli.png"
    assert main(["generate", "a red square", "--ar", str(folder), "--size", "112", "--steps", "2",
                 "--acc-ratio", "8", "--seed", "0", "--dtype", "fp32", "--device", "cpu", "--out", str(png)]) == 0
    assert png.is_file()


def _short_run(reference_dir, images: Path, run_dir: Path, steps: int, **loop):
    raw = tiny_raw(reference_dir, run_dir, {"source": [str(images)]},
                   loop=dict({"max_steps": steps, "batch_size": 2, "grad_accum": 2, "log_every": 1, "save_every": 3},
                             **loop),
                   optim={"main": {"lr": 3e-3, "warmup_steps": 2}}, model={"sample_prompts": []})
    return Trainer(run_config(raw))


def test_resume_continues_exactly(reference_dir, tmp_path):
    """Stop at step 3, resume, run to 6: weights, EMA, optimizer state, learning rates and losses equal a straight run."""
    images = make_images(tmp_path / "images", 6)
    straight = _short_run(reference_dir, images, tmp_path / "a", 6)
    straight.train()
    first = _short_run(reference_dir, images, tmp_path / "b", 3)
    first.train()
    resumed = _short_run(reference_dir, images, tmp_path / "b", 6)
    assert resumed.step == 3
    resumed.train()
    a, b = straight.task.state_dict(), resumed.task.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for k in straight.ema.shadow:
        assert torch.equal(straight.ema.shadow[k], resumed.ema.shadow[k]), k
    from safetensors import safe_open

    with safe_open(str(tmp_path / "b" / "state" / "step_0000003" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "ar.flow_head.input_proj.weight" in keys and not any(k.startswith("ae.") for k in keys)  # frozen: not saved
    sa, sb = straight.optimizers["main"].state_dict(), resumed.optimizers["main"].state_dict()
    for i in sa["state"]:
        assert torch.equal(sa["state"][i]["exp_avg_sq"], sb["state"][i]["exp_avg_sq"])
    rows = lambda d: [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    ra, rb = rows(tmp_path / "a"), rows(tmp_path / "b")
    assert [r["step"] for r in rb] == [1, 2, 3, 4, 5, 6]
    for x, y in zip(ra, rb):
        assert x["loss"] == y["loss"] and x["lr/main"] == y["lr/main"], (x, y)


def test_resume_refuses_another_global_batch(reference_dir, tmp_path):
    images = make_images(tmp_path / "images", 4)
    _short_run(reference_dir, images, tmp_path / "r", 3).train()
    with pytest.raises(ValueError, match="global batch"):
        _short_run(reference_dir, images, tmp_path / "r", 6, grad_accum=1)


def test_config_errors_are_clear(reference_dir, tmp_path):
    with pytest.raises(ValueError, match="did you mean 'max_steps'"):
        build_run_config({"loop": {"max_step": 3}})
    with pytest.raises(ValueError, match="loop.batch_size: expected an integer"):
        build_run_config({"loop": {"batch_size": "four"}})
    with pytest.raises(ValueError, match="model.init=checkpoint needs model.checkpoint"):
        ARTask.build(RunConfig(model=build_run_config({}).model, data=DataConfig()))
    with pytest.raises(ValueError, match="no optim.main"):
        raw = tiny_raw(reference_dir, tmp_path / "x", {"latent_cache": "x"})
        raw["optim"] = {"other": {}}
        Trainer(run_config(raw))


@pytest.mark.parametrize("family", ["qwen25vl", "internvl3"])
def test_new_model_from_base_weights(reference_dir, tmp_path, family):
    """init=base: the base VLM's first layer_ratio LLM layers with their weights, new parts as the reference inits them;
    it trains, and its export loads with the kept layer count."""
    from vgt_impl import VGTPipeline
    from vgt_impl.backbones.base_weights import load_base_weights

    m = model_section(reference_dir, family)
    ae = reference_dir / family / "ae" / ("vgt_ae_qwen25vl.pth" if family == "qwen25vl" else "vgt_ae_internvl3.pth")
    model = {"init": "base", "checkpoint": None, "ae_checkpoint": str(ae), "layer_ratio": 0.5, "head_dim": 32,
             "head_layers": 2, "query_grid": [6, 6], "sample_prompts": []}
    images = make_images(tmp_path / "images", 4)
    raw = tiny_raw(reference_dir, tmp_path / "run", {"source": [str(images)], "image_size": 84}, family,
                   loop={"max_steps": 4, "batch_size": 2, "save_every": 100}, model=model)
    assert raw["model"]["base_model"] == m["base_model"]
    trainer = Trainer(run_config(raw))
    ar = trainer.task.ar
    base = load_base_weights(m["base_model"], "llm", num_layers=len(ar.llm.layers))
    assert len(ar.llm.layers) == (2 if family == "qwen25vl" else 1)  # int(4 * 0.5) / int(2 * 0.5)
    for k, v in base.items():
        assert torch.equal(ar.llm.state_dict()[k], v.float()), k
    assert torch.count_nonzero(ar.flow_head.final_layer.linear.weight) == 0  # zero-initialised output
    assert abs(ar.queries.query_grid.std().item() - ar.config.hidden_size ** -0.5) < 0.02
    folder = trainer.train()
    pipe = VGTPipeline.from_pretrained(folder, dtype=torch.float32)
    assert len(pipe.ar.llm.layers) == len(ar.llm.layers) and pipe.ae is not None
    assert pipe.default_order == "random"  # VGT's random orders: nothing recorded, the release default
    out = pipe.generate(["a cat"], height=56, width=56, num_flow_steps=2, acc_ratio=4, cfg_scale=1.0,
                        generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 3, 56, 56)


def test_repa_is_optional_and_adds_its_term(reference_dir, tmp_path):
    """REPA off by default; on, the loss adds weight x (-cosine) of a flow-head block's projected features against a
    plug-in feature model, the projector trains, and neither the feature model nor the projector is exported."""
    from vgt_impl.training.losses import repa_loss
    from vgt_impl.training.repa import patch_features

    images = make_images(tmp_path / "images", 2)
    raw = tiny_raw(reference_dir, tmp_path / "run", {"source": [str(images)]},
                   model={"repa": {"weight": 0.5, "model": "training_helpers:tiny_feature_model", "image_size": 32,
                                   "projector_dim": 24}, "sample_prompts": []},
                   loop={"max_steps": 2, "batch_size": 2, "save_every": 100})
    trainer = Trainer(run_config(raw))
    task = trainer.task
    assert task.repa_model is not None and not any(p.requires_grad for p in task.repa_model.parameters())
    assert {n for n, _ in task.ema_parameters()} == {n for n, p in task.named_parameters()
                                                     if p.requires_grad and n.startswith("ar.")}
    batch = next(trainer._batches(0))
    out = task.teacher_forced(batch, 0)
    assert task.repa_depth() == 2  # max(2, layers // 2) with 2 head blocks
    target = patch_features(task.repa_model, batch["pixels"], 32, 4, 4)
    expected = repa_loss(task.repa_projector(out["flow"].features), target)
    torch.testing.assert_close(out["repa"], expected)
    loss, metrics = task.loss("main", batch, 0)
    torch.testing.assert_close(loss, out["flow"].loss + 0.5 * out["repa"])
    before = task.repa_projector[0].weight.detach().clone()
    folder = trainer.train()
    assert not torch.equal(before, task.repa_projector[0].weight)
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert not any("repa" in k for k in f.keys())
    off = build_run_config({"model": {}}).model.repa
    assert off.weight == 0.0


def test_qwen3_vl_new_model_trains(tmp_path, qwen3_tiny):
    """A third family through the same task: a new VGT-AR from a tiny Qwen3-VL base with weights (its own image-start
    token, latent stride from the vision config) trains, and its export loads and generates. This run is a plain
    raster-order AR: its export records the order, and sampling uses it unless told otherwise."""
    from vgt_impl import VGTPipeline

    images = make_images(tmp_path / "images", 4)
    raw = {"task": "ar", "data": {"source": [str(images)], "image_size": 56, "crop": "center"},
           "loop": {"output_dir": str(tmp_path / "run"), "max_steps": 3, "batch_size": 2, "mixed_precision": "no",
                    "log_every": 1, "log_with": [], "save_every": 100, "num_workers": 0, "export_dtype": "fp32",
                    "ema": {"start_step": 0, "momentum": 0.5}},
           "optim": {"main": {"lr": 1e-3, "warmup_steps": 0}},
           "model": {"init": "base", "base_model": str(qwen3_tiny["base"]), "ae_checkpoint": str(qwen3_tiny["ae"]),
                     "head_dim": 32, "head_layers": 2, "query_grid": [4, 4], "sample_prompts": [],
                     "permutation": "raster"}}
    trainer = Trainer(run_config(raw))
    task = trainer.task
    tok = task.tokenizer
    assert tok.convert_ids_to_tokens(task.start_ids.tolist()) == ["<|vision_start|>"]
    assert task.ar.latent_stride == 28 and task.ar.family == "qwen3_vl"
    folder = trainer.train()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(math.isfinite(r["loss"]) for r in rows)
    pipe = VGTPipeline.from_pretrained(folder, dtype=torch.float32)
    out = pipe.generate(["a red circle"], height=56, width=56, num_flow_steps=2, acc_ratio=4, cfg_scale=2.0,
                        generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 3, 56, 56) and pipe.ar.family == "qwen3_vl"
    kw = dict(height=56, width=56, num_flow_steps=2, acc_ratio=1, cfg_scale=2.0, decode=False)
    ras = pipe.generate(["a red circle"], generator=torch.Generator().manual_seed(0), **kw)
    rnd = pipe.generate(["a red circle"], order="random", generator=torch.Generator().manual_seed(0), **kw)
    assert pipe.default_order == "raster" and ras.groups == [[0], [1], [2], [3]]
    from vgt_impl.cli import default_acc_ratio

    assert default_acc_ratio(str(folder)) == 1  # `vgt generate` samples it one token per step
    assert rnd.groups != ras.groups  # an explicit order still wins
    from safetensors.torch import save_file

    from vgt_impl.checkpoints import converted_config

    config = converted_config(folder / "model.safetensors")
    config["sampling"] = {"order": "zigzag"}
    save_file(load_file(folder / "model.safetensors"), folder / "model.safetensors",
              {"format": "pt", "vgt_config": json.dumps(config)})
    with pytest.raises(ValueError, match="sampling.order is 'zigzag'"):
        VGTPipeline.from_pretrained(folder, dtype=torch.float32)


def test_gradient_checkpointing_keeps_gradients(reference_dir):
    """loop.gradient_checkpointing recomputes the LLM blocks in backward; the loss and gradients do not change."""
    task = _fresh_task(reference_dir, "internvl3").train()
    t = load_file(str(reference_dir / "internvl3" / "cases" / "teacher_forced.safetensors"))
    batch = {"latents": t["image_latents"], "input_ids": t["input_ids"], "attention_mask": t["attention_mask"]}
    draws = {"permutation": t["permutation"], "noise": t["fm_noise"], "u": t["fm_u"]}

    def grads():
        task.zero_grad(set_to_none=True)
        loss, _ = task.loss("main", batch, 0, draws)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in task.named_parameters() if p.grad is not None}

    plain_loss, plain = grads()
    task.enable_gradient_checkpointing()
    assert task.ar.llm.gradient_checkpointing
    ckpt_loss, ckpt = grads()
    assert torch.equal(plain_loss, ckpt_loss) and plain.keys() == ckpt.keys()
    for n in plain:
        torch.testing.assert_close(ckpt[n], plain[n], atol=1e-6, rtol=1e-5)
