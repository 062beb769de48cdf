"""Eval metrics against oracles: analytic PSNR, skimage SSIM, the LPIPS module's own distance."""
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from instant3d_jax.eval import metrics


def _images(seed, shape=(3, 24, 20, 3)):
  rng = np.random.default_rng(seed)
  a = rng.uniform(size=shape).astype(np.float32)
  b = np.clip(a + rng.normal(scale=0.1, size=shape), 0, 1).astype(np.float32)
  return a, b


def test_psnr_analytic():
  a = np.zeros((2, 8, 8, 3), np.float32)
  b = a.copy()
  b[0] += 0.1          # MSE 0.01 → 20 dB
  b[1, :4] += 0.5      # MSE 0.125 → 9.0309 dB
  np.testing.assert_allclose(metrics.psnr(b, a), [20.0, 10 * np.log10(8.0)], rtol=1e-5)


def test_ssim_matches_skimage():
  a, b = _images(0)
  ours = np.asarray(metrics.ssim(b, a))
  ref = [structural_similarity(b[i], a[i], gaussian_weights=True, sigma=1.5,
                               use_sample_covariance=False, data_range=1.0, channel_axis=-1)
         for i in range(len(a))]
  np.testing.assert_allclose(ours, ref, atol=2e-5)
  assert np.allclose(metrics.ssim(a, a), 1.0, atol=1e-6)


def test_ssim_rejects_small_or_mismatched():
  with pytest.raises(ValueError, match="at least 11"):
    metrics.ssim(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))
  with pytest.raises(ValueError, match="equal shapes"):
    metrics.ssim(np.zeros((16, 16, 3)), np.zeros((16, 17, 3)))
