"""Frozen-encoder cache for stage-1 training: VAE latents and prompt embeddings as ArrayRecord.

Written by `write_cache`, or by the command `python -m data_pipeline.mv_cache` (data_pipeline/
mv_cache.py: flags and `main` only); read by `make_latent_loader`.

Stage-1 training (issue "Stage-1 training") only trains the UNet; the VAE encoder and the two
CLIP text encoders are frozen, so their outputs for each object are computed once here instead of
every epoch. For every object of the chosen splits of a records data set (data_pipeline/records.py)
the 2×2 rig grid (data_pipeline/mv_grids.py) goes through the image encoder and the caption
through the prompt encoder; one record per object holds

  latents               [h, w, c] float32   (posterior mean − shift_factor) · scaling_factor
  latents_std           [h, w, c] float32   posterior std · scaling_factor (a posterior sample
                                            is latents + latents_std · ε, as diffusers' SDXL
                                            training's `latent_dist.sample() * scaling_factor`)
  prompt_embeds         [L, D]    float32   the UNet's context (SDXL: penultimate hidden states
                                            of CLIP-L and OpenCLIP-bigG, concatenated)
  pooled_prompt_embeds  [P]       float32   the pooled text embedding (SDXL: bigG's projection)

with the object's caption, data set index and object_id. Shards are written like a data set's
(`records.write_shards`: group size 1, temp name → rename) and metadata.json comes last
(generator "mv_cache"; the source data set, the encoders' description, array shapes, and per
split the (index, object_id, caption) table that object lists and the caption split filter on).
An output directory that already holds a data set or a cache is refused (one-line error) unless
`--overwrite`; nothing is written before the encoders have loaded.

The encoders are any `FrozenEncoders` (callables on numpy batches): diffusion/stage1.py's
`encoders_from_pipeline` wraps an SDXL `Pipeline` (the project's Flax VAE, models/vae.py, and
CLIP text encoders, models/clip.py); the command builds them with `--encoders module:function`, a
function `(config, weights) → FrozenEncoders` (default `instant3d_jax.diffusion.stage1:
sdxl_encoders`: the pipeline of `--weights` with the runtime of `--config`, configs/sdxl.py).
This module imports no model code: the encoders come in as a value.

`make_latent_loader` reads a cache with the same order, process sharding, epochs, object list,
caption split and resumable state as `mv_grids.make_grid_loader`, yielding
{"latents", "prompt_embeds", "pooled_prompt_embeds", "caption", "object_id"} (+ "latents_std"
with `with_std=True`).
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Any, Callable, Sequence

import numpy as np

from data_pipeline import mv_grids
from data_pipeline import records
from instant3d_jax import errors

GENERATOR = "mv_cache"
CACHE_VERSION = 1
ARRAY_KEYS = ("latents", "latents_std", "prompt_embeds", "pooled_prompt_embeds")


@dataclasses.dataclass(frozen=True)
class FrozenEncoders:
  """What the cache runs once per object.

  encode_images: uint8 grids `[B, H, W, 3]` → posterior (mean, logvar), each `[B, h, w, c]`.
  encode_prompts: captions (a list of B str) → (context `[B, L, D]`, pooled `[B, P]`).
  scaling_factor / shift_factor: the autoencoder's latent scaling (SDXL VAE: 0.13025, none).
  description: JSON-able facts written into the cache's metadata (weights, config).
  """
  encode_images: Callable[[np.ndarray], tuple[Any, Any]]
  encode_prompts: Callable[[Sequence[str]], tuple[Any, Any]]
  scaling_factor: float = 1.0
  shift_factor: float | None = None
  description: dict = dataclasses.field(default_factory=dict)


def scaled_latents(mean, logvar, scaling_factor: float, shift_factor: float | None
                   ) -> tuple[np.ndarray, np.ndarray]:
  """Posterior (mean, logvar) → (latents, latents_std) as stored (module docstring)."""
  mean = np.asarray(mean, np.float32)
  std = np.exp(0.5 * np.asarray(logvar, np.float32))
  return ((mean - np.float32(shift_factor or 0.0)) * np.float32(scaling_factor),
          (std * np.float32(scaling_factor)).astype(np.float32))


def load_encoders(spec: str, config, weights: str | None) -> FrozenEncoders:
  """`--encoders module:function` → `function(config, weights)`."""
  module, _, name = spec.partition(":")
  if not module or not name:
    raise errors.ConfigError(f"--encoders must be 'module:function', found {spec!r}")
  try:
    fn = getattr(importlib.import_module(module), name)
  except (ImportError, AttributeError) as e:
    raise errors.ConfigError(f"--encoders {spec!r}: cannot import it ({type(e).__name__}: {e})"
                             ) from e
  enc = fn(config, weights)
  # Checked by its fields, not isinstance: any object with FrozenEncoders' fields will do.
  if not all(hasattr(enc, k) for k in ("encode_images", "encode_prompts", "scaling_factor",
                                       "shift_factor", "description")):
    raise errors.ConfigError(f"--encoders {spec!r} returned {type(enc).__name__}, expected "
                             "data_pipeline.latent_cache.FrozenEncoders")
  return enc


# ------------------------------------------------------------------------------------------------
# Writing.


def _encode_record(**fields) -> bytes:
  from flax import serialization  # pylint: disable=g-import-not-at-top
  return serialization.msgpack_serialize({"cache_version": CACHE_VERSION, **fields})


def check_out_dir(data_dir: str, out_dir: str, overwrite: bool) -> None:
  """Refuses before anything is loaded or written: the source itself, or an existing data set
  or cache without `overwrite` (records.prepare_output_dir gives the same verdict later)."""
  if os.path.realpath(out_dir) == os.path.realpath(data_dir):
    raise errors.DataError(f"{out_dir}: the cache cannot be written into its source data set; "
                           "choose another --out")
  if not overwrite and os.path.exists(os.path.join(out_dir, records.METADATA_FILE)):
    try:
      meta = records.read_metadata(out_dir)
      what = f"{meta.get('generator', '?')}, {meta.get('num_objects', '?')} objects"
    except errors.DataError:
      what = f"an unreadable {records.METADATA_FILE}"
    raise errors.DataError(f"{out_dir}: already holds a data set ({what}); pass --overwrite "
                           "(overwrite=True) to replace it, or choose another directory")


def write_cache(data_dir: str, out_dir: str, encoders: FrozenEncoders, *,
                splits: Sequence[str] | None = None, batch_size: int = 8, resolution: int = 0,
                records_per_shard: int = 500, overwrite: bool = False,
                progress: bool = True) -> dict:
  """Encodes every object of `splits` (default: all of the data set's) into `out_dir`; returns
  the cache's metadata. See the module docstring for the format and the overwrite rule."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  check_out_dir(data_dir, out_dir, overwrite)
  src_meta = records.read_metadata(data_dir)
  splits = list(src_meta["splits"]) if splits is None else list(splits)
  for s in splits:
    if s not in src_meta["splits"]:
      raise errors.DataError(f"{data_dir}: no split {s!r}; the data set has "
                             f"{sorted(src_meta['splits'])}")
  tables = {s: mv_grids.object_table(data_dir, s) for s in splits}
  records.prepare_output_dir(out_dir, writer="data_pipeline.mv_cache", overwrite=overwrite)
  bar = tqdm(total=sum(len(t) for t in tables.values()), desc=f"caching {out_dir}", unit="obj",
             disable=not progress, dynamic_ncols=True)
  shapes: dict[str, list[int]] = {}
  out_splits = {}

  def encoded(split):
    names = {i: oid for i, oid, _ in tables[split]}
    it = mv_grids.make_grid_loader(data_dir, split, batch_size=batch_size, seed=0, shuffle=False,
                                   num_epochs=1, resolution=resolution, process_index=0,
                                   process_count=1)
    for batch in it:
      # A short last batch is padded (its last row repeated) so jitted encoders compile once.
      n = len(batch["object_id"])
      pad = [n - 1] * (int(batch_size) - n)
      grids = np.concatenate([batch["grid"], batch["grid"][pad]])
      caps = [str(c) for c in batch["caption"]] + [str(batch["caption"][-1])] * len(pad)
      mean, logvar = encoders.encode_images(grids)
      lat, lat_std = scaled_latents(mean, logvar, encoders.scaling_factor, encoders.shift_factor)
      ctx, pooled = encoders.encode_prompts(caps)
      arrays = {"latents": lat, "latents_std": lat_std,
                "prompt_embeds": np.asarray(ctx, np.float32),
                "pooled_prompt_embeds": np.asarray(pooled, np.float32)}
      for k, v in arrays.items():
        if v.shape[0] != len(grids):
          raise errors.ConfigError(f"encoders: {k} has {v.shape[0]} rows for a batch of "
                                   f"{len(grids)}")
        arrays[k] = v[:n]
        v = arrays[k]
        if not np.all(np.isfinite(v)):
          raise errors.ConfigError(f"encoders: {k} of objects {batch['object_id'].tolist()} is "
                                   "not finite")
        if shapes.setdefault(k, list(v.shape[1:])) != list(v.shape[1:]):
          raise errors.ConfigError(f"encoders: {k} changed shape from {shapes[k]} to "
                                   f"{list(v.shape[1:])} (split {split!r})")
      for r in range(n):
        idx = int(batch["object_id"][r])
        yield _encode_record(object_id=names[idx], index=idx, caption=str(batch["caption"][r]),
                             **{k: v[r] for k, v in arrays.items()})
        bar.update(1)

  try:
    for split in splits:
      n = len(tables[split])
      # (an empty split gets one empty shard; its generator is never started)
      shards = records.write_shards(out_dir, split, encoded(split), n, records_per_shard)
      out_splits[split] = {"num_objects": n, "shards": shards,
                           "objects": [list(row) for row in tables[split]]}
  finally:
    bar.close()
  res = int(resolution) or int(src_meta.get("resolution", 0))
  grid = 2 * res if res else None
  meta = {"generator": GENERATOR, "cache_version": CACHE_VERSION,
          "num_objects": sum(v["num_objects"] for v in out_splits.values()),
          "splits": out_splits, "shapes": shapes, "grid_size": grid,
          "scaling_factor": float(encoders.scaling_factor),
          "shift_factor": encoders.shift_factor, "encoders": encoders.description,
          "source": {"data_dir": os.path.abspath(data_dir),
                     "generator": src_meta.get("generator"),
                     "num_objects": src_meta.get("num_objects")}}
  records.write_metadata(out_dir, meta)
  return read_cache_metadata(out_dir)


# ------------------------------------------------------------------------------------------------
# Reading.


def read_cache_metadata(cache_dir: str) -> dict:
  """metadata.json of a cache; a `DataError` if the directory is not one."""
  meta = records.read_metadata(cache_dir)
  if meta.get("generator") != GENERATOR:
    raise errors.DataError(f"{cache_dir}: not a latent cache (generator "
                           f"{meta.get('generator')!r}, expected {GENERATOR!r}); write one with "
                           "`python -m data_pipeline.mv_cache`")
  if meta.get("cache_version") != CACHE_VERSION:
    raise errors.DataError(f"{cache_dir}: cache version {meta.get('cache_version')!r}, this code "
                           f"reads {CACHE_VERSION}; write the cache again")
  return meta


class CacheSource(records.RecordSource):
  """Random access to the cached records of one split (picklable for grain workers)."""

  def __getitem__(self, index: int) -> dict:
    from flax import serialization  # pylint: disable=g-import-not-at-top
    where = self.where(int(index))
    try:
      rec = serialization.msgpack_restore(self.raw(index))
    except errors.DataError:
      raise
    except Exception as e:
      raise errors.DataError(f"{where}: not a msgpack cache record ({type(e).__name__}: {e})"
                             ) from e
    if not isinstance(rec, dict) or rec.get("cache_version") != CACHE_VERSION or any(
        k not in rec for k in ARRAY_KEYS + ("index", "caption")):
      raise errors.DataError(f"{where}: expected a cache record of version {CACHE_VERSION} with "
                             f"{list(ARRAY_KEYS)}, index and caption")
    return rec


class _LoadCached:
  """Stream position → one object's cached arrays."""

  def __init__(self, source: CacheSource, order, with_std: bool):
    self.source, self.order, self.with_std = source, order, bool(with_std)

  def __call__(self, position: int) -> dict:
    rec = self.source[self.order.example(position)]
    out = {"latents": np.asarray(rec["latents"], np.float32),
           "prompt_embeds": np.asarray(rec["prompt_embeds"], np.float32),
           "pooled_prompt_embeds": np.asarray(rec["pooled_prompt_embeds"], np.float32),
           "caption": np.asarray(str(rec["caption"])), "object_id": np.int32(rec["index"])}
    if self.with_std:
      out["latents_std"] = np.asarray(rec["latents_std"], np.float32)
    return out


def make_latent_loader(cache_dir: str, split: str, *, batch_size: int, seed: int,
                       shuffle: bool = True, num_epochs: int | None = None, object_list=None,
                       heldout=None, worker_count: int = 0, with_std: bool = False,
                       process_index: int | None = None, process_count: int | None = None,
                       read_threads: int = 2, prefetch_batches: int = 4,
                       worker_buffer_size: int = 2):
  """A grain iterator (`get_state()` / `set_state()`) over a cache's split; arguments as
  `mv_grids.make_grid_loader` (same seed → same object order), batches as the module docstring."""
  meta = read_cache_metadata(cache_dir)
  if split not in meta["splits"]:
    raise errors.DataError(f"{cache_dir}: the cache has no split {split!r}; it holds "
                           f"{sorted(meta['splits'])}")
  table = [tuple(row) for row in meta["splits"][split].get("objects", [])]
  positions = mv_grids.select_from_table(
      table, object_list=object_list, heldout=heldout, where=f"{cache_dir}: split {split!r}",
      all_ids=lambda: {row[1] for s in meta["splits"].values() for row in s.get("objects", [])})
  source = CacheSource(cache_dir, split)
  return iter(mv_grids.stream(
      positions, lambda order: _LoadCached(source, order, with_std), batch_size=batch_size,
      seed=seed, shuffle=shuffle, num_epochs=num_epochs, worker_count=worker_count,
      process_index=process_index, process_count=process_count, read_threads=read_threads,
      prefetch_batches=prefetch_batches, worker_buffer_size=worker_buffer_size))
