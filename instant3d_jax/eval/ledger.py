"""The test ledger: every scoring on a `test` split, counted (issue "Results you can trust").

Tuning and model selection read `val`; a `test` split is scored only through `score_on_test`,
which appends one JSON line per new scoring to the ledger — the time, what was scored (a label),
the data set, the config hash, the parameter hash and the result — and returns the recorded
result, without scoring again, when the same parameter hash has already been scored on the same
data set. `configs_scored(dataset)` is the number of distinct config hashes scored on that test
set: every reported test figure states it.

The ledger is `bench/results/test_ledger.jsonl` of the checkout (committed: the count is part of
the project's history), or `$INSTANT3D_TEST_LEDGER` when set (the tests point it at a temporary
file; a user without the checkout gets `./test_ledger.jsonl`). Lines are appended whole with one
`write` under an exclusive lock, so concurrent scorers do not interleave; a line that does not
parse is an error naming the ledger and the line, never silently skipped.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable

from instant3d_jax import errors, fileio

ENV = "INSTANT3D_TEST_LEDGER"
_REPO_LEDGER = Path(__file__).resolve().parents[2] / "bench" / "results" / "test_ledger.jsonl"


def default_path() -> str:
  """`$INSTANT3D_TEST_LEDGER`, else the checkout's bench/results/test_ledger.jsonl, else
  ./test_ledger.jsonl (an installed package without the checkout)."""
  if os.environ.get(ENV):
    return os.environ[ENV]
  if _REPO_LEDGER.parent.is_dir():
    return str(_REPO_LEDGER)
  return os.path.abspath("test_ledger.jsonl")


# Metadata fields that differ between two writes of the same data set (how long it took).
_VOLATILE = re.compile(r"(seconds|_s|_utc|_time|timestamp|created)$")


def _stable(x):
  if isinstance(x, dict):
    return {k: _stable(v) for k, v in x.items() if not _VOLATILE.search(str(k))}
  if isinstance(x, list):
    return [_stable(v) for v in x]
  return x


def dataset_id(data_dir: str, split: str) -> str:
  """A data set split's identity: `<folder name>:<split>:<sha256 of its metadata.json>[:12]`,
  the metadata without its timing fields (`_VOLATILE`), so the same generation or import on any
  machine gives the same id and a different one another."""
  from data_pipeline import records
  meta = _stable(records.read_metadata(str(data_dir)))
  digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:12]
  name = fileio.path(data_dir).name or str(data_dir)
  return f"{name}:{split}:{digest}"


def read(path: str | None = None) -> list[dict]:
  """Every entry of the ledger (empty when it does not exist yet)."""
  path = path or default_path()
  if not os.path.exists(path):
    return []
  out = []
  with open(path, encoding="utf-8") as f:
    for i, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        e = json.loads(line)
      except json.JSONDecodeError as err:
        raise errors.InputError(f"{path}:{i}: not a ledger line (invalid JSON: {err})") from None
      if not isinstance(e, dict) or not {"dataset", "param_sha256", "result"} <= set(e):
        raise errors.InputError(f"{path}:{i}: not a ledger line (expected dataset, "
                                "param_sha256 and result)")
      out.append(e)
  return out


def lookup(param_hash: str, dataset: str, path: str | None = None) -> dict | None:
  """The first entry scoring `param_hash` on `dataset`, or None."""
  for e in read(path):
    if e["param_sha256"] == param_hash and e["dataset"] == dataset:
      return e
  return None


def status(param_hash: str, path: str | None = None) -> dict | None:
  """Where the ledger stands now for a parameter hash: {"dataset", "time_utc", "configs_scored"}
  of its first entry (the count as of now, not as of its scoring), or None. The README's tables
  (bench/report.py) state this count."""
  for e in read(path):
    if e["param_sha256"] == param_hash:
      return {"dataset": e["dataset"], "time_utc": e.get("time_utc"),
              "configs_scored": configs_scored(e["dataset"], path)}
  return None


def configs_scored(dataset: str, path: str | None = None) -> int:
  """Distinct config hashes scored on `dataset` so far."""
  return len({e.get("config_sha256") for e in read(path) if e["dataset"] == dataset})


def scorings(dataset: str, path: str | None = None) -> int:
  """Entries (distinct parameter hashes) scored on `dataset` so far."""
  return sum(1 for e in read(path) if e["dataset"] == dataset)


@contextlib.contextmanager
def _locked(path: str):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "a", encoding="utf-8") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield f
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def score_on_test(*, label: str, dataset: str, config_hash: str, param_hash: str,
                  score: Callable[[], Any], path: str | None = None,
                  recorded: Callable[[Any], Any] = lambda r: r,
                  log=print) -> tuple[Any, dict]:
  """Scores on a test set through the ledger. Returns `(result, entry)`: the recorded result when
  `param_hash` was already scored on `dataset` (`entry["repeat"]` True, `score` not called), else
  `score()`'s result, of which `recorded(result)` (default: all of it; it must be JSON-able) is
  appended as a new entry. `entry["configs_scored"]` is the count of distinct
  configs scored on `dataset`, this one included."""
  path = path or default_path()
  prior = lookup(param_hash, dataset, path)
  if prior is not None:
    n = configs_scored(dataset, path)
    log(f"test ledger: {label} (params {param_hash[:12]}) was already scored on {dataset} at "
        f"{prior.get('time_utc', '?')}: the recorded result is returned ({n} configs scored on "
        "this test set)")
    return prior["result"], {**prior, "repeat": True, "configs_scored": n, "ledger": path}
  result = score()
  entry = {"time_utc": datetime.datetime.now(datetime.timezone.utc).strftime(
               "%Y-%m-%d %H:%M:%S UTC"),
           "label": label, "dataset": dataset, "config_sha256": config_hash,
           "param_sha256": param_hash, "result": recorded(result)}
  line = json.dumps(entry, sort_keys=True, default=float) + "\n"
  with _locked(path) as f:
    f.write(line)
  n = configs_scored(dataset, path)
  log(f"test ledger: {label} scored on {dataset}; {n} configs scored on this test set "
      f"({path})")
  return result, {**entry, "repeat": False, "configs_scored": n, "ledger": path}
