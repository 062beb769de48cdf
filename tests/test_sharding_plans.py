"""Full-size models can be FSDP-sharded: shardings are derived from logical axis names alone.

Guards the conventions of layers.py across model families (e.g. a logical name used twice in
one kernel spec makes `logical_to_mesh_sharding` fail) and checks that the big matrices really
are split over the `fsdp` axis, for the two models that need it: the SDXL UNet (2.57 B params)
and the `large` reconstructor. Nothing is allocated (`jax.eval_shape`).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from instant3d_jax.configs import lrm as lrm_config
from instant3d_jax.configs import sdxl as sdxl_config
from instant3d_jax.models import lrm
from instant3d_jax.models.unet import UNet2DConditionModel, UNetConfig
from instant3d_jax.base import mesh as mesh_lib
from instant3d_jax.base import sharding
from tests.test_unet_vae import SDXL_UNET


@pytest.fixture(scope="module")
def fsdp4():
  cfg = lrm_config.get_config("large")
  cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = 1, 4, 1
  return mesh_lib.create_mesh(cfg.mesh, jax.devices()[:4]), sharding.logical_rules(
      cfg.logical_axis_rules)


def _sharded_fraction(abstract):
  """Fraction of parameters (by count) whose sharding splits them over 'fsdp'."""
  total = split = 0
  for leaf in jax.tree_util.tree_leaves(abstract):
    n = int(np.prod(leaf.shape))
    total += n
    if any(a == "fsdp" or (isinstance(a, tuple) and "fsdp" in a) for a in leaf.sharding.spec):
      split += n
  return split / total, total


def test_sdxl_unet_fsdp_plan(fsdp4):
  mesh, _ = fsdp4
  rules = sharding.logical_rules(sdxl_config.get_config("sdxl").logical_axis_rules)
  cfg = UNetConfig.from_diffusers(SDXL_UNET)
  model = UNet2DConditionModel(cfg)
  args = (jnp.zeros((1, 8, 8, 4)), jnp.zeros((1,)), jnp.zeros((1, 1, 2048)),
          jnp.zeros((1, 1280)), jnp.zeros((1, 6)))
  abstract, shardings = sharding.derive_shardings(
      lambda *a: model.init(jax.random.key(0), *a)["params"], *args, mesh=mesh, rules=rules)
  frac, total = _sharded_fraction(abstract)
  assert total == 2_567_463_684
  assert frac > 0.9, f"only {frac:.1%} of the UNet parameters are split over fsdp"
  conv = abstract["conv_in"]["kernel"]
  assert conv.sharding.spec == P(None, None, None, "fsdp")  # 3x3 spatial dims never sharded


def test_large_lrm_fsdp_plan(fsdp4):
  mesh, rules = fsdp4
  mcfg = lrm.LRMConfig.from_config(lrm_config.get_config("large"))
  abstract, _ = sharding.derive_shardings(lambda k: lrm.init_params(mcfg, k), jax.random.key(0),
                                          mesh=mesh, rules=rules)
  frac, total = _sharded_fraction(abstract)
  assert 375e6 < total < 525e6
  assert frac > 0.9, f"only {frac:.1%} of the LRM parameters are split over fsdp"


@pytest.mark.slow  # ~1 min of XLA:CPU compiling on 2 cores
def test_instantmesh_large_train_step_compiles_on_fake_devices(tmp_path):
  """`train_lrm --config configs/lrm.py:instantmesh_large`'s update step (6 random input views,
  4 targets, MSE + LPIPS + mask, AdamW) compiles for 4 (fake CPU) devices at FSDP 4, from
  abstract shapes (nothing allocated): the trainer's own state and step builders."""
  from bench import bench_memory_plan
  cfg = lrm_config.get_config("instantmesh_large")
  cfg.data_dir = str(tmp_path / "nodata")
  cfg.mesh.update(dict(data=1, fsdp=4, tensor=1, num_devices=4))
  cfg.train.global_batch_size = 4
  cfg.model.dtype, cfg.model.remat = "bfloat16", "full"
  c = bench_memory_plan.compile_step(cfg, jax.devices()[:4])
  assert c["compiled"].memory_analysis() is not None
  frac, total = _sharded_fraction(c["abstract"].params)
  assert total == 378_477_332 and frac > 0.9
