"""The shapes-world stage-1 demo's pieces (instant3d_jax/demo_mv.py): which held-out captions it
samples, the view-consistency score, and the captioned grids picture."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from data_pipeline import captions as captions_lib
from instant3d_jax.eval import mv_eval as demo_mv
from instant3d_jax.convert import lrm as convert_lrm
from instant3d_jax.models import lrm
from tests import tiny_configs
from tests import tolerance


def test_heldout_captions_per_role_alternate_kinds_and_skip_seen_and_mixed(monkeypatch):
  from data_pipeline import mv_grids, records
  roles = {"val": frozenset({("red", "sphere")}), "test": frozenset({("blue", "box")})}
  table = {
      "val": [(0, "a", "a red sphere"), (1, "b", "a green cone"),
              (2, "c", "a red sphere beside a green cone"), (3, "d", "a red sphere"),
              (4, "h", "a red sphere beside a blue box")],                      # mixed
      "test": [(0, "e", "a large blue box"), (1, "f", "a blue box, a red cone and a grey ring"),
               (2, "g", "a small red sphere"), (3, "i", "a small blue box")]}
  monkeypatch.setattr(records, "read_metadata", lambda d: {"splits": {"val": {}, "test": {}}})
  monkeypatch.setattr(mv_grids, "object_table", lambda d, s: table[s])
  rows = demo_mv.heldout_captions("DATA", 3, roles)
  assert [(r["role"], r["caption"]) for r in rows] == [
      ("val", "a red sphere"), ("val", "a red sphere beside a green cone"),
      ("val", "a small red sphere"),
      ("test", "a large blue box"), ("test", "a blue box, a red cone and a grey ring"),
      ("test", "a small blue box")]
  assert [(r["split"], r["position"], r["object_id"]) for r in rows][:3] == [
      ("val", 0, "a"), ("val", 2, "c"), ("test", 2, "g")]
  with pytest.raises(records.DataError, match="only 3 distinct held-out val captions"):
    demo_mv.heldout_captions("DATA", 4, roles)


@pytest.fixture(scope="module")
def micro_checkpoint(tmp_path_factory):
  cfg = tiny_configs.micro_lrm(**{"render.num_samples": 4, "render.num_importance": 4})
  params = nn.meta.unbox(lrm.init_params(cfg, jax.random.key(0)))
  path = tmp_path_factory.mktemp("ckpt") / "micro.safetensors"
  convert_lrm.save_lrm(path, params, cfg)
  return str(path), cfg


def test_view_consistency_is_per_grid_and_independent_of_batching(micro_checkpoint):
  path, cfg = micro_checkpoint
  res = int(cfg.model.input_resolution)
  grids = np.random.default_rng(0).uniform(size=(3, 2 * res, 2 * res, 3)).astype(np.float32)
  whole = demo_mv.view_consistency(path, grids, batch=4, background_threshold=0.16)  # padded
  single = demo_mv.view_consistency(path, grids, batch=1, background_threshold=0.16)  # one each
  assert whole.shape == (3,) and np.isfinite(whole).all()
  tolerance.within("demo_mv.view_consistency_batch_4_vs_1", whole, single, 1e-5, "rel")


def test_captioned_rows_image_has_one_titled_tile_per_caption():
  grids = np.zeros((6, 8, 8, 3), np.float32)
  img = demo_mv.captioned_rows_image(grids, ["a red sphere", "a blue box", "a grey ring"],
                                     per_caption=2, scale=2, ncols=2)
  assert img.dtype == np.uint8 and img.ndim == 3
  # 2 columns of tiles (2 grids of 16 px + padding) and 2 rows (title strip + 16 px).
  assert img.shape[1] > 2 * 2 * 16 and img.shape[0] > 2 * (14 + 16)


def test_object_colours_reads_the_turntable_renders(micro_checkpoint, monkeypatch):
  """The colour of a reconstructed object is the majority of its turntable frames' dominant
  colours (frames without a classified pixel are skipped)."""
  from instant3d_jax import reconstruction
  from instant3d_jax.eval import mv_eval
  frames = np.ones((5, 8, 8, 3), np.float32)   # white: no classified pixel
  frames[0, 2:6, 2:6] = (0.9, 0.1, 0.1)        # red
  frames[1, 2:6, 2:6] = (0.1, 0.2, 0.9)        # blue
  frames[2, 2:6, 2:6] = (0.9, 0.1, 0.1)        # red
  seen = {}

  def fake_render(m, params, planes, cams, **kw):
    seen["cams"] = cams.batch_shape
    return frames

  monkeypatch.setattr(reconstruction, "render_frames", fake_render)
  colour, per = mv_eval.object_colours(None, None, None, frames=5, resolution=8)
  assert seen["cams"] == (5,)
  assert per == ["red", "blue", "red", None, None] and colour == "red"
  frames[:] = 1.0
  assert mv_eval.object_colours(None, None, None, frames=5, resolution=8)[0] is None


def test_clean_background_snaps_only_pixels_near_the_background():
  from instant3d_jax import reconstruction
  v = np.ones((1, 2, 2, 3), np.float32)
  v[0, 0, 0] = (0.95, 0.97, 1.0)    # grain: within 0.08 on every channel → background
  v[0, 0, 1] = (0.95, 0.90, 1.0)    # one channel 0.10 off → kept
  v[0, 1, 0] = (0.2, 0.6, 0.1)      # object → kept
  out = reconstruction.clean_background(v, (1.0, 1.0, 1.0), 0.08)
  np.testing.assert_array_equal(out[0, 0, 0], (1.0, 1.0, 1.0))
  np.testing.assert_array_equal(out[0, 0, 1], v[0, 0, 1])
  np.testing.assert_array_equal(out[0, 1, 0], v[0, 1, 0])
  np.testing.assert_array_equal(reconstruction.clean_background(v, (1, 1, 1), 0.0), v)
