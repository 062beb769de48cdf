"""The reconstructor trainer end to end on renders in the importer's folder layout (cameras.json
+ RGBA PNGs, written from the tiny procedural world, imported with
`data_pipeline.render_import.import_renders`): a few steps of the trainer (`train/lrm_task.py`, the
library side of `train_lrm`), then export to safetensors, `load_for_inference` on every checkpoint
form, and the eval's tables (`eval/lrm_eval.py`, the library side of `eval_lrm`). Shapes come from
the data set's metadata, and a data set the model, loader or evaluation cannot use fails with one
line naming the field that differs."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from instant3d_jax.configs import data as data_config
from data_pipeline import procedural, records, render_import

ROOT = Path(__file__).resolve().parents[1]


def write_folders(world_cfg, base: Path) -> Path:
  """Renders `world_cfg` and writes every object as an importer folder under base/renders."""
  world = base / "world"
  procedural.generate(world_cfg, str(world), progress=False)
  src = base / "renders"
  for s in records.SPLITS:
    for rec in records.RecordSource(str(world), s):
      render_import.write_object_folder(rec, str(src / f"thing_{rec['object_id']}"))
  return src


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  """8 objects at 16² (every one with its GSO eval views), imported 4 / 2 / 2."""
  base = tmp_path_factory.mktemp("lrm")
  w = data_config.get_config("tiny")
  w.num_objects = 8
  w.eval_rig_splits = ("train", "val", "test")
  src = write_folders(w, base)
  out = base / "imported"
  meta = render_import.import_renders(str(src), str(out), split_fractions=(0.5, 0.25, 0.25),
                                 progress=False)
  assert meta["generator"] == "import" and meta["resolution"] == 16
  return base, out


def tiny_config(data_dir):
  """The tiny run config pointed at an existing data set (`data.source='records'`). Its `data`
  section still describes the 64² procedural demo world: nothing may take shapes from it."""
  from instant3d_jax.configs import lrm
  c = lrm.get_config("tiny")
  c.data.source = "records"
  c.data_dir = str(data_dir)
  assert c.data.resolution == 64
  c.data.loader.num_targets = 2
  # Fewer layers than `tiny`: the compile, not the math, dominates a 3-step test.
  c.model.encoder.num_layers = 1
  c.model.decoder.num_layers = 1
  c.loss.rays_per_view = 32
  c.train.total_steps = 3
  c.train.log_every = 1
  c.train.image_every = 3
  c.train.global_batch_size = 4
  c.optimizer.warmup_steps = 1
  c.checkpoint.every_steps = 2
  c.eval.num_objects = 2
  c.eval.num_targets = 2
  c.eval.batch_size = 2
  c.eval.lpips = False
  return c


@pytest.fixture(scope="module")
def trained(imported):
  from instant3d_jax.train import lrm_task
  base, data_dir = imported
  cfg = tiny_config(data_dir)
  res = lrm_task.train(cfg, base / "run", log=lambda *_: None)
  return cfg, base, res


def test_train_writes_everything(trained):
  cfg, base, res = trained
  run = base / "run"
  assert res.step == 3 and res.stop_reason == "total_steps"
  losses = [h["loss"] for h in res.history]
  assert all(np.isfinite(losses)) and all(0 < l < 1 for l in losses)
  assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "3"]
  rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
  assert {"train/psnr", "train/mse", "train/tflops_per_device", "train/lr"} <= set(rows[0])
  grid = list((run / "images").glob("*.png"))
  assert len(grid) == 1
  assert (run / "loss_curve.png").exists()


def test_two_runs_train_bit_identical_parameters(trained):
  """The same config and data trained twice (fixed step count, no wall-clock budget): every
  parameter and every logged loss is bit-identical (issue 13: `make demo` is the same on
  every run)."""
  from instant3d_jax.train import lrm_task
  cfg, base, res = trained
  again = lrm_task.train(cfg, base / "run_again", log=lambda *_: None)
  assert again.step == res.step
  assert [h["loss"] for h in again.history] == [h["loss"] for h in res.history]
  a, b = jax.tree.leaves(jax.device_get(res.state.params)), jax.tree.leaves(
      jax.device_get(again.state.params))
  assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_load_for_inference_from_a_relative_workdir(trained, monkeypatch):
  # Commands take relative workdirs (the demo's `outputs/demo`); orbax's reader needs absolute.
  from instant3d_jax.convert import checkpoints
  _, base, res = trained
  monkeypatch.chdir(base)
  _, params = checkpoints.load_for_inference("run")
  want = jax.tree.leaves(jax.device_get(res.state.params))
  for a, b in zip(jax.tree.leaves(params), want):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_export_and_load_for_inference(trained):
  from instant3d_jax.convert import checkpoints
  cfg, base, res = trained
  out = base / "model.safetensors"
  assert checkpoints.export_safetensors(base / "run", out)[1] == 3   # the export command's work
  want = jax.tree.map(np.asarray, jax.device_get(res.state.params))
  for path in (out, base / "run", base / "run" / "checkpoints" / "3"):
    c, params = checkpoints.load_for_inference(path)
    assert c.model.triplane.channels == cfg.model.triplane.channels
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(want)):
      np.testing.assert_array_equal(np.asarray(a), b)
  with pytest.raises(FileNotFoundError, match="expected a training workdir"):
    checkpoints.load_for_inference(base / "imported")


def test_eval_lrm_writes_tables(trained):
  from instant3d_jax.eval import ledger, lrm_eval, results as results_lib
  cfg, base, res = trained
  results, md = lrm_eval.evaluate_checkpoint(base / "run", split="test", log=lambda *_: None)
  assert md == base / "run" / "eval" / "step_3" / "eval.md"
  # The test split went through the test ledger (conftest: a temporary file, shared by the xdist
  # workers, so other tests' lines may interleave): one line with these parameters' hash;
  # scoring the same parameters again returns that line's result without scoring (the `score`
  # callable is never reached: still one line).
  params_hash = results_lib.param_sha256(jax.device_get(res.state.params))
  mine = lambda: [e for e in ledger.read() if e["param_sha256"] == params_hash]  # noqa: E731
  new = mine()
  assert len(new) == 1 and new[0]["param_sha256"] == params_hash == results["param_sha256"]
  assert new[0]["dataset"].split(":")[1] == "test" and new[0]["result"]["summary"] == \
      results["summary"]
  assert results["test_ledger"]["repeat"] is False and results["test_ledger"]["configs_scored"] >= 1
  again, md2 = lrm_eval.evaluate_checkpoint(base / "run", split="test", log=lambda *_: None,
                                            out=base / "again")
  assert again["test_ledger"]["repeat"] is True and len(mine()) == 1
  assert again["summary"] == results["summary"] and "scored before" in md2.read_text()
  assert "configuration(s) scored on it" in md.read_text()
  data = json.loads(md.with_suffix(".json").read_text())
  assert data["num_objects"] == 2 and data["rotate_deg"] == -45.0 and data["resolution"] == 16
  assert len(data["per_object"]["psnr"]) == 2
  s = data["summary"]
  assert 0 < s["psnr"] < 60 and 0 < s["ssim"] <= 1 and s["background_psnr"] > 0
  table = md.read_text()
  assert "| model |" in table and f"{s['psnr']:.2f}" in table and "−45" not in table
  assert "rotated about z by -45°" in table
  assert "2 held-out objects (test split), 2 views each at 16²" in table
  # The foreground metrics and the mean-colour baseline (eval/protocol.py), every metric per row.
  for row in ("", "background_", "mean_colour_"):
    for k in ("psnr", "ssim", "foreground_psnr", "colour_error"):
      assert np.isfinite(s[row + k]), row + k
  assert "| mean colour |" in table and "colour error" in table
  assert f"{s['colour_error']:.1f}" in table and f"{s['mean_colour_colour_error']:.1f}" in table
  # Oracle: the mean-colour baseline's colour error recomputed in numpy on the same targets.
  from data_pipeline import datasets, lrm_input
  dataset = datasets.open_dataset(cfg.data_dir)
  loader = datasets.loader_config(cfg, dataset, purpose="eval")
  batches = [b for b in lrm_input.eval_batches(str(cfg.data_dir), loader, split="test",
                                                max_objects=2)]
  rgb = np.concatenate([b["target_images"][b["valid"]] for b in batches])    # [2, T, h, w, 3]
  alpha = np.concatenate([b["target_masks"][b["valid"]] for b in batches])   # [2, T, h, w]
  fg = alpha > 0.5
  colour = rgb[fg].mean(axis=0)
  np.testing.assert_allclose(data["mean_colour"], colour, rtol=1e-5)
  painted = alpha[..., None] * colour + (1 - alpha[..., None]) * 1.0         # white background
  err = np.abs(painted - rgb).mean(-1)
  per_view = 255 * np.array([[err[o, v][fg[o, v]].mean() for v in range(fg.shape[1])]
                             for o in range(fg.shape[0])])
  np.testing.assert_allclose(s["mean_colour_colour_error"], per_view.mean(1).mean(), rtol=1e-4)
  assert data["per_object"]["mean_colour_colour_error"] == pytest.approx(list(per_view.mean(1)),
                                                                         rel=1e-4)
  # The train-time periodic eval keeps the model's metrics, no reference rows.
  from instant3d_jax.train import lrm_task
  periodic = lrm_task.make_eval_fn(cfg, dataset)(res.state.params, 3)
  assert set(periodic) == {"psnr", "ssim", "foreground_psnr", "colour_error"}


def test_trained_checkpoint_drives_reconstruct(trained, tmp_path):
  """The trainer's workdir is a valid `reconstruct --checkpoint` (views of a held-out object)."""
  from data_pipeline import records
  from instant3d_jax import reconstruction
  from instant3d_jax.export.images import save_png
  cfg, base, res = trained
  rec = records.RecordSource(cfg.data_dir, "test")[0]
  paths = []
  for i, v in enumerate(records.group_rgba(rec, "rig")):
    paths.append(save_png(tmp_path / f"v{i}.png", v))
  written = reconstruction.reconstruct(base / "run", tmp_path / "out", views=[str(p) for p in paths],
                                    num_novel=1, turntable_frames=2, mesh_resolution=16,
                                    mesh_threshold="auto", progress=False, log=lambda *_: None)
  run = json.loads(Path(written["run"]).read_text())
  assert Path(written["turntable_gif"]).stat().st_size > 0
  assert str(base / "run") in json.dumps(run)


def test_lpips_and_mask_loss_terms():
  """The crop path with LPIPS and the mask loss: loss = MSE + λ·LPIPS (from lpips_start_step) +
  μ·MSE(opacity, mask), each part checked against its own oracle (the standalone LPIPS module,
  the rendered opacity); gradients are finite and the LPIPS term moves them."""
  import jax.numpy as jnp
  from instant3d_jax.configs import lrm
  from instant3d_jax import cameras
  from instant3d_jax.train import lrm_task
  from instant3d_jax.models import lpips as lpips_lib
  from instant3d_jax.models import lrm as lrm_lib
  from instant3d_jax.base.sharding import unbox
  c = lrm.get_config("tiny")
  m = c.model
  m.input_resolution, m.encoder.image_size = 16, 16
  m.encoder.num_layers = m.decoder.num_layers = 1
  m.encoder.hidden_size = m.decoder.hidden_size = m.camera_embed_dim = 32
  m.encoder.mlp_dim, m.triplane.token_resolution, m.triplane.channels = 64, 4, 8
  m.render.num_samples = m.render.num_importance = 8
  c.loss.update(ray_sampling="crop", lpips_weight=2.0, lpips_start_step=5, mask_weight=0.5,
                l1_weight=0.25)
  B, T, h = 2, 2, 16
  rng = np.random.default_rng(0)
  rig = cameras.instant3d_rig(16)
  batch = {"input_images": rng.uniform(size=(B, 4, 16, 16, 3)).astype(np.float32),
           "input_c2w": np.broadcast_to(np.asarray(rig.c2w), (B, 4, 4, 4)),
           "input_K": np.broadcast_to(np.asarray(rig.K), (B, 4, 3, 3)),
           "target_images": rng.uniform(size=(B, T, h, h, 3)).astype(np.float32),
           "target_masks": (rng.uniform(size=(B, T, h, h)) > 0.5).astype(np.float32),
           "target_c2w": np.broadcast_to(np.asarray(rig.c2w)[:T], (B, T, 4, 4)),
           "target_K": np.broadcast_to(np.asarray(rig.K)[:T], (B, T, 3, 3))}
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  params = unbox(lrm_lib.init_params(lrm_lib.LRMConfig.from_config(c), jax.random.key(0)))
  lp_module, lp_params = lpips_lib.load_lpips()
  constants = {"lpips": lp_params}
  loss_fn = jax.jit(jax.value_and_grad(lrm_task.make_loss_fn(c), has_aux=True))
  key = jax.random.key(3)
  (loss_on, aux_on), g_on = loss_fn(params, batch, key, jnp.int32(5), constants)
  (loss_off, aux_off), g_off = loss_fn(params, batch, key, jnp.int32(4), constants)
  # The same render (same key) → the same parts; LPIPS enters only from step 5.
  np.testing.assert_allclose(aux_on["mse"], aux_off["mse"], rtol=1e-6)
  np.testing.assert_allclose(loss_off, aux_off["mse"] + 0.25 * aux_off["l1"]
                             + 0.5 * aux_off["mask_mse"], rtol=1e-5)
  np.testing.assert_allclose(loss_on, aux_on["mse"] + 0.25 * aux_on["l1"] + 2.0 * aux_on["lpips"]
                             + 0.5 * aux_on["mask_mse"], rtol=1e-5)
  # Oracles: the rendered crops through the standalone LPIPS module and the opacity MSE.
  tgt_cams = cameras.Camera(c2w=batch["target_c2w"], K=batch["target_K"], width=h, height=h)
  model = lrm_lib.LRM(lrm_lib.LRMConfig.from_config(c))
  in_cams = cameras.Camera(c2w=batch["input_c2w"], K=batch["input_K"], width=16, height=16)
  planes = model.apply({"params": params}, batch["input_images"], in_cams)
  out = lrm_lib.render_views(lrm_lib.LRMConfig.from_config(c), params, planes, tgt_cams,
                             key=jax.random.split(key)[0],
                             chunk=h * h, outputs=("rgb", "opacity"))
  np.testing.assert_allclose(aux_on["mse"], jnp.mean((out["rgb"] - batch["target_images"]) ** 2),
                             rtol=1e-4)
  np.testing.assert_allclose(aux_on["mask_mse"],
                             jnp.mean((out["opacity"] - batch["target_masks"]) ** 2), rtol=1e-4)
  np.testing.assert_allclose(aux_on["l1"], jnp.mean(jnp.abs(out["rgb"] - batch["target_images"])),
                             rtol=1e-4)
  lp = lp_module.apply({"params": lp_params}, out["rgb"].reshape(B * T, h, h, 3),
                       batch["target_images"].reshape(B * T, h, h, 3))
  np.testing.assert_allclose(aux_on["lpips"], jnp.mean(lp), rtol=1e-4)
  assert 0 < float(aux_on["lpips"]) < 2
  flat_on, flat_off = jax.tree.leaves(g_on), jax.tree.leaves(g_off)
  assert all(np.all(np.isfinite(x)) for x in flat_on)
  assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(flat_on, flat_off)) > 0


def test_sample_pixels_foreground_fraction():
  """Oracle: the masks themselves. The foreground share lands only on object pixels, uniformly;
  a view without object pixels falls back to uniform; fraction 0 is plain uniform sampling."""
  import jax.numpy as jnp
  from instant3d_jax.train.lrm_task import sample_pixels
  masks = np.zeros((2, 3, 8, 8), np.float32)
  masks[0, 0, 2:4, 3:5] = 1.0          # 4 object pixels: flat 19, 20, 27, 28
  masks[1, 2, 7, 7] = 0.9              # one object pixel (soft edge above 0.5)
  masks[1, 2, 0, 0] = 0.4              # below 0.5: background
  idx = np.asarray(sample_pixels(jax.random.key(0), jnp.asarray(masks), 4000, 0.75))
  assert idx.shape == (2, 3, 4000) and idx.min() >= 0 and idx.max() < 64
  fg = idx[..., 1000:]
  assert set(np.unique(fg[0, 0])) == {19, 20, 27, 28}
  counts = np.bincount(fg[0, 0], minlength=64)[[19, 20, 27, 28]]
  assert np.all(np.abs(counts - 750) < 5 * np.sqrt(750))
  assert set(np.unique(fg[1, 2])) == {63}
  assert len(np.unique(fg[0, 1])) == 64                    # empty view: uniform fallback
  uniform = idx[..., :1000]
  assert len(np.unique(uniform[0, 0])) == 64
  plain = np.asarray(sample_pixels(jax.random.key(0), jnp.asarray(masks), 4000))
  np.testing.assert_array_equal(plain, np.asarray(jax.random.randint(jax.random.key(0),
                                                                     (2, 3, 4000), 0, 64)))
  with pytest.raises(ValueError, match="foreground_fraction must be in"):
    sample_pixels(jax.random.key(0), jnp.asarray(masks), 10, 1.5)


def test_demo_uses_one_cpu_device_per_core():
  """The demo's device count: the largest divisor of the global batch <= the usable cores, and
  an XLA_FLAGS that already sets a count is left alone (checked in a fresh interpreter, since
  JAX reads the flag once)."""
  code = (
      "import os, sys\n"
      "os.sched_getaffinity = lambda pid: set(range(int(sys.argv[1])))\n"
      "from instant3d_jax.base.multihost import cpu_devices_per_core\n"
      "from configs import lrm\n"
      "c = lrm.get_config('tiny'); c.train.global_batch_size = int(sys.argv[2])\n"
      "n = cpu_devices_per_core(c)\n"
      "import jax\n"
      "print(n, jax.device_count(), os.environ.get('XLA_FLAGS'))\n")
  env = {k: v for k, v in __import__("os").environ.items() if k != "XLA_FLAGS"}

  def run(cores, batch, flags=None):
    e = dict(env, **({"XLA_FLAGS": flags} if flags else {}))
    out = subprocess.run([sys.executable, "-c", code, str(cores), str(batch)], cwd=ROOT, env=e,
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])

  assert run(2, 4) == (2, 2)
  assert run(8, 12) == (6, 6)
  assert run(3, 4) == (2, 2)
  assert run(2, 4, "--xla_force_host_platform_device_count=3") == (0, 3)


def test_batch_shapes_come_from_the_data_set(imported):
  from data_pipeline import datasets
  from instant3d_jax.train import lrm_task
  _, data_dir = imported
  cfg = tiny_config(data_dir)
  info = datasets.prepare(cfg, progress=False)
  assert (info.generator, info.resolution) == ("import", 16)
  assert info.splits == {"train": 4, "val": 2, "test": 2}
  assert info.groups["test"]["eval"] == 64 and info.groups["train"]["rig"] == 4
  spec = lrm_task.batch_spec(cfg, info)
  assert spec["target_images"].shape == (4, 2, 16, 16, 3)   # stored 16², not data.resolution
  assert spec["input_images"].shape == (4, 4, 64, 64, 3)    # model.input_resolution
  ld = datasets.loader_config(cfg, info)
  assert (ld.batch_size, ld.input_resolution, ld.target_resolution) == (4, 64, 16)
  ev = datasets.loader_config(cfg, info, purpose="eval")
  assert (ev.eval_batch_size, ev.eval_num_targets, ev.target_resolution) == (2, 2, 16)
  # The global batch follows train.global_batch_size at the time of the call (one derivation).
  cfg.train.global_batch_size = 2
  assert datasets.loader_config(cfg, info).batch_size == 2


def test_incompatible_data_sets_name_the_field(imported, tmp_path):
  from data_pipeline import datasets
  from instant3d_jax import errors
  _, data_dir = imported
  info = datasets.open_dataset(str(data_dir))
  cfg = tiny_config(data_dir)
  cfg.data.loader.crop_size = 32
  with pytest.raises(errors.Instant3DError, match=r"data\.loader\.crop_size=32 .* 16"):
    datasets.check_train(info, cfg)
  cfg = tiny_config(data_dir)
  cfg.model.num_views = 3
  with pytest.raises(errors.Instant3DError, match=r"model\.num_views=3 .*4 'rig' views"):
    datasets.check_train(info, cfg)
  cfg = tiny_config(data_dir)
  cfg.eval.num_targets = 61
  with pytest.raises(errors.Instant3DError, match=r"eval\.num_targets=61"):
    datasets.check_eval(info, cfg)
  cfg = tiny_config(data_dir)
  cfg.eval.split = "nope"
  with pytest.raises(errors.Instant3DError, match=r"eval\.split='nope'"):
    datasets.check_eval(info, cfg)
  # The generator never runs over (or trusts) a data set it did not write.
  cfg = tiny_config(data_dir)
  cfg.data.source = "procedural"
  before = sorted(os.listdir(data_dir))
  with pytest.raises(errors.Instant3DError, match=r"data\.source='records'"):
    datasets.prepare(cfg, progress=False)
  assert sorted(os.listdir(data_dir)) == before
  # records: nothing there.
  cfg = tiny_config(tmp_path / "empty")
  with pytest.raises(errors.Instant3DError, match=r"empty.*no data set.*data\.source='records'"):
    datasets.prepare(cfg, progress=False)
  cfg.data.source = "csv"
  with pytest.raises(errors.Instant3DError, match=r"data\.source must be one of"):
    datasets.prepare(cfg, progress=False)
  # A procedural set generated from another config: kept, and readable as records.
  w = data_config.get_config("tiny")
  w.num_objects = 4
  procedural.generate(w, str(tmp_path / "world"), progress=False)
  cfg = tiny_config(tmp_path / "world")
  cfg.data.source = "procedural"
  with pytest.raises(errors.Instant3DError, match=r"different config.*data\.source='records'"):
    datasets.prepare(cfg, progress=False)
  cfg.data.source = "records"
  info = datasets.prepare(cfg, progress=False)
  assert (info.generator, info.resolution, info.splits["train"]) == ("synthetic", 16, 2)
  assert info.groups["test"] == {"rig": 4, "sup": 3, "eval": 64, "eval_inputs": 4}


def test_missing_eval_views_are_one_line_errors(trained, tmp_path):
  """Held-out objects imported without their `eval`/`eval_inputs` groups: the eval entry point
  and the command refuse them with one line naming the split and the group."""
  from data_pipeline import datasets
  from instant3d_jax import errors
  from instant3d_jax.eval import lrm_eval
  _, base, _ = trained
  w = data_config.get_config("tiny")
  w.num_objects = 4
  w.eval_rig_splits = ()
  src = write_folders(w, tmp_path)
  out = tmp_path / "no_eval"
  render_import.import_renders(str(src), str(out), split_fractions=(0.5, 0.25, 0.25), progress=False)
  cfg = tiny_config(out)
  info = datasets.open_dataset(str(out))
  datasets.check_train(info, cfg)   # fine for training
  with pytest.raises(errors.Instant3DError, match=r"eval\.split='val'.*'eval'"):
    lrm_eval.evaluate_checkpoint(base / "run", config=cfg, log=lambda *_: None)
  proc = subprocess.run(
      [sys.executable, "-m", "instant3d_jax.eval_lrm", "--workdir", str(base / "run"),
       "--config", "configs/lrm.py:tiny", "--config.data.source=records",
       f"--config.data_dir={out}"], cwd=ROOT, capture_output=True, text=True,
      env=dict(os.environ, PYTHONPATH=str(ROOT)))
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert lines[-1].startswith("error: ") and "eval.split='val'" in lines[-1]
  assert "Traceback" not in proc.stderr


def test_train_command_refuses_a_missing_data_set_in_one_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "instant3d_jax.train_lrm", "--config", "configs/lrm.py:tiny",
       "--config.data.source=records", f"--config.data_dir={tmp_path / 'none'}",
       "--workdir", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True,
      env=dict(os.environ, PYTHONPATH=str(ROOT)))
  assert proc.returncode == 2, proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: data_dir {tmp_path / 'none'}: no data set there")
  assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()
