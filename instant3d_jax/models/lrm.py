"""The sparse-view reconstructor (Instant3D stage 2): 4 posed views → a triplane NeRF.

    images [B, V, H, W, 3] in [0, 1], cameras (batch [B, V])
      │  ImageNet normalisation (+ 6 Plücker ray channels per pixel, optional)
      ▼
    DINO ViT (models/vit.py), camera adaLN in every block (optional)  → [B·V, 1 + R + N, De]
      │  concatenate the tokens of the V views                         → context [B, V·(1+R+N), De]
      ▼
    learned triplane tokens [3·T·T, D] (+ fixed sine/cosine position code, optional)
      │  N × { x += CrossAttn(ModLN(x), context) ; x += SelfAttn(ModLN(x)) ; x += MLP(ModLN(x)) }
      │  (pre-norm; ModLN = LN(x)·(1 + γ) + β from the camera embedding when decoder modulation is
      │   on, plain LN otherwise; optional learned cross-attention bias per token pair)
      ▼
    LayerNorm → ConvTranspose u×u stride u per plane (u = 2)     → planes [B, 3, uT, uT, C]

Rendering (`render_rays`, `render_views`): `rendering.volume_render` with the field
`NeRFMLP(sample_triplane(planes, x))`, vmapped over the batch. The NeRF MLP is shared by all
objects and evaluated in fp32 (it is tiny; the compositing sums many small terms).

Camera conditioning: `cameras.camera_embedding` (16-D: flattened 3×4 c2w + fx/W, fy/H, cx/W, cy/H)
→ `CameraEmbedder` MLP(16 → E, SiLU, E → E) per view. The encoder's adaLN takes each view's own
embedding; the decoder's ModLN (one modulation for the whole object) takes the mean of the V
view embeddings — permutation invariant and independent of V.

NeRF MLP activations (config `nerf`): hidden SiLU (TripoSR) or ReLU (OpenLRM); density
softplus(x + b) with b = −1 (OpenLRM; no overflow, and ≈0.31 at init so gradients reach every
sample) or exp(x + b) (TripoSR); rgb = sigmoid(x)·(1 + 2ε) − ε with ε = 0.001 (OpenLRM: the
targets 0 and 1 are reachable with finite logits).

Config: `LRMConfig.from_config(cfg)`, the typed, validated, frozen mirror of configs/lrm.py's
`model` section (derived sizes as properties: `.vit`, `.tokens_per_view`, `.plane_resolution`,
`.plane_channels`, `.mlp_input_channels`, …). The options marked "optional" above are NOT in the
paper and live in `model.extras` (`ExtrasConfig`), with the CPU demo's input-view lift
(models/lrm_lift.py: a visual hull of the input views added to the tokens and planes).

Logical axes (docs/design.md §3): parameters `embed, mlp, heads, planes, modulation, norm` (the
NeRF MLP is replicated: `None`); activations `batch, length, act_embed, act_heads`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from instant3d_jax import cameras as cameras_lib
from instant3d_jax import errors
from instant3d_jax import rendering
from instant3d_jax.models import layers
from instant3d_jax.models import lrm_lift
from instant3d_jax.models import vit as vit_lib

Dtype = Any
PLUCKER_CHANNELS = 6


# ---------------------------------------------------------------------------------------------
# Config: `LRMConfig.from_config(cfg)`, a typed, frozen (hashable) mirror of the `model` section


def _bad(key: str, value, want: str) -> errors.ConfigError:
  return errors.ConfigError(f"model.{key} must be {want}, got {value!r}")


def _one_of(key: str, value, allowed: tuple) -> None:
  if value not in allowed:
    raise _bad(key, value, "one of " + ", ".join(repr(a) for a in allowed))


def _positive(key: str, value) -> None:
  if value < 1:
    raise _bad(key, value, "a positive integer")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """`model.encoder`: the DINO ViT (models/vit.py). `preset` names the public layout it mirrors;
  `pretrained`: a transformers folder whose weights replace the random encoder at step 0."""
  preset: str
  pretrained: str
  model_type: str
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  patch_size: int
  image_size: int
  layer_norm_eps: float
  num_register_tokens: int
  # How the stored position-embedding grid is resampled to the input's: 'size' (transformers:
  # bicubic to the target size) or 'scale_factor' (DINO/InstantMesh: torch's
  # scale_factor=(g + 0.1)/g0 rule); `vit.ViTConfig.pos_embed_resize`.
  pos_embed_resize: str

  def __post_init__(self):
    _one_of("encoder.model_type", self.model_type, vit_lib.MODEL_TYPES)
    _one_of("encoder.pos_embed_resize", self.pos_embed_resize, vit_lib.POS_EMBED_RESIZES)
    for k in ("hidden_size", "num_layers", "num_heads", "mlp_dim", "patch_size", "image_size"):
      _positive(f"encoder.{k}", getattr(self, k))
    if self.hidden_size % self.num_heads:
      raise _bad("encoder.num_heads", self.num_heads,
                 f"a divisor of encoder.hidden_size={self.hidden_size}")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """`model.decoder`: the triplane transformer (cross-attn → self-attn → MLP per block)."""
  num_layers: int
  hidden_size: int
  num_heads: int
  mlp_ratio: int
  qkv_bias: bool
  attention_out_bias: bool   # a bias on the attention output projections (cross_out, self_out)
  layer_norm_eps: float      # the blocks' LayerNorms
  output_norm_eps: float     # the final LayerNorm before the upsampler

  def __post_init__(self):
    for k in ("num_layers", "hidden_size", "num_heads", "mlp_ratio"):
      _positive(f"decoder.{k}", getattr(self, k))
    if self.hidden_size % self.num_heads:
      raise _bad("decoder.num_heads", self.num_heads,
                 f"a divisor of decoder.hidden_size={self.hidden_size}")


@dataclasses.dataclass(frozen=True)
class TriplaneConfig:
  """`model.triplane`: learned tokens 3 × T × T → planes 3 × uT × uT × channels."""
  token_resolution: int
  channels: int
  upsample: int
  # The third plane's (column, row) axes: 'yz' (column y, row z) or 'zy' (OpenLRM/InstantMesh,
  # EG3D with the eg3d#67 fix); `rendering.PLANE_AXES_BY_NAME`.
  plane_axes: str

  def __post_init__(self):
    for k in ("token_resolution", "channels", "upsample"):
      _positive(f"triplane.{k}", getattr(self, k))
    _one_of("triplane.plane_axes", self.plane_axes, tuple(rendering.PLANE_AXES_BY_NAME))


NERF_ACTIVATIONS = ("relu", "silu")
DENSITY_ACTIVATIONS = ("softplus", "exp")


@dataclasses.dataclass(frozen=True)
class NeRFConfig:
  """`model.nerf`: the shared point-wise MLP (OpenLRM's OSGDecoder layout)."""
  num_layers: int
  hidden: int
  activation: str
  density_activation: str
  density_bias: float
  rgb_padding: float

  def __post_init__(self):
    _positive("nerf.num_layers", self.num_layers)
    _positive("nerf.hidden", self.hidden)
    _one_of("nerf.activation", self.activation, NERF_ACTIVATIONS)
    _one_of("nerf.density_activation", self.density_activation, DENSITY_ACTIVATIONS)


@dataclasses.dataclass(frozen=True)
class RenderConfig:
  """`model.render`: volume rendering in the box [-box, box]³ (instant3d_jax/rendering.py)."""
  num_samples: int
  num_importance: int
  box: float
  chunk: int      # rays per whole-image chunk; 0: from the device's memory (auto_chunk)
  remat_field: bool
  composite: str   # 'quadrature' | 'midpoint' (EG3D); `rendering.volume_render`
  sampling: str    # 'stratified' | 'eg3d'

  def __post_init__(self):
    _positive("render.num_samples", self.num_samples)
    _one_of("render.composite", self.composite, rendering.COMPOSITES)
    _one_of("render.sampling", self.sampling, rendering.SAMPLINGS)
    if (self.composite == "midpoint") != (self.sampling == "eg3d"):
      raise errors.ConfigError(
          "model.render.sampling='eg3d' and model.render.composite='midpoint' go together (EG3D's "
          f"renderer), got sampling={self.sampling!r}, composite={self.composite!r}")
    if self.sampling == "eg3d" and self.num_importance and self.num_samples < 4:
      raise _bad("render.num_samples", self.num_samples, "≥ 4 with sampling='eg3d' (its "
                 "importance sampling pools the coarse weights)")
    if self.num_importance < 0:
      raise _bad("render.num_importance", self.num_importance, "≥ 0")
    if self.box <= 0:
      raise _bad("render.box", self.box, "> 0")
    if self.chunk < 0:
      raise _bad("render.chunk", self.chunk, "rays per chunk ≥ 1, or 0 (from the device's "
                 "memory: rendering.auto_chunk)")


LIFTS = ("none", "hull")
VOXEL_COLOURS = ("mean", "visible")
ATTENTION_BIAS_INITS = ("zeros", "rig")


@dataclasses.dataclass(frozen=True)
class ExtrasConfig:
  """`model.extras`: every option NOT in the paper, each off in the paper's model. The CPU
  prototype's conditioning knobs (issue 5): `plucker_rays` (6 Plücker channels per input pixel),
  `position_code` (a sine/cosine code of each triplane token's plane/row/col),
  `attention_bias` (+ `_init`, `_sigma`, `_floor`: a learned cross-attention bias per token
  pair). The CPU demo's input-view lift (models/lrm_lift.py): `lift`, `lift_concat`,
  `lift_voxels`, `lift_voxel_colour`, `lift_voxel_resolution`, `colour_prior`."""
  plucker_rays: bool
  position_code: bool
  attention_bias: bool
  attention_bias_init: str
  attention_bias_sigma: float
  attention_bias_floor: float
  lift: str
  lift_concat: bool
  lift_voxels: bool
  lift_voxel_colour: str
  lift_voxel_resolution: int
  colour_prior: bool

  def __post_init__(self):
    _one_of("extras.attention_bias_init", self.attention_bias_init, ATTENTION_BIAS_INITS)
    _one_of("extras.lift", self.lift, LIFTS)
    _one_of("extras.lift_voxel_colour", self.lift_voxel_colour, VOXEL_COLOURS)
    if self.lift_voxels and self.lift != "hull":
      raise errors.ConfigError(
          f"model.extras.lift_voxels needs model.extras.lift='hull', got lift={self.lift!r} "
          "(for the paper's model set model.extras.lift_voxels=False and "
          "model.extras.colour_prior=False too)")
    if self.colour_prior and not self.lift_voxels:
      raise errors.ConfigError("model.extras.colour_prior needs model.extras.lift_voxels=True (the "
                               "voxels' colour is the prior)")
    if self.lift_voxel_resolution < 0:
      raise _bad("extras.lift_voxel_resolution", self.lift_voxel_resolution, "≥ 0")


# The keys of `ExtrasConfig` in the sections where they lived before `model.extras` existed
# (base/config_schema.py `MOVED_KEYS` moves them when an older checkpoint's config loads).
EXTRAS_OLD_SECTIONS = {
    "plucker_rays": "model", "position_code": "model.triplane",
    "attention_bias": "model.decoder", "attention_bias_init": "model.decoder",
    "attention_bias_sigma": "model.decoder", "attention_bias_floor": "model.decoder",
    "lift": "model.triplane", "lift_concat": "model.triplane", "lift_voxels": "model.triplane",
    "lift_voxel_colour": "model.triplane", "lift_voxel_resolution": "model.triplane",
    "colour_prior": "model.nerf"}


def _coerce(kind: str, value, key: str):
  """`value` as the dataclass field type `kind` ('int', 'float', 'bool', 'str', or the
  background's tuple), or a one-line ConfigError naming `model.<key>`."""
  if kind == "bool":
    if isinstance(value, (bool, np.bool_)):
      return bool(value)
    raise _bad(key, value, "True or False")
  if kind == "int":
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
      return int(value)
    raise _bad(key, value, "an integer")
  if kind == "float":
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
      return float(value)
    raise _bad(key, value, "a number")
  if kind == "str":
    if isinstance(value, str):
      return value
    raise _bad(key, value, "a string")
  if kind.startswith("tuple"):
    try:
      out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
      out = ()
    if len(out) != 3:
      raise _bad(key, value, "an RGB triple")
    return out
  raise TypeError(kind)


def _build(cls, node, prefix: str):
  """`cls` from the config section `node` (a ConfigDict or dict), every field required."""
  kwargs = {}
  for f in dataclasses.fields(cls):
    key = prefix + f.name
    if not _has(node, f.name):
      raise errors.ConfigError(f"config: missing model.{key} (read by models/lrm.py LRMConfig; "
                               "every LRM config under configs/ sets it)")
    if f.type in _SECTIONS:
      kwargs[f.name] = _build(_SECTIONS[f.type], node[f.name], key + ".")
    else:
      kwargs[f.name] = _coerce(f.type, node[f.name], key)
  return cls(**kwargs)


def _has(node, key: str) -> bool:
  try:
    return key in node
  except TypeError:
    return False


DTYPE_NAMES = tuple(sorted(layers.DTYPES))
ATTENTION_IMPLS = ("xla", "cudnn")


@dataclasses.dataclass(frozen=True)
class LRMConfig:
  """The reconstructor's architecture: the `model` section of configs/lrm.py, typed, validated and
  frozen (hashable: modules take it as an attribute). Build with `LRMConfig.from_config(cfg)`
  (a whole config or its `model` section); configs/lrm.py documents every key. The paper's
  choices live in the sections below; everything NOT in the paper is in `extras`."""
  num_views: int
  input_resolution: int
  dtype: str
  attention_impl: str
  remat: str
  background: tuple[float, float, float]
  camera_embed_dim: int
  camera_convention: str   # the c2w axes in the 16-D camera vector: 'opencv' | 'opengl'
  encoder_modulation: bool
  decoder_modulation: bool
  encoder: EncoderConfig
  decoder: DecoderConfig
  triplane: TriplaneConfig
  nerf: NeRFConfig
  render: RenderConfig
  extras: ExtrasConfig

  def __post_init__(self):
    _positive("num_views", self.num_views)
    _positive("camera_embed_dim", self.camera_embed_dim)
    _one_of("dtype", self.dtype, DTYPE_NAMES)
    _one_of("attention_impl", self.attention_impl, ATTENTION_IMPLS)
    _one_of("camera_convention", self.camera_convention, cameras_lib.CAMERA_CONVENTIONS)
    if self.extras.lift != "none" and self.triplane.plane_axes != "yz":
      raise _bad("triplane.plane_axes", self.triplane.plane_axes,
                 "'yz' with extras.lift (the lift writes its planes in that layout)")
    if self.input_resolution < 1 or self.input_resolution % self.encoder.patch_size:
      raise _bad("input_resolution", self.input_resolution,
                 f"a positive multiple of encoder.patch_size={self.encoder.patch_size}")
    if self.extras.position_code and self.decoder.hidden_size < 6:
      raise _bad("decoder.hidden_size", self.decoder.hidden_size,
                 "≥ 6 with extras.position_code (the triplane position code)")
    if self.extras.lift_voxels:
      r, n = self.plane_resolution, self.voxel_resolution
      if n < r or (n ** 3 * lrm_lift.VOXEL_CHANNELS) % (r * r):
        raise errors.ConfigError(f"model.extras.lift_voxel_resolution must be 0 or at least "
                                 f"the plane resolution {r} with N³·4 a multiple of {r}², got {n}")

  @classmethod
  def from_config(cls, cfg) -> "LRMConfig":
    """From a whole config (with a `model` section), the `model` section itself (a ConfigDict
    or a dict), or an `LRMConfig` (returned as is). Every key is required (an older
    checkpoint's config goes through `base.config_schema.upgrade_config` first); a key still in
    its pre-`extras` section is refused with the key named."""
    if isinstance(cfg, LRMConfig):
      return cfg
    if _has(cfg, "model"):
      cfg = cfg["model"]
    for key, section in EXTRAS_OLD_SECTIONS.items():
      node = cfg
      for part in section.split(".")[1:]:
        node = node[part] if _has(node, part) else None
      if node is not None and _has(node, key):
        raise errors.ConfigError(
            f"config: {section}.{key} is now model.extras.{key} (not in the paper; "
            "base/config_schema.py upgrade_config moves it in a checkpoint's config)")
    return _build(cls, cfg, "")

  def to_dict(self) -> dict:
    """The `model` section as a plain dict (the config keys, nested)."""
    return dataclasses.asdict(self)

  # Derived values ------------------------------------------------------------------------

  @property
  def compute_dtype(self) -> Dtype:
    """The compute dtype named by `dtype` (`layers.DTYPES`)."""
    return layers.compute_dtype(self.dtype, "model.dtype")

  @property
  def vit(self) -> vit_lib.ViTConfig:
    """The encoder's `ViTConfig` (3 colour channels + 6 Plücker channels when enabled)."""
    e = self.encoder
    return vit_lib.ViTConfig(
        model_type=e.model_type, hidden_size=e.hidden_size, num_hidden_layers=e.num_layers,
        num_attention_heads=e.num_heads, mlp_dim=e.mlp_dim, patch_size=e.patch_size,
        image_size=e.image_size,
        num_channels=3 + (PLUCKER_CHANNELS if self.extras.plucker_rays else 0),
        layer_norm_eps=e.layer_norm_eps, layer_scale=e.model_type != "vit",
        num_register_tokens=e.num_register_tokens, pos_embed_resize=e.pos_embed_resize)

  @property
  def plane_axes(self) -> tuple:
    """The planes' (column, row) axes (`rendering.PLANE_AXES_BY_NAME[triplane.plane_axes]`)."""
    return rendering.PLANE_AXES_BY_NAME[self.triplane.plane_axes]

  @property
  def tokens_per_view(self) -> int:
    """Encoder tokens per view: CLS + registers + (H/p)²."""
    grid = self.input_resolution // self.encoder.patch_size
    return 1 + self.encoder.num_register_tokens + grid * grid

  @property
  def plane_resolution(self) -> int:
    """Side R = upsample · token_resolution of the output planes."""
    return self.triplane.upsample * self.triplane.token_resolution

  @property
  def feature_channels(self) -> int:
    """Channels per plane the NeRF MLP reads: `triplane.channels`, plus the raw lifted
    channels with `extras.lift='hull'` and `lift_concat`."""
    x = self.extras
    return self.triplane.channels + (
        lrm_lift.LIFT_CHANNELS if x.lift == "hull" and x.lift_concat else 0)

  @property
  def voxel_resolution(self) -> int:
    """Side N of the lifted voxel grid (`extras.lift_voxel_resolution`; 0 = the plane
    resolution R). N ≥ R with N³·4 a multiple of R², so the grid fills whole XY-plane channels."""
    return self.extras.lift_voxel_resolution or self.plane_resolution

  @property
  def voxel_channels(self) -> int:
    """Extra channels per plane holding the lifted voxel grid (`extras.lift_voxels`): the N³ ×
    VOXEL_CHANNELS grid laid out in the XY plane (N³·4 / R² channels; zeros in XZ and YZ); 0 when
    off."""
    if not self.extras.lift_voxels:
      return 0
    return self.voxel_resolution ** 3 * lrm_lift.VOXEL_CHANNELS // self.plane_resolution ** 2

  @property
  def plane_channels(self) -> int:
    """Channels per plane of the output triplane: `feature_channels` plus `voxel_channels`."""
    return self.feature_channels + self.voxel_channels

  @property
  def mlp_input_channels(self) -> int:
    """The NeRF MLP's input width: 3 planes' features, plus the voxel sample with
    `extras.lift_voxels`."""
    return 3 * self.feature_channels + (
        lrm_lift.VOXEL_CHANNELS if self.extras.lift_voxels else 0)

  def nerf_mlp(self, raw_density: bool = False) -> "NeRFMLP":
    """The shared NeRF MLP module of this config; `raw_density`: it returns the density before
    its activation (what the 'midpoint' renderer averages; `field_fn` asks for it then)."""
    n = self.nerf
    return NeRFMLP(hidden=n.hidden, num_layers=n.num_layers, activation=n.activation,
                   density_activation=n.density_activation, density_bias=n.density_bias,
                   rgb_padding=n.rgb_padding, colour_prior=self.extras.colour_prior,
                   raw_density=raw_density)


_SECTIONS = {"EncoderConfig": EncoderConfig, "DecoderConfig": DecoderConfig,
             "TriplaneConfig": TriplaneConfig, "NeRFConfig": NeRFConfig,
             "RenderConfig": RenderConfig, "ExtrasConfig": ExtrasConfig}


# ---------------------------------------------------------------------------------------------
# Conditioning inputs


def plucker_rays(camera: cameras_lib.Camera) -> jax.Array:
  """Per-pixel Plücker coordinates `[..., H, W, 6]` = (d, o × d) with unit ray direction d.

  A ray's 6 numbers are independent of where along it the origin sits, so every pixel of every
  view gets a position-free description of the ray it sees (≈ unit scale for the rig at 2.7).
  """
  origins, directions = cameras_lib.camera_rays(camera)
  return jnp.concatenate([directions, jnp.cross(origins, directions)], axis=-1)


def triplane_position_code(token_resolution: int, dim: int) -> np.ndarray:
  """Fixed sine/cosine code `[3·T·T, dim]` of each triplane token's (plane, row, col).

  The three coordinates are scaled to [-1, 1] (plane −1/0/1; texel centres for row/col); each
  gets `dim // 6` frequencies 2^k·π/2 (k = 0…), as sin and cos, the remaining channels are 0.
  """
  T = token_resolution
  n = dim // 6
  if n < 1:
    raise errors.ConfigError(f"triplane position code needs a decoder width >= 6, got {dim}")
  centres = (np.arange(T) + 0.5) / T * 2 - 1
  plane, row, col = np.meshgrid(np.array([-1.0, 0.0, 1.0]), centres, centres, indexing="ij")
  coords = np.stack([plane, row, col], -1).reshape(3 * T * T, 3)
  freqs = (2.0 ** np.arange(n)) * np.pi / 2
  ang = coords[:, :, None] * freqs                                    # [L, 3, n]
  code = np.concatenate([np.sin(ang), np.cos(ang)], -1).reshape(3 * T * T, 6 * n)
  out = np.zeros((3 * T * T, dim), np.float32)
  out[:, :6 * n] = code
  return out


def rig_attention_bias(mcfg: LRMConfig, *, num_points: int = 64) -> np.ndarray:
  """Geometric initial value `[3·T·T, V·(1 + R + N)]` of the decoder's cross-attention bias.

  Triplane token (plane p, row r, col c) stands for the segment of 3-D points whose two plane
  coordinates are its texel centre and whose third coordinate spans [-box, box] (planes and axes
  as `LRMConfig.plane_axes`). Projected into input view v of the fixed rig (Instant3D, az
  0/90/180/270 at `input_resolution`), it is a 2-D segment; the bias of (token, patch token of
  view v) is −d²/(2σ²), d = the distance in patches from the patch centre to that segment
  (`num_points` samples along it), σ = `extras.attention_bias_sigma` patches, floored at
  `extras.attention_bias_floor`. CLS and register tokens get 0. So from step 0 each triplane
  token attends mostly to the image patches that see its points: the routing a zero-initialised
  bias has to learn.
  """
  m = LRMConfig.from_config(mcfg)
  if m.num_views != 4:
    raise errors.ConfigError(f"rig_attention_bias: the Instant3D rig has 4 views, model.num_views is "
                     f"{m.num_views}")
  T, box = m.triplane.token_resolution, float(m.render.box)
  res, patch = m.input_resolution, m.encoder.patch_size
  grid = res // patch
  sigma = m.extras.attention_bias_sigma
  floor = m.extras.attention_bias_floor
  centres = ((np.arange(T) + 0.5) / T * 2 - 1) * box
  along = np.linspace(-box, box, num_points)
  pts = np.zeros((3, T, T, num_points, 3))
  for p, (col_axis, row_axis) in enumerate(m.plane_axes):
    pts[p, :, :, :, row_axis] = centres[:, None, None]
    pts[p, :, :, :, col_axis] = centres[None, :, None]
    pts[p, :, :, :, 3 - col_axis - row_axis] = along
  pts = pts.reshape(-1, num_points, 3)                                         # [Lq, P, 3]
  # Patch centres in patch units: patch (i, j) covers pixels [j·p, (j+1)·p) × [i·p, (i+1)·p).
  pi, pj = np.meshgrid(np.arange(grid) + 0.5, np.arange(grid) + 0.5, indexing="ij")
  centre = np.stack([pj.reshape(-1), pi.reshape(-1)], -1)                     # [N, 2] (u, v)
  extra = 1 + m.encoder.num_register_tokens
  out = []
  with jax.ensure_compile_time_eval():   # concrete values also when called under jit (init)
    rig = cameras_lib.instant3d_rig(res)
    uvs = [np.asarray(cameras_lib.project_points(rig[v], jnp.asarray(pts, jnp.float32))[0])
           for v in range(4)]
  for uv in uvs:
    uv = uv.astype(np.float64) / patch                                         # [Lq, P, 2]
    d2 = np.min(np.sum((uv[:, None] - centre[None, :, None]) ** 2, -1), -1)    # [Lq, N]
    out += [np.zeros((pts.shape[0], extra)), np.maximum(-d2 / (2 * sigma ** 2), floor)]
  return np.concatenate(out, -1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Modules


class CameraEmbedder(nn.Module):
  """16-D camera vector → MLP(16 → E, SiLU, E → E) (InstantMesh / OpenLRM `CameraEmbedder`);
  torch `nn.Linear` init (`layers.dense`'s default)."""
  dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, cam: jax.Array) -> jax.Array:
    x = layers.dense(self.dim, (None, "modulation"), dtype=self.dtype, name="fc1")(cam)
    # Output replicated: `modulation` cannot name both axes of one kernel.
    return layers.dense(self.dim, ("modulation", None), dtype=self.dtype, name="fc2")(nn.silu(x))


def _mha_out_init() -> dict:
  """torch `nn.MultiheadAttention`'s out_proj: a `Linear`'s kernel init, bias zeroed by
  `_reset_parameters` (OpenLRM's attention has no bias at all; ours is kept, starting at 0)."""
  return dict(kernel_init=layers.torch_linear_init()[0], bias_init=nn.initializers.zeros)


class DecoderBlock(nn.Module):
  """Pre-norm: x += CrossAttn(ModLN(x), context); x += SelfAttn(ModLN(x)); x += MLP(ModLN(x)).

  Fresh init as OpenLRM's `ConditionModulationBlock` (torch): attention as
  `nn.MultiheadAttention` (xavier-uniform q/k/v, zero biases, out_proj a `Linear` kernel), the
  MLP `nn.Linear` defaults, LayerNorms ones/zeros; the ModLN projection is zero (see below)."""
  hidden: int
  num_heads: int
  mlp_ratio: int
  qkv_bias: bool = False
  attention_out_bias: bool = True   # InstantMesh: nn.MultiheadAttention(bias=False) has none
  layer_norm_eps: float = 1e-6
  modulated: bool = False
  attention_bias_shape: tuple[int, int] | None = None   # (Lq, Lk) of the learned bias
  attention_bias_init: Any = None   # initializer of the bias (None: zeros)
  dtype: Dtype = jnp.float32
  attention_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array, cond: jax.Array | None) -> jax.Array:
    d, h = self.hidden, self.num_heads
    hd = d // h
    b, lq, _ = x.shape
    lk = context.shape[1]
    act = ("batch", "length", "act_embed")
    if self.modulated:
      # LRM's ModLN, one projection for the 3 norms (shift, scale each); zero init (kernel and
      # bias) = plain LN. A deliberate deviation from OpenLRM (torch Linear default there), as
      # DiT's adaLN: the kernel still trains (its gradient is SiLU(cond) ⊗ ∂L/∂mod ≠ 0).
      mod = layers.dense(6 * d, ("modulation", "embed"), dtype=self.dtype,
                         kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros,
                         name="modulation")(
                             nn.silu(cond.astype(self.dtype)))
      mods = jnp.split(mod.astype(jnp.float32), 6, -1)

    def norm(y, i):
      y = layers.layer_norm(epsilon=self.layer_norm_eps, name=f"norm{i + 1}")(y)
      if self.modulated:
        y = layers.modulate(y, mods[2 * i], mods[2 * i + 1])
      return y.astype(self.dtype)

    def heads(y, name, length):
      # torch `nn.MultiheadAttention._reset_parameters`: xavier_uniform_ on the projection
      # weight, zero bias. Its fans are those of the tensor torch draws: the packed
      # `in_proj_weight [3D, D]` when the input width is D (self-attention; cross-attention when
      # the image tokens are D wide too), else the separate `[D, kdim]` weights.
      fan_in = y.shape[-1]
      fan_out = 3 * d if (fan_in == d and context.shape[-1] == d) or name.startswith("self") else d
      y = layers.dense(d, ("embed", "heads"), use_bias=self.qkv_bias, dtype=self.dtype,
                       kernel_init=layers.xavier_uniform_init(fan_in, fan_out),
                       bias_init=nn.initializers.zeros, name=name)(y).reshape(b, length, h, hd)
      return layers.constrain(y, ("batch", "length", "act_heads", None))

    # Cross-attention to the image tokens of all views.
    y = norm(x, 0)
    ctx = context.astype(self.dtype)
    bias = None
    if self.attention_bias_shape is not None:
      if self.attention_bias_shape != (lq, lk):
        raise ValueError(
            f"the learned cross-attention bias was built for {self.attention_bias_shape[1]} image "
            f"tokens and {self.attention_bias_shape[0]} triplane tokens, got {lk} and {lq}: it "
            "needs the fixed input rig (views, resolution) the model was configured with")
      bias = self.param("cross_attn_bias",
                        layers.partitioned(self.attention_bias_init or nn.initializers.zeros,
                                           ("planes", None)),
                        self.attention_bias_shape, jnp.float32)
      bias = bias.astype(self.dtype)[None, None]
    y = layers.dot_product_attention(heads(y, "cross_q", lq), heads(ctx, "cross_k", lk),
                                     heads(ctx, "cross_v", lk), bias=bias,
                                     implementation=self.attention_impl)
    y = layers.dense(d, ("heads", "embed"), dtype=self.dtype, name="cross_out",
                     use_bias=self.attention_out_bias, **_mha_out_init())(
        y.reshape(b, lq, d))
    x = layers.constrain(x + y.astype(x.dtype), act)

    # Self-attention among the triplane tokens.
    y = norm(x, 1)
    y = layers.dot_product_attention(heads(y, "self_q", lq), heads(y, "self_k", lq),
                                     heads(y, "self_v", lq), implementation=self.attention_impl)
    y = layers.dense(d, ("heads", "embed"), dtype=self.dtype, name="self_out",
                     use_bias=self.attention_out_bias, **_mha_out_init())(
        y.reshape(b, lq, d))
    x = layers.constrain(x + y.astype(x.dtype), act)

    # MLP (GELU, exact as torch's nn.GELU in OpenLRM).
    y = norm(x, 2)
    y = layers.dense(d * self.mlp_ratio, ("embed", "mlp"), dtype=self.dtype, name="fc1")(y)
    y = layers.dense(d, ("mlp", "embed"), dtype=self.dtype, name="fc2")(
        nn.gelu(y, approximate=False))
    return layers.constrain(x + y.astype(x.dtype), act)


class TriplaneTransformer(nn.Module):
  """Image tokens `[B, Lk, De]` (+ cond `[B, E]`) → planes `[B, 3, uT, uT, C]` (u = upsample)."""
  mcfg: LRMConfig

  @nn.compact
  def __call__(self, context: jax.Array, cond: jax.Array | None,
               lifted: jax.Array | None = None) -> jax.Array:
    m = self.mcfg
    dc, tc, ex = m.decoder, m.triplane, m.extras
    dtype = m.compute_dtype
    T, D = tc.token_resolution, dc.hidden_size
    b = context.shape[0]
    lq = 3 * T * T
    # OpenLRM init: N(0, 1)/sqrt(D).
    tokens = self.param("triplane_tokens",
                        layers.partitioned(nn.initializers.normal(1.0 / math.sqrt(D)),
                                           ("planes", "embed")), (lq, D), jnp.float32)
    x = tokens
    if ex.position_code:
      x = x + jnp.asarray(triplane_position_code(T, D))
    x = jnp.broadcast_to(x.astype(dtype), (b, lq, D))
    u = tc.upsample
    if lifted is not None:
      # The lifted planes [B, 3, uT, uT, F], average-pooled to the token grid, enter the tokens.
      f = lifted.shape[-1]
      pooled = lifted.reshape(b, 3, T, u, T, u, f).mean(axis=(3, 5)).reshape(b, lq, f)
      k_init, b_init = layers.torch_linear_init()
      x = x + nn.Dense(D, dtype=dtype, param_dtype=jnp.float32,
                       kernel_init=layers.partitioned(k_init, (None, "embed")),
                       bias_init=layers.partitioned(b_init, ("embed",)),
                       name="lift_tokens")(pooled)
    x = layers.constrain(x, ("batch", "length", "act_embed"))
    block = layers.maybe_remat(DecoderBlock, m.remat)
    bias_shape = (lq, context.shape[1]) if ex.attention_bias else None
    bias_init = None
    if ex.attention_bias and ex.attention_bias_init == "rig":
      def bias_init(key, shape, dtype=jnp.float32):   # runs at init only, not in every apply
        del key
        value = rig_attention_bias(m)
        if value.shape != tuple(shape):
          raise errors.ConfigError(f"extras.attention_bias_init='rig' built a bias of shape "
                                   f"{value.shape} for {shape[1]} image tokens")
        return jnp.asarray(value, dtype)
    for i in range(dc.num_layers):
      x = block(hidden=D, num_heads=dc.num_heads, mlp_ratio=dc.mlp_ratio, qkv_bias=dc.qkv_bias,
                attention_out_bias=dc.attention_out_bias, layer_norm_eps=dc.layer_norm_eps, modulated=m.decoder_modulation,
                attention_bias_shape=bias_shape, attention_bias_init=bias_init, dtype=dtype,
                attention_impl=m.attention_impl, name=f"block_{i}")(x, context, cond)
    x = layers.layer_norm(epsilon=dc.output_norm_eps, name="norm_out")(x).astype(dtype)
    x = x.reshape(b * 3, T, T, D)
    # OpenLRM's upsampler is a fresh `nn.ConvTranspose2d` (torch default init, fan-in quirk
    # included: see `layers.torch_conv_transpose_init`).
    up_kernel_init, up_bias_init = layers.torch_conv_transpose_init()
    x = nn.ConvTranspose(
        tc.channels, (u, u), strides=(u, u), padding="VALID", dtype=dtype,
        param_dtype=jnp.float32,
        # Spatial axes unnamed: flax rejects a repeated logical name, and a u×u kernel is
        # never sharded anyway.
        kernel_init=layers.partitioned(up_kernel_init, (None, None, "embed", "planes")),
        bias_init=layers.partitioned(up_bias_init, ("planes",)),
        name="upsampler")(x)
    planes = x.reshape(b, 3, u * T, u * T, tc.channels)
    if lifted is not None:
      # ... and, through one linear map per plane, the planes themselves (a skip path).
      bound = 1.0 / math.sqrt(f)
      uniform = lambda k, shape, dtype=jnp.float32: jax.random.uniform(  # noqa: E731
          k, shape, dtype, -bound, bound)
      w = self.param("lift_planes_kernel", layers.partitioned(uniform, (None, None, "planes")),
                     (3, f, tc.channels), jnp.float32)
      bias = self.param("lift_planes_bias", layers.partitioned(uniform, (None, "planes")),
                        (3, tc.channels), jnp.float32)
      planes = planes + (jnp.einsum("bprsf,pfc->bprsc", lifted.astype(dtype), w.astype(dtype))
                         + bias[:, None, None, :].astype(dtype))
      if ex.lift_concat:
        # The raw lifted channels ride along as the last LIFT_CHANNELS plane channels, so the
        # NeRF MLP reads the hull and the view colours at each sample point unmixed.
        planes = jnp.concatenate([planes, lifted.astype(planes.dtype)], -1)
    return layers.constrain(planes, ("batch", None, "height", "width", None))


def density_activation(name: str):
  """The density activation `model.nerf.density_activation` names, applied to x + bias:
  'softplus' or 'exp' (clamped: exp overflows fp32 above ~88 and one such sample poisons the
  batch)."""
  if name == "softplus":
    return nn.softplus
  if name == "exp":
    return lambda raw: jnp.exp(jnp.minimum(raw, 15.0))
  raise errors.ConfigError(f"model.nerf.density_activation must be 'softplus' or 'exp', got "
                           f"{name!r}")


def _osg_init() -> dict:
  """OpenLRM `OSGDecoder` layer init: torch `nn.Linear` kernel, bias zeroed."""
  return dict(kernel_init=layers.torch_linear_init()[0], bias_init=nn.initializers.zeros)


class NeRFMLP(nn.Module):
  """Shared point-wise MLP: plane features `[..., 3C]` → (density `[...]`, rgb `[..., 3]`).

  `num_layers` dense layers (`num_layers − 1` hidden of width `hidden`, then 4 outputs); fp32.
  Kernels are replicated (logical axes None): ~50k parameters evaluated at every sample.
  Fresh init as OpenLRM's `OSGDecoder`: torch `nn.Linear` kernels, all biases zeroed.
  `colour_prior` (NOT in the paper; `extras.colour_prior`): the features' last 3 channels are a
  colour estimate (the lifted voxels' colour) added to the colour logits, so the MLP learns a
  correction to the input views' colour instead of the colour itself.
  """
  hidden: int = 64
  num_layers: int = 10
  activation: str = "silu"
  density_activation: str = "softplus"
  density_bias: float = -1.0
  rgb_padding: float = 0.001
  colour_prior: bool = False
  raw_density: bool = False   # return x + density_bias, the activation left to the renderer

  @nn.compact
  def __call__(self, features: jax.Array) -> tuple[jax.Array, jax.Array]:
    acts = {"relu": nn.relu, "silu": nn.silu}
    if self.activation not in acts:
      raise errors.ConfigError(f"model.nerf.activation must be 'relu' or 'silu', got {self.activation!r}")
    x = features.astype(jnp.float32)
    for i in range(self.num_layers - 1):
      x = acts[self.activation](layers.dense(self.hidden, (None, None), name=f"dense_{i}",
                                             **_osg_init())(x))
    x = layers.dense(4, (None, None), name=f"dense_{self.num_layers - 1}", **_osg_init())(x)
    return self.outputs(x, features)

  @nn.nowrap
  def outputs(self, x: jax.Array, features: jax.Array | None = None):
    """The last layer's `x [..., 4]` → (density, rgb) (no parameters; also the fused render
    field's tail, `render_field_fn`). `features`: the MLP input, read with `colour_prior`."""
    raw = x[..., 0] + self.density_bias
    density = raw if self.raw_density else density_activation(self.density_activation)(raw)
    eps = self.rgb_padding
    logits = x[..., 1:]
    if self.colour_prior:
      prior = jnp.clip(features[..., -3:].astype(jnp.float32), 0.02, 0.98)
      logits = logits + jnp.log(prior) - jnp.log1p(-prior)
    rgb = nn.sigmoid(logits) * (1 + 2 * eps) - eps
    return density, rgb


class LRM(nn.Module):
  """The reconstructor. `__call__(images [B, V, H, W, 3] in [0, 1], cameras (batch [B, V]))`
  → planes `[B, 3, R, R, C]` (R = upsample·token_resolution). Build with
  `LRM(LRMConfig.from_config(cfg))`.

  Parameters: `camera_embedder`, `encoder` (ViTEncoder; the transformers layout via
  convert/transformers_vit.py), `decoder` (TriplaneTransformer), `nerf` (NeRFMLP, used by the
  render functions below; created at init only).
  """
  mcfg: LRMConfig

  @nn.compact
  def __call__(self, images: jax.Array, cameras: cameras_lib.Camera) -> jax.Array:
    m = self.mcfg
    ex = m.extras
    dtype = m.compute_dtype
    if images.ndim != 5 or images.shape[-1] != 3:
      raise ValueError(f"LRM images must be [B, V, H, W, 3], got shape {tuple(images.shape)}")
    b, v, h, w, _ = images.shape
    if cameras.batch_shape != (b, v):
      raise ValueError(f"LRM cameras must have batch shape (B, V) = {(b, v)}, got "
                       f"{cameras.batch_shape}")
    if (cameras.height, cameras.width) != (h, w):
      raise errors.ConfigError(f"LRM cameras are {cameras.width}x{cameras.height} pixels but the images "
                       f"are {w}x{h}")
    if ex.attention_bias and (v, h, w) != (m.num_views, m.input_resolution,
                                                  m.input_resolution):
      raise errors.ConfigError(
          f"LRM with extras.attention_bias needs the fixed input rig it was built for: "
          f"{m.num_views} views of {m.input_resolution}², got {v} views of {w}x{h}")

    cam = cameras_lib.camera_embedding(cameras, convention=m.camera_convention)  # [B, V, 16]
    cam_embed = CameraEmbedder(m.camera_embed_dim, dtype, name="camera_embedder")(cam)
    x = vit_lib.normalize_images(images.astype(jnp.float32))
    if ex.plucker_rays:
      x = jnp.concatenate([x, plucker_rays(cameras)], -1)
    x = x.reshape(b * v, h, w, x.shape[-1])
    encoder = vit_lib.ViTEncoder(
        m.vit, dtype=dtype, attention_impl=m.attention_impl,
        remat=None if m.remat == "none" else m.remat,
        modulation_dim=m.camera_embed_dim if m.encoder_modulation else None, name="encoder")
    tokens = encoder(x, cam_embed.reshape(b * v, -1) if m.encoder_modulation else None)
    context = tokens.reshape(b, v * tokens.shape[1], tokens.shape[2])
    context = layers.constrain(context, ("batch", "length", "act_embed"))
    cond = jnp.mean(cam_embed, axis=1) if m.decoder_modulation else None
    lifted = vox = None
    if ex.lift == "hull":   # the CPU demo's lift, NOT in the paper (models/lrm_lift.py)
      res = m.plane_resolution
      vc = ex.lift_voxel_colour if ex.lift_voxels else None
      vn = m.voxel_resolution if ex.lift_voxels else 0
      lifted, vox = jax.vmap(lambda im, cam: lrm_lift.lift_inputs(
          im, cam, res, m.render.box, m.background, vc, vn))(images, cameras)
    planes = TriplaneTransformer(m, name="decoder")(context, cond, lifted)
    if vox is not None:
      planes = jnp.concatenate([planes, vox.astype(planes.dtype)], -1)
    if self.is_initializing():
      m.nerf_mlp().copy(name="nerf")(jnp.zeros((1, m.mlp_input_channels), jnp.float32))
    return planes


def point_features(mcfg: LRMConfig, planes: jax.Array, points: jax.Array) -> jax.Array:
  """The NeRF MLP's input at `points [..., 3]` of ONE object's `planes [3, R, R, C]`: the three
  planes' features (concatenated), and with `extras.lift_voxels` the trilinear voxel sample."""
  box = mcfg.render.box
  if not mcfg.extras.lift_voxels:
    return rendering.sample_triplane(planes, points, box, plane_axes=mcfg.plane_axes)
  c0 = mcfg.feature_channels
  feats = rendering.sample_triplane(planes[..., :c0], points, box, plane_axes=mcfg.plane_axes)
  vox = lrm_lift.sample_voxels(planes[..., c0:], points, box)
  return jnp.concatenate([feats, vox.astype(feats.dtype)], -1)


# ---------------------------------------------------------------------------------------------
# Initialisation and rendering


def dummy_inputs(mcfg: LRMConfig, batch: int = 1) -> tuple[jax.Array, cameras_lib.Camera]:
  """Zero images and the Instant3D rig (num_views azimuths 360/V apart) for init/eval_shape."""
  res, v = mcfg.input_resolution, mcfg.num_views
  az = jnp.arange(v, dtype=jnp.float32) * (360.0 / v)
  cams = cameras_lib.orbit_camera(cameras_lib.INSTANT3D_ELEVATION, az,
                                  cameras_lib.INSTANT3D_DISTANCE, cameras_lib.INSTANT3D_FOV,
                                  res, res)
  cams = jax.tree.map(lambda a: jnp.broadcast_to(a, (batch,) + a.shape), cams)
  return jnp.zeros((batch, v, res, res, 3), jnp.float32), cams


def init_params(mcfg, key: jax.Array) -> dict:
  """Random parameters (boxed with logical axis names; `nn.meta.unbox` for plain arrays) of
  `mcfg` (an `LRMConfig`, a whole config or its `model` section)."""
  mcfg = LRMConfig.from_config(mcfg)
  images, cams = dummy_inputs(mcfg)
  # Jitted: eager init dispatches thousands of small ops (seconds even for a micro model).
  return jax.jit(lambda k: LRM(mcfg).init(k, images, cams)["params"])(key)


def abstract_params(mcfg) -> dict:
  """Parameter shapes (boxed `ShapeDtypeStruct`s) without allocating anything."""
  mcfg = LRMConfig.from_config(mcfg)
  return jax.eval_shape(lambda k: init_params(mcfg, k), jax.random.key(0))


def field_fn(mcfg, params: Mapping[str, Any], planes: jax.Array) -> rendering.FieldFn:
  """`volume_render` field of ONE object: `planes [3, R, R, C]`, `params` the full LRM params."""
  mcfg = LRMConfig.from_config(mcfg)
  # 'midpoint' compositing averages raw densities and activates the means itself.
  mlp = mcfg.nerf_mlp(raw_density=mcfg.render.composite == "midpoint")
  nerf_params = nn.meta.unbox(params["nerf"])
  planes = planes.astype(jnp.float32)

  def field(points, directions):   # view-independent, as in LRM
    del directions
    return mlp.apply({"params": nerf_params}, point_features(mcfg, planes, points))
  if mcfg.render.remat_field:
    # Only the sample points are kept for the backward pass; the 12 gathers per sample and the
    # MLP activations are recomputed (per-sample tensors dominate a training step's memory).
    field = jax.checkpoint(field)
  return field


def render_field_fn(mcfg, params: Mapping[str, Any], planes: jax.Array) -> rendering.FieldFn:
  """The field `render_views` renders whole images with: `field_fn`'s field, with the triplane
  lookup and the NeRF MLP fused (`rendering.make_mlp_triplane_field`: the first layer folded
  into the planes when they have at least `nerf.hidden` channels, the hidden matmuls in bf16
  under `model.dtype='bfloat16'`). Equal to `field_fn` up to rounding in fp32. Falls back to
  `field_fn` itself where the MLP input is not the three planes' features alone
  (`extras.lift_voxels`: the voxel sample; `extras.colour_prior`: the raw feature channels feed
  the output). `render_rays` (the trainers' random rays) keeps `field_fn`."""
  mcfg = LRMConfig.from_config(mcfg)
  if mcfg.extras.lift_voxels or mcfg.extras.colour_prior:
    return field_fn(mcfg, params, planes)
  mlp = mcfg.nerf_mlp(raw_density=mcfg.render.composite == "midpoint")
  nerf_params = nn.meta.unbox(params["nerf"])
  dense = [(nerf_params[f"dense_{i}"]["kernel"], nerf_params[f"dense_{i}"]["bias"])
           for i in range(mlp.num_layers)]
  activation = {"relu": nn.relu, "silu": nn.silu}[mlp.activation]
  dtype = jnp.bfloat16 if mcfg.dtype == "bfloat16" else jnp.float32
  field = rendering.make_mlp_triplane_field(
      planes, dense, activation, mlp.outputs, box=mcfg.render.box, plane_axes=mcfg.plane_axes,
      dtype=dtype)
  if mcfg.render.remat_field:
    field = jax.checkpoint(field)
  return field


def render_sample_bytes(mcfg) -> int:
  """Estimated bytes one ray-sample keeps alive while `render_views` renders a chunk (for
  `rendering.auto_chunk`): fp32 gathered rows and the MLP input (3C wide, or `hidden` wide when
  the first layer is folded), a few hidden activations and the renderer's ~16 per-sample values.
  Measured scale: the `large` field at chunk 8192 × 128 samples peaked at 3.7 GB on CPU
  (configs/lrm.py), ~3.5 kB a sample."""
  mcfg = LRMConfig.from_config(mcfg)
  hidden = mcfg.nerf.hidden
  width = mcfg.mlp_input_channels
  if not (mcfg.extras.lift_voxels or mcfg.extras.colour_prior) and (
      mcfg.feature_channels >= hidden):
    width = hidden
  return 4 * (2 * width + 6 * hidden + 64)


def render_kwargs(mcfg, num_samples: int | None = None, num_importance: int | None = None,
                  background=None) -> dict:
  """`rendering.volume_render` / `render_image` keywords of the config (`model.render`, the
  background); sample counts and background overridable. With `composite='midpoint'` the field
  returns raw densities (`field_fn`) and the renderer applies `nerf.density_activation`."""
  mcfg = LRMConfig.from_config(mcfg)
  r = mcfg.render
  kw = dict(num_samples=r.num_samples if num_samples is None else num_samples,
            num_importance=r.num_importance if num_importance is None else num_importance,
            background=mcfg.background if background is None else background, box=r.box)
  if r.composite != "quadrature" or r.sampling != "stratified":
    kw.update(composite=r.composite, sampling=r.sampling)
    if r.composite == "midpoint":
      kw["density_activation"] = density_activation(mcfg.nerf.density_activation)
  return kw


def _hooks(uniforms, t_fine, t_coarse=None) -> dict:
  """The renderer's test hooks, only when given (one object's slice, under vmap)."""
  out = {}
  if uniforms is not None:
    out["uniforms"] = uniforms
  if t_fine is not None:
    out["t_fine"] = t_fine
  if t_coarse is not None:
    out["t_coarse"] = t_coarse
  return out


def render_rays(mcfg, params, planes: jax.Array, origins: jax.Array, directions: jax.Array, *,
                key: jax.Array | None = None, num_samples: int | None = None,
                num_importance: int | None = None, background=None,
                uniforms: dict | None = None, t_fine: jax.Array | None = None,
                t_coarse: jax.Array | None = None) -> dict:
  """Renders rays `origins/directions [B, ..., 3]` through the B objects `planes [B, 3, R, R, C]`.

  Returns `volume_render`'s dict with leading `[B, ...]`. `key` (one for the batch) jitters the
  samples; None = deterministic. Sample counts and background default to the config.
  `uniforms` (`{'coarse': [B, ..., S], 'fine': [B, ..., M]}`) and `t_fine [B, ..., M]`: the
  renderer's test hooks (replayed random numbers / importance depths), per object; `t_coarse
  [B, ..., S]` the coarse depths themselves (another implementation's, for grazing rays).
  """
  mcfg = LRMConfig.from_config(mcfg)
  kw = render_kwargs(mcfg, num_samples, num_importance, background)
  b = planes.shape[0]
  keys = None if key is None else jax.random.split(key, b)

  def one(p, o, d, k, u, tf, tc):
    return rendering.volume_render(field_fn(mcfg, params, p), o, d, key=k, **kw,
                                   **_hooks(u, tf, tc))

  return jax.vmap(one)(planes, origins, directions, keys, uniforms, t_fine, t_coarse)


def render_views(mcfg, params, planes: jax.Array, cameras: cameras_lib.Camera, *,
                 key: jax.Array | None = None, chunk: int | None = None,
                 outputs=("rgb", "depth", "opacity"), num_samples: int | None = None,
                 num_importance: int | None = None, background=None,
                 uniforms: dict | None = None, t_fine: jax.Array | None = None,
                 t_coarse: jax.Array | None = None) -> dict:
  """Whole images of `cameras` (batch shape `[B, V]`) of the B objects → `[B, V, H, W, ...]`.

  Chunked (`rendering.render_image`, chunk from `model.render.chunk`; 0: from the device's
  memory, `rendering.auto_chunk` with `render_sample_bytes`) so memory is that of one
  chunk of rays. The field is `render_field_fn`'s (lookup and MLP fused). With a key, each
  object gets a subkey and each ray its own uniforms from it (`rendering.render_image`): the
  images do not depend on the chunk. `uniforms` / `t_fine` / `t_coarse`: the renderer's test
  hooks per pixel, `[B, V, H, W, k]`.
  """
  mcfg = LRMConfig.from_config(mcfg)
  kw = render_kwargs(mcfg, num_samples, num_importance, background)
  b = planes.shape[0]
  if cameras.batch_shape[:1] != (b,):
    raise ValueError(f"render_views: cameras must have batch shape [B={b}, V], got "
                     f"{cameras.batch_shape}")
  keys = None if key is None else jax.random.split(key, b)
  chunk = mcfg.render.chunk if chunk is None else chunk

  def one(p, cam, k, u, tf, tc):
    return rendering.render_image(render_field_fn(mcfg, params, p), cam, chunk=chunk, key=k,
                                  outputs=tuple(outputs), sample_bytes=render_sample_bytes(mcfg),
                                  **kw, **_hooks(u, tf, tc))

  return jax.vmap(one)(planes, cameras, keys, uniforms, t_fine, t_coarse)


__all__ = ["LRMConfig", "EncoderConfig", "DecoderConfig", "TriplaneConfig", "NeRFConfig",
           "RenderConfig", "ExtrasConfig", "LRM", "CameraEmbedder", "DecoderBlock",
           "TriplaneTransformer", "NeRFMLP", "plucker_rays", "triplane_position_code",
           "rig_attention_bias", "point_features", "init_params", "abstract_params",
           "dummy_inputs", "field_fn", "render_field_fn", "render_sample_bytes", "render_kwargs",
           "render_rays", "render_views", "density_activation"]
