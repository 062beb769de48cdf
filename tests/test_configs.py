"""Configs are declarative (docs/design.md §3 Configs): configs/ imports no library code (errors
aside), no library module reads a config file back, the values a config writes down for the
library agree with it, and configs stored in older checkpoints are upgraded on load by one
function."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_module_structure import ROOT, find_commands, imported_modules, python_files

PROJECT = ("instant3d_jax", "data_pipeline", "bench")
CONFIG_FILES = sorted(p.stem for p in (ROOT / "configs").glob("*.py") if p.stem != "__init__")


def _is_config_import(mod: str) -> bool:
  return mod == "instant3d_jax.configs" or mod.startswith("instant3d_jax.configs.")


def config_import_violations(root: Path = ROOT) -> list[str]:
  """`configs/X.py: imports M` for every project module M a config imports other than another
  config and instant3d_jax.errors."""
  out = []
  for path in python_files(root, ("configs",)):
    for mod in sorted(imported_modules(path, root)):
      if mod.split(".")[0] not in PROJECT or mod in ("instant3d_jax", "instant3d_jax.errors"):
        continue
      if not _is_config_import(mod):
        out.append(f"{path.relative_to(root)}: imports {mod}")
  return out


def config_reader_violations(root: Path = ROOT, config_files=CONFIG_FILES) -> list[str]:
  """`path: imports instant3d_jax.configs.X` for every library module (not a command) of
  instant3d_jax/ or data_pipeline/ that imports a config file. The `instant3d_jax.configs`
  package itself (`path`, `resolve`: where a file is, not what it says) is allowed."""
  commands = set(find_commands(root).values())
  out = []
  for path in python_files(root, ("instant3d_jax", "data_pipeline")):
    if path in commands or "configs" in path.relative_to(root).parts:
      continue
    for mod in sorted(imported_modules(path, root)):
      if _is_config_import(mod) and mod.rsplit(".", 1)[-1] in config_files:
        out.append(f"{path.relative_to(root)}: imports {mod}")
  return out


def test_configs_import_no_library_code():
  assert config_import_violations() == []


def test_no_library_module_reads_a_config_file():
  assert config_reader_violations() == []


def test_checkers_catch_planted_violations(tmp_path):
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "c.py").write_text(
      "import ml_collections\nfrom instant3d_jax import errors\n"
      "from instant3d_jax.configs import data\n"
      "def get_config(arg=None):\n  from data_pipeline import captions\n")
  assert config_import_violations(tmp_path) == [
      "configs/c.py: imports data_pipeline", "configs/c.py: imports data_pipeline.captions"]
  lib = tmp_path / "instant3d_jax" / "eval"
  lib.mkdir(parents=True)
  (lib / "x.py").write_text("def f():\n  from instant3d_jax.configs import instant3d\n")
  (tmp_path / "instant3d_jax" / "cmd.py").write_text(
      "from instant3d_jax.configs import lrm\nif __name__ == '__main__':\n  pass\n")
  (tmp_path / "instant3d_jax" / "ok.py").write_text("from instant3d_jax import configs\n")
  assert config_reader_violations(tmp_path, ("instant3d", "lrm")) == [
      "instant3d_jax/eval/x.py: imports instant3d_jax.configs.instant3d"]


@pytest.mark.parametrize("variant", ["tiny", "sdxl"])
def test_mv_sdxl_written_down_values_match_the_library(variant):
  """configs/mv_sdxl.py writes the word tokenizer's ids and the held-out sample captions down
  as values; they are what the library computes."""
  from data_pipeline import captions
  from instant3d_jax.configs import mv_sdxl
  cfg = mv_sdxl.get_config(variant)
  g = cfg.grid
  assert tuple(cfg.sample.captions) == captions.heldout_sample_captions(
      len(cfg.sample.captions), seed=int(g.heldout_seed), num_heldout=int(g.num_heldout))
  if variant == "tiny":
    from instant3d_jax.diffusion.word_tokenizer import WordTokenizer
    tok = WordTokenizer(model_max_length=int(cfg.model.tokenizer_max_length))
    for name in ("text_encoder", "text_encoder_2"):
      te = cfg.model.random_init[name]
      assert (te.vocab_size, te.bos_token_id, te.eos_token_id, te.pad_token_id) == (
          tok.vocab_size, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id), name
      assert te.max_position_embeddings == tok.model_max_length, name


def test_require_names_every_missing_key():
  import ml_collections
  from instant3d_jax import errors
  from instant3d_jax.base import config_schema
  cfg = ml_collections.ConfigDict({"train": {"log_every": 20}, "seed": 0})
  config_schema.require(cfg, ("seed", "train.log_every"), "here")
  with pytest.raises(errors.ConfigError,
                     match=r"missing train\.halt_at_step, checkpoint\.keep \(read by here"):
    config_schema.require(cfg, ("seed", "train.halt_at_step", "checkpoint.keep"), "here")
  with pytest.raises(errors.ConfigError, match=r"missing optimizer\.eps \(read by opt"):
    config_schema.require(cfg.train, ("log_every", "eps"), "opt", "optimizer.")


def test_the_loop_refuses_a_config_missing_a_key(tmp_path):
  from instant3d_jax import errors
  from instant3d_jax.train import loop
  from tests import train_toy
  cfg = train_toy.get_config()
  del cfg.train["halt_at_step"]
  with pytest.raises(errors.ConfigError, match=r"missing train\.halt_at_step \(read by train/loop"):
    loop.run(cfg, tmp_path, train_toy.make_task(cfg), log=lambda *_: None)
  assert not any(tmp_path.iterdir())


def test_upgrade_config_fills_added_keys_only_where_absent():
  from instant3d_jax.base import config_schema
  saved = {"model": {"triplane": {"channels": 8, "upsample": 4}, "nerf": {}},
           "eval": {"chunk": 512}}
  up = config_schema.upgrade_config(saved)
  assert saved == {"model": {"triplane": {"channels": 8, "upsample": 4}, "nerf": {}},
                   "eval": {"chunk": 512}}  # the argument is left alone
  assert up["model"]["triplane"] == {"channels": 8, "upsample": 4, "plane_axes": "yz"}
  assert up["model"]["camera_convention"] == "opencv"
  assert up["model"]["nerf"] == {}
  assert up["model"]["extras"] == {
      "plucker_rays": False, "position_code": False, "attention_bias": False,
      "attention_bias_init": "zeros", "attention_bias_sigma": 1.0, "attention_bias_floor": -8.0,
      "lift": "none", "lift_concat": False, "lift_voxels": False, "lift_voxel_resolution": 0,
      "lift_voxel_colour": "mean", "colour_prior": False}
  assert up["eval"] == {"chunk": 512, "lpips": True}
  assert "decoder" not in up["model"] and "render" not in up["model"]  # absent sections stay so
  # The decoder's final norm used the blocks' eps before output_norm_eps existed.
  dec = config_schema.upgrade_config({"model": {"triplane": {}, "decoder": {
      "layer_norm_eps": 1e-5}}})["model"]["decoder"]
  assert dec == {"layer_norm_eps": 1e-5, "output_norm_eps": 1e-5, "attention_out_bias": True}
  # A stage-1 config (no LRM sections) is unchanged.
  mv = {"model": {"pretrained": "", "random_init": {}}, "train": {"log_every": 20}}
  assert config_schema.upgrade_config(mv) == mv


def test_upgrade_config_moves_the_options_not_in_the_paper_to_model_extras(tmp_path):
  """A config saved before `model.extras` (the options not in the paper at their old places:
  model, triplane, decoder, nerf) loads with each moved to `model.extras`, value unchanged, and
  builds the same `LRMConfig` as today's config; the old places are refused by `from_config`."""
  import copy
  from instant3d_jax import errors
  from instant3d_jax.base import config_schema
  from instant3d_jax.configs import lrm as lrm_configs
  from instant3d_jax.models import lrm
  cfg = lrm_configs.get_config("tiny").to_dict()
  old = copy.deepcopy(cfg)
  extras = old["model"].pop("extras")
  for section, key, new in config_schema.MOVED_KEYS:
    assert new == "model.extras"
    node = old
    for part in section.split("."):
      node = node[part]
    node[key] = extras.pop(key)
  assert extras == {}
  assert old["model"]["triplane"]["lift"] == "hull" and old["model"]["plucker_rays"] is True
  with pytest.raises(errors.ConfigError, match=r"model\.plucker_rays is now model\.extras\."
                                               r"plucker_rays"):
    lrm.LRMConfig.from_config(old)
  up = config_schema.upgrade_config(old)
  assert up == cfg
  assert lrm.LRMConfig.from_config(up) == lrm.LRMConfig.from_config(cfg)
  # A workdir whose config.json has the old layout resumes with today's config (the saved one
  # is upgraded before the comparison) and still refuses a real model change.
  import json
  import ml_collections
  from instant3d_jax.base import checkpoint as ckpt_lib
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / ckpt_lib.CONFIG_FILE).write_text(json.dumps(old))
  today = ml_collections.ConfigDict(cfg)
  ckpt_lib.check_or_write_config(workdir, today, ("model", "optimizer", "loss"))
  today.model.extras.lift_voxel_resolution = 32
  with pytest.raises(errors.ConfigMismatchError, match="lift_voxel_resolution"):
    ckpt_lib.check_or_write_config(workdir, today, ("model", "optimizer", "loss"))


@pytest.mark.parametrize("form", ["orbax", "safetensors"])
def test_older_checkpoint_config_is_upgraded_on_load(tmp_path, form):
  """A checkpoint whose saved config predates the keys of `ADDED_KEYS` loads through the one
  entry point with each key at the value that reproduces it, and builds the same model."""
  import json
  import flax.linen as nn
  import jax
  import ml_collections
  import numpy as np
  from instant3d_jax.base import checkpoint as ckpt_lib
  from instant3d_jax.base import config_schema
  from instant3d_jax.convert import checkpoints
  from instant3d_jax.convert import lrm as convert_lrm
  from instant3d_jax.models import lrm
  from tests import tiny_configs
  cfg = tiny_configs.micro_lrm()
  for section, key, value in config_schema.ADDED_KEYS:
    node = cfg
    for part in section.split("."):
      node = node[part]
    node[key] = value
  params = nn.meta.unbox(lrm.init_params(cfg, jax.random.key(0)))
  old = cfg.to_dict()
  for section, key, _ in config_schema.ADDED_KEYS:
    node = old
    for part in section.split("."):
      node = node[part]
    del node[key]
  old = ml_collections.ConfigDict(old)
  dotted = [f"{s}.{k}" for s, k, _ in config_schema.ADDED_KEYS]
  assert config_schema.missing_keys(old, dotted) == dotted
  if form == "orbax":
    path = tmp_path / "run"
    c = ckpt_lib.Checkpointer(path, use_async=False)
    c.save(1, {"params": params, "step": 1}, {}, old)
    c.close()
  else:
    path = tmp_path / "old.safetensors"
    convert_lrm.save_lrm(path, params, old)
  loaded, got, _ = checkpoints.load(path)
  assert config_schema.missing_keys(loaded, dotted) == []
  as_json = lambda c: json.loads(ml_collections.ConfigDict(c).to_json())
  assert lrm.LRMConfig.from_config(loaded) == lrm.LRMConfig.from_config(cfg)
  assert as_json(loaded.eval) == as_json(cfg.eval)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
