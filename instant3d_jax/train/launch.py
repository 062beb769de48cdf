"""What a trainer command runs around its job: the cheap input checks, the process join, then
`train(config, workdir)` (`train_main`, the body of `python -m instant3d_jax.train_lrm` and
`train_mvdiffusion`'s `main`; their flags are `cli.define_train_flags`). The demos call
`check_train_inputs` before they generate data."""
from __future__ import annotations

from typing import Callable

from instant3d_jax import errors, fileio


def check_train_inputs(config, workdir: str) -> None:
  """A training run's cheap checks, before the processes join and anything loads: `--workdir`
  is a directory if it exists; with `data.source='records'` the data set in `data_dir` exists
  (its metadata is read); the data files the `grid` section names (`grid.cache_dir`,
  `grid.object_list`, stage 1) exist. Raises `errors.ConfigError` / `errors.DataError`."""
  if fileio.path(workdir).exists() and not fileio.path(workdir).is_dir():
    raise errors.ConfigError(f"--workdir {workdir}: is a file, not a directory")
  data = config.get("data")
  if data is not None and str(data.get("source", "procedural")) == "records":
    from data_pipeline import records
    data_dir = str(config.data_dir)
    if not fileio.path(data_dir).joinpath(records.METADATA_FILE).exists():
      raise errors.DataError(
          f"data_dir {data_dir}: no data set there (no {records.METADATA_FILE}); "
          "data.source='records' reads an existing one (write it with python -m "
          "data_pipeline.importer --src RENDERS --out DIR, or set data.source='procedural')")
    records.read_metadata(data_dir)
  grid = config.get("grid")
  if grid is not None:
    for key, kind in (("cache_dir", "a frozen-encoder cache (python -m data_pipeline.mv_cache)"),
                      ("object_list", "an object list file (python -m data_pipeline.curation)")):
      value = str(grid[key] or "")
      if value and not fileio.path(value).exists():
        raise errors.ConfigError(f"grid.{key} {value}: no such file or directory; expected "
                                 f"{kind}")


def train_main(train: Callable[[object, str], object]) -> None:
  """Body of a trainer command's `main`: checks the inputs (`check_train_inputs`), joins the
  processes, then `train(config, workdir)`."""
  from absl import flags
  from instant3d_jax.base import multihost
  FLAGS = flags.FLAGS
  check_train_inputs(FLAGS.config, FLAGS.workdir)
  multihost.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                       platform=FLAGS.platform, num_cpu_devices=FLAGS.num_cpu_devices)
  res = train(FLAGS.config, FLAGS.workdir)
  print(f"done: step {res.step} ({res.stop_reason}), {res.wall_s:.0f}s, workdir {FLAGS.workdir}")
