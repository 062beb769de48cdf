"""Shape of text-to-four-view grids of the procedural world: a small classifier of the world's
five shapes (data_pipeline/primitives.py `SHAPES`) trained on real renders, with colour removed
(issue "Stage-1 scores that can fail": colour alone never checked shape).

Data: the views of SINGLE-object captions (data_pipeline/captions.py `parse_caption`: one item;
its shape is the label), all rig and supervision views of each object, area-resized to
`resolution`² like the stage-1 grids (data_pipeline/mv_grids.py). `train_classifier` reads the
TRAIN split; `evaluate` the VAL split (other objects, never the test split).

Colour removed (`colourless`): a view becomes two channels, a coverage mask (how far the darkest
channel is from the white background, saturating at 0.5: every palette colour at full light is
past it) and the shading inside the mask, grey / (the object's brightest grey). The world shades
an albedo c by a factor s (`primitives.shade`), so grey = s·mean(c) and the shading channel is
s / s_max whatever the colour: only the silhouette and the shading pattern, the shape's, are left.

The model (`ShapeNet`): three 3×3 conv + ReLU + 2×2 average-pool stages (32, 64, 128 channels) and
a 128-unit hidden layer, Adam with a cosine decay from 2e-3, 1000 batches of 128 with random
horizontal flips. Deterministic for a seed. On the `make demo` data set (904 single-object train
objects, 10 848 views at 32²; 2026-12-07, 2 cores shared with two other jobs): 146 s, val views
85.5% (64 objects, 768 views; majority-class chance 23.4%), rig grids 85.9%; (16, 32, 64) / 64
units gave 79.0% / 75.0% after 600 steps (44 s) and 84.8% / 79.7% after 1500 (96 s). `save` /
`load`: one .npz (the parameters and the config as JSON).

A grid's shape score (`grid_shape_report`): a single-object grid counts right when at least
`min_views_share` (0.75: 3 of 4 views) of its views are classified as the caption's shape.
Multi-object captions are not scored (the classifier knows single objects only).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Sequence

import numpy as np

from instant3d_jax import errors

DEFAULT_RESOLUTION = 32
MASK_SATURATION = 0.5   # max(1 − p) over channels at which a pixel counts fully covered
MIN_VIEWS_SHARE = 0.75  # 3 of 4 views


def _shapes() -> tuple[str, ...]:
  from data_pipeline import primitives  # pylint: disable=g-import-not-at-top
  return tuple(primitives.SHAPES)


def _resize(views: np.ndarray, res: int) -> np.ndarray:
  """Area resize of `[N, H, W, C]` float to `[N, res, res, C]` (H, W multiples of res: block
  mean; else PIL's BOX filter)."""
  n, h, w, c = views.shape
  if (h, w) == (res, res):
    return views
  if h % res == 0 and w % res == 0:
    return views.reshape(n, res, h // res, res, w // res, c).mean((2, 4))
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return np.stack([np.stack([np.asarray(Image.fromarray(v[..., k].astype(np.float32)).resize(
      (res, res), Image.BOX)) for k in range(c)], -1) for v in views])


def colourless(views, resolution: int = DEFAULT_RESOLUTION) -> np.ndarray:
  """Views `[..., H, W, 3]` (uint8, or float in [0, 1], over white) → `[N, r, r, 2]` float32:
  coverage mask and colour-free shading (module docstring), after an area resize to r²."""
  v = np.asarray(views)
  v = v.astype(np.float32) / 255.0 if v.dtype == np.uint8 else np.clip(v.astype(np.float32), 0, 1)
  v = _resize(v.reshape((-1,) + v.shape[-3:]), int(resolution))
  mask = np.clip(np.max(1.0 - v, -1) / MASK_SATURATION, 0.0, 1.0)
  grey = v.mean(-1)
  inside = mask > 0.9
  top = np.where(inside, grey, 0.0).reshape(len(v), -1).max(-1)
  shading = np.where(inside, grey / np.maximum(top, 1e-3)[:, None, None], 0.0)
  return np.stack([mask, shading], -1).astype(np.float32)


def _net(cfg: dict):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  class ShapeNet(nn.Module):
    """conv-ReLU-pool ×3 → dense → logits."""

    @nn.compact
    def __call__(self, x):
      for f in cfg["features"]:
        x = nn.relu(nn.Conv(int(f), (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
      x = x.reshape((x.shape[0], -1))
      x = nn.relu(nn.Dense(int(cfg["hidden"]))(x))
      return nn.Dense(len(cfg["shapes"]))(x)

  return ShapeNet()


@dataclasses.dataclass
class ShapeClassifier:
  """A trained classifier: `params` (Flax tree) and `config` (JSON-able dict)."""
  params: dict
  config: dict

  def logits(self, views, batch: int = 256) -> np.ndarray:
    import jax  # pylint: disable=g-import-not-at-top
    x = colourless(views, int(self.config["resolution"]))
    fn = _apply_fn(json.dumps(self.config, sort_keys=True))
    out = [np.asarray(fn(self.params, jax.numpy.asarray(x[i:i + batch])))
           for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0, len(self.config["shapes"])), np.float32)

  def predict(self, views) -> list[str]:
    """The shape name of each view of `[..., H, W, 3]` (flattened over the leading axes)."""
    shapes = self.config["shapes"]
    return [shapes[int(k)] for k in np.argmax(self.logits(views), -1)]

  def save(self, path: str) -> str:
    """One .npz: every parameter leaf under its '/'-joined key path and `__config__` (JSON)."""
    from flax import traverse_util  # pylint: disable=g-import-not-at-top
    from instant3d_jax import fileio  # pylint: disable=g-import-not-at-top
    import io  # pylint: disable=g-import-not-at-top
    flat = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(self.params).items()}
    buf = io.BytesIO()
    np.savez(buf, __config__=np.asarray(json.dumps(self.config)), **flat)
    fileio.write_bytes(str(path), buf.getvalue())
    return str(path)


def load(path: str) -> ShapeClassifier:
  """A classifier written by `ShapeClassifier.save` (`errors.InputError` when it is not one)."""
  import io  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  from instant3d_jax import fileio  # pylint: disable=g-import-not-at-top
  try:
    with np.load(io.BytesIO(fileio.path(path).read_bytes())) as z:
      config = json.loads(str(z["__config__"]))
      flat = {tuple(k.split("/")): np.asarray(z[k]) for k in z.files if k != "__config__"}
  except (OSError, KeyError, ValueError) as e:
    raise errors.InputError(f"{path}: not a shape classifier file ({type(e).__name__}: {e})") \
        from None
  return ShapeClassifier(params=traverse_util.unflatten_dict(flat), config=config)


_APPLY = {}


def _apply_fn(cfg_json: str):
  import jax  # pylint: disable=g-import-not-at-top
  if cfg_json not in _APPLY:
    net = _net(json.loads(cfg_json))
    _APPLY[cfg_json] = jax.jit(lambda p, x: net.apply({"params": p}, x))
  return _APPLY[cfg_json]


def single_object_views(data_dir: str, split: str, resolution: int = DEFAULT_RESOLUTION,
                        max_objects: int = 0, groups: Sequence[str] = ("rig", "sup")):
  """The views of the single-object captions of a split: (views `[N, r, r, 3]` float32 over
  white, shape labels `[N]` int (index into `primitives.SHAPES`), object position `[N]`), every
  view of `groups` the record has; the first `max_objects` such objects (0: all)."""
  from data_pipeline import captions as captions_lib  # pylint: disable=g-import-not-at-top
  from data_pipeline import lrm_input, records  # pylint: disable=g-import-not-at-top
  shapes = _shapes()
  src = records.RecordSource(data_dir, split)
  views, labels, objs = [], [], []
  count = 0
  for pos in range(len(src)):
    rec = src[pos]
    try:
      items = captions_lib.parse_caption(str(rec["caption"]))
    except errors.DataError:
      continue
    if len(items) != 1:
      continue
    for g in groups:
      if g not in rec["groups"] or not len(rec["groups"][g]["images"]):
        continue
      n = len(rec["groups"][g]["images"])
      # The grids' own decoding and area resize (mv_grids.grid_views does the same).
      rgb, _, _ = lrm_input._decode_views(  # pylint: disable=protected-access
          rec, g, range(n), int(resolution))
      views.append(rgb)
      labels += [shapes.index(items[0].shape)] * n
      objs += [pos] * n
    count += 1
    if max_objects and count >= max_objects:
      break
  if not views:
    raise errors.DataError(f"{data_dir}: split {split!r} holds no single-object caption to "
                           "train or evaluate the shape classifier on")
  return (np.concatenate(views).astype(np.float32), np.asarray(labels, np.int32),
          np.asarray(objs, np.int32))


def train_classifier(data_dir: str, *, resolution: int = DEFAULT_RESOLUTION, steps: int = 1000,
                     batch_size: int = 128, learning_rate: float = 2e-3, seed: int = 0,
                     max_objects: int = 0, features=(32, 64, 128), hidden: int = 128,
                     log=print) -> ShapeClassifier:
  """Trains the classifier on the TRAIN split's single-object views (module docstring).
  Deterministic for `seed` (data order, initialisation, flips)."""
  import time  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  views, labels, objs = single_object_views(data_dir, "train", resolution, max_objects)
  x = colourless(views, resolution)
  cfg = {"resolution": int(resolution), "features": [int(f) for f in features],
         "hidden": int(hidden), "shapes": list(_shapes()), "seed": int(seed), "steps": int(steps),
         "batch_size": int(batch_size), "learning_rate": float(learning_rate),
         "train_views": int(len(x)), "train_objects": int(len(np.unique(objs))),
         "class_counts": np.bincount(labels, minlength=len(_shapes())).tolist()}
  net = _net(cfg)
  params = net.init(jax.random.PRNGKey(int(seed)), jnp.zeros((1,) + x.shape[1:]))["params"]
  tx = optax.adam(optax.cosine_decay_schedule(float(learning_rate), int(steps)))
  opt = tx.init(params)

  @jax.jit
  def step(p, o, xb, yb):
    def loss_fn(p):
      logits = net.apply({"params": p}, xb)
      return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
    loss, g = jax.value_and_grad(loss_fn)(p)
    upd, o = tx.update(g, o, p)
    return optax.apply_updates(p, upd), o, loss

  rng = np.random.default_rng([int(seed), 5])
  order, at = rng.permutation(len(x)), 0
  loss = float("nan")
  for i in range(int(steps)):
    if at + batch_size > len(x):
      order, at = rng.permutation(len(x)), 0
    b = order[at:at + batch_size]
    at += batch_size
    xb = x[b]
    flip = rng.random(len(b)) < 0.5
    xb = np.where(flip[:, None, None, None], xb[:, :, ::-1], xb)
    params, opt, loss = step(params, opt, jnp.asarray(xb), jnp.asarray(labels[b]))
  cfg["final_loss"] = round(float(loss), 4)
  cfg["train_s"] = round(time.perf_counter() - t0, 1)
  log(f"shape classifier: {len(x)} views of {cfg['train_objects']} single-object train objects, "
      f"{steps} steps, loss {float(loss):.3f}, {cfg['train_s']:.0f} s")
  return ShapeClassifier(params=jax.device_get(params), config=cfg)


def evaluate(clf: ShapeClassifier, data_dir: str, split: str = "val",
             max_objects: int = 0) -> dict:
  """Accuracy on the single-object views of `split` (held-out objects; default val) with colour
  removed, against the majority-class chance (always answering the training set's most frequent
  shape). Returns {"split", "views", "objects", "accuracy", "chance", "chance_class",
  "rig_grid_accuracy" (the grid rule on the objects' rig views), "per_shape"}."""
  shapes = clf.config["shapes"]
  views, labels, objs = single_object_views(data_dir, split, int(clf.config["resolution"]),
                                            max_objects)
  pred = np.asarray([shapes.index(s) for s in clf.predict(views)])
  major = int(np.argmax(clf.config["class_counts"]))
  rig, _, rig_objs = single_object_views(data_dir, split, int(clf.config["resolution"]),
                                         max_objects, groups=("rig",))
  rig_pred = np.asarray([shapes.index(s) for s in clf.predict(rig)])
  rig_lab = np.asarray([labels[np.argmax(objs == o)] for o in rig_objs])
  per_obj = [np.mean(rig_pred[rig_objs == o] == rig_lab[rig_objs == o]) >= MIN_VIEWS_SHARE
             for o in np.unique(rig_objs)]
  return {"split": split, "views": int(len(views)), "objects": int(len(np.unique(objs))),
          "accuracy": float(np.mean(pred == labels)), "chance": float(np.mean(labels == major)),
          "chance_class": shapes[major], "rig_grid_accuracy": float(np.mean(per_obj)),
          "per_shape": {s: float(np.mean(pred[labels == k] == k)) if np.any(labels == k)
                        else float("nan") for k, s in enumerate(shapes)}}


def ensure_classifier(path: str, data_dir: str, **kw) -> ShapeClassifier:
  """The classifier saved at `path` when it is there, else trained on `data_dir` (`kw`:
  `train_classifier`'s settings) and saved there."""
  import os  # pylint: disable=g-import-not-at-top
  if os.path.exists(path):
    return load(path)
  clf = train_classifier(data_dir, **kw)
  clf.save(path)
  return clf


def views_shape_verdict(clf: ShapeClassifier, views, shape: str,
                        min_views_share: float = MIN_VIEWS_SHARE) -> dict:
  """The shape rule for the views `[V, H, W, 3]` of one single-object caption of shape `shape`:
  {"predicted" (per view), "ok": at least `min_views_share` of the views are `shape`}."""
  pred = clf.predict(views)
  right = sum(p == shape for p in pred)
  return {"predicted": pred, "ok": bool(right >= min_views_share * len(pred) - 1e-9)}


def grid_shape_report(clf: ShapeClassifier, grids, captions: Sequence[str]) -> dict:
  """Shape scores of captioned grids `[N, 2R, 2R, 3]`: single-object captions only (module
  docstring). Returns {"accuracy" (NaN: none), "count", "right", "items"} with per grid
  {"caption", "shape", "predicted", "ok"} (None for multi-object captions)."""
  from data_pipeline import captions as captions_lib  # pylint: disable=g-import-not-at-top
  from data_pipeline import mv_grids  # pylint: disable=g-import-not-at-top
  grids = np.asarray(grids)
  if grids.ndim != 4 or len(grids) != len(captions):
    raise ValueError(f"grid_shape_report: expected grids [N, 2R, 2R, 3] and N captions, found "
                     f"{list(grids.shape)} and {len(captions)} captions")
  single = [i for i, c in enumerate(captions) if len(captions_lib.parse_caption(str(c))) == 1]
  views = mv_grids.untile_grid(grids[single]) if single else np.zeros((0, 4, 1, 1, 3))
  pred = clf.predict(views.reshape((-1,) + views.shape[-3:])) if single else []
  items = [{"caption": str(c), "shape": None, "predicted": None, "ok": None} for c in captions]
  oks = []
  for j, i in enumerate(single):
    shape = captions_lib.parse_caption(str(captions[i]))[0].shape
    p = pred[4 * j:4 * j + 4]
    ok = sum(s == shape for s in p) >= MIN_VIEWS_SHARE * 4
    oks.append(ok)
    items[i].update(shape=shape, predicted=p, ok=bool(ok))
  return {"accuracy": float(np.mean(oks)) if oks else float("nan"), "count": len(oks),
          "right": int(sum(oks)), "items": items}
