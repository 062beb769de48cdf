"""The project's error base: bad input a user can fix (a file, a flag, a config value).

Every error the library raises for bad input derives from `Instant3DError` (and from the builtin
it refines, e.g. `ValueError`, so existing `except ValueError` callers keep working). Commands
started through `instant3d_jax.cli.run` print such an error as one line, `error: <message>`,
and exit with its `exit_code`; anything else is a bug and keeps its traceback.

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


def one_line(error: BaseException) -> str:
  """The error's message on one line (multi-line details joined with '; ')."""
  text = str(error).strip() or type(error).__name__
  parts = [p.strip() for p in text.splitlines() if p.strip()]
  return "; ".join(parts)
