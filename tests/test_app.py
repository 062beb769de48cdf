"""The web app (instant3d_jax/app.py) as a user meets it: started on a free local port with tiny
random weights (tests/test_pipeline.py's fixture), one generation driven through gradio_client,
then the page loaded in headless Chromium and the screenshot checked for the example grid the
page shows on load (its colours; the 3D view is not relied on: WebGL may draw nothing under
headless software rendering)."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_pipeline import text3d_weights  # noqa: F401  (the session fixture)

pytest.importorskip("gradio", reason="the web app's optional dependencies are not installed "
                    "(pip install --no-deps -r requirements-app.txt)")
gradio_client = pytest.importorskip("gradio_client")

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_server(text3d_weights, tmp_path_factory):  # noqa: F811
  s1, s2 = text3d_weights
  port = _free_port()
  workdir = tmp_path_factory.mktemp("app")
  log = open(workdir / "app.log", "w")
  env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS="--xla_force_host_platform_device_count=1",
             GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", no_proxy="127.0.0.1,localhost")
  proc = subprocess.Popen(
      [sys.executable, "-m", "instant3d_jax.app", "--config",
       str(ROOT / "configs" / "instant3d.py") + ":tiny", f"--config.stage1.weights={s1}",
       f"--config.stage2.weights={s2}", "--config.stage1.sample.num_steps=2",
       "--config.export.turntable_frames=4", "--config.export.mesh_resolution=16",
       "--port", str(port), "--workdir", str(workdir / "results")],
      cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
  url = f"http://127.0.0.1:{port}/"
  deadline = time.time() + 240
  while True:
    if proc.poll() is not None:
      raise AssertionError(f"the app exited ({proc.returncode}): "
                           + (workdir / "app.log").read_text()[-3000:])
    try:
      urllib.request.urlopen(url, timeout=2).read()
      break
    except OSError:
      if time.time() > deadline:
        proc.kill()
        raise AssertionError("the app did not answer within 240 s: "
                             + (workdir / "app.log").read_text()[-3000:])
      time.sleep(1)
  yield url, workdir
  proc.terminate()
  try:
    proc.wait(timeout=20)
  except subprocess.TimeoutExpired:
    proc.kill()
  log.close()


def test_generation_through_gradio_client(app_server):
  url, workdir = app_server
  client = gradio_client.Client(url, verbose=False)
  grid, video, model, download = client.predict("a blue sphere", 4, 2, 5.0, api_name="/generate")
  shown = np.asarray(Image.open(grid))
  assert shown.shape[0] == shown.shape[1] >= 256 and shown.shape[2] == 3
  assert Path(video).stat().st_size > 0 and Path(model).name == "mesh.glb"
  assert Path(download).read_bytes()[:4] == b"glTF"
  # The request's object was written in the `text_to_3d` layout, after the start-up example.
  res = workdir / "results" / "0001"
  assert (res / "prompt.txt").read_text() == "a blue sphere\n"
  grid_png = np.asarray(Image.open(res / "grid.png"))
  scale = shown.shape[0] // grid_png.shape[0]
  np.testing.assert_array_equal(shown[::scale, ::scale], grid_png)
  for f in ("triplane.npz", "turntable.mp4", "turntable.gif", "mesh.glb", "view_3.png"):
    assert (res / f).is_file()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian: apt-get install chromium;"
                    " .ci/run installs it)")
def test_page_shows_the_grid_in_headless_chromium(app_server, tmp_path):
  url, workdir = app_server
  shot = tmp_path / "page.png"
  r = subprocess.run(
      [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
       "--no-first-run", "--window-size=1280,1400", "--virtual-time-budget=20000",
       f"--screenshot={shot}", url], capture_output=True, text=True, timeout=120)
  assert shot.is_file(), r.stderr[-2000:]
  page = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(np.int16)
  # The example grid (generated at start, shown on load): its distinct cell colours (random
  # weights paint saturated noise) must all be on the screen; a blank page or one without the
  # image has few of them.
  grid = np.asarray(Image.open(workdir / "results" / "0000" / "grid.png")).reshape(-1, 3)
  colours = np.unique(grid, axis=0).astype(np.int16)
  colours = colours[(colours.max(1) - colours.min(1)) > 60]  # saturated: not UI greys/white
  assert len(colours) >= 20
  onscreen = np.unique(page, axis=0)
  found = sum(bool((np.abs(onscreen - c).max(1) <= 6).any()) for c in colours)
  assert found >= 0.9 * len(colours), f"{found}/{len(colours)} grid colours on the page"
