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


def test_merge_takes_each_figure_from_the_latest_call_that_measured_it(tmp_path):
  """`suite.py --merge`: a lease spent in several calls becomes one table; a later call's
  failure does not hide an earlier call's figure, and the table names the call."""
  from bench.device import suite

  def run(d, commit, meas):
    d.mkdir()
    prov = dict(command=f"python -m bench.device.suite ({commit})", commit=commit,
                started_utc="2026-11-30 22:00 UTC", cpu="x", cores=16, load_before=[0, 0, 0],
                load_after=[0, 0, 0], finished_utc="2026-11-30 22:10 UTC", backend="")
    (d / "device.json").write_text(json.dumps(dict(
        card={"name": "NVIDIA H200"}, versions={"jax": "0.11.2"}, budget_s=100, wall_s=90,
        provenance=prov, items={"lrm": {"measurements": meas, "process_s": 5, "budget_s": 9}})))
    return str(d)

  ok = lambda ms: {"status": "ok", "ms": ms, "images_per_s": 1e3 / ms}  # noqa: E731
  stopped = {"status": "not run: the item overran its 55 s budget and was stopped"}
  a = run(tmp_path / "a", "aaa", {"lrm_forward_xla": ok(30.0), "render_512": stopped,
                                  "lrm_forward_cudnn": stopped})
  b = run(tmp_path / "b", "bbb", {"lrm_forward_xla": stopped, "render_512": ok(100.0),
                                  "lrm_forward_cudnn": stopped})
  md = suite.merge([a, b], tmp_path / "out").read_text()
  m = json.loads((tmp_path / "out" / "device.json").read_text())["items"]["lrm"]["measurements"]
  assert (m["lrm_forward_xla"]["ms"], m["lrm_forward_xla"]["run"]) == (30.0, 1)
  assert (m["render_512"]["ms"], m["render_512"]["run"]) == (100.0, 2)
  assert m["lrm_forward_cudnn"]["status"].startswith("not run") and m["lrm_forward_cudnn"]["run"] == 2
  assert "30.0 ms [run 1]" in md and "10.0 images/s (100 ms) [run 2]" in md
  assert "`aaa`" in md and "`bbb`" in md and "<!-- provenance: " in md
