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

Logical axes (docs/design.md §3): parameters `embed, mlp, heads, planes, modulation, norm` (the NeRF MLP is replicated: `None`); activations `batch, length, act_embed, act_heads`.
"""
from __future__ import annotations

from instant3d_jax import errors

import dataclasses
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from instant3d_jax import cameras as cameras_lib
from instant3d_jax import rendering
from instant3d_jax.models import layers
from instant3d_jax.models import vit as vit_lib

Dtype = Any
PLUCKER_CHANNELS = 6


# ---------------------------------------------------------------------------------------------
# Config helpers


def model_config(cfg) -> ml_collections.FrozenConfigDict:
  """The `model` section of a full config (or the section itself), frozen (hashable)."""
  if "model" in cfg:
    cfg = cfg["model"]
  return ml_collections.FrozenConfigDict(cfg)


def compute_dtype(mcfg) -> Dtype:
  """The compute dtype named by `model.dtype` (`layers.DTYPES`)."""
  return layers.compute_dtype(mcfg.dtype, "model.dtype")


def vit_config(mcfg) -> vit_lib.ViTConfig:
  """The encoder's `ViTConfig` (3 colour channels + 6 Plücker channels when enabled)."""
  e = mcfg.encoder
  dinov2 = e.model_type != "vit"
  return vit_lib.ViTConfig(
      model_type=e.model_type, hidden_size=e.hidden_size, num_hidden_layers=e.num_layers,
      num_attention_heads=e.num_heads, mlp_dim=e.mlp_dim, patch_size=e.patch_size,
      image_size=e.image_size,
      num_channels=3 + (PLUCKER_CHANNELS if mcfg.plucker_rays else 0),
      layer_norm_eps=e.layer_norm_eps, layer_scale=dinov2,
      num_register_tokens=e.num_register_tokens)


def tokens_per_view(mcfg) -> int:
  """Encoder tokens per view: CLS + registers + (H/p)²."""
  grid = mcfg.input_resolution // mcfg.encoder.patch_size
  return 1 + mcfg.encoder.num_register_tokens + grid * grid


def plane_upsample(mcfg) -> int:
  """Factor u of the token-to-plane transposed convolution (kernel u × u, stride u)."""
  return int(mcfg.triplane.upsample)


def feature_channels(mcfg) -> int:
  """Channels per plane the NeRF MLP reads: `triplane.channels`, plus the raw lifted channels
  when `triplane.lift='hull'` with `lift_concat`."""
  tc = mcfg.triplane
  extra = LIFT_CHANNELS if tc.lift == "hull" and tc.lift_concat else 0
  return int(tc.channels) + extra


def lift_voxels(mcfg) -> bool:
  """`triplane.lift_voxels`: the lifted R³ grid itself rides in the planes (`voxel_channels`)."""
  tc = mcfg.triplane
  on = bool(tc.lift_voxels)
  if on and tc.lift != "hull":
    raise errors.ConfigError("model.triplane.lift_voxels needs model.triplane.lift='hull', got "
                             f"lift={tc.lift!r} (for the paper's model set "
                             "model.triplane.lift_voxels=False and model.nerf.colour_prior=False "
                             "too)")
  return on


def voxel_resolution(mcfg) -> int:
  """Side N of the lifted voxel grid (`triplane.lift_voxel_resolution`; 0 = the plane
  resolution R). N ≥ R with N³·4 a multiple of R², so the grid fills whole XY-plane channels."""
  r = plane_resolution(mcfg)
  n = int(mcfg.triplane.lift_voxel_resolution or r)
  if n < r or (n ** 3 * VOXEL_CHANNELS) % (r * r):
    raise errors.ConfigError(f"model.triplane.lift_voxel_resolution must be 0 or at least "
                             f"the plane resolution {r} with N³·4 a multiple of {r}², got {n}")
  return n


def voxel_channels(mcfg) -> int:
  """Extra channels per plane holding the lifted voxel grid (`lift_voxels`): the N³ ×
  VOXEL_CHANNELS grid laid out in the XY plane (N³·4 / R² channels; zeros in XZ and YZ); 0 when
  off."""
  if not lift_voxels(mcfg):
    return 0
  return voxel_resolution(mcfg) ** 3 * VOXEL_CHANNELS // plane_resolution(mcfg) ** 2


def plane_channels(mcfg) -> int:
  """Channels per plane of the output triplane: `feature_channels` plus `voxel_channels`."""
  return feature_channels(mcfg) + voxel_channels(mcfg)


def mlp_input_channels(mcfg) -> int:
  """The NeRF MLP's input width: 3 planes' features, plus the voxel sample with `lift_voxels`."""
  return 3 * feature_channels(mcfg) + (VOXEL_CHANNELS if lift_voxels(mcfg) else 0)


def plane_resolution(mcfg) -> int:
  return plane_upsample(mcfg) * mcfg.triplane.token_resolution


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


def rig_attention_bias(mcfg, *, num_points: int = 64) -> np.ndarray:
  """Geometric initial value `[3·T·T, V·(1 + R + N)]` of the decoder's cross-attention bias.

  Triplane token (plane p, row r, col c) stands for the segment of 3-D points whose two plane
  coordinates are its texel centre and whose third coordinate spans [-box, box] (planes and axes
  as `rendering.PLANE_AXES`). Projected into input view v of the fixed rig (Instant3D, az
  0/90/180/270 at `input_resolution`), it is a 2-D segment; the bias of (token, patch token of
  view v) is −d²/(2σ²), d = the distance in patches from the patch centre to that segment
  (`num_points` samples along it), σ = `decoder.attention_bias_sigma` patches, floored at
  `decoder.attention_bias_floor`. CLS and register tokens get 0. So from step 0 each triplane
  token attends mostly to the image patches that see its points: the routing a zero-initialised
  bias has to learn.
  """
  m = mcfg
  if m.num_views != 4:
    raise errors.ConfigError(f"rig_attention_bias: the Instant3D rig has 4 views, model.num_views is "
                     f"{m.num_views}")
  T, box = m.triplane.token_resolution, float(m.render.box)
  res, patch = m.input_resolution, m.encoder.patch_size
  grid = res // patch
  sigma = float(m.decoder.attention_bias_sigma)
  floor = float(m.decoder.attention_bias_floor)
  centres = ((np.arange(T) + 0.5) / T * 2 - 1) * box
  along = np.linspace(-box, box, num_points)
  pts = np.zeros((3, T, T, num_points, 3))
  for p, (col_axis, row_axis) in enumerate(rendering.PLANE_AXES):
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


# ---------------------------------------------------------------------------------------------
# Input-view lifting (optional, `triplane.lift`): a parameter-free visual hull of the inputs


LIFT_CHANNELS = 8   # per plane: hull max, hull mean, hull-weighted colour (3), mean colour (3)
VOXEL_CHANNELS = 4  # per voxel (`triplane.lift_voxels`): hull, mean view colour (3)


def foreground(images: jax.Array, background) -> jax.Array:
  """Soft foreground `[..., H, W]` of images composited on `background`: the largest channel
  difference from the background, scaled so that a 0.1 difference counts as fully foreground."""
  bg = jnp.asarray(background, jnp.float32)
  return jnp.clip(jnp.max(jnp.abs(images.astype(jnp.float32) - bg), axis=-1) / 0.1, 0.0, 1.0)


def _bilinear_image(image: jax.Array, uv: jax.Array) -> jax.Array:
  """`image [H, W, c]` at pixel coordinates `uv [..., 2]` (centres at +0.5); zero outside."""
  # One gather of all channels per corner from the zero-padded image (as map_coordinates with
  # order=1, mode='constant', cval=0, which gathers each channel separately: 4× slower here).
  h, w, c = image.shape
  table = jnp.pad(image, ((1, 1), (1, 1), (0, 0))).reshape((h + 2) * (w + 2), c)
  x = jnp.clip(jnp.nan_to_num(uv[..., 0] + 0.5), 0.0, float(w + 1))     # padded pixel coords
  y = jnp.clip(jnp.nan_to_num(uv[..., 1] + 0.5), 0.0, float(h + 1))
  x0, y0 = jnp.minimum(jnp.floor(x), float(w)), jnp.minimum(jnp.floor(y), float(h))
  fx, fy = (x - x0)[..., None], (y - y0)[..., None]
  i = y0.astype(jnp.int32) * (w + 2) + x0.astype(jnp.int32)
  return ((1 - fy) * ((1 - fx) * table[i] + fx * table[i + 1])
          + fy * ((1 - fx) * table[i + w + 2] + fx * table[i + w + 3]))


def lift_views(images: jax.Array, cameras: cameras_lib.Camera, resolution: int, box: float,
               background) -> jax.Array:
  """Parameter-free triplane features of ONE object's input views (a visual hull).

  Every texel centre of an R³ grid over [-box, box]³ (R = `resolution`, the planes' own texel
  centres) is projected into the V views `images [V, H, W, 3]`; per point, the hull value is the
  product over views of the soft foreground at its projection (0 outside a view or behind it) and
  its colour is the mean of the V view colours. Each plane reduces the grid along its normal
  axis: hull max, hull mean, hull-weighted mean colour and plain mean colour along the axis.
  Returns `[3, R, R, LIFT_CHANNELS]` in the triplane convention of `rendering.sample_triplane`
  (XY: row y, col x; XZ: row z, col x; YZ: row z, col y). No gradient flows to the images.
  """
  return lift_planes(*lift_grid(images, cameras, resolution, box, background))


def lift_planes(hull: jax.Array, colour: jax.Array) -> jax.Array:
  """`lift_views`' reduction of the grid (hull `[x, y, z]`, colour `[x, y, z, 3]`) along each
  plane's normal axis → `[3, R, R, LIFT_CHANNELS]`."""
  planes = []
  for axis, perm in ((2, (1, 0, 2)), (1, (1, 0, 2)), (0, (1, 0, 2))):    # XY, XZ, YZ
    h = hull[..., None]
    weight = jnp.sum(h, axis=axis)
    feats = jnp.concatenate([
        jnp.max(h, axis=axis), jnp.mean(h, axis=axis),
        jnp.sum(h * colour, axis=axis) / (weight + 1e-3),
        jnp.mean(colour, axis=axis)], -1)                                  # [a, b, 8] (a < b)
    planes.append(jnp.transpose(feats, perm))                              # [row b, col a, 8]
  return jnp.stack(planes)


def lift_grid(images: jax.Array, cameras: cameras_lib.Camera, resolution: int, box: float,
              background, colour: str = "mean") -> tuple[jax.Array, jax.Array]:
  """The visual hull of ONE object's views on the R³ grid of texel centres over [-box, box]³
  (`lift_views`): hull `[x, y, z]` (product over views of the soft foreground at each point's
  projection) and colour `[x, y, z, 3]`: with `colour='mean'` the mean of the views' colours
  there; with 'visible' each view weighted by the point's visibility from its camera through the
  hull (`hull_visibility`; the mean where no view sees the point). No gradient."""
  pts, samples, hull, mean = _grid_samples(images, cameras, resolution, box, background)
  return hull, _grid_colour(colour, samples, pts, hull, mean, cameras, box)


def lift_inputs(images: jax.Array, cameras: cameras_lib.Camera, resolution: int, box: float,
                background, voxel_colour: str | None = None, voxel_resolution: int = 0
                ) -> tuple[jax.Array, jax.Array | None]:
  """What the LRM lifts from ONE object's views: the planes of `lift_views` and, with
  `voxel_colour` ('mean' | 'visible'; `triplane.lift_voxels`), the `voxel_planes` of the grid
  (else None). With `voxel_resolution` N = 0 or R the voxels are `lift_grid`'s, from the same
  projection as the planes; a finer N projects an N³ grid too, and 'visible' then weights its
  views by the R³ grid's visibilities, trilinearly upsampled (one R³ march per view, not N³)."""
  pts, samples, hull, mean = _grid_samples(images, cameras, resolution, box, background)
  planes = lift_planes(hull, mean)
  if voxel_colour is None:
    return planes, None
  n = voxel_resolution or resolution
  if n == resolution:
    return planes, voxel_planes(hull, _grid_colour(voxel_colour, samples, pts, hull, mean,
                                                   cameras, box), resolution)
  fpts, fsamples, fhull, fmean = _grid_samples(images, cameras, n, box, background)
  vis = None
  if voxel_colour == "visible":
    coarse = _visibilities(pts, hull, cameras, box)                        # [V, R, R, R]
    vis = jax.image.resize(coarse, (coarse.shape[0], n, n, n), "linear")
  return planes, voxel_planes(fhull, _grid_colour(voxel_colour, fsamples, fpts, fhull, fmean,
                                                  cameras, box, vis), resolution)


def _grid_samples(images, cameras, resolution, box, background):
  """The R³ texel-centre grid `[x, y, z, 3]`, its projections into the views (colour and soft
  foreground `[V, x, y, z, 4]`), the hull `[x, y, z]` and the mean colour `[x, y, z, 3]`."""
  images = jax.lax.stop_gradient(images.astype(jnp.float32))
  c = -box + (jnp.arange(resolution, dtype=jnp.float32) + 0.5) * (2.0 * box / resolution)
  pts = jnp.stack(jnp.meshgrid(c, c, c, indexing="ij"), -1)               # [x, y, z, 3]
  fg = foreground(images, background)[..., None]
  rgbm = jnp.concatenate([images, fg], -1)                                 # [V, H, W, 4]

  def one_view(img, cam):
    uv, depth = cameras_lib.project_grid(cam, c)
    s = _bilinear_image(img, uv)
    return jnp.where((depth > 0)[..., None], s, 0.0)

  samples = jax.vmap(one_view)(rgbm, cameras)                              # [V, x, y, z, 4]
  return pts, samples, jnp.prod(samples[..., 3], axis=0), jnp.mean(samples[..., :3], axis=0)


def _visibilities(pts, hull, cameras, box):
  """Each view's `hull_visibility` at the grid points `pts`: `[V, x, y, z]`."""
  return jax.vmap(lambda cam: hull_visibility(hull, pts, cam.c2w[:3, 3], box))(cameras)


def _grid_colour(colour: str, samples, pts, hull, mean, cameras, box, vis=None):
  """`lift_grid`'s colour: the mean, or the visibility-weighted mean of the views' colours
  (`vis [V, x, y, z]`, default: marched through `hull` here)."""
  if colour == "mean":
    return mean
  if colour != "visible":
    raise errors.ConfigError(f"model.triplane.lift_voxel_colour must be 'mean' or 'visible', got "
                             f"{colour!r}")
  if vis is None:
    vis = _visibilities(pts, hull, cameras, box)
  w = vis[..., None]                                                       # [V, x, y, z, 1]
  seen = jnp.sum(w, axis=0)
  visible = jnp.sum(w * samples[..., :3], axis=0) / jnp.maximum(seen, 1e-3)
  return jnp.where(seen > 1e-2, visible, mean)


VISIBILITY_STEPS = 12


def hull_visibility(hull: jax.Array, points: jax.Array, origin: jax.Array, box: float
                    ) -> jax.Array:
  """Transmittance from a camera at `origin` to each grid point `points [x, y, z, 3]` through
  the hull grid `hull [x, y, z]` (occupancy in [0, 1]): the product of (1 − hull) at
  VISIBILITY_STEPS points along the segment towards the camera, from 2 voxels off the point to
  the far side of the box (trilinear reads, zero outside)."""
  r = hull.shape[0]
  vox = 2.0 * box / r
  d = origin[None, None, None, :] - points
  d = d / jnp.linalg.norm(d, axis=-1, keepdims=True)
  ts = 2.0 * vox + jnp.arange(VISIBILITY_STEPS, dtype=jnp.float32) * (
      (2.0 * box) / VISIBILITY_STEPS)
  q = points[..., None, :] + ts[:, None] * d[..., None, :]                 # [x, y, z, K, 3]
  grid = jnp.transpose(hull, (1, 0, 2))[None]                              # [1, y, x, z]
  occ = sample_voxels(grid, q, box, channels=1)[..., 0]
  return jnp.prod(1.0 - jnp.clip(occ, 0.0, 1.0), axis=-1)


def voxel_planes(hull: jax.Array, colour: jax.Array, plane_resolution: int | None = None
                 ) -> jax.Array:
  """The lifted N³ grid as plane channels (`triplane.lift_voxels`): `[3, R, R, N³·4/R²]` (R =
  `plane_resolution`, default N), the XY plane holding the grid `[y, x, z, (hull, colour)]`
  flattened in that order (for N = R: voxel (x, y, z) at row y, column x, channels z·4 … z·4 + 3);
  XZ and YZ zero. `sample_voxels` reads it back."""
  n = hull.shape[0]
  r = int(plane_resolution or n)
  if (n ** 3 * VOXEL_CHANNELS) % (r * r):
    raise ValueError(f"voxel_planes: an {n}³ grid does not fill whole channels of {r}² planes")
  vox = jnp.concatenate([hull[..., None], colour], -1)                     # [x, y, z, 4]
  xy = jnp.transpose(vox, (1, 0, 2, 3)).reshape(r, r, -1)                  # [y, x, z, 4] flat
  return jnp.stack([xy, jnp.zeros_like(xy), jnp.zeros_like(xy)])


def sample_voxels(planes_vox: jax.Array, points: jax.Array, box: float, *,
                  channels: int = VOXEL_CHANNELS) -> jax.Array:
  """Trilinear lookup of the voxel grid stored by `voxel_planes` (`[3, R, R, N³·channels/R²]`,
  only XY read: the grid `[y, x, z, channels]` flattened) at `points [..., 3]` →
  `[..., channels]`; texel centres as `rendering.sample_triplane` (align_corners=False), zero
  outside the box."""
  cells = planes_vox[0].size // channels
  r = round(cells ** (1.0 / 3.0))
  if r ** 3 != cells:
    raise ValueError(f"sample_voxels: {tuple(planes_vox.shape)} planes hold {cells} cells of "
                     f"{channels} channels, not a cube")
  grid = planes_vox[0].reshape(r, r, r, channels)                          # [y, x, z, c]
  grid = jnp.pad(grid, ((1, 1), (1, 1), (1, 1), (0, 0)))
  rp = r + 2
  table = grid.reshape(rp * rp * rp, channels)
  pix = jnp.clip((points.astype(jnp.float32) + box) * (r / (2.0 * box)) + 0.5, 0.0, float(r + 1))
  i0 = jnp.minimum(jnp.floor(pix), float(r))
  f = pix - i0
  i0 = i0.astype(jnp.int32)
  ix, iy, iz = i0[..., 0], i0[..., 1], i0[..., 2]
  fx, fy, fz = f[..., 0:1], f[..., 1:2], f[..., 2:3]
  out = 0.0
  for dy, wy in ((0, 1 - fy), (1, fy)):
    for dx, wx in ((0, 1 - fx), (1, fx)):
      for dz, wz in ((0, 1 - fz), (1, fz)):
        idx = ((iy + dy) * rp + (ix + dx)) * rp + (iz + dz)
        out = out + wy * wx * wz * table[idx]
  return out


def point_features(mcfg, planes: jax.Array, points: jax.Array) -> jax.Array:
  """The NeRF MLP's input at `points [..., 3]` of ONE object's `planes [3, R, R, C]`: the three
  planes' features (concatenated), and with `triplane.lift_voxels` the trilinear voxel sample."""
  box = mcfg.render.box
  if not lift_voxels(mcfg):
    return rendering.sample_triplane(planes, points, box)
  c0 = feature_channels(mcfg)
  feats = rendering.sample_triplane(planes[..., :c0], points, box)
  return jnp.concatenate([feats, sample_voxels(planes[..., c0:], points, box).astype(feats.dtype)],
                         -1)


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
                     **_mha_out_init())(
        y.reshape(b, lq, d))
    x = layers.constrain(x + y.astype(x.dtype), act)

    # Self-attention among the triplane tokens.
    y = norm(x, 1)
    y = layers.dot_product_attention(heads(y, "self_q", lq), heads(y, "self_k", lq),
                                     heads(y, "self_v", lq), implementation=self.attention_impl)
    y = layers.dense(d, ("heads", "embed"), dtype=self.dtype, name="self_out",
                     **_mha_out_init())(
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
  mcfg: Any   # frozen model config

  @nn.compact
  def __call__(self, context: jax.Array, cond: jax.Array | None,
               lifted: jax.Array | None = None) -> jax.Array:
    m = self.mcfg
    dc, tc = m.decoder, m.triplane
    dtype = compute_dtype(m)
    T, D = tc.token_resolution, dc.hidden_size
    b = context.shape[0]
    lq = 3 * T * T
    # OpenLRM init: N(0, 1)/sqrt(D).
    tokens = self.param("triplane_tokens",
                        layers.partitioned(nn.initializers.normal(1.0 / math.sqrt(D)),
                                           ("planes", "embed")), (lq, D), jnp.float32)
    x = tokens
    if tc.position_code:
      x = x + jnp.asarray(triplane_position_code(T, D))
    x = jnp.broadcast_to(x.astype(dtype), (b, lq, D))
    u = plane_upsample(m)
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
    bias_shape = (lq, context.shape[1]) if dc.attention_bias else None
    bias_init = None
    init_kind = dc.attention_bias_init
    if dc.attention_bias and init_kind == "rig":
      def bias_init(key, shape, dtype=jnp.float32):   # runs at init only, not in every apply
        del key
        value = rig_attention_bias(m)
        if value.shape != tuple(shape):
          raise errors.ConfigError(f"decoder.attention_bias_init='rig' built a bias of shape "
                           f"{value.shape} for {shape[1]} image tokens")
        return jnp.asarray(value, dtype)
    elif dc.attention_bias and init_kind != "zeros":
      raise errors.ConfigError(f"decoder.attention_bias_init must be 'zeros' or 'rig', got {init_kind!r}")
    for i in range(dc.num_layers):
      x = block(D, dc.num_heads, dc.mlp_ratio, dc.qkv_bias, dc.layer_norm_eps,
                m.decoder_modulation, bias_shape, bias_init, dtype, m.attention_impl,
                name=f"block_{i}")(x, context, cond)
    x = layers.layer_norm(epsilon=dc.layer_norm_eps, name="norm_out")(x).astype(dtype)
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
      if tc.lift_concat:
        # The raw lifted channels ride along as the last LIFT_CHANNELS plane channels, so the
        # NeRF MLP reads the hull and the view colours at each sample point unmixed.
        planes = jnp.concatenate([planes, lifted.astype(planes.dtype)], -1)
    return layers.constrain(planes, ("batch", None, "height", "width", None))


def _osg_init() -> dict:
  """OpenLRM `OSGDecoder` layer init: torch `nn.Linear` kernel, bias zeroed."""
  return dict(kernel_init=layers.torch_linear_init()[0], bias_init=nn.initializers.zeros)


class NeRFMLP(nn.Module):
  """Shared point-wise MLP: plane features `[..., 3C]` → (density `[...]`, rgb `[..., 3]`).

  `num_layers` dense layers (`num_layers − 1` hidden of width `hidden`, then 4 outputs); fp32.
  Kernels are replicated (logical axes None): ~50k parameters evaluated at every sample.
  Fresh init as OpenLRM's `OSGDecoder`: torch `nn.Linear` kernels, all biases zeroed.
  `colour_prior` (NOT in the paper; `nerf.colour_prior`): the features' last 3 channels are a
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
    raw = x[..., 0] + self.density_bias
    if self.density_activation == "softplus":
      density = nn.softplus(raw)
    elif self.density_activation == "exp":
      # Clamped exponent: exp overflows fp32 above ~88 and one such sample poisons the batch.
      density = jnp.exp(jnp.minimum(raw, 15.0))
    else:
      raise errors.ConfigError("model.nerf.density_activation must be 'softplus' or 'exp', got "
                       f"{self.density_activation!r}")
    eps = self.rgb_padding
    logits = x[..., 1:]
    if self.colour_prior:
      prior = jnp.clip(features[..., -3:].astype(jnp.float32), 0.02, 0.98)
      logits = logits + jnp.log(prior) - jnp.log1p(-prior)
    rgb = nn.sigmoid(logits) * (1 + 2 * eps) - eps
    return density, rgb


def nerf_mlp(mcfg) -> NeRFMLP:
  n = mcfg.nerf
  prior = bool(n.colour_prior)
  if prior and not lift_voxels(mcfg):
    raise errors.ConfigError("model.nerf.colour_prior needs model.triplane.lift_voxels=True (the "
                             "voxels' colour is the prior)")
  return NeRFMLP(n.hidden, n.num_layers, n.activation, n.density_activation, n.density_bias,
                 n.rgb_padding, prior)


class LRM(nn.Module):
  """The reconstructor. `__call__(images [B, V, H, W, 3] in [0, 1], cameras (batch [B, V]))`
  → planes `[B, 3, R, R, C]` (R = upsample·token_resolution). Build with `LRM(model_config(cfg))`.

  Parameters: `camera_embedder`, `encoder` (ViTEncoder; the transformers layout via
  convert/transformers_vit.py), `decoder` (TriplaneTransformer), `nerf` (NeRFMLP, used by the
  render functions below; created at init only).
  """
  mcfg: Any

  @nn.compact
  def __call__(self, images: jax.Array, cameras: cameras_lib.Camera) -> jax.Array:
    m = self.mcfg
    dtype = compute_dtype(m)
    if images.ndim != 5 or images.shape[-1] != 3:
      raise ValueError(f"LRM images must be [B, V, H, W, 3], got shape {tuple(images.shape)}")
    b, v, h, w, _ = images.shape
    if cameras.batch_shape != (b, v):
      raise ValueError(f"LRM cameras must have batch shape (B, V) = {(b, v)}, got "
                       f"{cameras.batch_shape}")
    if (cameras.height, cameras.width) != (h, w):
      raise errors.ConfigError(f"LRM cameras are {cameras.width}x{cameras.height} pixels but the images "
                       f"are {w}x{h}")
    if m.decoder.attention_bias and (v, h, w) != (m.num_views, m.input_resolution,
                                                  m.input_resolution):
      raise errors.ConfigError(
          f"LRM with decoder.attention_bias needs the fixed input rig it was built for: "
          f"{m.num_views} views of {m.input_resolution}², got {v} views of {w}x{h}")

    cam = cameras_lib.camera_embedding(cameras)                             # [B, V, 16]
    cam_embed = CameraEmbedder(m.camera_embed_dim, dtype, name="camera_embedder")(cam)
    x = vit_lib.normalize_images(images.astype(jnp.float32))
    if m.plucker_rays:
      x = jnp.concatenate([x, plucker_rays(cameras)], -1)
    x = x.reshape(b * v, h, w, x.shape[-1])
    encoder = vit_lib.ViTEncoder(
        vit_config(m), dtype=dtype, attention_impl=m.attention_impl,
        remat=None if m.remat == "none" else m.remat,
        modulation_dim=m.camera_embed_dim if m.encoder_modulation else None, name="encoder")
    tokens = encoder(x, cam_embed.reshape(b * v, -1) if m.encoder_modulation else None)
    context = tokens.reshape(b, v * tokens.shape[1], tokens.shape[2])
    context = layers.constrain(context, ("batch", "length", "act_embed"))
    cond = jnp.mean(cam_embed, axis=1) if m.decoder_modulation else None
    lifted = vox = None
    lift = m.triplane.lift
    if lift == "hull":
      res = plane_resolution(m)
      vc = str(m.triplane.lift_voxel_colour) if lift_voxels(m) else None
      vn = voxel_resolution(m) if lift_voxels(m) else 0
      lifted, vox = jax.vmap(lambda im, cam: lift_inputs(im, cam, res, m.render.box,
                                                         m.background, vc, vn))(images, cameras)
    elif lift != "none":
      raise errors.ConfigError(f"model.triplane.lift must be 'none' or 'hull', got {lift!r}")
    planes = TriplaneTransformer(m, name="decoder")(context, cond, lifted)
    if vox is not None:
      planes = jnp.concatenate([planes, vox.astype(planes.dtype)], -1)
    if self.is_initializing():
      nerf_mlp(m).copy(name="nerf")(jnp.zeros((1, mlp_input_channels(m)), jnp.float32))
    return planes


# ---------------------------------------------------------------------------------------------
# Initialisation and rendering


def dummy_inputs(mcfg, batch: int = 1) -> tuple[jax.Array, cameras_lib.Camera]:
  """Zero images and the Instant3D rig (num_views azimuths 360/V apart) for init/eval_shape."""
  res, v = mcfg.input_resolution, mcfg.num_views
  az = jnp.arange(v, dtype=jnp.float32) * (360.0 / v)
  cams = cameras_lib.orbit_camera(cameras_lib.INSTANT3D_ELEVATION, az,
                                  cameras_lib.INSTANT3D_DISTANCE, cameras_lib.INSTANT3D_FOV,
                                  res, res)
  cams = jax.tree.map(lambda a: jnp.broadcast_to(a, (batch,) + a.shape), cams)
  return jnp.zeros((batch, v, res, res, 3), jnp.float32), cams


def init_params(mcfg, key: jax.Array) -> dict:
  """Random parameters (boxed with logical axis names; `nn.meta.unbox` for plain arrays)."""
  mcfg = model_config(mcfg)
  images, cams = dummy_inputs(mcfg)
  # Jitted: eager init dispatches thousands of small ops (seconds even for a micro model).
  return jax.jit(lambda k: LRM(mcfg).init(k, images, cams)["params"])(key)


def abstract_params(mcfg) -> dict:
  """Parameter shapes (boxed `ShapeDtypeStruct`s) without allocating anything."""
  mcfg = model_config(mcfg)
  return jax.eval_shape(lambda k: init_params(mcfg, k), jax.random.key(0))


def field_fn(mcfg, params: Mapping[str, Any], planes: jax.Array) -> rendering.FieldFn:
  """`volume_render` field of ONE object: `planes [3, R, R, C]`, `params` the full LRM params."""
  mcfg = model_config(mcfg)
  mlp = nerf_mlp(mcfg)
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


def _render_kwargs(mcfg, num_samples, num_importance, background):
  r = mcfg.render
  return dict(num_samples=r.num_samples if num_samples is None else num_samples,
              num_importance=r.num_importance if num_importance is None else num_importance,
              background=mcfg.background if background is None else background, box=r.box)


def render_rays(mcfg, params, planes: jax.Array, origins: jax.Array, directions: jax.Array, *,
                key: jax.Array | None = None, num_samples: int | None = None,
                num_importance: int | None = None, background=None) -> dict:
  """Renders rays `origins/directions [B, ..., 3]` through the B objects `planes [B, 3, R, R, C]`.

  Returns `volume_render`'s dict with leading `[B, ...]`. `key` (one for the batch) jitters the
  samples; None = deterministic. Sample counts and background default to the config.
  """
  mcfg = model_config(mcfg)
  kw = _render_kwargs(mcfg, num_samples, num_importance, background)
  b = planes.shape[0]
  keys = None if key is None else jax.random.split(key, b)

  def one(p, o, d, k):
    return rendering.volume_render(field_fn(mcfg, params, p), o, d, key=k, **kw)

  return jax.vmap(one)(planes, origins, directions, keys)


def render_views(mcfg, params, planes: jax.Array, cameras: cameras_lib.Camera, *,
                 key: jax.Array | None = None, chunk: int | None = None,
                 outputs=("rgb", "depth", "opacity"), num_samples: int | None = None,
                 num_importance: int | None = None, background=None) -> dict:
  """Whole images of `cameras` (batch shape `[B, V]`) of the B objects → `[B, V, H, W, ...]`.

  Chunked (`rendering.render_image`, chunk from `model.render.chunk`) so memory is that of one
  chunk of rays.
  """
  mcfg = model_config(mcfg)
  kw = _render_kwargs(mcfg, num_samples, num_importance, background)
  b = planes.shape[0]
  if cameras.batch_shape[:1] != (b,):
    raise ValueError(f"render_views: cameras must have batch shape [B={b}, V], got "
                     f"{cameras.batch_shape}")
  keys = None if key is None else jax.random.split(key, b)
  chunk = mcfg.render.chunk if chunk is None else chunk

  def one(p, cam, k):
    return rendering.render_image(field_fn(mcfg, params, p), cam, chunk=chunk, key=k,
                                  outputs=tuple(outputs), **kw)

  return jax.vmap(one)(planes, cameras, keys)


__all__ = ["LRM", "CameraEmbedder", "DecoderBlock", "TriplaneTransformer", "NeRFMLP",
           "model_config", "vit_config", "plucker_rays", "triplane_position_code", "init_params",
           "abstract_params", "dummy_inputs", "field_fn", "render_rays", "render_views",
           "tokens_per_view", "plane_resolution", "plane_upsample", "plane_channels", "lift_views",
           "lift_grid", "lift_planes", "lift_inputs", "voxel_planes", "voxel_resolution",
           "sample_voxels", "point_features", "feature_channels", "voxel_channels",
           "mlp_input_channels",
           "rig_attention_bias"]
