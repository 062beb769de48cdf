"""Reconstructor train-step throughput on CPU: s/step and examples/s of `tiny` (and `small`),
data-parallel scaling over 1/2/4/8 fake CPU devices, and a data-loader stall check.

    python -m bench.bench_train [--variants tiny,small] [--steps 5] [--devices 1,2,4,8]
                                [--data_dir outputs/demo/data]

The step is the trainer's own (instant3d_jax/train: derived shardings, AOT compile, donation) on
random batches of the loader's shapes, so no data set is needed; `--data_dir` adds the loader
check (grain iterator examples/s against the step's consumption). Fake CPU devices share the
same cores, so the scaling rows show that the step runs sharded, not a speed-up.
Writes bench/results/train.md.
"""
from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import argparse  # noqa: E402
import ast  # noqa: E402
import datetime  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402


def _cpu_name() -> str:
  for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
      return line.split(":", 1)[1].strip()
  return "unknown CPU"


def time_step(config, num_devices: int, steps: int) -> dict:
  from data_pipeline import datasets
  from bench import common
  from instant3d_jax.train import loop, lrm_task, optimizer as opt_lib
  config.mesh.num_devices = num_devices
  config.mesh.data = -1
  mesh, rules = loop.setup_mesh(config)
  tx, schedule = opt_lib.make_optimizer(config.optimizer, int(config.train.total_steps))
  planned = datasets.planned(config)   # shapes only: the iterator is never made, random batches
  task = lrm_task.make_task(config, planned)
  init_state, key, abstract, state_sh = loop.build_state(config, task, mesh, rules, tx)
  state = init_state(key)
  spec = task.batch_spec
  rng = np.random.default_rng(0)
  host = {k: (rng.uniform(size=v.shape).astype(v.dtype) if v.dtype == np.float32
              else np.zeros(v.shape, v.dtype)) for k, v in spec.items()}
  # Plausible cameras: the rig for inputs and targets (random matrices would be degenerate).
  from instant3d_jax import cameras as C
  rig = C.instant3d_rig(config.model.input_resolution)
  B, T = spec["target_c2w"].shape[:2]
  host["input_c2w"] = np.broadcast_to(np.asarray(rig.c2w), (B, 4, 4, 4)).copy()
  host["input_K"] = np.broadcast_to(np.asarray(rig.K), (B, 4, 3, 3)).copy()
  h = spec["target_images"].shape[2]
  trig = C.resize_camera(rig, h, h)
  host["target_c2w"] = np.asarray(trig.c2w)[np.arange(T) % 4][None].repeat(B, 0)
  host["target_K"] = np.asarray(trig.K)[np.arange(T) % 4][None].repeat(B, 0)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  constants = jax.device_put(task.constants, replicated)   # LPIPS-VGG weights (small+) or None
  t0 = time.time()
  compiled, batch_sh = loop.compile_train_step(config, task, mesh, rules, tx, schedule, abstract,
                                               state_sh, constants)
  compile_s = time.time() - t0
  batch = {k: jax.device_put(v, batch_sh[k]) for k, v in host.items()}
  times, m = common.time_train_steps(compiled, state, batch, constants, steps)
  s = float(np.median(times))
  gbs = int(config.train.global_batch_size)
  return {"devices": num_devices, "compile_s": compile_s, "s_per_step": s,
          "examples_per_s": gbs / s,
          "gflops_per_s": lrm_task.flops_per_example(config, planned) * gbs / s / 1e9,
          "loss": float(m["loss"])}


def cpu_breakdown(config, edits: dict) -> dict:
  """CPU seconds (process time, so machine load matters less than for wall time) of the
  model's images→planes forward+backward at the trainer's batch, and of rendering the step's
  rays forward+backward, for `config` with each of `edits` applied to the model section."""
  import jax.numpy as jnp
  from instant3d_jax.models import lrm as lrm_lib
  from instant3d_jax.base.sharding import unbox
  out = {}
  for name, edit in edits.items():
    c = config.copy_and_resolve_references()
    edit(c)
    m = lrm_lib.LRMConfig.from_config(c)
    params = unbox(lrm_lib.init_params(m, jax.random.PRNGKey(0)))
    b = int(c.train.global_batch_size)
    imgs, cams = lrm_lib.dummy_inputs(m, b)
    model = lrm_lib.LRM(m)
    planes = model.apply({"params": params}, imgs, cams)
    n = int(c.loss.rays_per_view) * int(c.data.loader.num_targets)
    key = jax.random.PRNGKey(1)
    d = jax.random.normal(key, (b, n, 3)) * 0.2 + jnp.asarray([-1.0, 0.0, -0.35])
    d = d / jnp.linalg.norm(d, axis=-1, keepdims=True)
    o = jnp.broadcast_to(jnp.asarray([2.5, 0.0, 0.9]), d.shape)
    fm = jax.jit(jax.grad(lambda p: jnp.mean(model.apply({"params": p}, imgs, cams) ** 2)))
    fr = jax.jit(jax.grad(lambda p, pl: jnp.mean(lrm_lib.render_rays(
        m, p, pl, o, d, key=key)["rgb"]), argnums=(0, 1)))
    row = {}
    for part, fn, args in (("model", fm, (params,)), ("render", fr, (params, planes))):
      jax.block_until_ready(fn(*args))
      ts = []
      for _ in range(3):
        c0 = time.process_time()
        jax.block_until_ready(fn(*args))
        ts.append(time.process_time() - c0)
      row[part] = float(np.median(ts))
    out[name] = row
    print("breakdown", name, row, flush=True)
  return out


def loader_rate(config, data_dir: str, batches: int) -> float:
  from data_pipeline import datasets, lrm_input
  it = lrm_input.train_iterator(
      data_dir, datasets.loader_config(config, datasets.open_dataset(data_dir)))
  next(it)
  t = time.time()
  for _ in range(batches):
    next(it)
  return batches * int(config.train.global_batch_size) / (time.time() - t)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--variants", default="tiny")
  ap.add_argument("--devices", default="1,2,4,8")
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--data_dir", default="")
  ap.add_argument("--out", default="bench/results/train.md")
  ap.add_argument("--set", default="", help="per-variant config overrides, e.g. "
                  "'small:train.global_batch_size=2,small:model.render.remat_field=True' (the "
                  "`small` step at its batch of 16 needs ~120 GB on CPU)")
  ap.add_argument("--scaling_batch", type=int, default=8,
                  help="global batch of the data-parallel tiny rows (divisible by every --devices)")
  ap.add_argument("--breakdown", action="store_true",
                  help="CPU-time split model vs rendering for tiny and cheaper decoders")
  args = ap.parse_args()
  from bench import common
  prov = common.Provenance.start()
  from instant3d_jax.configs import lrm
  rows, scaling, loader, breakdown = [], [], None, None
  if args.breakdown:
    breakdown = cpu_breakdown(lrm.get_config("tiny"), {
        "tiny": lambda c: None,
        "tiny, triplane tokens 8² (planes 16²)":
            lambda c: setattr(c.model.triplane, "token_resolution", 8),
        "tiny, 2 decoder layers": lambda c: setattr(c.model.decoder, "num_layers", 2)})
  overrides = {}
  for item in [x for x in args.set.split(",") if x]:
    variant, assignment = item.split(":", 1)
    key, value = assignment.split("=", 1)
    overrides.setdefault(variant, []).append((key, value))
  for v in [x for x in args.variants.split(",") if x]:
    cfg = lrm.get_config(v)
    cfg.update_from_flattened_dict({k: ast.literal_eval(x) for k, x in overrides.get(v, [])})
    r = time_step(cfg, 1, args.steps)
    rows.append((v, cfg, r))
    print(v, r, flush=True)
  cfg = lrm.get_config("tiny")
  # One global batch for every device count (each must divide it), so the rows do equal work.
  cfg.train.global_batch_size = args.scaling_batch
  for n in [int(x) for x in args.devices.split(",") if x]:
    if n > jax.device_count():
      continue
    if args.scaling_batch % n:
      raise SystemExit(f"--devices {n} does not divide --scaling_batch {args.scaling_batch}")
    r = time_step(cfg, n, args.steps)
    scaling.append(r)
    print("tiny dp", n, r, flush=True)
  if args.data_dir:
    loader = loader_rate(lrm.get_config("tiny"), args.data_dir, 10)
    print("loader examples/s", loader)
  lines = ["## Reconstructor training step (CPU)", "",
           f"JAX {jax.__version__}, {jax.device_count()} fake CPU devices available.", "",
           "| variant | global batch | rays/object | compile (s) | s/step | examples/s | "
           "analytic GFLOP/s |", "|---|---:|---:|---:|---:|---:|---:|"]
  for v, c, r in rows:
    rays = (c.loss.rays_per_view if c.loss.ray_sampling == "random" else
            (c.data.loader.crop_size or c.data.resolution) ** 2) * c.data.loader.num_targets
    lines.append(f"| {v} | {c.train.global_batch_size} | {rays} | {r['compile_s']:.1f} | "
                 f"{r['s_per_step']:.3f} | {r['examples_per_s']:.2f} | "
                 f"{r['gflops_per_s']:.1f} |")
  if scaling:
    lines += ["", f"Data-parallel `tiny` at global batch {args.scaling_batch} on N fake CPU "
              f"devices (all on the same {os.cpu_count()} cores: shows the sharded step runs "
              "and what partitioning costs, not a speed-up):", "",
              "| devices | s/step | examples/s | loss (same batch) |", "|---:|---:|---:|---:|"]
    for r in scaling:
      lines.append(f"| {r['devices']} | {r['s_per_step']:.3f} | {r['examples_per_s']:.2f} | "
                   f"{r['loss']:.6f} |")
  if loader is not None:
    step_rate = rows[0][2]["examples_per_s"] if rows else float("nan")
    lines += ["", f"Loader stall check (`tiny`, in-process grain, no workers): the loader "
              f"produces {loader:.1f} examples/s, the step consumes {step_rate:.1f} examples/s "
              f"({'no stall' if loader > step_rate else 'THE LOADER IS THE BOTTLENECK'})."]
  if breakdown:
    lines += ["", "CPU seconds (process time) of one step's parts at the trainer's batch (4 "
              "objects, 1024 rays each; forward + backward):", "",
              "| model | images→planes | rendering |", "|---|---:|---:|"]
    for k, r in breakdown.items():
      lines.append(f"| {k} | {r['model']:.3f} | {r['render']:.3f} |")
  common.write_result(args.out, lines, prov)
  print("\n".join(lines))


if __name__ == "__main__":
  main()
