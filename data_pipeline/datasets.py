"""Which data set a run reads, what it holds, whether the run can use it, and the loader settings.

A run config names its data with `data_dir` (a local directory or a bucket prefix, `gs://…`:
records.py says how each is read) and `data.source`:

  'procedural'  the built-in world (`data_pipeline/procedural.py`): generated into `data_dir` from
                the `data` section unless a complete copy with the same generation config is
                there (`procedural.ensure_dataset`); the tiny/demo default.
  'records'     an existing data set in the records format (`data_pipeline/records.py`), e.g.
                real renders imported with `python -m data_pipeline.importer`, or a procedural
                set generated earlier. Nothing is generated or rewritten.

Shapes (resolution, views per group) come from the data set (`records.read_metadata`, and the
first record of a split where the metadata does not list its groups), never from the generator
section of the config. `check_train` / `check_eval` compare them with what the model, loader and
evaluation protocol need and raise one error naming the config field that differs.
`loader_config` is the one place the loader's fields are derived from a run config (global batch
from `train`, input resolution from `model`, target resolution from the data set, eval settings
from `eval`).

Data code: this module reads configs and records; it imports no model code.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import ml_collections

from data_pipeline import records
from instant3d_jax import errors
from instant3d_jax import fileio

SOURCES = ("procedural", "records")
RIG_VIEWS = 4            # the Instant3D rig (records.py: group "rig")
EVAL_VIEWS = 64          # the GSO-style rig: 4 elevations × 16 azimuths (group "eval")
EVAL_INPUT_VIEWS = 4     # its inputs at azimuths 45/135/225/315 (group "eval_inputs")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a data set holds.

  data_dir: its directory; generator: who wrote it ('synthetic', 'import', …);
  resolution: the side of every stored (square) view; splits: {split: objects};
  groups: {split: {view group: views per object}} (of the split's objects as the metadata lists
  them, else of its first object; empty splits have no entry); input_views: the loader mode its
  objects need, from the metadata ('random' when the importer found objects without the
  Instant3D rig, listed in its `rigless_objects`; else 'rig').
  """
  data_dir: str
  generator: str
  resolution: int
  splits: Mapping[str, int]
  groups: Mapping[str, Mapping[str, int]]
  input_views: str = "rig"


def _source(config) -> str:
  source = str(config.data.get("source", "procedural"))
  if source not in SOURCES:
    raise errors.ConfigError(f"data.source must be one of {SOURCES}, found {source!r}")
  return source


def open_dataset(data_dir: str | os.PathLike) -> DatasetInfo:
  """Reads the metadata (and validates every shard against it) → `DatasetInfo`."""
  data_dir = str(data_dir)
  meta = records.read_metadata(data_dir)
  splits, groups = {}, {}
  views = meta.get("views") or {}
  for split, info in meta["splits"].items():
    records.split_paths(data_dir, split)      # shards exist, are readable, counts agree
    n = int(info["num_objects"])
    splits[split] = n
    if not n:
      continue
    if "groups" in info and all(g in views for g in info["groups"]):
      groups[split] = {g: int(views[g]) for g in info["groups"]}
    else:  # e.g. the importer's metadata: read the split's first object
      rec = records.RecordSource(data_dir, split)[0]
      groups[split] = {g: len(v["images"]) for g, v in rec["groups"].items()}
  if "resolution" not in meta:
    raise errors.DataError(f"{records.join(data_dir, records.METADATA_FILE)}: no 'resolution' "
                           "(the side of the stored square views)")
  return DatasetInfo(data_dir=data_dir, generator=str(meta.get("generator", "?")),
                     resolution=int(meta["resolution"]), splits=splits, groups=groups,
                     input_views=str(meta.get("input_views", "rig")))


def planned(config) -> DatasetInfo:
  """The `DatasetInfo` the procedural `data` section describes, without writing anything (AOT
  planning, benchmarks on random batches)."""
  from data_pipeline import procedural  # pylint: disable=g-import-not-at-top
  d = config.data
  counts = procedural.split_counts(int(d.num_objects), tuple(d.split_fractions))
  groups = {}
  for split, n in counts.items():
    if not n:
      continue
    g = {"rig": RIG_VIEWS}
    if int(d.num_sup_views) > 0:
      g["sup"] = int(d.num_sup_views)
    if split in tuple(d.eval_rig_splits):
      g.update(eval=EVAL_VIEWS, eval_inputs=EVAL_INPUT_VIEWS)
    groups[split] = g
  return DatasetInfo(data_dir=str(config.data_dir), generator=procedural.GENERATOR,
                     resolution=int(d.resolution), splits=counts, groups=groups)


def prepare(config, *, progress: bool = True) -> DatasetInfo:
  """The run's data set, ready to read: generated first when `data.source` is 'procedural' and
  it is not there yet (process 0 writes, the others wait), opened as is for 'records'."""
  source = _source(config)
  data_dir = str(config.data_dir)
  meta_path = fileio.path(records.join(data_dir, records.METADATA_FILE))
  if source == "procedural":
    from data_pipeline import procedural  # pylint: disable=g-import-not-at-top
    if meta_path.exists():
      generator = records.read_metadata(data_dir).get("generator")
      if generator != procedural.GENERATOR:
        raise errors.DataError(
            f"data_dir {data_dir} holds a data set written by {generator!r}, not the procedural "
            "generator (data.source='procedural'); set --config.data.source='records' to train "
            "on it as it is")
    import jax  # pylint: disable=g-import-not-at-top
    multi = jax.process_count() > 1
    if not multi or jax.process_index() == 0:
      try:
        procedural.ensure_dataset(config.data, data_dir, progress=progress)
      except errors.DataError as e:
        if not meta_path.exists():
          raise
        raise errors.DataError(f"{e} (or set --config.data.source='records' to read the data "
                               "set there as it is)") from e
    if multi:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices("data ready")
  elif not meta_path.exists():
    raise errors.DataError(
        f"data_dir {data_dir}: no data set there (no {records.METADATA_FILE}); "
        "data.source='records' reads an existing one (write it with python -m "
        "data_pipeline.importer --src RENDERS --out DIR, or set data.source='procedural')")
  return open_dataset(data_dir)


def loader_config(config, dataset: DatasetInfo, *, purpose: str = "train"
                  ) -> ml_collections.ConfigDict:
  """The loader section (`data_pipeline/lrm_input.py`) of a run: `config.data.loader` with the
  fields that follow from elsewhere filled in —

    batch_size         train.global_batch_size (global; each process reads its share)
    input_resolution   model.input_resolution
    num_input_views    model.num_views (`input_views='random'`; 'rig' has its 4 views). A
                       non-zero data.loader.num_input_views that differs raises `ConfigError`
    target_resolution  data.loader.target_resolution, 0 → the data set's resolution
                       (`purpose='eval'`: always the data set's resolution, full views)
    eval_num_targets, eval_seed, eval_batch_size   eval.num_targets, eval.seed, eval.batch_size
  """
  if purpose not in ("train", "eval"):
    raise ValueError(f"loader_config: purpose must be 'train' or 'eval', found {purpose!r}")
  ld = config.data.loader.copy_and_resolve_references()
  ld.unlock()
  ld.batch_size = int(config.train.global_batch_size)
  ld.input_resolution = int(config.model.input_resolution)
  num_views = int(config.model.num_views)
  asked = int(ld.get("num_input_views", 0) or 0)
  if asked and asked != num_views:
    raise errors.ConfigError(f"data.loader.num_input_views={asked} but model.num_views="
                             f"{num_views} (leave it 0: it follows model.num_views)")
  ld.num_input_views = num_views
  ld.target_resolution = int(ld.target_resolution or 0) or int(dataset.resolution)
  if purpose == "eval":
    ld.target_resolution = int(dataset.resolution)
  ev = config.get("eval")
  if ev is not None:
    ld.eval_num_targets = int(ev.num_targets)
    ld.eval_seed = int(ev.seed)
    ld.eval_batch_size = int(ev.batch_size)
  return ld


def check_train(dataset: DatasetInfo, config) -> None:
  """Raises `DataError` / `ConfigError` naming the field when the run cannot train on `dataset`."""
  where = f"data set {dataset.data_dir}"
  n = dataset.splits.get("train", 0)
  if not n:
    raise errors.DataError(f"{where}: split 'train' holds no objects (splits: "
                           f"{dict(dataset.splits)})")
  g = dataset.groups["train"]
  ld = loader_config(config, dataset)
  from data_pipeline import lrm_input  # pylint: disable=g-import-not-at-top
  num_views = int(config.model.num_views)
  if lrm_input.input_views_mode(ld) == "random":
    # The views of the split's objects as the metadata (or its first object) lists them; the
    # loader checks every object it reads again.
    have = sum(g.get(name, 0) for name in lrm_input.POOL_GROUPS)
    need = num_views + int(ld.num_targets)
    if have < need:
      raise errors.DataError(
          f"{where}: data.loader.input_views='random' draws model.num_views + "
          f"data.loader.num_targets = {num_views} + {int(ld.num_targets)} = {need} distinct "
          f"views per object, training objects have {have} ('rig' and 'sup': {dict(g)})")
    for section in ("extras", "decoder"):   # model.extras, or model.decoder in older configs
      sec = config.model.get(section)
      if sec is not None and bool(sec.get("attention_bias", False)):
        raise errors.ConfigError(
            f"model.{section}.attention_bias ties the model to the fixed input rig; "
            "data.loader.input_views='random' needs it False")
  else:
    rig = g.get("rig", 0)
    if dataset.input_views == "random":
      raise errors.DataError(f"{where}: holds objects without the Instant3D rig (its metadata's "
                             "rigless_objects; input_views='random'): set "
                             "data.loader.input_views='random'")
    if rig != RIG_VIEWS:
      raise errors.DataError(f"{where}: training objects have {rig} 'rig' views; the loader "
                             f"needs the {RIG_VIEWS} views of the Instant3D rig")
    if num_views != rig:
      raise errors.ConfigError(f"model.num_views={num_views} but {where} has {rig} 'rig' views "
                               "per object (the model's input views; or set "
                               "data.loader.input_views='random')")
    if "sup" not in g and not bool(ld.inputs_in_targets):
      raise errors.ConfigError(f"{where}: training objects have no 'sup' views and "
                               "data.loader.inputs_in_targets=False: no views to supervise with")
  crop = int(ld.crop_size)
  if crop > ld.target_resolution:
    raise errors.ConfigError(
        f"data.loader.crop_size={crop} exceeds the target views: {ld.target_resolution}² "
        f"(data.loader.target_resolution, 0 = the resolution of {where}: {dataset.resolution})")
  batch = int(config.train.global_batch_size)
  if batch <= 0:
    raise errors.ConfigError(f"train.global_batch_size must be positive, found {batch}")


def check_eval(dataset: DatasetInfo, config, *, what: str = "evaluation") -> None:
  """Raises naming the field when the held-out protocol (instant3d_jax/eval/protocol.py) cannot
  run on `dataset`: the `eval.split` must hold objects with the GSO-style rig (64 'eval' views
  and 4 'eval_inputs')."""
  from instant3d_jax import cameras  # pylint: disable=g-import-not-at-top
  ev = config.eval
  split = str(ev.split)
  where = f"data set {dataset.data_dir}"
  if not dataset.splits.get(split, 0):
    raise errors.DataError(f"{what}: eval.split={split!r} but {where} has no objects there "
                           f"(splits: {dict(dataset.splits)})")
  g = dataset.groups[split]
  for group, want in (("eval", EVAL_VIEWS), ("eval_inputs", EVAL_INPUT_VIEWS)):
    if g.get(group, 0) != want:
      found = f"{g[group]} views" if group in g else "no such group"
      raise errors.DataError(
          f"{what}: eval.split={split!r} of {where} needs the GSO-style rig views of group "
          f"{group!r} ({want} per object), found {found} (groups: {dict(g)})")
  n_inputs = len(cameras.GSO_INPUT_AZIMUTHS)
  candidates = EVAL_VIEWS - n_inputs
  if not 0 < int(ev.num_targets) <= candidates:
    raise errors.ConfigError(f"eval.num_targets={int(ev.num_targets)}: must be in [1, "
                             f"{candidates}] (the eval-rig views that are not inputs)")
  if int(ev.batch_size) <= 0:
    raise errors.ConfigError(f"eval.batch_size must be positive, found {int(ev.batch_size)}")
