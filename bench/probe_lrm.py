"""Probes of a trained reconstructor: does it use its inputs, how smooth is its field, and can
the network fit a fixed batch (capacity vs. generalisation).

    python -m bench.probe_lrm --checkpoint outputs/demo/lrm [--data_dir outputs/demo/data]
                              [--objects 8] [--overfit_steps 0]

Prints, on the first `--objects` held-out test objects (GSO-style rig rotated onto the training
rig, as `eval_lrm`):
  * PSNR of the targets rendered from the object's own planes, from another object's planes
    (the batch rolled by one) and from the planes of all-white inputs;
  * the same PSNR with the render's sample counts changed (16 + 0 … 64 + 64): a field that is
    smooth at the sample spacing hardly changes;
and with `--overfit_steps N`, the training PSNR of a fresh model trained N steps on one fixed
batch of the checkpoint's config (the trainer's init, loss and update step).
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np


def _psnr(a, b) -> float:
  return float(-10 * np.log10(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def input_probes(config, params, data_dir: str, objects: int) -> dict:
  from data_pipeline import datasets, lrm_input
  from instant3d_jax.models import lrm as lrm_lib
  m = lrm_lib.LRMConfig.from_config(config)
  ld = datasets.loader_config(config, datasets.open_dataset(data_dir), purpose="eval")
  ld.eval_batch_size = objects
  batch = next(lrm_input.eval_batches(data_dir, ld, rotate_deg=float(config.eval.rotate_deg)))
  in_cams, tgt_cams = lrm_input.batch_to_cameras(batch)
  apply = jax.jit(lambda x: lrm_lib.LRM(m).apply({"params": params}, x, in_cams))
  images = jnp.asarray(batch["input_images"])
  planes = apply(images)
  gt = batch["target_images"]

  def render(p, ns=None, ni=None):
    return lrm_lib.render_views(m, params, p, tgt_cams, outputs=("rgb",), num_samples=ns,
                                num_importance=ni)["rgb"]

  out = {"own planes": _psnr(render(planes), gt),
         "another object's planes": _psnr(render(jnp.roll(planes, 1, 0)), gt),
         "planes of all-white inputs": _psnr(render(apply(jnp.ones_like(images))), gt)}
  for ns, ni in ((16, 0), (16, 16), (32, 32), (64, 64)):
    out[f"own planes, {ns} + {ni} samples"] = _psnr(render(planes, ns, ni), gt)
  return out


def overfit(config, data_dir: str, steps: int) -> list[tuple[int, float]]:
  from data_pipeline import datasets, lrm_input
  from instant3d_jax.train import lrm_task
  from instant3d_jax.train import optimizer as opt_lib
  from instant3d_jax.base.sharding import unbox
  from instant3d_jax.train.step import make_init_fn, make_train_step
  dataset = datasets.open_dataset(data_dir)
  task = lrm_task.make_task(config, dataset)
  batch = next(lrm_input.train_iterator(data_dir, datasets.loader_config(config, dataset)))
  batch = {k: jnp.asarray(v) for k, v in batch.items() if k in task.batch_spec}
  tx, schedule = opt_lib.make_optimizer(config.optimizer, steps)
  state = jax.jit(lambda k: unbox(make_init_fn(task.init_params, tx)(k)))(
      jax.random.PRNGKey(int(config.seed)))
  step = jax.jit(make_train_step(task.loss_fn, tx, schedule), donate_argnums=(0,))
  curve, t0 = [], time.time()
  for i in range(steps):
    state, metrics = step(state, batch, task.constants)
    if i % 50 == 0 or i == steps - 1:
      p = float(metrics["psnr"])
      curve.append((i, p))
      print(f"overfit step {i}: training PSNR {p:.2f} dB ({time.time() - t0:.0f} s)", flush=True)
  return curve


def main():
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--checkpoint", required=True, help="a training workdir or step directory")
  ap.add_argument("--data_dir", default="outputs/demo/data")
  ap.add_argument("--objects", type=int, default=8)
  ap.add_argument("--overfit_steps", type=int, default=0)
  args = ap.parse_args()
  import flax.linen as nn
  from instant3d_jax.convert import checkpoints
  config, params = checkpoints.load_for_inference(args.checkpoint)
  params = nn.meta.unbox(params)
  for k, v in input_probes(config, params, args.data_dir, args.objects).items():
    print(f"{k}: {v:.2f} dB", flush=True)
  if args.overfit_steps:
    overfit(config, args.data_dir, args.overfit_steps)


if __name__ == "__main__":
  main()
