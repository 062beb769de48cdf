"""Prints the reconstructor's parameter table and analytic FLOPs.

    python -m instant3d_jax.models.summary --config configs/lrm.py:large [--batch 1]

Parameter counts come from `jax.eval_shape` of the model's init (nothing is allocated, so the
500M model is summarised in a second on a laptop); FLOPs are analytic (2 per multiply-accumulate
of every matmul/convolution). The table and the formulas are instant3d_jax/models/lrm_stats.py,
which the trainer and the benchmarks use for TFLOP/s and MFU.
"""
from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from instant3d_jax.models import lrm_stats


def main(argv):
  del argv
  if _CONFIG.value is None:
    raise app.UsageError("--config is required, e.g. --config configs/lrm.py:large")
  if _BATCH.value < 1:
    from instant3d_jax import errors  # pylint: disable=g-import-not-at-top
    raise errors.ConfigError(f"--batch must be >= 1, got {_BATCH.value}")
  print(lrm_stats.format_summary(_CONFIG.value, _BATCH.value))


if __name__ == "__main__":
  # Flags are defined only when run as a command: importing this module defines none.
  _CONFIG = config_flags.DEFINE_config_file("config", None, "configs/lrm.py:VARIANT",
                                            lock_config=False)
  _BATCH = flags.DEFINE_integer("batch", 1, "objects per forward for the FLOP count")
  from instant3d_jax import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)
