"""Blender renders (data_pipeline/render.py, blender_render.py, blender_script.py).

Fast: the job's cameras and what Blender's camera made from them images with (numpy only; the
script's `camera_settings` is read from its file, which imports bpy only inside functions); the
resumability and failure bookkeeping of the command with a fake Blender (a `--python` that
writes the images itself, or fails, or exits 0 and writes nothing).
Slow (skipped without `.venv-render`, `make install-render`): two offline assets rendered at 128²
with 8 samples through the command, the mask check, and the importer on the result.
"""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data_pipeline import blender_render as br
from data_pipeline import cameras_json
from instant3d_jax import cameras as C
from instant3d_jax.configs import render as render_config
from tests.fake_gcs import fake_gcs  # noqa: F401  (fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE_GLB = "/usr/share/assimp/models/glTF2/2CylinderEngine-glTF-Binary/2CylinderEngine.glb"


def _script():
  spec = importlib.util.spec_from_file_location("blender_script_under_test", br.SCRIPT)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_the_script_imports_only_blender_and_the_standard_library():
  import ast
  tree = ast.parse(open(br.SCRIPT).read())
  mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
          for a in n.names}
  mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
  assert mods <= {"bpy", "mathutils", "json", "os", "sys", "math"}, mods
  top = {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
  assert "bpy" not in top and "mathutils" not in top  # readable without Blender


def _blender_project(settings, width, height, pts):
  """Pixels (x right, y down) of world points through Blender's perspective camera, written
  from Blender's own model: camera looks along its local −z, y up; vertical sensor fit: the
  image height spans sensor_height at distance lens; shift moves the frame by shift·H pixels."""
  w2l = np.linalg.inv(np.asarray(settings["matrix_world"]))
  loc = pts @ w2l[:3, :3].T + w2l[:3, 3]
  depth = -loc[:, 2]
  f_px = settings["lens"] / settings["sensor_height"] * height
  u = width / 2.0 + f_px * loc[:, 0] / depth - settings["shift_x"] * height
  v = height / 2.0 - f_px * loc[:, 1] / depth + settings["shift_y"] * height
  return np.stack([u, v], -1), depth


@pytest.mark.parametrize("variant", ["test", "openlrm", "instantmesh"])
def test_job_cameras_are_what_blender_images_with(variant):
  cfg = render_config.get_config(variant)
  cfg.eval_rig = True
  views = br.object_views(cfg, "chair_01")
  groups = [v["group"] for v in views]
  assert groups.count("rig") == 4 and groups.count("sup") == cfg.num_sup_views
  assert groups.count("eval") == 64 and groups.count("eval_inputs") == 4
  c2w = np.asarray([v["c2w"] for v in views])
  el, az, dist = (np.asarray(x) for x in C.elevation_azimuth_distance(c2w))
  np.testing.assert_allclose(el[:4], 20.0, atol=1e-3)
  np.testing.assert_allclose(np.mod(az[:4], 360.0), [0, 90, 180, 270], atol=1e-3)
  np.testing.assert_allclose(dist[:4], 2.7, atol=1e-5)
  sup = slice(4, 4 + cfg.num_sup_views)
  lo, hi = cfg.sup.distance_range
  assert np.all((dist[sup] >= lo - 1e-4) & (dist[sup] <= hi + 1e-4))
  if cfg.sup.mode == "height":
    z = c2w[sup, 2, 3]
    assert np.all((z >= -0.75 - 1e-4) & (z <= 1.6 + 1e-4))
  # The same object gets the same cameras; another object others.
  assert br.object_views(cfg, "chair_01") == views
  assert br.object_views(cfg, "chair_02")[4]["c2w"] != views[4]["c2w"]
  script = _script()
  R = cfg.resolution
  pts = np.random.default_rng(0).uniform(-1, 1, (500, 3))
  for v in views:
    s = script.camera_settings(v["c2w"], v["K"], R, R)
    assert s["sensor_fit"] == "VERTICAL"
    back_c2w, back_K = br.blender_camera_to_opencv(s, R, R)
    np.testing.assert_allclose(back_c2w, v["c2w"], atol=1e-6)
    np.testing.assert_allclose(back_K, v["K"], atol=1e-5)
    # Vertical FOV 50° holds: 2·atan(sensor / 2 / lens).
    fov = 2 * np.degrees(np.arctan(s["sensor_height"] / 2 / s["lens"]))
    np.testing.assert_allclose(fov, cfg.fov_deg, atol=1e-6)
    got, depth = _blender_project(s, R, R, pts)
    w2c = np.linalg.inv(np.asarray(v["c2w"]))
    cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
    uv = cam @ np.asarray(v["K"]).T
    np.testing.assert_allclose(got, uv[:, :2] / uv[:, 2:], atol=1e-6)
    np.testing.assert_allclose(depth, cam[:, 2], atol=1e-9)


def test_off_centre_principal_point_and_non_square_pixels():
  script = _script()
  cam = C.orbit_camera(30.0, 60.0, 2.5, 40.0, 96, 64)
  K = np.asarray(cam.K, np.float64)
  K[0, 2] += 5.0
  K[1, 2] -= 3.0
  c2w = np.asarray(cam.c2w, np.float64)
  s = script.camera_settings(c2w.tolist(), K.tolist(), 96, 64)
  back_c2w, back_K = br.blender_camera_to_opencv(s, 96, 64)
  np.testing.assert_allclose(back_K, K, atol=1e-5)
  pts = np.random.default_rng(1).uniform(-1, 1, (100, 3))
  got, _ = _blender_project(s, 96, 64, pts)
  camp = pts @ np.linalg.inv(c2w)[:3, :3].T + np.linalg.inv(c2w)[:3, 3]
  uv = camp @ K.T
  np.testing.assert_allclose(got, uv[:, :2] / uv[:, 2:], atol=1e-6)
  K[0, 0] *= 1.1
  with pytest.raises(ValueError, match="square pixels"):
    script.camera_settings(c2w.tolist(), K.tolist(), 96, 64)


def test_job_json_carries_the_config():
  cfg = render_config.get_config("bench")
  views = br.object_views(cfg, "a")
  job = br.make_job(cfg, "x.glb", "/tmp/o", views)
  assert (job["width"], job["samples"], job["denoise"]) == (64, 16, False)
  assert len(job["views"]) == 4 + 8 and set(job["views"][0]) == {"file", "c2w", "K"}


def test_find_assets_from_a_folder_and_a_list(tmp_path):
  from instant3d_jax import errors
  (tmp_path / "a").mkdir()
  for name in ("a/one.glb", "two.PLY", "three.stl", "notes.txt"):
    (tmp_path / name).write_bytes(b"x")
  got = br.find_assets(str(tmp_path))
  assert [o for o, _ in got] == ["one", "three", "two"]
  lst = tmp_path / "list.txt"
  lst.write_text("# assets\na/one.glb\n\nthree.stl\n")
  assert [o for o, _ in br.find_assets(str(lst))] == ["one", "three"]
  (tmp_path / "b").mkdir()
  (tmp_path / "b" / "one.obj").write_bytes(b"x")
  with pytest.raises(errors.InputError, match="share the object id 'one'"):
    br.find_assets(str(tmp_path))
  with pytest.raises(errors.InputError, match="no such directory"):
    br.find_assets(str(tmp_path / "missing"))


# A fake Blender: started as `FAKE -c RUNNER --job JOB`, as blender_command starts the real one.
# ok*: writes every PNG + normalization.json; bad*: exit 2 with the script's error line;
# liar*: exit 0, writes nothing; crash*: exit 0, one PNG empty. Appends each asset to calls.txt.
_FAKE = """#!{python}
import json, os, sys
from PIL import Image
job = json.load(open(sys.argv[-1]))
name = os.path.basename(job["asset"])
with open(os.path.join({calls!r}), "a") as f:
  f.write(name + "\\n")
if name.startswith("bad"):
  sys.stderr.write("blender_script: error: " + job["asset"] + ": import failed (no mesh)\\n")
  sys.exit(2)
if name.startswith("liar"):
  sys.exit(0)
os.makedirs(job["out_dir"], exist_ok=True)
json.dump({{"matrix": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
           "import_axes": "none", "center": [0, 0, 0], "radius": 1.0}},
          open(os.path.join(job["out_dir"], "normalization.json"), "w"))
for i, v in enumerate(job["views"]):
  p = os.path.join(job["out_dir"], v["file"])
  if name.startswith("crash") and i == 2:
    open(p, "wb").close()
    continue
  Image.new("RGBA", (job["width"], job["height"]), (255, 0, 0, 255)).save(p)
"""


def _fake_python(tmp_path):
  calls = tmp_path / "calls.txt"
  fake = tmp_path / "fake_python"
  fake.write_text(_FAKE.format(python=sys.executable, calls=str(calls)))
  fake.chmod(0o755)
  return str(fake), calls


def _run_command(assets, out, fake, *extra):
  cmd = [sys.executable, "-m", "data_pipeline.render", f"--assets={assets}", f"--out={out}",
         "--config=configs/render.py:bench", "--config.num_sup_views=2",
         "--config.mask_check.enabled=False", f"--python={fake}", *extra]
  return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_resume_and_failure_bookkeeping_with_a_fake_blender(tmp_path):
  fake, calls = _fake_python(tmp_path)
  assets = tmp_path / "assets"
  assets.mkdir()
  for name in ("ok1.glb", "ok2.obj", "bad.ply", "liar.stl", "crash.glb"):
    (assets / name).write_bytes(b"x")
  out = tmp_path / "renders"
  r = _run_command(assets, out, fake)
  assert r.returncode == 1, r.stderr
  assert "rendered 2 of 5 objects" in r.stdout and "3 failed" in r.stdout, r.stdout
  assert sorted(os.listdir(out)) == [".failed", "failures.jsonl", "ok1", "ok2"]
  fails = {d["object_id"]: d for d in map(json.loads, open(out / "failures.jsonl"))}
  assert fails["bad"]["stage"] == "load" and "import failed (no mesh)" in fails["bad"]["reason"]
  assert fails["liar"]["stage"] == "output" and "6 of 6 images missing" in fails["liar"]["reason"]
  assert fails["crash"]["stage"] == "output" and "1 of 6 images missing or empty (first rig_002.png)" in fails["crash"]["reason"]
  assert "failed: bad: load:" in r.stderr
  header, frames = cameras_json.read_cameras_json(str(out / "ok1" / "cameras.json"))
  assert header["width"] == 64 and [f["group"] for f in frames] == ["rig"] * 4 + ["sup"] * 2
  job_views = br.object_views(_bench_cfg(), "ok1")
  np.testing.assert_allclose(np.stack([f["c2w"] for f in frames]),
                             np.asarray([v["c2w"] for v in job_views]), atol=1e-6)
  assert not os.path.exists(out / "ok1" / "job.json")
  assert len(calls.read_text().split()) == 5
  # Resumed: nothing rendered again (done or failed before); still exits 1 for the failures.
  r = _run_command(assets, out, fake)
  assert r.returncode == 1 and "rendered 0 of 5 objects" in r.stdout, r.stdout
  assert "2 done before" in r.stdout and "3 failed before and skipped" in r.stdout
  assert len(calls.read_text().split()) == 5
  # --retry_failed tries the three again; an interrupted object (temp folder) starts over.
  (out / ".tmp-ok3").mkdir()
  (assets / "ok3.glb").write_bytes(b"x")
  r = _run_command(assets, out, fake, "--retry_failed")
  assert r.returncode == 1 and "rendered 1 of 6 objects" in r.stdout, r.stdout
  assert sorted(calls.read_text().split()[5:]) == ["bad.ply", "crash.glb", "liar.stl", "ok3.glb"]
  assert not (out / ".tmp-ok3").exists() and (out / "ok3" / "cameras.json").is_file()
  # Only good objects: exit 0.
  good = tmp_path / "good.txt"
  good.write_text("assets/ok1.glb\nassets/ok2.obj\n")
  r = _run_command(good, out, fake)
  assert r.returncode == 0 and "rendered 0 of 2 objects" in r.stdout, (r.stdout, r.stderr)


def _bench_cfg():
  cfg = render_config.get_config("bench")
  cfg.num_sup_views = 2
  return cfg


def test_a_missing_blender_venv_is_one_line(tmp_path):
  (tmp_path / "a.glb").write_bytes(b"x")
  r = _run_command(tmp_path, tmp_path / "o", str(tmp_path / "no_python"))
  assert r.returncode != 0 and "make install-render" in r.stderr
  assert "Traceback" not in r.stderr


def _asymmetric_glb(path):
  """A box with a green ball on +x, high, and a thin post on −y: no symmetry that hides a flipped
  axis. Built z-up, stored y-up as glTF wants ((x, y, z) → (x, z, −y)), so Blender's import
  brings it back z-up."""
  import trimesh
  box = trimesh.creation.box((1.0, 0.6, 0.4))
  ball = trimesh.creation.icosphere(2, 0.3)
  ball.apply_translation((0.45, 0.1, 0.5))
  post = trimesh.creation.cylinder(0.08, 0.6)
  post.apply_translation((-0.3, -0.2, 0.3))
  parts = [box, ball, post]
  for p, c in zip(parts, ((200, 50, 50, 255), (50, 200, 50, 255), (50, 50, 200, 255))):
    p.visual.face_colors = c
  mesh = trimesh.util.concatenate(parts)
  mesh.apply_transform(np.linalg.inv(br._AXES["y_up_to_z_up"]))  # pylint: disable=protected-access
  mesh.export(path)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(br.default_python()),
                    reason=".venv-render absent (make install-render)")
def test_blender_renders_offline_assets_that_import(tmp_path):
  from data_pipeline import render_import, records
  assets = tmp_path / "assets"
  assets.mkdir()
  _asymmetric_glb(str(assets / "asym.glb"))
  if os.path.isfile(ENGINE_GLB):
    os.symlink(ENGINE_GLB, assets / "engine.glb")
  out = tmp_path / "renders"
  cmd = [sys.executable, "-m", "data_pipeline.render", f"--assets={assets}", f"--out={out}",
         "--config=configs/render.py:test"]
  r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
  assert r.returncode == 0, r.stdout + r.stderr[-3000:]
  n = len(os.listdir(assets))
  assert f"rendered {n} of {n} objects" in r.stdout, r.stdout
  for name in os.listdir(assets):
    oid = os.path.splitext(name)[0]
    check = json.load(open(out / oid / "mask_check.json"))
    print(oid, {k: check[k] for k in ("inside", "mean_inside", "iou", "mean_iou", "radius")})
    assert check["inside"] >= 0.99 and check["iou"] >= 0.9
    assert abs(check["radius"] - 1.0) < 1e-3
    norm = json.load(open(out / oid / "normalization.json"))
    assert norm["import_axes"] == "y_up_to_z_up"
  # The asymmetric object's ball (+x, top) is on the image's left at azimuth 90 (camera on +y,
  # looking at −y: world +x is image left) and top half: the axes survived.
  from PIL import Image
  a = np.asarray(Image.open(out / "asym" / "rig_001.png")).astype(np.int32)
  green = (a[..., 1] > a[..., 0] + 40) & (a[..., 3] > 200)
  rows, cols = np.nonzero(green)
  assert cols.mean() < 64 and rows.mean() < 64, (rows.mean(), cols.mean())
  # Resumed: nothing to do.
  r2 = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert r2.returncode == 0 and f"rendered 0 of {n} objects" in r2.stdout
  meta = render_import.import_renders(str(out), str(tmp_path / "data"), progress=False,
                                      split_fractions=(1.0, 0.0, 0.0))
  assert meta["num_objects"] == n and meta["resolution"] == 128
  rec = next(iter(records.RecordSource(str(tmp_path / "data"), "train")))
  assert len(rec["groups"]["rig"]["images"]) == 4 and len(rec["groups"]["sup"]["images"]) == 4


def _fake_render_folder(folder, mesh_path, cfg, c2w_written=None):
  """An object folder whose alpha is the mesh's own silhouette (br._rasterise through the job
  cameras), as a correct renderer would give; `c2w_written` replaces the cameras written."""
  from PIL import Image
  import trimesh
  os.makedirs(folder)
  mesh = trimesh.load(mesh_path, force="mesh", process=False)
  with open(os.path.join(folder, br.NORMALIZATION_FILE), "w") as f:
    json.dump({"matrix": np.eye(4).tolist(), "import_axes": "none"}, f)
  views = br.object_views(cfg, "obj")
  R = cfg.resolution
  for v in views:
    w2c = np.linalg.inv(np.asarray(v["c2w"]))
    cam = np.asarray(mesh.vertices) @ w2c[:3, :3].T + w2c[:3, 3]
    uv = cam @ np.asarray(v["K"]).T
    sil = br._rasterise(uv[:, :2] / uv[:, 2:], np.asarray(mesh.faces), R, R)  # pylint: disable=protected-access
    rgba = np.zeros((R, R, 4), np.uint8)
    rgba[sil] = 255
    Image.fromarray(rgba).save(os.path.join(folder, v["file"]))
  c2w = np.asarray([v["c2w"] for v in views], np.float32)
  if c2w_written is not None:
    c2w = c2w_written(c2w)
  cam = br._Cameras(c2w, np.asarray([v["K"] for v in views], np.float32), R, R)  # pylint: disable=protected-access
  cameras_json.write_cameras_json(os.path.join(folder, br.CAMERAS_FILE), cam,
                                  [v["file"] for v in views], [v["group"] for v in views])


def test_mask_check_passes_a_consistent_render_and_catches_convention_slips(tmp_path):
  """The check on alpha = the mesh's silhouette: all points inside, IoU 1; cameras written in
  Blender's axes as if OpenCV, or the object mirrored (x → −x), fail it."""
  import trimesh
  box = trimesh.creation.box((1.0, 0.5, 0.3))
  ball = trimesh.creation.icosphere(1, 0.3)
  ball.apply_translation((0.5, 0.2, 0.3))
  mesh = trimesh.util.concatenate([box, ball])
  v = np.asarray(mesh.vertices)
  c = (v.min(0) + v.max(0)) / 2
  mesh.apply_translation(-c)
  mesh.apply_scale(1 / np.linalg.norm(mesh.vertices, axis=-1).max())
  path = str(tmp_path / "m.ply")
  mesh.export(path)
  cfg = render_config.get_config("bench")
  cfg.num_sup_views = 4
  _fake_render_folder(str(tmp_path / "good"), path, cfg)
  res = br.mask_check(str(tmp_path / "good"), path, num_points=4000)
  assert res["inside"] == 1.0 and res["iou"] > 0.99 and abs(res["radius"] - 1) < 1e-6
  gl = np.diag([1.0, -1.0, -1.0, 1.0]).astype(np.float32)
  mirror = np.diag([-1.0, 1.0, 1.0, 1.0]).astype(np.float32)
  for name, slip in (("gl", lambda m: m @ gl), ("mirror", lambda m: mirror @ m @ mirror)):
    _fake_render_folder(str(tmp_path / name), path, cfg, slip)
    bad = br.mask_check(str(tmp_path / name), path, num_points=4000)
    assert bad["inside"] < 0.99 or bad["iou"] < 0.9, (name, bad["inside"], bad["iou"])


def test_render_into_a_bucket_uploads_finished_objects(tmp_path, fake_gcs):
  """`--out gs://…`: objects render into a local staging folder, each finished one is uploaded
  (cameras JSON last) and a rerun skips it; failures.jsonl is rewritten whole in the bucket."""
  fake, calls = _fake_python(tmp_path)
  for name in ("ok1.glb", "bad.ply"):
    (tmp_path / name).write_bytes(b"x")
  assets = [("ok1", str(tmp_path / "ok1.glb")), ("bad", str(tmp_path / "bad.ply"))]
  cfg = _bench_cfg()
  cfg.mask_check.enabled = False
  out = "gs://bucket/renders"
  s = br.render_assets(cfg, assets, out, python=fake, progress=False)
  assert (s["rendered"], s["failed"]) == (1, 1)
  files = sorted(f.split("renders/", 1)[1] for f in fake_gcs.files() if "/renders/" in f)
  local = tmp_path / "local"
  br.render_assets(cfg, assets[:1], str(local), python=fake, progress=False)
  assert files == sorted(["failures.jsonl"] + [f"ok1/{n}" for n in os.listdir(local / "ok1")])
  assert {f"ok1/{v['file']}" for v in br.object_views(cfg, "ok1")} <= set(files)
  fails = [json.loads(line) for line in fake_gcs.cat(f"{out}/failures.jsonl").decode().splitlines()]
  assert [f["object_id"] for f in fails] == ["bad"]
  s = br.render_assets(cfg, assets, out, python=fake, progress=False, retry_failed=True)
  assert (s["rendered"], s["skipped"], s["failed"], s["total"]) == (0, 1, 1, 2)
  assert len(calls.read_text().split()) == 4      # ok1 once (+ once locally), bad twice
  fails = [json.loads(line) for line in fake_gcs.cat(f"{out}/failures.jsonl").decode().splitlines()]
  assert [f["object_id"] for f in fails] == ["bad", "bad"]
