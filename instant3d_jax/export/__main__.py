"""Consolidates a training checkpoint into one safetensors file with its config embedded.

    python -m instant3d_jax.export --checkpoint PATH --out model.safetensors

`PATH`: a training workdir (latest complete step), its `checkpoints/` directory or one step
directory. Parameters are gathered to the host (any mesh, any device count), written fp32 in the
documented key layout of `convert/lrm.py` (temp name, then rename), with the run config as JSON
metadata, so `reconstruct --checkpoint model.safetensors` needs nothing else.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog="python -m instant3d_jax.export", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--checkpoint", required=True, help="workdir, checkpoints/ dir or step dir")
  ap.add_argument("--out", required=True, help="output .safetensors file")
  args = ap.parse_args(argv)
  out = Path(args.out)
  if out.suffix != ".safetensors":
    print(f"error: --out must end in .safetensors, got {str(out)!r}", file=sys.stderr)
    return 2
  from instant3d_jax.convert import lrm as convert_lrm
  from instant3d_jax.train import checkpoint as ckpt_lib
  try:
    config, params, step = ckpt_lib.load_params(args.checkpoint)
  except FileNotFoundError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  import ml_collections
  out.parent.mkdir(parents=True, exist_ok=True)
  convert_lrm.save_lrm(out, params, ml_collections.ConfigDict(config))
  n = sum(int(v.size) for v in __import__("jax").tree.leaves(params))
  print(f"wrote {out} ({n / 1e6:.3f}M parameters, step {step})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
