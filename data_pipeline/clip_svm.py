"""Data curation as in Instant3D: CLIP image features → a linear SVM → a filtered object list
(the command: `python -m data_pipeline.curation`, data_pipeline/curation.py).

Instant3D trains its text-to-multi-view model on ~10K objects curated from Objaverse by an SVM
on CLIP image features (the paper's App. A.3, docs/paper_facts.md §A: "Data curation"); which
renders are embedded, how they are pooled, the number of labels and the threshold are not
known, so the choices below are this project's. Here:

1. features: each object's four rig views (over white, data_pipeline/mv_grids.py `grid_views`)
   go through the Flax CLIP vision tower (instant3d_jax/models/clip.py; weights from a
   transformers `CLIPVisionModel[WithProjection]` folder by path, instant3d_jax/convert/clip.py);
   the image embedding (the projection when the tower has one, else the post-normed class token)
   is L2-normalised per view, the four are averaged and the mean normalised again;
2. labels: a text file of `object_id label` lines (label 0 or 1; whitespace or a comma between;
   blank lines and `#` comments skipped) for a few objects;
3. a linear SVM: features standardised with the labelled set's mean and std, then w, b minimise
   mean hinge loss max(0, 1 − y (w·x + b)) + (l2 / 2)|w|² with y = ±1, full-batch Adam (optax;
   scikit-learn is not needed), from zeros, so the fit is deterministic;
4. the score w·x + b of every object of the chosen splits; objects scoring above `threshold` go
   into the object list (one object_id per line, the format `mv_grids.make_grid_loader`'s
   `object_list` reads), and every score into `<out>.scores.tsv` for inspection.

An existing output list is never replaced unless `--overwrite`.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Callable, Mapping, Sequence

import numpy as np

from data_pipeline import mv_grids
from data_pipeline import records
from instant3d_jax import errors

# ------------------------------------------------------------------------------------------------
# Features.


def clip_feature_fn(config, params, *, batch_views: int = 32) -> Callable[[np.ndarray], np.ndarray]:
  """A CLIP vision tower → `views uint8 [N, H, W, 3] → embeddings [N, D]` (not normalised)."""
  import jax  # pylint: disable=g-import-not-at-top
  from instant3d_jax.models import clip  # pylint: disable=g-import-not-at-top
  model = clip.CLIPVisionModel(config)

  @jax.jit
  def embed(p, views):
    x = clip.preprocess_images(views.astype(np.float32) / 255.0, config.image_size)
    out = model.apply({"params": p}, x)
    return out.image_embeds if out.image_embeds is not None else out.pooler_output

  def fn(views):
    views = np.asarray(views, np.uint8)
    outs = []
    for s in range(0, len(views), batch_views):
      chunk = views[s:s + batch_views]
      n = len(chunk)
      if n < batch_views:  # pad to one compiled shape
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_views - n, 0)])
      outs.append(np.asarray(embed(params, chunk))[:n])
    return np.concatenate(outs).astype(np.float32)

  return fn


def load_clip_vision_features(path: str, **kw) -> Callable[[np.ndarray], np.ndarray]:
  """`clip_feature_fn` of the transformers CLIP vision folder at `path`."""
  from instant3d_jax.convert import clip as convert_clip  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(path):
    raise errors.DataError(f"--clip {path}: expected a transformers CLIPVisionModel folder "
                           "(config.json + model.safetensors), found no such directory")
  config, params = convert_clip.load_clip_vision(path)
  return clip_feature_fn(config, params, **kw)


def _normalise(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def object_features(data_dir: str, split: str, embed: Callable[[np.ndarray], np.ndarray], *,
                    batch_objects: int = 8, resolution: int = 0
                    ) -> tuple[list[str], np.ndarray]:
  """(object_ids, features `[N, D]`) of a split: mean of the normalised view embeddings of the
  four rig views, normalised (module docstring)."""
  source = records.RecordSource(data_dir, split)
  ids, feats = [], []
  for s in range(0, len(source), batch_objects):
    recs = [source[i] for i in range(s, min(len(source), s + batch_objects))]
    views = np.concatenate([mv_grids.grid_views(r, resolution) for r in recs])
    emb = _normalise(np.asarray(embed(views), np.float64)).reshape(len(recs), 4, -1)
    feats.append(_normalise(emb.mean(1)))
    ids += [str(r["object_id"]) for r in recs]
  if not ids:
    raise errors.DataError(f"{data_dir}: split {split!r} is empty")
  return ids, np.concatenate(feats).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Labels and the SVM.


def read_labels(path: str) -> dict[str, int]:
  """A labels file → {object_id: 0 or 1} (module docstring for the format)."""
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.read().splitlines()
  except OSError as e:
    raise errors.DataError(f"{path}: labels file cannot be read ({type(e).__name__}: {e})") from e
  out = {}
  for n, line in enumerate(lines, 1):
    line = line.split("#", 1)[0].strip()
    if not line:
      continue
    parts = [p for p in re.split(r"[\s,]+", line) if p]
    if len(parts) != 2 or parts[1] not in ("0", "1"):
      raise errors.DataError(f"{path}:{n}: expected 'object_id label' with label 0 or 1, found "
                             f"{line!r}")
    if parts[0] in out and out[parts[0]] != int(parts[1]):
      raise errors.DataError(f"{path}:{n}: object {parts[0]!r} is labelled both 0 and 1")
    out[parts[0]] = int(parts[1])
  if not out:
    raise errors.DataError(f"{path}: no labels (expected lines 'object_id 0|1')")
  return out


@dataclasses.dataclass(frozen=True)
class LinearSVM:
  """score(x) = w · (x − mean) / std + b; positive = keep."""
  w: np.ndarray
  b: float
  mean: np.ndarray
  std: np.ndarray

  def score(self, features: np.ndarray) -> np.ndarray:
    x = (np.asarray(features, np.float32) - self.mean) / self.std
    return (x @ self.w + self.b).astype(np.float32)


def train_svm(features: np.ndarray, labels: np.ndarray, *, l2: float = 1e-3, steps: int = 500,
              learning_rate: float = 0.05) -> LinearSVM:
  """Fits a linear SVM (hinge loss + L2, optax Adam, full batch) on `features [N, D]` and
  `labels [N]` in {0, 1}; both classes must occur."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  x = np.asarray(features, np.float32)
  y01 = np.asarray(labels)
  if x.ndim != 2 or y01.shape != (len(x),):
    raise errors.DataError(f"train_svm: expected features [N, D] and labels [N], found "
                           f"{list(x.shape)} and {list(y01.shape)}")
  if set(np.unique(y01).tolist()) != {0, 1}:
    raise errors.DataError(f"the labels need both classes 0 and 1, found only "
                           f"{sorted(set(np.unique(y01).tolist()))}")
  mean = x.mean(0)
  std = np.maximum(x.std(0), 1e-6)
  xs = jnp.asarray((x - mean) / std)
  y = jnp.asarray(np.where(y01 == 1, 1.0, -1.0), jnp.float32)
  tx = optax.adam(learning_rate)

  def loss_fn(p):
    margin = y * (xs @ p["w"] + p["b"])
    return jnp.mean(jnp.maximum(0.0, 1.0 - margin)) + 0.5 * l2 * jnp.sum(p["w"] ** 2)

  @jax.jit
  def fit(p):
    def step(carry, _):
      p, opt = carry
      g = jax.grad(loss_fn)(p)
      upd, opt = tx.update(g, opt, p)
      return (optax.apply_updates(p, upd), opt), None
    (p, _), _ = jax.lax.scan(step, (p, tx.init(p)), None, length=int(steps))
    return p

  p = fit({"w": jnp.zeros(x.shape[1], jnp.float32), "b": jnp.zeros((), jnp.float32)})
  return LinearSVM(w=np.asarray(p["w"]), b=float(p["b"]), mean=mean, std=std)


# ------------------------------------------------------------------------------------------------
# The whole curation.


def curate(data_dir: str, embed: Callable[[np.ndarray], np.ndarray], labels: Mapping[str, int],
           out: str, *, splits: Sequence[str] = ("train",), threshold: float = 0.0,
           overwrite: bool = False, l2: float = 1e-3, steps: int = 500,
           resolution: int = 0) -> dict:
  """Features of `splits` → SVM on `labels` → the object list `out` (+ `out.scores.tsv`).

  Returns {"kept": [...], "scores": {object_id: score}, "train_accuracy": float}. Label ids
  must be objects of `splits`; nothing is written when anything is wrong.
  """
  scores_path = out + ".scores.tsv"
  for p in (out, scores_path):
    if os.path.exists(p) and not overwrite:
      raise errors.DataError(f"{p}: already exists; pass --overwrite (overwrite=True) to "
                             "replace it, or choose another --out")
  ids, feats = [], []
  for split in splits:
    i, f = object_features(data_dir, split, embed, resolution=resolution)
    ids += i
    feats.append(f)
  feats = np.concatenate(feats)
  where = {oid: k for k, oid in enumerate(ids)}
  unknown = sorted(set(labels) - set(where))
  if unknown:
    raise errors.DataError(f"labels name {len(unknown)} object(s) not in splits {list(splits)} "
                           f"of {data_dir} (e.g. {unknown[:5]})")
  rows = [where[o] for o in labels]
  y = np.array([labels[o] for o in labels])
  svm = train_svm(feats[rows], y, l2=l2, steps=steps)
  scores = svm.score(feats)
  train_acc = float(np.mean((scores[rows] > 0) == (y == 1)))
  kept = [oid for oid, s in zip(ids, scores) if s > threshold]
  mv_grids.write_object_list(out, kept, header=(
      f"data_pipeline.curation: {len(kept)} of {len(ids)} objects of {data_dir} "
      f"(splits {','.join(splits)}) with SVM score > {threshold:g}; {len(labels)} labels, "
      f"training accuracy {train_acc:.3f}"))
  tmp = scores_path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write("object_id\tscore\tlabel\n")
    for oid, s in zip(ids, scores):
      f.write(f"{oid}\t{s:.6f}\t{labels.get(oid, '')}\n")
  os.replace(tmp, scores_path)
  return {"kept": kept, "scores": dict(zip(ids, scores.tolist())), "train_accuracy": train_acc}
