"""What every command shares: an absl app whose project errors print as one line.

    if __name__ == "__main__":
      _define_flags()
      cli.run(main)

`run` starts `absl.app.run(main)`; an `Instant3DError` (DataError, ConfigMismatchError,
CheckpointError, InputError, NonFiniteError, …) raised by `main` is printed to stderr as
`error: <message on one line>` and the process exits with the error's `exit_code` (2 unless the
class says otherwise), without a traceback. Other exceptions are bugs and keep theirs.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence

from instant3d_jax import errors


def guarded(main: Callable[[Sequence[str]], object]) -> Callable[[Sequence[str]], object]:
  """`main` with project errors turned into one stderr line and a non-zero exit."""

  def wrapped(argv):
    try:
      return main(argv)
    except errors.Instant3DError as e:
      print(f"error: {errors.one_line(e)}", file=sys.stderr)
      sys.exit(getattr(e, "exit_code", 2))

  wrapped.__name__ = getattr(main, "__name__", "main")
  wrapped.__doc__ = main.__doc__
  return wrapped


_HELP_FLAGS = ("--help", "-help", "--helpshort", "-helpshort", "--helpfull", "-helpfull", "-?",
               "--helpxml", "-helpxml")


def run(main: Callable[[Sequence[str]], object], argv: Sequence[str] | None = None) -> None:
  """`absl.app.run(main)` with project errors as one line (see module docstring).

  absl prints the usage for `--help` and then exits 1; a help request is not a failure, so it
  exits 0 here (a flag error still exits 1).
  """
  from absl import app
  args = list(sys.argv if argv is None else argv)
  words = args[1:args.index("--")] if "--" in args[1:] else args[1:]
  try:
    app.run(guarded(main), argv=argv)
  except SystemExit as e:
    if e.code == 1 and any(w.split("=", 1)[0] in _HELP_FLAGS for w in words):
      sys.exit(0)
    raise


def define_train_flags(config_hint: str) -> None:
  """The flags every trainer command takes: `--config` (`config_hint`, e.g. 'configs/lrm.py:VARIANT'),
  `--workdir` and the multi-process ones (launch/README.md)."""
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, config_hint, lock_config=False)
  flags.DEFINE_string("workdir", None, "output directory (checkpoints, logs, images)")
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process)")
  flags.DEFINE_integer("num_processes", None, "number of processes (multi-process)")
  flags.DEFINE_integer("process_id", None, "this process's index (multi-process)")
  flags.DEFINE_string("platform", None, "'cpu' selects gloo collectives for CPU processes")
  flags.DEFINE_integer("num_cpu_devices", None, "CPU devices per process (CPU runs)")
  flags.mark_flags_as_required(["config", "workdir"])


def train_main(train: Callable[[object, str], object]) -> None:
  """Body of a trainer command's `main`: joins the processes, then `train(config, workdir)`."""
  from absl import flags
  from instant3d_jax.train import multihost
  FLAGS = flags.FLAGS
  multihost.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                       platform=FLAGS.platform, num_cpu_devices=FLAGS.num_cpu_devices)
  res = train(FLAGS.config, FLAGS.workdir)
  print(f"done: step {res.step} ({res.stop_reason}), {res.wall_s:.0f}s, workdir {FLAGS.workdir}")
