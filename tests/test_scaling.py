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
from tests.fake_gcs import fake_gcs  # noqa: F401  (fixture)


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


def _micro_study(tmp_path, *, seed: bool = True):
  """A 2-size micro study (budgets 4 / 8, decay 0.5, warm-up 1) on an 8-object procedural
  world, its lift-free base the micro model; (scaling config, series)."""
  from bench import scaling
  from instant3d_jax.configs import data as data_config
  from data_pipeline import procedural
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
  base.eval.num_targets = 2
  base.eval.batch_size = 2
  base.model.render.num_samples = base.model.render.num_importance = 4
  scfg = ml_collections.ConfigDict(dict(
      base="tiny", budgets=(4, 8), warmup_steps=1, decay_fraction=0.5, eval_objects=2,
      ladder={"a": dict(width=16, encoder_layers=1, decoder_layers=1, learning_rate=1e-3),
              "b": dict(width=32, encoder_layers=1, decoder_layers=2, learning_rate=1e-3)},
      seed_size="a" if seed else "", second_seed=1, reference=""))
  return scfg, scaling.build_series(scfg, lrm_base=base)


@pytest.mark.slow
def test_micro_study_local_runs_and_collects(tmp_path):
  """The local study (every job in order) on the micro study: per-run results files; the 4-step
  branch logs the 4-step schedule's rates and ends with the parameters of a direct 4-step run;
  collect writes the table, JSON and plot; a second local run trains nothing."""
  from bench import common, scaling
  from instant3d_jax.convert import checkpoints
  from instant3d_jax.eval import results as results_lib
  from instant3d_jax.train import lrm_task
  scfg, series = _micro_study(tmp_path)
  assert [s["role"] for s in series.values()] == ["size", "size", "seed"]
  work = tmp_path / "runs"
  spec = scaling.write_study(work, series, scfg, config_note="micro")
  logs = []
  scaling.run_local(spec, work, log=logs.append)
  col = scaling.collect(work)
  rows = {(r["series"], r["budget"]): r for r in col["rows"]}
  assert sorted(rows) == [("a", 4), ("a", 8), ("a_seed1", 4), ("a_seed1", 8), ("b", 4), ("b", 8)]
  assert not col["missing"]
  assert rows[("b", 4)]["params"] > rows[("a", 4)]["params"]
  assert rows[("a", 8)]["flops"] == pytest.approx(2 * rows[("a", 4)]["flops"])
  assert rows[("a", 4)]["decay_start"] == 2
  assert all(np.isfinite(r["mse"]) and r["wall_s"] > 0 for r in rows.values())
  res = results_lib.read(work / "a/b4/results.json")
  assert res["kind"] == "scaling_run" and len(res["extra"]["per_object"]["mse"]) == 2
  # the seed changes the run
  assert res["param_sha256"]["lrm"] != results_lib.read(
      work / "a_seed1/b4/results.json")["param_sha256"]["lrm"]
  # per-object MSE averages to the summary
  assert np.mean(res["extra"]["per_object"]["mse"]) == pytest.approx(res["metrics"]["mse"])

  # The branch b4 of size a: the 4-step WSD schedule's rates, a direct 4-step run's parameters.
  cfg = scaling.series_config(spec, "a")
  sched = opt_lib.make_schedule(cfg.optimizer, 4)
  logged = [json.loads(x) for x in (work / "a/b4/metrics.jsonl").read_text().split("\n")
            if x.strip()]
  lrs = {r["step"]: r["train/lr"] for r in logged if "train/lr" in r}
  assert sorted(lrs) == [3, 4]
  np.testing.assert_allclose([lrs[3], lrs[4]], [float(sched(2)), float(sched(3))], rtol=1e-6)
  cfg.train.total_steps = 4
  lrm_task.train(cfg, tmp_path / "direct", log=lambda s: None)
  _, direct, _ = checkpoints.load(tmp_path / "direct")
  _, branch, _ = checkpoints.load(work / "a/b4")
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
               direct, branch)
  # the longest run kept its branch point (retention)
  assert (work / "a/b8/checkpoints/2").exists()

  logs.clear()
  scaling.run_local(spec, work, log=logs.append)
  assert not any("training to step" in x for x in logs), logs

  md, js, png = scaling.write_outputs(col, scaling.analyse(col, n_boot=20), tmp_path / "out" /
                                      "scaling.md", common.Provenance.start())
  text = md.read_text()
  assert "| a | 4 |" in text and "](scaling.png)" in text and common.read_provenance(text)
  assert len(json.loads(js.read_text())["rows"]) == 6
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_frontier_and_power_law_fit():
  """The frontier keeps only points that beat every cheaper one; the fit recovers a known
  power law; the bootstrap of `analyse` brackets it on noiseless objects."""
  from bench import scaling
  pts = [(1, 5.0, "a"), (2, 4.0, "a"), (2, 3.0, "b"), (4, 3.5, "a"), (8, 2.0, "b")]
  assert scaling.frontier(pts) == [(1, 5.0, "a"), (2, 3.0, "b"), (8, 2.0, "b")]
  c = np.geomspace(1e12, 1e15, 8)
  loss = 0.3 * (c / 1e12) ** -0.4 + 0.01
  fit = scaling.fit_power_law(c, loss)
  assert fit["b"] == pytest.approx(0.4, rel=1e-3) and fit["c"] == pytest.approx(0.01, rel=1e-2)
  assert scaling.fit_power_law(c[:3], loss[:3]) is None


def test_emit_slurm_runs_on_stand_in_cluster_then_collect(tmp_path):
  """emit → a stand-in `sbatch` (runs each job's command at once, in submission order, after
  checking its dependency finished) → collect. A collect while runs are missing lists them."""
  import os
  import stat
  import subprocess
  import sys
  from bench import scaling
  scfg, series = _micro_study(tmp_path, seed=False)
  series = {"a": series["a"]}
  work = tmp_path / "runs"
  spec = scaling.write_study(work, series, scfg, config_note="micro")
  script = scaling.emit(spec, "slurm", str(work), tmp_path / "launch.sh",
                        python=sys.executable)
  text = script.read_text()
  assert text.count("sbatch --parsable") == 3 and "--dependency=afterok:" in text
  bindir = tmp_path / "bin"
  bindir.mkdir()
  fake = bindir / "sbatch"
  fake.write_text(f"""#!{sys.executable}
import subprocess, sys, pathlib
log = pathlib.Path({str(tmp_path / "jobs.log")!r})
done = log.read_text().split() if log.exists() else []
args = sys.argv[1:]
wrap = next(a.split("=", 1)[1] for a in args if a.startswith("--wrap="))
for a in args:
  if a.startswith("--dependency=afterok:"):
    assert a.split(":")[1] in done, (a, done)
job = str(len(done) + 1)
with open(log.with_name(f"slurm-{{job}}.out"), "w") as out:   # as slurm: the job's output
  r = subprocess.run(["bash", "-c", wrap], stdout=out, stderr=subprocess.STDOUT)
if r.returncode == 0:
  log.write_text(" ".join(done + [job]))
print(job)
sys.exit(r.returncode)
""")
  fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
  env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}",
             REPO=str(scaling.ROOT), PYTHONPATH=str(scaling.ROOT))
  # a partial collect first: the segment to the branch point only
  r = subprocess.run([sys.executable, "-m", "bench.scaling", "--workdir", str(work), "--job",
                      "segment", "--series", "a", "--until", "2"], env=env, cwd=scaling.ROOT,
                     capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  r = subprocess.run([sys.executable, "-m", "bench.scaling", "--collect", "--workdir",
                      str(work), "--out", str(tmp_path / "o0/s.md")], env=env, cwd=scaling.ROOT,
                     capture_output=True, text=True)
  assert r.returncode != 0 and "no finished run yet" in r.stderr, r.stderr[-2000:]
  r = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
  assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
  assert (tmp_path / "jobs.log").read_text().split() == ["1", "2", "3"]
  r = subprocess.run([sys.executable, "-m", "bench.scaling", "--collect", "--workdir",
                      str(work), "--out", str(tmp_path / "o/s.md")], env=env, cwd=scaling.ROOT,
                     capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  out = json.loads((tmp_path / "o/s.json").read_text())
  assert sorted((x["series"], x["budget"]) for x in out["rows"]) == [("a", 4), ("a", 8)]
  assert out["missing"] == []
  tpu = scaling.emit(spec, "tpu", str(work), tmp_path / "tpu.sh").read_text()
  assert "chain a " in tpu and tpu.count("--job") == 3


def test_benchmarks_md_links_snippet_images_from_the_root():
  """A snippet's `](scaling.png)` (beside it in bench/results/) points there from BENCHMARKS.md;
  links elsewhere are left alone."""
  from bench import run_all
  text = "# T\n![plot](scaling.png) and [x](https://a.b/c.png) and ![y](bench/results/y.png)"
  assert run_all._demote(text) == ("## T\n![plot](bench/results/scaling.png) and "
                                   "[x](https://a.b/c.png) and ![y](bench/results/y.png)")


def test_analyse_and_findings_on_synthetic_runs():
  """`analyse` and the README's sentences on made-up runs whose answer is known: the larger size
  wins at every step budget but the smaller one holds the frontier at the least compute, the
  frontier is fitted, the reference lies below the frontier
  (not met), the second seed's spread is reported."""
  from bench import scaling
  rng = np.random.default_rng(0)
  n_obj = 12
  spec = {"budgets": [100, 200, 400, 800], "decay_fraction": 0.25, "eval_objects": n_obj,
          "warmup_steps": 10, "config": "synthetic", "series": {
              "a": {"role": "size", "params": 1e6, "width": 64, "overrides": {"w": 64},
                    "learning_rate": 1e-3, "seed": 0},
              "b": {"role": "size", "params": 4e6, "width": 128, "overrides": {"w": 128},
                    "learning_rate": 1e-3, "seed": 0},
              "a_seed1": {"role": "seed", "params": 1e6, "width": 64, "overrides": {"w": 64},
                          "learning_rate": 1e-3, "seed": 1},
              "ref": {"role": "reference", "params": 2e6, "width": 128, "overrides": {},
                      "learning_rate": 1e-3, "seed": 0}}}
  flops_per_step = {"a": 1e9, "b": 4e9, "a_seed1": 1e9, "ref": 2e9}
  floor = {"a": 0.04, "b": 0.02, "a_seed1": 0.04, "ref": 0.005}
  rows, per_object = [], {}
  for name in spec["series"]:
    for b in spec["budgets"]:
      c = flops_per_step[name] * b
      loss = floor[name] + 0.5 * (c / 1e11) ** -0.5 + (0.001 if name == "a_seed1" else 0)
      po = loss * (1 + 0.05 * rng.standard_normal(n_obj))
      po = po - po.mean() + loss
      per_object[(name, b)] = {"mse": po.tolist(), "object_index": list(range(n_obj))}
      rows.append({"series": name, "budget": b, "steps": b, "flops": c, "mse": loss,
                   "wall_s": b * 0.1, "params": spec["series"][name]["params"],
                   "load": {"before": [1.0], "after": [1.0]}})
  col = {"spec": spec, "rows": rows, "per_object": per_object, "baselines":
         {"background_mse": 0.05}, "missing": []}
  ana = scaling.analyse(col, n_boot=50)
  assert set(ana["best_per_budget"].values()) == {"b"}     # more FLOPs per step: always ahead
  front = [p["series"] for p in ana["frontier"]]
  assert front[0] == "a" and front[-1] == "b"               # at fixed compute: a, then b
  assert ana["fit"] is not None and ana["bootstrap"]["b_interval"] is not None
  assert all(r["mse"] < r["frontier_mse"] for r in ana["reference"])
  assert len(ana["seeds"]) == 4 and ana["seeds"][0]["of"] == "a"
  text = " ".join(scaling.findings(spec, rows, dict(ana, baselines=col["baselines"]),
                                   {"wall_s": 600.0, "started_utc": "s", "finished_utc": "f",
                                    "load_mean_1min": 1.0, "load_max_1min": 1.0}))
  assert "does not meet the lift model (`ref`)" in text
  assert "A second seed of `a`" in text and "took 10 min" in text


def test_branch_copy_and_collect_in_a_bucket(fake_gcs, monkeypatch):
  """On gs:// (the fake bucket): the branch-copy step copies a checkpoint file by file with
  orbax's commit marker last, refuses a missing branch point with a one-line error, and
  `collect` reads results files written there."""
  from bench import scaling
  from instant3d_jax import fileio
  from instant3d_jax.base import checkpoint as ckpt_lib
  from instant3d_jax.eval import results as results_lib
  # orbax's finality test reads GCS metadata; here a step is complete once its marker exists.
  monkeypatch.setattr(ckpt_lib, "_is_complete",
                      lambda p: fileio.path(p).joinpath("commit_success.txt").exists())
  src, dst = "gs://bkt/study/a/b8", "gs://bkt/study/a/b4"
  fileio.write_text(f"{src}/{ckpt_lib.CONFIG_FILE}", "{}")
  for name in ("state/array.bin", "data/data.json", "commit_success.txt"):
    fileio.write_text(f"{src}/{ckpt_lib.CHECKPOINT_DIR}/2/{name}", name)
  order = []
  real_copy = fileio.copy_file
  monkeypatch.setattr(fileio, "copy_file", lambda a, b: (order.append(str(b)), real_copy(a, b)))
  with pytest.raises(errors.InputError, match="does not exist yet"):
    scaling.copy_branch(src, dst, 6)
  scaling.copy_branch(src, dst, 2)
  assert order[-1].endswith("2/commit_success.txt") and len(order) == 4
  assert fileio.path(f"{dst}/{ckpt_lib.CHECKPOINT_DIR}/2/state/array.bin").read_text() == \
      "state/array.bin"

  spec = {"schema": scaling.STUDY_SCHEMA, "config": "t", "budgets": [4, 8],
          "decay_fraction": 0.5, "eval_objects": 2, "warmup_steps": 1,
          "series": {"a": {"role": "size", "params": 10, "width": 16, "overrides": {},
                           "learning_rate": 1e-3, "seed": 0, "flops_per_step": 1.0,
                           "config": {}}}}
  fileio.write_text("gs://bkt/study/study.json", json.dumps(spec))
  run = results_lib.Run.start("scaling_run")
  run.write("gs://bkt/study/a/b8/results.json", metrics={"series": "a", "budget": 8, "mse": 0.1},
            params={"lrm": "0" * 64}, configs={"lrm": {}},
            extra={"per_object": {"mse": [0.1, 0.1], "object_index": [0, 1]}})
  col = scaling.collect("gs://bkt/study")
  assert [r["budget"] for r in col["rows"]] == [8] and col["missing"] == ["a/b4"]
