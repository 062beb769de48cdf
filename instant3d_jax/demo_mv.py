"""Stage 1 on the shapes world (`make demo-mv`): train the tiny text-to-four-views model from
scratch on this CPU, then sample grids for held-out captions and score them.

  python -m instant3d_jax.demo_mv [--workdir outputs/mv_demo] [--config configs/mv_sdxl.py:tiny]
      [--config.train.total_steps=N] [--per_caption 4] [--num_captions 12]
      [--reconstructor outputs/demo/lrm] [--retrain] [--shape_steps 1000]
      [--pipeline_config configs/instant3d.py:tiny]

1. Data: the procedural world of `make demo` (configs/data.py:demo in `--data_dir`, default
   outputs/demo/data: generated once, shared with `make demo`).
2. Train `configs/mv_sdxl.py:tiny` (`train_mvdiffusion`, a fixed step count, one XLA CPU
   device) into WORKDIR/train on the caption-level training part (data_pipeline/captions.py:
   whole (colour, shape) combinations are held out). A finished run (WORKDIR/train/
   train_summary.json) is reused unless --retrain; an interrupted one resumes.
3. Held-out captions: `--num_captions` distinct captions of held-out objects (val + test splits,
   whose combinations the model never saw) for each caption role (data_pipeline/captions.py
   `heldout_roles`: val captions name only val combinations, test captions only test ones;
   'mixed' ones are left out), half single-object and half multi-object where the data allow;
   `--per_caption` grids each from the EMA weights (the jitted sampler, `config.sample`
   settings). Test captions are sampled and scored only through the test ledger
   (instant3d_jax/eval/ledger.py): a repeat with the same weights returns the recorded result.
4. Shape classifier (instant3d_jax/eval/shape.py): trained (`--shape_steps`) on the train
   split's single-object views with colour removed, saved as WORKDIR/shape_classifier.npz
   (reused when there), its accuracy on the val split's views against majority-class chance.
5. Scores, per role, one table: rows chance level, shuffled-caption control (the generated grids
   against captions permuted among the role's grids), real-render ceiling (the captions' objects'
   rig renders) and the model; columns single-object colour, multi-object colour
   (instant3d_jax/eval/colour.py: named colours present, unnamed colours penalised, background
   grain cleaned) and shape (≥ 3 of 4 views classified as the caption's shape); each with its n
   and Wilson 95% interval (instant3d_jax/eval/stats.py).
6. View consistency: the `make demo` reconstructor (`--reconstructor`, skipped with a note when
   absent) turns each grid's four views into a triplane and re-renders them at the rig cameras;
   PSNR of the re-renders against the views, for generated grids and for the real renders.
7. WORKDIR/heldout_grids.png (one row per caption, its grids, the caption and its role as the
   title), WORKDIR/report.{json,md} and WORKDIR/results.json (instant3d_jax/eval/results.py).
The job is instant3d_jax/demos/mv.py; this module holds flags and `main` only.
"""
from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from instant3d_jax import cli, configs
from instant3d_jax.demos import mv as mv_demo

_WORKDIR = flags.DEFINE_string("workdir", "outputs/mv_demo", "where the run and its report go")
_CONFIG = config_flags.DEFINE_config_file(
    "config", configs.path("mv_sdxl.py:tiny"), "the stage-1 run (configs/mv_sdxl.py:tiny)",
    lock_config=False)
_PIPELINE_CONFIG = config_flags.DEFINE_config_file(
    "pipeline_config", configs.path("instant3d.py:tiny"), "the text-to-3D pipeline whose "
    "stage2.background_threshold cleans the views for the view-consistency score "
    "(configs/instant3d.py:tiny)", lock_config=False)
_DATA_DIR = flags.DEFINE_string("data_dir", "outputs/demo/data",
                                "the procedural data set (shared with `make demo`)")
_RECON = flags.DEFINE_string("reconstructor", "outputs/demo/lrm",
                             "the `make demo` reconstructor (a train_lrm workdir, step dir or "
                             ".safetensors) for the view-consistency check; '' skips it")
_NUM_CAPTIONS = flags.DEFINE_integer("num_captions", 12, "held-out captions to sample per "
                                     "caption role (val, test)")
_PER_CAPTION = flags.DEFINE_integer("per_caption", 4, "grids per caption")
_SHAPE_STEPS = flags.DEFINE_integer("shape_steps", 1000, "training steps of the shape classifier "
                                    "(when WORKDIR/shape_classifier.npz is absent)")
_RETRAIN = flags.DEFINE_bool("retrain", False, "train again even if WORKDIR/train holds a "
                             "finished run (a new run needs an empty WORKDIR/train)")


def main(argv):
  del argv
  from instant3d_jax import errors
  cfg = _CONFIG.value
  workdir = _WORKDIR.value
  # Cheap checks first: a bad flag fails before the data set is generated or a model trains.
  for name, flag in (("num_captions", _NUM_CAPTIONS), ("per_caption", _PER_CAPTION),
                     ("shape_steps", _SHAPE_STEPS)):
    if flag.value < 1:
      raise errors.ConfigError(f"--{name} must be >= 1, got {flag.value}")
  mv_demo.run(cfg, workdir, data_dir=_DATA_DIR.value, reconstructor=_RECON.value,
              num_captions=_NUM_CAPTIONS.value, per_caption=_PER_CAPTION.value,
              background_threshold=float(_PIPELINE_CONFIG.value.stage2.background_threshold),
              retrain=_RETRAIN.value, shape_steps=_SHAPE_STEPS.value)


if __name__ == "__main__":
  cli.run(main)
