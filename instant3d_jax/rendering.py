"""Volume rendering of a triplane NeRF: ray–box, sampling, compositing, triplane lookup, images.

Pure functions (no state) so they `jit`, `vmap` (over views and over a batch of triplanes) and
`grad`. The renderer follows LRM / OpenLRM (docs/paper_facts.md §B, §D):

  * rays are clipped to the box [-box, box]³ (`ray_box`); rays that miss it get the background;
  * `num_samples` stratified samples between near and far (jittered with a key, bin midpoints
    without), then `num_importance` samples drawn by inverse CDF from the coarse weights, merged
    in sorted order; ONE shared field is evaluated on all of them (64 + 64 = 128 by default in
    the configs; no separate coarse network as in the original NeRF);
  * alpha compositing with the midpoint quadrature described in `composite`.

`sampling='eg3d'` with `composite='midpoint'` is EG3D's renderer as OpenLRM and InstantMesh use
it (their mathematics, re-derived here; `eg3d_coarse_samples`, `eg3d_importance_samples`,
`composite_midpoint`): the field returns raw densities, out-of-box samples are masked, and the
density activation is applied to the means of neighbouring raw densities.

Triplane convention (`sample_triplane`), the same as OpenLRM/EG3D `sample_from_planes` with
`box_warp = 2·box`:

  * `planes [3, R, R, C]`: plane 0 = XY, plane 1 = XZ, plane 2 = YZ;
  * on plane (a, b) the first coordinate a picks the COLUMN (last spatial axis, grid_sample's x)
    and the second b picks the ROW: XY → (col x, row y), XZ → (col x, row z), YZ → (col y, row z)
    (`plane_axes='yz'`, the default). OpenLRM and InstantMesh (EG3D's planes with the eg3d#67
    fix) read their third plane as (col z, row y): `PLANE_AXES_BY_NAME['zy']`;
  * `align_corners=False`: texel centres sit at -box + (i + 0.5)·2·box/R, so the box faces are
    the outer edges of the border texels (as torch `grid_sample(..., align_corners=False)`);
  * padding 'zeros' (default, grid_sample's and OpenLRM's) or 'border' (clamp) outside the texel
    centres; points outside the box get zero ('zeros') or the clamped border value ('border');
  * features of the three planes are CONCATENATED (`[..., 3C]`, plane 0 first), as OpenLRM's
    `OSGDecoder`; `combine='stack'` gives `[..., 3, C]`, `combine='sum'` the sum over planes.

Performance on CPU (bench/bench_rendering.py, bench/results/rendering.md): the lookup pads each
plane by one texel (which implements both padding modes without masks) and does four 1-D row
gathers per plane from a flattened `[(R+2)², C]` table with precomputed indices, followed by the
bilinear blend written out as element-wise ops that XLA fuses with the gathers; its custom
backward does one scatter-add per plane of the 4 weighted corner cotangents. Among the variants measured
(`map_coordinates`, one 12-corner gather, a corner-packed `[(R+1)², 4C]` table, the same forward
with autodiff's 12 scatters) this was the fastest forward and the fastest or on par backward.
When the decoder's first layer is linear in the features (OpenLRM's MLP), it can be folded into
the planes: `sample_triplane(einsum('prsc,pcd->prsd', planes, W.reshape(3, C, D)),
combine='sum') + b` equals `concat-features @ W + b` and gathers D instead of C floats per corner
and skips one matmul per sample (pays off when C ≥ D, e.g. 80 > 64; see the bench).
`make_mlp_triplane_field` ships it: the fused field (lookup and first layer in one step, bf16
hidden matmuls on request) that `lrm.render_views` renders whole images with.

Whole images (`render_image`): chunks of rays under one `lax.map` (nothing per sample on the
host), the chunk given or picked from the device's memory (`auto_chunk`), and with a key each
ray's random numbers derived from (key, ray index) (`ray_uniforms`), so a render does not
depend on the chunk.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from instant3d_jax import cameras as cameras_lib

FieldFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
TRIPLANE_PADDINGS = ("zeros", "border")
TRIPLANE_COMBINES = ("concat", "stack", "sum")
RENDER_OUTPUTS = ("rgb", "depth", "opacity", "weights", "t")
# (columns, rows) coordinate of each plane: XY, XZ, YZ (OpenLRM / EG3D plane order). The
# project's default ('yz'): the third plane is (column y, row z). 'zy' is the third plane of
# OpenLRM and InstantMesh (EG3D's `generate_planes` with the eg3d#67 fix: column z, row y).
PLANE_AXES_BY_NAME = {"yz": ((0, 1), (0, 2), (1, 2)), "zy": ((0, 1), (0, 2), (2, 1))}
PLANE_AXES = PLANE_AXES_BY_NAME["yz"]
COMPOSITES = ("quadrature", "midpoint")
SAMPLINGS = ("stratified", "eg3d")


# ---------------------------------------------------------------------------------------------
# Ray–box intersection
# ---------------------------------------------------------------------------------------------


def ray_box(origins: jax.Array, directions: jax.Array, box=1.0):
  """Slab-method intersection of rays with the axis-aligned box [-box, box]³.

  Args:
    origins, directions: `[..., 3]` (directions need not be unit; distances are in units of t).
    box: half side of the box, a scalar (or `[3]` for per-axis half sides).
  Returns:
    `near, far` `[...]` ray parameters of the entry/exit points, `near` clamped at 0 (a camera
    inside the box starts at its origin), and `hit [...]` bool: the ray crosses the box in front
    of its origin (`far > near`). For misses near/far are meaningless (callers mask them).
  """
  origins = jnp.asarray(origins, jnp.float32)
  directions = jnp.asarray(directions, jnp.float32)
  box = jnp.asarray(box, jnp.float32)
  # A zero direction component would give 0·inf = nan; a tiny signed value gives ±huge slabs,
  # i.e. "always inside this slab" if the origin is inside it, "never" otherwise.
  tiny = 1e-12
  safe = jnp.where(jnp.abs(directions) < tiny, jnp.where(directions >= 0, tiny, -tiny), directions)
  inv = 1.0 / safe
  t0 = (-box - origins) * inv
  t1 = (box - origins) * inv
  near = jnp.max(jnp.minimum(t0, t1), axis=-1)
  far = jnp.min(jnp.maximum(t0, t1), axis=-1)
  near = jnp.maximum(near, 0.0)
  hit = far > near
  return near, far, hit


# ---------------------------------------------------------------------------------------------
# Triplane lookup
# ---------------------------------------------------------------------------------------------


def sample_triplane(planes: jax.Array, points: jax.Array, box=1.0, *, padding: str = "zeros",
                    combine: str = "concat", plane_axes=PLANE_AXES) -> jax.Array:
  """Bilinear lookup of the XY, XZ, YZ planes at `points` (convention in the module docstring).

  Args:
    planes: `[3, R, R, C]` (vmap over a leading batch of triplanes).
    points: `[..., 3]` world coordinates; [-box, box]³ spans the planes.
    box: half side of the box the planes cover.
    padding: 'zeros' (grid_sample padding_mode='zeros') or 'border' (clamp to the edge texels).
    combine: 'concat' → `[..., 3C]` (plane 0, 1, 2), 'stack' → `[..., 3, C]`, 'sum' → `[..., C]`.
    plane_axes: the (column, row) coordinate axes of each plane (`PLANE_AXES_BY_NAME`).
  Returns:
    features, fp32 unless `planes` has another float dtype.
  """
  if planes.ndim != 4 or planes.shape[0] != 3 or planes.shape[1] != planes.shape[2]:
    raise ValueError(f"sample_triplane: planes must be [3, R, R, C], got shape {planes.shape}")
  if points.shape[-1:] != (3,):
    raise ValueError(f"sample_triplane: points must be [..., 3], got shape {points.shape}")
  if padding not in TRIPLANE_PADDINGS:
    raise ValueError(f"sample_triplane: padding must be one of {TRIPLANE_PADDINGS}, got {padding!r}")
  if combine not in TRIPLANE_COMBINES:
    raise ValueError(f"sample_triplane: combine must be one of {TRIPLANE_COMBINES}, got {combine!r}")
  plane_axes = tuple(tuple(int(a) for a in ax) for ax in plane_axes)
  if plane_axes not in PLANE_AXES_BY_NAME.values():
    raise ValueError(f"sample_triplane: plane_axes must be one of {PLANE_AXES_BY_NAME}, got "
                     f"{plane_axes}")
  R, C = planes.shape[1], planes.shape[-1]
  # One texel of padding on each side: zeros reproduce grid_sample's zero padding, edge copies
  # its 'border' mode, and every corner index below stays in range without masks.
  padded = jnp.pad(planes, ((0, 0), (1, 1), (1, 1), (0, 0)),
                   mode="constant" if padding == "zeros" else "edge")
  Rp = R + 2
  table = padded.reshape(3, Rp * Rp, C)
  # align_corners=False: x = -box → texel coordinate -0.5; +1 for the padding; clamping to the
  # padded range makes points far outside read the padding (zero or the border texel).
  scale = R / (2.0 * box)
  pix = jnp.clip((points.astype(jnp.float32) + box) * scale + 0.5, 0.0, float(R + 1))
  i0 = jnp.minimum(jnp.floor(pix), float(R))  # so that i0 + 1 <= R + 1
  frac = (pix - i0).astype(planes.dtype)
  i0 = i0.astype(jnp.int32)
  concat = _bilinear_rows(table, i0, frac, Rp, plane_axes)               # [..., 3C]
  if combine == "concat":
    return concat
  stacked = concat.reshape(concat.shape[:-1] + (3, C))
  if combine == "stack":
    return stacked
  return jnp.sum(stacked, axis=-2)


def _plane_corners(table, i0, frac, p, Rp, plane_axes):
  """Plane p's 4 corner rows (top-left, top-right, bottom-left, bottom-right) `[..., C]`, the
  flat index of the top-left one and the column/row fractions `[..., 1]`."""
  col_axis, row_axis = plane_axes[p]
  base = i0[..., row_axis] * Rp + i0[..., col_axis]
  take = lambda idx: table[p].at[idx].get(mode="promise_in_bounds")  # noqa: E731
  corners = [take(base + off) for off in (0, 1, Rp, Rp + 1)]
  return corners, base, frac[..., col_axis, None], frac[..., row_axis, None]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _bilinear_rows(table, i0, frac, Rp, plane_axes):
  """Bilinear lookup in the padded planes' flattened tables `table [3, Rp², C]` at integer texel
  `i0 [..., 3]` (x, y, z) + `frac [..., 3]` → concatenated features `[..., 3C]`.

  Forward: 12 separate 1-D row gathers and an element-wise blend per plane, which XLA CPU fuses
  into one loop (the fastest forward measured). Backward (custom): one scatter-add per plane of
  its 4 weighted corner cotangents, measured faster than the 12 scatters that autodiff emits
  (bench/results/rendering.md); the coordinate gradient re-gathers the corners (dead code,
  removed by XLA, when only plane gradients are needed).
  """
  feats = []
  for p in range(3):
    (g00, g01, g10, g11), _, fx, fy = _plane_corners(table, i0, frac, p, Rp, plane_axes)
    top = g00 * (1 - fx) + g01 * fx
    bottom = g10 * (1 - fx) + g11 * fx
    feats.append(top * (1 - fy) + bottom * fy)
  return jnp.concatenate(feats, axis=-1)


def _bilinear_rows_fwd(table, i0, frac, Rp, plane_axes):
  return _bilinear_rows(table, i0, frac, Rp, plane_axes), (table, i0, frac)


def _bilinear_rows_bwd(Rp, plane_axes, res, g):
  table, i0, frac = res
  P, T, C = table.shape
  offsets = jnp.asarray([0, 1, Rp, Rp + 1], jnp.int32)
  d_table, d_frac = [], [jnp.zeros(frac.shape[:-1], frac.dtype) for _ in range(3)]
  for p in range(3):
    col_axis, row_axis = plane_axes[p]
    base = i0[..., row_axis] * Rp + i0[..., col_axis]
    fx, fy = frac[..., col_axis, None], frac[..., row_axis, None]
    gp = g[..., p * C:(p + 1) * C]
    # One scatter per plane of a broadcasted [..., 4, C] product (XLA fuses the product into the
    # scatter): measured faster than autodiff's 4 scatters per plane, and than one scatter over
    # all planes, which is slow under vmap over a batch of triplanes.
    w = jnp.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], -2)  # [..., 4, 1]
    idx = base[..., None] + offsets
    d_table.append(jnp.zeros((T, C), table.dtype).at[idx.reshape(-1)].add(
        (gp[..., None, :] * w).reshape(-1, C), mode="promise_in_bounds"))
    # Coordinate gradients (unused, hence removed by XLA, unless points need a gradient).
    g00, g01, g10, g11 = _plane_corners(table, i0, frac, p, Rp, plane_axes)[0]
    d_frac[col_axis] += jnp.sum(gp * ((g01 - g00) * (1 - fy) + (g11 - g10) * fy), -1)
    d_frac[row_axis] += jnp.sum(gp * ((g10 - g00) * (1 - fx) + (g11 - g01) * fx), -1)
  return jnp.stack(d_table), None, jnp.stack(d_frac, -1)


_bilinear_rows.defvjp(_bilinear_rows_fwd, _bilinear_rows_bwd)


# ---------------------------------------------------------------------------------------------
# Sampling along rays
# ---------------------------------------------------------------------------------------------


def stratified_samples(near: jax.Array, far: jax.Array, num_samples: int,
                       jitter: jax.Array | None = None) -> jax.Array:
  """`[N, S]` sample distances, one per bin of [near, far] split in S equal bins.

  Bin midpoints without `jitter`; with `jitter [N, S]` uniform in [0, 1), sample i sits at that
  fraction of bin i (stratified sampling).
  """
  u = jnp.arange(num_samples, dtype=jnp.float32)
  u = (u + (0.5 if jitter is None else jitter)) / num_samples
  return near[..., None] + (far - near)[..., None] * u


def _blur_weights(weights: jax.Array) -> jax.Array:
  """mip-NeRF 'blurpool': max over neighbours, then mean of neighbours.

  A surface between two coarse samples puts all coarse weight on the sample behind it; spreading
  the weight to the neighbouring bin lets the importance samples land where the surface is.
  """
  w = jnp.concatenate([weights[..., :1], weights, weights[..., -1:]], axis=-1)
  w_max = jnp.maximum(w[..., :-1], w[..., 1:])
  return 0.5 * (w_max[..., :-1] + w_max[..., 1:])


def importance_samples(near: jax.Array, far: jax.Array, weights: jax.Array, num_importance: int,
                       jitter: jax.Array | None = None, *, padding: float = 0.01) -> jax.Array:
  """`[N, M]` sorted distances drawn by inverse CDF from a piecewise-constant PDF over the S
  equal bins of [near, far] (the stratified bins), proportional to the blurred `weights [N, S]`
  plus `padding`·mean (so empty rays still sample uniformly). The PDF carries no gradient.

  Without `jitter` the M quantiles are k/M; with `jitter [N, M]` in [0, 1) they are
  (k + jitter)/M (stratified quantiles, so the samples come out sorted). k/M rather than
  (k + 0.5)/M: where the PDF is flat (an empty ray, or the padding part of one) and M = S, the
  (k + 0.5)/M quantiles land exactly on the coarse bin midpoints, duplicating the stratified
  samples; k/M puts them on the bin edges instead, so such a ray is sampled twice as densely
  (a thin or grazing feature that falls between two coarse samples can still be found).
  """
  S = weights.shape[-1]
  w = jax.lax.stop_gradient(_blur_weights(weights))
  w = w + padding * jnp.mean(w, axis=-1, keepdims=True) + 1e-8
  pdf = w / jnp.sum(w, axis=-1, keepdims=True)
  cdf = jnp.concatenate([jnp.zeros_like(pdf[..., :1]), jnp.cumsum(pdf, axis=-1)], axis=-1)
  cdf = cdf.at[..., -1].set(1.0)
  k = jnp.arange(num_importance, dtype=jnp.float32)
  if jitter is None:
    u = jnp.broadcast_to(k / num_importance, near.shape + (num_importance,))
  else:
    u = (k + jitter) / num_importance
  # Binary search per ray (unrolled: log2(S) steps of element-wise selects), then the two CDF
  # values around each quantile. Measured ~20× faster on CPU than comparing every quantile with
  # every edge ([N, M, S+1] compares and reductions).
  batch = cdf.shape[:-1]
  cdf2, u2 = cdf.reshape(-1, S + 1), u.reshape(-1, num_importance)
  b = jax.vmap(lambda c, q: jnp.searchsorted(c[1:-1], q, side="right", method="scan_unrolled"))(
      cdf2, u2)
  b = jnp.clip(b, 0, S - 1)
  cdf_lo = jnp.take_along_axis(cdf2, b, axis=-1).reshape(batch + (num_importance,))
  cdf_hi = jnp.take_along_axis(cdf2, b + 1, axis=-1).reshape(batch + (num_importance,))
  b = b.reshape(batch + (num_importance,)).astype(jnp.float32)
  frac = jnp.clip((u - cdf_lo) / jnp.maximum(cdf_hi - cdf_lo, 1e-12), 0.0, 1.0)
  t = near[..., None] + (far - near)[..., None] * ((b + frac) / S)
  return jax.lax.stop_gradient(t)


# ---------------------------------------------------------------------------------------------
# Compositing
# ---------------------------------------------------------------------------------------------


def composite(t: jax.Array, density: jax.Array, near: jax.Array, far: jax.Array) -> jax.Array:
  """Alpha-compositing weights `[N, S]` of sorted samples `t [N, S]` in [near, far].

  Midpoint quadrature: sample i stands for the segment between the midpoints to its neighbours
  (the first starts at near, the last ends at far), so the segments tile [near, far] exactly and
  a constant density σ gives opacity 1 - exp(-σ·(far - near)) whatever the sample positions.
  weight_i = T_i·(1 - exp(-σ_i δ_i)), T_i = exp(-Σ_{j<i} σ_j δ_j).
  """
  mids = 0.5 * (t[..., 1:] + t[..., :-1])
  edges = jnp.concatenate([near[..., None], mids, far[..., None]], axis=-1)
  delta = jnp.maximum(edges[..., 1:] - edges[..., :-1], 0.0)
  sigma_delta = density * delta
  alpha = -jnp.expm1(-sigma_delta)
  transmittance = jnp.exp(-(jnp.cumsum(sigma_delta, axis=-1) - sigma_delta))
  return alpha * transmittance


_quadrature_weights = composite   # `volume_render`'s keyword argument shadows the name there


# ---------------------------------------------------------------------------------------------
# EG3D / OpenLRM / InstantMesh's sampler and midpoint compositing (`sampling='eg3d'`,
# `composite='midpoint'`), the mathematics of their renderer written anew from its description.
# ---------------------------------------------------------------------------------------------


def eg3d_coarse_samples(near: jax.Array, far: jax.Array, num_samples: int,
                        u: jax.Array | None = None) -> jax.Array:
  """`[N, S]` coarse distances t_i = near + (i + u_i)·Δ with Δ = (far − near)/(S − 1): S points
  of `linspace(near, far)` each pushed forward by a uniform fraction of the spacing, so the last
  one may overshoot `far` (out-of-box samples are masked by the caller). Without `u`, u = 1/2."""
  i = jnp.arange(num_samples, dtype=jnp.float32)
  step = (far - near)[..., None] / max(num_samples - 1, 1)
  return near[..., None] + (i + (0.5 if u is None else u)) * step


def composite_midpoint(t: jax.Array, raw_density: jax.Array, rgb: jax.Array, inside: jax.Array,
                       density_activation: Callable[[jax.Array], jax.Array],
                       background) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """EG3D's midpoint compositing of sorted samples `t [N, S]`.

  Each of the S − 1 intervals between neighbouring samples takes the mean of its two ends' raw
  densities, activated (`density_activation`, e.g. softplus), and the mean of their colours;
  samples outside the box (`inside` False) count as density −∞ and colour 0, so an interval
  touching one is empty. α_i = 1 − exp(−σ_i·δ_i); w_i = α_i·Π_{j<i}(1 − α_j + 1e−10).
  Returns weights `[N, S−1]`, the interval midpoints `[N, S−1]`, the composited colour
  `Σ w·c + (1 − Σ w)·background` `[N, 3]` and the opacity Σ w `[N]`.
  """
  raw = jnp.where(inside, raw_density, 0.0)
  col = jnp.where(inside[..., None], rgb, 0.0)
  both = inside[..., 1:] & inside[..., :-1]
  sigma = jnp.where(both, density_activation(0.5 * (raw[..., 1:] + raw[..., :-1])), 0.0)
  col_mid = 0.5 * (col[..., 1:, :] + col[..., :-1, :])
  delta = t[..., 1:] - t[..., :-1]
  alpha = 1.0 - jnp.exp(-sigma * delta)
  trans = jnp.cumprod(1.0 - alpha + 1e-10, axis=-1)
  trans = jnp.concatenate([jnp.ones_like(trans[..., :1]), trans[..., :-1]], axis=-1)
  weights = alpha * trans
  opacity = jnp.sum(weights, axis=-1)
  rgb_out = jnp.einsum("ns,nsc->nc", weights, col_mid) + (1.0 - opacity)[..., None] * background
  return weights, 0.5 * (t[..., 1:] + t[..., :-1]), rgb_out, opacity


def eg3d_importance_samples(t: jax.Array, weights: jax.Array, num_importance: int,
                            u: jax.Array | None = None, *, padding: float = 0.01,
                            eps: float = 1e-5) -> jax.Array:
  """`[N, M]` fine distances drawn from the coarse midpoint weights `weights [N, S−1]` of the
  coarse samples `t [N, S]` (EG3D's `sample_importance` / NeRF's `sample_pdf`).

  The weights are blurred (max over neighbours, then mean of neighbours: `_blur_weights`), get
  `padding` added, and the inner S − 3 of them (+ eps) define a piecewise-linear inverse CDF over
  the first S − 2 of the S − 1 interval midpoints; each of the M quantiles `u` is an i.i.d.
  uniform (without `u`, M evenly spaced quantiles from 0 to 1), not sorted. No gradient.
  """
  S = t.shape[-1]
  if S < 4:
    raise ValueError(f"eg3d importance sampling needs at least 4 coarse samples, got {S}")
  bins = 0.5 * (t[..., 1:] + t[..., :-1])                               # [N, S-1]
  w = jax.lax.stop_gradient(_blur_weights(weights) + padding)[..., 1:-1] + eps   # [N, S-3]
  pdf = w / jnp.sum(w, axis=-1, keepdims=True)
  cdf = jnp.concatenate([jnp.zeros_like(pdf[..., :1]), jnp.cumsum(pdf, axis=-1)], axis=-1)
  n_bins = S - 3
  if u is None:
    u = jnp.broadcast_to(jnp.linspace(0.0, 1.0, num_importance, dtype=jnp.float32),
                         t.shape[:-1] + (num_importance,))
  batch = cdf.shape[:-1]
  cdf2, u2 = cdf.reshape(-1, n_bins + 1), u.reshape(-1, num_importance)
  inds = jax.vmap(lambda c, q: jnp.searchsorted(c, q, side="right", method="scan_unrolled"))(
      cdf2, u2).reshape(batch + (num_importance,))
  below = jnp.maximum(inds - 1, 0)
  above = jnp.minimum(inds, n_bins)
  cdf_b = jnp.take_along_axis(cdf, below, axis=-1)
  cdf_a = jnp.take_along_axis(cdf, above, axis=-1)
  bin_b = jnp.take_along_axis(bins, below, axis=-1)
  bin_a = jnp.take_along_axis(bins, above, axis=-1)
  denom = cdf_a - cdf_b
  denom = jnp.where(denom < eps, 1.0, denom)
  return jax.lax.stop_gradient(bin_b + (u - cdf_b) / denom * (bin_a - bin_b))


def volume_render(field_fn: FieldFn, origins: jax.Array, directions: jax.Array, *,
                  num_samples: int, num_importance: int, key: jax.Array | None = None,
                  background=1.0, box=1.0, importance_padding: float = 0.01,
                  composite: str = "quadrature", sampling: str = "stratified",
                  density_activation: Callable[[jax.Array], jax.Array] | None = None,
                  uniforms: dict | None = None, t_fine: jax.Array | None = None,
                  t_coarse: jax.Array | None = None) -> dict:
  """Renders rays through the box [-box, box]³ with a density/colour field.

  Args:
    field_fn: `(points [N, s, 3], directions [N, s, 3]) -> (density [N, s] >= 0, rgb [N, s, 3])`,
      called twice (coarse, then importance samples); activation already applied.
    origins, directions: `[..., 3]` rays (any leading shape; unit directions make t a distance).
    num_samples: stratified samples per ray; num_importance: extra samples from the coarse PDF
      (0 = stratified only). All S = num_samples + num_importance samples are composited.
    key: PRNG key for jittered stratified samples and quantiles; None = deterministic.
    background: scalar, `[3]`, or per-ray `[..., 3]` colour composited behind the box.
    box: half side of the scene box.
    composite: 'quadrature' (`composite`: sample i stands for the segment between its
      neighbours' midpoints) or 'midpoint' (EG3D/OpenLRM/InstantMesh: `composite_midpoint`, the
      field returns RAW densities and `density_activation` is applied to their neighbour means).
    sampling: 'stratified' (`stratified_samples` + `importance_samples`) or 'eg3d'
      (`eg3d_coarse_samples` + `eg3d_importance_samples`, samples outside the box masked).
    uniforms: optional `{'coarse': [..., num_samples], 'fine': [..., num_importance]}` uniforms
      in [0, 1) to use instead of drawing them from `key` (to replay another renderer's random
      numbers); `t_fine [..., num_importance]`: the importance distances themselves (a test
      hook: another implementation's inverse-CDF bins may differ in the last float bit);
      `t_coarse [..., num_samples]` ('eg3d' only): the coarse distances themselves (a grazing
      ray's exit distance is ill-conditioned: a 1e-7 change of a direction component of 2e-4
      moves it by 5e-4).
  Returns dict:
    rgb `[..., 3]`; opacity `[...]` (= Σ weights; 0 for rays that miss the box);
    depth `[...]`: expected ray parameter t of termination given termination in the box,
      Σ w·t / opacity (EG3D/OpenLRM style); rays that miss the box or see nothing get 0;
    weights `[..., S]` and t `[..., S]` in sorted depth order.
  """
  if not (isinstance(num_samples, int) and num_samples >= 1):
    raise ValueError(f"volume_render: num_samples must be an int >= 1, got {num_samples!r}")
  if not (isinstance(num_importance, int) and num_importance >= 0):
    raise ValueError(f"volume_render: num_importance must be an int >= 0, got {num_importance!r}")
  if composite not in COMPOSITES:
    raise ValueError(f"volume_render: composite must be one of {COMPOSITES}, got {composite!r}")
  if sampling not in SAMPLINGS:
    raise ValueError(f"volume_render: sampling must be one of {SAMPLINGS}, got {sampling!r}")
  if composite == "midpoint" and density_activation is None:
    raise ValueError("volume_render: composite='midpoint' needs density_activation (the field "
                     "returns raw densities)")
  if origins.shape[-1:] != (3,) or directions.shape != origins.shape:
    raise ValueError("volume_render: origins and directions must both be [..., 3] of one shape, "
                     f"got {origins.shape} and {directions.shape}")
  batch_shape = origins.shape[:-1]
  o = origins.reshape(-1, 3).astype(jnp.float32)
  d = directions.reshape(-1, 3).astype(jnp.float32)
  bg = jnp.broadcast_to(jnp.asarray(background, jnp.float32), batch_shape + (3,)).reshape(-1, 3)
  near, far, hit = ray_box(o, d, box)
  # Misses: an empty interval (near = far) gives zero-length segments, hence zero weights, while
  # the field is still evaluated at finite points (static shapes under jit).
  near = jnp.where(hit, near, 0.0)
  far = jnp.where(hit, far, 0.0)
  if uniforms is not None:
    jitter_strat = jnp.asarray(uniforms["coarse"], jnp.float32).reshape(-1, num_samples)
    jitter_imp = (jnp.asarray(uniforms["fine"], jnp.float32).reshape(-1, num_importance)
                  if num_importance else None)
  elif key is None:
    jitter_strat = jitter_imp = None
  else:
    # One draw for both sample sets: each threefry call adds ~1 s of XLA CPU compile time.
    jitter = jax.random.uniform(key, (o.shape[0], num_samples + num_importance))
    jitter_strat, jitter_imp = jitter[:, :num_samples], jitter[:, num_samples:]
  if sampling == "eg3d" or composite == "midpoint":
    return _render_eg3d(field_fn, o, d, bg, near, far, hit, batch_shape, num_samples,
                        num_importance, jitter_strat, jitter_imp, box, importance_padding,
                        composite, sampling, density_activation, t_fine, t_coarse)

  def evaluate(t):
    points = o[:, None, :] + t[..., None] * d[:, None, :]
    dirs = jnp.broadcast_to(d[:, None, :], points.shape)
    density, rgb = field_fn(points, dirs)
    return density.astype(jnp.float32), rgb.astype(jnp.float32)

  t = stratified_samples(near, far, num_samples, jitter_strat)
  density, rgb = evaluate(t)
  if num_importance:
    coarse_weights = _quadrature_weights(t, density, near, far)
    t_fine = importance_samples(near, far, coarse_weights, num_importance, jitter_imp,
                                padding=importance_padding)
    density_fine, rgb_fine = evaluate(t_fine)
    # Merge the two sorted sets: sort the distances with their source index, then gather the
    # field values (measured 2× faster on CPU than one sort carrying all five operands).
    t, perm = jax.lax.sort(
        (jnp.concatenate([t, t_fine], -1),
         jnp.broadcast_to(jnp.arange(num_samples + num_importance, dtype=jnp.int32),
                          (o.shape[0], num_samples + num_importance))),
        dimension=-1, num_keys=1)
    density = jnp.take_along_axis(jnp.concatenate([density, density_fine], -1), perm, axis=-1)
    rgb = jnp.take_along_axis(jnp.concatenate([rgb, rgb_fine], -2), perm[..., None], axis=-2)
  weights = _quadrature_weights(t, density, near, far) * hit[:, None]
  opacity = jnp.sum(weights, axis=-1)
  rgb_out = jnp.einsum("ns,nsc->nc", weights, rgb) + (1.0 - opacity)[:, None] * bg
  depth = jnp.sum(weights * t, axis=-1) / jnp.maximum(opacity, 1e-10)
  S = t.shape[-1]
  return {
      "rgb": rgb_out.reshape(batch_shape + (3,)),
      "depth": depth.reshape(batch_shape),
      "opacity": opacity.reshape(batch_shape),
      "weights": weights.reshape(batch_shape + (S,)),
      "t": t.reshape(batch_shape + (S,)),
  }


# ---------------------------------------------------------------------------------------------
# Whole images
# ---------------------------------------------------------------------------------------------


def _render_eg3d(field_fn, o, d, bg, near, far, hit, batch_shape, num_samples, num_importance,
                 u_coarse, u_fine, box, importance_padding, composite, sampling,
                 density_activation, t_fine, t_coarse=None):
  """`volume_render` with EG3D's sampler and/or midpoint compositing (see there)."""
  if composite != "midpoint" or sampling != "eg3d":
    raise ValueError("volume_render: sampling='eg3d' and composite='midpoint' go together (the "
                     f"EG3D renderer), got sampling={sampling!r}, composite={composite!r}")
  box_arr = jnp.asarray(box, jnp.float32)

  def evaluate(t):
    points = o[:, None, :] + t[..., None] * d[:, None, :]
    dirs = jnp.broadcast_to(d[:, None, :], points.shape)
    raw, rgb = field_fn(points, dirs)
    inside = jnp.all((points >= -box_arr) & (points <= box_arr), axis=-1)
    return raw.astype(jnp.float32), rgb.astype(jnp.float32), inside

  if t_coarse is None:
    t = eg3d_coarse_samples(near, far, num_samples, u_coarse)
  else:
    t = jnp.asarray(t_coarse, jnp.float32).reshape(-1, num_samples)
  raw, rgb, inside = evaluate(t)
  if num_importance:
    if t_fine is None:
      w_coarse = composite_midpoint(t, raw, rgb, inside, density_activation, bg)[0]
      t_imp = eg3d_importance_samples(t, w_coarse, num_importance, u_fine,
                                      padding=importance_padding)
    else:
      t_imp = jnp.asarray(t_fine, jnp.float32).reshape(-1, num_importance)
    raw_f, rgb_f, inside_f = evaluate(t_imp)
    S = num_samples + num_importance
    t, perm = jax.lax.sort(
        (jnp.concatenate([t, t_imp], -1),
         jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (o.shape[0], S))),
        dimension=-1, num_keys=1)
    raw = jnp.take_along_axis(jnp.concatenate([raw, raw_f], -1), perm, axis=-1)
    inside = jnp.take_along_axis(jnp.concatenate([inside, inside_f], -1), perm, axis=-1)
    rgb = jnp.take_along_axis(jnp.concatenate([rgb, rgb_f], -2), perm[..., None], axis=-2)
  weights, t_mid, rgb_out, opacity = composite_midpoint(t, raw, rgb, inside, density_activation,
                                                        bg)
  # Rays that miss the box: every sample is outside it, so their weights are already 0.
  weights = weights * hit[:, None]
  opacity = opacity * hit
  rgb_out = jnp.where(hit[:, None], rgb_out, bg)
  depth = jnp.sum(weights * t_mid, axis=-1) / jnp.maximum(opacity, 1e-10)
  S1 = t_mid.shape[-1]
  return {
      "rgb": rgb_out.reshape(batch_shape + (3,)),
      "depth": depth.reshape(batch_shape),
      "opacity": opacity.reshape(batch_shape),
      "weights": weights.reshape(batch_shape + (S1,)),
      "t": t_mid.reshape(batch_shape + (S1,)),
  }


# Bytes one ray-sample keeps alive inside a chunk when the caller gives no estimate: the `large`
# field's 240 fp32 features, a few 64-wide MLP activations and the renderer's ~20 per-sample
# floats (t, density, rgb, weights, sort indices), rounded up.
SAMPLE_BYTES = 2048
# The share of the device's memory one chunk may use (`auto_chunk`): the rest is the weights,
# the planes, the outputs and XLA's temporaries.
CHUNK_MEMORY_FRACTION = 0.25
# Host memory assumed when neither the device nor the OS reports it.
_FALLBACK_MEMORY_BYTES = 8 << 30
# Largest chunk `auto_chunk` picks on a device without memory stats (the CPU): there a bigger
# chunk buys no speed (no launch overhead to amortise; 16384 rays rendered slower than 4096 in
# bench/bench_rendering.py's fused field), only memory.
HOST_MAX_CHUNK = 4096


def device_memory_bytes(device=None) -> tuple[int, str]:
  """(bytes, source): the memory `device` (default `jax.devices()[0]`) may allocate —
  `memory_stats()['bytes_limit']` where the backend reports it (GPU, TPU); on CPU, where it
  reports nothing, the host's available memory (`MemAvailable` of /proc/meminfo: other
  processes' share excluded), else its physical memory, else 8 GiB."""
  import os
  device = jax.devices()[0] if device is None else device
  try:
    stats = device.memory_stats()
  except Exception:  # noqa: BLE001 - backends without memory stats raise or return None
    stats = None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"]), "memory_stats bytes_limit"
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024, "host MemAvailable"
  except (OSError, ValueError, IndexError):
    pass
  try:
    return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")), "host physical memory"
  except (ValueError, OSError, AttributeError):
    return _FALLBACK_MEMORY_BYTES, "fallback"


def auto_chunk(samples_per_ray: int, sample_bytes: int | None = None, *, device=None,
               fraction: float = CHUNK_MEMORY_FRACTION, min_chunk: int = 256,
               max_chunk: int = 1 << 16) -> int:
  """Rays per chunk for `render_image(chunk=0 | 'auto')`: the largest power of two whose
  `chunk × samples_per_ray × sample_bytes` fits in `fraction` of the device's memory
  (`device_memory_bytes`), clamped to [min_chunk, max_chunk] (and to `HOST_MAX_CHUNK` when the
  memory is the host's: the CPU backend). `sample_bytes` is the caller's
  estimate of what one ray-sample keeps alive (`SAMPLE_BYTES` when None; `lrm.render_views`
  derives it from the config). A power of two keeps the chunk count of a 2^k-pixel image exact
  (no padded rays) and the compiled program the same for nearby memory sizes."""
  if samples_per_ray < 1:
    raise ValueError(f"auto_chunk: samples_per_ray must be >= 1, got {samples_per_ray}")
  sample_bytes = SAMPLE_BYTES if sample_bytes is None else int(sample_bytes)
  memory, source = device_memory_bytes(device)
  if not source.startswith("memory_stats"):
    max_chunk = min(max_chunk, HOST_MAX_CHUNK)
  rays = int(memory * fraction // (samples_per_ray * max(sample_bytes, 1)))
  chunk = 1 << max(rays, 1).bit_length() - 1
  return int(min(max(chunk, min_chunk), max_chunk))


def ray_uniforms(key: jax.Array, ray_index: jax.Array, count: int) -> jax.Array:
  """`[N, count]` uniforms in [0, 1) of the rays `ray_index [N]` (ints): ray i's from
  `fold_in(key, i)`, so a ray's random numbers depend only on the key and its index, not on how
  the rays are chunked (`render_image`)."""
  return jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i), (count,)))(ray_index)


def render_image(field_fn: FieldFn, camera: cameras_lib.Camera, *, chunk: int | str = 4096,
                 key: jax.Array | None = None, background=1.0,
                 outputs: Sequence[str] = ("rgb", "depth", "opacity", "weights"),
                 sample_bytes: int | None = None, **render_kwargs) -> dict:
  """Renders every pixel of `camera` (batch shape `[...]`) in chunks of `chunk` rays.

  The rays are flattened, padded to a multiple of `chunk` and rendered with `lax.map`, so peak
  memory is that of one chunk, whatever the image size: each field call sees chunk × num_samples
  points (4096 × 64 × 240 concatenated fp32 features = 250 MB for the large triplane).
  `background` may be a scalar, `[3]` or per-pixel `[..., H, W, 3]`.

  `chunk` 0 or 'auto': `auto_chunk` picks it from the device's memory and `sample_bytes`, the
  caller's estimate of the bytes one ray-sample keeps alive in a chunk (`SAMPLE_BYTES` when
  None). With a key, ray i (row-major over `[..., H, W]`) draws its `num_samples +
  num_importance` uniforms from `fold_in(key, i)` (`ray_uniforms`, drawn inside each chunk, so
  nothing per sample is made outside the loop) and hands them to `volume_render` as
  `uniforms`: the render does not depend on `chunk`. (A direct `volume_render(key=...)` call
  draws one `[N, S + M]` block from the key instead, unchanged: the trainers' random-ray renders
  go through it.) Without a key the result does not depend on `chunk` either.
  `uniforms` / `t_fine` / `t_coarse` (`volume_render`'s test hooks) are per pixel,
  `[..., H, W, k]`; given uniforms take precedence over the key.
  Returns the `volume_render` dict restricted to `outputs`, each `[..., H, W, ...]`.
  """
  unknown = set(outputs) - set(RENDER_OUTPUTS)
  if unknown:
    raise ValueError(f"render_image: outputs must be among {RENDER_OUTPUTS}, got {sorted(unknown)}")
  if not (chunk == "auto" or (isinstance(chunk, int) and chunk >= 0)):
    raise ValueError(f"render_image: chunk must be an int >= 1, or 0 / 'auto' (from the device's "
                     f"memory), got {chunk!r}")
  num_samples = render_kwargs.get("num_samples")
  num_importance = render_kwargs.get("num_importance", 0)
  origins, directions = cameras_lib.camera_rays(camera)
  image_shape = origins.shape[:-1]
  bg = jnp.broadcast_to(jnp.asarray(background, jnp.float32), image_shape + (3,)).reshape(-1, 3)
  o, d = origins.reshape(-1, 3), directions.reshape(-1, 3)
  n = o.shape[0]
  if chunk in (0, "auto"):
    chunk = auto_chunk(int(num_samples) + int(num_importance), sample_bytes)
  chunk = min(chunk, n)
  num_chunks = -(-n // chunk)
  pad = num_chunks * chunk - n
  if pad:
    # Padded rays point away from the box (direction copied from ray 0 is fine: they are dropped).
    o, d, bg = (jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad, 3))]) for x in (o, d, bg))
  # Global ray indices: each chunk derives its rays' uniforms from (key, index).
  ray_index = jnp.arange(num_chunks * chunk, dtype=jnp.uint32).reshape(num_chunks, chunk)
  # Per-pixel extras (test hooks), chunked as the rays are.
  per_ray = {}
  for name in ("uniforms", "t_fine", "t_coarse"):
    value = render_kwargs.pop(name, None)
    if value is None:
      continue
    leaves = value if name == "uniforms" else {name: value}
    for k, v in leaves.items():
      v = jnp.asarray(v, jnp.float32)
      v = v.reshape(n, v.shape[-1])
      if pad:
        v = jnp.concatenate([v, jnp.broadcast_to(v[:1], (pad, v.shape[-1]))])
      per_ray[(name, k)] = v.reshape(num_chunks, chunk, v.shape[-1])

  def render_chunk(args):
    co, cd, cbg, idx, extra = args
    kw = dict(render_kwargs)
    for name in ("t_fine", "t_coarse"):
      if (name, name) in extra:
        kw[name] = extra[(name, name)]
    uni = {k: v for (name, k), v in extra.items() if name == "uniforms"}
    if not uni and key is not None:
      u = ray_uniforms(key, idx, int(num_samples) + int(num_importance))
      uni = {"coarse": u[:, :num_samples], "fine": u[:, num_samples:]}
    if uni:
      kw["uniforms"] = uni
    out = volume_render(field_fn, co, cd, background=cbg, **kw)
    return {k: out[k] for k in outputs}

  xs = (o.reshape(num_chunks, chunk, 3), d.reshape(num_chunks, chunk, 3),
        bg.reshape(num_chunks, chunk, 3), ray_index, per_ray)
  out = jax.lax.map(render_chunk, xs)
  return {k: v.reshape((num_chunks * chunk,) + v.shape[2:])[:n].reshape(image_shape + v.shape[2:])
          for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# Triplane fields (the decoder is the caller's: the LRM's NeRF MLP lives in models/lrm.py)
# ---------------------------------------------------------------------------------------------


def make_triplane_field(planes: jax.Array, decode_fn: Callable[[jax.Array], tuple], *, box=1.0,
                        padding: str = "zeros") -> FieldFn:
  """`field_fn` for `volume_render`: concatenated triplane features → `decode_fn` (view-independent
  as in LRM; directions are ignored). E.g. `decode_fn = lambda f: mlp.apply(variables, f)` with
  `mlp` the model's `lrm.NeRFMLP`.
  """
  def field_fn(points, directions):
    del directions
    return decode_fn(sample_triplane(planes, points, box, padding=padding))
  return field_fn


def make_mlp_triplane_field(planes: jax.Array, dense: Sequence[tuple[jax.Array, jax.Array]],
                            activation: Callable[[jax.Array], jax.Array],
                            output_fn: Callable[[jax.Array], tuple], *, box=1.0,
                            padding: str = "zeros", plane_axes=PLANE_AXES, fold: bool | None = None,
                            dtype=jnp.float32) -> FieldFn:
  """The fused field of a triplane decoded by a plain MLP: `dense` = [(kernel, bias), ...] of
  its layers (`activation` after every one but the last), `output_fn(x_last)` → (density, rgb).
  Equals `make_triplane_field(planes, mlp)` up to fp32 rounding (tests/test_rendering_fast.py).

  The lookup and the first layer are one step: with `fold` (default: when the planes have at
  least as many channels C as the first layer's width D) the first kernel is folded into the
  planes, `P'_p = P_p · W_p` (`W_p` the plane's C×D block, computed once here, outside the
  renderer's chunk loop), and each sample gathers and blends D-wide rows of `P'` summed over the
  planes (`sample_triplane(..., combine='sum')`) instead of 3C-wide features followed by a
  3C×D matmul — exact because bilinear interpolation and the layer are both linear. Under
  `render_image` the whole field (gather, blend, MLP) is traced into the chunk's `lax.map` body,
  so XLA fuses it per chunk and nothing per sample touches the host.

  `dtype` bfloat16 (`model.dtype`): the hidden layers' matmuls take bf16 inputs and kernels and
  accumulate in fp32 (`preferred_element_type`); biases, activations' inputs and the outputs
  stay fp32. NOT in bf16, because it is not safe there: the sample positions and ray distances
  (t ≈ 2.7 has a bf16 spacing of 0.016, a sixth of a 64-sample bin, and the merge sort of
  coarse and fine samples would reorder them), the interpolation fractions (1/256 of a texel)
  and the folded planes the samples read (the first layer's pre-activations keep fp32 so a
  density near its softplus/exp knee keeps its precision), the transmittance (a running sum of
  σ·δ over up to 128 samples whose exp amplifies an absolute error of 0.4% per unit) and the
  compositing weights and depth — all of `volume_render`, which upcasts the field's outputs.
  On CPUs without native bf16 matmuls bf16 is slower, not faster (bench/results/rendering.md
  measures fp32).
  """
  if not dense:
    raise ValueError("make_mlp_triplane_field: dense needs at least one (kernel, bias) layer")
  C = planes.shape[-1]
  k0, b0 = dense[0]
  D = k0.shape[-1]
  if k0.shape[0] != 3 * C:
    raise ValueError(f"make_mlp_triplane_field: the first kernel must be [3C={3 * C}, D], got "
                     f"{k0.shape}")
  fold = C >= D if fold is None else bool(fold)
  planes = planes.astype(jnp.float32)
  dtype = jnp.dtype(dtype)
  low = dtype != jnp.float32
  if fold:
    projected = jnp.einsum("prsc,pcd->prsd", planes, k0.astype(jnp.float32).reshape(3, C, D),
                           precision=jax.lax.Precision.HIGHEST)
  rest = [(k.astype(dtype) if low else k, b) for k, b in dense[1:]]

  def field_fn(points, directions):
    del directions
    if fold:
      x = sample_triplane(projected, points, box, padding=padding, combine="sum",
                          plane_axes=plane_axes) + b0
    else:
      x = sample_triplane(planes, points, box, padding=padding, plane_axes=plane_axes) @ k0 + b0
    for kernel, bias in rest:
      x = activation(x)
      if low:
        x = jnp.dot(x.astype(dtype), kernel, preferred_element_type=jnp.float32) + bias
      else:
        x = x @ kernel + bias
    return output_fn(x)
  return field_fn
