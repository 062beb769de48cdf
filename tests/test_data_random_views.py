"""The LRM loader's `input_views='random'` (InstantMesh's sampling): per example, the inputs are
drawn without replacement from all of the object's views and the targets from the others, the
cameras travel with the images, and the draw is a pure function of (seed, stream position)."""
import copy

import numpy as np
import pytest

from instant3d_jax.configs import data as data_config
from data_pipeline import lrm_input as L
from data_pipeline import primitives as P
from data_pipeline import procedural, records, render_import
from instant3d_jax import errors
from tests.test_data_loader import _equal, _loader_cfg, _take

V, T = 6, 4   # InstantMesh: 6 inputs, 4 targets


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  """4 train objects at 16², each with the 4 rig views and 8 'sup' views (12 views)."""
  cfg = data_config.get_config("tiny")
  cfg.num_objects = 8
  cfg.num_sup_views = 8
  cfg.eval_rig_splits = ()
  out = str(tmp_path_factory.mktemp("random_views") / "data")
  procedural.generate(cfg, out, progress=False)
  return cfg, out


def _lc(cfg, **kw):
  return _loader_cfg(cfg, **dict(dict(input_views="random", num_input_views=V, num_targets=T),
                                 **kw))


def _iter(out, lc, p=0, n=1):
  return L.train_iterator(out, lc, process_index=p, process_count=n)


def _stored(rec):
  """All training views of a record: (rgb over white [N, r, r, 3], c2w [N, 4, 4], K [N, 3, 3])."""
  pool = L.all_views(rec)
  rgb = np.stack([L._decode_views(rec, g, [v], 0)[0][0] for g, v in pool])
  c2w = np.stack([np.asarray(rec["groups"][g]["c2w"][v], np.float32) for g, v in pool])
  K = np.stack([np.asarray(rec["groups"][g]["K"][v], np.float32) for g, v in pool])
  return rgb, c2w, K


def _view_of_camera(c2w_all, c2w):
  """Index of the stored view whose camera is `c2w` (exactly one must match)."""
  hit = np.flatnonzero(np.all(np.abs(c2w_all - c2w) < 1e-6, axis=(1, 2)))
  assert len(hit) == 1
  return int(hit[0])


def test_inputs_distinct_disjoint_from_targets_with_their_own_cameras(world):
  cfg, out = world
  batch = next(_iter(out, _lc(cfg)))
  assert batch["input_images"].shape == (4, V, 16, 16, 3)
  assert batch["input_c2w"].shape == (4, V, 4, 4) and batch["input_K"].shape == (4, V, 3, 3)
  assert batch["input_masks"].shape == (4, V, 16, 16)
  assert batch["target_images"].shape == (4, T, 16, 16, 3)
  source = records.RecordSource(out, "train")
  for row in range(4):
    rec = source[int(batch["object_index"][row])]
    rgb, c2w, K = _stored(rec)
    assert len(rgb) == 12
    # Which stored view each image is, found from its camera alone.
    ins = [_view_of_camera(c2w, c) for c in batch["input_c2w"][row]]
    tgs = [_view_of_camera(c2w, c) for c in batch["target_c2w"][row]]
    assert len(set(ins)) == V and len(set(tgs)) == T and not set(ins) & set(tgs)
    assert ins == batch["input_views"][row].tolist() and tgs == batch["target_views"][row].tolist()
    np.testing.assert_array_equal(batch["input_images"][row], rgb[ins])
    np.testing.assert_array_equal(batch["input_K"][row], K[ins])
    np.testing.assert_array_equal(batch["target_images"][row], rgb[tgs])
    np.testing.assert_array_equal(batch["target_K"][row], K[tgs])
    alpha = records.group_rgba(rec, "rig")  # the masks are the stored alpha (rig views here)
    for i, view in enumerate(ins):
      if view < 4:
        np.testing.assert_array_equal(batch["input_masks"][row, i], alpha[view, ..., 3] / 255.0)


def test_cameras_by_rerendering_the_scene(world):
  """Oracle: ray cast the record's scene with each input camera (and each cropped target's)."""
  cfg, out = world
  batch = next(_iter(out, _lc(cfg, crop_size=7, random_rig_azimuth=False)))
  source = records.RecordSource(out, "train")
  for row in range(2):
    scene = P.scene_from_json(source[int(batch["object_index"][row])]["scene"])
    for key, size in (("input", 16), ("target", 7)):
      for i in range(batch[f"{key}_c2w"].shape[1]):
        rgba = P.render_rgba(scene, batch[f"{key}_c2w"][row, i], batch[f"{key}_K"][row, i],
                             size, size, 1)
        np.testing.assert_allclose(batch[f"{key}_images"][row, i], P.composite_white(rgba),
                                   atol=1.0 / 255 + 1e-6)


def test_draw_differs_between_examples_and_epochs_and_is_reproducible(world):
  cfg, out = world
  lc = _lc(cfg)
  batches = _take(_iter(out, lc), 3)      # 4 train objects, batch 4: one epoch per batch
  draws = {}
  for b in batches:
    for obj, ins, tgs in zip(b["object_index"], b["input_views"], b["target_views"]):
      draws.setdefault(int(obj), []).append(tuple(ins) + tuple(tgs))
  assert sorted(draws) == [0, 1, 2, 3]
  assert all(len(set(d)) == 3 for d in draws.values())            # per epoch
  assert len({d[0] for d in draws.values()}) == 4                 # per example
  # Every view (rig and sup alike) is drawn as an input somewhere.
  assert set(np.concatenate([b["input_views"].ravel() for b in batches])) == set(range(12))
  again = _take(_iter(out, lc), 3)
  assert all(_equal(a, b) for a, b in zip(batches, again))
  other = next(_iter(out, _lc(cfg, seed=5)))
  assert not np.array_equal(other["input_views"], batches[0]["input_views"])


def test_process_count_and_resume(world):
  cfg, out = world
  lc = _lc(cfg, crop_size=8, random_rig_azimuth=True)
  one = _take(_iter(out, lc), 3)
  halves = [_take(_iter(out, lc, p, 2), 3) for p in range(2)]
  for step in range(3):
    assert _equal({k: np.concatenate([h[step][k] for h in halves]) for k in one[step]}, one[step])
  it = _iter(out, lc)
  _take(it, 1)
  state = it.get_state()
  fresh = _iter(out, lc)
  fresh.set_state(state)
  assert all(_equal(a, b) for a, b in zip(_take(fresh, 2), one[1:]))


def test_too_few_views_and_bad_settings_are_one_line_errors(world):
  cfg, out = world
  with pytest.raises(errors.DataError) as e:
    next(_iter(out, _lc(cfg, num_targets=7)))
  assert "\n" not in str(e.value)
  assert ("data.loader.input_views='random' draws num_input_views + num_targets = 6 + 7 = 13 "
          "distinct views, the object has 12 (4 'rig', 8 'sup')") in str(e.value)
  with pytest.raises(errors.ConfigError, match=r"data\.loader\.input_views must be one of"):
    L.train_dataset(out, _lc(cfg, input_views="rnd"), process_index=0, process_count=1)
  with pytest.raises(errors.ConfigError, match=r"needs data\.loader\.num_input_views ≥ 1"):
    L.train_dataset(out, _lc(cfg, num_input_views=0), process_index=0, process_count=1)


def test_rig_mode_is_unchanged(world):
  """'rig' (the default) ignores num_input_views and gives the batches of a loader section
  without the new keys: the fixed rig, no extra keys."""
  cfg, out = world
  old = copy.deepcopy(cfg.loader)
  del old["input_views"], old["num_input_views"]
  old.crop_size, old.random_rig_azimuth = 8, True
  lc = copy.deepcopy(old)
  lc.input_views, lc.num_input_views = "rig", V
  for a, b in zip(_take(_iter(out, old), 2), _take(_iter(out, lc), 2)):
    assert _equal(a, b)
    assert "input_views" not in a and a["input_images"].shape[1] == 4


def _bias_section(c):
  """Where the config keeps `attention_bias` (model.extras; model.decoder before extras)."""
  extras = c.model.get("extras")
  return extras if extras is not None and "attention_bias" in extras else c.model.decoder


def _run_config(data_dir):
  """The tiny LRM run config on an existing data set, with 6 random input views."""
  from instant3d_jax.configs import lrm
  c = lrm.get_config("tiny")
  c.data.source = "records"
  c.data_dir = str(data_dir)
  c.data.loader.input_views = "random"
  c.data.loader.num_targets = T
  c.model.num_views = V
  _bias_section(c).attention_bias = False   # tiny's bias is tied to the fixed rig
  c.model.input_resolution = 16
  c.model.encoder.num_layers = 1
  c.model.decoder.num_layers = 1
  c.train.global_batch_size = 2
  return c


@pytest.fixture(scope="module")
def imported(world, tmp_path_factory):
  """The world's objects written as importer folders and imported (the 'records' source)."""
  _, out = world
  base = tmp_path_factory.mktemp("random_views_import")
  for s in records.SPLITS:
    for rec in records.RecordSource(out, s):
      render_import.write_object_folder(rec, str(base / "renders" / rec["object_id"]))
  dst = base / "imported"
  render_import.import_renders(str(base / "renders"), str(dst), split_fractions=(0.5, 0.25, 0.25),
                               progress=False)
  return dst


def test_records_source_run_config_and_batch_spec(imported):
  from data_pipeline import datasets
  from instant3d_jax.train import lrm_task
  cfg = _run_config(imported)
  info = datasets.prepare(cfg, progress=False)
  assert info.generator == "import" and info.groups["train"] == {"rig": 4, "sup": 8}
  datasets.check_train(info, cfg)
  ld = datasets.loader_config(cfg, info)
  assert (ld.input_views, ld.num_input_views, ld.num_targets) == ("random", V, T)
  spec = lrm_task.batch_spec(cfg, info)
  batch = next(L.train_iterator(str(imported), ld, process_index=0, process_count=1))
  for k, s in spec.items():
    assert batch[k].shape == s.shape and batch[k].dtype == s.dtype, k
  by_index = {r["index"]: r for r in records.RecordSource(str(imported), "train")}
  for row in range(2):
    rgb, c2w, _ = _stored(by_index[int(batch["object_index"][row])])
    ins = [_view_of_camera(c2w, c) for c in batch["input_c2w"][row]]
    assert len(set(ins)) == V and ins == batch["input_views"][row].tolist()
    np.testing.assert_allclose(batch["input_images"][row], rgb[ins], atol=1e-6)  # 16² as stored

  # Fields that do not fit name themselves, before any batch is read.
  cfg.data.loader.num_targets = 7
  with pytest.raises(errors.DataError, match=r"input_views='random' draws model\.num_views \+ "
                     r"data\.loader\.num_targets = 6 \+ 7 = 13 distinct views .* have 12"):
    datasets.check_train(info, cfg)
  cfg = _run_config(imported)
  cfg.data.loader.num_input_views = 4
  with pytest.raises(errors.ConfigError, match=r"num_input_views=4 but model\.num_views=6"):
    datasets.check_train(info, cfg)
  cfg = _run_config(imported)
  _bias_section(cfg).attention_bias = True
  with pytest.raises(errors.ConfigError,
                     match=r"attention_bias .*data\.loader\.input_views='random'"):
    datasets.check_train(info, cfg)
  cfg = _run_config(imported)
  cfg.data.loader.input_views = "rig"
  with pytest.raises(errors.ConfigError, match=r"model\.num_views=6 .* 4 'rig' views"):
    datasets.check_train(info, cfg)


@pytest.mark.slow
def test_worker_processes_give_the_same_random_draws(world):
  cfg, out = world
  ref = _take(_iter(out, _lc(cfg, crop_size=8)), 3)
  it = _iter(out, _lc(cfg, crop_size=8, worker_count=2))
  got = _take(it, 3)
  it.close()
  assert all(_equal(a, b) for a, b in zip(got, ref))
