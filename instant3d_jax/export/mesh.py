"""Meshes from a density field: marching cubes, vertex colours, GLB / OBJ / PLY files.

`density_grid` samples a field on a regular grid over the box [-box, box]³ (chunked, jitted),
`extract_mesh` runs `skimage.measure.marching_cubes` at a density level, and `save_mesh` writes
the coloured mesh with trimesh. Each file is encoded in memory and written all-or-nothing to a
local or `gs://…` path (`fileio.write_bytes`: temp name then rename, or one upload), so a crash
never leaves a half-written mesh that looks complete.

Coordinate frames: OBJ and PLY keep the project's world frame (z up, docs/design.md §3). glTF
mandates y up, so the GLB is rotated by −90° about x ((x, y, z) → (x, z, −y)) and opens
upright in glTF viewers. Vertex colours go to the GLB as the `COLOR_0` attribute (RGBA uint8),
which glTF viewers (three.js, Blender, Windows 3D Viewer, model-viewer) multiply into the
material's base colour (white here), i.e. show as is.
"""
from __future__ import annotations

import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from skimage import measure

from instant3d_jax import errors, fileio

# z-up world → y-up glTF.
Z_UP_TO_Y_UP = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], np.float32)


def grid_points(resolution: int, box: float = 1.0) -> np.ndarray:
  """`[N, N, N, 3]` points, axis i of the array = world axis i, N samples over [-box, box]."""
  lin = np.linspace(-box, box, resolution, dtype=np.float32)
  return np.stack(np.meshgrid(lin, lin, lin, indexing="ij"), -1)


def density_grid(density_fn: Callable[[jax.Array], jax.Array], resolution: int,
                 box: float = 1.0, chunk: int = 65536, progress=None, jit: bool = True
                 ) -> np.ndarray:
  """`density_fn(points [n, 3]) -> [n]` on the grid of `grid_points` → `[N, N, N]` numpy.

  Evaluated in chunks of `chunk` points by one jitted function (the last chunk padded), so
  memory stays that of one chunk; `progress(k, total)` is called after each chunk. `jit=False`:
  `density_fn` is already compiled (e.g. a partial of a module-level jitted function, which
  then compiles once for many objects).
  """
  pts = grid_points(resolution, box).reshape(-1, 3)
  n = pts.shape[0]
  num = -(-n // chunk)
  pts = np.concatenate([pts, np.zeros((num * chunk - n, 3), np.float32)])
  fn = jax.jit(density_fn) if jit else density_fn
  out = []
  for k in range(num):
    out.append(np.asarray(fn(jnp.asarray(pts[k * chunk:(k + 1) * chunk]))))
    if progress is not None:
      progress(k + 1, num)
  return np.concatenate(out)[:n].reshape(resolution, resolution, resolution)


def extract_mesh(density: np.ndarray, level: float, box: float = 1.0):
  """Marching cubes of `density [N, N, N]` (grid of `grid_points`) at `level` →
  (vertices `[V, 3]` world coordinates, faces `[F, 3]` int). Faces wind counter-clockwise seen
  from outside (normals point toward lower density)."""
  density = np.asarray(density, np.float32)
  lo, hi = float(np.min(density)), float(np.max(density))
  if not lo < level < hi:
    raise errors.InputError(f"marching cubes: the density field never crosses the level {level} "
                            f"(its range is [{lo:.4g}, {hi:.4g}]); pick a level inside the range "
                            "(--mesh_threshold)")
  n = density.shape[0]
  step = 2.0 * box / (n - 1)
  verts, faces, _, _ = measure.marching_cubes(density, level=level, spacing=(step,) * 3)
  # skimage orients faces for gradient_direction='descent' (density decreasing outward), but
  # with the opposite winding to trimesh's outward-normal convention: flip.
  return (verts - box).astype(np.float32), faces[:, ::-1].astype(np.int64)


def to_trimesh(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None):
  """A trimesh with RGBA uint8 vertex colours (`colors [V, 3]` float in [0, 1] or uint8).
  trimesh is imported here, not at module level: only writing a mesh needs it (the GPU suite's
  text-to-3D item imports this module through reconstruction.py without it)."""
  import trimesh  # pylint: disable=g-import-not-at-top
  vc = None
  if colors is not None:
    c = np.asarray(colors)
    if c.dtype != np.uint8:
      c = np.round(np.clip(c, 0, 1) * 255).astype(np.uint8)
    vc = np.concatenate([c[:, :3], np.full((c.shape[0], 1), 255, np.uint8)], 1)
  return trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=vc, process=False)


def save_mesh(stem: str | os.PathLike, vertices, faces, colors=None,
              formats=("glb", "obj", "ply")) -> dict[str, fileio.OutPath]:
  """Writes `<stem>.glb/.obj/.ply` (world frame; the GLB y-up, see module docstring); `stem`
  may be local or `gs://…`."""
  bad = [f for f in formats if f not in ("glb", "obj", "ply")]
  if bad:
    raise ValueError(f"save_mesh: format must be glb, obj or ply, got {bad[0]!r}")
  stem = fileio.path(stem)
  mesh = to_trimesh(vertices, faces, colors)
  import trimesh  # pylint: disable=g-import-not-at-top  (see to_trimesh)
  out = {}
  for fmt in formats:
    if fmt == "glb":
      m = mesh.copy()
      m.vertices = np.asarray(mesh.vertices) @ Z_UP_TO_Y_UP.T
      data = m.export(file_type="glb")
    elif fmt == "obj":
      data = trimesh.exchange.obj.export_obj(mesh, include_color=True, include_normals=False,
                                             include_texture=False).encode("utf-8")
    else:
      data = mesh.export(file_type="ply")
    out[fmt] = fileio.write_bytes(stem.with_name(stem.name + "." + fmt), data)
  return out


__all__ = ["grid_points", "density_grid", "extract_mesh", "to_trimesh", "save_mesh",
           "Z_UP_TO_Y_UP"]
