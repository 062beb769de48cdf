"""A whole SDXL checkpoint ↔ `Pipeline` (the container defined here; diffusion/sampling.py runs it).

Reads the diffusers folder layout
  model_index.json (optional: `force_zeros_for_empty_prompt`), unet/, vae/, text_encoder/,
  text_encoder_2/, tokenizer/, tokenizer_2/, scheduler/scheduler_config.json
(UNet/VAE through `convert.diffusers_sdxl`, CLIP through `convert.clip`), and the single-file
layout (one `.safetensors` with the original key names) given a folder holding the component
configs and tokenizers, as diffusers' `from_single_file(config=...)` does. `save_pipeline`
writes the diffusers layout back (bit-exact for tensors that were read).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from instant3d_jax import errors
from instant3d_jax.convert import clip as cclip
from instant3d_jax.convert import diffusers_sdxl
from instant3d_jax.convert import safetensors_io as sio
from instant3d_jax.convert.scheduler_config import SchedulerConfig
from instant3d_jax.models import layers
from instant3d_jax.models.clip import CLIPTextConfig, CLIPTextModel
from instant3d_jax.models.unet import UNet2DConditionModel, UNetConfig
from instant3d_jax.models.vae import AutoencoderKL, VAEConfig

FOLDERS = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2",
           "scheduler")
COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


# ----------------------------------------------------------------------------------------------
# The pipeline container (what a whole SDXL checkpoint loads into; diffusion/sampling.py runs it)
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class Pipeline:
  """SDXL modules, one param pytree per component (`params['unet']`, ...: the `params`
  collections), the two CLIP tokenizers and the scheduler config."""
  unet: UNet2DConditionModel
  vae: AutoencoderKL
  text_encoder: CLIPTextModel
  text_encoder_2: CLIPTextModel
  params: dict[str, Any]
  tokenizer: Any
  tokenizer_2: Any
  scheduler_config: SchedulerConfig = SchedulerConfig()
  force_zeros_for_empty_prompt: bool = True  # SDXL base model_index.json
  vae_decode_chunk: int | None = 1  # grids per VAE decoder call (memory of 1024² decodes)
  vae_tiled: bool = False
  _cache: dict = dataclasses.field(default_factory=dict, repr=False)  # encoded blob latents

  def __post_init__(self):
    missing = [c for c in COMPONENTS if c not in self.params]
    if missing:
      raise errors.ConfigError(f"Pipeline params lack components {missing}; got {sorted(self.params)}")
    if self.text_encoder_2.config.projection_dim is None:
      raise ValueError("Pipeline text_encoder_2 must have a text projection (SDXL's OpenCLIP "
                       "bigG is CLIPTextModelWithProjection)")

  @property
  def vae_scale_factor(self) -> int:
    return 2 ** (len(self.vae.config.block_out_channels) - 1)


def compute_dtype(name: str):
  return layers.compute_dtype(name, "compute dtype")


def check_layout(root: Path, names=FOLDERS) -> None:
  """Raises `WeightsError` naming every missing component folder."""
  if not root.is_dir():
    raise errors.WeightsError(f"SDXL weights folder {root} does not exist")
  missing = [n for n in names if not (root / n).is_dir()]
  if missing:
    raise errors.WeightsError(f"SDXL weights folder {root} lacks component folder(s) {missing}; "
                              f"expected the diffusers layout {list(names)}, found "
                              f"{sorted(p.name for p in root.iterdir())}")


def load_tokenizer(folder: Path):
  """transformers `CLIPTokenizer` from a `tokenizer/` folder (vocab.json + merges.txt, or
  tokenizer.json)."""
  from transformers import CLIPTokenizer
  if not ((folder / "tokenizer.json").is_file() or ((folder / "vocab.json").is_file()
                                                     and (folder / "merges.txt").is_file())):
    raise errors.WeightsError(f"tokenizer folder {folder} has neither tokenizer.json nor "
                              f"vocab.json + merges.txt; found "
                              f"{sorted(p.name for p in folder.iterdir())}")
  return CLIPTokenizer.from_pretrained(str(folder))


def load_scheduler_config(folder: Path) -> SchedulerConfig:
  return SchedulerConfig.from_diffusers(sio.read_config(folder,
                                                                   "scheduler_config.json"))


def _model_index(root: Path) -> dict:
  p = root / "model_index.json"
  return json.loads(p.read_text()) if p.is_file() else {}


def build_pipeline(unet_config: UNetConfig, vae_config: VAEConfig, te_config: CLIPTextConfig,
                   te2_config: CLIPTextConfig, params: Mapping[str, Any], tokenizer, tokenizer_2,
                   scheduler_config: SchedulerConfig, *, dtype: str = "float32",
                   attention_impl: str = "xla", remat: str = "none",
                   force_zeros_for_empty_prompt: bool = True, vae_decode_chunk: int | None = 1,
                   vae_tiled: bool = False) -> Pipeline:
  """Modules from configs + the given params into a `Pipeline` (params as jax arrays)."""
  dt = compute_dtype(dtype)
  return Pipeline(
      unet=UNet2DConditionModel(unet_config, dtype=dt, attention_impl=attention_impl, remat=remat),
      vae=AutoencoderKL(vae_config, dtype=dt, attention_impl=attention_impl),
      text_encoder=CLIPTextModel(te_config, dtype=dt, attention_impl=attention_impl),
      text_encoder_2=CLIPTextModel(te2_config, dtype=dt, attention_impl=attention_impl),
      params={k: jax.tree.map(jnp.asarray, v) for k, v in params.items()},
      tokenizer=tokenizer, tokenizer_2=tokenizer_2, scheduler_config=scheduler_config,
      force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
      vae_decode_chunk=vae_decode_chunk, vae_tiled=vae_tiled)


def load_pipeline(folder: str | os.PathLike, *, variant: str | None = None, **module_kw
                  ) -> Pipeline:
  """A diffusers-format SDXL folder → `Pipeline` (fp32 params). `module_kw`: `dtype`,
  `attention_impl`, `remat`, `vae_decode_chunk`, `vae_tiled` (see `build_pipeline`)."""
  root = Path(folder)
  check_layout(root)
  unet_config, unet = diffusers_sdxl.load_unet(root / "unet", variant)
  vae_config, vae = diffusers_sdxl.load_vae(root / "vae", variant)
  te_config, te = cclip.load_clip_text(root / "text_encoder", with_projection=False,
                                       variant=variant)
  te2_config, te2 = cclip.load_clip_text(root / "text_encoder_2", with_projection=True,
                                         variant=variant)
  index = _model_index(root)
  return build_pipeline(
      unet_config, vae_config, te_config, te2_config,
      {"unet": unet, "vae": vae, "text_encoder": te, "text_encoder_2": te2},
      load_tokenizer(root / "tokenizer"), load_tokenizer(root / "tokenizer_2"),
      load_scheduler_config(root / "scheduler"),
      force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt", True)),
      **module_kw)


def _read_prefixed(path: Path, prefixes: tuple[str, ...]) -> dict[str, np.ndarray]:
  """Only the tensors under `prefixes` of a (large) single file, as fp32 numpy."""
  from safetensors import safe_open
  out = {}
  try:
    with safe_open(str(path), "np") as f:
      for k in f.keys():
        if k.startswith(prefixes):
          v = f.get_tensor(k)
          out[k] = v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v
  except Exception as e:  # noqa: BLE001 — safetensors raises several types for a bad header
    raise errors.WeightsError(f"{path} is not a readable safetensors file: {e}") from e
  return out


def load_single_file_pipeline(path: str | os.PathLike, config_folder: str | os.PathLike,
                              **module_kw) -> Pipeline:
  """Original single-file SDXL `.safetensors` (UNet `model.diffusion_model.*`, VAE
  `first_stage_model.*`, CLIP-L `conditioner.embedders.0.transformer.*`, OpenCLIP bigG
  `conditioner.embedders.1.model.*`) + `config_folder` with the component configs
  (`unet/config.json`, ...), tokenizers and scheduler config."""
  path, root = Path(path), Path(config_folder)
  if not path.is_file():
    raise errors.WeightsError(f"single-file checkpoint {path} does not exist")
  check_layout(root)
  unet_config = UNetConfig.from_diffusers(sio.read_config(root / "unet"))
  vae_config = VAEConfig.from_diffusers(sio.read_config(root / "vae"))
  te_config = CLIPTextConfig.from_transformers(sio.read_config(root / "text_encoder"), False)
  te2_config = CLIPTextConfig.from_transformers(sio.read_config(root / "text_encoder_2"), True)
  unet, vae = diffusers_sdxl.load_single_file(path, unet_config, vae_config)
  text = _read_prefixed(path, (cclip.SDXL_CLIP_L_PREFIX, cclip.SDXL_OPENCLIP_PREFIX))
  te = cclip.single_file_clip_l_to_flax(text, te_config, source=str(path))
  te2 = cclip.single_file_openclip_to_flax(text, te2_config, source=str(path))
  index = _model_index(root)
  return build_pipeline(
      unet_config, vae_config, te_config, te2_config,
      {"unet": unet, "vae": vae, "text_encoder": te, "text_encoder_2": te2},
      load_tokenizer(root / "tokenizer"), load_tokenizer(root / "tokenizer_2"),
      load_scheduler_config(root / "scheduler"),
      force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt", True)),
      **module_kw)


def load_any(weights: str | os.PathLike, config_folder: str | os.PathLike | None = None,
             **module_kw) -> Pipeline:
  """A diffusers folder, or a single-file `.safetensors` with `config_folder` (the component
  configs, tokenizers and scheduler config) → `Pipeline`. `module_kw` as for `load_pipeline`."""
  path = Path(weights)
  if path.is_file():
    if not config_folder:
      raise errors.WeightsError(f"--weights {path} is a single file: also give a folder with the "
                                "component configs (unet/config.json, ...) and tokenizers "
                                "(--config_folder, or --config.single_file_config_folder)")
    return load_single_file_pipeline(path, config_folder, **module_kw)
  if not path.exists():
    raise errors.WeightsError(f"--weights {path} does not exist; expected an SDXL diffusers folder "
                              "or a single-file .safetensors")
  return load_pipeline(path, **module_kw)


def save_pipeline(folder: str | os.PathLike, pipeline: Pipeline,
                  scheduler_config: Mapping[str, Any] | None = None) -> None:
  """Writes the diffusers layout (fp32 tensors; `model_index.json` last, so a folder without it
  is an interrupted export). `scheduler_config`: the JSON dict to write (default: the fields
  this pipeline's scheduler config was given)."""
  root = Path(folder)
  p = pipeline.params
  diffusers_sdxl.save_unet(root / "unet", pipeline.unet.config, p["unet"])
  diffusers_sdxl.save_vae(root / "vae", pipeline.vae.config, p["vae"])
  cclip.save_clip_text(root / "text_encoder", pipeline.text_encoder.config, p["text_encoder"])
  cclip.save_clip_text(root / "text_encoder_2", pipeline.text_encoder_2.config,
                       p["text_encoder_2"])
  pipeline.tokenizer.save_pretrained(str(root / "tokenizer"))
  pipeline.tokenizer_2.save_pretrained(str(root / "tokenizer_2"))
  # The keys the pipeline's config was given, no more: a missing key must stay missing, so that
  # each sampler class reads its own default again (SchedulerConfig.for_kind).
  sched = dict(scheduler_config or pipeline.scheduler_config.to_diffusers())
  sched.setdefault("_class_name", "EulerDiscreteScheduler")
  sio.write_json(root / "scheduler" / "scheduler_config.json", sched)
  sio.write_json(root / "model_index.json", {
      "_class_name": "StableDiffusionXLPipeline",
      "force_zeros_for_empty_prompt": pipeline.force_zeros_for_empty_prompt,
      **{k: ["diffusers" if k in ("unet", "vae", "scheduler") else "transformers", cls]
         for k, cls in (("unet", "UNet2DConditionModel"), ("vae", "AutoencoderKL"),
                        ("text_encoder", "CLIPTextModel"),
                        ("text_encoder_2", "CLIPTextModelWithProjection"),
                        ("tokenizer", "CLIPTokenizer"), ("tokenizer_2", "CLIPTokenizer"),
                        ("scheduler", "EulerDiscreteScheduler"))}})


def single_file_state(pipeline: Pipeline, dtype=None) -> dict[str, np.ndarray]:
  """The pipeline's weights in the original single-file SDXL key layout (what
  `load_single_file_pipeline` and diffusers' `StableDiffusionXLPipeline.from_single_file` read):
  UNet `model.diffusion_model.*`, VAE `first_stage_model.*` (attention as 1×1 convs), CLIP-L
  `conditioner.embedders.0.transformer.text_model.*`, OpenCLIP bigG
  `conditioner.embedders.1.model.*` (fused q/k/v). `dtype=None` keeps the stored dtypes."""
  p = pipeline.params
  state = diffusers_sdxl.diffusers_to_single_file_state(
      diffusers_sdxl.flax_to_diffusers_state(p["unet"], dtype), pipeline.unet.config,
      diffusers_sdxl.flax_to_diffusers_state(p["vae"], dtype), pipeline.vae.config)
  state.update({cclip.SDXL_CLIP_L_PREFIX + k: v for k, v in cclip.text_from_flax(
      p["text_encoder"], pipeline.text_encoder.config, prefix="text_model.",
      dtype=dtype).items()})
  state.update(cclip.transformers_to_openclip(
      cclip.text_from_flax(p["text_encoder_2"], pipeline.text_encoder_2.config, dtype=dtype),
      pipeline.text_encoder_2.config))
  return state


def save_single_file(path: str | os.PathLike, pipeline: Pipeline, dtype=None) -> Path:
  """Writes `single_file_state(pipeline)` to one `.safetensors` (atomically; refuses another
  suffix). Tokenizers, configs and the scheduler are not in the file: a loader takes them from
  a diffusers folder (`load_single_file_pipeline(path, folder)`, diffusers'
  `from_single_file(path, config=folder)`)."""
  path = Path(path)
  if path.suffix != ".safetensors":
    raise errors.WeightsError(f"single-file export {path}: expected a path ending in "
                              f".safetensors, got suffix {path.suffix!r}")
  sio.write_safetensors(path, single_file_state(pipeline, dtype), {"format": "pt"})
  return path


def write_toy_tokenizer(folder: str | os.PathLike, max_length: int):
  """Writes and loads a toy CLIP BPE tokenizer (letters, word-final letters, a few merges,
  `!`, BOS, EOS = pad) — for random-weight pipelines in tests and benchmarks, which have no
  real vocabulary. Ids stay below 64, EOS is the largest (CLIP's argmax-EOS rule holds)."""
  import string
  from transformers import CLIPTokenizer
  folder = Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  vocab = {}
  for c in string.ascii_lowercase:
    vocab[c] = len(vocab)
  for c in string.ascii_lowercase:
    vocab[c + "</w>"] = len(vocab)
  merges = ["c a", "ca t</w>", "d o", "do g</w>", "r e", "re d</w>"]
  for m in merges:
    vocab[m.replace(" ", "")] = len(vocab)
  for t in ("!", "<|startoftext|>", "<|endoftext|>"):
    vocab[t] = len(vocab)
  (folder / "vocab.json").write_text(json.dumps(vocab))
  (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
  (folder / "tokenizer_config.json").write_text(json.dumps({
      "model_max_length": max_length, "bos_token": "<|startoftext|>",
      "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
      "pad_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer"}))
  return CLIPTokenizer.from_pretrained(str(folder))


def random_params(abstract: Mapping[str, Any], seed: int) -> dict[str, Any]:
  """Random fp32 params for an abstract (`jax.eval_shape`) params tree, drawn with numpy:
  kernels N(0, 1/fan_in), embeddings N(0, 0.02²), norm scales 1 + N(0, 0.02²), the rest
  N(0, 0.02²). Avoids compiling Flax's per-parameter init (slow on CPU for a whole pipeline);
  only for tests, demos and benchmarks, where the statistics, not the draws, matter."""
  rng = np.random.default_rng(seed)
  flat = {}
  for path, leaf in traverse_util.flatten_dict(abstract, sep="/").items():
    shape, name = tuple(leaf.shape), path.rsplit("/", 1)[-1]
    x = rng.standard_normal(shape).astype(np.float32)
    if name == "kernel":
      x /= np.sqrt(max(1, int(np.prod(shape[:-1]))))
    elif name == "scale":
      x = 1 + 0.02 * x
    else:
      x *= 0.02
    flat[path] = x
  return traverse_util.unflatten_dict(flat, sep="/")


def init_random_pipeline(model_cfg: Mapping[str, Any], tokenizer, tokenizer_2, seed: int = 0,
                         **module_kw) -> Pipeline:
  """A random-weight pipeline from config dicts (`model_cfg.unet/vae/text_encoder/
  text_encoder_2` in diffusers/transformers config.json form) — tests, demos, benchmarks."""
  as_dict = lambda c: c.to_dict() if hasattr(c, "to_dict") else dict(c)
  unet_config = UNetConfig.from_diffusers(as_dict(model_cfg["unet"]))
  vae_config = VAEConfig.from_diffusers(as_dict(model_cfg["vae"]))
  te_config = CLIPTextConfig.from_transformers(as_dict(model_cfg["text_encoder"]), False)
  te2_config = CLIPTextConfig.from_transformers(as_dict(model_cfg["text_encoder_2"]), True)
  params = {
      "unet": random_params(diffusers_sdxl.unet_abstract_params(unet_config), seed),
      "vae": random_params(diffusers_sdxl.vae_abstract_params(vae_config), seed + 1),
      "text_encoder": random_params(cclip.text_param_shapes(te_config), seed + 2),
      "text_encoder_2": random_params(cclip.text_param_shapes(te2_config), seed + 3),
  }
  return build_pipeline(unet_config, vae_config, te_config, te2_config, params, tokenizer,
                        tokenizer_2, SchedulerConfig.from_diffusers(None),
                        **module_kw)
