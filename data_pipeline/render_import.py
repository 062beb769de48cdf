"""Imports real multi-view renders (object folders with a cameras.json, or another render set's
layout: `format`, data_pipeline/render_formats.py) as a data set.

`import_renders(src, out_dir)` writes the records of `data_pipeline/records.py`; `object_record`
turns one object folder into one record and `write_object_folder` is its inverse. The command is
`python -m data_pipeline.importer` (data_pipeline/importer.py); the layout of the object folders
and a Blender command line that produces it: data_pipeline/README.md.

`src` holds one folder per object (the folder name becomes the object id), each with a
`cameras.json` (schema in `data_pipeline/cameras_json.py`) and the RGBA PNGs it lists. Every object
has the 4 Instant3D rig views (group "rig", az 0/90/180/270 in that order) or none (a rig-less
object: an empty 'rig' group, for `data.loader.input_views='random'`); "sup" views are the
supervision pool; held-out objects evaluated on the GSO protocol also need "eval" (64) and
"eval_inputs" (4). All images of the data set must share one resolution.

Objects are assigned to train/val/test by a seeded permutation of the sorted folder names (so
folders sorted by category still give mixed splits), or by a given split per object (`splits`,
the command's `--split_file`: a JSON object id → split name; `read_split_file`); record `index`
is the position in the sorted list of names either way.
"""
from __future__ import annotations

import json
import os
import time
from typing import Mapping

import numpy as np

from data_pipeline import cameras_json, convention_checks, procedural, records, render_formats
from instant3d_jax import errors
from instant3d_jax import fileio

CAMERAS_FILE = "cameras.json"


def views_record(views, index: int, split: str) -> bytes:
  """`render_formats.ObjectViews` → record bytes (its groups; an empty 'rig' when rig-less)."""
  W, H = views.width, views.height
  if W != H:
    raise errors.DataError(f"{views.object_id}: views must be square for the LRM rig, found "
                           f"{W}x{H}")
  groups = {}
  for name, idx in views.groups.items():
    if not idx and name != "rig":
      continue
    pngs = [records.encode_png(views.images[i]) for i in idx]  # normalised to 8-bit RGBA
    c2w = views.c2w[idx].astype(np.float32) if idx else np.zeros((0, 4, 4), np.float32)
    K = views.K[idx].astype(np.float32) if idx else np.zeros((0, 3, 3), np.float32)
    groups[name] = records.make_group(pngs, c2w, K, W, H)
  return records.encode_record(object_id=views.object_id, index=index, split=split,
                               caption=views.caption, groups=groups)


def object_record(folder: str, index: int, split: str) -> tuple[bytes, int]:
  """One object folder of the project's format → (record bytes, resolution). Errors name the
  file and the problem. An object with no 'rig' frames is rig-less (an empty 'rig' group)."""
  views = render_formats.read_object("instant3d", folder)
  return views_record(views, index, split), views.width


def check_views(views) -> tuple[list, dict]:
  """`convention_checks.check_object` on an `ObjectViews` (masks: alpha > 0.5)."""
  alphas = np.stack([im[..., 3] for im in views.images]).astype(np.float32) / 255.0
  return convention_checks.check_object(views.object_id, alphas, views.c2w, views.K, views.names)


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


FAILURES_FILE = "convention_failures.tsv"


def read_split_file(path: str) -> dict[str, str]:
  """A split file (local or gs://): a JSON object {object id: 'train' | 'val' | 'test'}; checked
  for its shape here, against the objects by `assign_splits`."""
  try:
    doc = json.loads(fileio.path(path).read_text("utf-8"))
  except FileNotFoundError:
    raise errors.InputError(f"{path}: split file not found") from None
  except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
    raise errors.InputError(f"{path}: split file is not readable JSON ({e})") from None
  if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
    raise errors.InputError(f"{path}: expected a JSON object {{object id: split name}} with split "
                            f"names among {list(records.SPLITS)}")
  return doc


def assign_splits(names: list[str], *, split_fractions=(0.9, 0.05, 0.05), seed: int = 0,
                  splits: Mapping[str, str] | None = None, what: str = "splits") -> dict:
  """{split: sorted positions in `names`} (`names` sorted: positions are record indices).

  Without `splits`: a seeded permutation of the positions, cut by `procedural.split_counts`.
  With `splits` ({object id: split name}, `what` names it in messages): exactly that; every
  object must be named, every name must be an object and every split one of `records.SPLITS`,
  else a one-line `InputError`."""
  if splits is None:
    counts = procedural.split_counts(len(names), tuple(split_fractions))
    perm = np.random.default_rng(seed).permutation(len(names))
    bounds = np.cumsum([0] + [counts[s] for s in records.SPLITS])
    return {s: sorted(perm[bounds[k]:bounds[k + 1]].tolist())
            for k, s in enumerate(records.SPLITS)}
  if not isinstance(splits, Mapping):
    raise errors.InputError(f"{what}: expected a mapping {{object id: split name}}, found "
                             f"{type(splits).__name__}")

  def few(xs):
    xs = sorted(map(str, xs))
    return ", ".join(repr(x) for x in xs[:5]) + (f" … ({len(xs)} in all)" if len(xs) > 5 else "")

  bad = {k: v for k, v in splits.items() if v not in records.SPLITS}
  if bad:
    k = sorted(bad, key=str)[0]
    raise errors.InputError(f"{what}: split names must be among {list(records.SPLITS)}, found "
                             f"{bad[k]!r} for {k!r}" + (f" and {len(bad) - 1} more" if len(bad) > 1
                                                        else ""))
  unknown = set(splits) - set(names)
  if unknown:
    raise errors.InputError(f"{what}: object ids not in the source: {few(unknown)}")
  unassigned = set(names) - set(splits)
  if unassigned:
    raise errors.InputError(f"{what}: objects of the source without a split: {few(unassigned)}")
  return {s: [i for i, n in enumerate(names) if splits[n] == s] for s in records.SPLITS}


def import_renders(src: str, out_dir: str, *, split_fractions=(0.9, 0.05, 0.05), seed: int = 0,
                   records_per_shard: int = 500, progress: bool = True,
                   overwrite: bool = False,
                   format: str = render_formats.DEFAULT_FORMAT,  # pylint: disable=redefined-builtin
                   fov_deg: float | None = None, scale: float | None = None,
                   rig_tolerance_deg: float = render_formats.RIG_TOLERANCE_DEG,
                   checks: bool | None = None,
                   splits: Mapping[str, str] | str | None = None) -> dict:
  """Imports every object folder under `src` (in `format`, `render_formats.FORMATS`) into a data
  set at `out_dir`; returns metadata.

  Splits: a seeded permutation (`seed`) of the sorted object ids cut by `split_fractions`, or,
  with `splits` ({object id: 'train' | 'val' | 'test'} naming every object, or the path of a JSON
  file holding one: `read_split_file`; `assign_splits` checks it, one-line `InputError`s),
  exactly those; `split_fractions` and `seed` are then unused. The metadata's
  `config.split_rule` says which ('seeded_permutation' or 'given'; `config.split_file` the file),
  `config.split_fractions` holds the fractions that resulted and `config.seed` is None for
  'given'; each split's `object_ids` list the assignment.

  `fov_deg` (degrees; required by 'instantmesh', overrides zero123's 35 mm lens) and `scale`
  (camera positions × scale; default per format) are passed to `render_formats.read_object`.
  With `checks` (None: on for every format but the project's own, whose writers already use
  the convention and whose procedural test sets are not normalised),
  `convention_checks.check_object` runs on every object; failures do not stop the import: they
  go to `out_dir/convention_failures.tsv` (object id, check, detail per line) and to
  the metadata's `convention_checks` ({checked, failed_objects, failures, file}). Objects without
  the Instant3D rig are listed in the metadata's `rigless_objects`, and `input_views` is 'random'
  (the loader mode they need, `data.loader.input_views`) when there is any, else 'rig'.

  A directory that already holds a data set (or shards of unknown origin) raises `DataError` and
  is left untouched unless `overwrite`; what an interrupted import left is replaced
  (`records.prepare_output_dir`). Other files in `out_dir` are never touched.
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  render_formats.check_format(format)
  if checks is None:
    checks = format != render_formats.DEFAULT_FORMAT
  if not os.path.isdir(src):
    raise errors.DataError(f"{src}: source directory of object folders not found")
  if not isinstance(records_per_shard, (int, np.integer)) or records_per_shard < 1:
    raise errors.ConfigError(f"records_per_shard must be a positive integer, found "
                             f"{records_per_shard!r}")
  if format == "instantmesh" and fov_deg is None:
    raise errors.ConfigError("--format instantmesh needs --fov (its renders carry no intrinsics "
                             "and mix 50° and 30°)")
  if format == render_formats.DEFAULT_FORMAT:
    names = sorted(d for d in os.listdir(src) if os.path.isfile(os.path.join(src, d,
                                                                             CAMERAS_FILE)))
    if not names:
      raise errors.DataError(f"{src}: no object folders with a {CAMERAS_FILE} found")
    folders = [os.path.join(src, n) for n in names]
  else:
    found = render_formats.list_objects(format, src)
    names, folders = [n for n, _ in found], [f for _, f in found]
  split_file = splits if isinstance(splits, str) else None
  if split_file is not None:
    splits = read_split_file(split_file)
  assignment = assign_splits(names, split_fractions=split_fractions, seed=seed, splits=splits,
                             what=split_file or "splits")
  if splits is not None:
    split_fractions = [round(len(assignment[s]) / len(names), 6) for s in records.SPLITS]
  records.prepare_output_dir(out_dir, writer="data_pipeline.importer", overwrite=overwrite)
  resolutions: dict[int, str] = {}
  failures: list = []
  rigless: list[str] = []
  bar = tqdm(total=len(names), desc=f"importing {src}", unit="obj", disable=not progress)
  t0 = time.perf_counter()

  def recs(split):
    for i in assignment[split]:
      views = render_formats.read_object(format, folders[i], names[i], fov_deg=fov_deg,
                                         scale=scale, rig_tolerance_deg=rig_tolerance_deg)
      res = views.width
      if views.width != views.height:
        raise errors.DataError(f"{folders[i]}: views must be square for the LRM rig, found "
                               f"{views.width}x{views.height}")
      resolutions.setdefault(res, names[i])
      if len(resolutions) > 1:
        raise errors.DataError(f"{folders[i]}: views are {res}² but "
                               f"{resolutions[next(iter(resolutions))]} has "
                               f"{next(iter(resolutions))}²; all objects must share a resolution")
      if not views.has_rig:
        rigless.append(names[i])
      if checks:
        failures.extend(check_views(views)[0])
      bar.update(1)
      yield views_record(views, i, split)

  split_meta = {}
  try:
    for split in records.SPLITS:
      n = len(assignment[split])
      shards = records.write_shards(out_dir, split, recs(split), n, records_per_shard)
      split_meta[split] = {"num_objects": n, "shards": shards,
                           "object_ids": [names[i] for i in assignment[split]]}
  finally:
    bar.close()
  meta = {"generator": "import", "format": format, "source": os.path.abspath(src),
          "num_objects": len(names), "resolution": next(iter(resolutions)), "splits": split_meta,
          "input_views": "random" if rigless else "rig", "rigless_objects": sorted(rigless),
          "config": {"split_rule": "seeded_permutation" if splits is None else "given",
                     "seed": seed if splits is None else None, "split_file": split_file,
                     "split_fractions": list(split_fractions),
                     "records_per_shard": records_per_shard, "fov_deg": fov_deg,
                     "scale": render_formats.DEFAULT_SCALE[format] if scale is None else scale,
                     "rig_tolerance_deg": rig_tolerance_deg},
          "generation_seconds": round(time.perf_counter() - t0, 2)}
  if checks:
    fileio.write_text(records.join(out_dir, FAILURES_FILE),  # local or gs://
                      "".join(x.line() + "\n" for x in failures))
    meta["convention_checks"] = {"checked": len(names),
                                 "failed_objects": len({x.object_id for x in failures}),
                                 "failures": len(failures), "file": FAILURES_FILE}
  records.write_metadata(out_dir, meta)
  return records.read_metadata(out_dir)


def check_summary(meta: dict, out_dir: str) -> str:
  """The importer's summary line of the convention checks (from the metadata)."""
  cc = meta.get("convention_checks")
  if not cc:
    return "convention checks: not run"
  if not cc["failed_objects"]:
    return f"convention checks: all {cc['checked']} objects pass (hull_iou, scale, image_up)"
  by_check: dict[str, int] = {}
  for line in fileio.path(records.join(out_dir, cc["file"])).read_text("utf-8").splitlines():
    parts = line.split("\t")
    if len(parts) >= 2:
      by_check[parts[1]] = by_check.get(parts[1], 0) + 1
  what = ", ".join(f"{k}: {v}" for k, v in sorted(by_check.items()))
  return (f"convention checks: {cc['failed_objects']} of {cc['checked']} objects FAILED ({what}); "
          f"see {records.join(out_dir, cc['file'])}")
