"""Generates the procedural multi-view world: random primitive scenes rendered by exact ray casting.

  python -m data_pipeline.synthetic --out DIR --num_objects N --resolution R --views V
      [--seed S] [--split_fractions 0.9,0.05,0.05] [--supersample 2] [--workers 2] [--overwrite]
  python -m data_pipeline.synthetic --config configs/data.py:demo --out outputs/demo/data
  python -m data_pipeline.synthetic --config configs/data.py:tiny --config.world.ambient=0.5 ...

A directory that already holds a data set is never replaced unless `--overwrite` is given.
Object i is a pure function of (seed, i), splits are contiguous index ranges (train, val, test);
the generator is `data_pipeline/procedural.py`, the output format `data_pipeline/records.py`.
"""
from __future__ import annotations

from typing import Sequence

from data_pipeline import procedural

# Flags that override one config entry each: flag name → config key.
_OVERRIDES = (("num_objects", "num_objects"), ("resolution", "resolution"),
              ("views", "num_sup_views"), ("seed", "seed"), ("supersample", "supersample"),
              ("workers", "num_workers"))


def main(argv: Sequence[str]) -> None:
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  FLAGS = flags.FLAGS
  cfg = FLAGS.config
  for flag, key in _OVERRIDES:
    if FLAGS[flag].value is not None:
      cfg[key] = FLAGS[flag].value
  if FLAGS.split_fractions is not None:
    cfg.split_fractions = procedural.parse_fractions(FLAGS.split_fractions)
  out = FLAGS.out
  meta = procedural.generate(cfg, out, overwrite=FLAGS.overwrite)
  n_views = sum(meta["splits"][s]["num_objects"] * (4 + cfg.num_sup_views +
                                                    (68 if s in cfg.eval_rig_splits else 0))
                for s in meta["splits"])
  secs = max(meta["generation_seconds"], 1e-3)
  counts = ", ".join(f"{k}: {v['num_objects']}" for k, v in meta["splits"].items())
  print(f"wrote {cfg.num_objects} objects ({n_views} views at {cfg.resolution}²) to {out} "
        f"in {secs:.1f} s: {cfg.num_objects / secs:.1f} objects/s, {n_views / secs:.0f} views/s; "
        f"splits {{{counts}}}")


def _define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from instant3d_jax.configs import data as data_config  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("out", None, "output data set directory")
  config_flags.DEFINE_config_file(
      "config", f"{data_config.__file__}:default",
      "configs/data.py[:tiny|demo|default]; single entries as --config.KEY=VALUE",
      lock_config=False)
  flags.DEFINE_integer("num_objects", None, "objects in all splits (config: num_objects)")
  flags.DEFINE_integer("resolution", None, "image side in pixels (config: resolution)")
  flags.DEFINE_integer("views", None, "random supervision views per object (config: "
                       "num_sup_views)")
  flags.DEFINE_integer("seed", None, "world seed (config: seed)")
  flags.DEFINE_list("split_fractions", None, "train,val,test fractions (config: split_fractions)")
  flags.DEFINE_integer("supersample", None, "rays per pixel per axis (config: supersample)")
  flags.DEFINE_integer("workers", None, "generation processes (config: num_workers)")
  flags.DEFINE_bool("overwrite", False, "replace a data set already in --out")
  flags.mark_flag_as_required("out")


if __name__ == "__main__":
  from instant3d_jax import cli
  _define_flags()
  cli.run(main)
