"""CPU step time of a small SDXL-shaped UNet: Flax (jitted) vs diffusers PyTorch (eager).

    python -m bench.bench_unet [--rounds 10] [--iters 3] [--threads N]

Blocks 64/128/256, transformer depths 1/2/2 (attention in every block), linear projections,
`text_time` added embedding, 256-d context of 77 tokens, batch 2, 32² latents, fp32; the same
random weights in both frameworks (saved by diffusers, read by our converter). JAX runs at its
default matmul precision (tests set "highest"; this benchmark does not). Rounds interleave the two
frameworks so background load hits both alike; the figure is the median over rounds of each
round's mean step time. Writes bench/results/unet.md (appends with --append).

`--threads 1` pins both frameworks to one thread (torch.set_num_threads(1); XLA without its
multi-threaded Eigen/intra-op pool), a comparison that is less sensitive to other jobs on a
shared machine; by default each framework uses its own default threading.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def _parse():
  ap = argparse.ArgumentParser()
  ap.add_argument("--rounds", type=int, default=10)
  ap.add_argument("--iters", type=int, default=3)
  ap.add_argument("--threads", type=int, default=0, help="0 = framework defaults; 1 = both "
                  "single-threaded")
  ap.add_argument("--out", default="bench/results/unet.md")
  ap.add_argument("--append", action="store_true")
  return ap.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None and ARGS.threads == 1:  # must precede the JAX import
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import diffusers  # noqa: E402

from bench import common  # noqa: E402
from instant3d_jax.convert import diffusers_sdxl as conv  # noqa: E402
from instant3d_jax.models.unet import UNet2DConditionModel  # noqa: E402

CONFIG = dict(
    block_out_channels=(64, 128, 256), layers_per_block=2, transformer_layers_per_block=(1, 2, 2),
    down_block_types=("CrossAttnDownBlock2D",) * 3, up_block_types=("CrossAttnUpBlock2D",) * 3,
    attention_head_dim=(1, 2, 4), cross_attention_dim=256, use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=32,
    projection_class_embeddings_input_dim=256 + 6 * 32, norm_num_groups=32, sample_size=32)
BATCH, SIZE, CTX_LEN = 2, 32, 77


def main(args):
  prov = common.Provenance.start()
  if args.threads:
    torch.set_num_threads(args.threads)

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
  cpu = {"jax": [], "torch": []}  # process CPU time: what a step costs, whoever else is running
  for r in range(args.rounds):
    order = [("jax", run_jax), ("torch", run_torch)]
    if r % 2:
      order.reverse()
    for name, fn in order:
      t0, c0 = time.perf_counter(), time.process_time()
      for _ in range(args.iters):
        fn()
      times[name].append((time.perf_counter() - t0) / args.iters * 1e3)
      cpu[name].append((time.process_time() - c0) / args.iters * 1e3)
  med = {k: statistics.median(v) for k, v in times.items()}
  med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
  ratio = med["torch"] / med["jax"]
  ratio_cpu = med_cpu["torch"] / med_cpu["jax"]
  threads = ("both single-threaded (torch.set_num_threads(1), XLA_FLAGS "
             "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1)"
             if args.threads == 1 else "framework default threading")
  lines = [
      f"### CPU: small SDXL-shaped UNet, one denoising step, {threads}",
      "",
      f"Config: blocks 64/128/256, transformer depths 1/2/2, linear projections, text_time, "
      f"context 77×256, batch {BATCH}, {SIZE}² latents, fp32, {n_params:,} parameters, "
      "same weights in both.",
      "",
      "| framework | wall time / step (median of rounds) | min | max | process CPU time / "
      "step (median) |",
      "|---|---|---|---|---|",
      f"| JAX {jax.__version__} (jit, default matmul precision) | {med['jax']:.1f} ms | "
      f"{min(times['jax']):.1f} ms | {max(times['jax']):.1f} ms | {med_cpu['jax']:.1f} ms |",
      f"| PyTorch {torch.__version__} eager, diffusers {diffusers.__version__} | "
      f"{med['torch']:.1f} ms | {min(times['torch']):.1f} ms | {max(times['torch']):.1f} ms | "
      f"{med_cpu['torch']:.1f} ms |",
      "",
      f"**Speed-up JAX vs PyTorch (wall time): {ratio:.2f}×**; by process CPU time "
      f"{ratio_cpu:.2f}× (torch / jax). Output agreement: rel. err {rel:.1e}.",
      "",
      f"{args.rounds} interleaved rounds of {args.iters} steps each, order alternating; "
      f"torch.get_num_threads() = {torch.get_num_threads()}; XLA: "
      f"{'single-threaded' if args.threads == 1 else 'default threading'}. With more runnable "
      "threads than cores, PyTorch's default OpenMP threads (which spin while waiting) suffer "
      "more than XLA's pool, so under load (see the load average below) the single-threaded "
      "table is the fairer one, and its CPU-time ratio the least load-sensitive figure.",
  ]
  lines += common.provenance_block(prov)
  text = "\n".join(lines) + "\n"
  print(text)
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  if args.append and out.exists():
    text = out.read_text() + "\n" + text
  tmp = out.with_name(out.name + ".tmp")
  tmp.write_text(text)
  os.replace(tmp, out)


if __name__ == "__main__":
  main(ARGS)
