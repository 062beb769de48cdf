"""Gaussian-blob initialisation of the four-view sampler (Instant3D §3.1, ablated in the paper).

Instead of pure noise, sampling starts from a clean "blob" grid — one grey Gaussian blob centred
in each 512² view of the 2×2 grid, on the background colour — encoded by the VAE and noised to
the schedule's first step, img2img style. Why it works even at full strength: SDXL's
scaled-linear schedule has a non-zero terminal SNR (√ᾱ ≈ 0.068 at t = 991 for DDIM-100), so the
low frequencies of the start latent survive the noise and fix each object's position, size and
the clean background the reconstructor expects.

The paper gives no numbers for the blob (docs/paper_facts.md §A: "Blob size/std, gray value, start
timestep/noise level: NOT FOUND"); the defaults here are our choices, config knobs in
`configs/sdxl.py` (`blob.*`):
  std = 0.2            Gaussian σ as a fraction of the view side (FWHM ≈ 0.47 view: about the
                       extent of a normalised object in the rig's 50° field of view at 2.7 units)
  value = 0.5          grey level at the blob centre (neutral: no colour prior on the object)
  background = 1.0     white, the background of the training renders (configs/lrm.py)
  init_strength = 1.0  fraction of the denoising steps that are run (img2img "strength"): 1.0
                       starts at the schedule's first timestep, smaller values start later and
                       keep more of the blob.
"""
from __future__ import annotations

from instant3d_jax import errors

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from instant3d_jax.diffusion import schedulers

VIEWS_PER_SIDE = 2  # the 2×2 grid of the Instant3D rig


@dataclasses.dataclass(frozen=True)
class BlobConfig:
  std: float = 0.2
  value: float = 0.5
  background: float = 1.0
  init_strength: float = 1.0

  def __post_init__(self):
    if not self.std > 0:
      raise errors.ConfigError(f"blob std must be > 0 (fraction of the view side), got {self.std}")
    for name in ("value", "background"):
      v = getattr(self, name)
      if not 0.0 <= v <= 1.0:
        raise errors.ConfigError(f"blob {name} must be a grey level in [0, 1], got {v}")
    if not 0.0 < self.init_strength <= 1.0:
      raise errors.ConfigError(f"blob init_strength must be in (0, 1], got {self.init_strength}")


def blob_image(height: int, width: int, cfg: BlobConfig = BlobConfig()) -> np.ndarray:
  """The clean start image: `[height, width, 3]` float32 in [0, 1], one blob per view.

  In each view (height/2 × width/2) the grey level is
  `background + (value − background) · exp(−r² / 2σ²)`, r measured from the view centre in
  units of the view side (pixel centres at +0.5), σ = `cfg.std`."""
  if height % VIEWS_PER_SIDE or width % VIEWS_PER_SIDE:
    raise ValueError(f"grid height and width must be even (2×2 views), got {height}×{width}")
  vh, vw = height // VIEWS_PER_SIDE, width // VIEWS_PER_SIDE
  y = (np.arange(vh) + 0.5) / vh - 0.5
  x = (np.arange(vw) + 0.5) / vw - 0.5
  r2 = y[:, None] ** 2 + x[None, :] ** 2
  view = cfg.background + (cfg.value - cfg.background) * np.exp(-r2 / (2 * cfg.std ** 2))
  grid = np.tile(view, (VIEWS_PER_SIDE, VIEWS_PER_SIDE))
  return np.repeat(grid[..., None], 3, axis=-1).astype(np.float32)


def start_step(num_steps: int, init_strength: float) -> int:
  """Index of the first step that runs (diffusers img2img `get_timesteps`)."""
  run = min(int(num_steps * init_strength), num_steps)
  if run < 1:
    raise errors.ConfigError(f"init_strength {init_strength} with {num_steps} steps runs no step; "
                     f"need init_strength >= 1/num_steps = {1 / num_steps:.4f}")
  return num_steps - run


def encode_image(encode_fn: Callable[[jax.Array], jax.Array], image: np.ndarray,
                 scaling_factor: float, shift_factor: float | None = None) -> jax.Array:
  """`image [H, W, 3]` in [0, 1] → the scaled clean latent `[1, h, w, C]` the UNet works on.

  `encode_fn(x [1, H, W, 3] in [-1, 1]) → latent mean` (the VAE encoder's mean: deterministic,
  the start is noised anyway). SDXL: (mean − shift) · scaling_factor, shift None → 0."""
  x = jnp.asarray(image, jnp.float32)[None] * 2.0 - 1.0
  mean = encode_fn(x).astype(jnp.float32)
  return (mean - (shift_factor or 0.0)) * scaling_factor


def start_latents(clean_latent: jax.Array, schedule: schedulers.Schedule, noise: jax.Array
                  ) -> jax.Array:
  """Noises `clean_latent [1 or B, h, w, C]` to the first step of `schedule` (already cut with
  `schedule.start_at`) with `noise [B, h, w, C]` → `[B, h, w, C]` float32.

  Mean over noise draws: `start_signal_scale(schedule) · clean_latent` (√ᾱ for DDIM)."""
  x0 = jnp.broadcast_to(clean_latent, noise.shape)
  return schedulers.add_noise_at_start(schedule, x0, noise)
