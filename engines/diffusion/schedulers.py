"""Sampler names (as AUTOMATIC1111 spells them) → diffusers schedulers.

Each scheduler is built ``from_config`` of the model's own scheduler
config, so the model's beta schedule, prediction type and timestep spacing
carry over and only the sampling algorithm changes. A fresh scheduler is
made for every image: schedulers keep per-run state (step index, the
multistep history of DPM++), and sharing one between runs would leak it.

Both backends use these: the ONNX engine steps the same diffusers
scheduler on torch tensors, which is what makes its images match the
PyTorch engine's.
"""

from __future__ import annotations

from engines.diffusion.types import SCHEDULER_NAMES

# name → (diffusers class, overrides applied on top of the model's config)
_TABLE: dict[str, tuple[str, dict]] = {
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "DPM++ 2M Karras": (
        "DPMSolverMultistepScheduler",
        {"use_karras_sigmas": True, "algorithm_type": "dpmsolver++", "solver_order": 2},
    ),
    "DDIM": ("DDIMScheduler", {}),
    "LCM": ("LCMScheduler", {}),
}
assert tuple(_TABLE) == SCHEDULER_NAMES
DISTILLED_ONLY = frozenset({"LCM"})

# Keys that only make sense for the scheduler class that wrote them; dropping them avoids
# carrying, say, PNDM's skip_prk_steps or the LCM-specific settings into Euler.
_CLASS_SPECIFIC = {"skip_prk_steps", "set_alpha_to_one", "original_inference_steps"}


def usable_schedulers(distilled: bool) -> tuple[str, ...]:
    """The sampler names to offer for a model: LCM only for LCM/Turbo models."""
    return tuple(n for n in SCHEDULER_NAMES if distilled or n not in DISTILLED_ONLY)


def scheduler_problems(name: str, distilled: bool, model_name: str = "this model") -> list[str]:
    """Problems with using sampler ``name`` on a model (empty when fine)."""
    if name not in _TABLE:
        return [f"unknown sampler {name!r}; choose one of: {', '.join(SCHEDULER_NAMES)}"]
    if name in DISTILLED_ONLY and not distilled:
        return [
            f"the LCM sampler only works with LCM or Turbo models, and {model_name} is not one "
            "(it would give a blurry image); choose Euler, Euler a, DPM++ 2M Karras or DDIM"
        ]
    return []


def make_scheduler(name: str, base_config: dict):
    """A fresh scheduler for ``name``, derived from the model's scheduler config."""
    import diffusers

    class_name, overrides = _TABLE[name]
    config = {k: v for k, v in dict(base_config).items() if k not in _CLASS_SPECIFIC}
    if config.get("_class_name") == class_name:
        config = dict(base_config)  # same class: keep every setting the model ships with
    config.update(overrides)
    return getattr(diffusers, class_name).from_config(config)


def extra_step_kwargs(scheduler, generator) -> dict:
    """The optional ``step()`` arguments this scheduler accepts (as the diffusers pipelines pass them)."""
    import inspect

    params = set(inspect.signature(scheduler.step).parameters)
    kwargs = {}
    if "generator" in params:
        kwargs["generator"] = generator
    if "eta" in params:
        kwargs["eta"] = 0.0
    return kwargs
