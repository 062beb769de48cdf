"""Text to 3D on the shapes world (`make demo-text3d`): the stage-1 `tiny` model and the `make demo`
reconstructor joined by the pipeline, on held-out captions, with the page looked at.

  python -m instant3d_jax.demo_text3d [--out outputs/text3d] [--num_captions 10]
      [--mv_workdir outputs/mv_demo] [--lrm_workdir outputs/demo]
      [--config configs/instant3d.py:tiny] [--mv_config configs/mv_sdxl.py:tiny]

1. Stage 2: the `make demo` reconstructor (LRM_WORKDIR/lrm), trained first when absent
   (instant3d_jax/demo.py, configs/lrm.py:tiny). Stage 1: the `make demo-mv` model
   (MV_WORKDIR/train), trained first when absent (instant3d_jax/demo_mv.py,
   configs/mv_sdxl.py:tiny). Both share the procedural data set in LRM_WORKDIR/data.
2. The held-out captions of `mv_eval.heldout_captions` (unseen colour–shape combinations),
   `--num_captions` for each caption role (val, test: data_pipeline/captions.py `heldout_roles`),
   through `pipeline.TextTo3D` (configs/instant3d.py:tiny) into OUT (the `text_to_3d` layout: per
   object grid, views, triplane, renders, turntable, mesh; OUT/index.html, OUT/run.json).
3. Scores per role, in OUT/report.{json,md} (test captions through the test ledger,
   instant3d_jax/eval/ledger.py):
   * the stage-1 rules on 8 turntable renders of each reconstruction (not the grid):
     single-object colour, multi-object colour (unnamed colours penalised;
     instant3d_jax/eval/colour.py) and shape (the `make demo-mv` shape classifier,
     MV_WORKDIR/shape_classifier.npz, trained first when absent; instant3d_jax/eval/shape.py),
     each with its n and Wilson 95% interval;
   * the reconstructor's re-render PSNR of its own four input views (the generated ones);
   * the paper's CLIP-similarity protocol (`eval_text3d`) run on the objects with a tiny random
     CLIP (no pretrained CLIP here): it exercises the plumbing, its numbers mean nothing.
4. OUT/index.png: the page in headless Chromium (skipped with a note where there is none).
The job is instant3d_jax/demos/text3d.py; this module holds flags and `main` only.
"""
from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from instant3d_jax import cli, configs
from instant3d_jax.demos import text3d as text3d_demo

_OUT = flags.DEFINE_string("out", "outputs/text3d", "where the objects, page and report go")
_NUM = flags.DEFINE_integer("num_captions", 10, "held-out captions per caption role (val, "
                           "test) to turn into objects")
_MV = flags.DEFINE_string("mv_workdir", "outputs/mv_demo", "the `make demo-mv` workdir")
_LRM = flags.DEFINE_string("lrm_workdir", "outputs/demo", "the `make demo` workdir")
_SEED = flags.DEFINE_integer("seed", 0, "sampling seed")
_CONFIG = config_flags.DEFINE_config_file(
    "config", configs.path("instant3d.py:tiny"), "the pipeline (configs/instant3d.py:tiny)",
    lock_config=False)
_MV_CONFIG = config_flags.DEFINE_config_file(
    "mv_config", configs.path("mv_sdxl.py:tiny"), "the stage-1 run's config, for its held-out "
    "caption split (configs/mv_sdxl.py:tiny)", lock_config=False)


def main(argv):
  del argv
  from instant3d_jax import errors
  from instant3d_jax import fileio
  # Cheap checks first: a bad flag fails before anything trains or loads.
  if _NUM.value < 1:
    raise errors.ConfigError(f"--num_captions must be >= 1, got {_NUM.value}")
  for name, flag in (("out", _OUT), ("mv_workdir", _MV), ("lrm_workdir", _LRM)):
    if fileio.path(flag.value).is_file():
      raise errors.ConfigError(f"--{name} {flag.value}: is a file, not a directory")
  text3d_demo.run(_OUT.value, config=_CONFIG.value, mv_config=_MV_CONFIG.value,
                  num_captions=_NUM.value, mv_workdir=_MV.value, lrm_workdir=_LRM.value,
                  seed=_SEED.value)


if __name__ == "__main__":
  cli.run(main)
