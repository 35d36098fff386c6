"""Input definitions shared by the VGT nodes (stable names: saved workflows depend on them)."""

from __future__ import annotations

from ..comfyui_vgt import types as T

CATEGORY = "VGT"
MAX_SIZE = 1792  # 64 x 64 query grid x 28 px
ORDERS = ["auto", "random", "raster", "center_out", "checkerboard"]  # auto: the order the model was trained on


def sampling_inputs() -> dict:
    """Seed, guidance and decoding options common to the sampler and the editing nodes."""
    return {
        "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                         "tooltip": "Seed of the flow-matching noise and of the random token order (same image on any device)."}),
        "cfg": ("FLOAT", {"default": 4.5, "min": 1.0, "max": 20.0, "step": 0.1,
                          "tooltip": "Classifier-free guidance on the first token group; 1 disables guidance (faster)."}),
        "cfg_schedule": (["linear", "constant"], {"default": "linear",
                         "tooltip": "linear: guidance decays towards 1 over the token groups (the reference default); constant: same guidance throughout."}),
        "steps": ("INT", {"default": 30, "min": 2, "max": 200,
                          "tooltip": "Flow-matching steps per token group (the reference samples with 30-100)."}),
        "parallel_tokens": ("INT", {"default": 4, "min": 1, "max": 4096,
                                    "tooltip": "acc_ratio: tokens decoded in parallel per LLM step. 1 = one token at a time (best quality); 16 is about 10x faster."}),
        "order": (ORDERS, {"default": "auto",
                           "tooltip": "Order in which latent tokens are generated. auto: the order the model was trained on (random for the VGT releases, which work in any order)."}),
    }


def model_input() -> dict:
    return {"model": (T.VGT_MODEL, {"tooltip": "The VGT model from Load VGT Model."})}


def positive_input() -> dict:
    return {"positive": (T.VGT_CONDITIONING, {"tooltip": "The prompt, from VGT Text Encode."})}


def optional_inputs() -> dict:
    from vgt_impl.integrators import GRIDS, SAMPLERS
    from vgt_impl.orders import GROUP_SCHEDULES
    from vgt_impl.presets import PRESETS

    return {
        "negative": (T.VGT_CONDITIONING, {"tooltip": "Optional negative prompt; by default the official unconditional prompt."}),
        "sampler": (list(SAMPLERS), {"default": "sde", "tooltip": "Flow-head integrator. sde: the reference (Euler-Maruyama); ode: Euler, deterministic given the initial noise; ab2 / dpmpp_2m: second-order ODE at one evaluation per step (fewer steps for the same accuracy); sde_ab2: the SDE with a second-order drift; heun: second order, two evaluations per step."}),
        "mode": (["reference", "corrected"], {"default": "reference",
                 "tooltip": "reference reproduces the official code exactly; corrected masks prompt padding in every step (batch-independent results)."}),
        "preview": ("BOOLEAN", {"default": True, "tooltip": "Show the image filling in while tokens are generated (decodes a few times per run)."}),
        "group_schedule": (list(GROUP_SCHEDULES), {"default": "equal",
                           "tooltip": "Sizes of the token groups for the same number of LLM calls (set by parallel_tokens). equal: the reference; cosine (MaskGIT/MAR) and ramp: small groups first, larger ones once more of the image is known."}),
        "time_grid": (list(GRIDS), {"default": "reference",
                      "tooltip": "Flow time grid per token. reference: the official grid with a final step of 0.04; uniform: equal steps (better for few steps)."}),
        "time_shift": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.1,
                       "tooltip": "Warps the time grid: above 1 puts more steps near the noise end, 1 keeps it."}),
        "preset": (["auto", "custom", *PRESETS], {"default": "auto",
                   "tooltip": "auto: the preset the model records as its best measured sampling (vgt-demo does), else custom. custom: use steps, sampler, time_grid, time_shift and group_schedule as set. A preset sets those five at once (reference = the official sampler); compare presets at the same parallel_tokens."}),
        "compile": ("BOOLEAN", {"default": False,
                    "tooltip": "Static KV cache + torch.compile of the per-group step (CUDA graphs on CUDA). The first run of each size compiles (slow); later runs reuse it. Same results within float rounding."}),
    }
