"""What every command shares: an absl app that says one thing.

    if __name__ == "__main__":
      _define_flags()
      cli.run(main)

`run` starts `absl.app.run(main)` and adds three things:

* Errors: an `Instant3DError` (DataError, ConfigMismatchError, CheckpointError, InputError,
  NonFiniteError, …) raised by `main` is printed to stderr as `error: <message on one line>` and
  the process exits with the error's `exit_code` (2 unless the class says otherwise), without a
  traceback. Other exceptions are bugs and keep theirs. Commands check their file and flag inputs
  before they load weights or data (`check_path` for paths named by flags), so a typo costs
  nothing.
* Logging: the libraries' Python logging (absl, orbax, grain, jax) shows warnings and errors
  only. `--verbosity=0` (`-v 0`; 1 for debug) or the environment variable
  `INSTANT3D_VERBOSITY` (same values, or debug/info/warning/error) brings their INFO lines back.
  Progress bars and the commands' own printed lines are not logging and always show.
* Platforms: where no TPU is attached, JAX is kept off its TPU backend (`JAX_PLATFORMS` set to
  the GPU platforms present plus `cpu`), so a CPU or GPU run never initialises libtpu although
  the dev install brings it (for bench/tpu_plan.py, which loads it on purpose): no libtpu
  start-up complaints and no "libtpu multi-process lockfile" message when another JAX process
  runs. A TPU is attached when `/dev/accel*` or `/dev/vfio/<N>` exists or a Google TPU sits on
  the PCI bus. An explicit `JAX_PLATFORMS` (even empty: JAX's own choice) or `jax_platforms`
  setting is left alone.
"""
from __future__ import annotations

import glob
import os
import sys
from typing import Callable, Sequence

from instant3d_jax import errors

# Environment variable: the libraries' log verbosity when `--verbosity` is not given (absl levels:
# -1 warning, 0 info, 1 debug, or the names debug/info/warning/error).
VERBOSITY_ENV = "INSTANT3D_VERBOSITY"

# Device files of an attached TPU: /dev/accel<N> (TPU v2–v5e VMs), /dev/vfio/<N> (v5p, v6e, …).
_TPU_DEVICE_GLOBS = ("/dev/accel*", "/dev/vfio/[0-9]*")
# PCI vendor and device ids of Google TPUs (the list jax/_src/hardware_utils.py reads).
_GOOGLE_PCI_VENDOR = "0x1ae0"
_TPU_PCI_DEVICES = ("0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076")
# GPU platforms: (JAX platform, device files that show its hardware); a JAX plugin whose name
# holds the platform's name (xla_cuda12, jax-cuda12-plugin, xla_rocm7, …) brings its backend.
_GPU_PLATFORMS = (("cuda", ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg")),
                  ("rocm", ("/dev/kfd",)))


def tpu_attached() -> bool:
  """True when this machine has a TPU: its device files or a TPU on the PCI bus."""
  if any(glob.glob(g) for g in _TPU_DEVICE_GLOBS):
    return True
  for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
    try:
      with open(vendor) as f:
        if f.read().strip() != _GOOGLE_PCI_VENDOR:
          continue
      with open(os.path.join(os.path.dirname(vendor), "device")) as f:
        if f.read().strip() in _TPU_PCI_DEVICES:
          return True
    except OSError:
      continue
  return False


def jax_plugins() -> list[str]:
  """Names of the installed JAX plugins: the `jax_plugins` entry points and the modules of the
  `jax_plugins` namespace package (the two ways JAX discovers them)."""
  import importlib.util
  import pkgutil
  from importlib import metadata
  names = [ep.name for ep in metadata.entry_points(group="jax_plugins")]
  spec = importlib.util.find_spec("jax_plugins")
  if spec is not None and spec.submodule_search_locations:
    names += [m.name for m in pkgutil.iter_modules(spec.submodule_search_locations)]
  return sorted(set(names))


def platforms_without_tpu(plugins: Sequence[str]) -> list[str] | None:
  """The JAX platforms to use without a TPU: each GPU platform whose plugin is among `plugins`
  and whose device files exist, then 'cpu'; None when a plugin of another kind is installed
  (JAX decides then)."""
  platforms = []
  for plugin in plugins:
    kind = next((name for name, _ in _GPU_PLATFORMS if name in plugin.lower()), None)
    if kind is None:
      return None
    files = dict(_GPU_PLATFORMS)[kind]
    if kind not in platforms and any(os.path.exists(f) for f in files):
      platforms.append(kind)
  return platforms + ["cpu"]


def select_platforms() -> str | None:
  """Keeps JAX off its TPU backend where no TPU is attached (module docstring); returns the
  platforms set, or None where the choice is left to JAX (a TPU is attached, the user chose, or
  a JAX plugin of an unknown kind is installed). Must run before JAX initialises a backend."""
  if "JAX_PLATFORMS" in os.environ:
    return None
  jax = sys.modules.get("jax")
  if jax is not None and jax.config.jax_platforms:
    return None
  if tpu_attached():
    return None
  platforms = platforms_without_tpu(jax_plugins())
  if platforms is None:
    return None
  value = ",".join(platforms)
  os.environ["JAX_PLATFORMS"] = value  # also for the processes a command starts
  if jax is not None:
    jax.config.update("jax_platforms", value)
  return value


def quiet_logging() -> None:
  """Library logging at warnings unless `--verbosity` or `INSTANT3D_VERBOSITY` asks for more
  (module docstring). Runs after the flags are parsed (absl sets INFO there)."""
  from absl import flags, logging
  if flags.FLAGS["verbosity"].present:
    return
  level = os.environ.get(VERBOSITY_ENV, "").strip()
  try:
    logging.set_verbosity(level or logging.WARNING)
  except ValueError as e:
    raise errors.ConfigError(f"{VERBOSITY_ENV}={level!r}: expected an absl verbosity (-1 "
                             f"warning, 0 info, 1 debug) or debug/info/warning/error") from e


def check_path(flag: str, value, *, kind: str = "any", what: str = "") -> None:
  """Raises `errors.ConfigError` naming `--flag` when the path `value` (local or gs://) is not
  there; `kind` 'file' or 'dir' also checks what it is. `what` says what was expected. `None`
  or '' passes (a flag not given is the caller's business). For the checks a command makes
  before it loads weights or data."""
  if not value:
    return
  from instant3d_jax import fileio
  p = fileio.path(value)
  expected = f"; expected {what}" if what else ""
  if not p.exists():
    raise errors.ConfigError(f"--{flag} {value}: no such file or directory{expected}")
  if kind == "file" and not p.is_file():
    raise errors.ConfigError(f"--{flag} {value}: is a directory, not a file{expected}")
  if kind == "dir" and not p.is_dir():
    raise errors.ConfigError(f"--{flag} {value}: is a file, not a directory{expected}")


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
  """`absl.app.run(main)` with project errors as one line, quiet library logging and no TPU
  probing without a TPU (see module docstring).

  absl prints the usage for `--help` and then exits 1; a help request is not a failure, so it
  exits 0 here (a flag error still exits 1).
  """
  from absl import app
  args = config_args(list(sys.argv if argv is None else argv))
  words = args[1:args.index("--")] if "--" in args[1:] else args[1:]
  select_platforms()

  def quiet_main(argv):
    quiet_logging()
    return main(argv)

  quiet_main.__name__ = getattr(main, "__name__", "main")
  quiet_main.__doc__ = main.__doc__
  try:
    app.run(guarded(quiet_main), argv=args)
  except SystemExit as e:
    if e.code == 1 and any(w.split("=", 1)[0] in _HELP_FLAGS for w in words):
      sys.exit(0)
    raise


def config_args(args: list[str]) -> list[str]:
  """`args` with each `--config` value resolved by `configs.resolve`: 'configs/X.py:V' names the
  packaged file when the command runs outside a checkout (an installed package)."""
  from instant3d_jax import configs
  out = list(args)
  end = out.index("--") if "--" in out else len(out)
  for i in range(1, end):
    if out[i].startswith("--config="):
      out[i] = "--config=" + configs.resolve(out[i][len("--config="):])
    elif out[i] == "--config" and i + 1 < end:
      out[i + 1] = configs.resolve(out[i + 1])
  return out


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
