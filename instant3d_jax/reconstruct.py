"""Stage 2 as a command: four posed views → triplane NeRF, renders, turntable and a mesh.

    python -m instant3d_jax.reconstruct --checkpoint PATH \
        (--grid grid.png | --views v0.png,v1.png,v2.png,v3.png) [--cameras cams.json] \
        [--seed N] [--num_novel N] --out OUT

PATH is a training workdir (latest step), a step directory, or an exported `.safetensors`
(`python -m instant3d_jax.export`), local or `gs://…` (read by `train.checkpoint.load`); the
config travels with every checkpoint, `--config` overrides it (its model must match the
checkpoint's shapes, else the mismatches are listed). OUT may be local or `gs://…` too.

Inputs
  --grid     one image holding the 2×2 grid of stage 1 (top-left az 0°, top-right 90°,
             bottom-left 180°, bottom-right 270°; docs/design.md §3), split into 4 views;
  --views    the views as separate files, in camera order;
  --cameras  a cameras JSON (schema of data_pipeline/cameras_json.py) with one frame per view in
             the same order; default: the Instant3D rig (elevation 20°, azimuths 0/90/180/270°,
             distance 2.7, FOV 50°).
Conversions (documented, printed as notes): RGBA / LA / palette-with-transparency images are
composited onto the background the model was trained with (`model.background`); views of
another size than `model.input_resolution` are resized (Lanczos) and their cameras scaled with
them. Errors (exit status 2, message naming the file): a wrong number of views, non-square or
odd-sized views, views of different sizes, grayscale images, unreadable files, a cameras file
whose count or size disagrees with the views, and a config that does not match the checkpoint.

Outputs in OUT (each file written all-or-nothing, see instant3d_jax/fileio.py; `run.json` last,
so its presence marks a complete run): `triplane.npz` (planes [3, R, R, C] in the renderer's
XY/XZ/YZ order, and the model config), `inputs/view_K.png` (the preprocessed inputs),
`renders/input_K.png` (the inputs re-rendered from their cameras), `renders/inputs_vs_renders.png`,
`novel/novel_KK.png` with `novel/cameras.json` (random viewpoints from `--seed`: elevation
U[-10°, 50°], azimuth U[0, 360°), rig distance and FOV), `turntable.gif` and `turntable.mp4`,
`mesh.glb` / `mesh.obj` / `mesh.ply` (marching cubes on the density field, vertex colours from
the field; GLB y-up), and `run.json` (config, checkpoint, seed, flags, package versions, timings).
Rendering is deterministic (bin midpoints, no jitter); the seed only picks the novel viewpoints.
"""
from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from instant3d_jax import cli
from instant3d_jax import reconstruction

def main(argv):
  del argv
  if not _CHECKPOINT.value or not _OUT.value:
    raise app.UsageError("--checkpoint and --out are required")
  # Project errors (InputError, WeightsError, CheckpointError, DataError, …) print as one line
  # with exit status 2 (cli.run).
  reconstruction.reconstruct(_CHECKPOINT.value, _OUT.value, grid=_GRID.value, views=_VIEWS.value,
              cameras=_CAMERAS.value, config=_CONFIG.value, seed=_SEED.value,
              num_novel=_NUM_NOVEL.value, resolution=_RESOLUTION.value,
              turntable_frames=_FRAMES.value, fps=_FPS.value,
              mesh_resolution=_MESH_RES.value, mesh_threshold=_MESH_THRESHOLD.value,
              chunk=_CHUNK.value)


if __name__ == "__main__":
  _CHECKPOINT = flags.DEFINE_string("checkpoint", None, "workdir, step directory or .safetensors "
                                    "(local or gs://)")
  _GRID = flags.DEFINE_string("grid", None, "a 2×2 grid image of the 4 views")
  _VIEWS = flags.DEFINE_list("views", None, "the views as separate image files, camera order")
  _CAMERAS = flags.DEFINE_string("cameras", None, "cameras JSON; default: the Instant3D rig")
  _SEED = flags.DEFINE_integer("seed", 0, "picks the novel viewpoints")
  _NUM_NOVEL = flags.DEFINE_integer("num_novel", 8, "novel views to render")
  _OUT = flags.DEFINE_string("out", None, "output folder (local or gs://)")
  _RESOLUTION = flags.DEFINE_integer("resolution", 0, "render resolution (0: model input size)")
  _FRAMES = flags.DEFINE_integer("turntable_frames", 36, "turntable frames")
  _FPS = flags.DEFINE_float("fps", 12.0, "turntable frames per second")
  _MESH_RES = flags.DEFINE_integer("mesh_resolution", 128, "marching-cubes grid size per axis")
  _MESH_THRESHOLD = flags.DEFINE_string(
      "mesh_threshold", "5.0", "density level of the surface, or 'auto' (midway between the 5th "
      "and 95th percentiles of the grid: for untrained or unusual models)")
  _CHUNK = flags.DEFINE_integer("chunk", 0, "rays per render chunk (0: model.render.chunk)")
  _CONFIG = config_flags.DEFINE_config_file("config", None, "override the checkpoint's config",
                                            lock_config=False)
  cli.run(main)
