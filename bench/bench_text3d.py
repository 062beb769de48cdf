"""Text-to-3D batch throughput of the `tiny` pipeline on this machine (instant3d_jax/pipeline.py):
prompts per second and the per-stage split for one batch of prompts, first call (compiles
included) and a second call (warm).

    python -m bench.bench_text3d [--stage1 outputs/mv_demo/train] [--stage2 outputs/demo/lrm]
        [--num_prompts 8] [--steps 25]

Needs the two demo models (`make demo`, `make demo-mv`; any trained weights of those configs do:
the throughput does not depend on what the weights learned). Writes bench/results/text3d.md.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

from bench import common

PROMPTS = ("a red sphere", "a large blue cube", "a small green cone", "a yellow ring",
           "a purple cylinder beside a grey box", "an orange cone above a cyan sphere",
           "a pink box, a brown ring and a white sphere", "a large red cylinder")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--stage1", default="outputs/mv_demo/train")
  ap.add_argument("--stage2", default="outputs/demo/lrm")
  ap.add_argument("--num_prompts", type=int, default=8)
  ap.add_argument("--steps", type=int, default=25)
  ap.add_argument("--out", default=str(common.ROOT / "bench" / "results" / "text3d.md"))
  args = ap.parse_args()
  for what, path in (("--stage1", args.stage1), ("--stage2", args.stage2)):
    if not os.path.exists(path):
      raise SystemExit(f"bench_text3d: {what} {path} does not exist (run `make demo` and "
                       "`make demo-mv` first, or pass trained weights)")
  prov = common.Provenance.start()
  import jax
  from instant3d_jax.configs import instant3d
  from instant3d_jax import pipeline as pipeline_lib
  cfg = instant3d.get_config("tiny")
  cfg.batch_size = int(args.num_prompts)
  prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.num_prompts)]
  t = time.perf_counter()
  pipe = pipeline_lib.TextTo3D.load(cfg, stage1=args.stage1, stage2=args.stage2)
  load_s = time.perf_counter() - t
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for name in ("first call (compiles)", "second call (warm)"):
      t = time.perf_counter()
      pipeline_lib.generate_to_folder(pipe, prompts, os.path.join(tmp, name[:5]),
                                      num_steps=args.steps, log=lambda *_: None)
      wall = time.perf_counter() - t
      tm = dict(pipe.timings)
      rows.append((name, wall, tm))
  n = args.num_prompts
  lines = [f"# Text to 3D, `tiny`: {n} prompts in one batch ({args.steps} DDIM steps, CFG "
           f"{pipe.sampler.guidance_scale:g}), {jax.device_count()} CPU device(s)", "",
           f"Weights: stage 1 `{args.stage1}`, stage 2 `{args.stage2}` (loaded in {load_s:.1f} s). "
           "Per object the generate layout is written: grid, views, triplane, renders of the "
           "input views, a turntable (GIF, MP4, strip) and the mesh (GLB/OBJ/PLY). Host work "
           "(meshes, renders, files) overlaps the next batch's sampling; with one batch it "
           "follows it.", "",
           "| call | wall (s) | prompts/s | stage 1 (s) | stage 2 (s) | host: meshes, renders, "
           "files (s) |", "|---|---|---|---|---|---|"]
  for name, wall, tm in rows:
    lines.append(f"| {name} | {wall:.1f} | {n / wall:.3f} | {tm.get('stage1_s', 0):.2f} | "
                 f"{tm.get('stage2_s', 0):.2f} | {tm.get('host_s', 0):.2f} |")
  print("\n".join(lines))
  print("wrote", common.write_result(args.out, lines, prov.finish()))


if __name__ == "__main__":
  main()
