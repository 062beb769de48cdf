"""Per-device memory plan of `configs/lrm.py:large` at 8, 64 and 128 devices: analytic bytes,
cross-checked by compiling the trainer's own update step for a mesh of that many fake CPU devices.

    python -m bench.bench_memory_plan [--plans 8,64,128] [--objects_per_device 1]

For each plan (the meshes of launch/README.md) this computes, per device:
  * state (exact, from the derived shardings): fp32 parameters + AdamW moments, each leaf's shard
    shape from `NamedSharding.shard_shape`, summed; the gradients add one more parameter copy
    inside the step (counted as a temporary);
  * batch: the loader's shapes for `objects_per_device` objects;
  * activations (analytic, under the recommended settings: bf16, `model.remat='full'`,
    `model.render.remat_field=True`): the block inputs that full remat keeps (encoder: V·(1+N)·De
    per block; decoder: 3T²·D per block, plus the image-token context), the largest single-block
    recompute (its MLP hidden and fp32 attention scores), the planes, and for the renderer the
    per-sample values kept for the backward pass (points, density, colour, compositing terms)
    plus one field evaluation recomputed (triplane features + NeRF MLP hiddens, fp32) for the
    coarse or the fine samples of the object's rays.
Cross-check: `jax.jit(step).lower(abstract state, abstract batch).compile().memory_analysis()` on
N fake CPU devices (nothing is allocated). Its argument and output bytes are the partitioned
per-device state + batch, so they must agree with the exact state sum; its temporaries are the
CPU compiler's figure, which does not schedule for memory (remat shows no saving on CPU:
BENCHMARKS.md, LRM section), so it is an upper bound labelled as a CPU estimate, not a GPU/TPU
figure. The TPU compiler's own figures for TPU topologies (libtpu, `make install-aot`):
bench/tpu_plan.py, which compiles this same step through `compile_step`.
Writes bench/results/memory_plan.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

# One compile per plan, each for its own number of fake devices: set before jax is imported.
_MAX_DEVICES = 128
if "jax" not in sys.modules:
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={_MAX_DEVICES}").strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402

GiB = 1024 ** 3

# name, devices, mesh overrides (launch/README.md), what it stands for
PLANS = {
    8: ("8 devices", dict(data=1, fsdp=8, tensor=1), "8 × H100, one node: FSDP 8"),
    64: ("64 devices", dict(data=1, fsdp=8, tensor=1, dcn_data=8),
         "64 × H100, 8 nodes: FSDP 8 inside a node × data 8 across nodes"),
    128: ("128 devices", dict(data=8, fsdp=16, tensor=1),
          "128 chips in one ICI slice (e.g. TPU v5p-256): FSDP 16 × data 8"),
}


def large_config(devices: int, mesh: dict, objects_per_device: int):
  from instant3d_jax.configs import lrm
  cfg = lrm.get_config("large")
  cfg.model.dtype = "bfloat16"
  cfg.model.remat = "full"
  cfg.model.render.remat_field = True
  cfg.mesh.update({**dict(dcn_data=1, dcn_fsdp=1, dcn_tensor=1, num_devices=devices), **mesh})
  cfg.train.global_batch_size = devices * objects_per_device
  return cfg


def analytic_activations(cfg, objects: int) -> dict:
  """Bytes per device of what the step keeps alive at its peak (see the module docstring)."""
  from instant3d_jax.models import lrm as lrm_lib
  m = lrm_lib.LRMConfig.from_config(cfg)
  e, dc, tc, n, r = m.encoder, m.decoder, m.triplane, m.nerf, m.render
  act = 2 if m.dtype == "bfloat16" else 4
  V, L_img, De = m.num_views, m.tokens_per_view, e.hidden_size
  Lq, D = 3 * tc.token_resolution ** 2, dc.hidden_size
  ld = cfg.data.loader
  rays = int(ld.num_targets) * int(ld.crop_size or cfg.data.resolution) ** 2
  if cfg.loss.ray_sampling == "random":
    rays = int(ld.num_targets) * int(cfg.loss.rays_per_view)
  S = r.num_samples + r.num_importance
  out = {
      "encoder block inputs": e.num_layers * V * L_img * De * act,
      "decoder block inputs + context": (dc.num_layers * Lq * D + V * L_img * De) * act,
      # One block recomputed at a time: the larger of encoder and decoder blocks' MLP hidden
      # plus fp32 attention scores.
      "one block recomputed": max(V * L_img * (e.mlp_dim + 4 * De) * act
                                  + V * e.num_heads * L_img ** 2 * 4,
                                  Lq * (D * dc.mlp_ratio + 4 * D) * act
                                  + dc.num_heads * Lq * V * L_img * 4),
      "planes (fp32)": 3 * m.plane_resolution ** 2 * tc.channels * 4,
      # Kept per sample: point (3), density (1), rgb (3), t, delta, alpha, transmittance,
      # weight (5), fp32.
      "render: kept per sample": rays * S * 12 * 4,
      # One field evaluation (coarse or fine half) recomputed in the backward pass: features
      # 3C, each hidden layer's pre- and post-activation, 4 outputs, fp32.
      "render: one field recompute": rays * max(r.num_samples, r.num_importance)
      * (3 * tc.channels + 2 * n.hidden * (n.num_layers - 1) + 4) * 4,
  }
  return {k: v * objects for k, v in out.items()}


def state_bytes(abstract_state, state_sh) -> dict:
  """Exact per-device bytes of the sharded train state: parameters, optimizer, the rest."""
  out = {"params": 0, "optimizer": 0, "other": 0}
  leaves_a = jax.tree_util.tree_leaves_with_path(abstract_state)
  leaves_s = jax.tree.leaves(state_sh)
  for (path, a), sh in zip(leaves_a, leaves_s):
    shard = sh.shard_shape(a.shape) if a.shape else ()
    nbytes = int(np.prod(shard)) * np.dtype(a.dtype).itemsize
    top = str(getattr(path[0], "name", path[0]))
    out["params" if top == "params" else "optimizer" if top == "opt_state" else "other"] += nbytes
  return out


def compile_step(cfg, devices=None) -> dict:
  """Builds the trainer's abstract state and compiles its update step for `cfg` (nothing is
  allocated) on `devices` (default `jax.devices()`; a TPU topology's devices in bench/tpu_plan.py).

  Returns `mesh`, `task`, `abstract` (state), `state_sh`, `batch_sh`, `constants`, `compiled`,
  `compile_s`."""
  from data_pipeline import datasets
  from instant3d_jax.train import loop, lrm_task, optimizer as opt_lib
  mesh, rules = loop.setup_mesh(cfg, devices)
  tx, schedule = opt_lib.make_optimizer(cfg.optimizer, int(cfg.train.total_steps))
  # Only its loss, init and batch shapes are used (of the data set the config would generate).
  task = lrm_task.make_task(cfg, datasets.planned(cfg))
  _, _, abstract, state_sh = loop.build_state(cfg, task, mesh, rules, tx)
  constants = task.constants   # LPIPS-VGG weights (replicated); the compile reads their shapes
  t0 = time.time()
  compiled, batch_sh = loop.compile_train_step(cfg, task, mesh, rules, tx, schedule, abstract,
                                               state_sh, constants)
  return dict(mesh=mesh, task=task, abstract=abstract, state_sh=state_sh, batch_sh=batch_sh,
              constants=constants, compiled=compiled, compile_s=time.time() - t0)


def plan(devices: int, objects_per_device: int) -> dict:
  label, mesh_over, what = PLANS[devices]
  cfg = large_config(devices, mesh_over, objects_per_device)
  c = compile_step(cfg)
  mesh, task, abstract, state_sh, constants = (c["mesh"], c["task"], c["abstract"],
                                               c["state_sh"], c["constants"])
  compile_s = c["compile_s"]
  mem = c["compiled"].memory_analysis()
  st = state_bytes(abstract, state_sh)
  batch = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
              for v in task.batch_spec.values()) // devices
  consts = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
               for x in jax.tree.leaves(constants))   # replicated (LPIPS-VGG weights)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params))
  acts = analytic_activations(cfg, objects_per_device)
  return dict(devices=devices, label=label, what=what, mesh=dict(mesh.shape), params=n_params,
              state=st, batch=batch, constants=consts, grads=st["params"], acts=acts, compile_s=compile_s,
              compiled=dict(arguments=mem.argument_size_in_bytes,
                            outputs=mem.output_size_in_bytes,
                            temporaries=mem.temp_size_in_bytes,
                            aliased=mem.alias_size_in_bytes))


def _g(x) -> str:
  return f"{x / GiB:.2f}"


def report(rows: list[dict], objects: int) -> list[str]:
  """Result lines: exact and compiler-reported figures in one table, analytic estimates apart."""
  lines = [
      "## `large` per-device memory plan (" + " / ".join(str(r["devices"]) for r in rows)
      + " devices)", "",
      f"Fake CPU devices (JAX {jax.__version__}). `large` as trained (bf16 compute, fp32 master "
      f"weights and AdamW moments, `model.remat='full'`, `model.render.remat_field=True`, LPIPS "
      f"on 4 × 64² crops, 64 + 64 samples), {objects} object(s) per device. GiB per device.",
      "",
      "Exact (from the derived shardings) and reported by the compiler "
      "(`compile().memory_analysis()` of the trainer's update step):", "",
      "| plan | mesh | params + AdamW (exact) | batch + LPIPS weights (exact) | compiled "
      "arguments | compiled outputs | compiled temporaries (CPU compiler) | arguments − (state "
      "+ batch + LPIPS), bytes | compile s |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    st = r["state"]["params"] + r["state"]["optimizer"] + r["state"]["other"]
    inputs = r["batch"] + r["constants"]
    c = r["compiled"]
    mesh = " × ".join(f"{k} {v}" for k, v in r["mesh"].items() if v > 1)
    lines.append(f"| {r['label']}: {r['what']} | {mesh} | {_g(st)} | {_g(inputs)} | "
                 f"{_g(c['arguments'])} | {_g(c['outputs'])} | {_g(c['temporaries'])} | "
                 f"{c['arguments'] - st - inputs:,} | {r['compile_s']:.0f} |")
  lines += ["", "**Estimates** (analytic, not measured): gradients (one more parameter copy "
            "inside the step), activations under the recommended settings, and the total with "
            "the exact state and inputs above:", "",
            "| plan | grads | activations (analytic) | estimated total |", "|---|---:|---:|---:|"]
  for r in rows:
    st = r["state"]["params"] + r["state"]["optimizer"] + r["state"]["other"]
    acts = sum(r["acts"].values())
    total = st + r["grads"] + r["batch"] + r["constants"] + acts
    lines.append(f"| {r['label']} | {_g(r['grads'])} | {_g(acts)} | **{_g(total)}** |")
  r0 = rows[0]
  lines += ["", f"Parameters: {r0['params']:,}. Activations per device, analytic estimates "
            "(GiB):", "",
            "| term | " + " | ".join(r["label"] for r in rows) + " |",
            "|---|" + "---:|" * len(rows)]
  for k in r0["acts"]:
    lines.append(f"| {k} | " + " | ".join(_g(r["acts"][k]) for r in rows) + " |")
  lines += [
      "",
      "Reading: the compiled arguments are the partitioned state, the batch shard and the "
      "replicated LPIPS weights: the cross-check holds when that column equals params + AdamW "
      "+ batch + LPIPS weights (the outputs are the new state). The step does not read the "
      "target masks (no mask loss) or the object index, and `jax.jit` drops unused arguments: "
      "a difference of −(masks + index) bytes per device in the bytes column "
      "is an exact match. The state shrinks with the FSDP size only "
      "(data-parallel replicas hold a full FSDP shard each), activations with the objects per "
      "device only. The CPU temporaries are an upper bound: XLA CPU does not schedule for "
      "memory and ignores remat (BENCHMARKS.md, LRM section), so on GPU/TPU the activations "
      "estimate, not the CPU temporaries, is what to size the batch with; re-measure with "
      "`memory_analysis()` on the accelerator."]
  return lines


def main():
  from bench import common
  ap = argparse.ArgumentParser()
  ap.add_argument("--plans", default="8,64,128")
  ap.add_argument("--objects_per_device", type=int, default=1)
  ap.add_argument("--out", default="bench/results/memory_plan.md")
  args = ap.parse_args()
  prov = common.Provenance.start()
  rows = []
  for n in [int(x) for x in args.plans.split(",") if x]:
    if n not in PLANS:
      raise SystemExit(f"--plans: {n} is not one of {sorted(PLANS)}")
    if n > jax.device_count():
      raise SystemExit(f"--plans {n} needs {n} devices, this process has {jax.device_count()} "
                       "(run it as a fresh process: it sets the fake CPU device count)")
    rows.append(plan(n, args.objects_per_device))
    print(rows[-1], flush=True)
  lines = report(rows, args.objects_per_device)
  print(f"wrote {common.write_result(args.out, lines, prov)}")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
