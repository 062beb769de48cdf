"""Imports real multi-view renders (object folders with a cameras.json) as a data set.

`import_renders(src, out_dir)` writes the records of `data_pipeline/records.py`; `object_record`
turns one object folder into one record and `write_object_folder` is its inverse. The command is
`python -m data_pipeline.importer` (data_pipeline/importer.py); the layout of the object folders
and a Blender command line that produces it: data_pipeline/README.md.

`src` holds one folder per object (the folder name becomes the object id), each with a
`cameras.json` (schema in `data_pipeline/cameras_json.py`) and the RGBA PNGs it lists. Every object
needs the 4 Instant3D rig views (group "rig", az 0/90/180/270 in that order); "sup" views are the
supervision pool; held-out objects evaluated on the GSO protocol also need "eval" (64) and
"eval_inputs" (4). All images of the data set must share one resolution.

Objects are assigned to train/val/test by a seeded permutation of the sorted folder names (so
folders sorted by category still give mixed splits); record `index` is the position in that
sorted list.
"""
from __future__ import annotations

import os
import time

import numpy as np

from data_pipeline import cameras_json, procedural, records
from instant3d_jax import errors

CAMERAS_FILE = "cameras.json"


def object_record(folder: str, index: int, split: str) -> tuple[bytes, int]:
  """One object folder → (record bytes, resolution). Errors name the file and the problem."""
  header, frames = cameras_json.read_cameras_json(os.path.join(folder, CAMERAS_FILE))
  W, H = header["width"], header["height"]
  by_group: dict[str, list[dict]] = {}
  for fr in frames:
    by_group.setdefault(fr["group"], []).append(fr)
  if len(by_group.get("rig", [])) != 4:
    raise errors.DataError(f"{os.path.join(folder, CAMERAS_FILE)}: needs exactly 4 frames of "
                           f"group 'rig' (the Instant3D input views), found "
                           f"{len(by_group.get('rig', []))}")
  groups = {}
  for name, frs in by_group.items():
    pngs = []
    for fr in frs:
      img_path = os.path.join(folder, fr["file"])
      try:
        with open(img_path, "rb") as f:
          data = f.read()
      except FileNotFoundError:
        raise errors.DataError(f"{img_path}: image listed in {CAMERAS_FILE} not found") from None
      except OSError as e:
        raise errors.DataError(f"{img_path}: image listed in {CAMERAS_FILE} cannot be read "
                               f"({type(e).__name__}: {e})") from e
      rgba = records.decode_png(data, img_path)
      if rgba.shape[:2] != (H, W):
        raise errors.DataError(f"{img_path}: image is {rgba.shape[1]}x{rgba.shape[0]} but "
                               f"{CAMERAS_FILE} says {W}x{H}")
      pngs.append(records.encode_png(rgba))  # normalised to 8-bit RGBA
    groups[name] = records.make_group(pngs, np.stack([f["c2w"] for f in frs]),
                                      np.stack([f["K"] for f in frs]), W, H)
  if W != H:
    raise errors.DataError(f"{folder}: views must be square for the LRM rig, found {W}x{H}")
  rec = records.encode_record(object_id=os.path.basename(os.path.normpath(folder)), index=index,
                              split=split, caption=header["caption"], groups=groups)
  return rec, W


def write_object_folder(rec: dict, folder: str, convention: str = "opencv") -> None:
  """The inverse of `object_record`: a record → an object folder (PNGs + cameras.json)."""
  from instant3d_jax.cameras import Camera  # pylint: disable=g-import-not-at-top
  os.makedirs(folder, exist_ok=True)
  files, groups, c2w, K, size = [], [], [], [], set()
  for g in records.GROUPS:
    grp = rec["groups"].get(g)
    if not grp:
      continue
    for v, png in enumerate(grp["images"]):
      name = f"{g}_{v:03d}.png"
      with open(os.path.join(folder, name), "wb") as f:
        f.write(png)
      files.append(name)
      groups.append(g)
    c2w.append(grp["c2w"])
    K.append(grp["K"])
    size.add((grp["width"], grp["height"]))
  (w, h), = size
  cam = Camera(c2w=np.concatenate(c2w), K=np.concatenate(K), width=w, height=h)
  cameras_json.write_cameras_json(os.path.join(folder, CAMERAS_FILE), cam, files, groups,
                                  caption=rec.get("caption", ""), convention=convention)


def import_renders(src: str, out_dir: str, *, split_fractions=(0.9, 0.05, 0.05), seed: int = 0,
                   records_per_shard: int = 500, progress: bool = True,
                   overwrite: bool = False) -> dict:
  """Imports every object folder under `src` into a data set at `out_dir`; returns metadata.

  A directory that already holds a data set (or shards of unknown origin) raises `DataError` and
  is left untouched unless `overwrite`; what an interrupted import left is replaced
  (`records.prepare_output_dir`). Other files in `out_dir` are never touched.
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(src):
    raise errors.DataError(f"{src}: source directory of object folders not found")
  if not isinstance(records_per_shard, (int, np.integer)) or records_per_shard < 1:
    raise errors.ConfigError(f"records_per_shard must be a positive integer, found "
                             f"{records_per_shard!r}")
  names = sorted(d for d in os.listdir(src) if os.path.isfile(os.path.join(src, d, CAMERAS_FILE)))
  if not names:
    raise errors.DataError(f"{src}: no object folders with a {CAMERAS_FILE} found")
  counts = procedural.split_counts(len(names), tuple(split_fractions))
  perm = np.random.default_rng(seed).permutation(len(names))
  bounds = np.cumsum([0] + [counts[s] for s in records.SPLITS])
  assignment = {s: sorted(perm[bounds[k]:bounds[k + 1]].tolist())
                for k, s in enumerate(records.SPLITS)}
  records.prepare_output_dir(out_dir, writer="data_pipeline.importer", overwrite=overwrite)
  resolutions: dict[int, str] = {}
  bar = tqdm(total=len(names), desc=f"importing {src}", unit="obj", disable=not progress)
  t0 = time.perf_counter()

  def recs(split):
    for i in assignment[split]:
      rec, res = object_record(os.path.join(src, names[i]), i, split)
      resolutions.setdefault(res, names[i])
      if len(resolutions) > 1:
        raise errors.DataError(f"{os.path.join(src, names[i])}: views are {res}² but "
                               f"{resolutions[next(iter(resolutions))]} has "
                               f"{next(iter(resolutions))}²; all objects must share a resolution")
      bar.update(1)
      yield rec

  splits = {}
  try:
    for split in records.SPLITS:
      n = len(assignment[split])
      shards = records.write_shards(out_dir, split, recs(split), n, records_per_shard)
      splits[split] = {"num_objects": n, "shards": shards,
                       "object_ids": [names[i] for i in assignment[split]]}
  finally:
    bar.close()
  meta = {"generator": "import", "source": os.path.abspath(src), "num_objects": len(names),
          "resolution": next(iter(resolutions)), "splits": splits,
          "config": {"seed": seed, "split_fractions": list(split_fractions),
                     "records_per_shard": records_per_shard},
          "generation_seconds": round(time.perf_counter() - t0, 2)}
  records.write_metadata(out_dir, meta)
  return records.read_metadata(out_dir)
