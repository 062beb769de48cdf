"""A parameter-free "autoencoder" with the VAE's interface: pixel unshuffle (space-to-depth) in,
pixel shuffle out. The `tiny` stage-1 model trains on it from scratch (issue 14): a random VAE
cannot decode its own latents, and this one decodes exactly.

`encode(x [B, H, W, 3] in [-1, 1]) → (mean [B, H/f, W/f, 3f²], logvar)` with logvar at the VAE's
clamp floor (−30, a posterior sample equals the mean to ~1e-7); `decode(z) → x`; channels ordered
(row offset, column offset, colour). The config offers what the sampler and `decode_chunked` read
of a `VAEConfig` (`scaling_factor`, `shift_factor`, `block_out_channels` for the factor,
`downsample_factor`, `latent_channels`, `sample_size`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from instant3d_jax import errors


@dataclasses.dataclass(frozen=True)
class PixelAEConfig:
  factor: int = 4              # latent side = image side / factor
  in_channels: int = 3
  scaling_factor: float = 1.0  # latents ×this for the UNet (pixels in [-1, 1] need none)
  shift_factor: float | None = None
  sample_size: int = 64        # only read by tiled decoding (never needed: decoding is exact)

  def __post_init__(self):
    f = int(self.factor)
    if f < 1 or f & (f - 1):
      raise errors.ConfigError(f"pixel autoencoder factor must be a power of two >= 1, got {f}")

  @property
  def downsample_factor(self) -> int:
    return int(self.factor)

  @property
  def block_out_channels(self) -> tuple[int, ...]:
    """Length log2(factor) + 1, so `2 ** (len - 1)` is the factor as for a VAE config."""
    return (0,) * (int(self.factor).bit_length())

  @property
  def latent_channels(self) -> int:
    return self.in_channels * self.factor ** 2


def space_to_depth(x: jax.Array, f: int) -> jax.Array:
  """`[B, H, W, C]` → `[B, H/f, W/f, f·f·C]`, channels (row offset, column offset, C)."""
  b, h, w, c = x.shape
  if h % f or w % f:
    raise errors.InputError(f"pixel autoencoder: image {h}×{w} is not divisible by the factor {f}")
  x = x.reshape(b, h // f, f, w // f, f, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // f, w // f, f * f * c)


def depth_to_space(z: jax.Array, f: int) -> jax.Array:
  """Inverse of `space_to_depth`."""
  b, h, w, fc = z.shape
  c = fc // (f * f)
  z = z.reshape(b, h, w, f, f, c).transpose(0, 1, 3, 2, 4, 5)
  return z.reshape(b, h * f, w * f, c)


class PixelUnshuffleAE(nn.Module):
  """Parameter-free stand-in for `AutoencoderKL` (same `encode` / `decode` / `__call__`)."""
  config: PixelAEConfig
  dtype: Any = jnp.float32

  def encode(self, x):
    mean = space_to_depth(x.astype(jnp.float32), self.config.factor)
    return mean, jnp.full_like(mean, -30.0)

  def decode(self, z):
    return depth_to_space(z.astype(jnp.float32), self.config.factor).astype(self.dtype)

  def __call__(self, x):
    return self.decode(self.encode(x)[0])
