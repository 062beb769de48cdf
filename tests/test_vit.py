"""DINO / DINOv2 encoder: parity with transformers on tiny random models, converter round trip,
camera modulation at init, exact parameter counts of the full-size configs."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from instant3d_jax.convert import transformers_vit as tv
from instant3d_jax.convert.safetensors_io import WeightsError, read_folder_weights
from instant3d_jax.models import layers, vit
from tests import tiny_configs


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / np.abs(b).max())


# The tiny configs live in tests/tiny_configs.py; here with their transformers classes.
TINY = {kind: (getattr(transformers, c), getattr(transformers, m), kw, hw)
        for kind, (c, m, kw, hw) in tiny_configs.VIT_TINY.items()}


def _randomize(model, seed):
  """save_pretrained of a fresh model has layer scale 1, zero register tokens, zero biases:
  perturb every parameter so the test sees each one."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn(p.shape, generator=g))


_BUILT = {}


def _build(kind, tmp_path_factory):
  """(kind, folder, torch model, input [B, H, W, 3] numpy), built once per kind."""
  if kind not in _BUILT:
    config_cls, model_cls, kw, (h, w) = TINY[kind]
    torch.manual_seed(0)
    model = model_cls(config_cls(**kw)).eval()
    _randomize(model, 1)
    folder = tmp_path_factory.mktemp(kind)
    model.save_pretrained(folder)
    x = np.random.default_rng(0).standard_normal((2, h, w, 3)).astype(np.float32)
    _BUILT[kind] = (kind, folder, model, x)
  return _BUILT[kind]


@pytest.fixture(scope="module", params=list(TINY))
def tiny(request, tmp_path_factory):
  return _build(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
  """The DINO v1 layout the LRM uses by default."""
  return _build("vit", tmp_path_factory)


def _torch_hidden(kind, model, x):
  kwargs = {"interpolate_pos_encoding": True} if kind == "vit" else {}
  with torch.no_grad():
    out = model(torch.from_numpy(x).permute(0, 3, 1, 2), output_hidden_states=True, **kwargs)
  return out.last_hidden_state.numpy(), [h.numpy() for h in out.hidden_states]


def test_parity_with_transformers(tiny):
  kind, folder, model, x = tiny
  config, params = tv.load_vit(folder)
  assert config.model_type == kind
  enc = vit.ViTEncoder(config)
  last, hidden = jax.jit(lambda p, x: enc.apply({"params": p}, x, output_hidden_states=True))(
      params, x)
  t_last, t_hidden = _torch_hidden(kind, model, x)
  assert len(hidden) == len(t_hidden) == config.num_hidden_layers + 1
  errs = [rel_err(a, b) for a, b in zip(hidden, t_hidden)] + [rel_err(last, t_last)]
  print(kind, "hidden-state rel errs", errs)
  assert max(errs) <= 1e-4, errs


def test_modulation_zero_at_init_and_effective(tiny_vit):
  kind, folder, model, x = tiny_vit
  config, base = tv.load_vit(folder)
  _, params = tv.load_vit(folder, modulation_dim=6)
  ref = jax.jit(vit.ViTEncoder(config).apply)({"params": base}, x)
  enc = vit.ViTEncoder(config, modulation_dim=6)
  apply = jax.jit(enc.apply)
  cam = jnp.asarray(np.random.default_rng(1).standard_normal((2, 6)), jnp.float32)
  np.testing.assert_array_equal(np.asarray(apply({"params": params}, x, cam)), np.asarray(ref))
  # Nonzero modulation changes the output, differently for different cameras.
  bumped = jax.tree.map(np.copy, params)
  k = bumped["layer_1"]["adaLN_modulation"]["kernel"]
  bumped["layer_1"]["adaLN_modulation"]["kernel"] = (
      0.05 * np.random.default_rng(2).standard_normal(k.shape).astype(np.float32))
  out2 = apply({"params": bumped}, x, cam)
  assert rel_err(out2, ref) > 1e-3
  out3 = apply({"params": bumped}, x, -cam)
  assert rel_err(out3, out2) > 1e-3
  # Extra input channels (Plücker rays) on a pretrained RGB encoder start switched off.
  config9 = dataclasses.replace(config, num_channels=9)
  with pytest.raises(WeightsError, match=r"patch_embed/kernel: config expects \(8, 8, 9, 32\), "
                     r"checkpoint has \(8, 8, 3, 32\)"):
    tv.load_vit(folder, config=config9)
  _, params9 = tv.load_vit(folder, config=config9, zero_extra_channels=True)
  x9 = np.concatenate([x, np.random.default_rng(3).standard_normal(x.shape[:3] + (6,))], -1)
  out9 = jax.jit(vit.ViTEncoder(config9).apply)({"params": params9}, x9.astype(np.float32))
  assert rel_err(out9, ref) < 1e-6  # zero weights: only the conv's summation order differs


def test_export_round_trip(tiny, tmp_path):
  kind, folder, model, x = tiny
  config, params = tv.load_vit(folder, modulation_dim=4)
  params["layer_0"]["adaLN_modulation"]["bias"] = np.arange(
      4 * config.hidden_size, dtype=np.float32)
  tv.save_vit(tmp_path / "out", params, config)
  config2, params2 = tv.load_vit(tmp_path / "out", modulation_dim=4)
  assert config2 == config
  jax.tree.map(np.testing.assert_array_equal, params2, params)
  # Without modulation, the exported tensors equal the original checkpoint's (minus the keys
  # the encoder does not use) bit for bit.
  _, plain = tv.load_vit(folder)
  tv.save_vit(tmp_path / "plain", plain, config)
  orig = read_folder_weights(folder)
  back = read_folder_weights(tmp_path / "plain")
  assert set(back) == set(orig) - set(tv.IGNORED_KEYS)
  for k in back:
    np.testing.assert_array_equal(back[k], orig[k], err_msg=k)
  # A modulated checkpoint needs a modulated encoder.
  with pytest.raises(WeightsError, match="adaLN_modulation"):
    tv.load_vit(tmp_path / "out")


def test_exported_folder_loads_in_transformers(tiny, tmp_path):
  kind, folder, model, x = tiny
  config, params = tv.load_vit(folder)
  tv.save_vit(tmp_path, params, config)
  reloaded = type(model).from_pretrained(tmp_path).eval()
  a, _ = _torch_hidden(kind, reloaded, x)
  b, _ = _torch_hidden(kind, model, x)
  np.testing.assert_array_equal(a, b)


def test_converter_errors(tmp_path):
  cfg = TINY["vit"]
  torch.manual_seed(0)
  model = cfg[1](cfg[0](**cfg[2]))
  model.save_pretrained(tmp_path)
  config = vit.ViTConfig.from_transformers(json.loads((tmp_path / "config.json").read_text()))
  tensors = read_folder_weights(tmp_path)
  bad = dict(tensors)
  del bad["encoder.layer.1.attention.attention.key.weight"]
  with pytest.raises(WeightsError, match=r"ckpt\.safetensors: missing key "
                     r"'encoder.layer.1.attention.attention.key.weight'"):
    tv.tensors_to_params(bad, config, "ckpt.safetensors")
  bad = dict(tensors, **{"encoder.layer.0.mystery.weight": np.zeros(3, np.float32)})
  with pytest.raises(WeightsError, match="mystery"):
    tv.tensors_to_params(bad, config, "ckpt.safetensors")
  bad = dict(tensors)
  bad["encoder.layer.0.intermediate.dense.weight"] = np.zeros((65, 32), np.float32)
  with pytest.raises(WeightsError, match=r"layer_0/fc1/kernel: config expects \(32, 64\), "
                     r"checkpoint has \(32, 65\)"):
    tv.tensors_to_params(bad, config, "ckpt.safetensors")
  with pytest.raises(WeightsError, match="config.json"):
    tv.load_vit(tmp_path / "nowhere")
  # Config/checkpoint mismatches: the file is named, and every mismatched path with both shapes.
  with pytest.raises(WeightsError, match=r"model\.safetensors: missing key "
                     r"'encoder.layer.2.attention.attention.query.weight'"):
    tv.load_vit(tmp_path, config=dataclasses.replace(config, num_hidden_layers=3))
  with pytest.raises(WeightsError) as e:
    tv.load_vit(tmp_path, config=dataclasses.replace(config, mlp_dim=48))
  msg = str(e.value)
  assert "model.safetensors does not match the model config (6 problems)" in msg, msg
  for i in range(2):
    assert f"layer_{i}/fc1/kernel: config expects (32, 48), checkpoint has (32, 64)" in msg
    assert f"layer_{i}/fc2/kernel: config expects (48, 32), checkpoint has (64, 32)" in msg


def test_bicubic_matrix_matches_torch():
  rng = np.random.default_rng(0)
  for antialias in (False, True):
    for n_in, n_out in [(4, 6), (14, 32), (37, 36), (16, 37), (6, 3)]:
      v = rng.standard_normal((1, 2, n_in, n_in))
      ref = torch.nn.functional.interpolate(torch.from_numpy(v), size=(n_out, n_out),
                                            mode="bicubic", align_corners=False,
                                            antialias=antialias).numpy()
      w = vit.torch_bicubic_matrix(n_in, n_out, antialias)
      got = np.einsum("ih,jw,chw->cij", w, w, v[0])
      assert np.abs(got - ref[0]).max() < 1e-12, (antialias, n_in, n_out)


def test_input_errors():
  config = vit.ViTConfig("dinov2", 16, 1, 2, 32, patch_size=14, image_size=28)
  enc = vit.ViTEncoder(config)
  with pytest.raises(ValueError, match=r"input size 500x504 is not a multiple of the patch "
                     r"size 14 \(e.g. 490x504\)"):
    jax.eval_shape(enc.init, jax.random.key(0), jnp.zeros((1, 500, 504, 3)))
  with pytest.raises(ValueError, match=r"pixel_values must be \[B, H, W, 3\], got shape "
                     r"\(1, 3, 28, 28\)"):
    jax.eval_shape(enc.init, jax.random.key(0), jnp.zeros((1, 3, 28, 28)))
  enc_m = vit.ViTEncoder(config, modulation_dim=5)
  with pytest.raises(ValueError, match=r"modulation must be \[B=1, 5\], got None"):
    jax.eval_shape(enc_m.init, jax.random.key(0), jnp.zeros((1, 28, 28, 3)))
  with pytest.raises(ValueError, match="model_type"):
    vit.ViTConfig.from_transformers({"model_type": "clip_vision_model"})


def test_fresh_init_remat_grads_and_bf16():
  config = vit.ViTConfig("dinov2_with_registers", 32, 2, 4, 64, patch_size=7, image_size=28,
                         layer_norm_eps=1e-6, layer_scale=True, num_register_tokens=2)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 42, 42, 3)), jnp.float32)
  cam = jnp.ones((1, 3))
  ref_model = vit.ViTEncoder(config, modulation_dim=3)
  params = jax.jit(ref_model.init)(jax.random.key(0), x, cam)["params"]
  # A freshly initialised model is exactly unmodulated: its adaLN layers are zero.
  for i in range(config.num_hidden_layers):
    for v in jax.tree.leaves(params[f"layer_{i}"]["adaLN_modulation"]):
      assert float(jnp.abs(v).max()) == 0.0
  # Make the modulation active so its gradient path is compared too.
  params = jax.tree.map(lambda a: a + 0.01, params)

  def loss_and_grad(model):
    def loss(p):
      out = model.apply({"params": p}, x, cam)
      return jnp.sum(out ** 2), out
    return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)

  (l_ref, ref), g_ref = loss_and_grad(ref_model)
  (l_remat, _), g_remat = loss_and_grad(vit.ViTEncoder(config, remat="full", modulation_dim=3))
  assert ref.shape == (1, 1 + 2 + 36, 32)
  assert float(l_ref) > 0 and abs(float(l_remat) - float(l_ref)) <= 1e-6 * float(l_ref)
  # (atol: the key bias has an analytically zero gradient, so its values are pure rounding;
  # with transformers' N(0, 0.02) init the gradients are ~1e-4, where rounding reaches 2e-9.)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8), g_remat,
               g_ref)
  out = jax.jit(vit.ViTEncoder(config, dtype=jnp.bfloat16, modulation_dim=3).apply)(
      {"params": params}, x, cam)
  assert out.dtype == jnp.bfloat16
  assert rel_err(out.astype(jnp.float32), ref) < 5e-2


def _torch_count(model_cls, config):
  with torch.device("meta"):
    m = model_cls(config)
  return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("preset", ["dino_vitb16", "dinov2_vitb14", "dinov2_vitb14_reg"])
def test_full_size_parameter_counts(preset):
  config = vit.PRESETS[preset]()
  ours = layers.count_params(tv.expected_param_shapes(config))
  tcfg = config.to_transformers()
  d = config.hidden_size
  if preset == "dino_vitb16":
    # The LRM uses the token sequence, not ViTModel's CLS pooler (InstantMesh/OpenLRM build it
    # with add_pooling_layer=False, and the DINO checkpoint has no trained pooler).
    with torch.device("meta"):
      m = transformers.ViTModel(transformers.ViTConfig(**tcfg), add_pooling_layer=False)
    theirs = sum(p.numel() for p in m.parameters())
    assert ours == theirs == 85_798_656
    # transformers' default add_pooling_layer=True adds the Dense(D, D) + tanh pooler.
    default = _torch_count(transformers.ViTModel, transformers.ViTConfig(**tcfg))
    assert default - theirs == d * d + d == 590_592
  elif preset == "dinov2_vitb14":
    theirs = _torch_count(transformers.Dinov2Model, transformers.Dinov2Config(**tcfg))
    assert ours == theirs == 86_579_712
  else:
    # The registers model always builds the (unused) mask token; the encoder drops it.
    theirs = _torch_count(transformers.Dinov2WithRegistersModel,
                          transformers.Dinov2WithRegistersConfig(**tcfg))
    assert ours == theirs - d == 86_582_784
  # With camera modulation: 12 blocks × (D_mod·4D + 4D).
  mod = layers.count_params(tv.expected_param_shapes(config, modulation_dim=1024))
  assert mod - ours == config.num_hidden_layers * (1024 * 4 * d + 4 * d)


def test_bicubic_matrix_scale_factor_matches_torch():
  """DINO's / InstantMesh's rule: `interpolate(scale_factor=(g + 0.1)/g0)` (not `size=g`)."""
  rng = np.random.default_rng(1)
  for g0, g in [(14, 20), (14, 32), (4, 6), (4, 5), (14, 14 + 1)]:
    v = rng.standard_normal((1, 2, g0, g0))
    sf = (g + 0.1) / g0
    ref = torch.nn.functional.interpolate(torch.from_numpy(v), scale_factor=(sf, sf),
                                          mode="bicubic", align_corners=False).numpy()
    assert ref.shape[-1] == g
    w = vit.torch_bicubic_matrix(g0, g, False, g0 / (g + 0.1))
    got = np.einsum("ih,jw,chw->cij", w, w, v[0])
    assert np.abs(got - ref[0]).max() < 1e-12, (g0, g)
    size_rule = vit.torch_bicubic_matrix(g0, g, False)
    assert np.abs(size_rule - w).max() > 1e-3   # the two rules differ: the option matters
  pos = jnp.asarray(rng.standard_normal((1, 1 + 16, 3)), jnp.float32)
  a = vit.interpolate_pos_embed(pos, (6, 6), resize="scale_factor")
  b = vit.interpolate_pos_embed(pos, (6, 6), resize="size")
  assert a.shape == b.shape == (1, 37, 3) and np.abs(np.asarray(a - b)).max() > 1e-3
  with pytest.raises(Exception, match="pos_embed_resize must be one of"):
    vit.ViTConfig(pos_embed_resize="nearest")
