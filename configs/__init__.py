"""The run configs: `get_config(arg)` files, one per thing, `arg` the variant (docs/design.md §3).

In a checkout they are the top-level configs/ folder; the package carries them as
`instant3d_jax.configs` (instant3d_jax/configs links here, and an installed wheel holds the files
there), so `from instant3d_jax.configs import lrm` and `path('lrm.py:tiny')` work both from a
checkout and from an install outside it.
"""
from __future__ import annotations

import os

DIR = os.path.dirname(os.path.abspath(__file__))


def path(spec: str) -> str:
  """'lrm.py:tiny' → '<this folder>/lrm.py:tiny': a `--config` value that works from any
  folder."""
  return os.path.join(DIR, spec)


def resolve(value: str) -> str:
  """A `--config` value as typed: 'configs/X.py[:V]' that does not exist relative to the working
  folder (an installed package run from elsewhere) names the packaged file; anything else is
  returned as it is."""
  file, sep, variant = value.partition(":")
  parts = file.replace(os.sep, "/").split("/")
  if len(parts) == 2 and parts[0] == "configs" and not os.path.exists(file):
    packaged = os.path.join(DIR, parts[1])
    if os.path.exists(packaged):
      return packaged + sep + variant
  return value
