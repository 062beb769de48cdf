"""Training and evaluating the reconstructor on a data set in the records format that the
procedural generator did not write: object folders (cameras.json + RGBA PNGs, the importer's
layout) → `data_pipeline.importer.import_renders` → 3 training steps → the eval entry point's
table. Shapes come from the data set's metadata, and a data set the model, loader or evaluation
cannot use fails with one line naming the field that differs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from configs import data as data_config
from data_pipeline import importer, records, synthetic

ROOT = Path(__file__).resolve().parents[1]


def _write_folders(world_cfg, base: Path) -> Path:
  """Renders `world_cfg` and writes every object as an importer folder under base/renders."""
  world = base / "world"
  synthetic.generate(world_cfg, str(world), progress=False)
  src = base / "renders"
  for s in records.SPLITS:
    for rec in records.RecordSource(str(world), s):
      importer.write_object_folder(rec, str(src / f"thing_{rec['object_id']}"))
  return src


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  """8 objects at 16² (every one with its GSO eval views), imported 4 / 2 / 2."""
  base = tmp_path_factory.mktemp("records")
  w = data_config.get_config("tiny")
  w.num_objects = 8
  w.eval_rig_splits = ("train", "val", "test")
  src = _write_folders(w, base)
  out = base / "imported"
  meta = importer.import_renders(str(src), str(out), split_fractions=(0.5, 0.25, 0.25),
                                 progress=False)
  assert meta["generator"] == "import" and meta["resolution"] == 16
  return base, out


def records_config(data_dir):
  """The tiny run config pointed at an existing data set. Its `data` section still describes the
  64² procedural demo world: nothing may take shapes from it."""
  from configs import lrm
  c = lrm.get_config("tiny")
  c.data.source = "records"
  c.data_dir = str(data_dir)
  assert c.data.resolution == 64
  c.data.loader.num_targets = 2
  c.model.encoder.num_layers = 1
  c.model.decoder.num_layers = 1
  c.loss.rays_per_view = 32
  c.train.total_steps = 3
  c.train.log_every = 1
  c.train.image_every = 0
  c.train.global_batch_size = 4
  c.optimizer.warmup_steps = 1
  c.checkpoint.every_steps = 0
  c.eval.num_objects = 2
  c.eval.num_targets = 2
  c.eval.batch_size = 2
  c.eval.lpips = False
  return c


@pytest.fixture(scope="module")
def trained(imported):
  from instant3d_jax.train import lrm_task
  base, data_dir = imported
  cfg = records_config(data_dir)
  res = lrm_task.train(cfg, base / "run", log=lambda *_: None)
  return cfg, base, res


def test_train_and_eval_on_imported_renders(trained, imported):
  from instant3d_jax.eval import lrm_eval
  cfg, base, res = trained
  _, data_dir = imported
  assert res.step == 3 and all(np.isfinite(h["loss"]) for h in res.history)
  results, md = lrm_eval.evaluate_checkpoint(base / "run", log=lambda *_: None)
  assert md == base / "run" / "eval" / "step_3" / "eval.md"
  data = json.loads(md.with_suffix(".json").read_text())
  assert data["num_objects"] == 2 and data["resolution"] == 16
  test_ids = records.read_metadata(str(data_dir))["splits"]["test"]["object_ids"]
  assert len(data["per_object"]["psnr"]) == 2 and len(test_ids) == 2
  table = md.read_text()
  assert "| model |" in table and f"{data['summary']['psnr']:.2f}" in table
  assert "2 held-out objects (test split), 2 views each at 16²" in table


def test_batch_shapes_come_from_the_data_set(imported):
  from data_pipeline import datasets
  from instant3d_jax.train import lrm_task
  _, data_dir = imported
  cfg = records_config(data_dir)
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
  cfg = records_config(data_dir)
  cfg.data.loader.crop_size = 32
  with pytest.raises(errors.Instant3DError, match=r"data\.loader\.crop_size=32 .* 16"):
    datasets.check_train(info, cfg)
  cfg = records_config(data_dir)
  cfg.model.num_views = 3
  with pytest.raises(errors.Instant3DError, match=r"model\.num_views=3 .*4 'rig' views"):
    datasets.check_train(info, cfg)
  cfg = records_config(data_dir)
  cfg.eval.num_targets = 61
  with pytest.raises(errors.Instant3DError, match=r"eval\.num_targets=61"):
    datasets.check_eval(info, cfg)
  cfg = records_config(data_dir)
  cfg.eval.split = "nope"
  with pytest.raises(errors.Instant3DError, match=r"eval\.split='nope'"):
    datasets.check_eval(info, cfg)
  # The generator never runs over (or trusts) a data set it did not write.
  cfg = records_config(data_dir)
  cfg.data.source = "procedural"
  before = sorted(os.listdir(data_dir))
  with pytest.raises(errors.Instant3DError, match=r"data\.source='records'"):
    datasets.prepare(cfg, progress=False)
  assert sorted(os.listdir(data_dir)) == before
  # records: nothing there.
  cfg = records_config(tmp_path / "empty")
  with pytest.raises(errors.Instant3DError, match=r"empty.*no data set.*data\.source='records'"):
    datasets.prepare(cfg, progress=False)
  cfg.data.source = "csv"
  with pytest.raises(errors.Instant3DError, match=r"data\.source must be one of"):
    datasets.prepare(cfg, progress=False)


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
  src = _write_folders(w, tmp_path)
  out = tmp_path / "no_eval"
  importer.import_renders(str(src), str(out), split_fractions=(0.5, 0.25, 0.25), progress=False)
  cfg = records_config(out)
  info = datasets.open_dataset(str(out))
  datasets.check_train(info, cfg)   # fine for training
  with pytest.raises(errors.Instant3DError, match=r"eval\.split='test'.*'eval'"):
    lrm_eval.evaluate_checkpoint(base / "run", config=cfg, log=lambda *_: None)
  proc = subprocess.run(
      [sys.executable, "-m", "instant3d_jax.eval_lrm", "--workdir", str(base / "run"),
       "--config", "configs/lrm.py:tiny", "--config.data.source=records",
       f"--config.data_dir={out}"], cwd=ROOT, capture_output=True, text=True,
      env=dict(os.environ, PYTHONPATH=str(ROOT)))
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert lines[-1].startswith("error: ") and "eval.split='test'" in lines[-1]
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
