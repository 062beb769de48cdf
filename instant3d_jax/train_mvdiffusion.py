"""Trains the stage-1 model (text → 2×2 four-view grid): grain → jit-sharded step → orbax.

    python -m instant3d_jax.train_mvdiffusion --config configs/mv_sdxl.py:tiny \
        --workdir outputs/mv_tiny [--config.train.total_steps=200]
    python -m instant3d_jax.train_mvdiffusion --config configs/mv_sdxl.py:sdxl \
        --workdir outputs/mv_sdxl --config.model.pretrained=/path/to/sdxl_folder \
        --config.data_dir=data/real [--coordinator_address=host:port --num_processes=N
        --process_id=i]

Data: captioned 2×2 grids of the rig views (data_pipeline/mv_grids.py) from `data_dir`
('procedural': the procedural world is generated there first if absent; 'records': an existing
data set, e.g. imported renders), the caption-level held-out combinations removed
(`grid.heldout`), optionally narrowed to a curated object list (`grid.object_list`).
`model.pretrained` (an SDXL diffusers folder or single file) is read when a run starts at step 0
(and for the frozen components on every start). Restarting the same command resumes from the
workdir's latest checkpoint (parameters, EMA, optimizer and data order bit-identical). Sample
grids of `sample.captions` with the EMA weights go to TensorBoard and workdir/images every
`train.image_every` steps.

The job is instant3d_jax/train/mv_task.py, the loop instant3d_jax/train/loop.py. A project error
(bad data, config, weights, checkpoint, non-finite losses) prints one line and exits non-zero.
"""
from __future__ import annotations

from instant3d_jax import cli


def main(argv):
  del argv
  from instant3d_jax.train import launch, mv_task
  launch.train_main(mv_task.train)


if __name__ == "__main__":
  cli.define_train_flags("configs/mv_sdxl.py:VARIANT")
  cli.run(main)
