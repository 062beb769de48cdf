"""Captioned 2×2 grids of the four rig views: the stage-1 (text → four views) training data.

Instant3D's first stage paints the four rig views of an object as one image: top-left azimuth 0°,
top-right 90°, bottom-left 180°, bottom-right 270°, all at elevation 20° (docs/design.md §3,
docs/paper_facts.md §A). `tile_grid` / `untile_grid` convert between the views `[..., 4, R, R, C]`
in that order and the grid `[..., 2R, 2R, C]`.

`make_grid_loader` reads any records data set (procedural or imported, data_pipeline/records.py)
and yields batches

  grid       [b, 2R, 2R, 3] uint8    the rig views composited over white, tiled as above
  caption    [b]            str      the record's caption
  object_id  [b]            int32    the record's data set index (`records` "index")

The grid slot of each rig view is read from its camera (azimuth and elevation of the camera
centre, `rig_grid_order`), not from the order the views are stored in; a rig whose cameras are
not the Instant3D rig (within `RIG_TOLERANCE_DEG`) is a `DataError` naming the object.

Which objects: the split, optionally narrowed to an object list (a text file of record
object_ids, one per line, e.g. written by data_pipeline/curation.py, or a sequence of them) and
to one part of the caption-level held-out split (data_pipeline/captions.py: `heldout="train"`
keeps objects whose captions name no held-out (colour, shape) combination, `"heldout"` the
others; a `captions.CaptionSplit` picks another seed or size).

Order and resumption follow data_pipeline/lrm_input.py: the global batch of step s holds
positions s·B … s·B + B − 1 of a stream that visits the selected objects in a fresh permutation
each epoch (`np.random.default_rng([seed, epoch])`, identity order when `shuffle=False`);
process p of P takes rows [p·B/P, (p+1)·B/P) of each global batch. `num_epochs=None` is endless;
otherwise the stream ends after `num_epochs` passes (with one process the last batch may be
short; with several, an incomplete last global batch is dropped so every process takes the same
number of steps). The returned grain iterator has `get_state()` / `set_state()` (JSON-able; the
trainer's checkpoints store it, instant3d_jax/base/checkpoint.py).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import sys
from typing import Iterable, Sequence

import grain
import numpy as np

from data_pipeline import captions as captions_lib
from data_pipeline import lrm_input
from data_pipeline import records
from instant3d_jax import errors

# The grid's slots: azimuths (degrees) in tile order and the common elevation. They mirror
# instant3d_jax.cameras.INSTANT3D_AZIMUTHS / INSTANT3D_ELEVATION (tests/test_mv_grids.py checks
# they agree), kept here so grain worker processes need not import JAX.
GRID_AZIMUTHS = (0.0, 90.0, 180.0, 270.0)
GRID_ELEVATION = 20.0
RIG_TOLERANCE_DEG = 1.0


# ------------------------------------------------------------------------------------------------
# Tiling.


def tile_grid(views: np.ndarray) -> np.ndarray:
  """Views `[..., 4, R, R, C]` in slot order (az 0, 90, 180, 270) → grid `[..., 2R, 2R, C]`."""
  views = np.asarray(views)
  if views.ndim < 4 or views.shape[-4] != 4:
    raise errors.DataError(f"tile_grid: expected views [..., 4, R, R, C], found shape "
                           f"{list(views.shape)}")
  top = np.concatenate([views[..., 0, :, :, :], views[..., 1, :, :, :]], axis=-2)
  bottom = np.concatenate([views[..., 2, :, :, :], views[..., 3, :, :, :]], axis=-2)
  return np.concatenate([top, bottom], axis=-3)


def untile_grid(grid: np.ndarray) -> np.ndarray:
  """Grid `[..., 2R, 2R, C]` → views `[..., 4, R, R, C]` (top-left, top-right, bottom-left,
  bottom-right: az 0, 90, 180, 270)."""
  grid = np.asarray(grid)
  if grid.ndim < 3 or grid.shape[-3] % 2 or grid.shape[-2] % 2:
    raise errors.DataError(f"untile_grid: expected a grid [..., 2R, 2R, C] with even sides, "
                           f"found shape {list(grid.shape)}")
  h, w = grid.shape[-3] // 2, grid.shape[-2] // 2
  quads = [grid[..., :h, :w, :], grid[..., :h, w:, :], grid[..., h:, :w, :], grid[..., h:, w:, :]]
  return np.stack(quads, axis=-4)


# ------------------------------------------------------------------------------------------------
# Rig cameras → grid slots.


def camera_elevation_azimuth(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Numpy mirror of cameras.elevation_azimuth_distance: (elevation, azimuth in [0, 360)) deg."""
  p = np.asarray(c2w, np.float64)[..., :3, 3]
  d = np.linalg.norm(p, axis=-1)
  el = np.rad2deg(np.arcsin(np.clip(p[..., 2] / np.maximum(d, 1e-12), -1.0, 1.0)))
  az = np.mod(np.rad2deg(np.arctan2(p[..., 1], p[..., 0])), 360.0)
  return el, az


def rig_grid_order(c2w: np.ndarray, name: str = "rig",
                   tolerance_deg: float = RIG_TOLERANCE_DEG) -> list[int]:
  """Rig cameras `[4, 4, 4]` → the view index for each grid slot (az 0, 90, 180, 270).

  Raises `DataError` naming `name` when the cameras are not the Instant3D rig: four views at
  elevation 20° and azimuths 0/90/180/270° (any stored order), within `tolerance_deg`.
  """
  c2w = np.asarray(c2w)
  if c2w.shape != (4, 4, 4):
    raise errors.DataError(f"{name}: expected 4 rig cameras [4, 4, 4], found {list(c2w.shape)}")
  el, az = camera_elevation_azimuth(c2w)
  order = []
  for want in GRID_AZIMUTHS:
    diff = np.abs((az - want + 180.0) % 360.0 - 180.0)
    v = int(np.argmin(diff))
    if diff[v] > tolerance_deg or abs(el[v] - GRID_ELEVATION) > tolerance_deg:
      raise errors.DataError(
          f"{name}: the rig cameras are not the Instant3D rig (elevation {GRID_ELEVATION:g}°, "
          f"azimuths {'/'.join(f'{a:g}' for a in GRID_AZIMUTHS)}°): found elevations "
          f"{np.round(el, 2).tolist()} and azimuths {np.round(az, 2).tolist()}")
    order.append(v)
  return order


def grid_views(rec: dict, resolution: int = 0) -> np.ndarray:
  """A record's rig views over white, uint8 `[4, R, R, 3]` in grid slot order (from cameras)."""
  rig = rec["groups"]["rig"]
  name = f"object {rec['object_id']}"
  if len(rig["images"]) != 4:
    raise errors.DataError(f"{name}: expected 4 rig views, found {len(rig['images'])}")
  order = rig_grid_order(rig["c2w"], name)
  rgb, _, _ = lrm_input._decode_views(rec, "rig", order, int(resolution))  # pylint: disable=protected-access
  return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# Which objects.


def read_object_list(path: str) -> list[str]:
  """An object list file (one object_id per line; blank lines and '#' comments skipped)."""
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.read().splitlines()
  except OSError as e:
    raise errors.DataError(f"{path}: object list cannot be read ({type(e).__name__}: {e}); "
                           "expected a text file with one object id per line") from e
  return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def write_object_list(path: str, object_ids: Iterable[str], header: str = "") -> None:
  """Writes an object list file (temp name → rename), `header` as '#' comment lines."""
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    for line in header.splitlines():
      f.write(f"# {line}\n")
    for oid in object_ids:
      f.write(f"{oid}\n")
  os.replace(tmp, path)


def object_table(data_dir: str, split: str) -> list[tuple[int, str, str]]:
  """(data set index, object_id, caption) of every record of a split, in split order."""
  source = records.RecordSource(data_dir, split)
  out = []
  for i in range(len(source)):
    rec = source[i]
    out.append((int(rec["index"]), str(rec["object_id"]), str(rec["caption"])))
  return out


def select_objects(data_dir: str, split: str, *, object_list=None,
                   heldout=None) -> np.ndarray:
  """Positions in the split of the objects the loader visits (module docstring), ascending.

  An object list id that is in no split of the data set is a `DataError` (a typo or another
  data set's list); ids of other splits are skipped. An empty selection is a `DataError`.
  """
  if object_list is None and heldout is None:
    n = len(records.RecordSource(data_dir, split))
    if n == 0:
      raise errors.DataError(f"{data_dir}: split {split!r} is empty")
    return np.arange(n)
  splits = records.read_metadata(data_dir)["splits"]
  return select_from_table(
      object_table(data_dir, split), object_list=object_list, heldout=heldout,
      where=f"{data_dir}: split {split!r}",
      all_ids=lambda: {oid for s in splits for _, oid, _ in object_table(data_dir, s)})


def select_from_table(table: Sequence[tuple[int, str, str]], *, object_list, heldout, where: str,
                      all_ids) -> np.ndarray:
  """Positions in `table` ((index, object_id, caption) per split position) that `object_list` and
  `heldout` keep; `all_ids()` → every object_id of the data set (only called for ids not in the
  table)."""
  split_part = captions_lib.as_caption_split(heldout)
  mask = np.ones(len(table), bool)
  if object_list is not None:
    is_file = isinstance(object_list, (str, os.PathLike))
    ids = read_object_list(object_list) if is_file else [str(o) for o in object_list]
    wanted = set(ids)
    missing = wanted - {oid for _, oid, _ in table}
    if missing:
      missing -= all_ids()
    if missing:
      raise errors.DataError(
          f"{object_list if is_file else 'object_list'}: {len(missing)} object id(s) are in no "
          f"split of the data set (e.g. {sorted(missing)[:5]}); expected the data set's record "
          "object_ids")
    mask &= np.array([oid in wanted for _, oid, _ in table], bool)
  if split_part is not None:
    mask &= np.array([split_part.keeps(cap) for _, _, cap in table], bool)
  keep = np.flatnonzero(mask)
  if len(keep) == 0:
    raise errors.DataError(f"{where}: no objects are left to load (of {len(table)}; "
                           f"object_list={object_list!r}, heldout={heldout!r})")
  return keep


# ------------------------------------------------------------------------------------------------
# The grain pipeline.


@dataclasses.dataclass(frozen=True)
class _Order:
  """Stream position → split position (permuted per epoch, or in order)."""
  positions: tuple
  seed: int
  shuffle: bool

  def example(self, position: int) -> int:
    epoch, i = divmod(int(position), len(self.positions))
    if self.shuffle:
      i = int(_permutation(self.seed, epoch, len(self.positions))[i])
    return int(self.positions[i])


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n)


class _LoadGrid:
  """Stream position → {"grid", "caption", "object_id"} of one object."""

  def __init__(self, source: records.RecordSource, order: _Order, resolution: int):
    self.source, self.order, self.resolution = source, order, int(resolution)

  def __call__(self, position: int) -> dict:
    rec = self.source[self.order.example(position)]
    return {"grid": tile_grid(grid_views(rec, self.resolution)),
            "caption": np.asarray(str(rec["caption"])),
            "object_id": np.int32(rec["index"])}


def grid_dataset(data_dir: str, split: str, *, batch_size: int, seed: int, shuffle: bool = True,
                 num_epochs: int | None = None, object_list=None, heldout=None,
                 worker_count: int = 0, resolution: int = 0,
                 process_index: int | None = None, process_count: int | None = None,
                 read_threads: int = 2, prefetch_batches: int = 4,
                 worker_buffer_size: int = 2) -> grain.IterDataset:
  """The grain data set behind `make_grid_loader` (same arguments)."""
  positions = select_objects(data_dir, split, object_list=object_list, heldout=heldout)
  source = records.RecordSource(data_dir, split)
  return stream(positions, lambda order: _LoadGrid(source, order, resolution),
                batch_size=batch_size, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
                worker_count=worker_count, process_index=process_index,
                process_count=process_count, read_threads=read_threads,
                prefetch_batches=prefetch_batches, worker_buffer_size=worker_buffer_size)


def stream(positions: Sequence[int], make_load, *, batch_size: int, seed: int, shuffle: bool,
           num_epochs: int | None, worker_count: int, process_index: int | None,
           process_count: int | None, read_threads: int, prefetch_batches: int,
           worker_buffer_size: int) -> grain.IterDataset:
  """Batches of `make_load(order)(stream position)` over the split `positions` (module
  docstring: order, processes, epochs); shared with data_pipeline/mv_cache.py."""
  p, P = lrm_input._process_defaults(process_index, process_count)  # pylint: disable=protected-access
  B = int(batch_size)
  if B < 1 or B % P:
    raise errors.ConfigError(f"batch_size (global) {B} must be a positive multiple of the process "
                             f"count {P}")
  if not 0 <= p < P:
    raise errors.ConfigError(f"process_index {p} outside [0, {P})")
  if num_epochs is not None and int(num_epochs) < 1:
    raise errors.ConfigError(f"num_epochs must be None (endless) or ≥ 1, found {num_epochs}")
  order = _Order(tuple(int(x) for x in positions), int(seed), bool(shuffle))
  b = B // P
  if num_epochs is None:
    num_local = (sys.maxsize // B) * b
  else:
    total = int(num_epochs) * len(positions)
    num_local = total if P == 1 else (total // B) * b
  ds = (grain.MapDataset.range(num_local)
        .map(lrm_input._LocalToPosition(B, p, P))  # pylint: disable=protected-access
        .map(make_load(order))
        .batch(b, drop_remainder=False))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=int(read_threads),
                                            prefetch_buffer_size=int(prefetch_batches)))
  if int(worker_count) > 0:
    from absl import flags  # pylint: disable=g-import-not-at-top
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()  # as lrm_input.train_dataset: grain workers read absl flags
    it = it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=int(worker_count), per_worker_buffer_size=int(worker_buffer_size)))
  return it


def make_grid_loader(data_dir: str, split: str, *, batch_size: int, seed: int,
                     shuffle: bool = True, num_epochs: int | None = None,
                     object_list: str | Sequence[str] | None = None, heldout=None,
                     worker_count: int = 0, resolution: int = 0,
                     process_index: int | None = None, process_count: int | None = None,
                     read_threads: int = 2, prefetch_batches: int = 4,
                     worker_buffer_size: int = 2):
  """A grain iterator (`get_state()` / `set_state()`) of captioned grid batches.

  `batch_size` is the global batch (each of P processes gets batch_size / P rows;
  `process_index` / `process_count` default to JAX's). `object_list`: a file path or a sequence
  of object_ids. `heldout`: None, "train", "heldout" or a `captions.CaptionSplit`. `resolution`:
  0 keeps the stored view size, else views are area-resized to it first. `worker_count` grain
  processes decode in parallel (0: in this process); the batches are the same either way.
  See the module docstring for the batch keys, the order and resumption.
  """
  return iter(grid_dataset(data_dir, split, batch_size=batch_size, seed=seed, shuffle=shuffle,
                           num_epochs=num_epochs, object_list=object_list, heldout=heldout,
                           worker_count=worker_count, resolution=resolution,
                           process_index=process_index, process_count=process_count,
                           read_threads=read_threads, prefetch_batches=prefetch_batches,
                           worker_buffer_size=worker_buffer_size))
