"""The model-agnostic training loop (the reconstructor trains with it; it knows nothing of the model,
so the stage-1 diffusion trainer, not written yet, can reuse it).

A trainer describes its job as a `Task` (how to init params, the loss, the input iterator, and
optional eval / image hooks); `run(config, workdir, task)` does the rest in the order the data
flows: set up mesh → shardings from `eval_shape` → restore or init (`StateInit`: params drawn
leaf by leaf with their shardings) → AOT compile → loop (step,
log, images, eval, checkpoint) → final checkpoint. Config sections read here:

  seed, mesh, logical_axis_rules, optimizer (see optimizer.py),
  train: total_steps, time_budget_s (0 = none; wall clock since `run` started, compile
         included), global_batch_size, accum_steps, log_every, image_every, eval_every,
         max_nonfinite_in_a_row, checkpoint_must_match (config sections a resume must match),
         checkpoint_may_differ (dotted keys inside those sections a resume may change, e.g.
         `model.encoder.pretrained`: read only at step 0, so a moved folder does not block it),
         halt_at_step (0 = off; stop and save at this step as a preemption would: tests, smoke
         runs — unlike total_steps it leaves the learning-rate schedule alone)
  checkpoint: every_steps, keep, async
  hardware: peak_tflops ({device-kind substring: dense bf16 TFLOP/s per device}) for MFU

Metrics: each step's stay on the device; a log, image, eval or checkpoint step fetches those of
the steps since the last such step in one transfer (`RunResult.history` still has every step) and
`train/s_per_step` is the mean over the steps between two log-step syncs (hook time excluded).

Stops: `total_steps` reached, the time budget spent, SIGTERM/SIGINT (saves, exits cleanly), or
`max_nonfinite_in_a_row` skipped updates in a row (raises `NonFiniteError`, no save: the last
checkpoint on disk is the last good state).
"""
from __future__ import annotations

from instant3d_jax import errors
from instant3d_jax.errors import NonFiniteError  # also loop.NonFiniteError

import dataclasses
import functools
import json
import signal
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from instant3d_jax import fileio
from instant3d_jax.base import checkpoint as ckpt_lib
from instant3d_jax.base import config_schema
from instant3d_jax.base import mesh as mesh_lib
from instant3d_jax.base import multihost
from instant3d_jax.base import sharding as shard_lib
from instant3d_jax.train import leafwise
from instant3d_jax.train import metrics as metrics_lib
from instant3d_jax.train import optimizer as opt_lib
from instant3d_jax.train.step import (LossFn, TrainState, make_draw_fn, make_init_fn,
                                      make_rest_fn, make_train_step)

# CPU has no buffer donation; the warning would repeat every compile.
warnings.filterwarnings("ignore", message="Some donated buffers were not usable")


class DataIterator(Protocol):
  """What `Task.make_iterator` returns: process-local numpy batches, resumable."""

  def __next__(self) -> dict: ...
  def get_state(self) -> dict: ...
  def set_state(self, state: dict) -> None: ...


@dataclasses.dataclass
class Task:
  """A training job for `run`.

  init_params: `rng -> boxed params` (e.g. `lambda r: model.init(r, *dummy)['params']`).
  initial_params: optional host-side hook `params -> params` on the freshly initialised, unboxed
    params as numpy arrays (e.g. pretrained weights read from disk); applied once when a run
    starts at step 0, never on resume. It must return the same tree (paths, shapes); the result
    is placed with the derived state shardings and the optimizer state is initialised from it.
  loss_fn: `(params, global_batch, rng, step, constants) -> (loss, metrics)` (traced inside
    the step).
  constants: frozen arrays the loss needs (e.g. LPIPS weights), replicated, passed each step.
  make_iterator: `() -> DataIterator` yielding this process's rows of each global batch.
  batch_spec: `{name: jax.ShapeDtypeStruct}` of the *global* batch (shapes for AOT compile).
  flops_per_example: analytic forward+backward FLOPs per example (for TFLOP/s and MFU).
  eval_fn: `(params, step) -> {name: float}`, called every `train.eval_every` steps and at the end.
  image_fn: `(params, global_batch, step) -> [H, W, 3]` grid, every `train.image_every` steps,
    written as `image_name` (TensorBoard tag; PNGs under workdir/images).
  ema_decay: > 0 keeps an exponential moving average of the params in the train state
    (`TrainState.ema`, step.py), updated after every kept step with this maximum decay; the
    image and eval hooks then receive the EMA params instead of the raw ones. 0: no EMA (the
    state's tree, hence its checkpoints, as before).
  """
  init_params: Callable[[jax.Array], Any]
  loss_fn: LossFn
  make_iterator: Callable[[], DataIterator]
  batch_spec: dict
  flops_per_example: float | None = None
  constants: Any = None
  eval_fn: Callable[[Any, int], dict] | None = None
  image_fn: Callable[[Any, Any, int], np.ndarray] | None = None
  initial_params: Callable[[Any], Any] | None = None
  ema_decay: float = 0.0
  image_name: str = "train/inputs_predictions_targets"


@dataclasses.dataclass
class RunResult:
  state: Any
  step: int
  stop_reason: str  # 'total_steps' | 'time_budget' | 'signal' | 'halt_at_step'
  history: list[dict]
  wall_s: float
  compile_s: float
  eval: dict | None = None


# Every key `run` reads (the module docstring says what each means); a missing one is a
# ConfigError naming it before anything starts.
CONFIG_KEYS = (
    "seed", "mesh", "logical_axis_rules", "optimizer", "train.total_steps", "train.time_budget_s",
    "train.global_batch_size", "train.accum_steps", "train.log_every", "train.image_every",
    "train.eval_every", "train.max_nonfinite_in_a_row", "train.checkpoint_must_match",
    "train.checkpoint_may_differ", "train.halt_at_step", "checkpoint.every_steps",
    "checkpoint.keep", "checkpoint.async", "hardware.peak_tflops")

SUMMARY_FILE = "train_summary.json"  # what the demos write when a run has finished


def finished_summary(run_dir: str, retrain: bool = False, log=print) -> dict | None:
  """The summary of a finished run in `run_dir` (its `SUMMARY_FILE`), or None when there is none
  or `retrain` asks for a new run."""
  path = Path(run_dir) / SUMMARY_FILE
  if retrain or not path.exists():
    return None
  summary = json.loads(path.read_text())
  log(f"reusing the finished run in {run_dir} (step {summary['step']}; --retrain to train again)")
  return summary


def write_summary(run_dir: str, res: "RunResult", **extra) -> dict:
  """Writes (temp name → rename) and returns the summary of a finished run: step, stop reason,
  wall and compile seconds, the mean loss of the last 10 logged steps, and `extra`."""
  last = res.history[-10:]
  summary = {"step": res.step, "stop_reason": res.stop_reason, "wall_s": round(res.wall_s, 1),
             "compile_s": round(res.compile_s, 1),
             "final_train_loss": sum(h["loss"] for h in last) / max(len(last), 1), **extra}
  path = Path(run_dir) / SUMMARY_FILE
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(summary, indent=2))
  tmp.replace(path)
  return summary


class _StopFlag:
  """SIGTERM / SIGINT → a flag the loop polls between steps (the handler itself does nothing
  else: saving from inside a signal handler could interleave with a running step)."""

  def __init__(self):
    self.signum = None
    self._old = {}

  def __enter__(self):
    for s in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[s] = signal.signal(s, self._handle)
      except ValueError:  # not the main thread (e.g. some test runners): no handler
        pass
    return self

  def _handle(self, signum, frame):
    self.signum = signum

  def __exit__(self, *exc):
    for s, h in self._old.items():
      signal.signal(s, h)


def setup_mesh(config, devices=None):
  """`(mesh, logical rules)` of `config`; `devices`: defaults to `jax.devices()` (a TPU
  topology's devices stand in for real ones when compiling ahead of time, bench/tpu_plan.py)."""
  mesh = mesh_lib.create_mesh(config.mesh, devices)
  rules = shard_lib.logical_rules(config.logical_axis_rules)
  return mesh, rules


def _host_params(params) -> Any:
  """The params as host numpy arrays (gathered from every process when sharded across hosts)."""
  if all(x.is_fully_addressable for x in jax.tree.leaves(params)):
    return jax.tree.map(np.asarray, jax.device_get(params))
  from jax.experimental import multihost_utils
  return jax.tree.map(np.asarray, multihost_utils.process_allgather(params, tiled=True))


def _place(x, sharding):
  """Host array `x` as a global array with `sharding`: each process builds its own shards from
  the same host value (multi-host safe; one device: a plain transfer)."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def checked_initial_params(host, new) -> Any:
  """`new` (what `Task.initial_params` returned for the host params `host`) with `host`'s tree
  and dtypes; ValueError naming every path that is missing, unexpected or of another shape."""
  want = dict(jax.tree_util.tree_flatten_with_path(host)[0])
  got = dict(jax.tree_util.tree_flatten_with_path(new)[0])
  problems = [f"{jax.tree_util.keystr(k)}: {'missing' if k not in got else np.shape(got[k])}"
              f" (expected {np.shape(v)})" for k, v in want.items()
              if k not in got or np.shape(got[k]) != np.shape(v)]
  problems += [f"{jax.tree_util.keystr(k)}: unexpected" for k in got if k not in want]
  if problems:
    raise ValueError("Task.initial_params returned params that do not match the initialised "
                     "tree: " + "; ".join(problems[:20]))
  return jax.tree.unflatten(jax.tree.structure(host),
                            [np.asarray(got[k], np.asarray(v).dtype) for k, v in want.items()])


@dataclasses.dataclass
class StateInit:
  """The train state at step 0 in small programs that compile fast on any backend (issue 31: one
  jit over the whole state spent >90 s in XLA:GPU's compiler at full size):

  1. `draw`: the random parameters and the state's RNG (`step.make_draw_fn`: the same split and
     draws as `make_init_fn`), one program per leaf with the leaf's state sharding, shared by
     the leaves of the same structure (`leafwise.Leafwise`: the LRM `large`'s 604 outputs need
     40 with FSDP, bench/bench_state_init.py);
  2. `rest`: the optimizer state and the EMA from the placed params (`step.make_rest_fn`), the
     same way: zeros and copies, one program per shape and sharding.

  The ops are `make_init_fn`'s, so on one backend the state is bit-identical to its one program
  (tests/test_state_init.py). `init(key, initial_params=None)`: `Task.initial_params`, if given,
  receives the drawn params as host numpy arrays (gathered across processes); its result is
  placed with the shardings. The counters start at 0.
  """
  init_params: Callable
  tx: Any
  ema: bool
  shardings: Any
  _draw: Any = None
  _rest: Any = None

  def draw(self, key) -> "leafwise.Leafwise":
    """The per-leaf programs of the random part (traced on first use)."""
    if self._draw is None:
      self._draw = leafwise.Leafwise(make_draw_fn(self.init_params), key)
    return self._draw

  def rest(self, params) -> "leafwise.Leafwise":
    """The per-leaf programs of the optimizer state and EMA (traced on first use)."""
    if self._rest is None:
      abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
      self._rest = leafwise.Leafwise(make_rest_fn(self.tx, self.ema), abstract)
    return self._rest

  def __call__(self, key, initial_params: Callable[[Any], Any] | None = None) -> TrainState:
    sh = self.shardings
    params, rng = self.draw(key)(np.asarray(key), out_shardings=(sh.params, sh.rng))
    if initial_params is not None:
      host = _host_params(params)
      new = checked_initial_params(host, initial_params(host))
      params = jax.tree.map(_place, new, sh.params)
    opt_state, ema = self.rest(params)(params, out_shardings=(sh.opt_state, sh.ema))
    zero = np.zeros((), np.int32)
    return TrainState(step=_place(zero, sh.step), params=params, opt_state=opt_state, rng=rng,
                      nonfinite_total=_place(zero, sh.nonfinite_total),
                      nonfinite_in_a_row=_place(zero, sh.nonfinite_in_a_row), ema=ema)


def build_state(config, task: Task, mesh, rules, tx):
  """`(init_state, key, abstract_state, state_shardings)`: `init_state(key, initial_params=None)`
  returns the placed step-0 state (a `StateInit`; its programs are compiled lazily, only if
  needed); the abstract state and shardings come from `make_init_fn` under `jax.eval_shape`."""
  init_fn = make_init_fn(task.init_params, tx, ema=task.ema_decay > 0)
  key = jax.random.PRNGKey(int(config.seed))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract, shardings = shard_lib.derive_shardings(init_fn, key, mesh=mesh, rules=rules)
  init_state = StateInit(init_params=task.init_params, tx=tx, ema=task.ema_decay > 0,
                         shardings=shardings)
  return init_state, key, abstract, shardings


def build_state_one_program(config, task: Task, mesh, rules, tx):
  """The state init before issue 31, kept for comparison only (tests/test_state_init.py,
  bench/bench_state_init.py): `(init_jit, key, abstract, shardings)`, `init_jit` one jit over the
  whole state with the state shardings as its outputs' shardings."""
  init_fn = make_init_fn(task.init_params, tx, ema=task.ema_decay > 0)
  key = jax.random.PRNGKey(int(config.seed))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract, shardings = shard_lib.derive_shardings(init_fn, key, mesh=mesh, rules=rules)
  init_jit = jax.jit(lambda k: shard_lib.unbox(init_fn(k)), out_shardings=shardings)
  return init_jit, key, abstract, shardings


def compile_train_step(config, task: Task, mesh, rules, tx, schedule, abstract_state, state_sh,
                       constants):
  """The jitted update step lowered on abstract inputs and compiled: `(compiled, batch_shardings)`.

  `constants` may be arrays or `ShapeDtypeStruct`s (only their shapes are used), so callers can
  compile without allocating anything (bench/bench_memory_plan.py reads the compiled step's
  `memory_analysis()`). Inputs: `(state, batch, constants)`, state donated.
  """
  batch_sh = {k: shard_lib.batch_sharding(mesh, rules, len(v.shape))
              for k, v in task.batch_spec.items()}
  abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sh[k])
                    for k, v in task.batch_spec.items()}
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  abstract_constants = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), constants)
  step_fn = make_train_step(task.loss_fn, tx, schedule,
                            int(config.train.accum_steps), ema_decay=task.ema_decay)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    compiled = jax.jit(step_fn, in_shardings=(state_sh, batch_sh, replicated),
                       out_shardings=(state_sh, replicated), donate_argnums=(0,)
                       ).lower(abstract_state, abstract_batch, abstract_constants).compile()
  return compiled, batch_sh


def progress_postfix(row: dict, throughput: dict) -> str:
  """The console training line: loss (and PSNR when the task reports it), seconds per step, and
  TFLOP/s per device and MFU when the task's FLOPs (and the chip's peak) are known."""
  text = f"loss {row['loss']:.4g}" + (f" psnr {row['psnr']:.2f}" if "psnr" in row else "")
  text += f" {throughput['s_per_step']:.2f}s/step"
  if "tflops_per_device" in throughput:
    text += f" {throughput['tflops_per_device']:.3g} TFLOP/s/dev"
  if "mfu" in throughput:
    text += f" MFU {100 * throughput['mfu']:.3g}%"
  return text


def run(config, workdir: str | Path, task: Task, *, log: Callable[[str], None] = print
        ) -> RunResult:
  """Trains `task` under `config` in `workdir` (resuming if it holds a checkpoint)."""
  t_start = time.time()
  config_schema.require(config, CONFIG_KEYS, "train/loop.py")
  tcfg = config.train
  workdir = fileio.path(workdir)  # local or gs://… (instant3d_jax/fileio.py)
  primary = multihost.is_primary()
  say = log if primary else (lambda *_: None)
  total_steps = int(tcfg.total_steps)
  budget = float(tcfg.time_budget_s or 0)
  gbs = int(tcfg.global_batch_size)
  halt_at = int(tcfg.halt_at_step or 0)

  # Refuse a workdir of another run before anything is written; write this run's config only
  # once the mesh, batch and optimizer settings are known to be valid (a start that fails on a
  # bad setting leaves no config.json behind to block the corrected command).
  config_check = functools.partial(
      ckpt_lib.check_or_write_config, workdir, config,
      tuple(tcfg.checkpoint_must_match), ignore=tuple(tcfg.checkpoint_may_differ))
  config_check(write=False)

  # Set up mesh.
  mesh, rules = setup_mesh(config)
  say(f"mesh: {mesh_lib.describe(mesh)}; processes: {jax.process_count()}")
  shards = shard_lib.num_batch_shards(mesh, rules)
  if gbs % shards or gbs % jax.process_count():
    raise errors.ConfigError(f"train.global_batch_size={gbs} must be divisible by the batch "
                             f"shards ({shards}) and the process count ({jax.process_count()})")

  # Train state: shardings derived from eval_shape, restored or initialised.
  tx, schedule = opt_lib.make_optimizer(config.optimizer, total_steps)
  config_check(write=True)
  init_state, key, abstract_state, state_sh = build_state(config, task, mesh, rules, tx)
  ckpt_cfg = config.checkpoint
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=int(ckpt_cfg.keep),
                                       use_async=bool(ckpt_cfg["async"]))
  iterator = task.make_iterator()
  latest = checkpointer.latest_step()
  if latest is not None:
    state, data_state = checkpointer.restore(latest, abstract_state)
    iterator.set_state(data_state)
    say(f"resumed from step {latest} ({checkpointer.directory})")
  else:
    state = init_state(key, task.initial_params)
    if task.initial_params is not None:
      say("initial parameters: applied the task's initial_params hook (step 0)")
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_state.params))
  say(f"parameters: {n_params / 1e6:.3f}M")

  # Update step, compiled ahead of time on abstract inputs (shape / memory errors surface here);
  # not at all when no step is left to run (a finished run restarted, `total_steps` 0).
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  constants = jax.device_put(task.constants, replicated)
  step = int(jax.device_get(state.step))
  compile_s = 0.0
  if step < total_steps and not (halt_at and step >= halt_at):
    t0 = time.time()
    compiled, batch_sh = compile_train_step(config, task, mesh, rules, tx, schedule,
                                            abstract_state, state_sh, constants)
    compile_s = time.time() - t0
    say(f"compiled train step in {compile_s:.1f}s")

  # Loop.
  peak = metrics_lib.peak_flops_for(jax.devices()[0].device_kind,
                                    dict(config.hardware.peak_tflops))
  flops_step = task.flops_per_example * gbs if task.flops_per_example else None
  writer = metrics_lib.MetricWriter(workdir, active=primary)
  progress = metrics_lib.Progress(total_steps, step, active=primary,
                                  time_budget_s=budget or None, start_time=t_start)
  max_bad = int(tcfg.max_nonfinite_in_a_row)
  every = lambda n, s: bool(n) and s % int(n) == 0
  history = []
  stop_reason = "total_steps"
  last_eval = None

  # Per-step metrics stay on the device until a sync point (a log, image, eval or checkpoint
  # step, or the loop's end) fetches them together (`sync`), so the host never waits for a step
  # in between. The non-finite guard runs there, over every fetched step in order: it follows
  # the step's own counter (step.py: `nonfinite_in_a_row` is 0 after a finite step, +1 after a
  # skipped one; `finite` in the metrics), from its value in the state the loop starts from, and
  # raises naming the first step that reaches the limit, before anything of a later step is
  # logged, shown, evaluated or saved. Seconds per step: the wall time between two log-step
  # syncs, less the time spent in the image / eval / checkpoint hooks, over the steps between.
  pending = []                      # (step, device metrics) not yet fetched
  bad_in_row = int(jax.device_get(state.nonfinite_in_a_row))
  t_mark, hooks_s, steps_since = time.time(), 0.0, 0

  def sync(extra=None):
    """Fetches the pending steps' metrics (and `extra`, device values fetched with them: one
    transfer), applies the guard and appends one history row per step; returns `extra`."""
    nonlocal pending, bad_in_row
    fetched, extra = jax.device_get(([m for _, m in pending], extra))
    for (s, _), m in zip(pending, fetched):
      bad_in_row = 0 if float(m["finite"]) else bad_in_row + 1
      if bad_in_row >= max_bad:
        writer.close()
        progress.close()
        checkpointer.close()
        raise NonFiniteError(
            f"{bad_in_row} non-finite losses/gradients in a row at step {s} (limit "
            f"train.max_nonfinite_in_a_row={max_bad}); stopped without saving, the last good "
            f"checkpoint is step {checkpointer.latest_step()} in {checkpointer.directory}")
      row = {k: float(v) for k, v in m.items()}
      row["step"] = s
      history.append(row)
    pending = []
    return extra

  # The input pipeline runs one batch ahead: the next batch is read while the device runs the
  # current step. A checkpoint holds the iterator state right after the last batch trained on
  # (not the one read ahead), so a resumed run sees the same batches as an uninterrupted one.
  data_state = iterator.get_state()
  upcoming = None

  def fetch():
    local = next(iterator)
    return local, iterator.get_state()

  def checkpoint(s):
    checkpointer.save(s, state, data_state, config)

  with _StopFlag() as stop:
    while step < total_steps:
      if multihost.any_process(stop.signum is not None):
        stop_reason = "signal"
        break
      if budget and time.time() - t_start >= budget:
        stop_reason = "time_budget"
        break
      if halt_at and step >= halt_at:
        stop_reason = "halt_at_step"
        break
      local, data_after = upcoming if upcoming is not None else fetch()
      upcoming = None
      batch = shard_lib.global_batch(local, mesh, rules, gbs)
      state, m = compiled(state, batch, constants)   # dispatched asynchronously
      data_state = data_after
      if step + 1 < total_steps and not (halt_at and step + 1 >= halt_at):
        upcoming = fetch()                           # overlaps the step on the device
      step += 1
      steps_since += 1
      pending.append((step, m))
      log_now = every(tcfg.log_every, step) or step == total_steps
      image_now = task.image_fn is not None and every(tcfg.image_every, step)
      eval_now = task.eval_fn is not None and every(tcfg.eval_every, step)
      save_now = every(ckpt_cfg.every_steps, step)
      if not (log_now or image_now or eval_now or save_now):
        continue
      # Every process reaches the same sync points (the guard raises on all of them together).
      nonfinite_total = sync(state.nonfinite_total if log_now else None)
      if log_now:
        now = time.time()
        row = history[-1]
        sps = (now - t_mark - hooks_s) / steps_since
        t_mark, hooks_s, steps_since = now, 0.0, 0
        tp = metrics_lib.throughput(seconds_per_step=sps, examples_per_step=gbs,
                                    flops_per_step=flops_step, num_devices=jax.device_count(),
                                    peak_flops_per_device=peak)
        scal = dict(row, **tp, nonfinite_total=float(nonfinite_total))
        scal.pop("step")
        writer.scalars(step, scal, prefix="train/")
        progress.update(step, progress_postfix(row, tp))
      t_hooks = time.time()
      shown = state.ema if state.ema is not None else state.params  # Task.ema_decay
      if image_now and primary:
        writer.image(step, task.image_name,
                     task.image_fn(shown, batch, step), png_dir="images")
      if eval_now:
        last_eval = task.eval_fn(shown, step)
        writer.scalars(step, last_eval, prefix="eval/")
      if save_now:
        checkpoint(step)
      hooks_s += time.time() - t_hooks
    sync()  # the steps since the last sync point (the guard may still stop the run here)

  progress.close()
  checkpoint(step)
  checkpointer.close()
  wall = time.time() - t_start
  say(f"stopped at step {step} ({stop_reason}) after {wall:.1f}s; checkpoint "
      f"{checkpointer.directory / str(step)}")
  writer.flush()
  writer.close()
  if primary:
    metrics_lib.plot_loss_curve(workdir / metrics_lib.JSONL_FILE, workdir / "loss_curve.png")
  return RunResult(state=state, step=step, stop_reason=stop_reason, history=history,
                   wall_s=wall, compile_s=compile_s, eval=last_eval)
