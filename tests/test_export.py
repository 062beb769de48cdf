"""Image grids / PNG writing, videos and mesh export (instant3d_jax/export/), local and gs://."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from instant3d_jax.export import images
from tests.fake_gcs import fake_gcs  # noqa: F401  (fixture)


def test_make_grid_layout_and_padding():
  imgs = np.stack([np.full((2, 3, 3), v, np.float32) for v in (0.1, 0.2, 0.3)])
  g = images.make_grid(imgs, ncols=2, pad=1, pad_value=0.0)
  assert g.shape == (2 * 3 + 1, 2 * 4 + 1, 3)
  assert np.allclose(g[1:3, 1:4], 0.1) and np.allclose(g[1:3, 5:8], 0.2)
  assert np.allclose(g[4:6, 1:4], 0.3)
  assert np.allclose(g[4:6, 5:8], 0.0)  # empty cell = pad value
  assert np.allclose(g[0], 0.0) and np.allclose(g[:, 4], 0.0)


def test_make_grid_rejects_bad_shape():
  with pytest.raises(ValueError, match=r"images \[N, H, W, C\].*\(4, 4, 3\)"):
    images.make_grid(np.zeros((4, 4, 3)))


def test_save_png_roundtrip_atomic(tmp_path):
  img = np.random.default_rng(0).uniform(size=(5, 7, 3)).astype(np.float32)
  p = images.save_png(tmp_path / "sub" / "a.png", img)
  back = np.asarray(Image.open(p))
  assert back.shape == (5, 7, 3)
  assert np.array_equal(back, np.round(img * 255).astype(np.uint8))
  assert sorted(x.name for x in (tmp_path / "sub").iterdir()) == ["a.png"]


def test_labelled_grid_draws_text():
  imgs = np.ones((2, 8, 20, 3), np.float32)
  g = images.make_labelled_grid(imgs, ["pred", "target"], pad=0, label_height=10)
  assert g.dtype == np.uint8 and g.shape == (18, 40, 3)
  assert (g[:10] < 128).any()          # dark text pixels in the label strip
  assert (g[10:] == 255).all()         # the images themselves untouched
  with pytest.raises(ValueError, match="2 images but 1 labels"):
    images.make_labelled_grid(imgs, ["x"])


def test_gif_and_mp4(tmp_path):
  import imageio.v2 as imageio
  from instant3d_jax.export import video
  t = np.linspace(0, 1, 6, dtype=np.float32)
  frames = np.broadcast_to(t[:, None, None, None], (6, 15, 17, 3)).copy()
  frames[..., 1] = 0.5
  g = video.save_gif(tmp_path / "t.gif", frames, fps=10)
  back = np.stack(list(imageio.mimread(g)))
  assert back.shape[:3] == (6, 15, 17)
  assert abs(int(back[5, 7, 8, 0]) - 255) <= 2 and abs(int(back[0, 7, 8, 0])) <= 2
  m = video.save_mp4(tmp_path / "t.mp4", frames, fps=10)
  r = imageio.get_reader(m, format="FFMPEG")
  vid = np.stack([f for f in r])
  r.close()
  assert vid.shape == (6, 16, 18, 3)                  # padded to even for yuv420p
  assert abs(float(vid[5, 7, 8, 0]) - 255) < 12 and abs(float(vid[2, 7, 8, 1]) - 128) < 12
  assert sorted(p.name for p in tmp_path.iterdir()) == ["t.gif", "t.mp4"]
  cams = video.turntable_cameras(8, 32)
  from instant3d_jax import cameras
  el, az, d = cameras.elevation_azimuth_distance(cams.c2w)
  np.testing.assert_allclose(np.asarray(az), np.arange(8) * 45.0, atol=1e-3)
  np.testing.assert_allclose(np.asarray(el), 20.0, atol=1e-3)


def test_mesh_sphere_with_colours(tmp_path):
  import trimesh
  from instant3d_jax.export import mesh
  # Density of a ball of radius 0.5 (high inside); colour = red above z = 0, blue below.
  dens = mesh.density_grid(lambda p: 10.0 * jax.nn.sigmoid(40 * (0.5 - jnp.linalg.norm(p, axis=-1))),
                           33, chunk=4000)
  assert dens.shape == (33, 33, 33)
  v, f = mesh.extract_mesh(dens, 5.0)
  r = np.linalg.norm(v, axis=-1)
  assert abs(r.mean() - 0.5) < 0.01 and r.std() < 0.01
  colors = np.where(v[:, 2:3] > 0, [[1.0, 0, 0]], [[0, 0, 1.0]])
  paths = mesh.save_mesh(tmp_path / "obj", v, f, colors)
  tm = mesh.to_trimesh(v, f, colors)
  assert tm.is_watertight and tm.volume > 0           # outward winding: positive volume
  np.testing.assert_allclose(tm.volume, 4 / 3 * np.pi * 0.125, rtol=0.03)
  scene = trimesh.load(paths["glb"])
  (g,) = scene.geometry.values()
  assert g.visual.kind == "vertex" and len(g.vertices) == len(v)
  vc = np.asarray(g.visual.vertex_colors)
  top = np.asarray(g.vertices)[:, 1] > 0.1            # glTF y up = world z
  assert (vc[top, 0] == 255).all() and (vc[top, 2] == 0).all()
  assert (vc[np.asarray(g.vertices)[:, 1] < -0.1, 2] == 255).all()
  ply = trimesh.load(paths["ply"])
  assert np.asarray(ply.visual.vertex_colors)[:, :3].max() == 255
  np.testing.assert_allclose(np.asarray(ply.vertices)[:, 2].max(), v[:, 2].max(), atol=1e-5)
  obj_text = paths["obj"].read_text()
  assert obj_text.startswith("v ") or "\nv " in obj_text
  first_v = next(l for l in obj_text.splitlines() if l.startswith("v "))
  assert len(first_v.split()) == 7                    # x y z r g b
  with pytest.raises(ValueError, match=r"never crosses the level 50.0 \(its range is"):
    mesh.extract_mesh(dens, 50.0)



def test_writers_take_gs_paths(fake_gcs, tmp_path, monkeypatch):
  """PNG, GIF, MP4 and mesh files written to a (fake) bucket: the encoders write local
  temporaries that are uploaded, nothing is left behind locally."""
  from instant3d_jax import fileio
  from instant3d_jax.export import mesh, video
  monkeypatch.chdir(tmp_path)
  img = np.random.default_rng(0).uniform(size=(6, 8, 3)).astype(np.float32)
  p = images.save_png("gs://bkt/out/a.png", img)
  assert str(p) == "gs://bkt/out/a.png"
  back = np.asarray(Image.open(p.open("rb")))
  assert np.array_equal(back, np.round(img * 255).astype(np.uint8))
  frames = img * np.linspace(0.2, 1.0, 3, dtype=np.float32)[:, None, None, None]
  assert str(video.save_gif("gs://bkt/out/t.gif", frames)) == "gs://bkt/out/t.gif"
  assert str(video.save_mp4("gs://bkt/out/t.mp4", frames)) == "gs://bkt/out/t.mp4"
  v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
  f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
  paths = mesh.save_mesh("gs://bkt/out/m", v, f)
  assert {k: str(x) for k, x in paths.items()} == {
      k: f"gs://bkt/out/m.{k}" for k in ("glb", "obj", "ply")}
  assert fake_gcs.files() == [f"gs://bkt/out/{n}" for n in
                              ("a.png", "m.glb", "m.obj", "m.ply", "t.gif", "t.mp4")]
  with fileio.local_file("gs://bkt/out/t.gif") as local:
    import imageio.v2 as imageio
    assert np.stack(list(imageio.mimread(local))).shape[:3] == (3, 6, 8)
  obj = fileio.path("gs://bkt/out/m.obj").read_text().splitlines()
  assert sum(line.startswith("f ") for line in obj) == 4
  assert os.listdir(tmp_path) == []


@pytest.mark.slow  # a fresh interpreter (JAX import)
def test_export_command_reports_a_missing_checkpoint(tmp_path):
  import subprocess
  import sys
  r = subprocess.run([sys.executable, "-m", "instant3d_jax.export",
                      f"--checkpoint={tmp_path / 'nope'}", f"--out={tmp_path / 'm.safetensors'}"],
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 2, r.stderr
  assert r.stderr.strip().splitlines()[-1].startswith(
      f"error: checkpoint '{tmp_path / 'nope'}' does not exist; expected a training workdir")
  assert "Traceback" not in r.stderr and not (tmp_path / "m.safetensors").exists()
