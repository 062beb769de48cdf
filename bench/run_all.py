"""Runs the benchmarks and rebuilds BENCHMARKS.md from their result files.

    python -m bench.run_all                 # `make bench`: every table that takes minutes
    python -m bench.run_all --long          # `make bench-long`: the runs that take hours
    python -m bench.run_all --only bench_lrm bench_unet
    python -m bench.run_all --merge_only    # only rebuild BENCHMARKS.md

Each benchmark writes Markdown snippets to `bench/results/<name>.md` through `bench/common.py`,
which ends every snippet with its provenance (command, commit, date, CPU, load average before and
after). The benchmarks run one after another, never in parallel (they time things). BENCHMARKS.md
is then rebuilt from the snippets alone: the text here holds no figure. Tuning logs
(`bench/results/*_tuning.md`: a record of experiments, not a reproducible table) are linked,
not included. A snippet without a provenance line is flagged as such in BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

from bench import common

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OUT = ROOT / "BENCHMARKS.md"

MEASURED, MEMORY, LONG, DEVICE = "measured", "memory", "long", "device"


@dataclasses.dataclass(frozen=True)
class Bench:
  name: str                      # module bench.<name>
  runs: tuple[tuple[str, ...], ...]  # one argument list per invocation, in order
  results: tuple[str, ...]       # the snippets it writes under bench/results/
  section: str = MEASURED        # MEASURED / MEMORY (compiler reports + estimates) / LONG
  long: bool = False             # only under `make bench-long`


def _train_args() -> tuple[str, ...]:
  args = ("--variants", "tiny,small", "--devices", "1,2,4,8", "--steps", "3",
          "--scaling_batch", "8",
          "--set", "small:train.global_batch_size=2,small:model.render.remat_field=True")
  data = ROOT / "outputs" / "demo" / "data"   # `make demo`'s data set: adds the loader check
  return args + (("--data_dir", "outputs/demo/data") if data.is_dir() else ())


def _tpu_plan_runs() -> tuple[tuple[str, ...], ...]:
  """bench/tpu_plan.py's table, row by row: the reconstructor's `large` train step on the
  8/64/128-chip v5p plans and the 256-chip v5e/v6e slices, the SDXL fine-tuning step on 8 v5p
  chips, SDXL sampling and the text-to-3D reconstruction batch on the three big slices. `auto`
  rows start at the batch the previous measurement found (`--hint`); compiles are cached in
  bench/results/tpu_plan_cache.json, so a rerun only compiles what changed."""
  plans = (("lrm_train", "v5p:2x2x2", "1"), ("lrm_train", "v5p:4x4x4", "auto:33"),
           ("lrm_train", "v5p:4x4x8", "auto:33"), ("lrm_train", "v5e:16x16", "auto:6"),
           ("lrm_train", "v6e:16x16", "1"), ("sdxl_finetune", "v5p:2x2x2", "1"),
           ("sdxl_sample", "v5p:4x4x8", "auto:63"), ("sdxl_sample", "v5e:16x16", "1"),
           ("sdxl_sample", "v6e:16x16", "1"), ("text3d", "v5p:4x4x8", "1"),
           ("text3d", "v5e:16x16", "auto:9"), ("text3d", "v6e:16x16", "1"))
  runs = []
  for job, topology, batch in plans:
    b, _, hint = batch.partition(":")
    runs.append(("--topology", topology, "--job", job, "--per_chip_batch", b)
                + (("--hint", hint) if hint else ()))
  return tuple(runs)


BENCHES = (
    Bench("bench_lrm", (("--skip_memory",),), ("lrm.md",)),
    Bench("bench_train", (_train_args(),), ("train.md",)),
    Bench("bench_rendering", (("--runs", "3", "--image_runs", "3", "--res", "512",
                               "--chunk", "4096"),), ("rendering.md",)),
    Bench("bench_data", ((),), ("data.md",)),
    Bench("bench_unet", (("--rounds", "10", "--iters", "3", "--threads", "1"),
                         ("--rounds", "6", "--iters", "2", "--append")), ("unet.md",)),
    Bench("bench_sdxl_sampling", (("--rounds", "3", "--steps", "10", "--size", "256",
                                   "--threads", "1"),), ("sdxl_sampling.md",)),
    # Needs `make demo` and `make demo-mv`'s models (skipped with a message without them).
    Bench("bench_text3d", ((),), ("text3d.md",)),
    Bench("bench_memory_plan", (("--plans", "8,64,128", "--objects_per_device", "1"),),
          ("memory_plan.md",), MEMORY),
    Bench("bench_lrm_memory", (), ("lrm_memory.md",), MEMORY),  # written by bench_lrm (below)
    Bench("bench_mv_memory", (("--plans", "8,64"),), ("mv_memory_plan.md",), MEMORY),
    Bench("bench_demo", ((),), ("demo.md",), LONG, long=True),
    Bench("scaling", ((),), ("scaling.md",), LONG, long=True),   # writes scaling.png too
    # The suite's cross-kernel comparisons per XLA:CPU instruction set and CPU count (tests/
    # tolerance.py; 15 pytest sessions), and trained parameters under the same settings.
    Bench("tolerances", ((),), ("tolerances.md",), LONG, long=True),
    Bench("bit_identity", (("--data_dir", "outputs/demo/data"),), ("bit_identity.md",), LONG,
          long=True),
    # The TPU compiler on this CPU machine (libtpu, `make install-aot`): minutes per compile.
    Bench("tpu_plan", _tpu_plan_runs(), ("tpu_plan.md",), MEMORY, long=True),
    # The train state's init programs before and after issue 31, compiled for a TPU topology
    # (libtpu on this CPU machine; the full-size one-program init takes minutes to compile).
    Bench("bench_state_init", ((),), ("state_init.md",), MEMORY, long=True),
    # Written on a GPU machine by `bash bench/device/run.sh` and copied here (bench/device/
    # README.md); `make bench` never runs it (no runs), it only folds the table in.
    Bench("device", (), ("device.md",), DEVICE),
)
# bench_lrm's `large` compile estimates are its own run (minutes of compiling), same module.
_MODULE = {"bench_lrm_memory": "bench_lrm"}
_RUNS = {"bench_lrm_memory": (("--skip_timing",),)}

HEADER = """# Benchmarks

Generated by `python -m bench.run_all` (`make bench`; the runs that take hours: `make
bench-long`) from the result files in `bench/results/`, which the benchmark scripts write. Each
section ends with its provenance: the command that produced it, the commit, the date, the CPU and
the load average before and after the run (a high load average means other jobs shared the
machine, and wall times are then pessimistic). Speed is never asserted in tests; comparisons with
the PyTorch reference are measured side by side in one run and reported as ratios.
"""

SECTIONS = {
    MEASURED: "## Measured (each section names its machine and load)\n",
    MEMORY: ("## Memory: compiler reports and analytic estimates\n\n"
             "Nothing here ran on an accelerator: the figures are XLA's compile-time memory "
             "analysis (on CPU; for the TPU plans, the TPU compiler run on this CPU machine) "
             "and, in the tables marked **Estimates**, analytic counts.\n"),
    LONG: "## Long runs (`make bench-long`)\n",
    DEVICE: "## Accelerator (`bash bench/device/run.sh` on a GPU machine)\n",
}
# What the device section says until a device run's table has been copied to bench/results/.
DEVICE_NOT_MEASURED = (
    "Not measured yet: no accelerator run has been folded in. `bash bench/device/run.sh` on a "
    "GPU machine (bench/device/README.md) writes `device.md`; copy it to `bench/results/` and "
    "run `python -m bench.run_all --merge_only`.\n")


def _runs(b: Bench) -> tuple[tuple[str, ...], ...]:
  return _RUNS.get(b.name, b.runs)


def run(b: Bench) -> bool:
  ok = True
  for args in _runs(b):
    cmd = [sys.executable, "-m", f"bench.{_MODULE.get(b.name, b.name)}", *args]
    print("==", " ".join(cmd[1:]), flush=True)
    ok = subprocess.call(cmd, cwd=ROOT) == 0 and ok
  return ok


def _demote(text: str) -> str:
  """Headings of a snippet one level down (sections are `##` here); images the snippet links
  beside itself (`](x.png)`) relinked to `bench/results/` from BENCHMARKS.md."""
  out = []
  for line in text.splitlines():
    line = re.sub(r"\]\(([\w.-]+\.(?:png|jpg|svg))\)", r"](bench/results/\1)", line)
    out.append("#" + line if line.startswith("#") and not line.startswith("#!") else line)
  return "\n".join(out)


def merge(out: Path = OUT) -> Path:
  parts = [HEADER]
  for section in (DEVICE, MEASURED, MEMORY, LONG):
    parts.append(SECTIONS[section])
    for b in BENCHES:
      if b.section != section:
        continue
      for name in b.results:
        path = RESULTS / name
        if not path.exists() and section == DEVICE:
          parts.append(DEVICE_NOT_MEASURED)
          continue
        if not path.exists():
          parts.append(f"`bench/results/{name}`: not run yet "
                       f"(`python -m bench.run_all --only {b.name}`).\n")
          continue
        text = path.read_text().strip()
        if section == DEVICE and "DRY RUN" in text:
          text += ("\n\n**This is a CPU dry run, not a device measurement** (`bash "
                   "bench/device/run.sh --dry_run` writes to a temporary folder; copy only a "
                   "device run's `device.md` here).")
        if common.read_provenance(text) is None:
          text += ("\n\n**No provenance recorded** (written before the benchmarks recorded "
                   "their command, commit and load average): rerun with `python -m "
                   f"bench.run_all --only {b.name}`.")
        parts.append(_demote(text) + "\n")
  logs = sorted(RESULTS.glob("*_tuning.md"))
  if logs:
    parts.append("## Tuning logs\n\nRecords of experiments, kept as logs rather than tables "
                  "(they are not rerun by `make bench`):\n")
    parts.append("\n".join(f"- [`bench/results/{p.name}`](bench/results/{p.name}): "
                           f"{_title(p)}" for p in logs) + "\n")
  tmp = out.with_name(out.name + ".tmp")
  tmp.write_text("\n".join(parts))
  tmp.replace(out)
  return out


def _title(path: Path) -> str:
  for line in path.read_text().splitlines():
    if line.startswith("#"):
      return line.lstrip("#").strip()
  return path.stem


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--only", nargs="*", help="benchmark names (e.g. bench_rendering)")
  ap.add_argument("--long", action="store_true", help="the long runs (make bench-long)")
  ap.add_argument("--merge_only", action="store_true", help="only rebuild BENCHMARKS.md")
  args = ap.parse_args()
  failed = []
  if not args.merge_only:
    names = [b.name for b in BENCHES]
    if args.only:
      unknown = sorted(set(args.only) - set(names))
      if unknown:
        ap.error(f"unknown benchmarks {unknown}; available: {names}")
      todo = [b for b in BENCHES if b.name in args.only]
    else:
      todo = [b for b in BENCHES if b.long == args.long]
    for b in todo:
      if not run(b):
        failed.append(b.name)
  print(f"wrote {merge()}")
  if failed:
    print(f"failed: {failed}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
