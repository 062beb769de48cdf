"""Local web app: prompt, seed, steps, guidance → the four-view grid, a turntable video and an
interactive 3D view of the mesh with a GLB download (gradio; the demo interface of OpenLRM,
InstantMesh and TripoSR).

  python -m instant3d_jax.app --config configs/instant3d.py:tiny [--host 127.0.0.1 --port 7860]
      [--workdir DIR] [--example_prompt "a red cube"]

Needs the optional dependency group `requirements-app.txt` (`make install-dev`). Binds 127.0.0.1
by default; nothing is fetched (analytics off, no share link, system fonts; the page's own
scripts and styles come from the installed gradio). Both stages load once at start (weights from
the config, a missing one is a one-line error); requests run one at a time on one device. At
start the app generates `--example_prompt` ('' skips it) so the page opens with a result and
the first request finds everything compiled. Each result is written to `WORKDIR/NNNN/` in the
layout of the `text_to_3d` command (instant3d_jax/pipeline.py `write_result`). The API name of the
generation is `/generate` (gradio_client: `Client(url).predict(prompt, seed, steps, guidance,
api_name="/generate")` → grid PNG, turntable MP4, GLB, GLB). The app itself is
instant3d_jax/demos/webapp.py; this module holds flags and `main` only.
"""
from __future__ import annotations

from typing import Sequence

from instant3d_jax import cli, configs


def _define_flags():
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", configs.path("instant3d.py:tiny"),
                                  "configs/instant3d.py:VARIANT", lock_config=False)
  flags.DEFINE_string("host", "127.0.0.1", "address to bind (127.0.0.1: this machine only)")
  flags.DEFINE_integer("port", 7860, "port")
  flags.DEFINE_string("workdir", None, "where results are written (default: a temporary folder)")
  flags.DEFINE_string("example_prompt", "a red cube", "generated at start and shown on load "
                      "('' = none)")
  flags.DEFINE_integer("display_size", 512, "grid display side in pixels (nearest-neighbour)")


def main(argv: Sequence[str]) -> None:
  from absl import app, flags
  from instant3d_jax.demos import webapp
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {list(argv[1:])}")
  FLAGS = flags.FLAGS
  webapp.serve(FLAGS.config, host=FLAGS.host, port=FLAGS.port, workdir=FLAGS.workdir,
               example_prompt=FLAGS.example_prompt, display_size=FLAGS.display_size)


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
