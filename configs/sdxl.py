"""Instant3D stage 1: SDXL text → 2×2 four-view grid (sampler, blob start, runtime, mesh).

Generate:  python -m instant3d_jax.text_to_views --config configs/sdxl.py:sdxl \
               --weights /path/to/sdxl_folder --prompt "a wooden chair" --out outputs/views
           (`--weights` is a diffusers-format folder, or a single-file `.safetensors` together
           with `--config.single_file_config_folder=/path/with/component/configs`)

Variants (`arg`):
  tiny        CPU tests/demo: a random-weight pipeline of the shapes in `random_init` (tiny UNet,
              2× VAE, 2-layer text encoders), 32² grids, 4 steps.
  sdxl/large  the paper's setting (docs/paper_facts.md §A): 1024² grid of four 512² views, 100 DDIM
              steps (eta 0), CFG 5.0, Gaussian-blob start; model shapes come from the weights.

Sampler defaults and where they come from: 100 steps and guidance 5.0 are Instant3D's
(Carve3D/I3Dit configs, docs/paper_facts.md §A, [M]); DDIM with eta 0 and the timestep spacing of the
checkpoint's scheduler config (SDXL: "leading", steps_offset 1) is the issue's choice; the blob
knobs are ours (the paper gives none; see instant3d_jax/diffusion/blob.py for the reasoning).
"""
from instant3d_jax import errors
import ml_collections

# Tiny random shapes: context 16 + 32 = 48 = the UNet's cross-attention width; pooled text 16 +
# 6 micro-conditioning numbers × 8 = 64 = its added-embedding input.
_TINY_TEXT = dict(vocab_size=100, max_position_embeddings=16, hidden_act="quick_gelu",
                  intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                  eos_token_id=2, bos_token_id=0, pad_token_id=1)
_TINY_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, block_out_channels=[32, 64],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], layers_per_block=1,
    transformer_layers_per_block=[1, 1], attention_head_dim=[2, 4], cross_attention_dim=48,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=64, norm_num_groups=8)
_TINY_VAE = dict(block_out_channels=[16, 32], down_block_types=["DownEncoderBlock2D"] * 2,
                 up_block_types=["UpDecoderBlock2D"] * 2, layers_per_block=1, latent_channels=4,
                 norm_num_groups=8, sample_size=32, scaling_factor=0.13025)


def get_config(arg=None):
  variant = arg or "tiny"
  if variant not in ("tiny", "sdxl", "large"):
    raise errors.ConfigError(f"configs/sdxl.py: variant must be tiny, sdxl or large, got {arg!r}")
  tiny = variant == "tiny"
  cfg = ml_collections.ConfigDict()
  cfg.variant = variant
  cfg.seed = 0
  cfg.single_file_config_folder = ""  # component configs/tokenizers for single-file weights

  # ------------------------------------------------------------------------------------------
  # Runtime of the modules (shapes come from the weights).
  m = cfg.model = ml_collections.ConfigDict()
  m.dtype = "float32" if tiny else "bfloat16"  # compute dtype; params stay fp32
  m.attention_impl = "xla"        # 'xla' or 'cudnn' (GPU flash attention, bf16 only)
  m.remat = "none"                # UNet per-block remat: 'none', 'full' or a policy name
  m.vae_decode_chunk = 1          # grids per VAE decoder call (peak memory of 1024² decodes)
  m.vae_tiled = False             # tiled VAE decode (approximate; for very large grids)

  # ------------------------------------------------------------------------------------------
  # Sampler.
  s = cfg.sampler = ml_collections.ConfigDict()
  s.num_steps = 4 if tiny else 100
  s.guidance_scale = 5.0
  s.scheduler = "ddim"            # ddim | euler | euler_ancestral | dpmpp_2m
  s.eta = 0.0                     # DDIM eta (0 = deterministic)
  s.init = "blob"                 # blob | noise
  s.height = 32 if tiny else 1024  # the grid; each view is height/2 × width/2
  s.width = 32 if tiny else 1024
  s.negative_prompt = ""          # '' = zero unconditional embeddings (force_zeros_for_empty_prompt)
  s.batch_size = 2 if tiny else 4  # prompts per jitted call (padded to a multiple of the mesh
                                   # data axis)
  # SDXL micro-conditioning (original size, crop top-left, target size); 0 = the grid size.
  s.original_size = (0, 0)
  s.crops_coords_top_left = (0, 0)
  s.target_size = (0, 0)

  # ------------------------------------------------------------------------------------------
  # Gaussian-blob start (our defaults; the paper gives none — diffusion/blob.py).
  b = cfg.blob = ml_collections.ConfigDict()
  b.std = 0.2                     # σ as a fraction of the view side
  b.value = 0.5                   # grey level at the blob centre
  b.background = 1.0              # white background (as the training renders)
  b.init_strength = 1.0           # fraction of the steps run (1.0: from the first timestep)

  # ------------------------------------------------------------------------------------------
  # Mesh: prompts are sharded over the logical `batch` axis (data × fsdp, the batch padded to a
  # multiple of it); parameters where the rules below map their logical names. With fsdp=1
  # (the default) every parameter is replicated; `--config.mesh.fsdp=N` FSDP-shards the UNet,
  # VAE and text encoders over N devices (diffusion/sampling.py `Placement`).
  cfg.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  # Logical → mesh axes for SDXL parameters (docs/design.md §3), used by sampling (above).
  # Unlike the reconstructor, most UNet weight sits in 3×3 ResNet convs, so their output
  # channels are split over `fsdp` too; spatial kernel dims stay unnamed
  # (layers.CONV_KERNEL_AXES).
  cfg.logical_axis_rules = (
      ("batch", ("data", "fsdp")), ("act_heads", "tensor"), ("act_embed", None),
      ("length", None), ("height", None), ("width", None),
      ("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"), ("head_dim", None),
      ("norm", None), ("conv_in", None), ("conv_out", "fsdp"), ("vocab", None))

  # ------------------------------------------------------------------------------------------
  # Random-weight shapes (tiny only; tests and benchmarks build pipelines from these).
  if tiny:
    r = cfg.random_init = ml_collections.ConfigDict()
    r.unet = _TINY_UNET
    r.vae = _TINY_VAE
    r.text_encoder = dict(_TINY_TEXT, hidden_size=16, architectures=["CLIPTextModel"])
    r.text_encoder_2 = dict(_TINY_TEXT, hidden_size=32, hidden_act="gelu", projection_dim=16,
                            architectures=["CLIPTextModelWithProjection"])
    r.tokenizer_max_length = 16
  return cfg
