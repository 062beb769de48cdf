"""The train state's initialisation programs before and after issue 31, compiled ahead of time for
a TPU topology on this CPU machine (bench/tpu_plan.py's machinery: libtpu's compiler, no TPU).

    python -m bench.bench_state_init [--topology v5p:2x2x1] [--jobs lrm_large,sdxl]

Before: one jit over the whole step-0 state with the state shardings as its outputs'
(`loop.build_state_one_program`): every parameter's random draw, the AdamW moments and the EMA in
one program; on the H200 (2026-11-30) XLA:GPU spent over 90 s compiling it at full size.
After (`loop.build_state`, `loop.StateInit`): the random parameters drawn one leaf at a time with
their shardings (`train/leafwise.py`: the init traced once, its forward pass dropped, one small
program per leaf, shared by the leaves of the same structure; the same ops, so on one backend the
same values), then the optimizer state and the EMA from the placed params the same way
(`step.make_rest_fn`: zeros and copies, one program per shape and sharding). Per program: ops in the lowered StableHLO (what the
compiler is given), instructions in the compiled HLO (all computations, fusions' bodies included),
lowering and compile seconds; for the per-leaf programs the sums over the distinct programs (each
compiled once) and the largest. All compiled for the TPU topology. Jobs: `lrm_large` (the
reconstructor's `large`, bench/bench_memory_plan.py's trainer config: bf16 compute, fp32 state,
FSDP) and `sdxl` (the stage-1 trainer at SDXL base's shapes, bench/bench_mv_memory.py's config:
UNet trained, fp32 masters + AdamW + EMA). Nothing is materialised: every program is lowered on
abstract inputs and compiled, never run (the SDXL state would need ~42 GB).

Writes bench/results/state_init.md (folded into BENCHMARKS.md by bench/run_all.py) and
bench/results/state_init.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")   # libtpu only compiles (bench/tpu_plan.py)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from bench import common, tpu_plan  # noqa: E402

OUT_MD = common.ROOT / "bench" / "results" / "state_init.md"
OUT_JSON = common.ROOT / "bench" / "results" / "state_init.json"

_MLIR_OP = re.compile(r"^\s*(?:%[^=]*=\s*)?\"?([a-z_]+\.[a-z_.]+)")
_HLO_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*\S")


def mlir_ops(text: str) -> int:
  """Operations in a lowered module's text (one per line; the `func.func` / `module` headers not
  counted)."""
  n = 0
  for line in text.splitlines():
    m = _MLIR_OP.match(line)
    if m and m.group(1) not in ("func.func",):
      n += 1
  return n


def hlo_instructions(text: str) -> int:
  """Instructions in compiled HLO text, every computation (fusion bodies included)."""
  return sum(1 for line in text.splitlines() if _HLO_INSTR.match(line))


def measure(jitted, *args) -> dict:
  """Lower `jitted` on `args` (abstract) and compile it: op counts and seconds."""
  t0 = time.perf_counter()
  lowered = jitted.lower(*args)
  lower_s = time.perf_counter() - t0
  ops = mlir_ops(lowered.as_text())
  t0 = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  try:
    text = compiled.as_text()
  except Exception:  # noqa: BLE001 — a backend without HLO text: count unknown
    text = ""
  return dict(lowered_ops=ops, hlo_instructions=hlo_instructions(text) if text else None,
              lower_s=round(lower_s, 2), compile_s=round(compile_s, 2),
              load_after=tuple(round(x, 2) for x in os.getloadavg()))


def _lrm_large(devices):
  from bench import bench_memory_plan as bmp
  from data_pipeline import datasets
  from instant3d_jax.train import lrm_task
  n = len(devices)
  mesh = tpu_plan.default_mesh(n)
  cfg = bmp.large_config(n, mesh, 1)
  return cfg, lrm_task.make_task(cfg, datasets.planned(cfg))


def _sdxl(devices):
  from bench import bench_mv_memory as bmv
  from instant3d_jax.train import mv_task
  n = len(devices)
  cfg = bmv.sdxl_config(n, tpu_plan.default_mesh(n), 1)
  comps = mv_task.build_components(cfg, abstract=True)
  return cfg, mv_task.make_task(cfg, comps, with_flops=False)


JOBS = {"lrm_large": (_lrm_large, "LRM `large` (reconstructor trainer)"),
        "sdxl": (_sdxl, "SDXL multi-view fine-tuning (stage-1 trainer)")}


def run_job(name: str, devices, part: str = "both", log=print) -> dict:
  """The row of job `name`: "before" (the one program), "after" (the per-leaf draw and the
  optimizer/EMA program) or "both"."""
  from instant3d_jax.train import loop
  from instant3d_jax.train import optimizer as opt_lib
  cfg, task = JOBS[name][0](devices)
  mesh, rules = loop.setup_mesh(cfg, devices)
  tx, _ = opt_lib.make_optimizer(cfg.optimizer, int(cfg.train.total_steps))
  old, key, abstract, sh = loop.build_state_one_program(cfg, task, mesh, rules, tx)
  new, _, _, _ = loop.build_state(cfg, task, mesh, rules, tx)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params))
  leaves = len(jax.tree.leaves(abstract.params))
  row = dict(job=name, what=JOBS[name][1], mesh=dict(mesh.shape), params=n_params, leaves=leaves,
             state_leaves=len(jax.tree.leaves(abstract)))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  key_tpu = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=replicated)
  row["host_peak_gib_setup"] = round(tpu_plan.host_peak_gib(), 2)
  if part in ("before", "both"):
    log(f"[{name}] {n_params / 1e6:.1f}M params in {leaves} leaves; before: one program ...")
    row["before"] = measure(old, key_tpu)
    row["before"]["host_peak_gib"] = round(tpu_plan.host_peak_gib(), 2)
    log(f"[{name}]   {row['before']}")
  if part == "before":
    return row
  log(f"[{name}] after: per-leaf draw programs (TPU) ...")
  t0 = time.perf_counter()
  draw = new.draw(key)
  split_s = time.perf_counter() - t0
  row["draw"] = measure_leafwise(draw, (jax.ShapeDtypeStruct(key.shape, key.dtype),),
                                 (sh.params, sh.rng), split_s)
  log(f"[{name}]   {row['draw']}")
  params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract.params, sh.params)
  log(f"[{name}] after: per-leaf optimizer + EMA programs (TPU) ...")
  t0 = time.perf_counter()
  rest = new.rest(params)
  split_s = time.perf_counter() - t0
  row["device"] = measure_leafwise(rest, (params,), (sh.opt_state, sh.ema), split_s)
  row["device"]["host_peak_gib"] = round(tpu_plan.host_peak_gib(), 2)
  log(f"[{name}]   {row['device']}")
  return row


def measure_leafwise(lw, args, out_shardings, split_s: float) -> dict:
  """`measure` over the distinct programs of a `leafwise.Leafwise` (each compiled once): sums,
  and the largest."""
  calls = lw.calls(*args, out_shardings=out_shardings)
  distinct = {}
  for prog, a in calls:
    distinct.setdefault(id(prog), (prog, a))
  parts = [measure(prog, *a) for prog, a in distinct.values()]
  return dict(
      programs=len(parts), outputs=len(calls), trace_split_s=round(split_s, 2),
      lowered_ops=sum(p["lowered_ops"] for p in parts),
      hlo_instructions=sum(p["hlo_instructions"] or 0 for p in parts),
      lower_s=round(sum(p["lower_s"] for p in parts), 2),
      compile_s=round(sum(p["compile_s"] for p in parts), 2),
      max_compile_s=max(p["compile_s"] for p in parts),
      max_hlo_instructions=max(p["hlo_instructions"] or 0 for p in parts),
      load_after=tuple(round(x, 2) for x in os.getloadavg()))


def run_isolated(name: str, topology: str, part: str, limit_s: float, log=print) -> dict:
  """`run_job` in a fresh process (its own host memory; the TPU compiler's peak is per part),
  stopped after `limit_s`: then the row says so (`timed_out`)."""
  import subprocess
  import tempfile
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "row.json")
    cmd = [sys.executable, "-m", "bench.bench_state_init", "--topology", topology, "--jobs", name,
           "--part", part, "--row_json", out]
    t0 = time.perf_counter()
    try:
      subprocess.run(cmd, cwd=common.ROOT, check=True, timeout=limit_s)
    except subprocess.TimeoutExpired:
      log(f"[{name}] {part}: stopped after {limit_s:.0f} s")
      return {part: dict(timed_out=True, limit_s=limit_s,
                         wall_s=round(time.perf_counter() - t0, 1),
                         load_after=tuple(round(x, 2) for x in os.getloadavg()))}
    with open(out) as f:
      return json.load(f)


def _n(x) -> str:
  return "—" if x is None else f"{x:,}"


def report(rows: list[dict], topology: str) -> list[str]:
  lines = [
      f"## Train-state initialisation: programs before and after (TPU `{topology}`, AOT)", "",
      "The step-0 train state of both trainers at full size, lowered on abstract inputs and "
      "compiled for the TPU topology by libtpu's compiler on this CPU machine, never run "
      "(`python -m bench.bench_state_init`). **Before**: one jit over the whole state (every "
      "random draw, AdamW moments, EMA) with the state shardings as outputs. **After** "
      "(`train/loop.py` `StateInit`, what both trainers use): the parameters drawn leaf by leaf "
      "with their shardings (`train/leafwise.py`: one small program per leaf, shared by leaves of "
      "the same structure), then the optimizer state and EMA (zeros and copies) the same way; "
      "the same ops as before, bit-identical on CPU (tests/test_state_init.py). Ops: lowered "
      "StableHLO operations / compiled HLO instructions (every computation, fusion bodies "
      "included); for per-leaf programs, sums over the distinct programs (largest in brackets). Each job's "
      "before and after parts compile in a fresh process each, stopped after `--limit_s`. Load: the "
      "1-minute load average after each compile (a long job shared this 2-core machine: compile "
      "seconds are pessimistic, compare the rows, not the absolute values).", "",
      "| trainer | mesh | params (leaves) | program | programs | lowered ops | HLO instructions "
      "| compile s | load |",
      "|---|---|---:|---|---:|---:|---:|---:|---:|"]
  for r in rows:
    mesh = " × ".join(f"{k} {v}" for k, v in r["mesh"].items() if v > 1) or "1"
    b, d, o = r["before"], r["draw"], r["device"]
    if b.get("timed_out"):
      before = (f"| {r['what']} | {mesh} | {r['params'] / 1e6:,.1f}M ({r['leaves']:,}) | before: "
                f"one program | 1 | — | — | > {b['limit_s']:.0f} (stopped) | "
                f"{b['load_after'][0]:.2f} |")
    else:
      before = (f"| {r['what']} | {mesh} | {r['params'] / 1e6:,.1f}M ({r['leaves']:,}) | before: "
                f"one program | 1 | {_n(b['lowered_ops'])} | {_n(b['hlo_instructions'])} | "
                f"{b['compile_s']:.1f} | {b['load_after'][0]:.2f} |")
    lines += [
        before,
        f"| | | | after: per-leaf draw ({d['outputs']} outputs) | {d['programs']} | "
        f"{_n(d['lowered_ops'])} | {_n(d['hlo_instructions'])} ({_n(d['max_hlo_instructions'])})"
        f" | {d['compile_s']:.1f} ({d['max_compile_s']:.2f}) | {d['load_after'][0]:.2f} |",
        f"| | | | after: optimizer + EMA, per leaf ({o['outputs']} outputs) | {o['programs']} | "
        f"{_n(o['lowered_ops'])} | {_n(o['hlo_instructions'])} ({_n(o['max_hlo_instructions'])})"
        f" | {o['compile_s']:.1f} ({o['max_compile_s']:.2f}) | {o['load_after'][0]:.2f} |"]
  lines += ["", "Compile seconds, before → after (per-leaf draw + optimizer/EMA programs): " +
            "; ".join(f"{r['what']}: "
                      + (f"> {r['before']['limit_s']:.0f} (stopped)" if r["before"].get(
                          "timed_out") else f"{r['before']['compile_s']:.1f}") + " → "
                      f"{r['draw']['compile_s'] + r['device']['compile_s']:.1f} s "
                      f"({r['draw']['programs']} + {r['device']['programs']} programs; tracing and "
                      f"splitting {r['draw']['trace_split_s'] + r['device']['trace_split_s']:.1f} s)"
                      for r in rows) + "."]
  return lines


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--topology", default="v5p:2x2x1")
  ap.add_argument("--jobs", default="lrm_large,sdxl")
  ap.add_argument("--limit_s", type=float, default=1200.0,
                  help="per part (before / after) of a job: stop its compile after this long")
  ap.add_argument("--part", choices=("before", "after", "both"), default=None,
                  help="internal: one part in this process, its row to --row_json")
  ap.add_argument("--row_json", default=None, help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  for name in args.jobs.split(","):
    if name not in JOBS:
      ap.error(f"--jobs: {name!r} is not one of {sorted(JOBS)}")
  if args.part is not None:   # a child of run_isolated (or a manual single part)
    devices = tpu_plan.topology_devices(args.topology)
    row = run_job(args.jobs, devices, args.part)
    if args.row_json:
      with open(args.row_json, "w") as f:
        json.dump(row, f)
    return 0
  prov = common.Provenance.start()
  rows = []
  for name in args.jobs.split(","):
    row = {}
    for part in ("before", "after"):
      row.update(run_isolated(name, args.topology, part, args.limit_s))
    rows.append(row)
  OUT_JSON.write_text(json.dumps(dict(topology=args.topology, rows=rows,
                                      jax=jax.__version__, libtpu=tpu_plan.libtpu_version()),
                                 indent=2) + "\n")
  print(f"wrote {common.write_result(OUT_MD, report(rows, args.topology), prov)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
