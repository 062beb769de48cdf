"""Stage-1 training (text → 2×2 four-view grid) as a `loop.Task`: the components, batch shapes,
loss, FLOPs, the sample-grid hook, the SDXL-weights hook, and `train()` (the library entry point
of `python -m instant3d_jax.train_mvdiffusion`). The reconstructor's counterpart is lrm_task.py.

Components (`build_components(config)`, assembled by diffusion/components.py, which inference
shares; configs/mv_sdxl.py `model`): the SDXL UNet, an autoencoder, two CLIP text encoders and
their tokenizers, from SDXL weights or `model.random_init`. The trained parts (`model.train_parts`, UNet only by default) are the train state's params; every
other part is frozen and travels as a replicated constant of the step.

Batches the step takes (process-local rows, numpy; `batch_spec`):
  pixels form   grid uint8 [B, 2R, 2R, 3], input_ids int32 [B, L1], input_ids_2 int32 [B, L2]
                (the frozen autoencoder and text encoders run inside the step);
  cached form   latents float32 [B, h, w, C] (already (mean − shift) × scaling_factor),
                latents_std (the posterior's std × scaling_factor; only with
                `diffusion.latent_sample`), context float32 [B, L, D1 + D2], pooled float32
                [B, P]: the frozen-encoder cache of data_pipeline/latent_cache.py (`grid.cache_dir`;
                `make_task(..., cached=True)`).
The iterator adapter `CaptionBatches` turns the grid loader's {"grid", "caption", "object_id"}
batches (data_pipeline/mv_grids.py `make_grid_loader`, or any factory with that interface) into
the pixels form by tokenising the captions on the host; `CachedBatches` renames the cache
loader's keys (`make_latent_loader`: prompt_embeds → context, pooled_prompt_embeds → pooled).

Loss (diffusion/training.py): uniform timesteps, DDPM forward noising, ε (or v) target, MSE in
fp32, caption dropout zeroing context and pooled together, SDXL add_time_ids from the config.
The EMA of the trained weights is kept in the train state (`Task.ema_decay` = config `ema.decay`)
and the sample grids are drawn with it.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from instant3d_jax import errors
from instant3d_jax.diffusion import training
from instant3d_jax.diffusion.components import (TRAINABLE, Components, build_components,
                                                grid_size, sampling_pipeline)
from instant3d_jax.train import loop


# ----------------------------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------------------------
def latent_shape(config, comps: Components) -> tuple[int, int, int]:
  s = grid_size(config)
  f = comps.vae_scale_factor
  if s % f:
    raise errors.ConfigError(f"grid.view_resolution={config.grid.view_resolution}: the grid side "
                             f"{s} is not divisible by the autoencoder factor {f}")
  return (s // f, s // f, comps.unet.config.in_channels)


def batch_spec(config, comps: Components, cached: bool = False) -> dict:
  """Global batch shapes (module docstring: pixels or cached form)."""
  b = int(config.train.global_batch_size)
  s = grid_size(config)
  if cached:
    h, w, c = latent_shape(config, comps)
    l = comps.tokenizer.model_max_length
    d = comps.text_encoder.config.hidden_size + comps.text_encoder_2.config.hidden_size
    out = {"latents": jax.ShapeDtypeStruct((b, h, w, c), jnp.float32),
           "context": jax.ShapeDtypeStruct((b, l, d), jnp.float32),
           "pooled": jax.ShapeDtypeStruct((b, comps.text_encoder_2.config.projection_dim),
                                          jnp.float32)}
    if bool(config.diffusion.latent_sample):
      out["latents_std"] = jax.ShapeDtypeStruct((b, h, w, c), jnp.float32)
    return out
  return {"grid": jax.ShapeDtypeStruct((b, s, s, 3), jnp.uint8),
          "input_ids": jax.ShapeDtypeStruct((b, comps.tokenizer.model_max_length), jnp.int32),
          "input_ids_2": jax.ShapeDtypeStruct((b, comps.tokenizer_2.model_max_length),
                                              jnp.int32)}


def tokenize(comps: Components, captions) -> tuple[np.ndarray, np.ndarray]:
  """Both tokenizers, padded/truncated to their max length → two `[B, L] int32`."""
  out = []
  for tok in (comps.tokenizer, comps.tokenizer_2):
    ids = tok([str(c) for c in captions], padding="max_length", max_length=tok.model_max_length,
              truncation=True, return_tensors="np")["input_ids"]
    out.append(np.asarray(ids, np.int32))
  return out[0], out[1]


class CaptionBatches:
  """A grid-batch iterator ({"grid", "caption", "object_id"}) → the step's pixels form."""

  def __init__(self, it, comps: Components):
    self.it, self.comps = it, comps

  def __next__(self) -> dict:
    b = next(self.it)
    ids1, ids2 = tokenize(self.comps, np.asarray(b["caption"]).reshape(-1))
    grid = np.asarray(b["grid"])
    if grid.dtype != np.uint8 or grid.ndim != 4 or grid.shape[-1] != 3:
      raise errors.DataError(f"grid batch: expected uint8 [B, 2R, 2R, 3], found {grid.dtype} "
                             f"{grid.shape}")
    return {"grid": grid, "input_ids": ids1, "input_ids_2": ids2}

  def get_state(self):
    return self.it.get_state()

  def set_state(self, state):
    self.it.set_state(state)


class CachedBatches:
  """The cache loader's batches (data_pipeline/latent_cache.py `make_latent_loader`) → the cached
  form (`keys`: the names `batch_spec` asks for)."""
  RENAME = {"latents": "latents", "latents_std": "latents_std", "context": "prompt_embeds",
            "pooled": "pooled_prompt_embeds"}

  def __init__(self, it, keys):
    self.it, self.keys = it, tuple(keys)

  def __next__(self) -> dict:
    b = next(self.it)
    missing = [self.RENAME[k] for k in self.keys if self.RENAME[k] not in b]
    if missing:
      raise errors.DataError(f"latent cache batch lacks {missing} (has {sorted(b)}); "
                             "diffusion.latent_sample needs a cache read with_std=True")
    return {k: np.asarray(b[self.RENAME[k]], np.float32) for k in self.keys}

  def get_state(self):
    return self.it.get_state()

  def set_state(self, state):
    self.it.set_state(state)


# ----------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------
def encode_text(comps: Components, p1, p2, ids1, ids2) -> tuple[jax.Array, jax.Array]:
  """SDXL conditioning: penultimate hidden states of both encoders concatenated `[B, L, D1+D2]`
  and encoder 2's projected pooled EOS state `[B, P]` (as diffusion/sampling.py encodes)."""
  o1 = comps.text_encoder.apply({"params": p1}, ids1)
  o2 = comps.text_encoder_2.apply({"params": p2}, ids2)
  ctx = jnp.concatenate([o1.hidden_states[-2].astype(jnp.float32),
                         o2.hidden_states[-2].astype(jnp.float32)], axis=-1)
  return ctx, o2.text_embeds.astype(jnp.float32)


def make_loss_fn(config, comps: Components):
  """`loss_fn(params, batch, rng, step, constants)`; constants: {"frozen": frozen params,
  "alphas_cumprod": [T] float32}."""
  dc = config.diffusion
  prediction_type = str(dc.prediction_type)
  p_drop = float(dc.caption_dropout)
  sample_posterior = bool(dc.latent_sample)
  ae_cfg = comps.vae.config
  n_train = int(comps.scheduler_config.num_train_timesteps)
  s = grid_size(config)

  def loss_fn(params, batch, rng, step, constants):
    del step
    p = dict(constants["frozen"], **params)
    k_lat, k_draw = jax.random.split(rng)
    if "latents" in batch:
      x0 = batch["latents"].astype(jnp.float32)
      if sample_posterior and "latents_std" in batch:
        x0 = x0 + batch["latents_std"] * jax.random.normal(k_lat, x0.shape)
    else:
      pixels = training.pixels_to_model_range(batch["grid"])
      mean, logvar = comps.vae.apply({"params": p["vae"]}, pixels, method="encode")
      x0 = jax.lax.stop_gradient(training.latents_from_posterior(
          mean, logvar, k_lat if sample_posterior else None, ae_cfg.scaling_factor,
          ae_cfg.shift_factor))
    if "context" in batch:
      ctx, pooled = batch["context"], batch["pooled"]
    else:
      ctx, pooled = encode_text(comps, p["text_encoder"], p["text_encoder_2"],
                                batch["input_ids"], batch["input_ids_2"])
    b = x0.shape[0]
    time_ids = jnp.asarray(training.add_time_ids(b, s, s, tuple(dc.original_size),
                                                 tuple(dc.crops_coords_top_left),
                                                 tuple(dc.target_size)))
    draws = training.draw(k_draw, x0.shape, n_train, p_drop)
    denoise = lambda x, t, c, pl, ti: comps.unet.apply({"params": p["unet"]}, x, t, c, pl, ti)
    return training.diffusion_loss(denoise, x0, ctx, pooled, time_ids, draws,
                                   constants["alphas_cumprod"], prediction_type,
                                   float(dc.snr_gamma or 0.0))

  return loss_fn


def constants_for(comps: Components) -> dict:
  return {"frozen": comps.frozen,
          "alphas_cumprod": training.train_alphas_cumprod(comps.scheduler_config)}


def make_init_params(config, comps: Components) -> Callable[[jax.Array], Any]:
  """`rng -> boxed params` of the trained components (their modules' own initialisers)."""
  h, w, c = latent_shape(config, comps)
  ucfg = comps.unet.config
  te1, te2 = comps.text_encoder, comps.text_encoder_2
  ctx_dim = te1.config.hidden_size + te2.config.hidden_size
  if ucfg.cross_attention_dim != ctx_dim:
    raise errors.ConfigError(f"UNet cross_attention_dim {ucfg.cross_attention_dim} differs from "
                             f"the text context width {te1.config.hidden_size} + "
                             f"{te2.config.hidden_size}")

  def init(rng):
    out = {}
    keys = dict(zip(TRAINABLE, jax.random.split(rng, len(TRAINABLE))))
    if "unet" in comps.train_parts:
      f = 2 ** (len(ucfg.block_out_channels) - 1)
      x = jnp.zeros((1, f, f, c), jnp.float32)
      ctx = jnp.zeros((1, 1, ctx_dim), jnp.float32)
      pooled = jnp.zeros((1, te2.config.projection_dim), jnp.float32)
      ids = jnp.zeros((1, 6), jnp.float32)
      out["unet"] = comps.unet.init(keys["unet"], x, jnp.zeros((1,)), ctx, pooled, ids)["params"]
    for name, te in (("text_encoder", te1), ("text_encoder_2", te2)):
      if name in comps.train_parts:
        tok = jnp.zeros((1, te.config.max_position_embeddings), jnp.int32)
        out[name] = te.init(keys[name], tok)["params"]
    return out

  return init


def flops_per_example(config, comps: Components, cached: bool = False) -> float | None:
  """3 × the XLA-counted FLOPs of one example's UNet forward (plus the frozen encoders' forward
  in the pixels form, counted once), from the lowered HLO (nothing compiled); None if XLA gives
  no count."""
  h, w, c = latent_shape(config, comps)
  te1, te2 = comps.text_encoder, comps.text_encoder_2
  ctx = jax.ShapeDtypeStruct((1, comps.tokenizer.model_max_length,
                              te1.config.hidden_size + te2.config.hidden_size), jnp.float32)

  def unet_fwd(p, x, t, cx, pl, ti):
    return comps.unet.apply({"params": p}, x, t, cx, pl, ti)

  from instant3d_jax.convert import diffusers_sdxl
  try:
    abstract = diffusers_sdxl.unet_abstract_params(comps.unet.config)
    cost = jax.jit(unet_fwd).lower(
        abstract, jax.ShapeDtypeStruct((1, h, w, c), jnp.float32),
        jax.ShapeDtypeStruct((1,), jnp.float32), ctx,
        jax.ShapeDtypeStruct((1, te2.config.projection_dim), jnp.float32),
        jax.ShapeDtypeStruct((1, 6), jnp.float32)).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", 0.0))
  except Exception:  # noqa: BLE001 — a backend without cost analysis: no MFU, not an error
    return None
  return 3.0 * flops if flops > 0 else None


# ----------------------------------------------------------------------------------------------
# Sample grids (EMA weights, the jitted sampler)
# ----------------------------------------------------------------------------------------------
def sample_grids(config, comps: Components, trained_params, captions=None) -> np.ndarray:
  """`[len(captions) · per_caption, 2R, 2R, 3]` float32 grids sampled with `config.sample`."""
  from instant3d_jax.diffusion import sampling
  sc, dc = config.sample, config.diffusion
  captions = list(sc.captions if captions is None else captions)
  prompts = [c for c in captions for _ in range(int(sc.per_caption))]
  s = grid_size(config)
  settings = sampling.settings_from_config(sc, height=s, width=s, micro=dc)
  out = sampling.generate_views(sampling_pipeline(comps, trained_params), prompts,
                                jax.random.PRNGKey(int(sc.seed)), settings)
  return out.grid


def make_image_fn(config, comps: Components, workdir: str | os.PathLike | None = None):
  """`(ema params, batch, step) -> image`: the sample grids of `config.sample.captions`, one row
  per caption (`per_caption` grids side by side). With `workdir`, the first call writes the
  captions of the rows to `workdir/images/sample_captions.txt`."""
  from instant3d_jax.export import images as images_lib
  written = []

  def image_fn(params, batch, step):
    del batch, step
    if workdir is not None and not written:
      from instant3d_jax import fileio
      fileio.write_text(fileio.path(workdir) / "images" / "sample_captions.txt", "".join(
          f"row {i}: {c}\n" for i, c in enumerate(config.sample.captions)))
      written.append(True)
    grids = sample_grids(config, comps, params)
    return images_lib.make_grid(grids, ncols=int(config.sample.per_caption))

  return image_fn


# ----------------------------------------------------------------------------------------------
# Task assembly
# ----------------------------------------------------------------------------------------------
def cache_loader_factory(config, comps: Components) -> Callable[[], Any]:
  """`() -> iterator` of the frozen-encoder cache in `config.grid.cache_dir` (data_pipeline/
  latent_cache.py), in the cached form, with the grid loader's order and selection settings."""
  from data_pipeline import captions as captions_lib
  from data_pipeline import latent_cache
  g = config.grid
  trained_text = [p for p in comps.train_parts if p.startswith("text_encoder")]
  if trained_text:
    raise errors.ConfigError(
        f"grid.cache_dir {str(g.cache_dir)!r} holds the embeddings of frozen text encoders, but "
        f"model.train_parts trains {trained_text}: set --config.model.train_parts=\"('unet',)\" "
        "or train from the grids (grid.cache_dir='')")
  heldout = str(g.heldout or "")
  split_part = (captions_lib.caption_split(heldout, seed=int(g.heldout_seed),
                                           num_heldout=int(g.num_heldout)) if heldout else None)
  keys = batch_spec(config, comps, cached=True).keys()

  def make():
    return CachedBatches(latent_cache.make_latent_loader(
        str(g.cache_dir), str(g.split), batch_size=int(config.train.global_batch_size),
        seed=int(g.seed), shuffle=True, object_list=str(g.object_list) or None,
        heldout=split_part, worker_count=int(g.worker_count),
        with_std=bool(config.diffusion.latent_sample), read_threads=int(g.read_threads),
        prefetch_batches=int(g.prefetch_batches)), keys)

  return make


def grid_loader_factory(config, data_dir: str) -> Callable[[], Any]:
  """`() -> iterator` of the grid loader (data_pipeline/mv_grids.py) for `config.grid`."""
  from data_pipeline import captions as captions_lib
  from data_pipeline import mv_grids
  g = config.grid
  heldout = str(g.heldout or "")
  split_part = (captions_lib.caption_split(heldout, seed=int(g.heldout_seed),
                                           num_heldout=int(g.num_heldout)) if heldout else None)

  def make():
    return mv_grids.make_grid_loader(
        data_dir, str(g.split), batch_size=int(config.train.global_batch_size),
        seed=int(g.seed), shuffle=True, object_list=str(g.object_list) or None,
        heldout=split_part, worker_count=int(g.worker_count),
        resolution=int(g.view_resolution), read_threads=int(g.read_threads),
        prefetch_batches=int(g.prefetch_batches))

  return make


def make_task(config, comps: Components | None = None,
              make_iterator: Callable[[], Any] | None = None, *, cached: bool = False,
              with_flops: bool = True, workdir: str | os.PathLike | None = None) -> loop.Task:
  """The stage-1 job for `loop.run`. `make_iterator`: `() -> iterator` of grid batches
  ({"grid", "caption", "object_id"}, with get_state/set_state), wrapped by `CaptionBatches`; or,
  with `cached=True`, already in the cached form. None: only shapes are needed (AOT compile)."""
  comps = build_components(config) if comps is None else comps
  if make_iterator is None:
    def make_iterator():
      raise errors.ConfigError("mv_task.make_task: no data iterator factory given")
    factory = make_iterator
  elif cached:
    factory = make_iterator
  else:
    factory = lambda: CaptionBatches(make_iterator(), comps)
  start = comps.pretrained
  initial = None
  if start is not None:
    def initial(params):
      return {k: start[k] for k in params}
  image_every = int(config.train.image_every or 0)
  return loop.Task(
      init_params=make_init_params(config, comps),
      initial_params=initial,
      loss_fn=make_loss_fn(config, comps),
      make_iterator=factory,
      batch_spec=batch_spec(config, comps, cached),
      flops_per_example=flops_per_example(config, comps, cached) if with_flops else None,
      constants=constants_for(comps),
      image_fn=make_image_fn(config, comps, workdir) if image_every else None,
      ema_decay=float(config.ema.decay),
      image_name="samples/ema_grids")


def train(config, workdir: str | os.PathLike, *, make_iterator=None, log=print
          ) -> loop.RunResult:
  """Builds the components, opens the data (the frozen-encoder cache of `grid.cache_dir` when
  set; else the grid loader on `config.data_dir`, generating the procedural world first when
  `data.source` is 'procedural'), and runs the loop."""
  comps = build_components(config)
  if make_iterator is None and str(config.grid.cache_dir or ""):
    return loop.run(config, workdir, make_task(config, comps, cache_loader_factory(config, comps),
                                               cached=True, workdir=workdir), log=log)
  if make_iterator is None:
    from data_pipeline import datasets
    info = datasets.prepare(config, progress=jax.process_index() == 0)
    make_iterator = grid_loader_factory(config, info.data_dir)
  return loop.run(config, workdir, make_task(config, comps, make_iterator, workdir=workdir),
                  log=log)
