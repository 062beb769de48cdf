"""Stage 1 command: prompts → SDXL 2×2 four-view grids (PNG) + the four views + run.json.

  python -m instant3d_jax.text_to_views --config configs/sdxl.py:sdxl \
      --weights /path/to/sdxl_folder --prompt "a wooden chair" --num_samples 2 --out outputs/views

Flags: --prompt or --prompts_file (one prompt per line, blank lines skipped), --negative_prompt,
--num_samples (grids per prompt), --steps, --guidance_scale, --scheduler, --seed override the
config (`--config.sampler.*`, `--config.blob.*` reach every other knob). `--weights` is a
diffusers-format SDXL folder, or a single-file `.safetensors` with
`--config.single_file_config_folder` naming a folder with the component configs and tokenizers.
On several devices the config's mesh and logical axis rules apply (`--config.mesh.fsdp=N`
FSDP-shards the pipeline).

Output (OUT/): `NNNN_grid.png` (1024² grid), `NNNN_view{0..3}_az{0,90,180,270}.png` (rig order),
and `run.json` (config, weights, prompts per sample, seed, package versions), written last.
The work is done by `instant3d_jax.diffusion.stage1`; this module holds flags and `main` only.
Prompts to 3D objects (both stages): `python -m instant3d_jax.text_to_3d`.
"""
from __future__ import annotations

from typing import Sequence

from instant3d_jax import cli, configs


def _define_flags():
  from absl import flags
  from ml_collections import config_flags
  from instant3d_jax.diffusion import schedulers
  config_flags.DEFINE_config_file("config", configs.path("sdxl.py:sdxl"), "configs/sdxl.py:VARIANT",
                                  lock_config=True)
  flags.DEFINE_string("weights", None, "SDXL diffusers folder or single-file .safetensors")
  flags.DEFINE_string("prompt", None, "the text prompt")
  flags.DEFINE_string("prompts_file", None, "text file, one prompt per line")
  flags.DEFINE_string("negative_prompt", None, "negative prompt (default: config)")
  flags.DEFINE_integer("num_samples", 1, "grids per prompt")
  flags.DEFINE_integer("steps", None, "denoising steps (default: config)")
  flags.DEFINE_float("guidance_scale", None, "CFG scale (default: config)")
  flags.DEFINE_string("scheduler", None, f"one of {schedulers.SCHEDULERS}")
  flags.DEFINE_integer("seed", None, "PRNG seed (default: config)")
  flags.DEFINE_string("out", None, "output folder")
  flags.DEFINE_bool("progress", True, "show a progress bar")


def main(argv: Sequence[str]) -> None:
  from absl import app, flags
  from instant3d_jax import errors
  from instant3d_jax.diffusion import stage1
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {list(argv[1:])}")
  FLAGS = flags.FLAGS
  if FLAGS.weights is None or FLAGS.out is None:
    raise errors.ConfigError("--weights and --out are required")
  cfg = FLAGS.config
  prompts = stage1.read_prompts(FLAGS.prompt, FLAGS.prompts_file)
  if FLAGS.num_samples < 1:
    raise errors.ConfigError(f"--num_samples must be >= 1, got {FLAGS.num_samples}")
  options = stage1.Options(
      num_samples=FLAGS.num_samples, steps=FLAGS.steps, guidance_scale=FLAGS.guidance_scale,
      scheduler=FLAGS.scheduler, seed=FLAGS.seed, negative_prompt=FLAGS.negative_prompt,
      progress=FLAGS.progress)
  options.settings(cfg)  # bad flags fail before the weights load
  pipeline = stage1.load_pipeline(cfg, FLAGS.weights)
  out = stage1.sample_to_folder(cfg, pipeline, prompts, FLAGS.out, weights=FLAGS.weights,
                                options=options, placement=stage1.placement_from_config(cfg))
  print(f"wrote {out}")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
