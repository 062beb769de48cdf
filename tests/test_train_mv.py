"""Stage-1 trainer (instant3d_jax/train/mv_task.py, configs/mv_sdxl.py): the word tokenizer, the
pixel-unshuffle autoencoder, caption dropout, config errors, the tiny variant on the procedural
grid loader (EMA sample grids written), stop/resume bit-identical with the EMA, and the sdxl
variant on a tiny stand-in with SDXL's block layout, FSDP over 4 fake devices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipeline import captions
from instant3d_jax.configs import data as data_config
from instant3d_jax.configs import mv_sdxl
from instant3d_jax import errors
from instant3d_jax.diffusion import training
from instant3d_jax.diffusion.word_tokenizer import WordTokenizer
from instant3d_jax.models.pixel_ae import PixelAEConfig, PixelUnshuffleAE
from instant3d_jax.base import checkpoint as ckpt_lib
from instant3d_jax.convert import checkpoints
from instant3d_jax.train import loop, mv_task
from instant3d_jax.train import step as step_lib
from tests.test_mv_parity import PARITY_UNET
from tests.tiny_configs import TINY_VAE

# A micro UNet of the tiny variant's layout (48 = 3 · 4² pixel-unshuffled channels; context
# 32 + 32; pooled 32 + 6 · 8 time ids).
MICRO_UNET = dict(
    sample_size=4, in_channels=48, out_channels=48, block_out_channels=[16, 32],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], layers_per_block=1,
    transformer_layers_per_block=[1, 1], attention_head_dim=[8, 8], cross_attention_dim=64,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=80, norm_num_groups=8)


def micro_config(**train):
  cfg = mv_sdxl.get_config("tiny")
  cfg.model.random_init.unet = MICRO_UNET
  cfg.grid.view_resolution = 8          # 16² grids → 4² × 48 latents
  cfg.grid.heldout = ""
  cfg.sample.num_steps = 2
  cfg.sample.captions = cfg.sample.captions[:2]
  cfg.sample.per_caption = 1
  cfg.optimizer.warmup_steps = 1
  cfg.train.update(dict(total_steps=4, global_batch_size=4, log_every=1, image_every=0,
                        time_budget_s=0.0))
  cfg.train.update(train)
  cfg.checkpoint.every_steps = 2
  return cfg


class MemoryGrids:
  """In-memory grid batches {"grid", "caption", "object_id"} with a resumable position."""

  def __init__(self, n=8, batch=4, side=16, seed=0):
    rng = np.random.default_rng(seed)
    self.grids = rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8)
    self.captions = np.asarray(captions.heldout_sample_captions(n))
    self.batch, self.pos = batch, 0

  def __next__(self):
    idx = (self.pos * self.batch + np.arange(self.batch)) % len(self.grids)
    self.pos += 1
    return {"grid": self.grids[idx], "caption": self.captions[idx],
            "object_id": idx.astype(np.int32)}

  def get_state(self):
    return {"pos": self.pos}

  def set_state(self, state):
    self.pos = int(state["pos"])


def host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


# ----------------------------------------------------------------------------------------------
# Pieces
# ----------------------------------------------------------------------------------------------
def test_word_tokenizer_covers_the_world_in_clip_format(tmp_path):
  from data_pipeline import primitives as P
  tok = WordTokenizer(model_max_length=24)
  assert mv_sdxl.get_config("tiny").model.tokenizer_max_length >= 24
  rng = np.random.default_rng(0)
  caps = [P.caption(P.sample_scene(rng)) for _ in range(300)]
  assert not [c for c in caps if tok.unknown_words(c)]
  ids = tok(caps, padding="max_length", max_length=24, truncation=True,
            return_tensors="np")["input_ids"]
  assert ids.shape == (300, 24) and ids.dtype == np.int32
  assert (ids[:, 0] == tok.bos_token_id).all()
  lengths = np.array([len(tok.encode(c)) for c in caps])
  assert lengths.max() <= 24  # the longest caption fits: nothing is cut
  for row, c, n in zip(ids[:20], caps, lengths):
    assert row[n - 1] == tok.eos_token_id and (row[n:] == tok.pad_token_id).all()
    assert tok.decode(row) == c
  assert tok.eos_token_id == ids.max() == tok.vocab_size - 1  # CLIP's argmax-EOS rule holds
  assert tok.unknown_words("a golden teapot") == ["golden", "teapot"]
  # Truncation keeps the EOS, as CLIP's tokenizer does.
  short = tok(caps[0], max_length=3)["input_ids"][0]
  assert list(short) == [tok.bos_token_id, tok.encode(caps[0])[1], tok.eos_token_id]
  again = WordTokenizer.from_pretrained(tok.save_pretrained(tmp_path))
  np.testing.assert_array_equal(again(caps)["input_ids"], tok(caps)["input_ids"])


def test_pixel_autoencoder_round_trips_through_the_vae_interface():
  from instant3d_jax.models.vae import decode_chunked
  ae = PixelUnshuffleAE(PixelAEConfig(factor=4))
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 3)) * 2 - 1
  mean, logvar = ae.apply({"params": {}}, x, method="encode")
  assert mean.shape == (2, 4, 4, 48) and ae.config.latent_channels == 48
  assert 2 ** (len(ae.config.block_out_channels) - 1) == 4  # the sampler's vae_scale_factor
  # Channel layout (row offset, column offset, colour).
  np.testing.assert_array_equal(mean[0, 1, 2, 3 * (4 * 2 + 3) + 1], x[0, 4 + 2, 8 + 3, 1])
  np.testing.assert_array_equal(decode_chunked(ae, {}, mean, batch_chunk=1), x)
  z = training.latents_from_posterior(mean, logvar, jax.random.PRNGKey(1), 1.0, None)
  assert float(jnp.abs(z - mean).max()) < 1e-5
  with pytest.raises(errors.ConfigError, match="power of two"):
    PixelAEConfig(factor=3)


def test_caption_dropout_zeroes_context_and_pooled_together():
  ctx, pooled = jnp.ones((4, 3, 5)), jnp.ones((4, 7))
  keep = jnp.array([True, False, True, False])
  c, p = training.drop_captions(keep, ctx, pooled)
  np.testing.assert_array_equal(c.sum(axis=(1, 2)), [15, 0, 15, 0])
  np.testing.assert_array_equal(p.sum(axis=1), [7, 0, 7, 0])
  d = training.draw(jax.random.PRNGKey(0), (4000, 1, 1, 1), 1000, 0.1)
  assert abs(1 - float(d.keep.mean()) - 0.1) < 0.02
  assert int(d.timesteps.min()) >= 0 and int(d.timesteps.max()) <= 999
  with pytest.raises(errors.ConfigError, match="caption_dropout"):
    training.draw(jax.random.PRNGKey(0), (2, 1, 1, 1), 1000, 1.5)


def test_state_without_ema_keeps_its_tree():
  """Reconstructor states (no EMA) flatten exactly as before the `ema` field existed, so their
  checkpoints restore; a state with an EMA adds one copy of the params."""
  zero = jnp.zeros((), jnp.int32)
  fields = dict(step=zero, params={"w": jnp.ones(3)}, opt_state=(), rng=jnp.zeros(2, jnp.uint32),
                nonfinite_total=zero, nonfinite_in_a_row=zero)
  old = step_lib.TrainState(**fields)
  paths = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(old)[0]]
  assert paths == [".step", ".params['w']", ".rng", ".nonfinite_total", ".nonfinite_in_a_row"]
  with_ema = step_lib.TrainState(**fields, ema={"w": jnp.ones(3)})
  assert len(jax.tree.leaves(with_ema)) == len(jax.tree.leaves(old)) + 1


def test_config_errors_name_the_setting():
  cfg = micro_config()
  cfg.model.train_parts = ("unet", "vae")
  with pytest.raises(errors.ConfigError, match="model.train_parts"):
    mv_task.build_components(cfg)
  cfg = mv_sdxl.get_config("sdxl")
  with pytest.raises(errors.ConfigError, match="model.pretrained"):
    mv_task.build_components(cfg)
  cfg = micro_config()
  cfg.diffusion.prediction_type = "sample"
  with pytest.raises(errors.ConfigError, match="prediction_type"):
    mv_task.build_components(cfg)
  with pytest.raises(errors.ConfigError, match="variant"):
    mv_sdxl.get_config("large")
  cfg = micro_config()   # tiny trains its text encoders: a cache of their embeddings is stale
  cfg.grid.cache_dir = "CACHE"
  with pytest.raises(errors.ConfigError, match="grid.cache_dir 'CACHE' .* trains"):
    mv_task.cache_loader_factory(cfg, mv_task.build_components(cfg))


# ----------------------------------------------------------------------------------------------
# The tiny variant
# ----------------------------------------------------------------------------------------------
def test_grid_loader_batches_reach_the_step_in_pixels_form(tmp_path):
  """The procedural world through mv_grids' loader (caption-level held-out part excluded) and
  `CaptionBatches`: the keys, shapes and dtypes of `batch_spec`, captions tokenised."""
  from data_pipeline import captions as captions_lib
  from data_pipeline import datasets
  cfg = micro_config()
  cfg.data = data_config.get_config("tiny")
  cfg.data_dir = str(tmp_path / "data")
  cfg.grid.heldout = "train"
  cfg.grid.num_heldout = 2
  comps = mv_task.build_components(cfg)
  info = datasets.prepare(cfg, progress=False)
  it = mv_task.grid_loader_factory(cfg, info.data_dir)()
  raw = next(it)
  split = captions_lib.caption_split("heldout", seed=0, num_heldout=2)
  assert not [c for c in raw["caption"] if split.is_heldout(str(c))]
  it.set_state(it.get_state())
  batches = mv_task.CaptionBatches(mv_task.grid_loader_factory(cfg, info.data_dir)(), comps)
  b = next(batches)
  spec = mv_task.batch_spec(cfg, comps)
  assert {k: (v.shape, v.dtype) for k, v in b.items()} == {
      k: (v.shape, np.dtype(v.dtype)) for k, v in spec.items()}
  np.testing.assert_array_equal(b["grid"], raw["grid"])
  np.testing.assert_array_equal(b["input_ids"], comps.tokenizer(list(raw["caption"]))["input_ids"])


@pytest.mark.slow
def test_tiny_trains_on_the_grid_loader_and_samples_with_ema(tmp_path):
  """Two steps on the procedural world through mv_grids' loader (caption-level held-out part
  excluded); the EMA differs from the raw weights and drew the sample grids."""
  from data_pipeline import captions as captions_lib
  cfg = micro_config(total_steps=2, image_every=2)
  cfg.data = data_config.get_config("tiny")
  cfg.data.source = "procedural"
  cfg.data_dir = str(tmp_path / "data")
  cfg.grid.heldout = "train"
  cfg.grid.num_heldout = 2
  cfg.ema.decay = 0.5
  seen = []
  comps = mv_task.build_components(cfg)
  from data_pipeline import datasets
  info = datasets.prepare(cfg, progress=False)
  base = mv_task.grid_loader_factory(cfg, info.data_dir)

  class Spy:
    def __init__(self):
      self.it = base()

    def __next__(self):
      b = next(self.it)
      seen.extend(str(c) for c in b["caption"])
      return b

    def get_state(self):
      return self.it.get_state()

    def set_state(self, s):
      self.it.set_state(s)

  wd = tmp_path / "wd"
  res = loop.run(cfg, wd, mv_task.make_task(cfg, comps, Spy, workdir=wd), log=lambda *_: None)
  assert res.step == 2 and all(np.isfinite(h["loss"]) for h in res.history)
  split = captions_lib.caption_split("heldout", seed=0, num_heldout=2)
  assert seen and not [c for c in seen if split.is_heldout(c)]
  ema, params = host(res.state.ema), host(res.state.params)
  assert jax.tree.structure(ema) == jax.tree.structure(params)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(ema),
                                                      jax.tree.leaves(params)))
  pngs = sorted((wd / "images").glob("samples_ema_grids_*.png"))
  assert [p.name for p in pngs] == ["samples_ema_grids_0000002.png"]
  assert (wd / "images" / "sample_captions.txt").read_text().splitlines() == [
      f"row {i}: {c}" for i, c in enumerate(cfg.sample.captions)]


@pytest.mark.slow
def test_tiny_stop_and_resume_is_bit_identical_with_ema(tmp_path):
  cfg = micro_config()
  comps = mv_task.build_components(cfg)
  task = lambda: mv_task.make_task(cfg, comps, MemoryGrids, with_flops=False)
  quiet = lambda *_: None
  full = loop.run(cfg, tmp_path / "full", task(), log=quiet)
  cfg_halt = micro_config(halt_at_step=2)
  first = loop.run(cfg_halt, tmp_path / "split", task(), log=quiet)
  assert first.stop_reason == "halt_at_step" and first.step == 2
  second = loop.run(cfg, tmp_path / "split", task(), log=quiet)
  assert second.step == 4
  assert [h["loss"] for h in first.history + second.history] == [h["loss"] for h in full.history]
  for name in ("params", "ema", "opt_state"):
    a, b = host(getattr(second.state, name)), host(getattr(full.state, name))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(x, y)
  # The EMA is in the checkpoint: a restore gives it back unchanged.
  restored, data_state = ckpt_lib.Checkpointer(tmp_path / "split").restore(
      4, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                      second.state))
  assert data_state == {"pos": 4}
  for x, y in zip(jax.tree.leaves(host(restored.ema)), jax.tree.leaves(host(full.state.ema))):
    np.testing.assert_array_equal(x, y)
  # The one checkpoint entry point reads it too (what the sampler and the pipeline load).
  _, ema, step = checkpoints.load(tmp_path / "split", item="ema")
  assert step == 4
  for x, y in zip(jax.tree.leaves(ema), jax.tree.leaves(host(full.state.ema))):
    np.testing.assert_array_equal(x, y)
  with pytest.raises(errors.CheckpointError, match="holds no 'nothing'"):
    checkpoints.load(tmp_path / "split", item="nothing")


# ----------------------------------------------------------------------------------------------
# The sdxl variant on a tiny stand-in
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sdxl_variant_compiles_on_fake_devices_and_takes_a_step(tmp_path):
  """configs/mv_sdxl.py:sdxl (bf16, remat 'full', FSDP) with SDXL's block layout at tiny size
  (tests/tiny_configs.TINY_SDXL at one resnet and transformer layer per block, as the parity
  test), a tiny VAE and text encoders, FSDP over 4 fake devices: the AOT-compiled step runs once
  on pixel batches (frozen encoders inside the step), the UNet's weights are sharded over
  `fsdp`."""
  cfg = mv_sdxl.get_config("sdxl")
  text = dict(mv_sdxl._TINY_TEXT)  # pylint: disable=protected-access
  r = cfg.model.random_init
  r.unet = dict(PARITY_UNET)
  r.text_encoder = dict(text, hidden_size=16, architectures=["CLIPTextModel"])
  r.text_encoder_2 = dict(text, hidden_size=32, hidden_act="gelu", projection_dim=16,
                          architectures=["CLIPTextModelWithProjection"])
  r.vae = dict(TINY_VAE)
  cfg.model.tokenizer = "word"
  cfg.grid.view_resolution = 16
  cfg.mesh.update(dict(data=1, fsdp=4))
  cfg.train.update(dict(total_steps=1, global_batch_size=4, image_every=0, log_every=1))
  cfg.optimizer.warmup_steps = 0
  cfg.checkpoint.every_steps = 0
  assert cfg.model.dtype == "bfloat16" and cfg.model.remat == "full"
  comps = mv_task.build_components(cfg)
  res = loop.run(cfg, tmp_path, mv_task.make_task(
      cfg, comps, lambda: MemoryGrids(side=32), with_flops=False), log=lambda *_: None)
  assert res.step == 1 and np.isfinite(res.history[0]["loss"])
  kernel = res.state.params["unet"]["conv_in"]["kernel"]
  assert "fsdp" in str(kernel.sharding.spec) and len(kernel.sharding.device_set) == 4


@pytest.mark.slow
def test_sdxl_weights_folder_initialises_the_unet_and_ema(tmp_path):
  """`model.pretrained` (a diffusers SDXL folder, through convert/sdxl_pipeline.py): at step 0
  the trained UNet and its EMA are the folder's weights, the frozen text encoders and VAE come
  from it too, and its CLIP tokenizers are used."""
  from instant3d_jax.configs import sdxl as sdxl_config
  from instant3d_jax.convert import sdxl_pipeline
  scfg = sdxl_config.get_config("tiny")
  tok = sdxl_pipeline.write_toy_tokenizer(tmp_path / "tok", int(scfg.random_init.tokenizer_max_length))
  pipe = sdxl_pipeline.init_random_pipeline(scfg.random_init, tok, tok, seed=3)
  sdxl_pipeline.save_pipeline(tmp_path / "sdxl", pipe)
  cfg = mv_sdxl.get_config("sdxl")
  cfg.model.pretrained = str(tmp_path / "sdxl")
  cfg.model.update(dict(dtype="float32", remat="none"))
  cfg.grid.view_resolution = 16
  cfg.train.update(dict(total_steps=0, global_batch_size=4, image_every=0))
  cfg.optimizer.update(dict(warmup_steps=1, decay_steps=10))
  comps = mv_task.build_components(cfg)
  assert comps.tokenizer.model_max_length == 16 and sorted(comps.frozen) == [
      "text_encoder", "text_encoder_2", "vae"]
  res = loop.run(cfg, tmp_path / "wd", mv_task.make_task(cfg, comps, MemoryGrids,
                                                         with_flops=False), log=lambda *_: None)
  want = host(pipe.params["unet"])
  for tree in (res.state.params["unet"], res.state.ema["unet"]):
    for x, y in zip(jax.tree.leaves(host(tree)), jax.tree.leaves(want)):
      np.testing.assert_array_equal(x, y)
  for x, y in zip(jax.tree.leaves(comps.frozen["text_encoder_2"]),
                  jax.tree.leaves(host(pipe.params["text_encoder_2"]))):
    np.testing.assert_array_equal(x, y)


def test_command_reports_a_bad_setting_in_one_line(tmp_path):
  """`python -m instant3d_jax.train_mvdiffusion` (absl + cli.run): a bad config value exits
  non-zero with one `error:` line naming it, and leaves the workdir unclaimed."""
  import os
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-m", "instant3d_jax.train_mvdiffusion",
                      "--config", os.path.join(root, "configs/mv_sdxl.py:tiny"),
                      "--workdir", str(tmp_path / "wd"),
                      "--config.diffusion.prediction_type=sample"],
                     cwd=root, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 2, r.stderr[-2000:]
  lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "diffusion.prediction_type" in lines[0], r.stderr[-2000:]
  assert not (tmp_path / "wd").exists()


def test_state_shardings_keep_indivisible_dimensions_whole():
  """SDXL's 4-channel conv_out bias under an 8-way fsdp rule: the derived state sharding keeps
  that dimension whole (it cannot be split 8 ways); divisible ones stay sharded."""
  from jax.sharding import NamedSharding, PartitionSpec as P
  from instant3d_jax.base import sharding as shard_lib
  mesh = jax.make_mesh((1, 4), ("data", "fsdp"))
  fit = lambda spec, shape: shard_lib.fit_sharding(NamedSharding(mesh, spec), shape).spec
  assert fit(P("fsdp"), (6,)) == P(None)
  assert fit(P(None, "fsdp"), (3, 8)) == P(None, "fsdp")
  assert fit(P(("data", "fsdp")), (2,)) == P(None)


def test_latent_cache_batches_reach_the_step_in_cached_form(tmp_path):
  """A frozen-encoder cache (data_pipeline/latent_cache.py) written with the run's own autoencoder
  and text encoders, read through `grid.cache_dir`: the keys and shapes of the cached
  `batch_spec`, and the context equals the step's own encoding of the caption."""
  from data_pipeline import datasets
  from data_pipeline import latent_cache
  from instant3d_jax.diffusion import stage1
  cfg = micro_config()
  cfg.model.train_parts = ("unet",)   # a cache needs frozen text encoders (tiny trains them)
  cfg.data = data_config.get_config("tiny")
  cfg.data_dir = str(tmp_path / "data")
  comps = mv_task.build_components(cfg)
  info = datasets.prepare(cfg, progress=False)
  pipe = mv_task.sampling_pipeline(comps, {"unet": {}})
  latent_cache.write_cache(info.data_dir, str(tmp_path / "cache"),
                           stage1.encoders_from_pipeline(pipe), splits=["train"],
                           batch_size=4, resolution=8, progress=False)
  cfg.grid.cache_dir = str(tmp_path / "cache")
  b = next(mv_task.cache_loader_factory(cfg, comps)())
  spec = mv_task.batch_spec(cfg, comps, cached=True)
  assert sorted(spec) == ["context", "latents", "latents_std", "pooled"]
  assert {k: (v.shape, v.dtype) for k, v in b.items()} == {
      k: (v.shape, np.dtype(v.dtype)) for k, v in spec.items()}
  grids = next(mv_task.grid_loader_factory(cfg, info.data_dir)())  # same seed → same objects
  ids1, ids2 = mv_task.tokenize(comps, grids["caption"])
  ctx, pooled = mv_task.encode_text(comps, comps.frozen["text_encoder"],
                                    comps.frozen["text_encoder_2"], ids1, ids2)
  np.testing.assert_allclose(b["context"], ctx, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(b["pooled"], pooled, rtol=1e-5, atol=1e-5)
