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


def _structured_pairs():
  """Images where fp32 SSIM is hardest: flat regions, hard edges, an object on white."""
  rng = np.random.default_rng(3)
  yy, xx = np.mgrid[0:48, 0:48] / 48.0
  waves = np.stack([np.sin(6 * xx) * 0.5 + 0.5, (xx > 0.5) * 1.0, yy], -1)
  disc = np.where((np.hypot(yy - 0.5, xx - 0.5) < 0.3)[..., None],
                  np.stack([xx, yy, 0.5 + 0 * xx], -1), 1.0)
  white = np.ones((24, 24, 3))
  pairs = [(waves, np.clip(waves * 0.9 + 0.05, 0, 1)),
           (disc, np.clip(disc + 0.02 * rng.normal(size=disc.shape), 0, 1)),
           (white, white - 1e-4 * rng.uniform(size=white.shape)),
           (waves, 1.0 - waves)]
  return [(a.astype(np.float32), b.astype(np.float32)) for a, b in pairs]


def _skimage_ssim(a, b):
  return structural_similarity(a.astype(np.float64), b.astype(np.float64), gaussian_weights=True,
                               sigma=1.5, use_sample_covariance=False, data_range=1.0,
                               channel_axis=-1)


def test_ssim_matches_skimage():
  a, b = _images(0)
  ours = np.asarray(metrics.ssim(b, a))
  np.testing.assert_allclose(ours, [_skimage_ssim(b[i], a[i]) for i in range(len(a))], atol=2e-5)
  assert np.allclose(metrics.ssim(a, a), 1.0, atol=1e-6)
  assert metrics.ssim(a.reshape(3, 1, 24, 20, 3), b.reshape(3, 1, 24, 20, 3)).shape == (3, 1)


@pytest.mark.parametrize("case", range(4))
def test_ssim_matches_skimage_on_structured_images(case):
  # The comparison kept from switching to dm_pix (metrics module docstring): skimage in float64 is
  # the reference; fp32 rounding in near-constant windows is what remains (measured <= 2e-5;
  # the former hand-written SSIM was 3.4e-5 off on case 0).
  a, b = _structured_pairs()[case]
  np.testing.assert_allclose(metrics.ssim(a, b), _skimage_ssim(a, b), atol=3e-5)


def test_psnr_with_max_value_and_identical_images():
  a, b = _images(1)
  np.testing.assert_allclose(metrics.psnr(255 * a, 255 * b, max_value=255.0),
                             metrics.psnr(a, b), rtol=1e-5)
  assert np.isinf(metrics.psnr(a, a)).all()
  np.testing.assert_allclose(metrics.mse(a, b), ((a - b) ** 2).mean(axis=(1, 2, 3)), rtol=1e-5)


def test_ssim_rejects_small_or_mismatched():
  with pytest.raises(ValueError, match="at least 11"):
    metrics.ssim(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))
  with pytest.raises(ValueError, match="equal shapes"):
    metrics.ssim(np.zeros((16, 16, 3)), np.zeros((16, 17, 3)))


def _object_on_white(seed=0, shape=(2, 3, 16, 16)):
  """Targets `[..., H, W, 3]` with a square object (mask 1) on white, and the mask `[..., H, W]`."""
  rng = np.random.default_rng(seed)
  mask = np.zeros(shape, np.float32)
  mask[..., 4:10, 5:12] = 1.0                      # 42 object pixels per view
  colour = rng.uniform(0.2, 0.8, size=shape + (3,)).astype(np.float32)
  target = np.where(mask[..., None] > 0, colour, 1.0).astype(np.float32)
  return target, mask


def test_colour_error_of_a_known_offset():
  # Off by exactly 10/255 in every channel inside the mask, arbitrary outside: 10.0 in 0–255 units.
  target, mask = _object_on_white()
  pred = np.where(mask[..., None] > 0, target + 10 / 255, 0.0).astype(np.float32)
  np.testing.assert_allclose(metrics.colour_error(pred, target, mask), np.full((2, 3), 10.0),
                             rtol=1e-4)
  # Only one channel off by 30/255 → mean over channels 10.0; soft mask ≤ 0.5 is background.
  pred = target.copy()
  pred[..., 0] = np.where(mask > 0, target[..., 0] - 30 / 255, target[..., 0])
  soft = mask.copy()
  soft[..., 0, :] = 0.5                            # a row at exactly 0.5 is not foreground
  np.testing.assert_allclose(metrics.colour_error(pred, target, soft), np.full((2, 3), 10.0),
                             rtol=1e-4)
  assert np.all(np.asarray(metrics.colour_error(target, target, mask)) == 0)


def test_foreground_psnr_of_a_known_masked_error():
  target, mask = _object_on_white(1)
  # Error 0.1 on every object pixel, huge error outside which must not count: masked MSE 0.01.
  pred = np.where(mask[..., None] > 0, target + 0.1, 0.0).astype(np.float32)
  none = np.zeros_like(mask)
  np.testing.assert_allclose(metrics.foreground_psnr(pred, target, mask, none),
                             np.full((2, 3), 20.0), rtol=1e-5)
  # Whole-image PSNR of the same prediction is far lower: the background error dominates.
  assert np.all(np.asarray(metrics.psnr(pred, target)) < 5.0)


def test_foreground_psnr_counts_the_union_of_mask_and_opacity():
  target, mask = _object_on_white(2, shape=(1, 16, 16))
  pred = target.copy()
  pred[0, 4:10, 5:12] += 0.1                       # 42 mask pixels, squared error 0.01 each
  opacity = np.zeros_like(mask)
  opacity[0, 12:14, 0:7] = 0.9                     # 14 extra pixels the model says are opaque …
  pred[0, 12:14, 0:7] = 1.0 - 0.2                  # … painted 0.2 off the white (0.04 each)
  opacity[0, 4:6, 5:12] = 0.7                      # inside the mask: no double counting
  want_mse = (42 * 0.01 + 14 * 0.04) / 56
  np.testing.assert_allclose(metrics.foreground_psnr(pred, target, mask, opacity),
                             [10 * np.log10(1 / want_mse)], rtol=1e-5)
  # At threshold 0.95 the opacity (0.9) no longer counts, the mask (1.0) still does: only its 42
  # pixels remain.
  np.testing.assert_allclose(metrics.foreground_psnr(pred, target, mask, opacity, thr=0.95),
                             [20.0], rtol=1e-5)


def test_views_without_foreground_are_nan():
  # A view with no pixel above the threshold has no foreground metric: NaN (the protocol skips it
  # in its averages and counts it), not 0 or inf.
  target, mask = _object_on_white(3)
  mask[0, 1] = 0.0
  pred = np.clip(target - 0.05, 0, 1).astype(np.float32)
  ce = np.asarray(metrics.colour_error(pred, target, mask))
  fp = np.asarray(metrics.foreground_psnr(pred, target, mask, np.zeros_like(mask)))
  assert np.isnan(ce[0, 1]) and np.isnan(fp[0, 1])
  assert np.isfinite(np.delete(ce.ravel(), 1)).all() and np.isfinite(np.delete(fp.ravel(), 1)).all()
  # An opaque prediction on the empty view makes it count for foreground PSNR (the union).
  opacity = np.zeros_like(mask)
  opacity[0, 1, :2] = 1.0
  fp = np.asarray(metrics.foreground_psnr(pred, target, mask, opacity))
  np.testing.assert_allclose(fp[0, 1], 20 * np.log10(1 / 0.05), rtol=1e-4)


def test_foreground_metrics_reject_mismatched_shapes():
  target, mask = _object_on_white()
  with pytest.raises(ValueError, match="mask"):
    metrics.colour_error(target, target, mask[..., :8])
  with pytest.raises(ValueError, match="opacity"):
    metrics.foreground_psnr(target, target, mask, mask[0])


def test_protocol_leaves_views_without_foreground_out():
  # eval/protocol.py's averaging: NaN views (no foreground) are left out and counted; an object
  # with no foreground view is NaN per object and left out of the summary; the table says so.
  from instant3d_jax.eval import protocol
  v = np.array([[10.0, np.nan, 20.0], [np.nan, np.nan, np.nan], [1.0, 2.0, 3.0]])
  means, left_out = protocol.object_means(v, skip_nan=True)
  np.testing.assert_array_equal(means, [15.0, np.nan, 2.0])
  np.testing.assert_array_equal(left_out, [1, 3, 0])
  np.testing.assert_array_equal(protocol.object_means(v[2:], skip_nan=False)[0], [2.0])
  results = {"summary": {"psnr": 20.5, "foreground_psnr": 15.25, "colour_error": 12.34,
                         "background_psnr": 10.0, "background_colour_error": 150.0},
             "num_objects": 2, "num_views_per_object": 3, "split": "test", "rotate_deg": -45.0,
             "resolution": 16, "seed": 0, "mean_colour": [0.5, 0.25, 0.125],
             "views_without_foreground": {"colour_error": 4, "foreground_psnr": 0}}
  table = protocol.markdown_table(results)
  assert "| model | 20.50 | – | – | 15.25 | 12.3 |" in table
  assert "| background only | 10.00 | – | – | – | 150.0 |" in table
  assert "mean colour |" not in table                   # no values, no row
  assert "RGB (0.500, 0.250, 0.125)" in table
  assert "left out of that metric's averages: colour_error 4." in table
