"""Parameter counts and analytic FLOPs (instant3d_jax/models/lrm_stats.py; its command is
models/summary.py)."""
import re

import jax
import pytest

from instant3d_jax.configs import lrm as lrm_configs
from instant3d_jax.models import lrm, lrm_stats


def _dense(i, o, bias=True):
  return i * o + (o if bias else 0)


def expected_large_params():
  """The `large` variant counted by hand from the architecture (independent of the code)."""
  E, De, D, C, V = 1024, 768, 1024, 80, 4
  camera = _dense(16, E) + _dense(E, E)
  layer = 4 * _dense(De, De) + 2 * 2 * De + _dense(De, 3072) + _dense(3072, De) + _dense(E, 4 * De)
  encoder = (16 * 16 * 3 * De + De) + De + (14 * 14 + 1) * De + 12 * layer + 2 * De
  block = (_dense(D, D, False) + 2 * _dense(De, D, False) + _dense(D, D)       # cross-attention
           + 3 * _dense(D, D, False) + _dense(D, D)                             # self-attention
           + _dense(D, 4 * D) + _dense(4 * D, D) + 3 * 2 * D                    # MLP, 3 norms
           + _dense(E, 6 * D))                                                  # ModLN
  decoder = 3 * 32 * 32 * D + 16 * block + 2 * D + (2 * 2 * D * C + C)
  nerf = _dense(3 * C, 64) + 8 * _dense(64, 64) + _dense(64, 4)
  return camera + encoder + decoder + nerf


def test_large_parameter_count():
  cfg = lrm_configs.get_config("large")
  total = expected_large_params()
  assert 375e6 <= total <= 525e6
  text = lrm_stats.format_summary(cfg)              # table + total from jax.eval_shape
  assert re.search(rf"^total +{total:,}  \({total / 1e6:.1f}M\)$", text, re.M)
  assert "decoder/block_*/modulation" in text
  # Without the decoder's camera modulation the count drops by 16 × (1024 → 6·1024).
  cfg.model.decoder_modulation = False
  assert lrm_stats.count_params(cfg) == total - 16 * _dense(1024, 6 * 1024)


def test_forward_flops_match_xla_on_an_unrolled_model():
  """XLA's cost analysis (fine here: no scan, no custom calls) counts the same matmuls plus
  the element-wise work, a few percent at width 128."""
  cfg = lrm_configs.get_config("tiny")
  m = cfg.model
  m.input_resolution, m.encoder.image_size, m.encoder.num_layers = 32, 32, 1
  m.decoder.num_layers, m.triplane.token_resolution, m.triplane.channels = 1, 4, 8
  m.extras.lift, m.extras.lift_voxels = "none", False   # the paper's model: no lift term
  m.extras.colour_prior = False
  m = lrm.LRMConfig.from_config(m)
  images, cams = lrm.dummy_inputs(m, 1)
  compiled = jax.jit(lambda p, x, c: lrm.LRM(m).apply({"params": p}, x, c)).lower(
      lrm.abstract_params(m), images, cams).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  analytic, parts = lrm_stats.lrm_forward_flops(m, 1, breakdown=True)
  assert 1.0 <= cost["flops"] / analytic <= 1.1
  assert lrm_stats.lrm_forward_flops(m, 3) == 3 * analytic
  assert set(parts) == {"camera_embedder", "encoder", "decoder", "upsampler"}


def test_render_flops():
  m = lrm.LRMConfig.from_config(lrm_configs.get_config("large"))
  per_sample = 2 * (240 * 64 + 8 * 64 * 64 + 64 * 4)
  assert lrm_stats.nerf_flops_per_sample(m) == per_sample
  assert lrm_stats.render_flops(m, 1000) == 1000 * 128 * per_sample
  assert lrm_stats.render_flops(m, 10, num_samples=8, num_importance=0) == 80 * per_sample


def test_instantmesh_parameter_counts_match_the_reference():
  """InstantMesh's instant-nerf-large / -base built from this project's options have exactly the
  parameters of InstantMesh's own modules (tests/fixtures/instantmesh/*_shapes.json, counted
  from its PyTorch code on the meta device)."""
  import json
  import pathlib
  fixtures = pathlib.Path(__file__).parent / "fixtures" / "instantmesh"
  for variant, name in (("instantmesh_large", "large"), ("instantmesh_base", "base")):
    ref = json.loads((fixtures / f"instant_nerf_{name}_shapes.json").read_text())
    assert lrm_stats.count_params(lrm_configs.get_config(variant)) == \
        ref["lrm_generator_param_count"], variant
