"""Where trained parameters are bit-identical: one short training run repeated under XLA:CPU
instruction-set limits and CPU counts, compared by parameter hash and by largest difference.

    python -m bench.bit_identity --data_dir outputs/demo/data [--steps 20]
        [--settings native/2,native/2,native/1,native/4,AVX2/2,AVX/2,SSE4_2/2]

Each setting (`ISA/CPUs`, as in bench/tolerances.py: `--xla_cpu_max_isa`, and the CPU count
XLA:CPU's thread pools see through the preloaded shim) trains `configs/lrm.py:tiny` (the
`make demo` model) for `--steps` steps from the same data set into a fresh workdir, on one CPU
device (the demo puts one device per core; one device here keeps the device count out of the
comparison). A setting listed twice shows run-to-run repeatability. Writes
bench/results/bit_identity.md: per setting the parameter hash (checkpoint.params_sha256), whether
it equals the first setting's, the largest absolute parameter difference and the relative L2
of the whole parameter vector.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import common
from bench import tolerances

RESULTS = common.ROOT / "bench" / "results"


def train(setting: str, workdir: Path, data_dir: str, steps: int, shim: Path) -> float:
  isa, cpus = setting.split("/")
  env = tolerances.setting_env(isa, cpus, shim, drop_flags=("device_count",))
  env["JAX_PLATFORMS"] = "cpu"
  cmd = [sys.executable, "-m", "instant3d_jax.train_lrm", "--config",
         str(common.ROOT / "configs" / "lrm.py") + ":tiny", "--workdir", str(workdir),
         f"--config.data_dir={data_dir}", "--config.data.source=records",
         f"--config.train.total_steps={steps}", f"--config.optimizer.warmup_steps={steps // 4}",
         "--config.checkpoint.every_steps=0", "--config.train.image_every=0",
         "--config.mesh.num_devices=1", "--config.mesh.data=1"]
  t0 = time.time()
  subprocess.run(cmd, cwd=common.ROOT, env=env, check=True, capture_output=True, text=True)
  return time.time() - t0


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--data_dir", required=True, help="a records data set (e.g. make demo's)")
  ap.add_argument("--steps", type=int, default=20)
  ap.add_argument("--settings", default="native/2,native/2,native/1,native/4,AVX2/2,AVX/2,"
                  "SSE4_2/2")
  ap.add_argument("--out", default=str(RESULTS / "bit_identity.md"))
  args = ap.parse_args(argv)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # reading checkpoints here needs no accelerator
  prov = common.Provenance.start()
  from instant3d_jax.base import checkpoint as ckpt_lib
  from instant3d_jax.convert import checkpoints
  import jax
  rows, first = [], None
  with tempfile.TemporaryDirectory() as tmp:
    shim = tolerances.build_shim(Path(tmp))
    for i, setting in enumerate(args.settings.split(",")):
      wd = Path(tmp) / f"run{i}"
      wall = train(setting, wd, args.data_dir, args.steps, shim)
      _, params, step = checkpoints.load(wd)
      leaves = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(params)]
      digest = ckpt_lib.params_sha256(params)
      if first is None:
        first = leaves
      d_abs = max(float(np.abs(a - b).max()) for a, b in zip(leaves, first))
      # Relative L2 over the whole parameter vector (per-leaf ratios blow up on leaves near 0).
      d_rel = float(np.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(leaves, first))
                            / sum(float(np.sum(b ** 2)) for b in first)))
      rows.append((setting, digest, step, d_abs, d_rel, wall))
      print(f"{setting}: {digest[:16]} step {step} max|Δ| {d_abs:.2e} ({wall:.0f} s)", flush=True)
  ref = rows[0][1]
  lines = ["## Bit-identity of trained parameters per instruction set and CPU count", "",
           f"`configs/lrm.py:tiny` trained {args.steps} steps on one CPU device from the same "
           f"data set, once per setting `ISA/CPUs`; compared with the first row.", "",
           "| setting | parameter hash | equal to row 1 | max abs Δ | ‖Δ‖₂ / ‖θ‖₂ |",
           "|---|---|---|---:|---:|"]
  for setting, digest, _, d_abs, d_rel, _ in rows:
    lines.append(f"| {setting} | `{digest[:16]}` | {'yes' if digest == ref else 'no'} | "
                 f"{d_abs:.1e} | {d_rel:.1e} |")
  common.write_result(args.out, lines, prov)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
