"""AdamW with linear warm-up + cosine (or warm-up–stable–decay) and global-norm clipping (LRM's
recipe).

Config (`cfg.optimizer`): `learning_rate` (peak, 4e-4 as LRM/OpenLRM), `b1`, `b2` (0.9/0.95),
`eps`, `weight_decay` (0.05), `warmup_steps`, `decay_steps` (0: the run's `total_steps`),
`final_lr_ratio` (the floor as a fraction of the peak), `grad_clip_norm` (1.0; 0 disables),
`decay_min_ndim` (weight decay only on parameters with at least this many dimensions: matrices
and conv kernels, not biases, norm scales or embeddings' 1-D vectors — OpenLRM's split).

Schedule (`schedule`, absent = 'cosine'):
  'cosine'  linear warm-up from 0 to the peak, then cosine to the floor at `decay_steps` (LRM's
            recipe; the default, unchanged).
  'wsd'     warm-up–stable–decay: the same warm-up, the peak held flat, then over the last
            `decay_fraction` (default 0.2) of `decay_steps` a decay to the floor, shaped by
            `decay_shape`: '1-sqrt' (default) lr = floor + (peak − floor)·(1 − √f), or 'linear'
            lr = peak − (peak − floor)·f, f the fraction of the decay phase done. 1−sqrt is the
            default because it matched or beat linear cool-downs in Hägele et al. 2024 ("Scaling
            Laws and Compute-Optimal Training Beyond Fixed Training Durations"); it drops
            fast at first and spends more of the phase near the floor. Why WSD: up to the decay's
            start the rate does not depend on the run's length, so one run's stable-phase
            checkpoint at step B·(1 − decay_fraction), continued with `total_steps = B`, *is* the
            WSD run of budget B: one run per model size yields every budget (bench/scaling.py).
            `wsd_decay_start` gives that step. Not in the paper (LRM / Instant3D use cosine).
"""
from __future__ import annotations

from instant3d_jax import errors

import jax
import jax.numpy as jnp
import optax

from instant3d_jax.base import config_schema

SCHEDULES = ("cosine", "wsd")
DECAY_SHAPES = ("1-sqrt", "linear")
# The keys every config sets (read by plain access; a missing one is a ConfigError naming it).
# `schedule`, `decay_fraction` and `decay_shape` are optional (absent = the cosine schedule).
SCHEDULE_KEYS = ("learning_rate", "warmup_steps", "decay_steps", "final_lr_ratio")
OPTIMIZER_KEYS = SCHEDULE_KEYS + ("b1", "b2", "eps", "weight_decay", "grad_clip_norm",
                                  "decay_min_ndim")


def wsd_decay_start(opt_cfg, total_steps: int) -> int:
  """The first step of the WSD decay phase: `horizon − round(decay_fraction · horizon)`, the
  horizon being `decay_steps` (0: `total_steps`). Steps before it run at the rate of the warm-up
  or the peak, whatever the horizon."""
  horizon = int(opt_cfg.decay_steps) or int(total_steps)
  frac = float(opt_cfg.get("decay_fraction", 0.2))
  if not 0.0 < frac <= 1.0:
    raise errors.ConfigError(f"optimizer.decay_fraction must be in (0, 1], got {frac}")
  return horizon - max(1, int(round(frac * horizon)))


def make_schedule(opt_cfg, total_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to the peak over `warmup_steps`, then cosine to `final_lr_ratio`, or
  (`schedule='wsd'`) the peak held until `wsd_decay_start` and a decay to the floor (module
  docstring)."""
  config_schema.require(opt_cfg, SCHEDULE_KEYS, "train/optimizer.py", "optimizer.")
  peak = float(opt_cfg.learning_rate)
  warmup = int(opt_cfg.warmup_steps)
  decay_steps = int(opt_cfg.decay_steps) or int(total_steps)
  if decay_steps <= warmup:
    raise errors.ConfigError(f"optimizer: decay_steps ({decay_steps}, 0 means total_steps) must exceed "
                     f"warmup_steps ({warmup})")
  kind = str(opt_cfg.get("schedule", "cosine"))
  if kind not in SCHEDULES:
    raise errors.ConfigError(f"optimizer.schedule must be one of {SCHEDULES}, got {kind!r}")
  if kind == "wsd":
    return _wsd_schedule(opt_cfg, peak, warmup, decay_steps, total_steps)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=decay_steps,
      end_value=peak * float(opt_cfg.final_lr_ratio))


def _wsd_schedule(opt_cfg, peak: float, warmup: int, horizon: int, total_steps: int
                  ) -> optax.Schedule:
  start = wsd_decay_start(opt_cfg, total_steps)
  shape = str(opt_cfg.get("decay_shape", "1-sqrt"))
  if shape not in DECAY_SHAPES:
    raise errors.ConfigError(f"optimizer.decay_shape must be one of {DECAY_SHAPES}, got {shape!r}")
  if start < warmup:
    raise errors.ConfigError(
        f"optimizer: the WSD decay would start at step {start} (decay_fraction "
        f"{opt_cfg.get('decay_fraction', 0.2)} of {horizon} steps), inside the {warmup} warm-up "
        f"steps; lower decay_fraction or warmup_steps")
  floor = peak * float(opt_cfg.final_lr_ratio)
  length = horizon - start

  def schedule(count):
    count = jnp.asarray(count, jnp.float32)
    warm = peak * count / max(warmup, 1)
    f = jnp.clip((count - start) / length, 0.0, 1.0)
    ramp = 1.0 - jnp.sqrt(f) if shape == "1-sqrt" else 1.0 - f
    decay = floor + (peak - floor) * ramp
    return jnp.where(count < warmup, warm, jnp.where(count <= start, peak, decay))

  return schedule


def make_optimizer(opt_cfg, total_steps: int) -> tuple[optax.GradientTransformation,
                                                        optax.Schedule]:
  """`(tx, schedule)`: clip → AdamW(schedule) with a weight-decay mask by parameter rank."""
  config_schema.require(opt_cfg, OPTIMIZER_KEYS, "train/optimizer.py", "optimizer.")
  schedule = make_schedule(opt_cfg, total_steps)
  min_ndim = int(opt_cfg.decay_min_ndim)
  parts = []
  if float(opt_cfg.grad_clip_norm) > 0:
    parts.append(optax.clip_by_global_norm(float(opt_cfg.grad_clip_norm)))
  parts.append(optax.adamw(schedule, b1=float(opt_cfg.b1), b2=float(opt_cfg.b2),
                           eps=float(opt_cfg.eps),
                           weight_decay=float(opt_cfg.weight_decay),
                           mask=lambda params: jax.tree.map(lambda p: p.ndim >= min_ndim, params)))
  return optax.chain(*parts), schedule
