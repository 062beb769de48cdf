"""diffusers' `scheduler_config.json` as the project reads it: `SchedulerConfig` (the fields that
change the numbers, with each diffusers scheduler class's defaults for the fields a config
lacks) and the names it validates. The schedules and samplers themselves are
diffusion/schedulers.py (which imports these names, so `schedulers.SchedulerConfig` works too);
the format lives here, beside the other diffusers layouts, so that convert/sdxl_pipeline.py reads
a whole SDXL checkpoint without importing diffusion/.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from instant3d_jax import errors

SCHEDULERS = ("ddim", "euler", "euler_ancestral", "dpmpp_2m")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")

# stabilityai/stable-diffusion-xl-base-1.0/scheduler/scheduler_config.json (EulerDiscrete).
SDXL_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "timestep_spacing": "leading",
    "steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False,
    "interpolation_type": "linear", "use_karras_sigmas": False, "trained_betas": None,
}


# diffusers scheduler options this module implements at one value only; a config asking for
# another must fail rather than sample differently. (DPM-Solver++ here is diffusers'
# DPMSolverMultistepScheduler default: 2M, midpoint, lower-order final step, final sigma 0.)
_FIXED_OPTIONS = {
    "trained_betas": None, "rescale_betas_zero_snr": False, "thresholding": False,
    "use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False,
    "use_flow_sigmas": False, "interpolation_type": "linear", "timestep_type": "discrete",
    "algorithm_type": "dpmsolver++", "solver_order": 2, "solver_type": "midpoint",
    "lower_order_final": True, "euler_at_final": False, "final_sigmas_type": "zero",
    "use_lu_lambdas": False, "variance_type": None,
}


# What each diffusers scheduler class takes for a key its config lacks: the defaults of its
# `__init__` (diffusers 0.42.1, scheduling_ddim.py, scheduling_euler_discrete.py,
# scheduling_euler_ancestral_discrete.py, scheduling_dpmsolver_multistep.py), which is what
# `<Class>.from_config(cfg)` gives. A key the class does not take is not read by that sampler.
_COMMON_DEFAULTS = {
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
    "beta_schedule": "linear", "prediction_type": "epsilon", "steps_offset": 0,
}
CLASS_DEFAULTS = {
    "ddim": dict(_COMMON_DEFAULTS, timestep_spacing="leading", set_alpha_to_one=True,
                 clip_sample=True, clip_sample_range=1.0),
    "euler": dict(_COMMON_DEFAULTS, timestep_spacing="linspace"),
    "euler_ancestral": dict(_COMMON_DEFAULTS, timestep_spacing="linspace"),
    "dpmpp_2m": dict(_COMMON_DEFAULTS, timestep_spacing="linspace"),
}


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
  """The diffusers scheduler config fields that change the numbers (defaults: SDXL).

  `given`: the fields the source config set (`None`: all of them). A sampler resolves the
  others to its own diffusers class's defaults (`for_kind`), as `<Class>.from_config` does."""
  num_train_timesteps: int = 1000
  beta_start: float = 0.00085
  beta_end: float = 0.012
  beta_schedule: str = "scaled_linear"  # "scaled_linear" | "linear"
  prediction_type: str = "epsilon"
  timestep_spacing: str = "leading"
  steps_offset: int = 1
  set_alpha_to_one: bool = False  # DDIM: ᾱ used after the last step (False: ᾱ_0)
  clip_sample: bool = False  # DDIM only
  clip_sample_range: float = 1.0
  given: frozenset[str] | None = None

  @classmethod
  def from_diffusers(cls, cfg: Mapping[str, Any] | None = None) -> "SchedulerConfig":
    """From a `scheduler_config.json` dict (any diffusers scheduler class). Options this module
    does not implement raise instead of being silently ignored. Keys listed in the config's
    `_use_default_values` count as missing (diffusers' `extract_init_dict` does the same)."""
    cfg = dict(SDXL_SCHEDULER_CONFIG if cfg is None else cfg)
    for k in cfg.pop("_use_default_values", None) or ():
      cfg.pop(k, None)
    for key, ok in _FIXED_OPTIONS.items():
      value = cfg.get(key)
      if value is not None and value != ok:
        raise errors.ConfigError(f"scheduler config {key}={value!r} is not supported (only {ok!r})")
    names = {f.name for f in dataclasses.fields(cls)} - {"given"}
    present = {k: v for k, v in cfg.items() if k in names}
    out = cls(**present, given=None if set(present) == names else frozenset(present))
    for kind in SCHEDULERS:  # validate what any sampler would read
      out.for_kind(kind)
    return out

  def for_kind(self, kind: str) -> "SchedulerConfig":
    """This config as sampler `kind` reads it: missing fields take that diffusers class's
    defaults (`CLASS_DEFAULTS`). The result has every field given."""
    if kind not in SCHEDULERS:
      raise errors.ConfigError(f"scheduler must be one of {SCHEDULERS}, got {kind!r}")
    fill = {} if self.given is None else {k: v for k, v in CLASS_DEFAULTS[kind].items()
                                          if k not in self.given}
    out = dataclasses.replace(self, given=None, **fill)
    if out.beta_schedule not in ("scaled_linear", "linear"):
      raise errors.ConfigError(f"scheduler config beta_schedule must be 'scaled_linear' or 'linear', got "
                       f"{out.beta_schedule!r}")
    if out.prediction_type not in PREDICTION_TYPES:
      raise errors.ConfigError(f"scheduler config prediction_type must be one of {PREDICTION_TYPES}, got "
                       f"{out.prediction_type!r}")
    if out.timestep_spacing not in TIMESTEP_SPACINGS:
      raise errors.ConfigError(f"scheduler config timestep_spacing must be one of {TIMESTEP_SPACINGS}, "
                       f"got {out.timestep_spacing!r}")
    return out

  def to_diffusers(self) -> dict[str, Any]:
    """The given fields as a `scheduler_config.json` dict (missing ones stay missing)."""
    names = [f.name for f in dataclasses.fields(self) if f.name != "given"]
    return {k: getattr(self, k) for k in names if self.given is None or k in self.given}
