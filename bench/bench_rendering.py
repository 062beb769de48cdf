"""Renderer speed on this CPU: triplane lookup variants, a full 512² image, where the time goes,
and a training-sized render forward+backward.

    python -m bench.bench_rendering [--runs 3] [--image_runs 2] [--quick]

1. Triplane lookup (64×64×80 planes, 131 072 points = 1024 rays × 128 samples), forward and
   forward+backward (grad w.r.t. planes), for the implementations considered for
   `rendering.sample_triplane`: `jax.scipy.ndimage.map_coordinates` per plane and channel, one
   12-corner gather over a flattened table of all planes, a corner-packed `[(R+1)², 4C]` table
   (one gather per plane), and the shipped per-plane row gathers. All agree to 1e-5.
2. One 512² image, 64 + 64 samples/ray, 64×64×80 triplane decoded by a 10-layer width-64 SiLU MLP
   on the concatenated 240-D features (the `large` config's renderer), `render_image`, jitted:
   BEFORE, the renderer as it was (`make_triplane_field` + the MLP module, chunk `--chunk`), and
   AFTER, the shipped fused field (`rendering.make_mlp_triplane_field`, what
   `lrm.render_views` renders with: first layer folded into the planes) with the chunk from the
   device's memory (`chunk='auto'`), in one process with their timed runs interleaved: seconds
   per image (compile excluded, median of `--image_runs`), rays × samples per second, and the
   ratio; and their largest output difference (key=None, fp32).
3. Breakdown of one `--chunk`-ray chunk of that image: triplane lookup alone, MLP alone, the
   renderer with a constant field (sampling, importance sampling, merge sort, compositing), and
   the full chunk; plus the same chunk with the fused field, in fp32 and with bf16 hidden matmuls
   (`dtype=bfloat16`, as under `model.dtype='bfloat16'`).
4. A `tiny`-config training render (4 triplanes 3×32×32×32, 1024 rays each, 16 + 16 samples,
   4-layer width-64 MLP), forward+backward w.r.t. planes and MLP, with the same breakdown.

First-layer folding: the first dense layer is linear and bilinear interpolation is linear, so
`dense_0(concat_p interp(P_p))` = `Σ_p interp(P_p · W_p) + b` with `W_p` the plane's 80×64 block
of the kernel. Projecting the planes once per triplane (3·64·64·80·64 MACs) replaces a 240×64
matmul per sample and narrows the gathered rows from 80 to 64 floats. Exact up to fp32
rounding; shipped as `rendering.make_mlp_triplane_field` (used by `lrm.render_views`).

Writes bench/results/rendering.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from instant3d_jax import cameras, rendering
from instant3d_jax.models import lrm as lrm_lib

RESULTS = Path(__file__).resolve().parent / "results" / "rendering.md"


def cpu_name() -> str:
  for line in Path("/proc/cpuinfo").read_text().splitlines():
    if line.startswith("model name"):
      return line.split(":", 1)[1].strip()
  return "unknown CPU"


def timeit(fn, *args, runs: int = 3, warmup: bool = True) -> tuple[float, float]:
  """(compile seconds, median wall seconds of `runs` runs). `fn` is jitted; it is compiled ahead
  of time, then run once untimed (`warmup`, skipped for the slow full image), then timed. The
  median process CPU time of the same runs is kept in `last_cpu` (robust to other jobs' load)."""
  t0 = time.perf_counter()
  fn = fn.lower(*args).compile()
  first = time.perf_counter() - t0
  if warmup:
    jax.block_until_ready(fn(*args))
  times, cpu = [], []
  for _ in range(runs):
    t0, c0 = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
  global last_cpu
  last_cpu = statistics.median(cpu)
  return first, statistics.median(times)


last_cpu = 0.0


# --- triplane lookup alternatives --------------------------------------------------------------

def _texel_coords(points, R, box=1.0):
  """Padded texel coordinates as in rendering.sample_triplane: (frac, int index) `[..., 3]`."""
  pix = jnp.clip((points + box) * (R / (2.0 * box)) + 0.5, 0.0, float(R + 1))
  i0 = jnp.minimum(jnp.floor(pix), float(R))
  return pix - i0, i0.astype(jnp.int32)


def lookup_map_coordinates(planes, points):
  R = planes.shape[1]
  feats = []
  for p, (ca, ra) in enumerate(rendering.PLANE_AXES):
    cols = (points[..., ca] + 1.0) * (R / 2.0) - 0.5
    rows = (points[..., ra] + 1.0) * (R / 2.0) - 0.5
    one = lambda img, rows=rows, cols=cols: jax.scipy.ndimage.map_coordinates(  # noqa: E731
        img, [rows, cols], order=1, mode="constant")
    feats.append(jax.vmap(one, in_axes=-1, out_axes=-1)(planes[p]))
  return jnp.concatenate(feats, -1)


def lookup_single_gather(planes, points):
  R, C = planes.shape[1], planes.shape[-1]
  Rp = R + 2
  table = jnp.pad(planes, ((0, 0), (1, 1), (1, 1), (0, 0))).reshape(-1, C)
  frac, i0 = _texel_coords(points, R)
  cols = jnp.stack([i0[..., a] for a, _ in rendering.PLANE_AXES], -1)
  rows = jnp.stack([i0[..., b] for _, b in rendering.PLANE_AXES], -1)
  fx = jnp.stack([frac[..., a] for a, _ in rendering.PLANE_AXES], -1)
  fy = jnp.stack([frac[..., b] for _, b in rendering.PLANE_AXES], -1)
  base = (jnp.arange(3) * Rp + rows) * Rp + cols                     # [..., 3]
  idx = jnp.stack([base, base + 1, base + Rp, base + Rp + 1], -1)    # [..., 3, 4]
  w = jnp.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], -1)
  g = table[idx]                                                     # [..., 3, 4, C]
  return jnp.sum(g * w[..., None], -2).reshape(points.shape[:-1] + (3 * C,))


def lookup_packed_corners(planes, points):
  R, C = planes.shape[1], planes.shape[-1]
  P = jnp.pad(planes, ((0, 0), (1, 1), (1, 1), (0, 0)))
  table = jnp.concatenate([P[:, :-1, :-1], P[:, :-1, 1:], P[:, 1:, :-1], P[:, 1:, 1:]], -1)
  table = table.reshape(3, (R + 1) * (R + 1), 4 * C)
  frac, i0 = _texel_coords(points, R)
  feats = []
  for p, (ca, ra) in enumerate(rendering.PLANE_AXES):
    fx, fy = frac[..., ca, None], frac[..., ra, None]
    g = jnp.take(table[p], i0[..., ra] * (R + 1) + i0[..., ca], axis=0, mode="clip")
    top = g[..., :C] * (1 - fx) + g[..., C:2 * C] * fx
    bottom = g[..., 2 * C:3 * C] * (1 - fx) + g[..., 3 * C:] * fx
    feats.append(top * (1 - fy) + bottom * fy)
  return jnp.concatenate(feats, -1)


def lookup_rows_autodiff(planes, points):
  """The shipped forward (per-plane row gathers) with JAX's own backward (12 scatter-adds)."""
  R, C = planes.shape[1], planes.shape[-1]
  Rp = R + 2
  table = jnp.pad(planes, ((0, 0), (1, 1), (1, 1), (0, 0))).reshape(3, Rp * Rp, C)
  frac, i0 = _texel_coords(points, R)
  feats = []
  for p, (ca, ra) in enumerate(rendering.PLANE_AXES):
    fx, fy = frac[..., ca, None], frac[..., ra, None]
    base = i0[..., ra] * Rp + i0[..., ca]
    take = lambda idx, t=table[p]: t.at[idx].get(mode="promise_in_bounds")  # noqa: E731
    top = take(base) * (1 - fx) + take(base + 1) * fx
    bottom = take(base + Rp) * (1 - fx) + take(base + Rp + 1) * fx
    feats.append(top * (1 - fy) + bottom * fy)
  return jnp.concatenate(feats, -1)


LOOKUPS = {
    "map_coordinates (per plane, vmap over channels)": lookup_map_coordinates,
    "one 12-corner gather, all planes": lookup_single_gather,
    "corner-packed [(R+1)², 4C] table": lookup_packed_corners,
    "per-plane row gathers, autodiff backward (12 scatters)": lookup_rows_autodiff,
    "per-plane row gathers, custom backward: 1 scatter per plane (shipped)": rendering.sample_triplane,
}


def bench_lookups(runs: int, num_points: int) -> list[dict]:
  rng = np.random.default_rng(0)
  planes = jnp.asarray(rng.normal(size=(3, 64, 64, 80)), jnp.float32)
  points = jnp.asarray(rng.uniform(-1, 1, (num_points, 3)), jnp.float32)
  cot = jnp.asarray(rng.normal(size=(num_points, 240)), jnp.float32)
  ref = jax.jit(rendering.sample_triplane)(planes, points)
  rows = []
  for name, fn in LOOKUPS.items():
    fwd = jax.jit(fn)
    err = float(jnp.max(jnp.abs(fwd(planes, points) - ref)))
    # points and cotangent are arguments: as closure constants XLA would constant-fold the
    # (P-independent) gradient of this linear map.
    bwd = jax.jit(jax.grad(lambda P, x, c, fn=fn: jnp.sum(fn(P, x) * c)))
    _, t_fwd = timeit(fwd, planes, points, runs=runs)
    c_fwd = last_cpu
    _, t_bwd = timeit(bwd, planes, points, cot, runs=runs)
    rows.append(dict(name=name, err=err, fwd=t_fwd, bwd=t_bwd, cfwd=c_fwd, cbwd=last_cpu))
    print(f"lookup {name:62s} max|diff| {err:.1e}  fwd {t_fwd * 1e3:7.1f} ms (cpu {c_fwd * 1e3:7.1f})"
          f"  grad {t_bwd * 1e3:7.1f} ms (cpu {last_cpu * 1e3:7.1f})", flush=True)
  return rows


# --- MLP (the model's lrm.NeRFMLP, mirrored so the first layer can be folded) -----------------

def make_decoder(num_layers: int, features: int, seed: int = 0):
  decoder = lrm_lib.NeRFMLP(hidden=64, num_layers=num_layers, activation="silu")
  variables = jax.jit(decoder.init)(jax.random.PRNGKey(seed), jnp.zeros((1, features)))
  return decoder, nn.unbox(variables)


def fused_field(planes, decoder, variables, dtype=jnp.float32, fold=None):
  """The shipped fused field (`rendering.make_mlp_triplane_field`) of `decoder`'s parameters: the
  first layer folded into the planes by default (see the docstring)."""
  params = variables["params"]
  dense = [(params[f"dense_{i}"]["kernel"], params[f"dense_{i}"]["bias"])
           for i in range(decoder.num_layers)]
  act = {"relu": jax.nn.relu, "silu": jax.nn.silu}[decoder.activation]
  return rendering.make_mlp_triplane_field(planes, dense, act, decoder.outputs, dtype=dtype,
                                           fold=fold)


def plain_field(planes, decoder, variables):
  return rendering.make_triplane_field(planes, lambda f: decoder.apply(variables, f))


# --- full image and its breakdown ----------------------------------------------------------------

def bench_image(runs: int, image_runs: int, res: int, chunk: int) -> dict:
  """The breakdown of one `chunk` of the image, then the image BEFORE (plain field, `chunk`)
  and AFTER (fused field, auto chunk), their timed runs interleaved (before, after, before, ...)
  so both see the same load."""
  from instant3d_jax.configs import lrm as lrm_configs
  rng = np.random.default_rng(1)
  planes = jnp.asarray(rng.normal(size=(3, 64, 64, 80)) * 0.5, jnp.float32)
  decoder, variables = make_decoder(10, 240)
  num_samples, num_importance = 64, 64
  S = num_samples + num_importance
  cam = cameras.orbit_camera(20.0, 30.0, 2.7, 50.0, res, res)
  kw = dict(num_samples=num_samples, num_importance=num_importance)
  sample_bytes = lrm_lib.render_sample_bytes(lrm_configs.get_config("large"))
  auto = rendering.auto_chunk(S, sample_bytes)
  memory, source = rendering.device_memory_bytes()
  out = {"res": res, "chunk": chunk, "samples": S, "auto_chunk": auto,
         "sample_bytes": sample_bytes, "memory": memory, "memory_source": source}
  print(f"auto chunk {auto} ({sample_bytes} B/sample, {memory / 2**30:.1f} GiB {source})",
        flush=True)

  # Breakdown on one chunk of real rays (the image centre, where rays cross the box).
  o, d = cameras.camera_rays(cam)
  o, d = o.reshape(-1, 3), d.reshape(-1, 3)
  mid = o.shape[0] // 2 - chunk // 2
  o, d = o[mid:mid + chunk], d[mid:mid + chunk]
  t = jnp.linspace(0.0, 1.0, S)
  near, far, _ = rendering.ray_box(o, d)
  points = o[:, None] + (near[:, None] + (far - near)[:, None] * t)[..., None] * d[:, None]
  feats = jax.jit(rendering.sample_triplane)(planes, points)
  const = lambda p, dd: (jnp.full(p.shape[:-1], 2.0), jnp.full(p.shape, 0.5))  # noqa: E731

  def chunk_fn(field_of):
    return jax.jit(lambda P, o, d: rendering.volume_render(field_of(P), o, d, **kw))

  plain_of = lambda P: plain_field(P, decoder, variables)  # noqa: E731
  fused_of = lambda P: fused_field(P, decoder, variables)  # noqa: E731
  bf16_of = lambda P: fused_field(P, decoder, variables, dtype=jnp.bfloat16)  # noqa: E731
  parts = {
      "triplane lookup": (jax.jit(rendering.sample_triplane), (planes, points)),
      "MLP (240→64, 8×64→64, 64→4)": (jax.jit(lambda f: decoder.apply(variables, f)), (feats,)),
      "renderer with a constant field (sampling, PDF, sort, compositing)": (
          jax.jit(lambda o, d: rendering.volume_render(const, o, d, **kw)), (o, d)),
      "full chunk (lookup + MLP + renderer)": (chunk_fn(plain_of), (planes, o, d)),
      "full chunk, fused field (first layer folded into the planes)": (
          chunk_fn(fused_of), (planes, o, d)),
      "full chunk, fused field, bf16 hidden matmuls": (chunk_fn(bf16_of), (planes, o, d)),
  }
  out["chunk_parts"] = {}
  for name, (fn, args) in parts.items():
    _, sec = timeit(fn, *args, runs=runs)
    out["chunk_parts"][name] = (sec, last_cpu)
    print(f"chunk {chunk}×{S}: {name:62s} {sec * 1e3:8.1f} ms (cpu {last_cpu * 1e3:8.1f})",
          flush=True)
  ref = chunk_fn(plain_of)(planes, o, d)
  bf = chunk_fn(bf16_of)(planes, o, d)
  out["bf16_rgb_max_diff"] = float(jnp.max(jnp.abs(bf["rgb"] - ref["rgb"])))
  print(f"bf16 vs fp32 chunk rgb max|diff| {out['bf16_rgb_max_diff']:.1e}", flush=True)

  # The whole image, before and after, compiled first, then timed runs interleaved.
  image = {}
  for label, field_of, ch in (("before", plain_of, chunk), ("after", fused_of, "auto")):
    render = jax.jit(lambda P, field_of=field_of, ch=ch: rendering.render_image(
        field_of(P), cam, chunk=ch, sample_bytes=sample_bytes,
        outputs=("rgb", "depth", "opacity"), **kw))
    t0 = time.perf_counter()
    image[label] = render.lower(planes).compile()
    out[f"image_{label}_first"] = time.perf_counter() - t0
  renders, times, cpus = {}, {k: [] for k in image}, {k: [] for k in image}
  for _ in range(image_runs):
    for label, fn in image.items():
      t0, c0 = time.perf_counter(), time.process_time()
      renders[label] = jax.block_until_ready(fn(planes))
      times[label].append(time.perf_counter() - t0)
      cpus[label].append(time.process_time() - c0)
      print(f"{res}² image, {S} samples/ray, {label}: {times[label][-1]:.2f} s "
            f"({res * res * S / times[label][-1] / 1e6:.2f} M ray-samples/s)", flush=True)
  out["image_runs"] = image_runs
  for label in image:
    out[f"image_{label}"] = statistics.median(times[label])
    out[f"image_{label}_cpu"] = statistics.median(cpus[label])
  # Paired: each (before, after) pair ran back to back under about the same load, so the ratio
  # is the median of the per-pair ratios (other jobs' load moves both members of a pair).
  out["ratio"] = statistics.median(b / a for b, a in zip(times["before"], times["after"]))
  out["cpu_ratio"] = statistics.median(b / a for b, a in zip(cpus["before"], cpus["after"]))
  out["pair_ratios"] = [b / a for b, a in zip(times["before"], times["after"])]
  out["image_max_diff"] = {k: float(jnp.max(jnp.abs(renders["after"][k] - renders["before"][k])))
                           for k in ("rgb", "depth", "opacity")}
  print(f"after / before: {out['ratio']:.2f}x (pairs {out['pair_ratios']}, cpu "
        f"{out['cpu_ratio']:.2f}x); max|diff| "
        + ", ".join(f"{k} {v:.1e}" for k, v in out["image_max_diff"].items()), flush=True)
  return out


def bench_training_render(runs: int) -> dict:
  """tiny-config training render: fwd+bwd of an MSE loss w.r.t. planes and MLP parameters."""
  rng = np.random.default_rng(2)
  B, rays, R, C, L = 4, 1024, 32, 32, 4
  num_samples = num_importance = 16
  S = num_samples + num_importance
  planes = jnp.asarray(rng.normal(size=(B, 3, R, R, C)) * 0.5, jnp.float32)
  decoder, variables = make_decoder(L, 3 * C)
  rig = cameras.instant3d_rig(resolution=64)
  o, d = cameras.camera_rays(rig)                                   # [4, 64, 64, 3]
  pick = rng.choice(64 * 64 * 4, size=(B, rays))
  o = o.reshape(-1, 3)[pick]
  d = d.reshape(-1, 3)[pick]
  target = jnp.asarray(rng.uniform(size=(B, rays, 3)), jnp.float32)
  kw = dict(num_samples=num_samples, num_importance=num_importance)
  key = jax.random.PRNGKey(0)

  def loss_plain(P, v, o, d, target):
    def one(P, o, d, t):
      f = rendering.make_triplane_field(P, lambda x: decoder.apply(v, x))
      return jnp.mean((rendering.volume_render(f, o, d, key=key, **kw)["rgb"] - t) ** 2)
    return jnp.mean(jax.vmap(one)(P, o, d, target))

  def loss_folded(P, v, o, d, target):
    def one(P, o, d, t):
      f = fused_field(P, decoder, v, fold=True)
      return jnp.mean((rendering.volume_render(f, o, d, key=key, **kw)["rgb"] - t) ** 2)
    return jnp.mean(jax.vmap(one)(P, o, d, target))

  const = lambda p, dd: (jnp.full(p.shape[:-1], 2.0) + 0 * p[..., 0], p * 0 + 0.5)  # noqa: E731
  points = jnp.asarray(rng.uniform(-1, 1, (B, rays * S, 3)), jnp.float32)
  feats = jax.jit(jax.vmap(rendering.sample_triplane))(planes, points)
  parts = {
      "triplane lookup fwd+bwd (grad w.r.t. planes)": (
          jax.jit(jax.grad(lambda P, x: jnp.sum(jax.vmap(rendering.sample_triplane)(P, x) ** 2))),
          (planes, points)),
      "MLP fwd+bwd (grad w.r.t. features and params)": (
          jax.jit(jax.grad(lambda f, v: sum(jnp.sum(x ** 2) for x in decoder.apply(v, f)),
                           argnums=(0, 1))), (feats, variables)),
      "renderer fwd+bwd, constant field (grad w.r.t. origins)": (
          jax.jit(jax.grad(lambda o, d: jnp.sum(rendering.volume_render(const, o, d, key=key, **kw)[
              "rgb"]))), (o, d)),
      "full render loss fwd+bwd": (
          jax.jit(jax.grad(loss_plain, argnums=(0, 1))), (planes, variables, o, d, target)),
      "full render loss fwd+bwd, first layer folded": (
          jax.jit(jax.grad(loss_folded, argnums=(0, 1))), (planes, variables, o, d, target)),
  }
  out = {"B": B, "rays": rays, "S": S, "R": R, "C": C, "L": L, "parts": {}}
  for name, (fn, args) in parts.items():
    _, sec = timeit(fn, *args, runs=runs)
    out["parts"][name] = (sec, last_cpu)
    print(f"train render {B}×{rays}×{S}: {name:56s} {sec * 1e3:8.1f} ms (cpu {last_cpu * 1e3:8.1f})",
          flush=True)
  return out


def write_results(lookups, image, train, args, prov) -> None:
  import resource
  from bench import common
  peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB
  S = image["samples"]
  res = image["res"]
  lines = [
      "## Renderer (`instant3d_jax/rendering.py`)",
      "",
      f"JAX {jax.__version__} CPU. Process CPU time (all threads of this process) is given "
      "beside wall time as the measure least affected by other load (the load average is in "
      "the provenance line below); rows of one table were measured back to back.",
      "",
      f"### One {res}² image, {S} samples/ray (64 + 64), 64×64×80 triplane, 10 × 64 SiLU MLP",
      "",
      "`render_image` jitted and compiled ahead of time (compile excluded), key=None, fp32. "
      "**Before**: the renderer as it was, `make_triplane_field` (240-D concatenated features) "
      f"→ the MLP module, chunk {image['chunk']} rays (the configs' `model.render.chunk`). "
      "**After**: the fused field `lrm.render_views` now renders with "
      "(`rendering.make_mlp_triplane_field`: lookup and first layer in one step, the layer "
      "folded into the planes), chunk `'auto'` = "
      f"{image['auto_chunk']} rays (`rendering.auto_chunk`: {image['sample_bytes']} B per "
      f"ray-sample, `lrm.render_sample_bytes` of `large`, against "
      f"{image['memory'] / 2**30:.1f} GiB {image['memory_source']}; capped at "
      f"`HOST_MAX_CHUNK` = {rendering.HOST_MAX_CHUNK} on the CPU). Both in this one process, "
      f"their {image['image_runs']} timed runs each interleaved (before, after, before, …) so "
      "both see the same load; medians.",
      "",
      "| renderer | chunk | s / image (wall) | M ray-samples / s | process CPU s | compile s |",
      "|---|---:|---:|---:|---:|---:|",
  ]
  for label, name, ch in (("before", "before: concat 240-D → MLP", image["chunk"]),
                          ("after", "after: fused field, first layer folded", image["auto_chunk"])):
    sec = image[f"image_{label}"]
    lines.append(f"| {name} | {ch} | {sec:.2f} | {res * res * S / sec / 1e6:.2f} | "
                 f"{image[f'image_{label}_cpu']:.1f} | {image[f'image_{label}_first']:.1f} |")
  diff = image["image_max_diff"]
  cpu_ratio = image["cpu_ratio"]
  fused_cpu = image["chunk_parts"]["full chunk, fused field (first layer folded into the planes)"][1]
  bf16_cpu = image["chunk_parts"]["full chunk, fused field, bf16 hidden matmuls"][1]
  lines += [
      "",
      f"**After / before: {image['ratio']:.2f}× the ray-samples per second** (wall: median of "
      "the per-pair ratios "
      f"{', '.join(f'{r:.2f}' for r in image['pair_ratios'])}; process CPU time "
      f"{cpu_ratio:.2f}×, likewise). After vs before, max |diff|: rgb {diff['rgb']:.1e}, depth "
      f"{diff['depth']:.1e}, opacity {diff['opacity']:.1e}. bf16 hidden matmuls (the fused "
      f"field under `model.dtype='bfloat16'`) on one chunk: rgb max |diff| "
      f"{image['bf16_rgb_max_diff']:.1e} to the plain fp32 field; process CPU "
      f"{bf16_cpu * 1e3:.0f} ms against {fused_cpu * 1e3:.0f} ms for the fused field in fp32 "
      f"({'slower' if bf16_cpu > fused_cpu else 'faster'} on this CPU; table below). Under "
      "heavy load from other jobs wall times stretch and wander; the ratio comes from "
      "interleaved runs, and the process CPU times are the steadier measure. For scale, not "
      "measured here: the paper reports 0.5 images/s for its renderer on an A100 "
      "(docs/paper_facts.md §B).",
      "",
      f"### Where the time goes: one {image['chunk']}-ray chunk × {S} samples (forward)",
      "",
      "| part | wall ms | share | process CPU ms | share |",
      "|---|---:|---:|---:|---:|",
  ]
  full, full_cpu = image["chunk_parts"]["full chunk (lookup + MLP + renderer)"]
  for name, (sec, cpu) in image["chunk_parts"].items():
    lines.append(f"| {name} | {sec * 1e3:.1f} | {sec / full:.0%} | {cpu * 1e3:.1f} | "
                 f"{cpu / full_cpu:.0%} |")
  lines += [
      "",
      f"### Training render (`tiny`): {train['B']} triplanes 3×{train['R']}²×{train['C']}, "
      f"{train['rays']} rays each, {train['S']} samples (16 + 16), {train['L']}-layer MLP, "
      "forward + backward",
      "",
      "| part | wall ms | share | process CPU ms | share |",
      "|---|---:|---:|---:|---:|",
  ]
  full, full_cpu = train["parts"]["full render loss fwd+bwd"]
  for name, (sec, cpu) in train["parts"].items():
    lines.append(f"| {name} | {sec * 1e3:.1f} | {sec / full:.0%} | {cpu * 1e3:.1f} | "
                 f"{cpu / full_cpu:.0%} |")
  lines += [
      "",
      "### Triplane lookup implementations (64×64×80 planes, "
      f"{args.num_points:,} points)",
      "",
      "| implementation | max abs diff to shipped | forward ms (CPU ms) | grad w.r.t. planes ms "
      "(CPU ms) |",
      "|---|---:|---:|---:|",
  ]
  for r in lookups:
    lines.append(f"| {r['name']} | {r['err']:.1e} | {r['fwd'] * 1e3:.1f} ({r['cfwd'] * 1e3:.1f}) | "
                 f"{r['bwd'] * 1e3:.1f} ({r['cbwd'] * 1e3:.1f}) |")
  lines += [
      "",
      "Reading the tables: parts are compiled and timed alone (the training table's MLP row also "
      "differentiates w.r.t. its input features); in the full graph they share and fuse work differently, so the "
      "shares need not add up to 100%. "
      f"Peak resident memory of this run (chunk {args.chunk}): {peak_gb:.1f} GB. "
      "Folding the first MLP layer into the planes pays when C > hidden (80 > 64: large); it "
      "does not for `tiny` (C = 32 < 64).",
  ]
  print(f"wrote {common.write_result(RESULTS, lines, prov)}")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--runs", type=int, default=3, help="timed runs per small measurement")
  ap.add_argument("--image_runs", type=int, default=2,
                  help="timed runs of the full image, before and after each")
  ap.add_argument("--res", type=int, default=512)
  ap.add_argument("--chunk", type=int, default=4096,
                  help="the BEFORE renderer's chunk (the configs' model.render.chunk) and the "
                  "breakdown's chunk")
  ap.add_argument("--num_points", type=int, default=131072)
  ap.add_argument("--quick", action="store_true", help="128² image, fewer points (smoke run)")
  ap.add_argument("--only", default="", help="debug: run only 'lookups', 'train' or 'image'; "
                  "nothing is written")
  args = ap.parse_args()
  if args.quick:
    args.res, args.num_points, args.runs, args.image_runs = 128, 16384, 1, 1
  if args.only:
    {"lookups": lambda: bench_lookups(args.runs, args.num_points),
     "train": lambda: bench_training_render(args.runs),
     "image": lambda: bench_image(args.runs, args.image_runs, args.res,
                                        args.chunk)}[args.only]()
    return
  from bench import common
  prov = common.Provenance.start()
  lookups = bench_lookups(args.runs, args.num_points)
  train = bench_training_render(args.runs)
  image = bench_image(args.runs, args.image_runs, args.res,
                                        args.chunk)
  write_results(lookups, image, train, args, prov)


if __name__ == "__main__":
  main()
