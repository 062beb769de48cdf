"""Parameter table and analytic FLOPs of the reconstructor (the command that prints them:
`python -m instant3d_jax.models.summary`, models/summary.py).

Parameter counts come from `jax.eval_shape` of the model's init (nothing is allocated, so the
500M model is summarised in a second on a laptop). FLOPs are analytic, per layer, 2 per
multiply-accumulate of every matmul/convolution (dense layers, attention scores and values,
patch embedding, transposed conv); element-wise work (norms, softmax, activations, the
triplane lookup) is not counted, as in the usual MFU convention. XLA's cost analysis is no
substitute: it counts a `scan`/`fori_loop` body once and custom calls (cuDNN attention) not at
all; tests cross-check these formulas against it on an unrolled tiny model only.

`lrm_forward_flops(config, batch)` (images → planes) and `render_flops(config, num_rays)` (NeRF
MLP on every sample) are what the trainer uses for TFLOP/s and MFU; a training step is ≈3× the
forward (forward + backward). `format_summary(config, batch)` is the command's table.
"""
from __future__ import annotations

import re
from collections import OrderedDict

import flax.linen as nn
import numpy as np
from flax import traverse_util

from instant3d_jax.models import lrm as lrm_lib


def param_table(mcfg) -> "OrderedDict[str, tuple[int, int]]":
  """Rows `group -> (number of tensors, parameters)`; blocks of a stack are merged (`layer_*`)."""
  shapes = traverse_util.flatten_dict(nn.meta.unbox(lrm_lib.abstract_params(mcfg)), sep="/")
  rows: OrderedDict[str, list[int]] = OrderedDict()
  for path, leaf in shapes.items():
    parts = re.sub(r"(layer|block)_\d+", r"\1_*", path).split("/")
    # encoder/layer_*/query/kernel → "encoder/layer_*/query"; tensors that are not a layer's
    # kernel/bias/scale (tokens, position embeddings, attention biases) keep their own name.
    layer_leaf = parts[-1] in ("kernel", "bias", "scale", "lambda1")
    key = "/".join(parts[:-1]) if layer_leaf and len(parts) > 1 else "/".join(parts)
    row = rows.setdefault(key, [0, 0])
    row[0] += 1
    row[1] += int(np.prod(leaf.shape))
  return OrderedDict((k, (v[0], v[1])) for k, v in rows.items())


def count_params(mcfg) -> int:
  return sum(n for _, n in param_table(mcfg).values())


def _attention_flops(lq: int, lk: int, d: int) -> int:
  """Scores QKᵀ and the weighted sum of V: 2·(2·Lq·Lk·D)."""
  return 4 * lq * lk * d


def lrm_forward_flops(config, batch: int = 1, breakdown: bool = False):
  """Analytic forward FLOPs of images → planes for `batch` objects (see module docstring)."""
  m = lrm_lib.LRMConfig.from_config(config)
  e, dc, tc = m.encoder, m.decoder, m.triplane
  V, res, p = m.num_views, m.input_resolution, e.patch_size
  n_patch = (res // p) ** 2
  L = 1 + e.num_register_tokens + n_patch
  De, E = e.hidden_size, m.camera_embed_dim
  c_in = 3 + (lrm_lib.PLUCKER_CHANNELS if m.extras.plucker_rays else 0)
  mlp_e = e.mlp_dim

  camera = V * 2 * (16 * E + E * E)
  enc_block = 2 * L * De * De * 4 + _attention_flops(L, L, De) + 2 * 2 * L * De * mlp_e
  if m.encoder_modulation:
    enc_block += 2 * E * 4 * De
  encoder = V * (2 * n_patch * p * p * c_in * De + e.num_layers * enc_block)

  D, T, C = dc.hidden_size, tc.token_resolution, tc.channels
  lq, lk = 3 * T * T, V * L
  cross = 2 * lq * D * D * 2 + 2 * lk * De * D * 2 + _attention_flops(lq, lk, D)
  self_attn = 2 * lq * D * D * 4 + _attention_flops(lq, lq, D)
  mlp = 2 * 2 * lq * D * D * dc.mlp_ratio
  mod = 2 * E * 6 * D if m.decoder_modulation else 0
  decoder = dc.num_layers * (cross + self_attn + mlp + mod)
  u = m.triplane.upsample
  upsampler = 2 * lq * D * u * u * C
  parts = OrderedDict(camera_embedder=camera, encoder=encoder, decoder=decoder,
                      upsampler=upsampler)
  parts = OrderedDict((k, batch * v) for k, v in parts.items())
  total = sum(parts.values())
  return (total, parts) if breakdown else total


def nerf_flops_per_sample(config) -> int:
  """NeRF MLP FLOPs for one sample point (3C [+ 4 voxel channels] → hidden → … → 4)."""
  m = lrm_lib.LRMConfig.from_config(config)
  n, c_in = m.nerf, m.mlp_input_channels
  h = n.hidden
  return 2 * (c_in * h + (n.num_layers - 2) * h * h + h * 4)


def render_flops(config, num_rays: int, num_samples: int | None = None,
                 num_importance: int | None = None) -> int:
  """NeRF MLP FLOPs of rendering `num_rays` rays (the field is evaluated once per sample)."""
  m = lrm_lib.LRMConfig.from_config(config)
  s = (m.render.num_samples if num_samples is None else num_samples) + \
      (m.render.num_importance if num_importance is None else num_importance)
  return num_rays * s * nerf_flops_per_sample(m)


def format_summary(config, batch: int = 1) -> str:
  m = lrm_lib.LRMConfig.from_config(config)
  table = param_table(m)
  total = sum(n for _, n in table.values())
  width = max(len(k) for k in table) + 2
  lines = [f"LRM parameters ({m.encoder.preset} encoder, {m.num_views} views of "
           f"{m.input_resolution}², decoder {m.decoder.num_layers} × {m.decoder.hidden_size}, "
           f"planes 3 × {m.plane_resolution}² × {m.triplane.channels})",
           f"{'module':<{width}}{'tensors':>8}{'params':>14}{'share':>8}"]
  for k, (nt, n) in table.items():
    lines.append(f"{k:<{width}}{nt:>8}{n:>14,}{100 * n / total:>7.2f}%")
  tops: OrderedDict[str, int] = OrderedDict()
  for k, (_, n) in table.items():
    tops[k.split("/")[0]] = tops.get(k.split("/")[0], 0) + n
  lines.append("")
  for k, n in tops.items():
    lines.append(f"{k:<{width}}{'':>8}{n:>14,}{100 * n / total:>7.2f}%")
  lines.append(f"{'total':<{width}}{'':>8}{total:>14,}  ({total / 1e6:.1f}M)")
  fl, parts = lrm_forward_flops(m, batch, breakdown=True)
  lines.append("")
  lines.append(f"forward FLOPs (analytic, images → planes, batch {batch}):")
  for k, v in parts.items():
    lines.append(f"  {k:<18}{v / 1e9:>12.1f} GFLOP")
  lines.append(f"  {'total':<18}{fl / 1e9:>12.1f} GFLOP")
  res = m.input_resolution
  rf = render_flops(m, res * res)
  lines.append(f"render FLOPs (NeRF MLP, one {res}² image, "
               f"{m.render.num_samples}+{m.render.num_importance} samples/ray): "
               f"{rf / 1e9:.1f} GFLOP")
  return "\n".join(lines)
