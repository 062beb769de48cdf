"""The main job (`make demo`): the procedural multi-view world and a look at it.

  python -m instant3d_jax.demo [--workdir outputs/demo] [--data_config configs/data.py:demo]

Generates the demo data set under WORKDIR/data unless it is already there (cached: a complete
data set with the same generation config is reused), then writes a contact sheet of one held-out
object — its 4 Instant3D rig views and a few GSO-style evaluation views — to
WORKDIR/contact_sheet.png, and prints where everything is.
"""
from __future__ import annotations

import os
import time

from absl import app, flags
from ml_collections import config_flags

from data_pipeline import records, synthetic
from data_pipeline.contact_sheet import contact_sheet

_WORKDIR = flags.DEFINE_string("workdir", "outputs/demo", "where data and outputs go")
_DATA_CONFIG = config_flags.DEFINE_config_file("data_config", "configs/data.py:demo",
                                               "the procedural world (configs/data.py:VARIANT)")

# Eval-rig views shown on the sheet: (elevation index, azimuth index) into the 4 × 16 GSO grid.
_EVAL_VIEWS = ((0, 0), (0, 4), (1, 2), (1, 10), (2, 6), (2, 12), (3, 0), (3, 8))


def object_contact_sheet(data_dir: str, path: str, *, split: str = "test", index: int = 0,
                         scale: int = 3) -> dict:
  """Contact sheet of one object of `split`: rig views, then eval views if it has them."""
  rec = records.RecordSource(data_dir, split)[index]
  rows = [list(records.group_rgba(rec, "rig"))]
  labels = ["Instant3D rig: elev 20, az 0 / 90 / 180 / 270"]
  if "eval" in rec["groups"]:
    views = [16 * e + a for e, a in _EVAL_VIEWS]
    rows.append(list(records.group_rgba(rec, "eval", views)))
    labels.append("GSO eval rig: " + ", ".join(f"e{[0, 20, 40, 60][e]} a{a * 22.5:g}"
                                               for e, a in _EVAL_VIEWS))
  contact_sheet(rows, path, row_labels=labels, scale=scale,
                title=f"{rec['object_id']} ({split}): \"{rec['caption']}\"")
  return rec


def main(argv):
  del argv
  cfg = _DATA_CONFIG.value
  workdir = _WORKDIR.value
  data_dir = os.path.join(workdir, "data")
  t0 = time.perf_counter()
  cached = os.path.exists(os.path.join(data_dir, records.METADATA_FILE))
  meta = synthetic.ensure_dataset(cfg, data_dir)
  counts = ", ".join(f"{k} {v['num_objects']}" for k, v in meta["splits"].items())
  print(f"data set: {data_dir} ({'cached' if cached else 'generated'} in "
        f"{time.perf_counter() - t0:.1f} s; {meta['num_objects']} objects at "
        f"{meta['resolution']}²: {counts})")
  sheet = os.path.join(workdir, "contact_sheet.png")
  split = "test" if meta["splits"]["test"]["num_objects"] else "train"
  rec = object_contact_sheet(data_dir, sheet, split=split)
  print(f"contact sheet of {rec['object_id']} (\"{rec['caption']}\"): {sheet}")


if __name__ == "__main__":
  app.run(main)
