"""CPU step time of a small SDXL-shaped UNet: Flax (jitted) vs diffusers PyTorch (eager).

    python -m bench.bench_unet [--rounds 10] [--iters 3]

Blocks 64/128/256, transformer depths 1/2/2 (attention in every block), linear projections,
`text_time` added embedding, 256-d context of 77 tokens, batch 2, 32² latents, fp32; the same
random weights in both frameworks (saved by diffusers, read by our converter). JAX runs at its
default matmul precision (tests set "highest"; this benchmark does not). Rounds interleave the two
frameworks so background load hits both alike; the figure is the median over rounds of each
round's mean step time. Writes bench/results/unet.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
import diffusers

from instant3d_jax.convert import diffusers_sdxl as conv
from instant3d_jax.models.unet import UNet2DConditionModel

CONFIG = dict(
    block_out_channels=(64, 128, 256), layers_per_block=2, transformer_layers_per_block=(1, 2, 2),
    down_block_types=("CrossAttnDownBlock2D",) * 3, up_block_types=("CrossAttnUpBlock2D",) * 3,
    attention_head_dim=(1, 2, 4), cross_attention_dim=256, use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=32,
    projection_class_embeddings_input_dim=256 + 6 * 32, norm_num_groups=32, sample_size=32)
BATCH, SIZE, CTX_LEN = 2, 32, 77


def cpu_name() -> str:
  for line in Path("/proc/cpuinfo").read_text().splitlines():
    if line.startswith("model name"):
      return line.split(":", 1)[1].strip()
  return platform.processor()


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--rounds", type=int, default=10)
  ap.add_argument("--iters", type=int, default=3)
  ap.add_argument("--out", default="bench/results/unet.md")
  args = ap.parse_args()

  torch.manual_seed(0)
  tm = diffusers.UNet2DConditionModel(**CONFIG).eval()
  with torch.no_grad():
    for p in tm.parameters():
      p.normal_(0.0, 0.05)
  with tempfile.TemporaryDirectory() as d:
    tm.save_pretrained(d)
    config, params = conv.load_unet(d)
  n_params = sum(p.numel() for p in tm.parameters())

  rng = np.random.default_rng(0)
  x = rng.standard_normal((BATCH, 4, SIZE, SIZE)).astype(np.float32)
  t = np.array([999.0, 999.0], np.float32)
  ctx = rng.standard_normal((BATCH, CTX_LEN, 256)).astype(np.float32)
  te = rng.standard_normal((BATCH, 256)).astype(np.float32)
  ids = np.tile(np.array([[1024, 1024, 0, 0, 1024, 1024]], np.float32), (BATCH, 1))
  tx = [torch.from_numpy(a) for a in (x, t, ctx)]
  tkw = dict(added_cond_kwargs=dict(text_embeds=torch.from_numpy(te), time_ids=torch.from_numpy(ids)))

  model = UNet2DConditionModel(config)
  step = jax.jit(lambda p, x, t, c, te, ids: model.apply({"params": p}, x, t, c, text_embeds=te,
                                                         time_ids=ids))
  params = jax.device_put(params)
  jx = [jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(t), jnp.asarray(ctx), jnp.asarray(te),
        jnp.asarray(ids)]

  def run_jax():
    return step(params, *jx).block_until_ready()

  def run_torch():
    with torch.inference_mode():
      return tm(*tx, **tkw).sample

  # Same function, same weights: check the outputs agree before timing.
  out_j = np.asarray(run_jax()).transpose(0, 3, 1, 2)
  out_t = run_torch().numpy()
  rel = float(np.abs(out_j - out_t).max() / np.abs(out_t).max())
  for _ in range(2):
    run_jax(), run_torch()

  times = {"jax": [], "torch": []}
  for r in range(args.rounds):
    order = [("jax", run_jax), ("torch", run_torch)]
    if r % 2:
      order.reverse()
    for name, fn in order:
      t0 = time.perf_counter()
      for _ in range(args.iters):
        fn()
      times[name].append((time.perf_counter() - t0) / args.iters * 1e3)
  med = {k: statistics.median(v) for k, v in times.items()}
  ratio = med["torch"] / med["jax"]
  load = os.getloadavg()
  lines = [
      "## CPU: small SDXL-shaped UNet, one denoising step (JAX jit vs diffusers PyTorch eager)",
      "",
      f"Config: blocks 64/128/256, transformer depths 1/2/2, linear projections, text_time, "
      f"context 77×256, batch {BATCH}, {SIZE}² latents, fp32, {n_params:,} parameters, "
      "same weights in both.",
      "",
      "| framework | step time (median of rounds) | min | max |",
      "|---|---|---|---|",
      f"| JAX {jax.__version__} (jit, default matmul precision) | {med['jax']:.1f} ms | "
      f"{min(times['jax']):.1f} ms | {max(times['jax']):.1f} ms |",
      f"| PyTorch {torch.__version__} eager, diffusers {diffusers.__version__} | "
      f"{med['torch']:.1f} ms | {min(times['torch']):.1f} ms | {max(times['torch']):.1f} ms |",
      "",
      f"**Speed-up JAX vs PyTorch: {ratio:.2f}×** (torch time / jax time). Output agreement: "
      f"rel. err {rel:.1e}.",
      "",
      f"Command: `python -m bench.bench_unet --rounds {args.rounds} --iters {args.iters}` "
      f"({args.rounds} interleaved rounds of {args.iters} steps each, order alternating).",
      f"Machine: {cpu_name()}, {os.cpu_count()} cores; torch.get_num_threads() = "
      f"{torch.get_num_threads()}; XLA CPU default threading. Date: "
      f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
      f"The machine was shared with other jobs during the run (load average {load[0]:.1f} / "
      f"{load[1]:.1f} / {load[2]:.1f}), so absolute times are noisy; the ratio is the figure.",
      "",
  ]
  text = "\n".join(lines)
  print(text)
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_name(out.name + ".tmp")
  tmp.write_text(text)
  os.replace(tmp, out)


if __name__ == "__main__":
  main()
