"""Captioned 2×2 grids (data_pipeline/mv_grids.py) and the caption split (data_pipeline/captions.py)."""
import os

import numpy as np
import pytest

from instant3d_jax.configs import data as data_config
from data_pipeline import captions as CAP
from data_pipeline import mv_grids as G
from data_pipeline import primitives as P
from data_pipeline import procedural, records
from instant3d_jax import cameras as C


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  cfg = data_config.get_config("tiny")
  cfg.eval_rig_splits = ()  # the grids use the rig only
  cfg.num_sup_views = 0
  out = str(tmp_path_factory.mktemp("mvgrids") / "data")
  procedural.generate(cfg, out, progress=False)
  return cfg, out


def _take(it, n):
  return [next(it) for _ in range(n)]


def _equal(a, b):
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_slots_mirror_the_camera_module():
  assert G.GRID_AZIMUTHS == C.INSTANT3D_AZIMUTHS
  assert G.GRID_ELEVATION == C.INSTANT3D_ELEVATION


def test_tile_untile_round_trip_and_layout():
  rng = np.random.default_rng(0)
  views = rng.integers(0, 256, size=(2, 4, 5, 5, 3), dtype=np.uint8)
  grid = G.tile_grid(views)
  assert grid.shape == (2, 10, 10, 3) and grid.dtype == np.uint8
  np.testing.assert_array_equal(grid[:, :5, :5], views[:, 0])   # top-left: az 0
  np.testing.assert_array_equal(grid[:, :5, 5:], views[:, 1])   # top-right: az 90
  np.testing.assert_array_equal(grid[:, 5:, :5], views[:, 2])   # bottom-left: az 180
  np.testing.assert_array_equal(grid[:, 5:, 5:], views[:, 3])   # bottom-right: az 270
  np.testing.assert_array_equal(G.untile_grid(grid), views)
  np.testing.assert_array_equal(G.tile_grid(G.untile_grid(grid[0])), grid[0])
  # The sampler's grid helpers (diffusion/sampling.py) use the same layout.
  from instant3d_jax.diffusion import sampling
  np.testing.assert_array_equal(sampling.make_grid(views), grid)
  np.testing.assert_array_equal(sampling.split_grid(grid), views)
  with pytest.raises(records.DataError, match="expected views"):
    G.tile_grid(views[:, :3])
  with pytest.raises(records.DataError, match="even sides"):
    G.untile_grid(grid[:, :9])


def test_grid_quadrants_are_the_views_from_their_azimuths(world):
  """Oracle: ray cast each object's scene again from orbit cameras at az 0/90/180/270, el 20."""
  cfg, out = world
  source = records.RecordSource(out, "train")
  batch = next(G.make_grid_loader(out, "train", batch_size=2, seed=0, shuffle=False,
                                  process_index=0, process_count=1))
  res = cfg.resolution
  lighting = P.Lighting(direction=tuple(cfg.world.light_direction), ambient=cfg.world.ambient)
  for row in range(2):
    rec = source[row]
    assert batch["object_id"][row] == rec["index"] and batch["caption"][row] == rec["caption"]
    views = G.untile_grid(batch["grid"][row])
    for slot, az in enumerate((0.0, 90.0, 180.0, 270.0)):
      cam = C.orbit_camera(20.0, az, cfg.rig_distance, cfg.fov_deg, res, res)
      rgba = P.render_rgba(P.scene_from_json(rec["scene"]), np.asarray(cam.c2w),
                           np.asarray(cam.K), res, res, cfg.supersample, lighting)
      want = np.round(P.composite_white(rgba) * 255).astype(np.int32)
      assert np.abs(views[slot].astype(np.int32) - want).max() <= 1, (row, slot)
    # The four views differ (the test would not notice a wrong order otherwise).
    assert len({views[s].tobytes() for s in range(4)}) == 4


def _rewrite(src_dir, dst_dir, edit_rig):
  """Copies the train split of `src_dir` with each record's rig group passed through `edit_rig`."""
  source = records.RecordSource(src_dir, "train")
  recs = []
  for i in range(len(source)):
    rec = source[i]
    rec["groups"]["rig"] = edit_rig(rec["groups"]["rig"])
    recs.append(records.encode_record(object_id=rec["object_id"], index=rec["index"],
                                      split="train", caption=rec["caption"],
                                      groups=rec["groups"], scene=rec["scene"]))
  records.prepare_output_dir(dst_dir, writer="test")
  shards = records.write_shards(dst_dir, "train", recs, len(recs), 4)
  records.write_metadata(dst_dir, {"generator": "test", "num_objects": len(recs),
                                   "splits": {"train": {"num_objects": len(recs),
                                                        "shards": shards}}})


def test_slots_come_from_the_cameras_not_the_stored_order(world, tmp_path):
  _, out = world
  perm = [2, 0, 3, 1]

  def shuffle(g):
    return records.make_group([g["images"][v] for v in perm], np.asarray(g["c2w"])[perm],
                              np.asarray(g["K"])[perm], g["width"], g["height"])

  shuffled = str(tmp_path / "shuffled")
  _rewrite(out, shuffled, shuffle)
  kw = dict(batch_size=3, seed=1, process_index=0, process_count=1)
  a = next(G.make_grid_loader(out, "train", **kw))
  b = next(G.make_grid_loader(shuffled, "train", **kw))
  assert _equal(a, b)

  def rotate(g):  # the whole rig turned by 45°: not the Instant3D rig
    from data_pipeline import lrm_input
    return records.make_group(g["images"], lrm_input._rotate_z(np.asarray(g["c2w"]), 45.0),
                              g["K"], g["width"], g["height"])

  rotated = str(tmp_path / "rotated")
  _rewrite(out, rotated, rotate)
  with pytest.raises(records.DataError, match=r"object obj0000\d\d: the rig cameras are not"):
    next(G.make_grid_loader(rotated, "train", **kw))


def test_restored_iterator_continues_identically(world):
  _, out = world
  kw = dict(batch_size=4, seed=3, process_index=0, process_count=1)
  it = G.make_grid_loader(out, "train", **kw)
  _take(it, 2)
  state = it.get_state()
  expected = _take(it, 3)
  fresh = G.make_grid_loader(out, "train", **kw)
  fresh.set_state(state)
  assert all(_equal(x, y) for x, y in zip(_take(fresh, 3), expected))
  # Shuffled per epoch: 6 train objects, 4 per batch → 12 positions = 2 full epochs.
  seq = np.concatenate([b["object_id"] for b in _take(G.make_grid_loader(out, "train", **kw), 3)])
  assert sorted(seq[:6]) == list(range(6)) and sorted(seq[6:12]) == list(range(6))
  assert list(seq[:6]) != list(seq[6:12])


def test_two_processes_give_the_one_process_batches(world):
  _, out = world
  one = _take(G.make_grid_loader(out, "train", batch_size=4, seed=0, process_index=0,
                                 process_count=1), 3)
  parts = [_take(G.make_grid_loader(out, "train", batch_size=4, seed=0, process_index=p,
                                    process_count=2), 3) for p in range(2)]
  for step in range(3):
    merged = {k: np.concatenate([parts[0][step][k], parts[1][step][k]]) for k in one[step]}
    assert _equal(merged, one[step])


def test_finite_epochs_in_order_and_object_list(world, tmp_path):
  _, out = world
  it = G.make_grid_loader(out, "train", batch_size=4, seed=0, shuffle=False, num_epochs=1,
                          process_index=0, process_count=1)
  batches = list(it)
  assert [len(b["object_id"]) for b in batches] == [4, 2]
  assert np.concatenate([b["object_id"] for b in batches]).tolist() == list(range(6))
  path = str(tmp_path / "objects.txt")
  G.write_object_list(path, ["obj000004", "obj000001", "obj000010"], header="test list")
  assert G.read_object_list(path) == ["obj000004", "obj000001", "obj000010"]
  got = list(G.make_grid_loader(out, "train", batch_size=2, seed=0, shuffle=False, num_epochs=1,
                                object_list=path, process_index=0, process_count=1))
  # obj000010 is a test-split object: skipped in train.
  assert [b["object_id"].tolist() for b in got] == [[1, 4]]
  with pytest.raises(records.DataError, match=r"1 object id\(s\) are in no split.*obj999999"):
    G.make_grid_loader(out, "train", batch_size=2, seed=0, object_list=["obj000001", "obj999999"],
                       process_index=0, process_count=1)
  with pytest.raises(records.DataError, match="split 'train': no objects are left"):
    G.make_grid_loader(out, "train", batch_size=2, seed=0, object_list=["obj000010"],
                       process_index=0, process_count=1)


def test_loader_heldout_argument(world):
  _, out = world
  table = G.object_table(out, "train")
  # Hold out the first item's combination of object 0: that object (and any other naming it)
  # goes to the held-out part.
  combo = CAP.parse_caption(table[0][2])[0].combo
  split = CAP.CaptionSplit("train", frozenset([combo]))
  want_held = {i for i, _, c in table if combo in CAP.caption_combos(c)}
  kw = dict(batch_size=1, seed=0, shuffle=False, num_epochs=1, process_index=0, process_count=1)
  train_ids = [int(b["object_id"][0]) for b in G.make_grid_loader(out, "train", heldout=split, **kw)]
  held_ids = [int(b["object_id"][0]) for b in G.make_grid_loader(
      out, "train", heldout=CAP.CaptionSplit("heldout", split.combos), **kw)]
  assert set(held_ids) == want_held and 0 in want_held
  assert sorted(train_ids + held_ids) == [i for i, _, _ in table]
  with pytest.raises(records.DataError, match="heldout must be None"):
    G.make_grid_loader(out, "train", heldout=3, **kw)


# ------------------------------------------------------------------------------------------------
# Captions.


def _sampled_scenes(n):
  w = data_config.get_config().world
  for i in range(n):
    rng = np.random.default_rng([5, i])
    yield P.sample_scene(rng, min_primitives=w.min_primitives, max_primitives=w.max_primitives,
                         size_range=tuple(w.size_range), shapes=tuple(w.shapes),
                         rotate_prob=w.rotate_prob, scene_radius=w.scene_radius)


def test_parse_caption_recovers_every_primitive():
  for scene in _sampled_scenes(600):
    items = CAP.parse_caption(P.caption(scene))
    assert [(it.size, it.colour, it.shape) for it in items] == [
        (p.size_word, p.colour, p.shape) for p in scene]
  assert CAP.parse_caption("a large green cone beside a small orange box") == [
      CAP.Item("large", "green", "cone", "cone"), CAP.Item("small", "orange", "box", "box")]
  assert CAP.caption_colours("a red cube, an orange ring and a grey sphere") == [
      "red", "orange", "grey"]
  assert set(CAP.vocabulary()) >= {w for s in _sampled_scenes(50) for w in CAP._tokens(P.caption(s))}
  for bad, where in (("a red dragon", "shape noun"), ("the red cube", "'a' or 'an'"),
                     ("a red cube near a blue box", "a relation"), ("a large", "a colour")):
    with pytest.raises(records.DataError, match=where):
      CAP.parse_caption(bad)


def test_heldout_split_is_unseen_combinations_of_seen_words():
  combos = CAP.heldout_combinations(seed=0, num_heldout=8)  # caption_split's default
  assert len(combos) == 8 and len({c for c, _ in combos}) == 8  # distinct colours
  assert CAP.heldout_combinations(seed=0, num_heldout=8) == combos  # seeded
  assert CAP.heldout_combinations(seed=1, num_heldout=8) != combos
  caps = [P.caption(s) for s in _sampled_scenes(1500)]
  train = [c for c in caps if CAP.caption_split("train").keeps(c)]
  held = [c for c in caps if CAP.caption_split("heldout").keeps(c)]
  assert len(train) + len(held) == len(caps) and not set(train) & set(held)  # partition
  assert len(held) > 0.1 * len(caps) and len(train) > 0.5 * len(caps)
  train_combos = set().union(*(CAP.caption_combos(c) for c in train))
  assert not train_combos & combos  # no held-out combination is ever trained on
  train_words = {w for c in train for w in CAP._tokens(c)}
  assert {w for c in held for w in CAP._tokens(c)} <= train_words  # every word seen
  # Each held-out single-object caption is a combination absent from training.
  singles = [c for c in held if len(CAP.parse_caption(c)) == 1]
  assert singles and all(CAP.parse_caption(c)[0].combo in combos for c in singles)
  with pytest.raises(records.DataError, match="num_heldout must be in"):
    CAP.heldout_combinations(num_heldout=10)


def test_heldout_roles_split_the_combinations():
  """Val and test combinations: disjoint, together the held-out set, val the first half in sorted
  order; a caption's role is val / test only when all its held-out combinations agree."""
  combos = CAP.heldout_combinations(0, 8)
  roles = CAP.heldout_roles(0, 8)
  assert roles["val"] | roles["test"] == combos and not roles["val"] & roles["test"]
  assert sorted(roles["val"]) == sorted(combos)[:4]
  assert CAP.heldout_roles(0, 5)["val"] == frozenset(sorted(CAP.heldout_combinations(0, 5))[:3])
  v, t = sorted(roles["val"])[0], sorted(roles["test"])[0]
  name = lambda c: f"a {c[0]} {P.shape_noun(c[1])}"  # noqa: E731
  assert CAP.caption_role(name(v), roles) == "val"
  assert CAP.caption_role(name(t), roles) == "test"
  assert CAP.caption_role(f"{name(v)} beside {name(t)}", roles) == "mixed"
  seen = next((c, s) for c in P.COLOURS for s in P.SHAPES if (c, s) not in combos)
  assert CAP.caption_role(name(seen), roles) is None
  assert CAP.caption_role(f"{name(seen)} beside {name(t)}", roles) == "test"


def test_heldout_sample_captions_use_the_one_noun_map():
  """configs/mv_sdxl.py's sample captions: held-out combinations only, every combination once
  before sizes cycle, written with primitives.SHAPE_NOUNS' nouns (a torus is a "ring"), which
  the word tokenizer's vocabulary and the caption parser share."""
  from instant3d_jax.diffusion import word_tokenizer
  caps = CAP.heldout_sample_captions(8, seed=0, num_heldout=8)
  roles = CAP.heldout_roles(0, 8)
  combos = roles["val"]  # sample grids show val captions only, never test ones
  assert len(caps) == 8 and set().union(*map(CAP.caption_combos, caps[:4])) == combos
  assert caps[4].split()[1] == "small" and CAP.caption_combos(caps[4]) <= combos
  assert not set().union(*map(CAP.caption_combos, caps)) & roles["test"]
  assert "a blue ring" in caps and not any("torus" in c for c in caps)
  assert P.shape_noun(CAP.NOUN_SHAPE["ring"]) == "ring" and CAP.NOUN_SHAPE["cube"] == "box"
  assert set(CAP.NOUN_SHAPE) <= set(word_tokenizer.world_vocabulary())
