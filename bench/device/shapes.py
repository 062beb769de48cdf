"""Model shapes of the device suite: the full SDXL components (stabilityai/stable-diffusion-xl-
base-1.0's unet/, vae/, text_encoder/, text_encoder_2/ configs, minus bookkeeping keys) and the
tiny shapes the CPU dry run pushes through the same code (configs/sdxl.py's `tiny`).

The UNet and VAE dicts are the ones tests/test_unet_vae.py checks parameter counts against
(2,567,463,684 UNet parameters); the text towers are tests/test_clip.py's FULL_TEXT_L/G.
"""
from __future__ import annotations

SDXL_UNET = {
    "act_fn": "silu", "addition_embed_type": "text_time", "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280], "center_input_sample": False,
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_type": "UNetMidBlock2DCrossAttn", "norm_eps": 1e-05, "norm_num_groups": 32,
    "out_channels": 4, "projection_class_embeddings_input_dim": 2816, "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
}
SDXL_VAE = {
    "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4,
    "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 1024,
    "scaling_factor": 0.13025, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
_TEXT = dict(vocab_size=49408, max_position_embeddings=77, eos_token_id=2, bos_token_id=0,
             pad_token_id=1)
SDXL_TEXT_L = dict(_TEXT, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                   num_attention_heads=12, hidden_act="quick_gelu", projection_dim=768,
                   architectures=["CLIPTextModel"])
SDXL_TEXT_G = dict(_TEXT, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                   num_attention_heads=20, hidden_act="gelu", projection_dim=1280,
                   architectures=["CLIPTextModelWithProjection"])

def sdxl(dry_run: bool) -> dict:
  """`{unet, vae, text_encoder, text_encoder_2}` config dicts (diffusers / transformers form)
  plus the step shapes: latent side, batch, context length."""
  if dry_run:
    # configs/sdxl.py's tiny random-weight shapes (one home; ml_collections travels with the
    # device wheels).
    from instant3d_jax.configs import sdxl as sdxl_configs  # pylint: disable=g-import-not-at-top
    r = sdxl_configs.get_config("tiny").random_init.to_dict()
    return dict(unet=r["unet"], vae=r["vae"], text_encoder=r["text_encoder"],
                text_encoder_2=r["text_encoder_2"], latent=16, ctx_len=16, grid=32, steps=2)
  return dict(unet=SDXL_UNET, vae=SDXL_VAE, text_encoder=SDXL_TEXT_L,
              text_encoder_2=SDXL_TEXT_G, latent=128, ctx_len=77, grid=1024, steps=100)
