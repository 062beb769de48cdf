"""How library code reads a config (docs/design.md §3 Configs).

The configs (configs/*.py) are the one source of every value: library code reads a key every
config sets by plain access (`config.train.log_every`), never `.get(key, default)`, so no second
default hides in the code. Two functions keep that honest:

* `require(config, keys, where)`: the dotted keys a function is about to read, checked once up
  front; a missing one raises `errors.ConfigError` naming every missing key and the reader.
* `upgrade_config(saved)`: a config stored in a checkpoint (orbax step, workdir config.json or an
  exported `.safetensors`) written before a key existed, brought up to today's keys, each at the
  value that reproduces how that checkpoint behaved (what the `.get` default used to supply).
  Every load path applies it (base/checkpoint.py `load_orbax`, convert/lrm.py `read_lrm`); a
  config that already has the key keeps its value, so a current checkpoint loads unchanged.

Imports nothing of the project but errors.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable

from instant3d_jax import errors

# Keys that moved: (old section, key, new section). The reconstructor's options that are NOT in
# the paper left the model, triplane, decoder and nerf sections for `model.extras` (models/lrm.py
# `ExtrasConfig`); a saved config with a key at its old place gets it moved, value unchanged. Only
# configs of an LRM (a `model.triplane` section) are touched.
MOVED_KEYS: tuple[tuple[str, str, str], ...] = (
    ("model", "plucker_rays", "model.extras"),
    ("model.triplane", "position_code", "model.extras"),
    ("model.decoder", "attention_bias", "model.extras"),
    ("model.decoder", "attention_bias_init", "model.extras"),
    ("model.decoder", "attention_bias_sigma", "model.extras"),
    ("model.decoder", "attention_bias_floor", "model.extras"),
    ("model.triplane", "lift", "model.extras"),
    ("model.triplane", "lift_concat", "model.extras"),
    ("model.triplane", "lift_voxels", "model.extras"),
    ("model.triplane", "lift_voxel_colour", "model.extras"),
    ("model.triplane", "lift_voxel_resolution", "model.extras"),
    ("model.nerf", "colour_prior", "model.extras"),
)

# (section, key, value for a checkpoint written before the key existed). A section that is absent
# (e.g. a stage-1 config has no `model.triplane`) is left alone: the keys belong to that model;
# the `model…` entries are the reconstructor's and touch only a config with `model.triplane`.
# Applied after MOVED_KEYS (so `model.extras` exists in every LRM config by then).
ADDED_KEYS: tuple[tuple[str, str, Any], ...] = (
    ("model.triplane", "upsample", 2),
    ("model", "camera_convention", "opencv"),
    ("model.encoder", "pos_embed_resize", "size"),
    ("model.decoder", "attention_out_bias", True),
    ("model.triplane", "plane_axes", "yz"),
    ("model.render", "composite", "quadrature"),
    ("model.render", "sampling", "stratified"),
    ("model.extras", "plucker_rays", False),
    ("model.extras", "position_code", False),
    ("model.extras", "attention_bias", False),
    ("model.extras", "attention_bias_init", "zeros"),
    ("model.extras", "attention_bias_sigma", 1.0),
    ("model.extras", "attention_bias_floor", -8.0),
    ("model.extras", "lift", "none"),
    ("model.extras", "lift_concat", False),
    ("model.extras", "lift_voxels", False),
    ("model.extras", "lift_voxel_resolution", 0),
    ("model.extras", "lift_voxel_colour", "mean"),
    ("model.extras", "colour_prior", False),
    ("model.render", "remat_field", False),
    ("eval", "chunk", 4096),
    ("eval", "lpips", True),
)

# (section, key, sibling): a key that, before it existed, was the sibling's value (the decoder's
# final LayerNorm used the blocks' eps). Applied after ADDED_KEYS, LRM configs only.
COPIED_KEYS: tuple[tuple[str, str, str], ...] = (
    ("model.decoder", "output_norm_eps", "layer_norm_eps"),
)


def _has(node: Any, key: str) -> bool:
  try:
    return key in node
  except TypeError:
    return False


def missing_keys(config: Any, keys: Iterable[str]) -> list[str]:
  """The dotted `keys` absent from `config` (a ConfigDict or a nested dict)."""
  out = []
  for dotted in keys:
    node = config
    for part in dotted.split("."):
      if not _has(node, part):
        out.append(dotted)
        break
      node = node[part]
  return out


def require(config: Any, keys: Iterable[str], where: str, prefix: str = "") -> None:
  """Raises `errors.ConfigError` naming each of the dotted `keys` missing from `config` (read by
  `where`, e.g. 'train/loop.py'); `prefix`: where `config` sits in the whole config (e.g.
  'optimizer.' when given the optimizer section), for the message."""
  missing = [prefix + k for k in missing_keys(config, keys)]
  if missing:
    raise errors.ConfigError(f"config: missing {', '.join(missing)} (read by {where}; every "
                             f"config under configs/ sets {'it' if len(missing) == 1 else 'them'})")


def _section(root: Any, dotted: str) -> Any:
  node = root
  for part in dotted.split("."):
    node = node.get(part) if isinstance(node, dict) else None
  return node


def upgrade_config(saved: dict) -> dict:
  """`saved` (a config dict read back from a checkpoint) with every key of `MOVED_KEYS` moved to
  its new section (created in an LRM config that lacks it), then every key of `ADDED_KEYS` (and
  `COPIED_KEYS`) that it lacks, in a section it has, set to the value that reproduces the older
  checkpoint; a copy, the argument is not changed."""
  out = copy.deepcopy(saved)
  model = _section(out, "model")
  is_lrm = isinstance(model, dict) and isinstance(model.get("triplane"), dict)
  if is_lrm:
    for old, key, new in MOVED_KEYS:
      src = _section(out, old)
      if not isinstance(src, dict) or key not in src:
        continue
      value = src.pop(key)
      dst = _section(out, new)
      if not isinstance(dst, dict):
        parent, name = new.rsplit(".", 1)
        dst = _section(out, parent)[name] = {}
      dst.setdefault(key, value)
    model.setdefault("extras", {})
  for section, key, value in ADDED_KEYS:
    if section.split(".")[0] == "model" and not is_lrm:
      continue
    node = _section(out, section)
    if isinstance(node, dict) and key not in node:
      node[key] = value
  for section, key, sibling in COPIED_KEYS:
    node = _section(out, section) if is_lrm else None
    if isinstance(node, dict) and key not in node and sibling in node:
      node[key] = node[sibling]
  return out
