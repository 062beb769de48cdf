"""transformers ViT / DINOv2 checkpoints <-> `ViTEncoder` parameters, both directions.

Reads the on-disk key layout that `save_pretrained` writes and the hub checkpoints use
(`facebook/dino-vitb16`, `facebook/dinov2-base`, `facebook/dinov2-with-registers-base`):

  embeddings.cls_token [1,1,D]                 -> cls_token
  embeddings.position_embeddings [1,1+N0,D]    -> position_embeddings
  embeddings.register_tokens [1,R,D]           -> register_tokens            (registers only)
  embeddings.patch_embeddings.projection.{weight [D,C,p,p], bias} -> patch_embed.{kernel [p,p,C,D], bias}
  encoder.layer.{i}.attention.attention.{query,key,value}.{weight,bias} -> layer_{i}.{query,key,value}
  encoder.layer.{i}.attention.output.dense     -> layer_{i}.out
  encoder.layer.{i}.layernorm_before / norm1   -> layer_{i}.norm1  (ViT / DINOv2 names)
  encoder.layer.{i}.layernorm_after / norm2    -> layer_{i}.norm2
  encoder.layer.{i}.intermediate.dense / mlp.fc1 -> layer_{i}.fc1
  encoder.layer.{i}.output.dense / mlp.fc2     -> layer_{i}.fc2
  encoder.layer.{i}.mlp.weights_in [2H,D]      -> layer_{i}.gate (first half), .up (second half)
  encoder.layer.{i}.mlp.weights_out            -> layer_{i}.down                (SwiGLU)
  encoder.layer.{i}.layer_scale{1,2}.lambda1   -> layer_{i}.layer_scale{1,2}.lambda1 (DINOv2)
  layernorm                                    -> layernorm
  encoder.layer.{i}.adaLN_modulation.1.{weight [4D,M], bias} -> layer_{i}.adaLN_modulation
      (camera modulation; not a transformers key: InstantMesh's name. Written on export so a
      modulated encoder survives the round trip; absent on import = fresh zeros)

Linear weights are transposed ([out, in] -> [in, out]). Ignored on import (unused by the
encoder): `pooler.*` (ViTModel's CLS pooler; DINO checkpoints do not train it) and
`embeddings.mask_token` (masked-image-modelling only). Keys under a task model's prefix
(`vit.`, `dinov2.`, `dinov2_with_registers.`) are accepted; the task heads are ignored.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from instant3d_jax.convert.safetensors_io import (check_tree_shapes, find_weights, read_config,
                                                  read_folder_weights, take, write_json,
                                                  write_safetensors)
from instant3d_jax.errors import WeightsError
from instant3d_jax.models.vit import ViTConfig, ViTEncoder

IGNORED_KEYS = ("pooler.dense.weight", "pooler.dense.bias", "embeddings.mask_token")
_PREFIXES = {"vit": "vit.", "dinov2": "dinov2.", "dinov2_with_registers": "dinov2_with_registers."}


def _layer_names(config: ViTConfig) -> dict[str, str]:
  """Flax block sub-module -> transformers key stem (inside `encoder.layer.{i}.`)."""
  v1 = config.model_type == "vit"
  names = {
      "query": "attention.attention.query", "key": "attention.attention.key",
      "value": "attention.attention.value", "out": "attention.output.dense",
      "norm1": "layernorm_before" if v1 else "norm1",
      "norm2": "layernorm_after" if v1 else "norm2",
  }
  if not config.use_swiglu_ffn:
    names.update(fc1="intermediate.dense" if v1 else "mlp.fc1",
                 fc2="output.dense" if v1 else "mlp.fc2")
  return names


def expected_param_shapes(config: ViTConfig, modulation_dim: int | None = None) -> dict:
  """Abstract (unboxed) parameter tree of `ViTEncoder(config, modulation_dim=...)`."""
  model = ViTEncoder(config, modulation_dim=modulation_dim)
  size = config.image_size
  x = jax.ShapeDtypeStruct((1, size, size, config.num_channels), jnp.float32)
  mod = (None if modulation_dim is None
         else jax.ShapeDtypeStruct((1, modulation_dim), jnp.float32))
  shapes = jax.eval_shape(model.init, jax.random.key(0), x, mod)
  return nn.meta.unbox(shapes)["params"]


def _strip_prefix(tensors: dict[str, np.ndarray], config: ViTConfig) -> dict[str, np.ndarray]:
  prefix = _PREFIXES[config.model_type]
  if any(k.startswith(prefix) for k in tensors):
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
  return tensors


def tensors_to_params(tensors: Mapping[str, np.ndarray], config: ViTConfig, source: str,
                      modulation_dim: int | None = None,
                      zero_extra_channels: bool = False) -> dict[str, Any]:
  """transformers state dict (numpy) -> `ViTEncoder` params (nested dict of numpy arrays).

  `source` names the checkpoint in errors. Every checkpoint key must be used or listed in
  `IGNORED_KEYS`; leftovers are an error (they would mean a layout this code does not know).
  `zero_extra_channels`: when `config.num_channels` exceeds the checkpoint's (e.g. RGB + 6
  Plücker-ray channels on a pretrained RGB DINO), the patch embedding gets zero weights for the
  extra input channels, so the pretrained encoder's output is unchanged at init (the same
  principle as the zero-initialised modulation). Without it a channel mismatch is an error.
  """
  t = _strip_prefix(dict(tensors), config)
  used = set(IGNORED_KEYS)

  # Shapes are not checked key by key: `check_tree_shapes` at the end lists every mismatch.
  def get(key):
    used.add(key)
    return np.asarray(take(t, key, source), np.float32)

  d = config.hidden_size
  patch_kernel = get("embeddings.patch_embeddings.projection.weight")
  if patch_kernel.ndim != 4:
    raise WeightsError(f"{source}: key 'embeddings.patch_embeddings.projection.weight' has shape "
                       f"{patch_kernel.shape}, expected a 4-D conv weight [D, C, p, p]")
  extra = config.num_channels - patch_kernel.shape[1]
  if zero_extra_channels and extra > 0:
    patch_kernel = np.concatenate(
        [patch_kernel, np.zeros(patch_kernel.shape[:1] + (extra,) + patch_kernel.shape[2:],
                                np.float32)], 1)
  params: dict[str, Any] = {
      "cls_token": get("embeddings.cls_token"),
      "position_embeddings": get("embeddings.position_embeddings"),
      "patch_embed": {"kernel": patch_kernel.transpose(2, 3, 1, 0),
                      "bias": get("embeddings.patch_embeddings.projection.bias")},
      "layernorm": {"scale": get("layernorm.weight"), "bias": get("layernorm.bias")},
  }
  if config.num_register_tokens:
    params["register_tokens"] = get("embeddings.register_tokens")

  def linear(key):
    return {"kernel": get(f"{key}.weight").T, **({"bias": get(f"{key}.bias")}
                                                  if f"{key}.bias" in t else {})}

  for i in range(config.num_hidden_layers):
    pre = f"encoder.layer.{i}."
    layer: dict[str, Any] = {}
    for flax_name, torch_name in _layer_names(config).items():
      if flax_name.startswith("norm"):
        layer[flax_name] = {"scale": get(pre + torch_name + ".weight"),
                            "bias": get(pre + torch_name + ".bias")}
      else:
        layer[flax_name] = linear(pre + torch_name)
    if config.use_swiglu_ffn:
      w_in, b_in = get(pre + "mlp.weights_in.weight"), get(pre + "mlp.weights_in.bias")
      hid = config.swiglu_hidden
      if w_in.shape != (2 * hid, d):
        raise WeightsError(f"{source}: key {pre}mlp.weights_in.weight has shape {w_in.shape}, "
                           f"expected {(2 * hid, d)}")
      layer["gate"] = {"kernel": w_in[:hid].T, "bias": b_in[:hid]}
      layer["up"] = {"kernel": w_in[hid:].T, "bias": b_in[hid:]}
      layer["down"] = linear(pre + "mlp.weights_out")
    if config.layer_scale:
      for k in ("layer_scale1", "layer_scale2"):
        layer[k] = {"lambda1": get(f"{pre}{k}.lambda1")}
    mod_key = pre + "adaLN_modulation.1"
    if modulation_dim is not None:
      if mod_key + ".weight" in t:
        layer["adaLN_modulation"] = linear(mod_key)
      else:  # a plain pretrained encoder: fresh zero modulation = unchanged outputs
        layer["adaLN_modulation"] = {"kernel": np.zeros((modulation_dim, 4 * d), np.float32),
                                     "bias": np.zeros((4 * d,), np.float32)}
    elif mod_key + ".weight" in t:
      raise WeightsError(f"{source} holds camera-modulation weights ({mod_key}.weight) but the "
                         "encoder was built with modulation_dim=None")
    params[f"layer_{i}"] = layer

  unused = sorted(set(t) - used)
  if unused:
    raise WeightsError(f"{source}: {len(unused)} keys are not part of the "
                       f"{config.model_type} encoder layout: {unused[:20]}")
  check_tree_shapes(expected_param_shapes(config, modulation_dim), params, source)
  return params


def params_to_tensors(params: Mapping[str, Any], config: ViTConfig) -> dict[str, np.ndarray]:
  """`ViTEncoder` params -> transformers state dict (numpy fp32); inverse of the above."""
  params = nn.meta.unbox(params)
  np32 = lambda a: np.asarray(a, np.float32)
  out = {
      "embeddings.cls_token": np32(params["cls_token"]),
      "embeddings.position_embeddings": np32(params["position_embeddings"]),
      "embeddings.patch_embeddings.projection.weight":
          np32(params["patch_embed"]["kernel"]).transpose(3, 2, 0, 1),
      "embeddings.patch_embeddings.projection.bias": np32(params["patch_embed"]["bias"]),
      "layernorm.weight": np32(params["layernorm"]["scale"]),
      "layernorm.bias": np32(params["layernorm"]["bias"]),
  }
  if config.num_register_tokens:
    out["embeddings.register_tokens"] = np32(params["register_tokens"])

  def linear(key, p):
    out[f"{key}.weight"] = np32(p["kernel"]).T
    if "bias" in p:
      out[f"{key}.bias"] = np32(p["bias"])

  for i in range(config.num_hidden_layers):
    pre, layer = f"encoder.layer.{i}.", params[f"layer_{i}"]
    for flax_name, torch_name in _layer_names(config).items():
      if flax_name.startswith("norm"):
        out[pre + torch_name + ".weight"] = np32(layer[flax_name]["scale"])
        out[pre + torch_name + ".bias"] = np32(layer[flax_name]["bias"])
      else:
        linear(pre + torch_name, layer[flax_name])
    if config.use_swiglu_ffn:
      out[pre + "mlp.weights_in.weight"] = np.concatenate(
          [np32(layer["gate"]["kernel"]).T, np32(layer["up"]["kernel"]).T], 0)
      out[pre + "mlp.weights_in.bias"] = np.concatenate(
          [np32(layer["gate"]["bias"]), np32(layer["up"]["bias"])], 0)
      linear(pre + "mlp.weights_out", layer["down"])
    if config.layer_scale:
      for k in ("layer_scale1", "layer_scale2"):
        out[f"{pre}{k}.lambda1"] = np32(layer[k]["lambda1"])
    if "adaLN_modulation" in layer:
      linear(pre + "adaLN_modulation.1", layer["adaLN_modulation"])
  return out


def load_vit(folder: str | os.PathLike, modulation_dim: int | None = None,
             config: ViTConfig | None = None,
             zero_extra_channels: bool = False) -> tuple[ViTConfig, dict[str, Any]]:
  """A transformers ViTModel / Dinov2Model / Dinov2WithRegistersModel folder -> (config, params).

  `config` defaults to the folder's `config.json` (pass one to add input channels, see
  `tensors_to_params`). Params are numpy fp32 (unboxed); use as
  `ViTEncoder(config, modulation_dim=...).apply({'params': params}, x, modulation)`.
  """
  folder = Path(folder)
  if config is None:
    config = ViTConfig.from_transformers(read_config(folder))
  files = find_weights(folder)
  source = str(files[0]) if len(files) == 1 else f"{folder} ({len(files)} shards)"
  tensors = read_folder_weights(folder)
  return config, tensors_to_params(tensors, config, source, modulation_dim,
                                   zero_extra_channels)


def save_vit(folder: str | os.PathLike, params: Mapping[str, Any], config: ViTConfig) -> None:
  """Writes `config.json` + `model.safetensors` that transformers loads (modulation weights, if
  any, are extra keys it reports as unexpected); weights first, each file atomically."""
  folder = Path(folder)
  write_safetensors(folder / "model.safetensors", params_to_tensors(params, config),
                    metadata={"format": "pt"})
  write_json(folder / "config.json", config.to_transformers())


__all__ = ["IGNORED_KEYS", "expected_param_shapes", "tensors_to_params", "params_to_tensors",
           "load_vit", "save_vit"]
