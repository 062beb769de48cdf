"""CLIP weights: transformers folders (config.json + safetensors) ↔ Flax params of
`models/clip.py`, both directions, plus the text encoders of the single-file SDXL checkpoint.

Layouts read:
- transformers ≥ 5 `save_pretrained`: `CLIPTextModel` / `CLIPVisionModel` keys have no prefix
  (`embeddings.token_embedding.weight`), the `...WithProjection` classes prefix the tower
  (`text_model.` / `vision_model.`) and keep `text_projection.weight` / `visual_projection.weight`
  at the top. Older files (every SDXL `text_encoder/`) also prefix `CLIPTextModel` with
  `text_model.`; both are accepted and the unused `position_ids` buffer is ignored.
- transformers `CLIPModel` (both towers, `text_projection`, `visual_projection`, `logit_scale`):
  `load_clip_model` splits it into the two towers with projections (CLIP-score evaluation,
  instant3d_jax/eval/clip_score.py).
- single-file SDXL: CLIP-L under `conditioner.embedders.0.transformer.` (transformers layout) and
  OpenCLIP bigG under `conditioner.embedders.1.model.` (OpenCLIP layout: fused `in_proj`,
  `c_fc`/`c_proj`, `text_projection` stored as `x @ W`).

Params are returned without the `{'params': ...}` wrapper, fp32 unless the caller asks otherwise.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any, Mapping

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from instant3d_jax import errors
from instant3d_jax.convert import safetensors_io as sio
from instant3d_jax.models.clip import (CLIPTextConfig, CLIPTextModel, CLIPVisionConfig,
                                       CLIPVisionModel)

SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."
_IGNORED_SUFFIXES = ("position_ids",)  # a non-persistent buffer some old exports still contain


# ----------------------------------------------------------------------------------------------
# Shapes of the Flax params (for checking a checkpoint against a config)
# ----------------------------------------------------------------------------------------------
def text_param_shapes(config: CLIPTextConfig, boxed: bool = False) -> dict:
  """The text tower's `params` as `jax.ShapeDtypeStruct`s; `boxed=True` keeps the logical axis
  names (`nn.LogicallyPartitioned`), for shardings."""
  params = _text_boxed(config)
  return params if boxed else nn.unbox(params)


@functools.lru_cache(maxsize=8)
def _text_boxed(config: CLIPTextConfig) -> dict:
  model = CLIPTextModel(config)
  ids = jax.ShapeDtypeStruct((1, config.max_position_embeddings), jnp.int32)
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), ids)["params"]


def vision_param_shapes(config: CLIPVisionConfig) -> dict:
  model = CLIPVisionModel(config)
  px = jax.ShapeDtypeStruct((1, config.image_size, config.image_size, config.num_channels),
                            jnp.float32)
  return nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), px))["params"]


# ----------------------------------------------------------------------------------------------
# transformers key ↔ Flax path, one table per tower
# ----------------------------------------------------------------------------------------------
def _encoder_pairs(num_layers: int) -> list[tuple[str, str, str]]:
  """(torch key, flax path, kind) for the shared encoder stack; kind says how to convert."""
  pairs = []
  for i in range(num_layers):
    t, f = f"encoder.layers.{i}.", f"encoder/layers_{i}/"
    for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
      pairs += [(f"{t}self_attn.{p}.weight", f"{f}self_attn/{p}/kernel", "linear"),
                (f"{t}self_attn.{p}.bias", f"{f}self_attn/{p}/bias", "copy")]
    for p in ("fc1", "fc2"):
      pairs += [(f"{t}mlp.{p}.weight", f"{f}mlp/{p}/kernel", "linear"),
                (f"{t}mlp.{p}.bias", f"{f}mlp/{p}/bias", "copy")]
    for p in ("layer_norm1", "layer_norm2"):
      pairs += [(f"{t}{p}.weight", f"{f}{p}/scale", "copy"),
                (f"{t}{p}.bias", f"{f}{p}/bias", "copy")]
  return pairs


def _text_pairs(config: CLIPTextConfig) -> list[tuple[str, str, str]]:
  pairs = [("embeddings.token_embedding.weight", "token_embedding/embedding", "copy"),
           ("embeddings.position_embedding.weight", "position_embedding", "copy"),
           ("final_layer_norm.weight", "final_layer_norm/scale", "copy"),
           ("final_layer_norm.bias", "final_layer_norm/bias", "copy")]
  pairs += _encoder_pairs(config.num_hidden_layers)
  return pairs


def _vision_pairs(config: CLIPVisionConfig) -> list[tuple[str, str, str]]:
  pairs = [("embeddings.class_embedding", "class_embedding", "copy"),
           ("embeddings.patch_embedding.weight", "patch_embedding/kernel", "conv"),
           ("embeddings.position_embedding.weight", "position_embedding", "copy"),
           ("pre_layrnorm.weight", "pre_layrnorm/scale", "copy"),
           ("pre_layrnorm.bias", "pre_layrnorm/bias", "copy"),
           ("post_layernorm.weight", "post_layernorm/scale", "copy"),
           ("post_layernorm.bias", "post_layernorm/bias", "copy")]
  pairs += _encoder_pairs(config.num_hidden_layers)
  return pairs


def _to_flax(v: np.ndarray, kind: str) -> np.ndarray:
  if kind == "linear":  # torch Linear weight [out, in] → Flax kernel [in, out]
    return v.T
  if kind == "conv":  # torch [out, in, kh, kw] → Flax [kh, kw, in, out]
    return v.transpose(2, 3, 1, 0)
  return v


def _to_torch(v: np.ndarray, kind: str) -> np.ndarray:
  if kind == "linear":
    return v.T
  if kind == "conv":
    return v.transpose(3, 2, 0, 1)
  return v


def _strip_tower_prefix(tensors: Mapping[str, np.ndarray], tower: str) -> dict[str, np.ndarray]:
  """Removes the `text_model.`/`vision_model.` prefix where present; drops ignored buffers."""
  out = {}
  pre = f"{tower}."
  for k, v in tensors.items():
    if k.endswith(_IGNORED_SUFFIXES):
      continue
    out[k[len(pre):] if k.startswith(pre) else k] = v
  return out


def _convert_to_flax(tensors, pairs, expected_shapes, source, projection=None):
  flat = {}
  used = set()
  for tkey, fpath, kind in pairs + ([projection] if projection else []):
    v = sio.take(tensors, tkey, source)
    used.add(tkey)
    flat[fpath] = _to_flax(np.asarray(v), kind)
  unexpected = sorted(set(tensors) - used)
  if unexpected:
    raise errors.WeightsError(f"{source}: unexpected keys for this config (wrong num_hidden_layers "
                              f"or model class?): {unexpected[:10]}")
  params = traverse_util.unflatten_dict(flat, sep="/")
  sio.check_tree_shapes(expected_shapes, params, source)
  return params


# ----------------------------------------------------------------------------------------------
# transformers state dicts ↔ Flax
# ----------------------------------------------------------------------------------------------
def text_to_flax(tensors: Mapping[str, np.ndarray], config: CLIPTextConfig,
                 source: str = "CLIP text state dict") -> dict:
  """transformers `CLIPTextModel[WithProjection]` tensors (numpy) → Flax params."""
  t = _strip_tower_prefix(tensors, "text_model")
  proj = (("text_projection.weight", "text_projection/kernel", "linear")
          if config.projection_dim is not None else None)
  return _convert_to_flax(t, _text_pairs(config), text_param_shapes(config), source, proj)


def vision_to_flax(tensors: Mapping[str, np.ndarray], config: CLIPVisionConfig,
                   source: str = "CLIP vision state dict") -> dict:
  t = _strip_tower_prefix(tensors, "vision_model")
  proj = (("visual_projection.weight", "visual_projection/kernel", "linear")
          if config.projection_dim is not None else None)
  return _convert_to_flax(t, _vision_pairs(config), vision_param_shapes(config), source, proj)


def _from_flax(params, pairs, prefix, projection, dtype):
  flat = traverse_util.flatten_dict(nn.unbox(params), sep="/")
  out = {}
  for tkey, fpath, kind in pairs:
    out[prefix + tkey] = _to_torch(np.asarray(flat[fpath]), kind)
  if projection:
    tkey, fpath, kind = projection
    out[tkey] = _to_torch(np.asarray(flat[fpath]), kind)
  if dtype is not None:
    out = {k: v.astype(dtype) for k, v in out.items()}
  return out


def text_from_flax(params, config: CLIPTextConfig, *, prefix: str | None = None,
                   dtype=None) -> dict[str, np.ndarray]:
  """Flax params → transformers tensors. `prefix=None` uses the transformers-5 layout of the
  class (`text_model.` only for `WithProjection`); pass `"text_model."` for the older layout."""
  with_proj = config.projection_dim is not None
  if prefix is None:
    prefix = "text_model." if with_proj else ""
  proj = ("text_projection.weight", "text_projection/kernel", "linear") if with_proj else None
  return _from_flax(params, _text_pairs(config), prefix, proj, dtype)


def vision_from_flax(params, config: CLIPVisionConfig, *, prefix: str | None = None,
                     dtype=None) -> dict[str, np.ndarray]:
  with_proj = config.projection_dim is not None
  if prefix is None:
    prefix = "vision_model." if with_proj else ""
  proj = (("visual_projection.weight", "visual_projection/kernel", "linear") if with_proj
          else None)
  return _from_flax(params, _vision_pairs(config), prefix, proj, dtype)


def text_layout_prefix(tensors: Mapping[str, np.ndarray]) -> str:
  """The tower prefix a transformers text state dict uses ("text_model." or "")."""
  return "text_model." if any(k.startswith("text_model.") for k in tensors) else ""


# ----------------------------------------------------------------------------------------------
# Folders
# ----------------------------------------------------------------------------------------------
def load_clip_text(folder: str | os.PathLike, *, with_projection: bool | None = None,
                   variant: str | None = None) -> tuple[CLIPTextConfig, dict]:
  """A transformers `CLIPTextModel[WithProjection]` folder → (config, fp32 Flax params)."""
  folder = Path(folder)
  config = CLIPTextConfig.from_transformers(sio.read_config(folder), with_projection)
  files = sio.find_weights(folder, variant)
  tensors = sio.read_folder_weights(folder, variant)
  return config, text_to_flax(tensors, config, source=", ".join(str(f) for f in files))


def load_clip_vision(folder: str | os.PathLike, *, with_projection: bool | None = None,
                     variant: str | None = None) -> tuple[CLIPVisionConfig, dict]:
  folder = Path(folder)
  config = CLIPVisionConfig.from_transformers(sio.read_config(folder), with_projection)
  files = sio.find_weights(folder, variant)
  tensors = sio.read_folder_weights(folder, variant)
  return config, vision_to_flax(tensors, config, source=", ".join(str(f) for f in files))


def clip_model_configs(raw: Mapping[str, Any], source: str = "CLIPModel config.json"
                       ) -> tuple[CLIPTextConfig, CLIPVisionConfig]:
  """A transformers `CLIPModel` config.json dict → (text config, vision config), both with the
  model's `projection_dim` (`text_projection` and `visual_projection` are part of `CLIPModel`).

  The dict goes through transformers' own `CLIPConfig` (no torch needed), so fields a file leaves
  out take transformers' defaults and the legacy `text_config_dict` / `vision_config_dict` keys
  of older files win over `text_config` / `vision_config` exactly as there."""
  if "text_config" not in raw and "text_config_dict" not in raw:
    raise errors.WeightsError(f"{source}: expected a transformers CLIPModel config (with "
                              f"text_config and vision_config), found keys {sorted(raw)[:12]}")
  import transformers  # pylint: disable=g-import-not-at-top  (runtime dep: CLIP tokenizers)
  try:
    hf = transformers.CLIPConfig.from_dict(dict(raw))
  except (TypeError, ValueError) as e:
    raise errors.WeightsError(f"{source}: not a valid CLIPModel config: {e}") from e
  proj = int(hf.projection_dim)
  text = CLIPTextConfig.from_transformers({**hf.text_config.to_dict(), "projection_dim": proj},
                                          with_projection=True)
  vision = CLIPVisionConfig.from_transformers(
      {**hf.vision_config.to_dict(), "projection_dim": proj}, with_projection=True)
  return text, vision


def clip_model_to_flax(tensors: Mapping[str, np.ndarray], text_config: CLIPTextConfig,
                       vision_config: CLIPVisionConfig, source: str = "CLIPModel state dict"
                       ) -> tuple[dict, dict]:
  """transformers `CLIPModel` tensors → (text params, vision params) of `CLIPTextModel` /
  `CLIPVisionModel` with projections. `logit_scale` is not used (CLIP similarity is the plain
  cosine) and dropped; any other key outside the two towers is an error."""
  text, vision, other = {}, {}, []
  for k, v in tensors.items():
    if k.startswith("text_model.") or k == "text_projection.weight":
      text[k] = v
    elif k.startswith("vision_model.") or k == "visual_projection.weight":
      vision[k] = v
    elif k != "logit_scale" and not k.endswith(_IGNORED_SUFFIXES):
      other.append(k)
  if other:
    raise errors.WeightsError(f"{source}: keys outside a CLIPModel's towers (not a transformers "
                              f"CLIPModel?): {sorted(other)[:10]}")
  if not text or not vision:
    raise errors.WeightsError(f"{source}: expected a transformers CLIPModel (text_model.* and "
                              f"vision_model.* keys), found "
                              f"{'no text' if not text else 'no vision'} tower keys")
  return (text_to_flax(text, text_config, source=f"{source} [text]"),
          vision_to_flax(vision, vision_config, source=f"{source} [vision]"))


def load_clip_model(folder: str | os.PathLike, *, variant: str | None = None
                    ) -> tuple[CLIPTextConfig, dict, CLIPVisionConfig, dict]:
  """A transformers `CLIPModel` folder (config.json + safetensors) → (text config, text params,
  vision config, vision params), fp32, both towers with their projections."""
  folder = Path(folder)
  if not folder.is_dir():
    raise errors.WeightsError(f"CLIP model folder {folder} does not exist (expected a transformers "
                              "CLIPModel folder: config.json + model.safetensors)")
  cfg_path = folder / "config.json"
  text_config, vision_config = clip_model_configs(sio.read_config(folder), str(cfg_path))
  files = sio.find_weights(folder, variant)
  tensors = sio.read_folder_weights(folder, variant)
  text, vision = clip_model_to_flax(tensors, text_config, vision_config,
                                    source=", ".join(str(f) for f in files))
  return text_config, text, vision_config, vision


def save_clip_model(folder: str | os.PathLike, text_config: CLIPTextConfig, text_params,
                    vision_config: CLIPVisionConfig, vision_params, *,
                    logit_scale: float = 2.6592, dtype=None,
                    text_token_ids: Mapping[str, int] | None = None) -> None:
  """Writes a transformers `CLIPModel` folder (`config.json` + `model.safetensors`, atomic) —
  the inverse of `load_clip_model`; `logit_scale` is transformers' initial value unless given.
  `text_token_ids` (e.g. `{"bos_token_id": .., "pad_token_id": ..}` of a small tokenizer) go
  into the text config; without them transformers assumes CLIP's (49406, 1), which a small
  vocabulary does not hold (and transformers warns)."""
  if text_config.projection_dim is None or (text_config.projection_dim
                                            != vision_config.projection_dim):
    raise ValueError("a CLIPModel needs both towers with the same projection_dim, got text "
                     f"{text_config.projection_dim}, vision {vision_config.projection_dim}")
  tensors = {**text_from_flax(text_params, text_config, prefix="text_model.", dtype=dtype),
             **vision_from_flax(vision_params, vision_config, prefix="vision_model.",
                                dtype=dtype),
             "logit_scale": np.asarray(logit_scale, dtype or np.float32)}
  sio.write_safetensors(Path(folder) / "model.safetensors", tensors, {"format": "pt"})
  sub = lambda c, t: {**{k: v for k, v in dataclasses.asdict(c).items()
                         if v is not None and k != "projection_dim"}, "model_type": t}
  sio.write_json(Path(folder) / "config.json", {
      "architectures": ["CLIPModel"], "model_type": "clip",
      "projection_dim": text_config.projection_dim, "logit_scale_init_value": 2.6592,
      "text_config": {**sub(text_config, "clip_text_model"), **dict(text_token_ids or {})},
      "vision_config": sub(vision_config, "clip_vision_model")})


def _config_json(config, base: Mapping[str, Any] | None, model_type: str, arch: str) -> dict:
  out = dict(base or {})
  for k, v in dataclasses.asdict(config).items():
    if v is not None:
      out[k] = v
  out.setdefault("model_type", model_type)
  out["architectures"] = [arch]
  return out


def save_clip_text(folder: str | os.PathLike, config: CLIPTextConfig, params, *,
                   base_config: Mapping[str, Any] | None = None, prefix: str | None = None,
                   dtype=None) -> None:
  """Writes `config.json` + `model.safetensors` (atomic) in the transformers layout.

  `base_config` (the config.json that was read) keeps fields this project does not model;
  `dtype=np.float16` writes an fp16 file (fp16 → fp32 → fp16 is exact)."""
  arch = "CLIPTextModelWithProjection" if config.projection_dim is not None else "CLIPTextModel"
  tensors = text_from_flax(params, config, prefix=prefix, dtype=dtype)
  sio.write_safetensors(Path(folder) / "model.safetensors", tensors, {"format": "pt"})
  sio.write_json(Path(folder) / "config.json",
                 _config_json(config, base_config, "clip_text_model", arch))


def save_clip_vision(folder: str | os.PathLike, config: CLIPVisionConfig, params, *,
                     base_config: Mapping[str, Any] | None = None, prefix: str | None = None,
                     dtype=None) -> None:
  arch = ("CLIPVisionModelWithProjection" if config.projection_dim is not None
          else "CLIPVisionModel")
  tensors = vision_from_flax(params, config, prefix=prefix, dtype=dtype)
  sio.write_safetensors(Path(folder) / "model.safetensors", tensors, {"format": "pt"})
  sio.write_json(Path(folder) / "config.json",
                 _config_json(config, base_config, "clip_vision_model", arch))


# ----------------------------------------------------------------------------------------------
# Single-file SDXL checkpoint (original Stability key names)
# ----------------------------------------------------------------------------------------------
def single_file_clip_l_to_flax(checkpoint: Mapping[str, np.ndarray], config: CLIPTextConfig,
                               source: str = "single-file checkpoint",
                               prefix: str = SDXL_CLIP_L_PREFIX) -> dict:
  """CLIP-L of a single-file SDXL checkpoint (transformers layout under `prefix`)."""
  sub = {k[len(prefix):]: v for k, v in checkpoint.items() if k.startswith(prefix)}
  if not sub:
    raise errors.WeightsError(f"{source}: no keys under {prefix!r} (not an SDXL base checkpoint?)")
  return text_to_flax(sub, config, source=f"{source} [{prefix}*]")


def openclip_to_transformers(checkpoint: Mapping[str, np.ndarray], config: CLIPTextConfig,
                             prefix: str = SDXL_OPENCLIP_PREFIX,
                             source: str = "single-file checkpoint") -> dict[str, np.ndarray]:
  """OpenCLIP text-tower keys under `prefix` → transformers `CLIPTextModelWithProjection` keys
  (the mapping of diffusers' `convert_open_clip_checkpoint`, which the tests use as oracle)."""
  d = config.hidden_size
  g = lambda k, shape=None: np.asarray(sio.take(checkpoint, prefix + k, source, shape))
  out = {
      "text_model.embeddings.position_embedding.weight": g("positional_embedding"),
      "text_model.embeddings.token_embedding.weight": g("token_embedding.weight"),
      "text_model.final_layer_norm.weight": g("ln_final.weight"),
      "text_model.final_layer_norm.bias": g("ln_final.bias"),
  }
  if config.projection_dim is not None:
    # OpenCLIP applies `x @ text_projection` ([D, P]); torch Linear stores [P, D].
    out["text_projection.weight"] = g("text_projection", (d, config.projection_dim)).T
  for i in range(config.num_hidden_layers):
    r, t = f"transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}."
    w = g(r + "attn.in_proj_weight", (3 * d, d))
    b = g(r + "attn.in_proj_bias", (3 * d,))
    for j, p in enumerate(("q_proj", "k_proj", "v_proj")):  # fused [q; k; v] along rows
      out[f"{t}self_attn.{p}.weight"] = w[j * d:(j + 1) * d]
      out[f"{t}self_attn.{p}.bias"] = b[j * d:(j + 1) * d]
    for a, c in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"),
                 ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
      out[f"{t}{a}.weight"] = g(f"{r}{c}.weight")
      out[f"{t}{a}.bias"] = g(f"{r}{c}.bias")
  extra = sorted(k for k in checkpoint if k.startswith(prefix + "transformer.resblocks.")
                 and int(k[len(prefix + "transformer.resblocks."):].split(".")[0])
                 >= config.num_hidden_layers)
  if extra:
    raise errors.WeightsError(f"{source}: has more OpenCLIP layers than the config's "
                              f"num_hidden_layers={config.num_hidden_layers}: {extra[:4]}")
  return out


def transformers_to_openclip(tensors: Mapping[str, np.ndarray], config: CLIPTextConfig,
                             prefix: str = SDXL_OPENCLIP_PREFIX) -> dict[str, np.ndarray]:
  """Inverse of `openclip_to_transformers` (for writing a single-file checkpoint)."""
  t = {("text_model." + k if not k.startswith(("text_model.", "text_projection")) else k): v
       for k, v in tensors.items()}
  out = {
      prefix + "positional_embedding": t["text_model.embeddings.position_embedding.weight"],
      prefix + "token_embedding.weight": t["text_model.embeddings.token_embedding.weight"],
      prefix + "ln_final.weight": t["text_model.final_layer_norm.weight"],
      prefix + "ln_final.bias": t["text_model.final_layer_norm.bias"],
  }
  if config.projection_dim is not None:
    out[prefix + "text_projection"] = np.ascontiguousarray(t["text_projection.weight"].T)
  for i in range(config.num_hidden_layers):
    r, s = f"{prefix}transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}."
    out[r + "attn.in_proj_weight"] = np.concatenate(
        [t[f"{s}self_attn.{p}.weight"] for p in ("q_proj", "k_proj", "v_proj")], 0)
    out[r + "attn.in_proj_bias"] = np.concatenate(
        [t[f"{s}self_attn.{p}.bias"] for p in ("q_proj", "k_proj", "v_proj")], 0)
    for a, c in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"),
                 ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
      out[f"{r}{c}.weight"] = t[f"{s}{a}.weight"]
      out[f"{r}{c}.bias"] = t[f"{s}{a}.bias"]
  return out


def single_file_openclip_to_flax(checkpoint: Mapping[str, np.ndarray], config: CLIPTextConfig,
                                 source: str = "single-file checkpoint",
                                 prefix: str = SDXL_OPENCLIP_PREFIX) -> dict:
  """OpenCLIP bigG of a single-file SDXL checkpoint → Flax params (`CLIPTextModel` with
  projection)."""
  if config.projection_dim is None:
    raise ValueError("the OpenCLIP text encoder needs a config with projection_dim (SDXL's "
                     "text_encoder_2 is CLIPTextModelWithProjection)")
  hf = openclip_to_transformers(checkpoint, config, prefix, source)
  return text_to_flax(hf, config, source=f"{source} [{prefix}*]")
