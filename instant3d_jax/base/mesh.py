"""The device mesh from config: `('data', 'fsdp', 'tensor')`, `-1` fills, DCN axes for multi-slice.

Config (`cfg.mesh`):
  data, fsdp, tensor        sizes inside one slice / node (ICI, NVLink); one of them may be -1,
                            which takes every device left over.
  num_devices               0 (default) = every device; n > 0 = the first n (single process).
  dcn_data, dcn_fsdp, dcn_tensor
                            sizes across slices / nodes (DCN, InfiniBand); default 1. With any of
                            them > 1 the mesh is built by `mesh_utils.create_hybrid_device_mesh`,
                            so each mesh axis is the product of its ICI and DCN parts and the
                            slow links carry only the axis put on them (usually `data`).

The mesh is the same object on every process (all global devices); which slice of the batch a
process feeds is decided by the batch sharding, not here.
"""
from __future__ import annotations

from instant3d_jax import errors

import math
from typing import Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh

MESH_AXES = ("data", "fsdp", "tensor")


def resolve_axis_sizes(sizes: Sequence[int], total: int, what: str = "mesh") -> tuple[int, ...]:
  """Replaces one `-1` in `sizes` by what is left of `total`; checks the product.

  `sizes`: per-axis sizes (ints ≥ 1 or one -1); `total`: the number of devices they must cover.
  """
  sizes = [int(s) for s in sizes]
  if sum(s == -1 for s in sizes) > 1:
    raise errors.ConfigError(f"{what}: at most one axis may be -1, got sizes {sizes}")
  if any(s == 0 or s < -1 for s in sizes):
    raise errors.ConfigError(f"{what}: axis sizes must be ≥ 1 or -1, got {sizes}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if total % known:
      raise errors.ConfigError(f"{what}: {total} devices are not divisible by the fixed axes "
                       f"{dict(zip(MESH_AXES, sizes))} (product {known})")
    sizes[sizes.index(-1)] = total // known
  if math.prod(sizes) != total:
    raise errors.ConfigError(f"{what}: axis sizes {dict(zip(MESH_AXES, sizes))} multiply to "
                     f"{math.prod(sizes)}, but there are {total} devices")
  return tuple(sizes)


def create_mesh(mesh_cfg, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A `Mesh` with axes `('data', 'fsdp', 'tensor')` from `mesh_cfg` (see module docstring).

  `devices`: defaults to `jax.devices()` (every process's devices).
  """
  devices = list(jax.devices() if devices is None else devices)
  if int(mesh_cfg.get("num_devices", 0) or 0):
    # A sub-mesh (benchmarks' scaling sweeps, restore-on-fewer-devices tests).
    devices = devices[:int(mesh_cfg.num_devices)]
  dcn = tuple(int(mesh_cfg.get(f"dcn_{a}", 1)) for a in MESH_AXES)
  num_slices = math.prod(dcn)
  if len(devices) % num_slices:
    raise errors.ConfigError(f"mesh: {len(devices)} devices cannot be split into {num_slices} DCN "
                     f"groups (dcn sizes {dict(zip(MESH_AXES, dcn))})")
  ici = resolve_axis_sizes([mesh_cfg.get(a, 1) for a in MESH_AXES], len(devices) // num_slices,
                           "mesh (per slice)")
  if num_slices > 1:
    try:
      # TPU multi-slice: granules are slices; multi-node GPU: granules are processes (hosts).
      granule = {} if hasattr(devices[0], "slice_index") else {"process_is_granule": True}
      arr = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices=devices,
                                                 allow_split_physical_axes=True, **granule)
    except (ValueError, AssertionError):
      # No physical granules to match (e.g. fake CPU devices in one process): contiguous
      # blocks of devices play the slices, DCN as the outer factor of each axis.
      arr = np.asarray(devices).reshape(dcn + ici)
      arr = arr.transpose(0, 3, 1, 4, 2, 5).reshape([d * i for d, i in zip(dcn, ici)])
  else:
    try:
      # Topology-aware order on TPU/GPU (neighbouring chips on the fast axes).
      arr = mesh_utils.create_device_mesh(ici, devices=devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError):
      arr = np.asarray(devices).reshape(ici)
  return Mesh(arr, MESH_AXES)


def describe(mesh: Mesh) -> str:
  """`'data=4 fsdp=1 tensor=1 (4 devices: cpu)'` for logs."""
  sizes = " ".join(f"{k}={v}" for k, v in mesh.shape.items())
  kinds = sorted({d.device_kind for d in mesh.devices.flat})
  return f"{sizes} ({mesh.devices.size} devices: {', '.join(kinds)})"
