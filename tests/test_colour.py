"""Colour classifier of the shapes-world check (instant3d_jax/eval/colour.py)."""
import colorsys

import numpy as np
import pytest

from instant3d_jax.configs import data as data_config
from data_pipeline import mv_grids as G
from data_pipeline import primitives as P
from data_pipeline import procedural
from instant3d_jax.eval import colour as COL


def test_every_palette_colour_under_the_world_shading():
  # Brown and orange have (nearly) the same hue: a hue classifier could not tell them apart.
  hue = lambda c: colorsys.rgb_to_hsv(*c)[0]  # noqa: E731
  assert abs(hue(P.COLOURS["brown"]) - hue(P.COLOURS["orange"])) < 0.02
  for name, rgb in P.COLOURS.items():
    for s in (0.4, 0.7, 1.0):  # ambient … full light (primitives.shade)
      view = np.ones((8, 8, 3))
      view[2:6, 2:6] = s * np.asarray(rgb)
      assert COL.dominant_colour(view) == name, (name, s)
      assert COL.dominant_colour(np.round(view * 255).astype(np.uint8)) == name, (name, s)
  assert COL.dominant_colour(np.ones((8, 8, 3))) is None  # only background
  idx = COL.pixel_colours(np.array([[[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.2, 0.9, 0.2]]]))
  assert idx.tolist() == [[-1, -1, -1]]  # white, black and an off-palette green are left out


@pytest.fixture(scope="module")
def rig_grids(tmp_path_factory):
  cfg = data_config.get_config("tiny")
  cfg.num_objects = 72
  cfg.resolution = 32  # the stage-1 demo's view size (a 64² grid)
  cfg.supersample = 2
  cfg.num_sup_views = 0
  cfg.eval_rig_splits = ()
  cfg.split_fractions = (1.0, 0.0, 0.0)
  cfg.records_per_shard = 100
  out = str(tmp_path_factory.mktemp("colour") / "data")
  procedural.generate(cfg, out, progress=False)
  batch = next(G.make_grid_loader(out, "train", batch_size=72, seed=0, shuffle=False,
                                  num_epochs=1, process_index=0, process_count=1))
  return batch["grid"], list(batch["caption"])


def test_real_rig_renders_score_at_least_95_percent(rig_grids):
  grids, captions = rig_grids
  report = COL.grid_colour_report(grids, captions)
  print(f"real rig renders (72 objects, 32² views): single-object colour accuracy "
        f"{report['single_accuracy']:.3f} of {report['single_count']}, multi-object all colours "
        f"present {report['multi_all_present']:.3f} of {report['multi_count']}")
  assert report["single_count"] >= 15 and report["multi_count"] >= 40
  assert report["single_accuracy"] >= 0.95
  assert report["multi_all_present"] >= 0.95
  # The score depends on the grids: captions of other objects fail.
  wrong = COL.grid_colour_report(grids, captions[1:] + captions[:1])
  assert wrong["single_accuracy"] < 0.5 and wrong["multi_all_present"] < 0.5
  with pytest.raises(ValueError, match="N captions"):
    COL.grid_colour_report(grids, captions[:3])
