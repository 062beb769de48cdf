"""CLIP image–text similarity (×100) with the project's Flax CLIP, as transformers computes it.

`CLIPScorer.load(folder)` reads a transformers `CLIPModel` folder (config.json +
model.safetensors, the tokenizer files, optionally preprocessor_config.json; nothing is
downloaded) and scores images against prompts:

  score = 100 · cos(visual_projection(vision(pixels)), text_projection(text(ids)))

— the cosine of `CLIPModel`'s `image_embeds` and `text_embeds` (both L2-normalised), without
`logit_scale` (CLIP similarity as the text-to-3D papers report it; docs/paper_facts.md, "Text-to-3D
CLIP similarity"). tests/test_eval_text3d.py checks it against transformers' PyTorch `CLIPModel`
fed by its `CLIPImageProcessor`.

Image preprocessing is transformers' CLIP image processor (its PIL path) step by step, on the host:
uint8 RGB → shortest side resized to `size` with PIL (bicubic unless the config names another
`resample`; the long side `int(size · long / short)`), centre crop `crop_size` (top/left
`(H − h) // 2`; zero padding where the image is smaller), ×`rescale_factor` (in float64, then
float32), `(x − mean) / std` in float32. The settings come from the folder's
`preprocessor_config.json` when present, else the CLIP defaults (shortest side and crop = the
vision tower's `image_size`, OpenAI CLIP mean/std, bicubic). Float images in [0, 1] are first
rounded to uint8 as a saved PNG would be (export/images.py `to_uint8`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from instant3d_jax import errors
from instant3d_jax.convert import clip as convert_clip
from instant3d_jax.convert import safetensors_io as sio
from instant3d_jax.export import images as images_lib
from instant3d_jax.models import clip as clip_lib

PREPROCESSOR_FILE = "preprocessor_config.json"
PIL_BICUBIC = 3  # PIL.Image.Resampling.BICUBIC (transformers' PILImageResampling.BICUBIC)


def _pair(value, what: str, source: str) -> tuple[int, int]:
  """`crop_size` as (height, width): an int (square) or {"height", "width"}."""
  if isinstance(value, int):
    return value, value
  if isinstance(value, Mapping) and "height" in value and "width" in value:
    return int(value["height"]), int(value["width"])
  raise errors.WeightsError(f"{source}: {what} must be an int or {{'height', 'width'}}, got "
                            f"{value!r}")


@dataclasses.dataclass(frozen=True)
class ImageProcessor:
  """The settings of transformers' `CLIPImageProcessor` this module applies (see module doc).

  `shortest_edge` resizes the shorter side (aspect kept); otherwise `resize_hw` is the exact
  (height, width)."""
  shortest_edge: int | None = 224
  resize_hw: tuple[int, int] | None = None
  crop_hw: tuple[int, int] = (224, 224)
  resample: int = PIL_BICUBIC
  do_resize: bool = True
  do_center_crop: bool = True
  do_rescale: bool = True
  rescale_factor: float = 1 / 255
  do_normalize: bool = True
  image_mean: tuple[float, ...] = clip_lib.CLIP_MEAN
  image_std: tuple[float, ...] = clip_lib.CLIP_STD

  @classmethod
  def defaults(cls, image_size: int) -> "ImageProcessor":
    """The CLIP processor's defaults for a vision tower of `image_size` (224 for CLIP)."""
    return cls(shortest_edge=image_size, crop_hw=(image_size, image_size))

  @classmethod
  def from_config(cls, cfg: Mapping[str, Any], source: str = PREPROCESSOR_FILE
                  ) -> "ImageProcessor":
    """From a `preprocessor_config.json` dict (dict sizes, or the older plain ints)."""
    kw: dict[str, Any] = {}
    size = cfg.get("size", 224)
    if isinstance(size, int):  # CLIP's legacy int: the shortest edge (default_to_square=False)
      kw["shortest_edge"] = size
    elif isinstance(size, Mapping) and set(size) <= {"shortest_edge"} and size:
      kw["shortest_edge"] = int(size["shortest_edge"])
    elif isinstance(size, Mapping) and "height" in size and "width" in size:
      kw["shortest_edge"], kw["resize_hw"] = None, (int(size["height"]), int(size["width"]))
    else:
      raise errors.WeightsError(f"{source}: size must be an int, {{'shortest_edge'}} or "
                                f"{{'height', 'width'}}, got {size!r}")
    kw["crop_hw"] = _pair(cfg.get("crop_size", 224), "crop_size", source)
    for k in ("do_resize", "do_center_crop", "do_rescale", "do_normalize"):
      if cfg.get(k) is not None:
        kw[k] = bool(cfg[k])
    if cfg.get("resample") is not None:
      kw["resample"] = int(cfg["resample"])
    if cfg.get("rescale_factor") is not None:
      kw["rescale_factor"] = float(cfg["rescale_factor"])
    for k in ("image_mean", "image_std"):
      if cfg.get(k) is not None:
        v = cfg[k]
        kw[k] = tuple(float(x) for x in (v if isinstance(v, (list, tuple)) else [v] * 3))
        if len(kw[k]) != 3:
          raise errors.WeightsError(f"{source}: {k} must have 3 values (RGB), got {v!r}")
    return cls(**kw)

  @classmethod
  def from_folder(cls, folder: str | os.PathLike, image_size: int) -> "ImageProcessor":
    """`preprocessor_config.json` of `folder` when present, else `defaults(image_size)`."""
    path = Path(folder) / PREPROCESSOR_FILE
    if not path.is_file():
      return cls.defaults(image_size)
    try:
      cfg = json.loads(path.read_text())
    except ValueError as e:
      raise errors.WeightsError(f"{path} is not valid JSON: {e}") from e
    return cls.from_config(cfg, str(path))

  def output_hw(self, height: int, width: int) -> tuple[int, int]:
    if self.do_center_crop:
      return self.crop_hw
    return self.resized_hw(height, width) if self.do_resize else (height, width)

  def resized_hw(self, height: int, width: int) -> tuple[int, int]:
    """transformers `get_resize_output_image_size(..., default_to_square=False)`."""
    if self.resize_hw is not None:
      return self.resize_hw
    s = self.shortest_edge
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(s * long / short)
    return (new_long, s) if width <= height else (s, new_long)

  def __call__(self, images) -> np.ndarray:
    """`images [N, H, W, 3]` (uint8, or float in [0, 1]) → pixel values `[N, h, w, 3]` float32
    (NHWC, what `CLIPVisionModel` takes)."""
    images = images_lib.to_uint8(np.asarray(images))
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must be [N, H, W, 3] RGB, got shape {images.shape}")
    return np.stack([self._one(im) for im in images])

  def _one(self, img: np.ndarray) -> np.ndarray:
    x = img
    if self.do_resize:
      h, w = self.resized_hw(*x.shape[:2])
      x = np.asarray(Image.fromarray(x).resize((w, h), resample=self.resample))
    if self.do_center_crop:
      x = _center_crop(x, *self.crop_hw)
    if self.do_rescale:
      x = (x.astype(np.float64) * self.rescale_factor).astype(np.float32)
    else:
      x = x.astype(np.float32)
    if self.do_normalize:
      x = (x - np.asarray(self.image_mean, np.float32)) / np.asarray(self.image_std, np.float32)
    return x


def _center_crop(x: np.ndarray, ch: int, cw: int) -> np.ndarray:
  """transformers `center_crop` (HWC): zero-pads first where the image is smaller than the crop."""
  h, w = x.shape[:2]
  top, left = (h - ch) // 2, (w - cw) // 2
  if top >= 0 and left >= 0:
    return x[top:top + ch, left:left + cw]
  nh, nw = max(ch, h), max(cw, w)
  out = np.zeros((nh, nw) + x.shape[2:], x.dtype)
  tp, lp = -(-(nh - h) // 2), -(-(nw - w) // 2)  # ceil
  out[tp:tp + h, lp:lp + w] = x
  top, left = top + tp, left + lp
  return out[max(0, top):min(nh, top + ch), max(0, left):min(nw, left + cw)]


@functools.lru_cache(maxsize=8)
def _text_fn(config: clip_lib.CLIPTextConfig):
  """Jitted `ids → text_embeds`, one per config (scorers of equal configs share compilations)."""
  model = clip_lib.CLIPTextModel(config)
  return jax.jit(lambda p, ids: model.apply({"params": p}, ids).text_embeds)


@functools.lru_cache(maxsize=8)
def _vision_fn(config: clip_lib.CLIPVisionConfig):
  """Jitted `pixel values → image_embeds`, one per config."""
  model = clip_lib.CLIPVisionModel(config)
  return jax.jit(lambda p, px: model.apply({"params": p}, px).image_embeds)


def _l2_normalise(x) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


class CLIPScorer:
  """Both CLIP towers with their projections, the tokenizer and the image processor of one
  transformers `CLIPModel` folder. `scores(images, prompt)` → 100 · cosine per image."""

  def __init__(self, text_config: clip_lib.CLIPTextConfig, text_params,
               vision_config: clip_lib.CLIPVisionConfig, vision_params, tokenizer,
               processor: ImageProcessor, *, name: str = "CLIP", batch_size: int = 16):
    self.name = name
    self.path: str | None = None  # the folder, when loaded by `load`
    self.text_config, self.vision_config = text_config, vision_config
    self.tokenizer, self.processor = tokenizer, processor
    self.batch_size = int(batch_size)
    self.max_length = int(min(getattr(tokenizer, "model_max_length", 77) or 77,
                              text_config.max_position_embeddings))
    crop = processor.output_hw(vision_config.image_size, vision_config.image_size)
    if processor.do_center_crop and tuple(crop) != (vision_config.image_size,) * 2:
      raise errors.WeightsError(
          f"{name}: the image processor crops to {crop[0]}x{crop[1]} but the vision tower takes "
          f"{vision_config.image_size}x{vision_config.image_size} images ({PREPROCESSOR_FILE})")
    self._text_params = jax.device_put(text_params)
    self._vision_params = jax.device_put(vision_params)
    self._text, self._vision = _text_fn(text_config), _vision_fn(vision_config)

  @classmethod
  def load(cls, folder: str | os.PathLike, *, name: str | None = None, variant: str | None = None,
           batch_size: int = 16) -> "CLIPScorer":
    """From a transformers `CLIPModel` folder (weights, config, tokenizer files)."""
    from instant3d_jax.convert import sdxl_pipeline  # pylint: disable=g-import-not-at-top
    name = name or str(folder)
    folder = Path(folder)
    if not folder.is_dir():
      raise errors.WeightsError(f"{name}: CLIP model folder {folder} does not exist (expected a "
                                "transformers CLIPModel folder: config.json, model.safetensors and "
                                "the tokenizer files)")
    text_cfg, text_params, vision_cfg, vision_params = convert_clip.load_clip_model(
        folder, variant=variant)
    tokenizer = sdxl_pipeline.load_tokenizer(folder)
    processor = ImageProcessor.from_folder(folder, vision_cfg.image_size)
    scorer = cls(text_cfg, text_params, vision_cfg, vision_params, tokenizer, processor,
                 name=name, batch_size=batch_size)
    scorer.path = str(folder)
    return scorer

  def tokenize(self, prompts: Sequence[str]) -> np.ndarray:
    """`[P, L] int32`: padded to `L` = min(tokenizer max length, max positions), truncated (the
    EOS kept), as `CLIPProcessor(text=..., padding='max_length', truncation=True)`."""
    ids = self.tokenizer(list(prompts), padding="max_length", max_length=self.max_length,
                         truncation=True, return_tensors="np")["input_ids"]
    return np.asarray(ids, np.int32)

  def _batched(self, fn, params, x: np.ndarray) -> np.ndarray:
    out = []
    b = self.batch_size
    for s in range(0, len(x), b):
      chunk = x[s:s + b]
      n = len(chunk)
      if n < b:  # one compiled shape
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - n, 0)])
      with jax.default_matmul_precision("float32"):
        out.append(np.asarray(fn(params, jnp.asarray(chunk)))[:n])
    return np.concatenate(out)

  def text_embeds(self, prompts: Sequence[str]) -> np.ndarray:
    """L2-normalised `text_embeds [P, D]` of the prompts."""
    return _l2_normalise(self._batched(self._text, self._text_params, self.tokenize(prompts)))

  def image_embeds(self, images) -> np.ndarray:
    """L2-normalised `image_embeds [N, D]` of `images [N, H, W, 3]` (uint8 or float [0, 1])."""
    return _l2_normalise(self._batched(self._vision, self._vision_params, self.processor(images)))

  def scores(self, images, prompt: str) -> np.ndarray:
    """`[N]` CLIP similarity ×100 of each image with `prompt`."""
    t = self.text_embeds([prompt])[0]
    return 100.0 * (self.image_embeds(images).astype(np.float64) @ t.astype(np.float64))


def write_toy_clip_model(folder: str | os.PathLike, *, seed: int = 0, image_size: int = 32,
                         max_length: int = 77) -> Path:
  """Writes a small random-weight transformers `CLIPModel` folder (2-layer towers of width 32,
  projection 24, the toy letter-level tokenizer of convert/sdxl_pipeline.py, a preprocessor
  config) — for exercising the evaluation's plumbing where no pretrained CLIP is at hand (its
  scores mean nothing). Weights drawn with numpy (`sdxl_pipeline.random_params`); no torch."""
  from instant3d_jax.convert import sdxl_pipeline  # pylint: disable=g-import-not-at-top
  folder = Path(folder)
  tok = sdxl_pipeline.write_toy_tokenizer(folder, max_length)
  text = clip_lib.CLIPTextConfig(
      vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
      num_attention_heads=4, max_position_embeddings=max_length, hidden_act="gelu",
      projection_dim=24, eos_token_id=tok.eos_token_id)
  vision = clip_lib.CLIPVisionConfig(
      hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
      image_size=image_size, patch_size=max(1, image_size // 4), hidden_act="gelu",
      projection_dim=24)
  convert_clip.save_clip_model(
      folder, text, sdxl_pipeline.random_params(convert_clip.text_param_shapes(text), seed),
      vision, sdxl_pipeline.random_params(convert_clip.vision_param_shapes(vision), seed + 1),
      text_token_ids={"bos_token_id": tok.bos_token_id, "pad_token_id": tok.pad_token_id})
  sio.write_json(folder / PREPROCESSOR_FILE, {
      "image_processor_type": "CLIPImageProcessor", "do_resize": True,
      "size": {"shortest_edge": image_size}, "resample": PIL_BICUBIC, "do_center_crop": True,
      "crop_size": {"height": image_size, "width": image_size}, "do_rescale": True,
      "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(clip_lib.CLIP_MEAN),
      "image_std": list(clip_lib.CLIP_STD), "do_convert_rgb": True})
  return folder
