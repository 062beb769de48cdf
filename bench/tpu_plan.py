"""Plan a pod run without a pod: compile a job ahead of time for a real TPU topology on this CPU
machine and report what the TPU compiler allocates per chip, the batch that fits and a roofline
step-time estimate.

    python -m bench.tpu_plan --topology v5p:4x4x8 --job lrm_train [--per_chip_batch N|auto]
        [--hint N] [--variant large] [--mesh data=8,fsdp=16,tensor=1] [--no_cache]

How: `jax.experimental.topologies.get_topology_desc(platform="tpu", topology_name=...)` (libtpu
from PyPI, `make install-aot`) returns the slice's TPU devices with no TPU attached; the job
builds its mesh from them (`base/mesh.create_mesh(..., devices=)`), lowers its jitted step on
abstract inputs and compiles it with the TPU compiler. Per chip it reports, from the compiled
executable: `memory_analysis()` (arguments, outputs, temporaries, aliased; their sum, arguments
+ outputs + temporaries − aliased, against the chip's HBM) and `cost_analysis()` (FLOPs and
HBM bytes of the partitioned per-chip program). From those two and the chip table below: a
**roofline estimate** of the step time, max(FLOPs / peak bf16 FLOP/s, bytes / HBM bandwidth), and
the MFU ceiling it implies (model FLOPs per chip / (estimate × peak)). It is an estimate, not a
measurement: it ignores ICI collectives, overlap and kernel efficiency, and XLA's cost analysis
counts a loop body once (a `lax.scan` over layers or samples is undercounted; the model FLOPs of
the task, where known, are shown beside the compiled ones).

`--per_chip_batch auto`: the largest per-chip batch that fits, by a bisection over compiles
bracketed by doubling from 1 (the first probe inside the bracket placed by a linear fit of the
bytes of the two largest fitting probes, the rest by halving); `--hint N` probes N first, then N +
1 (two compiles when the hint is right, e.g. from a smaller slice's bytes per object). A batch fits
when the compile succeeds (the TPU compiler rejects programs over HBM) and the sum above is within
the chip's HBM. Every compile's result is cached in bench/results/tpu_plan_cache.json, keyed by
topology, job, variant, batch, mesh, the hash of the sources the job compiles (`JOB_SOURCES`) and
the jax/libtpu versions, so a rerun is cheap.

Host memory: the compiles run on the CPU machine. Each row records the planning process's peak
resident memory (the table's "host peak"). `sdxl_finetune` at full size peaked at 23.2 GiB
(`v5p:2x2x2`, one grid per chip, with a swap file); without swap, on a 24 GiB machine, the
kernel's out-of-memory killer ended it. Give that job ≥ 32 GiB or a swap file.

Jobs (`JOBS`, one small function each, registered with `@job(...)`): `lrm_train` (the
reconstructor's train step as bench/bench_memory_plan.py builds it: `large`, bf16, full remat,
FSDP), `sdxl_finetune` (stage 1's SDXL fine-tuning step as bench/bench_mv_memory.py builds it),
`sdxl_sample` (one SDXL denoising step with CFG for a batch of prompts, as
diffusion/sampling.py runs it; the batch's time is the step's × the config's steps) and `text3d`
(stage 2 of the text-to-3D batch as pipeline.TextTo3D runs it: the reconstructor on the batch's
objects; stage 1 of that batch is the `sdxl_sample` row).

Writes bench/results/tpu_plan.json (one plan per topology × job × variant, the latest run) and
bench/results/tpu_plan.md (the table of all plans, folded into BENCHMARKS.md by bench/run_all.py).
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import hashlib
import importlib.util
import json
import math
import os
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

# The CPU backend for everything that runs here; libtpu only compiles. Set before jax is imported.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

GiB = 1024 ** 3
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CACHE = RESULTS / "tpu_plan_cache.json"
PLANS_JSON = RESULTS / "tpu_plan.json"
PLANS_MD = RESULTS / "tpu_plan.md"


# ----------------------------------------------------------------------------------------------
# Chips
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  bf16_tflops: float   # dense bf16 peak per chip
  hbm_gib: float       # HBM per chip
  hbm_gbps: float      # HBM bandwidth per chip, GB/s (10⁹ bytes/s)
  cores_per_chip: int  # TensorCores per chip (Cloud slice names count cores for v4 / v5p)
  source: str


# Vendor figures per chip (Google Cloud TPU system architecture pages).
CHIPS = {
    "v4": Chip("TPU v4", 275, 32, 1200, 2, "https://cloud.google.com/tpu/docs/v4"),
    "v5e": Chip("TPU v5e", 197, 16, 819, 1, "https://cloud.google.com/tpu/docs/v5e"),
    "v5p": Chip("TPU v5p", 459, 95, 2765, 2, "https://cloud.google.com/tpu/docs/v5p"),
    "v6e": Chip("TPU v6e (Trillium)", 918, 32, 1640, 1, "https://cloud.google.com/tpu/docs/v6e"),
}
# Cloud accelerator-type prefixes (TPU_ACCELERATOR_TYPE quiets libtpu's host query).
_CLOUD_PREFIX = {"v4": "v4", "v5e": "v5litepod", "v5p": "v5p", "v6e": "v6e"}


from instant3d_jax.errors import PlanError  # noqa: E402  (also tpu_plan.PlanError)


def parse_topology(topology: str) -> tuple[str, tuple[int, ...]]:
  """`'v5p:4x4x8'` → `('v5p', (4, 4, 8))`."""
  gen, _, dims = topology.partition(":")
  if gen not in CHIPS or not dims:
    raise PlanError(f"--topology {topology!r}: expected GEN:AxB[xC] with GEN one of "
                    f"{sorted(CHIPS)}, e.g. v5p:4x4x8")
  try:
    shape = tuple(int(d) for d in dims.split("x"))
  except ValueError:
    raise PlanError(f"--topology {topology!r}: the shape {dims!r} is not AxB[xC] integers") from None
  return gen, shape


def cloud_name(topology: str) -> str:
  """The Cloud slice name (`v5p:2x2x2` → `v5p-16`: v4/v5p names count TensorCores)."""
  gen, shape = parse_topology(topology)
  return f"{_CLOUD_PREFIX[gen]}-{math.prod(shape) * CHIPS[gen].cores_per_chip}"


def libtpu_version() -> str | None:
  """The installed libtpu's version, None when it is not importable."""
  if importlib.util.find_spec("libtpu") is None:
    return None
  try:
    return metadata.version("libtpu")
  except metadata.PackageNotFoundError:
    return "unknown"


def topology_devices(topology: str) -> list:
  """The TPU devices of `topology` (no TPU needed: libtpu's compiler describes the slice)."""
  parse_topology(topology)
  if libtpu_version() is None:
    raise PlanError("libtpu is not importable: install it with `make install-aot` (the version "
                    "the pinned jax[tpu] resolves; Linux x86-64)")
  # Quiet libtpu's metadata-server and worker queries (no TPU VM here).
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", cloud_name(topology))
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  # Compile-only, no TPU is opened: several planners (or a test beside a long plan) may load
  # libtpu at once instead of failing on its single-process lockfile.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies
  return list(topologies.get_topology_desc(platform="tpu", topology_name=topology).devices)


# ----------------------------------------------------------------------------------------------
# Jobs
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Built:
  """One job compiled for one batch."""
  compiled: Any                   # jax.stages.Compiled
  mesh: dict[str, int]
  global_batch: int
  unit: str                       # what one step is
  config: dict                    # what the config hash covers (JSON-able)
  # (name, abstract pytree, expected sharding pytree) of the compiled inputs, for checks.
  inputs: list[tuple[str, Any, Any]]
  model_flops: float | None = None  # analytic FLOPs of one step, whole batch (None: unknown)
  steps_per_unit: int = 1         # e.g. denoising steps per batch of prompts
  notes: str = ""


JobFn = Callable[..., Built]
JOBS: dict[str, tuple[JobFn, str]] = {}


def job(name: str, what: str):
  """Registers `fn(devices, per_chip_batch, *, variant, mesh, cfg=None) -> Built`."""
  def deco(fn):
    JOBS[name] = (fn, what)
    return fn
  return deco


def default_mesh(n: int) -> dict[str, int]:
  """FSDP over up to 16 chips, data parallel over the rest (bench/bench_memory_plan.py's plans:
  FSDP 8 on 8 devices, FSDP 16 × data 8 on 128)."""
  fsdp = math.gcd(n, 16)
  return dict(data=n // fsdp, fsdp=fsdp, tensor=1)


@job("lrm_train", "the reconstructor's train step (one object per chip = per_chip_batch 1)")
def lrm_train(devices, per_chip_batch: int, *, variant: str = "large", mesh: dict | None = None,
              cfg=None) -> Built:
  from bench import bench_memory_plan as bmp
  n = len(devices)
  mesh = dict(mesh or default_mesh(n))
  if cfg is None:
    if variant == "large":
      cfg = bmp.large_config(n, mesh, per_chip_batch)
    else:
      from instant3d_jax.configs import lrm
      cfg = lrm.get_config(variant)
  cfg.mesh.update({**dict(dcn_data=1, dcn_fsdp=1, dcn_tensor=1, num_devices=n), **mesh})
  cfg.train.global_batch_size = n * per_chip_batch
  c = bmp.compile_step(cfg, devices)
  task = c["task"]
  abstract_batch = {k: v for k, v in task.batch_spec.items()}
  fpe = task.flops_per_example
  return Built(
      compiled=c["compiled"], mesh=dict(c["mesh"].shape), global_batch=n * per_chip_batch,
      unit="train step", config=json.loads(cfg.to_json_best_effort()),
      inputs=[("state", c["abstract"], c["state_sh"]), ("batch", abstract_batch, c["batch_sh"])],
      model_flops=fpe * n * per_chip_batch if fpe else None,
      notes=f"`{variant}`, {cfg.model.dtype}, remat {cfg.model.remat}, remat_field "
            f"{cfg.model.render.remat_field}")


@job("sdxl_finetune", "the stage-1 SDXL fine-tuning step (per_chip_batch 2×2 grids per chip)")
def sdxl_finetune(devices, per_chip_batch: int, *, variant: str = "sdxl", mesh: dict | None = None,
                  cfg=None) -> Built:
  """configs/mv_sdxl.py's train step as bench/bench_mv_memory.py builds it: `sdxl` is SDXL base's
  shapes (UNet trained, VAE and text encoders frozen, bf16 compute, fp32 masters, full remat,
  EMA), FSDP over up to 16 chips; another variant (or `cfg`) compiles that config as is."""
  from bench import bench_mv_memory as bmv
  n = len(devices)
  mesh = dict(mesh or default_mesh(n))
  if cfg is None:
    if variant == "sdxl":
      cfg = bmv.sdxl_config(n, mesh, per_chip_batch)
    else:
      from instant3d_jax.configs import mv_sdxl
      cfg = mv_sdxl.get_config(variant)
  cfg.mesh.update(dict(mesh, num_devices=n))
  cfg.train.global_batch_size = n * per_chip_batch
  cfg.train.image_every = 0
  c = bmv.build_step(cfg, devices)
  task = c["task"]
  return Built(
      compiled=c["compiled"], mesh=dict(c["mesh"].shape), global_batch=n * per_chip_batch,
      unit="train step", config=json.loads(cfg.to_json_best_effort()),
      inputs=[("state", c["abstract"], c["state_sh"]), ("batch", dict(task.batch_spec),
                                                        c["batch_sh"])],
      model_flops=None,
      notes=f"`{cfg.variant}`, {cfg.model.dtype}, remat {cfg.model.remat}, trains "
            f"{'+'.join(cfg.model.train_parts)}, EMA {cfg.ema.decay:g}")


def _sdxl_pipeline(variant: str, cfg):
  """A `sampling.Pipeline` with abstract fp32 params (as loaded from a folder) of the full SDXL
  shapes (bench/device/shapes.py) or configs/sdxl.py's tiny random shapes."""
  from instant3d_jax.convert import clip as cclip
  from instant3d_jax.convert import diffusers_sdxl, sdxl_pipeline
  from instant3d_jax.diffusion import sampling, schedulers
  from instant3d_jax.models.clip import CLIPTextConfig, CLIPTextModel
  from instant3d_jax.models.unet import UNet2DConditionModel, UNetConfig
  from instant3d_jax.models.vae import AutoencoderKL, VAEConfig
  if variant == "tiny":
    s = cfg.random_init.to_dict()
    ctx_len = int(cfg.random_init.tokenizer_max_length)
  else:
    from bench.device import shapes
    s, ctx_len = shapes.sdxl(False), 77
  ucfg = UNetConfig.from_diffusers(s["unet"])
  vcfg = VAEConfig.from_diffusers(s["vae"])
  t1 = CLIPTextConfig.from_transformers(s["text_encoder"], False)
  t2 = CLIPTextConfig.from_transformers(s["text_encoder_2"], True)
  dt = sdxl_pipeline.compute_dtype(cfg.model.dtype)
  m = cfg.model
  params = {"unet": diffusers_sdxl.unet_abstract_params(ucfg),
            "vae": diffusers_sdxl.vae_abstract_params(vcfg),
            "text_encoder": cclip.text_param_shapes(t1),
            "text_encoder_2": cclip.text_param_shapes(t2)}
  pipe = sampling.Pipeline(
      unet=UNet2DConditionModel(ucfg, dtype=dt, attention_impl=m.attention_impl, remat=m.remat),
      vae=AutoencoderKL(vcfg, dtype=dt), text_encoder=CLIPTextModel(t1, dtype=dt),
      text_encoder_2=CLIPTextModel(t2, dtype=dt), params=params, tokenizer=None,
      tokenizer_2=None, scheduler_config=schedulers.SchedulerConfig.from_diffusers(None))
  return pipe, ctx_len


@job("sdxl_sample", "one SDXL denoising step with CFG for a batch of prompts (per_chip_batch "
     "prompts per batch shard)")
def sdxl_sample(devices, per_chip_batch: int, *, variant: str = "sdxl", mesh: dict | None = None,
                cfg=None) -> Built:
  import jax.numpy as jnp
  from instant3d_jax.configs import sdxl as sdxl_configs
  from instant3d_jax.diffusion import sampling, schedulers, stage1
  from instant3d_jax.base import mesh as mesh_lib
  from instant3d_jax.base import sharding as shard_lib
  cfg = cfg if cfg is not None else sdxl_configs.get_config(variant)
  if mesh:
    cfg.mesh.update(mesh)
  pipe, ctx_len = _sdxl_pipeline(cfg.variant, cfg)
  placement = stage1.placement_from_config(cfg, devices) or sampling.Placement(
      mesh_lib.create_mesh(cfg.mesh, devices), shard_lib.logical_rules(cfg.logical_axis_rules))
  sh = sampling.param_shardings(pipe, placement)["unet"]
  unet_params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                             pipe.params["unet"], sh)
  b = per_chip_batch * placement.batch_shards
  uc = pipe.unet.config
  f = pipe.vae_scale_factor
  s = cfg.sampler
  lat = (s.height // f, s.width // f, uc.in_channels)
  pooled = uc.projection_class_embeddings_input_dim - 6 * uc.addition_time_embed_dim
  keys = jax.eval_shape(lambda: sampling.initial_noise(jax.random.PRNGKey(0), 0, b, lat)[1])

  def put(shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=shard_lib.batch_sharding(
        placement.mesh, placement.rules, len(shape)))

  args = dict(latents=put((b,) + lat), ctx=put((b, 2, ctx_len, uc.cross_attention_dim)),
              pooled=put((b, 2, pooled)), time_ids=put((b, 2, 6)),
              keys=put(keys.shape, keys.dtype))
  # One denoising step: XLA's cost analysis counts a scan body once, so a one-step schedule
  # gives the per-step FLOPs and bytes; memory is the loop's (its carry is the same).
  sched = schedulers.make_schedule(s.scheduler, pipe.scheduler_config, 1, eta=s.eta)
  with jax.set_mesh(placement.mesh):
    compiled = sampling._denoise.lower(  # pylint: disable=protected-access
        pipe.unet, False, placement.rules, unet_params, args["latents"], args["ctx"],
        args["pooled"], args["time_ids"], sched, args["keys"],
        jax.ShapeDtypeStruct((), jnp.float32)).compile()
  return Built(
      compiled=compiled, mesh=dict(placement.mesh.shape), global_batch=b,
      unit=f"denoising step, {b} prompts × 2 (CFG), {s.height}×{s.width} grid",
      config=dict(cfg.to_dict(), ctx_len=ctx_len, unet=dataclasses.asdict(uc)),
      inputs=[("unet params", pipe.params["unet"], sh),
              ("latents", args["latents"], args["latents"].sharding)],
      steps_per_unit=int(s.num_steps),
      notes=f"`{cfg.variant}`, {cfg.model.dtype} compute, fp32 params, {s.scheduler}, "
            f"{s.num_steps} steps per batch")


@job("text3d", "stage 2 of the text-to-3D batch: the reconstructor on per_chip_batch objects "
     "per batch shard (stage 1's part is the sdxl_sample row)")
def text3d(devices, per_chip_batch: int, *, variant: str = "sdxl", mesh: dict | None = None,
           cfg=None, lrm_cfg=None) -> Built:
  """What `pipeline.TextTo3D.reconstruct` runs per batch: `reconstruction._lrm_apply` (the
  library's jitted reconstructor) on `[B, 4, S, S, 3]` views with the rig's cameras, the objects
  over the configs/instant3d.py mesh's batch axes and the reconstructor replicated, as
  `TextTo3D.load` places them. `sdxl`: LRM `large` in bf16; `tiny`: configs/lrm.py's tiny (or
  `lrm_cfg`)."""
  import jax.numpy as jnp
  import flax.linen as nn
  from instant3d_jax.configs import instant3d
  from instant3d_jax.configs import lrm as lrm_configs
  from instant3d_jax import cameras as cameras_lib
  from instant3d_jax import reconstruction
  from instant3d_jax.diffusion import sampling, stage1
  from instant3d_jax.models import lrm, lrm_stats
  from instant3d_jax.base import mesh as mesh_lib
  from instant3d_jax.base import sharding as shard_lib
  cfg = cfg if cfg is not None else instant3d.get_config(variant)
  if mesh:
    cfg.mesh.update(mesh)
  placement = stage1.placement_from_config(cfg, devices) or sampling.Placement(
      mesh_lib.create_mesh(cfg.mesh, devices), shard_lib.logical_rules(cfg.logical_axis_rules))
  if lrm_cfg is None:
    lrm_cfg = lrm_configs.get_config("large" if cfg.variant == "sdxl" else "tiny")
    if cfg.variant == "sdxl":
      lrm_cfg.model.dtype = "bfloat16"
  m = lrm.LRMConfig.from_config(lrm_cfg)
  rep = jax.sharding.NamedSharding(placement.mesh, jax.sharding.PartitionSpec())
  abstract = nn.meta.unbox(lrm.abstract_params(m))
  params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), abstract)
  b = per_chip_batch * placement.batch_shards
  res = int(m.input_resolution)

  def put(shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=shard_lib.batch_sharding(
        placement.mesh, placement.rules, len(shape)))

  images = put((b, int(m.num_views), res, res, 3))
  cams = jax.tree.map(lambda a: put((b,) + a.shape, a.dtype), cameras_lib.instant3d_rig(res))
  with jax.set_mesh(placement.mesh):
    compiled = reconstruction._lrm_apply.lower(  # pylint: disable=protected-access
        m, params, images, cams).compile()
  return Built(
      compiled=compiled, mesh=dict(placement.mesh.shape), global_batch=b,
      unit=f"reconstruction of {b} objects (4 × {res}² views each)",
      config=dict(cfg.to_dict(), lrm=json.loads(lrm_cfg.to_json_best_effort())),
      inputs=[("lrm params", abstract, jax.tree.map(lambda _: rep, abstract)),
              ("views", images, images.sharding)],
      model_flops=float(lrm_stats.lrm_forward_flops(m, b)),
      notes=f"LRM `{lrm_cfg.variant}`, {lrm_cfg.model.dtype}, replicated; objects over "
            f"{'×'.join(k for k, v in placement.mesh.shape.items() if v > 1) or 'one chip'}")


# ----------------------------------------------------------------------------------------------
# Measuring one compile
# ----------------------------------------------------------------------------------------------
def _cost(compiled) -> dict:
  ca = compiled.cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else {}
  ca = ca or {}
  return dict(flops=float(ca.get("flops", 0.0)), bytes=float(ca.get("bytes accessed", 0.0)))


def roofline(chip: Chip, flops: float, nbytes: float, model_flops: float | None) -> dict:
  """Roofline step-time **estimate** per chip and the MFU ceiling it implies."""
  t_compute = flops / (chip.bf16_tflops * 1e12)
  t_memory = nbytes / (chip.hbm_gbps * 1e9)
  est = max(t_compute, t_memory)
  useful = model_flops if model_flops else flops
  return dict(est_s=est, bound="compute" if t_compute >= t_memory else "HBM",
              mfu_ceiling=useful / (est * chip.bf16_tflops * 1e12) if est > 0 else None)


def measure(built: Built, chip: Chip) -> dict:
  """The JSON row of one compiled job: per-chip memory, cost, roofline estimate."""
  mem = built.compiled.memory_analysis()
  m = dict(arguments=int(mem.argument_size_in_bytes), outputs=int(mem.output_size_in_bytes),
           temporaries=int(mem.temp_size_in_bytes), aliased=int(mem.alias_size_in_bytes),
           code=int(mem.generated_code_size_in_bytes))
  m["sum"] = m["arguments"] + m["outputs"] + m["temporaries"] - m["aliased"]
  cost = _cost(built.compiled)
  n = math.prod(built.mesh.values())
  model_flops = built.model_flops / n if built.model_flops else None
  return dict(memory=m, fits=m["sum"] <= chip.hbm_gib * GiB, cost=cost,
              model_flops_per_chip=model_flops,
              roofline=roofline(chip, cost["flops"], cost["bytes"], model_flops),
              mesh=built.mesh, global_batch=built.global_batch, unit=built.unit,
              steps_per_unit=built.steps_per_unit, notes=built.notes)


def config_hash(config: dict) -> str:
  return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


class Cache:
  """Compile results on disk (JSON), keyed by everything that changes them."""

  def __init__(self, path: Path | None):
    self.path = path
    self.data = json.loads(path.read_text()) if path is not None and path.exists() else {}

  def get(self, key: str) -> dict | None:
    return self.data.get(key)

  def put(self, key: str, row: dict) -> None:
    self.data[key] = row
    if self.path is not None:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      tmp = self.path.with_name(self.path.name + ".tmp")
      tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True) + "\n")
      tmp.replace(self.path)


def _key(topology, job_name, variant, batch, mesh, chash) -> str:
  m = ",".join(f"{k}={v}" for k, v in (mesh or {}).items())
  return (f"{topology}|{job_name}|{variant}|b{batch}|mesh[{m or 'default'}]|cfg {chash}|"
          f"jax {jax.__version__}|libtpu {libtpu_version()}")


def compile_once(topology: str, job_name: str, batch: int, *, variant: str | None = None,
                 mesh: dict | None = None, cache: Cache | None = None, log=print) -> dict:
  """One compile (or its cached result): the `measure` row, or `fits: False` with the compiler's
  error when the TPU compiler rejects the program (out of HBM)."""
  if job_name not in JOBS:
    raise PlanError(f"--job {job_name!r}: expected one of {sorted(JOBS)}")
  fn, _ = JOBS[job_name]
  gen, _ = parse_topology(topology)
  chip = CHIPS[gen]
  variant = variant or _default_variant(job_name)
  # The config hash comes from a cheap build of the config alone: the job's own config record
  # is only known after building; the key uses the job's source + options instead.
  key = _plan_key(topology, job_name, variant, batch, mesh)
  if cache is not None and (hit := cache.get(key)) is not None:
    log(f"cached: {key}")
    return hit
  devices = topology_devices(topology)
  log(f"compiling {job_name} ({variant}) for {topology} ({len(devices)} chips), per-chip batch "
      f"{batch} ...")
  t0 = time.time()
  try:
    built = fn(devices, batch, variant=variant, mesh=mesh)
  except Exception as e:  # noqa: BLE001 — the TPU compiler's out-of-memory is an XlaRuntimeError
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "RESOURCE_EXHAUSTED" not in str(e) and "memory" not in str(e).lower():
      raise
    row = dict(fits=False, error=msg[:500], compile_s=time.time() - t0, batch=batch,
               host_peak_gib=host_peak_gib())
  else:
    row = measure(built, chip)
    row.update(compile_s=time.time() - t0, batch=batch, config_hash=config_hash(built.config),
               host_peak_gib=host_peak_gib())
  row.update(topology=topology, job=job_name, variant=variant, key=key,
             compiled_utc=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
             load_after=tuple(round(x, 2) for x in os.getloadavg()))
  log(f"  {'fits' if row['fits'] else 'does not fit'}: "
      + (f"sum {row['memory']['sum'] / GiB:.2f} GiB" if "memory" in row else row["error"])
      + f" ({row['compile_s']:.0f} s)")
  if cache is not None:
    cache.put(key, row)
  return row


def host_peak_gib() -> float:
  """The planning process's peak resident memory so far (GiB): what the compile needed of the
  host (see "Host memory" in the module docstring)."""
  import resource
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20   # KiB on Linux


def _plan_key(topology, job_name, variant, batch, mesh) -> str:
  """The cache key of one compile (the job's code hash covers what it compiles)."""
  chash = config_hash(dict(job=job_name, variant=variant, mesh=mesh, batch=batch,
                           src=_job_source_hash(job_name)))
  return _key(topology, job_name, variant, batch, mesh, chash)


def _default_variant(job_name: str) -> str:
  return {"lrm_train": "large", "sdxl_sample": "sdxl", "sdxl_finetune": "sdxl",
          "text3d": "sdxl"}.get(job_name, "")


def _code(source: str) -> bytes:
  """`source`'s syntax tree without docstrings: comment and docstring edits keep the cache."""
  tree = ast.parse(source)
  for node in ast.walk(tree):
    body = getattr(node, "body", None)
    if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
      node.body = body[1:] or [ast.Pass()]
  return ast.dump(tree).encode()


# What each job compiles, by path (a folder: every .py file in it): an edit to any of them
# invalidates that job's cached compiles, and only that job's.
# (instant3d_jax/base/: the mesh, sharding and checkpoint code every job compiles with.)
_LRM_SOURCES = ("configs/lrm.py", "bench/bench_memory_plan.py", "data_pipeline/datasets.py",
                "instant3d_jax/models/", "instant3d_jax/base/", "instant3d_jax/train/",
                "instant3d_jax/rendering.py", "instant3d_jax/cameras.py",
                "instant3d_jax/reconstruction.py")
_SDXL_SOURCES = ("configs/sdxl.py", "bench/device/shapes.py", "instant3d_jax/models/",
                 "instant3d_jax/base/", "instant3d_jax/train/", "instant3d_jax/diffusion/",
                 "instant3d_jax/convert/")
JOB_SOURCES = {
    "lrm_train": _LRM_SOURCES,
    "sdxl_finetune": _SDXL_SOURCES + ("configs/mv_sdxl.py", "bench/bench_mv_memory.py"),
    "sdxl_sample": _SDXL_SOURCES,
    "text3d": _SDXL_SOURCES + _LRM_SOURCES + ("configs/instant3d.py",),
}


def _source_files(job_name: str) -> list[Path]:
  out: set[Path] = set()
  for p in JOB_SOURCES[job_name]:
    path = ROOT / p
    out.update(path.glob("*.py") if p.endswith("/") else [path])
  return sorted(out)


@functools.lru_cache(maxsize=None)
def _job_source_hash(job_name: str) -> str:
  """The job's code and the model/config sources it compiles (`JOB_SOURCES`): a code edit
  invalidates the cache. Once per process: `inspect.getsource` reads the file as it is on disk
  now, so an edit during a long auto search would otherwise re-key its later probes."""
  import inspect
  h = hashlib.sha256(job_name.encode())
  h.update(_code(inspect.getsource(JOBS[job_name][0])))
  if job_name == "sdxl_sample":
    h.update(_code(inspect.getsource(_sdxl_pipeline)))
  for f in _source_files(job_name):
    if f.exists():
      h.update(str(f.relative_to(ROOT)).encode())
      h.update(_code(f.read_text()))
  return h.hexdigest()[:12]


def auto_batch(topology: str, job_name: str, *, variant=None, mesh=None, cache=None,
               max_batch: int = 1024, hint: int | None = None, max_compiles: int | None = None,
               log=print) -> tuple[dict | None, list[dict]]:
  """The largest per-chip batch that fits: `(its row or None, every probe's row)`.

  Cached compiles of the same plan (topology, job, variant, mesh, code) at any batch seed the
  bracket and the line that places the probes, so a rerun continues where a run stopped.
  `hint`: the first probe without a cached bracket (e.g. what the bytes of a smaller slice
  predict); when it fits, the next probe is `hint + 1`. `max_compiles`: stop after that many new
  compiles; the returned row then carries `auto_open: (lo, hi)`, the bracket left open."""
  variant = variant or _default_variant(job_name)
  rows: dict[int, dict] = {}
  if cache is not None:
    for row in cache.data.values():
      if (row.get("topology"), row.get("job"), row.get("variant")) == (topology, job_name, variant) \
          and row.get("key") == _plan_key(topology, job_name, variant, row["batch"], mesh):
        rows[row["batch"]] = row
  compiles = [0]

  class Budget(Exception):
    pass

  def probe(b):
    if b not in rows:
      if max_compiles is not None and compiles[0] >= max_compiles:
        raise Budget
      compiles[0] += 1
      rows[b] = compile_once(topology, job_name, b, variant=variant, mesh=mesh, cache=cache,
                             log=log)
    return rows[b]["fits"]

  fit = [b for b, r in rows.items() if r["fits"]]
  over = [b for b, r in rows.items() if not r["fits"]]
  lo, hi = max(fit, default=0), min(over, default=None)
  try:
    if not rows:
      first = min(max(int(hint or 1), 1), max_batch)
      lo, hi = (first, None) if probe(first) else (0, first)
    while hi is None and lo < max_batch:
      if lo == 0:
        nxt = 1
      elif len(rows) == 1 and hint and lo == hint:
        nxt = lo + 1
      else:
        nxt = _guess(rows, lo, None, topology) or 2 * lo
      nxt = min(max(nxt, lo + 1), max_batch)
      if probe(nxt):
        lo = nxt
      else:
        hi = nxt
    guessed = False
    while hi is not None and hi - lo > 1:
      # The line's guess once per bracket, then plain bisection: near the HBM limit the
      # compiler's choices bend the line (and a rejected compile adds no point to it), so a
      # second guess tends to land on the same edge again and walk down one batch at a time.
      mid = None if guessed else _guess(rows, lo, hi, topology)
      guessed = True
      mid = min(max(mid or (lo + hi) // 2, lo + 1), hi - 1)
      if probe(mid):
        lo = mid
      else:
        hi = mid
  except Budget:
    log(f"stopped after {max_compiles} new compiles: largest fitting {lo or 'none'}, smallest "
        f"not fitting {hi or 'not found'} (rerun to continue from the cache)")
    best = dict(rows[lo], auto_open=(lo, hi)) if lo else None
    return best, [rows[b] for b in sorted(rows)]
  return (rows[lo] if lo else None), [rows[b] for b in sorted(rows)]


def _guess(rows: dict[int, dict], lo: int, hi: int | None, topology: str) -> int | None:
  """The batch a straight line through the two largest compiled probes' sums puts at the HBM
  limit (None without two measured points); bounded by 2 × lo while no upper bracket is known."""
  pts = sorted((b, r["memory"]["sum"]) for b, r in rows.items() if "memory" in r)
  if len(pts) < 2:
    return None
  (b0, s0), (b1, s1) = pts[-2], pts[-1]
  if s1 <= s0:
    return None
  cap = CHIPS[parse_topology(topology)[0]].hbm_gib * GiB
  g = int(b1 + (cap - s1) * (b1 - b0) / (s1 - s0))
  if hi is None:
    # Probe just past the predicted limit: when the line holds, that probe fails and the next
    # (the prediction itself) closes the bracket, four compiles in all.
    return min(g + 1, 16 * lo)
  return g


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def _g(x) -> str:
  return f"{x / GiB:.2f}"


def _probe_texts(probes: list[dict]) -> list[str]:
  """`batch → sum` per probe; a run of consecutive batches the compiler rejected is one entry."""
  out, run = [], []

  def flush():
    if run:
      span = f"{run[0]}" if len(run) == 1 else f"{run[0]}–{run[-1]}"
      out.append(f"{span} → rejected by the compiler (does not fit)")
      run.clear()

  for q in sorted(probes, key=lambda q: q["batch"]):
    if "memory" not in q:
      if run and q["batch"] != run[-1] + 1:
        flush()
      run.append(q["batch"])
      continue
    flush()
    out.append(f"{q['batch']} → {_g(q['memory']['sum'])} GiB"
               + ("" if q["fits"] else " (does not fit)"))
  flush()
  return out


def table(plans: list[dict]) -> list[str]:
  lines = [
      "## TPU plans: per-chip memory and roofline from the TPU compiler (ahead of time, no TPU)",
      "",
      "Each row is the job compiled by the TPU compiler (libtpu) for the topology's devices on "
      "this CPU machine: `memory_analysis()` and `cost_analysis()` of the per-chip program. "
      "GiB per chip; sum = arguments + outputs + temporaries − aliased (donated state). "
      "**The step time is a roofline estimate**, max(FLOPs / peak, bytes / HBM bandwidth) with "
      "the chip figures below, not a measurement: it ignores collectives over ICI, overlap and "
      "kernel efficiency; the MFU ceiling is the model FLOPs (compiled FLOPs where no analytic "
      "count exists) over estimate × peak. `auto`: the largest per-chip batch that compiles "
      "within the chip's HBM (probes listed below the table).",
      "",
      "| topology (chips) | job | mesh | per-chip batch | arguments | outputs | temporaries | "
      "aliased | sum / HBM | FLOPs / chip (compiled) | model FLOPs / chip | bytes / chip | "
      "roofline estimate | bound | MFU ceiling | compile s (host peak GiB) | compiled |",
      "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"]
  probes = []
  for p in plans:
    r = p["row"]
    gen, shape = parse_topology(p["topology"])
    chip = CHIPS[gen]
    topo = f"{p['topology']} ({math.prod(shape)}; {cloud_name(p['topology'])})"
    mesh = " × ".join(f"{k} {v}" for k, v in r.get("mesh", {}).items() if v > 1) or "—"
    batch = f"{r['batch']}" + (" (auto)" if p["auto"] else "")
    if r.get("auto_open"):
      lo, hi = r["auto_open"]
      batch = (f"≥ {lo} (auto, search not finished: {lo} fits, "
               + (f"{hi} does not)" if hi else "no failing batch found yet)"))
    if "memory" not in r:
      lines.append(f"| {topo} | {p['job']} | — | {batch} | — | — | — | — | does not fit: "
                   f"{r['error'][:120]} | | | | | | | {r['compile_s']:.0f} | "
                   f"{r.get('compiled_utc', '—')[:10]} |")
      continue
    m, c, rf = r["memory"], r["cost"], r["roofline"]
    est = rf["est_s"]
    est_txt = f"{est * 1e3:.1f} ms / {r['unit'].split(',')[0]}"
    if r.get("steps_per_unit", 1) > 1:
      est_txt += f" (× {r['steps_per_unit']} = {est * r['steps_per_unit']:.2f} s per batch)"
    mf = r.get("model_flops_per_chip")
    lines.append(
        f"| {topo} | {p['job']} ({r['notes']}) | {mesh} | {batch} | {_g(m['arguments'])} | "
        f"{_g(m['outputs'])} | {_g(m['temporaries'])} | {_g(m['aliased'])} | "
        f"**{_g(m['sum'])}** / {chip.hbm_gib:g} | {c['flops'] / 1e12:.2f} T | "
        + (f"{mf / 1e12:.2f} T" if mf else "—") + f" | {c['bytes'] / GiB:.1f} GiB | "
        f"{est_txt} | {rf['bound']} | "
        + (f"{100 * rf['mfu_ceiling']:.0f}%" if rf["mfu_ceiling"] else "—")
        + f" | {r['compile_s']:.0f}"
        + (f" ({r['host_peak_gib']:.1f})" if r.get("host_peak_gib") else "")
        + f" | {r.get('compiled_utc', '—')[:10]} |")
    if p["auto"] and p.get("probes"):
      probes.append(f"- {p['topology']} {p['job']}: " + ", ".join(_probe_texts(p["probes"])))
  if probes:
    lines += ["", "Auto-batch probes (per-chip batch → sum):", ""] + probes
  lines += ["", "Chip figures used (per chip, vendor pages): "
            + "; ".join(f"{c.name}: {c.bf16_tflops:g} bf16 TFLOP/s, {c.hbm_gib:g} GiB HBM, "
                        f"{c.hbm_gbps:g} GB/s ({c.source})" for c in CHIPS.values()) + ".",
            "", "Commands (each row): "
            + "; ".join(f"`{p['command']}`" for p in plans) + ".",
            "", f"JAX {jax.__version__}, libtpu {libtpu_version()}. Compile seconds are wall "
            "time on this shared CPU machine (cached rows keep their first compile's time); host peak: "
            "the planning process's peak resident memory (rows before 2026-12-01 did not record "
            "it)."]
  return lines


def main(argv=None) -> int:
  from bench import common
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--topology", required=True, help="e.g. v5p:4x4x8, v5e:16x16, v6e:16x16")
  ap.add_argument("--job", required=True)
  ap.add_argument("--per_chip_batch", default="1", help="an integer ≥ 1, or auto")
  ap.add_argument("--variant", default=None, help="model variant (lrm_train: large; "
                  "sdxl_sample: sdxl)")
  ap.add_argument("--mesh", default="", help="data=A,fsdp=B,tensor=C (default: FSDP over up "
                  "to 16 chips, data over the rest; sdxl_sample: configs/sdxl.py's mesh)")
  ap.add_argument("--max_batch", type=int, default=256)
  ap.add_argument("--max_compiles", type=int, default=None, help="auto: stop after this many "
                  "new compiles and report the open bracket (a rerun continues from the cache)")
  ap.add_argument("--hint", type=int, default=None, help="auto: the first per-chip batch to "
                  "probe (then hint + 1); default 1, then doubling")
  ap.add_argument("--no_cache", action="store_true")
  args = ap.parse_args(argv)
  try:
    if args.job not in JOBS:
      raise PlanError(f"--job {args.job!r}: expected one of {sorted(JOBS)}")
    parse_topology(args.topology)
    mesh = None
    if args.mesh:
      try:
        mesh = {k: int(v) for k, v in (kv.split("=") for kv in args.mesh.split(","))}
      except ValueError:
        raise PlanError(f"--mesh {args.mesh!r}: expected data=A,fsdp=B,tensor=C") from None
    auto = args.per_chip_batch == "auto"
    if not auto and not (args.per_chip_batch.isdigit() and int(args.per_chip_batch) >= 1):
      raise PlanError(f"--per_chip_batch {args.per_chip_batch!r}: expected an integer ≥ 1 or "
                      "auto")
    if libtpu_version() is None:
      topology_devices(args.topology)   # raises the install hint
  except PlanError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  prov = common.Provenance.start()
  cache = Cache(None if args.no_cache else CACHE)
  variant = args.variant or _default_variant(args.job)
  if auto:
    row, probes = auto_batch(args.topology, args.job, variant=variant, mesh=mesh, cache=cache,
                             max_batch=args.max_batch, hint=args.hint,
                             max_compiles=args.max_compiles)
    row = row or probes[0]
  else:
    row, probes = compile_once(args.topology, args.job, int(args.per_chip_batch),
                               variant=variant, mesh=mesh, cache=cache), []
  plans = json.loads(PLANS_JSON.read_text()) if PLANS_JSON.exists() else {}
  pkey = f"{args.topology}|{args.job}|{variant}|{args.mesh or 'default'}"
  plans[pkey] = dict(topology=args.topology, job=args.job, variant=variant, auto=auto,
                     row=row, probes=probes, command=common.command_line())
  PLANS_JSON.parent.mkdir(parents=True, exist_ok=True)
  PLANS_JSON.write_text(json.dumps(plans, indent=1, sort_keys=True) + "\n")
  ordered = sorted(plans.values(), key=lambda p: (p["job"], math.prod(
      parse_topology(p["topology"])[1]), p["topology"]))
  lines = table(ordered)
  common.write_result(PLANS_MD, lines, prov)
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
