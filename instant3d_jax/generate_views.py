"""Stage 1 command: prompts → SDXL 2×2 four-view grids (PNG) + the four views + run.json.

  python -m instant3d_jax.generate_views --config configs/sdxl.py:sdxl \
      --weights /path/to/sdxl_folder --prompt "a wooden chair" --num_samples 2 --out outputs/views

Flags: --prompt or --prompts_file (one prompt per line, blank lines skipped), --negative_prompt,
--num_samples (grids per prompt), --steps, --guidance_scale, --scheduler, --seed override the
config (`--config.sampler.*`, `--config.blob.*` reach every other knob). `--weights` is a
diffusers-format SDXL folder, or a single-file `.safetensors` with
`--config.single_file_config_folder` naming a folder with the component configs and tokenizers.

Output (OUT/): `NNNN_grid.png` (1024² grid), `NNNN_view{0..3}_az{0,90,180,270}.png` (rig order),
and `run.json` (config, weights, prompts per sample, seed, package versions), written last.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Sequence

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from instant3d_jax.convert import safetensors_io as sio
from instant3d_jax.diffusion import blob as blob_lib
from instant3d_jax.diffusion import schedulers
from instant3d_jax.diffusion.sampling import generate_views
from instant3d_jax.export.images import save_png

RIG_AZIMUTHS = (0, 90, 180, 270)
_PACKAGES = ("jax", "jaxlib", "flax", "numpy", "transformers", "diffusers", "safetensors",
             "ml_collections")


def _flags(argv: Sequence[str]) -> flags.FlagValues:
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", "configs/sdxl.py:sdxl", "configs/sdxl.py:VARIANT",
                                  flag_values=fv, lock_config=True)
  flags.DEFINE_string("weights", None, "SDXL diffusers folder or single-file .safetensors",
                      flag_values=fv)
  flags.DEFINE_string("prompt", None, "the text prompt", flag_values=fv)
  flags.DEFINE_string("prompts_file", None, "text file, one prompt per line", flag_values=fv)
  flags.DEFINE_string("negative_prompt", None, "negative prompt (default: config)",
                      flag_values=fv)
  flags.DEFINE_integer("num_samples", 1, "grids per prompt", flag_values=fv)
  flags.DEFINE_integer("steps", None, "denoising steps (default: config)", flag_values=fv)
  flags.DEFINE_float("guidance_scale", None, "CFG scale (default: config)", flag_values=fv)
  flags.DEFINE_string("scheduler", None, f"one of {schedulers.SCHEDULERS}", flag_values=fv)
  flags.DEFINE_integer("seed", None, "PRNG seed (default: config)", flag_values=fv)
  flags.DEFINE_string("out", None, "output folder", flag_values=fv)
  flags.DEFINE_bool("progress", True, "show a progress bar", flag_values=fv)
  fv(list(argv))
  return fv


def read_prompts(prompt: str | None, prompts_file: str | None) -> list[str]:
  if (prompt is None) == (prompts_file is None):
    raise ValueError("give exactly one of --prompt or --prompts_file")
  if prompt is not None:
    if not prompt.strip():
      raise ValueError("--prompt is empty; expected a text prompt")
    return [prompt]
  path = Path(prompts_file)
  if not path.is_file():
    raise ValueError(f"--prompts_file {path} does not exist")
  prompts = [l.strip() for l in path.read_text().splitlines() if l.strip()]
  if not prompts:
    raise ValueError(f"--prompts_file {path} has no prompts (expected one per line)")
  return prompts


def _mesh(mesh_cfg):
  """The ('data', 'fsdp', 'tensor') mesh of the config over all devices; None on one device."""
  if jax.device_count() == 1:
    return None
  from instant3d_jax.train.mesh import create_mesh
  return create_mesh(mesh_cfg)


def load(cfg, weights: str):
  from instant3d_jax.convert import sdxl_pipeline
  kw = dict(dtype=cfg.model.dtype, attention_impl=cfg.model.attention_impl,
            remat=cfg.model.remat, vae_decode_chunk=cfg.model.vae_decode_chunk,
            vae_tiled=cfg.model.vae_tiled)
  path = Path(weights)
  if path.is_file():
    if not cfg.single_file_config_folder:
      raise ValueError(f"--weights {path} is a single file: also set "
                       "--config.single_file_config_folder to a folder with the component "
                       "configs (unet/config.json, ...) and tokenizers")
    return sdxl_pipeline.load_single_file_pipeline(path, cfg.single_file_config_folder, **kw)
  if not path.exists():
    raise sio.WeightsError(f"--weights {path} does not exist")
  return sdxl_pipeline.load_pipeline(path, **kw)


def _versions() -> dict[str, str]:
  from importlib import metadata
  out = {}
  for p in _PACKAGES:
    try:
      out[p] = metadata.version(p.replace("_", "-"))
    except metadata.PackageNotFoundError:
      out[p] = "not installed"
  return out


def run(argv: Sequence[str]) -> Path:
  """The whole command (argv[0] is the program name); returns the output folder."""
  fv = _flags(argv)
  cfg = fv.config
  s = cfg.sampler
  if fv.weights is None or fv.out is None:
    raise ValueError("--weights and --out are required")
  prompts = read_prompts(fv.prompt, fv.prompts_file)
  scheduler = fv.scheduler or s.scheduler
  if scheduler not in schedulers.SCHEDULERS:
    raise ValueError(f"--scheduler must be one of {schedulers.SCHEDULERS}, got {scheduler!r}")
  steps = fv.steps or s.num_steps
  if steps < 1:
    raise ValueError(f"--steps must be >= 1, got {steps}")
  if fv.num_samples < 1:
    raise ValueError(f"--num_samples must be >= 1, got {fv.num_samples}")
  guidance = s.guidance_scale if fv.guidance_scale is None else fv.guidance_scale
  seed = cfg.seed if fv.seed is None else fv.seed
  negative = fv.negative_prompt if fv.negative_prompt is not None else s.negative_prompt
  blob_cfg = blob_lib.BlobConfig(std=cfg.blob.std, value=cfg.blob.value,
                                 background=cfg.blob.background,
                                 init_strength=cfg.blob.init_strength)
  if s.init == "blob":
    blob_lib.start_step(steps, blob_cfg.init_strength)  # fail before loading the weights
  out = Path(fv.out)

  pipeline = load(cfg, fv.weights)
  mesh = _mesh(cfg.mesh)
  samples = [p for p in prompts for _ in range(fv.num_samples)]
  n_run = blob_lib.start_step(steps, blob_cfg.init_strength) if s.init == "blob" else 0
  n_run = steps - n_run
  key = jax.random.PRNGKey(seed)
  size = lambda v: tuple(v) if any(v) else None
  bar = None
  if fv.progress:
    from tqdm import tqdm
    n_batches = -(-len(samples) // s.batch_size)
    bar = tqdm(total=n_batches * n_run, desc="denoising", unit="step", file=sys.stderr)
  files = []
  t0 = time.time()
  for start in range(0, len(samples), s.batch_size):
    batch = samples[start:start + s.batch_size]
    done = bar.n if bar else 0
    hook = (lambda i, done=done: bar.update(max(0, done + i + 1 - bar.n))) if bar else None
    res = generate_views(
        pipeline, batch, key, num_steps=steps, guidance_scale=guidance, scheduler=scheduler,
        init=s.init, init_strength=blob_cfg.init_strength, height=s.height, width=s.width,
        negative_prompt=negative or None, mesh=mesh, eta=s.eta, blob=blob_cfg,
        original_size=size(s.original_size), crops_coords_top_left=tuple(s.crops_coords_top_left),
        target_size=size(s.target_size), first_sample_index=start, progress=hook)
    for j, prompt in enumerate(batch):
      idx = start + j
      entry = {"index": idx, "prompt": prompt,
               "grid": save_png(out / f"{idx:04d}_grid.png", res.grid[j]).name, "views": []}
      for v, az in enumerate(RIG_AZIMUTHS):
        entry["views"].append(save_png(out / f"{idx:04d}_view{v}_az{az}.png",
                                       res.views[j, v]).name)
      files.append(entry)
  if bar:
    bar.close()
  sio.write_json(out / "run.json", {
      "config": cfg.to_dict(), "weights": str(Path(fv.weights).resolve()), "prompts": prompts,
      "negative_prompt": negative, "num_samples": fv.num_samples, "seed": seed,
      "steps": steps, "guidance_scale": guidance, "scheduler": scheduler,
      "samples": files, "seconds": round(time.time() - t0, 3), "devices": jax.device_count(),
      "device_kind": jax.devices()[0].device_kind, "versions": _versions()})
  return out


def main(argv: Sequence[str] | None = None) -> int:
  try:
    out = run(sys.argv if argv is None else argv)
  except (ValueError, sio.WeightsError, flags.Error) as e:
    print(f"generate_views: error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
