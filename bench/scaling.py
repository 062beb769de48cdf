"""Quality versus compute: a small scaling study of the reconstructor on the procedural world.

    python -m bench.scaling [--sizes xs,s,m] [--budgets 150,300,600] [--decay_fraction 0.25]
                            [--eval_objects 50] [--workdir outputs/scaling]

Trains each model size (`SIZES`: the `tiny` config of configs/lrm.py with narrower / wider and
shallower / deeper encoder and decoder; `s` is `tiny` itself) with a warm-up–stable–decay
learning-rate schedule (instant3d_jax/train/optimizer.py, `schedule='wsd'`, 1−sqrt decay over
the last `decay_fraction` of the run) and evaluates every (size, budget) on held-out objects.

One run per size yields every budget. Up to its decay the WSD rate does not depend on the run's
length, so the longest budget's run (`WORKDIR/<size>/b<max>`) is trained in segments that stop
(`train.halt_at_step`, a checkpoint) at each shorter budget B's decay start
`optimizer.wsd_decay_start(B)` = B·(1 − decay_fraction); that step's checkpoint and config.json
are copied into `WORKDIR/<size>/b<B>` and continued there with `train.total_steps = B` (not a
setting a resume must match): the branch is the WSD run of budget B, step for step
(tests/test_scaling.py checks the schedules agree). Fixed step counts (`train.time_budget_s = 0`),
no periodic images or evaluation.

Per (size, budget): parameters, steps, training FLOPs (analytic: `lrm_task.flops_per_example` ×
global batch × steps), wall seconds here (the sum of the training steps' logged times, stable
part + branch: no compile, start-up or checkpoint writes), held-out PSNR / SSIM, foreground PSNR and colour
error (instant3d_jax/eval/protocol.py; LPIPS off: it would cost more than the runs). Writes
`bench/results/scaling.json`, `bench/results/scaling.md` (with provenance) and
`bench/results/scaling.png` (held-out PSNR against training FLOPs and against wall seconds, one
line per size). A rerun in the same workdir resumes: finished segments are read back from
`WORKDIR/<size>/segments.json`, and the training loop resumes from the last checkpoint.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import shutil
import sys
import time
from pathlib import Path

from bench import common
from instant3d_jax import errors

ROOT = Path(__file__).resolve().parent.parent

# Model overrides (dotted keys under `model`) of each size, relative to configs/lrm.py `tiny`
# (encoder 2 × 128, decoder 4 × 128, camera MLP 128). Head width stays 32; the triplane, NeRF
# MLP and renderer are the same for every size, so a step's rendering cost is shared.
SIZES = {
    "xs": {"encoder.hidden_size": 64, "encoder.num_heads": 2, "encoder.mlp_dim": 128,
           "encoder.num_layers": 1, "camera_embed_dim": 64, "decoder.hidden_size": 64,
           "decoder.num_heads": 2, "decoder.num_layers": 2},
    "s": {},
    "m": {"encoder.hidden_size": 192, "encoder.num_heads": 6, "encoder.mlp_dim": 384,
          "encoder.num_layers": 3, "camera_embed_dim": 192, "decoder.hidden_size": 192,
          "decoder.num_heads": 6, "decoder.num_layers": 6},
}
SUMMARY_KEYS = ("psnr", "ssim", "foreground_psnr", "colour_error")
BASELINE_KEYS = ("background_psnr", "background_foreground_psnr", "background_colour_error",
                 "mean_colour_psnr", "mean_colour_foreground_psnr", "mean_colour_colour_error")


def _set(node, dotted: str, value) -> None:
  *parents, leaf = dotted.split(".")
  for p in parents:
    node = node[p]
  if leaf not in node:
    raise errors.ConfigError(f"bench.scaling: size override {dotted!r} names no model setting")
  node[leaf] = value


def study_config(base, overrides: dict, decay_fraction: float):
  """`base` (a full LRM config) with the model `overrides`, the WSD schedule and the study's
  fixed-step training settings."""
  cfg = copy.deepcopy(base)
  for k, v in overrides.items():
    _set(cfg.model, k, v)
  cfg.optimizer.schedule = "wsd"
  cfg.optimizer.decay_fraction = float(decay_fraction)
  cfg.optimizer.decay_shape = "1-sqrt"
  cfg.optimizer.decay_steps = 0
  cfg.train.time_budget_s = 0.0
  cfg.train.image_every = 0
  cfg.train.log_every = 1                 # a segment may stop at any step: log each
  cfg.train.eval_every = 0
  cfg.train.halt_at_step = 0
  cfg.checkpoint.every_steps = 0          # only where a segment stops (below) and at the end
  return cfg


def branch_points(cfg, budgets) -> dict[int, int]:
  """`{budget: step where its decay starts}` (optimizer.wsd_decay_start), checked to lie after
  the warm-up so every branch shares the long run's stable phase."""
  from instant3d_jax.train import optimizer as opt_lib
  out = {}
  for b in budgets:
    start = opt_lib.wsd_decay_start(cfg.optimizer, b)
    if start < int(cfg.optimizer.warmup_steps):
      raise errors.ConfigError(
          f"bench.scaling: budget {b} decays from step {start}, inside the "
          f"{cfg.optimizer.warmup_steps} warm-up steps; use budgets ≥ "
          f"{int(cfg.optimizer.warmup_steps) / (1 - float(cfg.optimizer.decay_fraction)):.0f}")
    out[int(b)] = start
  return out


class _Segments:
  """`WORKDIR/<size>/segments.json`: the wall / compile seconds of each finished segment."""

  def __init__(self, path: Path):
    self.path = path
    self.done = json.loads(path.read_text()) if path.exists() else {}

  def record(self, key: str, value: dict) -> None:
    self.done[key] = value
    self.path.write_text(json.dumps(self.done, indent=1, sort_keys=True))


def step_seconds(workdir: Path, first: int, last: int) -> float:
  """Σ of the step times of steps first+1..last in `workdir/metrics.jsonl`: each logged
  `train/s_per_step` is the loop's mean over the steps since the previous log-step sync
  (train/loop.py), so it counts once per step since the previous logged step (or `first`); the
  latest row of a step logged twice (by a resumed segment) wins. Fails unless the logged steps
  end at `last`."""
  from instant3d_jax.train import metrics as metrics_lib
  logged = {}
  for row in metrics_lib.read_jsonl(workdir / metrics_lib.JSONL_FILE):
    if "train/s_per_step" in row and first < int(row["step"]) <= last:
      logged[int(row["step"])] = float(row["train/s_per_step"])
  if last not in logged:
    raise errors.Instant3DError(f"bench.scaling: {workdir} logged no step time at step {last} "
                                f"(steps {first + 1}..{last} need one at their last step)")
  total, prev = 0.0, first
  for s in sorted(logged):
    total += logged[s] * (s - prev)
    prev = s
  return total


def _train(cfg, workdir: Path, start: int, total: int, halt: int, segs: _Segments, key: str,
           label: str, log) -> dict:
  """Trains `workdir` (holding step `start`) to `halt` (0: `total`) with `total_steps=total`;
  returns (and records in `segs`) its step, wall seconds (Σ step times: no compile, start-up or
  checkpoint writes), the loop's whole time and its compile time."""
  from instant3d_jax.train import lrm_task
  if key in segs.done:
    log(f"[scaling] {label}: done before ({segs.done[key]['wall_s']:.1f}s)")
    return segs.done[key]
  c = copy.deepcopy(cfg)
  c.train.total_steps = int(total)
  c.train.halt_at_step = int(halt)
  log(f"[scaling] {label}: training to step {halt or total} of {total} in {workdir}")
  res = lrm_task.train(c, workdir, log=lambda s: None)
  if int(res.step) != (halt or total):
    raise errors.Instant3DError(f"bench.scaling: {label} stopped at step {res.step} "
                                f"({res.stop_reason}), expected {halt or total}")
  rec = {"step": int(res.step), "wall_s": step_seconds(workdir, start, int(res.step)),
         "loop_s": float(res.wall_s), "compile_s": float(res.compile_s),
         "loss": float(res.history[-1]["loss"]) if res.history else None}
  log(f"[scaling] {label}: step {rec['step']}, {rec['wall_s']:.1f}s of steps "
      f"({rec['loop_s']:.1f}s in all, {rec['compile_s']:.1f}s compile), loss {rec['loss']:.4f}")
  segs.record(key, rec)
  return rec


def _branch(src: Path, dst: Path, step: int) -> None:
  """Copies `src`'s checkpoint of `step` and its config.json into a fresh run folder `dst`."""
  from instant3d_jax.base import checkpoint as ckpt_lib
  step_dir = dst / ckpt_lib.CHECKPOINT_DIR / str(step)
  if step_dir.exists():
    return
  ckpt_dir = dst / ckpt_lib.CHECKPOINT_DIR
  if ckpt_dir.exists() and any(not p.name.endswith(".copying") for p in ckpt_dir.iterdir()):
    raise errors.Instant3DError(f"bench.scaling: {dst} exists without the step {step} it "
                                f"branches from; remove it or use another --workdir")
  dst.mkdir(parents=True, exist_ok=True)
  shutil.copy2(src / ckpt_lib.CONFIG_FILE, dst / ckpt_lib.CONFIG_FILE)
  tmp = step_dir.with_name(step_dir.name + ".copying")
  shutil.rmtree(tmp, ignore_errors=True)
  shutil.copytree(src / ckpt_lib.CHECKPOINT_DIR / str(step), tmp)
  tmp.rename(step_dir)


def run_size(cfg, name: str, budgets, workdir: Path, log=print) -> dict[int, dict]:
  """Trains size `name` (config `cfg`, WSD) for every budget; returns `{budget: timings}`:
  steps, wall seconds (stable part + branch) and compile seconds."""
  budgets = sorted(set(int(b) for b in budgets))
  starts = branch_points(cfg, budgets)
  longest = budgets[-1]
  root = workdir / name
  root.mkdir(parents=True, exist_ok=True)
  segs = _Segments(root / "segments.json")
  main_dir = root / f"b{longest}"
  # The longest run, stopped at each shorter budget's decay start (cumulative wall at each).
  wall_at, compile_s = {0: 0.0}, 0.0
  prev = 0
  for b in budgets[:-1]:
    s = starts[b]
    if s == prev:
      wall_at[s] = wall_at[prev]
      continue
    rec = _train(cfg, main_dir, prev, longest, s, segs, f"b{longest}@{s}",
                 f"{name} b{longest} steps {prev}→{s}", log)
    wall_at[s] = wall_at[prev] + rec["wall_s"]
    compile_s += rec["compile_s"]
    prev = s
  rec = _train(cfg, main_dir, prev, longest, 0, segs, f"b{longest}", f"{name} b{longest} steps "
               f"{prev}→{longest}", log)
  out = {longest: {"dir": str(main_dir), "wall_s": wall_at[prev] + rec["wall_s"],
                   "compile_s": compile_s + rec["compile_s"], "decay_start": starts[longest]}}
  for b in budgets[:-1]:
    s = starts[b]
    d = root / f"b{b}"
    _branch(main_dir, d, s)
    r = _train(cfg, d, s, b, 0, segs, f"b{b}", f"{name} b{b} steps {s}→{b} (branch)", log)
    out[b] = {"dir": str(d), "wall_s": wall_at[s] + r["wall_s"],
              "compile_s": r["compile_s"], "decay_start": s}
  return out


def evaluate(run_dir: str, cfg, num_objects: int, evaluators: dict, log=print) -> dict:
  """Held-out summary (eval/protocol.py, LPIPS off) of `run_dir`'s final checkpoint, written to
  `run_dir/eval/` as `python -m instant3d_jax.eval_lrm` would (lrm_eval.evaluate_checkpoint,
  whose steps these are, but with one compiled `Evaluator` per model size in `evaluators`, not
  one per checkpoint); read back from there on a rerun."""
  import jax
  from instant3d_jax.eval import protocol
  from instant3d_jax.base import checkpoint as ckpt_lib
  from instant3d_jax.convert import checkpoints
  out = Path(run_dir) / "eval"
  cached = out / "eval.json"
  if cached.exists():
    saved = json.loads(cached.read_text())
    if saved.get("num_objects") == num_objects:
      return saved["summary"]
  ev = copy.deepcopy(cfg)
  ev.eval.lpips = False
  _, params, step = checkpoints.load(run_dir)
  key = json.dumps(ckpt_lib.config_to_dict(ev.model), sort_keys=True)
  if key not in evaluators:
    evaluators[key] = protocol.Evaluator(ev)
  dataset = _eval_dataset(ev)
  results = evaluators[key](jax.tree.map(jax.numpy.asarray, params), dataset, num_objects)
  protocol.write_results(results, out, extra={"checkpoint": str(run_dir), "step": str(step),
                                              "variant": ev.get("variant", "?")})
  log(f"[scaling] evaluated {run_dir}: PSNR {results['summary']['psnr']:.2f} dB on "
      f"{results['num_objects']} held-out objects")
  return results["summary"]


def _eval_dataset(cfg):
  """The run's data set, checked to hold the held-out rig views (`datasets.check_eval`)."""
  from data_pipeline import datasets
  dataset = datasets.prepare(cfg, progress=False)
  datasets.check_eval(dataset, cfg)
  return dataset


@contextlib.contextmanager
def compile_cache(directory):
  """JAX's persistent compilation cache in `directory` while inside (None: unchanged). The
  segments of a size's longest run compile the same step (same schedule), and so does a rerun:
  each is compiled once. The previous settings come back on exit."""
  if directory is None:
    yield
    return
  import jax
  from jax.experimental.compilation_cache import compilation_cache as cc
  keys = {"jax_compilation_cache_dir": str(directory),
          "jax_persistent_cache_min_compile_time_secs": 0.0,
          "jax_persistent_cache_min_entry_size_bytes": 0}
  old = {k: getattr(jax.config, k) for k in keys}
  try:
    for k, v in keys.items():
      jax.config.update(k, v)
    cc.reset_cache()     # re-read the settings at the next compile
    yield
  finally:
    for k, v in old.items():
      jax.config.update(k, v)
    cc.reset_cache()


def run_study(base, sizes: dict[str, dict], budgets, *, decay_fraction: float,
              eval_objects: int, workdir, log=print, cache: bool = True) -> dict:
  """Every size × budget (see module docstring) → `{"rows": [...], "baselines": {...}, ...}`.
  `cache`: compile through a persistent cache in `workdir/jax_cache` (`compile_cache`)."""
  with compile_cache(Path(workdir) / "jax_cache" if cache else None):
    return _run_study(base, sizes, budgets, decay_fraction=decay_fraction,
                      eval_objects=eval_objects, workdir=workdir, log=log)


def _run_study(base, sizes, budgets, *, decay_fraction, eval_objects, workdir, log) -> dict:
  from instant3d_jax.models import lrm as lrm_lib
  from instant3d_jax.models import lrm_stats
  from instant3d_jax.train import lrm_task
  workdir = Path(workdir)
  rows, baselines, evaluators = [], {}, {}
  budgets = sorted(set(int(b) for b in budgets))
  for i, (name, overrides) in enumerate(sizes.items()):
    cfg = study_config(base, overrides, decay_fraction)
    dataset = lrm_task.prepare_data(cfg, progress=False)
    flops_ex = lrm_task.flops_per_example(cfg, dataset)
    gbs = int(cfg.train.global_batch_size)
    n_params = lrm_stats.count_params(lrm_lib.LRMConfig.from_config(cfg))
    log(f"[scaling] size {name} ({i + 1}/{len(sizes)}): {n_params:,} parameters, "
        f"{flops_ex * gbs / 1e9:.2f} GFLOP per step, budgets {budgets}")
    t0 = time.time()
    runs = run_size(cfg, name, budgets, workdir, log=log)
    for b in budgets:
      s = evaluate(runs[b]["dir"], cfg, eval_objects, evaluators, log=log)
      baselines = baselines or {k: s[k] for k in BASELINE_KEYS if k in s}
      rows.append({"size": name, "budget": b, "params": n_params, "steps": b,
                   "decay_start": runs[b]["decay_start"], "global_batch": gbs,
                   "flops": flops_ex * gbs * b, "wall_s": runs[b]["wall_s"],
                   "compile_s": runs[b]["compile_s"],
                   **{k: s.get(k) for k in SUMMARY_KEYS}})
      log(f"[scaling] {name} b{b}: PSNR {rows[-1]['psnr']:.2f} dB, foreground "
          f"{rows[-1]['foreground_psnr']:.2f} dB, colour error {rows[-1]['colour_error']:.1f}, "
          f"{rows[-1]['flops']:.3g} FLOPs, {rows[-1]['wall_s']:.0f}s")
    log(f"[scaling] size {name} done in {time.time() - t0:.0f}s")
  return {"rows": rows, "baselines": baselines, "sizes": sizes, "budgets": budgets,
          "decay_fraction": decay_fraction, "eval_objects": eval_objects,
          "variant": str(base.get("variant", "?")),
          "optimizer": {k: base.optimizer[k] for k in ("learning_rate", "warmup_steps",
                                                        "final_lr_ratio")}}


def _by_size(study: dict) -> list[str]:
  """The study's sizes, smallest (parameters) first."""
  params = {r["size"]: r["params"] for r in study["rows"]}
  return sorted(study["sizes"], key=lambda n: params.get(n, 0))


def plot(study: dict, out_png: Path) -> Path:
  """Two panels, held-out PSNR against training FLOPs and against wall seconds (log x), one line
  per size; the background-only baseline dashed."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import matplotlib.ticker
  import numpy as np
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for ax, key, label in ((axes[0], "flops", "training FLOPs (analytic)"),
                         (axes[1], "wall_s", "wall seconds here (Σ step times)")):
    for name in _by_size(study):
      pts = sorted((r[key], r["psnr"], r["budget"]) for r in study["rows"]
                   if r["size"] == name)
      if not pts:
        continue
      params = next(r["params"] for r in study["rows"] if r["size"] == name)
      x, y, b = zip(*pts)
      ax.plot(x, y, marker="o", label=f"{name} ({params / 1e6:.2f}M params)")
      for xi, yi, bi in pts:
        ax.annotate(str(bi), (xi, yi), textcoords="offset points", xytext=(3, -10), fontsize=7)
    if "background_psnr" in study["baselines"]:
      ax.axhline(study["baselines"]["background_psnr"], ls="--", c="grey", lw=1,
                 label="background only")
    ax.set_xscale("log")
    xs = [r[key] for r in study["rows"] if r[key] and r[key] > 0]
    if xs:   # ticks at 1, 2, 5 × each decade in range, labelled plainly
      lo, hi = np.floor(np.log10(min(xs))), np.ceil(np.log10(max(xs)))
      ticks = [m * 10.0 ** e for e in np.arange(lo, hi + 1) for m in (1, 2, 5)
               if min(xs) / 1.5 <= m * 10.0 ** e <= max(xs) * 1.5]
      ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
      ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(label)
    ax.set_ylabel("held-out PSNR (dB)")
    ax.grid(alpha=0.3, which="both")
  axes[0].legend(fontsize=8)
  fig.suptitle(f"LRM `{study['variant']}` sizes on the procedural world, WSD "
               f"(decay {study['decay_fraction']:g}); labels: steps", fontsize=10)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100)
  plt.close(fig)
  out_png.parent.mkdir(parents=True, exist_ok=True)
  out_png.write_bytes(buf.getvalue())
  return out_png


def markdown(study: dict, png_name: str) -> list[str]:
  f = lambda v, d: "—" if v is None else f"{v:.{d}f}"  # noqa: E731
  opt = study["optimizer"]
  lines = [
      "# Quality versus compute (scaling study)", "",
      f"Model sizes around configs/lrm.py `{study['variant']}` trained on the procedural world "
      f"with a warm-up–stable–decay schedule (peak lr {opt['learning_rate']:g}, "
      f"{opt['warmup_steps']} warm-up steps, 1−sqrt decay over the last "
      f"{study['decay_fraction']:g} of each budget to {opt['final_lr_ratio']:g}× the peak): one "
      "run per size, each shorter budget branched from its stable-phase checkpoint "
      "(`bench/scaling.py`). Held-out metrics on "
      f"{study['eval_objects']} test objects (the eval protocol, LPIPS off). FLOPs: analytic "
      "forward + backward of the encoder, decoder and NeRF MLP (`lrm_task.flops_per_example` "
      "× batch × steps). Wall: the sum of the logged step times here (stable part + branch; "
      "no compile, start-up or checkpoint writes). Sizes (model overrides of the config):", ""]
  for name in _by_size(study):
    ov = study["sizes"][name]
    desc = ", ".join(f"`{k}={v}`" for k, v in ov.items()) or "the config as is"
    lines.append(f"- `{name}`: {desc}")
  lines += ["", "| size | params | steps | batch | training FLOPs | wall (s) | PSNR (dB) ↑ | "
            "SSIM ↑ | foreground PSNR (dB) ↑ | colour error (0–255) ↓ |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in study["rows"]:
    lines.append(f"| {r['size']} | {r['params'] / 1e6:.3f}M | {r['steps']} | "
                 f"{r['global_batch']} | {r['flops']:.3g} | {r['wall_s']:.0f} | "
                 f"{f(r['psnr'], 2)} | {f(r['ssim'], 4)} | {f(r['foreground_psnr'], 2)} | "
                 f"{f(r['colour_error'], 1)} |")
  b = study["baselines"]
  if b:
    lines += ["", "Baselines on the same objects: background only "
              f"{f(b.get('background_psnr'), 2)} dB (colour error "
              f"{f(b.get('background_colour_error'), 1)}); mean colour inside the true mask "
              f"{f(b.get('mean_colour_psnr'), 2)} dB (foreground "
              f"{f(b.get('mean_colour_foreground_psnr'), 2)} dB, colour error "
              f"{f(b.get('mean_colour_colour_error'), 1)})."]
  best = []
  for bud in study["budgets"]:
    at = [r for r in study["rows"] if r["budget"] == bud and r["psnr"] is not None]
    if at:
      top = max(at, key=lambda r: r["psnr"])
      best.append(f"{bud} steps: `{top['size']}` ({top['psnr']:.2f} dB)")
  if best:
    lines += ["", "Best held-out PSNR per step budget: " + "; ".join(best) + "."]
  lines += ["", f"![held-out PSNR against training FLOPs and wall seconds]({png_name})"]
  return lines


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--config", default="tiny", help="configs/lrm.py variant the sizes start from")
  ap.add_argument("--sizes", default="xs,s,m", help=f"comma-separated, of {list(SIZES)}")
  ap.add_argument("--budgets", default="150,300,600", help="training steps, comma-separated")
  ap.add_argument("--decay_fraction", type=float, default=0.25)
  ap.add_argument("--eval_objects", type=int, default=50)
  ap.add_argument("--workdir", default="outputs/scaling")
  ap.add_argument("--data_dir", default="", help="data set folder (default: the config's)")
  ap.add_argument("--out", default="bench/results/scaling.md",
                  help="the table; the JSON and PNG are written beside it")
  ap.add_argument("--replot", action="store_true",
                  help="only rewrite the table and plot from the JSON beside --out (its "
                       "measurement's provenance kept); trains nothing")
  args = ap.parse_args(argv)
  if args.replot:
    saved = json.loads(Path(args.out).with_suffix(".json").read_text())
    prov = common.Provenance(**{k: tuple(v) if k.startswith("load_") else v
                                for k, v in saved.pop("provenance").items()})
    write_outputs(saved, Path(args.out), prov, config_note=saved.pop("config"))
    return 0
  from instant3d_jax import cli
  return cli.guarded(lambda _: _main(args, ap))(sys.argv)


def _main(args, ap) -> int:
  from instant3d_jax.configs import lrm as lrm_configs
  names = [s for s in args.sizes.split(",") if s]
  unknown = [s for s in names if s not in SIZES]
  if unknown or not names:
    ap.error(f"--sizes: unknown {unknown}; available {list(SIZES)}")
  try:
    budgets = sorted({int(b) for b in args.budgets.split(",") if b})
  except ValueError:
    ap.error(f"--budgets: comma-separated step counts, got {args.budgets!r}")
  if not budgets or min(budgets) <= 0:
    ap.error(f"--budgets: positive step counts, got {args.budgets!r}")
  prov = common.Provenance.start()
  base = lrm_configs.get_config(args.config)
  if args.data_dir:
    base.data_dir = args.data_dir
  study = run_study(base, {n: SIZES[n] for n in names}, budgets,
                    decay_fraction=args.decay_fraction, eval_objects=args.eval_objects,
                    workdir=args.workdir)
  write_outputs(study, Path(args.out), prov, config_note=f"configs/lrm.py:{args.config}")
  return 0


def write_outputs(study: dict, out_md: Path, prov, *, config_note: str) -> tuple[Path, ...]:
  """`out_md`, and beside it the JSON and the plot (same stem)."""
  out_md = Path(out_md)
  png = plot(study, out_md.with_suffix(".png"))
  js = out_md.with_suffix(".json")
  lines = markdown(study, png.name)
  lines.insert(2, f"Configuration: `{config_note}` at commit `{prov.commit}` (the provenance "
               "line below).\n")
  md = common.write_result(out_md, lines, prov)
  js.write_text(json.dumps(dict(study, provenance=prov.as_dict(), config=config_note),
                           indent=1) + "\n")
  print(f"wrote {md}, {js} and {png}")
  return md, js, png


if __name__ == "__main__":
  sys.exit(main())
