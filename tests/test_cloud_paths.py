"""Paths of every kind: the checkpoint entry point `convert.checkpoints.load` (workdir, checkpoints/,
step directory, .safetensors, gs://), and `gs://` workdirs and outputs for every writer.

`gs://` is a fake (tests/fake_gcs.py: fsspec's memory filesystem under the `gs` protocol, reached
through etils.epath as gcsfs would be). orbax and tensorboardX talk to GCS with their own clients
(tensorstore, google-cloud-storage), which cannot reach the fake: the tests check that they are
handed the exact `gs://…` string, then serve them a local mirror of the bucket.
"""
from __future__ import annotations

import json
import logging
import os

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath
from PIL import Image

from instant3d_jax import errors
from instant3d_jax import fileio
from instant3d_jax.base import checkpoint as ckpt_lib
from instant3d_jax.convert import checkpoints
from tests.fake_gcs import fake_gcs  # noqa: F401  (fixture)

BUCKET = "gs://bkt"


def _local(uri: str, mirror) -> str:
  """`gs://bkt/x` → `<mirror>/bkt/x` (other paths unchanged)."""
  uri = os.fspath(uri)
  return str(mirror / uri[len("gs://"):]) if uri.startswith("gs://") else uri


def _upload(fs, local_dir, uri: str) -> None:
  """Copies a local folder into the fake bucket (as `gsutil cp -r` would)."""
  for root, _, files in os.walk(local_dir):
    for f in files:
      rel = os.path.relpath(os.path.join(root, f), local_dir)
      with open(os.path.join(root, f), "rb") as fh:
        fs.pipe_file(f"{uri}/{rel}", fh.read())


def _spy_orbax_reads(monkeypatch, mirror, seen: list) -> None:
  """Records the directories the checkpoint reader hands orbax; serves them from `mirror`."""
  metadata, restore = ocp.PyTreeCheckpointHandler.metadata, ocp.PyTreeCheckpointer.restore

  def metadata_spy(self, directory):
    seen.append(("metadata", str(directory)))
    return metadata(self, epath.Path(_local(directory, mirror)))

  def restore_spy(self, directory, *args, **kwargs):
    seen.append(("restore", str(directory)))
    return restore(self, _local(directory, mirror), *args, **kwargs)

  monkeypatch.setattr(ocp.PyTreeCheckpointHandler, "metadata", metadata_spy)
  monkeypatch.setattr(ocp.PyTreeCheckpointer, "restore", restore_spy)


def _toy_params(scale):
  return {"dense": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3) * scale,
                    "bias": np.full((3,), scale, np.float32)}}


@pytest.fixture(scope="module")
def toy_workdir(tmp_path_factory):
  """A workdir with complete steps 3 and 5, an orbax in-progress directory and a step folder
  without state (neither may be picked as the latest)."""
  wd = tmp_path_factory.mktemp("toy") / "run"
  cfg = ml_collections.ConfigDict({"model": {"hidden": 3}, "train": {"total_steps": 5}})
  ckpt_lib.check_or_write_config(wd, cfg, ("model",))
  ck = ckpt_lib.Checkpointer(wd, keep=5, use_async=False)
  for step in (3, 5):
    state = {"params": jax.tree.map(jax.numpy.asarray, _toy_params(step)),
             "step": jax.numpy.int32(step)}
    ck.save(step, state, {"step": step}, cfg)
  ck.close()
  (wd / "checkpoints" / "9.orbax-checkpoint-tmp-1" / "state").mkdir(parents=True)
  (wd / "checkpoints" / "8" / "config").mkdir(parents=True)
  return wd, cfg


# ---------------------------------------------------------------------------------------------
# One entry point for every checkpoint form


def test_load_every_local_form(toy_workdir, monkeypatch):
  wd, cfg = toy_workdir
  for path, step in ((wd, 5), (wd / "checkpoints", 5), (wd / "checkpoints" / "3", 3)):
    config, params, got_step = checkpoints.load(path)
    assert got_step == step and isinstance(config, ml_collections.ConfigDict)
    assert config.model.hidden == 3
    assert isinstance(params["dense"]["kernel"], np.ndarray)
    np.testing.assert_array_equal(params["dense"]["kernel"], _toy_params(step)["dense"]["kernel"])
  # A relative workdir (commands take them: the demo's outputs/demo); `config` replaces the saved.
  monkeypatch.chdir(wd.parent)
  other = ml_collections.ConfigDict({"model": {"hidden": 7}})
  config, params, step = checkpoints.load("run", other)
  assert step == 5 and config.model.hidden == 7


def test_load_errors_name_the_path_and_the_forms(toy_workdir, tmp_path):
  wd, _ = toy_workdir
  forms = r"expected a training workdir .* a step directory .* \.safetensors file; local or gs://"
  for bad, what in ((tmp_path / "missing", "does not exist"),
                    (tmp_path / "missing.safetensors", "does not exist"),
                    (wd / "checkpoints" / "8", "found no complete checkpoint there")):
    with pytest.raises(errors.CheckpointError, match=f"checkpoint '{bad}'.*{what}; {forms}"):
      checkpoints.load(bad)
  tmp = wd / "checkpoints" / "9.orbax-checkpoint-tmp-1"
  with pytest.raises(errors.CheckpointError, match=f"checkpoint '{tmp}' is an unfinished save"):
    checkpoints.load(tmp)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(errors.CheckpointError, match="found no complete checkpoint"):
    checkpoints.load(empty)


def test_load_logs_no_metadata_warning(toy_workdir, caplog):
  """orbax's "Metadata file does not exist" came from reading the item directory through a
  `Checkpointer`, which looks for the step-level metadata file there; nothing was wrong."""
  wd, _ = toy_workdir
  with caplog.at_level(logging.INFO):
    checkpoints.load(wd)
    checkpoints.load(wd / "checkpoints" / "3")
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING], \
      [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert not [r for r in caplog.records if "does not exist" in r.getMessage()]


def test_load_from_gs_hands_orbax_the_uri(toy_workdir, fake_gcs, tmp_path, monkeypatch):
  wd, _ = toy_workdir
  monkeypatch.chdir(tmp_path)
  _upload(fake_gcs, wd, f"{BUCKET}/run")
  mirror = wd.parent.parent / "mirror_root"
  mirror.mkdir(exist_ok=True)
  if not (mirror / "bkt").exists():
    os.symlink(wd.parent, mirror / "bkt")          # <mirror>/bkt/run == the local workdir
  seen = []
  _spy_orbax_reads(monkeypatch, mirror, seen)
  config, params, step = checkpoints.load(f"{BUCKET}/run")
  assert step == 5 and config.model.hidden == 3
  np.testing.assert_array_equal(params["dense"]["bias"], _toy_params(5)["dense"]["bias"])
  assert seen[0] == ("metadata", f"{BUCKET}/run/checkpoints/5/state")
  assert ("restore", f"{BUCKET}/run/checkpoints/5/state") in seen
  assert all(p.startswith(BUCKET) or p.startswith(str(mirror)) for _, p in seen), seen
  _, _, step = checkpoints.load(f"{BUCKET}/run/checkpoints/3")
  assert step == 3
  # A save still in progress on GCS (orbax writes in place there and marks the end with
  # commit_success.txt) is never the latest, and is refused when named.
  fake_gcs.pipe_file(f"{BUCKET}/run/checkpoints/11/state/manifest.ocdbt", b"partial")
  assert checkpoints.load(f"{BUCKET}/run")[2] == 5
  with pytest.raises(errors.CheckpointError, match=r"checkpoints/11' is an unfinished save"):
    checkpoints.load(f"{BUCKET}/run/checkpoints/11")
  with pytest.raises(errors.CheckpointError, match=f"checkpoint '{BUCKET}/nope' does not exist"):
    checkpoints.load(f"{BUCKET}/nope")
  assert os.listdir(tmp_path) == []                  # no local folder named "gs:"


# ---------------------------------------------------------------------------------------------
# gs:// workdirs and outputs


def test_training_workdir_on_gs(fake_gcs, tmp_path, monkeypatch):
  """A whole (toy) training run with `--workdir gs://…`: config.json, metrics, image PNGs and the
  loss curve land in the bucket; orbax and TensorBoard get the URI unchanged."""
  import tensorboardX
  from instant3d_jax.train import loop
  from instant3d_jax.train import metrics as metrics_lib
  from tests import train_toy
  monkeypatch.chdir(tmp_path)
  mirror = tmp_path / "mirror"
  seen = {"orbax": [], "tb": []}
  manager, writer = ocp.CheckpointManager, tensorboardX.SummaryWriter

  def manager_spy(directory, *args, **kwargs):
    seen["orbax"].append(directory)
    return manager(_local(directory, mirror), *args, **kwargs)

  def writer_spy(logdir, *args, **kwargs):
    seen["tb"].append(logdir)
    return writer(_local(logdir, mirror), *args, **kwargs)

  monkeypatch.setattr(ocp, "CheckpointManager", manager_spy)
  monkeypatch.setattr(tensorboardX, "SummaryWriter", writer_spy)
  cfg = train_toy.get_config()
  cfg.train.total_steps = 4
  cfg.train.image_every = 2
  task = train_toy.make_task(cfg)
  task.image_fn = lambda params, batch, step: np.full((4, 6, 3), 0.25, np.float32)
  res = loop.run(cfg, f"{BUCKET}/run", task, log=lambda *_: None)
  assert res.step == 4
  assert seen == {"orbax": [f"{BUCKET}/run/checkpoints"], "tb": [f"{BUCKET}/run/tb"]}
  files = fake_gcs.files()
  for name in ("config.json", "metrics.jsonl", "loss_curve.png",
               "images/train_inputs_predictions_targets_0000002.png",
               "images/train_inputs_predictions_targets_0000004.png"):
    assert f"{BUCKET}/run/{name}" in files, files
  rows = metrics_lib.read_jsonl(f"{BUCKET}/run/metrics.jsonl")
  assert [r["step"] for r in rows] == [1, 2, 3, 4] and all("train/loss" in r for r in rows)
  png = np.asarray(Image.open(fileio.path(f"{BUCKET}/run/images/"
                                          "train_inputs_predictions_targets_0000004.png").open("rb")))
  assert png.shape == (4, 6, 3) and (png == 64).all()
  assert json.loads(fileio.path(f"{BUCKET}/run/config.json").read_text())["model"] == \
      cfg.model.to_dict()
  assert sorted(os.listdir(tmp_path)) == ["mirror"]  # nothing else written locally
  assert (mirror / "bkt" / "run" / "checkpoints" / "4" / "state").is_dir()
  # A restart with another optimizer is refused by the config in the bucket, which stays as is.
  before = fileio.path(f"{BUCKET}/run/config.json").read_text()
  other = train_toy.get_config()
  other.optimizer.learning_rate = 0.5
  with pytest.raises(ckpt_lib.ConfigMismatchError, match="optimizer.learning_rate: 0.01 vs 0.5"):
    ckpt_lib.check_or_write_config(f"{BUCKET}/run", other, ("model", "optimizer"))
  assert fileio.path(f"{BUCKET}/run/config.json").read_text() == before


def test_metrics_on_a_bucket_are_rewritten_not_appended(fake_gcs):
  """Bucket objects cannot be appended to (the fake refuses, like gcsfs): the JSONL file is
  rewritten whole, and a resumed writer keeps the earlier rows."""
  from instant3d_jax.train import metrics as metrics_lib
  w = metrics_lib.MetricWriter(f"{BUCKET}/m", tensorboard=False, remote_flush_s=3600)
  w.scalars(1, {"loss": 1.0})
  w.scalars(2, {"loss": float("nan")})
  assert not fake_gcs.exists(f"{BUCKET}/m/metrics.jsonl")   # buffered until flush / interval
  w.flush()
  w.close()
  w = metrics_lib.MetricWriter(f"{BUCKET}/m", tensorboard=False, remote_flush_s=0)
  w.scalars(3, {"loss": 0.5})                                 # interval 0: uploaded at once
  rows = metrics_lib.read_jsonl(f"{BUCKET}/m/metrics.jsonl")
  assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, "nan"), (3, 0.5)]
  w.close()
  metrics_lib.plot_loss_curve(f"{BUCKET}/m/metrics.jsonl", f"{BUCKET}/m/curve.png",
                              keys=("loss",))
  assert Image.open(fileio.path(f"{BUCKET}/m/curve.png").open("rb")).format == "PNG"


def test_eval_tables_and_contact_sheet_on_gs(fake_gcs):
  from data_pipeline import contact_sheet
  from instant3d_jax.eval import protocol
  results = {"summary": {"psnr": 20.5, "ssim": 0.8, "background_psnr": 10.0}, "num_objects": 2,
             "num_views_per_object": 3, "split": "test", "rotate_deg": -45.0, "resolution": 16,
             "seed": 0, "seconds": 1.0, "per_object": {"psnr": [20.0, 21.0]}, "examples": []}
  js, md = protocol.write_results(results, f"{BUCKET}/run/eval/step_3", extra={"step": 3})
  assert (str(js), str(md)) == (f"{BUCKET}/run/eval/step_3/eval.json",
                                f"{BUCKET}/run/eval/step_3/eval.md")
  assert json.loads(js.read_text())["per_object"]["psnr"] == [20.0, 21.0]
  assert "| model | 20.50 |" in md.read_text()
  rows = [[np.zeros((4, 4, 3), np.float32), np.ones((4, 4, 3), np.float32)]]
  sheet = contact_sheet.contact_sheet(rows, f"{BUCKET}/sheet.png", row_labels=["a"])
  back = np.asarray(Image.open(fileio.path(f"{BUCKET}/sheet.png").open("rb")))
  np.testing.assert_array_equal(back, sheet)
  assert fake_gcs.files() == [f"{BUCKET}/run/eval/step_3/eval.json",
                              f"{BUCKET}/run/eval/step_3/eval.md", f"{BUCKET}/sheet.png"]


def test_export_and_reconstruct_on_gs(fake_gcs, tmp_path, monkeypatch):
  """An orbax workdir in the bucket → export to a gs:// .safetensors (step recorded) → reconstruct
  from it into a gs:// output folder: every output lands in the bucket, nothing local."""
  import flax.linen as nn
  from instant3d_jax import reconstruction as rec
  from instant3d_jax.models import lrm
  from tests.test_reconstruct import micro_config
  cfg = micro_config()
  # Random weights of the right shapes (no init compile); the mesh level is picked from the field.
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.normal(0.0, 0.1, s.shape).astype(np.float32),
                        nn.meta.unbox(lrm.abstract_params(cfg)))
  local = tmp_path / "local" / "run"
  ck = ckpt_lib.Checkpointer(local, keep=1, use_async=False)
  ck.save(7, {"params": params}, None, cfg)
  ck.close()
  _upload(fake_gcs, local, f"{BUCKET}/run")
  seen = []
  _spy_orbax_reads(monkeypatch, tmp_path / "local_root", seen)
  os.makedirs(tmp_path / "local_root")
  os.symlink(tmp_path / "local", tmp_path / "local_root" / "bkt")
  work = tmp_path / "cwd"
  work.mkdir()
  monkeypatch.chdir(work)

  out, step, n = checkpoints.export_safetensors(f"{BUCKET}/run", f"{BUCKET}/model.safetensors")
  assert str(out) == f"{BUCKET}/model.safetensors" and step == 7
  assert n == sum(int(np.size(v)) for v in jax.tree.leaves(params))
  assert seen[0] == ("metadata", f"{BUCKET}/run/checkpoints/7/state")
  config, back, step = checkpoints.load(f"{BUCKET}/model.safetensors")
  assert step == 7 and config.model.input_resolution == 16
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, np.asarray(b))
  with pytest.raises(errors.ConfigError, match="--out must end in .safetensors"):
    checkpoints.export_safetensors(f"{BUCKET}/run", f"{BUCKET}/model.bin")
  # A file written without a step reads back with step None.
  from instant3d_jax.convert import lrm as convert_lrm
  convert_lrm.save_lrm(f"{BUCKET}/nostep.safetensors", params, cfg)
  assert checkpoints.load(f"{BUCKET}/nostep.safetensors")[2] is None

  from instant3d_jax.export import images
  views = [str(images.save_png(f"{BUCKET}/in/v{i}.png", rng.uniform(size=(16, 16, 3))))
           for i in range(4)]
  written = rec.reconstruct(f"{BUCKET}/model.safetensors", f"{BUCKET}/rec", views=views,
                            num_novel=1, turntable_frames=2, mesh_resolution=16,
                            mesh_threshold="auto", progress=False, log=lambda *_: None)
  outputs = sorted(f for f in fake_gcs.files() if f.startswith(f"{BUCKET}/rec/"))
  assert outputs == sorted(str(p) for p in written.values())
  assert sorted(o[len(f"{BUCKET}/rec/"):] for o in outputs) == sorted(
      ["triplane.npz", "run.json", "turntable.gif", "turntable.mp4", "mesh.glb", "mesh.obj",
       "mesh.ply", "renders/inputs_vs_renders.png", "novel/cameras.json", "novel/novel_00.png",
       "turntable_strip.png"]
      + [f"inputs/view_{i}.png" for i in range(4)] + [f"renders/input_{i}.png" for i in range(4)])
  run = json.loads(fileio.path(f"{BUCKET}/rec/run.json").read_text())
  assert run["checkpoint"] == f"{BUCKET}/model.safetensors"
  assert fileio.path(f"{BUCKET}/rec/turntable.mp4").stat().length > 0
  assert os.listdir(work) == []                      # no local folder named "gs:"
