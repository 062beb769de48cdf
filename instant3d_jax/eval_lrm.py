"""Held-out evaluation of a trained reconstructor (protocol: instant3d_jax/eval/protocol.py).

    python -m instant3d_jax.eval_lrm --workdir outputs/lrm_tiny [--config configs/lrm.py:tiny]
        [--checkpoint PATH] [--num_objects N] [--out DIR] [--split val|test]

Reads the checkpoint (`--checkpoint`, default the workdir's latest step; also a step directory
or an exported .safetensors), evaluates PSNR / SSIM / LPIPS on `eval.num_objects` held-out
objects of the run's data set (`data.source`: the procedural world, generated into `data_dir` if
absent, or an existing records data set such as imported renders, whose `eval.split` must hold
the GSO-style rig views) and writes `eval.json` (summary + per-object values) and `eval.md` (the
table) into `--out` (default `WORKDIR/eval/step_<N>`). Without `--config` the config saved with
the checkpoint is used; with it, its `eval`/`data` sections and `data_dir` override (the model
must match the checkpoint). `--split test` is scored through the test ledger (a parameter hash
already scored there gets its recorded result back; the table says how many configurations have
been scored on that test set). The work is `instant3d_jax/eval/lrm_eval.py:evaluate_checkpoint`.
"""
from __future__ import annotations

from instant3d_jax import cli, errors


def _define_flags():
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "configs/lrm.py:VARIANT (optional override)",
                                  lock_config=False)
  flags.DEFINE_string("workdir", None, "training workdir")
  flags.DEFINE_string("checkpoint", None, "workdir / step dir / .safetensors (default: --workdir)")
  flags.DEFINE_integer("num_objects", None, "held-out objects (default: config eval.num_objects)")
  flags.DEFINE_string("out", None, "output directory (default WORKDIR/eval/step_<N>)")
  flags.DEFINE_enum("split", None, ["val", "test"], "split to score (default: config "
                    "eval.split, 'val'); 'test' is counted in the test ledger "
                    "(bench/results/test_ledger.jsonl) and a repeat returns the recorded result")


def main(argv):
  del argv
  from absl import flags
  from instant3d_jax.eval import lrm_eval
  FLAGS = flags.FLAGS
  ckpt = FLAGS.checkpoint or FLAGS.workdir
  if not ckpt:
    raise errors.ConfigError("give --workdir or --checkpoint (the run to evaluate)")
  # Cheap checks first: a typo fails before the checkpoint loads.
  cli.check_path("checkpoint" if FLAGS.checkpoint else "workdir", ckpt,
                 what="a training workdir, a step directory or an exported .safetensors")
  if FLAGS.num_objects is not None and FLAGS.num_objects < 1:
    raise errors.ConfigError(f"--num_objects must be >= 1, got {FLAGS.num_objects}")
  if FLAGS.config is not None:
    # The override's data set: an existing one ('records') is opened and checked now; the
    # procedural world is generated (or found) after the checkpoint loads.
    if str(FLAGS.config.data.get("source", "procedural")) == "records":
      from data_pipeline import datasets
      datasets.check_eval(datasets.prepare(FLAGS.config, progress=False), FLAGS.config)
  lrm_eval.evaluate_checkpoint(ckpt, config=FLAGS.config, num_objects=FLAGS.num_objects,
                               out=FLAGS.out, split=FLAGS.split)


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
