"""The grain LRM input pipeline: sharding across processes, exact resume, camera bookkeeping."""
import copy
import os
import shutil

import numpy as np
import pytest

from instant3d_jax.configs import data as data_config
from data_pipeline import lrm_input as L
from data_pipeline import primitives as P
from data_pipeline import procedural, records
from instant3d_jax import cameras as C


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  cfg = data_config.get_config("tiny")
  out = str(tmp_path_factory.mktemp("loader") / "data")
  procedural.generate(cfg, out, progress=False)
  return cfg, out


def _loader_cfg(cfg, **kw):
  lc = copy.deepcopy(cfg.loader)
  for k, v in kw.items():
    lc[k] = v
  return lc


def _take(it, n):
  return [next(it) for _ in range(n)]


def _equal(a, b):
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_batch_shapes_ranges_and_cameras(data):
  cfg, out = data
  lc = _loader_cfg(cfg, crop_size=8, num_targets=3)
  batch = next(L.train_iterator(out, lc, process_index=0, process_count=1))
  assert batch["input_images"].shape == (4, 4, 16, 16, 3)
  assert batch["target_images"].shape == (4, 3, 8, 8, 3)
  assert batch["target_masks"].shape == (4, 3, 8, 8)
  assert batch["input_c2w"].shape == (4, 4, 4, 4) and batch["target_K"].shape == (4, 3, 3, 3)
  for k in ("input_images", "target_images", "target_masks"):
    v = batch[k]
    assert v.dtype == np.float32 and v.min() >= 0.0 and v.max() <= 1.0
  assert batch["input_images"].max() == 1.0 and batch["input_images"].min() < 0.9  # white bg
  np.testing.assert_allclose(batch["input_c2w"][0], np.asarray(C.instant3d_rig(16).c2w), atol=1e-6)
  inp, tgt = L.batch_to_cameras(batch)
  assert inp.batch_shape == (4, 4) and (inp.width, inp.height) == (16, 16)
  assert tgt.batch_shape == (4, 3) and (tgt.width, tgt.height) == (8, 8)


def test_global_batch_is_independent_of_process_count(data):
  """Two simulated processes together produce exactly the one-process global batches."""
  cfg, out = data
  lc = _loader_cfg(cfg, crop_size=8, random_rig_azimuth=True)
  one = _take(L.train_iterator(out, lc, process_index=0, process_count=1), 4)
  p0 = _take(L.train_iterator(out, lc, process_index=0, process_count=2), 4)
  p1 = _take(L.train_iterator(out, lc, process_index=1, process_count=2), 4)
  order = L.GlobalOrder(6, lc.seed)
  for step in range(4):
    merged = {k: np.concatenate([p0[step][k], p1[step][k]]) for k in one[step]}
    assert _equal(merged, one[step])
    assert list(one[step]["object_index"]) == order.global_batch(step, 4)
  # 4 steps × 4 = 16 positions: each epoch of 6 visits all train objects once.
  seq = np.concatenate([b["object_index"] for b in one])
  assert sorted(seq[:6]) == list(range(6)) and sorted(seq[6:12]) == list(range(6))
  assert list(seq[:6]) != list(seq[6:12])  # reshuffled per epoch
  with pytest.raises(ValueError, match="not divisible by the process count 3"):
    L.train_dataset(out, lc, process_index=0, process_count=3)


def test_restored_iterator_continues_identically(data):
  cfg, out = data
  lc = _loader_cfg(cfg, crop_size=8)
  it = L.train_iterator(out, lc, process_index=0, process_count=1)
  _take(it, 3)
  state = it.get_state()
  expected = _take(it, 3)
  fresh = L.train_iterator(out, lc, process_index=0, process_count=1)
  fresh.set_state(state)
  for a, b in zip(_take(fresh, 3), expected):
    assert _equal(a, b)
  # A different seed gives a different stream.
  other = next(L.train_iterator(out, _loader_cfg(cfg, seed=7), process_index=0, process_count=1))
  first = next(L.train_iterator(out, lc, process_index=0, process_count=1))
  assert not np.array_equal(other["object_index"], first["object_index"])


def _rerender(source, batch, row, t, width, height, supersample):
  """Oracle: ray cast the record's scene again with the batch's target camera."""
  rec = source[int(batch["object_index"][row])]
  scene = P.scene_from_json(rec["scene"])
  rgba = P.render_rgba(scene, batch["target_c2w"][row, t], batch["target_K"][row, t], width,
                       height, supersample)
  return P.composite_white(rgba), rgba[..., 3]


def test_crop_intrinsics_by_rerendering(data):
  cfg, out = data
  lc = _loader_cfg(cfg, crop_size=7, num_targets=4)
  batch = next(L.train_iterator(out, lc, process_index=0, process_count=1))
  source = records.RecordSource(out, "train")
  assert not np.all(batch["target_K"][..., 0, 2] == 3.5)  # crops are not all centred
  for row in range(2):
    for t in range(4):
      rgb, a = _rerender(source, batch, row, t, 7, 7, 1)
      np.testing.assert_allclose(batch["target_images"][row, t], rgb, atol=1.0 / 255 + 1e-6)
      np.testing.assert_allclose(batch["target_masks"][row, t], a, atol=1.0 / 255 + 1e-6)


def test_resize_intrinsics_by_rerendering(data):
  """16² views area-resized to 8²: pixel centres of the 16² grid are the 2×2 sub-pixel centres
  of the 8² grid, so the result equals an 8² render with supersample 2 (up to PNG rounding)."""
  cfg, out = data
  lc = _loader_cfg(cfg, target_resolution=8, input_resolution=8)
  batch = next(L.train_iterator(out, lc, process_index=0, process_count=1))
  assert batch["input_images"].shape[2:4] == (8, 8)
  np.testing.assert_allclose(batch["input_K"][0], np.asarray(C.instant3d_rig(8).K), atol=1e-5)
  source = records.RecordSource(out, "train")
  for t in range(3):
    rgb, a = _rerender(source, batch, 0, t, 8, 8, 2)
    np.testing.assert_allclose(batch["target_images"][0, t], rgb, atol=1.5 / 255)
    np.testing.assert_allclose(batch["target_masks"][0, t], a, atol=1.0 / 255)


def test_random_rig_azimuth_rotates_all_cameras_together(data):
  cfg, out = data
  plain = next(L.train_iterator(out, _loader_cfg(cfg), process_index=0, process_count=1))
  rot = next(L.train_iterator(out, _loader_cfg(cfg, random_rig_azimuth=True), process_index=0,
                              process_count=1))
  np.testing.assert_array_equal(plain["input_images"], rot["input_images"])
  el, az, d = (np.asarray(x) for x in C.elevation_azimuth_distance(rot["input_c2w"]))
  np.testing.assert_allclose(el, 20.0, atol=1e-3)
  np.testing.assert_allclose(d, 2.7, atol=1e-4)
  offs = (az - np.array([0, 90, 180, 270])) % 360
  np.testing.assert_allclose(offs, offs[:, :1] * np.ones((1, 4)), atol=1e-3)  # one angle/object
  assert np.ptp(offs[:, 0]) > 1.0  # angles differ between objects
  # Targets turn by the same angle: the relative pose input → target is unchanged.
  rel = np.linalg.inv(plain["input_c2w"][:, :1]) @ plain["target_c2w"]
  rel_rot = np.linalg.inv(rot["input_c2w"][:, :1]) @ rot["target_c2w"]
  np.testing.assert_allclose(rel, rel_rot, atol=1e-5)


def test_eval_batches_gso_rig(data):
  cfg, out = data
  lc = _loader_cfg(cfg)  # eval_batch_size 2, 3 test objects → 2 batches, last one padded
  batches = list(L.eval_batches(out, lc, split="test", process_index=0, process_count=1))
  assert len(batches) == 2
  assert batches[1]["valid"].tolist() == [True, False]
  assert [i for b in batches for i, v in zip(b["object_index"], b["valid"]) if v] == [9, 10, 11]
  b = batches[0]
  assert b["target_images"].shape == (2, 3, 16, 16, 3)
  el, az, _ = (np.asarray(x) for x in C.elevation_azimuth_distance(b["input_c2w"]))
  np.testing.assert_allclose(az[0], [45, 135, 225, 315], atol=1e-3)
  tel, taz, _ = (np.asarray(x) for x in C.elevation_azimuth_distance(b["target_c2w"]))
  is_input = (np.abs(tel - 20) < 1e-3) & np.isin(np.round(taz), [45, 135, 225, 315])
  assert not is_input.any()
  again = next(L.eval_batches(out, lc, split="test", process_index=0, process_count=1))
  assert _equal(again, b)
  rotated = next(L.eval_batches(out, lc, split="test", rotate_deg=-45.0, process_index=0,
                                process_count=1))
  _, raz, _ = C.elevation_azimuth_distance(rotated["input_c2w"])
  np.testing.assert_allclose(np.asarray(raz)[0], [0, 90, 180, 270], atol=1e-3)
  # Two processes split the objects and pad to the same number of batches.
  parts = [list(L.eval_batches(out, lc, split="test", process_index=p, process_count=2))
           for p in range(2)]
  assert [len(x) for x in parts] == [1, 1]
  got = [i for part in parts for b in part for i, v in zip(b["object_index"], b["valid"]) if v]
  assert got == [9, 10, 11]
  # Objects without the GSO-style views (here the train split) are named, with the group.
  with pytest.raises(records.DataError, match=r"object obj000000 of split 'train' has 0 views "
                     r"of group 'eval', the GSO-style eval rig needs 64"):
    next(L.eval_batches(out, lc, split="train", process_index=0, process_count=1))


def test_corrupt_and_foreign_shards_are_named(data, tmp_path):
  cfg, out = data
  bad = str(tmp_path / "bad")
  shutil.copytree(out, bad)
  shard = os.path.join(bad, "train.array_record-00000-of-00002")
  raw = open(shard, "rb").read()
  with open(shard, "wb") as f:
    f.write(raw[:-100])
  with pytest.raises(records.DataError, match=r"train\.array_record-00000-of-00002: not a "
                     r"readable ArrayRecord file \(truncated"):
    L.train_dataset(bad, cfg.loader, process_index=0, process_count=1)
  with open(shard, "wb") as f:
    f.write(b"P6 not an array record file\n" * 100)
  with pytest.raises(records.DataError, match="00000-of-00002: not a readable ArrayRecord"):
    records.RecordSource(bad, "train")
  os.remove(shard)
  with pytest.raises(records.DataError, match="00000-of-00002: shard listed in metadata.json "
                     "does not exist"):
    records.RecordSource(bad, "train")
  with pytest.raises(records.DataError, match="no metadata.json"):
    records.RecordSource(str(tmp_path), "train")
  with pytest.raises(records.DataError, match="no split 'dev'"):
    records.RecordSource(out, "dev")


def test_image_of_wrong_size_in_record_is_named(data, tmp_path):
  cfg, out = data
  rec = records.RecordSource(out, "train")[0]
  rec["groups"]["rig"]["images"][2] = records.encode_png(np.zeros((8, 8, 4), np.uint8))
  with pytest.raises(records.DataError, match=r"object obj000000: image rig/2 is 8x8 but the "
                     r"record says 16x16"):
    L._decode_views(rec, "rig", range(4), 0)
  with pytest.raises(records.DataError, match="obj000000/rig/1: not a decodable PNG"):
    rec["groups"]["rig"]["images"][1] = b"garbage"
    L._decode_views(rec, "rig", [1], 0)


@pytest.mark.slow
def test_worker_processes_give_the_same_stream_and_resume(data):
  """worker_count = 2 (grain processes) yields the worker_count = 0 batches; state restores."""
  from absl import flags
  cfg, out = data
  ref = _take(L.train_iterator(out, _loader_cfg(cfg), process_index=0, process_count=1), 5)
  it = L.train_iterator(out, _loader_cfg(cfg, worker_count=2), process_index=0, process_count=1)
  got = _take(it, 2)
  state = it.get_state()
  got += _take(it, 3)
  it.close()
  assert all(_equal(a, b) for a, b in zip(got, ref))
  it = L.train_iterator(out, _loader_cfg(cfg, worker_count=2), process_index=0, process_count=1)
  it.set_state(state)
  assert all(_equal(a, b) for a, b in zip(_take(it, 3), ref[2:]))
  it.close()
  assert flags.FLAGS.is_parsed()
