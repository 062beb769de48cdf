"""Text → 2×2 four-view grid with SDXL: classifier-free guidance, micro-conditioning, a
Gaussian-blob start, the whole denoising loop in one `lax.scan`.

Stages (each one jitted function with the modules static, so pipelines of equal configs share
the compiled code; compiled once per shape):
1. host: tokenise the prompts with both CLIP tokenizers (padded to `model_max_length`);
2. `encode`: CLIP-L and OpenCLIP-bigG → context `[B, 77, 768 + 1280]` (penultimate hidden states
   concatenated) and pooled `[B, 1280]` (bigG's projected EOS state);
3. `denoise`: `lax.scan` over the steps; each step runs the UNet once on the concatenated
   [unconditional; conditional] batch (2B) and mixes ε = ε_u + g (ε_c − ε_u);
4. `decode`: latents / scaling_factor → VAE decoder → grid in [0, 1].

On a mesh (`Placement`: mesh + logical axis rules, docs/design.md §3) the prompts go on the
logical `batch` axis and every component's params where their logical names map (FSDP under
configs/sdxl.py's rules); without rules the params are replicated and the batch split over
`data`.

The unconditional branch uses zero embeddings (SDXL's `force_zeros_for_empty_prompt`) unless a
negative prompt is given. Views come out in rig order: top-left az 0°, top-right 90°,
bottom-left 180°, bottom-right 270° (`split_grid`/`make_grid`).
"""
from __future__ import annotations

from instant3d_jax import errors

import contextlib
import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from instant3d_jax.base import sharding as shard_lib
from instant3d_jax.convert.sdxl_pipeline import COMPONENTS, Pipeline  # the SDXL container
from instant3d_jax.diffusion import blob as blob_lib
from instant3d_jax.diffusion import schedulers
from instant3d_jax.models.clip import CLIPTextModel
from instant3d_jax.models.unet import UNet2DConditionModel
from instant3d_jax.models.vae import AutoencoderKL, decode_chunked

INIT_MODES = ("blob", "noise")


# ----------------------------------------------------------------------------------------------
# Settings of a sampling call
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SamplerSettings:
  """What a sampling call runs with (`generate_views`, `sample_latents`): the one typed form of a
  config's sampler section, resolved by `settings_from_config` and checked by `check`.

  `init="blob"` starts from the Gaussian-blob grid (`blob`, its knobs, incl. `init_strength`)
  noised to step `blob.start_step(num_steps, blob.init_strength)`; `init="noise"` from pure
  noise. `negative_prompt`: None = zero unconditional embeddings (SDXL's
  `force_zeros_for_empty_prompt`), else one string or one per prompt. `height`/`width`: the grid
  (each view half of each). `original_size`, `crops_coords_top_left`, `target_size`: SDXL's
  micro-conditioning (None: the grid size).
  """
  num_steps: int = 100
  guidance_scale: float = 5.0
  scheduler: str = "ddim"
  init: str = "blob"
  eta: float = 0.0
  height: int = 1024
  width: int = 1024
  negative_prompt: str | Sequence[str] | None = None
  blob: blob_lib.BlobConfig = blob_lib.BlobConfig()
  original_size: tuple[int, int] | None = None
  crops_coords_top_left: tuple[int, int] = (0, 0)
  target_size: tuple[int, int] | None = None

  def check(self, names: dict[str, str] | None = None) -> "SamplerSettings":
    """Returns self; raises `ConfigError` for a scheduler or init mode that does not exist, a
    step count < 1, or a blob start that runs no step, naming the field as `names[field]`
    (e.g. the flag or config key a user set it with; default `sampler.<field>`)."""
    name = lambda field: (names or {}).get(field, f"sampler.{field}")
    if self.scheduler not in schedulers.SCHEDULERS:
      raise errors.ConfigError(f"{name('scheduler')} must be one of {schedulers.SCHEDULERS}, got "
                               f"{self.scheduler!r}")
    if self.init not in INIT_MODES:
      raise errors.ConfigError(f"{name('init')} must be one of {INIT_MODES}, got {self.init!r}")
    if self.num_steps < 1:
      raise errors.ConfigError(f"{name('num_steps')} must be >= 1, got {self.num_steps}")
    if self.init == "blob":
      blob_lib.start_step(self.num_steps, self.blob.init_strength)
    return self


def settings_from_config(sample, *, height: int, width: int, blob=None, micro=None
                         ) -> SamplerSettings:
  """The `SamplerSettings` of a config's sampler section `sample` (configs/sdxl.py `sampler`,
  configs/instant3d.py `stage1.sample`, configs/mv_sdxl.py `sample`): its `num_steps`,
  `guidance_scale`, `scheduler`, `init`, and `eta` / `negative_prompt` where the section has
  them (else 0 and none; '' = none). `blob`: the config's blob section (None: `BlobConfig()`);
  `micro`: the section holding the micro-conditioning (`original_size`,
  `crops_coords_top_left`, `target_size`; (0, 0) = the grid size; default `sample`). Not
  checked: callers `check` after applying their overrides."""
  micro = sample if micro is None else micro
  size = lambda v: tuple(int(x) for x in v) if any(v) else None
  b = blob_lib.BlobConfig() if blob is None else blob_lib.BlobConfig(
      std=blob.std, value=blob.value, background=blob.background,
      init_strength=blob.init_strength)
  return SamplerSettings(
      num_steps=int(sample.num_steps), guidance_scale=float(sample.guidance_scale),
      scheduler=str(sample.scheduler), init=str(sample.init),
      eta=float(sample.get("eta", 0.0)), height=int(height), width=int(width),
      negative_prompt=str(sample.get("negative_prompt", "") or "") or None, blob=b,
      original_size=size(micro.original_size),
      crops_coords_top_left=tuple(int(x) for x in micro.crops_coords_top_left),
      target_size=size(micro.target_size))


# ----------------------------------------------------------------------------------------------
# Grid ↔ views (rig order)
# ----------------------------------------------------------------------------------------------
def split_grid(grid: jax.Array) -> jax.Array:
  """`grid [..., H, W, C]` → `views [..., 4, H/2, W/2, C]` in rig order TL, TR, BL, BR
  (azimuth 0°, 90°, 180°, 270°). Works on numpy and jax arrays."""
  *lead, h, w, c = grid.shape
  if h % 2 or w % 2:
    raise ValueError(f"grid height and width must be even, got {h}×{w}")
  x = grid.reshape(*lead, 2, h // 2, 2, w // 2, c)
  nl = len(lead)
  perm = tuple(range(nl)) + (nl, nl + 2, nl + 1, nl + 3, nl + 4)
  return x.transpose(perm).reshape(*lead, 4, h // 2, w // 2, c)


def make_grid(views: jax.Array) -> jax.Array:
  """Inverse of `split_grid`: `views [..., 4, h, w, C]` (rig order) → `grid [..., 2h, 2w, C]`
  (no padding, unlike `export.images.make_grid`, so it round-trips exactly)."""
  *lead, v, h, w, c = views.shape
  if v != 4:
    raise ValueError(f"make_grid expects 4 views on axis -4, got {v}")
  x = views.reshape(*lead, 2, 2, h, w, c)
  nl = len(lead)
  perm = tuple(range(nl)) + (nl, nl + 2, nl + 1, nl + 3, nl + 4)
  return x.transpose(perm).reshape(*lead, 2 * h, 2 * w, c)


class GeneratedViews(NamedTuple):
  grid: np.ndarray  # [B, H, W, 3] float32 in [0, 1]
  views: np.ndarray  # [B, 4, H/2, W/2, 3] rig order (az 0, 90, 180, 270)


# ----------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------
def tokenize(pipeline: Pipeline, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """Both tokenizers, padded/truncated to their `model_max_length` → two `[B, L] int32`."""
  out = []
  for tok in (pipeline.tokenizer, pipeline.tokenizer_2):
    ids = tok(list(prompts), padding="max_length", max_length=tok.model_max_length,
              truncation=True, return_tensors="np")["input_ids"]
    out.append(np.asarray(ids, np.int32))
  return out[0], out[1]


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _encode(te1: CLIPTextModel, te2: CLIPTextModel, rules, p1, p2, ids1, ids2):
  with nn.logical_axis_rules(rules):
    o1 = te1.apply({"params": p1}, ids1)
    o2 = te2.apply({"params": p2}, ids2)
  # SDXL conditions on the penultimate layers (before the final layer norm) of both encoders.
  ctx = jnp.concatenate([o1.hidden_states[-2].astype(jnp.float32),
                         o2.hidden_states[-2].astype(jnp.float32)], axis=-1)
  return ctx, o2.text_embeds.astype(jnp.float32)


def encode_prompts(pipeline: Pipeline, prompts: Sequence[str], params=None,
                   placement: "Placement | None" = None) -> tuple[jax.Array, jax.Array]:
  """Prompts → (context `[B, L, D1 + D2]`, pooled `[B, P]`), float32. `params`: the pipeline's
  (or a sharded copy, `shard_params`); `placement`: the token ids go on its batch sharding."""
  params = pipeline.params if params is None else params
  ids1, ids2 = tokenize(pipeline, prompts)
  rules = ()
  if placement is not None:
    ids1, ids2, rules = placement.batch(ids1), placement.batch(ids2), placement.rules
  return _encode(pipeline.text_encoder, pipeline.text_encoder_2, rules,
                 params["text_encoder"], params["text_encoder_2"], ids1, ids2)


def micro_conditioning(batch: int, height: int, width: int, original_size=None,
                       crops_coords_top_left=(0, 0), target_size=None) -> np.ndarray:
  """SDXL `add_time_ids` `[B, 6]`: (original h, w, crop top, crop left, target h, w)."""
  original = tuple(original_size or (height, width))
  target = tuple(target_size or (height, width))
  ids = np.array(original + tuple(crops_coords_top_left) + target, np.float32)
  if ids.shape != (6,):
    raise errors.ConfigError(f"micro-conditioning needs 2 + 2 + 2 numbers, got original_size={original}, "
                     f"crops_coords_top_left={crops_coords_top_left}, target_size={target}")
  return np.tile(ids, (batch, 1))


def _needs_noise(schedule: schedulers.Schedule) -> bool:
  return schedule.kind == "euler_ancestral" or (schedule.kind == "ddim" and schedule.eta > 0)


# The host callback of the compiled loop reads the current hook here at run time, so the loop is
# compiled once whatever callable (e.g. a new progress bar) a call passes.
_progress_hook: list = [None]


def _report(i):
  hook = _progress_hook[0]
  if hook is not None:
    hook(int(i))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _denoise(unet: UNet2DConditionModel, with_progress: bool, rules, unet_params, latents, ctx,
             pooled, time_ids, schedule, keys, guidance_scale):
  """latents/keys `[B, ...]`; ctx/pooled/time_ids `[B, 2, ...]` = (uncond, cond) per sample.

  The CFG pair of a sample stays adjacent in the 2B model batch (interleaved), so with the
  batch sharded over `data` each device runs both halves of its own samples."""
  b = latents.shape[0]
  flat = lambda a: a.reshape((2 * b,) + a.shape[2:])
  ctx, pooled, time_ids = flat(ctx), flat(pooled), flat(time_ids)

  def body(carry, i):
    x, state = carry
    xin = schedulers.scale_model_input(schedule, i, x)
    t = jnp.full((2 * b,), schedule.timesteps[i])
    x2 = flat(jnp.stack([xin, xin], axis=1))
    with nn.logical_axis_rules(rules):
      out = unet.apply({"params": unet_params}, x2, t, ctx, pooled, time_ids)
    out = out.astype(jnp.float32).reshape((b, 2) + out.shape[1:])
    uncond, cond = out[:, 0], out[:, 1]
    guided = uncond + guidance_scale * (cond - uncond)
    noise = None
    if _needs_noise(schedule):
      # Per-sample keys: a prompt's result does not depend on its batch-mates or the mesh.
      noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, i), x.shape[1:]))(keys)
    x, state, _ = schedulers.step(schedule, state, i, guided, x, noise)
    if with_progress:
      jax.debug.callback(_report, i)
    return (x, state), None

  (x, _), _ = jax.lax.scan(body, (latents, schedulers.init_state(latents)),
                           jnp.arange(schedule.num_steps))
  return x


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _decode(vae: AutoencoderKL, chunk: int | None, tiled: bool, rules, vae_params, latents):
  cfg = vae.config
  z = latents / cfg.scaling_factor + (cfg.shift_factor or 0.0)
  with nn.logical_axis_rules(rules):
    x = decode_chunked(vae, vae_params, z, batch_chunk=chunk, tiled=tiled)
  return jnp.clip(x.astype(jnp.float32) / 2 + 0.5, 0.0, 1.0)


@functools.partial(jax.jit, static_argnums=0)
def _vae_mean(vae: AutoencoderKL, vae_params, x):
  return vae.apply({"params": vae_params}, x, method="encode")[0]


def blob_latent(pipeline: Pipeline, height: int, width: int, cfg: blob_lib.BlobConfig
                ) -> jax.Array:
  """The clean blob grid encoded by the VAE: `[1, H/f, W/f, C]` (scaled like UNet latents);
  cached on the pipeline per size and blob look."""
  key = ("blob", height, width, cfg.std, cfg.value, cfg.background)
  if key not in pipeline._cache:
    vae = pipeline.vae
    pipeline._cache[key] = blob_lib.encode_image(
        lambda x: _vae_mean(vae, pipeline.params["vae"], x), blob_lib.blob_image(height, width, cfg),
        vae.config.scaling_factor, vae.config.shift_factor)
  return pipeline._cache[key]


def initial_noise(key: jax.Array, first: int, count: int, latent_shape) -> tuple[jax.Array,
                                                                               jax.Array]:
  """Start noise `[count, *latent_shape]` of samples first..first+count-1 and their keys for
  the per-step noise of stochastic samplers."""
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(first + jnp.arange(count))
  noise = jax.vmap(lambda k: jax.random.normal(k, tuple(latent_shape)))(keys)
  step_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1_000_003))(keys)
  return noise, step_keys


# ----------------------------------------------------------------------------------------------
# Placement on a mesh
# ----------------------------------------------------------------------------------------------
DEFAULT_RULES: shard_lib.LogicalRules = (("batch", "data"),)  # prompts over `data`, rest replicated


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where sampling runs: a `('data', 'fsdp', 'tensor')` mesh and the logical axis rules
  (docs/design.md §3, Sharding). Prompts go on the logical `batch` axis, parameters on what
  their logical names map to (configs/sdxl.py `logical_axis_rules`: FSDP over `fsdp`)."""
  mesh: Mesh
  rules: shard_lib.LogicalRules = DEFAULT_RULES

  @property
  def batch_shards(self) -> int:
    """How many ways the batch is split (the prompt batch is padded to a multiple of it)."""
    return shard_lib.num_batch_shards(self.mesh, self.rules)

  def batch(self, x):
    """`x [B, ...]` placed with its leading axis on the logical `batch` axis."""
    x = jnp.asarray(x) if not isinstance(x, jax.Array) else x
    return jax.device_put(x, shard_lib.batch_sharding(self.mesh, self.rules, x.ndim))


def param_shardings(pipeline: Pipeline, placement: Placement) -> dict[str, Any]:
  """`NamedSharding` trees of every component's params, derived from the modules' logical axis
  names (`jax.eval_shape` + `nn.get_partition_spec` + `nn.logical_to_mesh_sharding`, via
  `base.sharding.derive_shardings`); nothing written by hand."""
  from instant3d_jax.convert import clip as cclip
  from instant3d_jax.convert import diffusers_sdxl
  boxed = {
      "unet": lambda: diffusers_sdxl.unet_abstract_params(pipeline.unet.config, boxed=True),
      "vae": lambda: diffusers_sdxl.vae_abstract_params(pipeline.vae.config, boxed=True),
      "text_encoder": lambda: cclip.text_param_shapes(pipeline.text_encoder.config, boxed=True),
      "text_encoder_2": lambda: cclip.text_param_shapes(pipeline.text_encoder_2.config,
                                                        boxed=True),
  }
  out = {}
  for comp, init in boxed.items():
    if comp == "vae" and not jax.tree.leaves(pipeline.params["vae"]):
      out[comp] = {}  # a parameter-free autoencoder (models/pixel_ae.py: stage-1 `tiny`)
      continue
    abstract, shardings = shard_lib.derive_shardings(init, mesh=placement.mesh,
                                                     rules=placement.rules)
    out[comp] = jax.tree.map(lambda a, sh: shard_lib.fit_sharding(sh, a.shape), abstract,
                             shardings)
  return out


def shard_params(pipeline: Pipeline, placement: Placement) -> dict[str, Any]:
  """The pipeline's params placed as `param_shardings` says (a no-op for params already there,
  e.g. after `shard_pipeline`)."""
  shardings = param_shardings(pipeline, placement)

  def put(x, sh):
    if isinstance(x, jax.Array) and x.sharding == sh:
      return x
    # Through the host: a device-to-device reshard compiles one program per shape.
    return jax.device_put(np.asarray(x), sh)

  return {c: jax.tree.map(put, pipeline.params[c], shardings[c]) for c in COMPONENTS}


def shard_pipeline(pipeline: Pipeline, placement: Placement) -> Pipeline:
  """The pipeline with its params moved onto the mesh once (FSDP-sharded under the config's
  rules), so that each `generate_views` call finds them in place."""
  return dataclasses.replace(pipeline, params=shard_params(pipeline, placement), _cache={})


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------
def _placement(mesh: Mesh | None, logical_axis_rules) -> Placement | None:
  if mesh is None:
    if logical_axis_rules is not None:
      raise errors.ConfigError("generate_views: logical_axis_rules given without a mesh")
    return None
  if logical_axis_rules is None:
    return Placement(mesh)
  return Placement(mesh, shard_lib.logical_rules(logical_axis_rules))


class _Sampled(NamedTuple):
  latents: jax.Array  # [padded B, h, w, C], on the placement's batch sharding
  params: dict[str, Any]  # the params used (sharded copies on a mesh)
  placement: Placement | None
  batch: int  # real prompts (the rest is padding)


def _sample(pipeline: Pipeline, prompts: str | Sequence[str], key: jax.Array,
            settings: SamplerSettings, *, mesh: Mesh | None = None, logical_axis_rules=None,
            first_sample_index: int = 0, progress: Callable[[int], None] | None = None
            ) -> _Sampled:
  """The denoising half of `generate_views` (same arguments; see there)."""
  st = settings
  num_steps, guidance_scale, scheduler, init = (st.num_steps, st.guidance_scale, st.scheduler,
                                                st.init)
  height, width, negative_prompt, eta = st.height, st.width, st.negative_prompt, st.eta
  prompts = [prompts] if isinstance(prompts, str) else list(prompts)
  if not prompts:
    raise errors.ConfigError("generate_views: prompts is empty; expected at least one prompt")
  st.check({k: f"generate_views: {k}" for k in ("scheduler", "init", "num_steps")})
  f = pipeline.vae_scale_factor
  if height % (2 * f) or width % (2 * f):
    raise ValueError(f"generate_views: height and width must be multiples of {2 * f} (2 views × "
                     f"VAE factor {f}), got {height}×{width}")
  b = len(prompts)
  if isinstance(negative_prompt, str):
    negative_prompt = [negative_prompt] * b
  if negative_prompt is not None and len(negative_prompt) != b:
    raise errors.ConfigError(f"generate_views: {len(negative_prompt)} negative prompts for {b} prompts")
  placement = _placement(mesh, logical_axis_rules)
  rules = placement.rules if placement is not None else ()

  # Pad the batch to a multiple of the ways the mesh splits it (data × fsdp under the config's
  # rules); the padding rows are dropped at the end.
  n_shards = placement.batch_shards if placement is not None else 1
  padded = -(-b // n_shards) * n_shards
  prompts_p = prompts + [prompts[-1]] * (padded - b)
  neg_p = None if negative_prompt is None else (list(negative_prompt)
                                                + [negative_prompt[-1]] * (padded - b))
  params = pipeline.params if placement is None else shard_params(pipeline, placement)

  # Text conditioning: cond half, then the unconditional half (zeros unless a negative prompt).
  ctx, pooled = encode_prompts(pipeline, prompts_p, params, placement)
  if neg_p is None and pipeline.force_zeros_for_empty_prompt:
    ctx_u, pooled_u = jnp.zeros_like(ctx), jnp.zeros_like(pooled)
  else:
    ctx_u, pooled_u = encode_prompts(pipeline, neg_p if neg_p is not None else [""] * padded,
                                     params, placement)
  time_ids = micro_conditioning(padded, height, width, st.original_size,
                                st.crops_coords_top_left, st.target_size)
  ctx2 = jnp.stack([ctx_u, ctx], axis=1)  # [B, 2, L, D]: (uncond, cond) per sample
  pooled2 = jnp.stack([pooled_u, pooled], axis=1)
  time_ids2 = jnp.asarray(np.stack([time_ids, time_ids], axis=1))

  # Schedule and start latents.
  sched = schedulers.make_schedule(scheduler, pipeline.scheduler_config, num_steps, eta=eta)
  lat_shape = (height // f, width // f, pipeline.unet.config.in_channels)
  noise, noise_keys = initial_noise(key, first_sample_index, padded, lat_shape)
  if init == "blob":
    bcfg = st.blob
    sched = sched.start_at(blob_lib.start_step(num_steps, bcfg.init_strength))
    latents = blob_lib.start_latents(blob_latent(pipeline, height, width, bcfg), sched, noise)
  else:
    latents = noise * sched.init_noise_sigma

  if placement is not None:
    latents, noise_keys = placement.batch(latents), placement.batch(noise_keys)
    ctx2, pooled2, time_ids2 = (placement.batch(ctx2), placement.batch(pooled2),
                                placement.batch(time_ids2))

  _progress_hook[0] = progress
  try:
    with (jax.set_mesh(placement.mesh) if placement is not None
          else contextlib.nullcontext()):
      latents = _denoise(pipeline.unet, progress is not None, rules, params["unet"], latents,
                         ctx2, pooled2, time_ids2, sched, noise_keys,
                         jnp.float32(guidance_scale))
    latents.block_until_ready()
  finally:
    _progress_hook[0] = None
  return _Sampled(latents, params, placement, b)


def sample_latents(pipeline: Pipeline, prompts: str | Sequence[str], key: jax.Array,
                   settings: SamplerSettings = SamplerSettings(), *, mesh: Mesh | None = None,
                   logical_axis_rules=None, first_sample_index: int = 0,
                   progress: Callable[[int], None] | None = None) -> jax.Array:
  """The denoised latents `[B, H/f, W/f, C]` of `generate_views` (same arguments), before the
  VAE decoder."""
  out = _sample(pipeline, prompts, key, settings, mesh=mesh,
                logical_axis_rules=logical_axis_rules, first_sample_index=first_sample_index,
                progress=progress)
  return out.latents[:out.batch]


def generate_views(pipeline: Pipeline, prompts: str | Sequence[str], key: jax.Array,
                   settings: SamplerSettings = SamplerSettings(), *, mesh: Mesh | None = None,
                   logical_axis_rules=None, first_sample_index: int = 0,
                   progress: Callable[[int], None] | None = None) -> GeneratedViews:
  """Samples one 2×2 four-view grid per prompt with `settings` (`SamplerSettings`).

  `key`: a PRNG key; sample b uses `fold_in(key, first_sample_index + b)`, so a prompt's grid
  does not depend on its batch-mates or on how a long prompt list is cut into batches.
  `mesh`: prompts are sharded over the mesh; without `logical_axis_rules` over its `data` axis
  with the params replicated; with them (configs/sdxl.py) the batch goes where `batch` maps
  (data × fsdp) and every component's params where their logical names map (FSDP over
  `fsdp`); the batch is padded to a multiple of the split. `progress(i)` is called after step i.
  Returns `GeneratedViews(grid [B, H, W, 3], views [B, 4, H/2, W/2, 3])`, float32 in [0, 1].
  """
  latents, params, placement, b = _sample(pipeline, prompts, key, settings, mesh=mesh,
                                          logical_axis_rules=logical_axis_rules,
                                          first_sample_index=first_sample_index,
                                          progress=progress)
  # The decoder runs in batch chunks (`vae_decode_chunk` grids, default 1) smaller than the
  # batch split, so no activation rules there: a chunk's batch cannot be sharded over
  # data × fsdp, and XLA places the chunks from the sharded input instead.
  with (jax.set_mesh(placement.mesh) if placement is not None else contextlib.nullcontext()):
    grid = _decode(pipeline.vae, pipeline.vae_decode_chunk, pipeline.vae_tiled, (),
                   params["vae"], latents)
  grid = np.asarray(grid)[:b]
  return GeneratedViews(grid=grid, views=np.asarray(split_grid(grid)))
