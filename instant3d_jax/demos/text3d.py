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
  captions per caption role (val, test) → objects in `out` (the `text_to_3d` layout), their
  scores per role (the test role through the test ledger), the toy CLIP protocol, the
  page's screenshot and out/report.{json,md} (the command's docstring lists them). Prints the
  report; returns it. `config`: the pipeline's (configs/instant3d.py:tiny; its weights are the
  two demo runs'); `mv_config`: the stage-1 run's (configs/mv_sdxl.py:tiny: its held-out
  caption split)."""
  import jax
  import numpy as np
  from data_pipeline import captions as captions_lib
  from instant3d_jax.eval import ledger, mv_eval, results, shape, stats
  from instant3d_jax import pipeline as pipeline_lib
  from instant3d_jax.eval import clip_score, text3d
  from instant3d_jax.export import images as images_lib
  rec = results.Run.start("demo_text3d")
  t0 = time.perf_counter()
  data_dir = os.path.join(lrm_workdir, "data")
  run_dir = ensure_stage2(lrm_workdir)
  train_dir = ensure_stage1(mv_workdir, data_dir, run_dir)
  g = mv_config.grid
  roles = captions_lib.heldout_roles(int(g.heldout_seed), int(g.num_heldout))
  rows = mv_eval.heldout_captions(data_dir, num_captions, roles)
  caps = [r["caption"] for r in rows]
  clf = shape.ensure_classifier(os.path.join(mv_workdir, "shape_classifier.npz"), data_dir,
                                resolution=int(g.view_resolution), seed=int(mv_config.seed))
  cfg = config
  pipe = pipeline_lib.TextTo3D.load(cfg, stage1=train_dir, stage2=run_dir)
  t = time.perf_counter()
  pipeline_lib.generate_to_folder(pipe, caps, out, seed=seed)
  gen_s = time.perf_counter() - t
  run_info = json.load(open(os.path.join(out, "run.json")))

  items, grids = [], []
  role_of = {r["caption"]: r["role"] for r in rows}
  for e in run_info["prompts"]:
    d = os.path.join(out, e["dir"])
    grids.append(np.load(os.path.join(d, "grid.npy")) if os.path.exists(os.path.join(d, "grid.npy"))
                 else np.asarray(read_png(os.path.join(d, "grid.png")), np.float32) / 255.0)
    items.append({"prompt": e["prompt"], "role": role_of[e["prompt"]], "dir": e["dir"],
                  "caption_colours": captions_lib.caption_colours(e["prompt"])})

  def score_role(role):
    # The stage-1 rules (eval/colour.py, eval/shape.py) on 8 turntable renders of each
    # reconstruction (not the grid), and the re-render PSNR of its own input views.
    idx = [i for i, it in enumerate(items) if it["role"] == role]
    psnr = mv_eval.view_consistency(run_dir, np.stack([grids[i] for i in idx]),
                                    background_threshold=float(cfg.stage2.background_threshold))
    objs, tally = [], {"single_colour": [], "multi_colour": [], "shape": []}
    for i, p in zip(idx, psnr):
      planes = np.load(os.path.join(out, items[i]["dir"], "triplane.npz"))["planes"]
      frames = mv_eval.object_frames(pipe.stage2_model, pipe.stage2_params, planes)
      sc = mv_eval.views_scores(frames, items[i]["prompt"], clf)
      single = len(items[i]["caption_colours"]) == 1
      tally["single_colour" if single else "multi_colour"].append(sc["colour"]["ok"])
      if sc["shape"] is not None:
        tally["shape"].append(sc["shape"]["ok"])
      objs.append({**items[i], "frame_colours": sc["colour"]["dominant"],
                   "unnamed_share": sc["colour"]["unnamed_share"],
                   "colour_ok": sc["colour"]["ok"],
                   "frame_shapes": sc["shape"] and sc["shape"]["predicted"],
                   "shape_ok": sc["shape"] and sc["shape"]["ok"],
                   "rerender_psnr": round(float(p), 3)})
    return json.loads(json.dumps({
        "scores": {k: stats.proportion(sum(v), len(v)) for k, v in tally.items()},
        "rerender_psnr": float(np.mean(psnr)), "objects": objs}, default=float))

  by_role = {"val": score_role("val")}
  param_hash = results.param_sha256({"stage1": pipe.stage1.params, "stage2": pipe.stage2_params})
  dataset = f"{ledger.dataset_id(data_dir, 'test')}:captions-test:text3d"
  by_role["test"], entry = ledger.score_on_test(
      label="demo_text3d (stage-1 tiny EMA + make-demo reconstructor)", dataset=dataset,
      config_hash=results.config_sha256(cfg), param_hash=param_hash,
      score=lambda: score_role("test"))

  # The CLIP-similarity protocol on these objects with a tiny random CLIP: plumbing only.
  toy = os.path.join(out, "toy_clip")
  if not os.path.exists(os.path.join(toy, "config.json")):
    clip_score.write_toy_clip_model(toy)
  clip = text3d.evaluate(out, run_dir, text3d.load_scorers({"clip_l": toy}), num_pick=4,
                         resolution=64, log=lambda *_: None)
  text3d.write_report(clip, os.path.join(out, "clip_similarity_toy.json"),
                      os.path.join(out, "clip_similarity_toy.md"))
  shot = images_lib.screenshot_page(os.path.join(out, "index.html"), os.path.join(out, "index.png"))

  report = {"stage1": train_dir, "stage2": run_dir, "num_captions_per_role": num_captions,
            "roles": by_role, "test_ledger": {"dataset": dataset, "repeat": entry["repeat"],
                                              "configs_scored": entry["configs_scored"]},
            "generate_s": round(gen_s, 1),
            "timings": run_info["timings"], "prompts_per_s": run_info["prompts_per_s"],
            "clip_toy_mean": clip["mean"], "screenshot": shot,
            "total_s": round(time.perf_counter() - t0, 1), "device": str(jax.devices()[0])}
  with open(os.path.join(out, "report.json"), "w") as f:
    json.dump(report, f, indent=2, default=float)
  cols = (("single_colour", "single-object colour"), ("multi_colour", "multi-object colour"),
          ("shape", "shape (single-object)"))
  lines = [f"# Text to 3D on the shapes world ({num_captions} held-out captions per role)", "",
           "The stage-1 rules (instant3d_jax/eval/colour.py, eval/shape.py) on 8 turntable "
           "renders of each reconstructed object (not the grid): share right [Wilson 95%] (n "
           "objects). Test captions scored through the test ledger"
           + (" (recorded result: not scored again)" if entry["repeat"] else "")
           + f", {entry['configs_scored']} config(s) scored on {dataset}.", "",
           "| role | " + " | ".join(t for _, t in cols) + " | re-render PSNR (dB) |",
           "|---|---|---|---|---|"]
  for role, r in by_role.items():
    lines.append(f"| {role} | " + " | ".join(stats.format_proportion(r["scores"][k])
                                             for k, _ in cols)
                 + f" | {r['rerender_psnr']:.2f} |")
  lines += ["", f"- generation: {gen_s:.1f} s for {len(caps)} objects "
            f"({run_info['prompts_per_s']} prompts/s, compile included; stage split "
            f"{json.dumps(run_info['timings'])})",
            "- CLIP similarity with a tiny random CLIP (plumbing only, not a score): "
            f"{json.dumps(clip['mean'])}", "",
            "| # | role | caption | frame colours | colour | shape | re-render PSNR |",
            "|---|---|---|---|---|---|---|"]
  mark = lambda ok: "—" if ok is None else ("✓" if ok else "✗")  # noqa: E731
  for i, it in enumerate(o for r in by_role.values() for o in r["objects"]):
    lines.append(f"| {i} | {it['role']} | {it['prompt']} | "
                 f"{'/'.join(map(str, it['frame_colours']))} | {mark(it['colour_ok'])} | "
                 f"{mark(it['shape_ok'])} | "
                 f"{it['rerender_psnr']:.2f} |")
  md = "\n".join(lines) + "\n"
  with open(os.path.join(out, "report.md"), "w") as f:
    f.write(md)
  rec.write(os.path.join(out, "results.json"), configs={"pipeline": cfg},
            params={"stage1_and_stage2": param_hash},
            metrics={role: {"scores": r["scores"], "rerender_psnr": r["rerender_psnr"]}
                     for role, r in by_role.items()},
            baselines={"chance": {"single_colour": 0.1, "shape": 0.2}},
            wall_s={"generate": gen_s, "total": time.perf_counter() - t0},
            extra={"num_captions_per_role": num_captions, "test_ledger": report["test_ledger"],
                   "prompts_per_s": run_info["prompts_per_s"], "timings": run_info["timings"],
                   "stage1": train_dir, "stage2": run_dir})
  print(md)
  print(f"page: {os.path.join(out, 'index.html')}"
        + (f" (screenshot {shot})" if shot else " (no Chromium: no screenshot)"))
  return report


def results_table(res: dict, *, source: str = "results.json",
                  ledger_now: dict | None = None) -> str:
  """The README's `make demo-text3d` block (bench/report.py) from its results file."""
  from instant3d_jax.eval import stats
  m, x = res["metrics"], res["extra"]
  la = lambda v: " / ".join(f"{y:.2f}" for y in v)  # noqa: E731
  dirty = " (uncommitted changes)" if res.get("dirty") else ""
  cols = (("single_colour", "single-object colour"), ("multi_colour", "multi-object colour"),
          ("shape", "shape (single-object)"))
  lines = [f"From `{source}`, written by `{res['command']}` at commit `{res['commit'][:12]}`"
           f"{dirty}, {res['started_utc']} to {res['finished_utc']}, on "
           f"{res['machine'].get('cpu', '?')} ({res['machine'].get('cores', '?')} cores); load "
           f"average before {la(res['load']['before'])}, after {la(res['load']['after'])}. "
           f"{x['num_captions_per_role']} held-out captions per role → objects in "
           f"{res['wall_s'].get('generate', 0):.0f} s ({x['prompts_per_s']} prompts/s, compiles "
           "included); each object scored by the stage-1 rules on 8 turntable renders: share "
           "right [Wilson 95% interval] (n objects); chance 10% for one colour, 20% for a shape.",
           "", "| role | " + " | ".join(t for _, t in cols) + " | re-render PSNR (dB) |",
           "|---|---|---|---|---|"]
  for role in ("val", "test"):
    if role in m:
      lines.append(f"| {role} | " + " | ".join(stats.format_proportion(m[role]["scores"].get(k))
                                               for k, _ in cols)
                   + f" | {m[role]['rerender_psnr']:.2f} |")
  t = ledger_now or x.get("test_ledger") or {}  # the ledger's count as of now
  if t:
    lines += ["", f"Test captions: {t['configs_scored']} configuration(s) scored on them so far "
              f"(`{t['dataset']}`)" + ("; the recorded result of an earlier scoring"
                                       if t.get("repeat") else "") + "."]
  lines.append("Parameter hash (both stages) "
               + ", ".join(f"`{h}`" for h in res["param_sha256"].values()) + ".")
  return "\n".join(lines) + "\n"


def read_png(path):
  """A PNG as an RGB PIL image."""
  from PIL import Image
  return Image.open(path).convert("RGB")
