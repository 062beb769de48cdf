"""Building blocks shared by every model family: logically-partitioned dense/norm/conv layers,
the one attention entry point (`dot_product_attention`, with its named XLA formulations), and
the convolution blocks the diffusers UNet and VAE share (`conv2d`, `ResnetBlock2D`,
`Upsample2D`).

Sharding: layers name *logical* axes only (docs/design.md §3). Parameters use
`embed, mlp, heads, head_dim, vocab, conv_in, conv_out, conv_kernel, norm, planes, modulation`;
activations `batch, views, length, height, width, act_embed, act_heads`. The config maps them to
mesh axes (`logical_axis_rules`); without rules in scope the annotations are no-ops, so the same
modules run unsharded on one CPU.
Spatial conv-kernel dimensions are left unnamed (`None`): flax rejects a logical name that occurs
twice in one spec (`('conv_kernel', 'conv_kernel', …)` fails in `logical_to_mesh_sharding`), and
3×3 kernels are never worth sharding. Conv kernels are `(None, None, 'conv_in', 'conv_out')`.
Activation constraints take effect under `jax.set_mesh(mesh)` (the legacy `with mesh:` context
does not apply them).

Precision: parameters are created in `param_dtype` (fp32), compute runs in `dtype` (bf16 on
accelerators); norms and the attention softmax run in fp32. `DTYPES` maps the config's dtype
names to JAX dtypes (`compute_dtype`).

Initialisers (issue 17): every module initialises as the PyTorch module it mirrors does when
built fresh. `torch_linear_init` / `torch_conv_init` / `torch_conv_transpose_init` give torch's
`nn.Linear` / `nn.Conv2d` / `nn.ConvTranspose2d` defaults (kernel and bias uniform in
±1/√fan_in) and are `dense`'s default; `normal_init` is transformers' Linear scheme and
`xavier_uniform_init` torch `nn.MultiheadAttention`'s projections. Norms start at ones/zeros.

Also here, so every model family uses the same one: `GroupNorm` (the fast NHWC formulation),
the remat policies (`remat_policy`, `maybe_remat`), the adaLN `modulate` and `count_params`.
"""
from __future__ import annotations

from instant3d_jax import errors

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any
ATTENTION_IMPLEMENTATIONS = ("xla", "cudnn")  # a config's `attention_impl`
# How the "xla" implementation writes the math (`dot_product_attention`; chosen per model).
XLA_FORMULATIONS = ("jax_nn", "heads_major")
# Activation axes of NHWC feature maps (UNet, VAE).
IMAGE_ACT_AXES = ("batch", "height", "width", "act_embed")
# Config dtype names → JAX dtypes (`model.dtype` of the LRM config, the SDXL compute dtype).
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: str, what: str = "dtype") -> Dtype:
  """`DTYPES[name]`; `what` names the config field in the error (e.g. 'model.dtype')."""
  if name not in DTYPES:
    raise ValueError(f"{what} must be one of {sorted(DTYPES)}, got {name!r}")
  return DTYPES[name]


def partitioned(init: Callable, axes: Sequence[str | None]) -> Callable:
  """An initializer whose parameter carries logical axis names (`nn.LogicallyPartitioned`)."""
  return nn.with_logical_partitioning(init, tuple(axes))


CONV_KERNEL_AXES = (None, None, "conv_in", "conv_out")


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """Logical sharding constraint on an activation (no-op outside a mesh / rules context)."""
  return nn.with_logical_constraint(x, tuple(axes))


def _torch_uniform_pair(fan_in_of: Callable[[tuple], int]) -> tuple[Callable, Callable]:
  """(kernel_init, bias_init): kernel and bias uniform in ±1/√fan_in, fan_in from the kernel.

  torch's `reset_parameters` of `nn.Linear`/`nn.Conv2d`/`nn.ConvTranspose2d`: the kernel is
  `kaiming_uniform_(a=√5)`, i.e. bound = gain·√(3/fan_in) with gain = √(2/(1 + a²)) = √(1/3),
  so bound = 1/√fan_in; the bias is uniform in ±1/√fan_in with the same fan_in. A flax bias
  initialiser only sees the bias shape `[out]`, so the kernel initialiser records the fan-in it
  computed and the bias initialiser of the same pair reads it: use a pair on one layer only
  (flax's Dense/Conv/ConvTranspose create the kernel before the bias).
  """
  fan = {}

  def kernel_init(key, shape, dtype=jnp.float32):
    fan["in"] = fan_in_of(tuple(shape))
    bound = 1.0 / np.sqrt(fan["in"])
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  def bias_init(key, shape, dtype=jnp.float32):
    if "in" not in fan:
      raise RuntimeError("torch-style bias_init ran before its kernel_init: the pair must be "
                         "used on one layer that creates its kernel first (nn.Dense, nn.Conv)")
    bound = 1.0 / np.sqrt(fan["in"])
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return kernel_init, bias_init


def torch_linear_init() -> tuple[Callable, Callable]:
  """(kernel_init, bias_init) of a fresh `torch.nn.Linear` for a flax `nn.Dense` kernel
  `[in, out]`: kernel and bias uniform in ±1/√in_features (see `_torch_uniform_pair`)."""
  return _torch_uniform_pair(lambda shape: int(np.prod(shape[:-1])))


def torch_conv_init() -> tuple[Callable, Callable]:
  """(kernel_init, bias_init) of a fresh `torch.nn.Conv2d` for a flax `nn.Conv` kernel
  `[kh, kw, in, out]`: kernel and bias uniform in ±1/√(in·kh·kw)."""
  return _torch_uniform_pair(lambda shape: int(np.prod(shape[:-1])))


def torch_conv_transpose_init() -> tuple[Callable, Callable]:
  """(kernel_init, bias_init) of a fresh `torch.nn.ConvTranspose2d` for a flax `nn.ConvTranspose`
  kernel `[kh, kw, in, out]`. torch computes the fan-in from its weight `[in, out, kh, kw]` as
  `weight.size(1)·kh·kw`, i.e. from the *output* channels (a torch quirk, kept): bound
  1/√(out·kh·kw)."""
  return _torch_uniform_pair(lambda shape: int(np.prod(shape[:-2])) * int(shape[-1]))


def normal_init(std: float) -> tuple[Callable, Callable]:
  """(kernel_init, bias_init) = (normal(std), zeros): transformers' `_init_weights` for
  Linear/Conv (`normal_(std)` on the weight, `zeros_` on the bias)."""
  return nn.initializers.normal(std), nn.initializers.zeros


def xavier_uniform_init(fan_in: int, fan_out: int) -> Callable:
  """`torch.nn.init.xavier_uniform_` of a tensor whose fans are (fan_in, fan_out): uniform in
  ±√(6/(fan_in + fan_out)). The fans are explicit because torch's `nn.MultiheadAttention` draws
  the packed `in_proj_weight [3D, D]` (fan_out 3D) when the q/k/v projections are one tensor."""
  bound = float(np.sqrt(6.0 / (fan_in + fan_out)))

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def dense(features: int, axes: Sequence[str | None], *, use_bias: bool = True,
          dtype: Dtype = jnp.float32, kernel_init: Callable | None = None,
          bias_init: Callable | None = None, name: str | None = None) -> nn.Dense:
  """`nn.Dense` whose kernel has logical axes `axes` (in, out) and bias `(axes[-1],)`.

  Initialisers default to a fresh `torch.nn.Linear`'s (`torch_linear_init`: the project mirrors
  PyTorch modules, whose default init is what their training recipes assume); a model family
  with its own scheme (transformers' `_init_weights`) passes both."""
  if (kernel_init is None) != (bias_init is None):
    raise ValueError("layers.dense takes both kernel_init and bias_init or neither (the "
                     "default pair is torch_linear_init())")
  if kernel_init is None:
    kernel_init, bias_init = torch_linear_init()
  return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
                  kernel_init=partitioned(kernel_init, axes),
                  bias_init=partitioned(bias_init, (axes[-1],)), name=name)


def layer_norm(*, epsilon: float = 1e-6, use_scale: bool = True, use_bias: bool = True,
               name: str | None = None) -> nn.LayerNorm:
  """LayerNorm computed in fp32 (output fp32; the caller casts), params on the `norm` axis."""
  return nn.LayerNorm(epsilon=epsilon, use_scale=use_scale, use_bias=use_bias,
                      dtype=jnp.float32, param_dtype=jnp.float32,
                      scale_init=partitioned(nn.initializers.ones, ("norm",)),
                      bias_init=partitioned(nn.initializers.zeros, ("norm",)), name=name)


class GroupNorm(nn.Module):
  """`torch.nn.GroupNorm` over the channel (last) axis in fp32 (output fp32; the caller casts);
  parameters `scale`, `bias` `[C]` on the `norm` axis, as `nn.GroupNorm`'s.

  Statistics are per-channel sums over the contiguous spatial axis, combined per group, and the
  normalisation is folded into one per-(image, channel) multiply-add; `nn.GroupNorm` reduces over
  a [B, HW, G, C/G] view and normalises in two steps, which measured ~2× slower at 32²×64 on
  XLA:CPU (bench/bench_unet.py; fp32 result within 2e-6 of it; both use the one-pass
  E[x²] − E[x]² variance).
  """
  num_groups: int
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    if c % self.num_groups:
      raise ValueError(f"GroupNorm: {c} channels are not divisible into {self.num_groups} groups")
    scale = self.param("scale", partitioned(nn.initializers.ones, ("norm",)), (c,), jnp.float32)
    bias = self.param("bias", partitioned(nn.initializers.zeros, ("norm",)), (c,), jnp.float32)
    b, g = x.shape[0], self.num_groups
    xf = x.astype(jnp.float32).reshape(b, -1, c)
    n = xf.shape[1] * (c // g)
    mean = xf.sum(1).reshape(b, g, -1).sum(-1) / n                        # [B, G]
    var = jnp.maximum(jnp.square(xf).sum(1).reshape(b, g, -1).sum(-1) / n - mean * mean, 0.0)
    a = jnp.repeat(jax.lax.rsqrt(var + self.epsilon), c // g, axis=1) * scale    # [B, C]
    shift = bias - jnp.repeat(mean, c // g, axis=1) * a
    return (xf * a[:, None, :] + shift[:, None, :]).reshape(x.shape)


def group_norm(num_groups: int, *, epsilon: float = 1e-5, name: str | None = None) -> GroupNorm:
  """`GroupNorm(num_groups, epsilon)` (the UNet/VAE norms)."""
  return GroupNorm(num_groups, epsilon, name=name)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
  """adaLN / ModLN: `x [B, L, D]`, `shift/scale [B, D]` → `x·(1 + scale) + shift`."""
  return x * (1 + scale[:, None, :]) + shift[:, None, :]


def remat_policy(name: str | None) -> Callable | None:
  """A `jax.checkpoint_policies` entry by name; None/'none' = no remat, 'full' = recompute all."""
  if name in (None, "none"):
    return None
  if name == "full":
    return jax.checkpoint_policies.nothing_saveable
  policy = getattr(jax.checkpoint_policies, name, None)
  if policy is None:
    raise errors.ConfigError(f"remat policy {name!r} is not 'none', 'full' or a name in "
                     "jax.checkpoint_policies (e.g. 'nothing_saveable', "
                     "'dots_with_no_batch_dims_saveable')")
  return policy


def maybe_remat(cls, remat: str | None):
  """`cls` wrapped in `nn.remat` with `remat_policy(remat)`; `cls` itself for None/'none'."""
  policy = remat_policy(remat)
  return cls if policy is None else nn.remat(cls, policy=policy)


def count_params(tree) -> int:
  """Total number of parameters of a (possibly boxed, possibly abstract) parameter tree."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nn.meta.unbox(tree))))


def check_cudnn_backend(backend: str | None = None) -> None:
  """Raises `ConfigError` unless `backend` (default: JAX's default backend) is a CUDA GPU, the
  only one with cuDNN flash attention; there is no silent fallback to 'xla'."""
  backend = jax.default_backend() if backend is None else backend
  if backend not in ("gpu", "cuda"):
    raise errors.ConfigError(f"attention implementation 'cudnn' needs a CUDA GPU backend (cuDNN "
                             f"flash attention), but JAX's backend is {backend!r}; set the "
                             "model's attention_impl to 'xla' on this machine")


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array, *,
                          bias: jax.Array | None = None, mask: jax.Array | None = None,
                          scale: float | None = None, implementation: str = "xla",
                          xla_formulation: str = "jax_nn") -> jax.Array:
  """Multi-head attention core. `query [B, Lq, H, D]`, `key/value [B, Lk, H, D]` → `[B, Lq, H, D]`.

  The one attention entry point, so every model switches together between XLA (`"xla"`, the
  default and what fp32 parity tests use) and cuDNN flash attention (`"cudnn"`, GPU, bf16/fp16
  only): `implementation` is the config's `attention_impl`. Under "xla", `xla_formulation`
  names how the math is written (`XLA_FORMULATIONS`), a per-model choice that configs do not
  see: "jax_nn" is `jax.nn.dot_product_attention` (ViT, LRM, CLIP), "heads_major" the UNet/VAE's
  (`_heads_major_attention`, measured faster there). `bias` broadcasts to `[B, H, Lq, Lk]`;
  `mask` is boolean, True = attend ("jax_nn" and "cudnn" only).
  """
  if implementation not in ATTENTION_IMPLEMENTATIONS:
    raise errors.ConfigError(f"attention implementation must be one of {ATTENTION_IMPLEMENTATIONS}, "
                     f"got {implementation!r}")
  if xla_formulation not in XLA_FORMULATIONS:
    raise errors.ConfigError(f"XLA attention formulation must be one of {XLA_FORMULATIONS}, got "
                             f"{xla_formulation!r}")
  if implementation == "cudnn":
    check_cudnn_backend()
    if query.dtype not in (jnp.bfloat16, jnp.float16):
      raise errors.ConfigError("attention implementation 'cudnn' needs bf16/fp16 inputs, got "
                       f"{query.dtype}; set the model's compute dtype to bfloat16 or use 'xla'")
  elif xla_formulation == "heads_major":
    if bias is not None or mask is not None:
      raise ValueError("the 'heads_major' attention formulation takes no bias or mask")
    return _heads_major_attention(query, key, value, scale)
  return jax.nn.dot_product_attention(query, key, value, bias=bias, mask=mask, scale=scale,
                                      implementation=implementation)


def _heads_major_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                           scale: float | None = None) -> jax.Array:
  """Softmax attention `q [B, Lq, H, D]`, `k/v [B, Lk, H, D]` → `[B, Lq, H, D]`, written for
  XLA:CPU: heads-major matmuls, the scale (default 1/√D) folded into q, and the softmax
  normalisation applied after the PV matmul (on [Lq, D], not [Lq, Lk]). ~3.5× faster than
  `jax.nn.dot_product_attention` for the 1024-token self-attention of a 32² SDXL latent
  (measured: the [B, H, Lq, Lk] elementwise passes and layout copies of the stock path dominated
  the whole UNet step); logits, exp and the normaliser stay fp32 (docs/design.md §3).
  """
  dt = q.dtype
  scale = q.shape[-1] ** -0.5 if scale is None else scale
  q = jnp.swapaxes(q * jnp.asarray(scale, dt), 1, 2)
  k, v = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)
  logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
  p = jnp.exp(logits - jax.lax.stop_gradient(logits.max(-1, keepdims=True)))
  o = jnp.einsum("bhqk,bhkd->bhqd", p.astype(dt), v, preferred_element_type=jnp.float32)
  o = o / p.sum(-1, keepdims=True)
  return jnp.swapaxes(o, 1, 2).astype(dt)


# ---------------------------------------------------------------------------------------------
# Convolution blocks of the diffusers UNet and VAE (models/unet.py, models/vae.py)


def conv2d(features: int, kernel: int = 3, stride: int = 1, padding: Any = "SAME_TORCH", *,
           dtype: Dtype = jnp.float32, name: str | None = None) -> nn.Conv:
  """`torch.nn.Conv2d(k, stride, padding=k//2)` in NHWC with HWIO kernel on the conv axes.

  Initialised as a fresh torch `Conv2d` (`torch_conv_init`): diffusers' UNet and VAE keep
  torch's module defaults (no `_init_weights`), as do their `nn.Linear`s (`layers.dense`'s
  default) and norms (ones/zeros)."""
  if padding == "SAME_TORCH":
    padding = ((kernel // 2, kernel // 2),) * 2
  kernel_init, bias_init = torch_conv_init()
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=padding,
                 dtype=dtype, param_dtype=jnp.float32,
                 kernel_init=partitioned(kernel_init, CONV_KERNEL_AXES),
                 bias_init=partitioned(bias_init, ("conv_out",)), name=name)


class ResnetBlock2D(nn.Module):
  """diffusers `ResnetBlock2D` (time shift 'default', output scale 1). `x [B,h,w,C]`."""
  out_channels: int
  groups: int
  eps: float
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, temb=None):
    h = group_norm(self.groups, epsilon=self.eps, name="norm1")(x)
    h = conv2d(self.out_channels, dtype=self.dtype, name="conv1")(nn.silu(h).astype(self.dtype))
    if temb is not None:
      t = dense(self.out_channels, ("embed", "conv_out"), dtype=self.dtype,
                       name="time_emb_proj")(nn.silu(temb))
      h = h + t[:, None, None, :]
    h = group_norm(self.groups, epsilon=self.eps, name="norm2")(h)
    h = conv2d(self.out_channels, dtype=self.dtype, name="conv2")(nn.silu(h).astype(self.dtype))
    if x.shape[-1] != self.out_channels:
      x = conv2d(self.out_channels, 1, padding="VALID", dtype=self.dtype,
                 name="conv_shortcut")(x.astype(self.dtype))
    return (x + h).astype(self.dtype)


def _nearest_indices(size_in: int, size_out: int) -> np.ndarray:
  """PyTorch `interpolate(size=..., mode='nearest')` source rows: min(floor(i · in/out), in − 1)
  with the scale in float32, as ATen's `nearest_idx` computes it."""
  scale = np.float32(size_in) / np.float32(size_out)
  idx = np.floor(np.arange(size_out, dtype=np.float32) * scale).astype(np.int64)
  return np.minimum(idx, size_in - 1)


class Upsample2D(nn.Module):
  """Nearest ×2 (or to `output_size`, as diffusers passes the skip's size when the latent sides
  are not divisible by 2^(levels−1)) then 3×3 conv (diffusers `Upsample2D`)."""
  out_channels: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, output_size: tuple[int, int] | None = None):
    b, h, w, c = x.shape
    if output_size is None or tuple(output_size) == (2 * h, 2 * w):
      x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(
          b, 2 * h, 2 * w, c)
    else:
      oh, ow = output_size
      x = jnp.take(jnp.take(x, _nearest_indices(h, oh), axis=1), _nearest_indices(w, ow), axis=2)
    return conv2d(self.out_channels, 3, dtype=self.dtype, name="conv")(x)
