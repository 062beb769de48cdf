"""The accelerators' dense bf16 peak TFLOP/s per device, for MFU: the `hardware` section that
configs/lrm.py and configs/mv_sdxl.py share (one table, read by train/loop.py and
bench/device/items.py through `train/metrics.py peak_flops_for`).

Keys are matched against `jax.devices()[0].device_kind` (case-insensitive substring, the longest
match wins). Vendor data-sheet figures (dense, no sparsity).
"""
import ml_collections


def get_config(arg=None):
  del arg  # one table for every variant
  return ml_collections.ConfigDict(dict(peak_tflops={
      "H100": 989.0, "H200": 989.0, "A100": 312.0, "TPU v5p": 459.0, "TPU v5 lite": 197.0,
      "TPU v4": 275.0, "TPU v6 lite": 918.0}))
