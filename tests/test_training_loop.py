"""The training loop and its configs: schedules, EMA, phases, presets, overrides, the CLI, several processes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from training_helpers import make_images, one_thread, tiny_raw

from vgt_impl.training.config import (
    EMAConfig,
    LoopConfig,
    OptimConfig,
    RunConfig,
    apply_overrides,
    build_run_config,
    load_run_config,
    preset_names,
    read_config_file,
)
from vgt_impl.training.loop import Trainer
from vgt_impl.training.optim import EMA, LRSchedule
from vgt_impl.training.task import ParamGroup, TrainTask

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def test_lr_schedule_follows_the_reference():
    """LinearLR(start 1e-5) over 1 % of the steps, then cosine to min_lr; a phase starting later is offset."""
    s = LRSchedule(OptimConfig(lr=3e-4, min_lr=1e-4, warmup_ratio=0.01), max_steps=100_000)
    assert s.warmup == 1000
    assert s.lr(0) == pytest.approx(3e-4 * 1e-5)
    assert s.lr(500) == pytest.approx(3e-4 * (1e-5 + (1 - 1e-5) * 0.5))
    assert s.lr(1000) == pytest.approx(3e-4)
    assert s.lr(1000 + 99_000 // 2) == pytest.approx(2e-4)
    assert s.lr(100_000) == pytest.approx(1e-4)
    d = LRSchedule(OptimConfig(lr=1e-4, warmup_steps=0, schedule="constant", start_step=30), max_steps=100)
    assert d.lr(29) == 0.0 and d.lr(30) == d.lr(99) == 1e-4
    lin = LRSchedule(OptimConfig(lr=1.0, min_lr=0.0, warmup_steps=0, schedule="linear"), max_steps=10)
    assert [round(lin.lr(i), 3) for i in (0, 5, 10)] == [1.0, 0.5, 0.0]


def test_ema_copies_then_averages_and_swaps_back():
    p = nn.Parameter(torch.zeros(3))
    ema = EMA([("p", p)], EMAConfig(momentum=0.25, start_step=2))
    with torch.no_grad():
        p.fill_(4.0)
    ema.update(0)  # step 0: before the start, a plain copy
    assert ema.shadow["p"].tolist() == [4.0] * 3
    with torch.no_grad():
        p.fill_(8.0)
    ema.update(1)  # step + 1 >= start_step: (1 - m) * 4 + m * 8 = 5
    assert ema.shadow["p"].tolist() == [5.0] * 3
    ema.swap()
    assert p.tolist() == [5.0] * 3 and ema.shadow["p"].tolist() == [8.0] * 3
    ema.swap()
    assert p.tolist() == [8.0] * 3 and ema.shadow["p"].tolist() == [5.0] * 3


class _TwoPhase(TrainTask):
    """A GAN-shaped toy: phase "g" trains a (its loss also reaches b), phase "d" trains b from step 2 at 0.5x lr."""

    name = "two_phase"

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.ones(2))
        self.b = nn.Parameter(torch.ones(2))

    def phase_names(self):
        return ["g", "d"]

    def param_groups(self, phase):
        return [ParamGroup(phase, [("a", self.a)] if phase == "g" else [("b", self.b)], 1.0 if phase == "g" else 0.5)]

    def build_dataset(self, cfg):
        class DS(torch.utils.data.Dataset):
            def __len__(self):
                return 4

            def __getitem__(self, key):
                return {"x": torch.tensor(float(key.index + 1)), "slot": key.slot}

        return DS()

    def collate(self, items):
        return {"x": torch.stack([i["x"] for i in items])}

    def loss(self, phase, batch, step, draws=None):
        x = batch["x"].mean()
        loss = (self.a * self.b * x).sum() if phase == "g" else (self.b * x).sum()
        return loss, {f"loss/{phase}": loss.detach()}


def test_phases_have_their_own_optimizer_start_and_lr_scale(tmp_path, monkeypatch):
    cfg = RunConfig(task="two_phase",
                    loop=LoopConfig(output_dir=str(tmp_path), max_steps=3, batch_size=2, mixed_precision="no",
                                    log_every=1, log_with=[], save_every=100, num_workers=0, ema=EMAConfig(enabled=False),
                                    export_weights="raw"),
                    optim={"g": OptimConfig(lr=0.1, warmup_steps=0, schedule="constant", weight_decay=0.0,
                                            max_grad_norm=None),
                           "d": OptimConfig(lr=0.1, warmup_steps=0, schedule="constant", weight_decay=0.0,
                                            max_grad_norm=None, start_step=2)})
    flush = []
    monkeypatch.setattr(torch, "set_flush_denormal", lambda on: flush.append(on) or True)
    trainer = Trainer(cfg, task=_TwoPhase())
    trainer.task.export = lambda folder, weights: folder
    trainer.train()
    assert flush == [True, False]  # denormals flushed while training (CPU convolution backward), then torch's default
    # by hand: phase g's backward also reaches b, but b's optimizer must see phase d's gradient only
    from vgt_impl.training.data import StepSampler

    order = StepSampler(4, seed=0, batch_size=2)
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    opt_a = torch.optim.AdamW([a], lr=0.1, betas=(0.9, 0.95), weight_decay=0.0)
    opt_b = torch.optim.AdamW([b], lr=0.05, betas=(0.9, 0.95), weight_decay=0.0)
    for step in range(3):
        x = torch.tensor([k.index + 1.0 for k in order.keys(step, 0)]).mean()
        a.grad = (b * x).detach()
        opt_a.step()
        if step >= 2:
            b.grad = torch.full((2,), x.item())
            opt_b.step()
    torch.testing.assert_close(trainer.task.a.detach(), a.detach())
    torch.testing.assert_close(trainer.task.b.detach(), b.detach())
    assert trainer.task.b.tolist() == pytest.approx([0.95, 0.95])  # one Adam step of 0.5 x lr
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert "loss/d" not in rows[0] and "loss/d" in rows[2] and rows[2]["lr/d"] == pytest.approx(0.1)


def test_presets_and_overrides(tmp_path):
    names = preset_names()
    assert {"ar_pretrain", "ar_sft", "ar_tiny", "ar_pretrain_qwen25vl", "ar_sft_internvl3"} <= set(names)
    for name in names:
        raw = read_config_file(name)
        if raw.get("task", "ar") == "ar":
            build_run_config(raw)  # every shipped AR preset is a valid config
    sft = load_run_config("ar_sft_internvl3", ["optim.main.lr=2e-5", "loop.ema.start_step=7", "data.source=[a, b]",
                                               "model.repa.weight=0.5", "loop.log_with=[]"])
    assert sft.optim["main"].lr == 2e-5 and sft.optim["main"].min_lr == 5e-5 and sft.loop.max_steps == 5000
    assert sft.loop.ema.start_step == 7 and sft.data.source == ["a", "b"] and sft.model.time_shift == 1.4
    assert sft.model.repa.weight == 0.5 and sft.optim["main"].betas == (0.9, 0.95) and sft.loop.log_with == []
    own = tmp_path / "my.yaml"
    own.write_text("base: ar_pretrain_qwen25vl\nloop: {grad_accum: 8}\n")
    mine = load_run_config(own)
    assert mine.loop.grad_accum == 8 and mine.model.layer_ratio == 0.5 and mine.optim["main"].lr == 3e-4
    assert load_run_config("ar_tiny").loop.flush_denormal is True  # CPU conv backward: several times faster
    # a bare `no` is a YAML boolean: a string field gets the word back (fp32 training), not "False"
    assert load_run_config("ar_tiny", ["loop.mixed_precision=no"]).loop.mixed_precision == "no"
    own.write_text("base: ar_tiny\nloop: {mixed_precision: no}\n")
    assert load_run_config(own).loop.mixed_precision == "no"
    loop_file = tmp_path / "loop.yaml"
    loop_file.write_text("base: loop.yaml\n")
    with pytest.raises(ValueError, match="includes itself"):
        read_config_file(loop_file)
    with pytest.raises(ValueError, match="not key=value"):
        apply_overrides({}, ["loop.max_steps"])
    with pytest.raises(ValueError, match="unknown config section 'lop'"):
        build_run_config({"lop": {}})


def test_cli_train_runs_and_resumes(reference_dir, tmp_path, capsys):
    """`vgt train ar --config FILE key=value ...` trains, exports; the same command again resumes (nothing to do)."""
    from vgt_impl.cli import main

    images = make_images(tmp_path / "images", 4)
    raw = tiny_raw(reference_dir, tmp_path / "run", {"source": [str(images)]}, model={"sample_prompts": []})
    cfg_file = tmp_path / "run.json"
    cfg_file.write_text(json.dumps(raw))
    args = ["train", "ar", "--config", str(cfg_file), "loop.max_steps=2", "loop.batch_size=2", "loop.save_every=1"]
    assert main(args) == 0
    assert "model folder" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "run" / "state").iterdir()) == ["step_0000001", "step_0000002"]
    assert main(args + ["loop.max_steps=3"]) == 0  # resumes at 2, runs step 3
    assert [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1] == 3
    assert sorted(p.name for p in (tmp_path / "run" / "state").iterdir()) == ["step_0000002", "step_0000003"]
    assert main(["train", "ar", "--config", str(cfg_file), "oops"]) == 2  # one 'error:' line, exit code 2
    assert "error: unrecognized arguments: oops (overrides are key=value)" in capsys.readouterr().err
    assert main(["train", "ar", "--config", "ar_tiny", "--print-config", "loop.max_steps=9"]) == 0
    assert "max_steps: 9" in capsys.readouterr().out


WORKER = Path(__file__).with_name("training_dist_worker.py")


def _start_worker(raw: dict, out: Path, nproc: int) -> subprocess.Popen:
    cfg = out.with_suffix(".json")
    cfg.write_text(json.dumps(raw))
    cmd = [sys.executable, str(WORKER), str(cfg), str(out)]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
               str(29500 + os.getpid() % 1000)] + cmd[1:]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(WORKER.parents[1]))
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]


def test_two_processes_equal_one_process(reference_dir, tmp_path):
    """DDP over 2 CPU processes (gloo), 2 samples each, equals 1 process with the 4-sample batch: after 3 AdamW steps
    every weight and EMA value agrees within 1e-5 (float reduction order and per-process padding differ)."""
    from safetensors.torch import load_file

    images = make_images(tmp_path / "images", 8)
    common = dict(model={"permutation": "global", "sample_prompts": []})
    one = tiny_raw(reference_dir, tmp_path / "one", {"source": [str(images)]},
                   loop={"max_steps": 3, "batch_size": 4, "save_every": 100, "log_every": 1}, **common)
    two = tiny_raw(reference_dir, tmp_path / "two", {"source": [str(images)]},
                   loop={"max_steps": 3, "batch_size": 2, "save_every": 100, "log_every": 1}, **common)
    procs = [_start_worker(one, tmp_path / "one.safetensors", 1), _start_worker(two, tmp_path / "two.safetensors", 2)]
    for proc in procs:
        _wait(proc)
    a, b = load_file(str(tmp_path / "one.safetensors")), load_file(str(tmp_path / "two.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("ema.") for k in a)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, worst
    la = [json.loads(x)["loss"] for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isclose(x, y, abs_tol=1e-5) for x, y in zip(la, lb)) and len(la) == 3
    assert json.loads((tmp_path / "two" / "state" / "step_0000003" / "trainer_state.json").read_text())["num_processes"] == 2
