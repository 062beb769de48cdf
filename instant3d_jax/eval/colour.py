"""Colour accuracy of text-to-four-view grids of the procedural world (the shapes-world check of
issue "Stage-1 training").

Each pixel of a view is classified against the world's palette (data_pipeline/primitives.py
`COLOURS`) in RGB, not by hue: brown and orange share a hue and differ only in their RGB
proportions. The world shades an albedo c by a factor s = ambient + (1 − ambient)·max(0, n·l)
(`primitives.shade`, no gamma), so a surface of colour c shows the colours s·c, a segment in RGB
from `shade_range[0]`·c to c. A pixel is

* background when it is within `background_threshold` of white on every channel,
* else the palette colour whose shading segment is nearest (Euclidean RGB distance in [0, 1]),
  if that distance is at most `max_distance`; pixels farther from every segment (edges blended
  with the background, noise of a generated image) are left out.

A view's dominant colour is the colour of most of its classified pixels. `grid_colour_report`
scores captioned grids: single-object captions count as right when the dominant colour of all
four views is the caption's; multi-object captions count as right when every named colour holds
at least `min_share` of the grid's classified pixels (all four views together).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

DEFAULT_SHADE_RANGE = (0.3, 1.0)  # below the world's ambient (0.4, configs/data.py) for margin
DEFAULT_MAX_DISTANCE = 0.12
DEFAULT_BACKGROUND_THRESHOLD = 0.08
DEFAULT_MIN_SHARE = 0.03


def _palette(palette: Mapping[str, Sequence[float]] | None) -> tuple[list[str], np.ndarray]:
  if palette is None:
    from data_pipeline import primitives  # pylint: disable=g-import-not-at-top
    palette = primitives.COLOURS
  names = list(palette)
  return names, np.asarray([palette[n] for n in names], np.float64)


def _as_float(images) -> np.ndarray:
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images.astype(np.float64) / 255.0
  return np.clip(images.astype(np.float64), 0.0, 1.0)


def pixel_colours(images, palette: Mapping[str, Sequence[float]] | None = None, *,
                  shade_range=DEFAULT_SHADE_RANGE, max_distance: float = DEFAULT_MAX_DISTANCE,
                  background_threshold: float = DEFAULT_BACKGROUND_THRESHOLD) -> np.ndarray:
  """Images `[..., H, W, 3]` (uint8, or float in [0, 1]) → palette index per pixel `[..., H, W]`
  (−1: background or no palette colour within `max_distance`; order as `palette`)."""
  _, cols = _palette(palette)
  p = _as_float(images)
  lo, hi = float(shade_range[0]), float(shade_range[1])
  # Nearest point s·c (s clipped to the shade range) for every palette colour c.
  s = np.einsum("...c,kc->...k", p, cols) / np.sum(cols * cols, -1)
  s = np.clip(s, lo, hi)
  diff = p[..., None, :] - s[..., None] * cols
  dist = np.sqrt(np.sum(diff * diff, -1))
  best = np.argmin(dist, -1)
  ok = np.take_along_axis(dist, best[..., None], -1)[..., 0] <= max_distance
  foreground = np.max(1.0 - p, axis=-1) > background_threshold
  return np.where(ok & foreground, best, -1)


def colour_counts(images, palette=None, **kw) -> np.ndarray:
  """Classified pixels per palette colour over the last three axes: `[..., K]` int."""
  names, _ = _palette(palette)
  idx = pixel_colours(images, palette, **kw)
  flat = idx.reshape(idx.shape[:-2] + (-1,))
  return np.stack([(flat == k).sum(-1) for k in range(len(names))], -1)


def dominant_colour(view, palette=None, **kw) -> str | None:
  """The palette colour of most classified pixels of one view `[H, W, 3]` (None: no pixel)."""
  names, _ = _palette(palette)
  counts = colour_counts(view, palette, **kw)
  return names[int(np.argmax(counts))] if counts.sum() else None


def grid_colour_report(grids, captions: Sequence[str], palette=None, *,
                       min_share: float = DEFAULT_MIN_SHARE, **kw) -> dict:
  """Colour accuracy of captioned grids `[N, 2R, 2R, 3]` (module docstring).

  Returns {"single_accuracy", "single_count", "multi_all_present", "multi_count", "items"}:
  the share of single-object captions whose dominant colour is the caption's in all four views,
  the share of multi-object captions with every named colour present (NaN when a kind has no
  caption), their counts, and per grid {"caption", "colours" (named), "dominant" (per view),
  "shares" (named colour → share of the grid's classified pixels), "ok"}.
  """
  from data_pipeline import captions as captions_lib  # pylint: disable=g-import-not-at-top
  from data_pipeline import mv_grids  # pylint: disable=g-import-not-at-top
  names, _ = _palette(palette)
  grids = np.asarray(grids)
  if grids.ndim != 4 or len(grids) != len(captions):
    raise ValueError(f"grid_colour_report: expected grids [N, 2R, 2R, 3] and N captions, found "
                     f"{list(grids.shape)} and {len(captions)} captions")
  items, single, multi = [], [], []
  for grid, caption in zip(grids, captions):
    named = captions_lib.caption_colours(str(caption))
    counts = colour_counts(mv_grids.untile_grid(grid), palette, **kw)  # [4, K]
    dominant = [names[int(np.argmax(c))] if c.sum() else None for c in counts]
    total = counts.sum()
    shares = {c: (float(counts[:, names.index(c)].sum() / total) if total else 0.0)
              for c in named}
    if len(named) == 1:
      ok = all(d == named[0] for d in dominant)
      single.append(ok)
    else:
      ok = all(v >= min_share for v in shares.values())
      multi.append(ok)
    items.append({"caption": str(caption), "colours": named, "dominant": dominant,
                  "shares": shares, "ok": bool(ok)})
  mean = lambda x: float(np.mean(x)) if x else float("nan")  # noqa: E731
  return {"single_accuracy": mean(single), "single_count": len(single),
          "multi_all_present": mean(multi), "multi_count": len(multi), "items": items}
