"""Consolidates a training checkpoint into one safetensors file with its config embedded.

    python -m instant3d_jax.export --checkpoint PATH --out model.safetensors

`PATH`: a training workdir (latest complete step), its `checkpoints/` directory, one step
directory or an exported `.safetensors`, local or `gs://…` (`convert.checkpoints.load`). Parameters
are gathered to the host (any mesh, any device count) and written fp32 in the documented key
layout of `convert/lrm.py`, with the run config and the step as metadata, so
`reconstruct --checkpoint model.safetensors` needs nothing else. `--out` may be local or
`gs://…`; the file appears complete or not at all.
"""
from __future__ import annotations

from absl import flags

from instant3d_jax import cli

FLAGS = flags.FLAGS


def _define_flags() -> None:
  # Defined only when run as a command, so importing this module defines no flags.
  flags.DEFINE_string("checkpoint", None, "training workdir, checkpoints/ dir, step dir or "
                      ".safetensors (local or gs://)")
  flags.DEFINE_string("out", None, "output .safetensors file (local or gs://)")
  flags.mark_flags_as_required(["checkpoint", "out"])


def main(argv) -> None:
  del argv
  from instant3d_jax.convert import checkpoints
  out, step, n = checkpoints.export_safetensors(FLAGS.checkpoint, FLAGS.out)
  print(f"wrote {out} ({n / 1e6:.3f}M parameters, step {step})")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
