"""SDXL UNet and VAE weights: diffusers component folders (both directions) and the single-file
original (LDM / "sgm") checkpoint layout.

Flax module names mirror the diffusers state-dict names, so one rule maps keys both ways:
`down_blocks.0.attentions.1.proj_in.weight` ↔ `down_blocks_0/attentions_1/proj_in/kernel`
(a numeric key part joins its parent with `_`). Leaves: linear `weight [out, in]` ↔
`kernel [in, out]`, conv `weight [O, I, kh, kw]` ↔ `kernel [kh, kw, I, O]`, 1-D norm `weight` ↔
`scale`. Transposes are exact, so diffusers → Flax → diffusers is bit-exact (fp16 variants are
written back as fp16).

Params returned here are the `params` collection: `model.apply({"params": params}, ...)`.
"""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors import safe_open

from instant3d_jax.convert.safetensors_io import (find_weights, read_config, read_safetensors,
                                                  write_json, write_safetensors)
from instant3d_jax.errors import WeightsError
from instant3d_jax.models.unet import UNet2DConditionModel, UNetConfig
from instant3d_jax.models.vae import AutoencoderKL, VAEConfig

# Module names that diffusers keeps in a ModuleList/Sequential (their children are numbered).
_LIST_NAMES = ("down_blocks", "up_blocks", "resnets", "attentions", "downsamplers", "upsamplers",
               "transformer_blocks", "net", "to_out")
_LIST_RE = re.compile(r"^(%s)_(\d+)$" % "|".join(_LIST_NAMES))
LDM_UNET_PREFIX = "model.diffusion_model."
LDM_VAE_PREFIX = "first_stage_model."


# ---------------------------------------------------------------------------------------------
# Abstract parameter trees (no allocation)


def _unbox(tree):
  import flax.linen as nn
  return nn.unbox(tree)


def unet_abstract_params(config: UNetConfig, boxed: bool = False) -> dict[str, Any]:
  """The UNet `params` tree as `jax.ShapeDtypeStruct`s (via `jax.eval_shape`, nothing allocated).
  `boxed=True` keeps the `nn.LogicallyPartitioned` boxes (logical axis names, for shardings)."""
  params = _unet_boxed(config)
  return params if boxed else _unbox(params)


@functools.lru_cache(maxsize=8)
def _unet_boxed(config: UNetConfig) -> dict[str, Any]:
  model = UNet2DConditionModel(config)
  f = 2 ** (len(config.block_out_channels) - 1)
  sample = jax.ShapeDtypeStruct((1, f, f, config.in_channels), jnp.float32)
  ctx = jax.ShapeDtypeStruct((1, 1, config.cross_attention_dim), jnp.float32)
  extra = {}
  if config.addition_embed_type == "text_time":
    n_ids = 6
    text_dim = config.projection_class_embeddings_input_dim - n_ids * config.addition_time_embed_dim
    if text_dim <= 0:
      raise ValueError("UNet config projection_class_embeddings_input_dim "
                       f"{config.projection_class_embeddings_input_dim} is too small for 6 time "
                       f"ids of {config.addition_time_embed_dim} dims")
    extra = dict(text_embeds=jax.ShapeDtypeStruct((1, text_dim), jnp.float32),
                 time_ids=jax.ShapeDtypeStruct((1, n_ids), jnp.float32))
  t = jax.ShapeDtypeStruct((1,), jnp.float32)
  variables = jax.eval_shape(
      lambda s, tt, c, **kw: model.init(jax.random.PRNGKey(0), s, tt, c, **kw), sample, t, ctx,
      **extra)
  return variables["params"]


def vae_abstract_params(config: VAEConfig, boxed: bool = False) -> dict[str, Any]:
  """The VAE `params` tree as `jax.ShapeDtypeStruct`s (encoder and decoder); `boxed` as for
  `unet_abstract_params`."""
  params = _vae_boxed(config)
  return params if boxed else _unbox(params)


@functools.lru_cache(maxsize=8)
def _vae_boxed(config: VAEConfig) -> dict[str, Any]:
  model = AutoencoderKL(config)
  f = config.downsample_factor
  x = jax.ShapeDtypeStruct((1, f, f, config.in_channels), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
  return variables["params"]




# ---------------------------------------------------------------------------------------------
# Key and layout mapping


def flax_path_to_diffusers(path: str) -> str:
  """`down_blocks_0/resnets_1/conv1/kernel` → `down_blocks.0.resnets.1.conv1.weight`."""
  *mods, leaf = path.split("/")
  parts = []
  for m in mods:
    match = _LIST_RE.match(m)
    parts += [match.group(1), match.group(2)] if match else [m]
  if leaf in ("kernel", "scale"):
    parts.append("weight")
  elif leaf == "bias":
    parts.append("bias")
  else:
    raise ValueError(f"unexpected Flax parameter leaf {leaf!r} in {path!r}")
  return ".".join(parts)


def to_torch_layout(x: np.ndarray) -> np.ndarray:
  """Flax kernel → torch weight (conv HWIO → OIHW, dense [in, out] → [out, in]); 1-D as is."""
  if x.ndim == 4:
    return np.transpose(x, (3, 2, 0, 1))
  if x.ndim == 2:
    return np.transpose(x)
  return x


def to_flax_layout(x: np.ndarray) -> np.ndarray:
  if x.ndim == 4:
    return np.transpose(x, (2, 3, 1, 0))
  if x.ndim == 2:
    return np.transpose(x)
  return x


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  if len(shape) == 2:
    return (shape[1], shape[0])
  return tuple(shape)


# ---------------------------------------------------------------------------------------------
# Reading a state dict (any source) into a Flax tree


class _Tensors:
  """Lazily read tensors of one or more safetensors files, remembering which file holds a key."""

  def __init__(self, files: list[Path]):
    self.where: dict[str, Path] = {}
    for f in files:
      try:
        with safe_open(str(f), framework="numpy") as h:
          for k in h.keys():
            self.where[k] = f
      except Exception as e:  # corrupt header
        raise WeightsError(f"{f} is not a readable safetensors file: {e}") from e
    self._cache: dict[Path, dict[str, np.ndarray]] = {}

  def get(self, key: str) -> np.ndarray:
    f = self.where[key]
    if f not in self._cache:
      self._cache[f] = read_safetensors(f, dtype=None)
    return self._cache[f][key]


def _state_to_flax(get, has, keys_source: str, abstract: Mapping[str, Any],
                   key_map=lambda k: k, dtype=np.float32,
                   where=lambda k: None) -> dict[str, Any]:
  """Builds the Flax tree for `abstract` from a torch-layout state dict.

  `get(key)`/`has(key)` access the state dict by *source* key (`key_map(diffusers_key)`);
  errors name `where(key)` (the file) or `keys_source`.
  """
  out = {}
  for path, spec in traverse_util.flatten_dict(abstract, sep="/").items():
    dkey = flax_path_to_diffusers(path)
    skey = key_map(dkey)
    if not has(skey):
      raise WeightsError(f"{keys_source}: missing key {skey!r} (for Flax parameter {path})")
    src = where(skey) or keys_source
    x = get(skey)
    if not (np.issubdtype(x.dtype, np.floating) or x.dtype.name == "bfloat16"):
      raise WeightsError(f"{src}: key {skey!r} has dtype {x.dtype}, expected a floating dtype "
                         "(float16/bfloat16/float32)")
    want = _torch_shape(tuple(spec.shape))
    if tuple(x.shape) != want:
      raise WeightsError(f"{src}: key {skey!r} has shape {tuple(x.shape)}, expected {want} "
                         f"(Flax parameter {path} {tuple(spec.shape)})")
    y = to_flax_layout(x)
    out[path] = y.astype(dtype) if dtype is not None else y
  return traverse_util.unflatten_dict(out, sep="/")


def _load_component(folder, variant, abstract, dtype) -> dict[str, Any]:
  files = find_weights(folder, variant)
  t = _Tensors(files)
  source = str(files[0]) if len(files) == 1 else f"{folder} ({len(files)} shards)"
  params = _state_to_flax(t.get, lambda k: k in t.where, source, abstract, dtype=dtype,
                          where=lambda k: str(t.where[k]) if k in t.where else None)
  expected = {flax_path_to_diffusers(p) for p in traverse_util.flatten_dict(abstract, sep="/")}
  extra = sorted(set(t.where) - expected)
  if extra:
    raise WeightsError(f"{source}: {len(extra)} unexpected keys not in the model config, e.g. "
                       f"{extra[:5]}")
  return params


def load_unet(folder: str | os.PathLike, variant: str | None = None, dtype=np.float32
              ) -> tuple[UNetConfig, dict[str, Any]]:
  """`unet/` folder (config.json + safetensors, plain/fp16/sharded) → (config, params).

  `dtype=None` keeps the stored dtype (fp16 variants stay fp16)."""
  folder = Path(folder)
  if not folder.is_dir():
    raise WeightsError(f"UNet folder {folder} does not exist")
  config = UNetConfig.from_diffusers(read_config(folder))
  return config, _load_component(folder, variant, unet_abstract_params(config), dtype)


def load_vae(folder: str | os.PathLike, variant: str | None = None, dtype=np.float32
             ) -> tuple[VAEConfig, dict[str, Any]]:
  """`vae/` folder → (config, params)."""
  folder = Path(folder)
  if not folder.is_dir():
    raise WeightsError(f"VAE folder {folder} does not exist")
  config = VAEConfig.from_diffusers(read_config(folder))
  return config, _load_component(folder, variant, vae_abstract_params(config), dtype)


# ---------------------------------------------------------------------------------------------
# Writing


def flax_to_diffusers_state(params: Mapping[str, Any], dtype=None) -> dict[str, np.ndarray]:
  """Flax `params` tree → diffusers state dict (numpy, torch layout). `dtype=None` keeps dtypes."""
  out = {}
  for path, x in traverse_util.flatten_dict(_unbox(dict(params)), sep="/").items():
    x = np.asarray(x)
    y = to_torch_layout(x)
    out[flax_path_to_diffusers(path)] = y.astype(dtype) if dtype is not None else y
  return out


def _save_component(folder, config_dict, params, variant, dtype):
  folder = Path(folder)
  if dtype is None and variant == "fp16":
    dtype = np.float16
  name = "diffusion_pytorch_model" + (f".{variant}" if variant else "") + ".safetensors"
  write_safetensors(folder / name, flax_to_diffusers_state(params, dtype))
  write_json(folder / "config.json", config_dict)


def save_unet(folder, config: UNetConfig, params, variant: str | None = None, dtype=None) -> None:
  """Writes `config.json` + `diffusion_pytorch_model[.variant].safetensors` (fp16 for 'fp16')."""
  _save_component(folder, config.to_diffusers(), params, variant, dtype)


def save_vae(folder, config: VAEConfig, params, variant: str | None = None, dtype=None) -> None:
  _save_component(folder, config.to_diffusers(), params, variant, dtype)


# ---------------------------------------------------------------------------------------------
# Single-file original layout (`model.diffusion_model.*`, `first_stage_model.*`)

_LDM_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
               ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"),
               ("conv_shortcut", "skip_connection"))


def _ldm_resnet(rest: str) -> str:
  head, _, tail = rest.partition(".")
  for new, old in _LDM_RESNET:
    if head == new:
      return f"{old}.{tail}"
  raise KeyError(rest)


def unet_ldm_key(key: str, config: UNetConfig) -> str:
  """diffusers UNet key → key in the original single-file layout (without the prefix)."""
  fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
           "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
           "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
  mod, _, leaf = key.rpartition(".")
  if mod in fixed:
    return f"{fixed[mod]}.{leaf}"
  p = key.split(".")
  if p[0] == "down_blocks":
    b, kind, j, rest = int(p[1]), p[2], int(p[3]), ".".join(p[4:])
    start = 1 + sum(l + 1 for l in config.down_layers[:b])
    if kind == "resnets":
      return f"input_blocks.{start + j}.0.{_ldm_resnet(rest)}"
    if kind == "attentions":
      return f"input_blocks.{start + j}.1.{rest}"
    if kind == "downsamplers":  # rest = conv.weight
      return f"input_blocks.{start + config.down_layers[b]}.0.op.{rest.split('.', 1)[1]}"
  if p[0] == "mid_block":
    kind, j, rest = p[1], int(p[2]), ".".join(p[3:])
    if kind == "resnets":
      return f"middle_block.{2 * j}.{_ldm_resnet(rest)}"
    return f"middle_block.{2 * j + 1}.{rest}"
  if p[0] == "up_blocks":
    b, kind, j, rest = int(p[1]), p[2], int(p[3]), ".".join(p[4:])
    start = sum(config.up_layers[:b])
    if kind == "resnets":
      return f"output_blocks.{start + j}.0.{_ldm_resnet(rest)}"
    if kind == "attentions":
      return f"output_blocks.{start + j}.1.{rest}"
    if kind == "upsamplers":
      idx = 2 if config.up_block_types[b] == "CrossAttnUpBlock2D" else 1
      return f"output_blocks.{start + config.up_layers[b] - 1}.{idx}.{rest}"
  raise KeyError(f"no single-file mapping for UNet key {key!r}")


def vae_ldm_key(key: str, config: VAEConfig) -> str:
  """diffusers VAE key → original-layout key (without prefix)."""
  p = key.split(".")
  n = len(config.block_out_channels)

  def resnet(rest):
    return rest.replace("conv_shortcut", "nin_shortcut")

  if p[0] in ("quant_conv", "post_quant_conv"):
    return key
  part, p = p[0], p[1:]
  if p[0] == "conv_norm_out":
    return f"{part}.norm_out.{p[1]}"
  if p[0] in ("conv_in", "conv_out"):
    return f"{part}.{'.'.join(p)}"
  if p[0] == "mid_block":
    kind, j, rest = p[1], int(p[2]), ".".join(p[3:])
    if kind == "resnets":
      return f"{part}.mid.block_{j + 1}.{resnet(rest)}"
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}
    mod = p[3]
    tail = p[-1]
    return f"{part}.mid.attn_1.{attn[mod]}.{tail}"
  if p[0] == "down_blocks":
    b, kind = int(p[1]), p[2]
    if kind == "resnets":
      return f"{part}.down.{b}.block.{p[3]}.{resnet('.'.join(p[4:]))}"
    return f"{part}.down.{b}.downsample.{'.'.join(p[4:])}"
  if p[0] == "up_blocks":
    b, kind = n - 1 - int(p[1]), p[2]
    if kind == "resnets":
      return f"{part}.up.{b}.block.{p[3]}.{resnet('.'.join(p[4:]))}"
    return f"{part}.up.{b}.upsample.{'.'.join(p[4:])}"
  raise KeyError(f"no single-file mapping for VAE key {key!r}")


def _ldm_vae_attn_weight(dkey: str, x: np.ndarray) -> np.ndarray:
  """Original VAE attention q/k/v/proj_out are 1×1 convs `[O, I, 1, 1]`; diffusers has linears."""
  if ".mid_block.attentions." in dkey and dkey.endswith(".weight") and x.ndim == 4:
    return x[:, :, 0, 0]
  return x


def load_single_file(path: str | os.PathLike, unet_config: UNetConfig, vae_config: VAEConfig,
                     dtype=np.float32) -> tuple[dict[str, Any], dict[str, Any]]:
  """UNet and VAE params from an original single-file SDXL `.safetensors`
  (`model.diffusion_model.*`, `first_stage_model.*`); the text encoders are read elsewhere.

  Returns `(unet_params, vae_params)`, each the `params` collection of `UNet2DConditionModel
  (unet_config)` / `AutoencoderKL(vae_config)`. Errors name the file and the missing/bad key.
  """
  path = Path(path)
  if not path.is_file():
    raise WeightsError(f"single-file checkpoint {path} does not exist")
  t = _Tensors([path])
  has = lambda k: k in t.where
  unet = _state_to_flax(
      t.get, has, str(path), unet_abstract_params(unet_config), dtype=dtype,
      key_map=lambda k: LDM_UNET_PREFIX + unet_ldm_key(k, unet_config))
  vae_map = {}

  def vae_key(k):
    s = LDM_VAE_PREFIX + vae_ldm_key(k, vae_config)
    vae_map[s] = k
    return s

  vae = _state_to_flax(lambda s: _ldm_vae_attn_weight(vae_map[s], t.get(s)), has, str(path),
                       vae_abstract_params(vae_config), dtype=dtype, key_map=vae_key)
  return unet, vae


def diffusers_to_single_file_state(unet_state: Mapping[str, np.ndarray] | None,
                                   unet_config: UNetConfig | None,
                                   vae_state: Mapping[str, np.ndarray] | None = None,
                                   vae_config: VAEConfig | None = None) -> dict[str, np.ndarray]:
  """diffusers UNet/VAE state dicts → original single-file keys (VAE attention as 1×1 convs)."""
  out = {}
  for k, v in (unet_state or {}).items():
    out[LDM_UNET_PREFIX + unet_ldm_key(k, unet_config)] = v
  for k, v in (vae_state or {}).items():
    if ".mid_block.attentions." in k and k.endswith(".weight") and v.ndim == 2:
      v = v[:, :, None, None]
    out[LDM_VAE_PREFIX + vae_ldm_key(k, vae_config)] = v
  return out
