"""The SDXL denoising UNet (diffusers `UNet2DConditionModel` family) as a Flax linen module.

Written from the diffusers PyTorch classes, not ported from their removed Flax ones; the module
tree mirrors the diffusers state-dict names (`down_blocks_0/attentions_1/transformer_blocks_0/...`
for `down_blocks.0.attentions.1.transformer_blocks.0....`) so `convert/diffusers_sdxl.py` maps
keys by a fixed rule. One module covers SDXL (blocks 320/640/1280, transformer depths 0/2/10,
linear projections, `text_time` added embedding) and the SD 1.x/2.x shapes (conv projections,
per-block head counts, no added embedding).

Layout: NHWC inside and at the interface — `sample: [B, h, w, C]` (diffusers is NCHW).
Precision: parameters fp32, convs/matmuls in `dtype`, GroupNorm/LayerNorm and the attention
softmax in fp32 (docs/design.md §3).

Speed (XLA:CPU, bench/bench_unet.py): GroupNorm is `layers.GroupNorm` (a formulation measured
~2× faster than `nn.GroupNorm`, same parameters); under `attention_impl='xla'` the UNet and the
VAE use the 'heads_major' formulation of `layers.dot_product_attention` (`XLA_ATTENTION`; same
math as the 'jax_nn' one the other models use, measured faster here). The convolution, ResNet and
upsampling blocks it shares with the VAE live in layers.py.
"""
from __future__ import annotations

from instant3d_jax import errors

import dataclasses
import json
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from instant3d_jax.models import layers
from instant3d_jax.models.layers import (IMAGE_ACT_AXES, ResnetBlock2D, Upsample2D, conv2d,
                                         group_norm, maybe_remat)

Dtype = Any
# `layers.dot_product_attention` formulation of the UNet and VAE under attention_impl 'xla'.
XLA_ATTENTION = "heads_major"

DOWN_BLOCKS = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCKS = ("CrossAttnUpBlock2D", "UpBlock2D")
MID_BLOCKS = ("UNetMidBlock2DCrossAttn", None)
# diffusers config keys whose non-default values change the network in ways this module does not
# implement; loading such a config must fail loudly rather than compute something else.
_UNSUPPORTED_DEFAULTS = {
    "center_input_sample": False, "only_cross_attention": False, "dual_cross_attention": False,
    "class_embed_type": None, "num_class_embeds": None, "encoder_hid_dim": None,
    "encoder_hid_dim_type": None, "resnet_time_scale_shift": "default",
    "resnet_skip_time_act": False, "resnet_out_scale_factor": 1.0,
    "time_embedding_type": "positional", "time_embedding_dim": None,
    "time_embedding_act_fn": None, "timestep_post_act": None, "time_cond_proj_dim": None,
    "conv_in_kernel": 3, "conv_out_kernel": 3, "attention_type": "default",
    "class_embeddings_concat": False, "mid_block_only_cross_attention": None,
    "cross_attention_norm": None, "act_fn": "silu", "dropout": 0.0, "mid_block_scale_factor": 1,
    "downsample_padding": 1,
}


def _per_block(value, n: int, name: str) -> tuple:
  if isinstance(value, (list, tuple)):
    if len(value) != n:
      raise errors.ConfigError(f"UNet config {name!r} has {len(value)} entries, expected one per block "
                       f"({n})")
    return tuple(value)
  return (value,) * n


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """Normalised, hashable view of a diffusers UNet `config.json` (all per-block lists expanded).

  `down_*` tuples are indexed like `down_blocks`, `up_*` like `up_blocks` (already reversed).
  """
  in_channels: int
  out_channels: int
  block_out_channels: tuple[int, ...]
  down_block_types: tuple[str, ...]
  up_block_types: tuple[str, ...]
  mid_block_type: str | None
  down_layers: tuple[int, ...]            # resnets per down block
  up_layers: tuple[int, ...]              # resnets per up block (= reversed layers + 1)
  down_heads: tuple[int, ...]
  up_heads: tuple[int, ...]
  mid_heads: int
  down_depths: tuple[int, ...]            # transformer blocks per Transformer2DModel
  up_depths: tuple[int, ...]
  mid_depth: int
  cross_attention_dim: int
  use_linear_projection: bool
  norm_num_groups: int
  norm_eps: float
  flip_sin_to_cos: bool
  freq_shift: float
  addition_embed_type: str | None
  addition_time_embed_dim: int | None
  projection_class_embeddings_input_dim: int | None
  mid_block_layers: int = 1
  diffusers_json: str = "{}"              # the source config, for export (sorted JSON)

  @property
  def time_embed_dim(self) -> int:
    return self.block_out_channels[0] * 4

  def to_diffusers(self) -> dict[str, Any]:
    return json.loads(self.diffusers_json)

  @classmethod
  def from_diffusers(cls, config: Mapping[str, Any]) -> "UNetConfig":
    """From the dict of a diffusers `unet/config.json`; unknown variants raise `ValueError`."""
    c = dict(config)
    for key, default in _UNSUPPORTED_DEFAULTS.items():
      if key in c and c[key] != default:
        raise errors.ConfigError(f"UNet config {key}={c[key]!r} is not supported (only {default!r})")
    down = tuple(c.get("down_block_types", ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)))
    up = tuple(c.get("up_block_types", ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3))
    mid = c.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    for t in down:
      if t not in DOWN_BLOCKS:
        raise errors.ConfigError(f"UNet config down block type {t!r} not supported; expected {DOWN_BLOCKS}")
    for t in up:
      if t not in UP_BLOCKS:
        raise errors.ConfigError(f"UNet config up block type {t!r} not supported; expected {UP_BLOCKS}")
    if mid not in MID_BLOCKS:
      raise errors.ConfigError(f"UNet config mid_block_type {mid!r} not supported; expected {MID_BLOCKS}")
    n = len(down)
    if len(up) != n:
      raise errors.ConfigError(f"UNet config has {n} down blocks but {len(up)} up blocks")
    boc = tuple(c.get("block_out_channels", (320, 640, 1280, 1280)))
    if len(boc) != n:
      raise errors.ConfigError(f"UNet config block_out_channels has {len(boc)} entries, expected {n}")
    layers_pb = _per_block(c.get("layers_per_block", 2), n, "layers_per_block")
    # diffusers' historical naming: `attention_head_dim` holds the number of heads when
    # `num_attention_heads` is absent (SD 1.x/2.x and SDXL configs all rely on this).
    heads = c.get("num_attention_heads") or c.get("attention_head_dim", 8)
    heads = _per_block(heads, n, "num_attention_heads")
    depths = c.get("transformer_layers_per_block", 1)
    if isinstance(depths, (list, tuple)) and any(isinstance(d, (list, tuple)) for d in depths):
      raise errors.ConfigError("UNet config transformer_layers_per_block with per-layer lists is not "
                       "supported; expected an int or one int per block")
    depths = _per_block(depths, n, "transformer_layers_per_block")
    if c.get("reverse_transformer_layers_per_block") is not None:
      raise errors.ConfigError("UNet config reverse_transformer_layers_per_block is not supported")
    cross = c.get("cross_attention_dim", 1280)
    if isinstance(cross, (list, tuple)):
      if len(set(cross)) != 1:
        raise errors.ConfigError(f"UNet config cross_attention_dim {cross} differs per block; expected "
                         "one context width")
      cross = cross[0]
    add = c.get("addition_embed_type")
    if add not in (None, "text_time"):
      raise errors.ConfigError(f"UNet config addition_embed_type {add!r} not supported; expected None or "
                       "'text_time'")
    groups = c.get("norm_num_groups", 32)
    if groups is None:
      raise errors.ConfigError("UNet config norm_num_groups=None is not supported")
    return cls(
        in_channels=c.get("in_channels", 4), out_channels=c.get("out_channels", 4),
        block_out_channels=boc, down_block_types=down, up_block_types=up, mid_block_type=mid,
        down_layers=layers_pb, up_layers=tuple(l + 1 for l in reversed(layers_pb)),
        down_heads=heads, up_heads=tuple(reversed(heads)), mid_heads=heads[-1],
        down_depths=depths, up_depths=tuple(reversed(depths)), mid_depth=depths[-1],
        cross_attention_dim=int(cross), use_linear_projection=bool(c.get("use_linear_projection",
                                                                          False)),
        norm_num_groups=int(groups), norm_eps=float(c.get("norm_eps", 1e-5)),
        flip_sin_to_cos=bool(c.get("flip_sin_to_cos", True)),
        freq_shift=float(c.get("freq_shift", 0)), addition_embed_type=add,
        addition_time_embed_dim=c.get("addition_time_embed_dim"),
        projection_class_embeddings_input_dim=c.get("projection_class_embeddings_input_dim"),
        diffusers_json=json.dumps(dict(config), sort_keys=True))


# ---------------------------------------------------------------------------------------------
# Building blocks of the UNet


def timestep_embedding(timesteps: jax.Array, dim: int, flip_sin_to_cos: bool,
                       freq_shift: float, max_period: float = 10000.0) -> jax.Array:
  """diffusers `get_timestep_embedding`: `timesteps [N]` → `[N, dim]` float32 sinusoids."""
  half = dim // 2
  exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
  args = timesteps.astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
  if flip_sin_to_cos:
    emb = jnp.concatenate([emb[:, half:], emb[:, :half]], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


class TimestepEmbedding(nn.Module):
  """diffusers `TimestepEmbedding`: linear → SiLU → linear."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = layers.dense(self.features, ("embed", "mlp"), dtype=self.dtype, name="linear_1")(x)
    return layers.dense(self.features, ("mlp", "embed"), dtype=self.dtype,
                        name="linear_2")(nn.silu(x))


class Attention(nn.Module):
  """diffusers `Attention` (AttnProcessor2_0) for the UNet: no q/k/v bias, `to_out.0` with bias.

  `x [B, L, C]`, `context [B, Lk, D]` (self-attention when None).
  """
  heads: int
  dtype: Dtype = jnp.float32
  attention_impl: str = "xla"
  qkv_bias: bool = False

  @nn.compact
  def __call__(self, x, context=None):
    b, l, c = x.shape
    context = x if context is None else context
    kw = dict(use_bias=self.qkv_bias, dtype=self.dtype)
    q = layers.dense(c, ("embed", "heads"), name="to_q", **kw)(x)
    k = layers.dense(c, ("embed", "heads"), name="to_k", **kw)(context)
    v = layers.dense(c, ("embed", "heads"), name="to_v", **kw)(context)
    split = lambda t: t.reshape(t.shape[0], t.shape[1], self.heads, c // self.heads)
    o = layers.dot_product_attention(split(q), split(k), split(v),
                                     implementation=self.attention_impl,
                                     xla_formulation=XLA_ATTENTION)
    o = o.reshape(b, l, c)
    return layers.dense(c, ("heads", "embed"), dtype=self.dtype, name="to_out_0")(o)


class FeedForward(nn.Module):
  """diffusers `FeedForward` with GEGLU: `net.0.proj` (dim → 2·4dim), gelu gate, `net.2`."""
  dim: int
  mult: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    inner = self.dim * self.mult
    h = _GEGLU(inner, self.dtype, name="net_0")(x)
    return layers.dense(self.dim, ("mlp", "embed"), dtype=self.dtype, name="net_2")(h)


class _GEGLU(nn.Module):
  features: int
  dtype: Dtype

  @nn.compact
  def __call__(self, x):
    h = layers.dense(2 * self.features, ("embed", "mlp"), dtype=self.dtype, name="proj")(x)
    h, gate = jnp.split(h, 2, axis=-1)
    # torch's default exact GELU, written with erf: `nn.gelu(approximate=False)` goes through
    # erfc and measured 2.5× slower on XLA:CPU for the same fp32 result.
    gf = gate.astype(jnp.float32)
    return h * (gf * (0.5 * (1.0 + jax.lax.erf(gf * 0.7071067811865476)))).astype(h.dtype)


class BasicTransformerBlock(nn.Module):
  """Pre-LN self-attention, cross-attention, GEGLU MLP (diffusers `BasicTransformerBlock`)."""
  heads: int
  dtype: Dtype = jnp.float32
  attention_impl: str = "xla"
  norm_eps: float = 1e-5

  @nn.compact
  def __call__(self, x, context):
    c = x.shape[-1]
    ln = lambda name: layers.layer_norm(epsilon=self.norm_eps, name=name)
    attn = lambda name: Attention(self.heads, self.dtype, self.attention_impl, name=name)
    x = x + attn("attn1")(ln("norm1")(x).astype(self.dtype)).astype(x.dtype)
    x = x + attn("attn2")(ln("norm2")(x).astype(self.dtype), context).astype(x.dtype)
    x = x + FeedForward(c, dtype=self.dtype, name="ff")(ln("norm3")(x).astype(self.dtype)
                                                         ).astype(x.dtype)
    return x


class Transformer2DModel(nn.Module):
  """GroupNorm → proj_in (1×1 conv or linear) → transformer blocks → proj_out, plus residual."""
  heads: int
  depth: int
  groups: int
  use_linear_projection: bool
  dtype: Dtype = jnp.float32
  attention_impl: str = "xla"
  remat: str = "none"

  @nn.compact
  def __call__(self, x, context):
    b, hh, ww, c = x.shape
    residual = x
    h = group_norm(self.groups, epsilon=1e-6, name="norm")(x).astype(self.dtype)
    if self.use_linear_projection:
      h = layers.dense(c, ("conv_in", "embed"), dtype=self.dtype,
                       name="proj_in")(h.reshape(b, hh * ww, c))
    else:
      h = conv2d(c, 1, padding="VALID", dtype=self.dtype, name="proj_in")(h).reshape(b, hh * ww, c)
    h = layers.constrain(h, ("batch", "length", "act_embed"))
    block_cls = maybe_remat(BasicTransformerBlock, self.remat)
    for i in range(self.depth):
      h = block_cls(self.heads, self.dtype, self.attention_impl,
                    name=f"transformer_blocks_{i}")(h, context)
    if self.use_linear_projection:
      h = layers.dense(c, ("embed", "conv_out"), dtype=self.dtype, name="proj_out")(h)
      h = h.reshape(b, hh, ww, c)
    else:
      h = conv2d(c, 1, padding="VALID", dtype=self.dtype,
                 name="proj_out")(h.reshape(b, hh, ww, c))
    return (h + residual).astype(self.dtype)


class Downsample2D(nn.Module):
  """3×3 stride-2 conv, padding 1 (diffusers `Downsample2D`, UNet flavour)."""
  out_channels: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return conv2d(self.out_channels, 3, 2, dtype=self.dtype, name="conv")(x)


# ---------------------------------------------------------------------------------------------
# The UNet


class DownBlock(nn.Module):
  """`CrossAttnDownBlock2D` (with_attention) or `DownBlock2D`; returns the output and skips."""
  out_channels: int
  num_layers: int
  with_attention: bool
  add_downsample: bool
  heads: int
  depth: int
  groups: int
  eps: float
  use_linear_projection: bool
  dtype: Dtype = jnp.float32
  attention_impl: str = "xla"
  remat: str = "none"

  @nn.compact
  def __call__(self, h, emb, context):
    skips = []
    resnet_cls = maybe_remat(ResnetBlock2D, self.remat)
    for j in range(self.num_layers):
      h = resnet_cls(self.out_channels, self.groups, self.eps, self.dtype, name=f"resnets_{j}")(
          h, emb)
      if self.with_attention:
        h = Transformer2DModel(self.heads, self.depth, self.groups, self.use_linear_projection,
                               self.dtype, self.attention_impl, self.remat,
                               name=f"attentions_{j}")(h, context)
      h = layers.constrain(h, IMAGE_ACT_AXES)
      skips.append(h)
    if self.add_downsample:
      h = Downsample2D(self.out_channels, self.dtype, name="downsamplers_0")(h)
      skips.append(h)
    return h, skips


class UpBlock(nn.Module):
  """`CrossAttnUpBlock2D` (with_attention) or `UpBlock2D`; consumes one skip per resnet."""
  out_channels: int
  num_layers: int
  with_attention: bool
  add_upsample: bool
  heads: int
  depth: int
  groups: int
  eps: float
  use_linear_projection: bool
  dtype: Dtype = jnp.float32
  attention_impl: str = "xla"
  remat: str = "none"

  @nn.compact
  def __call__(self, h, skips, emb, context, upsample_size: tuple[int, int] | None = None):
    resnet_cls = maybe_remat(ResnetBlock2D, self.remat)
    for j in range(self.num_layers):
      # diffusers concatenates [hidden, skip] on channels, skips taken last-in first-out.
      h = jnp.concatenate([h, skips[-1 - j].astype(h.dtype)], axis=-1)
      h = resnet_cls(self.out_channels, self.groups, self.eps, self.dtype, name=f"resnets_{j}")(
          h, emb)
      if self.with_attention:
        h = Transformer2DModel(self.heads, self.depth, self.groups, self.use_linear_projection,
                               self.dtype, self.attention_impl, self.remat,
                               name=f"attentions_{j}")(h, context)
      h = layers.constrain(h, IMAGE_ACT_AXES)
    if self.add_upsample:
      h = Upsample2D(self.out_channels, self.dtype, name="upsamplers_0")(h, upsample_size)
    return h


class MidBlock(nn.Module):
  """`UNetMidBlock2DCrossAttn`: resnet, then (transformer, resnet) × num_layers."""
  heads: int
  depth: int
  groups: int
  eps: float
  use_linear_projection: bool
  num_layers: int = 1
  dtype: Dtype = jnp.float32
  attention_impl: str = "xla"
  remat: str = "none"

  @nn.compact
  def __call__(self, h, emb, context):
    ch = h.shape[-1]
    resnet_cls = maybe_remat(ResnetBlock2D, self.remat)
    h = resnet_cls(ch, self.groups, self.eps, self.dtype, name="resnets_0")(h, emb)
    for j in range(self.num_layers):
      h = Transformer2DModel(self.heads, self.depth, self.groups, self.use_linear_projection,
                             self.dtype, self.attention_impl, self.remat,
                             name=f"attentions_{j}")(h, context)
      h = resnet_cls(ch, self.groups, self.eps, self.dtype, name=f"resnets_{j + 1}")(h, emb)
    return layers.constrain(h, IMAGE_ACT_AXES)


class UNet2DConditionModel(nn.Module):
  """diffusers `UNet2DConditionModel` (SDXL / SD 1.x / SD 2.x family) in NHWC.

  `__call__(sample [B,h,w,C_in], timesteps [B] or scalar, encoder_hidden_states [B,L,D],
  text_embeds [B, 1280] | None, time_ids [B, 6] | None) → [B, h, w, C_out]` in `dtype`.
  `text_embeds`/`time_ids` are required iff `config.addition_embed_type == 'text_time'`.
  """
  config: UNetConfig
  dtype: Dtype = jnp.float32
  attention_impl: str = "xla"
  remat: str = "none"  # 'none' | 'full' | a jax.checkpoint_policies name

  @nn.compact
  def __call__(self, sample, timesteps, encoder_hidden_states, text_embeds=None, time_ids=None):
    cfg = self.config
    dt = self.dtype
    b = sample.shape[0]
    # -- time (+ SDXL pooled-text / micro-conditioning) embedding
    timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (b,))
    t_emb = timestep_embedding(timesteps, cfg.block_out_channels[0], cfg.flip_sin_to_cos,
                               cfg.freq_shift)
    emb = TimestepEmbedding(cfg.time_embed_dim, dt, name="time_embedding")(t_emb.astype(dt))
    if cfg.addition_embed_type == "text_time":
      if text_embeds is None or time_ids is None:
        raise errors.ConfigError("UNet config has addition_embed_type='text_time': text_embeds [B, D] "
                         "and time_ids [B, 6] are required, got "
                         f"text_embeds={None if text_embeds is None else text_embeds.shape}, "
                         f"time_ids={None if time_ids is None else time_ids.shape}")
      time_emb = timestep_embedding(time_ids.reshape(-1), cfg.addition_time_embed_dim,
                                    cfg.flip_sin_to_cos, cfg.freq_shift).reshape(b, -1)
      add = jnp.concatenate([text_embeds.astype(jnp.float32), time_emb], axis=-1)
      emb = emb + TimestepEmbedding(cfg.time_embed_dim, dt, name="add_embedding")(add.astype(dt))
    context = encoder_hidden_states.astype(dt)
    common = dict(groups=cfg.norm_num_groups, eps=cfg.norm_eps,
                  use_linear_projection=cfg.use_linear_projection, dtype=dt,
                  attention_impl=self.attention_impl, remat=self.remat)
    n = len(cfg.block_out_channels)

    h = conv2d(cfg.block_out_channels[0], dtype=dt, name="conv_in")(sample.astype(dt))
    skips = [h]
    for i, kind in enumerate(cfg.down_block_types):
      h, s = DownBlock(cfg.block_out_channels[i], cfg.down_layers[i],
                       kind == "CrossAttnDownBlock2D", i < n - 1, cfg.down_heads[i],
                       cfg.down_depths[i], name=f"down_blocks_{i}", **common)(h, emb, context)
      skips += s
    if cfg.mid_block_type == "UNetMidBlock2DCrossAttn":
      h = MidBlock(cfg.mid_heads, cfg.mid_depth, num_layers=cfg.mid_block_layers,
                   name="mid_block", **common)(h, emb, context)
    rev = tuple(reversed(cfg.block_out_channels))
    for i, kind in enumerate(cfg.up_block_types):
      k = cfg.up_layers[i]
      block_skips, skips = skips[-k:], skips[:-k]
      # Upsample to the next skip's size (diffusers' `upsample_size`): odd sides round up going
      # down, so ×2 alone would overshoot them.
      up_size = tuple(skips[-1].shape[1:3]) if skips else None
      h = UpBlock(rev[i], k, kind == "CrossAttnUpBlock2D", i < n - 1, cfg.up_heads[i],
                  cfg.up_depths[i], name=f"up_blocks_{i}", **common)(h, block_skips, emb, context,
                                                                      up_size)
    h = group_norm(cfg.norm_num_groups, epsilon=cfg.norm_eps, name="conv_norm_out")(h)
    return conv2d(cfg.out_channels, dtype=dt, name="conv_out")(nn.silu(h).astype(dt))
