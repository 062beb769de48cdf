"""Stage-1 evaluation on the shapes world (what `make demo-mv` and `make demo-text3d` score;
issue "Stage-1 training", "The shapes world"):

* `heldout_captions`: distinct captions of held-out objects (unseen colour–shape combinations of
  the caption-level split, data_pipeline/captions.py) from the val and test splits, with their
  role (val: tuning may look; test: scored through the test ledger, eval/ledger.py);
* `real_grids`: those objects' real rig renders as 2×2 grids (the classifier's and the
  reconstructor's reference);
* `view_consistency`: the reconstructor's re-render PSNR of a grid's four views at the rig
  cameras (a consistent grid is one a 3D object explains);
* `captioned_rows_image`: the grids of each caption in a row, titled with the caption.
"""
from __future__ import annotations

import functools

from instant3d_jax import errors


def heldout_captions(data_dir: str, num_per_role: int, roles: dict) -> list[dict]:
  """`num_per_role` distinct captions of held-out objects of the val and test splits for each
  caption role (data_pipeline/captions.py `heldout_roles` → `roles`; `caption_role`: 'mixed'
  captions, naming a val and a test combination, are left out), alternating single-object and
  multi-object ones while both last (data set order: deterministic). Val rows first, then test.
  Each {"caption", "role", "split", "position", "object_id"}."""
  from data_pipeline import captions as captions_lib
  from data_pipeline import mv_grids, records
  splits = records.read_metadata(data_dir)["splits"]
  pools = {r: ([], []) for r in captions_lib.ROLES}
  seen = set()
  for split in ("val", "test"):
    if split not in splits:
      continue
    for pos, (_, oid, cap) in enumerate(mv_grids.object_table(data_dir, split)):
      if cap in seen:
        continue
      role = captions_lib.caption_role(cap, roles)
      if role not in pools:
        continue
      seen.add(cap)
      row = {"caption": cap, "role": role, "split": split, "position": pos, "object_id": oid}
      single, multi = pools[role]
      (single if len(captions_lib.parse_caption(cap)) == 1 else multi).append(row)
  out = []
  for role, (single, multi) in pools.items():
    got = []
    while len(got) < num_per_role and (single or multi):
      for pool in (single, multi):
        if pool and len(got) < num_per_role:
          got.append(pool.pop(0))
    if len(got) < num_per_role:
      raise errors.DataError(f"{data_dir}: only {len(got)} distinct held-out {role} captions in "
                             f"val + test, expected --num_captions {num_per_role} per role")
    out += got
  return out


def real_grids(data_dir: str, rows: list[dict], resolution: int):
  """The real rig renders `[N, 2R, 2R, 3]` float in [0, 1] of the rows' objects."""
  import numpy as np
  from data_pipeline import mv_grids, records
  sources = {}
  out = []
  for r in rows:
    src = sources.setdefault(r["split"], records.RecordSource(data_dir, r["split"]))
    out.append(mv_grids.tile_grid(mv_grids.grid_views(src[r["position"]], resolution)))
  return np.stack(out).astype(np.float32) / 255.0


@functools.lru_cache(maxsize=2)
def _rerenderer(checkpoint: str):
  """The reconstructor of `checkpoint` loaded once, and one jitted `(params, inputs, views) →
  PSNR [b, 4]` of its re-render at the rig cameras (reused across calls: the demo scores
  generated and real grids with the same checkpoint)."""
  import jax
  import jax.numpy as jnp
  from instant3d_jax import cameras as cameras_lib
  from instant3d_jax import reconstruction
  from instant3d_jax.eval import metrics as metrics_lib
  from instant3d_jax.models import lrm as lrm_lib
  config, params = reconstruction.load_checkpoint(checkpoint)
  m = lrm_lib.LRMConfig.from_config(config)
  rig = cameras_lib.instant3d_rig(int(m.input_resolution))

  @jax.jit
  def rerender(p, inputs, views):
    b = views.shape[0]
    cams = jax.tree.map(lambda a: jnp.broadcast_to(a, (b,) + a.shape), rig)
    planes = lrm_lib.LRM(m).apply({"params": p}, inputs, cams)
    out = lrm_lib.render_views(m, p, planes, cams, outputs=("rgb",))["rgb"]
    return metrics_lib.psnr(jnp.clip(out, 0.0, 1.0), views)  # [b, 4]

  return m, params, rerender


def view_consistency(checkpoint: str, grids, batch: int = 8, *,
                     background_threshold: float) -> "np.ndarray":
  """Per grid, the PSNR (dB) of the reconstructor's re-render of its four views at the rig
  cameras against the views (resized to the model's input resolution): `[N]`. The reconstructor
  sees the views with near-background pixels set to the background, as the pipeline feeds it
  (`reconstruction.clean_background`, configs/instant3d.py `stage2.background_threshold`); the
  re-render is compared with the views as they are. `background_threshold`: the pipeline
  config's `stage2.background_threshold` (configs/instant3d.py:tiny's comment has the
  measurements)."""
  import jax.numpy as jnp
  import numpy as np
  from data_pipeline import mv_grids
  from instant3d_jax import reconstruction
  m, params, rerender = _rerenderer(str(checkpoint))
  res = int(m.input_resolution)
  raw = [mv_grids.untile_grid(g).astype(np.float32) for g in np.asarray(grids)]
  views = np.stack([reconstruction.resize_views(v, res) for v in raw]).astype(np.float32)
  inputs = np.stack([reconstruction.resize_views(reconstruction.clean_background(
      v, m.background, background_threshold), res) for v in raw]).astype(np.float32)
  scores = []
  for i in range(0, len(views), batch):
    pad = batch - len(views[i:i + batch])
    grow = lambda a: np.concatenate([a, np.repeat(a[-1:], pad, 0)]) if pad else a
    scores.append(np.asarray(rerender(params, jnp.asarray(grow(inputs[i:i + batch])),
                                      jnp.asarray(grow(views[i:i + batch]))))[:batch - pad])
  return np.concatenate(scores).mean(-1)


def captioned_rows_image(grids, captions, per_caption: int, scale: int = 2, ncols: int = 2):
  """One tile per caption: its `per_caption` grids side by side (upscaled `scale`×), titled with
  the caption; `ncols` captions per row."""
  import numpy as np
  from instant3d_jax.export import images as images_lib
  g = np.asarray(grids).repeat(scale, 1).repeat(scale, 2)
  rows = [images_lib.make_grid(g[i * per_caption:(i + 1) * per_caption], ncols=per_caption)
          for i in range(len(captions))]
  return images_lib.make_labelled_grid(np.stack(rows), list(captions), ncols=ncols,
                                       label_height=14)


def object_frames(m, params, planes, frames: int = 8, resolution: int = 64):
  """`frames` turntable renders `[T, r, r, 3]` (rig elevation and distance) of one reconstructed
  object. `m`, `params`: the reconstructor's model config and weights; `planes`: its triplane."""
  import numpy as np
  from instant3d_jax import reconstruction
  from instant3d_jax.export import video as video_lib
  return np.asarray(reconstruction.render_frames(m, params, planes,
                                                 video_lib.turntable_cameras(frames, resolution)))


def object_colours(m, params, planes, frames: int = 8, resolution: int = 64):
  """The palette colour (eval/colour.py) most of `frames` turntable renders of one reconstructed
  object show (None: no classified pixel in any), and the per-frame dominant colours. `m`,
  `params`: the reconstructor's model config and weights; `planes`: the object's triplane."""
  from collections import Counter
  from instant3d_jax.eval import colour
  imgs = object_frames(m, params, planes, frames, resolution)
  per = [colour.dominant_colour(f) for f in imgs]
  named = [c for c in per if c]
  return (Counter(named).most_common(1)[0][0] if named else None), per


def views_scores(views, caption: str, clf=None) -> dict:
  """The stage-1 rules on any views `[V, H, W, 3]` of one captioned object (a grid's four, or
  turntable frames of its reconstruction): {"colour": eval/colour.py `colours_verdict` (the
  single- or multi-object rule), "shape": eval/shape.py `views_shape_verdict` for a
  single-object caption with a classifier `clf`, else None}."""
  from data_pipeline import captions as captions_lib
  from instant3d_jax.eval import colour, shape
  items = captions_lib.parse_caption(caption)
  out = {"colour": colour.colours_verdict(views, [it.colour for it in items]), "shape": None}
  if clf is not None and len(items) == 1:
    out["shape"] = shape.views_shape_verdict(clf, views, items[0].shape)
  return out
