"""The procedural world: coloured primitives, exact analytic ray casting, shading, captions.

Every primitive lives in its own local frame (axis z, centred at the origin) and is placed in the
world by a rotation `R` (local → world) and a centre `c`, so a world ray (o, d) becomes the local
ray (Rᵀ(o − c), Rᵀd). Intersections are exact:

  * sphere, cylinder, cone: the ray's interval inside a quadric (roots of A t² + 2B t + C),
    intersected with the slab |z| ≤ h where the primitive has caps; the entry point of the
    resulting convex interval is the hit, its normal comes from whichever constraint was entered
    last (quadric surface or cap);
  * box: the classic slab method;
  * torus: the quartic (|p|² + R² − r²)² = 4R²(x² + y²), written around the ray's point of
    closest approach to the torus centre (t = t₀ + s) so it is depressed (no cubic term) and
    well scaled, solved as the eigenvalues of its companion matrix in float64 and polished by
    Newton steps. The smallest real root in front of the camera is the hit.

Shading is view-independent on purpose (a fixed world-space key light + ambient, no specular), so
the same surface point has the same colour in every view — the radiance a NeRF can represent.
Everything is vectorised numpy over rays; `[N, 3]` arrays throughout.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Sequence

import numpy as np

SHAPES = ("sphere", "box", "cylinder", "cone", "torus")
# The caption nouns of each shape, its plain noun first: a box with equal sides is a "cube"
# (`caption`), a torus a "ring". The one home of this map: captions.NOUN_SHAPE (the inverse)
# and the word tokenizer's vocabulary (diffusion/word_tokenizer.py) derive from it.
SHAPE_NOUNS = {"sphere": ("sphere",), "box": ("box", "cube"), "cylinder": ("cylinder",),
               "cone": ("cone",), "torus": ("ring",)}

# Named colours for captions: name → linear-ish sRGB in [0, 1]. No white/near-white (the background
# is white) and no black (the ambient term would make it indistinguishable from shadow).
COLOURS = {
    "red": (0.85, 0.12, 0.10),
    "green": (0.15, 0.65, 0.20),
    "blue": (0.12, 0.25, 0.85),
    "yellow": (0.95, 0.82, 0.10),
    "orange": (0.98, 0.50, 0.08),
    "purple": (0.52, 0.20, 0.70),
    "cyan": (0.10, 0.75, 0.80),
    "pink": (0.95, 0.45, 0.65),
    "brown": (0.50, 0.30, 0.12),
    "grey": (0.50, 0.50, 0.50),
}

_EPS = 1e-9


@dataclasses.dataclass(frozen=True)
class Primitive:
  """One primitive. `params` are in its local frame (see `bounding_radius` for their meaning).

  sphere: (r,); box: (hx, hy, hz) half-extents; cylinder: (r, h) radius, half-height;
  cone: (r, h) base radius at z = −h, apex at z = +h; torus: (R, r) major, minor radius.
  """
  shape: str
  params: tuple[float, ...]
  center: tuple[float, float, float]
  rotation: tuple[tuple[float, ...], ...]  # 3×3, local → world
  colour: str
  size_word: str = ""  # "small" / "large" / "" for captions

  @property
  def rgb(self) -> np.ndarray:
    return np.asarray(COLOURS[self.colour], np.float64)

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @staticmethod
  def from_json(d: dict) -> "Primitive":
    return Primitive(shape=d["shape"], params=tuple(d["params"]), center=tuple(d["center"]),
                     rotation=tuple(tuple(r) for r in d["rotation"]), colour=d["colour"],
                     size_word=d.get("size_word", ""))


def bounding_radius(shape: str, params: Sequence[float]) -> float:
  """Radius of a sphere around the local origin that contains the primitive."""
  if shape == "sphere":
    return params[0]
  if shape == "box":
    return float(np.linalg.norm(params))
  if shape in ("cylinder", "cone"):
    return float(np.hypot(params[0], params[1]))
  if shape == "torus":
    return params[0] + params[1]
  raise ValueError(f"unknown primitive shape {shape!r}; expected one of {SHAPES}")


# ------------------------------------------------------------------------------------------------
# Ray–primitive intersection in the local frame. Each returns (t [N], normal [N, 3]); t = inf on a
# miss. Rays start outside the primitive (cameras sit far outside [-1, 1]³).


def _quadric_pieces(A, B, C):
  """Where A t² + 2B t + C ≤ 0 along each ray: up to two intervals (lo1, hi1), (lo2, hi2).

  A > 0: one interval between the roots; A < 0: two half-lines outside the roots (or the whole
  line when there are no roots); empty intervals have lo > hi.
  """
  A = np.where(np.abs(A) < _EPS, _EPS, A)  # ray parallel to a cone generator: tiny perturbation
  disc = B * B - A * C
  sq = np.sqrt(np.maximum(disc, 0.0))
  r1, r2 = (-B - sq) / A, (-B + sq) / A
  lo_root, hi_root = np.minimum(r1, r2), np.maximum(r1, r2)
  inf = np.full_like(A, np.inf)
  has = disc >= 0
  pos = A > 0
  lo1 = np.where(pos, np.where(has, lo_root, inf), np.where(has, -inf, -inf))
  hi1 = np.where(pos, np.where(has, hi_root, -inf), np.where(has, lo_root, inf))
  lo2 = np.where(pos | ~has, inf, hi_root)
  hi2 = np.where(pos | ~has, -inf, inf)
  return (lo1, hi1), (lo2, hi2)


def _slab(o, d, h):
  """Interval of t where |o + t d| ≤ h along one axis (d may be 0)."""
  with np.errstate(divide="ignore", invalid="ignore"):
    t1 = (-h - o) / d
    t2 = (h - o) / d
  inside = np.abs(o) <= h
  lo = np.where(d == 0, np.where(inside, -np.inf, np.inf), np.minimum(t1, t2))
  hi = np.where(d == 0, np.where(inside, np.inf, -np.inf), np.maximum(t1, t2))
  return lo, hi


def _entry_with_cap(pieces, slab_lo, slab_hi):
  """Entry t of (quadric pieces ∩ slab) and whether the entry is through the cap (slab)."""
  best_t = np.full_like(slab_lo, np.inf)
  through_cap = np.zeros(slab_lo.shape, bool)
  for lo, hi in pieces:
    a, b = np.maximum(lo, slab_lo), np.minimum(hi, slab_hi)
    ok = (a <= b) & (a > 0) & (a < best_t)
    best_t = np.where(ok, a, best_t)
    through_cap = np.where(ok, slab_lo > lo, through_cap)
  return best_t, through_cap


def intersect_sphere(o, d, params):
  (r,) = params
  A = np.einsum("ni,ni->n", d, d)
  B = np.einsum("ni,ni->n", o, d)
  C = np.einsum("ni,ni->n", o, o) - r * r
  (lo, hi), _ = _quadric_pieces(A, B, C)
  t = np.where((lo <= hi) & (lo > 0), lo, np.inf)
  p = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
  return t, p / r


def intersect_box(o, d, params):
  los, his = zip(*[_slab(o[:, i], d[:, i], params[i]) for i in range(3)])
  lo_all, hi_all = np.stack(los, -1), np.stack(his, -1)
  lo, hi = lo_all.max(-1), hi_all.min(-1)
  t = np.where((lo <= hi) & (lo > 0), lo, np.inf)
  axis = lo_all.argmax(-1)
  normal = np.zeros_like(o)
  normal[np.arange(len(o)), axis] = -np.sign(d[np.arange(len(o)), axis])
  return t, normal


def intersect_cylinder(o, d, params):
  r, h = params
  A = d[:, 0] ** 2 + d[:, 1] ** 2
  B = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1]
  C = o[:, 0] ** 2 + o[:, 1] ** 2 - r * r
  pieces = _quadric_pieces(A, B, C)
  t, cap = _entry_with_cap(pieces, *_slab(o[:, 2], d[:, 2], h))
  p = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
  side = np.stack([p[:, 0], p[:, 1], np.zeros_like(t)], -1) / r
  capn = np.stack([np.zeros_like(t), np.zeros_like(t), -np.sign(d[:, 2])], -1)
  return t, np.where(cap[:, None], capn, side)


def intersect_cone(o, d, params):
  """Solid cone: x² + y² ≤ k²(h − z)², |z| ≤ h, k = r / 2h (the slab removes the upper nappe)."""
  r, h = params
  k2 = (r / (2 * h)) ** 2
  w0, dw = h - o[:, 2], -d[:, 2]
  A = d[:, 0] ** 2 + d[:, 1] ** 2 - k2 * dw * dw
  B = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1] - k2 * w0 * dw
  C = o[:, 0] ** 2 + o[:, 1] ** 2 - k2 * w0 * w0
  pieces = _quadric_pieces(A, B, C)
  t, cap = _entry_with_cap(pieces, *_slab(o[:, 2], d[:, 2], h))
  p = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
  side = np.stack([p[:, 0], p[:, 1], k2 * (h - p[:, 2])], -1)
  side /= np.maximum(np.linalg.norm(side, axis=-1, keepdims=True), 1e-12)
  capn = np.stack([np.zeros_like(t), np.zeros_like(t), -np.sign(d[:, 2])], -1)
  return t, np.where(cap[:, None], capn, side)


def intersect_torus(o, d, params, newton_steps: int = 3):
  """Torus about local z: (|p|² + R² − r²)² = 4R²(x² + y²). `d` must be unit length."""
  R, r = params
  t = np.full(len(o), np.inf)
  normal = np.zeros_like(o)
  t0 = -np.einsum("ni,ni->n", o, d)
  oc = o + t0[:, None] * d  # closest approach to the centre; oc · d = 0
  cand = np.einsum("ni,ni->n", oc, oc) < (R + r) ** 2  # ray meets the bounding sphere
  if not cand.any():
    return t, normal
  oc_, d_, t0_ = oc[cand], d[cand], t0[cand]
  q = np.einsum("ni,ni->n", oc_, oc_) + R * R - r * r
  axy = d_[:, 0] ** 2 + d_[:, 1] ** 2
  bxy = oc_[:, 0] * d_[:, 0] + oc_[:, 1] * d_[:, 1]
  cxy = oc_[:, 0] ** 2 + oc_[:, 1] ** 2
  # s⁴ + c2 s² + c1 s + c0 = 0 (depressed: the cubic term vanishes because oc · d = 0).
  c2 = 2 * q - 4 * R * R * axy
  c1 = -8 * R * R * bxy
  c0 = q * q - 4 * R * R * cxy
  m = len(q)
  comp = np.zeros((m, 4, 4))
  comp[:, 1, 0] = comp[:, 2, 1] = comp[:, 3, 2] = 1.0
  comp[:, 0, 3] = -c0
  comp[:, 1, 3] = -c1
  comp[:, 2, 3] = -c2
  roots = np.linalg.eigvals(comp)  # [m, 4] complex
  s = roots.real.copy()
  # Near-double roots (grazing rays) come out with imaginary parts ~ sqrt(machine eps); accept
  # them when Newton polishing lands on a real root, reject genuinely complex pairs.
  for _ in range(newton_steps):
    f = ((s * s + c2[:, None]) * s + c1[:, None]) * s + c0[:, None]
    fp = (4 * s * s + 2 * c2[:, None]) * s + c1[:, None]
    s = s - np.where(np.abs(fp) > 1e-12, f / np.where(np.abs(fp) > 1e-12, fp, 1.0), 0.0)
  f = ((s * s + c2[:, None]) * s + c1[:, None]) * s + c0[:, None]
  scale = 1.0 + np.abs(c0)[:, None] + np.abs(c2)[:, None]
  real = (np.abs(roots.imag) < 1e-3) & (np.abs(f) < 1e-7 * scale)
  tt = t0_[:, None] + s
  tt = np.where(real & (tt > 0), tt, np.inf)
  tbest = tt.min(-1)
  t[cand] = tbest
  hit = np.isfinite(tbest)
  p = oc_[hit] + (tbest[hit] - t0_[hit])[:, None] * d_[hit]
  g = 4 * (np.einsum("ni,ni->n", p, p) + R * R - r * r)[:, None] * p
  g[:, :2] -= 8 * R * R * p[:, :2]
  g /= np.maximum(np.linalg.norm(g, axis=-1, keepdims=True), 1e-12)
  idx = np.flatnonzero(cand)[hit]
  normal[idx] = g
  return t, normal


_INTERSECT = {"sphere": intersect_sphere, "box": intersect_box, "cylinder": intersect_cylinder,
              "cone": intersect_cone, "torus": intersect_torus}


def inside_local(shape: str, params: Sequence[float], p: np.ndarray) -> np.ndarray:
  """Point-membership test `[N] bool` of local points `p [N, 3]` (the tests' independent oracle)."""
  x, y, z = p[..., 0], p[..., 1], p[..., 2]
  if shape == "sphere":
    return x * x + y * y + z * z <= params[0] ** 2
  if shape == "box":
    return (np.abs(x) <= params[0]) & (np.abs(y) <= params[1]) & (np.abs(z) <= params[2])
  if shape == "cylinder":
    return (x * x + y * y <= params[0] ** 2) & (np.abs(z) <= params[1])
  if shape == "cone":
    r, h = params
    return (np.abs(z) <= h) & (np.sqrt(x * x + y * y) <= r / (2 * h) * (h - z))
  if shape == "torus":
    R, r = params
    return (np.sqrt(x * x + y * y) - R) ** 2 + z * z <= r * r
  raise ValueError(f"unknown primitive shape {shape!r}; expected one of {SHAPES}")


def intersect_primitive(prim: Primitive, origins: np.ndarray, directions: np.ndarray):
  """World rays `[N, 3]` (unit directions) → (t [N], world normal [N, 3]); t = inf on a miss.

  Only rays that meet the primitive's bounding sphere are intersected exactly (most rays of a view
  miss a small primitive; this culling is most of the generator's speed).
  """
  Rm = np.asarray(prim.rotation, np.float64)
  c = np.asarray(prim.center, np.float64)
  oc = origins - c
  b = np.einsum("ni,ni->n", oc, directions)
  rad = bounding_radius(prim.shape, prim.params)
  cand = np.flatnonzero(np.einsum("ni,ni->n", oc, oc) - b * b <= rad * rad * (1 + 1e-6))
  t = np.full(len(origins), np.inf)
  normal = np.zeros_like(origins)
  if len(cand):
    o_local = oc[cand] @ Rm  # Rᵀ(o − c), row-vector form
    d_local = directions[cand] @ Rm
    tc, n_local = _INTERSECT[prim.shape](o_local, d_local, prim.params)
    t[cand] = tc
    normal[cand] = n_local @ Rm.T
  return t, normal


# ------------------------------------------------------------------------------------------------
# Rays and rendering.


def pixel_rays_np(c2w: np.ndarray, K: np.ndarray, width: int, height: int):
  """Rays through pixel centres for one camera, numpy float64 → (origins, dirs) `[H·W, 3]`.

  Same convention as `instant3d_jax.cameras.camera_rays` (pixel centres at +0.5, OpenCV axes).
  """
  v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
  x = (u - K[0, 2]) / K[0, 0]
  y = (v - K[1, 2]) / K[1, 1]
  d_cam = np.stack([x, y, np.ones_like(x)], -1).reshape(-1, 3)
  d = d_cam @ np.asarray(c2w, np.float64)[:3, :3].T
  d /= np.linalg.norm(d, axis=-1, keepdims=True)
  o = np.broadcast_to(np.asarray(c2w, np.float64)[:3, 3], d.shape)
  return np.ascontiguousarray(o), d


@dataclasses.dataclass(frozen=True)
class Lighting:
  """A fixed world-space key light plus ambient: shade = ambient + (1 − ambient)·max(0, n·l)."""
  direction: tuple[float, float, float] = (0.45, 0.3, 0.85)
  ambient: float = 0.4


def shade(normals: np.ndarray, albedo: np.ndarray, lighting: Lighting) -> np.ndarray:
  l = np.asarray(lighting.direction, np.float64)
  l = l / np.linalg.norm(l)
  lam = np.clip(normals @ l, 0.0, None)
  return albedo * (lighting.ambient + (1.0 - lighting.ambient) * lam)[:, None]


def render_rgba(scene: Sequence[Primitive], c2w: np.ndarray, K: np.ndarray, width: int,
                height: int, supersample: int = 1, lighting: Lighting = Lighting()) -> np.ndarray:
  """Views of a scene → RGBA `[V, H, W, 4]` float64 in [0, 1] (straight, not premultiplied, alpha).

  `c2w: [V, 4, 4]`, `K: [V, 3, 3]` (or a single camera `[4, 4]`, `[3, 3]` → `[H, W, 4]`).
  With `supersample = s` each view is ray cast at s× resolution (intrinsics scaled exactly as
  `cameras.resize_camera` does) and box-filtered: alpha is the covered fraction of the pixel and
  RGB the mean colour over the covered sub-pixels.
  """
  c2w, K = np.asarray(c2w, np.float64), np.asarray(K, np.float64)
  single = c2w.ndim == 2
  c2w, K = c2w.reshape(-1, 4, 4), K.reshape(-1, 3, 3)
  V, s = len(c2w), int(supersample)
  scale = np.array([[s, 0, s], [0, s, s], [0, 0, 1]])
  rays = [pixel_rays_np(c2w[v], K[v] * scale, width * s, height * s) for v in range(V)]
  o = np.concatenate([r[0] for r in rays])
  d = np.concatenate([r[1] for r in rays])
  # Most rays are background: keep only those that meet some primitive's bounding sphere, once,
  # so the per-primitive work below runs on the few rays that can hit anything.
  near = np.zeros(len(o), bool)
  for prim in scene:
    oc = o - np.asarray(prim.center)
    b = np.einsum("ni,ni->n", oc, d)
    rad = bounding_radius(prim.shape, prim.params)
    near |= np.einsum("ni,ni->n", oc, oc) - b * b <= rad * rad * (1 + 1e-6)
  idx = np.flatnonzero(near)
  o_s, d_s = o[idx], d[idx]
  t_best = np.full(len(idx), np.inf)
  rgb_s = np.zeros((len(idx), 3))
  for prim in scene:
    t, n = intersect_primitive(prim, o_s, d_s)
    closer = t < t_best
    if closer.any():
      t_best = np.where(closer, t, t_best)
      rgb_s[closer] = shade(n[closer], prim.rgb, lighting)
  alpha = np.zeros(len(o))
  alpha[idx] = np.isfinite(t_best)
  rgb = np.zeros((len(o), 3))
  rgb[idx] = rgb_s
  prem = (rgb * alpha[:, None]).reshape(V, height, s, width, s, 3).mean((2, 4))
  a = alpha.reshape(V, height, s, width, s).mean((2, 4))
  col = prem / np.maximum(a, 1e-12)[..., None]
  out = np.concatenate([np.clip(col, 0, 1), a[..., None]], -1)
  return out[0] if single else out


def composite_white(rgba: np.ndarray) -> np.ndarray:
  """RGBA `[..., 4]` in [0, 1] → RGB over a white background `[..., 3]`."""
  a = rgba[..., 3:4]
  return rgba[..., :3] * a + (1.0 - a)


# ------------------------------------------------------------------------------------------------
# Random scenes and captions.


def random_rotation(rng: np.random.Generator) -> np.ndarray:
  """Uniform random rotation (from a uniform unit quaternion)."""
  q = rng.normal(size=4)
  q /= np.linalg.norm(q)
  w, x, y, z = q
  return np.array([
      [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
  ])


def _yaw(angle: float) -> np.ndarray:
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _shape_params(shape: str, size: float, rng: np.random.Generator) -> tuple[float, ...]:
  """Local parameters for a primitive whose overall scale is `size` (≈ its half-extent)."""
  if shape == "sphere":
    return (size,)
  if shape == "box":
    if rng.random() < 0.4:  # a cube
      return (size * 0.8,) * 3
    return tuple(float(size * f) for f in rng.uniform(0.45, 1.0, size=3))
  if shape == "cylinder":
    return (size * rng.uniform(0.5, 0.9), size * rng.uniform(0.6, 1.0))
  if shape == "cone":
    return (size * rng.uniform(0.6, 1.0), size * rng.uniform(0.6, 1.0))
  if shape == "torus":
    R = size * rng.uniform(0.6, 0.75)
    return (R, R * rng.uniform(0.3, 0.5))
  raise ValueError(f"unknown primitive shape {shape!r}; expected one of {SHAPES}")


def sample_scene(rng: np.random.Generator, *, min_primitives: int = 1, max_primitives: int = 3,
                 size_range=(0.25, 0.6), shapes: Sequence[str] = SHAPES,
                 rotate_prob: float = 0.5, scene_radius: float = 1.0,
                 placement_tries: int = 20) -> list[Primitive]:
  """1–3 primitives with random shape, size, colour and pose inside the ball of `scene_radius`.

  Each primitive's bounding sphere lies inside the ball of radius `scene_radius` (≤ 1, so also
  inside [-1, 1]³): a ball, unlike the cube's corners, stays in frame from every view direction
  of the rig (at distance 2.4 and FOV 50° the unit ball subtends 24.6° < 25°). Later primitives
  are re-drawn (up to `placement_tries`) to keep bounding spheres from overlapping by more than
  30%. Primitives are either upright with a random yaw or fully randomly rotated
  (`rotate_prob`). Distinct colours within a scene keep captions unambiguous; the size word
  compares the drawn size with the range (before shrinking scenes of several primitives).
  """
  n = int(rng.integers(min_primitives, max_primitives + 1))
  colours = rng.choice(list(COLOURS), size=n, replace=False)
  lo, hi = size_range
  scene: list[Primitive] = []
  for i in range(n):
    shape = str(rng.choice(list(shapes)))
    drawn = float(rng.uniform(lo, hi))
    size = drawn / (1.0 + 0.25 * (n - 1))  # several objects → each smaller
    params = _shape_params(shape, size, rng)
    rad = bounding_radius(shape, params)
    rot = random_rotation(rng) if rng.random() < rotate_prob else _yaw(rng.uniform(0, 2 * np.pi))
    room = max(scene_radius - rad, 0.0)
    for _ in range(placement_tries):
      direction = rng.normal(size=3)
      direction /= np.linalg.norm(direction)
      center = direction * room * rng.random() ** (1 / 3)  # uniform in the ball of radius room
      if n == 1:
        center = center * 0.3  # a lone object sits near the middle
      ok = all(np.linalg.norm(center - np.asarray(p.center)) >
               0.7 * (rad + bounding_radius(p.shape, p.params)) for p in scene)
      if ok:
        break
    third = (hi - lo) / 3
    word = "small" if drawn < lo + third else ("large" if drawn > hi - third else "")
    scene.append(Primitive(shape=shape, params=tuple(float(p) for p in params),
                           center=tuple(float(c) for c in center),
                           rotation=tuple(tuple(float(v) for v in row) for row in rot),
                           colour=str(colours[i]), size_word=word))
  return scene


def shape_noun(shape: str) -> str:
  """The plain caption noun of a shape (`SHAPE_NOUNS`; "box" for any box)."""
  return SHAPE_NOUNS[shape][0]


def _noun(p: Primitive) -> str:
  if p.shape == "box":
    hx, hy, hz = p.params
    return "cube" if max(hx, hy, hz) - min(hx, hy, hz) < 1e-6 else "box"
  return shape_noun(p.shape)


def _phrase(p: Primitive) -> str:
  words = [w for w in (p.size_word, p.colour, _noun(p)) if w]
  return " ".join(words)


def _article(phrase: str) -> str:
  return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def caption(scene: Sequence[Primitive]) -> str:
  """An English caption: "a red cube beside a small blue sphere", "a green cone on top of …"."""
  parts = [_article(_phrase(p)) for p in scene]
  if len(scene) == 1:
    return parts[0]
  if len(scene) == 2:
    a, b = scene
    dz = a.center[2] - b.center[2]
    horiz = float(np.hypot(a.center[0] - b.center[0], a.center[1] - b.center[1]))
    if dz > 0.35 and dz > horiz:
      rel = "above"
    elif -dz > 0.35 and -dz > horiz:
      rel = "below"
    else:
      rel = "beside"
    return f"{parts[0]} {rel} {parts[1]}"
  return ", ".join(parts[:-1]) + " and " + parts[-1]


def scene_to_json(scene: Sequence[Primitive]) -> str:
  return json.dumps([p.to_json() for p in scene])


def scene_from_json(text: str) -> list[Primitive]:
  return [Primitive.from_json(d) for d in json.loads(text)]
