"""Bounds for comparisons whose two sides XLA:CPU computes with different kernels.

Two runs of the same computation with different batch shapes, device counts, sharding, chunking
or summation order round differently, and by how much depends on the instruction set XLA:CPU
compiles for and on the size of its thread pools, so it differs between machines. Each such
check goes through `within`, which asserts the bound and, when the environment variable
`INSTANT3D_TOLERANCE_LOG` names a file, appends the measured value to it (one JSON line).
`python -m bench.tolerances` runs these tests under every instruction set the pinned jaxlib can
be limited to (`XLA_FLAGS=--xla_cpu_max_isa=…`) and 1, 2 and 4 CPUs, and writes the table the
bounds are set from (bench/results/tolerances.md): each bound is at least 4× the largest value
measured there. Bitwise checks of equal shapes stay `assert_array_equal`.

Metrics: `abs` is max|a − b|; `rel` is max|a − b| / max|b| (docs/design.md §3).
"""
from __future__ import annotations

import json
import os

import numpy as np

LOG_ENV = "INSTANT3D_TOLERANCE_LOG"
# Set by bench/tolerances.py only: record every value, assert none (a value over its bound would
# otherwise stop its test and hide the checks after it from the table).
MEASURE_ONLY_ENV = "INSTANT3D_TOLERANCE_MEASURE_ONLY"


def measure(a, b, metric: str) -> float:
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise AssertionError(f"shapes differ: {a.shape} vs {b.shape}")
  diff = float(np.abs(a - b).max()) if a.size else 0.0
  if metric == "abs":
    return diff
  if metric == "rel":
    scale = float(np.abs(b).max()) if b.size else 0.0
    return diff / scale if scale else diff
  raise ValueError(f"metric must be 'abs' or 'rel', got {metric!r}")


def within(name: str, a, b, bound: float, metric: str = "abs") -> float:
  """Asserts `metric(a, b) <= bound` for the check `name` (unique in the suite); logs it."""
  value = measure(a, b, metric)
  path = os.environ.get(LOG_ENV)
  if path:
    with open(path, "a") as f:
      f.write(json.dumps({"check": name, "metric": metric, "value": value, "bound": bound}) + "\n")
  if path and os.environ.get(MEASURE_ONLY_ENV):
    return value
  assert value <= bound, f"{name}: {metric} difference {value:.3g} > bound {bound:.3g}"
  return value
