"""Fresh-initialisation statistics match the PyTorch modules each family mirrors (issue 17).

Per family, a freshly built Flax model and a freshly built PyTorch reference of the same tiny
config (tests/tiny_configs.py) are compared tensor by tensor, mapped by name through the
project's converters (Flax → torch state-dict names):
- a tensor the reference builds constant (LayerNorm/GroupNorm ones/zeros, zero biases, layer
  scale) must be exactly that constant here;
- otherwise the per-tensor standard deviations agree within `std_tol(n)` (sampling noise of two
  independent draws of n values: each relative std estimate has standard error ≤ √(1/(2n)) for
  normal or uniform values, so the difference has ≤ 1/√n; the tolerance is 4 of those), and for
  torch's uniform inits the largest |x| lies in (0.75, 1]·bound. Tensors under 32 values skip
  the std comparison (too noisy to say anything).
The old Flax defaults (lecun-normal kernels, std √3 × torch's; zero biases) fail both checks.

Plus `test_unet_learns_eps_prediction`: the short training run of the issue.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import traverse_util
import flax.linen as nn

from instant3d_jax.convert import clip as cclip
from instant3d_jax.convert import diffusers_sdxl as cdiff
from instant3d_jax.convert import safetensors_io as sio
from instant3d_jax.convert import transformers_vit as cvit
from instant3d_jax.models import layers
from instant3d_jax.models import lrm
from instant3d_jax.models import vit
from instant3d_jax.models.clip import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, \
    CLIPVisionModel
from instant3d_jax.models.unet import UNet2DConditionModel, UNetConfig
from instant3d_jax.models.vae import AutoencoderKL, VAEConfig
from tests import tiny_configs

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

MIN_SIZE = 32


def std_tol(n: int) -> float:
  """Allowed relative difference of two independent std estimates from n values each."""
  return 4.0 / math.sqrt(n)


def compare(ours: dict, ref: dict, *, bounds: dict | None = None, skip: tuple = ()) -> int:
  """Compare `ours` (torch names → arrays) with `ref` (torch names → tensors); returns how many
  tensors had their std compared. `bounds` maps a name to its uniform bound."""
  bounds = bounds or {}
  missing = sorted(set(ref) - set(ours) - set(skip))
  assert not missing, f"reference tensors without a Flax counterpart: {missing[:5]}"
  compared = 0
  failures = []
  for name, t in ref.items():
    if name in skip:
      continue
    r = np.asarray(t.detach().numpy() if isinstance(t, torch.Tensor) else t, np.float64)
    o = np.asarray(ours[name], np.float64)
    assert o.size == r.size, (name, o.shape, r.shape)
    if r.size > 1 and r.std() == 0:
      if not np.all(o == r.flat[0]):
        failures.append(f"{name}: reference constant {r.flat[0]}, ours std {o.std():.3g} "
                        f"max|x| {np.abs(o).max():.3g}")
      continue
    if name in bounds:
      b = bounds[name]
      # The lower end only where a uniform draw reaches it surely (0.75^32 ≈ 1e-4).
      low = 0.75 * b if o.size >= MIN_SIZE else 0.0
      if not (np.abs(o).max() <= b * (1 + 1e-6) and np.abs(o).max() > low):
        failures.append(f"{name}: max|x| {np.abs(o).max():.4g} outside ({low:.4g}, {b:.4g}]")
    if r.size < MIN_SIZE:
      continue
    rel = abs(o.std() / r.std() - 1)
    compared += 1
    if rel > std_tol(r.size):
      failures.append(f"{name} {r.shape}: std {o.std():.4g} vs torch {r.std():.4g} "
                      f"(rel {rel:.3f} > {std_tol(r.size):.3f})")
  assert not failures, "\n".join(failures)
  return compared


def torch_uniform_bounds(module: torch.nn.Module, prefix: str = "") -> dict:
  """name → 1/√fan_in for every torch Linear/Conv2d(/Transpose) weight and bias in `module`."""
  out = {}
  for mname, m in module.named_modules():
    if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
      fan_in = torch.nn.init._calculate_fan_in_and_fan_out(m.weight)[0]
      for pname in ("weight", "bias"):
        if getattr(m, pname, None) is not None:
          out[f"{prefix}{mname}.{pname}"] = 1 / math.sqrt(fan_in)
  return out


def flat(params) -> dict:
  return traverse_util.flatten_dict(nn.unbox(params), sep="/")


# ---------------------------------------------------------------------------------------------
# diffusers: the UNet and the VAE keep torch's module defaults.


def fresh_unet(config: UNetConfig, seed: int = 1) -> dict:
  """Fresh params of the Flax UNet (`init` on dummy inputs), unboxed."""
  s = jnp.zeros((1, 4, 4, config.in_channels))
  ctx = jnp.zeros((1, 1, config.cross_attention_dim))
  extra = {}
  if config.addition_embed_type == "text_time":
    text_dim = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
    extra = dict(text_embeds=jnp.zeros((1, text_dim)), time_ids=jnp.zeros((1, 6)))
  init = jax.jit(lambda k: UNet2DConditionModel(config).init(k, s, jnp.ones((1,)), ctx,
                                                             **extra)["params"])
  return nn.unbox(init(jax.random.key(seed)))


@pytest.fixture(scope="module")
def eps_unet():
  """(config, fresh params) of the issue's UNet, shared by the init and training tests."""
  config = UNetConfig.from_diffusers(tiny_configs.TINY_UNET_EPS)
  return config, fresh_unet(config)


def _check_unet(diffusers_cfg: dict, config: UNetConfig, params) -> int:
  torch.manual_seed(0)
  tm = diffusers.UNet2DConditionModel(**diffusers_cfg)
  assert jax.tree.structure(params) == jax.tree.structure(cdiff.unet_abstract_params(config))
  return compare(cdiff.flax_to_diffusers_state(params), tm.state_dict(),
                 bounds=torch_uniform_bounds(tm))


def test_unet_init_matches_diffusers(eps_unet):
  assert _check_unet(tiny_configs.TINY_UNET_EPS, *eps_unet) > 30


@pytest.mark.slow  # ~30 s on 2 cores (compiles the 3-level UNet's init); the same code paths
def test_sdxl_unet_init_matches_diffusers():  # plus the text_time embedding and depth-2 blocks
  config = UNetConfig.from_diffusers(tiny_configs.TINY_SDXL)
  assert _check_unet(tiny_configs.TINY_SDXL, config, fresh_unet(config)) > 50


def test_vae_init_matches_diffusers():
  torch.manual_seed(0)
  tm = diffusers.AutoencoderKL(**tiny_configs.TINY_VAE)
  config = VAEConfig.from_diffusers(tiny_configs.TINY_VAE)
  x = jnp.zeros((1, config.downsample_factor, config.downsample_factor, config.in_channels))
  params = jax.jit(AutoencoderKL(config).init)(jax.random.key(1), x)["params"]
  ours = cdiff.flax_to_diffusers_state(params)
  n = compare(ours, tm.state_dict(), bounds=torch_uniform_bounds(tm))
  assert n > 20


# ---------------------------------------------------------------------------------------------
# transformers: what `Model(config)` gives after `post_init()` (its `_init_weights`).


def test_clip_text_init_matches_transformers():
  torch.manual_seed(0)
  tcfg = transformers.CLIPTextConfig(**tiny_configs.CLIP_TEXT_TINY, projection_dim=40)
  tm = transformers.CLIPTextModelWithProjection(tcfg)
  config = CLIPTextConfig.from_transformers(tcfg.to_dict(), with_projection=True)
  ids = jnp.zeros((1, config.max_position_embeddings), jnp.int32)
  params = jax.jit(CLIPTextModel(config).init)(jax.random.key(1), ids)["params"]
  ours = cclip.text_from_flax(params, config)
  ref = {k: v for k, v in tm.state_dict().items() if not k.endswith("position_ids")}
  assert compare(ours, ref) > 15


def test_clip_vision_init_matches_transformers():
  torch.manual_seed(0)
  tcfg = transformers.CLIPVisionConfig(**tiny_configs.CLIP_VISION_TINY, projection_dim=40)
  tm = transformers.CLIPVisionModelWithProjection(tcfg)
  config = CLIPVisionConfig.from_transformers(tcfg.to_dict(), with_projection=True)
  px = jnp.zeros((1, config.image_size, config.image_size, config.num_channels))
  params = jax.jit(CLIPVisionModel(config).init)(jax.random.key(1), px)["params"]
  ours = cclip.vision_from_flax(params, config)
  ref = {k: v for k, v in tm.state_dict().items() if not k.endswith("position_ids")}
  assert compare(ours, ref) > 15


@pytest.mark.parametrize("kind", list(tiny_configs.VIT_TINY))
def test_vit_init_matches_transformers(kind, tmp_path):
  config_name, model_name, kw, (h, w) = tiny_configs.VIT_TINY[kind]
  torch.manual_seed(0)
  tcfg = getattr(transformers, config_name)(**kw)
  tm = getattr(transformers, model_name)(tcfg)
  config = vit.ViTConfig.from_transformers(tcfg.to_dict())
  x = jnp.zeros((1, h, w, config.num_channels))
  params = jax.jit(vit.ViTEncoder(config).init)(jax.random.key(1), x)["params"]
  ours = cvit.params_to_tensors(params, config)
  # The checkpoint layout the converter speaks (transformers 5 renames modules in memory).
  tm.save_pretrained(tmp_path)
  ref = cvit._strip_prefix(sio.read_folder_weights(tmp_path), config)
  ref = {k: v for k, v in ref.items() if k not in cvit.IGNORED_KEYS}
  # Register tokens: transformers zeros them, we draw N(0, initializer_range) (identical zero
  # registers would stay identical; see models/vit.py).
  skip = ("embeddings.register_tokens",)
  assert compare(ours, ref, skip=skip) > 10
  if config.num_register_tokens:
    reg = np.asarray(nn.unbox(params)["register_tokens"])
    assert 0 < reg.std() < 3 * config.initializer_range


# ---------------------------------------------------------------------------------------------
# The reconstructor: OpenLRM's torch modules (no single class; see models/lrm.py).


def openlrm_reference(mcfg) -> dict:
  """Flax path → a torch tensor drawn as OpenLRM's modules draw it, for the micro LRM."""
  d, e, de = mcfg.decoder.hidden_size, mcfg.camera_embed_dim, mcfg.encoder.hidden_size
  t, c, u = mcfg.triplane.token_resolution, mcfg.triplane.channels, mcfg.triplane.upsample
  ref, bounds = {}, {}

  def linear(path, fan_in, fan_out, zero_bias=False):
    m = torch.nn.Linear(fan_in, fan_out)
    if zero_bias:
      torch.nn.init.zeros_(m.bias)
    ref[f"{path}/kernel"] = m.weight.T
    ref[f"{path}/bias"] = m.bias
    bounds[f"{path}/kernel"] = 1 / math.sqrt(fan_in)
    if not zero_bias:
      bounds[f"{path}/bias"] = 1 / math.sqrt(fan_in)

  linear("camera_embedder/fc1", 16, e)
  linear("camera_embedder/fc2", e, e)
  ref["decoder/triplane_tokens"] = torch.randn(3 * t * t, d) / math.sqrt(d)
  for i in range(mcfg.decoder.num_layers):
    p = f"decoder/block_{i}"
    for kind, kdim in (("cross", de), ("self", d)):
      mha = torch.nn.MultiheadAttention(d, mcfg.decoder.num_heads, kdim=kdim, vdim=kdim,
                                        bias=True, batch_first=True)
      if mha._qkv_same_embed_dim:
        qkv = mha.in_proj_weight.split(d, 0)
      else:
        qkv = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
      for n, w in zip("qkv", qkv):
        ref[f"{p}/{kind}_{n}/kernel"] = w.T
      ref[f"{p}/{kind}_out/kernel"] = mha.out_proj.weight.T
      ref[f"{p}/{kind}_out/bias"] = mha.out_proj.bias
    for j in range(3):
      ln = torch.nn.LayerNorm(d)
      ref[f"{p}/norm{j + 1}/scale"], ref[f"{p}/norm{j + 1}/bias"] = ln.weight, ln.bias
    linear(f"{p}/fc1", d, d * mcfg.decoder.mlp_ratio)
    linear(f"{p}/fc2", d * mcfg.decoder.mlp_ratio, d)
    if mcfg.decoder_modulation:   # deliberately zero (models/lrm.py), not OpenLRM's Linear
      ref[f"{p}/modulation/kernel"] = torch.zeros(e, 6 * d)
      ref[f"{p}/modulation/bias"] = torch.zeros(6 * d)
  if mcfg.extras.attention_bias and mcfg.extras.attention_bias_init == "zeros":
    # The project's own learned bias (no OpenLRM counterpart), zero at init.
    for i in range(mcfg.decoder.num_layers):
      ref[f"decoder/block_{i}/cross_attn_bias"] = torch.zeros(3 * t * t,
                                                              mcfg.tokens_per_view * mcfg.num_views)
  ln = torch.nn.LayerNorm(d)
  ref["decoder/norm_out/scale"], ref["decoder/norm_out/bias"] = ln.weight, ln.bias
  up = torch.nn.ConvTranspose2d(d, c, u, u)
  ref["decoder/upsampler/kernel"] = up.weight.permute(2, 3, 0, 1)
  ref["decoder/upsampler/bias"] = up.bias
  bounds["decoder/upsampler/kernel"] = bounds["decoder/upsampler/bias"] = 1 / math.sqrt(c * u * u)
  n, hid = mcfg.nerf.num_layers, mcfg.nerf.hidden
  dims = [3 * c] + [hid] * (n - 1) + [4]
  for i in range(n):
    linear(f"nerf/dense_{i}", dims[i], dims[i + 1], zero_bias=True)   # OSGDecoder zeroes biases
  return ref, bounds


def test_lrm_init_matches_openlrm():
  # Encoder width ≠ decoder width, so the cross-attention's k/v are separate torch tensors.
  mcfg = tiny_configs.micro_lrm_model(**{"decoder.hidden_size": 64, "decoder.num_heads": 4,
                                         "nerf.hidden": 32, "decoder_modulation": True})
  params = lrm.init_params(mcfg, jax.random.key(1))
  ours = {k: v for k, v in flat(params).items() if not k.startswith("encoder/")}
  torch.manual_seed(0)
  ref, bounds = openlrm_reference(mcfg)
  missing = sorted(set(ours) - set(ref))
  assert not missing, f"Flax LRM decoder tensors without a reference: {missing}"
  assert compare(ours, ref, bounds=bounds) > 15
  # The encoder is a ViTEncoder (covered by test_vit_init_matches_transformers); its camera
  # adaLN starts at zero so a pretrained encoder is unchanged.
  for k, v in flat(params).items():
    if "adaLN_modulation" in k:
      assert float(jnp.abs(v).max()) == 0.0, k


def test_torch_init_pair_needs_its_kernel_first():
  _, bias_init = layers.torch_linear_init()
  with pytest.raises(RuntimeError, match="before its kernel_init"):
    bias_init(jax.random.key(0), (4,))
  with pytest.raises(ValueError, match="both kernel_init and bias_init"):
    layers.dense(4, ("embed", "mlp"), kernel_init=nn.initializers.zeros)


# ---------------------------------------------------------------------------------------------
# The UNet learns from its own init (issue 17).


def eps_batches(rng: np.random.Generator, n: int, steps: int, size: int = 8, channels: int = 48,
                ctx_dim: int = 32):
  """ε-prediction data of the issue: x0 = 0.9 everywhere, linear DDPM betas (1e-4 … 0.02, 1000
  steps), uniform integer timesteps, a random 4-token context; `steps` batches of `n`."""
  abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
  out = []
  for _ in range(steps):
    t = rng.integers(0, 1000, n)
    eps = rng.standard_normal((n, size, size, channels)).astype(np.float32)
    a = abar[t][:, None, None, None]
    xt = (np.sqrt(a) * 0.9 + np.sqrt(1 - a) * eps).astype(np.float32)
    ctx = rng.standard_normal((n, 4, ctx_dim)).astype(np.float32)
    out.append((xt, t.astype(np.float32), ctx, eps))
  return out


def test_unet_learns_eps_prediction(eps_unet):
  """50 Adam steps (3e-4, batch 16) of ε-prediction on `TINY_UNET_EPS` from the project's own
  init: the output's correlation with the noise on a held-out batch of 64 rises clearly above 0.

  Measured (2026-11-30, 2-core CPU shared with other jobs, fp32) with a one-off script running
  this objective on the same data for diffusers' torch UNet (`UNet2DConditionModel(**cfg)`, its
  own init, torch seed 0) and for the Flax UNet (key 0); held-out correlation / held-out loss:
    step               0               10              25              50              100
    torch, own init    0.0020 / 1.113  0.0423 / 1.032  0.0976 / 0.994  0.2038 / 0.962  0.384 / 0.862
    Flax, this init    0.0002 / 1.104  0.0376 / 1.023  0.0984 / 0.994  0.2066 / 0.961  0.400 / 0.849
    Flax, old init     0.0003 / 1.295  0.0095 / 1.097  0.0171 / 1.022  0.0295 / 1.006  0.100 / 0.993
  (old init: flax's lecun-normal kernels and zero biases.) The threshold 0.12 at step 50 is 4×
  the old init's value and ~0.6× the torch reference's; this test fails with the old init.
  """
  config, params = eps_unet
  model = UNet2DConditionModel(config)
  rng = np.random.default_rng(0)
  (held_out,) = eps_batches(rng, 64, 1)
  batches = eps_batches(rng, 16, 50)
  tx = optax.adam(3e-4)

  @jax.jit
  def step(p, s, x, t, c, e):
    loss, g = jax.value_and_grad(
        lambda p: jnp.mean((model.apply({"params": p}, x, t, c) - e) ** 2))(p)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s, loss

  state = tx.init(params)
  for b in batches:
    params, state, loss = step(params, state, *map(jnp.asarray, b))
  assert np.isfinite(float(loss))
  pred = np.asarray(jax.jit(model.apply)({"params": params}, *map(jnp.asarray, held_out[:3])))
  corr = float(np.corrcoef(pred.ravel(), held_out[3].ravel())[0, 1])
  assert corr > 0.12, f"held-out correlation with the noise after 50 steps: {corr:.4f}"
