"""Building blocks shared by every model family: logically-partitioned dense/norm/conv layers and
the one attention entry point.

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
accelerators); norms and the attention softmax run in fp32.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
ATTENTION_IMPLEMENTATIONS = ("xla", "cudnn")


def partitioned(init: Callable, axes: Sequence[str | None]) -> Callable:
  """An initializer whose parameter carries logical axis names (`nn.LogicallyPartitioned`)."""
  return nn.with_logical_partitioning(init, tuple(axes))


CONV_KERNEL_AXES = (None, None, "conv_in", "conv_out")


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """Logical sharding constraint on an activation (no-op outside a mesh / rules context)."""
  return nn.with_logical_constraint(x, tuple(axes))


def dense(features: int, axes: Sequence[str | None], *, use_bias: bool = True,
          dtype: Dtype = jnp.float32, kernel_init: Callable = nn.initializers.lecun_normal(),
          bias_init: Callable = nn.initializers.zeros, name: str | None = None) -> nn.Dense:
  """`nn.Dense` whose kernel has logical axes `axes` (in, out) and bias `(axes[-1],)`."""
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


def group_norm(num_groups: int, *, epsilon: float = 1e-5, name: str | None = None) -> nn.GroupNorm:
  """GroupNorm over the channel (last) axis, in fp32, as torch.nn.GroupNorm."""
  return nn.GroupNorm(num_groups=num_groups, epsilon=epsilon, dtype=jnp.float32,
                      param_dtype=jnp.float32,
                      scale_init=partitioned(nn.initializers.ones, ("norm",)),
                      bias_init=partitioned(nn.initializers.zeros, ("norm",)), name=name)


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array, *,
                          bias: jax.Array | None = None, mask: jax.Array | None = None,
                          scale: float | None = None, implementation: str = "xla") -> jax.Array:
  """Multi-head attention core. `query [B, Lq, H, D]`, `key/value [B, Lk, H, D]` → `[B, Lq, H, D]`.

  One entry point so every model switches together between XLA's fused attention (`"xla"`, the
  default and what fp32 parity tests use) and cuDNN flash attention (`"cudnn"`, GPU, bf16/fp16
  only). `bias` broadcasts to `[B, H, Lq, Lk]`; `mask` is boolean, True = attend.
  """
  if implementation not in ATTENTION_IMPLEMENTATIONS:
    raise ValueError(f"attention implementation must be one of {ATTENTION_IMPLEMENTATIONS}, "
                     f"got {implementation!r}")
  if implementation == "cudnn" and query.dtype not in (jnp.bfloat16, jnp.float16):
    raise ValueError("attention implementation 'cudnn' needs bf16/fp16 inputs, got "
                     f"{query.dtype}; set the model's compute dtype to bfloat16 or use 'xla'")
  return jax.nn.dot_product_attention(query, key, value, bias=bias, mask=mask, scale=scale,
                                      implementation=implementation)
