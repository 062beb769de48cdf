"""Stage 1 on the shapes world (`make demo-mv`, the command instant3d_jax/demo_mv.py): train the
tiny text-to-four-views model from scratch on this CPU, then sample grids for held-out captions
and score them (issue "Stage-1 scores that can fail").

`run(cfg, workdir, ...)` is the whole job (the command's docstring lists its steps and outputs);
`train` its training step, `score_grids` the table of one caption role (rows chance level,
shuffled-caption control, real-render ceiling and the model; columns single-object colour,
multi-object colour and shape, each a proportion with its n and Wilson 95% interval) and
`markdown` the report.
"""
from __future__ import annotations

import json
import os
import time

from instant3d_jax.train import launch

ROWS = ("chance", "shuffled", "real", "model")
ROW_TITLES = {"chance": "chance level",
              "shuffled": "shuffled-caption control (generated grids)",
              "real": "real-render ceiling (rig renders)",
              "model": "**the model** (generated grids)"}
COLUMNS = ("single_colour", "multi_colour", "shape")
COLUMN_TITLES = {"single_colour": "single-object colour", "multi_colour": "multi-object colour",
                 "shape": "shape (single-object)"}
SHUFFLE_SEED = 0


def train(cfg, run_dir: str, retrain: bool) -> dict:
  """Trains stage 1 into `run_dir` (or reuses a finished run). Returns the run summary."""
  from instant3d_jax.train import loop, mv_task
  summary = loop.finished_summary(run_dir, retrain)
  if summary is not None:
    return summary
  print(f"training {cfg.variant} for {cfg.train.total_steps} steps into {run_dir}")
  return loop.write_summary(run_dir, mv_task.train(cfg, run_dir))


def shuffled_captions(grid_captions: list[str], seed: int = SHUFFLE_SEED) -> list[str]:
  """The shuffled-caption control's captions: the distinct captions of each kind (single- and
  multi-object) in a seeded random cycle, each grid given the next caption of the cycle (a
  derangement of the captions: no grid keeps its own while its kind has two or more)."""
  import numpy as np
  from data_pipeline import captions as captions_lib
  rng = np.random.default_rng([int(seed), 29])
  mapping = {}
  for single in (True, False):
    caps = list(dict.fromkeys(c for c in grid_captions
                              if (len(captions_lib.parse_caption(c)) == 1) == single))
    order = [caps[i] for i in rng.permutation(len(caps))]
    mapping.update({c: order[(i + 1) % len(order)] for i, c in enumerate(order)})
  return [mapping[c] for c in grid_captions]


def score_grids(grids, grid_captions: list[str], real, captions: list[str], clf) -> dict:
  """The table of one caption role: {row: {column: proportion}} (module docstring). `grids`: the
  generated grids with `grid_captions`; `real`: the real rig renders of the `captions`' objects;
  `clf`: the shape classifier (eval/shape.py). Chance: a grid painted one random palette colour,
  or m distinct random palette colours (eval/colour.py `chance_level`), and a random shape
  (1/5): exact values, no n. Also "items" (per generated grid: colour and shape verdicts)."""
  from data_pipeline import primitives
  from instant3d_jax.eval import colour, shape, stats

  def row(g, caps):
    c = colour.grid_colour_report(g, caps)
    s = shape.grid_shape_report(clf, g, caps)
    return ({"single_colour": stats.proportion(c["single_right"], c["single_count"]),
             "multi_colour": stats.proportion(c["multi_right"], c["multi_count"]),
             "shape": stats.proportion(s["right"], s["count"])}, c["items"], s["items"])

  chance = colour.chance_level(captions)
  table = {"chance": {"single_colour": {"p": chance["single"]},
                      "multi_colour": {"p": chance["multi"]},
                      "shape": {"p": 1.0 / len(primitives.SHAPES)}}}
  table["shuffled"], _, _ = row(grids, shuffled_captions(grid_captions))
  table["real"], _, _ = row(real, captions)
  table["model"], citems, sitems = row(grids, grid_captions)
  items = [{"caption": c["caption"], "colour_ok": c["ok"], "shares": c["shares"],
            "unnamed_share": c["unnamed_share"], "dominant": c["dominant"],
            "shape_predicted": s["predicted"], "shape_ok": s["ok"]}
           for c, s in zip(citems, sitems)]
  return {"table": table, "items": items}


def ledger_dataset(data_dir: str) -> str:
  """The test ledger's name for the test-role captions of `data_dir`: the test split's identity
  (eval/ledger.py `dataset_id`) and ':captions-test'."""
  from instant3d_jax.eval import ledger
  return f"{ledger.dataset_id(data_dir, 'test')}:captions-test"


def score_test_role(data_dir: str, *, label: str, config_hash: str, param_hash: str, score):
  """`score()` (the test role's scoring) through the test ledger (eval/ledger.py
  `score_on_test`): `(result, entry)`, the recorded result when these parameters were scored
  before (`score` not called)."""
  from instant3d_jax.eval import ledger
  return ledger.score_on_test(label=label, dataset=ledger_dataset(data_dir),
                              config_hash=config_hash, param_hash=param_hash, score=score)


def markdown(report: dict) -> str:
  """report.md of the `run` report."""
  from instant3d_jax.eval import stats
  roles = [r for r in ("val", "test") if r in report["roles"]]
  head = ["", *[f"{r}: {COLUMN_TITLES[c]}" for r in roles for c in COLUMNS]]
  lines = [f"# Stage 1 `tiny` on the shapes world: held-out captions (step {report['step']})", "",
           f"Per role {report['num_captions']} held-out captions × {report['per_caption']} grids "
           f"({report['sampler']}). Cells: share right [Wilson 95% interval] (n grids; the "
           "grids of one caption are not independent, so the intervals are on the narrow "
           "side). Chance is exact: a grid in one uniformly random palette colour (1/10), in m "
           "distinct random palette colours (1/C(10, m), averaged over the captions), a random "
           "shape (1/5). Val captions name only val combinations, test captions only test ones "
           "(scored through the test ledger; mixed captions left out).", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in ROWS:
    cells = [stats.format_proportion(report["roles"][role]["table"][r].get(c))
             for role in roles for c in COLUMNS]
    lines.append(f"| {ROW_TITLES[r]} | " + " | ".join(cells) + " |")
  lines.append("")
  t = report.get("test_ledger")
  if t:
    lines.append(f"Test ledger: {t['dataset']}, {t['configs_scored']} config(s) scored on it"
                 + (" (recorded result of an earlier scoring: not scored again)"
                    if t["repeat"] else "") + ".")
  sc = report["shape_classifier"]
  lines += [f"Shape classifier (eval/shape.py, colour removed; trained on {sc['train_views']} "
            f"views of {sc['train_objects']} single-object train-split objects): held-out "
            f"{sc['eval']['split']} views {100 * sc['eval']['accuracy']:.1f}% "
            f"(majority-class chance {100 * sc['eval']['chance']:.1f}%, n={sc['eval']['views']}),"
            f" rig grids {100 * sc['eval']['rig_grid_accuracy']:.1f}% "
            f"({sc['eval']['objects']} objects).", ""]
  for role in roles:
    vc = report["roles"][role].get("view_consistency")
    if vc:
      lines.append(f"View consistency ({role}): reconstructor re-render PSNR "
                   f"{vc['generated_psnr']:.2f} dB generated, {vc['real_psnr']:.2f} dB real.")
  lines += ["", f"Training: {report['train']['step']} steps in {report['train']['wall_s']:.0f} s "
            f"(compile {report['train']['compile_s']:.0f} s). Grids: `heldout_grids.png`.", ""]
  lines += ["| role | caption | colour right | shape right |", "|---|---|---|---|"]
  for role in roles:
    for cap, ok in report["roles"][role]["per_caption"].items():
      lines.append(f"| {role} | {cap} | {ok['colour']} | {ok['shape']} |")
  return "\n".join(lines) + "\n"


def results_table(res: dict, *, source: str = "results.json",
                  ledger_now: dict | None = None) -> str:
  """The README's `make demo-mv` block (bench/report.py) from the demo's results file: provenance,
  the table per caption role (chance, shuffled captions, real renders, the model × single- and
  multi-object colour and shape, Wilson 95% intervals), the test-ledger count, the shape
  classifier's held-out accuracy against its chance, view consistency, the parameter hash."""
  from instant3d_jax.eval import stats
  m, b, x = res["metrics"], res["baselines"], res["extra"]
  roles = [r for r in ("val", "test") if r in m]
  mach = res["machine"]
  la = lambda v: " / ".join(f"{y:.2f}" for y in v)  # noqa: E731
  dirty = " (uncommitted changes)" if res.get("dirty") else ""
  lines = [f"From `{source}`, written by `{res['command']}` at commit `{res['commit'][:12]}`"
           f"{dirty}, {res['started_utc']} to {res['finished_utc']}, on {mach.get('cpu', '?')} "
           f"({mach.get('cores', '?')} cores); load average before {la(res['load']['before'])}, "
           f"after {la(res['load']['after'])}. Stage 1 at step {x['step']}; per role "
           f"{x['num_captions_per_role']} held-out captions × {x['per_caption']} grids. Cells: "
           "share right [Wilson 95% interval] (n grids; grids of one caption are not "
           "independent, so the intervals are on the narrow side); chance is exact (1/10 for one "
           "colour, 1/C(10, m) for m colours, 1/5 for a shape).", ""]
  for role in roles:
    lines += [f"| **{role}** combinations | " + " | ".join(COLUMN_TITLES[c] for c in COLUMNS)
              + " |", "|---|" + "---|" * len(COLUMNS)]
    for r in ROWS:
      row = m[role]["model"] if r == "model" else b[role].get(r, {})
      lines.append(f"| {ROW_TITLES[r]} | " + " | ".join(stats.format_proportion(row.get(c))
                                                         for c in COLUMNS) + " |")
    vc = m[role].get("view_consistency_psnr")
    if vc:
      lines.append(f"| view consistency: `make demo`'s reconstructor re-rendering the four "
                   f"views, PSNR (dB) | generated {vc['generated']:.2f}, real {vc['real']:.2f} "
                   "| | |")
    lines.append("")
  t = ledger_now or x.get("test_ledger")  # the ledger's count as of now
  if t:
    lines.append(f"Test combinations: {t['configs_scored']} configuration(s) of stage 1 scored on "
                 f"them so far (`bench/results/test_ledger.jsonl`, `{t['dataset']}`)"
                 + ("; the recorded result of an earlier scoring" if t.get("repeat") else "")
                 + ".")
  sc = m.get("shape_classifier")
  if sc:
    lines.append(f"Shape classifier (colour removed): {100 * sc['accuracy']:.1f}% on "
                 f"{sc['views']} held-out real {sc['split']} views (majority-class chance "
                 f"{100 * sc['chance']:.1f}%), {100 * sc['rig_grid_accuracy']:.1f}% of "
                 f"{sc['objects']} real rig grids.")
  lines.append("Parameter hash (EMA weights) "
               + ", ".join(f"`{h}`" for h in res["param_sha256"].values()) + ".")
  return "\n".join(lines) + "\n"


def _per_caption(items: list[dict], captions: list[str], per: int) -> dict:
  out = {}
  for i, c in enumerate(captions):
    its = items[i * per:(i + 1) * per]
    shape_ok = [it["shape_ok"] for it in its if it["shape_ok"] is not None]
    out[c] = {"colour": f"{sum(it['colour_ok'] for it in its)}/{per}",
              "shape": f"{sum(shape_ok)}/{len(shape_ok)}" if shape_ok else "—"}
  return out


def run(cfg, workdir: str, *, data_dir: str, reconstructor: str, num_captions: int,
        per_caption: int, background_threshold: float, retrain: bool = False,
        shape_steps: int = 1000) -> dict:
  """The whole job into `workdir` with the stage-1 config `cfg` (configs/mv_sdxl.py:tiny; its
  `data_dir` is set to `data_dir`): data, training (a finished run is reused unless `retrain`),
  the shape classifier (WORKDIR/shape_classifier.npz, trained for `shape_steps` when absent),
  for each caption role (val, test) `per_caption` grids for each of `num_captions` held-out
  captions and their table (`score_grids`; the test role through the test ledger), the view
  consistency through `reconstructor` ('' or a missing path: skipped with a note; views cleaned
  with `background_threshold`, the pipeline config's `stage2.background_threshold`), the images,
  report.{json,md} and results.json. Prints as it goes; returns the report."""
  from instant3d_jax.eval import results as results_lib
  rec = results_lib.Run.start("demo_mv")
  cfg.data_dir = data_dir
  launch.check_train_inputs(cfg, workdir)
  # One XLA CPU device: the tiny UNet's step measured 0.12 s on one device using both cores and
  # 0.15 s data-parallel over two (the reconstructor is the other way round, demos/lrm.py).
  import numpy as np
  from data_pipeline import captions as captions_lib
  from data_pipeline import datasets
  from instant3d_jax.eval import mv_eval
  from instant3d_jax.eval import shape
  from instant3d_jax.convert import checkpoints
  from instant3d_jax.export import images as images_lib
  from instant3d_jax.train import mv_task

  wall = {}
  t0 = time.perf_counter()
  info = datasets.prepare(cfg)
  wall["data"] = time.perf_counter() - t0
  print(f"data set: {info.data_dir} ({sum(info.splits.values())} objects, {wall['data']:.1f} s)")
  run_dir = os.path.join(workdir, "train")
  t = time.perf_counter()
  summary = train(cfg, run_dir, retrain)
  wall["train_or_reuse"] = time.perf_counter() - t

  g = cfg.grid
  res = int(g.view_resolution)
  t = time.perf_counter()
  clf = shape.ensure_classifier(os.path.join(workdir, "shape_classifier.npz"), info.data_dir,
                                resolution=res, steps=int(shape_steps), seed=int(cfg.seed))
  clf_eval = shape.evaluate(clf, info.data_dir, "val")
  wall["shape_classifier"] = time.perf_counter() - t
  print(f"shape classifier: val views {100 * clf_eval['accuracy']:.1f}% (majority-class chance "
        f"{100 * clf_eval['chance']:.1f}%), rig grids {100 * clf_eval['rig_grid_accuracy']:.1f}%")

  roles = captions_lib.heldout_roles(int(g.heldout_seed), int(g.num_heldout))
  rows = mv_eval.heldout_captions(info.data_dir, num_captions, roles)
  per = int(per_caption)
  _, ema, step = checkpoints.load(run_dir, item="ema")
  comps = mv_task.build_components(cfg)
  cfg.sample.per_caption = per
  param_hash = results_lib.param_sha256(ema)
  config_hash = results_lib.config_sha256(cfg)
  recon = reconstructor if reconstructor and os.path.exists(reconstructor) else ""
  if not recon:
    print(f"note: no reconstructor at {reconstructor!r} (run `make demo` first): view "
          "consistency skipped")
  shown = {}

  def score_role(role):
    rrows = [r for r in rows if r["role"] == role]
    caps = [r["caption"] for r in rrows]
    ts = time.perf_counter()
    grids = np.asarray(mv_task.sample_grids(cfg, comps, ema, caps))
    wall[f"sample_{role}"] = time.perf_counter() - ts
    print(f"{role}: sampled {len(grids)} grids in {wall[f'sample_{role}']:.1f} s")
    grid_caps = [c for c in caps for _ in range(per)]
    real = mv_eval.real_grids(info.data_dir, rrows, res)
    out = score_grids(grids, grid_caps, real, caps, clf)
    out["per_caption"] = _per_caption(out["items"], caps, per)
    out["captions"] = rrows
    if recon:
      gen = mv_eval.view_consistency(recon, grids, background_threshold=background_threshold)
      rl = mv_eval.view_consistency(recon, real, background_threshold=background_threshold)
      out["view_consistency"] = {"reconstructor": recon, "generated_psnr": float(np.mean(gen)),
                                 "real_psnr": float(np.mean(rl))}
    shown[role] = (grids, real, caps)
    return json.loads(json.dumps(out, default=float))

  report_roles = {"val": score_role("val")}
  dataset = ledger_dataset(info.data_dir)
  report_roles["test"], entry = score_test_role(
      info.data_dir, label=f"demo_mv stage-1 {cfg.variant} (EMA, step {step})",
      config_hash=config_hash, param_hash=param_hash, score=lambda: score_role("test"))

  labelled, caps_all, real_all = [], [], []
  for role, (grids, real, caps) in shown.items():
    labelled.append(grids)
    real_all.append(real)
    caps_all += [f"[{role}] {c}" for c in caps]
  img = mv_eval.captioned_rows_image(np.concatenate(labelled), caps_all, per)
  images_lib.save_png(os.path.join(workdir, "heldout_grids.png"), img)
  images_lib.save_png(os.path.join(workdir, "heldout_real_grids.png"),
                      mv_eval.captioned_rows_image(np.concatenate(real_all), caps_all, 1))
  if "test" not in shown:
    print("note: the test captions' grids were scored before (test ledger): heldout_grids.png "
          "shows the val captions only")
  report = {
      "step": step, "train": summary, "num_captions": num_captions, "per_caption": per,
      "sampler": f"{cfg.sample.scheduler} {cfg.sample.num_steps} steps, CFG "
                 f"{cfg.sample.guidance_scale:g}, EMA weights",
      "roles": report_roles,
      "heldout_combinations": {r: sorted(map(list, v)) for r, v in roles.items()},
      "shape_classifier": {**{k: clf.config[k] for k in ("train_views", "train_objects",
                                                         "steps", "train_s")},
                           "eval": clf_eval},
      "test_ledger": {"dataset": dataset, "configs_scored": entry["configs_scored"],
                      "repeat": entry["repeat"], "ledger": entry["ledger"]}}
  with open(os.path.join(workdir, "report.json"), "w") as f:
    json.dump(report, f, indent=2, default=float)
  md = markdown(report)
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write(md)
  wall["total"] = time.perf_counter() - t0
  metrics = {r: {"model": report_roles[r]["table"]["model"]} for r in report_roles}
  for r in report_roles:
    if report_roles[r].get("view_consistency"):
      vc = report_roles[r]["view_consistency"]
      metrics[r]["view_consistency_psnr"] = {"generated": vc["generated_psnr"],
                                             "real": vc["real_psnr"]}
  metrics["shape_classifier"] = clf_eval
  baselines = {r: {k: report_roles[r]["table"][k] for k in ("chance", "shuffled", "real")}
               for r in report_roles}
  rec.write(os.path.join(workdir, "results.json"), configs={"stage1": cfg},
            params={"stage1_ema": param_hash}, metrics=metrics, baselines=baselines,
            wall_s=wall, extra={"step": step, "test_ledger": report["test_ledger"],
                                "num_captions_per_role": num_captions, "per_caption": per,
                                "shape_classifier": report["shape_classifier"]})
  print()
  print(md)
  print(f"grids: {os.path.join(workdir, 'heldout_grids.png')}")
  return report
