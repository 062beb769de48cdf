"""The accelerator suite stays runnable: `bash bench/device/run.sh --dry_run` pushes every item
through its GPU code path on CPU with tiny shapes (bench/device/README.md), and 'cudnn'
attention on a backend without cuDNN is refused with the project's one-line error."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from instant3d_jax import errors
from instant3d_jax.models import layers

ROOT = Path(__file__).resolve().parent.parent


def test_cudnn_attention_on_cpu_is_a_one_line_config_error():
  q = jnp.zeros((1, 8, 2, 16), jnp.bfloat16)
  with pytest.raises(errors.ConfigError) as e:
    layers.dot_product_attention(q, q, q, implementation="cudnn")
  msg = errors.one_line(e.value)
  assert "'cudnn'" in msg and f"{jax.default_backend()!r}" in msg and "\n" not in str(e.value)
  # The selection itself: CUDA passes, every other backend names itself in the error.
  layers.check_cudnn_backend("gpu")
  for backend in ("cpu", "tpu", "rocm"):
    with pytest.raises(errors.ConfigError, match=repr(backend)):
      layers.check_cudnn_backend(backend)


def test_device_suite_dry_run(tmp_path):
  """Every item runs on CPU (about 75-90 s on 2 cores); the suite itself checks finite outputs,
  the cuDNN refusal, the skipped torch.compile and that nothing missing on the device was
  imported, and exits 1 otherwise."""
  env = dict(os.environ, PYTHON=sys.executable)
  env.pop("OUT", None)
  proc = subprocess.run(["bash", str(ROOT / "bench" / "device" / "run.sh"), "--dry_run",
                         "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
  result = json.loads((tmp_path / "device.json").read_text())
  from bench.device import suite
  assert set(result["items"]) == {i.name for i in suite.ITEMS}
  for item in suite.ITEMS:
    assert set(item.keys) <= set(result["items"][item.name]["measurements"])
  md = (tmp_path / "device.md").read_text()
  assert "DRY RUN" in md and "<!-- provenance: " in md
  assert md.count("| ") >= len(suite.ROWS)
