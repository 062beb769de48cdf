"""Measured spread of the suite's cross-kernel comparisons, per instruction set and CPU count.

    python -m bench.tolerances [--isas SSE4_2,AVX,AVX2,AVX512,native] [--cpus 1,2,4]

The tests that compare two runs XLA:CPU computes with different kernels (other batch shapes,
device counts, sharding, chunking or summation order) check through `tests/tolerance.within`.
This runs those tests (found in the test sources: every test function that calls
`tolerance.within`) once per setting, with `INSTANT3D_TOLERANCE_LOG` set, and tabulates the
largest value each check measured:
- instruction set: `XLA_FLAGS=--xla_cpu_max_isa=ISA` (the pinned jaxlib's flag; `native` leaves
  it unset: everything the CPU has);
- CPUs: the number of CPUs the process may run on as XLA:CPU's thread pools see it. A small
  preloaded library (compiled here with `cc` from the source below) makes `sched_getaffinity`,
  `get_nprocs` and `sysconf` report N CPUs, so the pools get the threads, and the work the
  partition a machine of N cores gives them, whatever this machine has; rounding depends on the
  partition, not on how many cores then run it.
Writes bench/results/tolerances.md (the table: bound in the test, the largest measured value per
setting, the ratio bound / largest) and tolerances.json. Each run is a pytest session of the
selected tests (slow ones included), so a row that fails its bound shows as a failed run.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import common

ROOT = common.ROOT
RESULTS = ROOT / "bench" / "results"

SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/sysinfo.h>
#include <unistd.h>
static int fake(void) { const char *s = getenv("FAKE_NCPU"); return s ? atoi(s) : 0; }
int sched_getaffinity(pid_t pid, size_t size, cpu_set_t *mask) {
  static int (*real)(pid_t, size_t, cpu_set_t *);
  if (!real) real = dlsym(RTLD_NEXT, "sched_getaffinity");
  int r = real(pid, size, mask), n = fake();
  if (r == 0 && n > 0) { CPU_ZERO_S(size, mask); for (int i = 0; i < n; i++) CPU_SET_S(i, size, mask); }
  return r;
}
int get_nprocs(void) {
  static int (*real)(void);
  if (fake() > 0) return fake();
  if (!real) real = dlsym(RTLD_NEXT, "get_nprocs");
  return real();
}
int get_nprocs_conf(void) {
  static int (*real)(void);
  if (fake() > 0) return fake();
  if (!real) real = dlsym(RTLD_NEXT, "get_nprocs_conf");
  return real();
}
long sysconf(int name) {
  static long (*real)(int);
  if (!real) real = dlsym(RTLD_NEXT, "sysconf");
  if (fake() > 0 && (name == _SC_NPROCESSORS_ONLN || name == _SC_NPROCESSORS_CONF)) return fake();
  return real(name);
}
"""


def build_shim(folder: Path) -> Path:
  src, lib = folder / "fakecpu.c", folder / "libfakecpu.so"
  src.write_text(SHIM_C)
  subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(lib), str(src), "-ldl"], check=True)
  return lib


def tolerance_tests(tests: Path = ROOT / "tests") -> list[str]:
  """Node ids of the test functions that call `tolerance.within` (module-level functions)."""
  ids = []
  for path in sorted(tests.glob("test_*.py")):
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:
      if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test")):
        continue
      if any(isinstance(n, ast.Attribute) and n.attr == "within"
             and isinstance(n.value, ast.Name) and n.value.id == "tolerance"
             for n in ast.walk(node)):
        ids.append(f"{path.relative_to(ROOT).as_posix()}::{node.name}")
  return ids


def setting_env(isa: str, cpus: int | str, shim: Path, drop_flags: tuple[str, ...] = ()
                ) -> dict[str, str]:
  """This process's environment for one setting: `--xla_cpu_max_isa=ISA` in XLA_FLAGS (none for
  `native`; XLA flags containing any of `drop_flags` removed) and the shim reporting `cpus`."""
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if "xla_cpu_max_isa" not in f and not any(d in f for d in drop_flags)]
  if isa != "native":
    flags.append(f"--xla_cpu_max_isa={isa}")
  env.update(XLA_FLAGS=" ".join(flags), FAKE_NCPU=str(cpus), LD_PRELOAD=str(shim))
  return env


def run_setting(ids: list[str], isa: str, cpus: int, shim: Path, log: Path,
                workers: int) -> dict:
  env = setting_env(isa, cpus, shim)
  env["INSTANT3D_TOLERANCE_LOG"] = str(log)
  env["INSTANT3D_TOLERANCE_MEASURE_ONLY"] = "1"   # tabulate every check; bounds judged below
  cmd = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider",
         "-m", "", "-n", str(workers), "--dist", "loadfile", *ids]
  t0 = time.time()
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
  tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
  return {"isa": isa, "cpus": cpus, "returncode": proc.returncode, "wall_s": time.time() - t0,
          "summary": tail[0]}


def table(records: list[dict], settings: list[tuple[str, int]]) -> list[str]:
  checks: dict[str, dict] = {}
  for r in records:
    c = checks.setdefault(r["check"], {"metric": r["metric"], "bound": r["bound"], "max": {}})
    key = (r["isa"], r["cpus"])
    c["max"][key] = max(c["max"].get(key, 0.0), r["value"])
  head = ["check", "metric", "bound"] + [f"{i}/{n}" for i, n in settings] + ["max", "bound/max"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name in sorted(checks):
    c = checks[name]
    vals = [c["max"].get(s) for s in settings]
    top = max((v for v in vals if v is not None), default=0.0)
    ratio = f"{c['bound'] / top:.0f}×" if top else "∞ (all 0)"
    cells = [f"`{name}`", c["metric"], f"{c['bound']:.0e}"] + [
        "–" if v is None else ("0" if v == 0 else f"{v:.1e}") for v in vals] + [
            "0" if top == 0 else f"{top:.1e}", ratio]
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--isas", default="SSE4_2,AVX,AVX2,AVX512,native")
  ap.add_argument("--cpus", default="1,2,4")
  ap.add_argument("--workers", type=int, default=2, help="pytest-xdist workers per setting")
  ap.add_argument("--out", default=str(RESULTS / "tolerances.md"))
  args = ap.parse_args(argv)
  prov = common.Provenance.start()
  ids = tolerance_tests()
  settings = [(i, int(n)) for i in args.isas.split(",") for n in args.cpus.split(",")]
  records, runs = [], []
  with tempfile.TemporaryDirectory() as tmp:
    shim = build_shim(Path(tmp))
    for k, (isa, cpus) in enumerate(settings):
      log = Path(tmp) / f"{isa}_{cpus}.jsonl"
      log.touch()
      run = run_setting(ids, isa, cpus, shim, log, args.workers)
      runs.append(run)
      for line in log.read_text().splitlines():
        records.append(dict(json.loads(line), isa=isa, cpus=cpus))
      print(f"[{k + 1}/{len(settings)}] isa {isa}, {cpus} CPUs: {run['summary']} "
            f"({run['wall_s']:.0f} s)", flush=True)
  lines = ["## Cross-kernel comparisons per instruction set and CPU count", "",
           f"The largest value each check measured, per setting `ISA/CPUs` (`--xla_cpu_max_isa`; "
           f"`native`: no limit; CPUs as XLA:CPU's thread pools see them), over the "
           f"{len(ids)} tests that call `tests/tolerance.within`. Metric `abs` is max|a − b|, "
           f"`rel` max|a − b| / max|b|. A bound must be at least 4× the largest value.", ""]
  lines += table(records, settings)
  lines += ["", "Runs: " + "; ".join(
      f"{r['isa']}/{r['cpus']}: {r['summary'] or 'exit ' + str(r['returncode'])} "
      f"({r['wall_s']:.0f} s)" for r in runs)]
  out = common.write_result(args.out, lines, prov)
  Path(out).with_suffix(".json").write_text(json.dumps(
      {"tests": ids, "runs": runs, "records": records, "provenance": prov.as_dict()}, indent=1))
  print(f"wrote {out}")
  return 0 if all(r["returncode"] == 0 for r in runs) else 1


if __name__ == "__main__":
  sys.exit(main())
