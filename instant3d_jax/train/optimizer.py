"""AdamW with linear warm-up + cosine decay and global-norm clipping (LRM's recipe).

Config (`cfg.optimizer`): `learning_rate` (peak, 4e-4 as LRM/OpenLRM), `b1`, `b2` (0.9/0.95),
`eps`, `weight_decay` (0.05), `warmup_steps`, `decay_steps` (0: the run's `total_steps`),
`final_lr_ratio` (cosine floor as a fraction of the peak), `grad_clip_norm` (1.0; 0 disables),
`decay_min_ndim` (weight decay only on parameters with at least this many dimensions: matrices
and conv kernels, not biases, norm scales or embeddings' 1-D vectors — OpenLRM's split).
"""
from __future__ import annotations

from instant3d_jax import errors

import jax
import optax


def make_schedule(opt_cfg, total_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to the peak over `warmup_steps`, then cosine to `final_lr_ratio`."""
  peak = float(opt_cfg.learning_rate)
  warmup = int(opt_cfg.warmup_steps)
  decay_steps = int(opt_cfg.get("decay_steps", 0)) or int(total_steps)
  if decay_steps <= warmup:
    raise errors.ConfigError(f"optimizer: decay_steps ({decay_steps}, 0 means total_steps) must exceed "
                     f"warmup_steps ({warmup})")
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=decay_steps,
      end_value=peak * float(opt_cfg.get("final_lr_ratio", 0.0)))


def make_optimizer(opt_cfg, total_steps: int) -> tuple[optax.GradientTransformation,
                                                        optax.Schedule]:
  """`(tx, schedule)`: clip → AdamW(schedule) with a weight-decay mask by parameter rank."""
  schedule = make_schedule(opt_cfg, total_steps)
  min_ndim = int(opt_cfg.get("decay_min_ndim", 2))
  parts = []
  if float(opt_cfg.grad_clip_norm) > 0:
    parts.append(optax.clip_by_global_norm(float(opt_cfg.grad_clip_norm)))
  parts.append(optax.adamw(schedule, b1=float(opt_cfg.b1), b2=float(opt_cfg.b2),
                           eps=float(opt_cfg.get("eps", 1e-8)),
                           weight_decay=float(opt_cfg.weight_decay),
                           mask=lambda params: jax.tree.map(lambda p: p.ndim >= min_ndim, params)))
  return optax.chain(*parts), schedule
