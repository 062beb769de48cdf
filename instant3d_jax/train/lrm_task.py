"""The reconstructor's (LRM) training job as a `loop.Task`: batch shapes, loss, FLOPs, image and
evaluation hooks, the pretrained-encoder hook, and `train()` (the library entry point of
`python -m instant3d_jax.train_lrm`).

Data: `data_pipeline.datasets.prepare(config)` opens the run's data set (the procedural world is
generated first when `data.source` is 'procedural'; 'records' reads an existing one, e.g. imported
renders); every shape below comes from that data set and the config, through
`datasets.loader_config`.

Loss (config `loss`): MSE between rendered and ground-truth supervision pixels, + λ·LPIPS on
rendered crops (λ = 2.0 as LRM, from `lpips_start_step`), + optional MSE of the rendered opacity
against the alpha mask. The renderer jitters its samples with the step's RNG.

Pretrained encoder: with `model.encoder.pretrained` set (a transformers ViT/DINO folder), the
encoder's weights are read from it when a run starts at step 0 (`Task.initial_params`); a resumed
run continues from its checkpoint and never reads the folder again.
"""
from __future__ import annotations

from instant3d_jax import errors

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from data_pipeline import datasets
from instant3d_jax import cameras as cameras_lib
from instant3d_jax.train import loop


def prepare_data(config, *, progress: bool = True) -> datasets.DatasetInfo:
  """The run's data set (`datasets.prepare`), checked for training (`datasets.check_train`)."""
  info = datasets.prepare(config, progress=progress and jax.process_index() == 0)
  datasets.check_train(info, config)
  return info


def batch_spec(config, dataset: datasets.DatasetInfo) -> dict:
  """Global batch shapes the loader produces (for AOT compile before the first batch)."""
  ld = datasets.loader_config(config, dataset)
  B, T = int(ld.batch_size), int(ld.num_targets)
  H, V = int(ld.input_resolution), int(config.model.num_views)
  h = int(ld.crop_size) or int(ld.target_resolution)
  f32 = jnp.float32
  return {"input_images": jax.ShapeDtypeStruct((B, V, H, H, 3), f32),
          "input_c2w": jax.ShapeDtypeStruct((B, V, 4, 4), f32),
          "input_K": jax.ShapeDtypeStruct((B, V, 3, 3), f32),
          "target_images": jax.ShapeDtypeStruct((B, T, h, h, 3), f32),
          "target_masks": jax.ShapeDtypeStruct((B, T, h, h), f32),
          "target_c2w": jax.ShapeDtypeStruct((B, T, 4, 4), f32),
          "target_K": jax.ShapeDtypeStruct((B, T, 3, 3), f32),
          "object_index": jax.ShapeDtypeStruct((B,), jnp.int32)}


class _Batches:
  """The grain iterator, with only the keys the step takes."""

  def __init__(self, it, keys):
    self.it, self.keys = it, tuple(keys)

  def __next__(self):
    b = next(self.it)
    return {k: b[k] for k in self.keys}

  def get_state(self):
    return self.it.get_state()

  def set_state(self, state):
    self.it.set_state(state)


# Loss.

def _cameras(batch):
  ih, iw = batch["input_images"].shape[2:4]
  th, tw = batch["target_images"].shape[2:4]
  return (cameras_lib.Camera(c2w=batch["input_c2w"], K=batch["input_K"], width=iw, height=ih),
          cameras_lib.Camera(c2w=batch["target_c2w"], K=batch["target_K"], width=tw, height=th))


def sample_pixels(key: jax.Array, masks: jax.Array, n: int, foreground_fraction: float = 0.0
                  ) -> jax.Array:
  """Flat pixel indices `[..., n]` (row-major, into H·W) of random rays for views whose object
  masks are `masks [..., H, W]`: round(n·foreground_fraction) drawn uniformly among the view's
  object pixels (mask > 0.5; uniformly over the view when it has none), the rest uniformly over
  the whole view. Object pixels are a minority of a view; drawing some rays there puts more of a
  step's supervision on the object's shape and colour."""
  *lead, h, w = masks.shape
  n_fg = int(round(foreground_fraction * n))
  if not 0 <= n_fg <= n:
    raise errors.ConfigError(f"loss.foreground_fraction must be in [0, 1], got {foreground_fraction}")
  if not n_fg:
    return jax.random.randint(key, (*lead, n), 0, h * w)
  uni_key, fg_key = jax.random.split(key)
  idx = jax.random.randint(uni_key, (*lead, n - n_fg), 0, h * w)
  fg = (masks.reshape(-1, h * w) > 0.5).astype(jnp.float32)
  fg = jnp.where(jnp.any(fg > 0, -1, keepdims=True), fg, 1.0)
  cdf = jnp.cumsum(fg, -1)                     # steps up only at object pixels
  u = jax.random.uniform(fg_key, (fg.shape[0], n_fg)) * cdf[:, -1:]
  idx_fg = jax.vmap(lambda c, q: jnp.searchsorted(c, q, side="right"))(cdf, u)
  idx_fg = jnp.minimum(idx_fg, h * w - 1).reshape(*lead, n_fg)
  return jnp.concatenate([idx, idx_fg.astype(idx.dtype)], -1)


def make_loss_fn(config):
  """`loss_fn(params, batch, rng, step, constants)` for `loop.Task` (constants: LPIPS params)."""
  from instant3d_jax.models import lrm as lrm_lib
  mcfg = lrm_lib.LRMConfig.from_config(config)
  model = lrm_lib.LRM(mcfg)
  lc = config.loss
  lpips_module = None
  if float(lc.lpips_weight) > 0:
    if lc.ray_sampling != "crop":
      raise errors.ConfigError(f"loss.lpips_weight={lc.lpips_weight} needs loss.ray_sampling='crop' "
                       f"(LPIPS compares image patches), got {lc.ray_sampling!r}")
    from instant3d_jax.models import lpips as lpips_lib
    lpips_module = lpips_lib.LPIPS()
  if lc.ray_sampling not in ("crop", "random"):
    raise errors.ConfigError(f"loss.ray_sampling must be 'crop' or 'random', got {lc.ray_sampling!r}")

  def loss_fn(params, batch, rng, step, constants):
    in_cams, tgt_cams = _cameras(batch)
    planes = model.apply({"params": params}, batch["input_images"], in_cams)
    render_key, pick_key = jax.random.split(rng)
    target, mask = batch["target_images"], batch["target_masks"]
    b, t, h, w = target.shape[:4]
    if lc.ray_sampling == "random":
      n = int(lc.rays_per_view)
      idx = sample_pixels(pick_key, mask, n, float(lc.foreground_fraction))
      u = (idx % w).astype(jnp.float32) + 0.5
      v = (idx // w).astype(jnp.float32) + 0.5
      origins, dirs = jax.vmap(jax.vmap(cameras_lib.pixel_rays))(tgt_cams, u, v)  # [b,t,n,3]
      out = lrm_lib.render_rays(mcfg, params, planes, origins.reshape(b, t * n, 3),
                                dirs.reshape(b, t * n, 3), key=render_key)
      rgb = out["rgb"].reshape(b, t, n, 3)
      opacity = out["opacity"].reshape(b, t, n)
      gt = jnp.take_along_axis(target.reshape(b, t, h * w, 3), idx[..., None], axis=2)
      gt_mask = jnp.take_along_axis(mask.reshape(b, t, h * w), idx, axis=2)
    else:
      out = lrm_lib.render_views(mcfg, params, planes, tgt_cams, key=render_key, chunk=h * w,
                                 outputs=("rgb", "opacity"))
      rgb, opacity, gt, gt_mask = out["rgb"], out["opacity"], target, mask
    rgb = rgb.astype(jnp.float32)
    mse = jnp.mean((rgb - gt) ** 2)
    loss = float(lc.mse_weight) * mse
    metrics = {"mse": mse, "psnr": -10.0 * jnp.log10(mse)}
    if float(lc.l1_weight) > 0:
      l1 = jnp.mean(jnp.abs(rgb - gt))
      loss = loss + float(lc.l1_weight) * l1
      metrics["l1"] = l1
    if lpips_module is not None:
      d = lpips_module.apply({"params": constants["lpips"]}, rgb.reshape(b * t, h, w, 3),
                             gt.reshape(b * t, h, w, 3))
      lp = jnp.mean(d)
      on = (step >= int(lc.lpips_start_step)).astype(jnp.float32)
      loss = loss + on * float(lc.lpips_weight) * lp
      metrics["lpips"] = lp
    if float(lc.mask_weight) > 0:
      mask_mse = jnp.mean((opacity.astype(jnp.float32) - gt_mask) ** 2)
      loss = loss + float(lc.mask_weight) * mask_mse
      metrics["mask_mse"] = mask_mse
    return loss, metrics

  return loss_fn


def flops_per_example(config, dataset: datasets.DatasetInfo) -> float:
  """Analytic forward+backward FLOPs per object: 3 × (images→planes + NeRF MLP on every
  sample). Triplane lookup and compositing (memory-bound gathers) and the LPIPS network are
  not counted."""
  from instant3d_jax.models import lrm_stats
  lc, ld = config.loss, datasets.loader_config(config, dataset)
  per_view = int(lc.rays_per_view) if lc.ray_sampling == "random" else (
      int(ld.crop_size) or int(ld.target_resolution)) ** 2
  rays = per_view * int(ld.num_targets)
  fwd = lrm_stats.lrm_forward_flops(config, batch=1) + lrm_stats.render_flops(config, rays)
  return 3.0 * float(fwd)


# Images and evaluation hooks.

def make_image_fn(config):
  """`(params, batch, step) -> grid` of the batch's first object: row 1 its 4 input views, row 2
  the model's renders of its supervision views, row 3 those views' ground truth."""
  from instant3d_jax.export import images as images_lib
  from instant3d_jax.models import lrm as lrm_lib
  mcfg = lrm_lib.LRMConfig.from_config(config)
  model = lrm_lib.LRM(mcfg)

  @functools.partial(jax.jit, static_argnums=(6,))
  def render(params, images, c2w, K, t_c2w, t_K, t_size):
    h = images.shape[2]
    planes = model.apply({"params": params}, images,
                         cameras_lib.Camera(c2w=c2w, K=K, width=h, height=h))
    cams = cameras_lib.Camera(c2w=t_c2w, K=t_K, width=t_size, height=t_size)
    return lrm_lib.render_views(mcfg, params, planes, cams, outputs=("rgb",))["rgb"]

  def image_fn(params, batch, step):
    one = jax.tree.map(lambda x: np.asarray(jax.device_get(x)[:1]), batch)
    targets = one["target_images"][0]
    pred = np.asarray(render(params, one["input_images"], one["input_c2w"], one["input_K"],
                             one["target_c2w"], one["target_K"], int(targets.shape[1])))[0]
    size = max(targets.shape[1], one["input_images"].shape[2])
    pad = lambda x: np.pad(x, ((0, 0), (0, size - x.shape[1]), (0, size - x.shape[2]), (0, 0)),
                           constant_values=1.0)
    ncols = max(one["input_images"].shape[1], len(targets))   # inputs (4 on the rig, any with
                                                              # random input views) or targets
    rows = [pad(one["input_images"][0]), pad(np.clip(pred, 0, 1)), pad(targets)]
    rows = [np.concatenate([r, np.ones((ncols - len(r),) + r.shape[1:], r.dtype)]) for r in rows]
    return images_lib.make_grid(np.concatenate(rows), ncols=ncols)

  return image_fn


def make_eval_fn(config, dataset: datasets.DatasetInfo):
  """`(params, step) -> {metric: value}`: the held-out protocol on `eval.periodic_num_objects`
  objects, without LPIPS and without the reference rows (cheap enough to run during training):
  the model's PSNR, SSIM, foreground PSNR and colour error (eval/protocol.py)."""
  from instant3d_jax.eval import protocol
  evaluator = {}

  def eval_fn(params, step):
    if "e" not in evaluator:
      evaluator["e"] = protocol.Evaluator(config, with_lpips=False, baselines=False)
    res = evaluator["e"](params, dataset, int(config.eval.periodic_num_objects))
    return {k: v for k, v in res["summary"].items()
            if not k.startswith(tuple(protocol.BASELINES))}

  return eval_fn


# Task assembly.

def pretrained_params_fn(config):
  """`Task.initial_params` for `model.encoder.pretrained`: host params → the same tree with the
  encoder's weights read from the transformers folder (`convert/lrm.py:import_dino_encoder`);
  None when no folder is set."""
  folder = str(config.model.encoder.pretrained or "")
  if not folder:
    return None

  def load(params):
    from instant3d_jax.convert import lrm as convert_lrm
    return convert_lrm.import_dino_encoder(params, config, folder)

  return load


def make_task(config, dataset: datasets.DatasetInfo) -> loop.Task:
  """The LRM job for `loop.run`. `dataset` gives the shapes (`datasets.planned(config)` when
  only the shapes are needed: the iterator is made by `loop.run` alone)."""
  from data_pipeline import lrm_input
  from instant3d_jax.models import lrm as lrm_lib
  mcfg = lrm_lib.LRMConfig.from_config(config)
  spec = batch_spec(config, dataset)
  constants = None
  if float(config.loss.lpips_weight) > 0:
    from instant3d_jax.models import lpips as lpips_lib
    constants = {"lpips": lpips_lib.load_lpips()[1]}
  eval_fn = None
  if int(config.train.eval_every):
    datasets.check_eval(dataset, config, what="periodic evaluation (train.eval_every)")
    eval_fn = make_eval_fn(config, dataset)
  return loop.Task(
      init_params=lambda rng: lrm_lib.init_params(mcfg, rng),
      initial_params=pretrained_params_fn(config),
      loss_fn=make_loss_fn(config),
      make_iterator=lambda: _Batches(
          lrm_input.train_iterator(dataset.data_dir, datasets.loader_config(config, dataset)),
          spec.keys()),
      batch_spec=spec, flops_per_example=flops_per_example(config, dataset), constants=constants,
      eval_fn=eval_fn,
      image_fn=make_image_fn(config) if int(config.train.image_every) else None)


def train(config, workdir: str | os.PathLike, *, log=print) -> loop.RunResult:
  """Prepares the data set and runs the loop (the library entry point of `train_lrm`)."""
  dataset = prepare_data(config)
  return loop.run(config, workdir, make_task(config, dataset), log=log)
