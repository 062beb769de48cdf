"""SDXL UNet/VAE weight conversion: diffusers folders both ways (bit-exact round trip, fp16 and
sharded variants), the single-file original layout against diffusers' own converter, and the
error messages for bad folders."""
import json

import numpy as np
import pytest
import torch
import diffusers
from diffusers.loaders.single_file_utils import (convert_ldm_unet_checkpoint,
                                                 convert_ldm_vae_checkpoint)
from safetensors.numpy import load_file, save_file

from instant3d_jax.convert import diffusers_sdxl as conv
from instant3d_jax.convert.safetensors_io import WeightsError, flatten

from tests.test_unet_vae import random_torch
from tests.tiny_configs import TINY_SD1, TINY_SDXL, TINY_VAE


def assert_same_tree(a, b):
  fa, fb = flatten(a), flatten(b)
  assert sorted(fa) == sorted(fb)
  for k in fa:
    assert fa[k].dtype == fb[k].dtype and np.array_equal(fa[k], fb[k]), k


def assert_same_files(a, b):
  ta, tb = load_file(str(a)), load_file(str(b))
  assert sorted(ta) == sorted(tb)
  for k in ta:
    assert ta[k].dtype == tb[k].dtype, k
    assert ta[k].tobytes() == tb[k].tobytes(), k  # bit-exact, NaN-safe


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  root = tmp_path_factory.mktemp("sdxl")
  unet = random_torch(diffusers.UNet2DConditionModel, TINY_SDXL, seed=0)
  unet_sd1 = random_torch(diffusers.UNet2DConditionModel, TINY_SD1, seed=1)
  vae = random_torch(diffusers.AutoencoderKL, TINY_VAE, seed=2)
  unet.save_pretrained(root / "unet")
  unet_sd1.save_pretrained(root / "unet_sd1")
  vae.save_pretrained(root / "vae")
  vae.save_pretrained(root / "vae_sharded", max_shard_size="100KB")
  unet.half().save_pretrained(root / "unet_fp16", variant="fp16")
  vae.half().save_pretrained(root / "vae_fp16", variant="fp16")
  return root


@pytest.mark.parametrize("component", ["unet", "vae", "unet_fp16", "vae_fp16"])
def test_round_trip_is_bit_exact(folders, tmp_path, component):
  load, save = (conv.load_unet, conv.save_unet) if "unet" in component else (conv.load_vae,
                                                                              conv.save_vae)
  variant = "fp16" if component.endswith("fp16") else None
  config, params = load(folders / component)
  save(tmp_path, config, params, variant=variant)
  name = "diffusion_pytorch_model" + (".fp16" if variant else "") + ".safetensors"
  assert_same_files(folders / component / name, tmp_path / name)
  assert json.loads((tmp_path / "config.json").read_text()) == json.loads(
      (folders / component / "config.json").read_text())
  # ... and the written folder loads back to the same Flax tree.
  _, again = load(tmp_path)
  assert_same_tree(params, again)


def test_fp16_variant_and_sharded_folders_load(folders):
  _, p32 = conv.load_vae(folders / "vae")
  _, p16 = conv.load_vae(folders / "vae_fp16", dtype=None)
  assert flatten(p16)["decoder/conv_out/kernel"].dtype == np.float16
  err = max(np.abs(flatten(p16)[k].astype(np.float32) - flatten(p32)[k]).max() for k in flatten(p32))
  assert 0 < err < 1e-3  # fp16 rounding of N(0, 0.1) weights
  assert len(list((folders / "vae_sharded").glob("*.safetensors"))) > 1
  _, sharded = conv.load_vae(folders / "vae_sharded")
  assert_same_tree(p32, sharded)


def _torch_state(folder):
  return {k: torch.from_numpy(v) for k, v in
          load_file(str(folder / "diffusion_pytorch_model.safetensors")).items()}


@pytest.mark.parametrize("unet_name", ["unet", "unet_sd1"])
def test_single_file_layout_matches_diffusers_converter(folders, tmp_path, unet_name):
  unet_cfg_dict = json.loads((folders / unet_name / "config.json").read_text())
  vae_cfg_dict = json.loads((folders / "vae" / "config.json").read_text())
  unet_config, unet_params = conv.load_unet(folders / unet_name)
  vae_config, vae_params = conv.load_vae(folders / "vae")
  unet_state, vae_state = _torch_state(folders / unet_name), _torch_state(folders / "vae")
  # Our diffusers → original mapping, checked by diffusers' original → diffusers converter.
  single = conv.diffusers_to_single_file_state(
      {k: v.numpy() for k, v in unet_state.items()}, unet_config,
      {k: v.numpy() for k, v in vae_state.items()}, vae_config)
  assert any(k.startswith("model.diffusion_model.input_blocks.") for k in single)
  assert single["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4  # 1×1 conv there
  single_t = {k: torch.from_numpy(v) for k, v in single.items()}
  back_unet = convert_ldm_unet_checkpoint(single_t, unet_cfg_dict)
  back_vae = convert_ldm_vae_checkpoint(single_t, vae_cfg_dict)
  for back, ref in ((back_unet, unet_state), (back_vae, vae_state)):
    assert sorted(back) == sorted(ref)
    for k in ref:
      assert torch.equal(back[k], ref[k]), k
  # Our reader of the original layout gives the same params as the diffusers folders.
  path = tmp_path / "sdxl_single.safetensors"
  save_file(single, str(path))
  u, v = conv.load_single_file(path, unet_config, vae_config)
  assert_same_tree(u, unet_params)
  assert_same_tree(v, vae_params)


# --- errors name the file and key ------------------------------------------------------------


def _copy(src, dst, mutate=None, name="diffusion_pytorch_model.safetensors"):
  dst.mkdir()
  (dst / "config.json").write_text((src / "config.json").read_text())
  tensors = load_file(str(src / name))
  if mutate:
    mutate(tensors)
  save_file(tensors, str(dst / name))
  return dst / name


def test_missing_folder_config_and_weights(folders, tmp_path):
  with pytest.raises(WeightsError, match="UNet folder .*nope does not exist"):
    conv.load_unet(tmp_path / "nope")
  (tmp_path / "empty").mkdir()
  with pytest.raises(WeightsError, match="config file .*empty/config.json does not exist"):
    conv.load_vae(tmp_path / "empty")
  (tmp_path / "empty" / "config.json").write_text(
      (folders / "vae" / "config.json").read_text())
  with pytest.raises(WeightsError, match="no safetensors weights in .*empty"):
    conv.load_vae(tmp_path / "empty")
  with pytest.raises(WeightsError, match="single-file checkpoint .*x.safetensors does not exist"):
    conv.load_single_file(tmp_path / "x.safetensors", None, None)


def test_missing_key_wrong_shape_dtype_and_extra_key(folders, tmp_path):
  key = "up_blocks.0.attentions.1.transformer_blocks.1.attn2.to_k.weight"

  def drop(t):
    del t[key]

  def reshape(t):
    t[key] = t[key][:, :-1].copy()

  def to_int(t):
    t[key] = t[key].astype(np.int32)

  def extra(t):
    t["down_blocks.9.resnets.0.conv1.weight"] = np.zeros((1,), np.float32)

  cases = [(drop, rf"missing key '{key}'"),
           (reshape, rf"key '{key}' has shape \(64, 47\), expected \(64, 48\)"),
           (to_int, rf"key '{key}' has dtype int32, expected a floating dtype"),
           (extra, r"1 unexpected keys not in the model config, e.g. \['down_blocks.9")]
  for i, (mutate, msg) in enumerate(cases):
    f = _copy(folders / "unet", tmp_path / f"u{i}", mutate)
    with pytest.raises(WeightsError, match=msg) as e:
      conv.load_unet(tmp_path / f"u{i}")
    assert str(f) in str(e.value)


def test_single_file_missing_key_is_named(folders, tmp_path):
  unet_config, _ = conv.load_unet(folders / "unet")
  vae_config, _ = conv.load_vae(folders / "vae")
  single = conv.diffusers_to_single_file_state(
      load_file(str(folders / "unet" / "diffusion_pytorch_model.safetensors")), unet_config,
      load_file(str(folders / "vae" / "diffusion_pytorch_model.safetensors")), vae_config)
  del single["first_stage_model.decoder.up.0.block.0.nin_shortcut.weight"]
  path = tmp_path / "broken.safetensors"
  save_file(single, str(path))
  with pytest.raises(WeightsError, match=r"broken.safetensors: missing key "
                     r"'first_stage_model.decoder.up.0.block.0.nin_shortcut.weight'"):
    conv.load_single_file(path, unet_config, vae_config)
