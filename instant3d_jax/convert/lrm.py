"""Reconstructor weights: the whole model as one safetensors file, and DINO encoder import.

Whole-model file (`save_lrm` / `load_lrm`), written by `python -m instant3d_jax.export` and read
by `python -m instant3d_jax.reconstruct --checkpoint model.safetensors`:

  * one tensor per parameter, fp32, named by its Flax path joined with '.', in Flax layout
    (dense kernels `[in, out]`, conv kernels `[kh, kw, in, out]`), e.g.
      camera_embedder.fc1.kernel                 [16, E]
      encoder.patch_embed.kernel                 [p, p, 3 (+6 Plücker), De]
      encoder.layer_{i}.{query,key,value,out,fc1,fc2,adaLN_modulation}.{kernel,bias}
      encoder.layer_{i}.{norm1,norm2}.{scale,bias}, encoder.{cls_token,position_embeddings}
      decoder.triplane_tokens                    [3·T·T, D]
      decoder.block_{i}.{cross_q,cross_k,cross_v,cross_out,self_q,…,fc1,fc2,modulation}.*
      decoder.block_{i}.cross_attn_bias          [3·T·T, V·(1+R+N)]   (attention_bias only)
      decoder.norm_out.*, decoder.upsampler.{kernel [2, 2, D, C], bias}
      nerf.dense_{i}.{kernel,bias}
  * metadata: `format` = "instant3d_jax.lrm", `format_version` = "1", `config` = the full run
    config as JSON (ml_collections `to_json`), so the file alone rebuilds the model, and `step`
    (decimal) = the training step of the weights, when known.

Loading checks every path and shape against the model the config builds and fails with the
list of mismatches (both shapes) — never a silent partial load.

DINO import (`import_dino_encoder`): a transformers ViTModel/Dinov2Model folder through
`convert/transformers_vit.py` into `params['encoder']`. With Plücker rays on, the patch
embedding has 3 + 6 input channels: the pretrained kernel fills the 3 colour channels and the
6 ray channels are zero, and the camera adaLN starts at zero, so the imported encoder computes
exactly the pretrained DINO features at init.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from instant3d_jax import fileio
from instant3d_jax.base import config_schema
from instant3d_jax.convert import transformers_vit
from instant3d_jax.convert.safetensors_io import (check_tree_shapes, flatten, read_safetensors,
                                                  unflatten)
from instant3d_jax.errors import WeightsError
from instant3d_jax.models import lrm as lrm_lib

FORMAT = "instant3d_jax.lrm"
FORMAT_VERSION = "1"
SEP = "."


def _full_config(config) -> ml_collections.ConfigDict:
  """A full run config (with a `model` section); a bare model section gets wrapped."""
  if "model" in config:
    return ml_collections.ConfigDict(config)
  return ml_collections.ConfigDict({"model": ml_collections.ConfigDict(config)})


def save_lrm(path: str | os.PathLike, params: Mapping[str, Any], config,
             step: int | None = None) -> fileio.OutPath:
  """Writes the reconstructor's params (boxed or not) and `config` into one safetensors file;
  `step` (the training step the params come from) is recorded in the metadata when given.

  `path` may be local or `gs://…`; the file appears complete or not at all (a local temporary
  file, then rename or upload: `fileio.staged_output`)."""
  flat = flatten(nn.meta.unbox(params), SEP)
  tensors = {k: np.ascontiguousarray(np.asarray(jax.device_get(v), np.float32))
             for k, v in flat.items()}
  metadata = {"format": FORMAT, "format_version": FORMAT_VERSION,
              "config": _full_config(config).to_json()}
  if step is not None:
    metadata["step"] = str(int(step))
  with fileio.staged_output(path) as tmp:
    save_file(tensors, str(tmp), metadata=metadata)
  return fileio.native(path)


def read_lrm_metadata(path: str | os.PathLike, name: str | os.PathLike | None = None
                      ) -> dict[str, str]:
  """The metadata of a local safetensors file (`name`: how to call it in errors)."""
  name = path if name is None else name
  if not os.path.isfile(path):
    raise WeightsError(f"checkpoint {name} does not exist")
  try:
    with safe_open(str(path), framework="np") as f:
      return dict(f.metadata() or {})
  except Exception as e:  # corrupt header: several exception types
    raise WeightsError(f"checkpoint {name} is not a readable safetensors file: {e}") from e


def config_from_json(text: str) -> ml_collections.ConfigDict:
  """A ConfigDict from `to_json` output (lists stay lists; the model reads them as sequences),
  upgraded to today's keys (`config_schema.upgrade_config`; a bare model section as the model
  section of a full config)."""
  saved = json.loads(text)
  if "model" in saved:
    return ml_collections.ConfigDict(config_schema.upgrade_config(saved))
  return ml_collections.ConfigDict(config_schema.upgrade_config({"model": saved})["model"])


def read_lrm(path: str | os.PathLike, config=None
             ) -> tuple[ml_collections.ConfigDict, dict, int | None]:
  """(config, params, step) of a file written by `save_lrm` (local or `gs://…`, fetched once);
  params are numpy fp32, unboxed; `step` is None for files that record none.

  `config` overrides the embedded one (its model must still match the tensors' shapes).
  """
  if not fileio.path(path).is_file():
    raise WeightsError(f"checkpoint {path} does not exist")
  with fileio.local_file(path) as local:
    meta = read_lrm_metadata(local, path)
    if meta.get("format") != FORMAT:
      raise WeightsError(f"checkpoint {path}: metadata format is {meta.get('format')!r}, "
                         f"expected {FORMAT!r} (a file written by instant3d_jax.export / "
                         "convert.lrm.save_lrm)")
    if config is None:
      if "config" not in meta:
        raise WeightsError(f"checkpoint {path} carries no config; pass one explicitly")
      config = config_from_json(meta["config"])
    config = _full_config(config)
    tensors = read_safetensors(local)
  params = unflatten(tensors, SEP)
  check_tree_shapes(nn.meta.unbox(lrm_lib.abstract_params(config)), params, f"checkpoint {path}")
  step = int(meta["step"]) if meta.get("step", "").lstrip("-").isdigit() else None
  return config, params, step


def load_lrm(path: str | os.PathLike, config=None) -> tuple[ml_collections.ConfigDict, dict]:
  """(config, params) of `read_lrm`."""
  config, params, _ = read_lrm(path, config)
  return config, params


def import_dino_encoder(params: Mapping[str, Any], config, folder: str | os.PathLike) -> dict:
  """`params` with `params['encoder']` replaced by the DINO weights of a transformers folder.

  The folder's architecture must equal the config's encoder (apart from the Plücker channels,
  zero-filled here); errors name the folder and the mismatching keys.
  """
  m = lrm_lib.LRMConfig.from_config(config)
  mod_dim = m.camera_embed_dim if m.encoder_modulation else None
  _, enc = transformers_vit.load_vit(folder, modulation_dim=mod_dim, config=m.vit,
                                     zero_extra_channels=m.extras.plucker_rays)
  out = dict(nn.meta.unbox(params))
  check_tree_shapes(out["encoder"], enc, f"DINO folder {folder}")
  out["encoder"] = enc
  return out


def init_params_with_pretrained(config, key: jax.Array) -> dict:
  """Random init, then the DINO encoder from `model.encoder.pretrained` if set (unboxed)."""
  m = lrm_lib.LRMConfig.from_config(config)
  params = nn.meta.unbox(lrm_lib.init_params(m, key))
  if m.encoder.pretrained:
    params = import_dino_encoder(params, m, m.encoder.pretrained)
  return params


def export_dino_encoder(params: Mapping[str, Any], config, folder: str | os.PathLike) -> None:
  """The (fine-tuned) encoder back out as a transformers folder (Plücker channels included in
  the patch embedding; adaLN weights as InstantMesh-named extra keys)."""
  m = lrm_lib.LRMConfig.from_config(config)
  transformers_vit.save_vit(folder, nn.meta.unbox(params)["encoder"], m.vit)


__all__ = ["FORMAT", "save_lrm", "read_lrm", "load_lrm", "read_lrm_metadata", "config_from_json",
           "import_dino_encoder", "init_params_with_pretrained", "export_dino_encoder"]
