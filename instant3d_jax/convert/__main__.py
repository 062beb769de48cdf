"""Weight-layout command: an SDXL checkpoint to the single-file original layout or a diffusers
folder.

  # diffusers folder → one .safetensors (the original SD/SGM key layout that diffusers'
  # StableDiffusionXLPipeline.from_single_file reads, given a config folder):
  python -m instant3d_jax.convert --weights /path/to/sdxl_folder --out sdxl.safetensors
  # single file (+ a folder with the component configs and tokenizers) → diffusers folder:
  python -m instant3d_jax.convert --weights sdxl.safetensors --config_folder /path/to/configs \
      --out /path/to/sdxl_folder

`--out` ending in `.safetensors` writes the single file; anything else a diffusers folder
(convert/sdxl_pipeline.py `save_pipeline`). An existing `--out` is refused unless
`--overwrite`. `--dtype` casts the written tensors (default: float32, as loaded).
"""
from __future__ import annotations

from typing import Sequence

from instant3d_jax import cli

DTYPES = ("float32", "float16", "bfloat16")


def _define_flags():
  from absl import flags
  flags.DEFINE_string("weights", None, "SDXL diffusers folder or single-file .safetensors")
  flags.DEFINE_string("config_folder", None,
                      "folder with the component configs and tokenizers (single-file --weights)")
  flags.DEFINE_string("out", None, "output: a .safetensors file (single-file layout) or a "
                      "folder (diffusers layout)")
  flags.DEFINE_enum("dtype", "float32", DTYPES, "dtype of the written tensors")
  flags.DEFINE_bool("overwrite", False, "replace an existing --out")


def main(argv: Sequence[str]) -> None:
  from pathlib import Path
  from absl import app, flags
  from instant3d_jax import errors
  from instant3d_jax.convert import sdxl_pipeline
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {list(argv[1:])}")
  FLAGS = flags.FLAGS
  if not FLAGS.weights or not FLAGS.out:
    raise errors.ConfigError("--weights and --out are required")
  out = Path(FLAGS.out)
  if out.exists() and not FLAGS.overwrite:
    raise errors.ConfigError(f"--out {out} already exists; choose another path or pass "
                             "--overwrite")
  pipeline = sdxl_pipeline.load_any(FLAGS.weights, FLAGS.config_folder)
  if out.suffix == ".safetensors":
    import ml_dtypes
    import numpy as np
    dtype = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
    sdxl_pipeline.save_single_file(out, pipeline, dtype[FLAGS.dtype])
  else:
    if FLAGS.dtype != "float32":
      raise errors.ConfigError(f"--dtype {FLAGS.dtype} applies to single-file output only; "
                               f"--out {out} is a folder (written in float32)")
    sdxl_pipeline.save_pipeline(out, pipeline)
  print(f"wrote {out}")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
