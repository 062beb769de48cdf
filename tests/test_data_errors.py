"""Bad data and bad input in data_pipeline: nothing already written is deleted, damaged shards and
malformed files end in a `DataError` naming the file, and the data commands print one line."""
import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from instant3d_jax.configs import data as data_config
from data_pipeline import cameras_json
from data_pipeline import lrm_input as L
from data_pipeline import procedural, records, render_import
from instant3d_jax import errors

ROOT = Path(__file__).resolve().parents[1]


def _small_cfg():
  """The tiny world cut to 4 train objects in 2 shards (no eval rig: fast to render)."""
  cfg = data_config.get_config("tiny")
  cfg.num_objects = 4
  cfg.split_fractions = (1.0, 0.0, 0.0)
  cfg.records_per_shard = 2
  return cfg


@pytest.fixture(scope="module")
def small(tmp_path_factory):
  cfg = _small_cfg()
  out = str(tmp_path_factory.mktemp("errors") / "data")
  procedural.generate(cfg, out, progress=False)
  return cfg, out


def _snapshot(folder):
  """{file name: bytes} of a folder (what must survive a refused write)."""
  return {n: (Path(folder) / n).read_bytes() for n in sorted(os.listdir(folder))
          if (Path(folder) / n).is_file()}


def _files_of(meta):
  """The files a finished data set consists of, sorted."""
  return sorted(["metadata.json"] + [n for info in meta["splits"].values() for n in info["shards"]])


def _renders(small, dst):
  """Object folders (importer input) made from the small data set's records."""
  _, out = small
  for rec in records.RecordSource(out, "train"):
    render_import.write_object_folder(rec, os.path.join(dst, rec["object_id"]))
  return dst


# ------------------------------------------------------------------------------------------------
# Nothing deletes a user's data.


def test_importer_refuses_to_replace_a_data_set(small, tmp_path):
  src = _renders(small, str(tmp_path / "renders"))
  out = str(tmp_path / "imported")
  render_import.import_renders(src, out, split_fractions=(1.0, 0.0, 0.0), records_per_shard=2,
                               progress=False)
  before = _snapshot(out)
  # Another import into the same folder (here: other shard counts) must not touch it.
  with pytest.raises(records.DataError, match=r"imported: already holds a data set .*"
                     r"pass --overwrite \(overwrite=True\) to replace it"):
    render_import.import_renders(src, out, split_fractions=(1.0, 0.0, 0.0), records_per_shard=4,
                                 progress=False)
  assert _snapshot(out) == before
  meta = render_import.import_renders(src, out, split_fractions=(1.0, 0.0, 0.0),
                                      records_per_shard=4, progress=False, overwrite=True)
  assert meta["splits"]["train"]["shards"] == ["train.array_record-00000-of-00001"]
  assert sorted(os.listdir(out)) == _files_of(meta)  # the old shards are gone
  assert len(records.RecordSource(out, "train")) == 4


def test_shards_without_metadata_are_not_deleted(small, tmp_path):
  """Shards of unknown origin (no metadata.json, not left by an interrupted run) stay."""
  cfg, out = small
  src = _renders(small, str(tmp_path / "renders"))
  mine = tmp_path / "mine"
  mine.mkdir()
  shutil.copy(os.path.join(out, "train.array_record-00000-of-00002"), mine)
  (mine / "notes.txt").write_text("keep me")
  before = _snapshot(mine)
  with pytest.raises(records.DataError, match=r"mine: holds data set shards "
                     r"\(train\.array_record-00000-of-00002\) but no metadata\.json.*--overwrite"):
    render_import.import_renders(src, str(mine), progress=False)
  with pytest.raises(records.DataError, match=r"mine: holds data set shards"):
    procedural.generate(cfg, str(mine), progress=False)
  with pytest.raises(records.DataError, match=r"mine: holds data set shards"):
    procedural.ensure_dataset(cfg, str(mine), progress=False)
  assert _snapshot(mine) == before
  procedural.generate(cfg, str(mine), progress=False, overwrite=True)
  assert (mine / "notes.txt").read_text() == "keep me"  # only data set files are replaced
  assert len(records.RecordSource(str(mine), "train")) == 4


def test_generator_refuses_to_replace_a_data_set(small, tmp_path):
  cfg, out = small
  other = str(tmp_path / "other")
  shutil.copytree(out, other)
  before = _snapshot(other)
  with pytest.raises(records.DataError, match=r"other: already holds a data set .*--overwrite"):
    procedural.generate(cfg, other, progress=False)
  changed = _small_cfg()
  changed.seed = 3
  with pytest.raises(records.DataError, match=r"different config \(differs in \['seed'\]"):
    procedural.ensure_dataset(changed, other, progress=False)
  assert _snapshot(other) == before
  # An imported data set is never taken for a procedural one.
  src = _renders(small, str(tmp_path / "renders"))
  imported = str(tmp_path / "imported")
  render_import.import_renders(src, imported, split_fractions=(1.0, 0.0, 0.0), progress=False)
  before = _snapshot(imported)
  with pytest.raises(records.DataError, match=r"imported: holds an imported data set"):
    procedural.ensure_dataset(cfg, imported, progress=False)
  assert _snapshot(imported) == before


def test_interrupted_run_is_resumed_without_overwrite(small, tmp_path):
  """What a failed or interrupted run left (shards, no metadata.json) is replaced by the next."""
  cfg, out = small
  src = _renders(small, str(tmp_path / "renders"))
  bad = os.path.join(src, sorted(os.listdir(src))[3], "sup_000.png")
  good = Path(bad).read_bytes()
  Path(bad).write_bytes(b"not an image")
  dst = str(tmp_path / "imported")
  with pytest.raises(records.DataError, match=r"sup_000\.png: not a decodable PNG"):
    render_import.import_renders(src, dst, split_fractions=(1.0, 0.0, 0.0), records_per_shard=2,
                                 progress=False)
  assert "train.array_record-00000-of-00002" in os.listdir(dst)  # first shard was finished
  assert "metadata.json" not in os.listdir(dst)
  Path(bad).write_bytes(good)
  meta = render_import.import_renders(src, dst, split_fractions=(1.0, 0.0, 0.0),
                                      records_per_shard=2, progress=False)
  assert meta["num_objects"] == 4
  assert sorted(os.listdir(dst)) == _files_of(meta)  # the in-progress marker is gone
  # The procedural cache resumes the same way.
  gen = tmp_path / "gen"
  shutil.copytree(dst, gen)
  os.remove(gen / "metadata.json")
  (gen / records.IN_PROGRESS_FILE).write_text("{}")
  procedural.ensure_dataset(cfg, str(gen), progress=False)
  shards = lambda d: {n: b for n, b in _snapshot(d).items() if ".array_record-" in n}  # noqa: E731
  assert shards(gen) == shards(out) and records.read_metadata(str(gen))["generator"] == "synthetic"
  assert not (gen / records.IN_PROGRESS_FILE).exists()


# ------------------------------------------------------------------------------------------------
# A shard damaged inside a record.


def _damage_chunk(path):
  """Overwrites 16 bytes inside the first record's chunk data (after the 64-byte file header
  and the chunk header): the file still opens, the record's hash no longer matches."""
  data = bytearray(Path(path).read_bytes())
  data[1000:1016] = b"\xff" * 16
  Path(path).write_bytes(bytes(data))


def test_damaged_record_is_named_on_every_read_path(small, tmp_path):
  cfg, out = small
  bad = str(tmp_path / "bad")
  shutil.copytree(out, bad)
  shard = os.path.join(bad, "train.array_record-00001-of-00002")
  _damage_chunk(shard)
  src = records.RecordSource(bad, "train")  # the shard's index is intact: it opens
  assert len(src) == 4 and src[0]["index"] == 0 and src[3]["index"] == 3
  want = (r"train\.array_record-00001-of-00002: record 0 of the shard \(record 2 of split "
          r"'train'\) cannot be read.*chunk data hash mismatch")
  with pytest.raises(records.DataError, match=want):
    src.raw(2)
  with pytest.raises(records.DataError, match=want):
    src[2]
  with pytest.raises(records.DataError, match=want):
    list(src)
  lc = copy.deepcopy(cfg.loader)
  it = L.train_iterator(bad, lc, process_index=0, process_count=1)
  with pytest.raises(records.DataError, match=want):
    for _ in range(3):  # every object is drawn in the first epoch (4 objects, batch 4)
      next(it)


def test_broken_record_payload_is_named(small, tmp_path):
  """An intact shard whose records are not the project's msgpack, or not of its schema."""
  from array_record.python import array_record_module
  _, out = small
  bad = tmp_path / "bad"
  shutil.copytree(out, bad)
  shard = str(bad / "train.array_record-00000-of-00002")
  from flax import serialization
  rec = records.RecordSource(out, "train")[1]
  rec["groups"]["rig"]["K"] = rec["groups"]["rig"]["K"][:3]  # 4 images, 3 intrinsics
  w = array_record_module.ArrayRecordWriter(shard, "group_size:1")
  w.write(b"\x01\x02 not msgpack")
  w.write(serialization.msgpack_serialize(rec))
  w.close()
  src = records.RecordSource(str(bad), "train")
  with pytest.raises(records.DataError, match=r"train\.array_record-00000-of-00002: record 0 of "
                     r"the shard \(record 0 of split 'train'\): record is not a valid msgpack"):
    src[0]
  with pytest.raises(records.DataError, match=r"00000-of-00002: record 1 of the shard \(record 1 "
                     r"of split 'train'\): view group 'rig' has 4 images, expected c2w \[4, 4, 4\] "
                     r"and K \[4, 3, 3\], found \[4, 4, 4\] and \[3, 3, 3\]"):
    src[1]


@pytest.mark.parametrize("edit,message", [
    (lambda m: m.pop("splits"), r"metadata\.json: expected a 'splits' map"),
    (lambda m: m["splits"]["train"].pop("shards"), r"metadata\.json: split 'train' needs "
     r"'shards' \(a list of file names\) and 'num_objects'"),
    (lambda m: m["splits"]["train"].update(num_objects="four"), r"metadata\.json: split 'train'"),
    (lambda m: m["splits"].update(train=[1]), r"metadata\.json: split 'train'"),
])
def test_malformed_metadata_is_named(small, tmp_path, edit, message):
  _, out = small
  bad = tmp_path / "bad"
  shutil.copytree(out, bad)
  meta = json.loads((bad / "metadata.json").read_text())
  edit(meta)
  (bad / "metadata.json").write_text(json.dumps(meta))
  with pytest.raises(records.DataError, match=message):
    records.RecordSource(str(bad), "train")


def test_metadata_that_is_not_a_json_object_is_named(tmp_path):
  (tmp_path / "metadata.json").write_text("[1, 2]")
  with pytest.raises(records.DataError, match=r"metadata\.json: expected a JSON object"):
    records.read_metadata(str(tmp_path))
  (tmp_path / "metadata.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
  with pytest.raises(records.DataError, match=r"metadata\.json: not valid JSON"):
    records.read_metadata(str(tmp_path))


# ------------------------------------------------------------------------------------------------
# Malformed importer input.


@pytest.mark.parametrize("doc,message", [
    ({"width": "wide", "height": 8, "fov_deg": 50, "frames": []},
     r"c\.json: 'width' must be a positive integer \(image width in pixels\), found 'wide'"),
    ({"width": 8, "height": [8], "fov_deg": 50, "frames": []},
     r"c\.json: 'height' must be a positive integer"),
    ({"width": 8, "height": 8, "fov_deg": "wide", "frames": [{"file": "a.png",
                                                               "c2w": np.eye(4).tolist()}]},
     r"c\.json: the file's 'fov_deg' must be a number in \(0, 180\), found 'wide'"),
    ({"width": 8, "height": 8, "fov_deg": 50, "frames": ["a.png"]},
     r"c\.json: frame 0 must be a JSON object with 'file' and 'c2w', found str"),
    ({"width": 8, "height": 8, "fov_deg": 50, "frames": [{"file": 3, "c2w": np.eye(4).tolist()}]},
     r"c\.json: frame 0 'file' must be an image file name, found 3"),
])
def test_cameras_json_wrong_types_are_named(tmp_path, doc, message):
  path = str(tmp_path / "c.json")
  json.dump(doc, open(path, "w"))
  with pytest.raises(records.DataError, match=message):
    cameras_json.read_cameras_json(path)


def test_unreadable_image_is_named(small, tmp_path):
  src = _renders(small, str(tmp_path / "renders"))
  folder = os.path.join(src, sorted(os.listdir(src))[0])
  os.remove(os.path.join(folder, "rig_001.png"))
  os.mkdir(os.path.join(folder, "rig_001.png"))  # a folder where an image should be
  with pytest.raises(records.DataError, match=r"rig_001\.png: image listed in cameras\.json "
                     r"cannot be read \(IsADirectoryError"):
    render_import.import_renders(src, str(tmp_path / "out"), progress=False)


def test_bad_settings_are_config_errors(small, tmp_path):
  cfg, _ = small
  src = _renders(small, str(tmp_path / "renders"))
  with pytest.raises(errors.ConfigError, match=r"split_fractions must be 3 non-negative"):
    render_import.import_renders(src, str(tmp_path / "o"), split_fractions=(0.5, 0.5),
                                 progress=False)
  with pytest.raises(errors.ConfigError, match=r"records_per_shard must be a positive integer, "
                     r"found 0"):
    render_import.import_renders(src, str(tmp_path / "o"), records_per_shard=0, progress=False)
  with pytest.raises(records.DataError, match=r"renders/.*: output directory is an existing file"):
    render_import.import_renders(
        src, os.path.join(src, sorted(os.listdir(src))[0], "cameras.json"), progress=False)


# ------------------------------------------------------------------------------------------------
# The commands: one line on stderr, exit code ≠ 0, --help.


def _run(module, *args):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)


def _assert_one_line_error(r, pattern):
  assert r.returncode != 0, r.stdout + r.stderr
  assert "Traceback" not in r.stderr, r.stderr
  lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
  assert __import__("re").search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize("module", ["data_pipeline.importer", "data_pipeline.synthetic"])
def test_command_help(module):
  r = _run(module, "--help")
  assert "--out" in r.stdout and "--overwrite" in r.stdout and "Traceback" not in r.stderr
  assert r.returncode == 0, r.stderr


def test_importer_command_errors_are_one_line(small, tmp_path):
  _, out = small
  r = _run("data_pipeline.importer", "--src", str(tmp_path / "nothing"), "--out",
           str(tmp_path / "o"))
  _assert_one_line_error(r, r"nothing: source directory of object folders not found")
  src = _renders(small, str(tmp_path / "renders"))
  r = _run("data_pipeline.importer", "--src", src, "--out", out)
  _assert_one_line_error(r, r"data: already holds a data set .*--overwrite")
  r = _run("data_pipeline.importer", "--src", src, "--out", str(tmp_path / "o"),
           "--split_fractions", "0.5,half")
  _assert_one_line_error(r, r"--split_fractions")


def test_synthetic_command_refuses_and_overwrites(small, tmp_path):
  _, out = small
  before = _snapshot(out)
  r = _run("data_pipeline.synthetic", "--out", out, "--num_objects", "2")
  _assert_one_line_error(r, r"data: already holds a data set .*--overwrite")
  assert _snapshot(out) == before
  dst = str(tmp_path / "cli")
  shutil.copytree(out, dst)
  r = _run("data_pipeline.synthetic", "--out", dst, "--config", "configs/data.py:tiny",
           "--num_objects", "3", "--resolution", "8", "--views", "2", "--seed", "5",
           "--split_fractions", "1,0,0", "--supersample", "1", "--overwrite")
  assert r.returncode == 0, r.stderr
  assert "objects/s" in r.stdout
  meta = json.load(open(os.path.join(dst, "metadata.json")))
  assert meta["config"]["seed"] == 5 and meta["resolution"] == 8 and meta["views"]["sup"] == 2
  assert meta["num_objects"] == 3 and sorted(os.listdir(dst)) == _files_of(meta)
