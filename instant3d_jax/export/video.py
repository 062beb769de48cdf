"""Turntable cameras and GIF / MP4 writing (imageio; MP4 through imageio-ffmpeg, H.264).

Frames are `[T, H, W, 3]` float in [0, 1] or uint8. Files are written to a local temporary
file (the encoders write local files only) that is renamed, or uploaded when the destination is
`gs://…`, once complete (`fileio.staged_output`).
"""
from __future__ import annotations

import os
import warnings

import imageio.v2 as imageio
import numpy as np

from instant3d_jax import cameras as cameras_lib
from instant3d_jax import fileio
from instant3d_jax.export.images import to_uint8


def turntable_cameras(num_frames: int, resolution: int,
                      elevation_deg: float = cameras_lib.INSTANT3D_ELEVATION,
                      distance: float = cameras_lib.INSTANT3D_DISTANCE,
                      fov_deg: float = cameras_lib.INSTANT3D_FOV,
                      start_azimuth_deg: float = 0.0) -> cameras_lib.Camera:
  """`num_frames` cameras (batch [T]) circling the object at one elevation, 360°/T apart."""
  az = start_azimuth_deg + np.arange(num_frames, dtype=np.float32) * (360.0 / num_frames)
  return cameras_lib.orbit_camera(elevation_deg, az, distance, fov_deg, resolution, resolution)


def _frames(frames) -> np.ndarray:
  f = to_uint8(frames)
  if f.ndim != 4 or f.shape[-1] != 3 or f.shape[0] == 0:
    raise ValueError(f"video frames must be [T >= 1, H, W, 3], got shape {f.shape}")
  return f


def save_gif(path: str | os.PathLike, frames, fps: float = 12.0) -> fileio.OutPath:
  f = _frames(frames)
  with fileio.staged_output(path) as tmp:
    imageio.mimsave(tmp, list(f), format="GIF", duration=1000.0 / fps, loop=0)
  return fileio.native(path)


def save_mp4(path: str | os.PathLike, frames, fps: float = 24.0) -> fileio.OutPath:
  """H.264 / yuv420p (plays in browsers); odd sizes are padded by edge replication to even."""
  f = _frames(frames)
  ph, pw = f.shape[1] % 2, f.shape[2] % 2
  if ph or pw:
    f = np.pad(f, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
  with fileio.staged_output(path) as tmp, warnings.catch_warnings():
    # imageio-ffmpeg starts ffmpeg with subprocess (fork + exec at once): Python's warning about
    # forking a multithreaded (JAX) process does not apply to an immediate exec.
    warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
    with imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                            pixelformat="yuv420p", macro_block_size=1,
                            output_params=["-crf", "18"]) as w:
      for frame in f:
        w.append_data(frame)
  return fileio.native(path)


__all__ = ["turntable_cameras", "save_gif", "save_mp4"]
