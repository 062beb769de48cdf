"""The reconstructor trainer end to end on the tiny world: a few steps of `train_lrm`, then
export to safetensors, `load_for_inference` on every checkpoint form, and `eval_lrm`'s tables."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(data_dir):
  from configs import lrm
  c = lrm.get_config("tiny")
  from configs import data
  c.data = data.get_config("tiny")        # 12 objects at 16², generated in seconds
  c.data_dir = str(data_dir)
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
def trained(tmp_path_factory):
  from instant3d_jax import train_lrm
  base = tmp_path_factory.mktemp("lrm")
  cfg = tiny_config(base / "data")
  res = train_lrm.train(cfg, base / "run", log=lambda *_: None)
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


def test_load_for_inference_from_a_relative_workdir(trained, monkeypatch):
  # Commands take relative workdirs (the demo's `outputs/demo`); orbax's reader needs absolute.
  from instant3d_jax.train import checkpoint as ckpt_lib
  _, base, res = trained
  monkeypatch.chdir(base)
  _, params = ckpt_lib.load_for_inference("run")
  want = jax.tree.leaves(jax.device_get(res.state.params))
  for a, b in zip(jax.tree.leaves(params), want):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_export_and_load_for_inference(trained):
  from instant3d_jax.export.__main__ import main as export_main
  from instant3d_jax.train import checkpoint as ckpt_lib
  cfg, base, res = trained
  out = base / "model.safetensors"
  assert export_main(["--checkpoint", str(base / "run"), "--out", str(out)]) == 0
  want = jax.tree.map(np.asarray, jax.device_get(res.state.params))
  for path in (out, base / "run", base / "run" / "checkpoints" / "3"):
    c, params = ckpt_lib.load_for_inference(path)
    assert c.model.triplane.channels == cfg.model.triplane.channels
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(want)):
      np.testing.assert_array_equal(np.asarray(a), b)
  with pytest.raises(FileNotFoundError, match="expected a training workdir"):
    ckpt_lib.load_for_inference(base / "data")


def test_eval_lrm_writes_tables(trained):
  from instant3d_jax import eval_lrm
  cfg, base, res = trained
  results, md = eval_lrm.evaluate_checkpoint(base / "run", log=lambda *_: None)
  assert md == base / "run" / "eval" / "step_3" / "eval.md"
  data = json.loads(md.with_suffix(".json").read_text())
  assert data["num_objects"] == 2 and data["rotate_deg"] == -45.0
  assert len(data["per_object"]["psnr"]) == 2
  s = data["summary"]
  assert 0 < s["psnr"] < 60 and 0 < s["ssim"] <= 1 and s["background_psnr"] > 0
  table = md.read_text()
  assert "| model |" in table and f"{s['psnr']:.2f}" in table and "−45" not in table
  assert "rotated about z by -45°" in table


def test_trained_checkpoint_drives_reconstruct(trained, tmp_path):
  """The trainer's workdir is a valid `reconstruct --checkpoint` (views of a held-out object)."""
  from data_pipeline import records
  from instant3d_jax import reconstruct
  from instant3d_jax.export.images import save_png
  cfg, base, res = trained
  rec = records.RecordSource(cfg.data_dir, "test")[0]
  paths = []
  for i, v in enumerate(records.group_rgba(rec, "rig")):
    paths.append(save_png(tmp_path / f"v{i}.png", v))
  written = reconstruct.reconstruct(base / "run", tmp_path / "out", views=[str(p) for p in paths],
                                    num_novel=1, turntable_frames=2, mesh_resolution=16,
                                    mesh_threshold="auto", progress=False, log=lambda *_: None)
  run = json.loads(Path(written["run"]).read_text())
  assert Path(written["turntable_gif"]).stat().st_size > 0
  assert str(base / "run") in json.dumps(run)
