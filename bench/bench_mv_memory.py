"""Per-device memory of the SDXL stage-1 fine-tuning step (configs/mv_sdxl.py:sdxl) at 8 and 64
devices, from the trainer's own shardings and, with `--compile`, an ahead-of-time compile of its
update step on that many fake CPU devices (nothing is allocated).

    python -m bench.bench_mv_memory [--plans 8,64] [--grids_per_device 1] [--compile]

Shapes: the full SDXL base components (bench/device/shapes.py: UNet 2,567,463,684 parameters,
VAE, CLIP-L and OpenCLIP-bigG text towers), 1024² grids (128² latents), 77-token captions, the
sdxl variant's settings (bf16 compute, fp32 master weights, AdamW moments and EMA, per-block
remat 'full', UNet-only training with VAE and text encoders frozen and replicated, the frozen
encoders run inside the step on pixel batches).

Per device (exact, from the derived shardings, `NamedSharding.shard_shape`): the UNet's fp32
params, AdamW's two moments, the EMA; the replicated frozen encoders; the batch shard; the
gradients add one more sharded parameter copy inside the step. `--compile` adds the compiler's
`memory_analysis()` (arguments, outputs, temporaries): on CPU the temporaries are an upper bound
(XLA CPU does not schedule for memory and ignores remat; see bench/bench_memory_plan.py), so
re-measure on the accelerator. The compile of the full SDXL backward at 128² latents takes minutes
and tens of GB of host memory on CPU: it is off by default.
Writes bench/results/mv_memory_plan.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

_MAX_DEVICES = 64
if "jax" not in sys.modules:
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={_MAX_DEVICES}").strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402

GiB = 1024 ** 3

# devices → (mesh, what it stands for): launch/README.md's GPU meshes.
PLANS = {
    8: (dict(data=1, fsdp=8, tensor=1), "8 × H100 80 GB, one node: FSDP 8"),
    64: (dict(data=8, fsdp=8, tensor=1), "64 × H100 80 GB, 8 nodes: FSDP 8 × data 8"),
}


def sdxl_config(devices: int, mesh: dict, grids_per_device: int):
  from bench.device import shapes
  from instant3d_jax.configs import mv_sdxl
  cfg = mv_sdxl.get_config("sdxl")
  r = cfg.model.random_init
  r.unet, r.vae = dict(shapes.SDXL_UNET), dict(shapes.SDXL_VAE)
  r.text_encoder, r.text_encoder_2 = dict(shapes.SDXL_TEXT_L), dict(shapes.SDXL_TEXT_G)
  cfg.model.tokenizer = "word"          # ids only matter by shape: 77 like CLIP's
  cfg.model.tokenizer_max_length = 77
  cfg.mesh.update(dict(mesh, num_devices=devices))
  cfg.train.global_batch_size = devices * grids_per_device
  cfg.train.image_every = 0
  return cfg


def state_bytes(abstract_state, state_sh) -> dict:
  """Exact per-device bytes of the sharded train state by top-level field."""
  out = {}
  for (path, a), sh in zip(jax.tree_util.tree_leaves_with_path(abstract_state),
                           jax.tree.leaves(state_sh)):
    shard = sh.shard_shape(a.shape) if a.shape else ()
    top = str(getattr(path[0], "name", path[0]))
    out[top] = out.get(top, 0) + int(np.prod(shard)) * np.dtype(a.dtype).itemsize
  return out


def build_step(cfg, devices=None, compile_step: bool = True) -> dict:
  """The stage-1 trainer's abstract state for `cfg` (nothing allocated) and, with
  `compile_step`, its compiled update step, on `devices` (default `jax.devices()`; a TPU
  topology's devices in bench/tpu_plan.py). Returns `mesh`, `task`, `abstract`, `state_sh` and
  (compiled) `compiled`, `batch_sh`, `compile_s`."""
  from instant3d_jax.train import loop, mv_task, optimizer as opt_lib
  comps = mv_task.build_components(cfg, abstract=True)
  task = mv_task.make_task(cfg, comps, with_flops=False)
  mesh, rules = loop.setup_mesh(cfg, devices)
  tx, schedule = opt_lib.make_optimizer(cfg.optimizer, int(cfg.train.total_steps))
  _, _, abstract, state_sh = loop.build_state(cfg, task, mesh, rules, tx)
  out = dict(mesh=mesh, task=task, abstract=abstract, state_sh=state_sh)
  if compile_step:
    t0 = time.time()
    compiled, batch_sh = loop.compile_train_step(cfg, task, mesh, rules, tx, schedule, abstract,
                                                 state_sh, task.constants)
    out.update(compiled=compiled, batch_sh=batch_sh, compile_s=time.time() - t0)
  return out


def plan(devices: int, grids_per_device: int, compile_step: bool) -> dict:
  mesh_over, what = PLANS[devices]
  cfg = sdxl_config(devices, mesh_over, grids_per_device)
  c = build_step(cfg, compile_step=compile_step)
  mesh, task, abstract, state_sh = c["mesh"], c["task"], c["abstract"], c["state_sh"]
  st = state_bytes(abstract, state_sh)
  consts = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
               for x in jax.tree.leaves(task.constants))
  batch = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
              for v in task.batch_spec.values()) // devices
  row = dict(devices=devices, what=what, mesh=dict(mesh.shape),
             params=sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params)),
             state=st, constants=consts, batch=batch, grads=st["params"])
  if compile_step:
    mem = c["compiled"].memory_analysis()
    row["compile_s"] = c["compile_s"]
    row["compiled"] = dict(arguments=mem.argument_size_in_bytes,
                           outputs=mem.output_size_in_bytes,
                           temporaries=mem.temp_size_in_bytes)
  return row


def _g(x) -> str:
  return f"{x / GiB:.2f}"


def report(rows: list[dict], grids: int) -> list[str]:
  lines = [
      "## SDXL stage-1 fine-tuning: per-device memory (" + " / ".join(
          str(r["devices"]) for r in rows) + " devices)", "",
      f"configs/mv_sdxl.py:sdxl with the full SDXL base shapes (fake CPU devices, JAX "
      f"{jax.__version__}): bf16 compute, fp32 UNet master weights + AdamW moments + EMA, "
      f"remat 'full', {grids} 1024² grid(s) per device, frozen VAE and text encoders replicated. "
      "GiB per device; exact from the derived shardings.", "",
      "| plan | mesh | UNet params | AdamW | EMA | grads (in step) | frozen encoders | batch | "
      "total without activations |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    st = r["state"]
    mesh = " × ".join(f"{k} {v}" for k, v in r["mesh"].items() if v > 1)
    total = sum(st.values()) + r["grads"] + r["constants"] + r["batch"]
    lines.append(f"| {r['devices']}: {r['what']} | {mesh} | {_g(st['params'])} | "
                 f"{_g(st['opt_state'])} | {_g(st.get('ema', 0))} | {_g(r['grads'])} | "
                 f"{_g(r['constants'])} | {_g(r['batch'])} | **{_g(total)}** |")
  if any("compiled" in r for r in rows):
    lines += ["", "Compiled update step (`memory_analysis()`, CPU compiler; temporaries are an "
              "upper bound, see the module docstring):", "",
              "| plan | arguments | outputs | temporaries | compile s |", "|---|---:|---:|---:|---:|"]
    for r in rows:
      if "compiled" in r:
        c = r["compiled"]
        lines.append(f"| {r['devices']} | {_g(c['arguments'])} | {_g(c['outputs'])} | "
                     f"{_g(c['temporaries'])} | {r['compile_s']:.0f} |")
  lines += ["", f"UNet parameters: {rows[0]['params']:,}. The state shrinks with the FSDP size "
            "only (data-parallel replicas hold a full FSDP shard each); activations (not in the "
            "table) grow with the grids per device."]
  return lines


def main():
  from bench import common
  ap = argparse.ArgumentParser()
  ap.add_argument("--plans", default="8,64")
  ap.add_argument("--grids_per_device", type=int, default=1)
  ap.add_argument("--compile", action="store_true",
                  help="also AOT-compile the step (minutes, tens of GB of host memory)")
  ap.add_argument("--out", default="bench/results/mv_memory_plan.md")
  args = ap.parse_args()
  prov = common.Provenance.start()
  rows = []
  for n in [int(x) for x in args.plans.split(",") if x]:
    if n not in PLANS:
      raise SystemExit(f"--plans: {n} is not one of {sorted(PLANS)}")
    if n > jax.device_count():
      raise SystemExit(f"--plans {n} needs {n} devices, this process has {jax.device_count()} "
                       "(run it as a fresh process: it sets the fake CPU device count)")
    rows.append(plan(n, args.grids_per_device, args.compile))
    print(rows[-1], flush=True)
  lines = report(rows, args.grids_per_device)
  print(f"wrote {common.write_result(args.out, lines, prov)}")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
