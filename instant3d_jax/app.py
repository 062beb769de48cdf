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
layout of the `generate` command (instant3d_jax/pipeline.py `write_result`). The API name of the
generation is `/generate` (gradio_client: `Client(url).predict(prompt, seed, steps, guidance,
api_name="/generate")` → grid PNG, turntable MP4, GLB, GLB).
"""
from __future__ import annotations

import os
from typing import Sequence

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from instant3d_jax import cli, configs  # noqa: E402


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
  import tempfile
  import threading
  from absl import app, flags
  from instant3d_jax import errors
  from instant3d_jax import fileio
  from instant3d_jax import pipeline
  from instant3d_jax.export import images as images_lib
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {list(argv[1:])}")
  FLAGS = flags.FLAGS
  cfg = FLAGS.config
  # Cheap checks first: a wrong weights path or flag fails before gradio and the weights load.
  pipeline.stage1_kind(cfg.stage1.weights, cfg.stage1.single_file_config_folder)
  pipeline.check_stage2_path(cfg.stage2.weights)
  if not 0 <= FLAGS.port <= 65535:
    raise errors.ConfigError(f"--port must be in [0, 65535], got {FLAGS.port}")
  if FLAGS.display_size < 1:
    raise errors.ConfigError(f"--display_size must be >= 1, got {FLAGS.display_size}")
  if FLAGS.workdir and fileio.path(FLAGS.workdir).is_file():
    raise errors.ConfigError(f"--workdir {FLAGS.workdir}: is a file, not a directory")
  try:
    import gradio as gr
  except ImportError as e:
    raise errors.ConfigError("the web app needs gradio: pip install --no-deps -r "
                             "requirements-app.txt (or `make install-dev`)") from e
  import jax
  import numpy as np
  cfg.batch_size = 1  # one request at a time, on one device
  pipe = pipeline.TextTo3D.load(cfg, devices=jax.devices()[:1])
  workdir = fileio.makedirs(FLAGS.workdir or tempfile.mkdtemp(prefix="instant3d_app_"))
  counter = [len([p for p in workdir.iterdir() if p.name.isdigit()])]
  lock = threading.Lock()
  smp = pipe.sampler

  def generate(prompt: str, seed: float, steps: float, guidance: float):
    prompt = str(prompt or "").strip()
    if not prompt:
      raise gr.Error("enter a prompt")
    if int(steps) < 1:
      raise gr.Error(f"steps must be >= 1, got {steps}")
    with lock:
      (r,) = pipe([prompt], jax.random.PRNGKey(int(seed)), num_steps=int(steps),
                  guidance_scale=float(guidance), with_mesh=True)
      out = workdir / f"{counter[0]:04d}"
      counter[0] += 1
      pipeline.write_result(pipe, r, out)
    scale = max(1, int(FLAGS.display_size) // r.grid.shape[0])
    shown = np.repeat(np.repeat(images_lib.to_uint8(r.grid), scale, 0), scale, 1)
    grid_png = images_lib.save_png(out / "grid_display.png", shown)
    glb = str(out / "mesh.glb") if (out / "mesh.glb").is_file() else None
    print(f"{out.name}: {prompt!r} seed {int(seed)}, {int(steps)} steps, CFG {guidance:g}",
          flush=True)
    return str(grid_png), str(out / "turntable.mp4"), glb, glb

  example = None
  if FLAGS.example_prompt:
    example = generate(FLAGS.example_prompt, cfg.seed, smp.num_steps, smp.guidance_scale)

  with gr.Blocks(title="Instant3D: text to 3D", analytics_enabled=False) as demo:
    gr.Markdown("# Instant3D: text to 3D\nA prompt → four views (stage 1) → a triplane NeRF "
                "(stage 2) → turntable and mesh. Weights: "
                f"`{fileio.display(cfg.stage1.weights)}` and "
                f"`{fileio.display(cfg.stage2.weights)}`.")
    with gr.Row():
      with gr.Column(scale=1):
        prompt = gr.Textbox(label="Prompt", value=FLAGS.example_prompt or "")
        seed = gr.Number(label="Seed", value=int(cfg.seed), precision=0)
        steps = gr.Slider(1, max(200, smp.num_steps), value=smp.num_steps, step=1,
                          label="Denoising steps")
        guidance = gr.Slider(0.0, 15.0, value=smp.guidance_scale, step=0.5,
                             label="Guidance scale (CFG)")
        button = gr.Button("Generate", variant="primary")
      with gr.Column(scale=2):
        grid = gr.Image(label="Four views (2×2 grid)", type="filepath", format="png",
                        value=example[0] if example else None, elem_id="grid")
        video = gr.Video(label="Turntable", value=example[1] if example else None,
                         autoplay=True, loop=True, height=384)
    with gr.Row():
      model = gr.Model3D(label="Mesh (GLB)", value=example[2] if example else None)
      download = gr.File(label="Download GLB", value=example[3] if example else None)
    button.click(generate, [prompt, seed, steps, guidance], [grid, video, model, download],
                 api_name="generate")
  # System fonts: the default theme would ask Google Fonts for its typefaces.
  font = ["ui-sans-serif", "system-ui", "sans-serif"]
  theme = gr.themes.Default(font=font, font_mono=["ui-monospace", "monospace"])
  demo.queue(default_concurrency_limit=1)
  demo.launch(server_name=FLAGS.host, server_port=FLAGS.port, share=False, ssr_mode=False,
              theme=theme, allowed_paths=[str(workdir)], show_error=True)


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
