"""The project's errors: bad input a user can fix (a file, a flag, a config value).

Every error the library raises for bad input derives from `Instant3DError` (and from the builtin
it refines, e.g. `ValueError`, so existing `except ValueError` callers keep working). Commands
started through `instant3d_jax.cli.run` print such an error as one line, `error: <message>`,
and exit with its `exit_code`; anything else is a bug and keeps its traceback.

This module is the one home of every user-facing error class (tests/test_errors.py checks the
tree): modules raise `errors.X` or import the class from here. The modules that used to define
one import it under the same name, so older paths (`records.DataError`,
`safetensors_io.WeightsError`, `reconstruction.InputError`, …) keep working. It imports nothing
of the project, so any module can import it.

Messages name the input, what was expected and what was found (docs/design.md §3, Errors).
"""
from __future__ import annotations


class Instant3DError(Exception):
  """Base of the project's user-facing errors."""
  exit_code = 2


class ConfigError(Instant3DError, ValueError):
  """A config value or flag is invalid or inconsistent with the data / checkpoint."""


class CheckpointError(Instant3DError, FileNotFoundError):
  """A checkpoint path is missing, incomplete or of an unknown form."""


class ConfigMismatchError(Instant3DError, ValueError):
  """The workdir holds a run with a different config; nothing was written."""


class InputError(Instant3DError, ValueError):
  """Bad user input (images, cameras, flags, a generated-output folder, a caption); the message
  names the input."""


class DataError(Instant3DError, ValueError):
  """Bad data on disk or bad input files; the message names the file and the problem."""


class WeightsError(Instant3DError, ValueError):
  """A weights file or folder is missing, malformed, or does not match the model."""


class RenderFailure(DataError):
  """One asset could not be rendered (data_pipeline/blender_render.py): `stage` (load, render,
  output, check, timeout) and a one-line `reason`; the render command records it and goes on."""

  def __init__(self, stage: str, reason: str):
    super().__init__(f"{stage}: {reason}")
    self.stage, self.reason = stage, reason


class NonFiniteError(Instant3DError, RuntimeError):
  """Too many non-finite losses / gradients in a row."""
  exit_code = 3


class PlanError(ConfigError):
  """Bad input to the TPU planner (bench/tpu_plan.py): names what was expected and what was
  found."""


def one_line(error: BaseException) -> str:
  """The error's message on one line (multi-line details joined with '; ')."""
  text = str(error).strip() or type(error).__name__
  parts = [p.strip() for p in text.splitlines() if p.strip()]
  return "; ".join(parts)
