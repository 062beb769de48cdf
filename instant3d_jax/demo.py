"""The main job (`make demo`): procedural world → train the tiny reconstructor → evaluate →
turntable.

  python -m instant3d_jax.demo [--workdir outputs/demo] [--config configs/lrm.py:tiny]
      [--config.train.total_steps=N] [--config.train.time_budget_s=S] [--retrain]

1. Data: generates the demo data set (the `data` section of the LRM config, i.e.
   configs/data.py:demo) under WORKDIR/data unless it is already there (cached: a complete data
   set with the same generation config is reused; generation is outside the training clock),
   and writes a contact sheet of one held-out object to WORKDIR/contact_sheet.png.
2. Train: `train_lrm` on this machine's CPU cores (one XLA CPU device per core, data-parallel,
   unless XLA_FLAGS sets the device count) for `train.total_steps` steps into WORKDIR/lrm: a
   fixed step count, so two runs give bit-identical parameters whatever the machine's speed
   (`train.time_budget_s`, off by default, adds a wall-clock limit: the run then depends on the
   machine). A finished run (WORKDIR/lrm/train_summary.json) is reused unless --retrain.
3. Evaluate: PSNR / SSIM / LPIPS on `eval.num_objects` held-out objects on the GSO-style rig
   (instant3d_jax/eval/protocol.py) → WORKDIR/lrm/eval/step_N/eval.{json,md}.
4. Reconstruct one held-out object from its 4 rig views with `reconstruct` → turntable GIF,
   renders and mesh in WORKDIR/reconstruct.
Prints where everything is.
"""
from __future__ import annotations

import os
import time

from absl import flags
from ml_collections import config_flags

from instant3d_jax import cli, configs

_WORKDIR = flags.DEFINE_string("workdir", "outputs/demo", "where data and outputs go")
_CONFIG = config_flags.DEFINE_config_file(
    "config", configs.path("lrm.py:tiny"), "the reconstructor run (configs/lrm.py:VARIANT); "
    "its `data` section is the procedural world (configs/data.py:demo for tiny)",
    lock_config=False)
_RETRAIN = flags.DEFINE_bool("retrain", False, "train again even if WORKDIR/lrm holds a "
                             "finished run (a new run needs an empty WORKDIR/lrm)")
_SKIP_TRAIN = flags.DEFINE_bool("data_only", False, "stop after the data set and contact sheet")


def _data_step(cfg, workdir: str) -> str:
  """Step 1: the cached data set and a contact sheet. Returns the data directory."""
  from data_pipeline import datasets, records
  from data_pipeline.contact_sheet import object_contact_sheet
  data_dir = str(cfg.data_dir)
  t0 = time.perf_counter()
  cached = os.path.exists(os.path.join(data_dir, records.METADATA_FILE))
  info = datasets.prepare(cfg)
  counts = ", ".join(f"{k} {v}" for k, v in info.splits.items())
  print(f"data set: {data_dir} ({'cached' if cached else 'generated'} in "
        f"{time.perf_counter() - t0:.1f} s; {sum(info.splits.values())} objects at "
        f"{info.resolution}²: {counts})")
  sheet = os.path.join(workdir, "contact_sheet.png")
  split = "test" if info.splits.get("test") else "train"
  rec = object_contact_sheet(data_dir, sheet, split=split)
  print(f"contact sheet of {rec['object_id']} (\"{rec['caption']}\"): {sheet}")
  return data_dir


def _train_step(cfg, run_dir: str, retrain: bool) -> dict:
  """Step 2: train (or reuse a finished run). Returns the run summary."""
  from instant3d_jax.train import loop, lrm_task
  summary = loop.finished_summary(run_dir, retrain)
  if summary is not None:
    return summary
  budget = float(cfg.train.time_budget_s or 0)
  print(f"training {cfg.variant} for {cfg.train.total_steps} steps"
        + (f" (or {budget:.0f} s of wall clock, whichever ends first)" if budget else "")
        + f" into {run_dir}")
  res = lrm_task.train(cfg, run_dir)
  last = res.history[-10:]
  return loop.write_summary(run_dir, res, time_budget_s=float(cfg.train.time_budget_s),
                            final_train_psnr=sum(h["psnr"] for h in last) / max(len(last), 1))


def _turntable_step(cfg, data_dir: str, run_dir: str, out_dir: str) -> dict:
  """Step 4: reconstruct the first held-out object from its 4 Instant3D-rig views."""
  from data_pipeline import records
  from instant3d_jax import reconstruction
  from instant3d_jax.export.images import save_png
  rec = records.RecordSource(data_dir, "test")[0]
  rgba = records.group_rgba(rec, "rig")
  views_dir = os.path.join(out_dir, "input_views")
  paths = []
  for i, v in enumerate(rgba):
    p = os.path.join(views_dir, f"view_{i}.png")
    save_png(p, v)  # RGBA: reconstruct composites it onto the training background
    paths.append(p)
  written = reconstruction.reconstruct(run_dir, out_dir, views=paths, num_novel=4,
                                    turntable_frames=24, mesh_resolution=64, mesh_threshold="auto",
                                    progress=False,
                                    log=lambda *_: None)
  written["object"] = f"{rec['object_id']}: {rec['caption']}"
  return written


def main(argv):
  del argv
  from instant3d_jax.train import multihost
  cfg = _CONFIG.value
  workdir = _WORKDIR.value
  cfg.data_dir = os.path.join(workdir, "data")
  cli.check_train_inputs(cfg, workdir)  # before the data set is generated
  multihost.cpu_devices_per_core(cfg)
  data_dir = _data_step(cfg, workdir)
  if _SKIP_TRAIN.value:
    return
  run_dir = os.path.join(workdir, "lrm")
  summary = _train_step(cfg, run_dir, _RETRAIN.value)

  from instant3d_jax.eval import lrm_eval
  results, md_path = lrm_eval.evaluate_checkpoint(run_dir, config=cfg, log=lambda *_: None)
  written = _turntable_step(cfg, data_dir, run_dir, os.path.join(workdir, "reconstruct"))

  s = results["summary"]
  print()
  print(md_path.read_text())
  print(f"training: {summary['step']} steps in {summary['wall_s']:.0f} s (compile "
        f"{summary['compile_s']:.0f} s, stop: {summary['stop_reason']}"
        + (f", budget {summary['time_budget_s']:.0f} s" if summary.get("time_budget_s") else "")
        + ")")
  print(f"held-out: PSNR {s['psnr']:.2f} dB, SSIM {s['ssim']:.4f}"
        + (f", LPIPS {s['lpips']:.4f}" if "lpips" in s else "")
        + f" on {results['num_objects']} objects × {results['num_views_per_object']} views")
  print(f"metrics table: {md_path}")
  print(f"turntable ({written['object']}): {written.get('turntable_gif', written)}")
  print(f"training logs: {run_dir} (metrics.jsonl, tb/, images/, loss_curve.png)")


if __name__ == "__main__":
  cli.run(main)
