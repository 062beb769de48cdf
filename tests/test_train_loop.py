"""Trainer machinery on a toy job (tests/train_toy.py): resume = uninterrupted, restore onto
fewer devices, non-finite skipping and stopping, config-mismatch refusal, gradient accumulation,
inference loading."""
import json
import os

import jax
import numpy as np
import pytest

from instant3d_jax.base import checkpoint as ckpt_lib
from instant3d_jax.convert import checkpoints
from instant3d_jax.train import loop
from tests import train_toy
from tests import tolerance


def _run(workdir, **overrides):
  cfg = train_toy.get_config()
  for k, v in overrides.items():
    node = cfg
    *path, last = k.split("__")
    for p in path:
      node = node[p]
    node[last] = v
  return loop.run(cfg, workdir, train_toy.make_task(cfg), log=lambda *_: None)


def _params(res):
  return jax.tree.map(np.asarray, jax.device_get(res.state.params))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """An uninterrupted 6-step run on the 4-device mesh."""
  wd = tmp_path_factory.mktemp("straight")
  return wd, _run(wd, train__total_steps=6)


def test_resume_equals_uninterrupted(straight, tmp_path):
  _, full = straight
  first = _run(tmp_path, train__total_steps=6, train__halt_at_step=3)
  assert first.stop_reason == "halt_at_step" and first.step == 3
  assert ckpt_lib.Checkpointer(tmp_path).latest_step() == 3
  second = _run(tmp_path, train__total_steps=6)
  assert second.step == 6 and len(second.history) == 3
  # Same data order: the resumed steps see the same batches (identical losses), and the final
  # parameters are bit-identical.
  losses = [h["loss"] for h in first.history + second.history]
  assert losses == [h["loss"] for h in full.history]
  for a, b in zip(jax.tree.leaves(_params(second)), jax.tree.leaves(_params(full))):
    np.testing.assert_array_equal(a, b)
  _, data_state, = ckpt_lib.Checkpointer(tmp_path).restore(
      6, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                      second.state))
  assert data_state == {"step": 6}


def test_restore_on_one_device(straight, tmp_path):
  wd, full = straight
  # Continue the 4-device run on a 1-device mesh: restore must reshard, and training goes on.
  res = _run(wd, train__total_steps=7, mesh__num_devices=1, mesh__data=1)
  assert res.step == 7 and len(res.history) == 1
  assert {d.id for d in res.state.params["fc1"]["kernel"].sharding.device_set} == {0}
  cfg, params, step = checkpoints.load_params(wd)
  assert step == 7 and cfg["model"]["hidden"] == train_toy.HIDDEN
  assert isinstance(params["fc1"]["kernel"], np.ndarray)
  np.testing.assert_array_equal(params["fc1"]["kernel"],
                                np.asarray(res.state.params["fc1"]["kernel"]))
  # A step directory works too, and its config travels inside it.
  _, params6, step6 = checkpoints.load_params(wd / "checkpoints" / "6")
  assert step6 == 6
  np.testing.assert_array_equal(params6["fc2"]["bias"], _params(full)["fc2"]["bias"])


def test_nonfinite_steps_are_skipped(tmp_path):
  res = _run(tmp_path, train__total_steps=4, data__nan_steps=(1,))
  finite = [h["finite"] for h in res.history]
  assert finite == [1.0, 0.0, 1.0, 1.0]
  assert int(res.state.nonfinite_total) == 1 and int(res.state.nonfinite_in_a_row) == 0


def test_nonfinite_in_a_row_stops_keeping_last_good_checkpoint(tmp_path):
  # Batches 3, 4, 5 are poisoned: steps 4, 5, 6 skip; the third in a row stops the run.
  with pytest.raises(loop.NonFiniteError, match="3 non-finite .* in a row at step 6.*step 4"):
    _run(tmp_path, train__total_steps=8, data__nan_steps=(3, 4, 5, 6, 7))
  ck = ckpt_lib.Checkpointer(tmp_path)
  assert ck.all_steps() == [2, 4]
  _, params, _ = checkpoints.load_params(tmp_path)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_metrics_fetched_at_log_steps_keep_every_step_and_the_guard_step(tmp_path):
  """Metrics reach the host only at sync points (log / checkpoint steps here: 4, 8), yet the
  history holds every step and the guard stops at the step it stopped at when it read every
  step: steps 4, 5, 6 skip, the third in a row (step 6, between two sync points) stops the run,
  nothing of steps 5..8 is logged or saved."""
  res = _run(tmp_path / "ok", train__total_steps=8, train__log_every=4,
             checkpoint__every_steps=0)
  assert [h["step"] for h in res.history] == list(range(1, 9))
  rows = [json.loads(l) for l in (tmp_path / "ok" / "metrics.jsonl").read_text().splitlines()]
  train_rows = [r for r in rows if "train/loss" in r]
  assert [r["step"] for r in train_rows] == [4, 8]
  assert [r["train/loss"] for r in train_rows] == [res.history[3]["loss"], res.history[7]["loss"]]
  assert all(r["train/s_per_step"] > 0 for r in train_rows)
  with pytest.raises(loop.NonFiniteError, match="3 non-finite .* in a row at step 6.*step 4"):
    _run(tmp_path / "bad", train__total_steps=12, train__log_every=4,
         checkpoint__every_steps=4, data__nan_steps=(3, 4, 5, 6, 7, 8, 9))
  assert ckpt_lib.Checkpointer(tmp_path / "bad").all_steps() == [4]
  rows = [json.loads(l) for l in (tmp_path / "bad" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows if "train/loss" in r] == [4]


def test_different_config_is_refused_untouched(straight):
  wd, _ = straight
  before = {p: os.path.getmtime(os.path.join(dp, p)) for dp, _, fs in os.walk(wd) for p in fs}
  config_before = (wd / "config.json").read_text()
  with pytest.raises(ckpt_lib.ConfigMismatchError,
                     match=r"(?s)different config.*optimizer.learning_rate: 0.01 vs 0.02"):
    _run(wd, optimizer__learning_rate=0.02)
  assert (wd / "config.json").read_text() == config_before
  after = {p: os.path.getmtime(os.path.join(dp, p)) for dp, _, fs in os.walk(wd) for p in fs}
  assert after == before


def test_bad_setting_fails_before_the_workdir_is_claimed(tmp_path):
  """A start that fails on an invalid setting (here the optimizer schedule) raises a one-line
  project error and writes nothing, so the corrected command is not refused as another run."""
  from instant3d_jax import errors
  with pytest.raises(errors.ConfigError, match="decay_steps"):
    _run(tmp_path, train__total_steps=2, optimizer__warmup_steps=5, optimizer__decay_steps=0)
  assert not (tmp_path / "config.json").exists()
  res = _run(tmp_path, train__total_steps=2, optimizer__warmup_steps=1,
             checkpoint__every_steps=0)
  assert res.step == 2 and (tmp_path / "config.json").exists()


def test_gradient_accumulation_matches_full_batch(tmp_path):
  a = _run(tmp_path / "a", train__total_steps=3, checkpoint__every_steps=0)
  b = _run(tmp_path / "b", train__total_steps=3, train__accum_steps=4,
           checkpoint__every_steps=0)
  for x, y in zip(jax.tree.leaves(_params(a)), jax.tree.leaves(_params(b))):
    tolerance.within("train_loop.accum_4_vs_full_batch.params", y, x, 1e-5, "rel")
  tolerance.within("train_loop.accum_4_vs_full_batch.loss", b.history[0]["loss"],
                   a.history[0]["loss"], 1e-6, "rel")


def test_logs_written(straight):
  wd, full = straight
  rows = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
  train_rows = [r for r in rows if "train/loss" in r]
  assert [r["step"] for r in train_rows][:6] == [1, 2, 3, 4, 5, 6]
  assert train_rows[0]["train/loss"] == pytest.approx(full.history[0]["loss"])
  for k in ("train/lr", "train/grad_norm", "train/s_per_step", "train/examples_per_s",
            "train/tflops_per_device", "train/mfu"):
    assert k in train_rows[0], k
  # Warm-up: lr after step 1 is peak·1/2 (2 warm-up steps), logged at the step's start value 0.
  assert train_rows[0]["train/lr"] == 0.0
  assert train_rows[1]["train/lr"] == pytest.approx(0.005)
  assert (wd / "loss_curve.png").stat().st_size > 1000
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(wd / "tb"))


def test_initial_params_hook_at_step_0_only(tmp_path):
  """`Task.initial_params` sees the initialised host params once, when the run starts at step 0;
  its result is placed with the derived shardings (fsdp 2 splits `embed`); a resume restores
  the checkpoint instead and never calls it."""
  calls = []

  def hook(params):
    calls.append(jax.tree.map(lambda x: (type(x).__name__, x.shape), params))
    return jax.tree.map(lambda x: np.full(x.shape, 0.01, x.dtype), params)

  cfg = train_toy.get_config()
  cfg.train.update(total_steps=4, halt_at_step=1)
  cfg.mesh.update(data=2, fsdp=2)
  task = train_toy.make_task(cfg)
  task.initial_params = hook
  first = loop.run(cfg, tmp_path, task, log=lambda *_: None)
  assert len(calls) == 1 and calls[0]["fc1"]["kernel"] == ("ndarray", (train_toy.DIM,
                                                                       train_toy.HIDDEN))
  # The warm-up starts at lr 0, so step 1 leaves the hook's params as they were.
  kernel = first.state.params["fc1"]["kernel"]
  np.testing.assert_array_equal(np.asarray(kernel), np.float32(0.01))
  assert kernel.addressable_shards[0].data.shape == (train_toy.DIM // 2, train_toy.HIDDEN)
  cfg.train.halt_at_step = 0
  second = loop.run(cfg, tmp_path, task, log=lambda *_: None)
  assert second.step == 4 and len(calls) == 1
  # A hook that changes the tree is refused before anything trains.
  task.initial_params = lambda p: {"fc1": p["fc1"]}
  with pytest.raises(ValueError, match=r"\['fc2'\]\['bias'\]: missing"):
    loop.run(cfg, tmp_path / "other", task, log=lambda *_: None)


def test_console_line_shows_throughput(tmp_path, capsys):
  res = _run(tmp_path, train__total_steps=3, checkpoint__every_steps=0)
  assert res.step == 3
  out = capsys.readouterr().out
  assert "loss " in out and "s/step" in out and "TFLOP/s/dev" in out and "MFU " in out
  line = loop.progress_postfix({"loss": 0.5, "psnr": 20.0},
                               {"s_per_step": 2.0, "tflops_per_device": 1.5, "mfu": 0.25})
  assert line == "loss 0.5 psnr 20.00 2.00s/step 1.5 TFLOP/s/dev MFU 25%"
  assert loop.progress_postfix({"loss": 0.5}, {"s_per_step": 2.0}) == "loss 0.5 2.00s/step"
