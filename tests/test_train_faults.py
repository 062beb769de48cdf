"""Process-level faults on the toy job (subprocesses): SIGTERM saves and exits cleanly; kill -9
during checkpointing leaves the last complete checkpoint usable and the run resumable."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from instant3d_jax.base import checkpoint as ckpt_lib
from instant3d_jax.convert import checkpoints

ROOT = Path(__file__).resolve().parents[1]


def _start(workdir, result, *sets):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(PYTHONPATH=str(ROOT), JAX_NUM_CPU_DEVICES="2", JAX_PLATFORMS="cpu")
  cmd = [sys.executable, str(ROOT / "tests/train_toy.py"), "--workdir", str(workdir),
         "--result", str(result)]
  for s in sets:
    cmd += ["--set", s]
  return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _wait_for_rows(workdir, n, proc, timeout=240):
  path = Path(workdir) / "metrics.jsonl"
  t0 = time.time()
  while time.time() - t0 < timeout:
    if path.exists() and len(path.read_text().splitlines()) >= n:
      return
    if proc.poll() is not None:
      raise AssertionError(f"trainer exited early:\n{proc.stdout.read()[-3000:]}")
    time.sleep(0.05)
  raise AssertionError("trainer made no progress")


def test_sigterm_saves_and_exits_cleanly(tmp_path):
  wd, res = tmp_path / "run", tmp_path / "res.json"
  proc = _start(wd, res, "train.total_steps=100000", "data.sleep_s=0.05",
                "checkpoint.every_steps=0")
  _wait_for_rows(wd, 3, proc)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out[-3000:]
  r = json.loads(res.read_text())
  assert r["stop"] == "signal" and r["step"] >= 3
  # The only checkpoint is the one written on SIGTERM, at the step reached, complete.
  assert ckpt_lib.Checkpointer(wd).all_steps() == [r["step"]]
  cfg, params, step = checkpoints.load_params(wd)
  assert step == r["step"]
  assert all(np.isfinite(x).all() for x in __import__("jax").tree.leaves(params))


@pytest.mark.slow
def test_kill9_during_save_keeps_last_complete_checkpoint(tmp_path):
  wd, res = tmp_path / "run", tmp_path / "res.json"
  # A checkpoint every step: the process is almost always inside an async save.
  proc = _start(wd, res, "train.total_steps=100000", "checkpoint.every_steps=1",
                "checkpoint.keep=100")
  _wait_for_rows(wd, 6, proc)
  proc.kill()
  proc.communicate(timeout=60)
  ckdir = wd / "checkpoints"
  leftovers = [p.name for p in ckdir.iterdir() if not p.name.isdigit()]
  steps = ckpt_lib.Checkpointer(wd).all_steps()
  assert steps, os.listdir(ckdir)
  _, params, step = checkpoints.load_params(wd)
  assert step == max(steps)
  # Resume with the same command: continues from the last complete step and finishes.
  proc = _start(wd, res, "train.total_steps=100000", "checkpoint.every_steps=1",
                "checkpoint.keep=100", f"train.halt_at_step={step + 2}")
  out, _ = proc.communicate(timeout=240)
  assert proc.returncode == 0, out[-3000:]
  assert f"resumed from step {step}" in out, (leftovers, out[-2000:])
  assert json.loads(res.read_text())["step"] == step + 2
