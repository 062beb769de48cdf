"""The train state's initialisation (train/loop.py `build_state` / `StateInit`, issue 31): the
random params drawn leaf by leaf with their shardings (train/leafwise.py), optimizer state and EMA
from one small program. On this CPU machine the whole step-0 state (params, AdamW moments, EMA,
RNG, counters) is bit-identical to the one-program init it replaces
(`loop.build_state_one_program`; hashes with `base/checkpoint.params_sha256`, docs/design.md §3)
for configs/lrm.py:tiny (the demo's model), the micro reconstructor, the micro stage-1 trainer
(with EMA) and the toy on a 2 × 2 mesh (with and without EMA); the state carries the state
shardings; `Task.initial_params` sees host arrays. The reconstructor and stage-1 cases take
10-50 s each on this 2-core machine (two inits compiled): marked slow (`make test-all`); the toy
and a remat'd Flax stack keep the bit-identity in `make test`."""
import dataclasses

import jax
import numpy as np
import pytest

from data_pipeline import datasets
from instant3d_jax.base import checkpoint as ckpt_lib
from instant3d_jax.configs import lrm as lrm_configs
from instant3d_jax.train import loop, lrm_task, mv_task
from instant3d_jax.train import optimizer as opt_lib
from tests import tiny_configs, train_toy
from tests.test_train_mv import micro_config as mv_micro_config


def _both(cfg, task):
  """(old state, new state, state shardings) of `task` under `cfg`."""
  mesh, rules = loop.setup_mesh(cfg)
  tx, _ = opt_lib.make_optimizer(cfg.optimizer, int(cfg.train.total_steps))
  old_init, key, abstract, sh = loop.build_state_one_program(cfg, task, mesh, rules, tx)
  new_init, key2, abstract2, sh2 = loop.build_state(cfg, task, mesh, rules, tx)
  assert np.array_equal(key, key2) and sh2 == sh
  assert jax.tree.structure(abstract2) == jax.tree.structure(abstract)
  state = new_init(key)
  draw = new_init.draw(key)
  # Leaves of one structure share a program (the micro model's repeated blocks and biases).
  assert len(draw.programs) < len(draw.leaves) or len(draw.leaves) < 8
  return old_init(key), state, sh


def _assert_identical(old, new, sh):
  for field in ("params", "opt_state", "ema", "rng", "step", "nonfinite_total",
                "nonfinite_in_a_row"):
    a, b = getattr(old, field), getattr(new, field)
    assert jax.tree.structure(a) == jax.tree.structure(b), field
    assert ckpt_lib.params_sha256(a) == ckpt_lib.params_sha256(b), field
  assert ckpt_lib.params_sha256(old) == ckpt_lib.params_sha256(new)
  placed = jax.tree.leaves(jax.tree.map(lambda x, s: x.sharding == s, new, sh))
  assert placed and all(placed)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["demo_tiny", "micro"])
def test_reconstructor_state_is_bit_identical_to_the_one_program_init(variant):
  cfg = lrm_configs.get_config("tiny") if variant == "demo_tiny" else tiny_configs.micro_lrm()
  task = lrm_task.make_task(cfg, datasets.planned(cfg))
  old, new, sh = _both(cfg, task)
  assert new.ema is None
  _assert_identical(old, new, sh)


@pytest.mark.slow
def test_stage1_state_with_ema_is_bit_identical_to_the_one_program_init():
  cfg = mv_micro_config()
  task = mv_task.make_task(cfg, mv_task.build_components(cfg), with_flops=False)
  old, new, sh = _both(cfg, task)
  assert new.ema is not None
  _assert_identical(old, new, sh)


@pytest.mark.parametrize("ema", [False, True])
def test_sharded_state_is_bit_identical_and_placed_with_the_state_shardings(ema):
  cfg = train_toy.get_config()
  cfg.mesh.update(dict(data=1, fsdp=2, tensor=2))
  task = dataclasses.replace(train_toy.make_task(cfg), ema_decay=0.99 if ema else 0.0)
  old, new, sh = _both(cfg, task)
  _assert_identical(old, new, sh)
  assert (new.ema is not None) == ema
  assert new.params["fc1"]["kernel"].sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert len(new.params["fc1"]["kernel"].addressable_shards) == 4


def test_initial_params_are_applied_on_the_host_before_placing():
  cfg = train_toy.get_config()
  cfg.mesh.update(dict(data=1, fsdp=2, tensor=2))
  task = train_toy.make_task(cfg)
  mesh, rules = loop.setup_mesh(cfg)
  tx, _ = opt_lib.make_optimizer(cfg.optimizer, int(cfg.train.total_steps))
  init, key, _, sh = loop.build_state(cfg, task, mesh, rules, tx)
  seen = []

  def hook(params):
    seen.append(all(isinstance(x, np.ndarray) for x in jax.tree.leaves(params)))
    return jax.tree.map(lambda x: np.full(x.shape, 0.5, x.dtype), params)

  state = init(key, hook)
  assert seen == [True]
  assert all(np.all(np.asarray(x) == 0.5) for x in jax.tree.leaves(state.params))
  assert state.params["fc1"]["kernel"].sharding == sh.params["fc1"]["kernel"]
  with pytest.raises(ValueError, match=r"\['fc1'\]\['kernel'\]: \(3,\)"):
    init(key, lambda p: {**p, "fc1": {**p["fc1"], "kernel": np.zeros(3)}})


def test_leafwise_drops_the_forward_pass_and_shares_programs_between_blocks():
  """A jitted Flax init with remat'd blocks: each leaf's program holds its draw only (no matmul
  of the traced forward pass), the three blocks' leaves share programs, the values are the one
  program's."""
  import flax.linen as nn
  import jax.numpy as jnp
  from instant3d_jax.train import leafwise

  class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(8)(jax.nn.relu(nn.LayerNorm()(x)))

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      for i in range(3):
        x = nn.remat(Block)(name=f"block_{i}")(x)
      return x

  init = jax.jit(lambda k: Net().init(k, jnp.ones((2, 8)))["params"])
  key = jax.random.PRNGKey(3)
  draw = leafwise.Leafwise(init, key)
  assert len(draw.leaves) == 12 and len(draw.programs) <= 4
  assert not any("dot_general" in text for text in draw.programs)
  assert ckpt_lib.params_sha256(draw(key)) == ckpt_lib.params_sha256(init(key))
  assert ckpt_lib.params_sha256(draw(key, workers=1)) == ckpt_lib.params_sha256(init(key))
