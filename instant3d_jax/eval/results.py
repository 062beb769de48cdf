"""Machine-written results files: what every demo and evaluation writes beside its figures.

    run = results.Run.start("demo")                 # first thing: command, commit, load before
    ...                                             # train, evaluate
    run.write(path, configs={"lrm": cfg}, params={"lrm": params}, metrics={...},
              baselines={...}, wall_s={...}, extra={...})

One JSON object per file (`SCHEMA`):

* `kind`, `command` (as typed), `commit` (full hash or 'unknown'), `dirty` (tracked files differ
  from the commit; the results folders and the ledger excluded: they are what runs write),
  `started_utc`, `finished_utc`;
* `config_sha256` {name: sha256 of the config's canonical JSON} and `configs` {name: the config},
  `param_sha256` {name: `base.checkpoint.params_sha256`: sha256 over keypath, dtype, shape and bytes
  of every leaf};
* `machine` (CPU model, cores, memory, platform, Python, JAX version and devices), `load`
  {"before", "after"}: the 1/5/15-minute load averages;
* `wall_s` {phase: seconds}, `metrics` and `baselines` (nested dicts of numbers), `extra`.

"Bit-identical" in this project means two results files with equal `param_sha256`. The README's
and BENCHMARKS.md's result tables are generated from committed copies of these files
(`python -m bench.report`), never typed.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

from instant3d_jax import errors, fileio

SCHEMA = "instant3d-results/1"
REPO_ROOT = Path(__file__).resolve().parents[2]
# What runs write; their changes do not make a checkout dirty.
_NOT_DIRTY = ("bench/results", "BENCHMARKS.md", "README.md")


def now_utc() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo on Linux, else `platform.processor()`)."""
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or "unknown CPU"


def memory_gib() -> float | None:
  try:
    for line in Path("/proc/meminfo").read_text().splitlines():
      if line.startswith("MemTotal:"):
        return round(int(line.split()[1]) / 2**20, 1)
  except (OSError, ValueError, IndexError):
    pass
  return None


def git_state(root: Path = REPO_ROOT) -> tuple[str, bool]:
  """(full commit hash, dirty) of the checkout `root`; ('unknown', False) outside git. Dirty means
  tracked files differ from the commit, the files runs write (`_NOT_DIRTY`) excluded."""
  try:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                          check=True).stdout.strip()
    excl = [f":(exclude){p}" for p in _NOT_DIRTY]
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                            *excl], cwd=root, capture_output=True, text=True,
                           check=True).stdout.strip()
    return head, bool(dirty)
  except (OSError, subprocess.CalledProcessError):
    return "unknown", False


def command_line() -> str:
  """The command as typed: `python -m package.module ARGS`."""
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  prog = f"python -m {spec.name}" if spec is not None and spec.name else f"python {sys.argv[0]}"
  return " ".join([prog] + [shlex.quote(a) for a in sys.argv[1:]])


def load_average() -> list[float]:
  return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
  """Where the run ran (never fails: an unknown field is left out)."""
  out = {"cpu": cpu_model(), "cores": os.cpu_count() or 0, "memory_gib": memory_gib(),
         "platform": platform.platform(), "python": platform.python_version()}
  jax = sys.modules.get("jax")
  if jax is not None:
    try:
      d = jax.devices()
      out.update(jax=jax.__version__, devices=f"{len(d)} × {d[0].platform} ({d[0].device_kind})")
    except Exception:  # noqa: BLE001 — provenance must never fail the run
      out.update(jax=jax.__version__)
  return {k: v for k, v in out.items() if v is not None}


def _plain(x: Any) -> Any:
  """Configs (ConfigDict / FrozenConfigDict / dataclasses / tuples) → JSON-able plain values."""
  if hasattr(x, "to_dict"):
    x = x.to_dict()
  if dataclasses.is_dataclass(x) and not isinstance(x, type):
    x = dataclasses.asdict(x)
  if isinstance(x, Mapping):
    return {str(k): _plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  if isinstance(x, (str, int, float, bool)) or x is None:
    return x
  if hasattr(x, "item") and getattr(x, "shape", None) == ():
    return x.item()
  return repr(x)


def canonical_json(x: Any) -> str:
  return json.dumps(_plain(x), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_sha256(cfg: Any) -> str:
  """sha256 of the config's canonical JSON (sorted keys, no whitespace)."""
  return hashlib.sha256(canonical_json(cfg).encode()).hexdigest()


def param_sha256(params: Any) -> str:
  """`base.checkpoint.params_sha256` (one definition of the parameter hash)."""
  from instant3d_jax.base import checkpoint as ckpt_lib
  return ckpt_lib.params_sha256(params)


@dataclasses.dataclass
class Run:
  """A run being recorded: `start` before the work, `write` after it."""
  kind: str
  command: str
  commit: str
  dirty: bool
  started_utc: str
  load_before: list[float]

  @classmethod
  def start(cls, kind: str, command: str | None = None) -> "Run":
    commit, dirty = git_state()
    return cls(kind=kind, command=command or command_line(), commit=commit, dirty=dirty,
               started_utc=now_utc(), load_before=load_average())

  def record(self, *, configs: Mapping[str, Any] | None = None,
             params: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None,
             baselines: Mapping[str, Any] | None = None,
             wall_s: Mapping[str, float] | None = None,
             extra: Mapping[str, Any] | None = None) -> dict:
    """The results dict. `params` values are parameter trees or already computed hashes (str)."""
    configs = dict(configs or {})
    hashes = {k: (v if isinstance(v, str) else param_sha256(v)) for k, v in (params or {}).items()}
    return {
        "schema": SCHEMA, "kind": self.kind, "command": self.command, "commit": self.commit,
        "dirty": self.dirty, "started_utc": self.started_utc, "finished_utc": now_utc(),
        "machine": machine(), "load": {"before": self.load_before, "after": load_average()},
        "config_sha256": {k: config_sha256(v) for k, v in configs.items()},
        "param_sha256": hashes,
        "wall_s": {k: round(float(v), 1) for k, v in (wall_s or {}).items()},
        "metrics": _plain(metrics or {}), "baselines": _plain(baselines or {}),
        "extra": _plain(extra or {}), "configs": {k: _plain(v) for k, v in configs.items()}}

  def write(self, path: str | os.PathLike, **kw) -> dict:
    """`record(**kw)` written to `path` (local or gs://; temp name → rename). Returns the dict."""
    res = self.record(**kw)
    fileio.write_text(str(path), json.dumps(res, indent=2, sort_keys=False, allow_nan=True) + "\n")
    return res


def read(path: str | os.PathLike) -> dict:
  """A results file, checked to be one (one-line error otherwise)."""
  p = fileio.path(path)
  try:
    res = json.loads(p.read_text())
  except FileNotFoundError:
    raise errors.InputError(f"{path}: no such results file") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise errors.InputError(f"{path}: not a results file (invalid JSON: {e})") from None
  if not isinstance(res, dict) or res.get("schema") != SCHEMA:
    raise errors.InputError(f"{path}: not a results file (expected \"schema\": \"{SCHEMA}\")")
  return res
