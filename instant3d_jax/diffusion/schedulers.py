"""Noise schedules and samplers as pure functions (diffusers' DDPM, DDIM, Euler, Euler ancestral
and DPM-Solver++(2M), configured by the same `scheduler_config.json`).

Two halves:
- host side (numpy, float64 then fp32): `SchedulerConfig` (convert/scheduler_config.py, the
  `scheduler_config.json` format), `alphas_cumprod`, and
  `make_schedule(kind, config, num_steps)`, which lays out every per-step coefficient as an array
  so that
- device side: `scale_model_input`, `step`, `add_noise_at_start` are jit-able functions of a step
  *index* `i`, and a whole sampling loop is one `lax.scan` over `i` (the `Schedule` and the
  `SamplerState` are pytrees).
Training helpers (`add_noise`, `velocity`, `training_target`) take integer timesteps.

Numbers match diffusers to fp32 round-off (tests: ≤ 1e-5 relative, step by step).
Samples are any shape; coefficients broadcast from the batch-free scalars of step `i`.
"""
from __future__ import annotations

from instant3d_jax import errors

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

# The scheduler config and the names it validates live with the diffusers formats (convert/).
from instant3d_jax.convert.scheduler_config import (  # noqa: F401 (schedulers.X for callers)
    CLASS_DEFAULTS, PREDICTION_TYPES, SCHEDULERS, SDXL_SCHEDULER_CONFIG, TIMESTEP_SPACINGS,
    SchedulerConfig)


# ----------------------------------------------------------------------------------------------
# Noise schedule (host)
# ----------------------------------------------------------------------------------------------
def betas(config: SchedulerConfig) -> np.ndarray:
  """β_t, t = 0..T-1. "scaled_linear" (SD/SDXL): linear in √β, squared."""
  t = config.num_train_timesteps
  if config.beta_schedule == "scaled_linear":
    return np.linspace(config.beta_start ** 0.5, config.beta_end ** 0.5, t, dtype=np.float64) ** 2
  return np.linspace(config.beta_start, config.beta_end, t, dtype=np.float64)


def alphas_cumprod(config: SchedulerConfig) -> np.ndarray:
  """ᾱ_t = Π_{s≤t} (1 − β_s), float64 (diffusers computes it in fp32; the difference is ~1e-7)."""
  return np.cumprod(1.0 - betas(config))


def spaced_timesteps(config: SchedulerConfig, num_steps: int) -> np.ndarray:
  """Descending timesteps as DDIM/Euler space them (Table 2 of arXiv 2305.08891)."""
  t = config.num_train_timesteps
  if not 0 < num_steps <= t:
    raise errors.ConfigError(f"num_steps must be in [1, {t}], got {num_steps}")
  if config.timestep_spacing == "linspace":
    return np.linspace(0, t - 1, num_steps)[::-1].copy()
  if config.timestep_spacing == "leading":
    ratio = t // num_steps
    return (np.arange(num_steps) * ratio).round()[::-1].astype(np.float64) + config.steps_offset
  ratio = t / num_steps
  return np.round(np.arange(t, 0, -ratio)) - 1


def _dpm_timesteps(config: SchedulerConfig, num_steps: int) -> np.ndarray:
  """DPMSolverMultistep spaces over num_steps + 1 points and drops the last (diffusers)."""
  t = config.num_train_timesteps
  if config.timestep_spacing == "linspace":
    return np.linspace(0, t - 1, num_steps + 1).round()[::-1][:-1].astype(np.int64)
  if config.timestep_spacing == "leading":
    ratio = t // (num_steps + 1)
    return ((np.arange(num_steps + 1) * ratio).round()[::-1][:-1].astype(np.int64)
            + config.steps_offset)
  ratio = t / num_steps
  return np.arange(t, 0, -ratio).round().astype(np.int64) - 1


@flax.struct.dataclass
class Schedule:
  """Per-step coefficients of one sampler for one step count (arrays of length N = steps run).

  `timesteps` is what the model is conditioned on; the rest is sampler-specific (unused fields
  hold zeros). Static fields pick the code path at trace time."""
  timesteps: jax.Array  # [N] float32
  alpha_prod: jax.Array  # [N] ᾱ at step i (DDIM)
  alpha_prod_prev: jax.Array  # [N] ᾱ after step i (DDIM)
  sigma: jax.Array  # [N] σ_i = √((1−ᾱ)/ᾱ) (Euler, DPM)
  sigma_next: jax.Array  # [N] σ_{i+1} (0 after the last step)
  sigma_prev: jax.Array  # [N] σ_{i−1} (DPM second order)
  first_order: jax.Array  # [N] bool: DPM-Solver++ uses its first-order update at step i
  kind: str = flax.struct.field(pytree_node=False, default="ddim")
  prediction_type: str = flax.struct.field(pytree_node=False, default="epsilon")
  eta: float = flax.struct.field(pytree_node=False, default=0.0)
  clip_sample: float | None = flax.struct.field(pytree_node=False, default=None)
  spacing: str = flax.struct.field(pytree_node=False, default="leading")

  @property
  def num_steps(self) -> int:
    return int(self.timesteps.shape[0])

  @property
  def init_noise_sigma(self) -> float:
    """Std of the pure-noise start: √(σ_max² + 1) for Euler with leading spacing, σ_max for
    Euler with linspace/trailing, 1 for DDIM and DPM (diffusers' `init_noise_sigma`)."""
    if self.kind not in ("euler", "euler_ancestral"):
      return 1.0
    s = float(np.max(np.asarray(self.sigma)))
    return s if self.spacing != "leading" else float(np.sqrt(s * s + 1))

  def start_at(self, start: int) -> "Schedule":
    """The schedule from step index `start` on (img2img-style partial denoising)."""
    if not 0 <= start < self.num_steps:
      raise errors.ConfigError(f"start step must be in [0, {self.num_steps}), got {start}")
    arrays = {f.name: getattr(self, f.name)[start:] for f in dataclasses.fields(self)
              if f.metadata.get("pytree_node", True)}
    # DPM-Solver++ restarts its multistep history at the new first step.
    arrays["first_order"] = arrays["first_order"].at[0].set(True)
    return self.replace(**arrays)


def make_schedule(kind: str, config: SchedulerConfig, num_steps: int, *, eta: float = 0.0
                  ) -> Schedule:
  """Lays out the `num_steps` sampling steps of `kind` (one of `SCHEDULERS`) on the host."""
  config = config.for_kind(kind)
  ac = alphas_cumprod(config)
  all_sigmas = np.sqrt((1 - ac) / ac)
  n = num_steps
  z = np.zeros(n)
  f32 = lambda a: jnp.asarray(np.asarray(a, np.float64), jnp.float32)
  common = dict(prediction_type=config.prediction_type, spacing=config.timestep_spacing)
  if kind == "ddim":
    ts = spaced_timesteps(config, n).astype(np.int64)
    prev = ts - config.num_train_timesteps // n
    final = 1.0 if config.set_alpha_to_one else ac[0]
    a_prev = np.where(prev >= 0, ac[np.clip(prev, 0, None)], final)
    return Schedule(f32(ts), f32(ac[ts]), f32(a_prev), f32(z), f32(z), f32(z),
                    jnp.zeros(n, bool), kind=kind, eta=float(eta),
                    clip_sample=config.clip_sample_range if config.clip_sample else None, **common)
  if kind in ("euler", "euler_ancestral"):
    ts = spaced_timesteps(config, n).astype(np.float32).astype(np.float64)
    sig = np.interp(ts, np.arange(len(all_sigmas)), all_sigmas)
    sig = np.concatenate([sig, [0.0]]).astype(np.float32).astype(np.float64)
    return Schedule(f32(ts), f32(z), f32(z), f32(sig[:-1]), f32(sig[1:]), f32(z),
                    jnp.zeros(n, bool), kind=kind, **common)
  # DPM-Solver++ (2M), diffusers defaults: solver_order 2, lower_order_final, final sigma 0.
  ts = _dpm_timesteps(config, n)
  sig = np.interp(ts, np.arange(len(all_sigmas)), all_sigmas)
  sig = np.concatenate([sig, [0.0]]).astype(np.float32).astype(np.float64)
  idx = np.arange(n)
  # First order at step 0 (no history) and at the last step (final sigma 0 → "lower_order_final").
  first = (idx == 0) | (idx == n - 1)
  sig_prev = np.concatenate([[sig[0]], sig[:n - 1]])
  return Schedule(f32(ts), f32(z), f32(z), f32(sig[:-1]), f32(sig[1:]), f32(sig_prev),
                  jnp.asarray(first), kind=kind, **common)


# ----------------------------------------------------------------------------------------------
# Sampling steps (device, jit-able)
# ----------------------------------------------------------------------------------------------
@flax.struct.dataclass
class SamplerState:
  """What a multistep sampler carries between steps (DPM-Solver++: the previous x0 estimate)."""
  prev_x0: jax.Array


def init_state(sample: jax.Array) -> SamplerState:
  return SamplerState(prev_x0=jnp.zeros_like(sample, jnp.float32))


def scale_model_input(schedule: Schedule, i, sample: jax.Array) -> jax.Array:
  """Euler samplers feed the model x / √(σ² + 1); the others feed x unchanged."""
  if schedule.kind in ("euler", "euler_ancestral"):
    s = schedule.sigma[i]
    return (sample / jnp.sqrt(s * s + 1)).astype(sample.dtype)
  return sample


def _x0_eps_alpha(prediction_type, out, x, alpha_prod):
  """(x0, ε) from the model output in the ᾱ parameterisation (DDIM)."""
  a, b = jnp.sqrt(alpha_prod), jnp.sqrt(1 - alpha_prod)
  if prediction_type == "epsilon":
    return (x - b * out) / a, out
  if prediction_type == "v_prediction":
    return a * x - b * out, a * out + b * x
  return out, (x - a * out) / b


def step(schedule: Schedule, state: SamplerState, i, model_output: jax.Array,
         sample: jax.Array, noise: jax.Array | None = None
         ) -> tuple[jax.Array, SamplerState, jax.Array]:
  """One sampler step at index `i` (traced int ok) → (previous sample, new state, x0 estimate).

  `noise` (standard normal, like `sample`) is needed by Euler ancestral and by DDIM with eta > 0,
  and ignored otherwise. Computation in fp32; the result is cast back to `sample.dtype`."""
  dtype = sample.dtype
  x = sample.astype(jnp.float32)
  out = model_output.astype(jnp.float32)
  kind, pt = schedule.kind, schedule.prediction_type
  if kind == "ddim":
    a_t, a_prev = schedule.alpha_prod[i], schedule.alpha_prod_prev[i]
    x0, eps = _x0_eps_alpha(pt, out, x, a_t)
    if schedule.clip_sample is not None:
      x0 = jnp.clip(x0, -schedule.clip_sample, schedule.clip_sample)
    variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    std = schedule.eta * jnp.sqrt(variance)
    prev = jnp.sqrt(a_prev) * x0 + jnp.sqrt(1 - a_prev - std ** 2) * eps
    if schedule.eta > 0:
      if noise is None:
        raise ValueError("DDIM with eta > 0 needs `noise`")
      prev = prev + std * noise.astype(jnp.float32)
    return prev.astype(dtype), state, x0
  s, s_next = schedule.sigma[i], schedule.sigma_next[i]
  if kind in ("euler", "euler_ancestral"):
    if pt == "epsilon":
      x0 = x - s * out
    elif pt == "v_prediction":
      x0 = out * (-s / jnp.sqrt(s * s + 1)) + x / (s * s + 1)
    else:
      x0 = out
    derivative = (x - x0) / s
    if kind == "euler":
      return (x + derivative * (s_next - s)).astype(dtype), state, x0
    if noise is None:
      raise ValueError("euler_ancestral needs `noise`")
    sigma_up = jnp.sqrt(s_next ** 2 * (s ** 2 - s_next ** 2) / s ** 2)
    sigma_down = jnp.sqrt(s_next ** 2 - sigma_up ** 2)
    prev = x + derivative * (sigma_down - s) + noise.astype(jnp.float32) * sigma_up
    return prev.astype(dtype), state, x0
  # DPM-Solver++ in (α_t, σ_t) = (1/√(σ²+1), σ/√(σ²+1)), λ = log α − log σ.
  alpha_sigma = lambda sig: (1 / jnp.sqrt(sig * sig + 1), sig / jnp.sqrt(sig * sig + 1))
  a_s0, s_s0 = alpha_sigma(s)
  a_t, s_t = alpha_sigma(s_next)
  if pt == "epsilon":
    x0 = (x - s_s0 * out) / a_s0
  elif pt == "v_prediction":
    x0 = a_s0 * x - s_s0 * out
  else:
    x0 = out
  # h = λ_t − λ_s0, so e^{−h} = (σ_t α_s0) / (α_t σ_s0); writing it as a ratio keeps the final
  # step (σ_t = 0 → e^{−h} = 0, x_t = x0) finite instead of log(0).
  exp_neg_h = (s_t * a_s0) / (a_t * s_s0)
  first = (s_t / s_s0) * x - a_t * (exp_neg_h - 1) * x0
  a_s1, s_s1 = alpha_sigma(schedule.sigma_prev[i])
  lam = lambda a, sg: jnp.log(a) - jnp.log(sg)
  safe_st = jnp.where(s_t > 0, s_t, 1.0)  # only the first-order branch is used when σ_t = 0
  h = lam(a_t, safe_st) - lam(a_s0, s_s0)
  h0 = lam(a_s0, s_s0) - lam(a_s1, s_s1)
  r0 = h0 / h
  d1 = (x0 - state.prev_x0) / jnp.where(schedule.first_order[i], 1.0, r0)
  second = first - 0.5 * (a_t * (exp_neg_h - 1)) * d1
  prev = jnp.where(schedule.first_order[i], first, second)
  return prev.astype(dtype), SamplerState(prev_x0=x0), x0


def add_noise_at_start(schedule: Schedule, x0: jax.Array, noise: jax.Array) -> jax.Array:
  """Noises clean latents `x0` to the level of the schedule's first step (img2img start):
  x0 + σ_0 ε for Euler (its samples live in σ-scaled space), √ᾱ x0 + √(1−ᾱ) ε otherwise."""
  x0 = x0.astype(jnp.float32)
  noise = noise.astype(jnp.float32)
  if schedule.kind in ("euler", "euler_ancestral"):
    return x0 + schedule.sigma[0] * noise
  if schedule.kind == "dpmpp_2m":
    s = schedule.sigma[0]
    return (x0 + s * noise) / jnp.sqrt(s * s + 1)
  a = schedule.alpha_prod[0]
  return jnp.sqrt(a) * x0 + jnp.sqrt(1 - a) * noise


def start_signal_scale(schedule: Schedule) -> jax.Array:
  """The factor multiplying x0 in `add_noise_at_start` (what survives of the init image)."""
  if schedule.kind in ("euler", "euler_ancestral"):
    return jnp.float32(1.0)
  if schedule.kind == "dpmpp_2m":
    return 1 / jnp.sqrt(schedule.sigma[0] ** 2 + 1)
  return jnp.sqrt(schedule.alpha_prod[0])


# ----------------------------------------------------------------------------------------------
# Training (DDPM forward process and loss targets)
# ----------------------------------------------------------------------------------------------
def _bcast(v, x):
  return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def add_noise(alphas_cumprod_: jax.Array, x0: jax.Array, noise: jax.Array,
              timesteps: jax.Array) -> jax.Array:
  """DDPM q(x_t | x0): √ᾱ_t x0 + √(1−ᾱ_t) ε. `timesteps [B]` int; x0, noise `[B, ...]`."""
  a = jnp.asarray(alphas_cumprod_, jnp.float32)[timesteps]
  return _bcast(jnp.sqrt(a), x0) * x0 + _bcast(jnp.sqrt(1 - a), x0) * noise


def velocity(alphas_cumprod_: jax.Array, x0: jax.Array, noise: jax.Array,
             timesteps: jax.Array) -> jax.Array:
  """v-prediction target √ᾱ_t ε − √(1−ᾱ_t) x0 (diffusers `get_velocity`)."""
  a = jnp.asarray(alphas_cumprod_, jnp.float32)[timesteps]
  return _bcast(jnp.sqrt(a), x0) * noise - _bcast(jnp.sqrt(1 - a), x0) * x0


def training_target(prediction_type: str, alphas_cumprod_, x0, noise, timesteps) -> jax.Array:
  """What the denoiser regresses: ε, v, or x0."""
  if prediction_type == "epsilon":
    return noise
  if prediction_type == "v_prediction":
    return velocity(alphas_cumprod_, x0, noise, timesteps)
  if prediction_type == "sample":
    return x0
  raise errors.ConfigError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
