"""The cameras JSON file: posed views of one object (importer input, `reconstruct --cameras`).

Schema (version 1):

  {
    "version": 1,
    "convention": "opencv",          # or "blender": OpenGL camera axes (x right, y up, looking
                                     # along −z), as Blender's camera.matrix_world; converted to
                                     # OpenCV on load by flipping the camera y and z axes
    "width": 512, "height": 512,     # pixels, shared by all frames
    "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],   # optional default intrinsics (pixels,
                                     # pixel centres at +0.5) for frames without their own
    "fov_deg": 50.0,                 # optional alternative default: vertical FOV, centred
    "caption": "a red mug",          # optional
    "frames": [
      {"file": "rig_000.png",        # image path relative to the JSON file (RGBA PNG)
       "group": "rig",               # optional: rig | sup | eval | eval_inputs (default sup)
       "c2w": [[...], [...], [...], [0, 0, 0, 1]],  # 4×4 camera-to-world, world z-up
       "K": [[...]] or "fov_deg": 50.0},            # optional per-frame intrinsics
      ...
    ]
  }

World frame: z up, object centred at the origin and scaled into [-1, 1]³ (docs/design.md §3).
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from data_pipeline.records import GROUPS
from instant3d_jax.errors import DataError

VERSION = 1
CONVENTIONS = ("opencv", "blender")
# OpenGL/Blender camera axes (x right, y up, z backward) → OpenCV (x right, y down, z forward).
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0]).astype(np.float32)


def _require(obj: dict, key: str, where: str, path: str, expected: str):
  if key not in obj:
    raise DataError(f"{path}: {where} is missing the key {key!r} (expected {expected})")
  return obj[key]


def _positive_int(obj: dict, key: str, path: str, expected: str) -> int:
  value = _require(obj, key, "the file", path, expected)
  if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) \
      or value < 1:
    raise DataError(f"{path}: {key!r} must be a positive integer ({expected}), found {value!r}")
  return int(value)


def _fov_deg(value, what: str, path: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 180:
    raise DataError(f"{path}: {what} 'fov_deg' must be a number in (0, 180), found {value!r}")
  return float(value)


def _matrix(value, shape, what: str, path: str) -> np.ndarray:
  try:
    m = np.asarray(value, np.float32)
  except (TypeError, ValueError) as e:
    raise DataError(f"{path}: {what} must be a {shape[0]}x{shape[1]} numeric matrix ({e})") from e
  if m.shape != shape or not np.all(np.isfinite(m)):
    raise DataError(f"{path}: {what} must be a finite {shape[0]}x{shape[1]} matrix, found shape "
                    f"{m.shape}")
  return m


def _intrinsics(obj: dict, default, width: int, height: int, what: str, path: str):
  if "K" in obj:
    return _matrix(obj["K"], (3, 3), f"{what} K", path)
  if "fov_deg" in obj:
    fy = (height / 2.0) / np.tan(np.deg2rad(_fov_deg(obj["fov_deg"], what, path)) / 2.0)
    return np.array([[fy, 0, width / 2.0], [0, fy, height / 2.0], [0, 0, 1]], np.float32)
  return default


def read_cameras_json(path: str) -> tuple[dict, list[dict]]:
  """Parses and validates a cameras JSON → (header, frames).

  header: {width, height, caption, convention}; frames: [{file, group, c2w (OpenCV) [4, 4],
  K [3, 3]}] in file order. Errors name the file, the frame and the missing/bad key.
  """
  try:
    with open(path, encoding="utf-8") as f:
      doc = json.load(f)
  except FileNotFoundError:
    raise DataError(f"{path}: cameras JSON not found") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: not valid JSON ({e})") from e
  except OSError as e:
    raise DataError(f"{path}: cameras JSON cannot be read ({type(e).__name__}: {e})") from e
  if not isinstance(doc, dict):
    raise DataError(f"{path}: expected a JSON object with 'width', 'height' and 'frames', found "
                    f"{type(doc).__name__}")
  version = doc.get("version", VERSION)
  if version != VERSION:
    raise DataError(f"{path}: cameras JSON version {version!r} is not supported (expected {VERSION})")
  width = _positive_int(doc, "width", path, "image width in pixels")
  height = _positive_int(doc, "height", path, "image height in pixels")
  convention = doc.get("convention", "opencv")
  if convention not in CONVENTIONS:
    raise DataError(f"{path}: 'convention' must be one of {CONVENTIONS}, found {convention!r}")
  default_K = _intrinsics(doc, None, width, height, "the file's", path)
  frames_in = _require(doc, "frames", "the file", path, "a list of frames")
  if not isinstance(frames_in, list) or not frames_in:
    raise DataError(f"{path}: 'frames' must be a non-empty list")
  frames = []
  for i, fr in enumerate(frames_in):
    where = f"frame {i}"
    if not isinstance(fr, dict):
      raise DataError(f"{path}: {where} must be a JSON object with 'file' and 'c2w', found "
                      f"{type(fr).__name__}")
    file = _require(fr, "file", where, path, "the image file name")
    if not isinstance(file, str) or not file:
      raise DataError(f"{path}: {where} 'file' must be an image file name, found {file!r}")
    c2w = _matrix(_require(fr, "c2w", where, path, "a 4x4 camera-to-world matrix"), (4, 4),
                  f"{where} c2w", path)
    if convention == "blender":
      c2w = c2w @ _GL_TO_CV
    K = _intrinsics(fr, default_K, width, height, where, path)
    if K is None:
      raise DataError(f"{path}: {where} is missing the key 'K' (expected intrinsics: 'K' or "
                      "'fov_deg' in the frame or at the top level)")
    group = fr.get("group", "sup")
    if group not in GROUPS:
      raise DataError(f"{path}: {where} has group {group!r}; expected one of {GROUPS}")
    frames.append({"file": file, "group": group, "c2w": c2w, "K": K})
  header = {"width": width, "height": height, "caption": str(doc.get("caption", "")),
            "convention": convention}
  return header, frames


def load_cameras_json(path: str):
  """The cameras of a cameras JSON as one `instant3d_jax.cameras.Camera` of batch shape [V]
  (OpenCV convention, file order)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from instant3d_jax.cameras import Camera  # pylint: disable=g-import-not-at-top
  header, frames = read_cameras_json(path)
  return Camera(c2w=jnp.asarray(np.stack([f["c2w"] for f in frames])),
                K=jnp.asarray(np.stack([f["K"] for f in frames])),
                width=header["width"], height=header["height"])


def write_cameras_json(path: str, camera, files: Sequence[str] | None = None,
                       groups: Sequence[str] | None = None, caption: str = "",
                       convention: str = "opencv") -> None:
  """Writes `camera` (batch shape [V], OpenCV c2w) as a cameras JSON (temp name, then rename).

  `files` default to `view_000.png`, …; `convention="blender"` stores OpenGL-axis c2w matrices.
  """
  if convention not in CONVENTIONS:
    raise ValueError(f"convention must be one of {CONVENTIONS}, found {convention!r}")
  c2w = np.asarray(camera.c2w, np.float32).reshape(-1, 4, 4)
  K = np.asarray(camera.K, np.float32).reshape(-1, 3, 3)
  n = len(c2w)
  files = list(files) if files is not None else [f"view_{i:03d}.png" for i in range(n)]
  groups = list(groups) if groups is not None else ["sup"] * n
  if len(files) != n or len(groups) != n:
    raise ValueError(f"write_cameras_json: {n} cameras but {len(files)} files and {len(groups)} "
                     "groups")
  if convention == "blender":
    c2w = c2w @ _GL_TO_CV  # the flip is its own inverse
  doc = {"version": VERSION, "convention": convention, "width": int(camera.width),
         "height": int(camera.height), "caption": caption,
         "frames": [{"file": f, "group": g, "c2w": m.tolist(), "K": k.tolist()}
                    for f, g, m, k in zip(files, groups, c2w, K)]}
  tmp = path + ".tmp"
  with open(tmp, "w") as fh:
    json.dump(doc, fh, indent=1)
  os.replace(tmp, path)
