"""Stage 1 on the shapes world (`make demo-mv`): train the tiny text-to-four-views model from
scratch on this CPU, then sample grids for held-out captions and score them.

  python -m instant3d_jax.demo_mv [--workdir outputs/mv_demo] [--config configs/mv_sdxl.py:tiny]
      [--config.train.total_steps=N] [--per_caption 4] [--num_captions 20]
      [--reconstructor outputs/demo/lrm] [--retrain]

1. Data: the procedural world of `make demo` (configs/data.py:demo in `--data_dir`, default
   outputs/demo/data: generated once, shared with `make demo`).
2. Train `configs/mv_sdxl.py:tiny` (`train_mvdiffusion`, a fixed step count, one XLA CPU
   device) into WORKDIR/train on the caption-level training part (data_pipeline/captions.py:
   whole (colour, shape) combinations are held out). A finished run (WORKDIR/train/
   train_summary.json) is reused unless --retrain; an interrupted one resumes.
3. Held-out captions: `--num_captions` distinct captions of held-out objects (val + test splits,
   whose combinations the model never saw), half single-object and half multi-object where the
   data allow; `--per_caption` grids each from the EMA weights (the jitted sampler,
   `config.sample` settings).
4. Scores (instant3d_jax/eval/colour.py): colour accuracy of single-object captions (the dominant
   colour of all four views is the caption's), and the share of multi-object grids with every
   named colour present; the same classifier on the real rig renders of the objects the
   captions come from, as its check.
5. View consistency: the `make demo` reconstructor (`--reconstructor`, skipped with a note when
   absent) turns each grid's four views into a triplane and re-renders them at the rig cameras;
   PSNR of the re-renders against the views, for generated grids and for the real renders.
6. WORKDIR/heldout_grids.png (one row per caption, its grids, the caption as the title) and
   WORKDIR/report.{json,md}.
"""
from __future__ import annotations

import json
import os
import time

from absl import flags
from ml_collections import config_flags

from instant3d_jax import cli, configs

_WORKDIR = flags.DEFINE_string("workdir", "outputs/mv_demo", "where the run and its report go")
_CONFIG = config_flags.DEFINE_config_file(
    "config", configs.path("mv_sdxl.py:tiny"), "the stage-1 run (configs/mv_sdxl.py:tiny)",
    lock_config=False)
_DATA_DIR = flags.DEFINE_string("data_dir", "outputs/demo/data",
                                "the procedural data set (shared with `make demo`)")
_RECON = flags.DEFINE_string("reconstructor", "outputs/demo/lrm",
                             "the `make demo` reconstructor (a train_lrm workdir, step dir or "
                             ".safetensors) for the view-consistency check; '' skips it")
_NUM_CAPTIONS = flags.DEFINE_integer("num_captions", 20, "held-out captions to sample")
_PER_CAPTION = flags.DEFINE_integer("per_caption", 4, "grids per caption")
_RETRAIN = flags.DEFINE_bool("retrain", False, "train again even if WORKDIR/train holds a "
                             "finished run (a new run needs an empty WORKDIR/train)")


def _train(cfg, run_dir: str, retrain: bool) -> dict:
  from instant3d_jax.train import loop, mv_task
  summary = loop.finished_summary(run_dir, retrain)
  if summary is not None:
    return summary
  print(f"training {cfg.variant} for {cfg.train.total_steps} steps into {run_dir}")
  return loop.write_summary(run_dir, mv_task.train(cfg, run_dir))


def _markdown(report: dict) -> str:
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


def main(argv):
  del argv
  from instant3d_jax import errors
  cfg = _CONFIG.value
  workdir = _WORKDIR.value
  # Cheap checks first: a bad flag fails before the data set is generated or a model trains.
  for name, flag in (("num_captions", _NUM_CAPTIONS), ("per_caption", _PER_CAPTION)):
    if flag.value < 1:
      raise errors.ConfigError(f"--{name} must be >= 1, got {flag.value}")
  cfg.data_dir = _DATA_DIR.value
  cli.check_train_inputs(cfg, workdir)
  # One XLA CPU device: the tiny UNet's step measured 0.12 s on one device using both cores and
  # 0.15 s data-parallel over two (the reconstructor is the other way round, demo.py).
  import numpy as np
  from data_pipeline import captions as captions_lib
  from data_pipeline import datasets
  from instant3d_jax.eval import colour
  from instant3d_jax.eval import mv_eval
  from instant3d_jax.export import images as images_lib
  from instant3d_jax.train import checkpoint as ckpt_lib
  from instant3d_jax.train import mv_task

  t0 = time.perf_counter()
  info = datasets.prepare(cfg)
  print(f"data set: {info.data_dir} ({sum(info.splits.values())} objects, "
        f"{time.perf_counter() - t0:.1f} s)")
  run_dir = os.path.join(workdir, "train")
  summary = _train(cfg, run_dir, _RETRAIN.value)

  g = cfg.grid
  split = captions_lib.caption_split("heldout", seed=int(g.heldout_seed),
                                     num_heldout=int(g.num_heldout))
  rows = mv_eval.heldout_captions(info.data_dir, _NUM_CAPTIONS.value, split)
  caps = [r["caption"] for r in rows]
  per = int(_PER_CAPTION.value)
  _, ema, step = ckpt_lib.load(run_dir, item="ema")
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
  recon = _RECON.value
  if recon and os.path.exists(recon):
    gen_psnr = mv_eval.view_consistency(recon, grids)
    real_psnr = mv_eval.view_consistency(recon, real)
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
  md = _markdown(report)
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write(md)
  print()
  print(md)
  print(f"grids: {os.path.join(workdir, 'heldout_grids.png')}")


if __name__ == "__main__":
  cli.run(main)
