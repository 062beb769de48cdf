"""grain input pipeline for the reconstructor (LRM): posed input views + supervision views.

Training batches (numpy; `b = batch_size / process_count` rows on each process; V = 4 with
`input_views='rig'`, `num_input_views` with 'random'):

  input_images  [b, V, H, W, 3] float32 in [0, 1]   the input views over white
  input_c2w     [b, V, 4, 4]    float32             OpenCV camera-to-world
  input_K       [b, V, 3, 3]    float32             pixels (resized with the images)
  target_images [b, T, h, w, 3] float32 in [0, 1]   supervision views (crops) over white
  target_masks  [b, T, h, w]    float32 in [0, 1]   their alpha
  target_c2w    [b, T, 4, 4], target_K [b, T, 3, 3] intrinsics already moved/scaled for the
                                                    resize and the crop of each target
  object_index  [b]             int32               index of the object in the data set

  only with input_views='random':
  input_masks   [b, V, H, W]    float32 in [0, 1]   the inputs' alpha (to supervise them, below)
  input_views   [b, V] int32, target_views [b, T] int32   which views were drawn: positions in
                                                    the object's view list `all_views(rec)`
                                                    (its 'rig' views, then its 'sup' views)

Input views (`cfg.input_views`):

  'rig'     (default) the 4 Instant3D rig views (group 'rig', az 0/90/180/270, in that order);
            targets are `num_targets` views drawn from the 'sup' views (and the rig views too
            when `inputs_in_targets`), with replacement only when the pool is smaller.
  'random'  InstantMesh's sampling, for render sets without a fixed rig: each example draws
            `num_input_views` inputs (the model's `model.num_views`; `datasets.loader_config`
            fills it in) uniformly without replacement from ALL the object's views (rig and
            'sup' alike, `all_views`), in random order, and `num_targets` targets uniformly
            without replacement from the views that remain; inputs and targets are disjoint
            and `inputs_in_targets` is not used. An object with fewer than
            num_input_views + num_targets views raises `errors.DataError`. Each input's camera
            is the camera stored with its image. The inputs are not among `target_*`: the
            trainer supervises `target_*` only. InstantMesh supervises inputs and targets
            together; a trainer adds the inputs by rendering `input_c2w` / `input_K` as well
            and comparing with `input_images` and `input_masks` (whole views at the input
            resolution; or, where sizes agree, concatenating them to the targets along axis 1).
            The eval loader keeps its own rig either way.

The global batch of step s is a pure function of (seed, s): example positions s·B … s·B + B − 1
of an endless stream that visits the training split in a fresh permutation every epoch
(`np.random.default_rng([seed, epoch]).permutation(N)`); the random choices made for an example
(targets, crops, rig azimuth) come from `np.random.default_rng([seed, position, 1])`, and with
`input_views='random'` the drawn views from `np.random.default_rng([seed, position, 3])` (position
= epoch · N + index in the epoch's permutation, so the draw differs between examples and epochs
and is fixed by the seed). Process p of P
takes rows [p·B/P, (p+1)·B/P) of each global batch, so runs with 1 or N processes — or any
`worker_count` — see the same examples (the ShardByJaxProcess semantics, made exact by
construction). The iterator supports `get_state()` / `set_state()`; a restored iterator continues
with exactly the batches the original would have produced.

The evaluation loader (`eval_batches`) walks a held-out split in order on the GSO-style rig.

`cfg` below is a loader section; for a run, `data_pipeline.datasets.loader_config(config,
dataset)` derives it (global batch, resolutions, eval settings) from the run config and the data
set.
"""
from __future__ import annotations

from instant3d_jax import errors

import dataclasses
import functools
import sys
from typing import Iterator

import grain
import ml_collections
import numpy as np
from PIL import Image

from data_pipeline import records

# ------------------------------------------------------------------------------------------------
# Camera helpers (numpy mirrors of instant3d_jax.cameras.crop_camera / resize_camera, applied in
# worker processes where JAX is not wanted).


def _resize_K(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
  return K * np.array([[sx, 0, sx], [0, sy, sy], [0, 0, 1]], np.float32)


def _crop_K(K: np.ndarray, top: float, left: float) -> np.ndarray:
  K = K.copy()
  K[..., 0, 2] -= left
  K[..., 1, 2] -= top
  return K


def _rotate_z(c2w: np.ndarray, angle_deg: float) -> np.ndarray:
  """Rotates the world (hence every camera) by `angle_deg` about +z, as cameras.rotate_about_z."""
  a = np.deg2rad(angle_deg)
  R = np.eye(4, dtype=np.float32)
  R[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
  return np.einsum("ij,...jk->...ik", R, c2w).astype(np.float32)


def _decode_views(rec: dict, group: str, views, resolution: int):
  """Decoded views of one group → (rgb over white [V, r, r, 3], alpha [V, r, r], K [V, 3, 3])."""
  g = rec["groups"][group]
  K = np.asarray(g["K"], np.float32)[list(views)]
  out_rgb, out_a = [], []
  for v in views:
    rgba = records.decode_png(g["images"][v], f"{rec['object_id']}/{group}/{v}")
    if rgba.shape[:2] != (g["height"], g["width"]):
      raise errors.DataError(f"object {rec['object_id']}: image {group}/{v} is "
                             f"{rgba.shape[1]}x{rgba.shape[0]} but the record says "
                             f"{g['width']}x{g['height']}")
    if resolution and (resolution != g["width"] or resolution != g["height"]):
      # Resize the premultiplied colour and alpha by area averaging (BOX), so edges stay correct.
      f = rgba.astype(np.float32) / 255.0
      prem = np.concatenate([f[..., :3] * f[..., 3:], f[..., 3:]], -1)
      prem = np.stack([np.asarray(Image.fromarray(prem[..., c]).resize(
          (resolution, resolution), Image.BOX)) for c in range(4)], -1)
      rgb_over_white = prem[..., :3] + (1.0 - prem[..., 3:])
      alpha = prem[..., 3]
    else:
      f = rgba.astype(np.float32) / 255.0
      rgb_over_white = f[..., :3] * f[..., 3:] + (1.0 - f[..., 3:])
      alpha = f[..., 3]
    out_rgb.append(rgb_over_white)
    out_a.append(alpha)
  if resolution:
    K = _resize_K(K, resolution / g["width"], resolution / g["height"])
  return (np.clip(np.stack(out_rgb), 0, 1).astype(np.float32), np.stack(out_a).astype(np.float32),
          K)


# ------------------------------------------------------------------------------------------------
# Training pipeline.


@dataclasses.dataclass(frozen=True)
class GlobalOrder:
  """Which example sits at each position of the endless training stream (same on every process)."""
  num_examples: int
  seed: int

  def example(self, position: int) -> int:
    epoch, i = divmod(int(position), self.num_examples)
    return int(_permutation(self.seed, epoch, self.num_examples)[i])

  def global_batch(self, step: int, batch_size: int) -> list[int]:
    """Example indices of global batch `step` (what every process agrees on)."""
    return [self.example(step * batch_size + j) for j in range(batch_size)]


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n)


@dataclasses.dataclass(frozen=True)
class _LocalToPosition:
  """Local element k of process p → its position in the global stream."""
  global_batch: int
  process_index: int
  process_count: int

  def __call__(self, k: int) -> int:
    b = self.global_batch // self.process_count
    step, j = divmod(int(k), b)
    return step * self.global_batch + self.process_index * b + j


INPUT_VIEWS = ("rig", "random")   # values of the loader's `input_views`
POOL_GROUPS = ("rig", "sup")       # the groups 'random' draws from, in `all_views` order


def all_views(rec: dict) -> list[tuple[str, int]]:
  """The object's training views as (group, view) pairs: its 'rig' views, then its 'sup' views
  (what `input_views='random'` draws from; `input_views` / `target_views` index this list)."""
  return [(g, v) for g in POOL_GROUPS if g in rec["groups"]
          for v in range(len(rec["groups"][g]["images"]))]


def input_views_mode(cfg) -> str:
  mode = str(cfg.get("input_views", "rig"))
  if mode not in INPUT_VIEWS:
    raise errors.ConfigError(f"data.loader.input_views must be one of {INPUT_VIEWS}, found "
                             f"{mode!r}")
  return mode


def num_input_views(cfg) -> int:
  """The input views per example: 4 (the rig) for 'rig', `cfg.num_input_views` for 'random'."""
  if input_views_mode(cfg) == "rig":
    return 4
  v = int(cfg.get("num_input_views", 0) or 0)
  if v < 1:
    raise errors.ConfigError(
        "data.loader.input_views='random' needs data.loader.num_input_views ≥ 1 (a run's "
        "datasets.loader_config sets it from model.num_views), found "
        f"{cfg.get('num_input_views', None)!r}")
  return v


def _decode_list(rec: dict, views, resolution: int):
  """Views given as (group, view) pairs → (rgb [V, r, r, 3], alpha [V, r, r], K [V, 3, 3],
  c2w [V, 4, 4]), each camera the one stored with its image."""
  rgb, a, K, c2w = [], [], [], []
  for group, v in views:
    r, al, k = _decode_views(rec, group, [v], resolution)
    rgb.append(r[0]), a.append(al[0]), K.append(k[0])
    c2w.append(np.asarray(rec["groups"][group]["c2w"][v], np.float32))
  return tuple(np.stack(x).astype(np.float32) for x in (rgb, a, K, c2w))


class _LoadExample:
  """Stream position → one training example (decoded, cropped, cameras adjusted)."""

  def __init__(self, source: records.RecordSource, order: GlobalOrder, cfg: ml_collections.ConfigDict):
    self.source, self.order = source, order
    self.input_views = input_views_mode(cfg)
    self.num_input_views = num_input_views(cfg)
    self.num_targets = int(cfg.num_targets)
    self.input_resolution = int(cfg.input_resolution)
    self.target_resolution = int(cfg.target_resolution)
    self.crop_size = int(cfg.crop_size)
    self.inputs_in_targets = bool(cfg.inputs_in_targets)
    self.random_rig_azimuth = bool(cfg.random_rig_azimuth)
    self.seed = int(cfg.seed)

  def __call__(self, position: int) -> dict:
    index = self.order.example(position)
    rec = self.source[index]
    rng = np.random.default_rng([self.seed, int(position), 1])
    if self.input_views == "random":
      return self._random_views(rec, position, rng)
    groups = rec["groups"]
    rig = groups["rig"]
    if len(rig["images"]) != 4:
      raise errors.DataError(f"object {rec['object_id']}: expected 4 rig views, found "
                             f"{len(rig['images'])}")
    in_rgb, _, in_K = _decode_views(rec, "rig", range(4), self.input_resolution)
    in_c2w = np.asarray(rig["c2w"], np.float32)

    pool = [("sup", v) for v in range(len(groups["sup"]["images"]))] if "sup" in groups else []
    if self.inputs_in_targets:
      pool += [("rig", v) for v in range(4)]
    if not pool:
      raise errors.DataError(f"object {rec['object_id']}: no supervision views to draw targets "
                             "from (no 'sup' group and inputs_in_targets is False)")
    pick = rng.choice(len(pool), size=self.num_targets, replace=self.num_targets > len(pool))
    t_rgb, t_a, t_K, t_c2w = [], [], [], []
    for i in pick:
      group, v = pool[i]
      rgb, a, K = _decode_views(rec, group, [v], self.target_resolution)
      t_rgb.append(rgb[0]), t_a.append(a[0]), t_K.append(K[0])
      t_c2w.append(np.asarray(groups[group]["c2w"][v], np.float32))
    t_rgb, t_a, t_K, t_c2w = map(np.stack, (t_rgb, t_a, t_K, t_c2w))
    t_rgb, t_a, t_K = self._crop(rng, t_rgb, t_a, t_K)
    if self.random_rig_azimuth:
      angle = float(rng.uniform(0.0, 360.0))
      in_c2w, t_c2w = _rotate_z(in_c2w, angle), _rotate_z(t_c2w, angle)
    return {"input_images": in_rgb, "input_c2w": in_c2w, "input_K": in_K.astype(np.float32),
            "target_images": t_rgb, "target_masks": t_a, "target_c2w": t_c2w,
            "target_K": t_K.astype(np.float32), "object_index": np.int32(rec["index"])}

  def _crop(self, rng, t_rgb, t_a, t_K):
    """A random crop_size² window of each target (its intrinsics moved with it); draws from
    `rng` only when crop_size is set."""
    if self.crop_size:
      h, w = t_rgb.shape[1:3]
      c = self.crop_size
      if c > min(h, w):
        raise errors.ConfigError(f"loader.crop_size {c} exceeds the target views ({w}x{h})")
      tops = rng.integers(0, h - c + 1, size=len(t_rgb))
      lefts = rng.integers(0, w - c + 1, size=len(t_rgb))
      t_rgb = np.stack([im[y:y + c, x:x + c] for im, y, x in zip(t_rgb, tops, lefts)])
      t_a = np.stack([im[y:y + c, x:x + c] for im, y, x in zip(t_a, tops, lefts)])
      t_K = np.stack([_crop_K(k, y, x) for k, y, x in zip(t_K, tops, lefts)])
    return t_rgb, t_a, t_K

  def _random_views(self, rec: dict, position: int, rng) -> dict:
    """input_views='random': inputs and targets drawn from all the object's views (module
    docstring). The draw has its own stream ([seed, position, 3]); crops and the azimuth use
    `rng` as in 'rig' mode."""
    pool = all_views(rec)
    V, T = self.num_input_views, self.num_targets
    if len(pool) < V + T:
      have = ", ".join(f"{len(rec['groups'][g]['images'])} {g!r}" for g in POOL_GROUPS
                       if g in rec["groups"])
      raise errors.DataError(
          f"object {rec['object_id']}: data.loader.input_views='random' draws "
          f"num_input_views + num_targets = {V} + {T} = {V + T} distinct views, the object has "
          f"{len(pool)} ({have})")
    draw = np.random.default_rng([self.seed, int(position), 3]).choice(
        len(pool), size=V + T, replace=False)
    in_rgb, in_a, in_K, in_c2w = _decode_list(rec, [pool[i] for i in draw[:V]],
                                              self.input_resolution)
    t_rgb, t_a, t_K, t_c2w = _decode_list(rec, [pool[i] for i in draw[V:]],
                                          self.target_resolution)
    t_rgb, t_a, t_K = self._crop(rng, t_rgb, t_a, t_K)
    if self.random_rig_azimuth:
      angle = float(rng.uniform(0.0, 360.0))
      in_c2w, t_c2w = _rotate_z(in_c2w, angle), _rotate_z(t_c2w, angle)
    return {"input_images": in_rgb, "input_c2w": in_c2w, "input_K": in_K,
            "target_images": t_rgb, "target_masks": t_a, "target_c2w": t_c2w,
            "target_K": t_K.astype(np.float32), "object_index": np.int32(rec["index"]),
            "input_masks": in_a, "input_views": draw[:V].astype(np.int32),
            "target_views": draw[V:].astype(np.int32)}


def _process_defaults(process_index, process_count):
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  return int(process_index), int(process_count)


def train_dataset(data_dir: str, cfg: ml_collections.ConfigDict, *, split: str = "train",
                  process_index: int | None = None,
                  process_count: int | None = None) -> grain.IterDataset:
  """The endless training stream of per-process batches (see the module docstring).

  `cfg` is the `loader` sub-config of configs/data.py. `process_index`/`process_count` default
  to `jax.process_index()`/`jax.process_count()`.
  """
  p, P = _process_defaults(process_index, process_count)
  B = int(cfg.batch_size)
  if B % P:
    raise errors.ConfigError(f"loader.batch_size (global) {B} is not divisible by the process count {P}")
  if not 0 <= p < P:
    raise ValueError(f"process_index {p} outside [0, {P})")
  source = records.RecordSource(data_dir, split)
  if len(source) == 0:
    raise errors.DataError(f"{data_dir}: split {split!r} is empty")
  order = GlobalOrder(len(source), int(cfg.seed))
  b = B // P
  num_local = (sys.maxsize // B) * b  # endless for practical purposes
  ds = (grain.MapDataset.range(num_local)
        .map(_LocalToPosition(B, p, P))
        .map(_LoadExample(source, order, cfg))
        .batch(b))
  # grain reads ahead with a thread pool; its default (16 threads, 500 elements) would hold
  # hundreds of decoded batches in memory, so both are config knobs here.
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=int(cfg.read_threads),
                                            prefetch_buffer_size=int(cfg.prefetch_batches)))
  if int(cfg.worker_count) > 0:
    from absl import flags  # pylint: disable=g-import-not-at-top
    if not flags.FLAGS.is_parsed():
      # grain's worker processes read absl flags; outside an absl app (tests, notebooks) use their
      # defaults instead of failing with UnparsedFlagAccessError.
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=int(cfg.worker_count), per_worker_buffer_size=int(cfg.worker_buffer_size)))
  return it


def train_iterator(data_dir: str, cfg: ml_collections.ConfigDict, **kwargs):
  """`iter(train_dataset(...))`: a grain iterator with `get_state()` / `set_state()`."""
  return iter(train_dataset(data_dir, cfg, **kwargs))


# ------------------------------------------------------------------------------------------------
# Evaluation (GSO-style rig on a held-out split).


def eval_target_views(index: int, num_targets: int, seed: int) -> np.ndarray:
  """The eval-rig views scored for object `index`: `num_targets` of the 60 views that do not
  coincide with an input (elevation 20°, az 45/135/225/315 are inputs), fixed by (seed, index)."""
  from instant3d_jax import cameras as C  # pylint: disable=g-import-not-at-top
  n_az = C.GSO_NUM_AZIMUTHS
  el_row = C.GSO_ELEVATIONS.index(C.INSTANT3D_ELEVATION)
  inputs = {el_row * n_az + int(round(a / (360.0 / n_az))) for a in C.GSO_INPUT_AZIMUTHS}
  candidates = np.array([v for v in range(len(C.GSO_ELEVATIONS) * n_az) if v not in inputs])
  rng = np.random.default_rng([seed, int(index), 2])
  return np.sort(rng.choice(candidates, size=min(num_targets, len(candidates)), replace=False))


def eval_batches(data_dir: str, cfg: ml_collections.ConfigDict, *, split: str = "test",
                 rotate_deg: float = 0.0, max_objects: int | None = None,
                 process_index: int | None = None,
                 process_count: int | None = None) -> Iterator[dict]:
  """Deterministic evaluation batches of a held-out split, in object order.

  Inputs are the 4 GSO input views (elev 20°, az 45/135/225/315) and targets are
  `cfg.eval_num_targets` other views of the 64-view eval rig (full views, no crop). `rotate_deg`
  rotates every camera about z (−45° puts the GSO inputs on the Instant3D rig; cameras are
  relative to the object, so this is the same as turning the object by +45°).
  Every batch has `cfg.eval_batch_size` rows; the last is padded by repeating its final object and
  `valid [b] bool` marks real rows. With several processes, objects are split into contiguous
  blocks (process p gets block p) and each process pads to the same number of batches.
  """
  p, P = _process_defaults(process_index, process_count)
  source = records.RecordSource(data_dir, split)
  n = len(source) if max_objects is None else min(max_objects, len(source))
  per_proc = -(-n // P)
  mine = list(range(p * per_proc, min(n, (p + 1) * per_proc)))
  b = int(cfg.eval_batch_size)
  num_batches = -(-per_proc // b)
  res = int(cfg.target_resolution)
  for k in range(num_batches):
    rows = mine[k * b:(k + 1) * b]
    valid = [True] * len(rows) + [False] * (b - len(rows))
    rows = rows + [rows[-1] if rows else (mine[-1] if mine else 0)] * (b - len(rows))
    examples = []
    for i in rows:
      rec = source[i]
      for group, want in (("eval", 64), ("eval_inputs", 4)):
        have = len(rec["groups"][group]["images"]) if group in rec["groups"] else 0
        if have != want:
          raise errors.DataError(
              f"{data_dir}: object {rec['object_id']} of split {split!r} has {have} views of "
              f"group {group!r}, the GSO-style eval rig needs {want} (generate with this split "
              "in eval_rig_splits, or import the object with its eval views)")
      in_rgb, _, in_K = _decode_views(rec, "eval_inputs", range(4), int(cfg.input_resolution))
      views = eval_target_views(rec["index"], int(cfg.eval_num_targets), int(cfg.eval_seed))
      t_rgb, t_a, t_K = _decode_views(rec, "eval", views, res)
      in_c2w = np.asarray(rec["groups"]["eval_inputs"]["c2w"], np.float32)
      t_c2w = np.asarray(rec["groups"]["eval"]["c2w"], np.float32)[views]
      if rotate_deg:
        in_c2w, t_c2w = _rotate_z(in_c2w, rotate_deg), _rotate_z(t_c2w, rotate_deg)
      examples.append({"input_images": in_rgb, "input_c2w": in_c2w, "input_K": in_K,
                       "target_images": t_rgb, "target_masks": t_a, "target_c2w": t_c2w,
                       "target_K": t_K, "object_index": np.int32(rec["index"]),
                       "target_views": views.astype(np.int32)})
    batch = {key: np.stack([e[key] for e in examples]) for key in examples[0]}
    batch["valid"] = np.asarray(valid)
    yield batch


# ------------------------------------------------------------------------------------------------
# Batches → cameras.


def batch_to_cameras(batch: dict):
  """`(input_cameras, target_cameras)` as `instant3d_jax.cameras.Camera` pytrees.

  input: batch shape [b, V] at the input image size; target: [b, T] at the target crop size.
  """
  from instant3d_jax.cameras import Camera  # pylint: disable=g-import-not-at-top
  ih, iw = batch["input_images"].shape[-3:-1]
  th, tw = batch["target_images"].shape[-3:-1]
  return (Camera(c2w=batch["input_c2w"], K=batch["input_K"], width=int(iw), height=int(ih)),
          Camera(c2w=batch["target_c2w"], K=batch["target_K"], width=int(tw), height=int(th)))
