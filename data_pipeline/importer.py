"""Imports real multi-view renders into the record format of `data_pipeline/records.py`.

  python -m data_pipeline.importer --src RENDERS --out DATA [--split_fractions 0.9,0.05,0.05]
      [--seed 0] [--records_per_shard 500] [--overwrite]

RENDERS holds one folder per object (the folder name becomes the object id), each with a
`cameras.json` (schema in `data_pipeline/cameras_json.py`) and the RGBA PNGs it lists. Every object
needs the 4 Instant3D rig views (group "rig", az 0/90/180/270 in that order); "sup" views are the
supervision pool; held-out objects evaluated on the GSO protocol also need "eval" (64) and
"eval_inputs" (4). All images of the data set must share one resolution.

Objects are assigned to train/val/test by a seeded permutation of the sorted folder names (so
folders sorted by category still give mixed splits); record `index` is the position in that
sorted list. The layout and a Blender command line that produces it: data_pipeline/README.md.
A DATA directory that already holds a data set is never replaced unless `--overwrite` is given.
The importer itself is `data_pipeline/render_import.py`.
"""
from __future__ import annotations

from typing import Sequence

from data_pipeline import procedural, render_import


def main(argv: Sequence[str]) -> None:
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  FLAGS = flags.FLAGS
  fractions = procedural.parse_fractions(FLAGS.split_fractions)
  meta = render_import.import_renders(FLAGS.src, FLAGS.out, split_fractions=fractions,
                                      seed=FLAGS.seed, records_per_shard=FLAGS.records_per_shard,
                                      overwrite=FLAGS.overwrite)
  counts = ", ".join(f"{k}: {v['num_objects']}" for k, v in meta["splits"].items())
  print(f"imported {meta['num_objects']} objects at {meta['resolution']}² into {FLAGS.out} "
        f"({counts})")


def _define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("src", None, "folder of object folders (one per object, with cameras.json)")
  flags.DEFINE_string("out", None, "output data set directory")
  flags.DEFINE_list("split_fractions", ["0.9", "0.05", "0.05"], "train,val,test fractions")
  flags.DEFINE_integer("seed", 0, "seed of the permutation that assigns objects to splits")
  flags.DEFINE_integer("records_per_shard", 500, "objects per ArrayRecord shard")
  flags.DEFINE_bool("overwrite", False, "replace a data set already in --out")
  flags.mark_flags_as_required(["src", "out"])


if __name__ == "__main__":
  from instant3d_jax import cli
  _define_flags()
  cli.run(main)
