"""Stage-1 components (configs/mv_sdxl.py `model`), assembled for training and inference alike:
the SDXL UNet, an autoencoder (the SDXL VAE, or the parameter-free pixel-unshuffle stand-in of
models/pixel_ae.py), two CLIP text encoders and their tokenizers (the weights' CLIP tokenizers, or
the word-level one of diffusion/word_tokenizer.py). With `model.pretrained` they come from SDXL
weights (a diffusers folder or a single file, convert/sdxl_pipeline.py); otherwise from
`model.random_init`. The trained parts (`model.train_parts`, UNet only by default) are what
train/mv_task.py trains; every other part is frozen. `sampling_pipeline` puts trained weights
(e.g. a run's EMA) into a `sampling.Pipeline`, which is how the text-to-3D pipeline samples from
a stage-1 workdir.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from instant3d_jax import errors
from instant3d_jax.diffusion import training

COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")
TRAINABLE = ("unet", "text_encoder", "text_encoder_2")


@dataclasses.dataclass(eq=False)
class Components:
  """Modules, tokenizers and weights of a stage-1 run.

  `frozen`: host (numpy) params of every component that is not trained (the autoencoder's may be
  `{}`); `pretrained`: host params of the trained components to start from (None: the modules'
  own initialisers).
  """
  unet: Any
  vae: Any
  text_encoder: Any
  text_encoder_2: Any
  tokenizer: Any
  tokenizer_2: Any
  frozen: dict[str, Any]
  pretrained: dict[str, Any] | None
  train_parts: tuple[str, ...]
  scheduler_config: Any  # schedulers.SchedulerConfig (training prediction type)

  @property
  def vae_scale_factor(self) -> int:
    return 2 ** (len(self.vae.config.block_out_channels) - 1)


def _train_parts(config) -> tuple[str, ...]:
  parts = tuple(str(p) for p in config.model.train_parts)
  bad = [p for p in parts if p not in TRAINABLE]
  if not parts or bad or len(set(parts)) != len(parts):
    raise errors.ConfigError(f"model.train_parts must be distinct names among {TRAINABLE} (the "
                             f"autoencoder is always frozen), got {list(parts)}")
  return parts


def _tokenizers(config, pipeline_tokenizers=None):
  kind = str(config.model.tokenizer)
  if kind == "word":
    from instant3d_jax.diffusion.word_tokenizer import WordTokenizer
    tok = WordTokenizer(model_max_length=int(config.model.tokenizer_max_length))
    return tok, tok
  if kind == "clip":
    if pipeline_tokenizers is None:
      raise errors.ConfigError("model.tokenizer='clip' reads the CLIP tokenizers of the SDXL "
                               "weights; set model.pretrained, or model.tokenizer='word' for "
                               "random weights")
    return pipeline_tokenizers
  raise errors.ConfigError(f"model.tokenizer must be 'clip' or 'word', got {kind!r}")


def _check_tokenizer(tok, te_config, name: str) -> None:
  """The tokenizer's ids fit the text encoder (vocabulary, positions, pooled EOS rule)."""
  vocab = len(tok) if hasattr(tok, "__len__") else int(tok.vocab_size)
  if vocab > te_config.vocab_size:
    raise errors.ConfigError(f"{name}: the tokenizer has {vocab} ids but the text encoder's "
                             f"vocab_size is {te_config.vocab_size}")
  if tok.model_max_length > te_config.max_position_embeddings:
    raise errors.ConfigError(f"{name}: tokenizer max length {tok.model_max_length} exceeds the "
                             f"text encoder's max_position_embeddings "
                             f"{te_config.max_position_embeddings}")
  if te_config.eos_token_id != 2 and tok.eos_token_id != te_config.eos_token_id:
    raise errors.ConfigError(f"{name}: tokenizer EOS id {tok.eos_token_id} differs from the "
                             f"text encoder's eos_token_id {te_config.eos_token_id}")


def build_components(config, *, abstract: bool = False) -> Components:
  """The modules, tokenizers and frozen/pretrained weights `config.model` describes.

  `abstract=True` (random weights only): the frozen params as `jax.ShapeDtypeStruct`s, nothing
  drawn (memory plans compile the step from shapes alone)."""
  from instant3d_jax.convert import clip as cclip
  from instant3d_jax.convert import diffusers_sdxl
  from instant3d_jax.convert import sdxl_pipeline
  from instant3d_jax.models import layers
  from instant3d_jax.models.clip import CLIPTextConfig, CLIPTextModel
  from instant3d_jax.models.pixel_ae import PixelAEConfig, PixelUnshuffleAE
  from instant3d_jax.models.unet import UNet2DConditionModel, UNetConfig
  from instant3d_jax.models.vae import AutoencoderKL, VAEConfig
  m = config.model
  parts = _train_parts(config)
  dt = layers.compute_dtype(str(m.dtype), "model.dtype")
  kw = dict(attention_impl=str(m.attention_impl))
  ae_kind = str(m.autoencoder)
  if ae_kind not in ("vae", "pixel_unshuffle"):
    raise errors.ConfigError(f"model.autoencoder must be 'vae' or 'pixel_unshuffle', got "
                             f"{ae_kind!r}")
  pixel_ae = None
  if ae_kind == "pixel_unshuffle":
    pixel_ae = PixelUnshuffleAE(PixelAEConfig(factor=int(m.pixel_ae_factor),
                                              scaling_factor=float(m.pixel_ae_scaling_factor)))
  pretrained = str(m.get("pretrained", "") or "")
  if pretrained and abstract:
    raise errors.ConfigError("build_components(abstract=True) plans from model.random_init "
                             "shapes; clear model.pretrained")
  if pretrained:
    pipe = sdxl_pipeline.load_any(pretrained, str(m.single_file_config_folder or "") or None)
    unet_cfg, te_cfg = pipe.unet.config, pipe.text_encoder.config
    te2_cfg, vae = pipe.text_encoder_2.config, pipe.vae
    host = {c: jax.tree.map(np.asarray, pipe.params[c]) for c in COMPONENTS}
    toks = _tokenizers(config, (pipe.tokenizer, pipe.tokenizer_2))
    vae = AutoencoderKL(vae.config, dtype=dt, **kw) if pixel_ae is None else pixel_ae
    if pixel_ae is not None:
      host["vae"] = {}
    start = {p: host[p] for p in parts}
  else:
    r = m.random_init
    missing = [c for c in ("unet", "text_encoder", "text_encoder_2") if c not in r]
    if pixel_ae is None and "vae" not in r:
      missing.append("vae")
    if missing:
      raise errors.ConfigError(f"model.pretrained is empty and model.random_init lacks {missing}; "
                               "give SDXL weights (--config.model.pretrained=PATH) or random "
                               "shapes for every component")
    as_dict = lambda c: c.to_dict() if hasattr(c, "to_dict") else dict(c)
    unet_cfg = UNetConfig.from_diffusers(as_dict(r.unet))
    te_cfg = CLIPTextConfig.from_transformers(as_dict(r.text_encoder), False)
    te2_cfg = CLIPTextConfig.from_transformers(as_dict(r.text_encoder_2), True)
    seed = int(m.random_init_seed)
    draw = ((lambda shapes, _: shapes) if abstract else sdxl_pipeline.random_params)
    host = {"text_encoder": draw(cclip.text_param_shapes(te_cfg), seed),
            "text_encoder_2": draw(cclip.text_param_shapes(te2_cfg), seed + 1)}
    if pixel_ae is None:
      vae_cfg = VAEConfig.from_diffusers(as_dict(r.vae))
      vae = AutoencoderKL(vae_cfg, dtype=dt, **kw)
      host["vae"] = draw(diffusers_sdxl.vae_abstract_params(vae_cfg), seed + 2)
    else:
      vae, host["vae"] = pixel_ae, {}
    toks = _tokenizers(config)
    start = None
  for tok, te, name in ((toks[0], te_cfg, "text_encoder"), (toks[1], te2_cfg, "text_encoder_2")):
    _check_tokenizer(tok, te, name)
  if te2_cfg.projection_dim is None:
    raise errors.ConfigError("text_encoder_2 needs a text projection (SDXL's pooled embedding)")
  unet = UNet2DConditionModel(unet_cfg, dtype=dt, remat=str(m.remat), **kw)
  frozen = {c: host[c] for c in COMPONENTS if c not in parts and c in host}
  return Components(
      unet=unet, vae=vae,
      text_encoder=CLIPTextModel(te_cfg, dtype=dt, **kw),
      text_encoder_2=CLIPTextModel(te2_cfg, dtype=dt, **kw),
      tokenizer=toks[0], tokenizer_2=toks[1], frozen=frozen, pretrained=start,
      train_parts=parts, scheduler_config=training.scheduler_config(config.diffusion))


def grid_size(config) -> int:
  """The grid side 2R."""
  return 2 * int(config.grid.view_resolution)


def sampling_pipeline(comps: Components, trained_params) -> Any:
  """A `sampling.Pipeline` of the components with `trained_params` (e.g. the EMA) in place of
  the trained parts."""
  from instant3d_jax.diffusion import sampling
  params = dict(comps.frozen, **trained_params)
  return sampling.Pipeline(
      unet=comps.unet, vae=comps.vae, text_encoder=comps.text_encoder,
      text_encoder_2=comps.text_encoder_2, params=params, tokenizer=comps.tokenizer,
      tokenizer_2=comps.tokenizer_2, scheduler_config=comps.scheduler_config)
