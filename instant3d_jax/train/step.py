"""The model-agnostic train state and update step.

A trainer supplies `loss_fn(params, batch, rng, step, constants) -> (loss, metrics)` (scalar
fp32 loss, a dict of scalar metrics; `constants` is a pytree of frozen inputs such as the LPIPS
network, passed as an argument rather than closed over so it is not baked into the program as
a literal); this module turns it into one sharded, jitted update:
  * optional gradient accumulation: the global batch is split into `accum_steps` micro-batches
    (interleaved rows, so every micro-batch stays spread over all data shards) and scanned;
  * non-finite loss or gradients → the update is skipped (params and optimizer state kept),
    `nonfinite_total` / `nonfinite_in_a_row` count it; the host loop decides when to stop;
  * the RNG of step s is `fold_in(state.rng, s)`: a resumed run draws the same numbers;
  * optional EMA of the parameters (`ema_decay` > 0): `state.ema` follows every kept update
    with diffusers' `EMAModel` decay (`ema_decay_at`); without it `state.ema` is None and the
    state's tree (hence every checkpoint written before the field existed) is unchanged.
"""
from __future__ import annotations

from instant3d_jax import errors

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from instant3d_jax.base import sharding as shard_lib

LossFn = Callable[[Any, Any, jax.Array, jax.Array, Any], tuple[jax.Array, dict[str, jax.Array]]]


@flax.struct.dataclass
class TrainState:
  """Everything a checkpoint holds besides the data iterator.

  `step`: int32 [] updates attempted so far; `params`: fp32 master weights; `opt_state`: optax
  state; `rng`: uint32 [2] base key (fixed; per-step keys are folded in); `nonfinite_total`,
  `nonfinite_in_a_row`: int32 [] skipped-update counters; `ema`: an exponential moving
  average of `params` (same tree) or None (no leaves: states without an EMA checkpoint and
  restore exactly as before).
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  nonfinite_total: jax.Array
  nonfinite_in_a_row: jax.Array
  ema: Any = None


def ema_decay_at(step: jax.Array, max_decay: float) -> jax.Array:
  """The EMA decay used by update number `step` (0-based): diffusers `EMAModel.get_decay`
  without warm-up power (its default), `min(max_decay, (1 + n) / (10 + n))` with n = `step`,
  and 0 for the first update (the EMA starts as a copy of the first updated weights)."""
  n = jnp.asarray(step, jnp.float32)
  d = jnp.minimum(jnp.float32(max_decay), (1.0 + n) / (10.0 + n))
  return jnp.where(n <= 0, 0.0, d)


def ema_update(ema: Any, params: Any, decay: jax.Array) -> Any:
  """`decay · ema + (1 − decay) · params`, leaf by leaf, in the EMA's dtype (fp32)."""
  return jax.tree.map(lambda e, p: (decay * e + (1.0 - decay) * p.astype(e.dtype)).astype(e.dtype),
                      ema, params)


def make_init_fn(init_params: Callable[[jax.Array], Any], tx: optax.GradientTransformation,
                 ema: bool = False) -> Callable[[jax.Array], TrainState]:
  """`init(rng) -> TrainState` with *boxed* params (logical names kept for sharding derivation).

  `rng`: a raw uint32 [2] key (`jax.random.PRNGKey(seed)`), so it checkpoints as a plain array.

  `init_params(rng)` returns the model's (boxed) parameter tree, e.g. `model.init(...)['params']`.
  `ema=True`: the state carries an EMA of the params, initialised as a copy of them.
  """
  def init(rng):
    param_rng, state_rng = jax.random.split(rng)
    params = init_params(param_rng)
    zero = jnp.zeros((), jnp.int32)
    return TrainState(step=zero, params=params, opt_state=tx.init(params),
                      rng=state_rng,
                      nonfinite_total=zero, nonfinite_in_a_row=zero,
                      ema=jax.tree.map(lambda x: x, params) if ema else None)
  return init


def make_draw_fn(init_params: Callable[[jax.Array], Any]
                      ) -> Callable[[jax.Array], tuple[Any, jax.Array]]:
  """`init(rng) -> (params, state_rng)`: the random part of `make_init_fn(init_params, …)(rng)`
  (the same split of `rng`, the same draws), params unboxed. loop.StateInit runs it one leaf at a
  time (train/leafwise.py) with the state shardings; `make_rest_fn` adds the optimizer state and
  the EMA."""
  def init(rng):
    param_rng, state_rng = jax.random.split(rng)
    return shard_lib.unbox(init_params(param_rng)), state_rng
  return init


def make_rest_fn(tx: optax.GradientTransformation, ema: bool = False
                 ) -> Callable[[Any], tuple[Any, Any]]:
  """`rest(params) -> (opt_state, ema or None)`: what `make_init_fn`'s state derives from its
  params (`tx.init`, the EMA's copy), from params already placed (loop.build_state)."""
  def rest(params):
    return tx.init(params), (jax.tree.map(jnp.copy, params) if ema else None)
  return rest


def _split_micro(batch: Any, accum_steps: int) -> Any:
  """[B, ...] → [accum, B/accum, ...] with micro-batch k = rows k, k+accum, k+2·accum, …"""
  def one(x):
    b = x.shape[0]
    if b % accum_steps:
      raise errors.ConfigError(f"gradient accumulation: batch of {b} rows is not divisible by "
                       f"accum_steps={accum_steps}")
    x = x.reshape((b // accum_steps, accum_steps) + x.shape[1:])
    return jnp.swapaxes(x, 0, 1)
  return jax.tree.map(one, batch)


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation,
                    schedule: optax.Schedule | None = None, accum_steps: int = 1,
                    ema_decay: float = 0.0,
                    ) -> Callable[[TrainState, Any], tuple[TrainState, dict[str, jax.Array]]]:
  """`train_step(state, batch, constants) -> (state, metrics)`; metrics add `grad_norm`, `lr`,
  `finite` (and `ema_decay` when the state keeps an EMA: `ema_decay` > 0 is its maximum decay,
  `ema_decay_at`)."""
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state: TrainState, batch: Any, constants: Any = None):
    rng = jax.random.fold_in(state.rng, state.step)
    if accum_steps == 1:
      (loss, metrics), grads = grad_fn(state.params, batch, rng, state.step, constants)
    else:
      micro = _split_micro(batch, accum_steps)

      def body(carry, xs):
        k, mb = xs
        (l, m), g = grad_fn(state.params, mb, jax.random.fold_in(rng, k), state.step,
                                constants)
        acc = jax.tree.map(jnp.add, carry, (l, m, g))
        return acc, None

      zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
          lambda: grad_fn(state.params, jax.tree.map(lambda x: x[0], micro), rng, state.step,
                        constants)))
      zeros = ((zeros[0][0], zeros[0][1], zeros[1]))
      (loss, metrics, grads), _ = jax.lax.scan(body, zeros, (jnp.arange(accum_steps), micro))
      loss, metrics, grads = jax.tree.map(lambda x: x / accum_steps, (loss, metrics, grads))

    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    # Zero non-finite gradients before the optimizer sees them, so the (discarded) candidate
    # update cannot raise or poison anything; the select below keeps the old state anyway.
    safe_grads = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grads)
    updates, new_opt = tx.update(safe_grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    one = jnp.ones((), jnp.int32)
    new_state = state.replace(
        step=state.step + 1,
        params=keep(new_params, state.params),
        opt_state=keep(new_opt, state.opt_state),
        nonfinite_total=state.nonfinite_total + jnp.where(finite, 0, one),
        nonfinite_in_a_row=jnp.where(finite, 0, state.nonfinite_in_a_row + 1))
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm, finite=finite.astype(jnp.float32))
    if state.ema is not None:
      if not ema_decay > 0:
        raise errors.ConfigError(f"the train state keeps an EMA but ema_decay={ema_decay}; "
                                 "expected a decay in (0, 1)")
      decay = ema_decay_at(state.step, ema_decay)
      new_state = new_state.replace(ema=keep(ema_update(state.ema, new_state.params, decay),
                                             state.ema))
      metrics["ema_decay"] = decay
    if schedule is not None:
      metrics["lr"] = schedule(state.step)
    return new_state, metrics

  return train_step
