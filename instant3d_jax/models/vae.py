"""The SDXL VAE (diffusers `AutoencoderKL`) as a Flax linen module, plus chunked/tiled decoding.

Module names mirror the diffusers state dict (`encoder/down_blocks_0/resnets_1/conv1` for
`encoder.down_blocks.0.resnets.1.conv1`), see `convert/diffusers_sdxl.py`. NHWC throughout.
`encode` and `decode` work on raw latents; the SDXL `scaling_factor` (0.13025) lives in the
config and is applied by the sampler, as in diffusers pipelines.
"""
from __future__ import annotations

from instant3d_jax import errors

import dataclasses
import json
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from instant3d_jax.models import layers
from instant3d_jax.models.layers import (IMAGE_ACT_AXES, ResnetBlock2D, Upsample2D, conv2d,
                                         group_norm, maybe_remat)

Dtype = Any
# `layers.dot_product_attention` formulation of the mid-block attention under attention_impl
# 'xla' (the UNet's too: measured faster than 'jax_nn' on XLA:CPU).
XLA_ATTENTION = "heads_major"


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """Hashable view of a diffusers `vae/config.json`."""
  in_channels: int
  out_channels: int
  block_out_channels: tuple[int, ...]
  layers_per_block: int
  latent_channels: int
  norm_num_groups: int
  sample_size: int
  scaling_factor: float
  shift_factor: float | None
  use_quant_conv: bool
  use_post_quant_conv: bool
  mid_block_add_attention: bool
  diffusers_json: str = "{}"

  def to_diffusers(self) -> dict[str, Any]:
    return json.loads(self.diffusers_json)

  @property
  def downsample_factor(self) -> int:
    return 2 ** (len(self.block_out_channels) - 1)

  @classmethod
  def from_diffusers(cls, config: Mapping[str, Any]) -> "VAEConfig":
    c = dict(config)
    boc = tuple(c.get("block_out_channels", (64,)))
    n = len(boc)
    down = tuple(c.get("down_block_types", ("DownEncoderBlock2D",) * n))
    up = tuple(c.get("up_block_types", ("UpDecoderBlock2D",) * n))
    if set(down) != {"DownEncoderBlock2D"} or len(down) != n:
      raise errors.ConfigError(f"VAE config down_block_types {down} not supported; expected "
                       f"{n} x 'DownEncoderBlock2D'")
    if set(up) != {"UpDecoderBlock2D"} or len(up) != n:
      raise errors.ConfigError(f"VAE config up_block_types {up} not supported; expected "
                       f"{n} x 'UpDecoderBlock2D'")
    if c.get("act_fn", "silu") != "silu":
      raise errors.ConfigError(f"VAE config act_fn {c['act_fn']!r} not supported; expected 'silu'")
    size = c.get("sample_size", 32)
    if isinstance(size, (list, tuple)):
      size = size[0]
    return cls(in_channels=c.get("in_channels", 3), out_channels=c.get("out_channels", 3),
               block_out_channels=boc, layers_per_block=int(c.get("layers_per_block", 1)),
               latent_channels=int(c.get("latent_channels", 4)),
               norm_num_groups=int(c.get("norm_num_groups", 32)), sample_size=int(size),
               scaling_factor=float(c.get("scaling_factor", 0.18215)),
               shift_factor=c.get("shift_factor"),
               use_quant_conv=bool(c.get("use_quant_conv", True)),
               use_post_quant_conv=bool(c.get("use_post_quant_conv", True)),
               mid_block_add_attention=bool(c.get("mid_block_add_attention", True)),
               diffusers_json=json.dumps(dict(config), sort_keys=True))


class VAEAttention(nn.Module):
  """diffusers `Attention` in the VAE mid block: GroupNorm, single-head q/k/v with bias, residual.
  `x [B, h, w, C]`."""
  groups: int
  dtype: Dtype = jnp.float32
  attention_impl: str = "xla"

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    y = group_norm(self.groups, epsilon=1e-6, name="group_norm")(x).astype(self.dtype)
    y = y.reshape(b, h * w, c)
    proj = lambda name: layers.dense(c, ("embed", "heads"), dtype=self.dtype, name=name)(y)
    q, k, v = (proj(n).reshape(b, h * w, 1, c) for n in ("to_q", "to_k", "to_v"))
    o = layers.dot_product_attention(q, k, v, implementation=self.attention_impl,
                                     xla_formulation=XLA_ATTENTION)
    o = layers.dense(c, ("heads", "embed"), dtype=self.dtype, name="to_out_0")(o.reshape(b, h * w, c))
    return (o.reshape(b, h, w, c) + x).astype(self.dtype)


class VAEMidBlock(nn.Module):
  """`UNetMidBlock2D`: resnet, attention, resnet (no time embedding)."""
  groups: int
  add_attention: bool = True
  dtype: Dtype = jnp.float32
  attention_impl: str = "xla"
  remat: str = "none"

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    resnet_cls = maybe_remat(ResnetBlock2D, self.remat)
    x = resnet_cls(c, self.groups, 1e-6, self.dtype, name="resnets_0")(x)
    if self.add_attention:
      x = VAEAttention(self.groups, self.dtype, self.attention_impl, name="attentions_0")(x)
    return resnet_cls(c, self.groups, 1e-6, self.dtype, name="resnets_1")(x)


class _EncoderDownsample(nn.Module):
  """Encoder `Downsample2D(padding=0)`: zero-pad right/bottom by one, 3×3 stride-2 conv."""
  out_channels: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return conv2d(self.out_channels, 3, 2, padding=((0, 1), (0, 1)), dtype=self.dtype,
                  name="conv")(x)


class _DownEncoderBlock(nn.Module):
  out_channels: int
  num_layers: int
  groups: int
  add_downsample: bool
  dtype: Dtype = jnp.float32
  remat: str = "none"

  @nn.compact
  def __call__(self, x):
    resnet_cls = maybe_remat(ResnetBlock2D, self.remat)
    for j in range(self.num_layers):
      x = resnet_cls(self.out_channels, self.groups, 1e-6, self.dtype, name=f"resnets_{j}")(x)
    if self.add_downsample:
      x = _EncoderDownsample(self.out_channels, self.dtype, name="downsamplers_0")(x)
    return layers.constrain(x, IMAGE_ACT_AXES)


class _UpDecoderBlock(nn.Module):
  out_channels: int
  num_layers: int
  groups: int
  add_upsample: bool
  dtype: Dtype = jnp.float32
  remat: str = "none"

  @nn.compact
  def __call__(self, x):
    resnet_cls = maybe_remat(ResnetBlock2D, self.remat)
    for j in range(self.num_layers):
      x = resnet_cls(self.out_channels, self.groups, 1e-6, self.dtype, name=f"resnets_{j}")(x)
    if self.add_upsample:
      x = Upsample2D(self.out_channels, self.dtype, name="upsamplers_0")(x)
    return layers.constrain(x, IMAGE_ACT_AXES)


class Encoder(nn.Module):
  """`x [B, H, W, 3]` → `[B, H/f, W/f, 2·latent]` (mean and logvar stacked on channels)."""
  config: VAEConfig
  dtype: Dtype = jnp.float32
  attention_impl: str = "xla"
  remat: str = "none"

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    boc = cfg.block_out_channels
    x = conv2d(boc[0], dtype=self.dtype, name="conv_in")(x.astype(self.dtype))
    for i, ch in enumerate(boc):
      x = _DownEncoderBlock(ch, cfg.layers_per_block, cfg.norm_num_groups, i < len(boc) - 1,
                            self.dtype, self.remat, name=f"down_blocks_{i}")(x)
    x = VAEMidBlock(cfg.norm_num_groups, cfg.mid_block_add_attention, self.dtype,
                    self.attention_impl, self.remat, name="mid_block")(x)
    x = group_norm(cfg.norm_num_groups, epsilon=1e-6, name="conv_norm_out")(x)
    return conv2d(2 * cfg.latent_channels, dtype=self.dtype,
                  name="conv_out")(nn.silu(x).astype(self.dtype))


class Decoder(nn.Module):
  """`z [B, h, w, latent]` → `[B, h·f, w·f, 3]`."""
  config: VAEConfig
  dtype: Dtype = jnp.float32
  attention_impl: str = "xla"
  remat: str = "none"

  @nn.compact
  def __call__(self, z):
    cfg = self.config
    rev = tuple(reversed(cfg.block_out_channels))
    x = conv2d(rev[0], dtype=self.dtype, name="conv_in")(z.astype(self.dtype))
    x = VAEMidBlock(cfg.norm_num_groups, cfg.mid_block_add_attention, self.dtype,
                    self.attention_impl, self.remat, name="mid_block")(x)
    for i, ch in enumerate(rev):
      x = _UpDecoderBlock(ch, cfg.layers_per_block + 1, cfg.norm_num_groups, i < len(rev) - 1,
                          self.dtype, self.remat, name=f"up_blocks_{i}")(x)
    x = group_norm(cfg.norm_num_groups, epsilon=1e-6, name="conv_norm_out")(x)
    return conv2d(cfg.out_channels, dtype=self.dtype,
                  name="conv_out")(nn.silu(x).astype(self.dtype))


class AutoencoderKL(nn.Module):
  """diffusers `AutoencoderKL`. `encode(x [B,H,W,3] in [-1,1]) → (mean, logvar)` each
  `[B, H/f, W/f, latent]`; `decode(z) → [B, H, W, 3]` (≈[-1, 1]); `__call__` = decode(mean)."""
  config: VAEConfig
  dtype: Dtype = jnp.float32
  attention_impl: str = "xla"
  remat: str = "none"

  def setup(self):
    cfg = self.config
    kw = dict(dtype=self.dtype, attention_impl=self.attention_impl, remat=self.remat)
    self.encoder = Encoder(cfg, **kw)
    self.decoder = Decoder(cfg, **kw)
    if cfg.use_quant_conv:
      self.quant_conv = conv2d(2 * cfg.latent_channels, 1, padding="VALID", dtype=self.dtype)
    if cfg.use_post_quant_conv:
      self.post_quant_conv = conv2d(cfg.latent_channels, 1, padding="VALID", dtype=self.dtype)

  def encode(self, x):
    h = self.encoder(x)
    if self.config.use_quant_conv:
      h = self.quant_conv(h)
    mean, logvar = jnp.split(h.astype(jnp.float32), 2, axis=-1)
    # diffusers' DiagonalGaussianDistribution clamps the log-variance to [-30, 20].
    return mean, jnp.clip(logvar, -30.0, 20.0)

  def decode(self, z):
    if self.config.use_post_quant_conv:
      z = self.post_quant_conv(z.astype(self.dtype))
    return self.decoder(z)

  def __call__(self, x):
    mean, _ = self.encode(x)
    return self.decode(mean)


def _blend(a: jax.Array, b: jax.Array, extent: int, axis: int) -> jax.Array:
  """diffusers `blend_v`/`blend_h`: linear ramp from tile `a`'s tail into `b`'s head."""
  extent = min(a.shape[axis], b.shape[axis], extent)
  if extent == 0:
    return b
  w = (jnp.arange(extent, dtype=jnp.float32) / extent)
  shape = [1] * b.ndim
  shape[axis] = extent
  w = w.reshape(shape)
  a_tail = jax.lax.slice_in_dim(a, a.shape[axis] - extent, a.shape[axis], axis=axis)
  b_head = jax.lax.slice_in_dim(b, 0, extent, axis=axis)
  mixed = (a_tail * (1 - w) + b_head * w).astype(b.dtype)
  return jnp.concatenate([mixed, jax.lax.slice_in_dim(b, extent, b.shape[axis], axis=axis)],
                         axis=axis)


def _tiled_decode(vae: AutoencoderKL, params, z: jax.Array, overlap: float) -> jax.Array:
  """diffusers `AutoencoderKL.tiled_decode` in NHWC: latent tiles of `sample_size / f`, stride
  `tile·(1-overlap)`, decoded separately and cross-faded over `sample_size·overlap` pixels."""
  cfg = vae.config
  tile = cfg.sample_size // cfg.downsample_factor
  stride = int(tile * (1 - overlap))
  blend = int(cfg.sample_size * overlap)
  limit = cfg.sample_size - blend
  dec = lambda t: vae.apply({"params": params}, t, method="decode")
  h, w = z.shape[1], z.shape[2]
  rows = [[dec(z[:, i:i + tile, j:j + tile]) for j in range(0, w, stride)]
          for i in range(0, h, stride)]
  out_rows = []
  for i, row in enumerate(rows):
    for j in range(len(row)):
      # In place in diffusers: the horizontally blended neighbour is already vertically blended.
      if i > 0:
        row[j] = _blend(rows[i - 1][j], row[j], blend, axis=1)
      if j > 0:
        row[j] = _blend(row[j - 1], row[j], blend, axis=2)
    out_rows.append(jnp.concatenate([t[:, :limit, :limit] for t in row], axis=2))
  return jnp.concatenate(out_rows, axis=1)


def decode_chunked(vae: AutoencoderKL, params, z: jax.Array, *, batch_chunk: int | None = 1,
                   tiled: bool = False, tile_overlap: float = 0.25) -> jax.Array:
  """Decodes `z [B, h, w, latent]` → `[B, h·f, w·f, 3]` a few images at a time (memory).

  `batch_chunk`: images per decoder call (`lax.map` over chunks, so peak activation memory is
  that of one chunk; `None` = whole batch). With `tiled=True` and latents larger than the
  config's tile (`sample_size / f`), each chunk is decoded in overlapping spatial tiles blended
  as in diffusers' `enable_tiling()` (approximate: GroupNorm/attention statistics are per tile).
  `params` is the `params` collection of `vae`. Jittable.
  """
  cfg = vae.config
  tile = cfg.sample_size // cfg.downsample_factor

  def decode_one(zc):
    if tiled and (zc.shape[1] > tile or zc.shape[2] > tile):
      return _tiled_decode(vae, params, zc, tile_overlap)
    return vae.apply({"params": params}, zc, method="decode")

  b = z.shape[0]
  if batch_chunk is None or batch_chunk >= b:
    return decode_one(z)
  if b % batch_chunk:
    raise ValueError(f"decode_chunked: batch {b} is not a multiple of batch_chunk {batch_chunk}")
  zc = z.reshape(b // batch_chunk, batch_chunk, *z.shape[1:])
  out = jax.lax.map(decode_one, zc)
  return out.reshape(b, *out.shape[2:])
