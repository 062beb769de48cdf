"""Text to 3D on the shapes world (`make demo-text3d`): the stage-1 `tiny` model and the `make demo`
reconstructor joined by the pipeline, on held-out captions, with the page looked at.

  python -m instant3d_jax.demo_text3d [--out outputs/text3d] [--num_captions 20]
      [--mv_workdir outputs/mv_demo] [--lrm_workdir outputs/demo]

1. Stage 2: the `make demo` reconstructor (LRM_WORKDIR/lrm), trained first when absent
   (instant3d_jax/demo.py, configs/lrm.py:tiny). Stage 1: the `make demo-mv` model
   (MV_WORKDIR/train), trained first when absent (instant3d_jax/demo_mv.py,
   configs/mv_sdxl.py:tiny). Both share the procedural data set in LRM_WORKDIR/data.
2. The held-out captions of `mv_eval.heldout_captions` (unseen colour–shape combinations) through
   `pipeline.TextTo3D` (configs/instant3d.py:tiny) into OUT (the `generate` layout: per object
   grid, views, triplane, renders, turntable, mesh; OUT/index.html, OUT/run.json).
3. Scores, in OUT/report.{json,md}:
   * colour of the 3D object: 8 turntable renders of each reconstruction (not the grid) are
     classified against the world's palette (instant3d_jax/eval/colour.py); a single-object
     caption is right when the colour most views show is the caption's;
   * the reconstructor's re-render PSNR of its own four input views (the generated ones);
   * the paper's CLIP-similarity protocol (`eval_text3d`) run on the objects with a tiny random
     CLIP (no pretrained CLIP here): it exercises the plumbing, its numbers mean nothing.
4. OUT/index.png: the page in headless Chromium (skipped with a note where there is none).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import flags

from instant3d_jax import cli

_OUT = flags.DEFINE_string("out", "outputs/text3d", "where the objects, page and report go")
_NUM = flags.DEFINE_integer("num_captions", 20, "held-out captions to turn into objects")
_MV = flags.DEFINE_string("mv_workdir", "outputs/mv_demo", "the `make demo-mv` workdir")
_LRM = flags.DEFINE_string("lrm_workdir", "outputs/demo", "the `make demo` workdir")
_SEED = flags.DEFINE_integer("seed", 0, "sampling seed")


def _ensure_stage2(lrm_workdir: str) -> str:
  run_dir = os.path.join(lrm_workdir, "lrm")
  if not os.path.exists(os.path.join(run_dir, "train_summary.json")):
    print(f"no finished reconstructor in {run_dir}: running `make demo` first")
    subprocess.run([sys.executable, "-m", "instant3d_jax.demo", "--workdir", lrm_workdir],
                   check=True)
  return run_dir


def _ensure_stage1(mv_workdir: str, data_dir: str, run_dir: str) -> str:
  train_dir = os.path.join(mv_workdir, "train")
  if not os.path.exists(os.path.join(train_dir, "train_summary.json")):
    print(f"no finished stage-1 model in {train_dir}: running `make demo-mv` first")
    subprocess.run([sys.executable, "-m", "instant3d_jax.demo_mv", "--workdir", mv_workdir,
                    "--data_dir", data_dir, "--reconstructor", run_dir], check=True)
  return train_dir


def main(argv):
  del argv
  from instant3d_jax import errors
  from instant3d_jax import fileio
  # Cheap checks first: a bad flag fails before anything trains or loads.
  if _NUM.value < 1:
    raise errors.ConfigError(f"--num_captions must be >= 1, got {_NUM.value}")
  for name, flag in (("out", _OUT), ("mv_workdir", _MV), ("lrm_workdir", _LRM)):
    if fileio.path(flag.value).is_file():
      raise errors.ConfigError(f"--{name} {flag.value}: is a file, not a directory")
  import jax
  import numpy as np
  from instant3d_jax.configs import instant3d
  from instant3d_jax.configs import mv_sdxl
  from data_pipeline import captions as captions_lib
  from instant3d_jax.eval import mv_eval
  from instant3d_jax import pipeline as pipeline_lib
  from instant3d_jax.eval import clip_score, text3d
  from instant3d_jax.export import images as images_lib
  t0 = time.perf_counter()
  data_dir = os.path.join(_LRM.value, "data")
  run_dir = _ensure_stage2(_LRM.value)
  train_dir = _ensure_stage1(_MV.value, data_dir, run_dir)
  g = mv_sdxl.get_config("tiny").grid
  split = captions_lib.caption_split("heldout", seed=int(g.heldout_seed),
                                     num_heldout=int(g.num_heldout))
  rows = mv_eval.heldout_captions(data_dir, _NUM.value, split)
  caps = [r["caption"] for r in rows]
  cfg = instant3d.get_config("tiny")
  pipe = pipeline_lib.TextTo3D.load(cfg, stage1=train_dir, stage2=run_dir)
  out = _OUT.value
  t = time.perf_counter()
  pipeline_lib.generate_to_folder(pipe, caps, out, seed=_SEED.value)
  gen_s = time.perf_counter() - t
  run = json.load(open(os.path.join(out, "run.json")))

  items, single_ok, grids = [], [], []
  for e in run["prompts"]:
    d = os.path.join(out, e["dir"])
    planes = np.load(os.path.join(d, "triplane.npz"))["planes"]
    grids.append(np.load(os.path.join(d, "grid.npy")) if os.path.exists(os.path.join(d, "grid.npy"))
                 else np.asarray(_read_png(os.path.join(d, "grid.png")), np.float32) / 255.0)
    named = captions_lib.caption_colours(e["prompt"])
    main_colour, per = mv_eval.object_colours(pipe.stage2_model, pipe.stage2_params, planes)
    ok = None
    if len(named) == 1:
      ok = main_colour == named[0]
      single_ok.append(ok)
    items.append({"prompt": e["prompt"], "dir": e["dir"], "object_colour": main_colour,
                  "frame_colours": per, "caption_colours": named, "ok": ok})
  psnr = mv_eval.view_consistency(run_dir, np.stack(grids))
  for it, p in zip(items, psnr):
    it["rerender_psnr"] = round(float(p), 3)

  # The CLIP-similarity protocol on these objects with a tiny random CLIP: plumbing only.
  toy = os.path.join(out, "toy_clip")
  if not os.path.exists(os.path.join(toy, "config.json")):
    clip_score.write_toy_clip_model(toy)
  clip = text3d.evaluate(out, run_dir, text3d.load_scorers({"clip_l": toy}), num_pick=4,
                         resolution=64, log=lambda *_: None)
  text3d.write_report(clip, os.path.join(out, "clip_similarity_toy.json"),
                      os.path.join(out, "clip_similarity_toy.md"))
  shot = images_lib.screenshot_page(os.path.join(out, "index.html"), os.path.join(out, "index.png"))

  acc = float(np.mean(single_ok)) if single_ok else float("nan")
  report = {"stage1": train_dir, "stage2": run_dir, "num_captions": len(caps),
            "single_object_colour_accuracy": acc, "single_count": len(single_ok),
            "rerender_psnr": float(np.mean(psnr)), "generate_s": round(gen_s, 1),
            "timings": run["timings"], "prompts_per_s": run["prompts_per_s"],
            "clip_toy_mean": clip["mean"], "screenshot": shot, "objects": items,
            "total_s": round(time.perf_counter() - t0, 1), "device": str(jax.devices()[0])}
  with open(os.path.join(out, "report.json"), "w") as f:
    json.dump(report, f, indent=2, default=float)
  lines = [f"# Text to 3D on the shapes world ({len(caps)} held-out captions)", "",
           f"- single-object captions whose reconstructed object (8 turntable renders) has the "
           f"caption's colour: **{100 * acc:.1f}%** ({sum(single_ok)}/{len(single_ok)})",
           f"- reconstructor re-render PSNR of its own (generated) input views: "
           f"**{np.mean(psnr):.2f} dB**",
           f"- generation: {gen_s:.1f} s for {len(caps)} objects "
           f"({run['prompts_per_s']} prompts/s, compile included; stage split "
           f"{json.dumps(run['timings'])})",
           "- CLIP similarity with a tiny random CLIP (plumbing only, not a score): "
           f"{json.dumps(clip['mean'])}", "",
           "| # | caption | object colour | re-render PSNR |", "|---|---|---|---|"]
  for i, it in enumerate(items):
    mark = "" if it["ok"] is None else (" ✓" if it["ok"] else " ✗")
    lines.append(f"| {i} | {it['prompt']} | {it['object_colour']}{mark} | "
                 f"{it['rerender_psnr']:.2f} |")
  md = "\n".join(lines) + "\n"
  with open(os.path.join(out, "report.md"), "w") as f:
    f.write(md)
  print(md)
  print(f"page: {os.path.join(out, 'index.html')}"
        + (f" (screenshot {shot})" if shot else " (no Chromium: no screenshot)"))


def _read_png(path):
  from PIL import Image
  return Image.open(path).convert("RGB")


if __name__ == "__main__":
  cli.run(main)
