"""Re-scores on val captions the decision behind `stage2.background_threshold` (configs/instant3d.py:
tiny), which was chosen by looking at held-out captions before val and test roles existed.

    python -m bench.rescore_val [--mv_workdir outputs/mv_demo] [--reconstructor outputs/demo/lrm]
        [--data_dir outputs/demo/data] [--thresholds 0,0.08,0.16,0.24] [--out FILE]

The stage-1 demo model (EMA weights of `make demo-mv`'s run) samples `--num_captions` val-role
captions × `--per_caption` grids exactly as `make demo-mv` does (same seed); `make demo`'s
reconstructor re-renders each grid's four views from the views cleaned at each threshold
(`reconstruction.clean_background`), and the mean re-render PSNR (view consistency) is reported
per threshold, beside the real rig renders of the same captions' objects. Only val captions are
read. Writes a results file (instant3d_jax/eval/results.py) to `--out` and prints the table.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--mv_workdir", default="outputs/mv_demo")
  ap.add_argument("--reconstructor", default="outputs/demo/lrm")
  ap.add_argument("--data_dir", default="outputs/demo/data")
  ap.add_argument("--thresholds", default="0,0.08,0.16,0.24")
  ap.add_argument("--num_captions", type=int, default=12)
  ap.add_argument("--per_caption", type=int, default=4)
  ap.add_argument("--out", default="outputs/rescore_val/background_threshold.json")
  args = ap.parse_args(argv)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import numpy as np
  from data_pipeline import captions as captions_lib
  from instant3d_jax.configs import instant3d as pipeline_config
  from instant3d_jax.configs import mv_sdxl
  from instant3d_jax.convert import checkpoints
  from instant3d_jax.eval import mv_eval, results
  from instant3d_jax.train import mv_task
  t0 = time.perf_counter()
  rec = results.Run.start("rescore_val")
  cfg = mv_sdxl.get_config("tiny")
  cfg.data_dir = args.data_dir
  g = cfg.grid
  roles = captions_lib.heldout_roles(int(g.heldout_seed), int(g.num_heldout))
  rows = [r for r in mv_eval.heldout_captions(args.data_dir, args.num_captions, roles)
          if r["role"] == "val"]
  caps = [r["caption"] for r in rows]
  run_dir = os.path.join(args.mv_workdir, "train")
  _, ema, step = checkpoints.load(run_dir, item="ema")
  comps = mv_task.build_components(cfg)
  cfg.sample.per_caption = int(args.per_caption)
  t = time.perf_counter()
  grids = np.asarray(mv_task.sample_grids(cfg, comps, ema, caps))
  sample_s = time.perf_counter() - t
  real = mv_eval.real_grids(args.data_dir, rows, int(g.view_resolution))
  thresholds = [float(x) for x in args.thresholds.split(",")]
  table = {}
  for th in thresholds:
    gen = mv_eval.view_consistency(args.reconstructor, grids, background_threshold=th)
    rl = mv_eval.view_consistency(args.reconstructor, real, background_threshold=th)
    table[f"{th:g}"] = {"generated_psnr": float(np.mean(gen)), "real_psnr": float(np.mean(rl)),
                        "generated_psnr_sem": float(np.std(gen) / np.sqrt(len(gen)))}
  default = float(pipeline_config.get_config("tiny").stage2.background_threshold)
  best = max(table, key=lambda k: table[k]["generated_psnr"])
  res = rec.write(args.out, configs={"stage1": cfg}, params={"stage1_ema": ema},
                  metrics={"val_view_consistency_by_threshold": table},
                  wall_s={"sample": sample_s, "total": time.perf_counter() - t0},
                  extra={"captions": caps, "role": "val", "step": step, "default": default,
                         "best": float(best), "grids": int(len(grids)),
                         "reconstructor": args.reconstructor})
  print(f"val captions: {len(caps)} × {args.per_caption} grids (stage 1 step {step})")
  print("| stage2.background_threshold | generated PSNR (dB) | real PSNR (dB) |")
  print("|---:|---:|---:|")
  for k, v in table.items():
    mark = " (default)" if float(k) == default else ""
    print(f"| {k}{mark} | {v['generated_psnr']:.2f} ± {v['generated_psnr_sem']:.2f} | "
          f"{v['real_psnr']:.2f} |")
  print(f"best on val: {best}; default {default:g}: {verdict(table, default)}")
  print(f"results: {args.out} (parameter hash {res['param_sha256']['stage1_ema'][:16]}…)")
  return 0


def verdict(table: dict, default: float) -> str:
  """Whether val changes the choice: only when the best threshold beats the default by more than
  the larger of their standard errors (grids are not independent across a caption: a gain inside
  one standard error is noise)."""
  best = max(table, key=lambda k: table[k]["generated_psnr"])
  d = table[f"{default:g}"]
  b = table[best]
  gain = b["generated_psnr"] - d["generated_psnr"]
  if float(best) == default or gain <= max(b["generated_psnr_sem"], d["generated_psnr_sem"]):
    return (f"the choice stands (best {best}: {gain:+.2f} dB over the default, within one "
            "standard error)")
  return f"the choice changes to {best} ({gain:+.2f} dB, beyond one standard error)"


def table_markdown(res: dict, source: str) -> str:
  """The README block of a results file of this script (bench/report.py)."""
  x, t = res["extra"], res["metrics"]["val_view_consistency_by_threshold"]
  lines = [f"From `{source}` (`{res['command']}`, commit `{res['commit'][:12]}`, "
           f"{res['started_utc']}): {len(x['captions'])} val captions × "
           f"{x['grids'] // max(len(x['captions']), 1)} grids, stage 1 step {x['step']}.", "",
           "| `stage2.background_threshold` | view consistency, generated grids (dB, ± s.e.) | "
           "real rig renders (dB) |", "|---:|---:|---:|"]
  for k, v in t.items():
    mark = " (default)" if float(k) == x["default"] else ""
    lines.append(f"| {k}{mark} | {v['generated_psnr']:.2f} ± {v['generated_psnr_sem']:.2f} | "
                 f"{v['real_psnr']:.2f} |")
  lines += ["", f"On val: {verdict(t, x['default'])}."]
  return "\n".join(lines) + "\n"


def rival_markdown(default: dict, rival: dict, *, sources: tuple[str, str], what: str) -> str:
  """A default reconstructor run against its nearest rival, both scored on val only (results
  files of `make demo` and `python -m instant3d_jax.demo --noscore_test` with the rival's
  override), as a README block (bench/report.py)."""
  cols = [("psnr", "PSNR (dB) ↑", 2), ("ssim", "SSIM ↑", 4), ("lpips", "LPIPS ↓", 4),
          ("foreground_psnr", "foreground PSNR (dB) ↑", 2),
          ("colour_error", "colour error (0–255) ↓", 1)]
  lines = [f"`{what}`: the default (`{sources[0]}`) against its rival (`{sources[1]}`, "
           f"`{rival['command']}` at commit `{rival['commit'][:12]}`, {rival['started_utc']}), "
           f"both on the val split ({rival['extra']['eval']['val']['num_objects']} objects × "
           f"{rival['extra']['eval']['val']['num_views_per_object']} views).", "",
           "| val | " + " | ".join(c[1] for c in cols) + " |", "|---|" + "---:|" * len(cols)]
  for label, r in (("default", default), ("rival", rival)):
    v = r["metrics"]["val"]
    lines.append(f"| {label} | " + " | ".join(f"{v[k]:.{p}f}" for k, _, p in cols) + " |")
  d, r = default["metrics"]["val"], rival["metrics"]["val"]
  better = [k for k, _, _ in cols
            if (r[k] > d[k]) == (k in ("psnr", "ssim", "foreground_psnr")) and r[k] != d[k]]
  lines += ["", "On val the rival is better on " + (", ".join(better) if better else "no metric")
            + ("; the default stands." if len(better) <= len(cols) // 2 else
               "; the choice would change.")]
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  sys.exit(main())
