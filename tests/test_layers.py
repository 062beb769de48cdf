"""The shared building blocks of models/layers.py: GroupNorm against flax's, remat policies,
adaLN modulate, the dtype table, count_params."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from instant3d_jax.models import layers


def test_group_norm_matches_flax_group_norm_with_the_same_parameters():
  x = jnp.asarray(np.random.default_rng(0).normal(1.0, 2.0, (2, 5, 3, 8)), jnp.float32)
  ours = layers.group_norm(4, epsilon=1e-6)
  params = ours.init(jax.random.PRNGKey(0), x)
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32),
                        nn.meta.unbox(params))
  ref = nn.GroupNorm(num_groups=4, epsilon=1e-6)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(
      jnp.shape, nn.meta.unbox(ref.init(jax.random.PRNGKey(0), x)))
  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), atol=2e-5)
  with pytest.raises(ValueError, match="8 channels are not divisible into 3 groups"):
    layers.group_norm(3).init(jax.random.PRNGKey(0), x)


def test_remat_policy_names():
  assert layers.remat_policy(None) is None and layers.remat_policy("none") is None
  assert layers.remat_policy("full") is jax.checkpoint_policies.nothing_saveable
  assert (layers.remat_policy("dots_with_no_batch_dims_saveable")
          is jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
  with pytest.raises(ValueError, match="remat policy 'sometimes'"):
    layers.remat_policy("sometimes")
  assert layers.maybe_remat(nn.Dense, "none") is nn.Dense
  assert layers.maybe_remat(nn.Dense, "full") is not nn.Dense


def test_modulate_dtype_table_and_count_params():
  x = jnp.ones((2, 3, 4))
  shift, scale = jnp.arange(8.0).reshape(2, 4), jnp.full((2, 4), 0.5)
  np.testing.assert_array_equal(layers.modulate(x, shift, scale),
                                1.5 + jnp.broadcast_to(shift[:, None], (2, 3, 4)))
  assert layers.compute_dtype("bfloat16") == jnp.bfloat16
  with pytest.raises(ValueError, match=r"model.dtype must be one of .*got 'fp8'"):
    layers.compute_dtype("fp8", "model.dtype")
  abstract = jax.eval_shape(layers.dense(5, ("embed", "mlp")).init, jax.random.PRNGKey(0),
                            jnp.zeros((1, 3)))
  assert layers.count_params(abstract) == 3 * 5 + 5


def test_attention_formulations_agree_and_each_model_keeps_its_own():
  """The one entry point's two XLA formulations compute the same attention (fp32, 1e-5 relative;
  the default scale and an explicit one), 'heads_major' refuses a mask, an unknown name is a
  ConfigError naming the choices, and the UNet and VAE still pick 'heads_major'."""
  from instant3d_jax import errors
  from instant3d_jax.models import unet, vae
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal(s), jnp.float32)
             for s in ((2, 9, 3, 8), (2, 5, 3, 8), (2, 5, 3, 8)))
  for scale in (None, 0.3):
    a = layers.dot_product_attention(q, k, v, scale=scale)
    b = layers.dot_product_attention(q, k, v, scale=scale, xla_formulation="heads_major")
    assert a.shape == b.shape == (2, 9, 3, 8)
    assert float(jnp.abs(a - b).max() / jnp.abs(a).max()) < 1e-5
  with pytest.raises(ValueError, match="takes no bias or mask"):
    layers.dot_product_attention(q, k, v, mask=jnp.ones((9, 5), bool),
                                 xla_formulation="heads_major")
  with pytest.raises(errors.ConfigError, match=r"formulation must be one of .*got 'flash'"):
    layers.dot_product_attention(q, k, v, xla_formulation="flash")
  assert unet.XLA_ATTENTION == vae.XLA_ATTENTION == "heads_major"
