"""Multi-process start-up: `jax.distributed.initialize` from flags / env, or the automatic paths.

Order of precedence:
  1. explicit arguments (the trainers' `--coordinator_address --num_processes --process_id`);
  2. environment `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`
     (what `launch/local_multiprocess.sh` sets);
  3. auto-detection by JAX itself: Cloud TPU pods (TPU metadata) and SLURM jobs with more than
     one task (`SLURM_NTASKS`), where `jax.distributed.initialize()` needs no arguments;
  4. otherwise a single process: nothing to do.
On CPU, cross-process collectives need gloo (`jax_cpu_collectives_implementation`), and the
number of CPU devices per process comes from `JAX_NUM_CPU_DEVICES` / `--num_cpu_devices`.
`cpu_devices_per_core` picks that count for a single-process CPU run (the demo).
"""
from __future__ import annotations

from instant3d_jax import errors

import os

import jax


def _env_int(name: str) -> int | None:
  v = os.environ.get(name)
  return int(v) if v not in (None, "") else None


def _on_cloud_tpu() -> bool:
  return bool(os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("CLOUD_TPU_TASK_ID")
              or os.environ.get("TPU_ACCELERATOR_TYPE"))


def _in_multitask_slurm() -> bool:
  return "SLURM_JOB_ID" in os.environ and (_env_int("SLURM_NTASKS") or 1) > 1


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, platform: str | None = None,
               num_cpu_devices: int | None = None) -> dict:
  """Starts the distributed runtime when more than one process takes part; returns a summary.

  Must run before anything touches a JAX backend. `platform='cpu'` selects gloo collectives.
  """
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
  process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
  num_cpu_devices = num_cpu_devices or _env_int("JAX_NUM_CPU_DEVICES")
  platform = platform or os.environ.get("JAX_PLATFORMS") or None
  if num_cpu_devices:
    jax.config.update("jax_num_cpu_devices", int(num_cpu_devices))
  how = "single process"
  if coordinator_address and (num_processes or 1) > 1:
    if process_id is None:
      raise errors.ConfigError("multi-process start: coordinator address and num_processes "
                       f"({num_processes}) given but no process id (--process_id or "
                       "JAX_PROCESS_ID)")
    if platform == "cpu":
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=int(num_processes), process_id=int(process_id))
    how = "explicit"
  elif (_on_cloud_tpu() and platform != "cpu") or _in_multitask_slurm():
    # A CPU run is never a Cloud TPU run, even where TPU_* variables are set (bench/tpu_plan.py
    # sets them so libtpu can compile for a topology on this machine).
    jax.distributed.initialize()
    how = "slurm" if _in_multitask_slurm() else "cloud tpu"
  return {"mode": how, "process_index": jax.process_index(),
          "process_count": jax.process_count(), "local_devices": jax.local_device_count(),
          "global_devices": jax.device_count()}


def cpu_devices_per_core(cfg) -> int:
  """On CPU, one XLA device per core: sets `--xla_force_host_platform_device_count` to the
  largest count <= the cores this process may use that divides the global batch, unless
  XLA_FLAGS already sets it. The data-parallel step over 2 devices on 2 cores measured ~15 %
  faster than one device using both cores (bench/results/train.md). Must run before JAX starts
  its CPU backend; GPU/TPU runs are unaffected (the mesh takes the accelerator devices).
  Returns the count (0: left as set)."""
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" in flags:
    return 0
  cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
           else os.cpu_count() or 1)
  batch = int(cfg.train.global_batch_size)
  n = max(d for d in range(1, cores + 1) if batch % d == 0)
  os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
  return n


def is_primary() -> bool:
  """Process 0 writes logs, images and tables (orbax writes from every process)."""
  return jax.process_index() == 0


def any_process(flag: bool) -> bool:
  """True on every process if `flag` is true on any (a SIGTERM seen by one host stops all at
  the same step). Free with one process."""
  if jax.process_count() == 1:
    return bool(flag)
  import numpy as np
  from jax.experimental import multihost_utils
  return bool(np.asarray(multihost_utils.process_allgather(np.int32(flag))).max())
