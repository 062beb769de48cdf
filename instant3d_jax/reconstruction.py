"""Stage 2 as a library: four posed views → triplane NeRF, renders, turntable and a mesh.

`reconstruct(checkpoint, out, grid=... | views=..., cameras=...)` is what the command
`python -m instant3d_jax.reconstruct` (instant3d_jax/reconstruct.py) runs; its docstring lists the
inputs, conversions, errors and the files written. The pieces (`load_checkpoint`, `load_views`,
`load_cameras`, `read_image`, `resize_views`, `novel_cameras`) are used by the demo and the tests.
"""
from __future__ import annotations

from instant3d_jax.errors import InputError, WeightsError  # also reconstruction.InputError

import functools
import importlib.metadata
import io
import json
import os
import sys
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from instant3d_jax import cameras as cameras_lib
from instant3d_jax import fileio
from instant3d_jax import rendering
from instant3d_jax.convert.safetensors_io import check_tree_shapes
from instant3d_jax.export import images as images_lib
from instant3d_jax.export import mesh as mesh_lib
from instant3d_jax.export import video as video_lib
from instant3d_jax.models import lrm as lrm_lib
from instant3d_jax.convert import checkpoints

import flax.linen as nn

GRAYSCALE_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "PA")
PACKAGES = ("jax", "jaxlib", "flax", "numpy", "ml_collections", "safetensors", "pillow",
            "scikit-image", "trimesh", "imageio", "imageio-ffmpeg", "orbax-checkpoint")


# ---------------------------------------------------------------------------------------------
# Checkpoint


def load_checkpoint(path: str | os.PathLike, config=None):
  """(config, params) from any form `convert.checkpoints.load` accepts; shapes checked against the
  reconstructor the config builds (`errors.CheckpointError` for a missing / incomplete path)."""
  config, params, _ = checkpoints.load(path, config)
  if "model" not in config:
    raise WeightsError(f"checkpoint {path}: its config has no 'model' section")
  if not all(k in config.model for k in ("num_views", "decoder", "triplane")):
    raise WeightsError(f"checkpoint {path} is not a reconstructor (train_lrm) checkpoint: its "
                       "model config has no num_views / decoder / triplane")
  params = nn.meta.unbox(params)
  check_tree_shapes(nn.meta.unbox(lrm_lib.abstract_params(config)), params,
                    f"checkpoint {path}")
  return config, params


# ---------------------------------------------------------------------------------------------
# Input views


def read_image(path: str | os.PathLike, what: str, background, notes: list[str]) -> np.ndarray:
  """An image file → `[H, W, 3]` float32 in [0, 1] (alpha composited onto `background`)."""
  path = fileio.path(path)
  if not path.is_file():
    raise InputError(f"{what} {path} does not exist")
  try:
    with path.open("rb") as f, Image.open(f) as im:
      im.load()
      mode = im.mode
      if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
      if mode in GRAYSCALE_MODES:
        raise InputError(
            f"{what} {path} is a grayscale image (mode {mode}); the reconstructor needs RGB "
            "colour views (convert it to RGB first if it really shows a grey object)")
      if mode in ALPHA_MODES:
        rgba = np.asarray(im.convert("RGBA"), np.float32) / 255.0
      else:
        rgba = None
        rgb = np.asarray(im.convert("RGB"), np.float32) / 255.0
        if mode != "RGB":
          notes.append(f"{what} {path}: converted from mode {mode} to RGB")
  except InputError:
    raise
  except (OSError, UnidentifiedImageError, ValueError) as e:
    raise InputError(f"{what} {path} is not a readable image: {e}") from e
  if rgba is not None:
    bg = np.asarray(background, np.float32)
    alpha = rgba[..., 3:]
    rgb = rgba[..., :3] * alpha + bg * (1.0 - alpha)
    notes.append(f"{what} {path}: RGBA composited onto the training background "
                 f"{tuple(float(x) for x in bg)} (model.background)")
  return rgb


def _check_view_size(img: np.ndarray, what: str) -> None:
  h, w = img.shape[:2]
  if h != w:
    raise InputError(f"{what} is {w}x{h} pixels; views must be square")
  if h % 2:
    raise InputError(f"{what} is {w}x{h} pixels; views must have an even side (odd sizes do not "
                     "come from the 2×2 grid of stage 1 and would shift pixel centres on resize)")


def load_views(grid: str | None, views: Sequence[str] | None, num_views: int | None, background,
               notes: list[str]) -> np.ndarray:
  """`[V, S, S, 3]` float32 views from `--grid` or `--views` (validated, not yet resized);
  `num_views` None (a model without a fixed rig) takes any number of `--views`."""
  if (grid is None) == (not views):
    raise InputError("give exactly one of --grid (a 2×2 grid image) and --views (comma-separated "
                     f"files); got {'both' if grid else 'neither'}")
  if grid is not None:
    if num_views not in (None, 4):
      raise InputError(f"--grid holds 4 views (2×2) but the model takes {num_views}; use --views")
    img = read_image(grid, "--grid", background, notes)
    h, w = img.shape[:2]
    if h != w or h % 4:
      raise InputError(f"--grid {grid} is {w}x{h} pixels; expected a square 2×2 grid whose side "
                       "is a multiple of 4 (two even-sided views per row)")
    s = h // 2
    out = np.stack([img[:s, :s], img[:s, s:], img[s:, :s], img[s:, s:]])
    _check_view_size(out[0], f"--grid {grid} view")
    return out
  if num_views is not None and len(views) != num_views:
    raise InputError(f"--views lists {len(views)} files; the model takes {num_views} views "
                     f"(got {list(views)})")
  imgs = [read_image(p, f"--views[{i}]", background, notes) for i, p in enumerate(views)]
  for i, (p, im) in enumerate(zip(views, imgs)):
    _check_view_size(im, f"--views[{i}] {p}")
  sizes = sorted({im.shape[0] for im in imgs})
  if len(sizes) > 1:
    raise InputError(f"--views have different sizes {[f'{im.shape[1]}x{im.shape[0]}' for im in imgs]}"
                     "; all views must share one size")
  return np.stack(imgs)


def clean_background(views: np.ndarray, background, threshold: float) -> np.ndarray:
  """Generated views → views whose near-background pixels are the background: every pixel
  within `threshold` of `background` on all channels becomes it (0 leaves the views as they
  are). A sampler's faint grain on an empty background otherwise reads as a little foreground
  everywhere, and a reconstructor that lifts silhouettes (models/lrm_lift.py `foreground`: a 0.1
  difference is fully foreground) fills the volume with haze; LRM-style pipelines remove the
  background of generated views before reconstruction for the same reason."""
  if not threshold:
    return views
  v = np.asarray(views, np.float32)
  bg = np.asarray(background, np.float32)
  near = np.all(np.abs(v - bg) <= float(threshold), axis=-1, keepdims=True)
  return np.where(near, bg, v).astype(np.float32)


def resize_views(views: np.ndarray, size: int) -> np.ndarray:
  if views.shape[1] == size:
    return views
  out = [np.asarray(Image.fromarray(images_lib.to_uint8(v)).resize((size, size), Image.LANCZOS),
                    np.float32) / 255.0 for v in views]
  return np.stack(out)


def load_cameras(path: str | None, num_views: int, size: int) -> cameras_lib.Camera:
  """Cameras (batch [V]) at the views' pixel size `size`: `--cameras` or the Instant3D rig."""
  if path is None:
    if num_views != 4:
      raise InputError(f"the default Instant3D rig has 4 views, got {num_views}; pass --cameras "
                       "(one frame per view)")
    return cameras_lib.instant3d_rig(size)
  from data_pipeline import cameras_json
  cams = cameras_json.load_cameras_json(path)
  if cams.batch_shape != (num_views,):
    raise InputError(f"--cameras {path} has {cams.batch_shape[0]} frames; expected one per view "
                     f"({num_views})")
  if (cams.width, cams.height) != (size, size):
    raise InputError(f"--cameras {path} is for {cams.width}x{cams.height} images but the views "
                     f"are {size}x{size}")
  return cams


# ---------------------------------------------------------------------------------------------
# Pieces shared with the text-to-3D pipeline (instant3d_jax/pipeline.py): one compiled program per
# model config and shape, whatever the object.


@functools.partial(jax.jit, static_argnums=0)
def _lrm_apply(m, params, images, cams):
  return lrm_lib.LRM(m).apply({"params": params}, images, cams)


def reconstruct_planes(m, params, views, cams: cameras_lib.Camera) -> np.ndarray:
  """`views [B, V, S, S, 3]` at the model's input size, `cams` (batch [B, V]) → planes
  `[B, 3, R, R, C]` float32 numpy, the B objects in one jitted call (`m`: an `lrm.LRMConfig`)."""
  planes = _lrm_apply(m, params, jnp.asarray(views, jnp.float32), cams)
  return np.asarray(jax.device_get(planes), np.float32)


def save_triplane(path, planes: np.ndarray, config) -> fileio.OutPath:
  """`triplane.npz`: planes `[3, R, R, C]` in the renderer's XY/XZ/YZ order and the model config
  (JSON) that decodes them (`eval_text3d` and other readers rely on these keys). Compressed:
  with `extras.lift_voxels` two thirds of the channels are zeros (the voxels ride in XY only)."""
  buf = io.BytesIO()
  np.savez_compressed(buf, planes=np.asarray(planes, np.float32),
                      plane_order=np.array(["XY", "XZ", "YZ"]), config=np.array(config.to_json()))
  return fileio.write_bytes(path, buf.getvalue())


@functools.partial(jax.jit, static_argnums=(0, 1))
def _render_rgb(m, chunk, params, planes, cam):
  return rendering.render_image(
      lrm_lib.field_fn(m, params, planes), cam, chunk=chunk, outputs=("rgb",),
      **lrm_lib.render_kwargs(m))["rgb"]


def render_frames(m, params, planes, cams: cameras_lib.Camera, *, chunk: int = 0,
                  progress: bool = False, desc: str = "render") -> np.ndarray:
  """RGB images `[T, H, W, 3]` of one object (`planes [3, R, R, C]`) from the cameras (batch
  [T]), one jitted single-view renderer looped over them (deterministic: no jitter)."""
  chunk = chunk or m.render.chunk
  planes = jnp.asarray(planes)
  frames = []
  for k in tqdm(range(cams.batch_shape[0]), desc=desc, disable=not progress, file=sys.stderr):
    frames.append(np.asarray(_render_rgb(m, chunk, params, planes, cams[k])))
  return np.stack(frames)


def save_input_renders(out, m, params, planes, views: np.ndarray, cams: cameras_lib.Camera,
                       resolution: int, *, chunk: int = 0, progress: bool = False) -> dict:
  """`renders/input_K.png` (the object re-rendered from its input cameras at `resolution`) and
  `renders/inputs_vs_renders.png` (inputs above, renders below)."""
  out = fileio.path(out)
  in_cams = cameras_lib.resize_camera(cams, resolution, resolution)
  renders = render_frames(m, params, planes, in_cams, chunk=chunk, progress=progress,
                          desc="input views")
  written = {f"render_input_{i}": images_lib.save_png(out / "renders" / f"input_{i}.png", r)
             for i, r in enumerate(renders)}
  shown = resize_views(np.asarray(views), resolution)
  written["inputs_vs_renders"] = images_lib.save_png(
      out / "renders" / "inputs_vs_renders.png",
      images_lib.make_grid(np.concatenate([shown, renders]), ncols=len(renders)))
  return written


def save_turntable(out, frames: np.ndarray, fps: float) -> dict:
  """`turntable.gif`, `turntable.mp4` and `turntable_strip.png` (8 evenly spaced frames in a row:
  the turntable at a glance, for pages and READMEs)."""
  out = fileio.path(out)
  written = {"turntable_gif": video_lib.save_gif(out / "turntable.gif", frames, fps),
             "turntable_mp4": video_lib.save_mp4(out / "turntable.mp4", frames, fps)}
  pick = np.linspace(0, len(frames), num=min(8, len(frames)), endpoint=False).astype(int)
  written["turntable_strip"] = images_lib.save_png(
      out / "turntable_strip.png", images_lib.make_grid(frames[pick], ncols=len(pick)))
  return written


@functools.partial(jax.jit, static_argnums=(0, 1))
def _query_field(m, which, nerf_params, planes, points):
  feats = lrm_lib.point_features(m, planes, points)
  return m.nerf_mlp().apply({"params": nerf_params}, feats)[which]


def mesh_from_planes(m, params, planes, *, resolution: int, threshold="5.0",
                     progress: bool = False, log=print):
  """Marching cubes of one object's density field on a `resolution`³ grid over the render box at
  the density `threshold` (a number, or 'auto': midway between the grid's 5th and 95th
  percentiles), colours from the field at the vertices → (vertices `[V, 3]`, faces `[F, 3]`,
  colours `[V, 3]` in [0, 1], level). ValueError if the field never crosses the level."""
  box = m.render.box
  planes_j = jnp.asarray(planes)
  nerf = params["nerf"]
  bar = tqdm(total=1, desc="density grid", disable=not progress, file=sys.stderr)

  def tick(k, total):
    bar.total = total
    bar.n = k
    bar.refresh()

  density = mesh_lib.density_grid(functools.partial(_query_field, m, 0, nerf, planes_j),
                                  resolution, box, progress=tick, jit=False)
  bar.close()
  if str(threshold) == "auto":
    lo, hi = np.percentile(density, [5, 95])
    level = float(0.5 * (lo + hi))
    log(f"mesh threshold auto: {level:.4g} (midway between the 5th/95th density percentiles)")
  else:
    level = float(threshold)
  verts, faces = mesh_lib.extract_mesh(density, level, box)
  colors = np.asarray(_query_field(m, 1, nerf, planes_j, jnp.asarray(verts)))
  return verts, faces, colors, level


# ---------------------------------------------------------------------------------------------
# Reconstruction


def _versions() -> dict[str, str]:
  out = {"python": sys.version.split()[0]}
  for p in PACKAGES:
    try:
      out[p] = importlib.metadata.version(p)
    except importlib.metadata.PackageNotFoundError:
      out[p] = "not installed"
  return out


def novel_cameras(seed: int, num: int, resolution: int) -> cameras_lib.Camera:
  rng = np.random.default_rng(seed)
  el = rng.uniform(-10.0, 50.0, num).astype(np.float32)
  az = rng.uniform(0.0, 360.0, num).astype(np.float32)
  return cameras_lib.orbit_camera(el, az, cameras_lib.INSTANT3D_DISTANCE,
                                  cameras_lib.INSTANT3D_FOV, resolution, resolution)


def reconstruct(checkpoint, out, *, grid=None, views=None, cameras=None, config=None, seed=0,
                num_novel=8, resolution=0, turntable_frames=36, fps=12.0, mesh_resolution=128,
                mesh_threshold="5.0", chunk=0, background_threshold=0.0, progress=True,
                log=print) -> dict:
  """Runs the whole command; returns {name: path} of what it wrote (see module docstring)."""
  t_start = time.time()
  timings = {}
  notes: list[str] = []
  thr = float(background_threshold or 0.0)
  if not 0.0 <= thr < 1.0:
    raise InputError(f"--background_threshold must be in [0, 1), got {background_threshold}")
  config, params = load_checkpoint(checkpoint, config)
  m = lrm_lib.LRMConfig.from_config(config)
  # Only a learned per-token attention bias ties the model to its training rig's view count;
  # without it (every model but the CPU demo's) any number of posed views goes in.
  num_views = m.num_views if m.extras.attention_bias else None
  views_np = load_views(grid, views, num_views, m.background, notes)
  if thr:
    notes.append(f"pixels within {thr:g} of the background set to it (--background_threshold)")
    views_np = clean_background(views_np, m.background, thr)
  size = views_np.shape[1]
  cams = load_cameras(cameras, views_np.shape[0], size)
  res = m.input_resolution
  if size != res:
    notes.append(f"views resized from {size}² to the model's input resolution {res}²")
    views_np = resize_views(views_np, res)
    cams = cameras_lib.resize_camera(cams, res, res)
  for n in notes:
    log(f"note: {n}")
  out = fileio.makedirs(out)
  stale = out / "run.json"
  if stale.exists():
    stale.unlink()  # a previous run's marker must not vouch for this run's partial files
  written: dict[str, os.PathLike] = {}

  # Images → triplane.
  t = time.time()
  planes = reconstruct_planes(m, params, views_np[None], jax.tree.map(lambda a: a[None], cams))[0]
  timings["images_to_triplane_s"] = time.time() - t
  log(f"triplane {planes.shape} in {timings['images_to_triplane_s']:.2f} s (compile included)")
  written["triplane"] = save_triplane(out / "triplane.npz", planes, config)
  for i, v in enumerate(views_np):
    written[f"input_{i}"] = images_lib.save_png(out / "inputs" / f"view_{i}.png", v)

  # Rendering: one jitted single-view renderer, looped with a progress bar.
  render_res = resolution or res
  chunk = chunk or m.render.chunk
  render_all = lambda cams_batch, desc: render_frames(m, params, planes, cams_batch, chunk=chunk,
                                                      progress=progress, desc=desc)
  t = time.time()
  written.update(save_input_renders(out, m, params, planes, views_np, cams, render_res,
                                    chunk=chunk, progress=progress))
  if num_novel > 0:
    nov_cams = novel_cameras(seed, num_novel, render_res)
    novel = render_all(nov_cams, "novel views")
    for i, r in enumerate(novel):
      written[f"novel_{i}"] = images_lib.save_png(out / "novel" / f"novel_{i:02d}.png", r)
    from data_pipeline import cameras_json
    with fileio.staged_output(out / "novel" / "cameras.json") as tmp:  # a local-file writer
      cameras_json.write_cameras_json(str(tmp), nov_cams,
                                      files=[f"novel_{i:02d}.png" for i in range(num_novel)])
    written["novel_cameras"] = out / "novel" / "cameras.json"
  frames = render_all(video_lib.turntable_cameras(turntable_frames, render_res), "turntable")
  written.update(save_turntable(out, frames, fps))
  timings["render_s"] = time.time() - t

  # Mesh: density on a grid → marching cubes → colours at the vertices.
  t = time.time()
  verts, faces, colors, level = mesh_from_planes(m, params, planes, resolution=mesh_resolution,
                                                 threshold=mesh_threshold, progress=progress,
                                                 log=log)
  written.update({f"mesh_{k}": v for k, v in mesh_lib.save_mesh(out / "mesh", verts, faces,
                                                                colors).items()})
  timings["mesh_s"] = time.time() - t
  timings["total_s"] = time.time() - t_start
  log(f"mesh: {len(verts)} vertices, {len(faces)} faces at density level {level:.4g}")

  run = {
      "checkpoint": fileio.display(checkpoint),
      "config": json.loads(config.to_json()),
      "seed": seed,
      "inputs": {"grid": grid, "views": list(views) if views else None, "cameras": cameras},
      "flags": {"num_novel": num_novel, "resolution": render_res,
                "turntable_frames": turntable_frames, "fps": fps,
                "mesh_resolution": mesh_resolution, "mesh_threshold": level, "chunk": chunk,
                "background_threshold": thr},
      "notes": notes,
      "mesh": {"vertices": int(len(verts)), "faces": int(len(faces))},
      "timings": timings,
      "device": str(jax.devices()[0]),
      "versions": _versions(),
      "outputs": sorted(str(p.relative_to(out)) for p in written.values()),
  }
  written["run"] = fileio.write_text(out / "run.json", json.dumps(run, indent=2, sort_keys=True))
  log(f"wrote {len(written)} files to {out} in {timings['total_s']:.1f} s")
  return written
