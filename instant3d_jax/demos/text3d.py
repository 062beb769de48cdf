"""Text to 3D on the shapes world (`make demo-text3d`, the command instant3d_jax/demo_text3d.py):
the stage-1 `tiny` model and the `make demo` reconstructor joined by the pipeline, on held-out
captions, with the page looked at.

`run(out, ...)` is the whole job (the command's docstring lists its steps and outputs);
`ensure_stage1` / `ensure_stage2` find the two demo models or train them first, each by running
its demo command in a process of its own (so that its devices are set up as in `make demo` /
`make demo-mv`).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def ensure_stage2(lrm_workdir: str) -> str:
  """The `make demo` reconstructor LRM_WORKDIR/lrm, trained first (`python -m
  instant3d_jax.demo`, its own process) when it has no finished run."""
  run_dir = os.path.join(lrm_workdir, "lrm")
  if not os.path.exists(os.path.join(run_dir, "train_summary.json")):
    print(f"no finished reconstructor in {run_dir}: running `make demo` first")
    subprocess.run([sys.executable, "-m", "instant3d_jax.demo", "--workdir", lrm_workdir],
                   check=True)
  return run_dir


def ensure_stage1(mv_workdir: str, data_dir: str, run_dir: str) -> str:
  """The `make demo-mv` model MV_WORKDIR/train, trained first (`python -m
  instant3d_jax.demo_mv`, its own process) when it has no finished run."""
  train_dir = os.path.join(mv_workdir, "train")
  if not os.path.exists(os.path.join(train_dir, "train_summary.json")):
    print(f"no finished stage-1 model in {train_dir}: running `make demo-mv` first")
    subprocess.run([sys.executable, "-m", "instant3d_jax.demo_mv", "--workdir", mv_workdir,
                    "--data_dir", data_dir, "--reconstructor", run_dir], check=True)
  return train_dir


def run(out: str, *, config, mv_config, num_captions: int, mv_workdir: str, lrm_workdir: str,
        seed: int = 0) -> dict:
  """The whole job: both demo models (each trained first when absent), `num_captions` held-out
  captions → objects in `out` (the `text_to_3d` layout), their scores, the toy CLIP protocol, the
  page's screenshot and out/report.{json,md} (the command's docstring lists them). Prints the
  report; returns it. `config`: the pipeline's (configs/instant3d.py:tiny; its weights are the
  two demo runs'); `mv_config`: the stage-1 run's (configs/mv_sdxl.py:tiny: its held-out
  caption split)."""
  import jax
  import numpy as np
  from data_pipeline import captions as captions_lib
  from instant3d_jax.eval import mv_eval
  from instant3d_jax import pipeline as pipeline_lib
  from instant3d_jax.eval import clip_score, text3d
  from instant3d_jax.export import images as images_lib
  t0 = time.perf_counter()
  data_dir = os.path.join(lrm_workdir, "data")
  run_dir = ensure_stage2(lrm_workdir)
  train_dir = ensure_stage1(mv_workdir, data_dir, run_dir)
  g = mv_config.grid
  split = captions_lib.caption_split("heldout", seed=int(g.heldout_seed),
                                     num_heldout=int(g.num_heldout))
  rows = mv_eval.heldout_captions(data_dir, num_captions, split)
  caps = [r["caption"] for r in rows]
  cfg = config
  pipe = pipeline_lib.TextTo3D.load(cfg, stage1=train_dir, stage2=run_dir)
  t = time.perf_counter()
  pipeline_lib.generate_to_folder(pipe, caps, out, seed=seed)
  gen_s = time.perf_counter() - t
  run_info = json.load(open(os.path.join(out, "run.json")))

  items, single_ok, grids = [], [], []
  for e in run_info["prompts"]:
    d = os.path.join(out, e["dir"])
    planes = np.load(os.path.join(d, "triplane.npz"))["planes"]
    grids.append(np.load(os.path.join(d, "grid.npy")) if os.path.exists(os.path.join(d, "grid.npy"))
                 else np.asarray(read_png(os.path.join(d, "grid.png")), np.float32) / 255.0)
    named = captions_lib.caption_colours(e["prompt"])
    main_colour, per = mv_eval.object_colours(pipe.stage2_model, pipe.stage2_params, planes)
    ok = None
    if len(named) == 1:
      ok = main_colour == named[0]
      single_ok.append(ok)
    items.append({"prompt": e["prompt"], "dir": e["dir"], "object_colour": main_colour,
                  "frame_colours": per, "caption_colours": named, "ok": ok})
  psnr = mv_eval.view_consistency(run_dir, np.stack(grids), background_threshold=float(
      cfg.stage2.background_threshold))
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
            "timings": run_info["timings"], "prompts_per_s": run_info["prompts_per_s"],
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
           f"({run_info['prompts_per_s']} prompts/s, compile included; stage split "
           f"{json.dumps(run_info['timings'])})",
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
  return report


def read_png(path):
  """A PNG as an RGB PIL image."""
  from PIL import Image
  return Image.open(path).convert("RGB")
