"""Renders 3D files (GLB/GLTF/OBJ/PLY/STL) with Blender into object folders the importer reads.

The command is `python -m data_pipeline.render` (data_pipeline/render.py); the script Blender runs
is `data_pipeline/blender_script.py`, in its own venv `.venv-render` (`make install-render`: bpy
from PyPI, which declares numpy < 2), started as a subprocess per object; this module never
imports bpy.

For each asset: the cameras (`object_views`: the 4 Instant3D rig views, `num_sup_views` random
views from the config's distribution, optionally the GSO evaluation rig) are computed here with
`instant3d_jax/cameras.py` and written into a job JSON as OpenCV c2w + K; Blender renders into
`OUT/.tmp-<id>/`; every expected PNG must exist and be non-empty (Blender's exit status alone is
not trusted); `cameras.json` (data_pipeline/cameras_json.py, the same matrices) is written; the
mask check (`mask_check`) runs; then the folder is renamed to `OUT/<id>/`, so an object folder
exists only when complete. A finished object is skipped on the next run; a failure (load,
render, missing PNG, mask check, timeout) is appended to `OUT/failures.jsonl` with its reason
(what it left moves to `OUT/.failed/<id>/`), and the object is skipped by later runs unless
`retry_failed`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent import futures
from typing import Callable, Sequence

import numpy as np

from data_pipeline import cameras_json
from instant3d_jax import errors

SUPPORTED = (".glb", ".gltf", ".obj", ".ply", ".stl")
CAMERAS_FILE = "cameras.json"
NORMALIZATION_FILE = "normalization.json"
CHECK_FILE = "mask_check.json"
FAILURES_FILE = "failures.jsonl"
FAILED_DIR = ".failed"  # OUT/.failed/<id>/: what a failed object left (images, logs, job)
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "blender_script.py")
# glTF and OBJ importers of Blender turn the files' y-up into z-up: (x, y, z) -> (x, -z, y).
_AXES = {"none": np.eye(4), "y_up_to_z_up": np.array(
    [[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], np.float64)}
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def default_python(root: str | None = None) -> str:
  """The Blender venv's python: `.venv-render/bin/python` at the repository root."""
  root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return os.path.join(root, ".venv-render", "bin", "python")


def blender_command(python: str, job_path: str) -> list[str]:
  """The subprocess that renders one job: the venv's python runs `blender_script.run`."""
  runner = (f"import sys; sys.path.insert(0, {os.path.dirname(SCRIPT)!r}); "
            "import blender_script; sys.exit(blender_script.run(sys.argv[1:]))")
  return [python, "-c", runner, "--job", job_path]


def find_assets(spec: str) -> list[tuple[str, str]]:
  """[(object id, path)] from a directory (searched recursively for SUPPORTED files) or a text
  file listing one asset path per line (blank lines and # comments skipped; relative paths are
  relative to the list). The object id is the file name without extension; ids must be unique."""
  if os.path.isdir(spec):
    paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(spec) for f in fs
                   if os.path.splitext(f)[1].lower() in SUPPORTED)
  elif os.path.isfile(spec):
    base = os.path.dirname(os.path.abspath(spec))
    with open(spec) as f:
      lines = [ln.strip() for ln in f]
    paths = [os.path.join(base, ln) for ln in lines if ln and not ln.startswith("#")]
    bad = [p for p in paths if os.path.splitext(p)[1].lower() not in SUPPORTED]
    if bad:
      raise errors.InputError(f"{spec}: {bad[0]} is not a supported 3D file "
                              f"({', '.join(SUPPORTED)})")
  else:
    raise errors.InputError(f"--assets {spec}: no such directory or list file")
  if not paths:
    raise errors.InputError(f"{spec}: no 3D files ({', '.join(SUPPORTED)}) found")
  ids: dict[str, str] = {}
  for p in paths:
    oid = os.path.splitext(os.path.basename(p))[0]
    if oid in ids:
      raise errors.InputError(f"two assets share the object id {oid!r}: {ids[oid]} and {p}")
    ids[oid] = p
  return [(oid, os.path.abspath(p)) for oid, p in ids.items()]


def sup_positions(sup, n: int, rng: np.random.Generator) -> np.ndarray:
  """(elevation deg, azimuth deg, distance) [n, 3] of the random supervision views."""
  az = rng.uniform(0.0, 360.0, size=n)
  dist = rng.uniform(*sup.distance_range, size=n)
  if sup.mode == "elevation":
    el = rng.uniform(*sup.elevation_range, size=n)
  elif sup.mode == "height":
    z = rng.uniform(*sup.height_range, size=n)
    el = np.rad2deg(np.arcsin(np.clip(z / dist, -1.0, 1.0)))
  else:
    raise errors.ConfigError(f"sup.mode must be 'elevation' or 'height', found {sup.mode!r}")
  return np.stack([el, az, dist], -1)


def object_seed(seed: int, object_id: str) -> int:
  return (int(seed) * 1_000_003 + zlib.crc32(object_id.encode())) % (2**63)


def object_views(cfg, object_id: str) -> list[dict]:
  """[{file, group, c2w (OpenCV 4×4), K}] of one object: rig, sup, and eval + eval_inputs when
  `cfg.eval_rig`. Sup cameras depend only on (cfg.seed, object_id)."""
  from instant3d_jax import cameras  # pylint: disable=g-import-not-at-top
  R, fov = int(cfg.resolution), float(cfg.fov_deg)
  groups = [("rig", cameras.instant3d_rig(R, float(cfg.rig_distance), fov))]
  if cfg.num_sup_views > 0:
    pos = sup_positions(cfg.sup, int(cfg.num_sup_views),
                        np.random.default_rng(object_seed(cfg.seed, object_id)))
    groups.append(("sup", cameras.orbit_camera(pos[:, 0], pos[:, 1], pos[:, 2], fov, R, R)))
  if cfg.eval_rig:
    ev, inp = cameras.gso_eval_rig(R, float(cfg.rig_distance), fov)
    groups += [("eval", ev), ("eval_inputs", inp)]
  views = []
  for g, cam in groups:
    c2w, K = np.asarray(cam.c2w, np.float64), np.asarray(cam.K, np.float64)
    views += [{"file": f"{g}_{i:03d}.png", "group": g, "c2w": c2w[i].tolist(),
               "K": K[i].tolist()} for i in range(len(c2w))]
  return views


def make_job(cfg, asset: str, out_dir: str, views: Sequence[dict]) -> dict:
  """The job JSON Blender's script reads (schema: data_pipeline/blender_script.py)."""
  return {"version": 1, "asset": os.path.abspath(asset), "out_dir": os.path.abspath(out_dir),
          "width": int(cfg.resolution), "height": int(cfg.resolution),
          "samples": int(cfg.samples), "denoise": bool(cfg.denoise),
          "max_bounces": int(cfg.max_bounces), "threads": int(cfg.threads),
          "world_strength": float(cfg.world_strength), "world_color": [1.0, 1.0, 1.0],
          "views": [{"file": v["file"], "c2w": v["c2w"], "K": v["K"]} for v in views]}


def blender_camera_to_opencv(settings: dict, width: int, height: int):
  """What Blender's camera of `blender_script.camera_settings` images with, in the project's
  convention: (c2w OpenCV [4, 4], K [3, 3]) — Blender's projection under a vertical sensor fit
  (focal length in pixels = lens / sensor_height · H, shift in units of H)."""
  mw = np.asarray(settings["matrix_world"], np.float64)
  assert settings["sensor_fit"] == "VERTICAL"
  f = settings["lens"] / settings["sensor_height"] * height
  cx = width / 2.0 - settings["shift_x"] * height
  cy = height / 2.0 + settings["shift_y"] * height
  return mw @ _GL_TO_CV, np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]])


# ---------------------------------------------------------------------------------------------
# The mask check (issue 28 item 3)
# ---------------------------------------------------------------------------------------------
def normalized_mesh(asset: str, norm: dict):
  """The asset as trimesh loads it, moved into Blender's normalised world: the importer's axis
  change (normalization.json `import_axes`), then its matrix T. Returns a trimesh.Trimesh."""
  import trimesh  # pylint: disable=g-import-not-at-top
  mesh = trimesh.load(asset, force="mesh", process=False)
  M = np.asarray(norm["matrix"], np.float64) @ _AXES[norm["import_axes"]]
  mesh.apply_transform(M)
  return mesh


def _rasterise(verts2d: np.ndarray, faces: np.ndarray, width: int, height: int,
               supersample: int = 4) -> np.ndarray:
  """Pixels at least half covered by the projected faces (drawn at `supersample`× per axis,
  box-filtered): the counterpart of alpha > 0.5. PIL fills a polygon's boundary pixels too; at
  4× that bias is a quarter pixel."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  s = int(supersample)
  img = Image.new("L", (width * s, height * s), 0)
  draw = ImageDraw.Draw(img)
  tri = verts2d[faces] * s  # [F, 3, 2] in pixel coordinates (x right, y down; centres at +0.5)
  lo, hi = tri.min(1), tri.max(1)
  keep = (hi[:, 0] >= 0) & (hi[:, 1] >= 0) & (lo[:, 0] <= width * s) & (lo[:, 1] <= height * s)
  # Faces within a KxK block of sub-pixels (most of a dense mesh): every sub-pixel centre of the
  # block tested against the edges at once (either winding); the others drawn one by one.
  k = 4
  small = keep & np.all(hi - lo < k - 1, axis=-1)
  for t in tri[keep & ~small] - 0.5:  # PIL's pixel (i, j) is the point (i, j)
    draw.polygon([tuple(p) for p in t], fill=1)
  sub = np.array(img)
  t = tri[small]
  base = np.floor(t.min(1))  # [F, 2]
  off = np.stack(np.meshgrid(np.arange(k), np.arange(k), indexing="xy"), -1).reshape(-1, 2)
  q = base[:, None, :] + off[None] + 0.5  # [F, K², 2] sub-pixel centres
  def edge(a, b):
    return ((b[:, None, 0] - a[:, None, 0]) * (q[..., 1] - a[:, None, 1])
            - (b[:, None, 1] - a[:, None, 1]) * (q[..., 0] - a[:, None, 0]))
  e = np.stack([edge(t[:, 0], t[:, 1]), edge(t[:, 1], t[:, 2]), edge(t[:, 2], t[:, 0])], -1)
  inside = np.all(e >= 0, -1) | np.all(e <= 0, -1)
  qi = q[inside].astype(np.int64)
  ok = (qi[:, 0] >= 0) & (qi[:, 0] < width * s) & (qi[:, 1] >= 0) & (qi[:, 1] < height * s)
  sub[qi[ok, 1], qi[ok, 0]] = 1
  cover = sub.astype(np.float32).reshape(height, s, width, s).mean((1, 3))
  return cover >= 0.5


def mask_check(folder: str, asset: str, num_points: int = 20000, dilation_px: int = 3,
               seed: int = 0) -> dict:
  """Convention check of one rendered object: points sampled on the normalised mesh (trimesh +
  the script's normalisation.json), projected through the written cameras.json, fall inside
  the rendered alpha (> 0.5) dilated by `dilation_px` (disk); and the mesh faces rasterised
  through each camera match the alpha silhouette (IoU). Returns {inside (worst view), iou (worst
  view), mean_inside, mean_iou, radius (of the normalised trimesh mesh: 1 when the loaders
  agree), per_view}."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  with open(os.path.join(folder, NORMALIZATION_FILE)) as f:
    norm = json.load(f)
  mesh = normalized_mesh(asset, norm)
  verts = np.asarray(mesh.vertices, np.float64)
  faces = np.asarray(mesh.faces, np.int64)
  radius = float(np.linalg.norm(verts - (verts.min(0) + verts.max(0)) / 2, axis=-1).max())
  if len(faces):
    import trimesh  # pylint: disable=g-import-not-at-top
    pts, _ = trimesh.sample.sample_surface(mesh, num_points, seed=seed)
    pts = np.concatenate([np.asarray(pts, np.float64), verts])
  else:
    pts = verts
  header, frames = cameras_json.read_cameras_json(os.path.join(folder, CAMERAS_FILE))
  W, H = header["width"], header["height"]
  r = int(dilation_px)
  yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
  disk = xx**2 + yy**2 <= r * r
  per_view = []
  for fr in frames:
    alpha = np.asarray(Image.open(os.path.join(folder, fr["file"])).convert("RGBA"))[..., 3]
    mask = alpha > 127
    grown = ndimage.binary_dilation(mask, structure=disk)
    w2c = np.linalg.inv(np.asarray(fr["c2w"], np.float64))
    K = np.asarray(fr["K"], np.float64)

    def project(p):
      cam = p @ w2c[:3, :3].T + w2c[:3, 3]
      uv = cam @ K.T
      return uv[:, :2] / uv[:, 2:3], cam[:, 2]

    uv, z = project(pts)
    col, row = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
    ok = (z > 0) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
    inside = float(grown[row[ok], col[ok]].sum() / max(len(pts), 1))
    iou = None
    if len(faces):
      v2, _ = project(verts)
      sil = _rasterise(v2, faces, W, H)
      union = np.logical_or(sil, mask).sum()
      iou = float(np.logical_and(sil, mask).sum() / union) if union else 1.0
    per_view.append({"file": fr["file"], "inside": inside, "iou": iou})
  ious = [v["iou"] for v in per_view if v["iou"] is not None]
  return {"inside": min(v["inside"] for v in per_view),
          "mean_inside": float(np.mean([v["inside"] for v in per_view])),
          "iou": min(ious) if ious else None, "mean_iou": float(np.mean(ious)) if ious else None,
          "radius": radius, "dilation_px": r, "num_points": int(len(pts)), "per_view": per_view}


# ---------------------------------------------------------------------------------------------
# One object, many objects
# ---------------------------------------------------------------------------------------------
RenderFailure = errors.RenderFailure   # one object failed: `stage` and a one-line `reason`


def _last_error_line(text: str) -> str:
  lines = [ln for ln in text.splitlines() if ln.strip()]
  for ln in reversed(lines):
    if "blender_script: error:" in ln:
      return ln.split("blender_script: error:", 1)[1].strip()
  return lines[-1].strip()[:300] if lines else "no output"


def render_object(cfg, object_id: str, asset: str, out_root: str, python: str,
                  command: Callable[[str, str], list[str]] = blender_command) -> dict:
  """Renders one object into `out_root/<object_id>/` (temp folder, then rename). Returns the
  mask-check result (or {} when the check is off); raises `RenderFailure`."""
  final = os.path.join(out_root, object_id)
  tmp = os.path.join(out_root, f".tmp-{object_id}")
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    views = object_views(cfg, object_id)
    job_path = os.path.join(tmp, "job.json")
    with open(job_path, "w") as f:
      json.dump(make_job(cfg, asset, tmp, views), f)
    try:
      proc = subprocess.run(command(python, job_path), capture_output=True, text=True,
                            timeout=float(cfg.timeout_s), check=False)
    except subprocess.TimeoutExpired:
      raise RenderFailure("timeout", f"no result after {cfg.timeout_s} s") from None
    with open(os.path.join(tmp, "blender.log"), "w") as f:
      f.write(proc.stdout[-20000:] + "\n--- stderr ---\n" + proc.stderr[-20000:])
    if proc.returncode != 0:
      stage = "load" if proc.returncode == 2 else "render"
      raise RenderFailure(stage, f"exit status {proc.returncode}: "
                          f"{_last_error_line(proc.stderr or proc.stdout)}")
    missing = [v["file"] for v in views
               if not os.path.isfile(os.path.join(tmp, v["file"]))
               or os.path.getsize(os.path.join(tmp, v["file"])) == 0]
    if missing:
      raise RenderFailure("output", f"{len(missing)} of {len(views)} images missing or empty "
                          f"(first {missing[0]}) although Blender exited with 0")
    if not os.path.isfile(os.path.join(tmp, NORMALIZATION_FILE)):
      raise RenderFailure("output", f"{NORMALIZATION_FILE} missing")
    c2w = np.asarray([v["c2w"] for v in views], np.float32)
    K = np.asarray([v["K"] for v in views], np.float32)
    cam = _Cameras(c2w, K, int(cfg.resolution), int(cfg.resolution))
    cameras_json.write_cameras_json(os.path.join(tmp, CAMERAS_FILE), cam,
                                    [v["file"] for v in views], [v["group"] for v in views])
    result = {}
    mc = cfg.mask_check
    if mc.enabled:
      try:
        result = mask_check(tmp, asset, int(mc.num_points), int(mc.dilation_px))
      except Exception as e:  # pylint: disable=broad-except
        raise RenderFailure("check", f"mask check could not run ({type(e).__name__}: {e})") \
            from e
      with open(os.path.join(tmp, CHECK_FILE), "w") as f:
        json.dump(result, f, indent=1)
      if result["inside"] < mc.min_inside or (result["iou"] is not None
                                              and result["iou"] < mc.min_iou):
        raise RenderFailure("check", f"mask check: worst view {result['inside']:.4f} of mesh "
                            f"points inside the {mc.dilation_px}-px dilated alpha (needs "
                            f"{mc.min_inside}), silhouette IoU {result['iou']} (needs "
                            f"{mc.min_iou})")
    os.remove(job_path)
    os.replace(tmp, final)
    return result
  except RenderFailure:
    kept = os.path.join(out_root, FAILED_DIR, object_id)  # what it left, for a look
    shutil.rmtree(kept, ignore_errors=True)
    os.makedirs(os.path.dirname(kept), exist_ok=True)
    os.replace(tmp, kept)
    raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


@dataclasses.dataclass
class _Cameras:
  """What `cameras_json.write_cameras_json` reads of a Camera (numpy, no jax needed)."""
  c2w: np.ndarray
  K: np.ndarray
  width: int
  height: int


def is_done(out_root: str, object_id: str) -> bool:
  return os.path.isfile(os.path.join(out_root, object_id, CAMERAS_FILE))


def previous_failures(out_root: str) -> set[str]:
  path = os.path.join(out_root, FAILURES_FILE)
  if not os.path.isfile(path):
    return set()
  out = set()
  with open(path) as f:
    for ln in f:
      try:
        out.add(json.loads(ln)["object_id"])
      except (ValueError, KeyError, TypeError):
        continue
  return out


def record_failure(out_root: str, object_id: str, asset: str, stage: str, reason: str) -> None:
  with open(os.path.join(out_root, FAILURES_FILE), "a") as f:
    f.write(json.dumps({"object_id": object_id, "asset": asset, "stage": stage,
                        "reason": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")


def _render_to_bucket(cfg, assets, out_root: str, **kw) -> dict:
  """`render_assets` into `gs://…`: Blender writes local files only, so objects render into a
  local staging folder and each finished object's files are uploaded (cameras JSON last: an
  object counts as done once it is there) and removed locally; `failures.jsonl` is rewritten
  whole at the end (a bucket object cannot be appended to)."""
  from instant3d_jax import fileio  # pylint: disable=g-import-not-at-top
  remote = fileio.path(out_root)
  done = {o for o, _ in assets if (remote / o / CAMERAS_FILE).exists()}
  old_failures = remote / FAILURES_FILE
  with tempfile.TemporaryDirectory(prefix="instant3d_render_") as local:
    if old_failures.exists():
      with open(os.path.join(local, FAILURES_FILE), "w") as f:
        f.write(old_failures.read_text())

    def upload(object_id: str) -> None:
      folder = os.path.join(local, object_id)
      names = sorted(os.listdir(folder), key=lambda n: (n == CAMERAS_FILE, n))
      for name in names:
        fileio.copy_file(os.path.join(folder, name), remote / object_id / name)
      shutil.rmtree(folder)

    summary = render_assets(cfg, [(o, a) for o, a in assets if o not in done], local,
                            on_done=upload, **kw)
    if os.path.isfile(os.path.join(local, FAILURES_FILE)):
      with open(os.path.join(local, FAILURES_FILE)) as f:
        fileio.write_text(remote / FAILURES_FILE, f.read())
  summary["total"] += len(done)
  summary["skipped"] += len(done)
  return summary


def render_assets(cfg, assets: Sequence[tuple[str, str]], out_root: str, *,
                  python: str | None = None, retry_failed: bool = False, progress: bool = True,
                  command: Callable[[str, str], list[str]] = blender_command,
                  on_done: Callable[[str], None] | None = None) -> dict:
  """Renders every (object id, asset) not yet done into `out_root` (local or `gs://…`),
  `cfg.workers` Blender processes at a time; `on_done(object_id)` runs after each object that
  finished. Returns a summary: total, rendered, skipped (done before), failed (this run),
  failed_before (skipped: in failures.jsonl; `retry_failed` renders them again), seconds,
  views, views_per_s, worst inside / IoU of the mask check, failures [(id, stage, reason)]."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  python = python or default_python()
  if command is blender_command and not os.path.isfile(python):
    raise errors.ConfigError(f"{python}: Blender's venv not found; run `make install-render`")
  if str(out_root).startswith("gs://"):
    return _render_to_bucket(cfg, assets, str(out_root), python=python,
                             retry_failed=retry_failed, progress=progress, command=command)
  os.makedirs(out_root, exist_ok=True)
  failed_before = set() if retry_failed else previous_failures(out_root)
  todo = [(o, a) for o, a in assets if not is_done(out_root, o) and o not in failed_before]
  n_skipped = sum(is_done(out_root, o) for o, _ in assets)
  n_failed_before = sum(1 for o, _ in assets if o in failed_before and not is_done(out_root, o))
  views_per_object = len(object_views(cfg, "x"))
  summary = {"total": len(assets), "rendered": 0, "skipped": n_skipped, "failed": 0,
             "failed_before": n_failed_before, "failures": [], "inside": None, "iou": None}
  t0 = time.perf_counter()
  bar = tqdm(total=len(todo), desc=f"rendering into {out_root}", unit="obj",
             disable=not progress, file=sys.stderr)
  try:
    with futures.ThreadPoolExecutor(max(1, int(cfg.workers))) as pool:
      jobs = {pool.submit(render_object, cfg, o, a, out_root, python, command): (o, a)
              for o, a in todo}
      for fut in futures.as_completed(jobs):
        o, a = jobs[fut]
        try:
          res = fut.result()
          if on_done is not None:
            on_done(o)
          summary["rendered"] += 1
          for k in ("inside", "iou"):
            if res.get(k) is not None:
              summary[k] = res[k] if summary[k] is None else min(summary[k], res[k])
        except RenderFailure as e:
          summary["failed"] += 1
          summary["failures"].append((o, e.stage, e.reason))
          record_failure(out_root, o, a, e.stage, e.reason)
        bar.update(1)
  finally:
    bar.close()
  secs = time.perf_counter() - t0
  summary.update(seconds=secs, views=summary["rendered"] * views_per_object,
                 views_per_s=summary["rendered"] * views_per_object / max(secs, 1e-9))
  return summary


def summary_line(s: dict, out_root: str) -> str:
  check = ""
  if s["inside"] is not None:
    check = f"; mask check worst view: {s['inside']:.4f} inside"
    if s["iou"] is not None:
      check += f", IoU {s['iou']:.3f}"
  return (f"rendered {s['rendered']} of {s['total']} objects into {out_root} "
          f"({s['skipped']} done before, {s['failed']} failed, {s['failed_before']} failed "
          f"before and skipped; failures in {os.path.join(out_root, FAILURES_FILE)}) "
          f"in {s['seconds']:.1f} s: {s['views_per_s']:.2f} views/s{check}")
