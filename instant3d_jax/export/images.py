"""Image grids and PNG files: the project's one PNG writer.

`make_grid(images [N, H, W, 3], ncols, pad)` tiles images row-major into one array;
`save_png(path, image)` writes a PNG to a local or `gs://…` path all-or-nothing (locally a temp
name then rename; on a bucket one object upload), so a crash never leaves a truncated PNG under
the final name; `make_labelled_grid` adds a text strip above each tile (the trainer's
"inputs | predictions | targets" grids). Images are float in [0, 1] (clipped) or uint8.
The trainer's image logs, the reconstruct/text_to_3d outputs and the data pipeline's contact sheets
all write through `save_png`.
"""
from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from instant3d_jax import fileio


def to_uint8(image) -> np.ndarray:
  """float [0, 1] (clipped, rounded) or uint8 → uint8, same shape."""
  a = np.asarray(image)
  if a.dtype == np.uint8:
    return a
  if not np.issubdtype(a.dtype, np.floating):
    raise ValueError(f"image dtype must be uint8 or float in [0, 1], got {a.dtype}")
  return np.round(np.clip(np.nan_to_num(a, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)


def make_grid(images, ncols: int | None = None, pad: int = 2, pad_value: float = 1.0) -> np.ndarray:
  """`images [N, H, W, C]` (C = 1, 3 or 4) → one `[rows·(H+pad)+pad, ncols·(W+pad)+pad, C]` array.

  Tiles run row-major (left to right, then down); empty cells and the `pad`-pixel borders are
  `pad_value` (in [0, 1]; ×255 for uint8 input). `ncols` defaults to N (one row).
  """
  a = np.asarray(images)
  if a.ndim != 4 or a.shape[-1] not in (1, 3, 4):
    raise ValueError(f"make_grid expects images [N, H, W, C] with C in (1, 3, 4), got shape "
                     f"{a.shape}")
  n, h, w, c = a.shape
  if n == 0:
    raise ValueError("make_grid got no images (N = 0)")
  ncols = n if ncols is None else int(ncols)
  if ncols < 1 or pad < 0:
    raise ValueError(f"make_grid needs ncols >= 1 and pad >= 0, got ncols={ncols}, pad={pad}")
  nrows = -(-n // ncols)
  fill = pad_value * 255 if a.dtype == np.uint8 else pad_value
  grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), fill, a.dtype)
  for i in range(n):
    r, col = divmod(i, ncols)
    y, x = pad + r * (h + pad), pad + col * (w + pad)
    grid[y:y + h, x:x + w] = a[i]
  return grid


def _font(size: int):
  try:
    return ImageFont.load_default(size=size)
  except TypeError:  # Pillow < 10.1 has no sized default font
    return ImageFont.load_default()


def make_labelled_grid(images, labels: Sequence[str], ncols: int | None = None, pad: int = 2,
                       label_height: int = 12) -> np.ndarray:
  """`make_grid` with a text strip of height `label_height` above each tile; uint8 output.

  `labels` has one string per image (e.g. "input 0", "pred", "target").
  """
  a = to_uint8(images)
  if a.ndim != 4:
    raise ValueError(f"make_labelled_grid expects images [N, H, W, C], got shape {a.shape}")
  if len(labels) != a.shape[0]:
    raise ValueError(f"make_labelled_grid got {a.shape[0]} images but {len(labels)} labels")
  n, h, w, c = a.shape
  tiles = np.full((n, h + label_height, w, c), 255, np.uint8)
  tiles[:, label_height:] = a
  font = _font(max(label_height - 2, 6))
  for i, text in enumerate(labels):
    strip = Image.fromarray(tiles[i, :label_height, :, :3].copy())
    ImageDraw.Draw(strip).text((1, 0), str(text), fill=(0, 0, 0), font=font)
    tiles[i, :label_height, :, :3] = np.asarray(strip)
  return make_grid(tiles, ncols, pad, 1.0)


def png_bytes(image) -> bytes:
  """`image [H, W, C]` (C = 1, 3, 4; float [0, 1] or uint8) encoded as PNG."""
  a = to_uint8(image)
  if a.ndim == 3 and a.shape[-1] == 1:
    a = a[..., 0]
  if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
    raise ValueError(f"save_png expects an image [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got "
                     f"shape {a.shape}")
  buf = io.BytesIO()
  Image.fromarray(a).save(buf, format="PNG")
  return buf.getvalue()


def save_png(path: str | os.PathLike, image) -> fileio.OutPath:
  """Writes `image [H, W, C]` (C = 1, 3, 4; float [0, 1] or uint8) as a PNG file at `path`
  (local or `gs://…`), all-or-nothing; parent folders are created. Returns the path."""
  return fileio.write_bytes(path, png_bytes(image))


def screenshot_page(page: str, png: str) -> str | None:
  """Headless Chromium's screenshot of a local HTML file (e.g. the `text_to_3d` run's index.html)
  into `png`; None (and no file) where no Chromium is installed."""
  import shutil
  import subprocess
  exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
              if shutil.which(n)), None)
  if exe is None:
    return None
  subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                  "--window-size=1400,2400", "--virtual-time-budget=10000",
                  f"--screenshot={os.path.abspath(png)}", "file://" + os.path.abspath(page)],
                 capture_output=True, timeout=120, check=False)
  return png if os.path.exists(png) else None


__all__ = ["to_uint8", "make_grid", "make_labelled_grid", "png_bytes", "save_png",
           "screenshot_page"]
