"""The tiny model configs the tests share (one home, so a shape change is made once).

- `micro_lrm(**knobs)`: a full LRM config (configs/lrm.py `tiny` with a few-thousand-parameter
  model: 16² views, patch 8, one encoder and one decoder block, 4² triplane tokens of 8 channels
  upsampled ×2, a 3-layer NeRF MLP); `knobs` set `model` fields by dotted name
  (`micro_lrm(**{"decoder.num_layers": 2})`).
- `micro_lrm_model(**knobs)`: its `lrm.LRMConfig`.
- `TINY_SDXL`, `TINY_SD1`, `TINY_VAE`, `TINY_UNET_EPS`: diffusers `UNet2DConditionModel` /
  `AutoencoderKL` keyword arguments of 3-level SDXL-like and SD 1.x-like UNets, a 2-level VAE and the 2-level
  UNet of the from-scratch learning check (issue 17).
- `CLIP_TEXT_TINY`, `CLIP_VISION_TINY`: transformers `CLIPTextConfig` / `CLIPVisionConfig`
  keyword arguments of a 3-layer text tower and a 2-layer vision tower.
- `VIT_TINY`: transformers keyword arguments of a tiny ViT / DINOv2 / DINOv2-with-registers
  and an input size that differs from the pre-training grid (position embeddings resampled).

Plain data and config builders only: importing this module imports neither torch nor
transformers.
"""
from __future__ import annotations

import ml_collections

from instant3d_jax.configs import lrm as lrm_configs
from instant3d_jax.models import lrm


def micro_lrm(**knobs) -> ml_collections.ConfigDict:
  """Full config (data, train, model sections) with the micro model (see module docstring)."""
  cfg = lrm_configs.get_config("tiny")
  m = cfg.model
  m.input_resolution = 16
  e = m.encoder
  e.hidden_size, e.num_layers, e.num_heads, e.mlp_dim, e.patch_size, e.image_size = \
      32, 1, 2, 64, 8, 16
  m.camera_embed_dim = 32
  d = m.decoder
  d.num_layers, d.hidden_size, d.num_heads, d.mlp_ratio = 1, 32, 2, 2
  m.triplane.token_resolution, m.triplane.channels, m.triplane.upsample = 4, 8, 2
  m.nerf.num_layers, m.nerf.hidden = 3, 16
  # The paper's model (tiny's input-view lifting off); tests turn it on with the knobs.
  x = m.extras
  x.lift, x.lift_concat, x.lift_voxels = "none", False, False
  x.lift_voxel_colour, x.lift_voxel_resolution = "mean", 0
  x.colour_prior = False
  for k, v in knobs.items():
    node = m
    *parents, leaf = k.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = v
  return cfg


def micro_lrm_model(**knobs) -> lrm.LRMConfig:
  """The `LRMConfig` of `micro_lrm(**knobs)`."""
  return lrm.LRMConfig.from_config(micro_lrm(**knobs))


# name → (transformers config class name, model class name, config kwargs, input (H, W)).
# Inputs differ from the pre-training size so position embeddings are resampled (ViT: grid 4 ->
# 6x5, non-square; DINOv2: grid 4 -> 5x5; registers: grid 4 -> 3x6, down on one axis, which the
# antialiased kernel treats differently).
VIT_TINY = {
    "vit": ("ViTConfig", "ViTModel",
            dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, image_size=32, patch_size=8), (48, 40)),
    "dinov2": ("Dinov2Config", "Dinov2Model",
               dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2,
                    image_size=28, patch_size=7, use_swiglu_ffn=True), (35, 35)),
    "dinov2_with_registers": (
        "Dinov2WithRegistersConfig", "Dinov2WithRegistersModel",
        dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=4,
             image_size=28, patch_size=7, num_register_tokens=3), (21, 42)),
}


# Tiny shapes. SDXL-like: text_time embedding, first block without attention, per-block
# transformer depths 2, linear projections, per-block heads. SD 1.x-like: conv projections,
# attention in the first blocks, a plain last block, per-block head counts.
TINY_SDXL = dict(
    block_out_channels=(32, 64, 64), layers_per_block=2, transformer_layers_per_block=(0, 2, 2),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(2, 4, 4), cross_attention_dim=48, use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=16 + 6 * 8, norm_num_groups=8, sample_size=16)
TINY_SD1 = dict(
    block_out_channels=(32, 48, 64), layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(2, 3, 4), cross_attention_dim=24, use_linear_projection=False,
    norm_num_groups=8, sample_size=16)
TINY_VAE = dict(block_out_channels=(16, 32), layers_per_block=2, norm_num_groups=8,
                latent_channels=4, sample_size=32,
                down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2)

# A 3-layer CLIP text tower; BOS 97, EOS 98 (test_clip builds ids around them), pad 1.
CLIP_TEXT_TINY = dict(vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                      num_attention_heads=4, max_position_embeddings=12, bos_token_id=97,
                      eos_token_id=98, pad_token_id=1)

# A 2-layer CLIP vision tower (16² images, patch 4) for the fresh-init comparison.
CLIP_VISION_TINY = dict(hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                        num_attention_heads=4, image_size=16, patch_size=4,
                        hidden_act="quick_gelu")

# The UNet of issue 17's learning check: in/out 48 channels, blocks 32/64, one cross-attention
# down and up block, GroupNorm 16 (8² inputs).
TINY_UNET_EPS = dict(
    in_channels=48, out_channels=48, block_out_channels=(32, 64), layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=8,
    cross_attention_dim=32, norm_num_groups=16, sample_size=8)
