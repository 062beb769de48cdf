"""The reconstruct command (instant3d_jax/reconstruct.py) on a freshly initialised micro model."""
import json

import flax.linen as nn
import jax
import numpy as np
import pytest
import trimesh
from PIL import Image

from tests import tiny_configs
from instant3d_jax import cameras as cam_lib
from instant3d_jax import reconstruction as rec
from instant3d_jax.convert import lrm as convert_lrm
from instant3d_jax.convert.safetensors_io import WeightsError
from instant3d_jax.models import lrm


def micro_config():
  """The shared micro LRM (tests/tiny_configs.py) with 4 + 4 samples and a non-white background:
  the RGBA composite must use the config's."""
  return tiny_configs.micro_lrm(**{"render.num_samples": 4, "render.num_importance": 4,
                                   "background": (1.0, 0.5, 0.0)})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  cfg = micro_config()
  params = nn.meta.unbox(lrm.init_params(cfg, jax.random.key(0)))
  # Make the density vary strongly over space so marching cubes finds a surface.
  last = params["nerf"]["dense_2"]
  last["kernel"] = np.asarray(last["kernel"]).copy()
  last["kernel"][:, 0] *= 200.0
  path = tmp_path_factory.mktemp("ckpt") / "micro.safetensors"
  convert_lrm.save_lrm(path, params, cfg)
  return path, cfg


def _png(path, arr, mode=None):
  Image.fromarray(np.asarray(arr, np.uint8), mode).save(path)
  return str(path)


def _views(tmp_path, size=32, n=4, rgba_first=True):
  rng = np.random.default_rng(0)
  paths = []
  for i in range(n):
    if i == 0 and rgba_first:
      a = rng.integers(0, 256, (size, size, 4))
      a[..., 3] = 0                                     # fully transparent: pure background
      a[: size // 2, :, 3] = 255                        # top half opaque
      paths.append(_png(tmp_path / f"v{i}.png", a))
    else:
      paths.append(_png(tmp_path / f"v{i}.png", rng.integers(0, 256, (size, size, 3))))
  return paths


def test_full_run_writes_every_output(checkpoint, tmp_path):
  path, cfg = checkpoint
  views = _views(tmp_path)
  logs = []
  out = tmp_path / "out"
  written = rec.reconstruct(path, out, views=views, seed=3, num_novel=2, turntable_frames=4,
                            mesh_resolution=24, mesh_threshold="auto", progress=False,
                            log=logs.append)
  names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
  assert names == sorted(
      ["triplane.npz", "run.json", "turntable.gif", "turntable.mp4", "turntable_strip.png",
       "mesh.glb", "mesh.obj",
       "mesh.ply", "renders/inputs_vs_renders.png", "novel/cameras.json",
       "novel/novel_00.png", "novel/novel_01.png"]
      + [f"inputs/view_{i}.png" for i in range(4)] + [f"renders/input_{i}.png" for i in range(4)])
  assert len(written) == len(names)
  # Documented conversions were announced.
  assert any("RGBA composited onto the training background (1.0, 0.5, 0.0)" in l for l in logs)
  assert any("views resized from 32² to the model's input resolution 16²" in l for l in logs)
  # The transparent bottom half of view 0 became the background colour.
  v0 = np.asarray(Image.open(out / "inputs" / "view_0.png"))
  np.testing.assert_allclose(v0[12:, :].reshape(-1, 3).mean(0), [255, 128, 0], atol=2)
  strip = np.asarray(Image.open(out / "turntable_strip.png"))   # 4 frames of 16² in one row
  assert strip.shape[:2] == (16 + 2 * 2, 4 * 16 + 5 * 2)
  tri = np.load(out / "triplane.npz")
  assert tri["planes"].shape == (3, 8, 8, 8)
  assert list(tri["plane_order"]) == ["XY", "XZ", "YZ"]
  assert np.asarray(Image.open(out / "renders" / "input_0.png")).shape == (16, 16, 3)
  scene = trimesh.load(out / "mesh.glb")
  (g,) = scene.geometry.values()
  assert g.visual.kind == "vertex" and len(g.faces) > 0
  assert np.asarray(g.visual.vertex_colors).shape == (len(g.vertices), 4)
  run = json.loads((out / "run.json").read_text())
  assert run["seed"] == 3 and run["checkpoint"] == str(path.resolve())
  assert run["config"]["model"]["input_resolution"] == 16
  assert run["versions"]["jax"] == jax.__version__
  assert run["mesh"]["faces"] == len(g.faces)
  nov = json.loads((out / "novel" / "cameras.json").read_text())
  assert len(nov["frames"]) == 2 and nov["width"] == 16


def test_grid_is_split_in_rig_order(tmp_path):
  grid = np.zeros((8, 8, 3), np.uint8)
  for k, (r, c) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4)]):
    grid[r:r + 4, c:c + 4] = 50 * (k + 1)
  notes = []
  views = rec.load_views(_png(tmp_path / "g.png", grid), None, 4, (1, 1, 1), notes)
  assert views.shape == (4, 4, 4, 3)
  np.testing.assert_allclose(views[:, 0, 0, 0] * 255, [50, 100, 150, 200], atol=1e-3)
  assert notes == []


def test_bad_inputs_fail_with_clear_messages(checkpoint, tmp_path):
  path, cfg = checkpoint
  bg = (1.0, 1.0, 1.0)
  views = _views(tmp_path, rgba_first=False)
  with pytest.raises(rec.InputError, match=r"--views lists 3 files; the model takes 4 views"):
    rec.load_views(None, views[:3], 4, bg, [])
  with pytest.raises(rec.InputError, match=r"exactly one of --grid .* and --views"):
    rec.load_views(None, None, 4, bg, [])
  ns = _png(tmp_path / "ns.png", np.zeros((16, 20, 3)))
  with pytest.raises(rec.InputError, match=r"--views\[1\] .*ns.png is 20x16 pixels; views must be "
                                           r"square"):
    rec.load_views(None, [views[0], ns, views[2], views[3]], 4, bg, [])
  odd = _png(tmp_path / "odd.png", np.zeros((15, 15, 3)))
  with pytest.raises(rec.InputError, match=r"odd.png is 15x15 pixels; views must have an even "
                                           r"side"):
    rec.load_views(None, [odd] * 4, 4, bg, [])
  small = _png(tmp_path / "small.png", np.zeros((16, 16, 3)))
  with pytest.raises(rec.InputError, match=r"--views have different sizes \['32x32', '16x16'"):
    rec.load_views(None, [views[0], small, views[2], views[3]], 4, bg, [])
  gray = _png(tmp_path / "gray.png", np.zeros((32, 32)), "L")
  with pytest.raises(rec.InputError, match=r"--views\[2\] .*gray.png is a grayscale image "
                                           r"\(mode L\); the reconstructor needs RGB"):
    rec.load_views(None, [views[0], views[1], gray, views[3]], 4, bg, [])
  junk = tmp_path / "junk.png"
  junk.write_bytes(b"not a png at all")
  with pytest.raises(rec.InputError, match=r"--views\[0\] .*junk.png is not a readable image"):
    rec.load_views(None, [str(junk)] + views[1:], 4, bg, [])
  with pytest.raises(rec.InputError, match=r"--views\[0\] .*missing.png does not exist"):
    rec.load_views(None, [str(tmp_path / "missing.png")] + views[1:], 4, bg, [])
  bad_grid = _png(tmp_path / "bg.png", np.zeros((8, 12, 3)))
  with pytest.raises(rec.InputError, match=r"--grid .*bg.png is 12x8 pixels; expected a square "
                                           r"2×2 grid"):
    rec.load_views(bad_grid, None, 4, bg, [])
  # Cameras file with the wrong frame count.
  from data_pipeline import cameras_json
  cams_path = str(tmp_path / "cams.json")
  cameras_json.write_cameras_json(cams_path, cam_lib.instant3d_rig(32)[:3])
  with pytest.raises(rec.InputError, match=r"cams.json has 3 frames; expected one per view \(4\)"):
    rec.load_cameras(cams_path, 4, 32)
  cameras_json.write_cameras_json(cams_path, cam_lib.instant3d_rig(64))
  with pytest.raises(rec.InputError, match=r"is for 64x64 images but the views are 32x32"):
    rec.load_cameras(cams_path, 4, 32)
  np.testing.assert_allclose(rec.load_cameras(None, 4, 32).c2w, cam_lib.instant3d_rig(32).c2w)
  # Checkpoint problems.
  from instant3d_jax import errors
  with pytest.raises(errors.CheckpointError, match=r"checkpoint '.*nope.safetensors' does not "
                                                   r"exist; expected a training workdir"):
    rec.load_checkpoint(tmp_path / "nope.safetensors")
  other = micro_config()
  other.model.triplane.channels = 4
  with pytest.raises(WeightsError, match=r"does not match the model config \(3 problems\):\n"
                                         r"  decoder/upsampler/bias: config expects \(4,\), "
                                         r"checkpoint has \(8,\)"):
    rec.load_checkpoint(path, other)


@pytest.mark.slow  # a fresh interpreter (JAX import)
def test_cli_reports_bad_input_with_exit_status_2(checkpoint, tmp_path):
  import subprocess
  import sys
  path, _ = checkpoint
  views = _views(tmp_path)
  r = subprocess.run([sys.executable, "-m", "instant3d_jax.reconstruct", f"--checkpoint={path}",
                      "--views=" + ",".join(views[:2]), f"--out={tmp_path / 'o'}"],
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 2
  # One line, no traceback (cli.run).
  assert r.stderr.strip().splitlines()[-1] == (
      f"error: --views lists 2 files; the model takes 4 views (got {views[:2]!r})")
  assert "Traceback" not in r.stderr
  assert not (tmp_path / "o" / "run.json").exists()


def test_background_threshold_cleans_grain_before_reconstruction(checkpoint, tmp_path):
  """`--background_threshold`: faint grain on the (training) background becomes the background
  in the preprocessed inputs, the object's pixels stay; out-of-range values are a one-line
  error naming the flag, before anything is written."""
  path, cfg = checkpoint
  bg = np.array([255, 128, 0], np.float32)
  rng = np.random.default_rng(1)
  paths = []
  for i in range(4):
    v = np.clip(bg + rng.integers(-12, 13, (16, 16, 3)), 0, 255)   # grain ≤ 12/255 ≈ 0.047
    v[4:12, 4:12] = (20, 200, 60)                                    # the object
    paths.append(_png(tmp_path / f"g{i}.png", v))
  logs = []
  out = tmp_path / "out"
  rec.reconstruct(path, out, views=paths, num_novel=1, turntable_frames=2, mesh_resolution=16,
                  mesh_threshold="auto", background_threshold=0.06, progress=False,
                  log=logs.append)
  v0 = np.asarray(Image.open(out / "inputs" / "view_0.png")).astype(np.float32)
  np.testing.assert_array_equal(v0[0, 0], bg)                        # grain → background
  np.testing.assert_array_equal(v0[8, 8], [20, 200, 60])             # the object stays
  assert any("--background_threshold" in l for l in logs)
  run = json.loads((out / "run.json").read_text())
  assert run["flags"]["background_threshold"] == 0.06
  with pytest.raises(rec.InputError, match=r"--background_threshold must be in \[0, 1\), got 1.5"):
    rec.reconstruct(path, tmp_path / "bad", views=paths, background_threshold=1.5,
                    progress=False, log=logs.append)
  assert not (tmp_path / "bad").exists()
