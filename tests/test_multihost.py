"""Two local processes (gloo collectives, 2 CPU devices each) train the toy job 3 steps through
launch/local_multiprocess.sh; the losses equal a one-process 4-device run (1e-5 relative)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from instant3d_jax.train import loop
from tests import train_toy
from tests import tolerance

ROOT = Path(__file__).resolve().parents[1]


def test_two_processes_match_one_process(tmp_path):
  cfg = train_toy.get_config()
  cfg.train.total_steps = 3
  one = loop.run(cfg, tmp_path / "one", train_toy.make_task(cfg), log=lambda *_: None)
  ref = [h["loss"] for h in one.history]

  env = dict(os.environ)
  # The launcher sets each process's device count; other XLA flags (an instruction-set limit of
  # bench/tolerances.py) pass through.
  env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                              if "xla_force_host_platform_device_count" not in f)
  env["PYTHONPATH"] = str(ROOT)
  result = tmp_path / "two.json"
  cmd = ["bash", str(ROOT / "launch/local_multiprocess.sh"), "2", "--devices_per_process", "2",
         "--logdir", str(tmp_path / "logs"), "--",
         sys.executable, str(ROOT / "tests/train_toy.py"), "--workdir", str(tmp_path / "two"),
         "--result", str(result), "--set", "train.total_steps=3"]
  proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
  logs = proc.stdout + proc.stderr + "".join(
      p.read_text() for p in (tmp_path / "logs").glob("*.log"))
  assert proc.returncode == 0, logs[-3000:]
  assert "processes: 2" in proc.stdout, proc.stdout[-2000:]
  two = json.loads(result.read_text())["losses"]
  assert len(two) == 3
  tolerance.within("multihost.two_processes_vs_one", two, ref, 1e-5, "rel")
  # Only process 0 wrote logs; both processes' checkpoints are one orbax step.
  assert (tmp_path / "two" / "metrics.jsonl").exists()
  assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()
                if p.name.isdigit()) == ["2", "3"]
