"""Runs every benchmark (`bench/bench_*.py`) and rebuilds BENCHMARKS.md from their results.

Each benchmark writes a Markdown snippet to `bench/results/<name>.md` (figure, command, machine,
date). This script runs them one after another (never in parallel: they time things) and then
concatenates the snippets under the fixed header of BENCHMARKS.md, so the file always shows the
latest measured figures. Usage: `make bench`, or `python -m bench.run_all [--only NAME ...]
[--merge_only]`.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
HEADER = """# Benchmarks

Every figure comes with the command that produced it, the machine and the date. Speed is never
asserted in tests; it is measured here (`make bench` reruns everything and rebuilds this file from
`bench/results/*.md`). Comparisons with the PyTorch reference are measured side by side in one run
and reported as ratios, since machines are noisy.
"""


def merge() -> Path:
  parts = [HEADER]
  for snippet in sorted(RESULTS.glob("*.md")):
    parts.append(snippet.read_text().strip() + "\n")
  out = ROOT / "BENCHMARKS.md"
  tmp = out.with_suffix(".md.tmp")
  tmp.write_text("\n".join(parts))
  tmp.replace(out)
  return out


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument("--only", nargs="*", help="benchmark names (e.g. bench_rendering)")
  ap.add_argument("--merge_only", action="store_true", help="only rebuild BENCHMARKS.md")
  args = ap.parse_args()
  failed = []
  if not args.merge_only:
    names = sorted(p.stem for p in (ROOT / "bench").glob("bench_*.py"))
    if args.only:
      unknown = sorted(set(args.only) - set(names))
      if unknown:
        ap.error(f"unknown benchmarks {unknown}; available: {names}")
      names = [n for n in names if n in args.only]
    for name in names:
      print(f"== {name}", flush=True)
      if subprocess.call([sys.executable, "-m", f"bench.{name}"], cwd=ROOT) != 0:
        failed.append(name)
  print(f"wrote {merge()}")
  if failed:
    print(f"failed: {failed}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
