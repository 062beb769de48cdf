"""Data curation as in Instant3D: CLIP image features → a linear SVM → a filtered object list.

  python -m data_pipeline.curation --data_dir DATA --clip /path/to/clip_vision \
      --labels labels.txt --out objects.txt [--splits train] [--threshold 0] [--overwrite]

The labels file holds `object_id label` lines (label 0 or 1); the objects of `--splits` whose
SVM score is above `--threshold` go into `--out` (one object_id per line, what
`grid.object_list` reads), every score into `<out>.scores.tsv`. The features, the SVM and the
choices behind them are data_pipeline/clip_svm.py. An existing output list is never replaced
unless `--overwrite`.
"""
from __future__ import annotations

import os
from typing import Sequence

from data_pipeline import clip_svm
from data_pipeline import records
from instant3d_jax import errors


def main(argv: Sequence[str]) -> None:
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  FLAGS = flags.FLAGS
  labels = clip_svm.read_labels(FLAGS.labels)
  for p in (FLAGS.out, FLAGS.out + ".scores.tsv"):  # refuse before the tower loads
    if os.path.exists(p) and not FLAGS.overwrite:
      raise errors.DataError(f"{p}: already exists; pass --overwrite to replace it, or choose "
                             "another --out")
  records.read_metadata(FLAGS.data_dir)
  if FLAGS.l2 < 0 or FLAGS.steps < 1:
    raise errors.ConfigError(f"--l2 must be ≥ 0 and --steps ≥ 1, found {FLAGS.l2}, {FLAGS.steps}")
  embed = clip_svm.load_clip_vision_features(FLAGS.clip)
  res = clip_svm.curate(FLAGS.data_dir, embed, labels, FLAGS.out, splits=FLAGS.splits,
                        threshold=FLAGS.threshold, overwrite=FLAGS.overwrite, l2=FLAGS.l2,
                        steps=FLAGS.steps)
  print(f"kept {len(res['kept'])} of {len(res['scores'])} objects (SVM training accuracy "
        f"{res['train_accuracy']:.3f} on {len(labels)} labels) → {FLAGS.out}")


def _define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("data_dir", None, "records data set (procedural or imported)")
  flags.DEFINE_string("clip", None, "transformers CLIPVisionModel[WithProjection] folder")
  flags.DEFINE_string("labels", None, "labels file: 'object_id 0|1' per line")
  flags.DEFINE_string("out", None, "object list to write (one object_id per line)")
  flags.DEFINE_list("splits", ["train"], "splits to score")
  flags.DEFINE_float("threshold", 0.0, "keep objects whose SVM score is above this")
  flags.DEFINE_float("l2", 1e-3, "L2 weight of the SVM")
  flags.DEFINE_integer("steps", 500, "full-batch Adam steps of the SVM fit")
  flags.DEFINE_bool("overwrite", False, "replace an existing --out")
  flags.mark_flags_as_required(["data_dir", "clip", "labels", "out"])


if __name__ == "__main__":
  from instant3d_jax import cli
  _define_flags()
  cli.run(main)
