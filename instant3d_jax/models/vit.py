"""DINO ViT image encoder with optional per-block camera modulation (the LRM image encoder).

Covers three public layouts with one module (weights through `instant3d_jax/convert/
transformers_vit.py`):
- `ViTModel` of `facebook/dino-vitb16` (DINO v1): patch 16, pre-norm blocks, GELU MLP;
- `Dinov2Model` (DINOv2): patch 14, layer scale on both residual branches, optional SwiGLU MLP;
- `Dinov2WithRegistersModel`: DINOv2 plus register tokens after the CLS token.

Token order of the output `[B, 1 + R + N, D]`: the CLS token, then the R register tokens (R = 0
except for the registers layout), then the N = (H/p)·(W/p) patch tokens in raster order (row by
row, top-left first), exactly as transformers orders them.

Position embeddings are stored at the pre-training grid (config `image_size // patch_size`) and
resampled to the input grid (512² with patch 16 -> 32×32) the way transformers does it:
`torch.nn.functional.interpolate(mode='bicubic', align_corners=False, size=new_grid)`, i.e. the
Keys cubic with a = -0.75 and clamped borders (`antialias=True` for the registers layout, which
switches torch to the PIL-style filter, a = -0.5, with weights renormalised at the borders).
`jax.image.resize` uses neither, so the resampling is a precomputed separable matrix (sizes are
static). Inputs are always interpolated, as transformers' `interpolate_pos_encoding=True`.

Camera modulation (Instant3D/InstantMesh-style adaLN, docs/design.md): with `modulation_dim` set,
every block computes `shift, scale (×2) = Dense(SiLU(modulation))` and replaces `LN(x)` by
`LN(x)·(1 + scale) + shift` before the attention and the MLP branches. The dense layer is
zero-initialised, so a pretrained encoder is exactly unchanged at init; there is deliberately no
zero-initialised residual gate (DiT's adaLN-Zero), which would switch the pretrained blocks off.
"""
from __future__ import annotations

from instant3d_jax import errors

import dataclasses
import functools
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from instant3d_jax.models import layers

Dtype = Any

# ImageNet statistics used by every DINO checkpoint's image processor.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MODEL_TYPES = ("vit", "dinov2", "dinov2_with_registers")
POS_EMBED_RESIZES = ("size", "scale_factor")


def normalize_images(images: jax.Array) -> jax.Array:
  """`images: [..., H, W, 3]` float in [0, 1] -> ImageNet-normalised pixel values (same shape)."""
  if images.shape[-1] != 3:
    raise ValueError(f"normalize_images expects RGB images [..., H, W, 3], got shape "
                     f"{tuple(images.shape)}")
  mean = jnp.asarray(IMAGENET_MEAN, images.dtype)
  std = jnp.asarray(IMAGENET_STD, images.dtype)
  return (images - mean) / std


# ---------------------------------------------------------------------------------------------
# Config


@dataclasses.dataclass(frozen=True)
class ViTConfig:
  """Architecture of the encoder (what a transformers `config.json` fixes)."""
  model_type: str = "vit"           # one of MODEL_TYPES
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  mlp_dim: int = 3072               # GELU MLP width (DINOv2: hidden_size * mlp_ratio)
  patch_size: int = 16
  image_size: int = 224             # pre-training size: position-embedding grid = image_size // p
  num_channels: int = 3
  layer_norm_eps: float = 1e-12     # transformers ViTConfig default; DINOv2 uses 1e-6
  qkv_bias: bool = True
  hidden_act: str = "gelu"          # transformers' "gelu" is the exact (erf) GELU
  layer_scale: bool = False         # DINOv2: per-channel scale on both residual branches
  layerscale_value: float = 1.0     # init value of the layer scale (checkpoints overwrite it)
  use_swiglu_ffn: bool = False      # DINOv2 giant: SwiGLU MLP instead of GELU
  num_register_tokens: int = 0      # Dinov2WithRegistersModel: tokens after CLS
  initializer_range: float = 0.02   # fresh-init std (transformers `_init_weights`)
  # How the stored position-embedding grid g0 is resampled to the input grid g: 'size'
  # (transformers: `interpolate(size=g)`) or 'scale_factor' (DINO's original code, which
  # InstantMesh's dino.py keeps: `interpolate(scale_factor=(g + 0.1) / g0)`, so torch maps output
  # texel i to source (i + 0.5)·g0/(g + 0.1) − 0.5, a slightly different resampling).
  pos_embed_resize: str = "size"

  def __post_init__(self):
    if self.model_type not in MODEL_TYPES:
      raise errors.ConfigError(f"ViTConfig.model_type must be one of {MODEL_TYPES}, got "
                       f"{self.model_type!r}")
    if self.hidden_size % self.num_attention_heads:
      raise errors.ConfigError(f"ViTConfig.hidden_size {self.hidden_size} is not divisible by "
                       f"num_attention_heads {self.num_attention_heads}")
    if self.image_size % self.patch_size:
      # transformers floors the grid; a pretraining size that is not a multiple would make the
      # stored grid ambiguous, and no public checkpoint has one.
      raise errors.ConfigError(f"ViTConfig.image_size {self.image_size} is not a multiple of "
                       f"patch_size {self.patch_size}")
    if self.pos_embed_resize not in POS_EMBED_RESIZES:
      raise errors.ConfigError(f"ViTConfig.pos_embed_resize must be one of {POS_EMBED_RESIZES}, "
                               f"got {self.pos_embed_resize!r}")
    if self.hidden_act not in _ACTIVATIONS:
      raise errors.ConfigError(f"ViTConfig.hidden_act must be one of {sorted(_ACTIVATIONS)}, got "
                       f"{self.hidden_act!r}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @property
  def pos_grid(self) -> int:
    """Side of the stored (pre-training) position-embedding grid."""
    return self.image_size // self.patch_size

  @property
  def swiglu_hidden(self) -> int:
    """SwiGLU width as transformers computes it: 2/3 of the MLP width, rounded up to 8."""
    return (int(self.mlp_dim * 2 / 3) + 7) // 8 * 8

  @property
  def pos_embed_antialias(self) -> bool:
    """transformers' registers model interpolates with `antialias=True` (a different kernel)."""
    return self.model_type == "dinov2_with_registers"

  @classmethod
  def from_transformers(cls, cfg: Mapping[str, Any]) -> "ViTConfig":
    """From a transformers `config.json` dict (`vit`, `dinov2`, `dinov2_with_registers`)."""
    model_type = cfg.get("model_type")
    if model_type not in MODEL_TYPES:
      raise errors.ConfigError(f"transformers config model_type must be one of {MODEL_TYPES}, got "
                       f"{model_type!r}")

    def square(name):
      v = cfg.get(name, 224 if name == "image_size" else (16 if model_type == "vit" else 14))
      if isinstance(v, (list, tuple)):
        if len(v) != 2 or v[0] != v[1]:
          raise errors.ConfigError(f"transformers config {name} must be square, got {v}")
        v = v[0]
      return int(v)

    hidden = int(cfg.get("hidden_size", 768))
    common = dict(
        model_type=model_type, hidden_size=hidden,
        num_hidden_layers=int(cfg.get("num_hidden_layers", 12)),
        num_attention_heads=int(cfg.get("num_attention_heads", 12)),
        patch_size=square("patch_size"), image_size=square("image_size"),
        num_channels=int(cfg.get("num_channels", 3)),
        qkv_bias=bool(cfg.get("qkv_bias", True)), hidden_act=cfg.get("hidden_act", "gelu"),
        initializer_range=float(cfg.get("initializer_range", 0.02)))
    if model_type == "vit":
      return cls(**common, mlp_dim=int(cfg.get("intermediate_size", 3072)),
                 layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-12)))
    return cls(**common, mlp_dim=int(hidden * cfg.get("mlp_ratio", 4)),
               layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-6)), layer_scale=True,
               layerscale_value=float(cfg.get("layerscale_value", 1.0)),
               use_swiglu_ffn=bool(cfg.get("use_swiglu_ffn", False)),
               num_register_tokens=(int(cfg.get("num_register_tokens", 4))
                                    if model_type == "dinov2_with_registers" else 0))

  def to_transformers(self) -> dict[str, Any]:
    """The transformers `config.json` dict this config corresponds to (for export)."""
    common = dict(
        model_type=self.model_type, hidden_size=self.hidden_size,
        num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
        patch_size=self.patch_size, image_size=self.image_size, num_channels=self.num_channels,
        qkv_bias=self.qkv_bias, hidden_act=self.hidden_act, layer_norm_eps=self.layer_norm_eps,
        initializer_range=self.initializer_range, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if self.model_type == "vit":
      return dict(common, architectures=["ViTModel"], intermediate_size=self.mlp_dim)
    if self.mlp_dim % self.hidden_size:
      raise errors.ConfigError(f"DINOv2 layouts need mlp_dim a multiple of hidden_size, got "
                       f"{self.mlp_dim} and {self.hidden_size}")
    out = dict(common, mlp_ratio=self.mlp_dim // self.hidden_size,
               layerscale_value=self.layerscale_value, use_swiglu_ffn=self.use_swiglu_ffn)
    if self.model_type == "dinov2":
      # The importer drops the (unused) mask token; say so, so transformers does not expect it.
      return dict(out, architectures=["Dinov2Model"], use_mask_token=False)
    return dict(out, architectures=["Dinov2WithRegistersModel"],
                num_register_tokens=self.num_register_tokens)


# Named presets: the public checkpoints' config.json values.
def dino_vits16() -> ViTConfig:
  return ViTConfig("vit", 384, 12, 6, 1536, patch_size=16, image_size=224)


def dino_vitb16() -> ViTConfig:
  """`facebook/dino-vitb16` (the LRM / InstantMesh encoder; its config.json: eps 1e-12)."""
  return ViTConfig("vit", 768, 12, 12, 3072, patch_size=16, image_size=224)


def dino_vitb8() -> ViTConfig:
  return ViTConfig("vit", 768, 12, 12, 3072, patch_size=8, image_size=224)


def _dinov2(hidden, layers_, heads, registers=0, swiglu=False):
  return ViTConfig("dinov2_with_registers" if registers else "dinov2", hidden, layers_, heads,
                   4 * hidden, patch_size=14, image_size=518, layer_norm_eps=1e-6,
                   layer_scale=True, use_swiglu_ffn=swiglu, num_register_tokens=registers)


def dinov2_vits14() -> ViTConfig:
  return _dinov2(384, 12, 6)


def dinov2_vitb14() -> ViTConfig:
  """`facebook/dinov2-base`."""
  return _dinov2(768, 12, 12)


def dinov2_vitl14() -> ViTConfig:
  return _dinov2(1024, 24, 16)


def dinov2_vits14_reg() -> ViTConfig:
  return _dinov2(384, 12, 6, registers=4)


def dinov2_vitb14_reg() -> ViTConfig:
  """`facebook/dinov2-with-registers-base` (OpenLRM v1.1 base/large encoder)."""
  return _dinov2(768, 12, 12, registers=4)


def dinov2_vitl14_reg() -> ViTConfig:
  return _dinov2(1024, 24, 16, registers=4)


PRESETS = {f.__name__: f for f in (dino_vits16, dino_vitb16, dino_vitb8, dinov2_vits14,
                                   dinov2_vitb14, dinov2_vitl14, dinov2_vits14_reg,
                                   dinov2_vitb14_reg, dinov2_vitl14_reg)}


# ---------------------------------------------------------------------------------------------
# Position-embedding resampling (torch's bicubic, as a matrix)


def _cubic1(x, a):  # |x| <= 1
  return ((a + 2) * x - (a + 3)) * x * x + 1


def _cubic2(x, a):  # 1 < |x| < 2
  return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a


@functools.lru_cache(maxsize=64)
def torch_bicubic_matrix(in_size: int, out_size: int, antialias: bool = False,
                         scale: float | None = None) -> np.ndarray:
  """`[out_size, in_size]` matrix W with `W @ v` = torch's 1-D bicubic resampling of `v`.

  Mirrors `torch.nn.functional.interpolate(mode='bicubic', align_corners=False, size=...)`:
  scale = in/out, source coordinate (i + 0.5)·scale − 0.5, Keys cubic with a = −0.75 and
  borders clamped. With `antialias=True` torch switches to the separable PIL-style filter
  (`_upsample_bicubic2d_aa`): a = −0.5, support stretched by the scale when downsampling, taps
  outside the image dropped and the weights renormalised. `scale` (source texels per output
  texel) overrides in/out, as torch does when called with `scale_factor=1/scale` instead of a
  size (then the output size is floor(in/scale), which the caller must pass as `out_size`).
  """
  if scale is None:
    scale = in_size / out_size
  w = np.zeros((out_size, in_size), np.float64)
  if not antialias:
    a = -0.75
    for i in range(out_size):
      src = (i + 0.5) * scale - 0.5
      x0 = math.floor(src)
      t = src - x0
      taps = (_cubic2(t + 1, a), _cubic1(t, a), _cubic1(1 - t, a), _cubic2(2 - t, a))
      for k, wk in enumerate(taps):
        w[i, min(max(x0 - 1 + k, 0), in_size - 1)] += wk
    return w
  a = -0.5
  support = 2.0 * scale if scale >= 1.0 else 2.0
  invscale = 1.0 / scale if scale >= 1.0 else 1.0
  for i in range(out_size):
    center = scale * (i + 0.5)
    xmin = max(int(center - support + 0.5), 0)  # int() truncates toward zero, as the C++ cast
    xmax = min(int(center + support + 0.5), in_size)
    for j in range(xmin, xmax):
      x = abs((j - center + 0.5) * invscale)
      w[i, j] = _cubic1(x, a) if x < 1 else (_cubic2(x, a) if x < 2 else 0.0)
    total = w[i].sum()
    if total != 0:
      w[i] /= total
  return w


def interpolate_pos_embed(pos_embed: jax.Array, grid_hw: tuple[int, int],
                          antialias: bool = False, resize: str = "size") -> jax.Array:
  """`pos_embed [1, 1 + N0, D]` (CLS first, N0 = g0²) -> `[1, 1 + h·w, D]` for grid (h, w).

  Same as transformers' `interpolate_pos_encoding`, including its shortcut: no resampling when
  the patch count is unchanged and the grid is square. `resize='scale_factor'`: DINO's original
  rule (InstantMesh), torch's `scale_factor = (g + 0.1)/g0` per axis (`ViTConfig.pos_embed_resize`). Runs in fp32 whatever the compute dtype
  (transformers does this for DINOv2 because resampling in half precision shifts embeddings).
  """
  n0 = pos_embed.shape[1] - 1
  g0 = int(n0 ** 0.5)
  h, w = grid_hw
  if h * w == n0 and h == w:
    return pos_embed
  if g0 * g0 != n0:
    raise ValueError(f"position embeddings hold {n0} patch positions, not a square grid")
  if resize == "scale_factor":
    # torch: output size floor(g0·sf) (= g, the +0.1 guards against rounding down), source
    # coordinate (i + 0.5)/sf − 0.5.
    wy = jnp.asarray(torch_bicubic_matrix(g0, h, antialias, g0 / (h + 0.1)), jnp.float32)
    wx = jnp.asarray(torch_bicubic_matrix(g0, w, antialias, g0 / (w + 0.1)), jnp.float32)
  elif resize == "size":
    wy = jnp.asarray(torch_bicubic_matrix(g0, h, antialias), jnp.float32)
    wx = jnp.asarray(torch_bicubic_matrix(g0, w, antialias), jnp.float32)
  else:
    raise ValueError(f"interpolate_pos_embed: resize must be one of {POS_EMBED_RESIZES}, got "
                     f"{resize!r}")
  grid = pos_embed[0, 1:].astype(jnp.float32).reshape(g0, g0, -1)
  grid = jnp.einsum("ih,jw,hwd->ijd", wy, wx, grid, precision=jax.lax.Precision.HIGHEST)
  out = jnp.concatenate([pos_embed[0, :1].astype(jnp.float32), grid.reshape(h * w, -1)], 0)
  return out[None].astype(pos_embed.dtype)


# ---------------------------------------------------------------------------------------------
# Modules

_ACTIVATIONS = {
    "gelu": functools.partial(nn.gelu, approximate=False),
    "gelu_new": functools.partial(nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(nn.gelu, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": nn.relu,
    "silu": nn.silu,
    "swish": nn.silu,
}


class LayerScale(nn.Module):
  """DINOv2's per-channel residual-branch scale (`lambda1` in transformers)."""
  init_value: float = 1.0

  @nn.compact
  def __call__(self, x):
    gamma = self.param("lambda1", layers.partitioned(nn.initializers.constant(self.init_value),
                                                     ("norm",)), (x.shape[-1],), jnp.float32)
    return x * gamma.astype(x.dtype)


class ViTBlock(nn.Module):
  """Pre-norm transformer block: x + attn(mod(LN(x))); x + mlp(mod(LN(x)))."""
  config: ViTConfig
  dtype: Dtype = jnp.float32
  attention_impl: str = "xla"
  modulation_dim: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array, modulation: jax.Array | None) -> jax.Array:
    cfg = self.config
    d, h, hd = cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim
    b, length, _ = x.shape
    act = ("batch", "length", "act_embed")
    # Fresh init as transformers' `_init_weights` (ViT and DINOv2 alike): Linear weights
    # N(0, initializer_range) (DINOv2: trunc_normal_ at ±2, i.e. 100σ: the same normal), biases 0.
    init = dict(zip(("kernel_init", "bias_init"), layers.normal_init(cfg.initializer_range)))
    if self.modulation_dim is not None:
      # Zero init (kernel and bias; no torch/transformers counterpart): the pretrained block is
      # reproduced exactly until training moves it. Kept for from-scratch encoders too: the
      # kernel's gradient is SiLU(modulation) ⊗ ∂L/∂(shift, scale) ≠ 0, so it trains.
      mod = layers.dense(4 * d, ("modulation", "embed"), dtype=self.dtype,
                         kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros,
                         name="adaLN_modulation")(
                             nn.silu(modulation.astype(self.dtype)))
      shift_msa, scale_msa, shift_mlp, scale_mlp = jnp.split(mod.astype(jnp.float32), 4, -1)

    # Self-attention branch.
    y = layers.layer_norm(epsilon=cfg.layer_norm_eps, name="norm1")(x)
    if self.modulation_dim is not None:
      y = layers.modulate(y, shift_msa, scale_msa)
    y = y.astype(self.dtype)
    qkv = [layers.dense(d, ("embed", "heads"), use_bias=cfg.qkv_bias, dtype=self.dtype,
                        name=n, **init)(y).reshape(b, length, h, hd) for n in ("query", "key", "value")]
    qkv = [layers.constrain(t, ("batch", "length", "act_heads", None)) for t in qkv]
    y = layers.dot_product_attention(*qkv, implementation=self.attention_impl)
    y = layers.dense(d, ("heads", "embed"), dtype=self.dtype, name="out", **init)(
        y.reshape(b, length, d))
    if cfg.layer_scale:
      y = LayerScale(cfg.layerscale_value, name="layer_scale1")(y)
    x = layers.constrain(x + y.astype(x.dtype), act)

    # MLP branch.
    y = layers.layer_norm(epsilon=cfg.layer_norm_eps, name="norm2")(x)
    if self.modulation_dim is not None:
      y = layers.modulate(y, shift_mlp, scale_mlp)
    y = y.astype(self.dtype)
    if cfg.use_swiglu_ffn:
      hid = cfg.swiglu_hidden
      gate = layers.dense(hid, ("embed", "mlp"), dtype=self.dtype, name="gate", **init)(y)
      up = layers.dense(hid, ("embed", "mlp"), dtype=self.dtype, name="up", **init)(y)
      y = layers.dense(d, ("mlp", "embed"), dtype=self.dtype, name="down", **init)(
          nn.silu(gate) * up)
    else:
      y = layers.dense(cfg.mlp_dim, ("embed", "mlp"), dtype=self.dtype, name="fc1", **init)(y)
      y = _ACTIVATIONS[cfg.hidden_act](y)
      y = layers.dense(d, ("mlp", "embed"), dtype=self.dtype, name="fc2", **init)(y)
    if cfg.layer_scale:
      y = LayerScale(cfg.layerscale_value, name="layer_scale2")(y)
    return layers.constrain(x + y.astype(x.dtype), act)


class ViTEncoder(nn.Module):
  """DINO / DINOv2 ViT encoder.

  `__call__(pixel_values [B, H, W, C] ImageNet-normalised (see `normalize_images`),
  modulation [B, modulation_dim] | None)` -> `last_hidden_state [B, 1 + R + N, D]` after the
  final LayerNorm (token order in the module docstring). H and W must be multiples of the patch
  size. With `output_hidden_states=True` returns `(last_hidden_state, hidden_states)` where
  `hidden_states` is the tuple transformers returns: the embeddings, then each block's output
  (before the final norm), `num_hidden_layers + 1` arrays.
  """
  config: ViTConfig
  dtype: Dtype = jnp.float32          # compute dtype; params fp32, norms/softmax fp32
  attention_impl: str = "xla"         # layers.dot_product_attention implementation
  remat: str | None = None            # per-block remat policy name (see `layers.remat_policy`)
  modulation_dim: int | None = None   # camera-embedding width; None = no modulation

  @nn.compact
  def __call__(self, pixel_values: jax.Array, modulation: jax.Array | None = None, *,
               output_hidden_states: bool = False):
    cfg = self.config
    p = cfg.patch_size
    if pixel_values.ndim != 4 or pixel_values.shape[-1] != cfg.num_channels:
      raise ValueError(f"ViTEncoder pixel_values must be [B, H, W, {cfg.num_channels}], got "
                       f"shape {tuple(pixel_values.shape)}")
    b, hgt, wid, _ = pixel_values.shape
    if hgt % p or wid % p:
      raise ValueError(f"ViTEncoder input size {hgt}x{wid} is not a multiple of the patch size "
                       f"{p}" + (f" (e.g. {hgt // p * p}x{wid // p * p})" if hgt >= p and wid >= p
                                 else ""))
    if self.modulation_dim is None and modulation is not None:
      raise ValueError("ViTEncoder got a modulation but was built with modulation_dim=None")
    if self.modulation_dim is not None:
      if modulation is None or modulation.shape != (b, self.modulation_dim):
        raise ValueError(f"ViTEncoder modulation must be [B={b}, {self.modulation_dim}], got "
                         f"{None if modulation is None else tuple(modulation.shape)}")

    d = cfg.hidden_size
    # Spatial kernel dims unnamed: flax's logical_to_mesh rejects a name used twice in one array
    # ('conv_kernel', 'conv_kernel'), and they are never sharded anyway.
    # Fresh init as transformers' `_init_weights`: every Linear/Conv weight, the CLS token and
    # the position embeddings N(0, initializer_range) (DINOv2 and the CLS/position embeddings of
    # both: `trunc_normal_` cut at ±2, i.e. 100σ, so the same normal), biases zero.
    init = nn.initializers.normal(cfg.initializer_range)
    x = nn.Conv(d, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                param_dtype=jnp.float32,
                kernel_init=layers.partitioned(init, (None, None, "conv_in", "embed")),
                bias_init=layers.partitioned(nn.initializers.zeros, ("embed",)),
                name="patch_embed")(pixel_values.astype(self.dtype))
    gh, gw = hgt // p, wid // p
    x = x.reshape(b, gh * gw, d)

    cls_token = self.param("cls_token", layers.partitioned(init, (None, None, "embed")),
                           (1, 1, d), jnp.float32)
    pos = self.param("position_embeddings", layers.partitioned(init, (None, None, "embed")),
                     (1, cfg.pos_grid ** 2 + 1, d), jnp.float32)
    x = jnp.concatenate([jnp.broadcast_to(cls_token.astype(x.dtype), (b, 1, d)), x], 1)
    x = x + interpolate_pos_embed(pos, (gh, gw), cfg.pos_embed_antialias,
                                  cfg.pos_embed_resize).astype(x.dtype)
    if cfg.num_register_tokens:
      # Registers carry no position embedding: inserted after it is added, as DINOv2-reg does.
      # Init N(0, initializer_range), not transformers' zeros: identical zero registers would
      # receive identical gradients and stay identical forever (facebookresearch/dinov2 draws
      # them from a normal too).
      reg = self.param("register_tokens", layers.partitioned(init, (None, None, "embed")),
                       (1, cfg.num_register_tokens, d), jnp.float32)
      x = jnp.concatenate(
          [x[:, :1], jnp.broadcast_to(reg.astype(x.dtype), (b, cfg.num_register_tokens, d)),
           x[:, 1:]], 1)
    x = layers.constrain(x, ("batch", "length", "act_embed"))

    block_cls = layers.maybe_remat(ViTBlock, self.remat)
    hidden_states = [x]
    for i in range(cfg.num_hidden_layers):
      x = block_cls(cfg, self.dtype, self.attention_impl, self.modulation_dim,
                    name=f"layer_{i}")(x, modulation)
      hidden_states.append(x)
    out = layers.layer_norm(epsilon=cfg.layer_norm_eps, name="layernorm")(x).astype(self.dtype)
    out = layers.constrain(out, ("batch", "length", "act_embed"))
    if output_hidden_states:
      return out, tuple(hidden_states)
    return out

