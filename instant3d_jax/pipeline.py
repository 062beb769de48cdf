"""Text → 3D as one library object: both stages loaded once, called on a list of prompts.

    from instant3d_jax.configs import instant3d
    pipe = TextTo3D.load(instant3d.get_config("tiny"))        # weights paths from the config
    results = pipe(["a red cube", "a blue ball"], jax.random.PRNGKey(0), with_mesh=True)
    results[0].grid, results[0].views, results[0].planes, results[0].mesh

Stage 1 (text → 2×2 grid, diffusion/sampling.py) runs on the config's device mesh: the prompts,
padded to `batch_size` (a multiple of the batch split), go over the mesh's `data` axis
(`diffusion/stage1.py placement_from_config`; parameters replicated, or FSDP-sharded under
`mesh.fsdp`); sample i uses `fold_in(key, i)`, so a prompt's grid depends neither on its
batch-mates nor on the number of devices. Stage 2 (four views → triplane) reconstructs the whole
batch in ONE jitted call of the LRM on `[B, 4, S, S, 3]` with the Instant3D rig cameras (the
views resized to the reconstructor's input size as `reconstruction.resize_views` does for the
`reconstruct` command). Per-object work on the host (marching cubes, and the caller's
`on_result`, e.g. writing files) runs in a worker thread while the next batch is sampled.

`generate_to_folder` writes what the `text_to_3d` command promises (instant3d_jax/text_to_3d.py):
per prompt `OUT/NNNN/` with prompt.txt, grid.png, view_{0..3}.png, triplane.npz (the format of
`reconstruct`: planes, plane_order, config), renders/, turntable.{gif,mp4}, turntable_strip.png
and mesh.{glb,obj,ply}; per run `OUT/run.json` (last) and `OUT/index.html`.

Weights (configs/instant3d.py): a missing path or one of the wrong kind is an `Instant3DError`
naming it before anything is compiled or run.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import html
import io
import json
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import numpy as np

from instant3d_jax import cameras as cameras_lib
from instant3d_jax import errors
from instant3d_jax import fileio

STAGE1_FORMS = ("a train_mvdiffusion workdir (its latest step's EMA weights), a diffusers SDXL "
                "folder (with model_index.json), or a single-file .safetensors (with "
                "stage1.single_file_config_folder)")


@dataclasses.dataclass
class Mesh:
  vertices: np.ndarray  # [V, 3] world frame (z up)
  faces: np.ndarray  # [F, 3] int
  colors: np.ndarray  # [V, 3] float in [0, 1]
  level: float  # the density level of the surface


@dataclasses.dataclass
class Result:
  """One prompt's object. `index`: its position in the prompt list of the call."""
  index: int
  prompt: str
  grid: np.ndarray  # [2R, 2R, 3] float32 in [0, 1] (rig order TL 0°, TR 90°, BL 180°, BR 270°)
  views: np.ndarray  # [4, R, R, 3] float32 in [0, 1]
  planes: np.ndarray  # [3, Rp, Rp, C] float32, XY/XZ/YZ (reconstruction.save_triplane)
  mesh: Mesh | None = None
  mesh_note: str = ""  # why `mesh` is None when a mesh was asked for


# ----------------------------------------------------------------------------------------------
# Weights: kinds and checks (nothing loaded or compiled)
# ----------------------------------------------------------------------------------------------
def stage1_kind(weights: str, single_file_config_folder: str = "") -> str:
  """'workdir', 'diffusers' or 'single_file' for `stage1.weights`; `errors.WeightsError` naming
  the path otherwise."""
  from instant3d_jax.errors import WeightsError
  if not str(weights or ""):
    raise WeightsError(f"stage1.weights is empty; expected {STAGE1_FORMS}")
  p = fileio.path(weights)
  if not p.exists():
    raise WeightsError(f"stage1.weights {str(weights)!r} does not exist; expected {STAGE1_FORMS}")
  if p.is_file():
    if not p.name.endswith(".safetensors"):
      raise WeightsError(f"stage1.weights {str(weights)!r} is a file but not a .safetensors; "
                         f"expected {STAGE1_FORMS}")
    folder = str(single_file_config_folder or "")
    if not folder or not fileio.path(folder).is_dir():
      raise WeightsError(f"stage1.weights {str(weights)!r} is a single-file checkpoint; it needs "
                         f"stage1.single_file_config_folder (component configs and tokenizers), "
                         f"got {folder!r}")
    return "single_file"
  if (p / "model_index.json").is_file():
    return "diffusers"
  if (p / "checkpoints").is_dir() or (p / "state").is_dir() or p.name == "checkpoints":
    return "workdir"
  raise WeightsError(f"stage1.weights {str(weights)!r} is a folder with neither model_index.json "
                     f"(diffusers) nor checkpoints/ (a training workdir); expected {STAGE1_FORMS}")


def check_stage2_path(weights: str) -> None:
  """`stage2.weights` exists (its form and shapes are checked by the one checkpoint reader)."""
  from instant3d_jax.errors import WeightsError
  from instant3d_jax.base import checkpoint as ckpt_lib
  if not str(weights or ""):
    raise WeightsError(f"stage2.weights is empty; expected {ckpt_lib.FORMS}")
  if not fileio.path(weights).exists():
    raise WeightsError(f"stage2.weights {str(weights)!r} does not exist; expected "
                       f"{ckpt_lib.FORMS}")


# ----------------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------------
class TextTo3D:
  """Both stages' modules and weights, the mesh they run on, and the settings of a call."""

  def __init__(self, config, stage1, sampler, stage2_config, stage2_params,
               placement, stage1_kind_: str, stage1_step: int | None):
    from instant3d_jax.models import lrm as lrm_lib
    self.config = config
    self.stage1 = stage1  # diffusion.sampling.Pipeline (params placed on the mesh)
    self.sampler = sampler  # diffusion.sampling.SamplerSettings (the grid side in height/width)
    self.stage2_config = stage2_config
    self.stage2_model = lrm_lib.LRMConfig.from_config(stage2_config)
    self.stage2_params = stage2_params
    self.placement = placement  # diffusion.sampling.Placement or None (one device)
    self.stage1_kind = stage1_kind_
    self.stage1_step = stage1_step
    self.timings: dict[str, float] = {}
    self.batches = 0  # jitted batches the last call ran

  # --------------------------------------------------------------------------------------------
  @classmethod
  def load(cls, config, devices: Sequence[jax.Device] | None = None, *,
           stage1: str | os.PathLike | None = None, stage2: str | os.PathLike | None = None,
           log=print) -> "TextTo3D":
    """Loads both stages once. `config`: a configs/instant3d.py ConfigDict;
    `stage1`/`stage2`: weights paths that replace `config.stage{1,2}.weights`; `devices`: the
    devices to run on (default all), the config's mesh is laid over them. Raises an
    `Instant3DError` naming the path for a missing or wrong-kind weight before anything is
    compiled."""
    if stage1 is not None or stage2 is not None:
      config = config.copy_and_resolve_references()
      if stage1 is not None:
        config.stage1.weights = str(stage1)
      if stage2 is not None:
        config.stage2.weights = str(stage2)
    from instant3d_jax.diffusion import sampling
    from instant3d_jax.diffusion import stage1 as stage1_lib
    from instant3d_jax.convert import checkpoints
    s1, s2 = config.stage1, config.stage2
    kind = stage1_kind(s1.weights, s1.single_file_config_folder)
    check_stage2_path(s2.weights)
    smp = s1.sample
    names = {f: f"stage1.sample.{f}" for f in ("scheduler", "init", "num_steps")}
    settings = lambda grid, micro=None: sampling.settings_from_config(
        smp, height=grid, width=grid, blob=s1.blob, micro=micro)
    settings(int(smp.grid_size)).check(names)  # bad settings fail before anything loads
    batch = int(config.batch_size)
    if batch < 1:
      raise errors.ConfigError(f"batch_size must be >= 1, got {batch}")
    placement = stage1_lib.placement_from_config(config, devices)
    if placement is not None:
      shards = placement.batch_shards
      if batch % shards:
        raise errors.ConfigError(f"batch_size {batch} is not a multiple of the {shards} ways the "
                                 f"mesh splits the prompt batch (mesh {dict(placement.mesh.shape)})"
                                 f"; pick a multiple of {shards}")

    # Stage 2 first: small, and a wrong kind (e.g. a stage-1 workdir) fails before stage 1 loads.
    s2_config, s2_params = _load_stage2(s2.weights)

    # Stage 1.
    step = None
    if kind == "workdir":
      from instant3d_jax.diffusion import components as components_lib
      try:
        mv_config, ema, step = checkpoints.load(s1.weights, item="ema")
      except errors.CheckpointError as e:
        raise errors.CheckpointError(f"stage1.weights: {errors.one_line(e)} (a train_mvdiffusion "
                                     "workdir keeps the EMA of its weights)") from e
      if "diffusion" not in mv_config or "grid" not in mv_config:
        raise errors.ConfigError(f"stage1.weights {str(s1.weights)!r} is not a train_mvdiffusion "
                                 f"workdir (its config has sections {sorted(mv_config)})")
      comps = components_lib.build_components(mv_config)
      pipe = components_lib.sampling_pipeline(comps, ema)
      grid = int(smp.grid_size) or components_lib.grid_size(mv_config)
      sampler = settings(grid, mv_config.diffusion)  # the micro-conditioning it trained with
    else:
      if not int(smp.grid_size):
        raise errors.ConfigError("stage1.sample.grid_size is 0; diffusers / single-file weights "
                                 "need the grid side (e.g. 1024)")
      rt = ml_collections_config(s1)
      pipe = stage1_lib.load_pipeline(rt, s1.weights)
      grid = int(smp.grid_size)
      sampler = settings(grid)
    f = pipe.vae_scale_factor
    if grid % (2 * f):
      raise errors.ConfigError(f"stage1 grid side {grid} is not a multiple of {2 * f} (2 views × "
                               f"the autoencoder factor {f})")
    if placement is not None:
      pipe = sampling.shard_pipeline(pipe, placement)
      # The reconstructor is replicated; its batch of objects goes over the prompts' split.
      s2_params = jax.device_put(s2_params, jax.sharding.NamedSharding(
          placement.mesh, jax.sharding.PartitionSpec()))
    log(f"stage 1: {kind} {fileio.display(s1.weights)}" + (f" (step {step}, EMA)" if step
                                                            is not None else "")
        + f"; stage 2: {fileio.display(s2.weights)}; "
        + f"{1 if placement is None else placement.mesh.size} device(s)")
    return cls(config, pipe, sampler, s2_config, s2_params, placement, kind, step)

  # --------------------------------------------------------------------------------------------
  @property
  def batch_size(self) -> int:
    return int(self.config.batch_size)

  @property
  def num_devices(self) -> int:
    return 1 if self.placement is None else int(self.placement.mesh.size)

  def sample_grids(self, prompts: Sequence[str], key: jax.Array, first: int, *,
                   num_steps: int | None = None, guidance_scale: float | None = None
                   ) -> np.ndarray:
    """Stage 1 on one batch (`len(prompts) == batch_size`, padding included): grids
    `[B, 2R, 2R, 3]`; sample j uses `fold_in(key, first + j)`."""
    from instant3d_jax.diffusion import sampling
    s = self.sampler
    pl = self.placement
    settings = dataclasses.replace(
        s, num_steps=num_steps or s.num_steps,
        guidance_scale=s.guidance_scale if guidance_scale is None else float(guidance_scale))
    out = sampling.generate_views(
        self.stage1, list(prompts), key, settings, first_sample_index=first,
        mesh=pl.mesh if pl is not None else None,
        logical_axis_rules=pl.rules if pl is not None else None)
    return out.grid

  def reconstruct(self, views: np.ndarray) -> np.ndarray:
    """Stage 2 on a batch: `views [B, 4, R, R, 3]` → planes `[B, 3, Rp, Rp, C]` (one jitted
    call; near-background pixels set to the background (`stage2.background_threshold`), views
    resized to the model's input size, the Instant3D rig cameras)."""
    from instant3d_jax import reconstruction
    m = self.stage2_model
    res = int(m.input_resolution)
    thr = float(self.config.stage2.background_threshold or 0.0)
    views = np.stack([reconstruction.resize_views(
        reconstruction.clean_background(np.asarray(v, np.float32), m.background, thr), res)
        for v in views]).astype(np.float32)
    b = views.shape[0]
    rig = cameras_lib.instant3d_rig(res)
    cams = jax.tree.map(lambda a: np.broadcast_to(np.asarray(a), (b,) + a.shape), rig)
    if self.placement is not None:
      views = self.placement.batch(views)
      cams = jax.tree.map(self.placement.batch, cams)
    return reconstruction.reconstruct_planes(m, self.stage2_params, views, cams)

  def mesh(self, planes: np.ndarray, log=lambda *_: None) -> Mesh:
    """Marching cubes of one object (`export.mesh_resolution`, `export.mesh_threshold`)."""
    from instant3d_jax import reconstruction
    e = self.config.export
    v, f, c, level = reconstruction.mesh_from_planes(
        self.stage2_model, self.stage2_params, planes, resolution=int(e.mesh_resolution),
        threshold=str(e.mesh_threshold), log=log)
    return Mesh(vertices=v, faces=f, colors=c, level=level)

  def __call__(self, prompts: Sequence[str], key: jax.Array, *, num_steps: int | None = None,
               guidance_scale: float | None = None, with_mesh: bool = False,
               on_result: Callable[[Result], None] | None = None,
               progress: Callable[[int, int], None] | None = None) -> list[Result]:
    """One `Result` per prompt, in order. The prompts run in batches of `batch_size` (the last
    padded with its final prompt; padding is dropped); prompt i's grid uses `fold_in(key, i)`.
    `with_mesh`: marching cubes per object on the host, overlapped with the next batch (a
    worker thread); `on_result(result)` (optional) runs in that thread too, in prompt order,
    after the mesh. `progress(done, total)` after each batch. Per-stage seconds of the call in
    `self.timings`."""
    prompts = [str(p) for p in prompts]
    if not prompts:
      raise errors.ConfigError("TextTo3D: prompts is empty; expected at least one prompt")
    empty = [i for i, p in enumerate(prompts) if not p.strip()]
    if empty:
      raise errors.ConfigError(f"TextTo3D: prompt {empty[0]} is empty; expected text")
    if num_steps is not None:
      dataclasses.replace(self.sampler, num_steps=int(num_steps)).check(
          {"num_steps": "num_steps (--steps)"})
    bs = self.batch_size
    t_all = time.perf_counter()
    timings = {"stage1_s": 0.0, "stage2_s": 0.0, "host_s": 0.0}
    results: list[Result] = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    futures = []

    def finish(batch: list[Result]) -> None:
      t = time.perf_counter()
      for r in batch:
        if with_mesh:
          try:
            r.mesh = self.mesh(r.planes)
          except ValueError as e:  # the field never crosses the level (e.g. an empty object)
            r.mesh_note = str(e)
        if on_result is not None:
          on_result(r)
      timings["host_s"] += time.perf_counter() - t

    n_batches = -(-len(prompts) // bs)
    self.batches = 0
    try:
      for k in range(n_batches):
        start = k * bs
        chunk = prompts[start:start + bs]
        padded = chunk + [chunk[-1]] * (bs - len(chunk))
        t = time.perf_counter()
        grids = self.sample_grids(padded, key, start, num_steps=num_steps,
                                  guidance_scale=guidance_scale)
        timings["stage1_s"] += time.perf_counter() - t
        from instant3d_jax.diffusion.sampling import split_grid
        views = np.asarray(split_grid(grids))
        t = time.perf_counter()
        planes = self.reconstruct(views)
        timings["stage2_s"] += time.perf_counter() - t
        self.batches += 1
        batch = [Result(index=start + j, prompt=p, grid=grids[j], views=views[j],
                        planes=planes[j]) for j, p in enumerate(chunk)]
        results.extend(batch)
        futures.append(pool.submit(finish, batch))
        if progress is not None:
          progress(k + 1, n_batches)
      t = time.perf_counter()
      for fut in futures:
        fut.result()
      timings["host_wait_s"] = time.perf_counter() - t
    finally:
      pool.shutdown(wait=True)
    timings["total_s"] = time.perf_counter() - t_all
    self.timings = {k: round(v, 3) for k, v in timings.items()}
    return results


def ml_collections_config(stage1):
  """The `configs/sdxl.py`-shaped view of `stage1` that `diffusion/stage1.load_pipeline`
  reads (model runtime and the single-file config folder)."""
  import ml_collections
  cfg = ml_collections.ConfigDict()
  cfg.model = ml_collections.ConfigDict(stage1.model.to_dict())
  cfg.single_file_config_folder = str(stage1.single_file_config_folder or "")
  return cfg


def _load_stage2(weights):
  """(config, params) of the reconstructor through the one checkpoint reader (shapes checked);
  a config that is not a reconstructor's is a `ConfigError` naming the path."""
  from instant3d_jax import reconstruction
  try:
    cfg, params = reconstruction.load_checkpoint(weights)
  except errors.Instant3DError as e:
    raise type(e)(f"stage2.weights: {errors.one_line(e)}") from e
  except (KeyError, AttributeError) as e:
    raise errors.ConfigError(f"stage2.weights {str(weights)!r} is not a reconstructor (train_lrm) "
                             f"checkpoint: its config lacks {e}") from e
  return cfg, params


# ----------------------------------------------------------------------------------------------
# Writing a run (the `text_to_3d` command)
# ----------------------------------------------------------------------------------------------
def write_result(pipe: TextTo3D, result: Result, out, *, save_float: bool = False) -> dict:
  """Writes one object's folder `out` (module docstring); returns {name: path}."""
  from instant3d_jax import reconstruction
  from instant3d_jax.export import images as images_lib
  from instant3d_jax.export import mesh as mesh_lib
  from instant3d_jax.export import video as video_lib
  out = fileio.path(out)
  e = pipe.config.export
  m = pipe.stage2_model
  written = {"prompt": fileio.write_text(out / "prompt.txt", result.prompt + "\n"),
             "grid": images_lib.save_png(out / "grid.png", result.grid)}
  for i, v in enumerate(result.views):
    written[f"view_{i}"] = images_lib.save_png(out / f"view_{i}.png", v)
  if save_float:
    buf = io.BytesIO()
    np.save(buf, np.asarray(result.grid, np.float32))
    written["grid_npy"] = fileio.write_bytes(out / "grid.npy", buf.getvalue())
  written["triplane"] = reconstruction.save_triplane(out / "triplane.npz", result.planes,
                                                     pipe.stage2_config)
  res = int(m.input_resolution)
  render_res = int(e.render_resolution) or res
  chunk = int(e.chunk)
  params = pipe.stage2_params
  written.update(reconstruction.save_input_renders(
      out, m, params, result.planes,
      reconstruction.resize_views(np.asarray(result.views, np.float32), res),
      cameras_lib.instant3d_rig(res), render_res, chunk=chunk))
  frames = reconstruction.render_frames(
      m, params, result.planes, video_lib.turntable_cameras(int(e.turntable_frames), render_res),
      chunk=chunk)
  written.update(reconstruction.save_turntable(out, frames, float(e.fps)))
  if result.mesh is not None:
    mm = result.mesh
    written.update({f"mesh_{k}": v for k, v in mesh_lib.save_mesh(
        out / "mesh", mm.vertices, mm.faces, mm.colors).items()})
  return written


def index_html(entries: list[dict], title: str, info: str) -> str:
  """A static page (relative links, no scripts, nothing fetched): per object the prompt, its
  grid, turntable GIF and a mesh download link."""
  cards = []
  for e in entries:
    d = html.escape(e["dir"])
    mesh = (f'<a href="{d}/mesh.glb" download>mesh.glb</a> · <a href="{d}/mesh.obj" download>obj'
            f'</a> · <a href="{d}/mesh.ply" download>ply</a>' if e.get("mesh")
            else f"<em>no mesh: {html.escape(e.get('mesh_note', ''))}</em>")
    cards.append(
        f'<figure id="p{d}"><figcaption>{e["index"]}. {html.escape(e["prompt"])}</figcaption>'
        f'<img src="{d}/grid.png" alt="four views of: {html.escape(e["prompt"])}" class="grid">'
        f'<img src="{d}/turntable.gif" alt="turntable" class="turntable">'
        f'<p>{mesh} · <a href="{d}/turntable.mp4">mp4</a> · '
        f'<a href="{d}/triplane.npz">triplane</a></p></figure>')
  return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>" + html.escape(title)
          + "</title>\n<style>body{font-family:sans-serif;margin:1em;background:#fafafa}"
          "figure{display:inline-block;vertical-align:top;margin:.5em;padding:.5em;"
          "background:#fff;border:1px solid #ddd}figcaption{font-weight:bold;max-width:520px}"
          "img{width:256px;height:256px;image-rendering:pixelated;margin:2px}</style></head>\n"
          f"<body><h1>{html.escape(title)}</h1><p>{html.escape(info)}</p>\n"
          + "\n".join(cards) + "\n</body></html>\n")


def generate_to_folder(pipe: TextTo3D, prompts: Sequence[str], out, *, seed: int | None = None,
                       num_samples: int = 1, num_steps: int | None = None,
                       guidance_scale: float | None = None, save_float: bool = False,
                       log=print) -> Path:
  """Runs the pipeline on `prompts` (`num_samples` objects each) and writes the run (module
  docstring; `save_float` adds each grid as float32 `grid.npy`); returns `out`."""
  from instant3d_jax import reconstruction
  from instant3d_jax.diffusion import stage1 as stage1_lib
  if num_samples < 1:
    raise errors.ConfigError(f"--num_samples must be >= 1, got {num_samples}")
  seed = int(pipe.config.seed if seed is None else seed)
  out = fileio.makedirs(out)
  stale = out / "run.json"
  if stale.exists():
    stale.unlink()  # a previous run's marker must not vouch for this run's partial files
  samples = [p for p in prompts for _ in range(num_samples)]
  entries: list[dict] = [None] * len(samples)  # type: ignore[list-item]
  t_write = [0.0]

  def on_result(r: Result) -> None:
    t = time.perf_counter()
    d = f"{r.index:04d}"
    written = write_result(pipe, r, out / d, save_float=save_float)
    entries[r.index] = {"index": r.index, "prompt": r.prompt, "dir": d,
                        "sample": r.index % num_samples, "mesh": r.mesh is not None,
                        **({"mesh_vertices": int(len(r.mesh.vertices)),
                            "mesh_faces": int(len(r.mesh.faces)),
                            "mesh_level": r.mesh.level} if r.mesh is not None
                           else {"mesh_note": r.mesh_note}),
                        "files": sorted(str(fileio.path(p).relative_to(out / d))
                                        for p in written.values())}
    t_write[0] += time.perf_counter() - t
    log(f"[{r.index + 1}/{len(samples)}] {d}: {r.prompt}")

  key = jax.random.PRNGKey(seed)
  steps = int(num_steps or pipe.sampler.num_steps)
  g = pipe.sampler.guidance_scale if guidance_scale is None else float(guidance_scale)
  pipe(samples, key, num_steps=steps, guidance_scale=g, with_mesh=True, on_result=on_result)
  timings = dict(pipe.timings, write_s=round(t_write[0], 3))
  n = len(samples)
  run = {
      "prompts": entries,
      "num_prompts": len(prompts), "num_samples": num_samples, "seed": seed,
      "stage1": {"weights": fileio.display(pipe.config.stage1.weights),
                 "kind": pipe.stage1_kind, "step": pipe.stage1_step, "steps": steps,
                 "guidance_scale": g, "scheduler": pipe.sampler.scheduler,
                 "init": pipe.sampler.init, "grid_size": pipe.sampler.height},
      "stage2": {"weights": fileio.display(pipe.config.stage2.weights),
                 "input_resolution": int(pipe.stage2_model.input_resolution)},
      "batch_size": pipe.batch_size, "batches": pipe.batches, "devices": pipe.num_devices,
      "device_kind": jax.devices()[0].device_kind,
      "timings": timings,
      "prompts_per_s": round(n / timings["total_s"], 4) if timings["total_s"] else None,
      "config": json.loads(pipe.config.to_json()),
      "versions": dict(reconstruction._versions(), **stage1_lib.versions()),  # pylint: disable=protected-access
  }
  info = (f"{n} objects · stage 1 {pipe.stage1_kind} ({steps} steps, CFG {g:g}, "
          f"{pipe.sampler.scheduler}) · seed {seed} · {timings['total_s']:.1f} s on "
          f"{pipe.num_devices} {jax.devices()[0].platform} device(s)")
  fileio.write_text(out / "index.html", index_html(entries, "Instant3D: text to 3D", info))
  fileio.write_text(out / "run.json", json.dumps(run, indent=2, sort_keys=True, default=float))
  return out
