"""The reconstructor's held-out evaluation (docs/paper_facts.md §C, GSO protocol on our world).

Per held-out object: the 4 input views of the GSO-style rig (elevation 20°, azimuths
45/135/225/315) go in; `eval.num_targets` (10) other views of the 64-view rig, chosen per object
with a fixed seed (`data_pipeline.lrm_input.eval_target_views`), are rendered at full resolution
and scored with PSNR, SSIM and LPIPS, and two foreground metrics (`eval/metrics.py`):
foreground PSNR over the pixels where the ground-truth mask or the predicted opacity exceeds 0.5,
and the colour error, mean |prediction − truth| over the ground-truth-mask pixels (mask > 0.5) in
0–255 units. Metrics are averaged over views, then over objects. A view without foreground pixels
has no foreground value: it is left out of its object's average (an object without any is left
out of the summary) and counted in `views_without_foreground` of the results.

Rig alignment: the model is trained on the Instant3D rig (azimuths 0/90/180/270). Every eval
camera is rotated about z by `eval.rotate_deg` (−45°): cameras are relative to the object, so
this equals turning the object by +45°, and the 4 inputs land exactly on the training rig. A
model trained with `data.loader.random_rig_azimuth` may use `rotate_deg = 0` instead; the
choice is written into the table.

Two reference rows are reported beside the model, every metric each, so a number can be judged
against the floors it must beat: "background only" (the white background everywhere, opacity 0)
and "mean colour": the data set's mean object colour, the mean RGB over all ground-truth-mask
pixels (mask > 0.5) of the evaluated held-out targets (all processes together), composited
inside the true mask, `alpha·colour + (1 − alpha)·background`, with opacity = the mask. It is the
render of a model with perfect silhouettes and one colour: a colour error at or above it means no
colour was learned. (The training split's supervision views would be the cleaner source of the
mean, but reading them costs a pass over the whole training set; the evaluated targets cost one
extra decode of the eval views, and the colour is written into the results as `mean_colour`.)
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from instant3d_jax import fileio
from instant3d_jax.eval import metrics as metrics_lib

METRICS = ("psnr", "ssim", "lpips", "foreground_psnr", "colour_error")
FOREGROUND_METRICS = ("foreground_psnr", "colour_error", "foreground_mse")
# Scored on request (`Evaluator(config, mse=True)`: the scaling study's loss): per-pixel MSE of
# the whole view and over the ground-truth-mask pixels (eval/metrics.py).
MSE_METRICS = ("mse", "foreground_mse")
# Reference rows: results key prefix → table label.
BASELINES = {"background_": "background only", "mean_colour_": "mean colour"}


class Evaluator:
  """Compiles the reconstruct+render function once and scores held-out batches.

  `Evaluator(config)(params, dataset, num_objects)` → results dict; `dataset` is a
  `data_pipeline.datasets.DatasetInfo` (or a data set directory, opened here) whose
  `eval.split` holds the GSO-style rig views (`datasets.check_eval`). `baselines=False` skips the
  reference rows (and the mean colour's extra pass over the targets). `mse=True` also scores
  `MSE_METRICS`.
  """

  def __init__(self, config, *, with_lpips: bool | None = None, baselines: bool = True,
               mse: bool = False):
    from instant3d_jax.models import lrm as lrm_lib  # eval → models, never models → eval
    self.config = config
    self.mcfg = lrm_lib.LRMConfig.from_config(config)
    model = lrm_lib.LRM(self.mcfg)
    chunk = int(config.eval.chunk)
    mcfg = self.mcfg

    def predict(params, images, c2w, K, t_c2w, t_K, t_hw):
      from instant3d_jax.cameras import Camera
      h, w = images.shape[2:4]
      cams = Camera(c2w=c2w, K=K, width=w, height=h)
      planes = model.apply({"params": params}, images, cams)
      tcams = Camera(c2w=t_c2w, K=t_K, width=t_hw[1], height=t_hw[0])
      out = lrm_lib.render_views(mcfg, params, planes, tcams, chunk=chunk,
                                 outputs=("rgb", "opacity"))
      return jnp.clip(out["rgb"], 0.0, 1.0), out["opacity"]

    def scores(p, t, mask, opacity):
      out = {"psnr": metrics_lib.psnr(p, t), "ssim": metrics_lib.ssim(p, t),
             "foreground_psnr": metrics_lib.foreground_psnr(p, t, mask, opacity),
             "colour_error": metrics_lib.colour_error(p, t, mask)}
      if mse:
        out["mse"] = metrics_lib.mse(p, t)
        out["foreground_mse"] = metrics_lib.foreground_mse(p, t, mask)
      return out

    self._predict = jax.jit(predict, static_argnums=(6,))
    self._scores = jax.jit(scores)
    self.baselines = baselines
    self.metrics = METRICS + (MSE_METRICS if mse else ())
    use_lpips = bool(config.eval.lpips) if with_lpips is None else with_lpips
    self.lpips = metrics_lib.LPIPSMetric() if use_lpips else None

  def predict(self, params, batch) -> tuple[jax.Array, jax.Array]:
    """Rendered target views of an eval batch: `(rgb [b, T, h, w, 3] in [0, 1],
    opacity [b, T, h, w])`."""
    th, tw = batch["target_images"].shape[2:4]
    return self._predict(params, batch["input_images"], batch["input_c2w"], batch["input_K"],
                         batch["target_c2w"], batch["target_K"], (int(th), int(tw)))

  def score(self, pred, target, mask, opacity) -> dict[str, np.ndarray]:
    """Per-view metrics `{name: [b, T]}` of `pred` against `target` (`[b, T, h, w, 3]`), with the
    ground-truth `mask` and the predicted `opacity` (`[b, T, h, w]`) for the foreground metrics
    (NaN for a view without foreground)."""
    out = {k: np.asarray(v) for k, v in self._scores(pred, target, mask, opacity).items()}
    if self.lpips is not None:
      out["lpips"] = np.asarray(self.lpips(pred, target))
    return out

  def __call__(self, params, dataset, num_objects: int | None = None,
               keep_predictions: int = 0) -> dict:
    from data_pipeline import datasets, lrm_input
    if not isinstance(dataset, datasets.DatasetInfo):
      dataset = datasets.open_dataset(dataset)
    ev = self.config.eval
    t0 = time.time()
    loader = datasets.loader_config(self.config, dataset, purpose="eval")
    batches = lambda: lrm_input.eval_batches(dataset.data_dir, loader, split=str(ev.split),
                                             rotate_deg=float(ev.rotate_deg),
                                             max_objects=num_objects)
    rows = {"": None}
    mean_colour = None
    if self.baselines:
      rows["background_"] = None
      mean_colour = mean_object_colour(batches())
      if mean_colour is not None:
        rows["mean_colour_"] = None
    per_obj: dict[str, list] = {r + k: [] for r in rows for k in self.metrics}
    per_obj["object_index"] = []
    # Per object: how many of its views had no foreground pixel, per foreground metric and row.
    skipped: dict[str, list] = {r + k: [] for r in rows for k in FOREGROUND_METRICS
                                if k in self.metrics}
    skipped["object_index"] = []
    shown = []
    bg_colour = jnp.asarray(self.mcfg.background, jnp.float32)
    for batch in batches():
      pred, opacity = self.predict(params, batch)
      target = jnp.asarray(batch["target_images"])
      mask = jnp.asarray(batch["target_masks"])
      rows[""] = (pred, opacity)
      if "background_" in rows:
        rows["background_"] = (jnp.broadcast_to(bg_colour, target.shape), jnp.zeros_like(mask))
      if "mean_colour_" in rows:
        rows["mean_colour_"] = (mask[..., None] * jnp.asarray(mean_colour, jnp.float32)
                                + (1.0 - mask[..., None]) * bg_colour, mask)
      valid = np.asarray(batch["valid"])
      for r, (image, alpha) in rows.items():
        for k, v in self.score(image, target, mask, alpha).items():
          means, empty = object_means(v[valid], skip_nan=k in FOREGROUND_METRICS)
          per_obj[r + k] += list(means)
          if k in FOREGROUND_METRICS:
            skipped[r + k] += list(empty.astype(float))
      per_obj["object_index"] += [int(i) for i in batch["object_index"][valid]]
      skipped["object_index"] += [int(i) for i in batch["object_index"][valid]]
      if len(shown) < keep_predictions:
        for i in np.nonzero(valid)[0][:keep_predictions - len(shown)]:
          shown.append((np.asarray(batch["input_images"][i]), np.asarray(pred[i]),
                        np.asarray(batch["target_images"][i])))
    per_obj = _gather_processes(per_obj)
    skipped = _gather_processes(skipped)
    n = len(per_obj["object_index"])
    summary = {}
    for k, v in per_obj.items():
      v = np.asarray(v, np.float64)
      if k != "object_index" and (~np.isnan(v)).any():
        summary[k] = float(np.mean(v[~np.isnan(v)]))   # objects without foreground left out
    out = {"summary": summary, "num_objects": n, "num_views_per_object": int(ev.num_targets),
           "split": str(ev.split), "rotate_deg": float(ev.rotate_deg),
           "resolution": int(loader.target_resolution), "seed": int(ev.seed),
           "seconds": time.time() - t0,
           "per_object": {k: [_json_float(x) for x in v] for k, v in per_obj.items()},
           "views_without_foreground": {k: int(sum(v)) for k, v in skipped.items()
                                        if k != "object_index"},
           "examples": shown}
    if mean_colour is not None:
      out["mean_colour"] = [float(c) for c in mean_colour]
    return out


def object_means(values: np.ndarray, *, skip_nan: bool) -> tuple[np.ndarray, np.ndarray]:
  """Per-view values `[b, T]` → (per-object means `[b]`, views left out `[b]`). With `skip_nan`
  (the foreground metrics) NaN views (no foreground) are left out of the mean, and an object
  without any gets NaN; otherwise the plain mean."""
  values = np.asarray(values, np.float64)
  if not skip_nan:
    return values.mean(axis=1), np.zeros(values.shape[0], np.int64)
  has = ~np.isnan(values)
  n = has.sum(axis=1)
  means = np.where(n > 0, np.where(has, values, 0.0).sum(axis=1) / np.maximum(n, 1), np.nan)
  return means, values.shape[1] - n


def _json_float(x) -> float | None:
  """A per-object value for the JSON: NaN (no foreground in any view) → None (JSON null)."""
  x = float(x)
  return None if np.isnan(x) else x


def mean_object_colour(batches, thr: float = 0.5) -> np.ndarray | None:
  """Mean RGB `[3]` over the target pixels whose ground-truth mask exceeds `thr`, over the valid
  rows of eval `batches` and all processes; None when no pixel is foreground."""
  total, count = np.zeros(3, np.float64), np.zeros(1, np.float64)
  for batch in batches:
    valid = np.asarray(batch["valid"])
    fg = np.asarray(batch["target_masks"])[valid] > thr
    total += np.asarray(batch["target_images"], np.float64)[valid][fg].sum(axis=0)
    count += fg.sum()
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    both = np.asarray(multihost_utils.process_allgather(np.concatenate([total, count])))
    total, count = both.reshape(-1, 4).sum(axis=0)[:3], both.reshape(-1, 4).sum(axis=0)[3:]
  return None if count[0] == 0 else total / count[0]


def _gather_processes(per_obj: dict) -> dict:
  """Concatenate per-object lists of all processes (objects are split in contiguous blocks)."""
  if jax.process_count() == 1:
    return per_obj
  from jax.experimental import multihost_utils
  keys = sorted(per_obj)
  n = len(per_obj["object_index"])
  counts = np.asarray(multihost_utils.process_allgather(np.int32(n)))
  width = int(counts.max())
  table = np.full((len(keys), width), np.nan, np.float64)
  for i, k in enumerate(keys):
    table[i, :len(per_obj[k])] = per_obj[k]
  allt = np.asarray(multihost_utils.process_allgather(table))  # [P, K, width]
  out = {k: [] for k in keys}
  for p in range(allt.shape[0]):
    for i, k in enumerate(keys):
      out[k] += list(allt[p, i, :counts[p]])
  out["object_index"] = [int(x) for x in out["object_index"]]
  return out


def markdown_table(results: dict, *, title: str = "Held-out evaluation", extra: dict | None = None
                   ) -> str:
  s = results["summary"]
  rows = [f"# {title}", "",
          f"{results['num_objects']} held-out objects ({results['split']} split), "
          f"{results['num_views_per_object']} views each at {results['resolution']}², inputs on "
          f"the GSO-style rig (elevation 20°, azimuths 45/135/225/315) rotated about z by "
          f"{results['rotate_deg']:+.0f}° onto the training rig; view seed {results['seed']}.",
          ""]
  for k, v in (extra or {}).items():
    rows.append(f"- {k}: {v}")
  if extra:
    rows.append("")
  rows += ["| | PSNR (dB) ↑ | SSIM ↑ | LPIPS ↓ | foreground PSNR (dB) ↑ | colour error (0–255) ↓ |",
           "|---|---:|---:|---:|---:|---:|"]
  fmt = lambda k, d: f"{s[k]:.{d}f}" if k in s else "–"
  for prefix, label in {"": "model", **BASELINES}.items():
    if prefix and not any(prefix + k in s for k in METRICS):
      continue
    rows.append(f"| {label} | {fmt(prefix + 'psnr', 2)} | {fmt(prefix + 'ssim', 4)} | "
                f"{fmt(prefix + 'lpips', 4)} | {fmt(prefix + 'foreground_psnr', 2)} | "
                f"{fmt(prefix + 'colour_error', 1)} |")
  notes = ["", "Foreground PSNR: over the pixels where the ground-truth mask or the predicted "
           "opacity exceeds 0.5; colour error: mean |prediction − truth| over the ground-truth-mask "
           "pixels (mask > 0.5), 0–255 units."]
  if "mean_colour" in results:
    rgb = ", ".join(f"{c:.3f}" for c in results["mean_colour"])
    notes.append(f"Mean colour: RGB ({rgb}), the mean over the ground-truth-mask pixels of the "
                 "evaluated targets, painted inside the true mask over the background.")
  skipped = {k: v for k, v in results.get("views_without_foreground", {}).items() if v}
  if skipped:
    notes.append("Views without foreground pixels, left out of that metric's averages: "
                 + ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())) + ".")
  t = results.get("test_ledger")
  if t:
    notes.append(f"Test set {t['dataset']}: {t['configs_scored']} configuration(s) scored on it "
                 f"so far (test ledger {t['ledger']}"
                 + ("; this parameter hash was scored before, at " + str(t["time_utc"])
                    + ", and its recorded result is shown" if t.get("repeat") else "") + ").")
  if results.get("param_sha256"):
    notes.append(f"Parameter hash {results['param_sha256']}; config hash "
                 f"{results.get('config_sha256', '?')}.")
  return "\n".join(rows + notes) + "\n"


def write_results(results: dict, out_dir: str | os.PathLike, *, extra: dict | None = None,
                  name: str = "eval") -> tuple[fileio.OutPath, fileio.OutPath]:
  """`out_dir/{name}.json` (summary + per-object values) and `out_dir/{name}.md` (the table);
  `out_dir` local or `gs://…`, each file written all-or-nothing (instant3d_jax/fileio.py).
  Returns both paths."""
  out_dir = fileio.path(out_dir)
  data = {k: v for k, v in results.items() if k != "examples"}
  if extra:
    data["run"] = extra
  paths = []
  for suffix, text in ((".json", json.dumps(data, indent=2)),
                       (".md", markdown_table(results, extra=extra))):
    paths.append(fileio.write_text(out_dir / f"{name}{suffix}", text))
  return paths[0], paths[1]
