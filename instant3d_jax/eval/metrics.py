"""Image metrics: PSNR, SSIM (Wang et al. 2004), LPIPS-VGG and two foreground metrics (PSNR over
the object, colour error in 0–255 units; NaN for an image without foreground), batched, in JAX.

Conventions: images `[..., H, W, 3]` float in [0, 1]; every metric returns one value per image
(`[...]`), the caller averages. PSNR and SSIM are DeepMind's `dm_pix` (computed in fp32). SSIM
uses the standard Gaussian window (11 taps, σ = 1.5, K1 = 0.01, K2 = 0.03, data range 1),
computed per channel over the pixels whose whole window lies inside the image ("valid"), then
averaged over pixels and channels: the same quantity as
`skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1, channel_axis=-1)`.

Measured before switching from the project's own SSIM to dm_pix (tests/test_eval_metrics.py
keeps the comparison with skimage): in float64 the two and skimage agree to 2e-11 (random,
structured, object-on-white and near-white images), so window, border and constants are the
same; in fp32 they differ by up to 4e-5, from rounding in the E[x²] − E[x]² variances of
near-constant windows (dm_pix also clamps those at 0 and the covariance at √(σx²σy²)). On those
images dm_pix is within 2e-5 of skimage's float64 value, the former code was up to 3.4e-5 off.
"""
from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp

SSIM_SIGMA = 1.5
SSIM_SIZE = 11   # window taps: radius int(3.5·σ + 0.5) = 5, scipy's truncate=3.5, as skimage uses
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _batched(pred: jax.Array, target: jax.Array, metric: str):
  """`[..., H, W, C]` pairs → fp32 `[N, H, W, C]` pairs and the leading shape."""
  if pred.shape != target.shape:
    raise ValueError(f"{metric}: images must have equal shapes, got {pred.shape} and "
                     f"{target.shape}")
  if pred.ndim < 3:
    raise ValueError(f"{metric}: images must be [..., H, W, C], got shape {pred.shape}")
  lead, hwc = pred.shape[:-3], pred.shape[-3:]
  as_batch = lambda x: jnp.reshape(jnp.asarray(x, jnp.float32), (-1,) + hwc)
  return as_batch(pred), as_batch(target), lead


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean squared error per image `[...]`."""
  x, y, lead = _batched(pred, target, "mse")
  return dm_pix.mse(x, y).reshape(lead)


def psnr(pred: jax.Array, target: jax.Array, max_value: float = 1.0) -> jax.Array:
  """PSNR in dB per image: 10·log10(max² / MSE) (inf for identical images)."""
  x, y, lead = _batched(pred, target, "psnr")
  # dm_pix assumes a dynamic range of 1: 10·log10(max²/MSE) = its value + 20·log10(max).
  return (dm_pix.psnr(x, y) + 20.0 * jnp.log10(jnp.float32(max_value))).reshape(lead)


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean squared error per image `[...]` over its pixels and 3 channels."""
  x, y, lead = _batched(pred, target, "mse")
  return jnp.mean(jnp.square(x - y), axis=(1, 2, 3)).reshape(lead)


def foreground_mse(pred: jax.Array, target: jax.Array, gt_mask: jax.Array,
                   thr: float = 0.5) -> jax.Array:
  """Mean squared error per image over the pixels whose ground-truth mask (`[..., H, W]`)
  exceeds `thr` and the 3 channels: a region that does not depend on the prediction (unlike
  `foreground_psnr`'s), so two models' values share one denominator. NaN without mask pixels."""
  pred, target = _foreground(pred, target, gt_mask, "foreground_mse")
  region = jnp.asarray(gt_mask) > thr
  return _masked_mean(jnp.mean(jnp.square(pred - target), axis=-1), region)


def ssim(pred: jax.Array, target: jax.Array, data_range: float = 1.0) -> jax.Array:
  """Mean SSIM per image `[...]` (see module docstring). Images must be at least 11×11."""
  x, y, lead = _batched(pred, target, "ssim")
  h, w = x.shape[1:3]
  if min(h, w) < SSIM_SIZE:
    raise ValueError(f"ssim: images must be at least {SSIM_SIZE}² pixels, got {w}x{h}")
  s = dm_pix.ssim(x, y, max_val=data_range, filter_size=SSIM_SIZE, filter_sigma=SSIM_SIGMA,
                  k1=SSIM_K1, k2=SSIM_K2)
  return s.reshape(lead)


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


def _foreground(pred, target, mask, metric: str, opacity=None):
  """fp32 `[..., H, W, 3]` pairs and `[..., H, W]` masks of equal leading shapes."""
  pred, target = jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32)
  if pred.shape != target.shape or pred.ndim < 3:
    raise ValueError(f"{metric}: images must be [..., H, W, C] of equal shapes, got {pred.shape} "
                     f"and {target.shape}")
  for name, m in (("mask", mask), ("opacity", opacity)):
    if m is not None and tuple(jnp.shape(m)) != pred.shape[:-1]:
      raise ValueError(f"{metric}: the {name} must be [..., H, W] = {pred.shape[:-1]} like the "
                       f"images, got {tuple(jnp.shape(m))}")
  return pred, target


def _masked_mean(per_pixel: jax.Array, region: jax.Array) -> jax.Array:
  """Mean of `per_pixel [..., H, W]` over `region` per image; NaN where the region is empty."""
  n = jnp.sum(region, axis=(-2, -1))
  total = jnp.sum(jnp.where(region, per_pixel, 0.0), axis=(-2, -1))
  return jnp.where(n > 0, total / jnp.maximum(n, 1), jnp.nan)


def foreground_psnr(pred: jax.Array, target: jax.Array, gt_mask: jax.Array,
                    pred_opacity: jax.Array | None, thr: float = 0.5,
                    max_value: float = 1.0) -> jax.Array:
  """PSNR in dB per image over the foreground: the pixels where the ground-truth mask or the
  predicted opacity (`[..., H, W]`, None: the mask alone) exceeds `thr`.
  10·log10(max² / MSE) with the MSE averaged over those pixels and the 3 channels; an image
  without such pixels gives NaN (callers skip it in their averages), identical foregrounds inf.

  The union keeps both failure modes in the number: colour wrong on the object (mask) and haze
  the model paints over the background (opacity)."""
  pred, target = _foreground(pred, target, gt_mask, "foreground_psnr", pred_opacity)
  region = jnp.asarray(gt_mask) > thr
  if pred_opacity is not None:
    region = region | (jnp.asarray(pred_opacity) > thr)
  mse_fg = _masked_mean(jnp.mean(jnp.square(pred - target), axis=-1), region)
  return 10.0 * jnp.log10(jnp.float32(max_value) ** 2 / mse_fg)


def colour_error(pred: jax.Array, target: jax.Array, gt_mask: jax.Array,
                 thr: float = 0.5) -> jax.Array:
  """Foreground colour error per image in 0–255 units: mean |pred − target| over the pixels whose
  ground-truth mask (`[..., H, W]`) exceeds `thr` and over the 3 channels, images in [0, 1].
  NaN for an image without mask pixels (callers skip it in their averages)."""
  pred, target = _foreground(pred, target, gt_mask, "colour_error")
  region = jnp.asarray(gt_mask) > thr
  return 255.0 * _masked_mean(jnp.mean(jnp.abs(pred - target), axis=-1), region)
