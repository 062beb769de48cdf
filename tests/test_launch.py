"""The launch scripts (launch/) and the commands of launch/README.md parse (`bash -n`), and the
TPU launcher hands gcloud the training command it documents (gcloud replaced by a recorder)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
SCRIPTS = sorted(p for p in LAUNCH.iterdir() if p.suffix in (".sh", ".sbatch"))
BASH = shutil.which("bash")

pytestmark = pytest.mark.skipif(BASH is None, reason="bash not installed")


def test_there_are_scripts():
  assert {p.name for p in SCRIPTS} >= {"tpu_pod.sh", "slurm_gpu.sbatch", "local_multiprocess.sh"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses(script):
  r = subprocess.run([BASH, "-n", str(script)], capture_output=True, text=True)
  assert r.returncode == 0, r.stderr


def _readme_blocks() -> list[str]:
  """The indented command blocks of launch/README.md (4-space Markdown code blocks)."""
  blocks, cur = [], []
  for line in (LAUNCH / "README.md").read_text().splitlines() + [""]:
    if line.startswith("    "):
      cur.append(line[4:])
    elif cur and line.strip() == "":
      cur.append("")
    elif cur:
      blocks.append("\n".join(cur).strip())
      cur = []
  if cur:
    blocks.append("\n".join(cur).strip())
  return [b for b in blocks if b]


def test_readme_commands_parse():
  blocks = _readme_blocks()
  text = "\n".join(blocks)
  for needed in ("gcloud compute tpus tpu-vm create", "make install-tpu", "launch/tpu_pod.sh",
                 "sbatch", "make install-gpu"):
    assert needed in text, needed
  for b in blocks:
    r = subprocess.run([BASH, "-n"], input=b + "\n", capture_output=True, text=True)
    assert r.returncode == 0, f"{r.stderr}\n---\n{b}"


@pytest.mark.parametrize("script", ["tpu_pod.sh", "local_multiprocess.sh"])
def test_usage_without_arguments(script):
  r = subprocess.run([BASH, str(LAUNCH / script)], capture_output=True, text=True)
  assert r.returncode == 2
  assert script in r.stdout  # the usage lines name the script


def test_tpu_pod_runs_the_training_command_on_every_worker(tmp_path):
  """With a recording `gcloud` on PATH: ssh to all workers, cd into the checkout, activate the
  venv, and run train_lrm with the arguments quoted as given (a space survives)."""
  log = tmp_path / "gcloud.args"
  fake = tmp_path / "bin" / "gcloud"
  fake.parent.mkdir()
  fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {log}\n')
  fake.chmod(0o755)
  env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
  r = subprocess.run([BASH, str(LAUNCH / "tpu_pod.sh"), "my-tpu", "us-west4-a", "my-project",
                      "--", "--config", "configs/lrm.py:small", "--workdir", "gs://b/run 1"],
                     env=env, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr
  args = log.read_text().splitlines()
  assert args[:5] == ["compute", "tpus", "tpu-vm", "ssh", "my-tpu"]
  assert "--worker=all" in args
  assert args[args.index("--zone") + 1] == "us-west4-a"
  assert args[args.index("--project") + 1] == "my-project"
  command = args[args.index("--command") + 1]
  assert re.search(r"cd \$HOME/instant3d-jax && source \.venv/bin/activate && python -m "
                   r"instant3d_jax\.train_lrm ", command), command
  # What the remote shell would run: the workdir with its space is one argument.
  tail = command.split("instant3d_jax.train_lrm", 1)[1]
  words = subprocess.run([BASH, "-c", f'printf "%s\\n" {tail}'], capture_output=True,
                         text=True).stdout.splitlines()
  assert words == ["--config", "configs/lrm.py:small", "--workdir", "gs://b/run 1"]
