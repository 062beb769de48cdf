"""The script Blender runs for one object: import, normalise, render the job's views with Cycles.

It runs in `.venv-render` (bpy from PyPI, `make install-render`), never in the project's venv, and
imports only bpy, mathutils, json, os, sys and math (bpy and mathutils inside the functions, so the
camera arithmetic below can be read by the project's tests without Blender). The driver is
`data_pipeline/blender_render.py`; it starts

  .venv-render/bin/python -c "<runner>" --job job.json

where the runner puts this file's folder on `sys.path`, imports it and calls `run(argv)` (no
`__main__` guard here: the project's command rule, docs/design.md §2, would hold a guarded module
to the shape of a command, and this one cannot import the project's `cli`).

The job JSON (written by `blender_render.write_job`):
  {"version": 1, "asset": path, "out_dir": folder, "width": W, "height": H,
   "samples": 16, "denoise": false, "threads": 1, "max_bounces": 4, "world_strength": 1.0,
   "world_color": [1, 1, 1],
   "views": [{"file": "rig_000.png", "c2w": 4x4 OpenCV camera-to-world, "K": 3x3}, ...]}

What it does:
  * factory-empty scene; imports the asset by its extension: .glb/.gltf (glTF importer), .obj
    (wm.obj_import, forward −Z, up Y), .ply (wm.ply_import), .stl (wm.stl_import). Blender's
    world is z-up; the glTF and OBJ importers convert the files' y-up to z-up, (x, y, z) →
    (x, −z, y); PLY and STL are read as they are (taken as z-up).
  * normalises: centre c = the centre of the world-space bounding box of every mesh vertex (after
    modifiers), radius r = the largest distance of a vertex from c; every root object gets
    `T @ matrix_world` with T = scale(1/r) · translate(−c), so the object's bounding sphere about
    c is the unit sphere at the origin (inside [-1, 1]³). T, c, r and the importer's axis change
    go to `normalization.json` in `out_dir`.
  * renders each view: Cycles on the CPU (EEVEE/Workbench need a display), `samples` samples,
    denoiser off unless asked, transparent film (RGBA PNG, 8 bit), view transform 'Standard'
    (Blender ≥ 4 defaults to AgX, which shifts colours), a uniform world light of `world_color`
    × `world_strength`. Cameras: `camera_settings` (OpenCV c2w → Blender matrix_world =
    c2w @ diag(1, −1, −1, 1); lens and sensor from K with sensor fit VERTICAL, so the vertical
    FOV holds).
  * exit status 0 when every view was written, 2 when the asset did not load (no mesh), 3 when
    rendering failed; the reason as one line `blender_script: error: …` on stderr. (The driver
    does not trust the status alone: it checks every PNG.)
"""
import json
import math
import os
import sys

SENSOR_HEIGHT_MM = 24.0
_IMPORT_AXES = {".glb": "y_up_to_z_up", ".gltf": "y_up_to_z_up", ".obj": "y_up_to_z_up",
                ".ply": "none", ".stl": "none"}


def camera_settings(c2w, K, width, height):
  """OpenCV c2w (4×4 nested lists) and K (3×3) → Blender camera settings (plain numbers).

  matrix_world = c2w @ diag(1, −1, −1, 1) (OpenGL camera axes); sensor fit VERTICAL with sensor
  height SENSOR_HEIGHT_MM, lens = fy · sensor / H; square pixels (fx = fy); principal point
  from shift in units of the image height (Blender's view factor under a vertical fit):
  cx = W/2 − shift_x·H, cy = H/2 + shift_y·H.
  """
  fx, fy, cx, cy = K[0][0], K[1][1], K[0][2], K[1][2]
  if abs(fx - fy) > 1e-4 * abs(fy):
    raise ValueError(f"fx {fx} != fy {fy}: only square pixels are supported")
  flip = (1.0, -1.0, -1.0, 1.0)
  mw = [[float(c2w[i][j]) * flip[j] for j in range(4)] for i in range(4)]
  return {"matrix_world": mw, "sensor_fit": "VERTICAL", "sensor_height": SENSOR_HEIGHT_MM,
          "lens": fy * SENSOR_HEIGHT_MM / height, "shift_x": (width / 2.0 - cx) / height,
          "shift_y": (cy - height / 2.0) / height}


def _fail(code, msg):
  sys.stderr.write(f"blender_script: error: {msg}\n")
  sys.stderr.flush()
  return code


def _import_asset(path):
  import bpy  # pylint: disable=g-import-not-at-top
  ext = os.path.splitext(path)[1].lower()
  if ext in (".glb", ".gltf"):
    bpy.ops.import_scene.gltf(filepath=path)
  elif ext == ".obj":
    bpy.ops.wm.obj_import(filepath=path, forward_axis="NEGATIVE_Z", up_axis="Y")
  elif ext == ".ply":
    bpy.ops.wm.ply_import(filepath=path)
  elif ext == ".stl":
    bpy.ops.wm.stl_import(filepath=path)
  else:
    raise ValueError(f"unsupported file type {ext!r}")
  return _IMPORT_AXES[ext]


def _world_vertices():
  import bpy  # pylint: disable=g-import-not-at-top
  dg = bpy.context.evaluated_depsgraph_get()
  pts = []
  for ob in bpy.context.scene.objects:
    if ob.type != "MESH":
      continue
    ev = ob.evaluated_get(dg)
    me = ev.to_mesh()
    mw = ev.matrix_world
    pts.extend(mw @ v.co for v in me.vertices)
    ev.to_mesh_clear()
  return pts


def _normalise():
  import mathutils  # pylint: disable=g-import-not-at-top
  import bpy  # pylint: disable=g-import-not-at-top
  pts = _world_vertices()
  if not pts:
    return None
  lo = [min(p[i] for p in pts) for i in range(3)]
  hi = [max(p[i] for p in pts) for i in range(3)]
  c = mathutils.Vector([(a + b) / 2.0 for a, b in zip(lo, hi)])
  r = max((p - c).length for p in pts)
  if not r > 0:
    return None
  T = mathutils.Matrix.Diagonal((1.0 / r, 1.0 / r, 1.0 / r, 1.0)) @ \
      mathutils.Matrix.Translation(-c)
  for ob in bpy.context.scene.objects:
    if ob.parent is None:
      ob.matrix_world = T @ ob.matrix_world
  bpy.context.view_layer.update()
  return {"center": list(c), "radius": r, "matrix": [list(row) for row in T],
          "num_vertices": len(pts)}


def _setup_scene(job):
  import bpy  # pylint: disable=g-import-not-at-top
  scene = bpy.context.scene
  scene.render.engine = "CYCLES"
  scene.cycles.device = "CPU"
  scene.cycles.samples = int(job["samples"])
  scene.cycles.use_denoising = bool(job.get("denoise", False))
  scene.cycles.max_bounces = int(job.get("max_bounces", 4))
  scene.render.threads_mode = "FIXED"
  scene.render.threads = max(1, int(job.get("threads", 1)))
  scene.render.film_transparent = True
  scene.render.resolution_x = int(job["width"])
  scene.render.resolution_y = int(job["height"])
  scene.render.resolution_percentage = 100
  scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
  scene.render.image_settings.file_format = "PNG"
  scene.render.image_settings.color_mode = "RGBA"
  scene.render.image_settings.color_depth = "8"
  scene.view_settings.view_transform = "Standard"
  scene.view_settings.look = "None"
  scene.view_settings.exposure = 0.0
  scene.view_settings.gamma = 1.0
  world = bpy.data.worlds.new("uniform") if scene.world is None else scene.world
  scene.world = world
  world.use_nodes = True
  bg = world.node_tree.nodes.get("Background")
  if bg is None:
    bg = world.node_tree.nodes.new("ShaderNodeBackground")
    out = world.node_tree.nodes.get("World Output") or world.node_tree.nodes.new(
        "ShaderNodeOutputWorld")
    world.node_tree.links.new(bg.outputs[0], out.inputs[0])
  col = list(job.get("world_color", [1.0, 1.0, 1.0]))
  bg.inputs[0].default_value = (col[0], col[1], col[2], 1.0)
  bg.inputs[1].default_value = float(job.get("world_strength", 1.0))
  cam_data = bpy.data.cameras.new("render_camera")
  cam = bpy.data.objects.new("render_camera", cam_data)
  scene.collection.objects.link(cam)
  scene.camera = cam
  return scene, cam


def _place_camera(cam, view, width, height):
  import mathutils  # pylint: disable=g-import-not-at-top
  s = camera_settings(view["c2w"], view["K"], width, height)
  cam.matrix_world = mathutils.Matrix(s["matrix_world"])
  d = cam.data
  d.type = "PERSP"
  d.sensor_fit = s["sensor_fit"]
  d.sensor_height = s["sensor_height"]
  d.sensor_width = s["sensor_height"]  # unused under a vertical fit
  d.lens = s["lens"]
  d.shift_x, d.shift_y = s["shift_x"], s["shift_y"]
  d.clip_start, d.clip_end = 0.01, 100.0


def run(argv):
  """argv: ['--job', path]. Returns the exit status (see the module docstring)."""
  if len(argv) != 2 or argv[0] != "--job":
    return _fail(64, f"usage: --job JOB.json (got {argv})")
  with open(argv[1]) as f:
    job = json.load(f)
  import bpy  # pylint: disable=g-import-not-at-top
  bpy.ops.wm.read_factory_settings(use_empty=True)
  out_dir = job["out_dir"]
  os.makedirs(out_dir, exist_ok=True)
  try:
    axes = _import_asset(job["asset"])
  except Exception as e:  # pylint: disable=broad-except
    return _fail(2, f"{job['asset']}: import failed ({type(e).__name__}: "
                 f"{str(e).splitlines()[0] if str(e) else ''})")
  norm = _normalise()
  if norm is None:
    return _fail(2, f"{job['asset']}: no mesh with extent after import")
  norm["import_axes"] = axes
  norm["asset"] = job["asset"]
  with open(os.path.join(out_dir, "normalization.json"), "w") as f:
    json.dump(norm, f, indent=1)
  try:
    scene, cam = _setup_scene(job)
    W, H = int(job["width"]), int(job["height"])
    for view in job["views"]:
      _place_camera(cam, view, W, H)
      scene.render.filepath = os.path.join(out_dir, view["file"])
      bpy.ops.render.render(write_still=True)
  except Exception as e:  # pylint: disable=broad-except
    return _fail(3, f"{job['asset']}: render failed ({type(e).__name__}: {e})")
  return 0 if not math.isnan(norm["radius"]) else 3
