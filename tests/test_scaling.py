"""The warm-up–stable–decay schedule (train/optimizer.py) and the scaling study (bench/scaling.py):
the schedule's shape, that a branch from a stable-phase checkpoint runs the direct run's
schedule, and a micro study (2 sizes × 2 budgets) that writes its table, JSON and plot."""
from __future__ import annotations

import json

import jax
import ml_collections
import numpy as np
import optax
import pytest

from instant3d_jax import errors
from instant3d_jax.train import optimizer as opt_lib


def _opt(**kw) -> ml_collections.ConfigDict:
  base = dict(learning_rate=1e-3, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.05, warmup_steps=10,
              decay_steps=0, final_lr_ratio=0.1, grad_clip_norm=1.0, decay_min_ndim=2,
              schedule="wsd", decay_fraction=0.2)
  base.update(kw)
  return ml_collections.ConfigDict(base)


def _values(sched, n: int) -> np.ndarray:
  return np.array([float(sched(i)) for i in range(n + 1)])


def test_wsd_shape_warmup_flat_decay_to_floor():
  peak, floor = 1e-3, 1e-4
  lr = _values(opt_lib.make_schedule(_opt(), 100), 100)
  assert opt_lib.wsd_decay_start(_opt(), 100) == 80
  np.testing.assert_allclose(lr[:11], peak * np.arange(11) / 10, rtol=1e-6)   # warm-up
  np.testing.assert_allclose(lr[10:81], peak, rtol=1e-6)                      # stable
  assert np.all(np.diff(lr[80:]) < 0)                                         # decays...
  np.testing.assert_allclose(lr[100], floor, rtol=1e-5)                       # ...to the floor
  # 1−sqrt: half-way through the decay, 1 − √0.5 of the way above the floor; linear: half.
  np.testing.assert_allclose(lr[90], floor + (peak - floor) * (1 - np.sqrt(0.5)), rtol=1e-5)
  lin = _values(opt_lib.make_schedule(_opt(decay_shape="linear"), 100), 100)
  np.testing.assert_allclose(lin[90], floor + (peak - floor) * 0.5, rtol=1e-5)
  np.testing.assert_allclose(lin[:81], lr[:81], rtol=1e-6)


def test_cosine_stays_the_default():
  cfg = _opt()
  del cfg["schedule"]
  got = _values(opt_lib.make_schedule(cfg, 50), 50)
  want = _values(optax.warmup_cosine_decay_schedule(0.0, 1e-3, 10, 50, 1e-4), 50)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_branch_reproduces_the_direct_schedule():
  """Budgets 40 / 80 branched off a 160-step run: up to each branch point the long run's rate
  is the short run's, so continuing the long run's checkpoint with total_steps=B follows the
  direct B-step schedule exactly."""
  cfg = _opt(decay_fraction=0.25)
  long = _values(opt_lib.make_schedule(cfg, 160), 160)
  for b in (40, 80):
    start = opt_lib.wsd_decay_start(cfg, b)
    assert start == int(b * 0.75)
    direct = _values(opt_lib.make_schedule(cfg, b), b)
    np.testing.assert_array_equal(long[:start + 1], direct[:start + 1])
    assert direct[-1] == pytest.approx(1e-4) and long[start + 5] == pytest.approx(1e-3)


def test_wsd_config_errors():
  with pytest.raises(errors.ConfigError, match="inside the 10 warm-up"):
    opt_lib.make_schedule(_opt(decay_fraction=0.95), 100)
  with pytest.raises(errors.ConfigError, match="decay_fraction must be in"):
    opt_lib.make_schedule(_opt(decay_fraction=0.0), 100)
  with pytest.raises(errors.ConfigError, match="schedule must be one of"):
    opt_lib.make_schedule(_opt(schedule="step"), 100)
  with pytest.raises(errors.ConfigError, match="decay_shape must be one of"):
    opt_lib.make_schedule(_opt(decay_shape="cosine"), 100)


@pytest.mark.slow
def test_micro_study_writes_table_json_and_plot(tmp_path):
  """2 micro sizes × budgets 4 / 8 on an 8-object procedural world: the table, JSON and PNG are
  written; the 4-step branch logs the 4-step schedule's rates and ends with the parameters of a
  direct 4-step run."""
  from bench import common, scaling
  from instant3d_jax.configs import data as data_config
  from data_pipeline import procedural
  from instant3d_jax.convert import checkpoints
  from instant3d_jax.train import lrm_task
  from tests.tiny_configs import micro_lrm
  w = data_config.get_config("tiny")
  w.num_objects = 8
  procedural.generate(w, str(tmp_path / "world"), progress=False)
  base = micro_lrm()
  base.data.source = "records"
  base.data_dir = str(tmp_path / "world")
  base.data.loader.num_targets = 2
  base.loss.rays_per_view = 16
  base.train.global_batch_size = 4
  base.train.log_every = 1
  base.optimizer.warmup_steps = 1
  base.eval.num_targets = 2
  base.eval.batch_size = 2
  sizes = {"a": {}, "b": {"decoder.num_layers": 2}}
  study = scaling.run_study(base, sizes, [8, 4], decay_fraction=0.5, eval_objects=2,
                            workdir=tmp_path / "runs", log=lambda s: None)
  rows = study["rows"]
  assert [(r["size"], r["budget"], r["decay_start"]) for r in rows] == [
      ("a", 4, 2), ("a", 8, 4), ("b", 4, 2), ("b", 8, 4)]
  assert rows[2]["params"] > rows[0]["params"]
  assert rows[1]["flops"] == pytest.approx(2 * rows[0]["flops"])
  assert all(np.isfinite(r["psnr"]) and r["wall_s"] > 0 for r in rows)
  assert "background_psnr" in study["baselines"]

  # The branch b4 of size a: its logged rates are the 4-step WSD schedule's; its parameters
  # are those of a direct 4-step run.
  cfg = scaling.study_config(base, {}, 0.5)
  sched = opt_lib.make_schedule(cfg.optimizer, 4)
  logged = [json.loads(x) for x in (tmp_path / "runs/a/b4/metrics.jsonl").read_text().split("\n")
            if x.strip()]
  lrs = {r["step"]: r["train/lr"] for r in logged if "train/lr" in r}
  assert sorted(lrs) == [3, 4]
  np.testing.assert_allclose([lrs[3], lrs[4]], [float(sched(2)), float(sched(3))], rtol=1e-6)
  cfg.train.total_steps = 4
  lrm_task.train(cfg, tmp_path / "direct", log=lambda s: None)
  _, direct, _ = checkpoints.load(tmp_path / "direct")
  _, branch, _ = checkpoints.load(tmp_path / "runs/a/b4")
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
               direct, branch)

  prov = common.Provenance.start()
  md, js, png = scaling.write_outputs(study, tmp_path / "out" / "scaling.md", prov,
                                      config_note="micro")
  text = md.read_text()
  assert "| a | " in text and "](scaling.png)" in text and common.read_provenance(text)
  assert len(json.loads(js.read_text())["rows"]) == 4
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_benchmarks_md_links_snippet_images_from_the_root():
  """A snippet's `](scaling.png)` (beside it in bench/results/) points there from BENCHMARKS.md;
  links elsewhere are left alone."""
  from bench import run_all
  text = "# T\n![plot](scaling.png) and [x](https://a.b/c.png) and ![y](bench/results/y.png)"
  assert run_all._demote(text) == ("## T\n![plot](bench/results/scaling.png) and "
                                   "[x](https://a.b/c.png) and ![y](bench/results/y.png)")
