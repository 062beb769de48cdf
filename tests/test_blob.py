"""Gaussian-blob start: the image has the documented geometry, and the noised start latents
have the intended mean image (checked through a linear, invertible stand-in for the VAE)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from instant3d_jax.diffusion import blob, schedulers


def test_blob_image_geometry():
  cfg = blob.BlobConfig(std=0.1, value=0.3, background=0.9)
  img = blob.blob_image(96, 128, cfg)
  assert img.shape == (96, 128, 3) and img.dtype == np.float32
  assert np.array_equal(img[..., 0], img[..., 2])
  vh, vw = 48, 64
  quads = [img[:vh, :vw, 0], img[:vh, vw:, 0], img[vh:, :vw, 0], img[vh:, vw:, 0]]
  for q in quads:
    np.testing.assert_array_equal(q, quads[0])  # one identical blob per view
    w = cfg.background - q  # ≥ 0, the blob's mass
    yy, xx = np.mgrid[:vh, :vw] + 0.5
    cy, cx = (w * yy).sum() / w.sum(), (w * xx).sum() / w.sum()
    assert cy == pytest.approx(vh / 2, abs=1e-4) and cx == pytest.approx(vw / 2, abs=1e-4)
    sx = np.sqrt((w * (xx - cx) ** 2).sum() / w.sum())
    sy = np.sqrt((w * (yy - cy) ** 2).sum() / w.sum())
    # σ is a fraction of each view side (5σ from centre to edge: truncation is negligible).
    assert sx == pytest.approx(0.1 * vw, rel=2e-3) and sy == pytest.approx(0.1 * vh, rel=2e-3)
    assert q.min() == pytest.approx(0.3, abs=0.01) and q[0, 0] == pytest.approx(0.9, abs=1e-5)


def _linear_vae():
  """encode: 8×8 average pool, then a fixed 3 → 4 channel map; decode: its pseudo-inverse.
  decode(encode(x)) = 8×8-pooled x exactly, so 'the mean image' is observable."""
  m = np.array([[0.5, -0.2, 0.1, 0.3], [0.2, 0.4, -0.3, 0.1], [-0.1, 0.3, 0.6, 0.2]], np.float32)
  pinv = np.linalg.pinv(m)

  def encode(x):
    b, h, w, c = x.shape
    pooled = x.reshape(b, h // 8, 8, w // 8, 8, c).mean((2, 4))
    return pooled @ m

  return encode, lambda z: z @ pinv


@pytest.mark.parametrize("kind,strength", [("ddim", 0.5), ("euler", 1.0), ("dpmpp_2m", 0.8)])
def test_start_latents_have_the_blob_as_mean_image(kind, strength):
  cfg = blob.BlobConfig(std=0.15, value=0.4, background=1.0, init_strength=strength)
  scaling = 0.13025
  encode, decode = _linear_vae()
  full = schedulers.make_schedule(kind, schedulers.SchedulerConfig(), 100)
  start = blob.start_step(100, strength)
  assert start == round(100 * (1 - strength))
  sched = full.start_at(start)
  clean = blob.encode_image(encode, blob.blob_image(64, 64, cfg), scaling)
  # Antithetic draws (ε, −ε): the sample mean over noise equals the expectation exactly, so the
  # mean image can be checked tightly; the spread is checked on the same draws.
  eps = jax.random.normal(jax.random.PRNGKey(0), (1024,) + clean.shape[1:])
  noise = jnp.concatenate([eps, -eps])
  lat = blob.start_latents(clean, sched, noise)
  scale = float(schedulers.start_signal_scale(sched))
  # Noise std of the start: √(1−ᾱ) at the first kept timestep (DDIM/DPM), σ for Euler.
  ac = schedulers.alphas_cumprod(schedulers.SchedulerConfig())
  t0 = float(sched.timesteps[0])
  assert t0 == float(full.timesteps[start])
  sigma0 = float(np.interp(t0, np.arange(1000), np.sqrt((1 - ac) / ac)))
  want_std = sigma0 if kind == "euler" else np.sqrt(1 - np.interp(t0, np.arange(1000), ac))
  want_scale = 1.0 if kind == "euler" else np.sqrt(np.interp(t0, np.arange(1000), ac))
  assert scale == pytest.approx(want_scale, rel=1e-5)
  assert float(jnp.std(lat - scale * clean)) == pytest.approx(want_std, rel=0.01)
  # Mean image: decode(mean latent / signal scale / scaling) = the 8×8-pooled blob grid.
  mean_img = decode(np.asarray(lat.mean(0), np.float64) / scale / scaling) * 0.5 + 0.5
  y = (np.arange(32) + 0.5) / 32 - 0.5
  view = 1.0 + (0.4 - 1.0) * np.exp(-(y[:, None] ** 2 + y[None] ** 2) / (2 * 0.15 ** 2))
  want = np.tile(view, (2, 2)).reshape(8, 8, 8, 8).mean((1, 3))
  err = np.abs(mean_img - want[..., None]).max()
  print(f"{kind} strength {strength}: mean-image max error {err:.2e}")
  assert err < 1e-3 * max(1.0, want_std / scale)


def test_bad_blob_settings():
  with pytest.raises(ValueError, match=r"init_strength must be in \(0, 1\], got 1.5"):
    blob.BlobConfig(init_strength=1.5)
  with pytest.raises(ValueError, match=r"runs no step"):
    blob.start_step(10, 0.05)
  with pytest.raises(ValueError, match=r"must be even"):
    blob.blob_image(63, 64)
