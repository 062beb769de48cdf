"""The main job (`make demo`): procedural world → train the tiny reconstructor → evaluate →
turntable.

  python -m instant3d_jax.demo [--workdir outputs/demo] [--config configs/lrm.py:tiny]
      [--config.train.total_steps=N] [--config.train.time_budget_s=S] [--retrain]

1. Data: generates the demo data set (the `data` section of the LRM config, i.e.
   configs/data.py:demo) under WORKDIR/data unless it is already there (cached: a complete data
   set with the same generation config is reused; generation is outside the training clock),
   and writes a contact sheet of one held-out object to WORKDIR/contact_sheet.png.
2. Train: `train_lrm` on this machine's CPU cores (one XLA CPU device per core, data-parallel,
   unless XLA_FLAGS sets the device count) for `train.total_steps` steps into WORKDIR/lrm: a
   fixed step count, so two runs give bit-identical parameters whatever the machine's speed
   (`train.time_budget_s`, off by default, adds a wall-clock limit: the run then depends on the
   machine). A finished run (WORKDIR/lrm/train_summary.json) is reused unless --retrain.
3. Evaluate: PSNR / SSIM / LPIPS on `eval.num_objects` held-out objects on the GSO-style rig
   (instant3d_jax/eval/protocol.py), on the `val` split → WORKDIR/lrm/eval/val_step_N/eval.{json,md}
   and on the `test` split → WORKDIR/lrm/eval/test_step_N/, the latter through the test ledger
   (bench/results/test_ledger.jsonl gains a line unless these parameters were scored before;
   `--noscore_test` for tuning runs that must not look at test).
4. Reconstruct one val object from its 4 rig views with `reconstruct` → turntable GIF, renders
   and mesh in WORKDIR/reconstruct.
5. WORKDIR/results.json: command, commit, config and parameter hashes, machine, load, wall times,
   val and test metrics with their baselines (instant3d_jax/eval/results.py); `python -m
   bench.report` turns committed copies into the README's table.
Prints where everything is. The steps are instant3d_jax/demos/lrm.py; this module holds flags
and `main` only.
"""
from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from instant3d_jax import cli, configs
from instant3d_jax.demos import lrm as lrm_demo

_WORKDIR = flags.DEFINE_string("workdir", "outputs/demo", "where data and outputs go")
_CONFIG = config_flags.DEFINE_config_file(
    "config", configs.path("lrm.py:tiny"), "the reconstructor run (configs/lrm.py:VARIANT); "
    "its `data` section is the procedural world (configs/data.py:demo for tiny)",
    lock_config=False)
_RETRAIN = flags.DEFINE_bool("retrain", False, "train again even if WORKDIR/lrm holds a "
                             "finished run (a new run needs an empty WORKDIR/lrm)")
_SKIP_TRAIN = flags.DEFINE_bool("data_only", False, "stop after the data set and contact sheet")
_SCORE_TEST = flags.DEFINE_bool("score_test", True, "also score the test split (through the "
                                "test ledger); --noscore_test for tuning runs: val only")


def main(argv):
  del argv
  lrm_demo.run(_CONFIG.value, _WORKDIR.value, retrain=_RETRAIN.value, data_only=_SKIP_TRAIN.value,
               score_test=_SCORE_TEST.value)


if __name__ == "__main__":
  cli.run(main)
