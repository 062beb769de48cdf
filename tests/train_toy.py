"""A toy regression job for the trainer-machinery tests (imported by tests, and run as a script
by the subprocess tests: SIGTERM, kill -9, two processes).

    python tests/train_toy.py --workdir DIR [--steps N] [--set key=value ...]

Model: a 2-layer MLP whose parameters carry logical axis names. Data: example i of step s is
drawn from `fold_in(fold_in(key(seed), s), i)` — the global batch is a function of (seed, step),
each process takes its contiguous slice, so 1 or N processes see the same examples. The iterator
state is `{"step": s}`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from instant3d_jax.models import layers  # noqa: E402
from instant3d_jax.train import loop  # noqa: E402

DIM, HIDDEN = 8, 32


class ToyMLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = layers.constrain(x, ("batch", "act_embed"))
    h = nn.gelu(layers.dense(HIDDEN, ("embed", "mlp"), name="fc1")(x))
    return layers.dense(DIM, ("mlp", "embed"), name="fc2")(h)


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict({"dim": DIM, "hidden": HIDDEN})
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.logical_axis_rules = (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("mlp", "tensor"))
  c.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=1e-2, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.05, warmup_steps=2,
      decay_steps=0, final_lr_ratio=0.1, grad_clip_norm=1.0, decay_min_ndim=2))
  c.train = ml_collections.ConfigDict(dict(
      total_steps=8, time_budget_s=0.0, global_batch_size=8, accum_steps=1, log_every=1,
      image_every=0, eval_every=0, max_nonfinite_in_a_row=3, halt_at_step=0,
      checkpoint_must_match=("model", "optimizer"), checkpoint_may_differ=()))
  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=2, keep=10))
  c.checkpoint["async"] = True
  c.hardware = ml_collections.ConfigDict({"peak_tflops": {"cpu": 1.0}})
  c.data = ml_collections.ConfigDict(dict(seed=7, nan_steps=(), sleep_s=0.0))
  return c


class ToyIterator:
  """Rows of the global batch that belong to this process, as numpy."""

  def __init__(self, cfg):
    self.cfg = cfg
    self.step = 0
    self.a = np.asarray(jax.random.normal(jax.random.PRNGKey(123), (DIM, DIM))) / np.sqrt(DIM)

  def __next__(self):
    import time
    gbs = self.cfg.train.global_batch_size
    p, n = jax.process_index(), jax.process_count()
    rows = np.arange(p * gbs // n, (p + 1) * gbs // n)
    key = jax.random.fold_in(jax.random.PRNGKey(self.cfg.data.seed), self.step)
    x = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(key, int(i)), (DIM,)))
                  for i in rows])
    y = np.sin(x @ self.a)
    bad = np.full((len(rows),), float(self.step in tuple(self.cfg.data.nan_steps)), np.float32)
    self.step += 1
    if self.cfg.data.sleep_s:
      time.sleep(self.cfg.data.sleep_s)
    return {"x": x.astype(np.float32), "y": y.astype(np.float32), "bad": bad}

  def get_state(self):
    return {"step": self.step}

  def set_state(self, state):
    self.step = int(state["step"])


def make_task(cfg) -> loop.Task:
  model = ToyMLP()

  def loss_fn(params, batch, rng, step, constants):
    pred = model.apply({"params": params}, batch["x"])
    loss = jnp.mean((pred - batch["y"]) ** 2)
    # Injected failure: a batch flagged `bad` turns the loss into NaN.
    loss = jnp.where(jnp.any(batch["bad"] > 0), jnp.nan, loss)
    return loss, {"mse": loss}

  gbs = cfg.train.global_batch_size
  spec = {"x": jax.ShapeDtypeStruct((gbs, DIM), jnp.float32),
          "y": jax.ShapeDtypeStruct((gbs, DIM), jnp.float32),
          "bad": jax.ShapeDtypeStruct((gbs,), jnp.float32)}
  return loop.Task(
      init_params=lambda r: model.init(r, jnp.zeros((1, DIM)))["params"], loss_fn=loss_fn,
      make_iterator=lambda: ToyIterator(cfg), batch_spec=spec,
      flops_per_example=6 * 2 * DIM * HIDDEN)


def apply_overrides(cfg, sets):
  for s in sets or ():
    k, v = s.split("=", 1)
    node = cfg
    *path, last = k.split(".")
    for p in path:
      node = node[p]
    node[last] = json.loads(v)
  return cfg


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--set", action="append", default=[])
  ap.add_argument("--result", default=None, help="write per-step losses as JSON here")
  args = ap.parse_args()
  from instant3d_jax.base import multihost
  multihost.initialize(platform="cpu")
  cfg = apply_overrides(get_config(), args.set)
  res = loop.run(cfg, args.workdir, make_task(cfg))
  if args.result and jax.process_index() == 0:
    with open(args.result, "w") as f:
      json.dump({"losses": [h["loss"] for h in res.history], "stop": res.stop_reason,
                 "step": res.step}, f)
  print(f"TOY DONE step={res.step} stop={res.stop_reason}", flush=True)


if __name__ == "__main__":
  main()
