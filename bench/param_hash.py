"""Parameter hashes of checkpoints, and content hashes of output files, for bit-identity checks.

    python -m bench.param_hash CHECKPOINT [CHECKPOINT ...] [--item ema] [--files 'OUT/*/grid.npy']

A checkpoint is any form `instant3d_jax.convert.checkpoints.load` accepts (a workdir, a step
directory, an exported .safetensors). Prints one line per checkpoint: the parameter hash
(`checkpoint.params_sha256`: sha256 over keypath, dtype, shape and bytes of every leaf, sorted by
keypath), the step, the number of leaves. `--files` hashes the matched files' bytes in sorted path
order (relative paths included), e.g. the grids of a text-to-3D run.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import os
import sys

import jax


def files_sha256(pattern: str) -> tuple[str, int]:
  paths = sorted(glob.glob(pattern, recursive=True))
  root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0]) if paths else ""
  h = hashlib.sha256()
  for p in paths:
    h.update(os.path.relpath(p, root).encode() + b"\0")
    with open(p, "rb") as f:
      h.update(f.read())
  return h.hexdigest(), len(paths)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("checkpoints", nargs="*")
  ap.add_argument("--item", default="params", help="params, or ema (stage-1 runs)")
  ap.add_argument("--files", action="append", default=[], help="glob of output files to hash")
  args = ap.parse_args(argv)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # reading checkpoints needs no accelerator
  from instant3d_jax.base import checkpoint as ckpt_lib
  from instant3d_jax.convert import checkpoints
  for c in args.checkpoints:
    _, params, step = checkpoints.load(c, item=args.item)
    n = len(jax.tree_util.tree_leaves(params))
    print(f"{ckpt_lib.params_sha256(params)}  {c} ({args.item}, step {step}, {n} leaves)")
  for pattern in args.files:
    digest, n = files_sha256(pattern)
    print(f"{digest}  {pattern} ({n} files)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
