"""Training logs: TensorBoard events (tensorboardX, no TensorFlow), a JSONL file, a console
progress bar with ETA, image logs (PNGs through export/images.py) and a loss-curve PNG; throughput
and MFU arithmetic.

Only process 0 writes (`MetricWriter(active=jax.process_index() == 0)`); other processes get a
writer whose methods do nothing, so call sites need no `if`.

The workdir may be local or `gs://…` (instant3d_jax/fileio.py): tensorboardX gets the URI string
unchanged (it uploads `gs://` event files itself through google-cloud-storage); the JSONL file,
PNGs and the loss curve go through `etils.epath`. Bucket objects cannot be appended to, so on a
bucket the JSONL file is rewritten whole (at most every `remote_flush_s` seconds, and on
`flush`/`close`); locally it is appended line by line.
"""
from __future__ import annotations

import io
import json
import math
import os
import sys
import time
from typing import Mapping

import numpy as np

from instant3d_jax import fileio
from instant3d_jax.export import images as images_lib

JSONL_FILE = "metrics.jsonl"


class MetricWriter:
  """Scalars → `workdir/tb/` events + `workdir/metrics.jsonl` (one JSON object per line:
  `{"step": s, "time": unix, "name": value, ...}`); images → events + PNG files."""

  def __init__(self, workdir: str | os.PathLike, *, active: bool = True, tensorboard: bool = True,
               remote_flush_s: float = 30.0):
    self.workdir = fileio.path(workdir)
    self.active = active
    self._tb = None
    self._jsonl = None
    self._remote = fileio.is_remote(self.workdir)
    self._remote_lines: list[str] = []
    self._remote_dirty = False
    self._remote_flush_s = remote_flush_s
    self._last_upload = time.time()
    if not active:
      return
    fileio.makedirs(self.workdir)
    if tensorboard:
      import tensorboardX  # lazy: tensorboardX pulls protobuf
      self._tb = tensorboardX.SummaryWriter(str(self.workdir / "tb"))
    jsonl = self.workdir / JSONL_FILE
    if self._remote:
      # A resumed run keeps the rows already in the bucket.
      self._remote_lines = jsonl.read_text().splitlines(keepends=True) if jsonl.exists() else []
    else:
      self._jsonl = open(jsonl, "a", buffering=1)

  def _write_line(self, line: str) -> None:
    if not self._remote:
      self._jsonl.write(line)
      return
    self._remote_lines.append(line)
    self._remote_dirty = True
    if time.time() - self._last_upload >= self._remote_flush_s:
      self._upload_jsonl()

  def _upload_jsonl(self) -> None:
    if self._remote and self._remote_dirty:
      fileio.write_text(self.workdir / JSONL_FILE, "".join(self._remote_lines))
      self._remote_dirty = False
      self._last_upload = time.time()

  def scalars(self, step: int, values: Mapping[str, float], prefix: str = "") -> None:
    if not self.active:
      return
    row = {"step": int(step), "time": time.time()}
    for k, v in values.items():
      v = float(v)
      row[prefix + k] = v if math.isfinite(v) else str(v)
      if self._tb is not None:
        self._tb.add_scalar(prefix + k, v, int(step))
    self._write_line(json.dumps(row) + "\n")

  def image(self, step: int, name: str, image: np.ndarray, png_dir: str | None = None) -> None:
    """`image: [H, W, 3]` float in [0, 1]; also written as `png_dir/name_step.png`."""
    if not self.active:
      return
    image = np.clip(np.asarray(image, np.float32), 0, 1)
    if self._tb is not None:
      self._tb.add_image(name, image, int(step), dataformats="HWC")
    if png_dir is not None:
      images_lib.save_png(
          self.workdir / png_dir / f"{name.replace('/', '_')}_{int(step):07d}.png", image)

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()
    self._upload_jsonl()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
    if self._jsonl is not None:
      self._jsonl.close()
    self._upload_jsonl()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """The rows of a metrics JSONL file (local or `gs://…`); [] when it does not exist."""
  path = fileio.path(path)
  if not path.exists():
    return []
  rows = []
  for line in path.read_text().splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:  # a line cut by a kill -9: skip it
      continue
  return rows


def plot_loss_curve(jsonl_path: str | os.PathLike, out_png: str | os.PathLike,
                    keys: tuple[str, ...] = ("train/loss", "eval/psnr")) -> None:
  """Loss (log scale) and, when logged, eval PSNR against step, from the JSONL file; both paths
  local or `gs://…` (the PNG written all-or-nothing)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = read_jsonl(jsonl_path)
  present = [k for k in keys if any(k in r for r in rows)]
  if not present:
    return
  fig, axes = plt.subplots(1, len(present), figsize=(5 * len(present), 3.5), squeeze=False)
  for ax, k in zip(axes[0], present):
    pts = [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))]
    if not pts:
      continue
    s, v = zip(*pts)
    ax.plot(s, v, marker="." if len(s) < 50 else None)
    ax.set_xlabel("step")
    ax.set_title(k)
    if "loss" in k and min(v) > 0:
      ax.set_yscale("log")
    ax.grid(alpha=0.3)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100)
  plt.close(fig)
  fileio.write_bytes(out_png, buf.getvalue())


class Progress:
  """Console progress bar with ETA (tqdm on a TTY-like stream; plain lines otherwise).

  The run ends at `total_steps` or, when a wall-clock budget is set, at the budget, whichever comes
  first: with a budget the bar's total is the number of steps that will run, projected from the
  step rate so far (never more than `total_steps`), so its count and ETA end where the run does.
  """

  def __init__(self, total_steps: int, initial: int = 0, *, active: bool = True,
               time_budget_s: float | None = None, start_time: float | None = None):
    self.active = active
    self.total = total_steps
    self.budget = time_budget_s
    self.start = time.time() if start_time is None else start_time
    self._first: tuple[int, float] | None = None   # (step, time) of the first update
    self._bar = None
    if active:
      from tqdm import tqdm
      self._bar = tqdm(total=total_steps, initial=initial, file=sys.stdout, dynamic_ncols=True,
                       mininterval=1.0, disable=None if sys.stdout.isatty() else False,
                       bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}] "
                                  "{postfix}")

  def update(self, step: int, postfix: str = "") -> None:
    if self._bar is None:
      return
    self._bar.n = step
    if self.budget:
      now = time.time()
      left = self.budget - (now - self.start)
      postfix = f"{postfix} budget left {max(left, 0):.0f}s"
      self._bar.total = self.projected_total(step, now)
    self._bar.set_postfix_str(postfix, refresh=False)
    self._bar.refresh()

  def projected_total(self, step: int, now: float) -> int:
    """Steps the run will have done when it stops: `total_steps`, or fewer when the budget ends
    first at the step rate measured since the first update."""
    if not self.budget:
      return self.total
    if self._first is None or step <= self._first[0]:
      self._first = self._first or (step, now)
      return self.total
    s0, t0 = self._first
    rate = (step - s0) / max(now - t0, 1e-9)
    left = max(self.budget - (now - self.start), 0.0)
    return int(min(self.total, step + int(left * rate)))

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def throughput(*, seconds_per_step: float, examples_per_step: int, flops_per_step: float | None,
               num_devices: int, peak_flops_per_device: float | None) -> dict[str, float]:
  """s/step, examples/s, TFLOP/s/device and MFU from an analytic FLOP count of one step.

  `flops_per_step`: forward + backward FLOPs of the whole global batch (analytic: XLA's cost
  analysis counts loop bodies once); `peak_flops_per_device`: dense bf16 peak of the chip.
  """
  out = {"s_per_step": seconds_per_step,
         "examples_per_s": examples_per_step / max(seconds_per_step, 1e-12)}
  if flops_per_step:
    per_dev = flops_per_step / max(seconds_per_step, 1e-12) / num_devices
    out["tflops_per_device"] = per_dev / 1e12
    if peak_flops_per_device:
      out["mfu"] = per_dev / peak_flops_per_device
  return out


def peak_flops_for(device_kind: str, table: Mapping[str, float]) -> float | None:
  """Peak FLOP/s of a device from `table` {substring of device_kind: TFLOP/s}; longest match."""
  kind = device_kind.lower()
  best = None
  for key, tflops in table.items():
    if key.lower() in kind and (best is None or len(key) > len(best[0])):
      best = (key, tflops)
  return None if best is None else float(best[1]) * 1e12
