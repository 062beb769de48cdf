"""CLIP text/vision towers and their converters vs transformers' PyTorch classes.

Oracles: `transformers.CLIPTextModel`, `CLIPTextModelWithProjection`,
`CLIPVisionModelWithProjection` (tiny random configs, fp32), and diffusers'
`convert_open_clip_checkpoint` for the single-file OpenCLIP layout.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from instant3d_jax.convert import clip as cclip
from instant3d_jax.convert import safetensors_io as sio
from instant3d_jax.models.clip import CLIPTextModel, CLIPVisionModel
from tests import tiny_configs

transformers = pytest.importorskip("transformers")

VOCAB = tiny_configs.CLIP_TEXT_TINY["vocab_size"]
EOS = tiny_configs.CLIP_TEXT_TINY["eos_token_id"]


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / np.abs(b).max())


def text_cfg(**kw):
  base = dict(tiny_configs.CLIP_TEXT_TINY)
  base.update(kw)
  return transformers.CLIPTextConfig(**base)


def make_ids(batch=3, length=12, seed=0, pad=EOS):
  """Token ids with BOS first, an EOS at a different place per row, then padding (`pad`)."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(2, 90, size=(batch, length))
  ids[:, 0] = 97
  for b in range(batch):
    e = 3 + 2 * b
    ids[b, e] = EOS
    ids[b, e + 1:] = pad
  return ids.astype(np.int64)


def save_torch(model, path):
  model.save_pretrained(path, safe_serialization=True)
  return path


@pytest.fixture(scope="module")
def clip_l(tmp_path_factory):
  """CLIP-L flavour: CLIPTextModel, quick_gelu, legacy eos_token_id=2 (argmax rule)."""
  torch.manual_seed(0)
  tm = transformers.CLIPTextModel(text_cfg(hidden_act="quick_gelu", eos_token_id=2)).eval()
  return tm, save_torch(tm, tmp_path_factory.mktemp("clip_l"))


@pytest.fixture(scope="module")
def clip_g(tmp_path_factory):
  """bigG flavour: CLIPTextModelWithProjection, gelu, real eos id (first-EOS rule)."""
  torch.manual_seed(1)
  tm = transformers.CLIPTextModelWithProjection(
      text_cfg(hidden_act="gelu", projection_dim=24)).eval()
  return tm, save_torch(tm, tmp_path_factory.mktemp("clip_g"))


def run_text(folder, ids):
  cfg, params = cclip.load_clip_text(folder)
  out = jax.jit(CLIPTextModel(cfg).apply)({"params": params}, jnp.asarray(ids, jnp.int32))
  return cfg, params, out


def test_clip_l_parity(clip_l):
  tm, folder = clip_l
  ids = make_ids(pad=EOS)
  cfg, _, out = run_text(folder, ids)
  assert cfg.projection_dim is None and cfg.eos_token_id == 2
  with torch.no_grad():
    ref = tm(torch.from_numpy(ids), output_hidden_states=True)
  e_pen = rel_err(out.hidden_states[-2], ref.hidden_states[-2])
  e_last = rel_err(out.last_hidden_state, ref.last_hidden_state)
  e_pool = rel_err(out.pooler_output, ref.pooler_output)
  print(f"CLIP-L penultimate {e_pen:.2e} last {e_last:.2e} pooled {e_pool:.2e}")
  assert len(out.hidden_states) == len(ref.hidden_states) == 4
  assert max(e_pen, e_last, e_pool) <= 1e-4


def test_clip_g_parity_and_first_eos_rule(clip_g):
  tm, folder = clip_g
  # Padding with token 1 (not EOS), plus a second EOS later in row 0: the pooled token must be
  # the *first* EOS (transformers' rule for configs with the real eos id), not the argmax.
  ids = make_ids(pad=1)
  ids[0, 10] = EOS
  ids[1, 1] = 99  # above the EOS id: the legacy argmax rule would pool position 1 here
  cfg, _, out = run_text(folder, ids)
  assert cfg.projection_dim == 24 and cfg.hidden_act == "gelu"
  with torch.no_grad():
    ref = tm(torch.from_numpy(ids), output_hidden_states=True)
  e_pen = rel_err(out.hidden_states[-2], ref.hidden_states[-2])
  e_proj = rel_err(out.text_embeds, ref.text_embeds)
  e_last = rel_err(out.last_hidden_state, ref.last_hidden_state)
  print(f"CLIP-bigG penultimate {e_pen:.2e} last {e_last:.2e} text_embeds {e_proj:.2e}")
  assert max(e_pen, e_proj, e_last) <= 1e-4
  assert rel_err(out.pooler_output[1], out.last_hidden_state[1, 5]) == 0


def test_vision_parity(tmp_path):
  torch.manual_seed(2)
  vcfg = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                                       num_attention_heads=4, image_size=16, patch_size=4,
                                       projection_dim=20, hidden_act="quick_gelu")
  tm = transformers.CLIPVisionModelWithProjection(vcfg).eval()
  save_torch(tm, tmp_path)
  cfg, params = cclip.load_clip_vision(tmp_path)
  px = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
  out = jax.jit(CLIPVisionModel(cfg).apply)({"params": params},
                                            jnp.asarray(px.transpose(0, 2, 3, 1)))
  with torch.no_grad():
    ref = tm(torch.from_numpy(px), output_hidden_states=True)
  e_last = rel_err(out.last_hidden_state, ref.last_hidden_state)
  e_emb = rel_err(out.image_embeds, ref.image_embeds)
  print(f"CLIP vision last {e_last:.2e} image_embeds {e_emb:.2e}")
  assert max(e_last, e_emb) <= 1e-4
  # The plain CLIPVisionModel (no projection, unprefixed keys in transformers 5) from the same
  # weights: same pooled output.
  plain = transformers.CLIPVisionModel(vcfg).eval()
  plain.load_state_dict(tm.vision_model.state_dict())
  save_torch(plain, tmp_path / "plain")
  pcfg, pparams = cclip.load_clip_vision(tmp_path / "plain")
  assert pcfg.projection_dim is None
  pooled = CLIPVisionModel(pcfg).apply({"params": pparams}, jnp.asarray(px.transpose(0, 2, 3, 1)))
  with torch.no_grad():
    ref_plain = plain(torch.from_numpy(px)).pooler_output
  e_plain = rel_err(pooled.pooler_output, ref_plain)
  print(f"CLIPVisionModel (plain) pooled {e_plain:.2e}")
  assert e_plain <= 1e-4 and pooled.image_embeds is None
  # Round trip of the vision layout too.
  cclip.save_clip_vision(tmp_path / "out", cfg, params)
  a = sio.read_safetensors(tmp_path / "model.safetensors", dtype=None)
  b = sio.read_safetensors(tmp_path / "out" / "model.safetensors", dtype=None)
  assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("which", ["clip_l", "clip_g"])
def test_round_trip_bit_exact(which, request, tmp_path):
  _, folder = request.getfixturevalue(which)
  cfg, params = cclip.load_clip_text(folder)
  base = json.loads((folder / "config.json").read_text())
  cclip.save_clip_text(tmp_path, cfg, params, base_config=base)
  a = sio.read_safetensors(folder / "model.safetensors", dtype=None)
  b = sio.read_safetensors(tmp_path / "model.safetensors", dtype=None)
  assert sorted(a) == sorted(b)
  for k in a:
    assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
  # The written folder is loadable by transformers and gives the same model.
  cls = (transformers.CLIPTextModelWithProjection if cfg.projection_dim else
         transformers.CLIPTextModel)
  assert cls.from_pretrained(tmp_path).config.hidden_size == cfg.hidden_size
  # fp16 variant: fp16 → fp32 params → fp16 is exact.
  half = {k: v.astype(np.float16) for k, v in a.items()}
  sio.write_safetensors(tmp_path / "h" / "model.fp16.safetensors", half)
  (tmp_path / "h" / "config.json").write_text(json.dumps(base))
  cfg16, p16 = cclip.load_clip_text(tmp_path / "h")
  back = cclip.text_from_flax(p16, cfg16, dtype=np.float16)
  assert all(np.array_equal(back[k], half[k]) for k in half)


def test_legacy_prefixed_layout_loads_the_same(clip_l, tmp_path):
  """SDXL's text_encoder/ files (older transformers) prefix CLIPTextModel keys `text_model.`
  and may carry the position_ids buffer."""
  _, folder = clip_l
  a = sio.read_safetensors(folder / "model.safetensors")
  legacy = {"text_model." + k: v for k, v in a.items()}
  legacy["text_model.embeddings.position_ids"] = np.arange(12)[None]
  cfg, params = cclip.load_clip_text(folder)
  p2 = cclip.text_to_flax(legacy, cfg)
  flat1, flat2 = sio.flatten(params), sio.flatten(p2)
  assert sorted(flat1) == sorted(flat2)
  assert all(np.array_equal(flat1[k], flat2[k]) for k in flat1)
  out = cclip.text_from_flax(params, cfg, prefix="text_model.")
  assert all(np.array_equal(out[k], legacy[k]) for k in out)


def test_single_file_openclip_matches_diffusers(clip_g):
  from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
  tm, _ = clip_g
  cfg = cclip.CLIPTextConfig.from_transformers(tm.config.to_dict(), with_projection=True)
  d, p = cfg.hidden_size, cfg.projection_dim
  rng = np.random.default_rng(3)
  prefix = cclip.SDXL_OPENCLIP_PREFIX
  r = lambda *s: (rng.normal(size=s) * 0.1).astype(np.float32)
  ckpt = {prefix + "positional_embedding": r(12, d), prefix + "token_embedding.weight": r(VOCAB, d),
          prefix + "ln_final.weight": 1 + r(d), prefix + "ln_final.bias": r(d),
          prefix + "text_projection": r(d, p), prefix + "logit_scale": np.float32([4.6]),
          "conditioner.embedders.0.transformer.text_model.final_layer_norm.bias": r(7)}
  for i in range(cfg.num_hidden_layers):
    b = f"{prefix}transformer.resblocks.{i}."
    ckpt.update({b + "attn.in_proj_weight": r(3 * d, d), b + "attn.in_proj_bias": r(3 * d),
                 b + "attn.out_proj.weight": r(d, d), b + "attn.out_proj.bias": r(d),
                 b + "ln_1.weight": 1 + r(d), b + "ln_1.bias": r(d), b + "ln_2.weight": 1 + r(d),
                 b + "ln_2.bias": r(d), b + "mlp.c_fc.weight": r(48, d), b + "mlp.c_fc.bias": r(48),
                 b + "mlp.c_proj.weight": r(d, 48), b + "mlp.c_proj.bias": r(d)})
  oracle = convert_open_clip_checkpoint(tm, {k: torch.from_numpy(v) for k, v in ckpt.items()},
                                        prefix=prefix)
  mine = cclip.openclip_to_transformers(ckpt, cfg)
  assert sorted(mine) == sorted(oracle)
  assert all(np.array_equal(mine[k], oracle[k].numpy()) for k in mine)
  # The Flax model from the single file equals the torch model with the oracle's state dict.
  missing, _ = tm.load_state_dict(oracle, strict=False)
  assert not [m for m in missing if "position_ids" not in m]
  params = cclip.single_file_openclip_to_flax(ckpt, cfg)
  ids = make_ids(pad=1)
  out = CLIPTextModel(cfg).apply({"params": params}, jnp.asarray(ids, jnp.int32))
  with torch.no_grad():
    ref = tm(torch.from_numpy(ids), output_hidden_states=True)
  e = max(rel_err(out.text_embeds, ref.text_embeds),
          rel_err(out.hidden_states[-2], ref.hidden_states[-2]))
  print(f"single-file OpenCLIP vs diffusers-converted torch: {e:.2e}")
  assert e <= 1e-4
  # And back to the single-file layout, exactly.
  back = cclip.transformers_to_openclip(cclip.text_from_flax(params, cfg), cfg)
  assert all(np.array_equal(back[k], ckpt[k]) for k in back)
  assert set(ckpt) - set(back) == {prefix + "logit_scale",
                                   "conditioner.embedders.0.transformer.text_model."
                                   "final_layer_norm.bias"}


def test_bad_checkpoints_name_the_key(clip_l, tmp_path):
  _, folder = clip_l
  cfg, _ = cclip.load_clip_text(folder)
  a = sio.read_safetensors(folder / "model.safetensors")
  b = dict(a)
  del b["encoder.layers.1.mlp.fc2.bias"]
  with pytest.raises(sio.WeightsError, match=r"missing key 'encoder.layers.1.mlp.fc2.bias'"):
    cclip.text_to_flax(b, cfg, source="x.safetensors")
  c = dict(a)
  c["final_layer_norm.weight"] = np.ones(31, np.float32)
  with pytest.raises(sio.WeightsError, match=r"final_layer_norm/scale.*\(32,\).*\(31,\)"):
    cclip.text_to_flax(c, cfg, source="x.safetensors")
  with pytest.raises(sio.WeightsError, match="does not exist"):
    cclip.load_clip_text(tmp_path / "nope")
  with pytest.raises(sio.WeightsError, match="no keys under"):
    cclip.single_file_clip_l_to_flax({"foo": np.zeros(1)}, cfg, source="sdxl.safetensors")


def test_preprocess_images_matches_clip_processor():
  """Crop and normalisation as transformers' CLIPImageProcessor (sizes that need no resampling,
  where PIL's and JAX's bicubic kernels would differ)."""
  from instant3d_jax.models.clip import preprocess_images
  proc = transformers.CLIPImageProcessor(size={"shortest_edge": 16},
                                         crop_size={"height": 16, "width": 16})
  img = np.random.default_rng(5).integers(0, 256, size=(16, 24, 3)).astype(np.uint8)
  ref = proc(images=img, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
  got = np.asarray(preprocess_images(jnp.asarray(img[None] / 255.0, jnp.float32), 16))[0]
  assert got.shape == (16, 16, 3)
  assert np.abs(got - ref).max() <= 1e-5


FULL_TEXT_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                   num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                   hidden_act="quick_gelu", projection_dim=768)
FULL_TEXT_G = dict(FULL_TEXT_L, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                   num_attention_heads=20, hidden_act="gelu", projection_dim=1280)
FULL_VISION_L = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                     num_attention_heads=16, image_size=224, patch_size=14, projection_dim=768)


@pytest.mark.parametrize("name,cls,kw", [
    ("CLIP-L text (SDXL text_encoder)", "CLIPTextModel", FULL_TEXT_L),
    ("OpenCLIP bigG text (SDXL text_encoder_2)", "CLIPTextModelWithProjection", FULL_TEXT_G),
    ("CLIP ViT-L/14 vision", "CLIPVisionModelWithProjection", FULL_VISION_L)])
def test_full_size_parameter_counts(name, cls, kw):
  """Flax parameter count (jax.eval_shape, nothing allocated) = the PyTorch class on `meta`."""
  vision = "Vision" in cls
  hf_cfg = (transformers.CLIPVisionConfig if vision else transformers.CLIPTextConfig)(**kw)
  with torch.device("meta"):
    ref = sum(p.numel() for p in getattr(transformers, cls)(hf_cfg).parameters())
  raw = dict(hf_cfg.to_dict(), architectures=[cls])
  if vision:
    shapes = cclip.vision_param_shapes(cclip.CLIPVisionConfig.from_transformers(raw))
  else:
    shapes = cclip.text_param_shapes(cclip.CLIPTextConfig.from_transformers(raw))
  mine = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  print(f"{name}: {mine:,} parameters (PyTorch {ref:,})")
  assert mine == ref
