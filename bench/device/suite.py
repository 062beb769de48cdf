"""The accelerator suite: every GPU figure beside its anchor in one call of at most ten minutes.

    bash bench/device/run.sh [--dry_run]        # the entry point (installs, then this)
    python -m bench.device.suite [--dry_run] [--out DIR] [--only unet_jax,lrm] [--budget_s 545] | --merge RUN_DIR... --out DIR

Runs the items of bench/device/items.py one process each, in order, each under its own time
limit (`ITEMS`: seconds on the H200, sized in bench/device/README.md from FLOPs and bandwidth;
the suite's remaining budget caps the last ones). A process that overruns is killed; what it
had finished is kept, the rest is reported "not run: <why>", and the suite goes on. After
every item it rewrites `DIR/device.json` (all measurements, versions, card) and
`DIR/device.md` (one table, each figure beside its anchor and goal, ending with the run's
provenance), so a run cut short still returns what it measured. `DIR` defaults to `$OUT`.
Anchors (`Anchor`) are either measured, read when the table is written from the recorded device
runs in bench/results/ with their file, key, card, date and commit, or published, with the
paper or datasheet they come from; no measured anchor is a number written in this file.

`--dry_run` runs every item on CPU with tiny shapes through the same code (bench/device/items.py)
and then checks the run: every JAX measurement ran with finite outputs, cuDNN attention was
refused with the project's one-line error naming the CPU backend, the torch.compile anchor was
skipped, and no package missing on the device was imported. Exit status 1 when a check fails.
Figures of a dry run are not device figures: run.sh writes them to a temporary folder.

Fold a device run into BENCHMARKS.md: copy `device.md` and `device.json` to `bench/results/`,
then `python -m bench.run_all --merge_only`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from bench import common

ROOT = Path(__file__).resolve().parents[2]
SUITE_BUDGET_S = 545      # of the run's 10 minutes; pip installs and process starts take the rest


@dataclasses.dataclass(frozen=True)
class Item:
  name: str
  budget_s: float           # on the H200, process start, compiles and timing included
  keys: tuple[str, ...]     # the measurements it writes
  dry_budget_s: float = 60  # on this 2-core CPU


ITEMS = (
    # Budgets from the H200 runs of 2026-11-30 (device.log phase times: weights drawn, each
    # compile); the PyTorch UNet goes last: its eager figure takes 10 s, torch.compile the rest.
    Item("roofline", 40, ("matmul_bf16", "hbm_copy", "hbm_copy_donated", "hbm_copy_torch")),
    Item("unet_jax", 75, ("unet_xla", "unet_cudnn")),
    Item("vae_jax", 30, ("vae_xla",)),
    Item("vae_torch", 25, ("vae_torch_eager",)),
    Item("stage1", 125, ("stage1", "text3d"), dry_budget_s=90),
    Item("lrm", 50, ("lrm_forward_xla", "lrm_forward_cudnn", "render_512")),
    Item("train", 100, ("train_step",)),
    Item("mv_train", 120, ("mv_train_step",), dry_budget_s=90),
    Item("unet_torch", 80, ("unet_torch_eager", "unet_torch_compile")),
)


@dataclasses.dataclass(frozen=True)
class Anchor:
  """What a figure is compared with. Two kinds, and no third:

  - 'measured': read from a recorded device result file at render time (`anchor_files()`:
    the measurement `key`, its `field`), shown with its provenance (file, key, card, date, commit);
    never a number written here. A key no recorded file has renders "— (no measured anchor
    yet)".
  - 'published': a figure printed elsewhere (paper, datasheet), its `value` written here with
    the `source` naming where it is printed and where this project wrote it down.
  """
  kind: str                 # 'measured' | 'published'
  what: str                 # e.g. "PyTorch eager"
  unit: str                 # as shown after the value: "ms", "TFLOP/s", "images/s"
  key: str = ""             # measured: the measurement key in device.json
  field: str = ""           # measured: the field of that measurement (default: `unit`'s)
  value: float | None = None  # published only
  source: str = ""          # published: paper/datasheet + where written down
  fmt: str = ".1f"

  def __post_init__(self):
    if self.kind == "measured":
      if self.value is not None or not self.key:
        raise ValueError(f"measured anchor {self.what!r}: a result key, never a literal value")
    elif self.kind == "published":
      if self.value is None or not self.source:
        raise ValueError(f"published anchor {self.what!r}: needs its value and its source")
    else:
      raise ValueError(f"anchor kind {self.kind!r}: 'measured' or 'published'")


_UNIT_FIELD = {"ms": "ms", "s": "s", "TFLOP/s": "tflops", "TB/s": "tb_per_s",
               "images/s": "images_per_s"}


def measured(what: str, key: str, unit: str = "ms", **kw) -> Anchor:
  return Anchor("measured", what, unit, key=key, **kw)


def published(what: str, value: float, unit: str, source: str, **kw) -> Anchor:
  return Anchor("published", what, unit, value=value, source=source, **kw)


# Published figures and where they are written down.
_DATASHEET_TFLOPS = published(
    "bf16 dense peak", 989, "TFLOP/s", "NVIDIA H100/H200 SXM datasheet; configs/hardware.py "
    "peak_tflops", fmt=".0f")
_DATASHEET_HBM = published(
    "H200 HBM3e bandwidth", 4.8, "TB/s", "NVIDIA H200 SXM datasheet; not yet in "
    "docs/paper_facts.md", fmt=".1f")
_PAPER_TEXT3D = published(
    "Instant3D text → 3D", 20, "s", "Instant3D abstract, \"within 20 seconds\", GPU not stated; "
    "docs/paper_facts.md §C Runtime", fmt=".0f")
_LRM_FORWARD = published(
    "In3D-LRM images→triplane, A100", 70, "ms", "MeshLRM Tab. 5; docs/paper_facts.md §B "
    "Inference", fmt=".0f")
_LRM_RENDER = published(
    "In3D-LRM volume render, 512²", 0.5, "images/s", "MeshLRM Tab. 5 (0.5 FPS); "
    "docs/paper_facts.md §B Inference", fmt=".1f")
# Measured: the suite's own PyTorch rows, from the latest recorded device run that has them.
_UNET_EAGER = measured("PyTorch eager", "unet_torch_eager")
_UNET_COMPILE = measured("PyTorch compiled", "unet_torch_compile")
_VAE_EAGER = measured("PyTorch eager", "vae_torch_eager")


@dataclasses.dataclass(frozen=True)
class Row:
  key: str
  label: str
  anchors: tuple[Anchor, ...]  # empty: "—"
  goal: str
  figure: str = "ms"        # ms | s | tflops | tb_per_s | images_per_s | train


# The PyTorch figures once written here as numbers (matmul and HBM copy "on an H200 here", the
# UNet and VAE "earlier") had no committed result file behind them and are gone (issue 29).
ROWS = (
    Row("matmul_bf16", "bf16 matmul 8192³ (JAX)", (_DATASHEET_TFLOPS,), "—", "tflops"),
    Row("hbm_copy", "HBM copy: 2 GiB read + 2 GiB written (JAX)", (_DATASHEET_HBM,), "—",
        "tb_per_s"),
    Row("hbm_copy_donated", "HBM copy, JAX, input donated (x = f(x))", (_DATASHEET_HBM,), "—",
        "tb_per_s"),
    Row("hbm_copy_torch", "HBM copy, PyTorch `x + 1`, same bytes, same process (this run)",
        (_DATASHEET_HBM,), "within 10% of JAX", "tb_per_s"),
    Row("unet_xla", "SDXL UNet step, batch 2, 128², bf16, JAX + XLA attention",
        (_UNET_EAGER, _UNET_COMPILE), "≤ 35 ms"),
    Row("unet_cudnn", "SDXL UNet step, JAX + cuDNN flash attention",
        (_UNET_EAGER, _UNET_COMPILE), "≤ 35 ms"),
    Row("unet_torch_eager", "SDXL UNet step, diffusers PyTorch eager (this run)",
        (_UNET_EAGER,), "anchor"),
    Row("unet_torch_compile", "SDXL UNet step, diffusers + torch.compile (this run)",
        (_UNET_COMPILE,), "anchor"),
    Row("vae_xla", "SDXL VAE decode, 1024² grid, bf16, JAX", (_VAE_EAGER,), "≤ 45 ms"),
    Row("vae_torch_eager", "SDXL VAE decode, diffusers PyTorch eager (this run)", (_VAE_EAGER,),
        "anchor"),
    Row("stage1", "Stage 1 end to end: 100 DDIM steps, CFG 5, blob start, + decode, 1024²",
        (), "≤ 3.5 s", "s"),
    Row("text3d", "Text → 3D per prompt (`pipeline.TextTo3D`): stage 1 as above + LRM `large` "
        "(bf16) + one 512² turntable frame", (_PAPER_TEXT3D,), "≤ 5 s", "text3d"),
    Row("lrm_forward_xla", "LRM `large` images→triplane, 4 × 512², bf16, XLA attention",
        (_LRM_FORWARD,), "≤ 20 ms"),
    Row("lrm_forward_cudnn", "LRM `large` images→triplane, cuDNN attention", (_LRM_FORWARD,),
        "≤ 20 ms"),
    Row("render_512", "512² image from a triplane, 64 + 64 samples/ray", (_LRM_RENDER,),
        "≥ 30 images/s", "images_per_s"),
    Row("train_step", "LRM `large` train step, bf16, remat, 1 object/device, no LPIPS",
        (), "MFU ≥ 40%", "train"),
    Row("mv_train_step", "SDXL stage-1 fine-tuning step (`train_mvdiffusion`), 1 × 1024² grid, "
        "bf16, remat, fp32 AdamW + EMA", (), "MFU ≥ 40%", "train"),
)

# The recorded device runs measured anchors are read from (device runs folded in with
# `--merge ... --out bench/results`); a dry run's file never counts.
ANCHOR_GLOB = "bench/results/device*.json"
NO_MEASURED_ANCHOR = "— (no measured anchor yet)"


def anchor_files() -> list[Path]:
  return sorted(ROOT.glob(ANCHOR_GLOB))


def _shown(path: Path) -> str:
  try:
    return str(path.resolve().relative_to(ROOT))
  except ValueError:
    return str(path)


def load_recorded(files=None) -> list[tuple[Path, dict]]:
  """(path, contents) of the recorded device runs in `files` (default `anchor_files()`),
  dry runs and unreadable files left out."""
  out = []
  for path in anchor_files() if files is None else files:
    path = Path(path)
    try:
      data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
      continue
    if isinstance(data, dict) and not data.get("dry_run"):
      out.append((path, data))
  return out


def find_measured(anchor: Anchor, recorded) -> dict | None:
  """The latest recorded measurement of `anchor.key` with its provenance: value, file, key,
  card, date, commit; None when no recorded run measured it."""
  field = anchor.field or _UNIT_FIELD.get(anchor.unit, anchor.unit)
  best = None
  for path, data in recorded:
    for item in data.get("items", {}).values():
      r = item.get("measurements", {}).get(anchor.key)
      if not r or r.get("status") != "ok" or not isinstance(r.get(field), (int, float)):
        continue
      prov = data.get("provenance", {})
      runs = data.get("merged_from") or []
      if isinstance(r.get("run"), int) and 1 <= r["run"] <= len(runs):
        prov = runs[r["run"] - 1]   # the call of the lease that measured it
      found = dict(value=r[field], file=_shown(path), key=anchor.key,
                   card=data.get("card", {}).get("name", "?"),
                   date=str(prov.get("started_utc") or "?")[:10],
                   when=str(prov.get("started_utc") or ""),
                   commit=prov.get("commit") or "?")
      if best is None or found["when"] >= best["when"]:
        best = found
  return best


def render_anchor(anchor: Anchor, recorded) -> str:
  if anchor.kind == "published":
    return (f"{anchor.value:{anchor.fmt}} {anchor.unit} {anchor.what} "
            f"(published: {anchor.source})")
  m = find_measured(anchor, recorded)
  if m is None:
    return f"{anchor.what}: {NO_MEASURED_ANCHOR}"
  return (f"{m['value']:{anchor.fmt}} {anchor.unit} {anchor.what} (measured: "
          f"{m['file']} `{m['key']}`, {m['card']}, {m['date']}, commit {m['commit']})")


def render_anchors(anchors: tuple[Anchor, ...], recorded) -> str:
  """One table cell: each anchor resolved now, measured ones from `recorded`
  (`load_recorded()`)."""
  return "; ".join(render_anchor(a, recorded) for a in anchors) or "—"


# (JAX key, PyTorch key, what): the side-by-side ratios under the table.
RATIOS = (("hbm_copy", "hbm_copy_torch", "HBM copy, same bytes"),
          ("hbm_copy_donated", "hbm_copy_torch", "HBM copy, JAX donated"),
          ("unet_cudnn", "unet_torch_eager", "UNet step, cuDNN attention vs eager"),
          ("unet_xla", "unet_torch_eager", "UNet step, XLA attention vs eager"),
          ("unet_cudnn", "unet_torch_compile", "UNet step, cuDNN attention vs torch.compile"),
          ("vae_xla", "vae_torch_eager", "VAE decode vs eager"))

VERSIONS = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax",
            "orbax-checkpoint", "numpy", "torch", "diffusers", "transformers", "huggingface-hub",
            "safetensors", "ml_collections")


def versions() -> dict:
  out = {}
  for name in VERSIONS:
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      pass
  out["python"] = sys.version.split()[0]
  return out


def card() -> dict:
  """The GPU as nvidia-smi names it (name, driver, memory, clocks), or 'none'."""
  q = "name,driver_version,memory.total,clocks.max.sm,clocks.max.mem"
  try:
    out = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20)
    if out.returncode == 0 and out.stdout.strip():
      f = [x.strip() for x in out.stdout.strip().splitlines()[0].split(",")]
      return dict(zip(q.split(","), f), count=len(out.stdout.strip().splitlines()))
  except (OSError, subprocess.SubprocessError):
    pass
  return {"name": "none (no nvidia-smi)"}


def run_item(item: Item, budget: float, args, scratch_dir: Path, log) -> dict:
  """One item in its own process group, killed at `budget` seconds; its measurements, with
  "not run: why" for each it did not finish."""
  scratch = scratch_dir / f"{item.name}.json"
  cmd = [sys.executable, "-m", "bench.device.items", "--item", item.name, "--scratch",
         str(scratch), "--budget_s", f"{budget:.0f}"]
  if args.dry_run:
    cmd.append("--dry_run")
  if item.name == "stage1":
    cmd += ["--attention", args.stage1_attention]
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  if args.dry_run:
    env["JAX_PLATFORMS"] = "cpu"
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    # Tiny shapes: XLA:CPU's LLVM optimisation, not the work, dominates (the UNet's random init
    # compiled 1.5-2.5x faster at level 0); only the dry run's figures are affected.
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
  t0 = time.monotonic()
  log.write(f"== {' '.join(cmd[1:])}\n")
  log.flush()
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                          start_new_session=True)
  why = None
  try:
    rc = proc.wait(timeout=budget)
    if rc:
      why = f"not run: the item's process exited with status {rc} (see the log)"
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    why = f"not run: the item overran its {budget:.0f} s budget and was stopped"
  data = {}
  if scratch.exists():
    try:
      data = json.loads(scratch.read_text())
    except json.JSONDecodeError:
      data = {}
  meas = data.get("measurements", {})
  if data.get("error"):
    why = f"not run: {data['error']}"
  for k in item.keys:
    if k not in meas:
      meas[k] = {"status": why or "not run: the item ended without measuring it"}
  data["measurements"] = meas
  data["budget_s"] = round(budget)
  data["process_s"] = round(time.monotonic() - t0, 1)
  return data


# ---------------------------------------------------------------------------------------------
# Report


def _pct(x: float | None) -> str:
  return "—" if x is None else f"{100 * x:.0f}%"


def figure(row: Row, r: dict, limits: dict) -> tuple[str, str]:
  """(result text, fraction of the measured limits) of one measurement."""
  if r.get("status") != "ok":
    return r.get("status", "not run"), ""
  tf, bw = limits.get("tflops"), limits.get("tb_per_s")
  if row.figure == "tflops":
    return f"{r['tflops']:.0f} TFLOP/s ({r['ms']:.2f} ms)", ""
  if row.figure == "tb_per_s":
    return f"{r['tb_per_s']:.2f} TB/s ({r['ms']:.2f} ms)", ""
  if row.figure == "train":
    mfu = r.get("mfu_datasheet")
    frac = f"{r['tflops'] / tf:.0%} of the measured matmul" if tf else ""
    peak = r.get("peak_gib")
    return (f"{r['s_per_step']:.3f} s/step, {r['tflops']:.0f} TFLOP/s, MFU {_pct(mfu)} "
            f"(datasheet peak), peak memory "
            f"{'%.1f GiB' % peak if peak is not None else 'n/a'}"), frac
  if row.figure == "s":
    return f"{r['s']:.2f} s (first call incl. compile {r['first_call_s']:.0f} s)", ""
  if row.figure == "text3d":
    return (f"{r['s']:.2f} s: stage 1 {r['stage1_s']:.2f} s, stage 2 {r['stage2_s']:.3f} s, "
            f"frame {r['frame_s']:.3f} s (first call incl. compiles {r['first_call_s']:.0f} s)"), ""
  sec = r["ms"] * 1e-3
  parts = []
  # FLOPs: the model's analytic count, else XLA's count of the lowered program (items.py
  # `lowered_flops`); the compiled program's counts leave out cuBLAS / cuDNN calls on GPU, so
  # neither its FLOPs nor its bytes are shown as fractions.
  flops = r.get("analytic_flops") or r.get("lowered_flops")
  if tf and flops:
    parts.append(f"{flops / sec / 1e12:.0f} TFLOP/s = {flops / sec / 1e12 / tf:.0%} of matmul")
  if row.figure == "images_per_s":
    return f"{r['images_per_s']:.1f} images/s ({r['ms']:.0f} ms)", ", ".join(parts)
  return f"{r['ms']:.1f} ms", ", ".join(parts)


def report(results: dict, meta: dict, prov: common.Provenance, dry_run: bool,
           anchor_paths=None) -> list[str]:
  recorded = load_recorded(anchor_paths)
  meas = {k: v for item in results.values() for k, v in item.get("measurements", {}).items()}
  limits = {}
  if meas.get("matmul_bf16", {}).get("status") == "ok":
    limits["tflops"] = meas["matmul_bf16"]["tflops"]
  if meas.get("hbm_copy", {}).get("status") == "ok":
    limits["tb_per_s"] = meas["hbm_copy"]["tb_per_s"]
  c, v = meta["card"], meta["versions"]
  title = ("## Accelerator suite — DRY RUN on CPU, tiny shapes (not device figures)" if dry_run
           else f"## Accelerator suite: {c.get('name', '?')}")
  lines = [title, "",
           f"Card: {c.get('name', '?')}, driver {c.get('driver_version', '?')}, "
           f"{c.get('memory.total', '?')}. Versions: "
           + ", ".join(f"{k} {x}" for k, x in v.items()) + ".", "",
           "`bash bench/device/run.sh` (bench/device/README.md): random weights drawn on the "
           "device, bf16; times are medians after a warm-up, compile excluded and listed in "
           "bench/results/device.json. Fraction: FLOP/s over the matmul row, FLOPs from the model's "
           "analytic count, else XLA's count of the lowered program (the compiled program's "
           "counts leave out cuBLAS and cuDNN calls on GPU).", "",
           "| measurement | result | anchor | goal | fraction of measured limits |",
           "|---|---|---|---|---|"]
  for row in ROWS:
    r = meas.get(row.key, {"status": "not run: item not selected"})
    text, frac = figure(row, r, limits)
    if "run" in r:
      text += f" [run {r['run']}]"
    lines.append(f"| {row.label} | {text} | {render_anchors(row.anchors, recorded)} | "
                 f"{row.goal} | {frac} |")
  ratios = []
  for jx, th, what in RATIOS:
    a, b = meas.get(jx, {}), meas.get(th, {})
    if a.get("status") == "ok" and b.get("status") == "ok":
      same = a.get("run") == b.get("run")
      ratios.append(f"{what}: PyTorch {b['ms']:.1f} ms / JAX {a['ms']:.1f} ms = "
                    f"**{b['ms'] / a['ms']:.2f}×** ("
                    + ("same run" if same else f"runs {b['run']} and {a['run']}, separate calls: not "
                       "side by side") + ")")
  if ratios:
    lines += ["", "JAX against the PyTorch reference (> 1: JAX faster): " + "; ".join(ratios)
              + "."]
  lines += ["", f"Suite wall time {meta['wall_s']:.0f} s of its {meta['budget_s']:.0f} s "
            "budget; per item: " + ", ".join(
                f"{n} {r.get('process_s', 0):.0f}/{r.get('budget_s', 0)} s"
                for n, r in results.items()) + "."]
  return lines


def write(out: Path, results: dict, meta: dict, prov: common.Provenance, dry_run: bool):
  out.mkdir(parents=True, exist_ok=True)
  prov.load_after = None
  lines = report(results, meta, prov, dry_run)
  common.write_result(out / "device.md", lines, prov)
  tmp = out / "device.json.tmp"
  tmp.write_text(json.dumps(dict(meta, provenance=prov.as_dict(), items=results), indent=1,
                            default=str))
  tmp.replace(out / "device.json")


def dry_run_problems(results: dict) -> list[str]:
  """What a dry run must show; empty when the GPU code paths all ran on CPU."""
  problems = []
  for name, item in results.items():
    for k, r in item.get("measurements", {}).items():
      st = r.get("status", "")
      if k.endswith("_cudnn"):
        if "ConfigError" not in st or "'cpu'" not in st:
          problems.append(f"{k}: expected the one-line cuDNN error naming the 'cpu' backend, "
                          f"got {st!r}")
      elif k == "unet_torch_compile":
        if "skipped on CPU" not in st:
          problems.append(f"{k}: expected 'skipped on CPU', got {st!r}")
      elif st != "ok":
        problems.append(f"{k}: {st}")
      elif r.get("finite") is False:
        problems.append(f"{k}: non-finite output")
    if item.get("absent_imported"):
      problems.append(f"{name}: imported packages the device lacks: {item['absent_imported']}")
  return problems


def merge(run_dirs: list[str], out: Path) -> Path:
  """Several device runs (folders with device.json, oldest first) → one `device.md` /
  `device.json` in `out`: each measurement from the latest run that measured it (else the
  latest run's reason), the run it came from marked in the table, every run's provenance
  listed. For a lease spent in several calls (a rerun of the items the first call missed)."""
  runs = [json.loads((Path(d) / "device.json").read_text()) for d in run_dirs]
  items: dict = {}
  counts = None
  for i, run in enumerate(runs, 1):
    for name, item in run["items"].items():
      dst = items.setdefault(name, {"measurements": {}})
      for k, r in item.get("measurements", {}).items():
        prev = dst["measurements"].get(k)
        if r.get("status") == "ok" or prev is None or prev.get("status") != "ok":
          dst["measurements"][k] = dict(r, run=i)
          dst.update({x: y for x, y in item.items() if x != "measurements"})
  for item in items.values():   # runs made before time_jax recorded the lowered count
    for k, r in item["measurements"].items():
      if r.get("status") == "ok" and k in ("unet_xla", "unet_cudnn", "vae_xla") \
          and not r.get("lowered_flops"):
        if counts is None:
          from bench.device import items as items_lib
          counts = items_lib.full_size_lowered_flops()
        r["lowered_flops"] = counts[k]
        r["lowered_flops_from"] = "full_size_lowered_flops() on the merging machine"
  last = runs[-1]
  meta = dict(card=last["card"], versions=last["versions"], dry_run=False,
              budget_s=sum(r["budget_s"] for r in runs), wall_s=sum(r["wall_s"] for r in runs),
              merged_from=[r["provenance"] for r in runs])
  prov = common.Provenance(**{k: (tuple(v) if isinstance(v, list) else v)
                              for k, v in last["provenance"].items()})
  prov.command = "python -m bench.device.suite --merge " + " ".join(
      f"run{i}" for i in range(1, len(runs) + 1))
  lines = report(items, meta, prov, False)
  lines += ["", f"This table joins {len(runs)} calls of one lease (the **run** column of "
            "bench/results/device.json says which call measured each figure):"]
  for i, r in enumerate(runs, 1):
    p = r["provenance"]
    lines.append(f"- run {i}: `{p['command']}` at commit `{p['commit']}`, {p['started_utc']} "
                 f"to {p.get('finished_utc') or '?'}, suite wall {r['wall_s']:.0f} s of "
                 f"{r['budget_s']:.0f} s.")
  out.mkdir(parents=True, exist_ok=True)
  common.write_result(out / "device.md", lines, prov)
  (out / "device.json").write_text(json.dumps(dict(meta, provenance=prov.as_dict(),
                                                   items=items), indent=1, default=str))
  return out / "device.md"


def rerender(folder: Path) -> Path:
  """`folder`/device.md written again from `folder`/device.json with the current anchors and
  table code (no accelerator needed): the measurements, card, versions and provenance are the
  recorded run's; a line says when and by which command the table was re-rendered."""
  rec = json.loads((folder / "device.json").read_text())
  items = rec["items"]
  meta = {k: v for k, v in rec.items() if k not in ("items", "provenance")}
  prov = common.Provenance(**{k: (tuple(v) if isinstance(v, list) else v)
                              for k, v in rec["provenance"].items()})
  lines = report(items, meta, prov, bool(meta.get("dry_run")))
  merged = meta.get("merged_from") or []
  if merged:
    lines += ["", f"This table joins {len(merged)} calls of one lease (the **run** column of "
              "bench/results/device.json says which call measured each figure):"]
    lines += [f"- run {i}: `{p['command']}` at commit `{p['commit']}`, {p['started_utc']} to "
              f"{p.get('finished_utc') or '?'}." for i, p in enumerate(merged, 1)]
  lines += ["", f"Table re-rendered from device.json with the current anchors by `python -m "
            f"bench.device.suite --rerender {folder}` at commit `{common.git_commit()}`, "
            f"{common._now()} (the measurements are the run's above)."]
  common.write_result(folder / "device.md", lines, prov)
  return folder / "device.md"


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--rerender", default=None, metavar="FOLDER",
                  help="write FOLDER/device.md again from FOLDER/device.json (no accelerator)")
  ap.add_argument("--merge", nargs="+", default=None, metavar="RUN_DIR",
                  help="join device runs (folders with device.json, oldest first) into --out")
  ap.add_argument("--dry_run", action="store_true", help="CPU, tiny shapes, same code")
  ap.add_argument("--out", default=os.environ.get("OUT", ""),
                  help="folder for device.json / device.md / device.log (default: $OUT)")
  ap.add_argument("--only", default="", help="comma-separated item names")
  ap.add_argument("--budget_s", type=float, default=0,
                  help=f"whole-suite budget (default {SUITE_BUDGET_S} s; dry run 330 s)")
  ap.add_argument("--stage1_attention", default="auto",
                  help="'xla', 'cudnn' or 'auto' (the faster UNet of this run)")
  args = ap.parse_args()
  if args.rerender:
    print(rerender(Path(args.rerender)).read_text())
    return 0
  if args.merge:
    if not args.out:
      ap.error("--merge needs --out (e.g. bench/results)")
    print(merge(args.merge, Path(args.out)).read_text())
    return 0
  if not args.out:
    args.out = tempfile.mkdtemp(prefix="device_suite_")
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  names = [i.name for i in ITEMS]
  only = [x for x in args.only.split(",") if x]
  unknown = sorted(set(only) - set(names))
  if unknown:
    ap.error(f"--only: unknown items {unknown}; available: {names}")
  budget_total = args.budget_s or (330 if args.dry_run else SUITE_BUDGET_S)
  prov = common.Provenance.start()
  if os.environ.get("INSTANT3D_COMMIT"):   # the device copy has no .git: the caller names it
    prov.commit = os.environ["INSTANT3D_COMMIT"]
  meta = dict(card=card(), versions=versions(), dry_run=args.dry_run, budget_s=budget_total,
              wall_s=0.0)
  print(f"card: {meta['card']}\nversions: {meta['versions']}\nout: {out}", flush=True)
  t0 = time.monotonic()
  results: dict = {}
  with tempfile.TemporaryDirectory() as scratch, open(out / "device.log", "a") as log:
    for item in ITEMS:
      if only and item.name not in only:
        continue
      left = budget_total - (time.monotonic() - t0)
      budget = min(item.dry_budget_s if args.dry_run else item.budget_s, left)
      if item.name == "stage1" and args.stage1_attention == "auto":
        args.stage1_attention = _faster_unet(results)
      if budget < 10:
        results[item.name] = {"measurements": {k: {"status": f"not run: the suite's "
                              f"{budget_total:.0f} s budget was spent"} for k in item.keys}}
      else:
        print(f"== {item.name} (budget {budget:.0f} s)", flush=True)
        results[item.name] = run_item(item, budget, args, Path(scratch), log)
        for k, r in results[item.name]["measurements"].items():
          print(f"   {k}: {r.get('status')}"
                + (f" {_short(r)}" if r.get("status") == "ok" else ""), flush=True)
      meta["wall_s"] = time.monotonic() - t0
      write(out, results, meta, prov, args.dry_run)
  print((out / "device.md").read_text())
  if args.dry_run:
    problems = dry_run_problems(results)
    if problems:
      print("DRY RUN FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
      return 1
    print(f"dry run ok: {len(results)} items in {meta['wall_s']:.0f} s")
  return 0


def _short(r: dict) -> str:
  for k in ("ms", "s", "s_per_step", "tflops", "tb_per_s"):
    if k in r:
      return f"{k}={r[k]:.4g}"
  return ""


def _faster_unet(results: dict) -> str:
  m = results.get("unet_jax", {}).get("measurements", {})
  ok = {impl: m[f"unet_{impl}"]["ms"] for impl in ("xla", "cudnn")
        if m.get(f"unet_{impl}", {}).get("status") == "ok"}
  return min(ok, key=ok.get) if ok else "xla"


if __name__ == "__main__":
  sys.exit(main())
