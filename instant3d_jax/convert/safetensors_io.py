"""Reading and writing the public weight layouts: safetensors files, diffusers/transformers
folders (single or sharded, fp32 or fp16 variants), and Flax parameter trees.

Every converter in this package goes through these helpers, so errors look the same everywhere:
they name the file (and key) that was wanted and what was found. Nothing here unpickles.
"""
from __future__ import annotations

from instant3d_jax.errors import WeightsError  # also safetensors_io.WeightsError

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from flax import traverse_util
from safetensors.numpy import load_file, save_file

# Weight file names as written by `save_pretrained`, in the order they are looked for.
WEIGHT_NAMES = ("diffusion_pytorch_model", "model")


def read_safetensors(path: str | os.PathLike, dtype=np.float32) -> dict[str, np.ndarray]:
  """All tensors of one .safetensors file as numpy arrays (floating ones cast to `dtype`;
  `dtype=None` keeps the stored dtypes, e.g. fp16 for a bit-exact round trip)."""
  path = Path(path)
  if not path.is_file():
    raise WeightsError(f"weights file {path} does not exist")
  try:
    tensors = load_file(str(path))
  except Exception as e:  # safetensors raises several types for a corrupt header
    raise WeightsError(f"{path} is not a readable safetensors file: {e}") from e
  out = {}
  for k, v in tensors.items():
    v = np.asarray(v)
    if dtype is not None and np.issubdtype(v.dtype, np.floating):
      v = v.astype(dtype)
    out[k] = v
  return out


def find_weights(folder: str | os.PathLike, variant: str | None = None) -> list[Path]:
  """The safetensors file(s) of a diffusers/transformers component folder.

  Accepts `<name>.safetensors`, `<name>.<variant>.safetensors` (e.g. `fp16`) and sharded
  checkpoints with an index (`<name>.safetensors.index.json`). With `variant=None` the plain
  file is preferred and the `fp16` variant is the fallback.
  """
  folder = Path(folder)
  if not folder.is_dir():
    raise WeightsError(f"weights folder {folder} does not exist")
  variants = [variant] if variant else [None, "fp16"]
  tried = []
  for name in WEIGHT_NAMES:
    for var in variants:
      stem = f"{name}.{var}" if var else name
      single = folder / f"{stem}.safetensors"
      index = folder / f"{stem}.safetensors.index.json"
      tried += [single.name, index.name]
      if single.is_file():
        return [single]
      if index.is_file():
        try:
          shard_names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError) as e:
          raise WeightsError(f"{index} is not a valid safetensors index: {e}") from e
        shards = [folder / s for s in shard_names]
        missing = [str(s) for s in shards if not s.is_file()]
        if missing:
          raise WeightsError(f"{index} lists shards that do not exist: {missing}")
        return shards
  found = sorted(p.name for p in folder.iterdir())
  raise WeightsError(f"no safetensors weights in {folder}: looked for {tried}; found {found}")


def read_folder_weights(folder, variant=None, dtype=np.float32) -> dict[str, np.ndarray]:
  """Merged tensors of all weight files of a component folder."""
  out = {}
  for f in find_weights(folder, variant):
    out.update(read_safetensors(f, dtype))
  return out


def read_config(folder: str | os.PathLike, name: str = "config.json") -> dict[str, Any]:
  """A component's JSON config, with a clear error if absent or malformed."""
  path = Path(folder) / name
  if not path.is_file():
    raise WeightsError(f"config file {path} does not exist")
  try:
    return json.loads(path.read_text())
  except ValueError as e:
    raise WeightsError(f"{path} is not valid JSON: {e}") from e


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> None:
  """Writes atomically (temp file + rename), so an interrupted export never looks complete."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  # ascontiguousarray makes 0-d arrays 1-d; the reshape keeps scalars (CLIP's logit_scale) 0-d.
  save_file({k: np.ascontiguousarray(v).reshape(np.shape(v)) for k, v in tensors.items()},
            str(tmp),
            metadata=dict(metadata) if metadata else None)
  os.replace(tmp, path)


def write_json(path: str | os.PathLike, obj: Any) -> None:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
  os.replace(tmp, path)


def flatten(tree: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
  """{'a': {'b': x}} → {'a/b': x} (Flax param dicts; boxed params must be unboxed first).

  `flax.traverse_util.flatten_dict` with `sep` (nested dicts or FrozenDicts); empty sub-dicts are
  dropped.
  """
  return traverse_util.flatten_dict(dict(tree), sep=sep)


def unflatten(flat: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
  """{'a/b': x} → {'a': {'b': x}}; the inverse of `flatten` (`flax.traverse_util.unflatten_dict`)."""
  return traverse_util.unflatten_dict(dict(flat), sep=sep)


def check_tree_shapes(expected: Mapping[str, Any], got: Mapping[str, Any], source: str) -> None:
  """Raises `WeightsError` listing every missing/unexpected path and every shape mismatch.

  `expected` and `got` are (nested) dicts of arrays or `jax.ShapeDtypeStruct`s; `source` names
  the checkpoint in the message.
  """
  e, g = flatten(expected), flatten(got)
  problems = []
  for k in sorted(set(e) - set(g)):
    problems.append(f"  missing {k}: expected shape {tuple(e[k].shape)}")
  for k in sorted(set(g) - set(e)):
    problems.append(f"  unexpected {k}: shape {tuple(g[k].shape)}")
  for k in sorted(set(e) & set(g)):
    if tuple(e[k].shape) != tuple(g[k].shape):
      problems.append(f"  {k}: config expects {tuple(e[k].shape)}, checkpoint has "
                      f"{tuple(g[k].shape)}")
  if problems:
    raise WeightsError(f"{source} does not match the model config ({len(problems)} problems):\n"
                       + "\n".join(problems))


def take(tensors: dict[str, np.ndarray], key: str, source: str,
         shape: Iterable[int] | None = None) -> np.ndarray:
  """`tensors[key]` with errors naming the source file and key (and the expected shape)."""
  if key not in tensors:
    raise WeightsError(f"{source}: missing key {key!r}")
  v = tensors[key]
  if shape is not None and tuple(v.shape) != tuple(shape):
    raise WeightsError(f"{source}: key {key!r} has shape {tuple(v.shape)}, expected "
                       f"{tuple(shape)}")
  return v
