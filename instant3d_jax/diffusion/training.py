"""Stage-1 training math (the text → 2×2 grid diffusion model): what one step draws, the noisy
input and its target, caption dropout, SDXL micro-conditioning and the loss.

Follows diffusers' `train_text_to_image_sdxl.py` (the recipe an Instant3D-derived training config
uses; docs/paper_facts.md §A: ε-prediction on a 1000-step DDPM schedule, micro-conditioning at
1024² with crop (0, 0), all low-confidence defaults, not paper facts):
  * timesteps uniform in [0, T) (`torch.randint(0, T)`), noise N(0, I) of the latents' shape;
  * x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε (`DDPMScheduler.add_noise`); target ε (`epsilon`) or
    v = √ᾱ_t ε − √(1−ᾱ_t) x0 (`v_prediction`, `get_velocity`) — diffusion/schedulers.py;
  * loss = mean squared error over every element, in fp32 (`F.mse_loss(pred.float(),
    target.float())`);
  * caption dropout: a dropped sample gets zero context *and* zero pooled embedding, exactly the
    sampler's unconditional half (diffusion/sampling.py, `force_zeros_for_empty_prompt`), so the
    model learns the unconditional branch classifier-free guidance asks for;
  * `add_time_ids` = (original h, w, crop top, left, target h, w) per sample, as
    `StableDiffusionXLPipeline._get_add_time_ids` builds it.
The EMA of the weights lives in the train state (instant3d_jax/train/step.py, `ema_update`).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from instant3d_jax import errors
from instant3d_jax.diffusion import sampling
from instant3d_jax.diffusion import schedulers

TRAIN_PREDICTION_TYPES = ("epsilon", "v_prediction")


class Draws(NamedTuple):
  """The random numbers of one step: `timesteps [B] int32` uniform in [0, T), `noise` (the
  latents' shape, fp32) and `keep [B] bool` (False: the sample's caption is dropped)."""
  timesteps: jax.Array
  noise: jax.Array
  keep: jax.Array


def draw(key: jax.Array, latent_shape: tuple[int, ...], num_train_timesteps: int,
         caption_dropout: float) -> Draws:
  """`Draws` for a batch of latents of `latent_shape` ([B, h, w, C]) from one key."""
  if not 0.0 <= caption_dropout <= 1.0:
    raise errors.ConfigError(f"diffusion.caption_dropout must be in [0, 1], got {caption_dropout}")
  b = latent_shape[0]
  k_t, k_n, k_d = jax.random.split(key, 3)
  t = jax.random.randint(k_t, (b,), 0, int(num_train_timesteps), dtype=jnp.int32)
  noise = jax.random.normal(k_n, latent_shape, jnp.float32)
  keep = jax.random.uniform(k_d, (b,)) >= caption_dropout
  return Draws(t, noise, keep)


def drop_captions(keep: jax.Array, context: jax.Array, pooled: jax.Array
                  ) -> tuple[jax.Array, jax.Array]:
  """Zeroes context `[B, L, D]` and pooled `[B, P]` of the samples where `keep [B]` is False."""
  k = keep.astype(context.dtype)
  return context * k[:, None, None], pooled * keep.astype(pooled.dtype)[:, None]


def noisy_and_target(alphas_cumprod_: jax.Array, x0: jax.Array, noise: jax.Array,
                     timesteps: jax.Array, prediction_type: str) -> tuple[jax.Array, jax.Array]:
  """`(x_t, target)`: the forward-process sample at `timesteps` and what the model regresses."""
  if prediction_type not in TRAIN_PREDICTION_TYPES:
    raise errors.ConfigError(f"diffusion.prediction_type must be one of {TRAIN_PREDICTION_TYPES}, "
                             f"got {prediction_type!r}")
  x_t = schedulers.add_noise(alphas_cumprod_, x0, noise, timesteps)
  return x_t, schedulers.training_target(prediction_type, alphas_cumprod_, x0, noise, timesteps)


def add_time_ids(batch: int, height: int, width: int, original_size=None,
                 crops_coords_top_left=(0, 0), target_size=None) -> np.ndarray:
  """SDXL micro-conditioning `[B, 6]` float32 for training images of `height × width` (0 or
  None sizes mean the image size), the same numbers the sampler feeds
  (`sampling.micro_conditioning`)."""
  size = lambda v: tuple(int(x) for x in v) if v is not None and any(v) else None
  return sampling.micro_conditioning(batch, int(height), int(width), size(original_size),
                                     tuple(int(x) for x in crops_coords_top_left),
                                     size(target_size))


def min_snr_weights(alphas_cumprod_: jax.Array, timesteps: jax.Array, gamma: float,
                    prediction_type: str) -> jax.Array:
  """Min-SNR-γ loss weights per sample (Hang et al. 2023, "Efficient Diffusion Training via
  Min-SNR Weighting Strategy"), as diffusers' `train_text_to_image*.py --snr_gamma`:
  min(SNR_t, γ) / SNR_t for ε-prediction, min(SNR_t, γ) / (SNR_t + 1) for v-prediction, with
  SNR_t = ᾱ_t / (1 − ᾱ_t)."""
  a = alphas_cumprod_[timesteps]
  snr = a / (1.0 - a)
  w = jnp.minimum(snr, jnp.float32(gamma))
  return w / snr if prediction_type == "epsilon" else w / (snr + 1.0)


def diffusion_loss(denoise: Callable[..., jax.Array], x0: jax.Array, context: jax.Array,
                   pooled: jax.Array, time_ids: jax.Array, draws: Draws,
                   alphas_cumprod_: jax.Array, prediction_type: str, snr_gamma: float = 0.0
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`(loss, metrics)` of one batch. `denoise(x_t, t, context, pooled, time_ids)` is the UNet
  with its params bound; `x0 [B, h, w, C]` the (scaled) clean latents; context/pooled the text
  conditioning before dropout; `draws` the step's timesteps, noise and caption-keep mask.
  `snr_gamma` > 0 weights each sample's MSE by `min_snr_weights` (0: the plain mean)."""
  ctx, pool = drop_captions(draws.keep, context, pooled)
  x_t, target = noisy_and_target(alphas_cumprod_, x0.astype(jnp.float32), draws.noise,
                                 draws.timesteps, prediction_type)
  pred = denoise(x_t, draws.timesteps, ctx, pool, time_ids).astype(jnp.float32)
  per_sample = jnp.mean((pred - target) ** 2, axis=tuple(range(1, pred.ndim)))
  mse = jnp.mean(per_sample)
  loss = mse
  if snr_gamma and snr_gamma > 0:
    loss = jnp.mean(per_sample * min_snr_weights(alphas_cumprod_, draws.timesteps,
                                                 float(snr_gamma), prediction_type))
  return loss, {"mse": mse, "dropped_fraction": 1.0 - jnp.mean(draws.keep.astype(jnp.float32)),
                "timestep_mean": jnp.mean(draws.timesteps.astype(jnp.float32))}


def latents_from_posterior(mean: jax.Array, logvar: jax.Array, key: jax.Array | None,
                           scaling_factor: float, shift_factor: float | None) -> jax.Array:
  """UNet latents from the autoencoder's posterior: a sample (`key`) or the mean (`key=None`),
  then `(z − shift) · scaling_factor` as diffusers' SDXL training does (`latent_dist.sample()
  * vae.config.scaling_factor`)."""
  z = mean.astype(jnp.float32)
  if key is not None:
    z = z + jnp.exp(0.5 * logvar.astype(jnp.float32)) * jax.random.normal(key, z.shape)
  return (z - (shift_factor or 0.0)) * scaling_factor


def pixels_to_model_range(grid_uint8: jax.Array) -> jax.Array:
  """uint8 `[..., H, W, 3]` in [0, 255] → float32 in [-1, 1] (the VAE's input range)."""
  return grid_uint8.astype(jnp.float32) / 127.5 - 1.0


def scheduler_config(diffusion_cfg: Any) -> schedulers.SchedulerConfig:
  """The config's `diffusion.scheduler` (a diffusers `scheduler_config.json` dict) as a
  `SchedulerConfig`, with the training `prediction_type` written into it (so the sampler reads
  the model's output the way it was trained)."""
  d = dict(diffusion_cfg.scheduler)
  d["prediction_type"] = str(diffusion_cfg.prediction_type)
  if d["prediction_type"] not in TRAIN_PREDICTION_TYPES:
    raise errors.ConfigError(f"diffusion.prediction_type must be one of {TRAIN_PREDICTION_TYPES}, "
                             f"got {d['prediction_type']!r}")
  return schedulers.SchedulerConfig.from_diffusers(d)


def train_alphas_cumprod(sched: schedulers.SchedulerConfig) -> np.ndarray:
  """ᾱ_t of the DDPM training schedule as float32 (diffusers keeps it in fp32)."""
  return np.asarray(schedulers.alphas_cumprod(sched.for_kind("ddim")), np.float32)
