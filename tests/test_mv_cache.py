"""The frozen-encoder cache (data_pipeline/latent_cache.py, its command data_pipeline/mv_cache.py)
on a tiny random SDXL pipeline."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from instant3d_jax.configs import data as data_config
from instant3d_jax.configs import sdxl as sdxl_config
from data_pipeline import captions as CAP
from data_pipeline import latent_cache as MC
from data_pipeline import mv_grids as G
from data_pipeline import procedural, records
from instant3d_jax.diffusion import stage1
from tests import tolerance

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  cfg = data_config.get_config("tiny")
  cfg.eval_rig_splits = ()
  cfg.num_sup_views = 0
  out = str(tmp_path_factory.mktemp("mvcache") / "data")
  procedural.generate(cfg, out, progress=False)
  return out


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
  from instant3d_jax.convert import sdxl_pipeline
  cfg = sdxl_config.get_config("tiny")
  tmp = tmp_path_factory.mktemp("tok")
  n = cfg.random_init.tokenizer_max_length
  return sdxl_pipeline.init_random_pipeline(
      cfg.random_init, sdxl_pipeline.write_toy_tokenizer(tmp / "t1", n),
      sdxl_pipeline.write_toy_tokenizer(tmp / "t2", n), seed=0)


@pytest.fixture(scope="module")
def cache(world, pipe, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("cache") / "c")
  MC.write_cache(world, out, stage1.encoders_from_pipeline(pipe, {"test": "tiny"}),
                 batch_size=4, records_per_shard=2, progress=False)
  return out


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_cached_arrays_equal_a_direct_encoder_call(world, pipe, cache):
  import jax
  from instant3d_jax.diffusion import sampling
  vae_encode = jax.jit(lambda p, x: pipe.vae.apply({"params": p}, x, method="encode"))
  meta = MC.read_cache_metadata(cache)
  assert meta["num_objects"] == 12 and meta["encoders"] == {"test": "tiny"}
  kw = dict(batch_size=3, seed=0, shuffle=False, num_epochs=1, process_index=0, process_count=1)
  cached = list(MC.make_latent_loader(cache, "train", with_std=True, **kw))
  grids = list(G.make_grid_loader(world, "train", **kw))
  assert len(cached) == len(grids) == 2
  scale = pipe.vae.config.scaling_factor
  for c, g in zip(cached, grids):
    assert c["object_id"].tolist() == g["object_id"].tolist()
    assert c["caption"].tolist() == g["caption"].tolist()
    x = g["grid"].astype(np.float32) / 127.5 - 1.0
    mean, logvar = vae_encode(pipe.params["vae"], x)
    assert c["latents"].shape == (3, 16, 16, 4)  # 32² grid, VAE factor 2
    # The cache was written in batches of 4, the direct call takes 3.
    ctx, pooled = sampling.encode_prompts(pipe, list(g["caption"]))
    for k, want in (("latents", np.asarray(mean) * scale),
                    ("latents_std", np.exp(0.5 * np.asarray(logvar)) * scale),
                    ("prompt_embeds", ctx), ("pooled_prompt_embeds", pooled)):
      tolerance.within(f"mv_cache.batch_4_vs_direct_batch_3.{k}", c[k], want, 1e-5, "rel")
  assert set(cached[0]) == {"latents", "latents_std", "prompt_embeds", "pooled_prompt_embeds",
                            "caption", "object_id"}


def test_latent_loader_follows_the_grid_loader_and_resumes(world, cache):
  kw = dict(batch_size=2, seed=4, process_index=0, process_count=1)
  a = _take(MC.make_latent_loader(cache, "train", **kw), 4)
  b = _take(G.make_grid_loader(world, "train", **kw), 4)
  assert [x["object_id"].tolist() for x in a] == [x["object_id"].tolist() for x in b]
  assert set(a[0]) == {"latents", "prompt_embeds", "pooled_prompt_embeds", "caption",
                       "object_id"}
  it = MC.make_latent_loader(cache, "train", **kw)
  _take(it, 1)
  state = it.get_state()
  fresh = MC.make_latent_loader(cache, "train", **kw)
  fresh.set_state(state)
  for x, y in zip(_take(fresh, 3), a[1:]):
    assert all(np.array_equal(x[k], y[k]) for k in x)
  # Object lists and the caption split filter the cache as they filter the data set.
  table = G.object_table(world, "train")
  split = CAP.CaptionSplit("heldout", frozenset([CAP.parse_caption(table[0][2])[0].combo]))
  one = dict(batch_size=1, seed=0, shuffle=False, num_epochs=1, process_index=0, process_count=1)
  for sel in (dict(heldout=split), dict(object_list=["obj000003", "obj000005", "obj000009"])):
    got = [int(x["object_id"][0]) for x in MC.make_latent_loader(cache, "train", **one, **sel)]
    want = [int(x["object_id"][0]) for x in G.make_grid_loader(world, "train", **one, **sel)]
    assert got == want and got


def test_existing_output_is_refused_and_kept(world, cache, pipe, tmp_path):
  before = {n: os.path.getmtime(os.path.join(cache, n)) for n in os.listdir(cache)}
  enc = MC.FrozenEncoders(encode_images=None, encode_prompts=None)
  with pytest.raises(records.DataError, match=r"already holds a data set \(mv_cache, 12 objects\)"):
    MC.write_cache(world, cache, enc, progress=False)
  assert {n: os.path.getmtime(os.path.join(cache, n)) for n in os.listdir(cache)} == before
  with pytest.raises(records.DataError, match="into its source data set"):
    MC.write_cache(world, world, enc, overwrite=True, progress=False)
  with pytest.raises(records.DataError, match="not a latent cache"):
    MC.make_latent_loader(world, "train", batch_size=1, seed=0, process_index=0, process_count=1)
  assert {n: os.path.getmtime(os.path.join(cache, n)) for n in os.listdir(cache)} == before
  # --overwrite replaces it (only the train split this time).
  out = str(tmp_path / "c2")
  enc = stage1.encoders_from_pipeline(pipe)
  MC.write_cache(world, out, enc, splits=["val"], batch_size=4, progress=False)
  meta = MC.write_cache(world, out, enc, splits=["train"], batch_size=4, overwrite=True,
                        progress=False)
  assert list(meta["splits"]) == ["train"] and meta["num_objects"] == 6


def test_encoders_flag_is_checked():
  with pytest.raises(Exception, match="must be 'module:function'"):
    MC.load_encoders("nocolon", None, None)
  with pytest.raises(Exception, match="cannot import it"):
    MC.load_encoders("data_pipeline.latent_cache:no_such_function", None, None)
  with pytest.raises(Exception, match="--weights is required"):
    MC.load_encoders("instant3d_jax.diffusion.stage1:sdxl_encoders", None, None)


def _command(*args):
  return subprocess.run([sys.executable, "-m", "data_pipeline.mv_cache", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_command_writes_the_same_cache_and_refuses_to_overwrite(world, pipe, cache, tmp_path):
  """The command on the tiny pipeline saved as a diffusers folder (the default --encoders)."""
  from instant3d_jax.convert import sdxl_pipeline
  weights = tmp_path / "sdxl"
  sdxl_pipeline.save_pipeline(weights, pipe)
  out = str(tmp_path / "cache")
  r = _command("--data_dir", world, "--out", out, "--config", "configs/sdxl.py:tiny",
               "--weights", str(weights), "--batch_size", "4", "--splits", "train")
  assert r.returncode == 0, r.stderr[-3000:]
  kw = dict(batch_size=6, seed=0, shuffle=False, num_epochs=1, with_std=True, process_index=0,
            process_count=1)
  a = next(MC.make_latent_loader(out, "train", **kw))
  b = next(MC.make_latent_loader(cache, "train", **kw))
  for k in a:
    if a[k].dtype.kind == "f":
      tolerance.within(f"mv_cache.command_vs_library.{k}", a[k], b[k], 1e-6, "rel")
    else:
      np.testing.assert_array_equal(a[k], b[k])
  assert MC.read_cache_metadata(out)["encoders"]["weights"] == str(weights)
  # Again without --overwrite: one line on stderr, exit 2, nothing touched.
  before = {n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out)}
  r = _command("--data_dir", world, "--out", out, "--weights", str(weights))
  assert r.returncode == 2, r.stderr[-2000:]
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "already holds a data set (mv_cache" in last, last
  assert {n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out)} == before
