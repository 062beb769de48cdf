"""The on-disk format of multi-view data sets: ArrayRecord shards of one record per object.

A data set directory holds

  metadata.json                          written last (temp name → rename): its presence means
                                         the data set is complete
  <split>.array_record-00000-of-00003    shards, one record per object
  ...
  in_progress.json                       only while a writer runs (or after it was interrupted)

`DIR` may be a local directory or a bucket prefix (`gs://bucket/data`). On a bucket, shards are
read by ArrayRecord's own GCS client (riegeli's `GcsReader`: ranged reads, nothing staged to disk;
credentials from the environment as for any Google client, `CLOUD_STORAGE_EMULATOR_ENDPOINT`
points it at an emulator), while metadata.json, in_progress.json and listings go through
`instant3d_jax.fileio` (etils/fsspec). ArrayRecord writes local files only: a shard is written
into a local temporary directory and uploaded when it is complete (one all-or-nothing object), and
metadata.json is uploaded last, so a data set in a bucket is complete or has no metadata.json.

Writers never replace what is there unless asked: `prepare_output_dir` refuses a directory that
holds a data set (metadata.json) or shards of unknown origin, except with `overwrite=True`;
shards left by an interrupted writer (in_progress.json present, no metadata.json) are replaced.

Record (schema version `SCHEMA_VERSION`), a msgpack map (flax.serialization, numpy-aware):

  object_id: str        unique id ("obj000042" for synthetic objects, the folder name on import)
  index:     int        position of the object in the whole data set (all splits)
  split:     str        "train" | "val" | "test"
  caption:   str        English description ("" when unknown)
  scene:     str        JSON of the generating primitives (synthetic only, else "")
  groups:    {name: {images: [PNG bytes, …] RGBA 8-bit, c2w: float32 [V, 4, 4] (OpenCV, world
              z-up), K: float32 [V, 3, 3] (pixels, centres at +0.5), width: int, height: int}}

View groups: "rig" (the 4 Instant3D input views, az 0/90/180/270, always present), "sup"
(random supervision views), and for held-out splits "eval" (64 GSO-style views, elevation-major)
and "eval_inputs" (4 GSO inputs at az 45/135/225/315).
"""
from __future__ import annotations

from instant3d_jax import errors
from instant3d_jax import fileio
from instant3d_jax.errors import DataError  # also records.DataError, the old path

import bisect
import io
import json
import os
import shutil
import tempfile
import time
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

SCHEMA_VERSION = 1
METADATA_FILE = "metadata.json"
# Written before the first shard and removed after metadata.json: marks the shards of an
# unfinished write as the writer's own (the next run may replace them without --overwrite).
IN_PROGRESS_FILE = "in_progress.json"
SHARD_MARK = ".array_record-"  # in every shard file name (and its temporary name)
SPLITS = ("train", "val", "test")
GROUPS = ("rig", "sup", "eval", "eval_inputs")


# ------------------------------------------------------------------------------------------------
# Images.


def encode_png(rgba: np.ndarray, compress_level: int = 1) -> bytes:
  """`[H, W, 4]` (or `[H, W, 3]`) uint8, or float in [0, 1] → PNG bytes."""
  if rgba.dtype != np.uint8:
    rgba = np.clip(np.round(rgba * 255.0), 0, 255).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(rgba).save(buf, format="PNG", compress_level=compress_level)
  return buf.getvalue()


def decode_png(data: bytes, name: str = "<png>") -> np.ndarray:
  """PNG bytes → RGBA uint8 `[H, W, 4]` (RGB images get alpha 255)."""
  try:
    img = Image.open(io.BytesIO(data))
    img.load()
    return np.asarray(img.convert("RGBA"))
  except Exception as e:  # PIL raises several types for corrupt data
    raise DataError(f"{name}: not a decodable PNG image ({type(e).__name__}: {e})") from e


# ------------------------------------------------------------------------------------------------
# Records.


def make_group(images: Sequence[bytes], c2w: np.ndarray, K: np.ndarray, width: int,
               height: int) -> dict:
  c2w = np.asarray(c2w, np.float32)
  K = np.asarray(K, np.float32)
  if c2w.shape != (len(images), 4, 4) or K.shape != (len(images), 3, 3):
    raise ValueError(f"view group: expected c2w [{len(images)}, 4, 4] and K [{len(images)}, 3, 3] "
                     f"for {len(images)} images, found {c2w.shape} and {K.shape}")
  return {"images": list(images), "c2w": c2w, "K": K, "width": int(width), "height": int(height)}


def encode_record(*, object_id: str, index: int, split: str, caption: str, groups: dict,
                  scene: str = "") -> bytes:
  if split not in SPLITS:
    raise ValueError(f"record {object_id}: split must be one of {SPLITS}, found {split!r}")
  unknown = set(groups) - set(GROUPS)
  if unknown or "rig" not in groups:
    raise ValueError(f"record {object_id}: view groups must include 'rig' and be among {GROUPS}, "
                     f"found {sorted(groups)}")
  rec = {"schema_version": SCHEMA_VERSION, "object_id": object_id, "index": int(index),
         "split": split, "caption": caption, "scene": scene, "groups": groups}
  from flax import serialization  # pylint: disable=g-import-not-at-top  (numpy-aware msgpack)
  return serialization.msgpack_serialize(rec)


def decode_record(data: bytes, name: str = "<record>") -> dict:
  from flax import serialization  # pylint: disable=g-import-not-at-top
  try:
    rec = serialization.msgpack_restore(data)
  except Exception as e:
    raise DataError(f"{name}: record is not a valid msgpack object ({type(e).__name__}: {e})") from e
  if not isinstance(rec, dict) or rec.get("schema_version") != SCHEMA_VERSION:
    found = rec.get("schema_version") if isinstance(rec, dict) else type(rec).__name__
    raise DataError(f"{name}: expected a record of schema version {SCHEMA_VERSION}, found {found!r}")
  _check_record(rec, name)
  return rec


def _check_record(rec: dict, name: str) -> None:
  """The record's keys and view groups have the schema's types and shapes (module docstring)."""
  missing = [k for k in ("object_id", "index", "split", "caption", "groups") if k not in rec]
  if missing:
    raise DataError(f"{name}: record lacks {missing} (expected object_id, index, split, caption, "
                    "groups)")
  groups = rec["groups"]
  if not isinstance(groups, dict) or "rig" not in groups:
    found = sorted(groups) if isinstance(groups, dict) else type(groups).__name__
    raise DataError(f"{name}: record 'groups' must map view group names (with 'rig') to views, "
                    f"found {found}")
  for g, grp in groups.items():
    try:
      n = len(grp["images"])
      shapes = (np.shape(grp["c2w"]), np.shape(grp["K"]))
      int(grp["width"]), int(grp["height"])
    except Exception as e:  # a missing key or a value of the wrong type
      raise DataError(f"{name}: view group {g!r} must hold images, c2w, K, width and height "
                      f"({type(e).__name__}: {e})") from e
    if shapes != ((n, 4, 4), (n, 3, 3)):
      raise DataError(f"{name}: view group {g!r} has {n} images, expected c2w [{n}, 4, 4] and K "
                      f"[{n}, 3, 3], found {list(shapes[0])} and {list(shapes[1])}")


def group_rgba(rec: dict, group: str, views: Sequence[int] | None = None) -> np.ndarray:
  """Decoded images of a view group → uint8 `[V, H, W, 4]`."""
  g = rec["groups"][group]
  views = range(len(g["images"])) if views is None else views
  return np.stack([decode_png(g["images"][i], f"{rec['object_id']}/{group}/{i}") for i in views])


# ------------------------------------------------------------------------------------------------
# Shards.


def prepare_output_dir(out_dir: str, *, writer: str, overwrite: bool = False) -> None:
  """Makes `out_dir` ready for a new data set without deleting anything it was not asked to.

  Refuses (`DataError`, nothing touched) a directory that holds a complete data set
  (metadata.json) or shards of unknown origin, unless `overwrite`. Shards left by an interrupted
  writer (in_progress.json, no metadata.json) are removed. Then writes in_progress.json (naming
  `writer`), removes the data set files there (metadata.json first, so the directory never looks
  complete meanwhile) and leaves every other file alone.
  """
  out = fileio.path(out_dir)
  if out.exists() and not out.is_dir():
    raise DataError(f"{out_dir}: output directory is an existing file; choose a directory")
  fileio.makedirs(out_dir)
  names = sorted(p.name for p in out.iterdir()) if out.exists() else []
  shards = [n for n in names if SHARD_MARK in n]
  if not overwrite:
    if METADATA_FILE in names:
      try:
        meta = read_metadata(out_dir)
        what = f"{meta.get('generator', '?')}, {meta.get('num_objects', '?')} objects"
      except DataError:
        what = f"an unreadable {METADATA_FILE}"
      raise DataError(f"{out_dir}: already holds a data set ({what}); pass --overwrite "
                      "(overwrite=True) to replace it, or choose another directory")
    if shards and IN_PROGRESS_FILE not in names:
      raise DataError(f"{out_dir}: holds data set shards ({shards[0]}"
                      f"{f' and {len(shards) - 1} more' if len(shards) > 1 else ''}) but no "
                      f"{METADATA_FILE}, and no unfinished run of this project wrote them; pass "
                      "--overwrite (overwrite=True) to replace them, or choose another directory")
  fileio.write_text(join(out_dir, IN_PROGRESS_FILE), json.dumps(
      {"writer": writer, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
  for name in [METADATA_FILE, METADATA_FILE + ".tmp"] + shards:
    if name in names:
      fileio.path(join(out_dir, name)).unlink(missing_ok=True)


def join(data_dir: str, name: str) -> str:
  """`data_dir/name` as a string, local or `gs://` (what the ArrayRecord reader is handed)."""
  data_dir = os.fspath(data_dir)
  if fileio.is_remote(data_dir):
    return data_dir.rstrip("/") + "/" + name
  return os.path.join(data_dir, name)


def shard_name(split: str, shard: int, num_shards: int) -> str:
  return f"{split}.array_record-{shard:05d}-of-{num_shards:05d}"


def write_shards(out_dir: str, split: str, records: Iterable[bytes], num_records: int,
                 records_per_shard: int) -> list[str]:
  """Writes `num_records` records into ⌈n / records_per_shard⌉ shards; returns the file names.

  Each shard is written under a temporary name and renamed when closed, so an interrupted run
  never leaves a shard that looks complete. On a bucket (`gs://…`) each shard is written into a
  local temporary directory (ArrayRecord writes local files only) and uploaded once closed: one
  object upload, complete or absent; the local copy is removed after the upload (at most one
  shard's worth of local disk).
  """
  from array_record.python import array_record_module  # heavy import, only when writing

  if not isinstance(records_per_shard, (int, np.integer)) or records_per_shard < 1:
    raise errors.ConfigError(f"records_per_shard must be a positive integer, found "
                             f"{records_per_shard!r}")
  num_shards = max(1, -(-num_records // records_per_shard))
  names = [shard_name(split, s, num_shards) for s in range(num_shards)]
  it = iter(records)
  written = 0
  remote = fileio.is_remote(out_dir)
  stage = tempfile.mkdtemp(prefix="instant3d_shards_") if remote else None
  try:
    for name in names:
      path = os.path.join(stage, name) if remote else os.path.join(out_dir, name)
      written = _write_shard(array_record_module, path, it, written,
                             min(records_per_shard, num_records - written))
      if remote:
        fileio.copy_file(path, join(out_dir, name))
        os.remove(path)
  finally:
    if stage is not None:
      shutil.rmtree(stage, ignore_errors=True)
  return names


def _write_shard(array_record_module, path: str, it: Iterator[bytes], written: int,
                 count: int) -> int:
  """Writes the next `count` records of `it` into the local file `path` (temporary name, then
  rename); returns the running count of records written."""
  tmp = path + ".tmp"
  # group_size:1 keeps random access to one record cheap (a record is a whole object).
  writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
  try:
    for _ in range(count):
      writer.write(next(it))
      written += 1
  except BaseException:
    writer.close()
    os.remove(tmp)  # nothing half-written is left behind
    raise
  writer.close()
  os.replace(tmp, path)
  return written


def _num_records(path: str) -> int:
  from array_record.python import array_record_module
  if not fileio.path(path).exists():
    raise DataError(f"{path}: shard listed in {METADATA_FILE} does not exist")
  try:
    reader = array_record_module.ArrayRecordReader(path)
    n = reader.num_records()
    reader.close()
  except Exception as e:  # the C++ reader raises RuntimeError/ValueError with its own text
    raise DataError(f"{path}: not a readable ArrayRecord file (truncated or another format?): "
                    f"{type(e).__name__}: {e}") from e
  return n


def write_metadata(out_dir: str, meta: dict) -> None:
  """Writes metadata.json (temp name → rename), which completes the data set, then removes the
  in-progress marker of `prepare_output_dir`."""
  fileio.write_text(join(out_dir, METADATA_FILE),
                    json.dumps({"schema_version": SCHEMA_VERSION, **meta}, indent=2,
                               sort_keys=True))
  fileio.path(join(out_dir, IN_PROGRESS_FILE)).unlink(missing_ok=True)


def read_metadata(data_dir: str) -> dict:
  path = join(data_dir, METADATA_FILE)
  if not fileio.path(path).exists():
    raise DataError(f"{data_dir}: no {METADATA_FILE}; not a data set directory, or its generation "
                    "did not finish (metadata is written last)")
  try:
    meta = json.loads(fileio.path(path).read_bytes().decode("utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: not valid JSON ({e})") from e
  except OSError as e:
    raise DataError(f"{path}: cannot be read ({type(e).__name__}: {e})") from e
  if not isinstance(meta, dict):
    raise DataError(f"{path}: expected a JSON object (the data set's metadata), found "
                    f"{type(meta).__name__}")
  if meta.get("schema_version") != SCHEMA_VERSION:
    raise DataError(f"{path}: expected schema_version {SCHEMA_VERSION}, "
                    f"found {meta.get('schema_version')!r}")
  splits = meta.get("splits")
  if not isinstance(splits, dict):
    raise DataError(f"{path}: expected a 'splits' map (split name → shards and num_objects), "
                    f"found {type(splits).__name__}")
  for name, info in splits.items():
    ok = (isinstance(info, dict) and isinstance(info.get("shards"), list)
          and all(isinstance(n, str) for n in info["shards"])
          and isinstance(info.get("num_objects"), int) and info["num_objects"] >= 0)
    if not ok:
      raise DataError(f"{path}: split {name!r} needs 'shards' (a list of file names) and "
                      f"'num_objects' (an integer ≥ 0), found {json.dumps(info)[:200]}")
  return meta


def split_paths(data_dir: str, split: str, *, check: bool = True) -> list[str]:
  """Shard paths of a split, validated against metadata.json (existence, format, record count)."""
  if check:
    return _split_shards(data_dir, split)[0]
  return [join(data_dir, n) for n in _split_info(data_dir, split)["shards"]]


def _split_info(data_dir: str, split: str) -> dict:
  meta = read_metadata(data_dir)
  if split not in meta["splits"]:
    raise DataError(f"{data_dir}: no split {split!r}; the data set has {sorted(meta['splits'])}")
  return meta["splits"][split]


def _split_shards(data_dir: str, split: str) -> tuple[list[str], list[int]]:
  """(shard paths, records per shard) of a split, checked against metadata.json."""
  info = _split_info(data_dir, split)
  paths = [join(data_dir, n) for n in info["shards"]]
  counts = [_num_records(p) for p in paths]
  if sum(counts) != info["num_objects"]:
    raise DataError(f"{data_dir}: split {split!r} should hold {info['num_objects']} records "
                    f"({METADATA_FILE}) but its shards hold {sum(counts)}")
  return paths, counts


class RecordSource:
  """Random access to decoded records of one split (grain `RandomAccessDataSource` protocol).

  Wraps `grain.sources.ArrayRecordDataSource`; picklable, so grain worker processes can use it.
  Every read error is a `DataError` naming the shard file, the record's position in it and in
  the split: a damaged shard (e.g. a chunk hash mismatch) or a record that is not of the schema.
  """

  def __init__(self, data_dir: str, split: str):
    import grain  # pylint: disable=g-import-not-at-top
    self.data_dir, self.split = data_dir, split
    self.paths, counts = _split_shards(data_dir, split)
    self._starts = np.cumsum([0] + counts[:-1]).tolist()  # first split index of each shard
    self._len = int(sum(counts))
    try:
      self._source = grain.sources.ArrayRecordDataSource(self.paths)
    except Exception as e:  # the readers open the files: same faults as in _num_records
      raise DataError(f"{data_dir}: shards of split {split!r} cannot be opened "
                      f"({type(e).__name__}: {e})") from e

  def __len__(self) -> int:
    return self._len

  def where(self, index: int) -> str:
    """'<shard path>: record k of the shard (record index of split s)' for messages."""
    shard = bisect.bisect_right(self._starts, index) - 1
    return (f"{self.paths[shard]}: record {index - self._starts[shard]} of the shard "
            f"(record {index} of split {self.split!r})")

  def raw(self, index: int) -> bytes:
    index = int(index)
    if not 0 <= index < self._len:
      raise IndexError(f"{self.data_dir}: record {index} outside split {self.split!r} "
                       f"[0, {self._len})")
    try:
      return self._source[index]
    except Exception as e:  # riegeli's RuntimeError ("chunk data hash mismatch", …) and kin
      raise DataError(f"{self.where(index)} cannot be read: expected an intact ArrayRecord "
                      f"record, found {type(e).__name__}: {e}; the shard is damaged, write the "
                      "data set again") from e

  def __getitem__(self, index: int) -> dict:
    return decode_record(self.raw(index), self.where(int(index)))

  def __iter__(self) -> Iterator[dict]:
    for i in range(len(self)):
      yield self[i]
