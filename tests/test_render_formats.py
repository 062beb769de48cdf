"""Render-set formats (data_pipeline/render_formats.py) and the convention checks
(data_pipeline/convention_checks.py) on a scene of known truth.

An asymmetric object (an L of two boxes and an off-centre sphere, normalised into [-1, 1]³ as
OpenLRM's renders are) is silhouette-rendered at 48² from 12 views by a ray caster of this file;
test-only writers store it in each format's layout and convention. Each import must reproduce the
project-format import of the same scene (cameras to 1e-5, same images, same groups) and pass the
checks; deliberately broken copies (axes flipped, world-to-camera read as camera-to-world, a
mirrored pose or mirrored images, half scale, world up flipped) must each be caught, by object id
and check.
"""
from __future__ import annotations

import json
import os
import types

import numpy as np
import pytest

from data_pipeline import convention_checks, records, render_formats, render_import
from instant3d_jax import errors

RES = 48
FOV = float(np.degrees(2 * np.arctan(16 / 35)))   # zero123's 35 mm lens on a 32 mm sensor
GL = np.diag([1.0, -1.0, -1.0, 1.0])
BOXES = [((-0.95, -0.55, -1.0), (0.65, 0.05, -0.45)), ((0.15, -0.55, -0.45), (0.65, 0.05, 1.0))]
SPHERE = ((-0.5, 0.5, 0.05), 0.4)
# 12 views; the Instant3D rig (el 20, az 0/90/180/270) sits at file positions 2, 5, 7, 10.
ELEV = [-10, 35, 20, 50, 5, 20, 30, 20, 60, -5, 20, 40]
AZIM = [30, 130, 0, 220, 320, 90, 60, 180, 170, 250, 270, 10]
DIST = [3.7, 4.2, 4.0, 3.9, 4.1, 4.0, 3.8, 4.0, 4.0, 4.3, 4.0, 3.6]
RIG_AT = [2, 5, 7, 10]


def _look_at(pos):
  fwd = -pos / np.linalg.norm(pos)
  right = np.cross(fwd, [0.0, 0.0, 1.0])
  right /= np.linalg.norm(right)
  m = np.eye(4)
  m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, np.cross(fwd, right), fwd, pos
  return m


def scene_cameras(az_offset=0.0):
  """OpenCV c2w [12, 4, 4] (object in [-1, 1]³) and K [12, 3, 3]."""
  e, a = np.radians(ELEV), np.radians(np.asarray(AZIM, float) + az_offset)
  pos = np.asarray(DIST)[:, None] * np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a),
                                              np.sin(e)], -1)
  f = (RES / 2) / np.tan(np.radians(FOV) / 2)
  K = np.array([[f, 0, RES / 2], [0, f, RES / 2], [0, 0, 1]])
  return np.stack([_look_at(p) for p in pos]), np.stack([K] * len(pos))


def render(c2w, K):
  """Flat-colour RGBA silhouettes [V, RES, RES, 4] uint8 of the L + sphere."""
  v, u = np.meshgrid(np.arange(RES) + 0.5, np.arange(RES) + 0.5, indexing="ij")
  out = []
  for m, k in zip(c2w, K):
    d = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], -1)
    d = d @ m[:3, :3].T
    o = m[:3, 3]
    img = np.zeros((RES, RES, 4), np.uint8)
    with np.errstate(divide="ignore", invalid="ignore"):
      for (lo, hi), colour in zip(BOXES, [(200, 60, 40), (40, 160, 60)]):
        t0, t1 = (np.array(lo) - o) / d, (np.array(hi) - o) / d
        hit = np.maximum(t0, t1).min(-1) > np.maximum(np.minimum(t0, t1).max(-1), 0)
        img[hit] = colour + (255,)
    c, r = SPHERE
    oc = o - np.asarray(c)
    b = (d * oc).sum(-1)
    img[b * b - (d * d).sum(-1) * ((oc * oc).sum() - r * r) > 0] = (50, 70, 220, 255)
    out.append(img)
  return np.stack(out)


# ------------------------------------------------------------------------------------------------
# Test-only writers: (folder, OpenCV c2w of the [-1, 1]³ object, K, images) → the format on disk.


def _png(path, img):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(records.encode_png(img))


def write_instant3d(folder, c2w, K, imgs, rig=RIG_AT):
  from data_pipeline import cameras_json  # pylint: disable=g-import-not-at-top
  files = [f"view_{i:03d}.png" for i in range(len(imgs))]
  for f, im in zip(files, imgs):
    _png(os.path.join(folder, f), im)
  cam = types.SimpleNamespace(c2w=c2w, K=K, width=RES, height=RES)
  groups = ["rig" if i in (rig or []) else "sup" for i in range(len(imgs))]
  cameras_json.write_cameras_json(os.path.join(folder, "cameras.json"), cam, files, groups)


def write_openlrm(folder, c2w, K, imgs):
  for i, (m, im) in enumerate(zip(c2w, imgs)):
    _png(os.path.join(folder, "rgba", f"{i:03d}.png"), im)
    os.makedirs(os.path.join(folder, "pose"), exist_ok=True)
    np.save(os.path.join(folder, "pose", f"{i:03d}.npy"), (m @ GL)[:3].astype(np.float32))
  k = K[0]
  np.save(os.path.join(folder, "intrinsics.npy"),
          np.array([[k[0, 0], k[1, 1]], [k[0, 2], k[1, 2]], [RES, RES]], np.float32))


def _half(c2w):   # the same views of the object scaled into [-0.5, 0.5]³
  c = c2w.copy()
  c[:, :3, 3] *= 0.5
  return c


def write_zero123(folder, c2w, K, imgs):
  os.makedirs(folder, exist_ok=True)
  for i, (m, im) in enumerate(zip(_half(c2w), imgs)):
    _png(os.path.join(folder, f"{i:03d}.png"), im)
    np.save(os.path.join(folder, f"{i:03d}.npy"), np.linalg.inv(m @ GL)[:3].astype(np.float32))


def write_gobjaverse(folder, c2w, K, imgs):
  for i, (m, k, im) in enumerate(zip(_half(c2w), K, imgs)):
    d = os.path.join(folder, "campos_512_v4", f"{i:05d}")
    _png(os.path.join(d, f"{i:05d}.png"), im)
    doc = {"x": m[:3, 0].tolist(), "y": m[:3, 1].tolist(), "z": m[:3, 2].tolist(),
           "origin": m[:3, 3].tolist(), "x_fov": 2 * np.arctan(RES / 2 / k[0, 0]),
           "y_fov": 2 * np.arctan(RES / 2 / k[1, 1])}
    with open(os.path.join(d, f"{i:05d}.json"), "w") as f:
      json.dump(doc, f)


def write_instantmesh(folder, c2w, K, imgs):
  os.makedirs(folder, exist_ok=True)
  for i, im in enumerate(imgs):
    _png(os.path.join(folder, f"{i:03d}.png"), im)
  np.savez(os.path.join(folder, "cameras.npz"),
           cam_poses=np.stack([np.linalg.inv(m @ GL)[:3] for m in c2w]).astype(np.float32))


# The split layout's files and which views each holds (NeRF-synthetic: train/val/test folders);
# transforms_test.json lists view 2 again (same path, same matrix): the reader keeps it once.
NERF_SPLITS = (("train", range(0, 6)), ("val", range(6, 9)), ("test", [9, 10, 11, 2]))


def write_nerf(folder, c2w, K, imgs, layout="single"):
  """NeRF's layout: one transforms.json (`layout='single'`) or NeRF-synthetic's
  transforms_{train,val,test}.json (`'split'`, views as NERF_SPLITS), file paths without '.png'."""
  fov_x = 2 * np.arctan(RES / 2 / K[0, 0, 0])
  sub = {}
  for split, idx in NERF_SPLITS:
    for i in idx:
      sub.setdefault(i, split)     # the image's folder: the first file listing it
  files = [("transforms.json", range(len(imgs)))] if layout == "single" else \
      [(f"transforms_{split}.json", idx) for split, idx in NERF_SPLITS]
  for name, idx in files:
    frames = []
    for i in idx:
      d = "train" if layout == "single" else sub[i]
      _png(os.path.join(folder, d, f"r_{i}.png"), imgs[i])
      frames.append({"file_path": f"./{d}/r_{i}", "rotation": 0.012566,
                     "transform_matrix": (c2w[i] @ GL).tolist()})
    with open(os.path.join(folder, name), "w") as f:
      json.dump({"camera_angle_x": fov_x, "frames": frames}, f)


WRITERS = {"openlrm": write_openlrm, "zero123": write_zero123, "gobjaverse": write_gobjaverse,
           "instantmesh": write_instantmesh, "nerf": write_nerf}
EXTRA = {"instantmesh": {"fov_deg": FOV}}


def _import(fmt, src, out, **kw):
  return render_import.import_renders(str(src), str(out), split_fractions=(1.0, 0.0, 0.0),
                                      progress=False, format=fmt, **{**EXTRA.get(fmt, {}), **kw})


def _records(out):
  return {r["object_id"]: r for r in records.RecordSource(str(out), "train")}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
  """The 'lshape' object with the rig and 'norig' (azimuths +30°: no rig) in the project's format,
  imported: (tmp dir, truth {id: (c2w, K, images)}, records of the project-format import)."""
  base = tmp_path_factory.mktemp("formats")
  truth = {}
  for oid, offset in (("lshape", 0.0), ("norig", 30.0)):
    c2w, K = scene_cameras(offset)
    truth[oid] = (c2w, K, render(c2w, K))
    write_instant3d(str(base / "instant3d" / oid), *truth[oid], rig=RIG_AT if not offset else None)
  meta = _import("instant3d", base / "instant3d", base / "out_instant3d", checks=True)
  assert meta["convention_checks"]["failed_objects"] == 0, open(base / "out_instant3d" /
                                                                render_import.FAILURES_FILE).read()
  assert meta["input_views"] == "random" and meta["rigless_objects"] == ["norig"]
  return base, truth, _records(base / "out_instant3d")


def test_scene_passes_the_checks_and_has_its_rig(scene):
  _, truth, recs = scene
  c2w, K, imgs = truth["lshape"]
  assert render_formats.find_rig(c2w) == RIG_AT
  assert render_formats.find_rig(truth["norig"][0]) is None
  fails, stats = convention_checks.check_object("lshape", imgs[..., 3] / 255.0, c2w, K)
  assert not fails and stats["iou_min"] > 0.9, (fails, stats)
  assert len(recs["lshape"]["groups"]["rig"]["images"]) == 4
  assert len(recs["norig"]["groups"]["rig"]["images"]) == 0        # rig-less: all views in 'sup'
  assert len(recs["norig"]["groups"]["sup"]["images"]) == 12


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_each_format_imports_as_the_project_format(scene, fmt):
  base, truth, want = scene
  for oid, t in truth.items():
    WRITERS[fmt](str(base / fmt / oid), *t)
  meta = _import(fmt, base / fmt, base / f"out_{fmt}")
  assert meta["convention_checks"]["failed_objects"] == 0, open(base / f"out_{fmt}" /
                                                                render_import.FAILURES_FILE).read()
  assert meta["input_views"] == "random" and meta["rigless_objects"] == ["norig"]
  got = _records(base / f"out_{fmt}")
  for oid, rec in want.items():
    assert set(got[oid]["groups"]) == set(rec["groups"])
    for g, grp in rec["groups"].items():
      np.testing.assert_allclose(got[oid]["groups"][g]["c2w"], grp["c2w"], atol=1e-5)
      np.testing.assert_allclose(got[oid]["groups"][g]["K"], grp["K"], rtol=1e-5)
      assert got[oid]["groups"][g]["images"] == grp["images"]


def test_nerf_split_files_import_as_one_transforms_json(scene):
  """NeRF-synthetic's three split files are views of one object: their union (view 2 listed twice,
  kept once) imports to the same cameras, images and groups as one transforms.json, and passes
  the convention checks."""
  base, truth, want = scene
  for layout in ("single", "split"):
    for oid, t in truth.items():
      write_nerf(str(base / f"nerf_{layout}" / oid), *t, layout=layout)
  assert render_formats.nerf_files(str(base / "nerf_split" / "lshape")) == [
      "transforms_train.json", "transforms_val.json", "transforms_test.json"]
  views = render_formats.read_object("nerf", str(base / "nerf_split" / "lshape"))
  assert views.names == [f"{s}/r_{i}.png" for s, idx in NERF_SPLITS for i in idx][:12]
  got = {}
  for layout in ("single", "split"):
    meta = _import("nerf", base / f"nerf_{layout}", base / f"out_nerf_{layout}")
    assert meta["convention_checks"]["failed_objects"] == 0, layout
    assert meta["rigless_objects"] == ["norig"]
    got[layout] = _records(base / f"out_nerf_{layout}")
  for oid, rec in want.items():
    for layout in ("single", "split"):
      assert set(got[layout][oid]["groups"]) == set(rec["groups"])
    for g, grp in rec["groups"].items():
      a, b = got["single"][oid]["groups"][g], got["split"][oid]["groups"][g]
      np.testing.assert_array_equal(a["c2w"], b["c2w"])    # identical, not just close
      np.testing.assert_array_equal(a["K"], b["K"])
      assert a["images"] == b["images"] == grp["images"]
      np.testing.assert_allclose(b["c2w"], grp["c2w"], atol=1e-5)
      np.testing.assert_allclose(b["K"], grp["K"], rtol=1e-5)
  # One object at --src itself, split layout.
  one = render_formats.list_objects("nerf", str(base / "nerf_split" / "lshape"))
  assert one == [("lshape", str(base / "nerf_split" / "lshape"))]


def _edit_json(path, fn):
  with open(path) as f:
    doc = json.load(f)
  fn(doc)
  with open(path, "w") as f:
    json.dump(doc, f)


@pytest.mark.parametrize("name,edit,message", [
    ("no_fov", lambda d: d.pop("camera_angle_x"),
     r"transforms_val\.json: expected 'camera_angle_x', the horizontal FOV in radians in \(0, pi\), "
     r"found None"),
    ("fov_text", lambda d: d.update(camera_angle_x="wide"), r"transforms_val\.json: expected "
     r"'camera_angle_x'.*found 'wide'"),
    ("no_frames", lambda d: d.update(frames=[]),
     r"transforms_val\.json: expected a non-empty 'frames' list"),
    ("no_path", lambda d: d["frames"][1].pop("file_path"),
     r"transforms_val\.json frame 1: expected an object with 'file_path' \(a string\) and "
     r"'transform_matrix'"),
    ("bad_matrix", lambda d: d["frames"][0].update(transform_matrix=[[1, 0], [0, 1]]),
     r"transforms_val\.json frame 0: expected 'transform_matrix' a finite 4x4 matrix of numbers, "
     r"found shape \[2, 2\]"),
    ("text_matrix", lambda d: d["frames"][0].update(transform_matrix="eye"),
     r"transforms_val\.json frame 0: expected 'transform_matrix' a finite 4x4 matrix"),
    ("dup_other_pose", lambda d: d["frames"][0].update(file_path="./train/r_0"),
     r"transforms_val\.json: transforms_val\.json frame 0 \(\./train/r_0\.png\) lists the image "
     r"of transforms_train\.json frame 0 \(\./train/r_0\.png\) with another camera"),
])
def test_nerf_malformed_split_file_is_a_one_line_error(scene, tmp_path, name, edit, message):
  _, truth, _ = scene
  folder = tmp_path / "src" / "lshape"
  write_nerf(str(folder), *truth["lshape"], layout="split")
  _edit_json(folder / "transforms_val.json", edit)
  with pytest.raises(errors.DataError, match=r"^lshape: .*" + message) as e:
    _import("nerf", tmp_path / "src", tmp_path / "out")
  assert "\n" not in str(e.value)
  assert str(folder / "transforms_val.json") in str(e.value)


def test_nerf_both_layouts_in_one_folder_is_an_error(scene, tmp_path):
  _, truth, _ = scene
  folder = tmp_path / "src" / "lshape"
  write_nerf(str(folder), *truth["lshape"], layout="split")
  write_nerf(str(folder), *truth["lshape"], layout="single")
  with pytest.raises(errors.DataError, match=r"holds both transforms\.json and "
                     r"transforms_train\.json, transforms_val\.json, transforms_test\.json; "
                     r"expected one layout"):
    _import("nerf", tmp_path / "src", tmp_path / "out")
  with pytest.raises(errors.DataError, match=r"no object folders with a transforms\.json or "
                     r"transforms_train\.json/transforms_val\.json/transforms_test\.json found"):
    _import("nerf", tmp_path, tmp_path / "out2")   # object folders one level too deep


def _rot_x(deg):
  a = np.radians(deg)
  m = np.eye(4)
  m[1:3, 1:3] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
  return m


# name → (format written, how the truth is broken, import options, checks that must fail)
BROKEN = {
    # OpenGL c2w written where OpenCV is expected (gobjaverse's JSON): cameras look away.
    "axes_flipped": ("gobjaverse", lambda c, im: (c @ GL, im), {}, {"hull_iou", "scale"}),
    # A world-to-camera stored as NeRF's camera-to-world transform_matrix.
    "w2c_as_c2w": ("nerf", lambda c, im: (np.stack([np.linalg.inv(m @ GL) @ GL for m in c]), im),
                   {}, {"hull_iou", "scale"}),
    # Images mirrored left-right (cameras intact).
    "mirrored_images": ("openlrm", lambda c, im: (c, im[:, :, ::-1]), {}, {"hull_iou"}),
    # zero123's [-0.5, 0.5]³ objects read as if already in [-1, 1]³.
    "half_scale": ("zero123", lambda c, im: (c, im), {"scale": 1.0}, {"scale"}),
    # The world upside down (a rotation: the hull cannot tell) and a y-up world read as z-up.
    "upside_down": ("openlrm", lambda c, im: (np.einsum("ij,vjk->vik", _rot_x(180), c), im), {},
                    {"image_up"}),
    "y_up": ("instantmesh", lambda c, im: (np.einsum("ij,vjk->vik", _rot_x(90), c), im), {},
             {"image_up"}),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_copies_are_caught(scene, name):
  base, truth, _ = scene
  fmt, breaker, kw, expected = BROKEN[name]
  c2w, K, imgs = truth["lshape"]
  oid = f"lshape_{name}"
  bc2w, bimgs = breaker(c2w, imgs)
  WRITERS[fmt](str(base / f"broken_{name}" / oid), bc2w, K, bimgs)
  out = base / f"out_broken_{name}"
  meta = _import(fmt, base / f"broken_{name}", out, **kw)
  text = open(out / render_import.FAILURES_FILE).read()
  print(f"{name}: {render_import.check_summary(meta, str(out))}\n{text}")
  assert meta["convention_checks"]["failed_objects"] == 1
  failed = {line.split("\t")[1] for line in text.splitlines() if line.startswith(oid + "\t")}
  assert expected <= failed, text


def test_mirrored_pose_is_a_one_line_error(scene):
  base, truth, _ = scene
  c2w, K, imgs = truth["lshape"]
  mirror = np.diag([-1.0, 1.0, 1.0, 1.0])          # a reflection of the world: det −1
  write_openlrm(str(base / "mirrored" / "lshape_mirrored"), mirror @ c2w, K, imgs)
  with pytest.raises(errors.DataError, match=r"^lshape_mirrored: view pose/000\.npy: camera "
                     r"rotation is a reflection \(mirrored pose\): det -1\.0000") as e:
    _import("openlrm", base / "mirrored", base / "out_mirrored")
  assert "\n" not in str(e.value)
  print(f"mirrored_pose: {e.value}")


def test_format_errors(scene, tmp_path):
  base, _, _ = scene
  with pytest.raises(errors.ConfigError, match=r"--format instantmesh needs --fov"):
    render_import.import_renders(str(base / "instantmesh"), str(tmp_path / "o"),
                                 format="instantmesh", progress=False)
  with pytest.raises(errors.ConfigError, match=r"--format must be one of"):
    render_import.import_renders(str(base / "nerf"), str(tmp_path / "o"), format="colmap",
                                 progress=False)
  with pytest.raises(errors.DataError, match=r"no object folders with pose/ and rgba/"):
    render_import.import_renders(str(base / "nerf"), str(tmp_path / "o"), format="openlrm",
                                 progress=False)


def test_rigless_data_set_needs_random_inputs(scene):
  """The metadata's input_views='random' reaches `datasets.check_train`; in that mode the loader
  draws inputs from all views of both the rig and the rig-less object."""
  from data_pipeline import datasets, lrm_input
  from instant3d_jax.configs import lrm
  base, _, _ = scene
  c = lrm.get_config("tiny")
  c.data.source, c.data_dir = "records", str(base / "out_instant3d")
  c.model.input_resolution = 16
  c.train.global_batch_size = 2
  info = datasets.open_dataset(c.data_dir)
  assert info.input_views == "random"
  with pytest.raises(errors.DataError, match=r"holds objects without the Instant3D rig .*set "
                     r"data\.loader\.input_views='random'"):
    datasets.check_train(info, c)
  c.data.loader.input_views, c.data.loader.num_targets, c.model.num_views = "random", 4, 6
  extras = c.model.get("extras")
  (extras if extras is not None and "attention_bias" in extras else c.model.decoder
   ).attention_bias = False
  datasets.check_train(info, c)
  ld = datasets.loader_config(c, info)
  batch = next(lrm_input.train_iterator(c.data_dir, ld, process_index=0, process_count=1))
  assert batch["input_c2w"].shape == (2, 6, 4, 4)


def test_importer_command_counts_failures_on_its_last_line(scene, tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  base, truth, _ = scene
  c2w, K, imgs = truth["lshape"]
  write_instantmesh(str(tmp_path / "src" / "upside"), np.einsum("ij,vjk->vik", _rot_x(180), c2w),
                    K, imgs)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(PYTHONPATH=root, JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-m", "data_pipeline.importer", "--src",
                      str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--format",
                      "instantmesh", f"--fov={FOV}", "--split_fractions=1,0,0"],
                     capture_output=True, text=True, env=env, cwd=root, timeout=120)
  assert r.returncode == 0, r.stderr
  lines = r.stdout.strip().splitlines()
  print(r.stdout)
  assert "convention checks: 1 of 1 objects FAILED (image_up: 1)" in lines[0]
  assert lines[-1].endswith("1 rig-less; convention-check failures: 1")
  assert (tmp_path / "out" / "convention_failures.tsv").read_text().startswith("upside\timage_up\t")
