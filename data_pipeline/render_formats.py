"""Readers for the multi-view render sets people already have → the project's camera convention.

Every reader returns one `ObjectViews` per object folder: decoded RGBA views, `c2w [V, 4, 4]` in
the project's convention (OpenCV camera axes: x right, y down, z forward; camera-to-world; world
z-up; the object in the box [-1, 1]³ around the origin; `instant3d_jax/cameras.py`), `K [V, 3, 3]`
in pixels (pixel centres at +0.5) and the view groups. The importer (`render_import.py`,
`python -m data_pipeline.importer --format F`) turns them into records.

Formats (`FORMATS`; SRC is the folder given as `--src`):

  instant3d   the project's own: SRC/<id>/cameras.json + PNGs (data_pipeline/cameras_json.py);
              its groups are kept as written.
  openlrm     SRC/<uid>/rgba/NNN.png, SRC/<uid>/pose/NNN.npy (3×4 CAMERA-TO-WORLD, Blender camera
              axes = OpenGL: x right, y up, z backward; world z-up), SRC/<uid>/intrinsics.npy
              (3×2 `[[fx, fy], [cx, cy], [W, H]]`, pixels). Objects already in [-1, 1]³: scale 1.
  zero123     (Objaverse-XL renders) SRC/<uid>/NNN.png (RGBA) + SRC/<uid>/NNN.npy (3×4
              WORLD-TO-CAMERA, Blender camera axes, world z-up). No intrinsics file: a 35 mm lens
              on a 32 mm sensor, FOV 2·atan(16/35) ≈ 49.13° (square images: horizontal =
              vertical). Objects in [-0.5, 0.5]³: scale 2.
  gobjaverse  SRC/<inst>/campos_512_v4/000NN/000NN.{png,json}; the JSON's `x`, `y`, `z` are the
              rotation COLUMNS of a camera-to-world with OpenCV axes, `origin` the camera centre,
              world z-up; `x_fov`, `y_fov` in radians. Objects in [-0.5, 0.5]³: scale 2 (not
              stated by the data set; inferred from the loaders of its users, which treat the
              renders as Objaverse objects normalised to the unit cube).
  instantmesh SRC/<uid>/NNN.png + SRC/<uid>/cameras.npz with `cam_poses [N, 3, 4]`. ASSUMED:
              WORLD-TO-CAMERA with Blender (OpenGL) camera axes and a z-up world, as zero123's
              renders that InstantMesh's Objaverse loader was written for, objects in [-1, 1]³
              (scale 1); no intrinsics in the data (its renders mix 50° and 30°): `fov_deg` (the
              command's `--fov`) is required. `convention_checks` catches a wrong guess.
  nerf        SRC/<id>/ (or SRC itself: one object named after SRC) in one of two layouts: one
              `transforms.json`, or NeRF-synthetic's split files `transforms_train.json`,
              `transforms_val.json`, `transforms_test.json` (those present, at least one; a folder
              holding both layouts is an error). Each file has `camera_angle_x` (HORIZONTAL FOV,
              radians; per file, so each frame gets its own file's) and `frames[i].transform_matrix`
              (4×4 OpenGL camera-to-world, world z-up, as Blender's NeRF scenes),
              `frames[i].file_path` (relative to the JSON, ".png" appended when it has no
              extension). Split files: the project splits data sets BY OBJECT (render_import), not
              by view, so the three files' frames are all views of the same object and are all
              kept: their union in the order train, val, test (each file's frame order),
              de-duplicated by normalised image path (a path listed twice must carry the same
              matrix and FOV, else a DataError). Scale 1.

Scale: a set whose objects live in [-s/2, s/2]³ is brought into [-1, 1]³ by multiplying the
CAMERA POSITIONS by 2/s (`scale`): the images do not change, and scaling every camera centre about
the origin by k is the same as scaling the object by k (rotations and intrinsics unchanged).
`scale=None` takes the format's default above; pass one to override it (`--scale`).

Every camera rotation read must be a rotation: orthonormal to `ROTATION_TOLERANCE` with
determinant +1. A reflection (a mirrored pose, det −1) or a non-orthonormal matrix raises a
one-line `errors.DataError` naming the object and the view.

Groups: every view is kept. When an object's views include the Instant3D rig (`find_rig`:
elevation 20°, azimuths 0/90/180/270, any distance, looking at the origin with no roll, each within
`RIG_TOLERANCE_DEG`), those 4 views are its 'rig' group (in azimuth order) and the others its
'sup' group; otherwise the object is rig-less: an empty 'rig' group, every view in 'sup', and the
data set needs `data.loader.input_views='random'` (data_pipeline/lrm_input.py; the importer writes
which objects into the metadata).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import re

import numpy as np

from data_pipeline import cameras_json, records
from instant3d_jax import errors

FORMATS = ("instant3d", "openlrm", "zero123", "gobjaverse", "instantmesh", "nerf")
DEFAULT_FORMAT = "instant3d"
DEFAULT_SCALE = {"instant3d": 1.0, "openlrm": 1.0, "zero123": 2.0, "gobjaverse": 2.0,
                 "instantmesh": 1.0, "nerf": 1.0}
ZERO123_FOV_DEG = float(np.rad2deg(2.0 * np.arctan(16.0 / 35.0)))   # 35 mm lens, 32 mm sensor
RIG_ELEVATION = 20.0
RIG_AZIMUTHS = (0.0, 90.0, 180.0, 270.0)
RIG_TOLERANCE_DEG = 2.0
ROTATION_TOLERANCE = 1e-3      # max |RᵀR − I| entry
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])   # c2w_cv = c2w_gl @ GL_TO_CV (its own inverse)
GOBJAVERSE_VIEWS = "campos_512_v4"
NERF_FILE = "transforms.json"
NERF_SPLIT_FILES = ("transforms_train.json", "transforms_val.json", "transforms_test.json")


@dataclasses.dataclass
class ObjectViews:
  """One object's views in the project's convention."""
  object_id: str
  images: list            # [H, W, 4] uint8 RGBA per view
  c2w: np.ndarray         # [V, 4, 4] float64, OpenCV axes, world z-up, object in [-1, 1]³
  K: np.ndarray           # [V, 3, 3] float64, pixels
  width: int
  height: int
  names: list             # per view: the file it came from (for messages)
  groups: dict            # group name → list of view indices (order within the group)
  caption: str = ""
  has_rig: bool = True


def list_objects(fmt: str, src: str) -> list[tuple[str, str]]:
  """The objects of `src` in format `fmt`: sorted `[(object_id, folder)]`."""
  check_format(fmt)
  if not os.path.isdir(src):
    raise errors.DataError(f"{src}: source directory of object folders not found")
  marker = {"instant3d": cameras_json_name(), "openlrm": "pose", "gobjaverse": GOBJAVERSE_VIEWS,
            "instantmesh": "cameras.npz"}
  if fmt == "nerf" and nerf_files(src):
    return [(os.path.basename(os.path.normpath(src)), src)]
  out = []
  for d in sorted(os.listdir(src)):
    folder = os.path.join(src, d)
    if not os.path.isdir(folder):
      continue
    if fmt == "zero123":
      if glob.glob(os.path.join(folder, "*.npy")):
        out.append((d, folder))
    elif fmt == "nerf":
      if nerf_files(folder):
        out.append((d, folder))
    elif os.path.exists(os.path.join(folder, marker[fmt])):
      out.append((d, folder))
  if not out:
    what = {"instant3d": "a cameras.json", "openlrm": "pose/ and rgba/", "zero123": "NNN.npy poses",
            "gobjaverse": f"{GOBJAVERSE_VIEWS}/", "instantmesh": "a cameras.npz",
            "nerf": f"a {NERF_FILE} or {'/'.join(NERF_SPLIT_FILES)}"}[fmt]
    raise errors.DataError(f"{src}: no object folders with {what} found (--format {fmt})")
  return out


def nerf_files(folder: str) -> list[str]:
  """The NeRF camera files of `folder`: [transforms.json], or the split files present (train,
  val, test order), or [] when it has none."""
  if os.path.isfile(os.path.join(folder, NERF_FILE)):
    return [NERF_FILE]
  return [f for f in NERF_SPLIT_FILES if os.path.isfile(os.path.join(folder, f))]


def cameras_json_name() -> str:
  return "cameras.json"


def check_format(fmt: str) -> None:
  if fmt not in FORMATS:
    raise errors.ConfigError(f"--format must be one of {', '.join(FORMATS)}, found {fmt!r}")


def read_object(fmt: str, folder: str, object_id: str | None = None, *,
                fov_deg: float | None = None, scale: float | None = None,
                rig_tolerance_deg: float = RIG_TOLERANCE_DEG) -> ObjectViews:
  """Reads one object folder of format `fmt` → `ObjectViews` (module docstring)."""
  check_format(fmt)
  object_id = object_id or os.path.basename(os.path.normpath(folder))
  if fmt == "instantmesh" and fov_deg is None:
    raise errors.ConfigError("--format instantmesh needs --fov (its renders carry no intrinsics "
                             "and mix 50° and 30°)")
  if fov_deg is not None and not 0 < float(fov_deg) < 180:
    raise errors.ConfigError(f"--fov must be in (0, 180) degrees, found {fov_deg!r}")
  scale = DEFAULT_SCALE[fmt] if scale is None else float(scale)
  if not scale > 0:
    raise errors.ConfigError(f"--scale must be positive, found {scale!r}")
  reader = {"instant3d": _read_instant3d, "openlrm": _read_openlrm, "zero123": _read_zero123,
            "gobjaverse": _read_gobjaverse, "instantmesh": _read_instantmesh,
            "nerf": _read_nerf}[fmt]
  views = reader(folder, object_id, fov_deg)
  if not views.images:
    raise errors.DataError(f"{object_id}: {folder} holds no views")
  sizes = {im.shape[:2] for im in views.images}
  if len(sizes) != 1:
    raise errors.DataError(f"{object_id}: views of different sizes {sorted(sizes)} in {folder}")
  (views.height, views.width), = sizes
  views.c2w = np.asarray(views.c2w, np.float64).copy()
  views.c2w[:, :3, 3] *= scale
  if views.groups is None:   # formats without groups: find the rig
    rig = find_rig(views.c2w, rig_tolerance_deg)
    rest = [i for i in range(len(views.images)) if rig is None or i not in rig]
    views.groups = {"rig": list(rig or []), "sup": rest}
  views.has_rig = len(views.groups.get("rig", [])) == 4
  return views


# ------------------------------------------------------------------------------------------------
# Shared pieces.


def check_rotation(R: np.ndarray, object_id: str, view: str) -> None:
  """`R` (3×3) is a rotation (orthonormal, det +1), else a one-line DataError."""
  R = np.asarray(R, np.float64)
  if not np.all(np.isfinite(R)):
    raise errors.DataError(f"{object_id}: view {view}: camera rotation is not finite")
  err = float(np.max(np.abs(R.T @ R - np.eye(3))))
  det = float(np.linalg.det(R))
  if err > ROTATION_TOLERANCE or det < 0:
    what = "a reflection (mirrored pose)" if det < 0 and err <= ROTATION_TOLERANCE else \
        "not orthonormal"
    raise errors.DataError(f"{object_id}: view {view}: camera rotation is {what}: det {det:+.4f}, "
                           f"max |RᵀR − I| {err:.1e} (rotation check: orthonormal with det +1)")


def find_rig(c2w: np.ndarray, tol_deg: float = RIG_TOLERANCE_DEG) -> list[int] | None:
  """Indices of the Instant3D rig among OpenCV `c2w [V, 4, 4]` (az 0/90/180/270 order), or None.

  A rig view sits at elevation 20° and the azimuth (any distance), looks at the origin and has
  no roll (its x axis horizontal), each within `tol_deg`; the closest candidate per azimuth wins.
  """
  c2w = np.asarray(c2w, np.float64)
  p = c2w[:, :3, 3]
  d = np.linalg.norm(p, axis=-1)
  ok = d > 1e-6
  dn = np.maximum(d, 1e-12)
  el = np.rad2deg(np.arcsin(np.clip(p[:, 2] / dn, -1, 1)))
  az = np.mod(np.rad2deg(np.arctan2(p[:, 1], p[:, 0])), 360.0)
  fwd = c2w[:, :3, 2] / np.linalg.norm(c2w[:, :3, 2], axis=-1, keepdims=True)
  look = np.rad2deg(np.arccos(np.clip(np.sum(fwd * (-p / dn[:, None]), -1), -1, 1)))
  roll = np.rad2deg(np.abs(np.arcsin(np.clip(c2w[:, 2, 0], -1, 1))))
  picks = []
  for target in RIG_AZIMUTHS:
    daz = np.abs((az - target + 180.0) % 360.0 - 180.0)
    err = np.maximum.reduce([np.abs(el - RIG_ELEVATION), daz, look, roll])
    err = np.where(ok, err, np.inf)
    i = int(np.argmin(err))
    if not err[i] <= tol_deg:
      return None
    picks.append(i)
  return picks if len(set(picks)) == 4 else None


def fov_intrinsics(fov_x_rad: float, fov_y_rad: float, width: int, height: int) -> np.ndarray:
  fx = (width / 2.0) / np.tan(fov_x_rad / 2.0)
  fy = (height / 2.0) / np.tan(fov_y_rad / 2.0)
  return np.array([[fx, 0, width / 2.0], [0, fy, height / 2.0], [0, 0, 1]], np.float64)


def _read_png(path: str, object_id: str) -> np.ndarray:
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise errors.DataError(f"{object_id}: image {path} not found") from None
  except OSError as e:
    raise errors.DataError(f"{object_id}: image {path} cannot be read ({type(e).__name__}: "
                           f"{e})") from e
  return records.decode_png(data, path)


def _load_npy(path: str, object_id: str, shape=None) -> np.ndarray:
  try:
    a = np.asarray(np.load(path, allow_pickle=False), np.float64)
  except FileNotFoundError:
    raise errors.DataError(f"{object_id}: {path} not found") from None
  except (OSError, ValueError) as e:
    raise errors.DataError(f"{object_id}: {path} is not a readable .npy array ({e})") from e
  if shape is not None and a.shape != shape:
    raise errors.DataError(f"{object_id}: {path} has shape {list(a.shape)}, expected "
                           f"{list(shape)}")
  return a


def _homogeneous(m34: np.ndarray) -> np.ndarray:
  m = np.eye(4)
  m[:3, :4] = m34[:3, :4]
  return m


def _numbered(folder: str, ext: str) -> list[str]:
  """Stems of `folder/*.ext` whose stem is a number, in numeric order."""
  stems = [os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(folder,
                                                                                   f"*.{ext}"))]
  return sorted((s for s in stems if re.fullmatch(r"\d+", s)), key=int)


def _square_fov_K(fov_deg: float, image: np.ndarray) -> np.ndarray:
  h, w = image.shape[:2]
  fov = np.deg2rad(fov_deg)
  return fov_intrinsics(fov, fov, w, h) if w == h else _vertical_fov_K(fov, w, h)


def _vertical_fov_K(fov_y: float, width: int, height: int) -> np.ndarray:
  f = (height / 2.0) / np.tan(fov_y / 2.0)
  return np.array([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1]], np.float64)


# ------------------------------------------------------------------------------------------------
# The readers: (folder, object_id, fov_deg) → ObjectViews with c2w in OpenCV axes, unscaled.


def _read_instant3d(folder, object_id, fov_deg):
  path = os.path.join(folder, cameras_json_name())
  header, frames = cameras_json.read_cameras_json(path)
  images, c2w, K, names, groups = [], [], [], [], {}
  for i, fr in enumerate(frames):
    check_rotation(fr["c2w"][:3, :3], object_id, fr["file"])
    img_path = os.path.join(folder, fr["file"])
    try:
      with open(img_path, "rb") as f:
        data = f.read()
    except FileNotFoundError:
      raise errors.DataError(f"{img_path}: image listed in {cameras_json_name()} not found") \
          from None
    except OSError as e:
      raise errors.DataError(f"{img_path}: image listed in {cameras_json_name()} cannot be read "
                             f"({type(e).__name__}: {e})") from e
    rgba = records.decode_png(data, img_path)
    if rgba.shape[:2] != (header["height"], header["width"]):
      raise errors.DataError(f"{img_path}: image is {rgba.shape[1]}x{rgba.shape[0]} but "
                             f"{cameras_json_name()} says {header['width']}x{header['height']}")
    images.append(rgba)
    c2w.append(fr["c2w"])
    K.append(fr["K"])
    names.append(fr["file"])
    groups.setdefault(fr["group"], []).append(i)
  n_rig = len(groups.get("rig", []))
  if n_rig not in (0, 4):
    raise errors.DataError(f"{path}: needs exactly 4 frames of group 'rig' (the Instant3D input "
                           f"views) or none (a rig-less object, for data.loader.input_views="
                           f"'random'), found {n_rig}")
  groups.setdefault("rig", [])
  return ObjectViews(object_id, images, np.stack(c2w), np.stack(K), 0, 0, names, groups,
                     caption=header["caption"])


def _read_openlrm(folder, object_id, fov_deg):
  stems = _numbered(os.path.join(folder, "pose"), "npy")
  if not stems:
    raise errors.DataError(f"{object_id}: no pose/NNN.npy files in {folder}")
  intr = _load_npy(os.path.join(folder, "intrinsics.npy"), object_id, (3, 2))
  (fx, fy), (cx, cy), (w, h) = intr
  K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64)
  images, c2w, names = [], [], []
  for s in stems:
    pose_path = os.path.join(folder, "pose", f"{s}.npy")
    P = _load_npy(pose_path, object_id, (3, 4))
    check_rotation(P[:, :3], object_id, f"pose/{s}.npy")
    img = _read_png(os.path.join(folder, "rgba", f"{s}.png"), object_id)
    if img.shape[:2] != (int(round(h)), int(round(w))):
      raise errors.DataError(f"{object_id}: rgba/{s}.png is {img.shape[1]}x{img.shape[0]} but "
                             f"intrinsics.npy says {w:g}x{h:g}")
    images.append(img)
    c2w.append(_homogeneous(P) @ GL_TO_CV)
    names.append(f"rgba/{s}.png")
  return ObjectViews(object_id, images, np.stack(c2w), np.stack([K] * len(images)), 0, 0, names,
                     None)


def _w2c_gl_views(folder, object_id, poses, stems, png_name, fov_deg, pose_name):
  images, c2w, K, names = [], [], [], []
  for s, P in zip(stems, poses):
    check_rotation(P[:3, :3], object_id, pose_name(s))
    img = _read_png(os.path.join(folder, png_name(s)), object_id)
    images.append(img)
    c2w.append(np.linalg.inv(_homogeneous(P)) @ GL_TO_CV)
    K.append(_square_fov_K(fov_deg, img))
    names.append(png_name(s))
  return ObjectViews(object_id, images, np.stack(c2w), np.stack(K), 0, 0, names, None)


def _read_zero123(folder, object_id, fov_deg):
  stems = _numbered(folder, "npy")
  if not stems:
    raise errors.DataError(f"{object_id}: no NNN.npy poses in {folder}")
  poses = [_load_npy(os.path.join(folder, f"{s}.npy"), object_id, (3, 4)) for s in stems]
  return _w2c_gl_views(folder, object_id, poses, stems, lambda s: f"{s}.png",
                       ZERO123_FOV_DEG if fov_deg is None else fov_deg, lambda s: f"{s}.npy")


def _read_instantmesh(folder, object_id, fov_deg):
  path = os.path.join(folder, "cameras.npz")
  try:
    with np.load(path, allow_pickle=False) as z:
      poses = np.asarray(z["cam_poses"], np.float64)
  except KeyError:
    raise errors.DataError(f"{object_id}: {path} has no 'cam_poses' array") from None
  except (OSError, ValueError) as e:
    raise errors.DataError(f"{object_id}: {path} is not a readable .npz ({e})") from e
  if poses.ndim != 3 or poses.shape[1:] not in ((3, 4), (4, 4)):
    raise errors.DataError(f"{object_id}: {path} 'cam_poses' has shape {list(poses.shape)}, "
                           "expected [N, 3, 4]")
  stems = _numbered(folder, "png")
  if len(stems) != len(poses):
    raise errors.DataError(f"{object_id}: {path} has {len(poses)} cam_poses but {folder} holds "
                           f"{len(stems)} NNN.png views")
  return _w2c_gl_views(folder, object_id, poses, stems, lambda s: f"{s}.png", fov_deg,
                       lambda s: f"cameras.npz cam_poses[{int(s)}]")


def _read_json(path: str, object_id: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      doc = json.load(f)
  except FileNotFoundError:
    raise errors.DataError(f"{object_id}: {path} not found") from None
  except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
    raise errors.DataError(f"{object_id}: {path} is not readable JSON ({e})") from e
  if not isinstance(doc, dict):
    raise errors.DataError(f"{object_id}: {path}: expected a JSON object")
  return doc


def _keys(doc: dict, keys, path: str, object_id: str):
  missing = [k for k in keys if k not in doc]
  if missing:
    raise errors.DataError(f"{object_id}: {path} lacks {missing}")
  try:
    return [np.asarray(doc[k], np.float64) for k in keys]
  except (TypeError, ValueError) as e:
    raise errors.DataError(f"{object_id}: {path}: {keys} must be numbers ({e})") from e


def _read_gobjaverse(folder, object_id, fov_deg):
  root = os.path.join(folder, GOBJAVERSE_VIEWS)
  stems = sorted((d for d in os.listdir(root) if re.fullmatch(r"\d+", d)), key=int)
  if not stems:
    raise errors.DataError(f"{object_id}: no numbered view folders in {root}")
  images, c2w, K, names = [], [], [], []
  for s in stems:
    path = os.path.join(root, s, f"{s}.json")
    x, y, z, o, fx, fy = _keys(_read_json(path, object_id),
                               ("x", "y", "z", "origin", "x_fov", "y_fov"), path, object_id)
    if any(v.shape != (3,) for v in (x, y, z, o)):
      raise errors.DataError(f"{object_id}: {path}: x, y, z and origin must be 3-vectors")
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, o
    check_rotation(m[:3, :3], object_id, f"{s}/{s}.json")
    img = _read_png(os.path.join(root, s, f"{s}.png"), object_id)
    images.append(img)
    c2w.append(m)
    K.append(fov_intrinsics(float(fx), float(fy), img.shape[1], img.shape[0]))
    names.append(f"{GOBJAVERSE_VIEWS}/{s}/{s}.png")
  return ObjectViews(object_id, images, np.stack(c2w), np.stack(K), 0, 0, names, None)


def _nerf_frames(path: str, object_id: str) -> list[tuple[str, np.ndarray, float, str]]:
  """One NeRF camera file → [(image name relative to its folder, 4×4 OpenGL c2w, horizontal FOV
  in radians, label for messages)]; a malformed file is a one-line DataError naming it."""
  doc = _read_json(path, object_id)
  frames = doc.get("frames")
  if not isinstance(frames, list) or not frames:
    raise errors.DataError(f"{object_id}: {path}: expected a non-empty 'frames' list of "
                           "{file_path, transform_matrix}")
  fov = doc.get("camera_angle_x")
  if isinstance(fov, bool) or not isinstance(fov, (int, float)) or not 0 < fov < np.pi:
    raise errors.DataError(f"{object_id}: {path}: expected 'camera_angle_x', the horizontal FOV "
                           f"in radians in (0, pi), found {fov!r}")
  out = []
  base = os.path.basename(path)
  for i, fr in enumerate(frames):
    if not isinstance(fr, dict) or not isinstance(fr.get("file_path"), str) or \
        "transform_matrix" not in fr:
      raise errors.DataError(f"{object_id}: {path} frame {i}: expected an object with "
                             "'file_path' (a string) and 'transform_matrix' (4x4)")
    try:
      m = np.asarray(fr["transform_matrix"], np.float64)
    except (TypeError, ValueError):
      m = None
    if m is None or m.shape not in ((4, 4), (3, 4)) or not np.all(np.isfinite(m)):
      raise errors.DataError(f"{object_id}: {path} frame {i}: expected 'transform_matrix' a "
                             "finite 4x4 matrix of numbers, found "
                             f"{'shape ' + str(list(m.shape)) if m is not None else 'non-numbers'}")
    name = fr["file_path"]
    if not os.path.splitext(name)[1]:
      name += ".png"
    out.append((os.path.normpath(name), _homogeneous(m), float(fov), f"{base} frame {i} ({name})"))
  return out


def _read_nerf(folder, object_id, fov_deg):
  files = nerf_files(folder)
  if not files:
    raise errors.DataError(f"{object_id}: {folder} has no {NERF_FILE} or "
                           f"{'/'.join(NERF_SPLIT_FILES)}")
  if files == [NERF_FILE]:
    both = [f for f in NERF_SPLIT_FILES if os.path.isfile(os.path.join(folder, f))]
    if both:
      raise errors.DataError(f"{object_id}: {folder} holds both {NERF_FILE} and {', '.join(both)}; "
                             "expected one layout (remove one)")
  seen: dict[str, tuple] = {}
  views = []
  for fname in files:
    path = os.path.join(folder, fname)
    for name, m, fov_x, label in _nerf_frames(path, object_id):
      if name in seen:
        m0, fov0, label0 = seen[name]
        if not (np.allclose(m, m0, atol=1e-6) and abs(fov_x - fov0) <= 1e-9):
          raise errors.DataError(f"{object_id}: {path}: {label} lists the image of {label0} with "
                                 "another camera; expected one camera per image")
        continue
      seen[name] = (m, fov_x, label)
      views.append((name, m, fov_x, label))
  images, c2w, K, names = [], [], [], []
  for name, m, fov_x, label in views:
    check_rotation(m[:3, :3], object_id, label)
    img = _read_png(os.path.join(folder, name), object_id)
    h, w = img.shape[:2]
    fx = (w / 2.0) / np.tan(fov_x / 2.0)
    K.append(np.array([[fx, 0, w / 2.0], [0, fx, h / 2.0], [0, 0, 1]], np.float64))
    images.append(img)
    c2w.append(m @ GL_TO_CV)
    names.append(name)
  return ObjectViews(object_id, images, np.stack(c2w), np.stack(K), 0, 0, names, None)
