"""Named sampling presets: a flow-head integrator, its steps and time grid, and a token-group schedule.

A preset changes how the image is sampled, never the model or ``acc_ratio`` (the number of LLM calls): compare a
preset with ``reference`` at the same ``acc_ratio``. ``reference`` is the official sampler. The others spend fewer
flow-head evaluations (NFE) per token group; which of them keeps the reference's quality on a given model is measured
with ``vgt bench --sweep`` and ``vgt eval --compare-to`` (shapes-GenEval on the demo model), not assumed here;
``fast`` is the one that passed (README, "Quality sweep").

Use: ``pipe.generate(prompts, acc_ratio=4, **preset_options("ab2-10"))``; ``vgt generate --preset ab2-10``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Preset:
    sampler: str  # integrators.SAMPLERS name
    num_flow_steps: int  # grid steps per token group
    time_grid: str = "reference"  # "reference" or "uniform"
    time_shift: float = 1.0  # > 1: more steps near the noise end
    group_schedule: str = "equal"  # orders.GROUP_SCHEDULES name

    def options(self) -> dict:
        """Keyword arguments of ``VGTPipeline.generate``."""
        return asdict(self)

    def nfe(self) -> int:
        from .integrators import get_sampler

        return get_sampler(self.sampler).nfe(self.num_flow_steps)


PRESETS: dict[str, Preset] = {
    "reference": Preset("sde", 30),  # the official sampler: 30 Euler-Maruyama steps, equal groups
    # The fewest evaluations measured not to lose quality on vgt-demo: the reference SDE on its own grid with 10 steps
    # scored 0.251 vs 0.178 (+0.073, paired s.e. 0.030; 124 prompts x 4 images, acc_ratio 1). README, "Quality sweep".
    "fast": Preset("sde", 10),
    "sde-15": Preset("sde", 15),  # the same SDE, half the evaluations
    "sde_ab2-12": Preset("sde_ab2", 12, "uniform"),  # SDE with a second-order drift
    "ab2-10": Preset("ab2", 10, "uniform"),  # second-order ODE, 1 evaluation per step
    "ab2-8-shift2": Preset("ab2", 8, "uniform", 2.0),  # fewer steps, more of them near the noise end
    "ab2-10-cosine": Preset("ab2", 10, "uniform", group_schedule="cosine"),
}


def preset_options(name: str) -> dict:
    """``generate`` keyword arguments of a named preset."""
    if name not in PRESETS:
        raise ValueError(f"preset={name!r}: expected one of {tuple(PRESETS)}")
    return PRESETS[name].options()
