"""Stage-1 scores that can fail (issue 29): the colour rules with the unnamed-colour penalty and
grain cleaning (instant3d_jax/eval/colour.py), Wilson intervals (eval/stats.py), the shape
classifier (eval/shape.py), the demo's controls and its test-ledger scoring (demos/mv.py)."""
import json
import os

import numpy as np
import pytest

from data_pipeline import mv_grids
from data_pipeline import primitives as P
from data_pipeline import procedural
from instant3d_jax.configs import data as data_config
from instant3d_jax.eval import colour as COL
from instant3d_jax.eval import ledger
from instant3d_jax.eval import shape as SH
from instant3d_jax.eval import stats

R = 32  # the stage-1 demo's view size


def _disc(view, cy, cx, r, rgb):
  yy, xx = np.mgrid[0:view.shape[0], 0:view.shape[1]]
  d2 = (yy - cy) ** 2 + (xx - cx) ** 2
  m = d2 <= r * r
  # Shading like the world's: ambient 0.4 … full light across the disc.
  s = 1.0 - 0.6 * np.sqrt(d2 / (r * r))
  view[m] = (s[..., None] * np.asarray(rgb))[m]


def _grid(objects, r=R):
  """A grid of four views, each the same discs [(cy, cx, radius, colour name)] on white."""
  views = np.ones((4, r, r, 3))
  for v in views:
    for cy, cx, rad, name in objects:
      _disc(v, cy, cx, rad, P.COLOURS[name])
  return mv_grids.tile_grid(views)


def test_palette_colour_grids_pass_and_an_unnamed_colour_fails():
  single = _grid([(16, 16, 9, "red")])
  multi = _grid([(10, 10, 6, "red"), (22, 22, 6, "blue")])
  extra = _grid([(10, 10, 6, "red"), (22, 22, 6, "blue"), (8, 24, 5, "green")])
  rep = COL.grid_colour_report(np.stack([single, multi, extra]),
                               ["a red sphere", "a red sphere beside a blue box",
                                "a red sphere beside a blue box"])
  assert [it["ok"] for it in rep["items"]] == [True, True, False]
  assert rep["items"][2]["unnamed_share"] > COL.DEFAULT_MAX_UNNAMED_SHARE
  assert (rep["single_right"], rep["single_count"], rep["multi_right"], rep["multi_count"]) == \
      (1, 1, 1, 2)
  # The first rule (named colours present, nothing said about others) passed the extra colour.
  old = COL.grid_colour_report(extra[None], ["a red sphere beside a blue box"], grain=0,
                               max_unnamed_share=1.0)
  assert old["items"][0]["ok"]
  # A single-object grid of the right dominant colour with a large unnamed patch fails too.
  red_green = _grid([(16, 16, 9, "red"), (4, 4, 4, "green")])
  assert not COL.grid_colour_report(red_green[None], ["a red sphere"])["items"][0]["ok"]
  assert not COL.grid_colour_report(single[None], ["a blue sphere"])["items"][0]["ok"]


def test_background_grain_alone_does_not_fail():
  grid = _grid([(10, 10, 6, "red"), (22, 22, 6, "blue")])
  views = mv_grids.untile_grid(grid).copy()
  rng = np.random.default_rng(0)
  names = list(P.COLOURS)
  for v in views:  # isolated one-pixel specks of random palette colours on a 3-pixel lattice
    white = np.all(v == 1.0, -1)
    for y in range(1, R - 1, 3):
      for x in range(1, R - 1, 3):
        if white[y - 1:y + 2, x - 1:x + 2].all():
          v[y, x] = 0.9 * np.asarray(P.COLOURS[names[rng.integers(len(names))]])
  grainy = mv_grids.tile_grid(views)
  cap = ["a red sphere beside a blue box"]
  assert COL.grid_colour_report(grainy[None], cap)["items"][0]["ok"]
  raw = COL.grid_colour_report(grainy[None], cap, grain=0)["items"][0]
  assert raw["unnamed_share"] > COL.DEFAULT_MAX_UNNAMED_SHARE and not raw["ok"]
  idx = COL.pixel_colours(views[0])
  cleaned = COL.clean_grain(idx, 2)
  assert (cleaned[1, 28], cleaned[10, 10]) == (-1, idx[10, 10]) and idx[1, 28] >= 0


@pytest.mark.parametrize("kind", ["pixels", "speckle", "patches"])
def test_noise_blobs_fail_the_multi_object_rule(kind):
  caps = ["a red sphere beside a blue box", "a green cone, a yellow ring and a grey cube"] * 8
  grids = COL.noise_grids(kind, len(caps), 2 * R, seed=1)
  rep = COL.grid_colour_report(grids, caps)
  assert rep["multi_all_present"] == 0.0
  if kind == "speckle":  # what the first rule let through
    old = COL.grid_colour_report(grids, caps, grain=0, max_unnamed_share=1.0)
    assert old["multi_all_present"] > 0.8


def test_wilson_interval_known_values():
  # Wilson (1927) score interval; values as in Newcombe (1998) / Wikipedia's worked examples.
  np.testing.assert_allclose(stats.wilson(0, 10), (0.0, 0.27753), atol=1e-5)
  np.testing.assert_allclose(stats.wilson(5, 10), (0.23659, 0.76341), atol=1e-5)
  np.testing.assert_allclose(stats.wilson(10, 10), (0.72247, 1.0), atol=1e-5)
  np.testing.assert_allclose(stats.wilson(81, 263), (0.25529, 0.36621), atol=1e-5)
  assert all(np.isnan(stats.wilson(0, 0)))
  p = stats.proportion(3, 4)
  assert p["p"] == 0.75 and p["n"] == 4 and p["lo"] < 0.75 < p["hi"]
  assert stats.format_proportion(p).endswith("(n=4)")
  assert stats.format_proportion({"p": 0.1}) == "10.0%"
  with pytest.raises(ValueError):
    stats.wilson(5, 4)


def test_chance_level_is_one_in_the_colour_sets():
  ch = COL.chance_level(["a red sphere", "a red sphere beside a blue box",
                         "a red cube, a blue ring and a grey sphere"])
  assert ch["single"] == pytest.approx(1 / 10)
  assert ch["multi"] == pytest.approx((1 / 45 + 1 / 120) / 2)


def test_shuffled_captions_are_a_derangement_within_kind():
  from instant3d_jax.demos import mv as mv_demo
  caps = ["a red sphere", "a blue cone", "a green box", "a red sphere beside a blue box",
          "a grey cone above a pink ring"]
  grid_caps = [c for c in caps for _ in range(4)]
  sh = mv_demo.shuffled_captions(grid_caps)
  assert sh == mv_demo.shuffled_captions(grid_caps)  # seeded
  assert all(a != b for a, b in zip(grid_caps, sh))
  kinds = lambda cs: [" beside " in c or " above " in c for c in cs]  # noqa: E731
  assert kinds(sh) == kinds(grid_caps)


# ------------------------------------------------------------------------------------------------
# The shape classifier on a tiny procedural data set.


@pytest.fixture(scope="module")
def shape_data(tmp_path_factory):
  cfg = data_config.get_config("tiny")
  cfg.num_objects = 200
  cfg.resolution = R
  cfg.supersample = 1
  cfg.num_sup_views = 4
  cfg.eval_rig_splits = ()
  cfg.split_fractions = (0.75, 0.15, 0.10)
  cfg.records_per_shard = 1000
  cfg.world.max_primitives = 1  # single-object captions only
  out = str(tmp_path_factory.mktemp("shapes") / "data")
  procedural.generate(cfg, out, progress=False)
  return out


@pytest.fixture(scope="module")
def classifier(shape_data):
  return SH.train_classifier(shape_data, steps=250, features=(8, 16, 32), hidden=32,
                             learning_rate=3e-3, seed=0, log=lambda *_: None)


def test_shape_classifier_beats_majority_chance_with_colour_removed(shape_data, classifier):
  ev = SH.evaluate(classifier, shape_data, "val")
  print(f"shape classifier (tiny): val views {ev['accuracy']:.3f}, chance {ev['chance']:.3f}, "
        f"rig grids {ev['rig_grid_accuracy']:.3f} ({ev['objects']} objects)")
  assert ev["views"] == ev["objects"] * 8
  assert ev["accuracy"] > ev["chance"] + 0.25
  # Colour is removed: any recolouring by a channel permutation gives the same inputs.
  views, _, _ = SH.single_object_views(shape_data, "val", R, max_objects=4)
  np.testing.assert_allclose(SH.colourless(views), SH.colourless(views[..., ::-1]), atol=1e-6)
  np.testing.assert_allclose(SH.colourless(views), SH.colourless(views[..., [1, 2, 0]]),
                             atol=1e-6)


def test_shape_classifier_saves_loads_and_scores_grids(shape_data, classifier, tmp_path):
  path = classifier.save(str(tmp_path / "clf.npz"))
  again = SH.load(path)
  assert again.config == json.loads(json.dumps(classifier.config))
  batch = next(mv_grids.make_grid_loader(shape_data, "val", batch_size=8, seed=0, shuffle=False,
                                         num_epochs=1, process_index=0, process_count=1))
  grids, caps = batch["grid"], list(batch["caption"])
  views = mv_grids.untile_grid(grids).reshape(-1, R, R, 3)
  assert classifier.predict(views) == again.predict(views)
  rep = SH.grid_shape_report(again, grids, caps)
  assert rep["count"] == 8 and 0 <= rep["right"] <= 8
  for it in rep["items"]:
    assert it["ok"] == (sum(p == it["shape"] for p in it["predicted"]) >= 3)
  assert SH.ensure_classifier(path, "/nonexistent").config == again.config  # loaded, not trained
  (tmp_path / "bad.npz").write_bytes(b"not a zip")
  from instant3d_jax import errors
  with pytest.raises(errors.InputError, match="not a shape classifier"):
    SH.load(str(tmp_path / "bad.npz"))


def test_views_scores_applies_both_rules(classifier):
  from instant3d_jax.eval import mv_eval
  frames = mv_grids.untile_grid(_grid([(16, 16, 9, "red")]))
  sc = mv_eval.views_scores(frames, "a red sphere", classifier)
  assert sc["colour"]["ok"] and len(sc["shape"]["predicted"]) == 4
  multi = mv_eval.views_scores(frames, "a red sphere beside a blue box", classifier)
  assert multi["shape"] is None and not multi["colour"]["ok"]


def test_test_role_scoring_lands_in_the_ledger_once(shape_data):
  from instant3d_jax.demos import mv as mv_demo
  path = os.environ[ledger.ENV]
  calls = []

  def score():
    calls.append(1)
    return {"model": {"single_colour": stats.proportion(3, 4)}}

  kw = dict(label="stage-1 scores test", config_hash="c" * 64, param_hash="p" * 64)
  first, entry = mv_demo.score_test_role(shape_data, score=score, **kw)
  assert not entry["repeat"] and calls == [1]
  dataset = mv_demo.ledger_dataset(shape_data)
  assert dataset.endswith(":captions-test") and ":test:" in dataset
  assert ledger.lookup("p" * 64, dataset, path)["result"] == first
  again, entry2 = mv_demo.score_test_role(shape_data, score=score, **kw)
  assert entry2["repeat"] and calls == [1] and again == first
  assert ledger.configs_scored(dataset, path) == 1
