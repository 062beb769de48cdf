"""Every checkpoint form the commands accept (`base.checkpoint.FORMS`), read and exported.

`load(path)` → `(config, params, step)`: the orbax forms through `base.checkpoint.load_orbax`,
an exported `.safetensors` through `convert/lrm.py` (which checks every shape against the
config's model). The orbax side lives in the base layer (instant3d_jax/base/checkpoint.py); this
module adds the one form that needs a model's weight layout, so the base layer imports no model.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import numpy as np

from instant3d_jax import errors, fileio
from instant3d_jax.base import checkpoint as ckpt_lib
from instant3d_jax.base.checkpoint import FORMS
from instant3d_jax.convert import lrm as convert_lrm


def load(path: str | os.PathLike, config=None, *, item: str = "params"
         ) -> tuple[ml_collections.ConfigDict, Any, int | None]:
  """`(config, params, step)` from any checkpoint form the commands accept (`FORMS`):

  * a training workdir (its latest complete step), its `checkpoints/` directory or one step
    directory (orbax; config from the step, else the workdir's config.json);
  * an exported `.safetensors` file (`python -m instant3d_jax.export`; config embedded; read by
    `convert/lrm.py`, which checks every shape against the config's model; `step` is None if
    the file records none);

  each local or `gs://…`. `config` (optional) replaces the saved one. Params are host numpy
  arrays (no devices or mesh involved); the optimizer state is not read. A missing or
  incomplete path raises `errors.CheckpointError` naming it and the accepted forms.
  `item="ema"` reads the EMA of the trained weights instead (orbax forms; stage-1 runs keep one).
  """
  p = fileio.path(path)
  if p.name.endswith(".safetensors"):
    if item != "params":
      raise errors.CheckpointError(f"checkpoint {str(path)!r}: a .safetensors export holds the "
                                   f"weights only, not {item!r}; give the training workdir")
    if not p.is_file():
      raise errors.CheckpointError(f"checkpoint {str(path)!r} does not exist; expected {FORMS}")
    return convert_lrm.read_lrm(p, config)
  return ckpt_lib.load_orbax(path, config, item=item)


def load_params(path: str | os.PathLike) -> tuple[dict, Any, int | None]:
  """`load` with the config as a plain dict (JSON types)."""
  config, params, step = load(path)
  return ckpt_lib.config_to_dict(config), params, step


def load_for_inference(path: str | os.PathLike, config=None):
  """`(config, params)` of `load`."""
  config, params, _ = load(path, config)
  return config, params


def export_safetensors(path: str | os.PathLike, out: str | os.PathLike
                       ) -> tuple[fileio.OutPath, int | None, int]:
  """Any checkpoint form `load` accepts → one `.safetensors` file (fp32, config and step in the
  metadata; layout of `convert/lrm.py`). Returns `(out, step, number of parameters)`."""
  if not fileio.path(out).name.endswith(".safetensors"):
    raise errors.ConfigError(f"--out must end in .safetensors, got {str(out)!r}")
  config, params, step = load(path)
  written = convert_lrm.save_lrm(out, params, config, step=step)
  n = sum(int(np.size(v)) for v in jax.tree.leaves(params))
  return written, step, n
