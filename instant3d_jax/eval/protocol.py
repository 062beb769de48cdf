"""The reconstructor's held-out evaluation (docs/paper_facts.md §C, GSO protocol on our world).

Per held-out object: the 4 input views of the GSO-style rig (elevation 20°, azimuths
45/135/225/315) go in; `eval.num_targets` (10) other views of the 64-view rig, chosen per object
with a fixed seed (`data_pipeline.lrm_input.eval_target_views`), are rendered at full resolution
and scored with PSNR, SSIM and LPIPS; metrics are averaged over views, then over objects.

Rig alignment: the model is trained on the Instant3D rig (azimuths 0/90/180/270). Every eval
camera is rotated about z by `eval.rotate_deg` (−45°): cameras are relative to the object, so
this equals turning the object by +45°, and the 4 inputs land exactly on the training rig. A
model trained with `data.loader.random_rig_azimuth` may use `rotate_deg = 0` instead; the
choice is written into the table.

A reference row "background only" (predict the white background everywhere) is reported beside
the model, so a number can be judged against the floor it must beat.
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

METRICS = ("psnr", "ssim", "lpips")


class Evaluator:
  """Compiles the reconstruct+render function once and scores held-out batches.

  `Evaluator(config)(params, dataset, num_objects)` → results dict; `dataset` is a
  `data_pipeline.datasets.DatasetInfo` (or a data set directory, opened here) whose
  `eval.split` holds the GSO-style rig views (`datasets.check_eval`).
  """

  def __init__(self, config, *, with_lpips: bool | None = None):
    from instant3d_jax.models import lrm as lrm_lib  # eval → models, never models → eval
    self.config = config
    self.mcfg = lrm_lib.model_config(config)
    model = lrm_lib.LRM(self.mcfg)
    chunk = int(config.eval.get("chunk", 4096))
    mcfg = self.mcfg

    def predict(params, images, c2w, K, t_c2w, t_K, t_hw):
      from instant3d_jax.cameras import Camera
      h, w = images.shape[2:4]
      cams = Camera(c2w=c2w, K=K, width=w, height=h)
      planes = model.apply({"params": params}, images, cams)
      tcams = Camera(c2w=t_c2w, K=t_K, width=t_hw[1], height=t_hw[0])
      out = lrm_lib.render_views(mcfg, params, planes, tcams, chunk=chunk, outputs=("rgb",))
      return jnp.clip(out["rgb"], 0.0, 1.0)

    self._predict = jax.jit(predict, static_argnums=(6,))
    self._scores = jax.jit(lambda p, t: (metrics_lib.psnr(p, t), metrics_lib.ssim(p, t)))
    use_lpips = bool(config.eval.get("lpips", True)) if with_lpips is None else with_lpips
    self.lpips = metrics_lib.LPIPSMetric() if use_lpips else None

  def predict(self, params, batch) -> jax.Array:
    """Rendered target views `[b, T, h, w, 3]` of an eval batch."""
    th, tw = batch["target_images"].shape[2:4]
    return self._predict(params, batch["input_images"], batch["input_c2w"], batch["input_K"],
                         batch["target_c2w"], batch["target_K"], (int(th), int(tw)))

  def score(self, pred, target) -> dict[str, np.ndarray]:
    """Per-view metrics `{name: [b, T]}`."""
    p, s = self._scores(pred, target)
    out = {"psnr": np.asarray(p), "ssim": np.asarray(s)}
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
    per_obj: dict[str, list] = {k: [] for k in METRICS}
    per_obj.update({f"background_{k}": [] for k in METRICS}, object_index=[])
    shown = []
    loader = datasets.loader_config(self.config, dataset, purpose="eval")
    for batch in lrm_input.eval_batches(dataset.data_dir, loader,
                                        split=str(ev.split), rotate_deg=float(ev.rotate_deg),
                                        max_objects=num_objects):
      pred = self.predict(params, batch)
      target = jnp.asarray(batch["target_images"])
      scores = self.score(pred, target)
      bg = jnp.broadcast_to(jnp.asarray(self.mcfg.background, jnp.float32), target.shape)
      bg_scores = self.score(bg, target)
      valid = np.asarray(batch["valid"])
      for k, v in scores.items():
        per_obj[k] += list(v.mean(axis=1)[valid])
      for k, v in bg_scores.items():
        per_obj[f"background_{k}"] += list(v.mean(axis=1)[valid])
      per_obj["object_index"] += [int(i) for i in batch["object_index"][valid]]
      if len(shown) < keep_predictions:
        for i in np.nonzero(valid)[0][:keep_predictions - len(shown)]:
          shown.append((np.asarray(batch["input_images"][i]), np.asarray(pred[i]),
                        np.asarray(batch["target_images"][i])))
    per_obj = _gather_processes(per_obj)
    n = len(per_obj["object_index"])
    summary = {k: float(np.mean(v)) for k, v in per_obj.items() if k != "object_index" and v}
    return {"summary": summary, "num_objects": n, "num_views_per_object": int(ev.num_targets),
            "split": str(ev.split), "rotate_deg": float(ev.rotate_deg),
            "resolution": int(loader.target_resolution), "seed": int(ev.seed),
            "seconds": time.time() - t0,
            "per_object": {k: [float(x) for x in v] for k, v in per_obj.items()},
            "examples": shown}


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
  rows += ["| | PSNR (dB) ↑ | SSIM ↑ | LPIPS ↓ |", "|---|---:|---:|---:|"]
  fmt = lambda k, d: f"{s[k]:.{d}f}" if k in s else "–"
  rows.append(f"| model | {fmt('psnr', 2)} | {fmt('ssim', 4)} | {fmt('lpips', 4)} |")
  rows.append(f"| background only | {fmt('background_psnr', 2)} | {fmt('background_ssim', 4)} | "
              f"{fmt('background_lpips', 4)} |")
  return "\n".join(rows) + "\n"


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
