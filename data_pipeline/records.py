"""The on-disk format of multi-view data sets: ArrayRecord shards of one record per object.

A data set directory holds

  metadata.json                          written last (temp name → rename): its presence means
                                         the data set is complete
  <split>.array_record-00000-of-00003    shards, one record per object
  ...

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

import io
import json
import os
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

SCHEMA_VERSION = 1
METADATA_FILE = "metadata.json"
SPLITS = ("train", "val", "test")
GROUPS = ("rig", "sup", "eval", "eval_inputs")


class DataError(errors.Instant3DError, ValueError):
  """Bad data on disk or bad input files; the message names the file and the problem."""


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
  except Exception as e:  # PIL raises several types for corrupt data
    raise DataError(f"{name}: not a decodable PNG image ({type(e).__name__}: {e})") from e
  return np.asarray(img.convert("RGBA"))


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
  return rec


def group_rgba(rec: dict, group: str, views: Sequence[int] | None = None) -> np.ndarray:
  """Decoded images of a view group → uint8 `[V, H, W, 4]`."""
  g = rec["groups"][group]
  views = range(len(g["images"])) if views is None else views
  return np.stack([decode_png(g["images"][i], f"{rec['object_id']}/{group}/{i}") for i in views])


# ------------------------------------------------------------------------------------------------
# Shards.


def shard_name(split: str, shard: int, num_shards: int) -> str:
  return f"{split}.array_record-{shard:05d}-of-{num_shards:05d}"


def write_shards(out_dir: str, split: str, records: Iterable[bytes], num_records: int,
                 records_per_shard: int) -> list[str]:
  """Writes `num_records` records into ⌈n / records_per_shard⌉ shards; returns the file names.

  Each shard is written under a temporary name and renamed when closed, so an interrupted run
  never leaves a shard that looks complete.
  """
  from array_record.python import array_record_module  # heavy import, only when writing

  num_shards = max(1, -(-num_records // records_per_shard))
  names = [shard_name(split, s, num_shards) for s in range(num_shards)]
  it = iter(records)
  written = 0
  for s, name in enumerate(names):
    path = os.path.join(out_dir, name)
    tmp = path + ".tmp"
    # group_size:1 keeps random access to one record cheap (a record is a whole object).
    writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
    try:
      for _ in range(min(records_per_shard, num_records - written)):
        writer.write(next(it))
        written += 1
    except BaseException:
      writer.close()
      os.remove(tmp)  # nothing half-written is left behind
      raise
    writer.close()
    os.replace(tmp, path)
  return names


def _num_records(path: str) -> int:
  from array_record.python import array_record_module
  if not os.path.exists(path):
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
  path = os.path.join(out_dir, METADATA_FILE)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump({"schema_version": SCHEMA_VERSION, **meta}, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def read_metadata(data_dir: str) -> dict:
  path = os.path.join(data_dir, METADATA_FILE)
  if not os.path.exists(path):
    raise DataError(f"{data_dir}: no {METADATA_FILE}; not a data set directory, or its generation "
                    "did not finish (metadata is written last)")
  try:
    with open(path) as f:
      meta = json.load(f)
  except json.JSONDecodeError as e:
    raise DataError(f"{path}: not valid JSON ({e})") from e
  if meta.get("schema_version") != SCHEMA_VERSION:
    raise DataError(f"{path}: expected schema_version {SCHEMA_VERSION}, "
                    f"found {meta.get('schema_version')!r}")
  return meta


def split_paths(data_dir: str, split: str, *, check: bool = True) -> list[str]:
  """Shard paths of a split, validated against metadata.json (existence, format, record count)."""
  meta = read_metadata(data_dir)
  if split not in meta["splits"]:
    raise DataError(f"{data_dir}: no split {split!r}; the data set has {sorted(meta['splits'])}")
  info = meta["splits"][split]
  paths = [os.path.join(data_dir, n) for n in info["shards"]]
  if check:
    total = 0
    for p in paths:
      total += _num_records(p)
    if total != info["num_objects"]:
      raise DataError(f"{data_dir}: split {split!r} should hold {info['num_objects']} records "
                      f"({METADATA_FILE}) but its shards hold {total}")
  return paths


class RecordSource:
  """Random access to decoded records of one split (grain `RandomAccessDataSource` protocol).

  Wraps `grain.sources.ArrayRecordDataSource`; picklable, so grain worker processes can use it.
  """

  def __init__(self, data_dir: str, split: str):
    import grain  # pylint: disable=g-import-not-at-top
    self.data_dir, self.split = data_dir, split
    self.paths = split_paths(data_dir, split)
    self._source = grain.sources.ArrayRecordDataSource(self.paths)

  def __len__(self) -> int:
    return len(self._source)

  def raw(self, index: int) -> bytes:
    return self._source[index]

  def __getitem__(self, index: int) -> dict:
    return decode_record(self._source[index], f"{self.data_dir}:{self.split}[{index}]")

  def __iter__(self) -> Iterator[dict]:
    for i in range(len(self)):
      yield self[i]
