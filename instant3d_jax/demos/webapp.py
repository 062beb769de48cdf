"""The local web app (the command instant3d_jax/app.py, whose docstring is the user's guide):
prompt, seed, steps, guidance → the four-view grid, a turntable video and an interactive 3D view of
the mesh with a GLB download, served by gradio.

`serve(cfg, ...)` checks its arguments, loads both stages once, generates the example and serves
the page until the process ends. Nothing is fetched: gradio's analytics and the hub are switched
off (environment defaults set before gradio loads), there is no share link and the theme uses
system fonts.
"""
from __future__ import annotations

import os


def serve(cfg, *, host: str = "127.0.0.1", port: int = 7860, workdir: str | None = None,
          example_prompt: str = "a red cube", display_size: int = 512) -> None:
  """Serves the app for the text-to-3D config `cfg` (configs/instant3d.py) on host:port; each
  result goes to `workdir`/NNNN/ (default: a temporary folder) in the `text_to_3d` layout. The
  arguments are the command's flags of the same names (their messages name them so)."""
  # Before gradio (and huggingface_hub) load: no analytics, no requests to the hub.
  os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  import tempfile
  import threading
  from instant3d_jax import errors
  from instant3d_jax import fileio
  from instant3d_jax import pipeline
  from instant3d_jax.export import images as images_lib
  # Cheap checks first: a wrong weights path or flag fails before gradio and the weights load.
  pipeline.stage1_kind(cfg.stage1.weights, cfg.stage1.single_file_config_folder)
  pipeline.check_stage2_path(cfg.stage2.weights)
  if not 0 <= port <= 65535:
    raise errors.ConfigError(f"--port must be in [0, 65535], got {port}")
  if display_size < 1:
    raise errors.ConfigError(f"--display_size must be >= 1, got {display_size}")
  if workdir and fileio.path(workdir).is_file():
    raise errors.ConfigError(f"--workdir {workdir}: is a file, not a directory")
  try:
    import gradio as gr
  except ImportError as e:
    raise errors.ConfigError("the web app needs gradio: pip install --no-deps -r "
                             "requirements-app.txt (or `make install-dev`)") from e
  import jax
  import numpy as np
  cfg.batch_size = 1  # one request at a time, on one device
  pipe = pipeline.TextTo3D.load(cfg, devices=jax.devices()[:1])
  workdir = fileio.makedirs(workdir or tempfile.mkdtemp(prefix="instant3d_app_"))
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
    scale = max(1, int(display_size) // r.grid.shape[0])
    shown = np.repeat(np.repeat(images_lib.to_uint8(r.grid), scale, 0), scale, 1)
    grid_png = images_lib.save_png(out / "grid_display.png", shown)
    glb = str(out / "mesh.glb") if (out / "mesh.glb").is_file() else None
    print(f"{out.name}: {prompt!r} seed {int(seed)}, {int(steps)} steps, CFG {guidance:g}",
          flush=True)
    return str(grid_png), str(out / "turntable.mp4"), glb, glb

  example = None
  if example_prompt:
    example = generate(example_prompt, cfg.seed, smp.num_steps, smp.guidance_scale)

  with gr.Blocks(title="Instant3D: text to 3D", analytics_enabled=False) as demo:
    gr.Markdown("# Instant3D: text to 3D\nA prompt → four views (stage 1) → a triplane NeRF "
                "(stage 2) → turntable and mesh. Weights: "
                f"`{fileio.display(cfg.stage1.weights)}` and "
                f"`{fileio.display(cfg.stage2.weights)}`.")
    with gr.Row():
      with gr.Column(scale=1):
        prompt = gr.Textbox(label="Prompt", value=example_prompt or "")
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
  demo.launch(server_name=host, server_port=port, share=False, ssr_mode=False,
              theme=theme, allowed_paths=[str(workdir)], show_error=True)
