"""Instant3D stage 1 training: a text-to-image diffusion UNet fine-tuned (or, `tiny`, trained from
scratch) to paint the four rig views of an object as one 2×2 grid (top-left azimuth 0°, top-right
90°, bottom-left 180°, bottom-right 270°, elevation 20°; docs/design.md §3).

Train:   python -m instant3d_jax.train_mvdiffusion --config configs/mv_sdxl.py:tiny \
             --workdir outputs/mv_tiny [--config.train.total_steps=200]
SDXL:    python -m instant3d_jax.train_mvdiffusion --config configs/mv_sdxl.py:sdxl \
             --workdir outputs/mv_sdxl --config.model.pretrained=/path/to/sdxl_folder \
             --config.data.source=records --config.data_dir=data/real
         (`model.pretrained`: a diffusers SDXL folder, or a single-file `.safetensors` together
         with `--config.model.single_file_config_folder=/path/with/component/configs`)
Memory:  python -m bench.bench_mv_memory  (the SDXL step per device at 8 and 64 devices)

Variants (`arg`):
  tiny  from scratch on the procedural world (data_pipeline/procedural.py, the `demo` set resized
        to 32² views: 64² grids), 2 CPU cores: a small SDXL-layout UNet (text_time added
        embedding, cross-attention), small random 2-layer text encoders (trained with the UNet)
        fed by a word-level tokenizer (diffusion/word_tokenizer.py), and a parameter-free pixel-unshuffle
        autoencoder (models/pixel_ae.py, factor 4: 16²×48 latents) in place of the VAE (a random
        VAE cannot decode its own latents).
  sdxl  SDXL base 1.0 weights by path (`model.pretrained`), 1024² grids of four 512² views, the
        UNet fine-tuned with FSDP over the mesh, VAE and both text encoders frozen.

tiny's training recipe: v-prediction, "trailing" timestep spacing (the sampler starts at
t = 999), Min-SNR-5 loss weights, lr 5e-4 with a cosine decay to 5e-5, and both small text
encoders trained with the UNet, on SDXL's scaled-linear schedule, for a fixed 14 000 steps of 8
grids (`make demo-mv`). Why (SDXL's defaults failed from scratch), with the measurements:
bench/results/mv_tuning.md ("configs/mv_sdxl.py:tiny, the recipe"). `sdxl` keeps the defaults
below.

Defaults and where they come from. The paper (docs/paper_facts.md §A) gives ~10K curated objects,
CFG 5 and 100 sampling steps. ε-prediction on SDXL's 1000-step DDPM schedule, micro-conditioning
at 1024² with crop (0, 0) and lr 1e-5 come from an Instant3D-derived training config (low
confidence): defaults, not facts. Caption dropout 10%, AdamW (0.9, 0.999, wd 1e-2, eps 1e-8),
gradient clipping at 1.0, a constant learning rate after warm-up and an EMA with diffusers'
`EMAModel` decay rule are diffusers' `train_text_to_image_sdxl.py` defaults (our choice).
"""
import ml_collections

from instant3d_jax.configs import data as data_config
from instant3d_jax.configs import hardware as hardware_config
from instant3d_jax.configs import sdxl as sdxl_config
from instant3d_jax import errors

# diffusers scheduler config of SDXL base (schedulers.SDXL_SCHEDULER_CONFIG): the DDPM training
# schedule (scaled_linear β 0.00085 → 0.012, 1000 steps); the sampler reads spacing from it too.
_SDXL_SCHEDULER = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "timestep_spacing": "leading",
    "steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False,
}

# `tiny` shapes. Text: the word tokenizer's (diffusion/word_tokenizer.py `WordTokenizer`) 28 ids
# (BOS 26, EOS = pad 27; tests/test_configs.py checks them against it), 24 positions.
# Context 32 + 32 = 64 = the UNet's cross-attention width; pooled 32 + 6 micro-conditioning
# numbers × 8 = 80 = its added-embedding input. UNet latents: 16² × 48 (pixel unshuffle ×4 of a
# 64² grid).
_TINY_TEXT = dict(
    vocab_size=28, max_position_embeddings=24, hidden_size=32, intermediate_size=64,
    num_hidden_layers=2, num_attention_heads=2, hidden_act="quick_gelu", bos_token_id=26,
    eos_token_id=27, pad_token_id=27)
_TINY_UNET = dict(
    sample_size=16, in_channels=48, out_channels=48, block_out_channels=[64, 128],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], layers_per_block=1,
    transformer_layers_per_block=[1, 1], attention_head_dim=[4, 4], cross_attention_dim=64,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=32 + 6 * 8, norm_num_groups=16)


def get_config(arg=None):
  variant = arg or "tiny"
  if variant not in ("tiny", "sdxl"):
    raise errors.ConfigError(f"configs/mv_sdxl.py: variant must be tiny or sdxl, got {arg!r}")
  tiny = variant == "tiny"
  cfg = ml_collections.ConfigDict()
  cfg.variant = variant
  cfg.seed = 0

  # ------------------------------------------------------------------------------------------
  # Model (instant3d_jax/train/mv_task.py builds it).
  m = cfg.model = ml_collections.ConfigDict()
  m.pretrained = ""               # SDXL diffusers folder or single-file .safetensors (sdxl)
  m.single_file_config_folder = ""  # component configs + tokenizers for single-file weights
  m.dtype = "float32" if tiny else "bfloat16"  # compute dtype; master params stay fp32
  m.attention_impl = "xla"        # 'xla' or 'cudnn' (GPU flash attention, bf16 only)
  m.remat = "none" if tiny else "full"  # UNet per-block remat: 'none', 'full' or a policy name
  # trained components (⊆ unet, text_encoder, text_encoder_2; tiny: its random text encoders
  # too, below);
  m.train_parts = ("unet", "text_encoder", "text_encoder_2") if tiny else ("unet",)
                                  # the others (and the autoencoder) are frozen
  m.autoencoder = "pixel_unshuffle" if tiny else "vae"  # 'vae' (from the weights) | 'pixel_unshuffle'
  m.pixel_ae_factor = 4           # pixel_unshuffle: latent side = grid side / factor
  m.pixel_ae_scaling_factor = 1.0  # pixels in [-1, 1] are already unit scale
  m.tokenizer = "word" if tiny else "clip"  # 'clip' (the weights' tokenizers) | 'word'
  m.tokenizer_max_length = 24     # 'word' only (≥ the longest caption: 16 tokens)
  # Random weights when `pretrained` is empty: diffusers / transformers config.json dicts of
  # `unet`, `text_encoder`, `text_encoder_2` and (autoencoder 'vae') `vae`; frozen parts draw
  # their weights from `random_init_seed` (numpy, the same on every start and resume).
  m.random_init = ml_collections.ConfigDict()
  m.random_init_seed = 1
  if tiny:
    m.random_init.unet = _TINY_UNET
    text = _TINY_TEXT             # max_position_embeddings = tokenizer_max_length
    m.random_init.text_encoder = dict(text, architectures=["CLIPTextModel"])
    m.random_init.text_encoder_2 = dict(text, hidden_act="gelu", projection_dim=32,
                                        architectures=["CLIPTextModelWithProjection"])

  # ------------------------------------------------------------------------------------------
  # Diffusion training (instant3d_jax/diffusion/training.py).
  d = cfg.diffusion = ml_collections.ConfigDict()
  d.scheduler = dict(_SDXL_SCHEDULER)   # training schedule + sampler spacing (diffusers form)
  if tiny:  # the sampler starts at t = 999 (see the docstring: tiny's deviations)
    d.scheduler.update(timestep_spacing="trailing", steps_offset=0)
  d.prediction_type = "v_prediction" if tiny else "epsilon"  # 'epsilon' | 'v_prediction'
  d.caption_dropout = 0.1               # zero context and pooled embedding (the uncond. branch)
  d.snr_gamma = 5.0 if tiny else 0.0    # > 0: Min-SNR-γ loss weights (diffusers' --snr_gamma)
  d.latent_sample = True                # sample the VAE posterior (False: its mean)
  # SDXL micro-conditioning (original size, crop top-left, target size); (0, 0) = the grid size.
  d.original_size = (0, 0) if tiny else (1024, 1024)
  d.crops_coords_top_left = (0, 0)
  d.target_size = (0, 0) if tiny else (1024, 1024)

  # ------------------------------------------------------------------------------------------
  # EMA of the trained weights, in the train state (train/step.py `ema_decay_at`: diffusers'
  # EMAModel rule, min(decay, (1 + n) / (10 + n))). 0 disables it.
  cfg.ema = ml_collections.ConfigDict(dict(decay=0.999 if tiny else 0.9999))

  # ------------------------------------------------------------------------------------------
  # Data: captioned 2×2 grids of the rig views (data_pipeline/mv_grids.py) from the data set in
  # `data_dir` ('procedural': generated from `data` if absent; 'records': an existing one).
  cfg.data = data_config.get_config("demo" if tiny else "default")
  cfg.data.source = "procedural" if tiny else "records"
  cfg.data_dir = f"outputs/data/{cfg.data.variant}"
  g = cfg.grid = ml_collections.ConfigDict()
  g.view_resolution = 32 if tiny else 512  # each view R² (area-resized), the grid (2R)²
  g.split = "train"
  g.heldout = "train"             # caption-level split part trained on ('' = every object)
  g.heldout_seed = 0              # data_pipeline/captions.py caption_split
  # 8 held-out combinations: 4 val (what tuning looks at) + 4 test (scored through the test
  # ledger), data_pipeline/captions.py heldout_roles.
  g.num_heldout = 8
  g.object_list = ""              # curated object list file ('' = all)
  # A frozen-encoder cache (python -m data_pipeline.mv_cache; latents + prompt embeddings) to
  # train from instead of the grids ('' = encode grids and captions inside the step).
  g.cache_dir = ""
  g.seed = 0
  g.worker_count = 0
  g.read_threads = 2
  g.prefetch_batches = 4

  # ------------------------------------------------------------------------------------------
  # Sample grids during training (EMA weights, the jitted sampler of diffusion/sampling.py),
  # every `train.image_every` steps, to TensorBoard and workdir/images.
  s = cfg.sample = ml_collections.ConfigDict()
  # Fixed held-out val captions: data_pipeline/captions.py `heldout_sample_captions(4)` for the
  # `grid` split above (tests/test_configs.py checks them against it).
  s.captions = ("a blue ring", "a brown cone", "a cyan cylinder", "a green cone")
  s.per_caption = 2 if tiny else 1
  s.num_steps = 25 if tiny else 50
  s.guidance_scale = 5.0          # docs/paper_facts.md §A
  s.scheduler = "ddim"
  s.init = "noise"                # 'noise' | 'blob' (diffusion/blob.py)
  s.seed = 0

  # ------------------------------------------------------------------------------------------
  # Mesh and sharding: configs/sdxl.py's rules (FSDP of UNet weights over `fsdp`).
  cfg.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  cfg.logical_axis_rules = sdxl_config.get_config("sdxl").logical_axis_rules

  cfg.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=5e-4 if tiny else 1e-5, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2,
      warmup_steps=100 if tiny else 500, decay_steps=0, final_lr_ratio=0.1 if tiny else 1.0,
      grad_clip_norm=1.0, decay_min_ndim=2))

  cfg.train = ml_collections.ConfigDict(dict(
      total_steps=14_000 if tiny else 20_000, time_budget_s=0.0,
      global_batch_size=8 if tiny else 64, accum_steps=1, log_every=20 if tiny else 50,
      image_every=2500 if tiny else 1000, eval_every=0, max_nonfinite_in_a_row=20,
      halt_at_step=0,
      checkpoint_must_match=("model", "diffusion", "ema", "grid", "optimizer"),
      # Read only when a run starts at step 0 (the weights' location may move between resumes).
      checkpoint_may_differ=("model.pretrained", "model.single_file_config_folder",
                             "grid.cache_dir")))
  cfg.checkpoint = ml_collections.ConfigDict(dict(every_steps=2500 if tiny else 1000, keep=3))
  cfg.checkpoint["async"] = True
  # Peak TFLOP/s per device kind, for MFU (configs/hardware.py, shared).
  cfg.hardware = hardware_config.get_config()
  return cfg
