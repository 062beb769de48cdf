"""Trains the reconstructor (LRM): grain → jit-sharded step → orbax, from one CPU to a pod.

    python -m instant3d_jax.train_lrm --config configs/lrm.py:tiny --workdir outputs/lrm_tiny \
        [--config.train.total_steps=200] [--coordinator_address=host:port --num_processes=N
        --process_id=i]

Data (`data_dir`, `data.source`): 'procedural' (the tiny/demo default) generates the procedural
world into `data_dir` first if it is not there (process 0; the others wait); 'records' trains on
an existing data set in the records format, e.g. renders imported with
`python -m data_pipeline.importer` (`--config.data.source=records --config.data_dir=DIR`).
Restarting the same command resumes from the workdir's latest checkpoint (same data order,
bit-identical parameters on the same hardware). `model.encoder.pretrained` (a transformers
DINO/ViT folder) initialises the encoder at step 0.

The job itself (loss, hooks, shapes) is `instant3d_jax/train/lrm_task.py`; the loop
`instant3d_jax/train/loop.py`. A project error (bad data, config, checkpoint, non-finite losses)
prints one line and exits non-zero.
"""
from __future__ import annotations

from instant3d_jax import cli


def main(argv):
  del argv
  from instant3d_jax.train import launch, lrm_task
  launch.train_main(lrm_task.train)


if __name__ == "__main__":
  cli.define_train_flags("configs/lrm.py:VARIANT")
  cli.run(main)
