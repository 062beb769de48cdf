"""Stage-1 training against diffusers' PyTorch (the oracle): one step's loss and UNet gradients
on a tiny random SDXL-layout UNet with `UNet2DConditionModel` + `DDPMScheduler` (`add_noise`,
`get_velocity`), the SDXL pipeline's `add_time_ids`, and the EMA against `EMAModel`."""
import types

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from instant3d_jax.configs import mv_sdxl
from instant3d_jax.convert import diffusers_sdxl as conv
from instant3d_jax.diffusion import training
from instant3d_jax.train import mv_task
from instant3d_jax.train import step as step_lib
from tests.test_unet_vae import random_torch
from tests.tiny_configs import TINY_SDXL, TINY_VAE

# SDXL's block layout (no attention in the first block, text_time embedding, linear projections)
# at one resnet and one transformer layer per block: half the compile time of TINY_SDXL.
PARITY_UNET = dict(TINY_SDXL, layers_per_block=1, transformer_layers_per_block=(0, 1, 1))


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / np.abs(b).max())


def stand_in_config(prediction_type="epsilon", caption_dropout=0.1):
  """configs/mv_sdxl.py:sdxl with tiny random stand-ins of SDXL's components (UNet with SDXL's
  block layout: TINY_SDXL; 2-layer text encoders of widths 16 + 32 = its context width 48, a
  16-d pooled projection; the tiny VAE), 32² grids, the word tokenizer."""
  cfg = mv_sdxl.get_config("sdxl")
  text = dict(mv_sdxl._TINY_TEXT)  # pylint: disable=protected-access
  r = cfg.model.random_init
  r.unet = dict(PARITY_UNET)
  r.text_encoder = dict(text, hidden_size=16, architectures=["CLIPTextModel"])
  r.text_encoder_2 = dict(text, hidden_size=32, hidden_act="gelu", projection_dim=16,
                          architectures=["CLIPTextModelWithProjection"])
  r.vae = dict(TINY_VAE)
  cfg.model.tokenizer = "word"
  cfg.model.dtype = "float32"
  cfg.model.remat = "none"
  cfg.grid.view_resolution = 16
  cfg.diffusion.prediction_type = prediction_type
  cfg.diffusion.caption_dropout = caption_dropout
  return cfg


@pytest.fixture(scope="module")
def unet_pair(tmp_path_factory):
  torch_unet = random_torch(diffusers.UNet2DConditionModel, PARITY_UNET, seed=0)
  folder = tmp_path_factory.mktemp("unet")
  torch_unet.save_pretrained(folder)
  _, params = conv.load_unet(folder)
  return torch_unet, params


@pytest.mark.parametrize("prediction_type", [
    "epsilon", pytest.param("v_prediction", marks=pytest.mark.slow)])  # one compile each
def test_step_loss_and_grads_equal_diffusers(unet_pair, prediction_type):
  torch_unet, flax_params = unet_pair
  cfg = stand_in_config(prediction_type, caption_dropout=0.5)
  comps = mv_task.build_components(cfg)
  loss_fn = mv_task.make_loss_fn(cfg, comps)
  constants = mv_task.constants_for(comps)
  b, (h, w, c) = 4, mv_task.latent_shape(cfg, comps)
  rng = np.random.default_rng(1)
  batch = {"latents": rng.standard_normal((b, h, w, c)).astype(np.float32),
           "context": rng.standard_normal((b, 24, 48)).astype(np.float32),
           "pooled": rng.standard_normal((b, 16)).astype(np.float32)}
  key = jax.random.PRNGKey(1)  # draws: 1 caption of 4 dropped, a timestep near 0

  (loss, metrics), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
      {"unet": flax_params}, batch, key, jnp.int32(0), constants)

  # The step's own draws (mv_task.make_loss_fn: key → (latent-sample key, draw key)).
  draws = training.draw(jax.random.split(key)[1], (b, h, w, c), 1000, 0.5)
  t, noise, keep = (np.asarray(draws.timesteps), np.asarray(draws.noise),
                    np.asarray(draws.keep))
  assert 0 < keep.sum() < b  # both branches are exercised

  sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                  beta_schedule="scaled_linear", prediction_type=prediction_type)
  nchw = lambda x: torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))
  x0, eps, tt = nchw(batch["latents"]), nchw(noise), torch.from_numpy(t.astype(np.int64))
  noisy = sched.add_noise(x0, eps, tt)
  target = eps if prediction_type == "epsilon" else sched.get_velocity(x0, eps, tt)
  kt = torch.from_numpy(keep.astype(np.float32))
  ctx = torch.from_numpy(batch["context"]) * kt[:, None, None]
  pooled = torch.from_numpy(batch["pooled"]) * kt[:, None]
  time_ids = torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0]]).repeat(b, 1)  # sdxl cfg
  torch_unet.zero_grad()
  pred = torch_unet(noisy, tt, encoder_hidden_states=ctx,
                    added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
  ref = F.mse_loss(pred.float(), target.float(), reduction="mean")
  ref.backward()

  e_loss = rel_err(loss, ref.item())
  print(f"{prediction_type}: loss {float(loss):.6f} vs {ref.item():.6f} (rel {e_loss:.2e})")
  assert e_loss <= 1e-5
  np.testing.assert_allclose(float(metrics["dropped_fraction"]), 1 - keep.mean())

  ours = conv.flax_to_diffusers_state(jax.tree.map(np.asarray, grads["unet"]))
  theirs = {k: p.grad.numpy() for k, p in torch_unet.named_parameters()}
  assert sorted(ours) == sorted(theirs)
  errs = {k: rel_err(ours[k], theirs[k]) for k in theirs if np.abs(theirs[k]).max() > 0}
  worst = max(errs, key=errs.get)
  print(f"{prediction_type}: worst grad rel err {errs[worst]:.2e} ({worst})")
  assert errs[worst] <= 1e-4


def test_add_time_ids_equal_the_sdxl_pipeline():
  """`training.add_time_ids` for the sdxl defaults (1024², crop (0, 0)) and for the tiny grid
  (0 = the grid size) equals `StableDiffusionXLPipeline._get_add_time_ids`."""
  fake = types.SimpleNamespace(
      unet=types.SimpleNamespace(
          config=types.SimpleNamespace(addition_time_embed_dim=256),
          add_embedding=types.SimpleNamespace(linear_1=types.SimpleNamespace(in_features=2816))))
  get = diffusers.StableDiffusionXLPipeline._get_add_time_ids  # pylint: disable=protected-access
  for variant, size in (("sdxl", 1024), ("tiny", 64)):
    d = mv_sdxl.get_config(variant).diffusion
    assert 2 * mv_sdxl.get_config(variant).grid.view_resolution == size
    ours = training.add_time_ids(3, size, size, tuple(d.original_size),
                                 tuple(d.crops_coords_top_left), tuple(d.target_size))
    want = get(fake, (size, size), (0, 0), (size, size), dtype=torch.float32,
               text_encoder_projection_dim=1280)
    assert ours.shape == (3, 6)
    np.testing.assert_array_equal(ours, np.repeat(want.numpy(), 3, axis=0))
  ours = training.add_time_ids(1, 1024, 1024, (768, 1024), (16, 32), (896, 960))
  want = get(fake, (768, 1024), (16, 32), (896, 960), dtype=torch.float32,
             text_encoder_projection_dim=1280)
  np.testing.assert_array_equal(ours, want.numpy())


def test_ema_equals_diffusers_ema_model():
  """`step.ema_update` with `ema_decay_at` over 5 updates = diffusers' `EMAModel.step`."""
  from diffusers.training_utils import EMAModel
  rng = np.random.default_rng(0)
  steps = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(6)]
  p = torch.nn.Parameter(torch.from_numpy(steps[0].copy()))
  ema_ref = EMAModel([p], decay=0.9)
  ema = {"w": jnp.asarray(steps[0])}
  for n, w in enumerate(steps[1:]):
    with torch.no_grad():
      p.copy_(torch.from_numpy(w))
    ema_ref.step([p])
    ema = step_lib.ema_update(ema, {"w": jnp.asarray(w)}, step_lib.ema_decay_at(n, 0.9))
    np.testing.assert_allclose(np.asarray(ema["w"]), ema_ref.shadow_params[0].numpy(),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weights_equal_diffusers_snr_gamma(prediction_type):
  """`diffusion.snr_gamma`: the per-sample weights of diffusers' train_text_to_image_sdxl.py
  (`compute_snr`, then min(SNR, γ) / SNR or / (SNR + 1)), on SDXL's schedule and a linear one."""
  from diffusers.training_utils import compute_snr
  for beta_schedule, (b0, b1) in (("scaled_linear", (0.00085, 0.012)), ("linear", (1e-4, 0.02))):
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_start=b0, beta_end=b1,
                                    beta_schedule=beta_schedule, prediction_type=prediction_type)
    t = np.array([0, 1, 17, 250, 500, 999])
    snr = compute_snr(sched, torch.from_numpy(t))
    ref = torch.stack([snr, 5.0 * torch.ones_like(snr)], dim=1).min(dim=1)[0]
    ref = ref / snr if prediction_type == "epsilon" else ref / (snr + 1)
    ours = training.min_snr_weights(jnp.asarray(sched.alphas_cumprod.numpy()), jnp.asarray(t),
                                    5.0, prediction_type)
    assert rel_err(ours, ref.numpy()) <= 1e-5
