"""Contact sheets: rows of views (optionally labelled) written as one PNG."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw


def _to_uint8(img: np.ndarray) -> np.ndarray:
  img = np.asarray(img)
  if img.dtype != np.uint8:
    img = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
  if img.ndim == 2:
    img = np.repeat(img[..., None], 3, -1)
  if img.shape[-1] == 4:  # RGBA → over white
    a = img[..., 3:].astype(np.float32) / 255.0
    img = np.round(img[..., :3] * a + 255.0 * (1.0 - a)).astype(np.uint8)
  return img


def contact_sheet(rows: Sequence[Sequence[np.ndarray]], path: str | None = None, *,
                  row_labels: Sequence[str] | None = None, title: str = "", scale: int = 1,
                  pad: int = 4) -> np.ndarray:
  """Lays out `rows` of images (`[H, W, 3|4]` float in [0, 1] or uint8; RGBA is put over white)
  on a light-grey sheet, one text line per row label and an optional title; nearest-neighbour
  upscaled by `scale`. Writes a PNG to `path` (`export.images.save_png`) when given; returns the
  sheet `[H', W', 3]` uint8."""
  rows = [[_to_uint8(im) for im in row] for row in rows]
  if not rows or not all(rows):
    raise ValueError("contact_sheet: needs at least one non-empty row of images")
  h = max(im.shape[0] for row in rows for im in row) * scale
  w = max(im.shape[1] for row in rows for im in row) * scale
  text_h = 14
  ncols = max(len(r) for r in rows)
  labels = list(row_labels) if row_labels else [""] * len(rows)
  top = text_h + pad if title else 0
  H = top + sum((text_h if lab else 0) + h + pad for lab in labels) + pad
  W = ncols * (w + pad) + pad
  sheet = Image.new("RGB", (W, H), (235, 235, 235))
  draw = ImageDraw.Draw(sheet)
  if title:
    draw.text((pad, pad), title, fill=(0, 0, 0))
  y = top + pad
  for row, lab in zip(rows, labels):
    if lab:
      draw.text((pad, y), lab, fill=(40, 40, 40))
      y += text_h
    for c, im in enumerate(row):
      tile = Image.fromarray(im).resize((im.shape[1] * scale, im.shape[0] * scale),
                                        Image.NEAREST)
      sheet.paste(tile, (pad + c * (w + pad), y))
    y += h + pad
  out = np.asarray(sheet)
  if path:
    from instant3d_jax.export import images  # the project's one PNG writer (local or gs://)
    images.save_png(path, out)
  return out


# Eval-rig views shown by `object_contact_sheet`: (elevation index, azimuth index) into the
# 4 × 16 GSO grid (elevations 0/20/40/60, azimuths in steps of 22.5°).
EVAL_VIEWS = ((0, 0), (0, 4), (1, 2), (1, 10), (2, 6), (2, 12), (3, 0), (3, 8))


def object_contact_sheet(data_dir: str, path: str, *, split: str = "test", index: int = 0,
                         scale: int = 3) -> dict:
  """Contact sheet of object `index` of `split`: its 4 rig views, then 8 eval-rig views if it has
  them, titled with its id and caption. Returns the record."""
  from data_pipeline import records  # pylint: disable=g-import-not-at-top
  rec = records.RecordSource(data_dir, split)[index]
  rows = [list(records.group_rgba(rec, "rig"))]
  labels = ["Instant3D rig: elev 20, az 0 / 90 / 180 / 270"]
  if "eval" in rec["groups"]:
    views = [16 * e + a for e, a in EVAL_VIEWS]
    rows.append(list(records.group_rgba(rec, "eval", views)))
    labels.append("GSO eval rig: " + ", ".join(f"e{[0, 20, 40, 60][e]} a{a * 22.5:g}"
                                               for e, a in EVAL_VIEWS))
  contact_sheet(rows, path, row_labels=labels, scale=scale,
                title=f"{rec['object_id']} ({split}): \"{rec['caption']}\"")
  return rec
