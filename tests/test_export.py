"""Image grids / PNG writing, videos and mesh export (instant3d_jax/export/)."""
import numpy as np
import pytest
from PIL import Image

from instant3d_jax.export import images


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
