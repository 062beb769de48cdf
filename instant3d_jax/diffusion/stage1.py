"""Stage 1 as a library: prompts → SDXL 2×2 four-view grids written to a folder (what the
`text_to_views` command runs; the text-to-3D pipeline and the latent cache reuse its loading and
placement), and the SDXL frozen encoders of the latent cache (`sdxl_encoders`, the default
`--encoders` of `python -m data_pipeline.mv_cache`).

  pipeline = load_pipeline(cfg, "/path/to/sdxl_folder")
  out = sample_to_folder(cfg, pipeline, ["a wooden chair"], "outputs/views", weights=...)

Output (OUT/): `NNNN_grid.png` (the grid), `NNNN_view{0..3}_az{0,90,180,270}.png` (rig order:
top-left az 0°, top-right 90°, bottom-left 180°, bottom-right 270°; docs/design.md §3), and
`run.json` (config, weights, prompts per sample, seed, package versions), written last.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from instant3d_jax import errors
from instant3d_jax.convert import safetensors_io as sio
from instant3d_jax.diffusion import blob as blob_lib
from instant3d_jax.diffusion import sampling
from instant3d_jax.export.images import save_png

RIG_AZIMUTHS = (0, 90, 180, 270)
_PACKAGES = ("jax", "jaxlib", "flax", "numpy", "transformers", "diffusers", "safetensors",
             "ml_collections")


def read_prompts(prompt: str | None, prompts_file: str | os.PathLike | None) -> list[str]:
  """Exactly one of `prompt` or `prompts_file` (one prompt per line, blank lines skipped)."""
  if (prompt is None) == (prompts_file is None):
    raise errors.ConfigError("give exactly one of --prompt or --prompts_file")
  if prompt is not None:
    if not prompt.strip():
      raise errors.ConfigError("--prompt is empty; expected a text prompt")
    return [prompt]
  path = Path(prompts_file)
  if not path.is_file():
    raise errors.ConfigError(f"--prompts_file {path} does not exist; expected a text file with "
                             "one prompt per line")
  prompts = [l.strip() for l in path.read_text().splitlines() if l.strip()]
  if not prompts:
    raise errors.ConfigError(f"--prompts_file {path} has no prompts (expected one per line)")
  return prompts


def load_pipeline(cfg, weights: str | os.PathLike) -> sampling.Pipeline:
  """The SDXL pipeline of `weights` (a diffusers folder, or a single-file `.safetensors` with
  `cfg.single_file_config_folder`) with the module runtime of `cfg.model`."""
  from instant3d_jax.convert import sdxl_pipeline
  return sdxl_pipeline.load_any(
      weights, cfg.single_file_config_folder or None, dtype=cfg.model.dtype,
      attention_impl=cfg.model.attention_impl, remat=cfg.model.remat,
      vae_decode_chunk=cfg.model.vae_decode_chunk, vae_tiled=cfg.model.vae_tiled)


def placement_from_config(cfg, devices=None) -> sampling.Placement | None:
  """The config's `('data', 'fsdp', 'tensor')` mesh over `devices` (default: all devices) with
  its logical axis rules; None on one device."""
  if len(jax.devices() if devices is None else devices) == 1:
    return None
  from instant3d_jax.base import mesh as mesh_lib
  from instant3d_jax.base import sharding as shard_lib
  return sampling.Placement(mesh_lib.create_mesh(cfg.mesh, devices),
                            shard_lib.logical_rules(cfg.logical_axis_rules))


def versions() -> dict[str, str]:
  """Installed versions of the packages that shape the output (for run.json)."""
  from importlib import metadata
  out = {}
  for p in _PACKAGES:
    try:
      out[p] = metadata.version(p.replace("_", "-"))
    except metadata.PackageNotFoundError:
      out[p] = "not installed"
  return out


def save_views(out: str | os.PathLike, index: int, grid: np.ndarray, views: np.ndarray
               ) -> dict[str, Any]:
  """Writes sample `index`'s grid and its four views as PNGs; returns their file names."""
  out = Path(out)
  return {"grid": save_png(out / f"{index:04d}_grid.png", grid).name,
          "views": [save_png(out / f"{index:04d}_view{v}_az{az}.png", views[v]).name
                    for v, az in enumerate(RIG_AZIMUTHS)]}


@dataclasses.dataclass(frozen=True)
class Options:
  """What a run may override in `cfg.sampler` (None: the config's value), and the run's own
  knobs: grids per prompt, seed (None: `cfg.seed`), progress bar."""
  num_samples: int = 1
  steps: int | None = None
  guidance_scale: float | None = None
  scheduler: str | None = None
  seed: int | None = None
  negative_prompt: str | None = None
  progress: bool = True

  def settings(self, cfg) -> sampling.SamplerSettings:
    """The run's sampler settings (`cfg.sampler` and `cfg.blob` with these overrides), checked
    before any weights load; raises `ConfigError` naming the bad flag."""
    s = cfg.sampler
    st = sampling.settings_from_config(s, height=s.height, width=s.width, blob=cfg.blob)
    negative = self.negative_prompt if self.negative_prompt is not None else s.negative_prompt
    st = dataclasses.replace(
        st, num_steps=self.steps or st.num_steps, scheduler=self.scheduler or st.scheduler,
        guidance_scale=st.guidance_scale if self.guidance_scale is None else self.guidance_scale,
        negative_prompt=negative or None)
    st.check({"scheduler": "--scheduler", "num_steps": "--steps", "init": "sampler.init"})
    if self.num_samples < 1:
      raise errors.ConfigError(f"--num_samples must be >= 1, got {self.num_samples}")
    return st

  def seed_of(self, cfg) -> int:
    """The run's PRNG seed: `seed`, else `cfg.seed`."""
    return cfg.seed if self.seed is None else self.seed


def sample_to_folder(cfg, pipeline: sampling.Pipeline, prompts: Sequence[str],
                     out: str | os.PathLike, *, weights: str = "", options: Options = Options(),
                     placement: sampling.Placement | None = None) -> Path:
  """Samples `options.num_samples` grids per prompt in batches of `cfg.sampler.batch_size`
  and writes them (module docstring); returns `out`. `placement`: the mesh and rules to sample
  on (e.g. `placement_from_config(cfg)`; the pipeline is sharded once here)."""
  st = options.settings(cfg)
  seed = options.seed_of(cfg)
  batch_size = cfg.sampler.batch_size
  out = Path(out)
  if placement is not None:
    pipeline = sampling.shard_pipeline(pipeline, placement)
  samples = [p for p in prompts for _ in range(options.num_samples)]
  steps = st.num_steps
  n_run = steps - (blob_lib.start_step(steps, st.blob.init_strength) if st.init == "blob" else 0)
  key = jax.random.PRNGKey(seed)
  bar = None
  if options.progress:
    from tqdm import tqdm
    n_batches = -(-len(samples) // batch_size)
    bar = tqdm(total=n_batches * n_run, desc="denoising", unit="step", file=sys.stderr)
  files = []
  t0 = time.time()
  for start in range(0, len(samples), batch_size):
    batch = samples[start:start + batch_size]
    done = bar.n if bar else 0
    hook = (lambda i, done=done: bar.update(max(0, done + i + 1 - bar.n))) if bar else None
    res = sampling.generate_views(
        pipeline, batch, key, st, mesh=placement.mesh if placement is not None else None,
        logical_axis_rules=placement.rules if placement is not None else None,
        first_sample_index=start, progress=hook)
    for j, prompt in enumerate(batch):
      files.append({"index": start + j, "prompt": prompt,
                    **save_views(out, start + j, res.grid[j], res.views[j])})
  if bar:
    bar.close()
  sio.write_json(out / "run.json", {
      "config": cfg.to_dict(), "weights": str(Path(weights).resolve()) if weights else "",
      "prompts": list(prompts), "negative_prompt": st.negative_prompt or "",
      "num_samples": options.num_samples, "seed": seed, "steps": steps,
      "guidance_scale": st.guidance_scale, "scheduler": st.scheduler, "samples": files,
      "seconds": round(time.time() - t0, 3), "devices": jax.device_count(),
      "device_kind": jax.devices()[0].device_kind, "versions": versions()})
  return out


# ----------------------------------------------------------------------------------------------
# Frozen encoders of the latent cache (data_pipeline/latent_cache.py)
# ----------------------------------------------------------------------------------------------
def encoders_from_pipeline(pipeline, description: dict | None = None):
  """`latent_cache.FrozenEncoders` of an SDXL `sampling.Pipeline`: its VAE encoder on the grid in
  [-1, 1] and `sampling.encode_prompts` (both tokenizers, both CLIP text encoders)."""
  from data_pipeline import latent_cache  # pylint: disable=g-import-not-at-top

  vae, vae_params = pipeline.vae, pipeline.params["vae"]

  @jax.jit
  def _encode(params, grid_uint8):
    x = grid_uint8.astype(np.float32) / 127.5 - 1.0
    return vae.apply({"params": params}, x, method="encode")

  def encode_images(grids):
    mean, logvar = _encode(vae_params, np.asarray(grids, np.uint8))
    return np.asarray(mean), np.asarray(logvar)

  def encode_prompts(captions):
    ctx, pooled = sampling.encode_prompts(pipeline, list(captions))
    return np.asarray(ctx), np.asarray(pooled)

  cfg = vae.config
  return latent_cache.FrozenEncoders(encode_images=encode_images, encode_prompts=encode_prompts,
                                     scaling_factor=float(cfg.scaling_factor),
                                     shift_factor=getattr(cfg, "shift_factor", None),
                                     description=dict(description or {}))


def sdxl_encoders(config, weights: str | None):
  """`python -m data_pipeline.mv_cache`'s default `--encoders`
  (instant3d_jax.diffusion.stage1:sdxl_encoders): the SDXL pipeline of `weights` (diffusers
  folder or single file) with the module runtime of `config` (configs/sdxl.py)."""
  if not weights:
    raise errors.ConfigError("--weights is required with the default --encoders "
                             "(instant3d_jax.diffusion.stage1:sdxl_encoders): an SDXL diffusers "
                             "folder or single-file .safetensors")
  pipeline = load_pipeline(config, weights)
  return encoders_from_pipeline(pipeline, {"encoders": "sdxl", "weights": str(weights),
                                           "config_variant": str(config.get("variant", ""))})
