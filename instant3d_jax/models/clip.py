"""CLIP text and vision transformers (transformers' `CLIPTextModel[WithProjection]` and
`CLIPVisionModel[WithProjection]`), as used by SDXL and by CLIP-score evaluation.

SDXL conditions on two text encoders:
- CLIP ViT-L/14 (`text_encoder/`, `CLIPTextModel`, quick_gelu): the *penultimate* hidden state
  (`hidden_states[-2]`, before the final layer norm) is the 768-d context;
- OpenCLIP bigG/14 (`text_encoder_2/`, `CLIPTextModelWithProjection`, gelu): penultimate hidden
  state (1280-d context) and the projected pooled output at the EOS token (1280-d `text_embeds`).
The two contexts are concatenated to the UNet's 2048-d cross-attention input.

Parameter names mirror the transformers module tree (`layers_3/self_attn/q_proj/kernel` ↔
`encoder.layers.3.self_attn.q_proj.weight`), so `convert/clip.py` is a key-by-key map.
Inputs: `input_ids [B, L] int32` (L ≤ max_position_embeddings); `pixel_values [B, H, W, 3]`
normalised with the CLIP mean/std (NHWC; `preprocess_images` does that from [0, 1] images).

Fresh parameters follow transformers' `CLIPPreTrainedModel._init_weights` (what
`CLIPTextModel(config)` holds after `post_init()`): token/position embeddings
N(0, 0.02·factor) (vision: class embedding N(0, D^-½·factor), patch and position embeddings
N(0, initializer_range·factor)), the per-layer scales of `CLIPAttention`/`CLIPMLP`, projections
N(0, D^-½·factor), zero biases, LayerNorms ones/zeros (tests/test_init.py compares them).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from instant3d_jax.models import layers

Dtype = Any

# The CLIP image normalisation (openai/clip-vit-*, preprocessor_config.json).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def quick_gelu(x):
  """OpenAI CLIP's sigmoid approximation of GELU (transformers `quick_gelu`)."""
  return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # torch's exact (erf) gelu
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}


def _activation(name: str):
  if name not in ACTIVATIONS:
    raise ValueError(f"CLIP hidden_act must be one of {sorted(ACTIVATIONS)}, got {name!r}")
  return ACTIVATIONS[name]


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
  """Fields as in transformers' `CLIPTextConfig` (defaults: CLIP ViT-L/14 text tower)."""
  vocab_size: int = 49408
  hidden_size: int = 768
  intermediate_size: int = 3072
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  max_position_embeddings: int = 77
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5
  projection_dim: int | None = None  # None: no text_projection (CLIPTextModel)
  eos_token_id: int = 2  # 2 = legacy rule "EOS = argmax of the ids" (what SDXL's configs carry)
  initializer_range: float = 0.02   # fresh-init scales (transformers `_init_weights`; weights
  initializer_factor: float = 1.0   # read from a checkpoint replace them)

  @classmethod
  def from_transformers(cls, cfg: Mapping[str, Any], with_projection: bool | None = None
                        ) -> "CLIPTextConfig":
    """From a transformers config.json dict (a full `CLIPConfig` is accepted: its text part).

    `with_projection=None` decides from `architectures` (`...WithProjection` → projection)."""
    if "text_config" in cfg:
      cfg = {**cfg["text_config"], "projection_dim": cfg.get("projection_dim", 512)}
    if with_projection is None:
      with_projection = any("WithProjection" in a for a in cfg.get("architectures") or [])
    fields = {f.name for f in dataclasses.fields(cls)} - {"projection_dim"}
    kw = {k: cfg[k] for k in fields if k in cfg and cfg[k] is not None}
    return cls(**kw, projection_dim=int(cfg.get("projection_dim", 512)) if with_projection
               else None)


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
  """Fields as in transformers' `CLIPVisionConfig` (defaults: CLIP ViT-L/14 vision tower)."""
  hidden_size: int = 1024
  intermediate_size: int = 4096
  num_hidden_layers: int = 24
  num_attention_heads: int = 16
  num_channels: int = 3
  image_size: int = 224
  patch_size: int = 14
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5
  projection_dim: int | None = None  # None: no visual_projection (CLIPVisionModel)
  initializer_range: float = 0.02   # fresh-init scales (transformers `_init_weights`)
  initializer_factor: float = 1.0

  @classmethod
  def from_transformers(cls, cfg: Mapping[str, Any], with_projection: bool | None = None
                        ) -> "CLIPVisionConfig":
    if "vision_config" in cfg:
      cfg = {**cfg["vision_config"], "projection_dim": cfg.get("projection_dim", 512)}
    if with_projection is None:
      with_projection = any("WithProjection" in a for a in cfg.get("architectures") or [])
    fields = {f.name for f in dataclasses.fields(cls)} - {"projection_dim"}
    kw = {k: cfg[k] for k in fields if k in cfg and cfg[k] is not None}
    return cls(**kw, projection_dim=int(cfg.get("projection_dim", 512)) if with_projection
               else None)


class CLIPTextOutput(NamedTuple):
  last_hidden_state: jax.Array  # [B, L, D] after the final layer norm
  pooler_output: jax.Array  # [B, D] final-normed state at the EOS token
  hidden_states: tuple  # num_layers + 1 arrays [B, L, D]: embeddings, then each layer's output
  text_embeds: jax.Array | None  # [B, P] projected pooled output (WithProjection only)


class CLIPVisionOutput(NamedTuple):
  last_hidden_state: jax.Array  # [B, 1 + N, D] (no post norm, as transformers)
  pooler_output: jax.Array  # [B, D] post-normed class token
  hidden_states: tuple
  image_embeds: jax.Array | None  # [B, P] (WithProjection only)


def _normal(std: float) -> dict:
  """`layers.dense` initialiser kwargs N(0, std) / zeros (transformers' CLIP `_init_weights`)."""
  kernel_init, bias_init = layers.normal_init(std)
  return dict(kernel_init=kernel_init, bias_init=bias_init)


class CLIPAttention(nn.Module):
  """Multi-head self-attention with separate q/k/v/out projections (transformers layout).

  Fresh init as transformers' `CLIPPreTrainedModel._init_weights`: q/k/v weights
  N(0, D^-½·(2·num_layers)^-½·factor), out N(0, D^-½·factor), biases zero."""
  hidden_size: int
  num_heads: int
  dtype: Dtype = jnp.float32
  attention_impl: str = "xla"
  num_layers: int = 1                # of the tower (scales the init only)
  init_factor: float = 1.0           # config `initializer_factor`

  @nn.compact
  def __call__(self, x, mask=None):
    b, l, d = x.shape
    head_dim = d // self.num_heads
    in_std = d ** -0.5 * (2 * self.num_layers) ** -0.5 * self.init_factor
    proj = lambda name: layers.dense(d, ("embed", "heads"), dtype=self.dtype, name=name,
                                     **_normal(in_std))
    q, k, v = (proj(n)(x).reshape(b, l, self.num_heads, head_dim)
               for n in ("q_proj", "k_proj", "v_proj"))
    q = layers.constrain(q, ("batch", "length", "act_heads", None))
    out = layers.dot_product_attention(q, k, v, mask=mask, scale=head_dim ** -0.5,
                                       implementation=self.attention_impl)
    out = out.reshape(b, l, d)
    return layers.dense(d, ("heads", "embed"), dtype=self.dtype, name="out_proj",
                        **_normal(d ** -0.5 * self.init_factor))(out)


class CLIPMLP(nn.Module):
  """fc1 → activation → fc2. Fresh init (transformers): fc1 N(0, (2D)^-½·factor), fc2
  N(0, D^-½·(2·num_layers)^-½·factor), biases zero."""
  hidden_size: int
  intermediate_size: int
  hidden_act: str
  dtype: Dtype = jnp.float32
  num_layers: int = 1
  init_factor: float = 1.0

  @nn.compact
  def __call__(self, x):
    d, f = self.hidden_size, self.init_factor
    h = layers.dense(self.intermediate_size, ("embed", "mlp"), dtype=self.dtype, name="fc1",
                     **_normal((2 * d) ** -0.5 * f))(x)
    h = _activation(self.hidden_act)(h)
    h = layers.constrain(h, ("batch", "length", "mlp"))
    return layers.dense(self.hidden_size, ("mlp", "embed"), dtype=self.dtype, name="fc2",
                        **_normal(d ** -0.5 * (2 * self.num_layers) ** -0.5 * f))(h)


class CLIPEncoderLayer(nn.Module):
  """Pre-LN transformer block: x + attn(ln1(x)); x + mlp(ln2(x))."""
  hidden_size: int
  num_heads: int
  intermediate_size: int
  hidden_act: str
  layer_norm_eps: float
  dtype: Dtype = jnp.float32
  attention_impl: str = "xla"
  num_layers: int = 1                # of the tower (init scales only)
  init_factor: float = 1.0

  @nn.compact
  def __call__(self, x, mask=None):
    h = layers.layer_norm(epsilon=self.layer_norm_eps, name="layer_norm1")(x).astype(self.dtype)
    x = x + CLIPAttention(self.hidden_size, self.num_heads, self.dtype, self.attention_impl,
                          self.num_layers, self.init_factor, name="self_attn")(h, mask)
    h = layers.layer_norm(epsilon=self.layer_norm_eps, name="layer_norm2")(x).astype(self.dtype)
    x = x + CLIPMLP(self.hidden_size, self.intermediate_size, self.hidden_act, self.dtype,
                    self.num_layers, self.init_factor, name="mlp")(h)
    return layers.constrain(x, ("batch", "length", "act_embed"))


class CLIPEncoder(nn.Module):
  """The layer stack; returns the embeddings and every layer's output (`hidden_states`)."""
  hidden_size: int
  num_heads: int
  intermediate_size: int
  num_layers: int
  hidden_act: str
  layer_norm_eps: float
  dtype: Dtype = jnp.float32
  attention_impl: str = "xla"
  remat: bool = False
  init_factor: float = 1.0

  @nn.compact
  def __call__(self, x, mask=None):
    block = nn.remat(CLIPEncoderLayer) if self.remat else CLIPEncoderLayer
    hidden = [x]
    for i in range(self.num_layers):
      x = block(self.hidden_size, self.num_heads, self.intermediate_size, self.hidden_act,
                self.layer_norm_eps, self.dtype, self.attention_impl, self.num_layers,
                self.init_factor, name=f"layers_{i}")(x, mask)
      hidden.append(x)
    return tuple(hidden)


def _eos_positions(input_ids: jax.Array, eos_token_id: int) -> jax.Array:
  """Index of the pooled (EOS) token per sequence, with transformers' two rules.

  Configs written before transformers PR #24773 carry `eos_token_id = 2` (wrong for CLIP); for
  those the EOS is found as the largest id (the EOS token is the last vocabulary entry). Otherwise
  it is the first position equal to `eos_token_id` (pad may equal eos, hence *first*)."""
  if eos_token_id == 2:
    return jnp.argmax(input_ids, axis=-1)
  return jnp.argmax((input_ids == eos_token_id).astype(jnp.int32), axis=-1)


class CLIPTextModel(nn.Module):
  """CLIP text transformer (causal), with the optional `text_projection` head.

  `input_ids [B, L] int` → `CLIPTextOutput`. SDXL uses `hidden_states[-2]` as its context.
  """
  config: CLIPTextConfig
  dtype: Dtype = jnp.float32
  attention_impl: str = "xla"
  remat: bool = False

  @nn.compact
  def __call__(self, input_ids: jax.Array) -> CLIPTextOutput:
    cfg = self.config
    b, l = input_ids.shape
    if l > cfg.max_position_embeddings:
      raise ValueError(f"input_ids length {l} exceeds max_position_embeddings "
                       f"{cfg.max_position_embeddings}")
    d = cfg.hidden_size
    tok = nn.Embed(cfg.vocab_size, d, param_dtype=jnp.float32,
                   embedding_init=layers.partitioned(
                       nn.initializers.normal(0.02 * cfg.initializer_factor), ("vocab", "embed")),
                   name="token_embedding")
    pos = self.param("position_embedding",
                     layers.partitioned(nn.initializers.normal(0.02 * cfg.initializer_factor),
                                        (None, "embed")),
                     (cfg.max_position_embeddings, d), jnp.float32)
    x = (tok(input_ids) + pos[None, :l]).astype(self.dtype)
    x = layers.constrain(x, ("batch", "length", "act_embed"))
    causal = jnp.tril(jnp.ones((l, l), bool))[None, None]
    hidden = CLIPEncoder(d, cfg.num_attention_heads, cfg.intermediate_size, cfg.num_hidden_layers,
                         cfg.hidden_act, cfg.layer_norm_eps, self.dtype, self.attention_impl,
                         self.remat, cfg.initializer_factor, name="encoder")(x, causal)
    last = layers.layer_norm(epsilon=cfg.layer_norm_eps, name="final_layer_norm")(hidden[-1])
    pooled = last[jnp.arange(b), _eos_positions(input_ids, cfg.eos_token_id)]
    text_embeds = None
    if cfg.projection_dim is not None:
      text_embeds = layers.dense(cfg.projection_dim, ("embed", None), use_bias=False,
                                 dtype=self.dtype, name="text_projection",
                                 **_normal(d ** -0.5 * cfg.initializer_factor))(pooled.astype(self.dtype))
    return CLIPTextOutput(last, pooled, hidden, text_embeds)


class CLIPVisionModel(nn.Module):
  """CLIP ViT: patch embedding + class token, pre-LN, encoder, post-LN on the class token, and
  the optional `visual_projection`. `pixel_values [B, H, W, C]` (CLIP-normalised, NHWC)."""
  config: CLIPVisionConfig
  dtype: Dtype = jnp.float32
  attention_impl: str = "xla"
  remat: bool = False

  @nn.compact
  def __call__(self, pixel_values: jax.Array) -> CLIPVisionOutput:
    cfg = self.config
    b, h, w, c = pixel_values.shape
    if (h, w, c) != (cfg.image_size, cfg.image_size, cfg.num_channels):
      raise ValueError(f"pixel_values must be [B, {cfg.image_size}, {cfg.image_size}, "
                       f"{cfg.num_channels}] (NHWC), got {tuple(pixel_values.shape)}")
    d, p = cfg.hidden_size, cfg.patch_size
    patches = nn.Conv(d, (p, p), strides=(p, p), padding="VALID", use_bias=False,
                      dtype=self.dtype, param_dtype=jnp.float32,
                      kernel_init=layers.partitioned(
                          nn.initializers.normal(cfg.initializer_range * cfg.initializer_factor),
                          (None, None, "conv_in", "embed")),
                      name="patch_embedding")(pixel_values.astype(self.dtype))
    patches = patches.reshape(b, -1, d)
    cls = self.param("class_embedding",
                     layers.partitioned(nn.initializers.normal(d ** -0.5 * cfg.initializer_factor),
                                        ("embed",)), (d,), jnp.float32)
    num_pos = (cfg.image_size // p) ** 2 + 1
    pos = self.param("position_embedding",
                     layers.partitioned(
                         nn.initializers.normal(cfg.initializer_range * cfg.initializer_factor),
                         (None, "embed")), (num_pos, d), jnp.float32)
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (b, 1, d)), patches], axis=1)
    x = (x + pos[None].astype(self.dtype))
    x = layers.layer_norm(epsilon=cfg.layer_norm_eps, name="pre_layrnorm")(x).astype(self.dtype)
    x = layers.constrain(x, ("batch", "length", "act_embed"))
    hidden = CLIPEncoder(d, cfg.num_attention_heads, cfg.intermediate_size, cfg.num_hidden_layers,
                         cfg.hidden_act, cfg.layer_norm_eps, self.dtype, self.attention_impl,
                         self.remat, cfg.initializer_factor, name="encoder")(x)
    last = hidden[-1]
    pooled = layers.layer_norm(epsilon=cfg.layer_norm_eps, name="post_layernorm")(last[:, 0])
    image_embeds = None
    if cfg.projection_dim is not None:
      image_embeds = layers.dense(cfg.projection_dim, ("embed", None), use_bias=False,
                                  dtype=self.dtype, name="visual_projection",
                                  **_normal(d ** -0.5 * cfg.initializer_factor))(
                                      pooled.astype(self.dtype))
    return CLIPVisionOutput(last, pooled, hidden, image_embeds)


def preprocess_images(images: jax.Array, image_size: int) -> jax.Array:
  """`images [B, H, W, 3]` in [0, 1] → CLIP-normalised `[B, S, S, 3]` for `CLIPVisionModel`.

  Resizes the shorter side to `image_size` (bicubic with antialiasing) and centre-crops, as the
  CLIP image processor does; values differ slightly from its PIL resampling, which only matters
  for comparing CLIP scores across implementations, not within this project."""
  b, h, w, c = images.shape
  scale = image_size / min(h, w)
  nh, nw = max(image_size, round(h * scale)), max(image_size, round(w * scale))
  x = jax.image.resize(images.astype(jnp.float32), (b, nh, nw, c), "bicubic", antialias=True)
  top, left = (nh - image_size) // 2, (nw - image_size) // 2
  x = x[:, top:top + image_size, left:left + image_size]
  return (x - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)
