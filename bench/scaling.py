"""Quality versus compute: the scaling study of the paper's reconstructor.

    python -m bench.scaling [--workdir outputs/scaling] [--data_dir DIR]     # here, then collect
    python -m bench.scaling --emit slurm|tpu --workdir gs://bucket/scaling  # a cluster's commands
    python -m bench.scaling --collect --workdir gs://bucket/scaling         # what has finished

The study (configs/scaling.py, defined once there): a ladder of sizes of the paper's model
(`large`'s switches scaled down, width and depth together), a second seed of one size, and the
CPU demo's lift model (`tiny`) as a reference line, each trained for every step budget with a
warm-up–stable–decay schedule (train/optimizer.py `schedule='wsd'`, 1−sqrt decay over the last
`decay_fraction` of the run) and scored on the `val` split.

One run per series yields every budget. Up to its decay the WSD rate does not depend on the run's
length, so the longest budget's run (`WORKDIR/<series>/b<max>`) is trained in segments that stop
(`train.halt_at_step`, a checkpoint) at each shorter budget B's decay start
`optimizer.wsd_decay_start(B)` = B·(1 − decay_fraction); that step's checkpoint and config.json
are copied into `WORKDIR/<series>/b<B>` (the branch-copy step) and continued there with
`train.total_steps = B`: the branch is the WSD run of budget B, step for step (tests check it).
Checkpoint retention keeps every branch point (`checkpoint.keep` = number of budgets + 1).

Jobs (what `--emit` schedules and the local study runs in order; each is idempotent, so a
preempted job is simply run again):
  --job segment --series S --until N   train S's longest run to step N (a branch point, or the
                                       longest budget: then also score it)
  --job branch --series S --budget B   copy the checkpoint at B's decay start, train to B, score
Scoring (eval/protocol.py on `val`, LPIPS off, per-pixel MSE on) writes the run's results file
`RUN/results.json` (eval/results.py: commit, config and parameter hashes, machine, load; the
metrics with every object's values, for the bootstrap) into its workdir, local or `gs://`.

`--collect` reads every results file that exists, and writes the table, the fitted frontier and
the plot: `bench/results/scaling.{md,json,png}` (provenance line: who collected, when). The loss
is the val MSE (whole views); per budget of compute C the frontier is the lowest loss reached by
any size with at most C training FLOPs (analytic, `lrm_task.flops_per_example` × batch × steps);
L(C) = a·C^(−b) + c is fitted to the frontier points, its exponent b with a bootstrap interval
over val objects (each resample re-draws the objects, recomputes every run's mean, the frontier
and the fit). Wall: the sum of the logged step times (no compile, start-up or checkpoint writes).
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

from bench import common
from instant3d_jax import errors

ROOT = Path(__file__).resolve().parent.parent
STUDY_FILE = "study.json"
RESULTS_FILE = "results.json"
STUDY_SCHEMA = "instant3d-scaling-study/1"
SUMMARY_KEYS = ("mse", "foreground_mse", "psnr", "foreground_psnr", "ssim", "colour_error")
PER_OBJECT_KEYS = ("mse", "foreground_mse", "psnr", "object_index")
BASELINE_KEYS = ("background_mse", "background_psnr", "mean_colour_mse", "mean_colour_psnr",
                 "background_foreground_mse", "mean_colour_foreground_mse")
ROLES = ("size", "seed", "reference")


def _set(node, dotted: str, value) -> None:
  *parents, leaf = dotted.split(".")
  for p in parents:
    node = node[p]
  if leaf not in node:
    raise errors.ConfigError(f"bench.scaling: size override {dotted!r} names no model setting")
  node[leaf] = value


def study_config(base, overrides: dict, decay_fraction: float, *, budgets=(),
                 warmup_steps: int | None = None, learning_rate: float | None = None):
  """`base` (a full LRM config) with the model `overrides`, the WSD schedule and the study's
  fixed-step training settings; checkpoints kept for every branch point of `budgets`."""
  cfg = copy.deepcopy(base)
  for k, v in overrides.items():
    _set(cfg.model, k, v)
  cfg.optimizer.schedule = "wsd"
  cfg.optimizer.decay_fraction = float(decay_fraction)
  cfg.optimizer.decay_shape = "1-sqrt"
  cfg.optimizer.decay_steps = 0
  if warmup_steps is not None:
    cfg.optimizer.warmup_steps = int(warmup_steps)
  if learning_rate is not None:
    cfg.optimizer.learning_rate = float(learning_rate)
  cfg.train.time_budget_s = 0.0
  cfg.train.image_every = 0
  cfg.train.log_every = 1                 # a segment may stop at any step: log each
  cfg.train.eval_every = 0
  cfg.train.halt_at_step = 0
  cfg.checkpoint.every_steps = 0          # only where a segment stops (below) and at the end
  cfg.checkpoint.keep = max(3, len(tuple(budgets)) + 1)   # every branch point survives
  cfg.eval.split = "val"
  cfg.eval.lpips = False
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


# ------------------------------------------------------------------------------------------------
# The study: its series and their configs, written once into WORKDIR/study.json.

def build_series(scfg, lrm_base=None, data_dir: str = "") -> dict[str, dict]:
  """`{series: {"role", "config", "width", "learning_rate", "seed"}}` of configs/scaling.py's
  study: the ladder (role 'size'), its second seed ('seed') and the lift reference
  ('reference'). `lrm_base` (default configs/lrm.py `scfg.base`) supplies data, loss and
  renderer."""
  from instant3d_jax.configs import lrm as lrm_configs
  from instant3d_jax.configs import scaling as scaling_configs
  base = copy.deepcopy(lrm_base) if lrm_base is not None else lrm_configs.get_config(scfg.base)
  if data_dir:
    base.data_dir = data_dir
  budgets = tuple(int(b) for b in scfg.budgets)
  common_kw = dict(budgets=budgets, warmup_steps=int(scfg.warmup_steps))
  out = {}
  for name, rung in scfg.ladder.items():
    paper = copy.deepcopy(base)
    scaling_configs.paper_model(paper.model)
    ov = scaling_configs.size_overrides(int(rung.width), int(rung.encoder_layers),
                                        int(rung.decoder_layers))
    cfg = study_config(paper, ov, scfg.decay_fraction, learning_rate=float(rung.learning_rate),
                       **common_kw)
    out[name] = {"role": "size", "config": cfg, "width": int(rung.width),
                 "learning_rate": float(rung.learning_rate), "seed": int(cfg.seed),
                 "overrides": ov}
  if scfg.get("seed_size"):
    if scfg.seed_size not in out:
      raise errors.ConfigError(f"configs/scaling.py: seed_size {scfg.seed_size!r} is not a "
                               f"ladder size ({', '.join(out)})")
    src = out[scfg.seed_size]
    cfg = copy.deepcopy(src["config"])
    cfg.seed = int(scfg.second_seed)
    out[f"{scfg.seed_size}_seed{int(scfg.second_seed)}"] = dict(src, role="seed", config=cfg,
                                                                 seed=int(cfg.seed))
  if scfg.get("reference"):
    ref = copy.deepcopy(base) if scfg.reference == scfg.base else lrm_configs.get_config(
        scfg.reference)
    if data_dir:
      ref.data_dir = data_dir
    cfg = study_config(ref, {}, scfg.decay_fraction, **common_kw)
    out[str(scfg.reference)] = {"role": "reference", "config": cfg,
                                "width": int(cfg.model.decoder.hidden_size),
                                "learning_rate": float(cfg.optimizer.learning_rate),
                                "seed": int(cfg.seed), "overrides": {}}
  return out


def write_study(workdir, series: dict, scfg, *, config_note: str) -> dict:
  """WORKDIR/study.json: every series' full config, parameters and FLOPs per step, the budgets.
  An existing study.json must describe the same study (else a one-line error: another study's
  workdir)."""
  from instant3d_jax import fileio
  from instant3d_jax.base import checkpoint as ckpt_lib
  from instant3d_jax.models import lrm as lrm_lib
  from instant3d_jax.models import lrm_stats
  from instant3d_jax.train import lrm_task
  budgets = sorted(int(b) for b in scfg.budgets)
  from instant3d_jax.eval import results as results_lib
  spec = {"schema": STUDY_SCHEMA, "config": config_note, "created_utc": results_lib.now_utc(),
          "budgets": budgets,
          "decay_fraction": float(scfg.decay_fraction), "eval_objects": int(scfg.eval_objects),
          "warmup_steps": int(scfg.warmup_steps), "series": {}}
  for name, s in series.items():
    cfg = s["config"]
    branch_points(cfg, budgets)
    dataset = lrm_task.prepare_data(cfg, progress=False)
    spec["series"][name] = {
        "role": s["role"], "width": s["width"], "learning_rate": s["learning_rate"],
        "seed": s["seed"], "overrides": s["overrides"],
        "params": int(lrm_stats.count_params(lrm_lib.LRMConfig.from_config(cfg))),
        "flops_per_step": float(lrm_task.flops_per_example(cfg, dataset))
                          * int(cfg.train.global_batch_size),
        "config": ckpt_lib.config_to_dict(cfg)}
  path = fileio.path(workdir) / STUDY_FILE
  if path.exists():
    old = json.loads(path.read_text())
    if json.dumps(old["series"], sort_keys=True) != json.dumps(spec["series"], sort_keys=True) \
        or old["budgets"] != spec["budgets"]:
      raise errors.InputError(f"{fileio.display(path)}: holds another study (other series, "
                              "configs or budgets); use another --workdir")
    return old
  fileio.write_text(path, json.dumps(spec, indent=1) + "\n")
  return spec


def read_study(workdir) -> dict:
  from instant3d_jax import fileio
  path = fileio.path(workdir) / STUDY_FILE
  if not path.exists():
    raise errors.InputError(f"{fileio.display(path)}: no study here (expected the {STUDY_FILE} "
                            "that `python -m bench.scaling` or `--emit` writes first)")
  spec = json.loads(path.read_text())
  if spec.get("schema") != STUDY_SCHEMA:
    raise errors.InputError(f"{fileio.display(path)}: not a scaling study (expected schema "
                            f"{STUDY_SCHEMA!r})")
  return spec


def series_config(spec: dict, name: str):
  from instant3d_jax.convert import lrm as convert_lrm
  if name not in spec["series"]:
    raise errors.InputError(f"--series {name!r}: not in this study "
                            f"({', '.join(spec['series'])})")
  return convert_lrm.config_from_json(json.dumps(spec["series"][name]["config"]))


# ------------------------------------------------------------------------------------------------
# Jobs.

def _run_dir(workdir, name: str, budget: int):
  from instant3d_jax import fileio
  return fileio.path(workdir) / name / f"b{int(budget)}"


def _latest_step(run_dir) -> int:
  from instant3d_jax.base import checkpoint as ckpt_lib
  d = run_dir / ckpt_lib.CHECKPOINT_DIR
  if not d.exists():
    return 0
  steps = [int(p.name) for p in d.iterdir() if p.name.isdigit() and ckpt_lib._is_complete(p)]
  return max(steps, default=0)


def step_seconds(workdir, first: int, last: int) -> float:
  """Σ of the step times of steps first+1..last in `workdir/metrics.jsonl`: each logged
  `train/s_per_step` is the loop's mean over the steps since the previous log-step sync
  (train/loop.py), so it counts once per step since the previous logged step (or `first`); the
  latest row of a step logged twice (by a resumed segment) wins. Fails unless the logged steps
  end at `last`."""
  from instant3d_jax.train import metrics as metrics_lib
  from instant3d_jax import fileio
  logged = {}
  for row in metrics_lib.read_jsonl(fileio.path(workdir) / metrics_lib.JSONL_FILE):
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


def _train(cfg, run_dir, total: int, halt: int, label: str, log) -> None:
  """Trains `run_dir` to `halt` (0: `total`) with `total_steps=total`, unless a checkpoint at
  or past that step is there already."""
  from instant3d_jax.train import lrm_task
  target = halt or total
  if _latest_step(run_dir) >= target:
    log(f"[scaling] {label}: done before")
    return
  c = copy.deepcopy(cfg)
  c.train.total_steps = int(total)
  c.train.halt_at_step = int(halt)
  log(f"[scaling] {label}: training to step {target} of {total} in {run_dir}")
  t0 = time.time()
  res = lrm_task.train(c, run_dir, log=lambda s: None)
  if int(res.step) != target:
    raise errors.Instant3DError(f"bench.scaling: {label} stopped at step {res.step} "
                                f"({res.stop_reason}), expected {target}")
  loss = res.history[-1]["loss"] if res.history else float("nan")
  log(f"[scaling] {label}: step {res.step} in {time.time() - t0:.0f}s "
      f"({res.compile_s:.0f}s compile), loss {loss:.4f}")


def copy_branch(src, dst, step: int) -> None:
  """Copies `src`'s checkpoint of `step` and its config.json into the run folder `dst` (local:
  a temporary name, then a rename; gs://: file by file, orbax's commit marker last)."""
  from instant3d_jax import fileio
  from instant3d_jax.base import checkpoint as ckpt_lib
  src, dst = fileio.path(src), fileio.path(dst)
  src_step = src / ckpt_lib.CHECKPOINT_DIR / str(step)
  if not src_step.exists() or not ckpt_lib._is_complete(src_step):
    raise errors.InputError(f"bench.scaling: {fileio.display(src_step)} does not exist yet "
                            f"(run `--job segment --until {step}` of this series first)")
  step_dir = dst / ckpt_lib.CHECKPOINT_DIR / str(step)
  if step_dir.exists() and ckpt_lib._is_complete(step_dir):
    return
  ckpt_dir = dst / ckpt_lib.CHECKPOINT_DIR
  if ckpt_dir.exists() and any(p.name.isdigit() and p.name != str(step)
                               for p in ckpt_dir.iterdir()):
    raise errors.InputError(f"bench.scaling: {fileio.display(dst)} holds another run's "
                            f"checkpoints, not the step {step} it branches from; remove it or "
                            "use another --workdir")
  fileio.copy_file(src / ckpt_lib.CONFIG_FILE, dst / ckpt_lib.CONFIG_FILE)
  if not fileio.is_remote(dst):
    tmp = Path(str(step_dir) + ".copying")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(Path(str(src_step)), tmp)
    tmp.rename(Path(str(step_dir)))
    return
  files, todo = [], [src_step]
  while todo:                # epath's gs:// has no recursive glob: walk the folders
    for p in todo.pop().iterdir():
      (todo if p.is_dir() else files).append(p)
  files.sort(key=lambda p: (p.name == "commit_success.txt", str(p)))     # the marker last
  for p in files:
    fileio.copy_file(p, step_dir / p.relative_to(src_step))


_EVALUATORS: dict = {}


def score(spec: dict, name: str, budget: int, workdir, *, log=print) -> dict:
  """Scores run (series `name`, `budget`) on val and writes its results file; returns it."""
  import jax
  from instant3d_jax.base import checkpoint as ckpt_lib
  from instant3d_jax.convert import checkpoints
  from instant3d_jax.eval import protocol
  from instant3d_jax.eval import results as results_lib
  from data_pipeline import datasets
  run = results_lib.Run.start("scaling_run")
  cfg = series_config(spec, name)
  run_dir = _run_dir(workdir, name, budget)
  _, params, step = checkpoints.load(run_dir)
  if int(step) != int(budget):
    raise errors.Instant3DError(f"bench.scaling: {run_dir} is at step {step}, not {budget}")
  key = json.dumps(ckpt_lib.config_to_dict(cfg.model), sort_keys=True)
  if key not in _EVALUATORS:
    _EVALUATORS[key] = protocol.Evaluator(cfg, with_lpips=False, mse=True)
  dataset = datasets.prepare(cfg, progress=False)
  datasets.check_eval(dataset, cfg)
  res = _EVALUATORS[key](jax.tree.map(jax.numpy.asarray, params), dataset,
                         int(spec["eval_objects"]))
  primary = jax.process_index() == 0          # one writer on a multi-host job
  if primary:
    protocol.write_results(res, run_dir / "eval", extra={"checkpoint": str(run_dir),
                                                         "step": str(step)})
  s = spec["series"][name]
  decay_start = branch_points(cfg, [budget])[int(budget)]
  main = _run_dir(workdir, name, max(spec["budgets"]))
  if int(budget) == max(spec["budgets"]):
    wall = step_seconds(main, 0, int(budget))
  else:
    wall = step_seconds(main, 0, decay_start) + step_seconds(run_dir, decay_start, int(budget))
  summary = res["summary"]
  metrics = {"series": name, "role": s["role"], "budget": int(budget), "steps": int(budget),
             "decay_start": decay_start, "params": s["params"],
             "global_batch": int(cfg.train.global_batch_size),
             "flops": s["flops_per_step"] * int(budget), "wall_s": wall,
             "learning_rate": s["learning_rate"], "seed": s["seed"],
             "num_objects": res["num_objects"],
             **{k: summary.get(k) for k in SUMMARY_KEYS}}
  kw = dict(configs={"lrm": cfg}, params={"lrm": params}, metrics=metrics,
            baselines={k: summary[k] for k in BASELINE_KEYS if k in summary},
            wall_s={"steps": wall, "eval": res["seconds"]},
            extra={"per_object": {k: res["per_object"][k] for k in PER_OBJECT_KEYS},
                   "study": spec["config"]})
  out = run.write(run_dir / RESULTS_FILE, **kw) if primary else run.record(**kw)
  log(f"[scaling] {name} b{budget}: val MSE {metrics['mse']:.5f} (PSNR {metrics['psnr']:.2f} dB"
      f", foreground MSE {metrics['foreground_mse']:.4f}), {metrics['flops']:.3g} FLOPs, "
      f"{wall:.0f}s of steps")
  return out


def job_segment(spec: dict, name: str, until: int, workdir, *, log=print) -> None:
  """Trains series `name`'s longest run to step `until` (a branch point or the longest budget;
  the latter is then scored)."""
  cfg = series_config(spec, name)
  budgets = sorted(spec["budgets"])
  longest = budgets[-1]
  stops = sorted(set(branch_points(cfg, budgets[:-1]).values())) + [longest]
  if int(until) not in stops:
    raise errors.InputError(f"--until {until}: series {name} stops only at {stops}")
  halt = 0 if int(until) == longest else int(until)
  _train(cfg, _run_dir(workdir, name, longest), longest, halt,
         f"{name} b{longest} to step {until}", log)
  if halt == 0 and not (_run_dir(workdir, name, longest) / RESULTS_FILE).exists():
    score(spec, name, longest, workdir, log=log)


def job_branch(spec: dict, name: str, budget: int, workdir, *, log=print) -> None:
  """Branches series `name`'s budget `budget` off its longest run, trains and scores it."""
  cfg = series_config(spec, name)
  budgets = sorted(spec["budgets"])
  if int(budget) not in budgets[:-1]:
    raise errors.InputError(f"--budget {budget}: series {name} branches only at "
                            f"{budgets[:-1]} (the longest, {budgets[-1]}, is a segment)")
  start = branch_points(cfg, [budget])[int(budget)]
  dst = _run_dir(workdir, name, budget)
  if (dst / RESULTS_FILE).exists():
    log(f"[scaling] {name} b{budget}: scored before")
    return
  copy_branch(_run_dir(workdir, name, budgets[-1]), dst, start)
  _train(cfg, dst, int(budget), 0, f"{name} b{budget} steps {start}→{budget} (branch)", log)
  score(spec, name, budget, workdir, log=log)


def jobs(spec: dict) -> list[dict]:
  """Every job of the study, in an order that respects its dependencies: per series, the
  segments of the longest run in step order, each shorter budget's branch right after the
  segment that reaches its decay start. `after`: the job it needs (None: none)."""
  out = []
  for name in spec["series"]:
    cfg = series_config(spec, name)
    budgets = sorted(spec["budgets"])
    starts = branch_points(cfg, budgets[:-1])
    prev = None
    for until in sorted(set(starts.values())) + [budgets[-1]]:
      seg = {"id": f"{name}-s{until}", "series": name, "job": "segment", "until": until,
             "after": prev}
      out.append(seg)
      for b in budgets[:-1]:
        if starts[b] == until:
          out.append({"id": f"{name}-b{b}", "series": name, "job": "branch", "budget": b,
                      "after": seg["id"]})
      prev = seg["id"]
  return out


def job_args(job: dict) -> list[str]:
  extra = ["--until", str(job["until"])] if job["job"] == "segment" else [
      "--budget", str(job["budget"])]
  return ["--job", job["job"], "--series", job["series"]] + extra


def run_local(spec: dict, workdir, *, log=print) -> None:
  """Every job here, in `jobs` order."""
  t0 = time.time()
  todo = jobs(spec)
  for i, job in enumerate(todo):
    el = time.time() - t0
    eta = f", ETA {el / i * (len(todo) - i) / 60:.0f} min" if i else ""
    log(f"[scaling] job {i + 1}/{len(todo)} {job['id']} ({el / 60:.0f} min so far{eta})")
    if job["job"] == "segment":
      job_segment(spec, job["series"], job["until"], workdir, log=log)
    else:
      job_branch(spec, job["series"], job["budget"], workdir, log=log)


# ------------------------------------------------------------------------------------------------
# Emit: the study's jobs as a cluster's commands.

def emit(spec: dict, kind: str, workdir: str, out: Path, *, repo: str = str(ROOT),
         python: str = "python") -> Path:
  """Writes the launch script of `kind` ('slurm': one sbatch per job, each after the job it
  needs; 'tpu': one chain per series, its jobs in order on that series' TPU VM, run through
  `$RUN`) to `out` and returns it."""
  head = ["#!/usr/bin/env bash",
          f"# The scaling study's {len(jobs(spec))} jobs (`python -m bench.scaling --emit {kind}`"
          f"). Workdir: {workdir}",
          "# Re-running this script is safe: a finished job returns at once.",
          "set -euo pipefail",
          f"REPO=${{REPO:-{shlex.quote(repo)}}}",
          f"PY=${{PY:-{shlex.quote(python)}}}",
          f"W={shlex.quote(str(workdir))}"]

  def cmd(job):
    return " ".join(["cd", '"$REPO"', "&&", '"$PY"', "-m", "bench.scaling", "--workdir", '"$W"']
                    + job_args(job))
  lines = list(head)
  if kind == "slurm":
    lines += ["SBATCH_ARGS=${SBATCH_ARGS:-}   # partition, account, --gres=gpu:1, time …",
              "declare -A ID"]
    for job in jobs(spec):
      dep = f'--dependency=afterok:${{ID[{job["after"]}]}} ' if job["after"] else ""
      lines.append(f'ID[{job["id"]}]=$(sbatch --parsable $SBATCH_ARGS {dep}'
                   f'--job-name=scaling-{job["id"]} --wrap="{cmd(job)}")')
      lines.append(f'echo "{job["id"]}: job ${{ID[{job["id"]}]}}"')
  elif kind == "tpu":
    lines += ["# One TPU VM per series, named $TPU_PREFIX-<series>; $RUN runs a command on all "
              "its workers.",
              "TPU_PREFIX=${TPU_PREFIX:-scaling}",
              "ZONE=${ZONE:-us-central2-b}",
              'RUN=${RUN:-"gcloud compute tpus tpu-vm ssh --zone $ZONE --worker=all"}',
              "chain() {  # series, then its commands in order",
              '  local s=$1; shift',
              '  for c in "$@"; do $RUN "$TPU_PREFIX-$s" --command "$c"; done',
              "}"]
    by_series: dict[str, list] = {}
    for job in jobs(spec):
      by_series.setdefault(job["series"], []).append(job)
    for name, js in by_series.items():
      quoted = " ".join(shlex.quote(cmd(j)) for j in js)
      lines.append(f"chain {name} {quoted} &")
    lines.append("wait")
  else:
    raise errors.InputError(f"--emit {kind!r}: expected slurm or tpu")
  out = Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text("\n".join(lines) + "\n")
  out.chmod(0o755)
  return out


# ------------------------------------------------------------------------------------------------
# Collect: the finished runs' results files → table, fit, plot.

def collect(workdir) -> dict:
  """Every finished run's results file → `{"rows", "per_object", "spec", ...}`."""
  from instant3d_jax.eval import results as results_lib
  spec = read_study(workdir)
  rows, per_object, baselines, missing = [], {}, {}, []
  for name in spec["series"]:
    for b in spec["budgets"]:
      p = _run_dir(workdir, name, b) / RESULTS_FILE
      if not p.exists():
        missing.append(f"{name}/b{b}")
        continue
      r = results_lib.read(p)
      m = dict(r["metrics"])
      m.update(commit=r["commit"], dirty=r["dirty"], config_sha256=r["config_sha256"]["lrm"],
               param_sha256=r["param_sha256"]["lrm"], load=r["load"],
               finished_utc=r["finished_utc"])
      rows.append(m)
      per_object[(name, int(b))] = r["extra"]["per_object"]
      baselines = baselines or r["baselines"]
  return {"spec": spec, "rows": rows, "per_object": per_object, "baselines": baselines,
          "missing": missing}


def _power_law(c, a, b, c0):
  import numpy as np
  return a * np.power(c, -b) + c0


def frontier(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
  """The compute-optimal points of `(flops, loss, size)`: those with a lower loss than every
  point of no more compute (ties in compute: the lower loss)."""
  best, out = float("inf"), []
  for f, l, n in sorted(points, key=lambda p: (p[0], p[1])):
    if l < best:
      out.append((f, l, n))
      best = l
  return out


def fit_power_law(flops, loss) -> dict | None:
  """L(C) = a·(C/C₀)^(−b) + c on the points (C₀ = the smallest C), least squares in L with
  a, b ≥ 0 and 0 ≤ c ≤ min L; None with fewer than 4 points or no convergence."""
  import numpy as np
  from scipy import optimize
  x, y = np.asarray(flops, float), np.asarray(loss, float)
  if len(x) < 4:
    return None
  c_ref = float(x.min())
  xs = x / c_ref
  best = None
  for b0 in (0.1, 0.3, 0.6, 1.0):
    p0 = (max(y[0] - 0.5 * y.min(), 1e-6), b0, 0.5 * y.min())
    try:
      p, _ = optimize.curve_fit(_power_law, xs, y, p0=p0, maxfev=20000,
                                bounds=([0.0, 0.0, 0.0], [np.inf, 5.0, float(y.min())]))
    except (RuntimeError, ValueError):
      continue
    sse = float(np.sum((_power_law(xs, *p) - y) ** 2))
    if best is None or sse < best[1]:
      best = (p, sse)
  if best is None:
    return None
  (a, b, c), sse = best
  return {"a": float(a), "b": float(b), "c": float(c), "c_ref_flops": c_ref, "sse": sse,
          "n": int(len(x)), "c_at_bound": bool(c >= float(y.min()) * (1 - 1e-3))}


def analyse(col: dict, *, n_boot: int = 1000, seed: int = 0) -> dict:
  """The frontier of the size series (val MSE against FLOPs), its power-law fit with a
  bootstrap interval of the exponent over val objects, the best size per budget, the second
  seed's spread, and the lift reference beside the frontier."""
  import numpy as np
  spec, rows = col["spec"], col["rows"]
  sizes = [n for n, s in spec["series"].items() if s["role"] == "size"]
  size_rows = [r for r in rows if r["series"] in sizes]
  pts = [(r["flops"], r["mse"], r["series"]) for r in size_rows]
  front = frontier(pts)
  fit = fit_power_law([p[0] for p in front], [p[1] for p in front])
  out = {"frontier": [{"flops": f, "mse": l, "series": n} for f, l, n in front], "fit": fit}
  # Bootstrap over objects: the same resampled objects for every run (one val set).
  keys = [(r["series"], r["budget"]) for r in size_rows]
  objs = None
  mats = []
  for k in keys:
    po = col["per_object"][k]
    idx = [int(i) for i in po["object_index"]]
    if objs is None:
      objs = idx
    elif idx != objs:
      raise errors.Instant3DError(f"bench.scaling: run {k} was scored on other val objects")
    mats.append(np.asarray(po["mse"], float))
  exps, fails = [], 0
  if mats and fit is not None:
    mats = np.stack(mats)                       # [runs, objects]
    rng = np.random.default_rng(seed)
    n_obj = mats.shape[1]
    flops = [r["flops"] for r in size_rows]
    names = [r["series"] for r in size_rows]
    for _ in range(n_boot):
      pick = rng.integers(0, n_obj, n_obj)
      means = mats[:, pick].mean(axis=1)
      fr = frontier(list(zip(flops, means.tolist(), names)))
      f = fit_power_law([p[0] for p in fr], [p[1] for p in fr])
      if f is None:
        fails += 1
      else:
        exps.append(f["b"])
    # Standard error of each run's mean over objects (for the seed comparison).
  out["bootstrap"] = {"n": n_boot, "failed": fails,
                      "b_interval": ([float(np.percentile(exps, 2.5)),
                                      float(np.percentile(exps, 97.5))] if exps else None),
                      "b_median": float(np.median(exps)) if exps else None}
  # Best size per step budget, and the size on the frontier at each run's compute.
  out["best_per_budget"] = {}
  for b in spec["budgets"]:
    at = [r for r in size_rows if r["budget"] == b]
    if at:
      top = min(at, key=lambda r: r["mse"])
      out["best_per_budget"][int(b)] = top["series"]
  on_front = []
  for r in sorted(size_rows, key=lambda r: r["flops"]):
    avail = [p for p in pts if p[0] <= r["flops"]]
    on_front.append({"flops": r["flops"], "series": min(avail, key=lambda p: p[1])[2]})
  out["frontier_size_at"] = on_front
  # Seed spread: the second seed against its size, per budget, beside the objects' s.e.
  seeds = []
  for n, s in spec["series"].items():
    if s["role"] != "seed":
      continue
    twin = next((m for m, t in spec["series"].items() if t["role"] == "size"
                 and t["width"] == s["width"] and t["overrides"] == s["overrides"]), None)
    for b in spec["budgets"]:
      a = col["per_object"].get((n, int(b)))
      c = col["per_object"].get((twin, int(b)))
      if a is None or c is None:
        continue
      a, c = np.asarray(a["mse"], float), np.asarray(c["mse"], float)
      se = float(np.std(c, ddof=1) / np.sqrt(len(c)))
      seeds.append({"series": n, "of": twin, "budget": int(b), "mse": float(a.mean()),
                    "twin_mse": float(c.mean()),
                    "rel_diff": float(abs(a.mean() - c.mean()) / c.mean()),
                    "objects_se": se})
  out["seeds"] = seeds
  # The reference (lift) line against the frontier's fit at the same compute.
  ref = []
  for r in rows:
    if spec["series"][r["series"]]["role"] != "reference":
      continue
    pred = (_power_law(r["flops"] / fit["c_ref_flops"], fit["a"], fit["b"], fit["c"])
            if fit else None)
    best = min((p[1] for p in pts if p[0] <= r["flops"]), default=None)
    ref.append({"series": r["series"], "budget": r["budget"], "flops": r["flops"],
                "mse": r["mse"], "frontier_mse": best,
                "fit_mse": float(pred) if pred is not None else None})
  out["reference"] = ref
  return out


def plot(col: dict, ana: dict, out_png: Path) -> Path:
  """Three panels: val MSE against training FLOPs (sizes, second seed dashed, reference dotted,
  the fitted frontier), against wall seconds, and val PSNR against FLOPs."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import matplotlib.ticker
  import numpy as np
  spec, rows = col["spec"], col["rows"]
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
  style = {"size": dict(ls="-", marker="o"), "seed": dict(ls="--", marker="x"),
           "reference": dict(ls=":", marker="s", c="k")}
  order = sorted(spec["series"], key=lambda n: (ROLES.index(spec["series"][n]["role"]),
                                                spec["series"][n]["params"]))
  panels = ((axes[0], "flops", "mse", "training FLOPs (analytic)", "val MSE (whole views)"),
            (axes[1], "wall_s", "mse", "wall seconds here (Σ step times)", "val MSE"),
            (axes[2], "flops", "psnr", "training FLOPs (analytic)", "val PSNR (dB)"))
  for ax, xk, yk, xl, yl in panels:
    for n in order:
      s = spec["series"][n]
      pts = sorted((r[xk], r[yk], r["budget"]) for r in rows if r["series"] == n)
      if not pts:
        continue
      x, y, _ = zip(*pts)
      label = {"size": f"{n} ({s['params'] / 1e6:.2f}M, width {s['width']})",
               "seed": f"{n} (second seed)",
               "reference": f"{n}: the lift model ({s['params'] / 1e6:.2f}M; lift not in FLOPs)"
               }[s["role"]]
      ax.plot(x, y, label=label, **style[s["role"]])
      if s["role"] == "size" and ax is axes[0]:
        for xi, yi, bi in pts:
          ax.annotate(str(bi), (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=6)
    b = col["baselines"]
    base_key = {"mse": "background_mse", "psnr": "background_psnr"}[yk]
    if base_key in b:
      ax.axhline(b[base_key], ls="--", c="grey", lw=1, label="background only")
    mk = {"mse": "mean_colour_mse", "psnr": "mean_colour_psnr"}[yk]
    if mk in b:
      ax.axhline(b[mk], ls="-.", c="grey", lw=1, label="mean colour in the true mask")
    ax.set_xscale("log")
    if yk == "mse":
      ax.set_yscale("log")
    xs = [r[xk] for r in rows if r[xk] and r[xk] > 0]
    if xs:   # ticks at 1, 2, 5 × each decade in range, labelled plainly
      lo, hi = np.floor(np.log10(min(xs))), np.ceil(np.log10(max(xs)))
      ticks = [m * 10.0 ** e for e in np.arange(lo, hi + 1) for m in (1, 2, 5)
               if min(xs) / 1.5 <= m * 10.0 ** e <= max(xs) * 1.5]
      ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
      ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    ax.grid(alpha=0.3, which="both")
  fit = ana["fit"]
  if fit:
    fx = np.geomspace(min(p["flops"] for p in ana["frontier"]),
                      max(r["flops"] for r in rows), 100)
    bi = ana["bootstrap"]["b_interval"]
    ci = f" [{bi[0]:.2f}, {bi[1]:.2f}]" if bi else ""
    axes[0].plot(fx, _power_law(fx / fit["c_ref_flops"], fit["a"], fit["b"], fit["c"]),
                 c="r", lw=2, alpha=0.5,
                 label=f"frontier fit: b = {fit['b']:.2f}{ci}, c = {fit['c']:.4f}")
  axes[0].legend(fontsize=7)
  fig.suptitle(f"The paper's reconstructor, {len([1 for s in spec['series'].values() if s['role'] == 'size'])}"
               f" sizes × {len(spec['budgets'])} budgets (WSD, decay {spec['decay_fraction']:g}) "
               f"on the procedural world, scored on val ({spec['eval_objects']} objects); "
               "labels: steps", fontsize=10)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100)
  plt.close(fig)
  out_png.parent.mkdir(parents=True, exist_ok=True)
  out_png.write_bytes(buf.getvalue())
  return out_png


def markdown(col: dict, ana: dict, png_name: str) -> list[str]:
  f = lambda v, d: "—" if v is None else f"{v:.{d}f}"  # noqa: E731
  spec, rows = col["spec"], col["rows"]
  lines = ["# Quality versus compute (scaling study of the paper's reconstructor)", ""]
  lines += [
      f"Study: `{spec['config']}` (configs/scaling.py): the paper's model (`large`'s switches, "
      "scaled down; extras off) at the sizes below, a second seed of one size, and the CPU demo's "
      "lift model (`tiny`) as a reference, each trained with a warm-up–stable–decay schedule "
      f"({spec['warmup_steps']} warm-up steps, 1−sqrt decay over the last "
      f"{spec['decay_fraction']:g} of each budget; each shorter budget branched from the longest "
      f"run's stable phase) and scored on {spec['eval_objects']} val objects × 10 views "
      "(LPIPS off). Loss: per-pixel MSE of the whole view (foreground: over the true mask's "
      "pixels). FLOPs: analytic forward + backward of encoder, decoder and NeRF MLP × batch × "
      "steps (the lift's projections are not counted). Wall: Σ logged step times here.", "",
      "| series | role | params | width | enc × dec blocks | peak lr | seed |",
      "|---|---|---:|---:|---|---:|---:|"]
  for n, s in spec["series"].items():
    ov = s["overrides"]
    blocks = (f"{ov['encoder.num_layers']} × {ov['decoder.num_layers']}" if ov else "tiny's")
    lines.append(f"| {n} | {s['role']} | {s['params'] / 1e6:.3f}M | {s['width']} | {blocks} | "
                 f"{s['learning_rate']:g} | {s['seed']} |")
  lines += ["", "Learning rates: configs/scaling.py (tiny's tuned 5e-4 at width 128, × 128/W "
            "above it; not swept per size).", "",
            "| series | steps | training FLOPs | wall (s) | val MSE ↓ | foreground MSE ↓ | "
            "PSNR (dB) ↑ | foreground PSNR (dB) ↑ | SSIM ↑ | colour error ↓ |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in sorted(rows, key=lambda r: (list(spec["series"]).index(r["series"]), r["budget"])):
    lines.append(f"| {r['series']} | {r['steps']} | {r['flops']:.3g} | {r['wall_s']:.0f} | "
                 f"{f(r['mse'], 5)} | {f(r['foreground_mse'], 4)} | {f(r['psnr'], 2)} | "
                 f"{f(r['foreground_psnr'], 2)} | {f(r['ssim'], 4)} | "
                 f"{f(r['colour_error'], 1)} |")
  b = col["baselines"]
  if b:
    lines += ["", f"Baselines on the same objects: background only MSE "
              f"{f(b.get('background_mse'), 5)} ({f(b.get('background_psnr'), 2)} dB); mean "
              f"colour inside the true mask {f(b.get('mean_colour_mse'), 5)} "
              f"({f(b.get('mean_colour_psnr'), 2)} dB, foreground MSE "
              f"{f(b.get('mean_colour_foreground_mse'), 4)})."]
  if col["missing"]:
    lines += ["", f"Not finished yet ({len(col['missing'])}): " + ", ".join(col["missing"])]
  lines += ["", "## The frontier", ""]
  fit, bs = ana["fit"], ana["bootstrap"]
  if fit:
    ci = bs["b_interval"]
    lines.append(
        f"Fit on the {fit['n']} frontier points: L(C) = {fit['a']:.4g} · (C / "
        f"{fit['c_ref_flops']:.3g})^(−{fit['b']:.3f}) + {fit['c']:.5f}; exponent b = "
        f"**{fit['b']:.3f}**, 95% bootstrap interval over val objects "
        + (f"**[{ci[0]:.3f}, {ci[1]:.3f}]**" if ci else "—")
        + f" ({bs['n']} resamples, {bs['failed']} without a fit).")
  else:
    lines.append(f"No fit: {len(ana['frontier'])} frontier points (4 needed).")
  lines += ["", "| compute (FLOPs) | on the frontier | val MSE |", "|---:|---|---:|"]
  for p in ana["frontier"]:
    lines.append(f"| {p['flops']:.3g} | {p['series']} | {p['mse']:.5f} |")
  lines += ["", "Best size per step budget: " + "; ".join(
      f"{b} steps: `{n}`" for b, n in ana["best_per_budget"].items()) + ".",
            "", "Size on the frontier at each run's compute: " + "; ".join(
      f"{p['flops']:.3g}: `{p['series']}`" for p in ana["frontier_size_at"]) + "."]
  if ana["seeds"]:
    lines += ["", "Second seed against its size (val MSE; s.e. of the size's mean over "
              "objects):", "", "| series | budget | MSE | size's MSE | relative difference | "
              "s.e. over objects |", "|---|---:|---:|---:|---:|---:|"]
    for s in ana["seeds"]:
      lines.append(f"| {s['series']} | {s['budget']} | {s['mse']:.5f} | {s['twin_mse']:.5f} | "
                   f"{100 * s['rel_diff']:.1f}% | {s['objects_se']:.5f} |")
  if ana["reference"]:
    lines += ["", "The lift model against the paper's model's frontier at the same FLOPs:", "",
              "| reference | budget | FLOPs | its MSE | frontier's best MSE at ≤ these FLOPs | "
              "fit at these FLOPs |", "|---|---:|---:|---:|---:|---:|"]
    for r in ana["reference"]:
      lines.append(f"| {r['series']} | {r['budget']} | {r['flops']:.3g} | {r['mse']:.5f} | "
                   f"{f(r['frontier_mse'], 5)} | {f(r['fit_mse'], 5)} |")
  commits = sorted({r["commit"] + ("+dirty" if r["dirty"] else "") for r in rows})
  lines += ["", f"Runs' commits: {', '.join(f'`{c[:12]}`' for c in commits)}; each run's "
            "results file (config and parameter hashes, machine, load) is in its workdir.",
            "", f"![val MSE and PSNR against training FLOPs and wall seconds]({png_name})"]
  return lines


def study_span(col: dict, workdir) -> dict:
  """When the study ran: from its study.json's writing (`created_utc`, else the file's mtime) to
  the last results file's `finished_utc`, and the highest 1-minute load average its runs saw."""
  import datetime
  from instant3d_jax import fileio
  fmt = "%Y-%m-%d %H:%M:%S UTC"
  start = col["spec"].get("created_utc")
  if not start:
    try:
      mtime = fileio.path(workdir).joinpath(STUDY_FILE).stat().mtime
      start = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).strftime(fmt)
    except (OSError, AttributeError):
      start = None
  ends = sorted(r["finished_utc"] for r in col["rows"] if r.get("finished_utc"))
  wall = None
  if start and ends:
    wall = (datetime.datetime.strptime(ends[-1], fmt)
            - datetime.datetime.strptime(start, fmt)).total_seconds()
  loads = [max(r["load"]["before"][0], r["load"]["after"][0]) for r in col["rows"]]
  return {"started_utc": start, "finished_utc": ends[-1] if ends else None, "wall_s": wall,
          "load_max_1min": max(loads, default=None),
          "load_mean_1min": sum(loads) / len(loads) if loads else None}


def findings(spec: dict, rows: list[dict], ana: dict, span: dict) -> list[str]:
  """What the study shows, in sentences written from its numbers (scaling.md's last section and
  the README's generated block)."""
  sizes = sorted((n for n, s in spec["series"].items() if s["role"] == "size"),
                 key=lambda n: spec["series"][n]["params"])
  if not sizes or not rows:
    return ["No finished run yet."]
  out = []
  if span.get("wall_s"):
    load = (f", 1-minute load average {span['load_mean_1min']:.1f} on average at its runs' "
            f"scoring (highest {span['load_max_1min']:.1f})"
            if span.get("load_mean_1min") is not None else "")
    out.append(f"The study ({len(rows)} runs) took {span['wall_s'] / 60:.0f} min here, "
               f"{span['started_utc']} to {span['finished_utc']}{load}.")
  best = ana["best_per_budget"]
  smallest, largest = sizes[0], sizes[-1]
  winners = [best[b] for b in sorted(best, key=int)]
  order = [sizes.index(w) for w in winners]
  if all(w == smallest for w in winners):
    out.append(f"**Size does not pay at fixed steps here**: the smallest size, `{smallest}`, has "
               f"the lowest val MSE at every step budget.")
  elif order == sorted(order) and order[-1] > order[0]:
    out.append("**Larger sizes win as the budget grows**: best size per step budget " + ", ".join(
        f"{b}: `{n}`" for b, n in sorted(best.items(), key=lambda kv: int(kv[0]))) + ".")
  else:
    out.append("Best size per step budget: " + ", ".join(
        f"{b}: `{n}`" for b, n in sorted(best.items(), key=lambda kv: int(kv[0]))) + ".")
  front = [p["series"] for p in ana["frontier"]]
  held = sorted(set(front), key=sizes.index)
  out.append(f"At fixed compute (training FLOPs) the frontier is held by "
             + ", ".join(f"`{n}`" for n in held)
             + f" ({len(front)} frontier points from {front[0]} at the least compute to "
             f"{front[-1]} at the most)"
             + ("; the larger sizes never reach it: at equal FLOPs a smaller model trained "
                "longer is better on this world at these budgets." if held == [smallest] else
                "."))
  fit, bs = ana["fit"], ana["bootstrap"]
  if fit:
    ci = bs["b_interval"]
    out.append(f"Power law on the frontier: L(C) = a·C^(−b) + c with **b = {fit['b']:.3f}** "
               + (f"(95% bootstrap interval over val objects [{ci[0]:.3f}, {ci[1]:.3f}])"
                  if ci else "(no bootstrap interval)")
               + f" and an irreducible term c = {fit['c']:.4f} (val MSE; background only "
               "scores " + (f"{ana['baselines'].get('background_mse', float('nan')):.4f}"
                            if ana.get("baselines") else "—") + ")"
               + ("; c sits at its upper bound, the lowest loss measured: the frontier "
                  "flattens within the range, so b describes its early drop, not a law to "
                  "extrapolate" if fit.get("c_at_bound") else "") + ".")
  longest = max(spec["budgets"])
  at_end = {r["series"]: r["mse"] for r in rows if r["budget"] == longest and r["series"] in sizes}
  seed_end = [x for x in ana["seeds"] if x["budget"] == longest]
  if len(at_end) > 1:
    lo, hi = min(at_end.values()), max(at_end.values())
    line = (f"At the longest budget ({longest} steps) the sizes' val MSE spans {lo:.4f}–{hi:.4f} "
            f"({100 * (hi - lo) / lo:.1f}% apart; " + ", ".join(
                f"`{n}` {v:.4f}" for n, v in sorted(at_end.items(), key=lambda kv: sizes.index(
                    kv[0]))) + ")")
    if seed_end:
      rel = seed_end[0]["rel_diff"]
      line += (f"; a second seed of `{seed_end[0]['of']}` alone moves it {100 * rel:.1f}%, so "
               + ("the sizes are not separated by more than seed noise." if (hi - lo) / lo
                  <= 2 * rel else "the spread exceeds twice the seed noise."))
    out.append(line + ("" if seed_end else "."))
    fg = {r["series"]: r.get("foreground_mse") for r in rows
          if r["budget"] == longest and r["series"] in sizes}
    bg_fg = (ana.get("baselines") or {}).get("background_foreground_mse")
    if all(v is not None for v in fg.values()) and bg_fg:
      out.append(f"On the object's own pixels (foreground MSE, true mask) the sizes reach "
                 f"{min(fg.values()):.4f}–{max(fg.values()):.4f} at {longest} steps against "
                 f"{bg_fg:.4f} for the background alone: the models do paint the objects; the "
                 "whole-view loss stays near the background-only floor because of the haze "
                 "they leave around them.")
  ref = ana["reference"]
  if ref:
    met = [r for r in ref if r["frontier_mse"] is not None and r["frontier_mse"] <= r["mse"]]
    ratio = [r["frontier_mse"] / r["mse"] for r in ref if r["frontier_mse"]]
    name = ref[0]["series"]
    if met:
      out.append(f"The paper's model's frontier **meets the lift model (`{name}`)** within the "
                 f"measured range: at {met[0]['flops']:.3g} FLOPs its best val MSE "
                 f"{met[0]['frontier_mse']:.4f} ≤ the lift's {met[0]['mse']:.4f}.")
    else:
      lo, hi = min(ratio), max(ratio)
      tail = ""
      if fit:
        target = min(r["mse"] for r in ref)
        if fit["c"] < target and fit["a"] > 0 and fit["b"] > 0:
          c_star = fit["c_ref_flops"] * ((target - fit["c"]) / fit["a"]) ** (-1.0 / fit["b"])
          tail = (f"; the fitted frontier would reach the lift's best ({target:.4f}) at "
                  f"~{c_star:.2g} FLOPs, {c_star / max(r['flops'] for r in rows):.0f}× the most "
                  "compute measured")
        else:
          tail = (f"; the fit's floor c = {fit['c']:.4f} lies above the lift's best "
                  f"({target:.4f}): on this extrapolation it never does")
      out.append(f"The frontier **does not meet the lift model (`{name}`)** within the measured "
                 f"range: at the same FLOPs its best val MSE is {lo:.1f}–{hi:.1f}× the lift's"
                 f" (the lift's own projections are outside the FLOP count; against wall time"
                 f" see the plot's middle panel){tail}.")
  if ana["seeds"]:
    rel = [x["rel_diff"] for x in ana["seeds"]]
    se = [x["objects_se"] / x["twin_mse"] for x in ana["seeds"]]
    out.append(f"A second seed of `{ana['seeds'][0]['of']}` moves its val MSE by "
               f"{100 * min(rel):.1f}–{100 * max(rel):.1f}% across the budgets, against a "
               f"{100 * min(se):.1f}–{100 * max(se):.1f}% standard error of the mean over val "
               "objects.")
  return out


def write_outputs(col: dict, ana: dict, out_md: Path, prov, *, span: dict | None = None
                  ) -> tuple[Path, ...]:
  """`out_md`, and beside it the JSON and the plot (same stem)."""
  out_md = Path(out_md)
  span = span or {}
  ana = dict(ana, baselines=col["baselines"])
  png = plot(col, ana, out_md.with_suffix(".png"))
  js = out_md.with_suffix(".json")
  lines = markdown(col, ana, png.name)
  lines += ["", "## What it shows", ""] + [f"- {x}" for x in findings(col["spec"], col["rows"],
                                                                      ana, span)]
  md = common.write_result(out_md, lines, prov)
  spec = dict(col["spec"])
  spec["series"] = {n: {k: v for k, v in s.items() if k != "config"}
                    for n, s in spec["series"].items()}
  js.write_text(json.dumps({"study": spec, "rows": col["rows"], "missing": col["missing"],
                            "baselines": col["baselines"], "analysis": ana, "span": span,
                            "provenance": prov.as_dict()}, indent=1) + "\n")
  print(f"wrote {md}, {js} and {png}")
  return md, js, png


def readme_block(saved: dict, source: str) -> str:
  """The README's generated block from the study's JSON (bench/report.py `scaling`)."""
  lines = findings(saved["study"], saved["rows"], saved["analysis"], saved.get("span", {}))
  prov = saved.get("provenance", {})
  head = (f"From `{source}` (collected by `{prov.get('command', '?')}` at commit "
          f"`{prov.get('commit', '?')}`; table, fit and plot in BENCHMARKS.md, \"Quality versus "
          "compute\"):")
  return "\n".join([head, ""] + [f"- {x}" for x in lines]) + "\n"


def collect_and_write(workdir, out_md, prov=None) -> tuple[Path, ...]:
  prov = prov or common.Provenance.start()
  col = collect(workdir)
  if not col["rows"]:
    raise errors.InputError(f"{workdir}: no finished run yet (no {RESULTS_FILE} under "
                            "<series>/b<budget>/)")
  out = write_outputs(col, analyse(col), out_md, prov, span=study_span(col, workdir))
  if Path(out_md).resolve() == (ROOT / "bench" / "results" / "scaling.md").resolve():
    from bench import run_all       # the repo's own table: BENCHMARKS.md follows
    print(f"wrote {run_all.merge()}")
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--config", default="configs/scaling.py", help="the study's config file")
  ap.add_argument("--workdir", default="outputs/scaling", help="local or gs://")
  ap.add_argument("--data_dir", default="", help="data set folder (default: the config's)")
  ap.add_argument("--out", default="bench/results/scaling.md",
                  help="the table; the JSON and PNG are written beside it")
  ap.add_argument("--emit", choices=("slurm", "tpu"), help="write the cluster's launch script "
                  "(WORKDIR's study.json first) and stop")
  ap.add_argument("--script", default="", help="--emit's script (default launch_<kind>.sh)")
  ap.add_argument("--collect", action="store_true",
                  help="only gather the finished runs' results files into the table and plot")
  ap.add_argument("--job", choices=("segment", "branch"), help="run one job (what --emit runs)")
  ap.add_argument("--series", default="")
  ap.add_argument("--until", type=int, default=0)
  ap.add_argument("--budget", type=int, default=0)
  args = ap.parse_args(argv)
  from instant3d_jax import cli
  return cli.guarded(lambda _: _main(args))(sys.argv)


def _load_study_config(path: str):
  import importlib.util
  from instant3d_jax import configs
  file = configs.resolve(path)
  if not Path(file).is_file():
    raise errors.InputError(f"--config {path!r}: no such file (expected configs/scaling.py "
                            "or a copy of it)")
  mod_spec = importlib.util.spec_from_file_location("_scaling_study_config", file)
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  return mod.get_config()


def _main(args) -> int:
  prov = common.Provenance.start()
  if args.collect:
    collect_and_write(args.workdir, Path(args.out), prov)
    return 0
  if args.job:
    from instant3d_jax.base import multihost
    multihost.initialize()        # a TPU pod's workers / a multi-task slurm job: one runtime
    spec = read_study(args.workdir)
    if args.job == "segment":
      job_segment(spec, args.series, args.until, args.workdir)
    else:
      job_branch(spec, args.series, args.budget, args.workdir)
    return 0
  scfg = _load_study_config(args.config)
  series = build_series(scfg, data_dir=args.data_dir)
  spec = write_study(args.workdir, series, scfg, config_note=args.config)
  if args.emit:
    script = emit(spec, args.emit, args.workdir, Path(args.script or
                                                       f"launch_{args.emit}.sh"))
    print(f"wrote {script}: {len(jobs(spec))} jobs; then `python -m bench.scaling --collect "
          f"--workdir {args.workdir}` (re-runnable as runs finish)")
    return 0
  run_local(spec, args.workdir)
  collect_and_write(args.workdir, Path(args.out), prov)
  return 0


if __name__ == "__main__":
  sys.exit(main())
