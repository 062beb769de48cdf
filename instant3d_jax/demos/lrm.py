"""The main job (`make demo`, the command instant3d_jax/demo.py): procedural world → train the
tiny reconstructor → evaluate → turntable, each step printing what it did.

`run(cfg, workdir)` is the whole job (the command's docstring says what each step writes);
`data_step`, `train_step` and `turntable_step` are its steps.
"""
from __future__ import annotations

import os
import time

from instant3d_jax.train import launch


def data_step(cfg, workdir: str) -> str:
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
  split = "val" if info.splits.get("val") else "train"
  rec = object_contact_sheet(data_dir, sheet, split=split)
  print(f"contact sheet of {rec['object_id']} (\"{rec['caption']}\"): {sheet}")
  return data_dir


def train_step(cfg, run_dir: str, retrain: bool) -> dict:
  """Step 2: train (or reuse a finished run). Returns the run summary."""
  from instant3d_jax.train import loop, lrm_task
  summary = loop.finished_summary(run_dir, retrain)
  if summary is not None:
    return summary
  steps, warmup = int(cfg.train.total_steps), int(cfg.optimizer.warmup_steps)
  if 0 < steps <= warmup and not int(cfg.optimizer.decay_steps):
    # A short try (e.g. --config.train.total_steps=2) gets a warm-up that fits in it; the
    # schedule itself refuses a warm-up as long as the run.
    cfg.optimizer.warmup_steps = steps // 10
    print(f"warm-up shortened from {warmup} to {steps // 10} steps for a {steps}-step run")
  budget = float(cfg.train.time_budget_s or 0)
  print(f"training {cfg.variant} for {cfg.train.total_steps} steps"
        + (f" (or {budget:.0f} s of wall clock, whichever ends first)" if budget else "")
        + f" into {run_dir}")
  res = lrm_task.train(cfg, run_dir)
  last = res.history[-10:]
  return loop.write_summary(run_dir, res, time_budget_s=float(cfg.train.time_budget_s),
                            final_train_psnr=sum(h["psnr"] for h in last) / max(len(last), 1))


def turntable_step(cfg, data_dir: str, run_dir: str, out_dir: str) -> dict:
  """Step 4: reconstruct the first val object from its 4 Instant3D-rig views."""
  from data_pipeline import records
  from instant3d_jax import reconstruction
  from instant3d_jax.export.images import save_png
  rec = records.RecordSource(data_dir, "val")[0]
  rgba = records.group_rgba(rec, "rig")
  views_dir = os.path.join(out_dir, "input_views")
  paths = []
  for i, v in enumerate(rgba):
    p = os.path.join(views_dir, f"view_{i}.png")
    save_png(p, v)  # RGBA: reconstruct composites it onto the training background
    paths.append(p)
  written = reconstruction.reconstruct(run_dir, out_dir, views=paths, num_novel=4,
                                       turntable_frames=24, mesh_resolution=64,
                                       mesh_threshold="auto", progress=False, log=lambda *_: None)
  written["object"] = f"{rec['object_id']}: {rec['caption']}"
  return written


def _split_rows(summary: dict) -> tuple[dict, dict]:
  """An evaluation summary → (model metrics, {baseline label: metrics})."""
  from instant3d_jax.eval import protocol
  model = {k: summary[k] for k in protocol.METRICS if k in summary}
  base = {label: {k: summary[prefix + k] for k in protocol.METRICS if prefix + k in summary}
          for prefix, label in protocol.BASELINES.items()}
  return model, {k: v for k, v in base.items() if v}


def run(cfg, workdir: str, *, retrain: bool = False, data_only: bool = False,
        score_test: bool = True) -> dict | None:
  """The whole job into `workdir` with the reconstructor config `cfg` (configs/lrm.py; its
  `data_dir` is set to WORKDIR/data): data and contact sheet, then (unless `data_only`)
  training (a finished run is reused unless `retrain`), evaluation on `val` and (unless
  `score_test` is False: a tuning run) on `test` through the test ledger, the turntable of a val
  object, and WORKDIR/results.json (instant3d_jax/eval/results.py); prints where everything is
  and returns the results dict."""
  from instant3d_jax.base import multihost
  from instant3d_jax.eval import results as results_lib
  rec = results_lib.Run.start("demo")
  cfg.data_dir = os.path.join(workdir, "data")
  launch.check_train_inputs(cfg, workdir)  # before the data set is generated
  multihost.cpu_devices_per_core(cfg)
  wall = {}
  t = time.perf_counter()
  data_dir = data_step(cfg, workdir)
  wall["data"] = time.perf_counter() - t
  if data_only:
    return None
  run_dir = os.path.join(workdir, "lrm")
  t = time.perf_counter()
  summary = train_step(cfg, run_dir, retrain)
  wall["train_step"] = time.perf_counter() - t
  wall["train"] = summary["wall_s"]

  from instant3d_jax.eval import lrm_eval
  from instant3d_jax.convert import checkpoints
  step = summary["step"]
  evals = {}
  for split in ("val", "test") if score_test else ("val",):
    t = time.perf_counter()
    evals[split] = lrm_eval.evaluate_checkpoint(
        run_dir, config=cfg, split=split, log=lambda *_: None,
        out=os.path.join(run_dir, "eval", f"{split}_step_{step}"))
    wall[f"eval_{split}"] = time.perf_counter() - t
  t = time.perf_counter()
  written = turntable_step(cfg, data_dir, run_dir, os.path.join(workdir, "reconstruct"))
  wall["turntable"] = time.perf_counter() - t

  run_cfg, params, _ = checkpoints.load(run_dir)
  metrics, baselines, ev = {}, {}, {}
  for split, (r, md_path) in evals.items():
    metrics[split], baselines[split] = _split_rows(r["summary"])
    ev[split] = {k: r[k] for k in ("num_objects", "num_views_per_object", "resolution",
                                   "rotate_deg", "seed") if k in r}
    ev[split]["table"] = str(md_path)
    if "test_ledger" in r:
      ev[split]["test_ledger"] = r["test_ledger"]
  out_path = os.path.join(workdir, "results.json")
  res = rec.write(out_path, configs={"lrm": run_cfg}, params={"lrm": params}, metrics=metrics,
                  baselines=baselines, wall_s=wall,
                  extra={"train": summary, "eval": ev, "turntable_object": written["object"],
                         "scored_config_sha256": lrm_eval.scored_config_sha256(run_cfg)})

  print()
  print(evals["val"][1].read_text())
  print(f"training: {summary['step']} steps in {summary['wall_s']:.0f} s (compile "
        f"{summary['compile_s']:.0f} s, stop: {summary['stop_reason']}"
        + (f", budget {summary['time_budget_s']:.0f} s" if summary.get("time_budget_s") else "")
        + ")")
  for split, (r, _) in evals.items():
    s = r["summary"]
    t = r.get("test_ledger")
    print(f"{split}: PSNR {s['psnr']:.2f} dB, SSIM {s['ssim']:.4f}"
          + (f", LPIPS {s['lpips']:.4f}" if "lpips" in s else "")
          + f", colour error {s.get('colour_error', float('nan')):.1f}"
          + f" on {r['num_objects']} objects × {r['num_views_per_object']} views"
          + (f" ({t['configs_scored']} configuration(s) scored on this test set"
             + (", recorded result of an earlier scoring" if t["repeat"] else "") + ")"
             if t else ""))
  print(f"parameter hash {res['param_sha256']['lrm']}")
  print(f"results: {out_path}")
  print(f"turntable ({written['object']}): {written.get('turntable_gif', written)}")
  print(f"training logs: {run_dir} (metrics.jsonl, tb/, images/, loss_curve.png)")
  return res


def results_table(res: dict, *, source: str = "results.json", rerun: dict | None = None,
                  rerun_source: str = "", ledger_now: dict | None = None) -> str:
  """The README's `make demo` section, from a results file (`run`'s) and optionally a second run's
  (the bit-identity line compares their parameter hashes). Every figure is read off the files."""
  from instant3d_jax.eval import protocol
  m, b, ev = res["metrics"], res["baselines"], res["extra"]["eval"]
  tr = res["extra"]["train"]
  mach = res["machine"]
  la = lambda x: " / ".join(f"{v:.2f}" for v in x)  # noqa: E731
  dirty = " (uncommitted changes)" if res.get("dirty") else ""
  lines = [
      f"From `{source}`, written by `{res['command']}` at commit `{res['commit'][:12]}`{dirty}, "
      f"{res['started_utc']} to {res['finished_utc']}, on {mach.get('cpu', '?')} "
      f"({mach.get('cores', '?')} cores, {mach.get('memory_gib', '?')} GiB; "
      f"{mach.get('devices', '?')}); load average (1 / 5 / 15 min) before {la(res['load']['before'])}, "
      f"after {la(res['load']['after'])}. Training: {tr['step']} steps ({tr['stop_reason']}) in "
      f"{tr['wall_s']:.0f} s ({tr['wall_s'] / max(tr['step'], 1):.2f} s/step with the hooks, "
      f"compile {tr['compile_s']:.0f} s); data {res['wall_s'].get('data', 0):.0f} s, "
      + ", ".join(f"{k.replace('_', ' ')} {v:.0f} s" for k, v in res["wall_s"].items()
                  if k.startswith("eval_") or k == "turntable") + ".", ""]
  cols = [("psnr", "PSNR (dB) ↑", 2), ("ssim", "SSIM ↑", 4), ("lpips", "LPIPS ↓", 4),
          ("foreground_psnr", "foreground PSNR (dB) ↑", 2),
          ("colour_error", "colour error (0–255) ↓", 1)]
  lines += ["| | " + " | ".join(c[1] for c in cols) + " |",
            "|---|" + "---:|" * len(cols)]
  fmt = lambda d, k, p: "–" if d.get(k) is None else f"{d[k]:.{p}f}"  # noqa: E731
  splits = [s for s in ("val", "test") if s in m]
  for s in splits:
    e = ev[s]
    lines.append(f"| `tiny`, **{s}** ({e['num_objects']} objects × {e['num_views_per_object']} "
                 f"views) | " + " | ".join(
                     ("**" + fmt(m[s], k, p) + "**") for k, _, p in cols) + " |")
  for label in protocol.BASELINES.values():
    for s in splits:
      if label in b.get(s, {}):
        lines.append(f"| *{label}, {s}* | " + " | ".join(fmt(b[s][label], k, p)
                                                         for k, _, p in cols) + " |")
  lines.append("")
  t = ledger_now or ev.get("test", {}).get("test_ledger")  # the ledger's count as of now
  if t:
    lines.append(f"Test figures: {t['configs_scored']} configuration(s) of the reconstructor "
                 f"scored on this test set so far (`bench/results/test_ledger.jsonl`, data set "
                 f"`{t['dataset']}`)" + ("; the recorded result of an earlier scoring of these "
                                         "parameters" if t.get("repeat") else "") + ".")
  h = res["param_sha256"]["lrm"]
  lines.append(f"Parameter hash `{h}`, config hash `{res['extra']['scored_config_sha256']}`.")
  if rerun is not None:
    h2 = rerun["param_sha256"]["lrm"]
    same = "equal: bit-identical parameters" if h2 == h else "DIFFERENT parameters"
    lines.append(f"A second run (`{rerun_source}`, `{rerun['command']}` at commit "
                 f"`{rerun['commit'][:12]}`, {rerun['started_utc']}, trained in "
                 f"{rerun['extra']['train']['wall_s']:.0f} s, load before "
                 f"{la(rerun['load']['before'])}): parameter hash `{h2}`, {same}.")
  return "\n".join(lines) + "\n"
