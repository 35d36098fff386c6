"""One process of the distributed training test: train a tiny run from a JSON config, save the final weights.

Run as ``python -m torch.distributed.run --nproc_per_node 2 training_dist_worker.py CONFIG.json OUT.safetensors``
(or plainly for the single-process reference). FSDP2 is picked through accelerate's environment variables.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)


def main() -> None:
    from vgt_impl.training.config import build_run_config
    from vgt_impl.training.loop import Trainer, _full

    raw = json.loads(Path(sys.argv[1]).read_text())
    trainer = Trainer(build_run_config(raw))
    trainer.train()
    state = {k: _full(v).detach().float().cpu().contiguous() for k, v in trainer.task.state_dict().items()
             if k.startswith("ar.")}
    ema = {"ema." + k: _full(v).detach().float().cpu().contiguous() for k, v in trainer.ema.shadow.items()}
    if trainer.accelerator.is_main_process:
        from safetensors.torch import save_file

        save_file({**state, **ema}, sys.argv[2])
    trainer.close()


if __name__ == "__main__":
    main()
