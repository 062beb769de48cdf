"""The CPU demo's input-view lift: NOT in the paper (nor in LRM, OpenLRM or InstantMesh).

Instant3D's reconstructor reaches the triplane from the images only through cross-attention
(models/lrm.py). The `tiny` CPU demo (configs/lrm.py:tiny, `model.extras`) adds a parameter-free
visual hull of its input views, because a 15-minute, 2-core training run cannot learn that
routing (bench/results/train_tuning.md):

* `lift_views` / `lift_grid` / `lift_planes`: every texel centre of an R³ grid over
  [-box, box]³ is projected into the views; the hull is the product over views of the soft
  foreground there, the colour the views' (mean or visibility-weighted) colour. Each plane
  reduces the grid along its normal axis (`LIFT_CHANNELS` per plane): `extras.lift='hull'`.
* `voxel_planes` / `sample_voxels`: the R³ (or finer N³) grid itself stored in the XY plane's
  extra channels and read back trilinearly per sample point: `extras.lift_voxels`.
* `hull_visibility`: each voxel's transmittance to a camera through the hull, for the
  visibility-weighted colours (`extras.lift_voxel_colour='visible'`).

No parameters and no gradient to the images: the model's parameters are the paper's modules
plus, with the lift, two linear maps in the decoder (models/lrm.py `TriplaneTransformer`).
Imports no other model module (models/lrm.py imports this one).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from instant3d_jax import cameras as cameras_lib
from instant3d_jax import errors

LIFT_CHANNELS = 8   # per plane: hull max, hull mean, hull-weighted colour (3), mean colour (3)
VOXEL_CHANNELS = 4  # per voxel (`extras.lift_voxels`): hull, mean view colour (3)


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
  `voxel_colour` ('mean' | 'visible'; `extras.lift_voxels`), the `voxel_planes` of the grid
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
    raise errors.ConfigError(f"model.extras.lift_voxel_colour must be 'mean' or 'visible', got "
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
  """The lifted N³ grid as plane channels (`extras.lift_voxels`): `[3, R, R, N³·4/R²]` (R =
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



__all__ = ["LIFT_CHANNELS", "VOXEL_CHANNELS", "VISIBILITY_STEPS", "foreground", "lift_views",
           "lift_planes", "lift_grid", "lift_inputs", "hull_visibility", "voxel_planes",
           "sample_voxels"]
