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


def _define_flags():
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "configs/lrm.py:VARIANT", lock_config=False)
  flags.DEFINE_string("workdir", None, "output directory (checkpoints, logs, images)")
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process)")
  flags.DEFINE_integer("num_processes", None, "number of processes (multi-process)")
  flags.DEFINE_integer("process_id", None, "this process's index (multi-process)")
  flags.DEFINE_string("platform", None, "'cpu' selects gloo collectives for CPU processes")
  flags.DEFINE_integer("num_cpu_devices", None, "CPU devices per process (CPU runs)")
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  from absl import flags
  from instant3d_jax.train import lrm_task, multihost
  FLAGS = flags.FLAGS
  multihost.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                       platform=FLAGS.platform, num_cpu_devices=FLAGS.num_cpu_devices)
  res = lrm_task.train(FLAGS.config, FLAGS.workdir)
  print(f"done: step {res.step} ({res.stop_reason}), {res.wall_s:.0f}s, workdir {FLAGS.workdir}")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
