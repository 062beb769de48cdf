"""Parity of the Flax SDXL UNet and VAE with the diffusers PyTorch classes (tiny random configs,
fp32, relative error max|a-b|/max|b| <= 1e-4) and exact parameter counts of the full configs."""
import numpy as np
import pytest
import torch
import jax
import jax.numpy as jnp
import diffusers

from instant3d_jax.convert import diffusers_sdxl as conv
from instant3d_jax.models import layers
from tests.tiny_configs import TINY_SD1, TINY_SDXL, TINY_VAE
from instant3d_jax.models.unet import UNet2DConditionModel, UNetConfig
from instant3d_jax.models.vae import AutoencoderKL, VAEConfig, decode_chunked

TOL = 1e-4

# Full configs as shipped in stabilityai/stable-diffusion-xl-base-1.0 (unet/, vae/) and
# stable-diffusion-v1-5 (unet/), minus the `_class_name`/`_diffusers_version` bookkeeping.
SDXL_UNET = {
    "act_fn": "silu", "addition_embed_type": "text_time", "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280], "center_input_sample": False,
    "class_embed_type": None, "class_embeddings_concat": False, "conv_in_kernel": 3,
    "conv_out_kernel": 3, "cross_attention_dim": 2048, "cross_attention_norm": None,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1, "dual_cross_attention": False, "encoder_hid_dim": None,
    "encoder_hid_dim_type": None, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4,
    "layers_per_block": 2, "mid_block_only_cross_attention": None, "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn", "norm_eps": 1e-05, "norm_num_groups": 32,
    "num_attention_heads": None, "num_class_embeds": None, "only_cross_attention": False,
    "out_channels": 4, "projection_class_embeddings_input_dim": 2816,
    "resnet_out_scale_factor": 1.0, "resnet_skip_time_act": False,
    "resnet_time_scale_shift": "default", "sample_size": 128, "time_cond_proj_dim": None,
    "time_embedding_act_fn": None, "time_embedding_dim": None,
    "time_embedding_type": "positional", "timestep_post_act": None,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "upcast_attention": None, "use_linear_projection": True,
}
SDXL_VAE = {
    "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4,
    "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 1024,
    "scaling_factor": 0.13025, "up_block_types": ["UpDecoderBlock2D"] * 4, "force_upcast": True,
}
SD15_UNET = {
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
    "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
}

def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / np.abs(b).max())


def nchw(x):
  return np.asarray(x).transpose(0, 3, 1, 2)


def nhwc(x):
  return jnp.asarray(np.asarray(x).transpose(0, 2, 3, 1))


def random_torch(cls, cfg, seed):
  torch.manual_seed(seed)
  m = cls(**cfg).eval()
  with torch.no_grad():  # default inits zero some outputs; randomise everything
    for p in m.parameters():
      p.normal_(0.0, 0.1)
  return m


@pytest.fixture(scope="module", params=["sdxl", "sd1"])
def unet_pair(request, tmp_path_factory):
  cfg = TINY_SDXL if request.param == "sdxl" else TINY_SD1
  tm = random_torch(diffusers.UNet2DConditionModel, cfg, seed=0)
  folder = tmp_path_factory.mktemp(f"unet_{request.param}")
  tm.save_pretrained(folder)
  config, params = conv.load_unet(folder)
  return request.param, tm, config, params


# Latent sizes per tiny config: 16² has sides divisible by 2^(levels-1); 10² and 18×14 (3 levels:
# 10 → 5 → 3) do not, so the upsamplers resize to the skip's size with PyTorch's nearest rule,
# as diffusers does (one odd size per config keeps the compiles few).
_SIZES = {"sdxl": [(16, 16), (10, 10)], "sd1": [(16, 16), (18, 14)]}


@pytest.mark.parametrize("which", [0, 1], ids=["even", "odd"])
def test_unet_parity(unet_pair, which):
  name, tm, config, params = unet_pair
  size = _SIZES[name][which]
  rng = np.random.default_rng(1)
  cross = config.cross_attention_dim
  x = rng.standard_normal((2, 4) + size).astype(np.float32)
  t = np.array([3.0, 741.0], np.float32)
  ctx = rng.standard_normal((2, 7, cross)).astype(np.float32)
  kw, tkw = {}, {}
  if name == "sdxl":
    te = rng.standard_normal((2, 16)).astype(np.float32)
    ids = np.array([[1024, 1024, 0, 0, 1024, 1024], [512, 768, 16, 32, 1024, 1024]], np.float32)
    kw = dict(text_embeds=jnp.asarray(te), time_ids=jnp.asarray(ids))
    tkw = dict(added_cond_kwargs=dict(text_embeds=torch.from_numpy(te),
                                      time_ids=torch.from_numpy(ids)))
  with torch.no_grad():
    ref = tm(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(ctx), **tkw).sample.numpy()
  model = UNet2DConditionModel(config)
  out = jax.jit(model.apply)({"params": params}, nhwc(x), jnp.asarray(t), jnp.asarray(ctx), **kw)
  err = rel_err(nchw(out), ref)
  print(f"UNet {name} parity at {size}: rel err {err:.3e}")
  assert err <= TOL


def test_unet_requires_text_time_inputs():
  model = UNet2DConditionModel(UNetConfig.from_diffusers(TINY_SDXL))
  with pytest.raises(ValueError, match="text_embeds .* and time_ids .* are required"):
    jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 4)), 1.0,
                                      jnp.zeros((1, 3, 48))))


@pytest.fixture(scope="module")
def vae_pair(tmp_path_factory):
  tm = random_torch(diffusers.AutoencoderKL, TINY_VAE, seed=2)
  folder = tmp_path_factory.mktemp("vae")
  tm.save_pretrained(folder)
  config, params = conv.load_vae(folder)
  return tm, config, params


def test_vae_encode_decode_parity(vae_pair):
  tm, config, params = vae_pair
  rng = np.random.default_rng(3)
  x = np.clip(rng.standard_normal((2, 3, 32, 32)), -1, 1).astype(np.float32)
  z = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
  with torch.no_grad():
    dist = tm.encode(torch.from_numpy(x)).latent_dist
    ref_mean, ref_logvar = dist.mean.numpy(), dist.logvar.numpy()
    ref_dec = tm.decode(torch.from_numpy(z)).sample.numpy()
  model = AutoencoderKL(config)
  mean, logvar = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode))(
      params, nhwc(x))
  dec = jax.jit(lambda p, z: model.apply({"params": p}, z, method=model.decode))(params, nhwc(z))
  errs = {"mean": rel_err(nchw(mean), ref_mean), "logvar": rel_err(nchw(logvar), ref_logvar),
          "decode": rel_err(nchw(dec), ref_dec)}
  print("VAE parity:", {k: f"{v:.3e}" for k, v in errs.items()})
  assert max(errs.values()) <= TOL
  assert config.scaling_factor == pytest.approx(0.18215)  # diffusers default for this config


def test_vae_chunked_and_tiled_decode(vae_pair):
  tm, config, params = vae_pair
  model = AutoencoderKL(config)
  rng = np.random.default_rng(4)
  # 24² latents > the 16² tile (sample_size 32 / 2): diffusers tiles with stride 12, blend 8 px.
  z = rng.standard_normal((2, 4, 24, 24)).astype(np.float32)
  tm.enable_tiling()
  with torch.no_grad():
    ref_tiled = tm.decode(torch.from_numpy(z)).sample.numpy()
  tm.disable_tiling()
  with torch.no_grad():
    ref_full = tm.decode(torch.from_numpy(z)).sample.numpy()
  tiled = jax.jit(lambda p, z: decode_chunked(model, p, z, batch_chunk=1, tiled=True))(
      params, nhwc(z))
  chunked = jax.jit(lambda p, z: decode_chunked(model, p, z, batch_chunk=1))(params, nhwc(z))
  e_tiled, e_chunked = rel_err(nchw(tiled), ref_tiled), rel_err(nchw(chunked), ref_full)
  print(f"VAE tiled decode rel err {e_tiled:.3e}, batch-chunked {e_chunked:.3e}")
  assert e_tiled <= TOL and e_chunked <= TOL
  assert rel_err(ref_tiled, ref_full) > 1e-3  # the tiled path really differs from the full one


def torch_meta_count(cls, cfg):
  with torch.device("meta"):
    m = cls(**cfg)
  return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", ["sdxl_unet", "sd15_unet", "sdxl_vae"])
def test_full_parameter_counts(name):
  if name == "sdxl_vae":
    ours = layers.count_params(conv.vae_abstract_params(VAEConfig.from_diffusers(SDXL_VAE)))
    ref = torch_meta_count(diffusers.AutoencoderKL, SDXL_VAE)
  else:
    cfg = SDXL_UNET if name == "sdxl_unet" else SD15_UNET
    ours = layers.count_params(conv.unet_abstract_params(UNetConfig.from_diffusers(cfg)))
    ref = torch_meta_count(diffusers.UNet2DConditionModel, cfg)
  print(f"{name}: {ours:,} params (PyTorch {ref:,})")
  assert ours == ref
  if name == "sdxl_unet":
    assert ours == 2_567_463_684


def test_unsupported_config_is_rejected():
  with pytest.raises(ValueError, match="class_embed_type='timestep' is not supported"):
    UNetConfig.from_diffusers({**SDXL_UNET, "class_embed_type": "timestep"})
  with pytest.raises(ValueError, match="down block type 'SimpleCrossAttnDownBlock2D'"):
    UNetConfig.from_diffusers({**SD15_UNET, "down_block_types": ["SimpleCrossAttnDownBlock2D"] * 4})
