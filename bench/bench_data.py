"""Procedural-world generation rate and grain loader throughput on this CPU.

    python -m bench.bench_data [--objects64 60] [--objects128 20] [--batches 100]

Generation: train-split objects (4 rig + 8 supervision views each, supersample 2, PNG-encoded,
written to ArrayRecord) at 64² and 128², with 1 and 2 generation processes; objects/s and views/s
over the whole `generate` call (process start-up included). Held-out objects additionally render
the 68 views of the GSO rig, i.e. cost ~6.7× a training object.
Loader: the `demo` loader settings (4 inputs + 4 full 64² targets per example, global batch 8) on
the 64² data set, worker_count 0 and 2; examples/s over `--batches` batches after 3 warm-up
batches (workers started). Writes bench/results/data.md.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from bench import common
from instant3d_jax.configs import data as data_config
from data_pipeline import lrm_input, procedural


def bench_generation(root: str, resolution: int, num_objects: int, workers: int) -> dict:
  cfg = data_config.get_config("demo")
  cfg.resolution = resolution
  cfg.num_objects = num_objects
  cfg.split_fractions = (1.0, 0.0, 0.0)
  cfg.num_workers = workers
  out = os.path.join(root, f"gen{resolution}_{workers}")
  t0, c0 = time.perf_counter(), _cpu_seconds()
  procedural.generate(cfg, out, progress=False)
  secs, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
  views = num_objects * (4 + cfg.num_sup_views)
  return {"resolution": resolution, "workers": workers, "objects": num_objects, "seconds": secs,
          "objects_per_s": num_objects / secs, "views_per_s": views / secs,
          "cpu_ms_per_view": 1e3 * cpu / views, "dir": out}


def _cpu_seconds() -> float:
  """CPU time of this process and its finished children (generation pool workers); unlike wall
  time it barely depends on what else the shared machine is running."""
  t = os.times()
  return t.user + t.system + t.children_user + t.children_system


def bench_loader(data_dir: str, workers: int, batches: int) -> dict:
  lc = data_config.get_config("demo").loader
  lc.batch_size = 8
  lc.worker_count = workers
  it = lrm_input.train_iterator(data_dir, lc, process_index=0, process_count=1)
  for _ in range(3):
    next(it)
  t0, c0 = time.perf_counter(), time.process_time()
  for _ in range(batches):
    next(it)
  secs, cpu = time.perf_counter() - t0, time.process_time() - c0
  if hasattr(it, "close"):
    it.close()
  n = batches * lc.batch_size
  return {"workers": workers, "examples_per_s": n / secs, "batches": batches,
          # main-process CPU per example (includes grain's read threads; not the workers')
          "cpu_ms_per_example": 1e3 * cpu / n}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--objects64", type=int, default=60)
  ap.add_argument("--objects128", type=int, default=20)
  ap.add_argument("--batches", type=int, default=100)
  ap.add_argument("--out", default="bench/results/data.md")
  args = ap.parse_args()
  prov = common.Provenance.start()
  from absl import flags  # grain workers read absl flags; use their defaults here
  flags.FLAGS.mark_as_parsed()
  root = tempfile.mkdtemp(prefix="bench_data_")
  try:
    gen = []
    for res, n in ((64, args.objects64), (128, args.objects128)):
      for workers in (1, 2):
        r = bench_generation(root, res, n, workers)
        print(f"generation {res}² workers={workers}: {r['objects_per_s']:.1f} objects/s, "
              f"{r['views_per_s']:.0f} views/s ({n} objects in {r['seconds']:.1f} s), "
              f"{r['cpu_ms_per_view']:.1f} CPU ms/view", flush=True)
        gen.append(r)
    data64 = next(r["dir"] for r in gen if r["resolution"] == 64)
    load = []
    for workers in (0, 2):
      r = bench_loader(data64, workers, args.batches)
      print(f"loader worker_count={workers}: {r['examples_per_s']:.1f} examples/s, "
            f"{r['cpu_ms_per_example']:.1f} main-process CPU ms/example", flush=True)
      load.append(r)
  finally:
    shutil.rmtree(root, ignore_errors=True)

  lines = [
      "## Procedural world: generation and grain loader (`bench/bench_data.py`)",
      "",
      "Generation (training objects: 4 rig + 8 supervision views, supersample 2, exact ray "
      "casting, PNG + ArrayRecord; held-out objects add the 68 GSO-rig views):",
      "",
      "| resolution | processes | objects | objects/s | views/s | CPU ms/view (all processes) |",
      "|---|---|---|---|---|---|",
  ]
  for r in gen:
    lines.append(f"| {r['resolution']}² | {r['workers']} | {r['objects']} | "
                 f"{r['objects_per_s']:.1f} | {r['views_per_s']:.0f} | "
                 f"{r['cpu_ms_per_view']:.1f} |")
  lines += [
      "",
      "grain loader (`data_pipeline/lrm_input.py`, 64², 4 input + 4 target views per example, "
      "PNG decode and white compositing, global batch 8, one process):",
      "",
      "| worker_count | examples/s | main-process CPU ms/example |",
      "|---|---|---|",
  ]
  for r in load:
    lines.append(f"| {r['workers']} | {r['examples_per_s']:.1f} | "
                 f"{r['cpu_ms_per_example']:.1f} |")
  lines += [
      "",
      "CPU time per view/example is the figure least affected by other load: with a core per "
      "process, views/s ≈ processes × 1000 / (CPU ms/view).",
  ]
  print(f"wrote {common.write_result(args.out, lines, prov)}")


if __name__ == "__main__":
  main()
