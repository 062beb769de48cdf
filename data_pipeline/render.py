"""Renders 3D files (GLB/GLTF/OBJ/PLY/STL) with Blender into object folders for the importer.

  make install-render       # once: .venv-render with bpy (Blender as a Python module)
  python -m data_pipeline.render --assets DIR_OR_LIST --out RENDERS \
      [--config configs/render.py:default|openlrm|instantmesh|test|bench] [--config.KEY=VALUE]
      [--workers N] [--retry_failed] [--python .venv-render/bin/python]
  python -m data_pipeline.importer --src RENDERS --out DATA

DIR_OR_LIST is a folder (searched recursively) or a text file of asset paths, one a line. Each
object is normalised into the unit ball (bounding sphere radius 1 at the origin, world z-up),
rendered from the Instant3D rig + random supervision views with Cycles on the CPU into
RENDERS/<name>/ (RGBA PNGs, cameras.json, normalization.json, mask_check.json). Finished objects
are skipped; failures go to RENDERS/failures.jsonl and are skipped later unless --retry_failed.
Exit status 1 when any object failed. The library: data_pipeline/blender_render.py.
"""
from __future__ import annotations

import sys
from typing import Sequence

from data_pipeline import blender_render


def main(argv: Sequence[str]) -> None:
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  FLAGS = flags.FLAGS
  cfg = FLAGS.config
  if FLAGS.workers is not None:
    cfg.workers = FLAGS.workers
  assets = blender_render.find_assets(FLAGS.assets)
  s = blender_render.render_assets(cfg, assets, FLAGS.out, python=FLAGS.python,
                                   retry_failed=FLAGS.retry_failed)
  for oid, stage, reason in s["failures"]:
    print(f"failed: {oid}: {stage}: {reason}", file=sys.stderr)
  print(blender_render.summary_line(s, FLAGS.out))
  if s["failed"] or s["failed_before"]:
    sys.exit(1)


def _define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from instant3d_jax.configs import render as render_config  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("assets", None, "folder of 3D files, or a text file of paths")
  flags.DEFINE_string("out", None, "output folder of object folders (the importer's --src)")
  config_flags.DEFINE_config_file(
      "config", f"{render_config.__file__}:default",
      "configs/render.py[:default|openlrm|instantmesh|test|bench]; entries as --config.KEY=VALUE",
      lock_config=False)
  flags.DEFINE_integer("workers", None, "Blender processes at a time (config: workers)")
  flags.DEFINE_bool("retry_failed", False, "render objects listed in failures.jsonl again")
  flags.DEFINE_string("python", None, "Blender venv's python (default .venv-render/bin/python)")
  flags.mark_flags_as_required(["assets", "out"])


if __name__ == "__main__":
  from instant3d_jax import cli
  _define_flags()
  cli.run(main)
