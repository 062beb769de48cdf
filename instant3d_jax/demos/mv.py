"""Stage 1 on the shapes world (`make demo-mv`, the command instant3d_jax/demo_mv.py): train the
tiny text-to-four-views model from scratch on this CPU, then sample grids for held-out captions
and score them.

`run(cfg, workdir, ...)` is the whole job (the command's docstring lists its steps and outputs);
`train` its training step and `markdown` the report's table.
"""
from __future__ import annotations

import json
import os
import time

from instant3d_jax.train import launch


def train(cfg, run_dir: str, retrain: bool) -> dict:
  """Trains stage 1 into `run_dir` (or reuses a finished run). Returns the run summary."""
  from instant3d_jax.train import loop, mv_task
  summary = loop.finished_summary(run_dir, retrain)
  if summary is not None:
    return summary
  print(f"training {cfg.variant} for {cfg.train.total_steps} steps into {run_dir}")
  return loop.write_summary(run_dir, mv_task.train(cfg, run_dir))


def markdown(report: dict) -> str:
  """report.md of the `run` report."""
  c, r = report["colour"], report["colour_real_renders"]
  vc = report.get("view_consistency")
  pct = lambda x: "n/a" if x != x else f"{100 * x:.1f}%"  # NaN: no caption of that kind
  lines = [
      f"# Stage 1 `tiny` on the shapes world: held-out captions (step {report['step']})", "",
      f"{report['num_captions']} held-out captions × {report['per_caption']} grids "
      f"({report['sampler']}).", "",
      "| | generated grids | real rig renders |", "|---|---|---|",
      f"| single-object: dominant colour right in all 4 views | {pct(c['single_accuracy'])} "
      f"({c['single_count']} grids) | {pct(r['single_accuracy'])} ({r['single_count']}) |",
      f"| multi-object: every named colour present | {pct(c['multi_all_present'])} "
      f"({c['multi_count']} grids) | {pct(r['multi_all_present'])} ({r['multi_count']}) |"]
  if vc:
    lines.append(f"| view consistency: reconstructor re-render PSNR (dB) | "
                 f"{vc['generated_psnr']:.2f} | {vc['real_psnr']:.2f} |")
  lines += ["", f"Training: {report['train']['step']} steps in {report['train']['wall_s']:.0f} s "
            f"(compile {report['train']['compile_s']:.0f} s). Grids: `heldout_grids.png`.", ""]
  lines += ["| caption | grids right |", "|---|---|"]
  for cap, ok in report["per_caption_ok"].items():
    lines.append(f"| {cap} | {ok} |")
  return "\n".join(lines) + "\n"


def run(cfg, workdir: str, *, data_dir: str, reconstructor: str, num_captions: int,
        per_caption: int, background_threshold: float, retrain: bool = False) -> dict:
  """The whole job into `workdir` with the stage-1 config `cfg` (configs/mv_sdxl.py:tiny; its
  `data_dir` is set to `data_dir`): data, training (a finished run is reused unless `retrain`),
  `per_caption` grids for each of `num_captions` held-out captions, their colour scores, the view
  consistency through `reconstructor` ('' or a missing path: skipped with a note; views cleaned
  with `background_threshold`, the pipeline config's `stage2.background_threshold`), the images
  and report.{json,md}. Prints as it goes; returns the report."""
  cfg.data_dir = data_dir
  launch.check_train_inputs(cfg, workdir)
  # One XLA CPU device: the tiny UNet's step measured 0.12 s on one device using both cores and
  # 0.15 s data-parallel over two (the reconstructor is the other way round, demos/lrm.py).
  import numpy as np
  from data_pipeline import captions as captions_lib
  from data_pipeline import datasets
  from instant3d_jax.eval import colour
  from instant3d_jax.eval import mv_eval
  from instant3d_jax.convert import checkpoints
  from instant3d_jax.export import images as images_lib
  from instant3d_jax.train import mv_task

  t0 = time.perf_counter()
  info = datasets.prepare(cfg)
  print(f"data set: {info.data_dir} ({sum(info.splits.values())} objects, "
        f"{time.perf_counter() - t0:.1f} s)")
  run_dir = os.path.join(workdir, "train")
  summary = train(cfg, run_dir, retrain)

  g = cfg.grid
  split = captions_lib.caption_split("heldout", seed=int(g.heldout_seed),
                                     num_heldout=int(g.num_heldout))
  rows = mv_eval.heldout_captions(info.data_dir, num_captions, split)
  caps = [r["caption"] for r in rows]
  per = int(per_caption)
  _, ema, step = checkpoints.load(run_dir, item="ema")
  comps = mv_task.build_components(cfg)
  cfg.sample.per_caption = per
  t = time.perf_counter()
  grids = np.asarray(mv_task.sample_grids(cfg, comps, ema, caps))
  sample_s = time.perf_counter() - t
  print(f"sampled {len(grids)} grids in {sample_s:.1f} s")
  grid_caps = [c for c in caps for _ in range(per)]
  report_gen = colour.grid_colour_report(grids, grid_caps)
  real = mv_eval.real_grids(info.data_dir, rows, int(g.view_resolution))
  report_real = colour.grid_colour_report(real, caps)
  ok = [it["ok"] for it in report_gen["items"]]
  report = {
      "step": step, "train": summary, "num_captions": len(caps), "per_caption": per,
      "sampler": f"{cfg.sample.scheduler} {cfg.sample.num_steps} steps, CFG "
                 f"{cfg.sample.guidance_scale:g}, EMA weights",
      "sample_s": round(sample_s, 1), "captions": rows,
      "colour": {k: v for k, v in report_gen.items() if k != "items"},
      "colour_real_renders": {k: v for k, v in report_real.items() if k != "items"},
      "per_caption_ok": {c: f"{sum(ok[i * per:(i + 1) * per])}/{per}"
                         for i, c in enumerate(caps)},
      "grids": report_gen["items"]}
  recon = reconstructor
  if recon and os.path.exists(recon):
    gen_psnr = mv_eval.view_consistency(recon, grids, background_threshold=background_threshold)
    real_psnr = mv_eval.view_consistency(recon, real, background_threshold=background_threshold)
    report["view_consistency"] = {
        "reconstructor": recon, "generated_psnr": float(np.mean(gen_psnr)),
        "real_psnr": float(np.mean(real_psnr)),
        "generated_psnr_per_grid": [round(float(x), 3) for x in gen_psnr]}
  else:
    print(f"note: no reconstructor at {recon!r} (run `make demo` first): view consistency "
          "skipped")
  img = mv_eval.captioned_rows_image(grids, caps, per)
  images_lib.save_png(os.path.join(workdir, "heldout_grids.png"), img)
  images_lib.save_png(os.path.join(workdir, "heldout_real_grids.png"),
                      mv_eval.captioned_rows_image(real, caps, 1))
  with open(os.path.join(workdir, "report.json"), "w") as f:
    json.dump(report, f, indent=2, default=float)
  md = markdown(report)
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write(md)
  print()
  print(md)
  print(f"grids: {os.path.join(workdir, 'heldout_grids.png')}")
  return report
