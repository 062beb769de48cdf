"""Imports real multi-view renders into the record format of `data_pipeline/records.py`.

  python -m data_pipeline.importer --src RENDERS --out DATA [--format instant3d] [--fov DEG]
      [--scale S] [--rig_tolerance 2] [--[no]checks] [--split_fractions 0.9,0.05,0.05]
      [--seed 0] [--split_file SPLITS.json] [--records_per_shard 500] [--overwrite]

`--format` reads other render sets and converts them to the project's convention
(data_pipeline/render_formats.py): instant3d (default, the layout below), openlrm, zero123,
gobjaverse, instantmesh (needs --fov), nerf. Objects whose views include the Instant3D rig keep
those 4 as their 'rig'; the others are rig-less and need data.loader.input_views='random' (the
metadata's `input_views` and `rigless_objects` say so). Every object of the other formats (of
instant3d with --checks) gets the convention checks of data_pipeline/convention_checks.py
(visual-hull IoU, scale, image-up); failures are listed in DATA/convention_failures.tsv without
stopping the import, and the last line counts them.

RENDERS holds one folder per object (the folder name becomes the object id), each with a
`cameras.json` (schema in `data_pipeline/cameras_json.py`) and the RGBA PNGs it lists. Every object
has the 4 Instant3D rig views (group "rig", az 0/90/180/270 in that order) or none (rig-less,
for data.loader.input_views='random'); "sup" views are the
supervision pool; held-out objects evaluated on the GSO protocol also need "eval" (64) and
"eval_inputs" (4). All images of the data set must share one resolution.

Objects are assigned to train/val/test by a seeded permutation of the sorted folder names (so
folders sorted by category still give mixed splits), or with `--split_file` by a JSON object
{object id: "train" | "val" | "test"} naming every object (--split_fractions and --seed unused;
the metadata's config.split_rule is then 'given'); record `index` is the position in the sorted
list of names. The layout and a Blender command line that produces it: data_pipeline/README.md.
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
                                      overwrite=FLAGS.overwrite, format=FLAGS.format,
                                      fov_deg=FLAGS.fov, scale=FLAGS.scale,
                                      rig_tolerance_deg=FLAGS.rig_tolerance, checks=FLAGS.checks,
                                      splits=FLAGS.split_file)
  counts = ", ".join(f"{k}: {v['num_objects']}" for k, v in meta["splits"].items())
  print(render_import.check_summary(meta, FLAGS.out))
  rigless = len(meta["rigless_objects"])
  if rigless:
    print(f"{rigless} objects have no Instant3D rig: train with data.loader.input_views='random'")
  failed = meta.get("convention_checks", {}).get("failed_objects", 0)
  print(f"imported {meta['num_objects']} objects ({meta['format']}) at {meta['resolution']}² "
        f"into {FLAGS.out} ({counts}); {rigless} rig-less; convention-check failures: {failed}")


def _define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("src", None, "folder of object folders (one per object)")
  flags.DEFINE_enum("format", "instant3d", ["instant3d", "openlrm", "zero123", "gobjaverse",
                                            "instantmesh", "nerf"],
                    "layout and camera convention of --src (data_pipeline/render_formats.py)")
  flags.DEFINE_float("fov", None, "field of view in degrees (required by instantmesh; overrides "
                     "zero123's 35 mm lens)")
  flags.DEFINE_float("scale", None, "camera positions × this (default per format: 2 for the "
                     "[-0.5, 0.5]³ sets zero123 and gobjaverse, else 1)")
  flags.DEFINE_float("rig_tolerance", 2.0, "degrees within which views count as the Instant3D rig")
  flags.DEFINE_bool("checks", None, "run the convention checks on every object (default: on for "
                    "every --format but instant3d)")
  flags.DEFINE_string("out", None, "output data set directory")
  flags.DEFINE_list("split_fractions", ["0.9", "0.05", "0.05"], "train,val,test fractions")
  flags.DEFINE_integer("seed", 0, "seed of the permutation that assigns objects to splits")
  flags.DEFINE_string("split_file", None, "JSON object {object id: train|val|test} naming every "
                      "object: these splits instead of the seeded permutation")
  flags.DEFINE_integer("records_per_shard", 500, "objects per ArrayRecord shard")
  flags.DEFINE_bool("overwrite", False, "replace a data set already in --out")
  flags.mark_flags_as_required(["src", "out"])


if __name__ == "__main__":
  from instant3d_jax import cli
  _define_flags()
  cli.run(main)
