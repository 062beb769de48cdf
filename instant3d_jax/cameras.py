"""Camera model, the Instant3D and GSO rigs, rays and the camera-conditioning vector.

Conventions (docs/design.md §3):
  * OpenCV camera frame: x right, y down, z forward (a point in front has z > 0).
  * `c2w` is a 4×4 camera-to-world matrix; world is z-up; objects live in [-1, 1]³.
  * A camera at elevation e, azimuth a, distance d sits at d·(cos e cos a, cos e sin a, sin e):
    azimuth 0 on +x, increasing counter-clockwise seen from +z; it looks at the origin with
    image-up = world +z (projected).
  * Pixel centres at +0.5: pixel (row i, col j) has image coordinates (u, v) = (j + 0.5, i + 0.5).
  * Intrinsics K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] in pixels; the FOV is vertical.

A `Camera` is a pytree: `c2w [..., 4, 4]` and `K [..., 3, 3]` are leaves (any leading batch
shape), `width`/`height` are static ints shared by the whole batch, so cameras travel through
`jit`, `vmap` and `grain` unchanged.
"""
from __future__ import annotations

from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

# The Instant3D input rig (docs/paper_facts.md §A): elevation 20°, azimuths 0/90/180/270 in 2×2 grid
# order (top-left, top-right, bottom-left, bottom-right), distance 2.7, vertical FOV 50°.
INSTANT3D_ELEVATION = 20.0
INSTANT3D_AZIMUTHS = (0.0, 90.0, 180.0, 270.0)
INSTANT3D_DISTANCE = 2.7
INSTANT3D_FOV = 50.0
# GSO evaluation rig (docs/paper_facts.md §C): 4 elevations × 16 azimuths; inputs at elevation 20°,
# azimuths 45/135/225/315.
GSO_ELEVATIONS = (0.0, 20.0, 40.0, 60.0)
GSO_NUM_AZIMUTHS = 16
GSO_INPUT_AZIMUTHS = (45.0, 135.0, 225.0, 315.0)

CAMERA_EMBED_DIM = 16  # 12 (flattened 3×4 c2w) + 4 (fx/W, fy/H, cx/W, cy/H)


@flax.struct.dataclass
class Camera:
  """Pinhole camera(s). `c2w: [..., 4, 4]`, `K: [..., 3, 3]`; `width`, `height` static."""
  c2w: jax.Array
  K: jax.Array
  width: int = flax.struct.field(pytree_node=False)
  height: int = flax.struct.field(pytree_node=False)

  @property
  def batch_shape(self) -> tuple[int, ...]:
    return tuple(self.c2w.shape[:-2])

  def __getitem__(self, idx) -> "Camera":
    """Indexes the leading batch dimensions: `rig[0]`, `cams[:, 1:]`."""
    return self.replace(c2w=self.c2w[idx], K=self.K[idx])

  def __len__(self) -> int:
    if not self.batch_shape:
      raise TypeError("len() of an unbatched Camera")
    return self.batch_shape[0]


def intrinsics_from_fov(fov_deg, width: int, height: int) -> jax.Array:
  """K for a vertical field of view `fov_deg`, square pixels, principal point at the centre."""
  fov = jnp.deg2rad(jnp.asarray(fov_deg, jnp.float32))
  fy = (height / 2.0) / jnp.tan(fov / 2.0)
  fx = fy
  zero, one = jnp.zeros_like(fy), jnp.ones_like(fy)
  rows = [
      jnp.stack([fx, zero, zero + width / 2.0], -1),
      jnp.stack([zero, fy, zero + height / 2.0], -1),
      jnp.stack([zero, zero, one], -1),
  ]
  return jnp.stack(rows, -2)


def look_at(position: jax.Array, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> jax.Array:
  """OpenCV c2w `[..., 4, 4]` for cameras at `position [..., 3]` looking at `target`.

  Image-up is the projection of world `up`; straight above/below the target (where `up` is
  parallel to the view direction) world +y serves as a fallback up vector.
  """
  position = jnp.asarray(position, jnp.float32)
  target = jnp.broadcast_to(jnp.asarray(target, jnp.float32), position.shape)
  up = jnp.broadcast_to(jnp.asarray(up, jnp.float32), position.shape)
  forward = _normalize(target - position)
  right = jnp.cross(forward, up)
  degenerate = jnp.linalg.norm(right, axis=-1, keepdims=True) < 1e-6
  fallback = jnp.cross(forward, jnp.broadcast_to(jnp.array([0.0, 1.0, 0.0]), forward.shape))
  right = _normalize(jnp.where(degenerate, fallback, right))
  down = jnp.cross(forward, right)
  rot = jnp.stack([right, down, forward], axis=-1)  # columns = camera axes in world
  top = jnp.concatenate([rot, position[..., None]], axis=-1)
  bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 0.0, 1.0]), top.shape[:-2] + (1, 4))
  return jnp.concatenate([top, bottom], axis=-2)


def orbit_position(elevation_deg, azimuth_deg, distance) -> jax.Array:
  """d·(cos e cos a, cos e sin a, sin e), broadcast over the inputs → `[..., 3]`."""
  e = jnp.deg2rad(jnp.asarray(elevation_deg, jnp.float32))
  a = jnp.deg2rad(jnp.asarray(azimuth_deg, jnp.float32))
  d = jnp.asarray(distance, jnp.float32)
  e, a, d = jnp.broadcast_arrays(e, a, d)
  return jnp.stack([d * jnp.cos(e) * jnp.cos(a), d * jnp.cos(e) * jnp.sin(a), d * jnp.sin(e)], -1)


def orbit_camera(elevation_deg, azimuth_deg, distance, fov_deg, width: int, height: int) -> Camera:
  """Camera(s) on a sphere around the origin, looking at it. Array arguments broadcast."""
  position = orbit_position(elevation_deg, azimuth_deg, distance)
  c2w = look_at(position)
  K = intrinsics_from_fov(jnp.broadcast_to(jnp.asarray(fov_deg, jnp.float32), c2w.shape[:-2]),
                          width, height)
  return Camera(c2w=c2w, K=K, width=int(width), height=int(height))


def instant3d_rig(resolution: int = 512, distance: float = INSTANT3D_DISTANCE,
                  fov_deg: float = INSTANT3D_FOV, azimuth_offset_deg: float = 0.0) -> Camera:
  """The 4 input cameras of Instant3D, batch shape [4], in 2×2 grid order (az 0/90/180/270)."""
  az = jnp.asarray(INSTANT3D_AZIMUTHS, jnp.float32) + azimuth_offset_deg
  return orbit_camera(INSTANT3D_ELEVATION, az, distance, fov_deg, resolution, resolution)


def gso_eval_rig(resolution: int = 512, distance: float = INSTANT3D_DISTANCE,
                 fov_deg: float = INSTANT3D_FOV) -> tuple[Camera, Camera]:
  """(eval cameras [64], input cameras [4]) of the GSO protocol (docs/paper_facts.md §C).

  Eval cameras are ordered elevation-major: index = 16·i_elevation + i_azimuth, azimuths
  0, 22.5, …, 337.5. The paper does not state distance/FOV for its GSO renders; the Instant3D
  rig's (2.7, 50°) are used so that the inputs match the training rig up to a rotation about z.
  """
  el, az = np.meshgrid(np.asarray(GSO_ELEVATIONS),
                       np.arange(GSO_NUM_AZIMUTHS) * 360.0 / GSO_NUM_AZIMUTHS, indexing="ij")
  eval_cams = orbit_camera(el.reshape(-1), az.reshape(-1), distance, fov_deg,
                           resolution, resolution)
  inputs = orbit_camera(INSTANT3D_ELEVATION, jnp.asarray(GSO_INPUT_AZIMUTHS), distance, fov_deg,
                        resolution, resolution)
  return eval_cams, inputs


def camera_rays(camera: Camera) -> tuple[jax.Array, jax.Array]:
  """World-space rays through pixel centres: `origins, directions` `[..., H, W, 3]`, unit dirs."""
  H, W = camera.height, camera.width
  v, u = jnp.meshgrid(jnp.arange(H, dtype=jnp.float32) + 0.5,
                      jnp.arange(W, dtype=jnp.float32) + 0.5, indexing="ij")
  return pixel_rays(camera, u, v)


def pixel_rays(camera: Camera, u: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Rays through image points `(u, v)` (pixel units, centres at +0.5), shape `[..., *uv.shape, 3]`.

  `u`, `v` have a shape of their own (e.g. `[H, W]` or `[N]`) appended to the camera's batch shape.
  """
  K = camera.K
  extra = u.ndim
  expand = lambda x: x.reshape(x.shape[:-2] + (1,) * extra + x.shape[-2:])  # noqa: E731
  K, c2w = expand(K), expand(camera.c2w)
  x = (u - K[..., 0, 2]) / K[..., 0, 0]
  y = (v - K[..., 1, 2]) / K[..., 1, 1]
  d_cam = jnp.stack([x, y, jnp.ones_like(x)], -1)
  directions = _normalize(jnp.einsum("...ij,...j->...i", c2w[..., :3, :3], d_cam))
  origins = jnp.broadcast_to(c2w[..., :3, 3], directions.shape)
  return origins, directions


def project_points(camera: Camera, points: jax.Array) -> tuple[jax.Array, jax.Array]:
  """World points `[..., 3]` → (pixel coordinates `[..., 2]` as (u, v), camera-space depth z)."""
  w2c = jnp.linalg.inv(camera.c2w)
  p = jnp.einsum("...ij,...j->...i", w2c[..., :3, :3], points) + w2c[..., :3, 3]
  uvw = jnp.einsum("...ij,...j->...i", camera.K, p)
  return uvw[..., :2] / uvw[..., 2:3], p[..., 2]


def project_grid(camera: Camera, coords: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`project_points` of the grid `meshgrid(coords, coords, coords, indexing='ij')` (ONE camera,
  `coords [n]`) → (uv `[n, n, n, 2]`, depth `[n, n, n]`), computed separably: each projective
  row is a sum of three 1-D terms (8× faster on CPU than the `[..., 3]` matrix product)."""
  w2c = jnp.linalg.inv(camera.c2w)[:3]
  rows = jnp.concatenate([camera.K @ w2c, w2c[2:3]])                     # u·w, v·w, w, depth
  c = coords
  rows = (rows[:, 0, None, None, None] * c[:, None, None] + rows[:, 1, None, None, None]
          * c[None, :, None] + rows[:, 2, None, None, None] * c[None, None, :]
          + rows[:, 3, None, None, None])                                 # [4, x, y, z]
  return jnp.stack([rows[0] / rows[2], rows[1] / rows[2]], -1), rows[3]


def elevation_azimuth_distance(c2w: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Inverse of `orbit_position` on the camera centre: degrees, degrees (in [0, 360)), distance."""
  p = c2w[..., :3, 3]
  d = jnp.linalg.norm(p, axis=-1)
  el = jnp.rad2deg(jnp.arcsin(jnp.clip(p[..., 2] / d, -1.0, 1.0)))
  az = jnp.mod(jnp.rad2deg(jnp.arctan2(p[..., 1], p[..., 0])), 360.0)
  return el, az, d


CAMERA_CONVENTIONS = ("opencv", "opengl")
# Camera axes of OpenGL/Blender (x right, y up, z backward) from OpenCV's (x right, y down, z
# forward): c2w_opengl = c2w_opencv @ OPENCV_TO_OPENGL (its own inverse).
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0]).astype(np.float32)


def camera_embedding(camera: Camera, convention: str = "opencv") -> jax.Array:
  """The 16-D conditioning vector `[..., 16]`: flattened 3×4 c2w, then fx/W, fy/H, cx/W, cy/H.

  `convention` names the camera axes of the c2w in the vector: 'opencv' (the project's own) or
  'opengl' (InstantMesh/OpenLRM: x right, y up, z backward; the y and z columns negated).
  """
  if convention not in CAMERA_CONVENTIONS:
    raise ValueError(f"camera_embedding: convention must be one of {CAMERA_CONVENTIONS}, got "
                     f"{convention!r}")
  K = camera.K
  intr = jnp.stack([K[..., 0, 0] / camera.width, K[..., 1, 1] / camera.height,
                    K[..., 0, 2] / camera.width, K[..., 1, 2] / camera.height], -1)
  c2w = camera.c2w
  if convention == "opengl":
    c2w = c2w * jnp.asarray(np.diag(OPENCV_TO_OPENGL))   # columns x, −y, −z, t
  ext = c2w[..., :3, :4].reshape(camera.c2w.shape[:-2] + (12,))
  return jnp.concatenate([ext, intr], -1)


def rotate_about_z(camera: Camera, angle_deg: float) -> Camera:
  """The same cameras after rotating the world by `angle_deg` about +z (counter-clockwise).

  Cameras are relative to the object, so rotating them by −45° is the same as rotating the object
  by +45°; evaluation uses this to put GSO inputs (az 45/135/…) on the training rig (az 0/90/…).
  """
  a = np.deg2rad(angle_deg)
  R = np.eye(4, dtype=np.float32)
  R[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
  return camera.replace(c2w=jnp.einsum("ij,...jk->...ik", jnp.asarray(R), camera.c2w))


def crop_camera(camera: Camera, top, left, height: int, width: int) -> Camera:
  """The camera of the pixel window [top:top+height, left:left+width] (principal point shifts)."""
  top = jnp.asarray(top, jnp.float32)
  left = jnp.asarray(left, jnp.float32)
  K = camera.K.at[..., 0, 2].add(-left).at[..., 1, 2].add(-top)
  return Camera(c2w=camera.c2w, K=K, width=int(width), height=int(height))


def resize_camera(camera: Camera, width: int, height: int) -> Camera:
  """The same view at another resolution (intrinsics scaled; pixel-centre convention kept)."""
  sx, sy = width / camera.width, height / camera.height
  scale = jnp.asarray([[sx, 0, sx], [0, sy, sy], [0, 0, 1]], jnp.float32)
  return Camera(c2w=camera.c2w, K=camera.K * scale, width=int(width), height=int(height))


def stack_cameras(cameras: Sequence[Camera]) -> Camera:
  """Stacks cameras of equal resolution along a new leading axis."""
  sizes = {(c.width, c.height) for c in cameras}
  if len(sizes) != 1:
    raise ValueError(f"stack_cameras: cameras must share one resolution, got {sorted(sizes)}")
  w, h = sizes.pop()
  return Camera(c2w=jnp.stack([c.c2w for c in cameras]), K=jnp.stack([c.K for c in cameras]),
                width=w, height=h)


def _normalize(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
