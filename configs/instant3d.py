"""Instant3D end to end: text → 2×2 four-view grid (stage 1) → triplane NeRF (stage 2) → renders,
turntable, mesh (instant3d_jax/pipeline.py).

Generate:  python -m instant3d_jax.text_to_3d --config configs/instant3d.py:tiny \
               --prompts_file prompts.txt --out outputs/text3d
           python -m instant3d_jax.text_to_3d --config configs/instant3d.py:sdxl \
               --config.stage1.weights=/path/to/mv_sdxl_workdir \
               --config.stage2.weights=/path/to/lrm_workdir --prompt "a wooden chair" --out OUT
Web app:   python -m instant3d_jax.app --config configs/instant3d.py:tiny

Variants (`arg`):
  tiny        the shapes world on a CPU: stage 1 is the `make demo-mv` run (configs/mv_sdxl.py:tiny
              trained by instant3d_jax/demo_mv.py into outputs/mv_demo/train, EMA weights), stage 2
              the `make demo` reconstructor (instant3d_jax/demo.py trains configs/lrm.py:tiny into
              outputs/demo/lrm). Sampler: configs/mv_sdxl.py:tiny's `sample` section.
  sdxl (full) the paper's setting: an SDXL fine-tuned to paint the 2×2 grid (weights by path),
              1024² grids of four 512² views, 100 DDIM steps at CFG 5 from the Gaussian blob
              (configs/sdxl.py `sampler`, docs/paper_facts.md §A), and a reconstructor by path.

Weights (nothing is downloaded; a missing or wrong-kind path fails before any compute):
  stage1.weights  a `train_mvdiffusion` workdir (its latest step's EMA weights; the model config
                  saved with it), a diffusers SDXL folder (model_index.json), or a single-file
                  `.safetensors` with `stage1.single_file_config_folder`;
  stage2.weights  a `train_lrm` workdir, a step directory or an exported `.safetensors`
                  (instant3d_jax/convert/checkpoints.py `load`, config embedded).

`stage1.sample`: what the sampler runs with (None/0 fields come from the weights: a workdir's grid
size and micro-conditioning are those it trained with). `mesh`/`logical_axis_rules`: the device
mesh sampling runs on (prompts over `data`; parameters replicated with fsdp=1, FSDP-sharded with
`--config.mesh.fsdp=N`); `batch_size` prompts per jitted call, a multiple of the batch split.
`export`: render resolution, turntable, marching cubes (instant3d_jax/reconstruction.py).
"""
import ml_collections

from instant3d_jax.configs import mv_sdxl as mv_config
from instant3d_jax.configs import sdxl as sdxl_config
from instant3d_jax import errors


def get_config(arg=None):
  variant = arg or "tiny"
  if variant == "full":
    variant = "sdxl"
  if variant not in ("tiny", "sdxl"):
    raise errors.ConfigError(f"configs/instant3d.py: variant must be tiny, sdxl or full, got "
                             f"{arg!r}")
  tiny = variant == "tiny"
  cfg = ml_collections.ConfigDict()
  cfg.variant = variant
  cfg.seed = 0

  # ------------------------------------------------------------------------------------------
  # Stage 1: text → 2×2 grid.
  s1 = cfg.stage1 = ml_collections.ConfigDict()
  s1.weights = "outputs/mv_demo/train" if tiny else ""
  s1.single_file_config_folder = ""  # component configs + tokenizers for single-file weights
  # Module runtime for diffusers / single-file weights (a workdir brings its own `model`).
  sd = sdxl_config.get_config("tiny" if tiny else "sdxl")
  s1.model = ml_collections.ConfigDict(sd.model.to_dict())
  smp = s1.sample = ml_collections.ConfigDict()
  if tiny:
    ms = mv_config.get_config("tiny").sample
    smp.num_steps = int(ms.num_steps)          # 25 (configs/mv_sdxl.py:tiny)
    smp.guidance_scale = float(ms.guidance_scale)
    smp.scheduler = str(ms.scheduler)
    smp.init = str(ms.init)                    # 'noise': the tiny model trained from scratch
  else:
    ss = sd.sampler
    smp.num_steps = int(ss.num_steps)          # 100 (docs/paper_facts.md §A)
    smp.guidance_scale = float(ss.guidance_scale)  # 5.0
    smp.scheduler = str(ss.scheduler)          # ddim
    smp.init = str(ss.init)                    # blob
  smp.eta = 0.0
  smp.negative_prompt = ""                     # '' = zero unconditional embeddings
  # The grid side (0: from a workdir's grid.view_resolution; diffusers/single-file weights need
  # it) and the SDXL micro-conditioning ((0, 0) = the grid size; a workdir uses its own).
  smp.grid_size = 0 if tiny else 1024
  smp.original_size = (0, 0)
  smp.crops_coords_top_left = (0, 0)
  smp.target_size = (0, 0)
  s1.blob = ml_collections.ConfigDict(sd.blob.to_dict())

  # ------------------------------------------------------------------------------------------
  # Stage 2: four views → triplane (the one checkpoint entry point, convert/checkpoints.py `load`).
  s2 = cfg.stage2 = ml_collections.ConfigDict()
  s2.weights = "outputs/demo/lrm" if tiny else ""
  # Generated views' pixels within this of the background (every channel, [0, 1]) become the
  # background before reconstruction (reconstruction.clean_background; 0: off). tiny: 0.16, the
  # best re-render of stage 1's held-out grids by the `make demo` reconstructor (the sweep:
  # bench/results/mv_tuning.md); every palette colour has a channel ≥ 0.3 away from white, so
  # only grain and anti-aliased edges change. Off for `sdxl`: real objects can be near-white.
  s2.background_threshold = 0.16 if tiny else 0.0

  # ------------------------------------------------------------------------------------------
  # Outputs per object (instant3d_jax/reconstruction.py renders and meshes).
  e = cfg.export = ml_collections.ConfigDict()
  e.render_resolution = 0          # renders and turntable (0: the reconstructor's input size)
  e.turntable_frames = 36 if tiny else 60
  e.fps = 12.0
  e.mesh_resolution = 64 if tiny else 256  # marching-cubes grid per axis
  # Density level of the surface, or 'auto' (midway between the 5th and 95th percentiles of the
  # grid; reconstruct's choice for the demo models). 5.0 is reconstruct's default.
  e.mesh_threshold = "auto" if tiny else "5.0"
  e.chunk = 0                      # rays per render chunk (0: the model's render.chunk)

  # ------------------------------------------------------------------------------------------
  # Batch inference: prompts per jitted call (padded; a multiple of the batch split) and the
  # device mesh (docs/design.md §3; configs/sdxl.py's rules: `batch` over data × fsdp).
  cfg.batch_size = 8 if tiny else 4
  cfg.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  cfg.logical_axis_rules = sd.logical_axis_rules
  return cfg
