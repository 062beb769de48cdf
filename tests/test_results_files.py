"""Machine-written results files and the test ledger (instant3d_jax/eval/results.py, ledger.py)."""
import json
import multiprocessing
import os

import jax.numpy as jnp
import numpy as np
import pytest

from instant3d_jax import errors
from instant3d_jax.eval import ledger, results


def test_param_hash_is_keypath_dtype_shape_and_bytes():
  a = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3, np.float32)}
  h = results.param_sha256(a)
  assert h == results.param_sha256({"b": np.zeros(3, np.float32),
                                    "w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3)})
  changed = [{**a, "w": a["w"].reshape(3, 2)},                    # shape
             {**a, "w": a["w"].astype(np.float64)},               # dtype
             {"v": a["w"], "b": a["b"]},                          # keypath
             {**a, "b": np.array([0, 0, np.float32(1e-30)], np.float32)}]  # one value's bytes
  assert len({h, *map(results.param_sha256, changed)}) == 5


def test_config_hash_is_canonical():
  import ml_collections
  c = ml_collections.ConfigDict({"b": 1, "a": {"x": (1, 2), "y": "s"}})
  assert results.config_sha256(c) == results.config_sha256({"a": {"y": "s", "x": [1, 2]}, "b": 1})
  assert results.config_sha256(c) != results.config_sha256({"b": 2, "a": {"x": [1, 2], "y": "s"}})


def test_run_writes_every_field(tmp_path):
  run = results.Run.start("unit", command="python -m x --flag")
  res = run.write(tmp_path / "r" / "results.json", configs={"m": {"lr": 1e-3}},
                  params={"m": {"w": np.ones(2, np.float32)}, "given": "ab" * 32},
                  metrics={"val": {"psnr": np.float32(20.5)}}, baselines={"val": {"b": 1.0}},
                  wall_s={"train": 12.345}, extra={"note": (1, 2)})
  back = results.read(tmp_path / "r" / "results.json")
  assert back == json.loads(json.dumps(res))
  for k in ("schema", "kind", "command", "commit", "dirty", "started_utc", "finished_utc",
            "machine", "load", "config_sha256", "param_sha256", "wall_s", "metrics", "baselines",
            "extra", "configs"):
    assert k in back, k
  assert back["param_sha256"]["given"] == "ab" * 32
  assert back["param_sha256"]["m"] == results.param_sha256({"w": np.ones(2, np.float32)})
  assert back["metrics"]["val"]["psnr"] == 20.5 and back["wall_s"]["train"] == 12.3
  assert len(back["load"]["before"]) == 3 and back["machine"]["cores"] >= 1
  # This checkout is a git repository: the commit is its HEAD.
  assert len(back["commit"]) == 40 or back["commit"] == "unknown"


def test_read_refuses_what_is_not_a_results_file(tmp_path):
  (tmp_path / "a.json").write_text("{not json")
  (tmp_path / "b.json").write_text(json.dumps({"metrics": {}}))
  with pytest.raises(errors.InputError, match="a.json: not a results file"):
    results.read(tmp_path / "a.json")
  with pytest.raises(errors.InputError, match="b.json: not a results file.*schema"):
    results.read(tmp_path / "b.json")
  with pytest.raises(errors.InputError, match="no such results file"):
    results.read(tmp_path / "c.json")


def test_ledger_records_once_and_counts_configs(tmp_path):
  path = str(tmp_path / "ledger.jsonl")
  calls = []

  def score(v):
    return lambda: calls.append(v) or {"psnr": v}

  kw = dict(dataset="d:test:abc", path=path, log=lambda *_: None)
  r1, e1 = ledger.score_on_test(label="a", config_hash="c1", param_hash="p1", score=score(1.0), **kw)
  r2, e2 = ledger.score_on_test(label="a again", config_hash="c1", param_hash="p1",
                                score=score(9.0), **kw)
  assert r1 == r2 == {"psnr": 1.0} and calls == [1.0]            # the repeat did not score
  assert e1["repeat"] is False and e2["repeat"] is True and e2["configs_scored"] == 1
  _, e3 = ledger.score_on_test(label="b", config_hash="c2", param_hash="p2", score=score(2.0), **kw)
  _, e4 = ledger.score_on_test(label="b seed 2", config_hash="c2", param_hash="p3",
                               score=score(3.0), **kw)
  assert e3["configs_scored"] == 2 and e4["configs_scored"] == 2   # same config, new params
  assert ledger.scorings("d:test:abc", path) == 3
  _, e5 = ledger.score_on_test(label="c", config_hash="c1", param_hash="p1", score=score(4.0),
                               dataset="other:test:def", path=path, log=lambda *_: None)
  assert e5["repeat"] is False and e5["configs_scored"] == 1       # another test set
  assert [e["label"] for e in ledger.read(path)] == ["a", "b", "b seed 2", "c"]


def _append(args):
  path, i = args
  ledger.score_on_test(label=f"p{i}", dataset="d", config_hash=f"c{i}", param_hash=f"p{i}",
                       score=lambda: {"x": "y" * 5000}, path=path, log=lambda *_: None)


def test_ledger_lines_do_not_interleave(tmp_path):
  path = str(tmp_path / "ledger.jsonl")
  with multiprocessing.get_context("fork").Pool(4) as pool:
    pool.map(_append, [(path, i) for i in range(16)])
  entries = ledger.read(path)   # every line parses
  assert sorted(e["label"] for e in entries) == sorted(f"p{i}" for i in range(16))


def test_ledger_bad_line_is_named(tmp_path):
  path = tmp_path / "ledger.jsonl"
  path.write_text('{"dataset": "d", "param_sha256": "p", "result": 1}\n{oops\n')
  with pytest.raises(errors.InputError, match=r"ledger.jsonl:2: not a ledger line"):
    ledger.read(str(path))


def test_tests_never_write_the_committed_ledger():
  assert os.environ.get(ledger.ENV)
  assert os.path.abspath(ledger.default_path()) != os.path.abspath(str(ledger._REPO_LEDGER))
