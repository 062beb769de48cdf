"""Image metrics: PSNR, SSIM (Wang et al. 2004) and LPIPS-VGG, batched, in JAX.

Conventions: images `[..., H, W, 3]` float in [0, 1]; every metric returns one value per image
(`[...]`), the caller averages. SSIM uses the standard Gaussian window (11 taps, σ = 1.5,
K1 = 0.01, K2 = 0.03, data range 1), computed per channel over the pixels whose whole window
lies inside the image ("valid"), then averaged over pixels and channels: the same numbers as
`skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1, channel_axis=-1)`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # int(3.5·σ + 0.5): scipy's truncate=3.5, as skimage uses
SSIM_K1, SSIM_K2 = 0.01, 0.03


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean squared error per image `[...]`."""
  return jnp.mean((pred.astype(jnp.float32) - target.astype(jnp.float32)) ** 2, axis=(-3, -2, -1))


def psnr(pred: jax.Array, target: jax.Array, max_value: float = 1.0) -> jax.Array:
  """PSNR in dB per image: 10·log10(max² / MSE) (inf for identical images)."""
  return 10.0 * jnp.log10(max_value ** 2 / mse(pred, target))


def _gaussian_taps() -> np.ndarray:
  x = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
  g = np.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
  return (g / g.sum()).astype(np.float32)


def _filter_valid(x: jax.Array) -> jax.Array:
  """Separable Gaussian filter, valid region. `x: [N, H, W, C]` → `[N, H-10, W-10, C]`."""
  g = jnp.asarray(_gaussian_taps())
  k = g.shape[0]
  h, w = x.shape[1] - k + 1, x.shape[2] - k + 1
  rows = sum(g[i] * x[:, i:i + h] for i in range(k))
  return sum(g[j] * rows[:, :, j:j + w] for j in range(k))


def ssim(pred: jax.Array, target: jax.Array, data_range: float = 1.0) -> jax.Array:
  """Mean SSIM per image `[...]` (see module docstring). Images must be at least 11×11."""
  if pred.shape != target.shape:
    raise ValueError(f"ssim: images must have equal shapes, got {pred.shape} and {target.shape}")
  lead, (h, w, c) = pred.shape[:-3], pred.shape[-3:]
  if min(h, w) < 2 * SSIM_RADIUS + 1:
    raise ValueError(f"ssim: images must be at least {2 * SSIM_RADIUS + 1}² pixels, got {w}x{h}")
  x = pred.reshape((-1, h, w, c)).astype(jnp.float32)
  y = target.reshape((-1, h, w, c)).astype(jnp.float32)
  c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
  mx, my = _filter_valid(x), _filter_valid(y)
  sxx = _filter_valid(x * x) - mx * mx
  syy = _filter_valid(y * y) - my * my
  sxy = _filter_valid(x * y) - mx * my
  s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
  return jnp.mean(s, axis=(1, 2, 3)).reshape(lead)


class LPIPSMetric:
  """LPIPS-VGG distance per image (lower is better), the official weights via models/lpips.py.

  `LPIPSMetric()(pred [..., H, W, 3], target)` → `[...]`; jitted once per input shape.
  """

  def __init__(self, path: str | None = None):
    from instant3d_jax.models import lpips as lpips_lib  # lazy: reads a 58 MB weight file
    self.module, self.params = lpips_lib.load_lpips(path)
    self._fn = jax.jit(lambda p, x, y: self.module.apply({"params": p}, x, y))

  def __call__(self, pred: jax.Array, target: jax.Array) -> jax.Array:
    lead, hwc = pred.shape[:-3], pred.shape[-3:]
    d = self._fn(self.params, jnp.reshape(pred, (-1,) + hwc), jnp.reshape(target, (-1,) + hwc))
    return d.reshape(lead)
