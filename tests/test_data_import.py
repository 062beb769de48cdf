"""Real-render importer, the cameras JSON, and the TFDS builder reading the same data."""
import json
import os

import numpy as np
import pytest

from instant3d_jax.configs import data as data_config
from data_pipeline import cameras_json, procedural, records, render_import
from instant3d_jax import cameras as C


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  cfg = data_config.get_config("tiny")
  root = tmp_path_factory.mktemp("import")
  out = str(root / "data")
  procedural.generate(cfg, out, progress=False)
  return cfg, out, root


def _all_records(data_dir):
  return {rec["object_id"]: rec for s in records.SPLITS
          for rec in records.RecordSource(data_dir, s)}


def test_cameras_json_round_trip_both_conventions(tmp_path):
  cam = C.orbit_camera(np.array([10.0, 30.0]), np.array([40.0, 200.0]), 2.5, 40.0, 24, 24)
  for conv in ("opencv", "blender"):
    path = str(tmp_path / f"{conv}.json")
    cameras_json.write_cameras_json(path, cam, convention=conv)
    back = cameras_json.load_cameras_json(path)
    np.testing.assert_allclose(back.c2w, cam.c2w, atol=1e-6)
    np.testing.assert_allclose(back.K, cam.K, atol=1e-5)
    assert (back.width, back.height) == (24, 24)
  # Blender stores OpenGL axes: the camera looks along its −z; the file holds −(view direction).
  doc = json.load(open(tmp_path / "blender.json"))
  gl = np.asarray(doc["frames"][0]["c2w"])
  np.testing.assert_allclose(-gl[:3, 2], np.asarray(cam.c2w[0, :3, 2]), atol=1e-6)
  np.testing.assert_allclose(gl[:3, 1], -np.asarray(cam.c2w[0, :3, 1]), atol=1e-6)  # y up


def test_cameras_json_fov_and_default_intrinsics(tmp_path):
  path = str(tmp_path / "c.json")
  c2w = np.asarray(C.instant3d_rig(64).c2w)
  json.dump({"width": 64, "height": 64, "fov_deg": 50.0,
             "frames": [{"file": "a.png", "c2w": c2w[0].tolist()},
                        {"file": "b.png", "c2w": c2w[1].tolist(), "K": np.eye(3).tolist()}]},
            open(path, "w"))
  cam = cameras_json.load_cameras_json(path)
  np.testing.assert_allclose(cam.K[0], np.asarray(C.instant3d_rig(64).K[0]), rtol=1e-5)
  np.testing.assert_allclose(cam.K[1], np.eye(3))


@pytest.mark.parametrize("doc,message", [
    ({"height": 8, "frames": []}, r"c\.json: the file is missing the key 'width'"),
    ({"width": 8, "height": 8, "K": np.eye(3).tolist(), "frames": [{"file": "a.png"}]},
     r"c\.json: frame 0 is missing the key 'c2w' \(expected a 4x4 camera-to-world matrix\)"),
    ({"width": 8, "height": 8, "frames": [{"file": "a.png", "c2w": np.eye(4).tolist()}]},
     r"frame 0 is missing the key 'K' \(expected intrinsics"),
    ({"width": 8, "height": 8, "fov_deg": 50, "frames": [{"file": "a.png",
                                                           "c2w": np.eye(3).tolist()}]},
     r"frame 0 c2w must be a finite 4x4 matrix, found shape \(3, 3\)"),
    ({"width": 8, "height": 8, "fov_deg": 50, "convention": "opengl",
      "frames": [{"file": "a.png", "c2w": np.eye(4).tolist()}]},
     r"'convention' must be one of \('opencv', 'blender'\), found 'opengl'"),
])
def test_cameras_json_errors_name_file_and_key(tmp_path, doc, message):
  path = str(tmp_path / "c.json")
  json.dump(doc, open(path, "w"))
  with pytest.raises(records.DataError, match=message):
    cameras_json.read_cameras_json(path)


def test_import_reproduces_records(data, tmp_path):
  """Records → object folders (half OpenCV, half Blender cameras) → importer → same content."""
  _, out, _ = data
  originals = _all_records(out)
  src = tmp_path / "renders"
  for k, (oid, rec) in enumerate(sorted(originals.items())):
    render_import.write_object_folder(rec, str(src / oid),
                                      "blender" if k % 2 else "opencv")
  meta = render_import.import_renders(str(src), str(tmp_path / "imported"),
                                      split_fractions=(0.5, 0.25, 0.25), progress=False)
  assert meta["resolution"] == 16 and meta["num_objects"] == 12
  imported = _all_records(str(tmp_path / "imported"))
  assert set(imported) == set(originals)
  held_out = meta["splits"]["val"]["object_ids"] + meta["splits"]["test"]["object_ids"]
  assert held_out != sorted(originals)[6:]  # seeded permutation, not folder order
  for oid, rec in imported.items():
    orig = originals[oid]
    assert rec["caption"] == orig["caption"]
    assert set(rec["groups"]) == set(orig["groups"])
    for g in rec["groups"]:
      np.testing.assert_allclose(rec["groups"][g]["c2w"], orig["groups"][g]["c2w"], atol=1e-6)
      np.testing.assert_allclose(rec["groups"][g]["K"], orig["groups"][g]["K"], atol=1e-6)
      np.testing.assert_array_equal(records.group_rgba(rec, g), records.group_rgba(orig, g))


def test_import_errors_name_the_file(data, tmp_path):
  _, out, _ = data
  rec = records.RecordSource(out, "train")[0]
  src = tmp_path / "renders"
  folder = src / "thing"
  render_import.write_object_folder(rec, str(folder))
  # An image of the wrong size.
  (folder / "sup_001.png").write_bytes(records.encode_png(np.zeros((12, 16, 4), np.uint8)))
  with pytest.raises(records.DataError, match=r"thing/sup_001\.png: image is 16x12 but "
                     r"cameras\.json says 16x16"):
    render_import.import_renders(str(src), str(tmp_path / "o1"), progress=False)
  assert not os.path.exists(tmp_path / "o1" / "metadata.json")
  assert not [n for n in os.listdir(tmp_path / "o1") if "array_record" in n]  # no partial shards
  # A missing image.
  render_import.write_object_folder(rec, str(folder))
  os.remove(folder / "rig_002.png")
  with pytest.raises(records.DataError, match=r"thing/rig_002\.png: image listed in "
                     r"cameras\.json not found"):
    render_import.import_renders(str(src), str(tmp_path / "o2"), progress=False)
  # A cameras JSON missing a key.
  render_import.write_object_folder(rec, str(folder))
  doc = json.load(open(folder / "cameras.json"))
  del doc["frames"][3]["c2w"]
  json.dump(doc, open(folder / "cameras.json", "w"))
  with pytest.raises(records.DataError, match=r"thing/cameras\.json: frame 3 is missing the key "
                     r"'c2w'"):
    render_import.import_renders(str(src), str(tmp_path / "o3"), progress=False)


def test_tfds_data_source_serves_the_same_data(data):
  import tensorflow_datasets as tfds
  from data_pipeline import tfds_builder
  _, out, root = data
  tfds_builder.prepare(out, str(root / "tfds"))
  ds = tfds.data_source(tfds_builder.NAME, data_dir=str(root / "tfds"))
  originals = _all_records(out)
  assert {s: len(ds[s]) for s in ds} == {"train": 6, "val": 3, "test": 3}
  for split in ("train", "test"):
    for i in range(2):
      ex = ds[split][i]
      orig = originals[ex["object_id"].decode()]
      assert ex["caption"].decode() == orig["caption"] and ex["split"].decode() == split
      for g in records.GROUPS:
        if g not in orig["groups"]:
          assert ex[f"{g}_c2w"].shape == (0, 4, 4)
          continue
        np.testing.assert_array_equal(ex[f"{g}_c2w"], orig["groups"][g]["c2w"])
        np.testing.assert_array_equal(np.stack(ex[f"{g}_images"]), records.group_rgba(orig, g))
