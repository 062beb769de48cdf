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
"""
from __future__ import annotations

from instant3d_jax import errors

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


class ConfigMismatchError(errors.Instant3DError, ValueError):
  """The workdir holds a run with a different config; nothing was written."""


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
                          ignore: tuple[str, ...] = ()) -> None:
  """First run: writes `workdir/config.json`. Later runs: the sections `must_match` (those that
  shape the checkpoint: model, optimizer, …) must equal the saved ones, else
  `ConfigMismatchError` listing the differences; other sections (steps, logging) may change, and
  so may the dotted keys in `ignore` (e.g. `model.encoder.pretrained`, read only at step 0).

  Only process 0 writes; every process checks.
  """
  workdir = Path(workdir)
  path = workdir / CONFIG_FILE
  new = config_to_dict(config)
  if path.exists():
    old = json.loads(path.read_text())
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
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(new, indent=2, sort_keys=True))
    os.replace(tmp, path)


class Checkpointer:
  """Async orbax checkpoints of `(TrainState, iterator state, config)` in `workdir/checkpoints`.

  `keep`: how many recent steps survive; saves happen when the caller says (`save`), the trainer
  decides the cadence (every N steps, at the end, on SIGTERM).
  """

  def __init__(self, workdir: str | os.PathLike, *, keep: int = 3, use_async: bool = True):
    self.directory = Path(workdir).absolute() / CHECKPOINT_DIR
    # cleanup_tmp_directories: a save cut short by kill -9 leaves a temporary directory; the
    # next run removes it (it was never a complete checkpoint).
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=use_async,
        cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
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


# Restoring for inference (no optimizer, no mesh needed).

def _resolve_step_dir(path: Path) -> Path:
  """Workdir → latest step dir; `workdir/checkpoints` → latest; a step dir → itself."""
  if (path / "state").is_dir():
    return path
  ckpt_dir = path / CHECKPOINT_DIR if (path / CHECKPOINT_DIR).is_dir() else path
  steps = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.is_dir() and p.name.isdigit()
                 and (p / "state").is_dir()) if ckpt_dir.is_dir() else []
  if not steps:
    raise FileNotFoundError(f"checkpoint {str(path)!r}: expected a training workdir (with "
                            f"{CHECKPOINT_DIR}/<step>/state), a step directory (with state/) or a "
                            f".safetensors file; found no complete checkpoint there")
  return ckpt_dir / str(steps[-1])


def load_params(path: str | os.PathLike) -> tuple[dict, Any, int]:
  """`(config_dict, params, step)` from a workdir, a `checkpoints/` dir or a step dir.

  Params come back as host numpy arrays (no devices or mesh involved), read with the shapes the
  checkpoint records; the optimizer state is not read.
  """
  # Absolute: orbax's OCDBT reader rejects relative paths (and reports it only as missing
  # metadata), and commands take relative workdirs such as the demo's `outputs/demo`.
  step_dir = _resolve_step_dir(Path(path).absolute())
  config_path = step_dir / "config"
  cfg = None
  for cand in (config_path / "metadata", config_path):
    if cand.is_file():
      cfg = json.loads(cand.read_text())
      break
  if cfg is None:
    saved = step_dir.parent.parent / CONFIG_FILE
    if not saved.is_file():
      raise FileNotFoundError(f"checkpoint {str(step_dir)!r}: no config saved in the step "
                              f"({config_path}) or beside it ({saved})")
    cfg = json.loads(saved.read_text())
  ckptr = ocp.PyTreeCheckpointer()
  meta = ckptr.metadata(step_dir / "state")
  tree = meta.item_metadata if hasattr(meta, "item_metadata") else meta
  tree = getattr(tree, "tree", tree)
  params_meta = tree["params"]
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), params_meta)
  out = ckptr.restore(step_dir / "state", args=ocp.args.PyTreeRestore(
      item={"params": params_meta}, restore_args={"params": restore_args}, partial_restore=True))
  return cfg, out["params"], int(step_dir.name)


def load_for_inference(path: str | os.PathLike, config=None):
  """`(config, params)` for inference from any checkpoint form the commands accept:

  * a training workdir (its latest complete step), a `checkpoints/` dir or a step directory
    (orbax; config from the step, else the workdir's config.json);
  * an exported `.safetensors` file (`python -m instant3d_jax.export`; config embedded; read by
    `convert/lrm.py`, which checks every shape against the config's model).

  `config` (optional) overrides the saved one. Params are host numpy arrays.
  """
  import ml_collections
  path = Path(path)
  if path.suffix == ".safetensors":
    from instant3d_jax.convert import lrm as convert_lrm
    return convert_lrm.load_lrm(path, config)
  if not path.exists():
    raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist (expected a workdir, a step "
                            f"directory or a .safetensors file)")
  saved, params, _ = load_params(path)
  return (config if config is not None else ml_collections.ConfigDict(saved)), params
