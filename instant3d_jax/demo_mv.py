"""Stage 1 on the shapes world (`make demo-mv`): train the tiny text-to-four-views model from
scratch on this CPU, then sample grids for held-out captions and score them.

  python -m instant3d_jax.demo_mv [--workdir outputs/mv_demo] [--config configs/mv_sdxl.py:tiny]
      [--config.train.total_steps=N] [--per_caption 4] [--num_captions 20]
      [--reconstructor outputs/demo/lrm] [--retrain]
      [--pipeline_config configs/instant3d.py:tiny]

1. Data: the procedural world of `make demo` (configs/data.py:demo in `--data_dir`, default
   outputs/demo/data: generated once, shared with `make demo`).
2. Train `configs/mv_sdxl.py:tiny` (`train_mvdiffusion`, a fixed step count, one XLA CPU
   device) into WORKDIR/train on the caption-level training part (data_pipeline/captions.py:
   whole (colour, shape) combinations are held out). A finished run (WORKDIR/train/
   train_summary.json) is reused unless --retrain; an interrupted one resumes.
3. Held-out captions: `--num_captions` distinct captions of held-out objects (val + test splits,
   whose combinations the model never saw), half single-object and half multi-object where the
   data allow; `--per_caption` grids each from the EMA weights (the jitted sampler,
   `config.sample` settings).
4. Scores (instant3d_jax/eval/colour.py): colour accuracy of single-object captions (the dominant
   colour of all four views is the caption's), and the share of multi-object grids with every
   named colour present; the same classifier on the real rig renders of the objects the
   captions come from, as its check.
5. View consistency: the `make demo` reconstructor (`--reconstructor`, skipped with a note when
   absent) turns each grid's four views into a triplane and re-renders them at the rig cameras;
   PSNR of the re-renders against the views, for generated grids and for the real renders.
6. WORKDIR/heldout_grids.png (one row per caption, its grids, the caption as the title) and
   WORKDIR/report.{json,md}.
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
_NUM_CAPTIONS = flags.DEFINE_integer("num_captions", 20, "held-out captions to sample")
_PER_CAPTION = flags.DEFINE_integer("per_caption", 4, "grids per caption")
_RETRAIN = flags.DEFINE_bool("retrain", False, "train again even if WORKDIR/train holds a "
                             "finished run (a new run needs an empty WORKDIR/train)")


def main(argv):
  del argv
  from instant3d_jax import errors
  cfg = _CONFIG.value
  workdir = _WORKDIR.value
  # Cheap checks first: a bad flag fails before the data set is generated or a model trains.
  for name, flag in (("num_captions", _NUM_CAPTIONS), ("per_caption", _PER_CAPTION)):
    if flag.value < 1:
      raise errors.ConfigError(f"--{name} must be >= 1, got {flag.value}")
  mv_demo.run(cfg, workdir, data_dir=_DATA_DIR.value, reconstructor=_RECON.value,
              num_captions=_NUM_CAPTIONS.value, per_caption=_PER_CAPTION.value,
              background_threshold=float(_PIPELINE_CONFIG.value.stage2.background_threshold),
              retrain=_RETRAIN.value)


if __name__ == "__main__":
  cli.run(main)
