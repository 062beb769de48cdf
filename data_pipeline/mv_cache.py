"""Writes the frozen-encoder cache for stage-1 training: VAE latents and prompt embeddings of
every object of a records data set, as ArrayRecord.

  python -m data_pipeline.mv_cache --data_dir DATA --out CACHE --config configs/sdxl.py:sdxl \
      --weights /path/to/sdxl [--splits train,val] [--resolution 0] [--batch_size 8] [--overwrite]

The format, the overwrite rule and the reader (`make_latent_loader`) are
data_pipeline/latent_cache.py. `--encoders module:function` names a function
`(config, weights) → latent_cache.FrozenEncoders` (default
`instant3d_jax.diffusion.stage1:sdxl_encoders`: the SDXL pipeline of `--weights` with the runtime
of `--config`, configs/sdxl.py). An output directory
that already holds a data set or a cache is refused (one-line error) unless `--overwrite`;
nothing is written before the encoders have loaded.
"""
from __future__ import annotations

from typing import Sequence

from data_pipeline import latent_cache
from data_pipeline import records
from instant3d_jax import configs


def main(argv: Sequence[str]) -> None:
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  FLAGS = flags.FLAGS
  latent_cache.check_out_dir(FLAGS.data_dir, FLAGS.out, FLAGS.overwrite)
  records.read_metadata(FLAGS.data_dir)  # a bad source fails before the encoders load
  encoders = latent_cache.load_encoders(FLAGS.encoders, FLAGS.config, FLAGS.weights)
  meta = latent_cache.write_cache(FLAGS.data_dir, FLAGS.out, encoders, splits=FLAGS.splits,
                                 batch_size=FLAGS.batch_size, resolution=FLAGS.resolution,
                                 records_per_shard=FLAGS.records_per_shard,
                                 overwrite=FLAGS.overwrite)
  counts = ", ".join(f"{k}: {v['num_objects']}" for k, v in meta["splits"].items())
  print(f"cached {meta['num_objects']} objects into {FLAGS.out} ({counts}); shapes "
        f"{meta['shapes']}")


def _define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("data_dir", None, "records data set (procedural or imported)")
  flags.DEFINE_string("out", None, "output cache directory")
  config_flags.DEFINE_config_file("config", configs.path("sdxl.py:sdxl"), "model config "
                                  "(runtime of the frozen encoders), e.g. configs/sdxl.py:VARIANT")
  flags.DEFINE_string("weights", None, "SDXL diffusers folder or single-file .safetensors "
                      "(for the default --encoders)")
  flags.DEFINE_string("encoders", "instant3d_jax.diffusion.stage1:sdxl_encoders",
                      "module:function (config, weights) -> FrozenEncoders")
  flags.DEFINE_list("splits", None, "splits to cache (default: all of the data set's)")
  flags.DEFINE_integer("batch_size", 8, "objects per encoder call")
  flags.DEFINE_integer("resolution", 0, "view side before tiling (0: as stored)")
  flags.DEFINE_integer("records_per_shard", 500, "objects per ArrayRecord shard")
  flags.DEFINE_bool("overwrite", False, "replace a data set or cache already in --out")
  flags.mark_flags_as_required(["data_dir", "out"])


if __name__ == "__main__":
  from instant3d_jax import cli
  _define_flags()
  cli.run(main)
