"""The real-renderer main job (`make demo-blender`, the command instant3d_jax/demo_blender.py):
the procedural world's objects exported as coloured meshes plus offline 3D files → Blender
(Cycles) renders → import → train the tiny reconstructor → evaluate; beside it the procedural
ray caster's data set of the same objects, views and split, trained and evaluated the same way.

`run(cfg, render_cfg, workdir, ...)` is the whole job; `plan_objects`, `render_step`,
`import_step`, `procedural_step`, `arm_step` and `pictures_step` are its steps. Everything is
cached in WORKDIR (finished renders, the import, the generated data, finished training runs), so
a rerun redoes only what is missing; the render timing of the run that rendered is kept in
WORKDIR/blender/render_summary.json. WORKDIR/results.json is a results file of
instant3d_jax/eval/results.py (kind 'demo_blender'; what goes where: `results_fields`),
WORKDIR/results.md its table (`results_markdown`).
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from instant3d_jax import errors

# Offline 3D files of Debian's assimp-testmodels (`apt-get install assimp-testmodels`), relative
# to ASSIMP_MODELS: glTF 2 (binary and text), OBJ and PLY meshes that are whole objects. Missing
# files are skipped with a note.
ASSIMP_MODELS = "/usr/share/assimp/models"
ASSIMP_ASSETS = (
    "glTF2/2CylinderEngine-glTF-Binary/2CylinderEngine.glb",
    "glTF2/BoxTextured-glTF-Binary/BoxTextured.glb",
    "glTF2/ClearCoat-glTF/ClearCoatTest.gltf",
    "OBJ/spider.obj",
    "OBJ/WusonOBJ.obj",
    "OBJ/regr01.obj",
    "OBJ/concave_polygon.obj",
    "OBJ/cube_with_vertexcolors.obj",
    "PLY/pond.0.ply",
)


def _load() -> list[float]:
  return [round(x, 2) for x in os.getloadavg()]


def offline_assets(root: str = ASSIMP_MODELS, names=ASSIMP_ASSETS) -> tuple[list, list]:
  """[(object id, path)] of the offline files present, and the relative paths missing."""
  found, missing = [], []
  for rel in names:
    p = os.path.join(root, rel)
    if os.path.isfile(p):
      oid = "asset_" + os.path.splitext(os.path.basename(rel))[0]
      found.append((oid, p))
    else:
      missing.append(rel)
  return found, missing


def split_sizes(num_objects: int, test_fraction: float) -> tuple[int, int]:
  n_test = int(round(num_objects * float(test_fraction)))
  if not 0 < n_test < num_objects:
    raise errors.ConfigError(f"--test_fraction {test_fraction} of {num_objects} objects leaves "
                             f"{n_test} held-out objects; need at least one each for training and "
                             "evaluation")
  return num_objects - n_test, n_test


def plan_objects(data_cfg, num_objects: int, test_fraction: float, assets: list) -> dict:
  """Which objects the Blender arm renders: the held-out ones are the procedural world's last
  `n_test` indices (the procedural arm's test split), the training ones the offline assets and
  procedural indices 0, 1, … filling up to `num_objects`."""
  n_train, n_test = split_sizes(num_objects, test_fraction)
  assets = list(assets)[:n_train]
  n_proc_train = n_train - len(assets)
  return {"num_objects": num_objects, "n_train": n_train, "n_test": n_test,
          "train_indices": list(range(n_proc_train)),
          "test_indices": list(range(num_objects - n_test, num_objects)),
          "assets": assets}


def render_step(data_cfg, render_cfg, plan: dict, workdir: str, *, python: str | None,
                retry_failed: bool = False, render=None) -> dict:
  """Exports the procedural objects as GLB (WORKDIR/blender/meshes), renders every object into
  WORKDIR/blender/renders (held-out ones with the GSO evaluation rig too) and returns the render
  summary (also WORKDIR/blender/render_summary.json; a run that rendered nothing keeps the summary
  of the run that did). `render` replaces `blender_render.render_assets` (tests)."""
  from data_pipeline import blender_render, primitive_meshes  # pylint: disable=g-import-not-at-top
  render = render or blender_render.render_assets
  base = os.path.join(workdir, "blender")
  mesh_dir, out = os.path.join(base, "meshes"), os.path.join(base, "renders")
  t0 = time.perf_counter()
  train = primitive_meshes.export_objects(data_cfg, plan["train_indices"], mesh_dir)
  test = primitive_meshes.export_objects(data_cfg, plan["test_indices"], mesh_dir)
  export_s = time.perf_counter() - t0
  captions = {n: c for n, _, c in train + test}
  groups = [("train", render_cfg, [(n, p) for n, p, _ in train] + list(plan["assets"]))]
  eval_cfg = render_cfg.copy_and_resolve_references()
  eval_cfg.eval_rig = True
  groups.append(("test", eval_cfg, [(n, p) for n, p, _ in test]))
  summary = {"export_s": round(export_s, 2), "load_before": _load(), "parts": {},
             "captions": captions}
  for name, rcfg, items in groups:
    print(f"rendering {len(items)} {name} objects ({len(blender_render.object_views(rcfg, 'x'))} "
          f"views each, {rcfg.resolution}², {rcfg.samples} samples, {rcfg.workers} workers × "
          f"{rcfg.threads} threads) into {out}", flush=True)
    s = render(rcfg, items, out, python=python, retry_failed=retry_failed)
    print("  " + blender_render.summary_line(s, out), flush=True)
    summary["parts"][name] = {k: s[k] for k in ("total", "rendered", "skipped", "failed",
                                                "failed_before", "seconds", "views", "inside",
                                                "iou")}
    summary["parts"][name]["failures"] = [list(f) for f in s["failures"]]
  summary["load_after"] = _load()
  rendered = sum(p["rendered"] for p in summary["parts"].values())
  secs = sum(p["seconds"] for p in summary["parts"].values())
  views = sum(p["views"] for p in summary["parts"].values())
  summary.update(rendered=rendered, seconds=round(secs, 1), views=views,
                 views_per_s=round(views / secs, 2) if secs > 0 else None)
  path = os.path.join(base, "render_summary.json")
  if rendered == 0 and os.path.isfile(path):
    with open(path) as f:
      old = json.load(f)
    old["reused"] = True
    return old
  with open(path, "w") as f:
    json.dump(summary, f, indent=1)
  return summary


def heldout_splits(names_train: list[str], names_test: list[str]) -> dict[str, str]:
  """The import's split override (`render_import.import_renders(splits=...)`): {object id:
  'train' | 'test'}; no 'val' objects."""
  both = set(names_train) & set(names_test)
  if both:
    raise errors.DataError(f"objects both trained on and held out: {sorted(both)[:5]}")
  return {**{o: "train" for o in names_train}, **{o: "test" for o in names_test}}


def import_step(plan: dict, workdir: str) -> dict:
  """The rendered objects (failed ones left out) → WORKDIR/blender/data, with the procedural
  held-out objects as the test split (given to the importer as its split override; the folders
  it reads are links in WORKDIR/blender/import_src named by object id). Reuses an import of the
  same objects."""
  from data_pipeline import blender_render, procedural, records  # pylint: disable=g-import-not-at-top
  from data_pipeline import render_import  # pylint: disable=g-import-not-at-top
  base = os.path.join(workdir, "blender")
  renders, src, data = (os.path.join(base, d) for d in ("renders", "import_src", "data"))
  train = [procedural.object_id(i) for i in plan["train_indices"]] + [o for o, _ in plan["assets"]]
  test = [procedural.object_id(i) for i in plan["test_indices"]]
  train = [o for o in train if blender_render.is_done(renders, o)]
  missing_test = [o for o in test if not blender_render.is_done(renders, o)]
  if missing_test:
    raise errors.DataError(f"{renders}: held-out objects {missing_test[:5]} were not rendered "
                           f"(see {os.path.join(renders, blender_render.FAILURES_FILE)}); the "
                           "comparison needs every held-out object")
  splits = heldout_splits(train, test)
  want = {"train": sorted(train), "val": [], "test": sorted(test)}
  t0 = time.perf_counter()
  if os.path.isfile(os.path.join(data, records.METADATA_FILE)):
    meta = records.read_metadata(data)
    have = {s: sorted(meta["splits"].get(s, {}).get("object_ids", [])) for s in want}
    if have == want:
      print(f"import: {data} (cached: {meta['num_objects']} objects)")
      return {"data_dir": data, "n_train": len(train), "n_test": len(test), "seconds": 0.0,
              "cached": True, "meta": meta}
  os.makedirs(src, exist_ok=True)
  for d in os.listdir(src):
    os.remove(os.path.join(src, d))
  for o in splits:
    os.symlink(os.path.abspath(os.path.join(renders, o)), os.path.join(src, o))
  meta = render_import.import_renders(src, data, splits=splits, overwrite=True, progress=False)
  secs = time.perf_counter() - t0
  print(f"import: {len(train)} train + {len(test)} held-out objects into {data} in {secs:.1f} s")
  return {"data_dir": data, "n_train": len(train), "n_test": len(test), "seconds": round(secs, 2),
          "cached": False, "meta": meta}


def arm_config(cfg, n_test: int, run_data_dir: str):
  """A copy of the reconstructor config for one arm: `data_dir`, eval on the `n_test`
  held-out objects (the 'test' split: the job's data sets have no 'val' objects to speak of)."""
  c = cfg.copy_and_resolve_references()
  c.data_dir = run_data_dir
  c.eval.split = "test"
  c.eval.num_objects = int(n_test)
  return c


def procedural_step(cfg, render_cfg, plan: dict, imported: dict, workdir: str):
  """The procedural arm's config and data set (WORKDIR/procedural/data): the same objects as the
  Blender arm's procedural ones (indices 0…, held-out = the same last indices), the same number
  of training objects (objects the Blender arm lost to render failures become unused 'val'
  objects here), the same views (4 rig + `num_sup_views` sup; the eval rig for held-out) and
  resolution."""
  from data_pipeline import datasets  # pylint: disable=g-import-not-at-top
  N, n_test, n_train = plan["num_objects"], imported["n_test"], imported["n_train"]
  c = arm_config(cfg, n_test, os.path.join(workdir, "procedural", "data"))
  d = c.data
  d.source = "procedural"
  d.num_objects = N
  n_val = N - n_train - n_test
  d.split_fractions = (n_train / N, n_val / N, n_test / N)
  d.resolution = int(render_cfg.resolution)
  d.num_sup_views = int(render_cfg.num_sup_views)
  d.fov_deg, d.rig_distance = float(render_cfg.fov_deg), float(render_cfg.rig_distance)
  d.sup_elevation_range = tuple(render_cfg.sup.elevation_range)
  d.sup_distance_range = tuple(render_cfg.sup.distance_range)
  t0 = time.perf_counter()
  info = datasets.prepare(c)
  secs = time.perf_counter() - t0
  print(f"procedural data: {c.data_dir} ({info.splits}) in {secs:.1f} s")
  return c, round(secs, 2)


def arm_step(name: str, cfg, workdir: str, retrain: bool) -> dict:
  """Trains (or reuses) one arm into WORKDIR/<name>/lrm and evaluates it on its held-out split."""
  from instant3d_jax.demos import lrm as lrm_demo  # pylint: disable=g-import-not-at-top
  from instant3d_jax.eval import lrm_eval  # pylint: disable=g-import-not-at-top
  run_dir = os.path.join(workdir, name, "lrm")
  load0 = _load()
  summary = lrm_demo.train_step(cfg, run_dir, retrain)
  load1 = _load()
  t0 = time.perf_counter()
  results, md = lrm_eval.evaluate_checkpoint(run_dir, config=cfg, log=lambda *_: None)
  eval_s = time.perf_counter() - t0
  s = results["summary"]
  print(f"{name}: {summary['step']} steps in {summary['wall_s']:.0f} s; held-out PSNR "
        f"{s['psnr']:.2f} dB, foreground PSNR {s.get('foreground_psnr', float('nan')):.2f} dB, "
        f"LPIPS {s.get('lpips', float('nan')):.4f} ({md})", flush=True)
  return {"run_dir": run_dir, "train": {k: summary.get(k) for k in
                                        ("step", "wall_s", "compile_s", "stop_reason",
                                         "final_train_psnr")},
          "load_train_start": load0, "load_train_end": load1, "eval_s": round(eval_s, 1),
          "eval": s, "eval_md": str(md), "num_eval_objects": results["num_objects"],
          "views_per_object": results["num_views_per_object"]}


def cross_eval(run_dir: str, cfg, out: str) -> dict:
  """One arm's model on the other arm's held-out split (same scenes, other renderer)."""
  from instant3d_jax.eval import lrm_eval  # pylint: disable=g-import-not-at-top
  results, _ = lrm_eval.evaluate_checkpoint(run_dir, config=cfg, out=out, log=lambda *_: None)
  return results["summary"]


def _rgb(img: np.ndarray) -> np.ndarray:
  a = img[..., 3:4].astype(np.float32) / 255.0
  return (img[..., :3].astype(np.float32) / 255.0 * a + (1.0 - a))


def pictures_step(blender_data: str, proc_data: str, blender_run: str, proc_run: str,
                  workdir: str, num_rows: int = 6) -> dict:
  """WORKDIR/renders_sheet.png (held-out objects: Blender's 4 rig views beside the ray caster's,
  then offline assets) and WORKDIR/heldout_<arm>.png (the first held-out object: inputs, the
  model's renders of them, 8 turntable frames) via `reconstruction.reconstruct`."""
  from data_pipeline import records  # pylint: disable=g-import-not-at-top
  from data_pipeline.contact_sheet import contact_sheet  # pylint: disable=g-import-not-at-top
  from instant3d_jax import reconstruction  # pylint: disable=g-import-not-at-top
  from instant3d_jax.export.images import save_png  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  bt, pt = records.RecordSource(blender_data, "test"), records.RecordSource(proc_data, "test")
  rows, labels = [], []
  for k in range(min(num_rows, len(bt), len(pt))):
    b, p = bt[k], pt[k]
    rows.append(list(records.group_rgba(b, "rig")) + list(records.group_rgba(p, "rig")))
    labels.append(f"{b['object_id']} | {p['object_id']} \"{p['caption']}\"")
  tr = records.RecordSource(blender_data, "train")
  assets = [tr[i] for i in range(len(tr)) if "asset_" in tr[i]["object_id"]][:3]
  for a in assets:
    sup = range(min(4, len(a["groups"]["sup"]["images"]) if "sup" in a["groups"] else 0))
    rows.append(list(records.group_rgba(a, "rig")) + list(records.group_rgba(a, "sup", sup)))
    labels.append(f"{a['object_id']} (train): rig | {len(sup)} supervision views")
  sheet = os.path.join(workdir, "renders_sheet.png")
  contact_sheet(rows, sheet, row_labels=labels, scale=2,
                title="left: Blender Cycles (64², 16 samples) | right: procedural ray caster; "
                      "Instant3D rig views")
  out = {"renders_sheet": sheet}
  for arm, data, run_dir in (("blender", blender_data, blender_run),
                             ("procedural", proc_data, proc_run)):
    rec = records.RecordSource(data, "test")[0]
    rdir = os.path.join(workdir, arm, "reconstruct")
    paths = []
    for i, v in enumerate(records.group_rgba(rec, "rig")):
      paths.append(str(save_png(os.path.join(rdir, "input_views", f"view_{i}.png"), v)))
    w = reconstruction.reconstruct(run_dir, rdir, views=paths, num_novel=4, turntable_frames=24,
                                   mesh_resolution=32, mesh_threshold="auto", progress=False,
                                   log=lambda *_: None)
    ivr = np.asarray(Image.open(str(w["inputs_vs_renders"])).convert("RGB"))
    strip = np.asarray(Image.open(str(w["turntable_strip"])).convert("RGB"))
    fig = os.path.join(workdir, f"heldout_{arm}.png")
    contact_sheet([[ivr], [strip]], fig, row_labels=[
        f"{arm} arm, held-out {rec['object_id']}: inputs (top) and the model's renders of them",
        "turntable (8 of 24 frames)"], scale=2)
    out[f"heldout_{arm}"] = fig
    out[f"turntable_{arm}"] = str(w["turntable_gif"])
  return out


_ROW_KEYS = ("psnr", "foreground_psnr", "lpips", "ssim", "colour_error")
ARMS = ("blender", "procedural")
CROSS = {"blender_on_procedural": "Blender renders → procedural held-out",
         "procedural_on_blender": "procedural ray caster → Blender held-out"}
ARM_ROWS = {"blender": "Blender renders → Blender held-out",
            "procedural": "procedural ray caster → procedural held-out"}
HELD_OUT = {"blender": "Blender held-out", "procedural": "procedural held-out"}


def split_rows(summary: dict) -> tuple[dict, dict]:
  """An evaluation summary (`lrm_eval`) → (model metrics, {baseline label: metrics})."""
  from instant3d_jax.eval import protocol  # pylint: disable=g-import-not-at-top
  model = {k: summary[k] for k in protocol.METRICS if k in summary}
  base = {label: {k: summary[prefix + k] for k in protocol.METRICS if prefix + k in summary}
          for prefix, label in protocol.BASELINES.items()}
  return model, {k: v for k, v in base.items() if v}


def results_fields(*, arms: dict, cross: dict, configs: dict, params: dict, timings: dict,
                   extra: dict) -> dict:
  """The keyword arguments of `results.Run.write` for this job (WORKDIR/results.json):

  * `configs`, `params`: {'blender', 'procedural'} → each arm's trained config and parameters
    (as `convert.checkpoints.load` reads them from its run dir; the file keeps their hashes);
  * `metrics`: {'blender', 'procedural'} → each arm's model on its own held-out split, and
    'blender_on_procedural' / 'procedural_on_blender' → the cross rows (model on the other
    renderer's held-out images); each {psnr, ssim, lpips, foreground_psnr, colour_error};
  * `baselines`: {'blender', 'procedural'} → {baseline label: metrics} on that arm's held-out
    images (the cross rows score the same images, so the same baselines);
  * `wall_s`: the job's timings (render, mesh_export, import, procedural_generation,
    train_/eval_<arm>, cross_eval, pictures, job_total);
  * `extra`: the rest of what the job knows (workdir, the run summary `config`, `objects`,
    `render`, `pictures`) and `arms` {arm: what `arm_step` returned but its eval summary}.
  """
  metrics, baselines = {}, {}
  for arm in ARMS:
    metrics[arm], baselines[arm] = split_rows(arms[arm]["eval"])
  for k, summary in cross.items():
    metrics[k] = split_rows(summary)[0]
  extra = dict(extra, arms={a: {k: v for k, v in arms[a].items() if k != "eval"} for a in ARMS})
  return {"configs": configs, "params": params, "metrics": metrics, "baselines": baselines,
          "wall_s": timings, "extra": extra}


def results_markdown(res: dict) -> str:
  """The comparison table of a results dict (`run`'s, instant3d_jax/eval/results.py's schema:
  rows from `metrics`, baseline rows from `baselines`); a results.json of the job before that
  schema (`arms`/`cross` at the top) is read too."""
  def row(label, s):
    return ("| " + label + " | " + " | ".join(
        "—" if s.get(k) is None else f"{s[k]:.4f}" if k in ("lpips", "ssim") else f"{s[k]:.2f}"
        for k in _ROW_KEYS) + " |")
  if "schema" in res:
    metrics, baselines = res["metrics"], res.get("baselines", {})
  else:   # the job's results.json before results.Run
    metrics, baselines = {}, {}
    for arm in ARMS:
      metrics[arm], baselines[arm] = split_rows(res["arms"][arm]["eval"])
    metrics.update({k: split_rows(v)[0] for k, v in res.get("cross", {}).items()})
  lines = ["| trained on → evaluated on | PSNR (dB) ↑ | foreground PSNR (dB) ↑ | LPIPS ↓ | "
           "SSIM ↑ | colour error (0–255) ↓ |", "|---|---:|---:|---:|---:|---:|"]
  for arm in ARMS:
    lines.append(row(ARM_ROWS[arm], metrics[arm]))
  for k, lab in CROSS.items():
    if k in metrics:
      lines.append(row(lab, metrics[k]))
  for arm in ARMS:
    for label, s in baselines.get(arm, {}).items():
      lines.append(row(f"*baseline on {HELD_OUT[arm]}: {label}*", s))
  return "\n".join(lines) + "\n"


def results_table(res: dict, *, source: str = "results.json",
                  ledger_now: dict | None = None) -> str:
  """The README's `make demo-blender` block (bench/report.py): provenance, the table, the render
  throughput and the timings, every figure read off the results file `res`."""
  la = lambda x: " / ".join(f"{v:.2f}" for v in x)  # noqa: E731
  m, x = res["machine"], res["extra"]
  r, o, w = x["render"], x["objects"], res["wall_s"]
  dirty = " (uncommitted changes)" if res.get("dirty") else ""
  head = (f"From `{source}`, written by `{res['command']}` at commit `{res['commit'][:12]}`{dirty}, "
          f"{res['started_utc']} to {res['finished_utc']}, on {m.get('cpu', '?')} "
          f"({m.get('cores', '?')} cores); load average before {la(res['load']['before'])}, after "
          f"{la(res['load']['after'])}. Objects: {o['n_train']} trained on in each arm, "
          f"{o['n_test']} held out; steps per arm: "
          + ", ".join(f"{a} {s}" for a, s in x.get("steps", {}).items()) + ".")
  tail = (f"Render: {r['views']} views of {r['rendered']} objects in {r['seconds']:.0f} s = "
          f"**{r['views_per_s']} views/s** on {m.get('cores', '?')} cores (the mask check "
          f"included; load {r['load_before']} → {r['load_after']}). Wall times (s): "
          + ", ".join(f"{k.replace('_', ' ')} {v:.0f}" for k, v in w.items()) + ". Parameter "
          "hashes: " + ", ".join(f"{a} `{h[:16]}…`" for a, h in res["param_sha256"].items()) + ".")
  return head + "\n\n" + results_markdown(res) + "\n" + tail + "\n"


def run(cfg, render_cfg, workdir: str, *, num_objects: int = 200, test_fraction: float = 0.1,
        assets_root: str = ASSIMP_MODELS, python: str | None = None, retrain: bool = False,
        cross: bool = True, pictures: bool = True, render=None) -> dict:
  """The whole job into `workdir` (see the module docstring); writes WORKDIR/results.json
  (instant3d_jax/eval/results.py's schema, kind 'demo_blender'; fields: `results_fields`) and
  WORKDIR/results.md and returns the results."""
  from instant3d_jax.base import multihost  # pylint: disable=g-import-not-at-top
  from instant3d_jax.convert import checkpoints  # pylint: disable=g-import-not-at-top
  from instant3d_jax.eval import results as results_lib  # pylint: disable=g-import-not-at-top
  rec = results_lib.Run.start("demo_blender")
  t_start = time.perf_counter()
  os.makedirs(workdir, exist_ok=True)
  multihost.cpu_devices_per_core(cfg)
  assets, missing = offline_assets(assets_root)
  for rel in missing:
    print(f"note: offline asset {os.path.join(assets_root, rel)} not found, skipped "
          "(apt-get install assimp-testmodels brings them)")
  plan = plan_objects(cfg.data, num_objects, test_fraction, assets)
  print(f"objects: {plan['n_train']} train ({len(plan['train_indices'])} procedural + "
        f"{len(plan['assets'])} offline assets), {plan['n_test']} held-out (procedural "
        f"{plan['test_indices'][0]}…{plan['test_indices'][-1]})")
  # Objects that failed in an earlier run are tried again (a fixed set; a few seconds each).
  rs = render_step(cfg.data, render_cfg, plan, workdir, python=python, retry_failed=True,
                   render=render)
  imp = import_step(plan, workdir)
  b_cfg = arm_config(cfg, imp["n_test"], imp["data_dir"])
  b_cfg.data.source = "records"
  p_cfg, gen_s = procedural_step(cfg, render_cfg, plan, imp, workdir)
  arms = {"blender": arm_step("blender", b_cfg, workdir, retrain),
          "procedural": arm_step("procedural", p_cfg, workdir, retrain)}
  timings = {"render": rs["seconds"], "mesh_export": rs["export_s"], "import": imp["seconds"],
             "procedural_generation": gen_s,
             "train_blender": arms["blender"]["train"]["wall_s"],
             "train_procedural": arms["procedural"]["train"]["wall_s"],
             "eval_blender": arms["blender"]["eval_s"],
             "eval_procedural": arms["procedural"]["eval_s"]}
  cross_rows = {}
  if cross:
    t0 = time.perf_counter()
    cross_rows["blender_on_procedural"] = cross_eval(
        arms["blender"]["run_dir"], p_cfg, os.path.join(workdir, "cross", "blender_on_procedural"))
    cross_rows["procedural_on_blender"] = cross_eval(
        arms["procedural"]["run_dir"], b_cfg,
        os.path.join(workdir, "cross", "procedural_on_blender"))
    timings["cross_eval"] = round(time.perf_counter() - t0, 1)
  pics = {}
  if pictures:
    t0 = time.perf_counter()
    pics = pictures_step(imp["data_dir"], p_cfg.data_dir, arms["blender"]["run_dir"],
                         arms["procedural"]["run_dir"], workdir)
    timings["pictures"] = round(time.perf_counter() - t0, 1)
  loaded = {arm: checkpoints.load(arms[arm]["run_dir"]) for arm in ARMS}   # (cfg, params, step)
  timings["job_total"] = round(time.perf_counter() - t_start, 1)
  extra = {"workdir": os.path.abspath(workdir),
           "config": {"lrm_variant": cfg.variant, "total_steps": int(cfg.train.total_steps),
                      "global_batch_size": int(cfg.train.global_batch_size),
                      "render": render_cfg.to_dict(), "num_objects": num_objects,
                      "test_fraction": test_fraction},
           "objects": {"n_train": imp["n_train"], "n_test": imp["n_test"],
                       "train_procedural": len(plan["train_indices"]),
                       "assets": [o for o, _ in plan["assets"]], "assets_missing": missing,
                       "test_procedural_indices": plan["test_indices"]},
           "render": {k: v for k, v in rs.items() if k != "captions"}, "pictures": pics,
           "steps": {arm: loaded[arm][2] for arm in ARMS}}
  res = rec.write(os.path.join(workdir, "results.json"), **results_fields(
      arms=arms, cross=cross_rows, configs={a: loaded[a][0] for a in ARMS},
      params={a: loaded[a][1] for a in ARMS}, timings=timings, extra=extra))
  md = results_markdown(res)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(md)
  print()
  print(md)
  r = res["extra"]["render"]
  print(f"render: {r['views']} views of {r['rendered']} objects in {r['seconds']:.0f} s = "
        f"{r['views_per_s']} views/s (load {r['load_before']} → {r['load_after']})")
  print("parameter hashes: " + ", ".join(f"{a} {res['param_sha256'][a][:12]}" for a in ARMS))
  print(f"results: {os.path.join(workdir, 'results.json')}")
  for k, v in res["extra"]["pictures"].items():
    print(f"{k}: {v}")
  return res
