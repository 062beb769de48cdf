"""Shared test set-up.

Four fake CPU devices so sharding tests can build real meshes; everything else runs on device 0.
The flag must be set before JAX initialises its backends, hence at import time here. JAX stays on
the CPU backend even where libtpu is installed (`make install-aot`: tests/test_tpu_plan.py
compiles for TPU topologies without opening a TPU).
The tiny model configs the tests share are in tests/tiny_configs.py (`from tests import
tiny_configs`).
"""
import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  # Added to flags already set (bench/tolerances.py limits the instruction set through them).
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Scorings on test splits made by tests go to a temporary ledger, never the committed
# bench/results/test_ledger.jsonl (instant3d_jax/eval/ledger.py).
if not os.environ.get("INSTANT3D_TEST_LEDGER"):
  import tempfile  # noqa: E402
  os.environ["INSTANT3D_TEST_LEDGER"] = os.path.join(tempfile.mkdtemp(prefix="ledger-"),
                                                     "test_ledger.jsonl")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")  # fp32 parity tests
