"""The importer's split override (data_pipeline/render_import.py `import_renders(splits=...)`,
the command's `--split_file`): exactly the given splits, recorded in the metadata, and one-line
errors for unknown split names, ids not in the source and objects without a split (nothing
written)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from data_pipeline import cameras_json, records, render_import
from instant3d_jax import errors

RES = 4


def tiny_object(folder: str) -> None:
  """A rig-less object folder of the project's format: one 4×4 view."""
  os.makedirs(folder, exist_ok=True)
  img = np.zeros((RES, RES, 4), np.uint8)
  img[1:3, 1:3] = (200, 40, 40, 255)
  with open(os.path.join(folder, "view_000.png"), "wb") as f:
    f.write(records.encode_png(img))
  c2w = np.eye(4)[None]
  c2w[0, :3, 3] = (0.0, 0.0, -3.0)
  K = np.array([[[4.0, 0, 2], [0, 4.0, 2], [0, 0, 1]]])
  cam = types.SimpleNamespace(c2w=c2w, K=K, width=RES, height=RES)
  cameras_json.write_cameras_json(os.path.join(folder, "cameras.json"), cam, ["view_000.png"],
                                  ["sup"])


def tiny_source(root, names) -> str:
  """`root/src` with one object folder per name (links to one written folder)."""
  one = os.path.join(str(root), "one")
  tiny_object(one)
  src = os.path.join(str(root), "src")
  os.makedirs(src, exist_ok=True)
  for n in names:
    os.symlink(one, os.path.join(src, n))
  return src


NAMES = ["b", "a", "e", "c", "d", "f"]


def test_given_splits_are_kept_and_recorded(tmp_path):
  src = tiny_source(tmp_path, NAMES)
  splits = {"a": "test", "b": "train", "c": "train", "d": "val", "e": "test", "f": "train"}
  meta = render_import.import_renders(src, str(tmp_path / "out"), splits=splits, progress=False,
                                      split_fractions=(0.0, 0.0, 1.0), seed=5)   # both unused
  got = {s: meta["splits"][s]["object_ids"] for s in records.SPLITS}
  assert got == {"train": ["b", "c", "f"], "val": ["d"], "test": ["a", "e"]}
  cfg = meta["config"]
  assert cfg["split_rule"] == "given" and cfg["seed"] is None and cfg["split_file"] is None
  assert cfg["split_fractions"] == pytest.approx([0.5, 1 / 6, 1 / 3], abs=1e-6)
  # record index = position in the sorted names, as with the seeded rule
  for s in records.SPLITS:
    for rec in records.RecordSource(str(tmp_path / "out"), s):
      assert rec["index"] == sorted(NAMES).index(rec["object_id"]) and rec["split"] == s
  # without an override: the seeded permutation, recorded as such
  meta2 = render_import.import_renders(src, str(tmp_path / "out2"), progress=False,
                                       split_fractions=(0.5, 0.0, 0.5), seed=3)
  assert meta2["config"]["split_rule"] == "seeded_permutation" and meta2["config"]["seed"] == 3
  assigned = render_import.assign_splits(sorted(NAMES), split_fractions=(0.5, 0.0, 0.5), seed=3)
  assert meta2["splits"]["test"]["object_ids"] == [sorted(NAMES)[i] for i in assigned["test"]]


@pytest.mark.parametrize("splits,message", [
    ({**{n: "train" for n in NAMES}, "a": "holdout"},
     r"^splits: split names must be among \['train', 'val', 'test'\], found 'holdout' for 'a'$"),
    ({**{n: "train" for n in NAMES}, "zz": "test", "yy": "test"},
     r"^splits: object ids not in the source: 'yy', 'zz'$"),
    ({n: "train" for n in NAMES[:4]},
     r"^splits: objects of the source without a split: 'd', 'f'$"),
    (["a", "b"], r"^splits: expected a mapping \{object id: split name\}, found list$"),
])
def test_bad_overrides_are_one_line_errors_and_write_nothing(tmp_path, splits, message):
  src = tiny_source(tmp_path, NAMES)
  out = tmp_path / "out"
  with pytest.raises(errors.InputError, match=message):
    render_import.import_renders(src, str(out), splits=splits, progress=False)
  assert not out.exists()


@pytest.mark.parametrize("content,message", [
    (None, r"split file not found"),
    ("{not json", r"split file is not readable JSON"),
    ('["a", "b"]', r"expected a JSON object \{object id: split name\}"),
    ('{"a": 1}', r"expected a JSON object \{object id: split name\}"),
    (json.dumps({**{n: "train" for n in NAMES}, "a": "tset"}), r"split names must be among .* "
     r"found 'tset' for 'a'"),
])
def test_split_file_errors_name_the_file(tmp_path, content, message):
  src = tiny_source(tmp_path, NAMES)
  path = tmp_path / "splits.json"
  if content is not None:
    path.write_text(content)
  with pytest.raises(errors.InputError, match=message) as e:
    render_import.import_renders(src, str(tmp_path / "out"), splits=str(path), progress=False)
  assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)


def test_importer_command_split_file(tmp_path):
  src = tiny_source(tmp_path, NAMES)
  path = tmp_path / "splits.json"
  path.write_text(json.dumps({n: ("test" if n in "ae" else "train") for n in NAMES}))
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(PYTHONPATH=root, JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "data_pipeline.importer", "--src", src, "--out",
         str(tmp_path / "out"), "--split_file", str(path)]
  r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=120)
  assert r.returncode == 0, r.stderr
  assert "(test: 2, train: 4, val: 0)" in r.stdout
  meta = records.read_metadata(str(tmp_path / "out"))
  assert meta["splits"]["test"]["object_ids"] == ["a", "e"]
  assert meta["config"]["split_file"] == str(path)
  path.write_text(json.dumps({"a": "test"}))
  r = subprocess.run(cmd[:-3] + [str(tmp_path / "out2"), "--split_file", str(path)],
                     capture_output=True, text=True, env=env, cwd=root, timeout=120)
  assert r.returncode != 0
  err = r.stderr.strip().splitlines()
  assert err[-1] == (f"error: {path}: objects of the source without a split: 'b', 'c', 'd', "
                     "'e', 'f'"), r.stderr
