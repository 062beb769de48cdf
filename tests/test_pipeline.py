"""Text to 3D end to end (instant3d_jax/pipeline.py, the `text_to_3d` command) on tiny random
weights saved with the project's own writers: a stage-1 `train_mvdiffusion` workdir written by
the trainer at step 0 (tests/test_train_mv.py's micro config) and a stage-2 `.safetensors` (as
tests/test_reconstruct.py). Eight prompts in one jitted batch; the same run sharded over 4 fake
CPU devices (conftest.py) gives the same grids; missing weights fail in one line before any
compute."""
import json
import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest
from PIL import Image

from instant3d_jax.configs import instant3d
from instant3d_jax import errors
from instant3d_jax import pipeline as pipeline_lib
from instant3d_jax.convert import lrm as convert_lrm
from instant3d_jax.models import lrm
from instant3d_jax.train import loop, mv_task
from tests import test_train_mv, tiny_configs
from tests import tolerance

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["a red cube", "a blue sphere", "a small green cone", "a large yellow cylinder",
           "a purple ring", "an orange cube", "a red sphere and a blue cube", "a white cone"]


def _stage1_workdir(path):
  """A `train_mvdiffusion` workdir written with the trainer's own checkpointer (config.json +
  an orbax step holding the TrainState with its EMA) for the micro config of
  tests/test_train_mv.py; the weights are drawn with numpy (compiling the trainer's init and
  step costs a minute on this CPU)."""
  from instant3d_jax.convert import diffusers_sdxl, sdxl_pipeline
  from instant3d_jax.base import checkpoint as ckpt_lib
  from instant3d_jax.train import step as step_lib
  cfg = test_train_mv.micro_config(total_steps=0)
  cfg.model.train_parts = ("unet",)   # the EMA below holds the UNet only (encoders frozen)
  comps = mv_task.build_components(cfg)
  unet = sdxl_pipeline.random_params(diffusers_sdxl.unet_abstract_params(comps.unet.config), 7)
  zero = np.zeros((), np.int32)
  state = step_lib.TrainState(step=zero, params={"unet": unet}, opt_state=(),
                              rng=np.zeros(2, np.uint32), nonfinite_total=zero,
                              nonfinite_in_a_row=zero, ema={"unet": unet})
  ckpt_lib.check_or_write_config(path, cfg, ())
  ckpt = ckpt_lib.Checkpointer(path, use_async=False)
  ckpt.save(0, state, {}, cfg)
  ckpt.close()
  return path


def _stage2_safetensors(path):
  from instant3d_jax.convert import sdxl_pipeline
  cfg = tiny_configs.micro_lrm(**{"render.num_samples": 4, "render.num_importance": 4})
  params = sdxl_pipeline.random_params(nn.meta.unbox(lrm.abstract_params(cfg)), 0)
  last = params["nerf"]["dense_2"]  # a density that varies over space: marching cubes finds a
  last["kernel"] = np.asarray(last["kernel"]).copy()  # surface (as tests/test_reconstruct.py)
  last["kernel"][:, 0] *= 200.0
  convert_lrm.save_lrm(path, params, cfg)
  return path


@pytest.fixture(scope="session")
def text3d_weights(tmp_path_factory):
  """(stage-1 workdir, stage-2 .safetensors): tiny random weights (also used by test_app.py)."""
  root = tmp_path_factory.mktemp("text3d_weights")
  return (str(_stage1_workdir(root / "mv")), str(_stage2_safetensors(root / "lrm.safetensors")))


def tiny_config(stage1, stage2):
  cfg = instant3d.get_config("tiny")
  cfg.stage1.weights, cfg.stage2.weights = stage1, stage2
  cfg.stage1.sample.num_steps = 2
  cfg.export.update(dict(turntable_frames=4, mesh_resolution=16))
  return cfg


@pytest.fixture(scope="module")
def one_device_run(text3d_weights, tmp_path_factory):
  cfg = tiny_config(*text3d_weights)
  pipe = pipeline_lib.TextTo3D.load(cfg, devices=jax.devices()[:1], log=lambda *_: None)
  out = tmp_path_factory.mktemp("gen1")
  pipeline_lib.generate_to_folder(pipe, PROMPTS, out, seed=3, save_float=True,
                                  log=lambda *_: None)
  return pipe, out


def test_eight_prompts_in_one_jitted_batch(one_device_run):
  pipe, out = one_device_run
  assert pipe.batches == 1 and pipe.batch_size == 8 and pipe.num_devices == 1
  run = json.loads((out / "run.json").read_text())
  assert [(p["index"], p["prompt"], p["dir"]) for p in run["prompts"]] == [
      (i, p, f"{i:04d}") for i, p in enumerate(PROMPTS)]
  assert run["seed"] == 3 and run["batches"] == 1 and run["stage1"]["kind"] == "workdir"
  assert run["stage1"]["step"] == 0 and run["stage1"]["steps"] == 2
  assert {"stage1_s", "stage2_s", "host_s", "total_s"} <= set(run["timings"])
  assert run["versions"]["jax"] == jax.__version__
  expect = {"prompt.txt", "grid.png", "grid.npy", "triplane.npz", "turntable.gif",
            "turntable.mp4", "turntable_strip.png", "mesh.glb", "mesh.obj", "mesh.ply",
            "renders/inputs_vs_renders.png"} | {f"view_{i}.png" for i in range(4)} | {
                f"renders/input_{i}.png" for i in range(4)}
  for i, p in enumerate(PROMPTS):
    d = out / f"{i:04d}"
    assert {q.relative_to(d).as_posix() for q in d.rglob("*") if q.is_file()} == expect
    assert (d / "prompt.txt").read_text() == p + "\n"
    grid = np.load(d / "grid.npy")
    assert grid.shape == (16, 16, 3) and 0 <= grid.min() and grid.max() <= 1
    tri = np.load(d / "triplane.npz")  # reconstruct's format (eval_text3d reads it)
    assert sorted(tri.files) == ["config", "plane_order", "planes"]
    assert tri["planes"].shape == (3, 8, 8, 8) and list(tri["plane_order"]) == ["XY", "XZ", "YZ"]
    assert json.loads(str(tri["config"]))["model"]["input_resolution"] == 16
    v1 = np.asarray(Image.open(d / "view_1.png"))
    np.testing.assert_array_equal(v1, np.asarray(Image.open(d / "grid.png"))[:8, 8:])
  # Prompts differ → grids differ (each sample has its own noise).
  g = [np.load(out / f"{i:04d}" / "grid.npy") for i in range(8)]
  assert not np.allclose(g[0], g[1])
  # The trainer's own sample grids (mv_task.sample_grids: EMA weights, config.sample) of the
  # same prompts, seed and steps are these grids.
  from instant3d_jax.convert import checkpoints
  mv_cfg, ema, _ = checkpoints.load(pipe.config.stage1.weights, item="ema")
  mv_cfg.sample.update(dict(num_steps=2, seed=3, per_caption=1))
  ref = mv_task.sample_grids(mv_cfg, mv_task.build_components(mv_cfg), ema, PROMPTS)
  tolerance.within("pipeline.grids_vs_trainer_sample_grids", np.stack(g), ref, 1e-5)
  page = (out / "index.html").read_text()
  for i in range(8):
    for f in ("grid.png", "turntable.gif", "mesh.glb"):
      assert f'"{i:04d}/{f}"' in page
  assert "http://" not in page and "https://" not in page and "<script" not in page


def test_sharded_over_four_devices_matches_one_device(one_device_run, text3d_weights, tmp_path):
  """The same 8 prompts over 4 fake CPU devices (`data` = 4, 2 prompts each): grids within 1e-4
  of the 1-device run and identical 8-bit PNGs; the batch is still one jitted call."""
  assert len(jax.devices()) >= 4
  _, out1 = one_device_run
  cfg = tiny_config(*text3d_weights)
  pipe = pipeline_lib.TextTo3D.load(cfg, devices=jax.devices()[:4], log=lambda *_: None)
  assert dict(pipe.placement.mesh.shape)["data"] == 4
  res = pipe(PROMPTS, jax.random.PRNGKey(3))
  assert pipe.batches == 1 and len(res) == 8
  # The same per-device work on one device (batches of 2): XLA:CPU then runs the same kernels
  # on the same shapes, so the grids are bitwise equal and so are their 8-bit PNGs. (Against
  # the batch of 8 on one device they agree within 1e-4 — measured up to 1.4e-5 under
  # --xla_cpu_max_isa=SSE4_2, 7.4e-6 to 9.7e-6 under AVX to AVX-512, any CPU count
  # (bench/results/tolerances.md), while a grid of another prompt (what a mixed-up shard
  # would give) differs by more than 100× the bound, checked below — and rounding to 8 bits
  # can then still flip a value that lies that close to a step.)
  assert min(float(np.abs(res[i].grid - res[i + 1].grid).max()) for i in range(7)) > 1e-2
  cfg2 = tiny_config(*text3d_weights)
  cfg2.batch_size = 2
  pipe2 = pipeline_lib.TextTo3D.load(cfg2, devices=jax.devices()[:1], log=lambda *_: None)
  res2 = pipe2(PROMPTS, jax.random.PRNGKey(3))
  from instant3d_jax.export import images as images_lib
  for r, r2 in zip(res, res2):
    ref = np.load(out1 / f"{r.index:04d}" / "grid.npy")
    tolerance.within("pipeline.grid_4_devices_vs_1_device_batch_8", r.grid, ref, 1e-4)
    np.testing.assert_array_equal(r.grid, r2.grid)
    np.testing.assert_array_equal(images_lib.png_bytes(r.grid), images_lib.png_bytes(r2.grid))
    tolerance.within("pipeline.planes_4_devices_vs_1_device_batch_2", r.planes, r2.planes, 1e-5)
    # The reconstructor amplifies the grids' ≤ 1e-4 differences of the batch-of-8 run.
    ref_planes = np.load(out1 / f"{r.index:04d}" / "triplane.npz")["planes"]
    np.testing.assert_allclose(r.planes, ref_planes, atol=1e-3)
  # Results do not depend on how the prompts are cut into batches: the 9th prompt (a second
  # padded batch) gets the grid it would get alone at index 8.
  more = pipe(PROMPTS + ["a green cube"], jax.random.PRNGKey(3))
  assert pipe.batches == 2 and [r.prompt for r in more][-1] == "a green cube"
  tolerance.within("pipeline.grid_two_batches_vs_one", more[3].grid, res[3].grid, 1e-6)


def test_missing_or_wrong_weights_fail_before_compute(text3d_weights, tmp_path):
  s1, s2 = text3d_weights
  cases = [
      (tiny_config(str(tmp_path / "nope"), s2), r"stage1.weights .*nope' does not exist"),
      (tiny_config(s1, str(tmp_path / "nope.safetensors")),
       r"stage2.weights .*nope.safetensors' does not exist"),
      (tiny_config("", s2), r"stage1.weights is empty"),
      (tiny_config(str(tmp_path), s2), r"neither model_index.json .* nor checkpoints/"),
      (tiny_config(s1, s1), r"stage2.weights.*not a reconstructor"),
  ]
  for cfg, pattern in cases:
    with pytest.raises(errors.Instant3DError, match=pattern) as e:
      pipeline_lib.TextTo3D.load(cfg, devices=jax.devices()[:1], log=lambda *_: None)
    assert "\n" not in errors.one_line(e.value)
  cfg = tiny_config(s1, s2)
  cfg.batch_size = 6
  with pytest.raises(errors.ConfigError, match=r"batch_size 6 is not a multiple of the 4"):
    pipeline_lib.TextTo3D.load(cfg, devices=jax.devices()[:4], log=lambda *_: None)


def _command(args, tmp_path):
  env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS="--xla_force_host_platform_device_count=1")
  return subprocess.run([sys.executable, "-m", "instant3d_jax.text_to_3d", *args], cwd=tmp_path,
                        env=env, capture_output=True, text=True, timeout=300)


def test_command_missing_weights_is_one_line_error(tmp_path):
  (tmp_path / "p.txt").write_text("a red cube\n")
  cfg = str(ROOT / "configs" / "instant3d.py") + ":tiny"
  r = _command(["--config", cfg, "--prompts_file", "p.txt", "--out", "out",
                f"--config.stage1.weights={tmp_path / 'missing'}"], tmp_path)
  assert r.returncode == 2, r.stderr
  lines = [l for l in r.stderr.splitlines() if l.strip()]
  assert lines[-1].startswith("error: stage1.weights") and "missing" in lines[-1]
  assert not (tmp_path / "out").exists()


def test_command_writes_a_run(text3d_weights, tmp_path):
  s1, s2 = text3d_weights
  cfg = str(ROOT / "configs" / "instant3d.py") + ":tiny"
  r = _command(["--config", cfg, "--prompt", "a red cube", "--out", "out", "--steps", "2",
                "--num_samples", "2", "--batch_size", "2", "--seed", "5",
                f"--config.stage1.weights={s1}", f"--config.stage2.weights={s2}",
                "--config.export.turntable_frames=4", "--config.export.mesh_resolution=16"],
               tmp_path)
  assert r.returncode == 0, r.stderr[-3000:]
  run = json.loads((tmp_path / "out" / "run.json").read_text())
  assert [p["dir"] for p in run["prompts"]] == ["0000", "0001"]
  assert run["seed"] == 5 and run["batch_size"] == 2 and run["num_samples"] == 2
  assert (tmp_path / "out" / "0001" / "mesh.glb").is_file()
  assert (tmp_path / "out" / "index.html").is_file()


def test_stage1_from_a_diffusers_folder(text3d_weights, tmp_path):
  """Stage 1 from a diffusers SDXL folder (configs/sdxl.py:tiny shapes, written by the project's
  exporter): grids of `stage1.sample.grid_size`, then the same reconstructor."""
  from instant3d_jax.configs import sdxl as sdxl_config
  from instant3d_jax.convert import sdxl_pipeline
  scfg = sdxl_config.get_config("tiny")
  n = scfg.random_init.tokenizer_max_length
  tok = sdxl_pipeline.write_toy_tokenizer(tmp_path / "tok", n)
  sdxl_pipeline.save_pipeline(tmp_path / "sdxl",
                              sdxl_pipeline.init_random_pipeline(scfg.random_init, tok, tok, seed=1))
  cfg = tiny_config(str(tmp_path / "sdxl"), text3d_weights[1])
  cfg.batch_size = 2
  with pytest.raises(errors.ConfigError, match="grid_size is 0"):
    pipeline_lib.TextTo3D.load(cfg, devices=jax.devices()[:1], log=lambda *_: None)
  cfg.stage1.sample.grid_size = 32
  cfg.stage1.weights = ""  # the paths as arguments instead
  pipe = pipeline_lib.TextTo3D.load(cfg, devices=jax.devices()[:1], stage1=tmp_path / "sdxl",
                                    stage2=text3d_weights[1], log=lambda *_: None)
  assert pipe.stage1_kind == "diffusers"
  (r,) = pipe(["a red cube"], jax.random.PRNGKey(0), with_mesh=True)
  assert r.grid.shape == (32, 32, 3) and r.views.shape == (4, 16, 16, 3)
  assert r.planes.shape == (3, 8, 8, 8) and r.mesh is not None and len(r.mesh.faces) > 0
