"""What every benchmark records beside its figures: how, where, when and under which load.

    prov = common.Provenance.start()      # first thing in main(): load average before
    ...                                   # measure
    common.write_result("bench/results/x.md", lines, prov)   # load average after, then write

`write_result` ends the snippet with one provenance line read off the machine at run time —
command line, git commit (`+dirty` when the checkout has uncommitted changes), UTC date, CPU
model and core count, JAX version and backend when JAX is loaded, and the 1/5/15-minute load
averages (`os.getloadavg()`) before and after the run — and a machine-readable copy of it in an
HTML comment that `bench/run_all.py` reads (a result file without it is flagged there as lacking
provenance). Nothing here is a fixed phrase about the machine: a busy machine shows as a high
load average, a quiet one as a low one.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- provenance: "


def cpu_model() -> str:
  """The CPU's model name (one definition: instant3d_jax/eval/results.py)."""
  from instant3d_jax.eval import results
  return results.cpu_model()


def git_commit(root: Path = ROOT) -> str:
  """Short commit of the checkout, `+dirty` if tracked files (other than the benchmark results)
  differ from it; 'unknown' outside git."""
  try:
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root,
                          capture_output=True, text=True, check=True).stdout.strip()
    # The result files and BENCHMARKS.md are what benchmarks write: they do not make it dirty.
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":(exclude)bench/results", ":(exclude)BENCHMARKS.md"], cwd=root,
                           capture_output=True, text=True, check=True).stdout.strip()
    return head + ("+dirty" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def command_line() -> str:
  """The command as typed from the repository root: `python -m bench.x ARGS`."""
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  prog = f"python -m {spec.name}" if spec is not None and spec.name else f"python {sys.argv[0]}"
  return " ".join([prog] + [shlex.quote(a) for a in sys.argv[1:]])


def _jax_backend() -> str:
  jax = sys.modules.get("jax")
  if jax is None:
    return ""
  try:
    d = jax.devices()[0]
    kind = "" if d.device_kind == d.platform else f" ({d.device_kind})"
    return f"JAX {jax.__version__}, {jax.device_count()} × {d.platform}{kind}"
  except Exception:  # noqa: BLE001 — provenance must never fail the benchmark
    return f"JAX {jax.__version__}"


@dataclasses.dataclass
class Provenance:
  command: str
  commit: str
  started_utc: str
  cpu: str
  cores: int
  load_before: tuple[float, float, float]
  load_after: tuple[float, float, float] | None = None
  finished_utc: str | None = None
  backend: str = ""

  @classmethod
  def start(cls) -> "Provenance":
    return cls(command=command_line(), commit=git_commit(), started_utc=_now(),
               cpu=cpu_model(), cores=os.cpu_count() or 0,
               load_before=tuple(round(x, 2) for x in os.getloadavg()))

  def finish(self) -> "Provenance":
    """Records the load average after the run (idempotent: the first call counts)."""
    if self.load_after is None:
      self.load_after = tuple(round(x, 2) for x in os.getloadavg())
      self.finished_utc = _now()
      self.backend = _jax_backend()
    return self

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)

  def markdown(self) -> str:
    self.finish()
    la = lambda t: " / ".join(f"{x:.2f}" for x in t)  # noqa: E731
    backend = f"; {self.backend}" if self.backend else ""
    return (f"Measured by `{self.command}` at commit `{self.commit}`, {self.started_utc} to "
            f"{self.finished_utc}, on {self.cpu}, {self.cores} cores{backend}. Load average "
            f"(1 / 5 / 15 min) before {la(self.load_before)}, after {la(self.load_after)}.")


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def provenance_block(prov: Provenance) -> list[str]:
  """The lines `write_result` appends: the readable line and its JSON copy."""
  text = prov.markdown()
  return ["", text, f"{MARKER}{json.dumps(prov.as_dict(), ensure_ascii=False)} -->"]


def write_result(path: str | os.PathLike, lines: list[str], prov: Provenance) -> Path:
  """Writes a result snippet (`lines` + provenance) atomically; returns its path."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  text = "\n".join(list(lines) + provenance_block(prov)) + "\n"
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  tmp.replace(path)
  return path


def read_provenance(text: str) -> dict | None:
  """The JSON provenance of a result snippet, or None when it has none."""
  for line in text.splitlines():
    if line.startswith(MARKER) and line.rstrip().endswith("-->"):
      return json.loads(line[len(MARKER):].rstrip()[:-3])
  return None


def time_train_steps(compiled, state, batch, constants, iters: int) -> tuple[list, dict]:
  """One untimed update step, then `iters` timed ones (each `block_until_ready` on the metrics):
  (seconds per step, the last metrics). The state is donated (loop.compile_train_step), so each
  call takes the previous call's state."""
  import jax  # pylint: disable=g-import-not-at-top
  state, m = compiled(state, batch, constants)
  jax.block_until_ready(m)
  ts = []
  for _ in range(iters):
    t = time.perf_counter()
    state, m = compiled(state, batch, constants)
    jax.block_until_ready(m)
    ts.append(time.perf_counter() - t)
  return ts, m
