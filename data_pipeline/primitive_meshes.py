"""The procedural world's objects as coloured triangle meshes (GLB), for a real renderer.

`primitive_mesh(prim)` tessellates one `primitives.Primitive` (trimesh) in the world frame (z-up,
the primitive's rotation and centre applied), `scene_meshes(scene)` does every primitive of an
object, `export_glb(scene, path)` writes them as one GLB (one mesh and one material per
primitive), and `export_objects(cfg, indices, out_dir)` writes objects of the procedural world
(`procedural.sample_object`: the same scenes the ray caster renders) as `<out_dir>/<name>.glb`.

Conventions of the GLB:
  * axes: glTF is y-up; the world is z-up. The vertices are written as (x, z, −y), which the glTF
    importers of Blender and of `blender_render.normalized_mesh` turn back into (x, y, z).
  * colour: each primitive's material is a PBR metallic-roughness material with metallic 0,
    roughness 1 and base colour = the primitive's caption colour (`primitives.COLOURS`, which the
    ray caster writes as sRGB pixel values) converted to linear (glTF's base colour factor is
    linear), so an unoccluded surface under Blender's uniform white world light renders that
    colour. Face colours of the trimesh meshes carry the same colour in sRGB 8-bit.
  * scale: Blender's render script normalises every object (bounding sphere about the bounding
    box centre → the unit sphere). The GLB also holds `ANCHOR`: six tiny triangles at ±1 on
    each axis with a fully transparent material (alpha 0, alpha mode BLEND), so that
    normalisation is the identity (to ~1e-8) and Blender renders the object at the procedural
    world's scale and place (every primitive lies inside the unit ball). `anchor=False` leaves
    them out.
  * tessellation (`Tessellation`): icosphere, cylinder and cone with `sections` segments around,
    torus `major` × `minor` segments; vertices lie on the analytic surface, faces within the
    chord error (r·(1 − cos(π/sections)) for a circle of radius r) inside it.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from data_pipeline import primitives as P

# z-up world → glTF's y-up: (x, y, z) → (x, z, −y); the inverse of blender_render._AXES
# ['y_up_to_z_up'].
Z_UP_TO_Y_UP = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], np.float64)


@dataclasses.dataclass(frozen=True)
class Tessellation:
  sphere_subdivisions: int = 3  # icosphere: 1280 faces
  sections: int = 64  # cylinder / cone segments around the axis
  torus_major: int = 48
  torus_minor: int = 24


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
  c = np.asarray(c, np.float64)
  return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def local_mesh(shape: str, params: Sequence[float], tess: Tessellation = Tessellation()):
  """The primitive in its local frame (axis z, centred at the origin; `primitives.Primitive`'s
  parameter meanings) as a watertight trimesh.Trimesh."""
  import trimesh  # pylint: disable=g-import-not-at-top
  c = trimesh.creation
  if shape == "sphere":
    return c.icosphere(subdivisions=tess.sphere_subdivisions, radius=float(params[0]))
  if shape == "box":
    return c.box(extents=[2.0 * float(h) for h in params])
  if shape == "cylinder":
    r, h = params
    return c.cylinder(radius=float(r), height=2.0 * float(h), sections=tess.sections)
  if shape == "cone":
    r, h = params  # base radius r at z = −h, apex at z = +h (trimesh: base at z = 0)
    m = c.cone(radius=float(r), height=2.0 * float(h), sections=tess.sections)
    m.apply_translation([0.0, 0.0, -float(h)])
    return m
  if shape == "torus":
    R, r = params
    return c.torus(float(R), float(r), major_sections=tess.torus_major,
                   minor_sections=tess.torus_minor)
  raise ValueError(f"unknown primitive shape {shape!r}; expected one of {P.SHAPES}")


def primitive_transform(prim: P.Primitive) -> np.ndarray:
  """4×4 local → world of a primitive (rotation, then centre)."""
  T = np.eye(4)
  T[:3, :3] = np.asarray(prim.rotation, np.float64)
  T[:3, 3] = np.asarray(prim.center, np.float64)
  return T


def primitive_mesh(prim: P.Primitive, tess: Tessellation = Tessellation()):
  """One primitive in the world frame (z-up) with its colour as face colours (sRGB, 8-bit)."""
  m = local_mesh(prim.shape, prim.params, tess)
  m.apply_transform(primitive_transform(prim))
  rgba = np.append(np.round(prim.rgb * 255.0), 255).astype(np.uint8)
  m.visual.face_colors = np.tile(rgba, (len(m.faces), 1))
  return m


def scene_meshes(scene: Sequence[P.Primitive], tess: Tessellation = Tessellation()) -> list:
  return [primitive_mesh(p, tess) for p in scene]


ANCHOR = "anchor"
_ANCHOR_EPS = 1e-4


def anchor_mesh():
  """Six triangles of side 1e-4 with a vertex at ±1 on each axis (world axes)."""
  import trimesh  # pylint: disable=g-import-not-at-top
  verts, faces = [], []
  for axis in range(3):
    for sign in (1.0, -1.0):
      a = np.zeros(3)
      a[axis] = sign
      u, v = np.eye(3)[(axis + 1) % 3], np.eye(3)[(axis + 2) % 3]
      k = len(verts)
      verts += [a, a + _ANCHOR_EPS * u, a + _ANCHOR_EPS * v]
      faces.append([k, k + 1, k + 2])
  return trimesh.Trimesh(np.asarray(verts), np.asarray(faces), process=False)


def gltf_scene(scene: Sequence[P.Primitive], tess: Tessellation = Tessellation(), *,
               anchor: bool = True):
  """A trimesh.Scene of the object in glTF axes (y-up), one mesh + PBR material per primitive
  (nodes `<i>_<colour>_<shape>`), and the transparent `ANCHOR` node unless `anchor` is False."""
  import trimesh  # pylint: disable=g-import-not-at-top
  out = trimesh.Scene()
  if anchor:
    m = anchor_mesh()
    m.apply_transform(Z_UP_TO_Y_UP)
    m.visual = trimesh.visual.TextureVisuals(material=trimesh.visual.material.PBRMaterial(
        name=ANCHOR, baseColorFactor=[1.0, 1.0, 1.0, 0.0], alphaMode="BLEND",
        metallicFactor=0.0, roughnessFactor=1.0))
    out.add_geometry(m, node_name=ANCHOR, geom_name=ANCHOR)
  for i, prim in enumerate(scene):
    m = local_mesh(prim.shape, prim.params, tess)
    m.apply_transform(Z_UP_TO_Y_UP @ primitive_transform(prim))
    base = np.append(srgb_to_linear(prim.rgb), 1.0)
    mat = trimesh.visual.material.PBRMaterial(
        name=f"{prim.colour}_{i}", baseColorFactor=base, metallicFactor=0.0,
        roughnessFactor=1.0, doubleSided=False)
    m.visual = trimesh.visual.TextureVisuals(material=mat)
    out.add_geometry(m, node_name=f"{i}_{prim.colour}_{prim.shape}",
                     geom_name=f"{i}_{prim.colour}_{prim.shape}")
  return out


def export_glb(scene: Sequence[P.Primitive], path: str,
               tess: Tessellation = Tessellation(), *, anchor: bool = True) -> str:
  """Writes the object as a GLB at `path` (atomically: a temporary file, then a rename)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  data = gltf_scene(scene, tess, anchor=anchor).export(file_type="glb")
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)
  return path


def load_glb_world(path: str):
  """A GLB written by `export_glb` read back with trimesh in world axes (z-up): one mesh per
  primitive, in the file's order, and each one's base colour factor (linear RGBA); the anchor
  is left out."""
  import trimesh  # pylint: disable=g-import-not-at-top
  sc = trimesh.load(path, force="scene", process=False)
  back = np.linalg.inv(Z_UP_TO_Y_UP)
  out = []
  nodes = [n for n in sc.graph.nodes_geometry if n != ANCHOR]
  for node in sorted(nodes, key=lambda n: int(str(n).split("_")[0])):
    T, geom = sc.graph[node]
    m = sc.geometry[geom].copy()
    m.apply_transform(back @ T)
    colour = np.asarray(m.visual.material.baseColorFactor, np.float64)
    if colour.max() > 1.0:
      colour = colour / 255.0
    out.append((m, colour))
  return out


def export_objects(cfg, indices: Sequence[int], out_dir: str, *, names: Sequence[str] | None = None,
                   tess: Tessellation = Tessellation()) -> list[tuple[str, str, str]]:
  """Objects `indices` of the procedural world of the data config `cfg` (configs/data.py) as
  `<out_dir>/<name>.glb` (name default `procedural.object_id(i)`); an existing file is kept.
  Returns [(name, path, caption)]."""
  from data_pipeline import procedural  # pylint: disable=g-import-not-at-top
  names = list(names) if names is not None else [procedural.object_id(i) for i in indices]
  out = []
  for i, name in zip(indices, names):
    scene, _ = procedural.sample_object(cfg, int(i))
    path = os.path.join(out_dir, f"{name}.glb")
    if not os.path.isfile(path):
      export_glb(scene, path, tess)
    out.append((name, path, P.caption(scene)))
  return out
