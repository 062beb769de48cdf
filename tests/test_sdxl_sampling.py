"""SDXL four-view sampling on a tiny random pipeline: grid/view layout, the jitted CFG loop vs a
step-by-step reference with diffusers' scheduler, batching/mesh invariance, pipeline folders
(diffusers layout and single file), stage 1 end to end (diffusion.stage1, which the
text_to_views command runs) and the command's own start-up and errors."""
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax.traverse_util import flatten_dict

from instant3d_jax.configs import sdxl as sdxl_config
from instant3d_jax import errors
from instant3d_jax.convert import diffusers_sdxl
from instant3d_jax.convert import safetensors_io as sio
from instant3d_jax.convert import sdxl_pipeline
from instant3d_jax.diffusion import stage1
from instant3d_jax.diffusion import sampling
from tests import tolerance

STEPS = 3
PROMPTS = ["a red cat", "a blue dog"]


@pytest.fixture(scope="module")
def cfg():
  return sdxl_config.get_config("tiny")


@pytest.fixture(scope="module")
def pipe(cfg, tmp_path_factory):
  tmp = tmp_path_factory.mktemp("tok")
  n = cfg.random_init.tokenizer_max_length
  return sdxl_pipeline.init_random_pipeline(
      cfg.random_init, sdxl_pipeline.write_toy_tokenizer(tmp / "tokenizer", n),
      sdxl_pipeline.write_toy_tokenizer(tmp / "tok2", n), seed=0)


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory):
  folder = tmp_path_factory.mktemp("sdxl_tiny")
  sdxl_pipeline.save_pipeline(folder, pipe)
  return folder


def data_mesh():
  from jax.sharding import Mesh
  return Mesh(np.array(jax.devices()[:4]).reshape(4, 1, 1), ("data", "fsdp", "tensor"))


@pytest.fixture(scope="module")
def result(pipe, cfg):
  """Two prompts sharded over 4 fake devices (padded to 4), with a progress hook: the same
  compiled loop the CLI test reuses (equal module configs share the jit cache)."""
  seen = []
  settings = sampling.SamplerSettings(num_steps=STEPS, height=cfg.sampler.height,
                                      width=cfg.sampler.width)
  res = sampling.generate_views(pipe, PROMPTS, jax.random.PRNGKey(7), settings,
                                mesh=data_mesh(), progress=seen.append)
  return res, seen


# 12–25 s (XLA:CPU compiles the FSDP-partitioned loop slowly); kept in `make test` so the sharded
# sampling path runs on every CI run.
def test_fsdp_sharded_sampling_matches_replicated(pipe, cfg):
  """configs/sdxl.py's logical rules on a data 2 × fsdp 2 mesh: the UNet, VAE and text encoders
  are FSDP-sharded (derived from their logical names), two prompts are padded to 4 = data ×
  fsdp, and the latents equal the replicated (data-only) run's within 1e-5 relative. (The
  replicated run has the `result` fixture's arguments, so it shares its compiled loop.)"""
  from jax.sharding import Mesh
  mesh = Mesh(np.array(jax.devices()[:4]).reshape(2, 2, 1), ("data", "fsdp", "tensor"))
  rules = cfg.logical_axis_rules
  placement = sampling.Placement(mesh, tuple((k, v) for k, v in rules))
  assert placement.batch_shards == 4
  sharded = sampling.shard_params(pipe, placement)
  for comp in sampling.COMPONENTS:
    specs = [leaf.sharding.spec for leaf in jax.tree.leaves(sharded[comp])]
    assert any("fsdp" in str(sp) for sp in specs), comp  # really split over fsdp
    a, b = jax.tree.leaves(pipe.params[comp]), jax.tree.leaves(sharded[comp])
    assert all(np.array_equal(x, y) for x, y in zip(a, b)), comp
  st = sampling.SamplerSettings(num_steps=STEPS, height=cfg.sampler.height,
                                width=cfg.sampler.width)
  want = sampling.sample_latents(pipe, PROMPTS, jax.random.PRNGKey(7), st, mesh=data_mesh(),
                                 progress=lambda i: None)
  got = sampling.sample_latents(pipe, PROMPTS, jax.random.PRNGKey(7), st, mesh=mesh,
                                logical_axis_rules=rules, progress=lambda i: None)
  assert got.shape == want.shape == (2, 16, 16, 4)
  err = tolerance.measure(got, want, "rel")
  print(f"fsdp 2 × data 2 vs replicated latents: rel err {err:.2e}")
  tolerance.within("sdxl_sampling.fsdp_2_data_2_vs_replicated", got, want, 1e-5, "rel")


def test_grid_and_views_round_trip_in_rig_order():
  colours = np.arange(4 * 3, dtype=np.float32).reshape(4, 1, 1, 3) / 12
  views = np.broadcast_to(colours, (4, 5, 6, 3)).copy()
  views[2, 0, 0] = 0.99  # break the symmetry inside a view too
  grid = np.asarray(sampling.make_grid(views))
  assert grid.shape == (10, 12, 3)
  np.testing.assert_array_equal(grid[:5, :6], views[0])  # top-left: az 0
  np.testing.assert_array_equal(grid[:5, 6:], views[1])  # top-right: az 90
  np.testing.assert_array_equal(grid[5:, :6], views[2])  # bottom-left: az 180
  np.testing.assert_array_equal(grid[5:, 6:], views[3])  # bottom-right: az 270
  np.testing.assert_array_equal(sampling.split_grid(grid), views)
  batch = np.stack([grid, grid[::-1]])
  np.testing.assert_array_equal(sampling.make_grid(sampling.split_grid(batch)), batch)


def test_generate_views_shapes_and_rig_order(result, cfg):
  result, seen = result
  assert sorted(set(seen)) == list(range(STEPS))  # progress hook called once per step
  h, w = cfg.sampler.height, cfg.sampler.width
  assert result.grid.shape == (2, h, w, 3) and result.views.shape == (2, 4, h // 2, w // 2, 3)
  assert result.grid.min() >= 0 and result.grid.max() <= 1
  np.testing.assert_array_equal(result.views[:, 1], result.grid[:, :h // 2, w // 2:])
  np.testing.assert_array_equal(result.views[:, 2], result.grid[:, h // 2:, :w // 2])
  assert np.abs(result.grid[0] - result.grid[1]).max() > 1e-3  # prompts/noise differ


@pytest.fixture(scope="module")
def ref_pipe(saved):
  """diffusers' own StableDiffusionXLPipeline (PyTorch) on the saved tiny folder, DDIM."""
  import diffusers
  p = diffusers.StableDiffusionXLPipeline.from_pretrained(str(saved))
  p.scheduler = diffusers.DDIMScheduler.from_config(p.scheduler.config)
  p.set_progress_bar_config(disable=True)
  return p


def _reference_loop(ref_pipe, prompts, key, steps, height, width, negative=None):
  """The blob-start CFG sampler written step by step in PyTorch with diffusers' components:
  `encode_prompt` (zero or negative-prompt unconditional embeddings), the diffusers UNet and
  VAE, DDIMScheduler `add_noise` to the first timestep and `step`."""
  from instant3d_jax.diffusion import blob as blob_lib
  sched = ref_pipe.scheduler
  sched.set_timesteps(steps)
  b = len(prompts)
  with torch.no_grad():
    ctx, ctx_u, pooled, pooled_u = ref_pipe.encode_prompt(
        prompts, do_classifier_free_guidance=True, negative_prompt=negative)
    ctx2, pooled2 = torch.cat([ctx_u, ctx]), torch.cat([pooled_u, pooled])
    tids = torch.tensor([[height, width, 0, 0, height, width]] * (2 * b), dtype=torch.float32)
    image = torch.from_numpy(blob_lib.blob_image(height, width)).permute(2, 0, 1)[None] * 2 - 1
    clean = ref_pipe.vae.encode(image).latent_dist.mean * ref_pipe.vae.config.scaling_factor
    f = 2 ** (len(ref_pipe.vae.config.block_out_channels) - 1)
    noise, _ = sampling.initial_noise(key, 0, b, (height // f, width // f, 4))
    noise = torch.from_numpy(np.array(noise).transpose(0, 3, 1, 2))
    x = sched.add_noise(clean.expand(b, -1, -1, -1), noise, sched.timesteps[:1])
    for t in sched.timesteps:
      out = ref_pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=ctx2,
                          added_cond_kwargs={"text_embeds": pooled2, "time_ids": tids}).sample
      x = sched.step(out[:b] + 5.0 * (out[b:] - out[:b]), t, x).prev_sample
    img = ref_pipe.vae.decode(x / ref_pipe.vae.config.scaling_factor).sample
  return np.clip(img.permute(0, 2, 3, 1).numpy() / 2 + 0.5, 0, 1)


@pytest.mark.parametrize("negative", [None, "blurry"])
def test_jitted_sharded_loop_matches_step_by_step_reference(pipe, ref_pipe, result, cfg,
                                                            negative):
  """The jitted, mesh-sharded, padded CFG loop from the blob start equals a per-step PyTorch
  loop of diffusers' components (so also: batch padding and sharding change nothing), with the
  zero unconditional embeddings and with a negative prompt."""
  h, w = cfg.sampler.height, cfg.sampler.width
  if negative is None:
    grid = result[0].grid
  else:
    st = sampling.SamplerSettings(num_steps=STEPS, height=h, width=w, negative_prompt=negative)
    grid = sampling.generate_views(pipe, PROMPTS, jax.random.PRNGKey(7), st, mesh=data_mesh(),
                                   progress=lambda i: None).grid
  ref = _reference_loop(ref_pipe, PROMPTS, jax.random.PRNGKey(7), STEPS, h, w, negative)
  err = np.abs(grid - ref).max()
  print(f"generate_views (blob start, mesh data=4, negative={negative!r}) vs per-step diffusers "
        f"PyTorch reference: max abs err {err:.2e}")
  assert err <= 1e-4
  if negative is not None:
    assert np.abs(grid - result[0].grid).max() > 1e-3  # the negative prompt did change things


def test_pipeline_folder_round_trip_and_single_file(pipe, saved, tmp_path):
  loaded = sdxl_pipeline.load_pipeline(saved)
  for comp in sampling.COMPONENTS:
    a, b = flatten_dict(pipe.params[comp], sep="/"), flatten_dict(loaded.params[comp], sep="/")
    assert sorted(a) == sorted(b), comp
    assert all(np.array_equal(a[k], b[k]) for k in a), comp
  assert loaded.scheduler_config == pipe.scheduler_config
  ids = loaded.tokenizer(["a red cat"], padding="max_length", max_length=16)["input_ids"]
  assert ids[0][:4] == pipe.tokenizer(["a red cat"], padding="max_length",
                                      max_length=16)["input_ids"][0][:4]
  # Re-export is bit-exact.
  sdxl_pipeline.save_pipeline(tmp_path / "again", loaded)
  for comp in ("unet", "vae", "text_encoder", "text_encoder_2"):
    f1, f2 = sio.find_weights(saved / comp)[0], sio.find_weights(tmp_path / "again" / comp)[0]
    a, b = sio.read_safetensors(f1, None), sio.read_safetensors(f2, None)
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a), comp
  # Single-file layout: the same params from one file + the folder's configs/tokenizers.
  sdxl_pipeline.save_single_file(tmp_path / "sdxl.safetensors", pipe)
  single = sdxl_pipeline.load_single_file_pipeline(tmp_path / "sdxl.safetensors", saved)
  for comp in sampling.COMPONENTS:
    a, b = flatten_dict(pipe.params[comp], sep="/"), flatten_dict(single.params[comp], sep="/")
    assert all(np.array_equal(a[k], b[k]) for k in a), comp


def _run_module(module, *args):
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                        timeout=180)


def test_single_file_export_command_round_trips_through_diffusers(pipe, saved, tmp_path):
  """`python -m instant3d_jax.convert --weights FOLDER --out X.safetensors` writes the original
  single-file layout; diffusers' own `StableDiffusionXLPipeline.from_single_file` (offline, with a
  config folder that holds no weights) reads back every tensor of every component exactly, and
  so does our loader. The command refuses to replace an existing file."""
  import shutil
  import diffusers
  out = tmp_path / "sdxl.safetensors"
  r = _run_module("instant3d_jax.convert", "--weights", str(saved), "--out", str(out))
  assert r.returncode == 0, r.stderr
  configs = tmp_path / "configs"  # configs, tokenizers, scheduler: no weights at all
  shutil.copytree(saved, configs, ignore=shutil.ignore_patterns("*.safetensors"))
  ref = diffusers.StableDiffusionXLPipeline.from_pretrained(str(saved))
  got = diffusers.StableDiffusionXLPipeline.from_single_file(str(out), config=str(configs),
                                                              local_files_only=True)
  for comp in sampling.COMPONENTS:
    a, b = getattr(ref, comp).state_dict(), getattr(got, comp).state_dict()
    assert sorted(a) == sorted(b), comp
    assert all(torch.equal(a[k], b[k]) for k in a), comp
  ours = sdxl_pipeline.load_single_file_pipeline(out, configs)
  for comp in sampling.COMPONENTS:
    fa, fb = flatten_dict(pipe.params[comp], sep="/"), flatten_dict(ours.params[comp], sep="/")
    assert sorted(fa) == sorted(fb) and all(np.array_equal(fa[k], fb[k]) for k in fa), comp
  before = out.read_bytes()
  r = _run_module("instant3d_jax.convert", "--weights", str(saved), "--out", str(out))
  assert r.returncode != 0 and "already exists" in r.stderr and "Traceback" not in r.stderr
  assert out.read_bytes() == before


def test_sparse_scheduler_config_survives_save_and_load(pipe, tmp_path):
  """A scheduler config without clip_sample/set_alpha_to_one (as diffusers' Euler writes it)
  is saved without them, so DDIM keeps reading its class defaults after a reload."""
  import dataclasses
  from instant3d_jax.diffusion import schedulers
  sparse = {k: v for k, v in schedulers.SDXL_SCHEDULER_CONFIG.items()
            if k not in ("clip_sample", "set_alpha_to_one")}
  p = dataclasses.replace(pipe, scheduler_config=schedulers.SchedulerConfig.from_diffusers(sparse))
  sdxl_pipeline.save_pipeline(tmp_path / "p", p)
  written = json.loads((tmp_path / "p" / "scheduler" / "scheduler_config.json").read_text())
  assert "clip_sample" not in written and "set_alpha_to_one" not in written
  loaded = sdxl_pipeline.load_scheduler_config(tmp_path / "p" / "scheduler")
  assert loaded == p.scheduler_config
  ddim = loaded.for_kind("ddim")
  assert ddim.clip_sample and ddim.set_alpha_to_one and ddim.beta_schedule == "scaled_linear"


def test_missing_component_is_named(saved, tmp_path):
  import shutil
  broken = tmp_path / "broken"
  shutil.copytree(saved, broken)
  shutil.rmtree(broken / "text_encoder_2")
  with pytest.raises(sio.WeightsError, match=r"lacks component folder\(s\) \['text_encoder_2'\]"):
    sdxl_pipeline.load_pipeline(broken)
  (broken / "vae" / "diffusion_pytorch_model.safetensors").unlink()
  with pytest.raises(sio.WeightsError, match=r"no safetensors weights in .*vae"):
    diffusers_sdxl.load_vae(broken / "vae")


def test_sample_to_folder_end_to_end(cfg, saved, result, tmp_path):
  out = tmp_path / "out"
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("a red cat\n\na blue dog\n")
  pipeline = stage1.load_pipeline(cfg, saved)
  stage1.sample_to_folder(
      cfg, pipeline, stage1.read_prompts(None, prompts), out, weights=str(saved),
      options=stage1.Options(num_samples=1, steps=STEPS, seed=7),
      placement=sampling.Placement(data_mesh()))
  run = json.loads((out / "run.json").read_text())
  assert run["prompts"] == PROMPTS and run["seed"] == 7 and run["steps"] == STEPS
  assert run["versions"]["jax"] == jax.__version__
  assert [s["prompt"] for s in run["samples"]] == PROMPTS
  from PIL import Image
  grid = np.asarray(Image.open(out / "0001_grid.png"))
  view3 = np.asarray(Image.open(out / "0001_view3_az270.png"))
  assert grid.shape == (32, 32, 3) and view3.shape == (16, 16, 3)
  np.testing.assert_array_equal(view3, grid[16:, 16:])
  # Same seed, prompts and sampler as the `result` fixture: the same pictures.
  from instant3d_jax.export.images import to_uint8
  assert np.abs(grid.astype(int) - to_uint8(result[0].grid[1]).astype(int)).max() <= 1


def test_run_options_resolve_to_typed_sampler_settings(cfg):
  """`Options.settings`: configs/sdxl.py's `sampler` and `blob` sections with the run's
  overrides, as the one `SamplerSettings` the sampler takes ('' negative prompt = none)."""
  from instant3d_jax.diffusion import blob
  got = stage1.Options(steps=3, guidance_scale=2.5, scheduler="euler").settings(cfg)
  s, b = cfg.sampler, cfg.blob
  assert got == sampling.SamplerSettings(
      num_steps=3, guidance_scale=2.5, scheduler="euler", init=s.init, eta=s.eta,
      height=s.height, width=s.width, negative_prompt=None,
      blob=blob.BlobConfig(std=b.std, value=b.value, background=b.background,
                           init_strength=b.init_strength))
  assert stage1.Options(negative_prompt="blurry").settings(cfg).negative_prompt == "blurry"
  assert stage1.Options().settings(cfg).num_steps == s.num_steps
  with pytest.raises(errors.ConfigError, match=r"generate_views: init must be one of"):
    sampling.sample_latents(None, ["a"], jax.random.PRNGKey(0),
                            sampling.SamplerSettings(init="zeros"))


@pytest.mark.parametrize("kind,arg,message", [
    ("prompts", (None, "{empty}"), "has no prompts"),
    ("prompts", ("   ", None), "--prompt is empty"),
    ("prompts", ("a", "{empty}"), "exactly one of --prompt or --prompts_file"),
    ("options", dict(scheduler="plms"), "--scheduler must be one of"),
    ("options", dict(steps=-2), "--steps must be >= 1"),
    ("options", dict(num_samples=0), "--num_samples must be >= 1"),
    ("weights", "/nonexistent/sdxl", "does not exist"),
])
def test_generate_bad_inputs_are_named(cfg, tmp_path, kind, arg, message):
  empty = tmp_path / "empty.txt"
  empty.write_text("\n  \n")
  with pytest.raises(errors.Instant3DError, match=message):
    if kind == "prompts":
      stage1.read_prompts(*[a.format(empty=empty) if a else a for a in arg])
    elif kind == "options":
      stage1.Options(**arg).settings(cfg)
    else:
      stage1.load_pipeline(cfg, arg)


def _command(*args):
  return subprocess.run([sys.executable, "-m", "instant3d_jax.text_to_views", *args],
                        capture_output=True, text=True, timeout=120)


def test_command_help_and_bad_weights_exit(tmp_path):
  """`--help` works (absl flags on the global FlagValues); a bad `--weights` prints one
  `error:` line, no traceback, exit ≠ 0, and writes nothing."""
  r = _command("--help")
  assert r.returncode == 0, r.stderr
  assert "--weights" in r.stdout + r.stderr and "--prompts_file" in r.stdout + r.stderr
  r = _command("--config", "configs/sdxl.py:tiny", "--weights", "/nonexistent/sdxl", "--prompt",
               "a cat", "--out", str(tmp_path / "o"), "--noprogress")
  assert r.returncode != 0
  err_lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert len(err_lines) == 1 and "/nonexistent/sdxl does not exist" in err_lines[0], r.stderr
  assert "Traceback" not in r.stderr
  assert not (tmp_path / "o").exists()


def test_matches_diffusers_sdxl_pipeline_end_to_end(pipe, ref_pipe, cfg):
  """The saved folder run by diffusers' StableDiffusionXLPipeline itself (PyTorch, DDIM, same
  start noise, zero unconditional embeddings, CFG 5) gives the same grid as generate_views."""
  h, w = cfg.sampler.height, cfg.sampler.width
  st = sampling.SamplerSettings(num_steps=STEPS, height=h, width=w, init="noise")
  got = sampling.generate_views(pipe, PROMPTS, jax.random.PRNGKey(11), st, mesh=data_mesh(),
                                progress=lambda i: None).grid
  f = pipe.vae_scale_factor
  noise, _ = sampling.initial_noise(jax.random.PRNGKey(11), 0, 2, (h // f, w // f, 4))
  with torch.no_grad():
    ref = ref_pipe(PROMPTS, height=h, width=w, num_inference_steps=STEPS, guidance_scale=5.0,
                   latents=torch.from_numpy(np.array(noise).transpose(0, 3, 1, 2)),
                   output_type="np").images
  err = np.abs(got - ref).max()
  print(f"generate_views vs diffusers StableDiffusionXLPipeline (DDIM, {STEPS} steps): "
        f"max abs err {err:.2e}")
  assert ref.shape == got.shape and err <= 1e-4
