"""InstantMesh's sparse-view NeRF reconstructor (`instant-nerf-base` / `instant-nerf-large`) →
the project's `LRM` parameters (configs/lrm.py:instantmesh_base / instantmesh_large), and back.

InstantMesh ships a PyTorch Lightning `.ckpt` whose `state_dict` holds the reconstructor under
`lrm_generator.` (and torchmetrics' LPIPS under `lpips.`, skipped). It is read without torch by
`convert/torch_checkpoint.py` (a restricted unpickler: nothing outside the tensors executes), or
from a `.safetensors` export of the same names. Key layout (prefix `lrm_generator.` removed):

  encoder.camera_embedder.{0,2}.{weight,bias}             -> camera_embedder.{fc1,fc2}
  encoder.model.<transformers ViTModel keys>              -> encoder.*   (convert/transformers_vit.py;
      encoder.model.encoder.layer.{i}.adaLN_modulation.1  -> encoder.layer_{i}.adaLN_modulation)
  transformer.pos_embed [1, 3·T·T, D]                     -> decoder.triplane_tokens [3·T·T, D]
  transformer.layers.{i}.norm{1,2,3}                      -> decoder.block_{i}.norm{1,2,3}
  transformer.layers.{i}.cross_attn.{q,k,v}_proj_weight   -> decoder.block_{i}.cross_{q,k,v}
      (or `in_proj_weight` [3D, D], packed, when the image tokens are D wide too)
  transformer.layers.{i}.cross_attn.out_proj.weight       -> decoder.block_{i}.cross_out
  transformer.layers.{i}.self_attn.in_proj_weight [3D, D] -> decoder.block_{i}.self_{q,k,v}
  transformer.layers.{i}.self_attn.out_proj.weight        -> decoder.block_{i}.self_out
  transformer.layers.{i}.mlp.{0,3}                        -> decoder.block_{i}.{fc1,fc2}
  transformer.norm                                        -> decoder.norm_out
  transformer.deconv.{weight [D, C, 2, 2], bias}          -> decoder.upsampler.{kernel [2, 2, D, C], bias}
  synthesizer.decoder.net.{0,2,4,6}                       -> nerf.dense_{0,1,2,3}

Linear weights are transposed ([out, in] → [in, out]). The transposed convolution's kernel is
also flipped in both spatial axes: torch's `ConvTranspose2d` scatters input texel (h, w) to
output (2h + i, 2w + j) with weight[:, :, i, j], flax's `nn.ConvTranspose` (transpose_kernel
False) with kernel[1 − i, 1 − j]. The model must be built with InstantMesh's options
(configs/lrm.py:instantmesh_*: no attention biases, OpenGL cameras, EG3D plane axes, ...);
every key and shape is checked against it and a mismatch lists all the differences.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import flax.linen as nn
import numpy as np

from instant3d_jax.convert import torch_checkpoint, transformers_vit
from instant3d_jax.convert.safetensors_io import check_tree_shapes, read_safetensors
from instant3d_jax.errors import WeightsError
from instant3d_jax.models import lrm as lrm_lib

PREFIX = "lrm_generator."
_ENCODER = "encoder.model."


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """InstantMesh's reconstructor tensors (names without `lrm_generator.`) from its Lightning
  `.ckpt` (torch-free) or a `.safetensors` holding the same names (with or without the prefix)."""
  path = os.fspath(path)
  if path.endswith(".safetensors"):
    tensors = read_safetensors(path)
    if any(k.startswith(PREFIX) for k in tensors):
      tensors = {k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)}
    return tensors
  return {k: np.asarray(v, np.float32)
          for k, v in torch_checkpoint.read_state_dict(path, key="state_dict",
                                                       prefix=PREFIX).items()}


def _linear(t: dict, key: str, used: set, source: str, bias: bool = True) -> dict:
  w = _take(t, key + ".weight", used, source)
  out = {"kernel": w.T}
  if bias:
    out["bias"] = _take(t, key + ".bias", used, source)
  return out


def _take(t: dict, key: str, used: set, source: str) -> np.ndarray:
  if key not in t:
    raise WeightsError(f"{source}: missing key {key!r} (an InstantMesh NeRF reconstructor "
                       "checkpoint was expected)")
  used.add(key)
  return np.asarray(t[key], np.float32)


def deconv_kernel_from_torch(weight: np.ndarray) -> np.ndarray:
  """torch `ConvTranspose2d.weight [in, out, kh, kw]` → flax `ConvTranspose` kernel
  `[kh, kw, in, out]` (spatially flipped; see the module docstring)."""
  return np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(2, 3, 0, 1))


def deconv_kernel_to_torch(kernel: np.ndarray) -> np.ndarray:
  """Inverse of `deconv_kernel_from_torch`."""
  return np.ascontiguousarray(kernel.transpose(2, 3, 0, 1)[:, :, ::-1, ::-1])


def _attention(t, pre, d, used, source, cross: bool, out_bias: bool) -> dict:
  """q/k/v/out of one `nn.MultiheadAttention` (bias=False in InstantMesh)."""
  name = "cross" if cross else "self"
  packed = f"{pre}in_proj_weight"
  if packed in t:
    w = _take(t, packed, used, source)
    if w.shape[0] != 3 * d:
      raise WeightsError(f"{source}: {packed} has shape {w.shape}, expected [3·{d}, {d}]")
    q, k, v = w[:d], w[d:2 * d], w[2 * d:]
  else:
    q, k, v = (_take(t, f"{pre}{n}_proj_weight", used, source) for n in "qkv")
  out = {f"{name}_q": {"kernel": q.T}, f"{name}_k": {"kernel": k.T},
         f"{name}_v": {"kernel": v.T},
         f"{name}_out": _linear(t, f"{pre}out_proj", used, source, bias=out_bias)}
  for n in (f"{pre}in_proj_bias", f"{pre}out_proj.bias"):
    if n in t and n not in used:
      raise WeightsError(f"{source}: {n} is present but the model was configured without "
                         "attention biases (model.decoder.qkv_bias / attention_out_bias)")
  return out


def state_dict_to_params(tensors: Mapping[str, np.ndarray], config, source: str) -> dict:
  """InstantMesh tensors (torch layout, `lrm_generator.` removed) → LRM params (numpy, nested,
  unboxed) for the model `config` builds. Every key must be used; shapes are checked."""
  m = lrm_lib.LRMConfig.from_config(config)
  t = dict(tensors)
  used: set[str] = set()
  if m.decoder.qkv_bias:
    raise WeightsError(f"{source}: InstantMesh's attention has no q/k/v biases; build the model "
                       "with configs/lrm.py:instantmesh_* (model.decoder.qkv_bias=False)")
  out_bias = bool(m.decoder.attention_out_bias)
  params: dict[str, Any] = {
      "camera_embedder": {"fc1": _linear(t, "encoder.camera_embedder.0", used, source),
                          "fc2": _linear(t, "encoder.camera_embedder.2", used, source)}}
  enc = {k[len(_ENCODER):]: v for k, v in t.items() if k.startswith(_ENCODER)}
  used.update(_ENCODER + k for k in enc)
  params["encoder"] = transformers_vit.tensors_to_params(
      enc, m.vit, f"{source} (encoder.model.*)",
      modulation_dim=m.camera_embed_dim if m.encoder_modulation else None)

  d = m.decoder.hidden_size
  tokens = _take(t, "transformer.pos_embed", used, source)
  dec: dict[str, Any] = {"triplane_tokens": tokens.reshape(tokens.shape[-2:])}
  for i in range(m.decoder.num_layers):
    pre = f"transformer.layers.{i}."
    block: dict[str, Any] = {}
    for n in (1, 2, 3):
      block[f"norm{n}"] = {"scale": _take(t, f"{pre}norm{n}.weight", used, source),
                           "bias": _take(t, f"{pre}norm{n}.bias", used, source)}
    block.update(_attention(t, pre + "cross_attn.", d, used, source, True, out_bias))
    block.update(_attention(t, pre + "self_attn.", d, used, source, False, out_bias))
    block["fc1"] = _linear(t, pre + "mlp.0", used, source)
    block["fc2"] = _linear(t, pre + "mlp.3", used, source)
    dec[f"block_{i}"] = block
  dec["norm_out"] = {"scale": _take(t, "transformer.norm.weight", used, source),
                     "bias": _take(t, "transformer.norm.bias", used, source)}
  dec["upsampler"] = {
      "kernel": deconv_kernel_from_torch(_take(t, "transformer.deconv.weight", used, source)),
      "bias": _take(t, "transformer.deconv.bias", used, source)}
  params["decoder"] = dec
  params["nerf"] = {f"dense_{j}": _linear(t, f"synthesizer.decoder.net.{2 * j}", used, source)
                    for j in range(m.nerf.num_layers)}
  unused = sorted(set(t) - used)
  if unused:
    raise WeightsError(f"{source}: {len(unused)} keys are not part of the model "
                       f"configs/lrm.py:instantmesh_* builds with these sizes: {unused[:12]}")
  expected = nn.meta.unbox(lrm_lib.abstract_params(m))
  check_tree_shapes(expected, params, source)
  return params


def params_to_state_dict(params: Mapping[str, Any], config) -> dict[str, np.ndarray]:
  """LRM params → InstantMesh tensors (torch layout, names without `lrm_generator.`; self- and
  packed cross-attention as `in_proj_weight`): the inverse of `state_dict_to_params`."""
  m = lrm_lib.LRMConfig.from_config(config)
  p = nn.meta.unbox(params)
  a = lambda x: np.asarray(x, np.float32)  # noqa: E731
  out: dict[str, np.ndarray] = {}

  def linear(key, node):
    out[key + ".weight"] = a(node["kernel"]).T
    if "bias" in node:
      out[key + ".bias"] = a(node["bias"])

  linear("encoder.camera_embedder.0", p["camera_embedder"]["fc1"])
  linear("encoder.camera_embedder.2", p["camera_embedder"]["fc2"])
  for k, v in transformers_vit.params_to_tensors(p["encoder"], m.vit).items():
    out[_ENCODER + k] = a(v)
  dec = p["decoder"]
  out["transformer.pos_embed"] = a(dec["triplane_tokens"])[None]
  d, de = m.decoder.hidden_size, m.encoder.hidden_size
  for i in range(m.decoder.num_layers):
    pre, b = f"transformer.layers.{i}.", dec[f"block_{i}"]
    for n in (1, 2, 3):
      out[f"{pre}norm{n}.weight"] = a(b[f"norm{n}"]["scale"])
      out[f"{pre}norm{n}.bias"] = a(b[f"norm{n}"]["bias"])
    for name, packed in (("cross", de == d), ("self", True)):
      qkv = [a(b[f"{name}_{x}"]["kernel"]).T for x in "qkv"]
      if packed:
        out[f"{pre}{name}_attn.in_proj_weight"] = np.concatenate(qkv, 0)
      else:
        for x, w in zip("qkv", qkv):
          out[f"{pre}{name}_attn.{x}_proj_weight"] = w
      linear(f"{pre}{name}_attn.out_proj", b[f"{name}_out"])
    linear(pre + "mlp.0", b["fc1"])
    linear(pre + "mlp.3", b["fc2"])
  out["transformer.norm.weight"] = a(dec["norm_out"]["scale"])
  out["transformer.norm.bias"] = a(dec["norm_out"]["bias"])
  out["transformer.deconv.weight"] = deconv_kernel_to_torch(a(dec["upsampler"]["kernel"]))
  out["transformer.deconv.bias"] = a(dec["upsampler"]["bias"])
  for j in range(m.nerf.num_layers):
    linear(f"synthesizer.decoder.net.{2 * j}", p["nerf"][f"dense_{j}"])
  return out


def load_instantmesh(path: str | os.PathLike, config) -> dict:
  """LRM params (numpy, unboxed) from an InstantMesh checkpoint (`read_checkpoint`)."""
  return state_dict_to_params(read_checkpoint(path), config, os.fspath(path))


__all__ = ["PREFIX", "read_checkpoint", "state_dict_to_params", "params_to_state_dict",
           "load_instantmesh", "deconv_kernel_from_torch", "deconv_kernel_to_torch"]
