"""Checkpoints: orbax `CheckpointManager`, async, one step directory per save.

Layout of a workdir:
  config.json                 the run's config (written once; a restart must match it)
  checkpoints/<step>/state    TrainState (params, optimizer state, step, RNG, counters)
  checkpoints/<step>/data     the input iterator's state (JSON)
  checkpoints/<step>/config   the config again, so a copied step directory is self-contained

Crash safety: orbax writes a step into a temporary directory and renames it when complete, so a
process killed in the middle of a save (kill -9, preemption without grace) leaves the previous
complete step as `latest_step()`; the stale temporary is ignored (and cleaned up by orbax).

Restore: the state is read *into* an abstract target whose leaves carry the shardings of the
current mesh, so a checkpoint written on 4 devices restores onto 1 (or 64) unchanged.

The workdir may be local or `gs://…` (instant3d_jax/fileio.py): config.json goes through
`etils.epath`, orbax gets the URI string unchanged (a local path made absolute).

Reading for inference, export and evaluation: `load_orbax(path)` → `(config, params, step)` of
the orbax forms; `convert.checkpoints.load` reads every form the commands accept (see `FORMS`),
the exported `.safetensors` (whose reader knows the model) included. This module is the base
layer's (instant3d_jax/base/): it imports nothing of the project but `errors` and `fileio`.
"""
from __future__ import annotations

from instant3d_jax import errors
from instant3d_jax.errors import ConfigMismatchError  # also checkpoint.ConfigMismatchError

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from instant3d_jax import fileio
from instant3d_jax.base import config_schema

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


def config_to_dict(config) -> dict:
  """ConfigDict / dict → plain JSON-compatible dict (tuples become lists)."""
  if hasattr(config, "to_json"):
    return json.loads(config.to_json())
  return json.loads(json.dumps(config))


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
  """Dotted paths where two JSON trees differ, with both values."""
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) | set(b)):
      p = f"{prefix}.{k}" if prefix else k
      if k not in a or k not in b:
        out.append(f"{p}: {'<absent>' if k not in a else a[k]!r} vs "
                   f"{'<absent>' if k not in b else b[k]!r}")
      else:
        out.extend(_diff(a[k], b[k], p))
    return out
  return [] if a == b else [f"{prefix}: {a!r} vs {b!r}"]


def check_or_write_config(workdir: str | os.PathLike, config, must_match: tuple[str, ...],
                          ignore: tuple[str, ...] = (), *, write: bool = True) -> None:
  """First run: writes `workdir/config.json`. Later runs: the sections `must_match` (those that
  shape the checkpoint: model, optimizer, …) must equal the saved ones, else
  `ConfigMismatchError` listing the differences; other sections (steps, logging) may change, and
  so may the dotted keys in `ignore` (e.g. `model.encoder.pretrained`, read only at step 0).

  Only process 0 writes; every process checks. `write=False` only checks (the trainer checks
  first and writes once the run's settings are validated).
  """
  workdir = fileio.path(workdir)
  path = workdir / CONFIG_FILE
  new = config_to_dict(config)
  if path.exists():
    old = config_schema.upgrade_config(json.loads(path.read_text()))   # older keys, today's places
    diffs = []
    for section in must_match:
      diffs += _diff(old.get(section), new.get(section), section)
    diffs = [d for d in diffs if not any(d == k or d.startswith(k + ":") or d.startswith(k + ".")
                                         for k in ignore)]
    if diffs:
      raise ConfigMismatchError(
          f"workdir {str(workdir)!r} holds a run with a different config ({path}); "
          f"refusing to resume or overwrite it. Differences (saved vs requested):\n  "
          + "\n  ".join(diffs[:40]) + "\nUse another --workdir, or the saved config.")
    return
  if write and jax.process_index() == 0:
    fileio.write_text(path, json.dumps(new, indent=2, sort_keys=True))


class Checkpointer:
  """Async orbax checkpoints of `(TrainState, iterator state, config)` in `workdir/checkpoints`.

  `keep`: how many recent steps survive; saves happen when the caller says (`save`), the trainer
  decides the cadence (every N steps, at the end, on SIGTERM).
  """

  def __init__(self, workdir: str | os.PathLike, *, keep: int = 3, use_async: bool = True):
    # orbax gets the URI unchanged (`gs://…`), a local path absolute (fileio.for_orbax).
    self.directory = epath.Path(fileio.for_orbax(workdir)) / CHECKPOINT_DIR
    # cleanup_tmp_directories: a save cut short by kill -9 leaves a temporary directory; the
    # next run removes it (it was never a complete checkpoint).
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=use_async,
        cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(str(self.directory), options=options,
                                         item_names=("state", "data", "config"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, data_state: dict | None, config) -> bool:
    """Starts an (async) save of `step`; returns False if that step already exists."""
    if step in self.manager.all_steps():
      return False
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state if data_state is not None else {}),
        config=ocp.args.JsonSave(config_to_dict(config)))
    return self.manager.save(step, args=args, force=True)

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """`(state, data_state)` of `step`, with `abstract_state`'s shapes, dtypes and shardings."""
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return out.state, dict(out.data or {})

  def wait(self) -> None:
    """Blocks until every pending async save is committed."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


# Reading for inference, export and evaluation (no optimizer, no mesh needed).

FORMS = ("a training workdir (its latest complete step), its checkpoints/ directory, a step "
         "directory (checkpoints/<step>, holding state/), or an exported .safetensors file; "
         "local or gs://")


def _is_complete(step_dir: epath.Path) -> bool:
  """orbax's own test of a finished save: a local step is complete once renamed from its
  temporary name (`<step>.orbax-checkpoint-tmp-…`); on GCS, which has no atomic rename, once its
  `commit_success.txt` is written."""
  return ocp.utils.is_checkpoint_finalized(fileio.for_orbax(step_dir))


def _resolve_step_dir(path: str | os.PathLike) -> epath.Path:
  """Workdir → latest complete step dir; `workdir/checkpoints` → latest; a step dir → itself.

  Raises `CheckpointError` when there is no complete step (or the step directory given is an
  unfinished save).
  """
  path = fileio.path(path)
  if (path / "state").is_dir():
    if not _is_complete(path):
      raise errors.CheckpointError(f"checkpoint {str(path)!r} is an unfinished save (orbax never "
                                   f"marked it complete); pick another step; expected {FORMS}")
    return path
  ckpt_dir = path / CHECKPOINT_DIR if (path / CHECKPOINT_DIR).is_dir() else path
  steps = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()
                 and (p / "state").is_dir() and _is_complete(p)) if ckpt_dir.is_dir() else []
  if not steps:
    raise errors.CheckpointError(f"checkpoint {str(path)!r}: found no complete checkpoint there; "
                                 f"expected {FORMS}")
  return ckpt_dir / str(steps[-1])


def _read_step_config(step_dir: epath.Path) -> dict:
  """The config saved in the step (orbax JsonSave item), else the workdir's config.json."""
  config_path = step_dir / "config"
  for cand in (config_path / "metadata", config_path):
    if cand.is_file():
      return json.loads(cand.read_text())
  saved = step_dir.parent.parent / CONFIG_FILE
  if not saved.is_file():
    raise errors.CheckpointError(f"checkpoint {str(step_dir)!r}: no config saved in the step "
                                 f"({config_path}) or in its workdir ({saved})")
  return json.loads(saved.read_text())


def _read_params(state_dir: epath.Path, item: str = "params") -> Any:
  """The `item` subtree ('params', or 'ema' for the EMA weights) of a TrainState item, as host
  numpy arrays with the recorded shapes."""
  directory = fileio.for_orbax(state_dir)
  # The item's tree metadata comes from the handler itself. `Checkpointer.metadata(state_dir)`
  # would also look for the step-level `_CHECKPOINT_METADATA` inside the item directory, where
  # the CheckpointManager never writes it (it lives one level up, in the step directory), and log
  # "Metadata file does not exist" on every load although nothing is wrong.
  handler = ocp.PyTreeCheckpointHandler()
  try:
    meta = handler.metadata(epath.Path(directory))
  finally:
    handler.close()
  tree = getattr(meta, "tree", meta)
  if not isinstance(tree, dict) or tree.get(item) is None:
    raise errors.CheckpointError(f"checkpoint {str(state_dir)!r}: the state holds no {item!r} "
                                 f"(found {sorted(tree) if isinstance(tree, dict) else tree!r})")
  params_meta = tree[item]
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), params_meta)
  ckptr = ocp.PyTreeCheckpointer()
  try:
    out = ckptr.restore(directory, args=ocp.args.PyTreeRestore(
        item={item: params_meta}, restore_args={item: restore_args},
        partial_restore=True))
  finally:
    ckptr.close()
  return out[item]


def load_orbax(path: str | os.PathLike, config=None, *, item: str = "params"
               ) -> tuple[ml_collections.ConfigDict, Any, int | None]:
  """`(config, params, step)` from an orbax checkpoint form: a training workdir (its latest
  complete step), its `checkpoints/` directory or one step directory (config from the step, else
  the workdir's config.json), local or `gs://…`. `config` (optional) replaces the saved one.
  Params are host numpy arrays (no devices or mesh involved); the optimizer state is not read. A
  missing or incomplete path raises `errors.CheckpointError` naming it and the accepted forms.
  `item="ema"` reads the EMA of the trained weights instead (stage-1 runs keep one). Every form
  the commands accept, the exported `.safetensors` included, is read by
  `convert.checkpoints.load`, which calls this for the orbax ones."""
  p = fileio.path(path)
  if not p.exists():
    raise errors.CheckpointError(f"checkpoint {str(path)!r} does not exist; expected {FORMS}")
  step_dir = _resolve_step_dir(p)
  saved = config_schema.upgrade_config(_read_step_config(step_dir))
  params = _read_params(step_dir / "state", item)
  if config is None:
    config = ml_collections.ConfigDict(saved)
  step = int(step_dir.name) if step_dir.name.isdigit() else None
  return config, params, step


def params_sha256(params: Any) -> str:
  """The parameter hash: sha256 over (keypath, dtype, shape, bytes) of every leaf, in sorted
  keypath order. Equal hashes mean bit-identical parameters with identical tree structure."""
  import hashlib
  leaves = [(jax.tree_util.keystr(k), np.asarray(v))
            for k, v in jax.tree_util.tree_flatten_with_path(params)[0]]
  h = hashlib.sha256()
  for key, v in sorted(leaves, key=lambda kv: kv[0]):
    v = np.ascontiguousarray(v)
    h.update(f"{key}|{v.dtype.str}|{v.shape}|".encode())
    h.update(v.tobytes())
  return h.hexdigest()
