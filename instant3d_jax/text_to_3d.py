"""Text → 3D command: prompts → four-view grids (stage 1) → triplanes (stage 2) → renders,
turntables, meshes; both stages loaded once, the prompts in jitted batches over every device.

  python -m instant3d_jax.text_to_3d --config configs/instant3d.py:tiny \
      (--prompt "a red cube" | --prompts_file prompts.txt) --out outputs/text3d \
      [--seed N --steps N --guidance_scale G --num_samples N --batch_size N]

Weights come from the config (`--config.stage1.weights=…`, `--config.stage2.weights=…`;
configs/instant3d.py lists the accepted forms); a missing or wrong-kind path is a one-line error
before anything runs. `--batch_size` prompts per jitted call (a multiple of the mesh's batch
split); `--num_samples` objects per prompt (each its own seed index).

Output (OUT/): per object `NNNN/` with prompt.txt, grid.png, view_{0..3}.png, triplane.npz
(reconstruct's format: planes, plane_order, config), renders/input_K.png and
renders/inputs_vs_renders.png, turntable.gif, turntable.mp4, turntable_strip.png and
mesh.{glb,obj,ply} (`--save_float` adds grid.npy, the float32 grid); `index.html` (a static page
of every object's grid, turntable and mesh link; no network needed) and `run.json` (written
last: "prompts" [{index, prompt, dir, …}], weights, seed, sampler, per-stage seconds, package
versions). The work is done by `instant3d_jax.pipeline`; this module holds flags and `main`
only. Stage 1 alone (prompts to four-view grids): `python -m instant3d_jax.text_to_views`.
"""
from __future__ import annotations

from typing import Sequence

from instant3d_jax import cli, configs


def _define_flags():
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", configs.path("instant3d.py:tiny"),
                                  "configs/instant3d.py:VARIANT", lock_config=False)
  flags.DEFINE_string("prompt", None, "the text prompt")
  flags.DEFINE_string("prompts_file", None, "text file, one prompt per line")
  flags.DEFINE_string("out", None, "output folder")
  flags.DEFINE_integer("seed", None, "PRNG seed (default: config)")
  flags.DEFINE_integer("steps", None, "denoising steps (default: config stage1.sample)")
  flags.DEFINE_float("guidance_scale", None, "CFG scale (default: config stage1.sample)")
  flags.DEFINE_integer("num_samples", 1, "objects per prompt")
  flags.DEFINE_integer("batch_size", None, "prompts per jitted call (default: config)")
  flags.DEFINE_bool("save_float", False, "also write each grid as float32 grid.npy")


def main(argv: Sequence[str]) -> None:
  from absl import app, flags
  from instant3d_jax import errors
  from instant3d_jax import pipeline
  from instant3d_jax.diffusion import stage1
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {list(argv[1:])}")
  FLAGS = flags.FLAGS
  if FLAGS.out is None:
    raise errors.ConfigError("--out is required")
  cfg = FLAGS.config
  if FLAGS.batch_size is not None:
    cfg.batch_size = FLAGS.batch_size
  prompts = stage1.read_prompts(FLAGS.prompt, FLAGS.prompts_file)
  for name in ("num_samples", "steps", "batch_size"):
    if FLAGS[name].value is not None and FLAGS[name].value < 1:
      raise errors.ConfigError(f"--{name} must be >= 1, got {FLAGS[name].value}")
  pipe = pipeline.TextTo3D.load(cfg)  # checks both weights paths before it loads either
  out = pipeline.generate_to_folder(pipe, prompts, FLAGS.out, seed=FLAGS.seed,
                                    num_samples=FLAGS.num_samples, num_steps=FLAGS.steps,
                                    guidance_scale=FLAGS.guidance_scale,
                                    save_float=FLAGS.save_float)
  t = pipe.timings
  print(f"wrote {out} ({len(prompts) * FLAGS.num_samples} objects; stage 1 {t['stage1_s']:.1f} s, "
        f"stage 2 {t['stage2_s']:.1f} s, host {t['host_s']:.1f} s, total {t['total_s']:.1f} s); "
        f"open {out / 'index.html'}")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
