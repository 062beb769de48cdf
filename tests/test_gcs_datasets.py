"""Data sets in a bucket (`data_dir=gs://…`): written by the importer, trained and evaluated on.

How `gs://` is reached (data_pipeline/records.py): metadata.json, in_progress.json, listings and
the convention-check table go through `instant3d_jax.fileio` (etils → fsspec, gcsfs in
production); the ArrayRecord shards are read by ArrayRecord's own native GCS client (ranged
reads, nothing staged to disk) and written locally, then uploaded one finished shard at a time,
metadata.json last.

Two stand-ins for GCS, nothing beyond 127.0.0.1:
  * `fake_gcs` (tests/fake_gcs.py): fsspec's memory filesystem under `gs://`. The native shard
    reader cannot see it, so it covers the writers only:
    - test_import_to_fake_bucket_is_complete_or_absent: `render_import.import_renders` to
      gs:// writes shards + metadata.json (+ the check table) and no temporaries or marker; a
      writer that fails mid-split leaves no metadata.json and no partial shard; a second import
      is refused without overwrite and replaces the set with it.
  * `gcs_emulator` (tests/fake_gcs.py): `gcp-storage-emulator` started as a subprocess on
    127.0.0.1 at a free port, reached by the native reader through
    `CLOUD_STORAGE_EMULATOR_ENDPOINT` and by fsspec through a small JSON-API filesystem, so both
    see one bucket:
    - test_importer_command_writes_to_bucket: `python -m data_pipeline.importer --out gs://…`
      (a subprocess) writes a complete data set that `datasets.open_dataset` validates shard by
      shard through the native reader;
    - test_train_and_eval_on_bucket (slow, ~70 s): `lrm_task.train` (train_lrm's library side) runs 3 steps of
      `configs/lrm.py:tiny` (small overrides, tests/test_train_lrm.py's) on that gs:// data set
      with a local workdir, then `lrm_eval.evaluate_checkpoint` (eval_lrm's) evaluates it on the
      bucket's test split; the batches equal those read from a local copy of the same set.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_pipeline import datasets, lrm_input, records, render_import
from instant3d_jax import errors
from instant3d_jax.configs import data as data_config
from tests.fake_gcs import bootstrap_code, fake_gcs, gcs_emulator  # noqa: F401  (fixtures)
from tests.test_train_lrm import tiny_config, write_folders

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
  """8 tiny objects at 16² (all with their GSO eval views) in the importer's folder layout."""
  base = tmp_path_factory.mktemp("gcs_renders")
  w = data_config.get_config("tiny")
  w.num_objects = 8
  w.eval_rig_splits = ("train", "val", "test")
  return write_folders(w, base)


def _import(src, out, **kw):
  return render_import.import_renders(str(src), out, split_fractions=(0.5, 0.25, 0.25),
                                      progress=False, **kw)


def test_import_to_fake_bucket_is_complete_or_absent(renders, fake_gcs, monkeypatch):
  out = "gs://bkt/sets/a"
  meta = _import(renders, out, checks=True)
  names = [f[len(out) + 1:] for f in fake_gcs.files()]
  shards = sorted(n for s in meta["splits"].values() for n in s["shards"])
  assert sorted(names) == sorted(shards + [records.METADATA_FILE,
                                           render_import.FAILURES_FILE])
  assert records.read_metadata(out)["num_objects"] == 8
  assert render_import.check_summary(meta, out).startswith("convention checks:")
  # A second import is refused (nothing touched) unless overwrite.
  with pytest.raises(errors.DataError, match="already holds a data set"):
    _import(renders, out)
  assert sorted(f[len(out) + 1:] for f in fake_gcs.files()) == sorted(names)
  # A writer that fails in the middle of a split: no metadata.json, no partial shard.
  calls = {"n": 0}
  encode = records.encode_record

  def failing(**kw):
    calls["n"] += 1
    if calls["n"] == 6:
      raise RuntimeError("disk on fire")
    return encode(**kw)

  monkeypatch.setattr(records, "encode_record", failing)
  with pytest.raises(RuntimeError, match="disk on fire"):
    _import(renders, out, overwrite=True, records_per_shard=2)
  left = [f[len(out) + 1:] for f in fake_gcs.files()]
  assert records.METADATA_FILE not in left and records.IN_PROGRESS_FILE in left
  assert not [n for n in left if n.endswith(".tmp")]
  # Shards present are whole (2 records each: 4 train objects → 2 shards, failed in val).
  assert sorted(n for n in left if records.SHARD_MARK in n) == [
      records.shard_name("train", 0, 2), records.shard_name("train", 1, 2)]
  monkeypatch.setattr(records, "encode_record", encode)
  meta = _import(renders, out)   # an interrupted import is replaced without overwrite
  left = [f[len(out) + 1:] for f in fake_gcs.files()]
  assert records.IN_PROGRESS_FILE not in left and records.METADATA_FILE in left
  assert len([n for n in left if records.SHARD_MARK in n]) == 3


@pytest.fixture(scope="module")
def bucket_set(renders, gcs_emulator):
  """The importer command's data set in the emulator's bucket (and a local copy)."""
  out = "gs://bkt/data/imported"
  proc = subprocess.run(
      [sys.executable, "-c", bootstrap_code("data_pipeline.importer",
                                            ["--src", str(renders), "--out", out,
                                             "--split_fractions", "0.5,0.25,0.25"])],
      cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
      timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  local = renders.parent / "local"
  _import(renders, str(local))
  return out, local, proc.stdout


def test_importer_command_writes_to_bucket(bucket_set, gcs_emulator):
  out, local, stdout = bucket_set
  assert f"imported 8 objects (instant3d) at 16² into {out}" in stdout
  files = [f[len(out) + 1:] for f in gcs_emulator.files() if f.startswith(out + "/")]
  assert records.METADATA_FILE in files and records.IN_PROGRESS_FILE not in files
  assert not [n for n in files if n.endswith(".tmp")]
  info = datasets.open_dataset(out)            # every shard opened by the native reader
  assert info.data_dir == out and info.splits == {"train": 4, "val": 2, "test": 2}
  assert info.resolution == 16 and info.groups["test"]["eval"] == 64
  # The bucket's shards are byte for byte the local import's.
  for name in sorted(n for n in files if records.SHARD_MARK in n):
    assert gcs_emulator.cat_file(f"{out}/{name}") == (local / name).read_bytes(), name


@pytest.mark.slow   # ~70 s on 2 shared cores (the compile of train and eval steps)
def test_train_and_eval_on_bucket(bucket_set, tmp_path):
  from instant3d_jax.eval import lrm_eval
  from instant3d_jax.train import lrm_task
  out, local, _ = bucket_set
  cfg = tiny_config(out)
  assert cfg.data_dir.startswith("gs://")
  res = lrm_task.train(cfg, tmp_path / "run", log=lambda *_: None)
  assert res.step == 3 and res.stop_reason == "total_steps"
  assert all(np.isfinite([h["loss"] for h in res.history]))
  results, md = lrm_eval.evaluate_checkpoint(tmp_path / "run", log=lambda *_: None)
  data = json.loads(md.with_suffix(".json").read_text())
  assert data["num_objects"] == 2 and len(data["per_object"]["psnr"]) == 2
  assert 0 < data["summary"]["psnr"] < 60
  # What the loaders read from the bucket equals what they read from the local copy.
  info = datasets.open_dataset(out)
  ld = datasets.loader_config(cfg, info)
  a, b = next(lrm_input.train_iterator(out, ld)), next(lrm_input.train_iterator(str(local), ld))
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
