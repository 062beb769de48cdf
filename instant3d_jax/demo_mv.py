"""Stage 1 on the shapes world (`make demo-mv`): train the tiny text-to-four-views model from
scratch on this CPU, then sample grids for held-out captions and score them.

  python -m instant3d_jax.demo_mv [--workdir outputs/mv_demo] [--config configs/mv_sdxl.py:tiny]
      [--config.train.total_steps=N] [--per_caption 4] [--num_captions 20]
      [--reconstructor outputs/demo/lrm] [--retrain]

1. Data: the procedural world of `make demo` (configs/data.py:demo in `--data_dir`, default
   outputs/demo/data: generated once, shared with `make demo`).
2. Train `configs/mv_sdxl.py:tiny` (`train_mvdiffusion`, a fixed step count, one XLA CPU device
   per core) into WORKDIR/train on the caption-level training part (data_pipeline/captions.py:
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

from instant3d_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", "outputs/mv_demo", "where the run and its report go")
_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/mv_sdxl.py:tiny", "the stage-1 run (configs/mv_sdxl.py:tiny)",
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


def heldout_captions(data_dir: str, num: int, heldout) -> list[dict]:
  """`num` distinct captions of held-out objects of the val and test splits, alternating
  single-object and multi-object ones while both last (data set order: deterministic). Each
  {"caption", "split", "position", "object_id"}."""
  from data_pipeline import captions as captions_lib
  from data_pipeline import mv_grids, records
  splits = records.read_metadata(data_dir)["splits"]
  single, multi, seen = [], [], set()
  for split in ("val", "test"):
    if split not in splits:
      continue
    for pos, (_, oid, cap) in enumerate(mv_grids.object_table(data_dir, split)):
      if cap in seen or not heldout.is_heldout(cap):
        continue
      seen.add(cap)
      row = {"caption": cap, "split": split, "position": pos, "object_id": oid}
      (single if len(captions_lib.parse_caption(cap)) == 1 else multi).append(row)
  out = []
  while len(out) < num and (single or multi):
    for pool in (single, multi):
      if pool and len(out) < num:
        out.append(pool.pop(0))
  if len(out) < num:
    raise records.DataError(f"{data_dir}: only {len(out)} distinct held-out captions in val + "
                            f"test, expected --num_captions {num}")
  return out


def real_grids(data_dir: str, rows: list[dict], resolution: int):
  """The real rig renders `[N, 2R, 2R, 3]` float in [0, 1] of the rows' objects."""
  import numpy as np
  from data_pipeline import mv_grids, records
  sources = {}
  out = []
  for r in rows:
    src = sources.setdefault(r["split"], records.RecordSource(data_dir, r["split"]))
    out.append(mv_grids.tile_grid(mv_grids.grid_views(src[r["position"]], resolution)))
  return np.stack(out).astype(np.float32) / 255.0


def view_consistency(checkpoint: str, grids, batch: int = 8) -> "np.ndarray":
  """Per grid, the PSNR (dB) of the reconstructor's re-render of its four views at the rig
  cameras against the views (resized to the model's input resolution): `[N]`."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from data_pipeline import mv_grids
  from instant3d_jax import cameras as cameras_lib
  from instant3d_jax import reconstruction
  from instant3d_jax.eval import metrics as metrics_lib
  from instant3d_jax.models import lrm as lrm_lib
  config, params = reconstruction.load_checkpoint(checkpoint)
  m = lrm_lib.model_config(config)
  res = int(m.input_resolution)
  rig = cameras_lib.instant3d_rig(res)

  @jax.jit
  def rerender(p, views):
    b = views.shape[0]
    cams = jax.tree.map(lambda a: jnp.broadcast_to(a, (b,) + a.shape), rig)
    planes = lrm_lib.LRM(m).apply({"params": p}, views, cams)
    out = lrm_lib.render_views(m, p, planes, cams, outputs=("rgb",))["rgb"]
    return metrics_lib.psnr(jnp.clip(out, 0.0, 1.0), views)  # [b, 4]

  views = np.stack([reconstruction.resize_views(mv_grids.untile_grid(g), res)
                    for g in np.asarray(grids)]).astype(np.float32)
  scores = []
  for i in range(0, len(views), batch):
    chunk = views[i:i + batch]
    pad = batch - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
    scores.append(np.asarray(rerender(params, jnp.asarray(chunk)))[:batch - pad])
  return np.concatenate(scores).mean(-1)


def captioned_rows_image(grids, captions, per_caption: int, scale: int = 2, ncols: int = 2):
  """One tile per caption: its `per_caption` grids side by side (upscaled `scale`×), titled with
  the caption; `ncols` captions per row."""
  import numpy as np
  from instant3d_jax.export import images as images_lib
  g = np.asarray(grids).repeat(scale, 1).repeat(scale, 2)
  rows = [images_lib.make_grid(g[i * per_caption:(i + 1) * per_caption], ncols=per_caption)
          for i in range(len(captions))]
  return images_lib.make_labelled_grid(np.stack(rows), list(captions), ncols=ncols,
                                       label_height=14)


def _train(cfg, run_dir: str, retrain: bool) -> dict:
  from instant3d_jax.train import mv_task
  path = os.path.join(run_dir, "train_summary.json")
  if os.path.exists(path) and not retrain:
    summary = json.load(open(path))
    print(f"reusing the finished run in {run_dir} (step {summary['step']}; --retrain to train "
          "again)")
    return summary
  print(f"training {cfg.variant} for {cfg.train.total_steps} steps into {run_dir}")
  res = mv_task.train(cfg, run_dir)
  last = res.history[-10:]
  summary = {"step": res.step, "stop_reason": res.stop_reason, "wall_s": round(res.wall_s, 1),
             "compile_s": round(res.compile_s, 1),
             "final_train_loss": sum(h["loss"] for h in last) / max(len(last), 1)}
  with open(path + ".tmp", "w") as f:
    json.dump(summary, f, indent=2)
  os.replace(path + ".tmp", path)
  return summary


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
  from absl import logging
  from instant3d_jax.train import multihost
  logging.set_verbosity(logging.WARNING)
  cfg = _CONFIG.value
  workdir = _WORKDIR.value
  multihost.cpu_devices_per_core(cfg)
  import numpy as np
  from data_pipeline import captions as captions_lib
  from data_pipeline import datasets
  from instant3d_jax.eval import colour
  from instant3d_jax.export import images as images_lib
  from instant3d_jax.train import checkpoint as ckpt_lib
  from instant3d_jax.train import mv_task

  cfg.data_dir = _DATA_DIR.value
  t0 = time.perf_counter()
  info = datasets.prepare(cfg)
  print(f"data set: {info.data_dir} ({sum(info.splits.values())} objects, "
        f"{time.perf_counter() - t0:.1f} s)")
  run_dir = os.path.join(workdir, "train")
  summary = _train(cfg, run_dir, _RETRAIN.value)

  g = cfg.grid
  split = captions_lib.caption_split("heldout", seed=int(g.heldout_seed),
                                     num_heldout=int(g.num_heldout))
  rows = heldout_captions(info.data_dir, _NUM_CAPTIONS.value, split)
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
  real = real_grids(info.data_dir, rows, int(g.view_resolution))
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
    gen_psnr = view_consistency(recon, grids)
    real_psnr = view_consistency(recon, real)
    report["view_consistency"] = {
        "reconstructor": recon, "generated_psnr": float(np.mean(gen_psnr)),
        "real_psnr": float(np.mean(real_psnr)),
        "generated_psnr_per_grid": [round(float(x), 3) for x in gen_psnr]}
  else:
    print(f"note: no reconstructor at {recon!r} (run `make demo` first): view consistency "
          "skipped")
  img = captioned_rows_image(grids, caps, per)
  images_lib.save_png(os.path.join(workdir, "heldout_grids.png"), img)
  images_lib.save_png(os.path.join(workdir, "heldout_real_grids.png"),
                      captioned_rows_image(real, caps, 1))
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
