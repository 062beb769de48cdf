"""The main job's result as a benchmark: `make demo` as is (procedural world, `tiny` trained for
its fixed step count on this machine's CPU cores, held-out evaluation), run in its own workdir.

    python -m bench.bench_demo [--workdir outputs/bench_demo] [-- DEMO_FLAGS...]

Runs `python -m instant3d_jax.demo --workdir WORKDIR` (the data set under WORKDIR/data is cached
between runs; training starts from scratch in WORKDIR/lrm, which must not exist yet: this script
never deletes a run) and writes the held-out PSNR / SSIM / LPIPS, the steps and the wall time
(with the step time and the load: time is this benchmark's figure, the quality is the same on
every machine) to bench/results/demo.md. Takes the demo's training (≤ 15 minutes on 2 cores)
plus data generation and evaluation: it is part of `make bench-long`, not `make bench`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench import common
from instant3d_jax.eval import protocol


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", default="outputs/bench_demo")
  ap.add_argument("--out", default="bench/results/demo.md")
  ap.add_argument("demo_flags", nargs="*", help="extra flags for instant3d_jax.demo (after --)")
  args = ap.parse_args()
  run_dir = Path(args.workdir) / "lrm"
  if run_dir.exists():
    print(f"error: {run_dir} exists; remove it (or pass another --workdir) for a fresh run",
          file=sys.stderr)
    return 2
  prov = common.Provenance.start()
  cmd = [sys.executable, "-m", "instant3d_jax.demo", "--workdir", args.workdir,
         *args.demo_flags]
  if subprocess.call(cmd) != 0:
    return 1
  summary = json.loads((run_dir / "train_summary.json").read_text())
  evals = sorted(run_dir.glob("eval/step_*/eval.json"),
                 key=lambda p: int(p.parent.name.split("_")[-1]))
  if not evals:
    print(f"error: no eval/step_*/eval.json under {run_dir}", file=sys.stderr)
    return 1
  result = json.loads(evals[-1].read_text())
  lines = [
      "### `make demo` as is: held-out quality after its fixed step count",
      "",
      f"`python -m instant3d_jax.demo --workdir {args.workdir}"
      + "".join(f" {a}" for a in args.demo_flags) + "`: "
      f"{summary['step']} steps in {summary['wall_s']:.0f} s (compile {summary['compile_s']:.0f} "
      f"s, {summary['wall_s'] / max(summary['step'], 1):.2f} s/step, stop: "
      f"{summary['stop_reason']}"
      + (f", budget {summary['time_budget_s']:.0f} s" if summary.get("time_budget_s") else "")
      + "); evaluated on "
      f"{result['num_objects']} held-out objects × {result['num_views_per_object']} views.",
      "",
  ]
  # The eval's own table (model, background-only and mean-colour rows; foreground PSNR and colour
  # error beside PSNR/SSIM/LPIPS), without its title and protocol paragraph.
  table = protocol.markdown_table(result).splitlines()
  lines += table[next(i for i, l in enumerate(table) if l.startswith("| |")):]
  print(f"wrote {common.write_result(args.out, lines, prov)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
