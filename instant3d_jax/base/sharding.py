"""Sharding as config data: logical axis rules → mesh shardings of the train state and the batch.

Modules name logical axes only (models/layers.py); `cfg.logical_axis_rules` maps them to mesh
axes. Shardings of the whole train state (params, optimizer moments, counters) are *derived*:
`jax.eval_shape` of the init function gives the boxed abstract state (`nn.LogicallyPartitioned`
leaves carry the names), `nn.get_partition_spec` reads the names, `nn.logical_to_mesh_sharding`
resolves them with the rules. Nothing is written by hand, so a new parameter is sharded the
moment it is named.
"""
from __future__ import annotations

from instant3d_jax import errors

from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

LogicalRules = tuple[tuple[str, Any], ...]


def logical_rules(rules_cfg) -> LogicalRules:
  """Config rules (a sequence of `(logical, mesh_axis | tuple | None)`) as flax expects them."""
  out = []
  for rule in rules_cfg:
    if len(rule) != 2:
      raise errors.ConfigError(f"logical_axis_rules: each rule must be (logical_name, mesh_axes), got "
                       f"{rule!r}")
    name, axes = rule
    out.append((str(name), tuple(axes) if isinstance(axes, (list, tuple)) else axes))
  return tuple(out)


def derive_shardings(init_fn: Callable[..., Any], *args, mesh: Mesh,
                     rules: LogicalRules) -> tuple[Any, Any]:
  """Shardings for the output of `init_fn(*args)` (which returns a boxed pytree).

  Returns `(abstract, shardings)`: `abstract` is the *unboxed* `jax.ShapeDtypeStruct` tree (with
  the shardings attached, ready for AOT lowering and orbax restore) and `shardings` the matching
  `NamedSharding` tree. Leaves without logical names (step counters, RNG) are replicated, and a
  dimension its mesh axes do not divide stays whole (`fit_sharding`).
  """
  boxed = jax.eval_shape(init_fn, *args)
  specs = nn.get_partition_spec(boxed)
  shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
  unboxed = unbox(boxed)
  shardings = jax.tree.map(lambda x, s: fit_sharding(s, x.shape), unboxed, shardings)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          unboxed, shardings)
  return abstract, shardings


def fit_sharding(sharding: NamedSharding, shape) -> NamedSharding:
  """`sharding` with the mesh axes of each dimension they do not divide dropped (that dimension
  replicated): e.g. SDXL's 4-channel `conv_out` bias under an 8-way `fsdp` rule stays whole
  instead of failing to shard. Dimensions they divide keep their axes."""
  spec = list(sharding.spec) + [None] * (len(shape) - len(sharding.spec))
  out = []
  for dim, axes in zip(shape, spec):
    names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
    size = int(np.prod([sharding.mesh.shape[n] for n in names])) if names else 1
    out.append(axes if dim % size == 0 else None)
  if out == list(sharding.spec) + [None] * (len(shape) - len(sharding.spec)):
    return sharding
  return NamedSharding(sharding.mesh, P(*out))


def unbox(tree: Any) -> Any:
  """Strips `nn.Partitioned` boxes without adding sharding constraints (flax's `nn.unbox`
  constrains each value, which fails on abstract values under a mesh context)."""
  is_box = lambda x: isinstance(x, nn.Partitioned)
  return jax.tree.map(lambda x: x.value if is_box(x) else x, tree, is_leaf=is_box)


def logical_sharding(mesh: Mesh, rules: LogicalRules, axes: tuple[str | None, ...]) -> NamedSharding:
  """`NamedSharding` of an array whose dimensions have logical names `axes`."""
  return nn.logical_to_mesh_sharding(P(*axes), mesh, rules)


def batch_sharding(mesh: Mesh, rules: LogicalRules, ndim: int) -> NamedSharding:
  """Leading dimension on the logical `batch` axis, the rest replicated."""
  return logical_sharding(mesh, rules, ("batch",) + (None,) * (ndim - 1))


def num_batch_shards(mesh: Mesh, rules: LogicalRules) -> int:
  """How many ways the logical `batch` axis is split on this mesh (global batch must divide)."""
  spec = batch_sharding(mesh, rules, 1).spec[0]
  if spec is None:
    return 1
  names = spec if isinstance(spec, tuple) else (spec,)
  return int(np.prod([mesh.shape[n] for n in names]))


def global_batch(local: Any, mesh: Mesh, rules: LogicalRules, global_batch_size: int) -> Any:
  """Process-local numpy batch (this process's rows) → global `jax.Array`s sharded on `batch`.

  Every process passes its own contiguous slice of the global batch (rows
  `[p·B/P, (p+1)·B/P)` for process p); the result is one array of `global_batch_size` rows.
  """
  def one(x):
    x = np.asarray(x)
    sharding = batch_sharding(mesh, rules, x.ndim)
    return jax.make_array_from_process_local_data(sharding, x, (global_batch_size,) + x.shape[1:])
  return jax.tree.map(one, local)


def abstract_batch(example: Any, mesh: Mesh, rules: LogicalRules, global_batch_size: int) -> Any:
  """`ShapeDtypeStruct`s of the global batch from one process-local example batch."""
  def one(x):
    x = np.asarray(x)
    return jax.ShapeDtypeStruct((global_batch_size,) + x.shape[1:], x.dtype,
                                sharding=batch_sharding(mesh, rules, x.ndim))
  return jax.tree.map(one, example)
