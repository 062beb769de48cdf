"""Convention checks for imported render sets without meshes: do the cameras fit the images?

`check_object(object_id, alphas, c2w, K)` carves a visual hull from the masks (alpha > 0.5) of
ALL the object's views on a coarse grid (`GRID`³ voxel centres over [-EXTENT, EXTENT]³; a voxel
stays when it projects, in front of the camera and inside the image, onto the mask of every
view), then checks:

  hull_iou   the hull ray-cast back into each view matches that view's mask: IoU ≥ `IOU_MIN`
             with a one-pixel tolerance (`tolerant_iou`: the coarse grid's quantisation would
             fail small or thin silhouettes otherwise).
             Catches cameras that disagree with the images: OpenGL axes read as OpenCV (each
             camera looks away from the object: the hull is empty), world-to-camera read as
             camera-to-world, mirrored images, a wrong focal length.
  scale      the hull fills the normalised volume: its bounding radius (largest |p|) ≥
             `RADIUS_MIN`, and the object's largest coordinate (max |p|∞) ≤ `BOX_MAX`, where
             the object's is the lower bound the masks prove: every mask pixel's ray meets the
             object inside the hull, so the object reaches at least the largest over mask
             pixels of the smallest |p|∞ of the hull along the ray. (Not the hull's own largest
             coordinate: a hull is an outer bound, and views all on one side leave it uncarved
             on the other; OpenLRM's own sampler put 8 of 8 cameras at y < 0 in the fixtures,
             hull 1.18 for an object in [-1, 1]³, tests/fixtures/render_formats.) An object
             normalised into the box [-1, 1]³ (longest half-side 1: radius ≥ 1) or into the unit
             ball (radius 1) passes; half of either (radius ≤ √3/2 ≈ 0.87 for a box-normalised
             cube, 0.5 for a ball) fails, as does an object larger than the box. (The issue's
             suggestion, radius within [0.3, 1.05], would flag every box-normalised object whose
             corners leave the unit ball, OpenLRM's and zero123's included, and pass half scale.)
  image_up   the world's +z projects upwards in every image: for each camera not looking within
             `UP_SKIP_DEG` of straight up or down, the image direction of +z at the principal
             point is within 60° of image-up (cos ≥ `UP_MIN_COS`). Catches a y-up world read as
             z-up and an upside-down world (a rotation the hull cannot see).

Masks are first reduced to at most `MAX_SIDE` pixels a side (area average, intrinsics scaled), so
a 512² object costs the same as a 64² one (~0.1 s for 12 views). A failure is a `Failure`
(object id, check name, one-line detail); the importer reports them without stopping.
"""
from __future__ import annotations

import dataclasses

import numpy as np

GRID = 48
EXTENT = 1.2
IOU_MIN = 0.8
RADIUS_MIN = 0.9
BOX_MAX = 1.15
UP_MIN_COS = 0.5
UP_SKIP_DEG = 10.0
MAX_SIDE = 64
CHECKS = ("hull_iou", "scale", "image_up")


@dataclasses.dataclass(frozen=True)
class Failure:
  object_id: str
  check: str
  detail: str

  def line(self) -> str:
    return f"{self.object_id}\t{self.check}\t{self.detail}"


def reduce_masks(alphas: np.ndarray, K: np.ndarray, max_side: int = MAX_SIDE
                 ) -> tuple[np.ndarray, np.ndarray]:
  """`alphas [V, H, W]` in [0, 1] → (bool masks [V, h, w] with h, w ≤ max_side, K scaled)."""
  alphas = np.asarray(alphas, np.float32)
  V, H, W = alphas.shape
  f = max(1, int(np.ceil(max(H, W) / max_side)))
  K = np.asarray(K, np.float64).copy()
  if f > 1:
    h, w = H // f, W // f
    alphas = alphas[:, :h * f, :w * f].reshape(V, h, f, w, f).mean((2, 4))
    K[:, :2, :] /= f
  return alphas > 0.5, K


def _w2c(c2w: np.ndarray) -> np.ndarray:
  return np.linalg.inv(np.asarray(c2w, np.float64))


def carve(masks: np.ndarray, c2w: np.ndarray, K: np.ndarray, grid: int = GRID,
          extent: float = EXTENT) -> np.ndarray:
  """Visual hull `[grid]*3` bool (index order x, y, z) of bool `masks [V, h, w]`."""
  coords = (np.arange(grid) + 0.5) * (2 * extent / grid) - extent
  pts = np.stack(np.meshgrid(coords, coords, coords, indexing="ij"), -1).reshape(-1, 3)
  keep = np.ones(len(pts), bool)
  _, h, w = masks.shape
  for mask, w2c, k in zip(masks, _w2c(c2w), K):
    idx = np.nonzero(keep)[0]
    p = pts[idx] @ w2c[:3, :3].T + w2c[:3, 3]
    z = p[:, 2]
    front = z > 1e-6
    zs = np.where(front, z, 1.0)
    u = k[0, 0] * p[:, 0] / zs + k[0, 2]
    v = k[1, 1] * p[:, 1] / zs + k[1, 2]
    col, row = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    inside = front & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    hit = np.zeros(len(idx), bool)
    hit[inside] = mask[row[inside], col[inside]]
    keep[idx[~hit]] = False
  return keep.reshape(grid, grid, grid)


def render_hull(occ: np.ndarray, c2w: np.ndarray, K: np.ndarray, h: int, w: int,
                extent: float = EXTENT, return_reach: bool = False):
  """Ray-casts the occupancy grid into each view → bool `[V, h, w]` (nearest-voxel lookup,
  samples at half a voxel along each ray through the grid's box). With `return_reach`, also
  float `[V, h, w]`: per pixel, the smallest largest-coordinate |p|∞ of the hull's samples along
  its ray (inf where the ray misses the hull)."""
  n = occ.shape[0]
  vox = 2 * extent / n
  steps = int(np.ceil(2 * extent * np.sqrt(3) / (0.5 * vox)))
  vv, uu = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
  out = np.zeros((len(c2w), h, w), bool)
  reach = np.full((len(c2w), h, w), np.inf)
  if not occ.any():
    return (out, reach) if return_reach else out
  for i, (m, k) in enumerate(zip(np.asarray(c2w, np.float64), K)):
    d_cam = np.stack([(uu - k[0, 2]) / k[0, 0], (vv - k[1, 2]) / k[1, 1], np.ones_like(uu)], -1)
    d = d_cam.reshape(-1, 3) @ m[:3, :3].T
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    o = m[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
      t0 = (-extent - o) / d
      t1 = (extent - o) / d
    tn = np.nanmax(np.minimum(t0, t1), -1).clip(0)
    tf = np.nanmin(np.maximum(t0, t1), -1)
    valid = tf > tn
    if not valid.any():
      continue
    s = (np.arange(steps) + 0.5) / steps
    t = tn[valid, None] + (tf - tn)[valid, None] * s                   # [R, S]
    p = o + d[valid, None, :] * t[..., None]                            # [R, S, 3]
    ijk = np.clip(np.floor((p + extent) / vox).astype(np.int64), 0, n - 1)
    occupied = occ[ijk[..., 0], ijk[..., 1], ijk[..., 2]]
    flat = np.zeros(h * w, bool)
    flat[np.nonzero(valid)[0]] = occupied.any(-1)
    out[i] = flat.reshape(h, w)
    if return_reach:
      near = np.full(h * w, np.inf)
      near[np.nonzero(valid)[0]] = np.where(occupied, np.abs(p).max(-1), np.inf).min(-1)
      reach[i] = near.reshape(h, w)
  return (out, reach) if return_reach else out


def tolerant_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Per view IoU of bool `[V, h, w]` masks with a one-pixel tolerance: a pixel of one mask counts
  as matched when the other mask holds it or a neighbour (3×3); the matched fraction D (a Dice
  score) is reported as the IoU it equals for exact masks, D / (2 − D). 1 for two empty masks."""
  matched = (a & _grow(b)).sum((1, 2)) + (b & _grow(a)).sum((1, 2))
  total = a.sum((1, 2)) + b.sum((1, 2))
  d = np.where(total > 0, matched / np.maximum(total, 1), 1.0)
  return d / (2.0 - d)


def _grow(m: np.ndarray) -> np.ndarray:
  """3×3 binary dilation of `[V, h, w]` bool masks."""
  p = np.pad(m, ((0, 0), (1, 1), (1, 1)))
  h, w = m.shape[1:]
  return np.logical_or.reduce([p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)])


def image_up_cosines(c2w: np.ndarray) -> np.ndarray:
  """Per view: cos of the angle between the image direction of world +z (at the principal
  point) and image-up; NaN for cameras within `UP_SKIP_DEG` of looking straight up or down."""
  R = np.asarray(c2w, np.float64)[:, :3, :3]
  zc = R[:, 2, :]                              # world +z in camera coordinates (rows of Rᵀ)
  lateral = np.linalg.norm(zc[:, :2], axis=-1)
  cos = -zc[:, 1] / np.maximum(lateral, 1e-12)   # image-up is −y (OpenCV)
  return np.where(lateral < np.sin(np.deg2rad(UP_SKIP_DEG)), np.nan, cos)


def check_object(object_id: str, alphas: np.ndarray, c2w: np.ndarray, K: np.ndarray,
                 names=None) -> tuple[list[Failure], dict]:
  """Runs the three checks on one object → (failures, stats). `alphas [V, H, W]` in [0, 1]."""
  names = list(names) if names is not None else [str(i) for i in range(len(c2w))]
  masks, Ks = reduce_masks(alphas, K)
  occ = carve(masks, c2w, Ks)
  _, h, w = masks.shape
  rendered, reach = render_hull(occ, c2w, Ks, h, w, return_reach=True)
  iou = tolerant_iou(rendered, masks)
  coords = (np.arange(GRID) + 0.5) * (2 * EXTENT / GRID) - EXTENT
  pts = np.stack(np.meshgrid(coords, coords, coords, indexing="ij"), -1)[occ]
  radius = float(np.linalg.norm(pts, axis=-1).max()) if len(pts) else 0.0
  box = float(np.abs(pts).max()) if len(pts) else 0.0
  # The object meets every mask pixel's ray inside the hull: its largest coordinate is at least
  # the largest, over mask pixels, of the smallest |p|∞ of the hull along the ray.
  seen = masks & rendered
  box_min = float(reach[seen].max()) if seen.any() else 0.0
  up = image_up_cosines(c2w)
  failures = []
  bad = np.nonzero(iou < IOU_MIN)[0]
  if len(bad):
    worst = ", ".join(f"{names[i]} {iou[i]:.2f}" for i in bad[np.argsort(iou[bad])][:3])
    failures.append(Failure(object_id, "hull_iou", (
        f"{len(bad)} of {len(iou)} views' masks disagree with the visual hull of all views "
        f"(IoU < {IOU_MIN}; worst: {worst}; hull {int(occ.sum())} of {GRID}³ voxels): cameras "
        "do not fit the images (OpenGL axes read as OpenCV? world-to-camera read as "
        "camera-to-world? mirrored images? wrong FOV?)")))
  if not (radius >= RADIUS_MIN and box_min <= BOX_MAX):
    failures.append(Failure(object_id, "scale", (
        f"visual hull radius {radius:.2f} (expected ≥ {RADIUS_MIN}: normalised into [-1, 1]³ or "
        f"the unit ball), the object's largest coordinate at least {box_min:.2f} (expected ≤ "
        f"{BOX_MAX}): "
        + ("the object is too small (wrong --scale? [-0.5, 0.5]³ data read as [-1, 1]³?)"
           if radius < RADIUS_MIN else "the object does not fit the box [-1, 1]³ (wrong --scale?)")
        )))
  up_bad = np.nonzero(up < UP_MIN_COS)[0]
  if len(up_bad):
    worst = ", ".join(f"{names[i]} {np.degrees(np.arccos(np.clip(up[i], -1, 1))):.0f}°"
                      for i in up_bad[np.argsort(up[up_bad])][:3])
    failures.append(Failure(object_id, "image_up", (
        f"{len(up_bad)} of {int(np.sum(~np.isnan(up)))} views do not have world +z pointing up "
        f"in the image (angle from image-up > 60°; worst: {worst}): a y-up or upside-down "
        "world?")))
  stats = {"iou_min": float(iou.min()) if len(iou) else 1.0, "radius": radius, "box": box,
           "box_min": box_min,
           "hull_voxels": int(occ.sum())}
  return failures, stats
