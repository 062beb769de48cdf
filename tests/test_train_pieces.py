"""Mesh sizes, derived shardings, the learning-rate schedule and the weight-decay mask."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from instant3d_jax.base import mesh as mesh_lib
from instant3d_jax.train import optimizer as opt_lib
from instant3d_jax.base import sharding as shard_lib
from instant3d_jax.train.step import make_init_fn
from tests import train_toy


def test_mesh_sizes_fill_and_errors():
  assert mesh_lib.resolve_axis_sizes([-1, 2, 1], 8) == (4, 2, 1)
  assert mesh_lib.resolve_axis_sizes([1, -1, 1], 4) == (1, 4, 1)
  with pytest.raises(ValueError, match="at most one axis may be -1"):
    mesh_lib.resolve_axis_sizes([-1, -1, 1], 4)
  with pytest.raises(ValueError, match="not divisible"):
    mesh_lib.resolve_axis_sizes([-1, 3, 1], 4)
  with pytest.raises(ValueError, match="multiply to 2, but there are 4"):
    mesh_lib.resolve_axis_sizes([2, 1, 1], 4)
  m = mesh_lib.create_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=2, tensor=1)))
  assert dict(m.shape) == {"data": 2, "fsdp": 2, "tensor": 1}
  m = mesh_lib.create_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1, dcn_data=2)))
  assert dict(m.shape) == {"data": 2, "fsdp": 2, "tensor": 1}


def test_state_shardings_derived_from_logical_names():
  cfg = train_toy.get_config()
  mesh = mesh_lib.create_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=2, tensor=2)))
  rules = shard_lib.logical_rules(cfg.logical_axis_rules)
  tx, _ = opt_lib.make_optimizer(cfg.optimizer, 10)
  task = train_toy.make_task(cfg)
  abstract, sh = shard_lib.derive_shardings(make_init_fn(task.init_params, tx),
                                            jax.random.PRNGKey(0), mesh=mesh, rules=rules)
  # fc1 kernel is (embed, mlp) → (fsdp, tensor); fc2 kernel (mlp, embed) → (tensor, fsdp).
  assert sh.params["fc1"]["kernel"].spec == P("fsdp", "tensor")
  assert sh.params["fc2"]["kernel"].spec == P("tensor", "fsdp")
  assert sh.params["fc2"]["bias"].spec == P("fsdp")
  # Adam moments follow their parameters; counters are replicated.
  adam = sh.opt_state[1][0]
  assert adam.mu["fc1"]["kernel"].spec == P("fsdp", "tensor")
  assert adam.count.spec == P() and sh.step.spec == P()
  assert abstract.params["fc1"]["kernel"].shape == (train_toy.DIM, train_toy.HIDDEN)
  assert shard_lib.batch_sharding(mesh, rules, 3).spec == P(("data", "fsdp"), None, None)


def test_schedule_warmup_then_cosine():
  c = ml_collections.ConfigDict(dict(learning_rate=4e-4, warmup_steps=10, decay_steps=0,
                                     final_lr_ratio=0.1, grad_clip_norm=1.0, b1=0.9, b2=0.95,
                                     weight_decay=0.05))
  s = opt_lib.make_schedule(c, total_steps=110)
  assert float(s(0)) == 0.0
  np.testing.assert_allclose(float(s(5)), 2e-4, rtol=1e-6)
  np.testing.assert_allclose(float(s(10)), 4e-4, rtol=1e-6)
  # Halfway through the cosine: (peak + end)/2.
  np.testing.assert_allclose(float(s(60)), (4e-4 + 4e-5) / 2, rtol=1e-5)
  np.testing.assert_allclose(float(s(110)), 4e-5, rtol=1e-5)


def test_weight_decay_skips_vectors_and_clip_applies():
  c = ml_collections.ConfigDict(dict(learning_rate=1.0, warmup_steps=0, decay_steps=10,
                                     final_lr_ratio=1.0, grad_clip_norm=1.0, b1=0.9, b2=0.95,
                                     eps=1e-8, weight_decay=0.5, decay_min_ndim=2))
  tx, _ = opt_lib.make_optimizer(c, 10)
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones((2,))}
  zero = jax.tree.map(jnp.zeros_like, params)
  upd, _ = tx.update(zero, tx.init(params), params)
  # Zero gradient: the matrix still decays by lr·wd·w, the bias does not move.
  np.testing.assert_allclose(upd["w"], -0.5 * np.ones((2, 2)), rtol=1e-6)
  np.testing.assert_allclose(upd["b"], 0.0)
  big = {"w": 100 * jnp.ones((2, 2)), "b": 100 * jnp.ones((2,))}
  clip = optax.clip_by_global_norm(1.0)
  clipped, _ = clip.update(big, clip.init(params))
  np.testing.assert_allclose(optax.global_norm(clipped), 1.0, rtol=1e-6)


def test_progress_total_is_the_steps_that_will_run():
  """Without a budget the bar's total is `total_steps`; with one it is projected from the step
  rate (here 10 steps/s with 20 s of a 30 s budget left → 100 + 200 = 300 of 2700)."""
  from instant3d_jax.train import metrics
  p = metrics.Progress(2700, active=False, time_budget_s=30.0, start_time=0.0)
  assert p.projected_total(0, 0.0) == 2700            # first update: no rate yet
  assert p.projected_total(100, 10.0) == 300
  assert p.projected_total(100, 40.0) == 100           # budget spent
  assert metrics.Progress(500, active=False, time_budget_s=1e6, start_time=0.0
                          ).projected_total(0, 0.0) == 500
  assert metrics.Progress(50, active=False).projected_total(10, 5.0) == 50


def test_finished_run_summary_is_written_once_and_reused(tmp_path):
  """The demos' train-or-reuse: a written summary (last-10 mean loss, extras) is read back
  unless a new run is asked for."""
  from instant3d_jax.train import loop
  assert loop.finished_summary(str(tmp_path), log=lambda *_: None) is None
  res = loop.RunResult(state=None, step=12, stop_reason="total_steps",
                       history=[{"loss": float(i)} for i in range(12)], wall_s=3.14159,
                       compile_s=1.0)
  s = loop.write_summary(str(tmp_path), res, final_train_psnr=20.0)
  assert s["final_train_loss"] == sum(range(2, 12)) / 10 and s["wall_s"] == 3.1
  assert loop.finished_summary(str(tmp_path), log=lambda *_: None) == s
  assert loop.finished_summary(str(tmp_path), retrain=True) is None


def test_params_sha256_sees_bits_dtype_shape_and_keys_not_dict_order():
  from instant3d_jax.base import checkpoint as ckpt_lib
  a = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": {"k": np.ones(2, np.float32)}}
  h = ckpt_lib.params_sha256(a)
  assert len(h) == 64
  assert ckpt_lib.params_sha256({"a": {"k": np.ones(2, np.float32)}, "b": a["b"].copy()}) == h
  flipped = a["b"].copy()
  flipped.view(np.uint32)[0, 0] ^= 1  # one bit of one leaf
  assert ckpt_lib.params_sha256({**a, "b": flipped}) != h
  assert ckpt_lib.params_sha256({**a, "b": a["b"].reshape(3, 2)}) != h
  assert ckpt_lib.params_sha256({**a, "b": a["b"].astype(np.float64)}) != h
  assert ckpt_lib.params_sha256({"c": a["b"], "a": a["a"]}) != h
