"""bench/tpu_plan.py: jobs compiled ahead of time by the TPU compiler for a TPU topology on this
CPU machine (libtpu, `make install-aot`), the auto-batch search and the on-disk cache.

The compile tests skip where libtpu is not importable; the rest needs no libtpu.
"""
from __future__ import annotations

import json
import math
import types

import jax
import pytest

from bench import tpu_plan as tp
from tests import tiny_configs

needs_libtpu = pytest.mark.skipif(
    tp.libtpu_version() is None,
    reason="libtpu is not installed (`make install-aot`, Linux x86-64): no TPU compiler to plan "
           "with")


@pytest.fixture(scope="module")
def v5e_2x2():
  return tp.topology_devices("v5e:2x2")


def _assert_shardings(compiled_tree, abstract_tree, expected_tree, what):
  """Every compiled input sharding equals the configured one (inputs jit prunes are None)."""
  # Up to the configured tree's structure: a pruned input is a None leaf there, while a None
  # field of the state (e.g. `ema` off) is no leaf on either side.
  got = jax.tree_util.tree_structure(expected_tree).flatten_up_to(compiled_tree)
  exp = jax.tree.leaves(expected_tree)
  shapes = jax.tree.leaves(abstract_tree)
  assert len(got) == len(exp) == len(shapes), what
  for g, e, a in zip(got, exp, shapes):
    if g is None:
      continue
    assert g.is_equivalent_to(e, len(a.shape)), f"{what}: compiled {g}, configured {e}"


def _check_memory(built, chip):
  row = tp.measure(built, chip)
  m = row["memory"]
  assert m["arguments"] > 0 and m["outputs"] > 0 and m["sum"] > 0, m
  assert row["cost"]["flops"] > 0 and row["cost"]["bytes"] > 0, row["cost"]
  assert row["roofline"]["est_s"] > 0 and row["fits"]
  return row


@needs_libtpu
def test_lrm_train_step_compiles_for_v5e(v5e_2x2):
  assert len(v5e_2x2) == 4 and "TPU" in v5e_2x2[0].device_kind
  cfg = tiny_configs.micro_lrm()
  cfg.model.render.num_importance = 0   # no fine pass: the TPU compile takes ~40 % less time
  built = tp.lrm_train(v5e_2x2, 1, variant="tiny", cfg=cfg)
  assert built.mesh == {"data": 1, "fsdp": 4, "tensor": 1} and built.global_batch == 4
  row = _check_memory(built, tp.CHIPS["v5e"])
  assert row["memory"]["temporaries"] > 0
  args, _ = built.compiled.input_shardings
  for (name, abstract, expected), got in zip(built.inputs, args):
    _assert_shardings(got, abstract, expected, name)
  # FSDP really shards the state: some parameter is split over the 4 chips.
  state_sh = dict((n, e) for n, _, e in built.inputs)["state"]
  assert any("fsdp" in str(s.spec) for s in jax.tree.leaves(state_sh.params))


@needs_libtpu
def test_sdxl_sampler_compiles_for_v5e(v5e_2x2):
  built = tp.sdxl_sample(v5e_2x2, 1, variant="tiny")
  assert built.global_batch == 4 and built.steps_per_unit == 4
  _check_memory(built, tp.CHIPS["v5e"])
  args, _ = built.compiled.input_shardings
  # _denoise(unet, with_progress, rules | unet_params, latents, ctx, pooled, time_ids, ...)
  expected = dict((n, (a, e)) for n, a, e in built.inputs)
  _assert_shardings(args[0], *expected["unet params"], "unet params")
  _assert_shardings(args[1], *expected["latents"], "latents")
  assert args[1].spec[0] == ("data", "fsdp")   # prompts over the batch axes


@pytest.mark.slow  # ~25–40 s of TPU compiling on 2 cores
@needs_libtpu
def test_sdxl_finetune_step_compiles_for_v5e(v5e_2x2):
  """Stage 1's train step (the micro UNet of tests/test_train_mv.py in the `sdxl` variant's
  settings: bf16 compute, full remat, EMA) compiled for 4 v5e chips, FSDP over them."""
  from tests.test_train_mv import MICRO_UNET
  from instant3d_jax.configs import mv_sdxl
  cfg = mv_sdxl.get_config("tiny")
  cfg.model.random_init.unet = MICRO_UNET
  cfg.grid.view_resolution = 8
  cfg.model.update(dict(dtype="bfloat16", remat="full", train_parts=("unet",)))
  built = tp.sdxl_finetune(v5e_2x2, 1, variant="tiny", cfg=cfg)
  assert built.mesh == {"data": 1, "fsdp": 4, "tensor": 1} and built.global_batch == 4
  row = _check_memory(built, tp.CHIPS["v5e"])
  assert row["memory"]["temporaries"] > 0
  args, _ = built.compiled.input_shardings
  for (name, abstract, expected), got in zip(built.inputs, args):
    _assert_shardings(got, abstract, expected, name)
  state_sh = dict((n, e) for n, _, e in built.inputs)["state"]
  assert jax.tree.structure(state_sh.ema) == jax.tree.structure(state_sh.params)
  assert any("fsdp" in str(s.spec) for s in jax.tree.leaves(state_sh.params))


def test_unknown_job_and_bad_flags_are_one_line_errors(capsys):
  assert tp.main(["--topology", "v5e:2x2", "--job", "nope"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "lrm_train" in err and "sdxl_sample" in err
  assert tp.main(["--topology", "v9:2x2", "--job", "lrm_train"]) == 2
  assert "v5p" in capsys.readouterr().err
  assert tp.main(["--topology", "v5e:2x2", "--job", "lrm_train", "--per_chip_batch", "0"]) == 2
  assert "per_chip_batch" in capsys.readouterr().err


def test_cloud_names_count_cores_where_cloud_does():
  assert tp.cloud_name("v5p:2x2x2") == "v5p-16"
  assert tp.cloud_name("v5p:4x4x8") == "v5p-256"
  assert tp.cloud_name("v5e:16x16") == "v5litepod-256"
  assert tp.cloud_name("v6e:16x16") == "v6e-256"


def _fake_job(monkeypatch, bytes_per_item: int, fixed: int, calls: list):
  """A registered job whose 'compile' reports `fixed + batch × bytes_per_item` bytes, and which
  the TPU compiler 'rejects' past 2 × the HBM."""
  def fake(devices, batch, *, variant, mesh=None, cfg=None):
    calls.append(batch)
    total = fixed + batch * bytes_per_item
    if total > 2 * 16 * tp.GiB:
      raise RuntimeError("RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm")
    mem = types.SimpleNamespace(argument_size_in_bytes=fixed, output_size_in_bytes=0,
                                temp_size_in_bytes=batch * bytes_per_item,
                                alias_size_in_bytes=0, generated_code_size_in_bytes=1)
    compiled = types.SimpleNamespace(memory_analysis=lambda: mem,
                                     cost_analysis=lambda: {"flops": 1e12 * batch,
                                                            "bytes accessed": 1e9 * batch})
    return tp.Built(compiled=compiled, mesh={"data": 4, "fsdp": 1, "tensor": 1},
                    global_batch=4 * batch, unit="step", config={}, inputs=[])
  monkeypatch.setitem(tp.JOBS, "fake", (fake, "a fake job"))
  monkeypatch.setattr(tp, "topology_devices", lambda topology: [None] * 4)
  monkeypatch.setattr(tp, "_job_source_hash", lambda name: "src")


def test_auto_batch_finds_the_largest_fitting_batch_and_caches(monkeypatch, tmp_path):
  calls = []
  per_item, fixed = 3 * tp.GiB, 2 * tp.GiB     # fits up to (16 - 2) / 3 = 4 on a v5e
  _fake_job(monkeypatch, per_item, fixed, calls)
  cache = tp.Cache(tmp_path / "cache.json")
  best, probes = tp.auto_batch("v5e:2x2", "fake", variant="x", cache=cache, log=lambda *_: None)
  assert best["batch"] == 4 and best["fits"]
  assert {p["batch"] for p in probes} >= {4, 5} and not [p for p in probes if p["batch"] == 5][0]["fits"]
  assert len(calls) <= 4, calls   # 1, 2, the line's limit + 1, the limit
  n = len(calls)
  again = tp.Cache(tmp_path / "cache.json")
  best2, _ = tp.auto_batch("v5e:2x2", "fake", variant="x", cache=again, log=lambda *_: None)
  assert len(calls) == n and best2["batch"] == 4
  keys = json.loads((tmp_path / "cache.json").read_text())
  assert all("v5e:2x2|fake|x|b" in k and "libtpu" in k for k in keys)


def test_compiler_rejection_counts_as_not_fitting(monkeypatch):
  calls = []
  _fake_job(monkeypatch, 40 * tp.GiB, 0, calls)
  row = tp.compile_once("v5e:2x2", "fake", 1, variant="x", log=lambda *_: None)
  assert not row["fits"] and "RESOURCE_EXHAUSTED" in row["error"]
  best, probes = tp.auto_batch("v5e:2x2", "fake", variant="x", log=lambda *_: None)
  assert best is None and len(probes) == 1


def test_roofline_is_the_slower_of_compute_and_memory():
  chip = tp.CHIPS["v5p"]
  r = tp.roofline(chip, flops=chip.bf16_tflops * 1e12, nbytes=0.0, model_flops=None)
  assert r["bound"] == "compute" and math.isclose(r["est_s"], 1.0) and math.isclose(
      r["mfu_ceiling"], 1.0)
  r = tp.roofline(chip, flops=chip.bf16_tflops * 1e12, nbytes=2 * chip.hbm_gbps * 1e9,
                  model_flops=chip.bf16_tflops * 1e12 / 2)
  assert r["bound"] == "HBM" and math.isclose(r["est_s"], 2.0) and math.isclose(
      r["mfu_ceiling"], 0.25)


def test_auto_batch_with_a_good_hint_takes_two_compiles(monkeypatch):
  calls = []
  _fake_job(monkeypatch, 3 * tp.GiB, 2 * tp.GiB, calls)   # largest fitting batch: 4
  best, _ = tp.auto_batch("v5e:2x2", "fake", variant="x", hint=4, log=lambda *_: None)
  assert best["batch"] == 4 and calls == [4, 5]
  calls.clear()   # a hint too large still ends at 4, searching down
  best, _ = tp.auto_batch("v5e:2x2", "fake", variant="x", hint=9, log=lambda *_: None)
  assert best["batch"] == 4 and calls[0] == 9 and 5 in calls


def test_auto_batch_stops_at_its_compile_budget_and_a_rerun_continues(monkeypatch, tmp_path):
  calls = []
  _fake_job(monkeypatch, 1 * tp.GiB, 2 * tp.GiB, calls)   # largest fitting batch: 14
  path = tmp_path / "cache.json"
  best, _ = tp.auto_batch("v5e:2x2", "fake", variant="x", cache=tp.Cache(path), max_compiles=2,
                          log=lambda *_: None)
  assert calls == [1, 2] and best["auto_open"] == (2, None)
  best, _ = tp.auto_batch("v5e:2x2", "fake", variant="x", cache=tp.Cache(path),
                          log=lambda *_: None)
  assert best["batch"] == 14 and "auto_open" not in best
  assert calls[:2] == [1, 2] and calls.count(1) == 1 and calls.count(2) == 1   # from the cache


@needs_libtpu
def test_text3d_reconstruction_batch_compiles_for_v5e(v5e_2x2):
  """Stage 2 of the text-to-3D batch (pipeline.TextTo3D's placement: objects over the batch
  axes, the reconstructor replicated), the micro LRM, for 4 v5e chips."""
  from instant3d_jax.configs import instant3d
  cfg = instant3d.get_config("tiny")
  built = tp.text3d(v5e_2x2, 1, variant="tiny", cfg=cfg, lrm_cfg=tiny_configs.micro_lrm())
  assert built.global_batch == 4 and built.mesh["data"] == 4
  _check_memory(built, tp.CHIPS["v5e"])
  assert built.model_flops and built.model_flops > 0
  args, _ = built.compiled.input_shardings
  # _lrm_apply(m | params, images, cams)
  expected = dict((n, (a, e)) for n, a, e in built.inputs)
  _assert_shardings(args[0], *expected["lrm params"], "lrm params")
  _assert_shardings(args[1], *expected["views"], "views")
  assert args[1].spec[0] in ("data", ("data", "fsdp"))   # objects over the batch axes
  assert all(s.spec == jax.sharding.PartitionSpec() for s in jax.tree.leaves(args[0]))


def test_each_job_hashes_the_sources_it_compiles_and_only_those(monkeypatch, tmp_path):
  assert set(tp.JOB_SOURCES) == set(tp.JOBS)
  for name in tp.JOBS:                      # every listed path exists in the repository
    for p in tp.JOB_SOURCES[name]:
      assert (tp.ROOT / p).exists(), (name, p)
  for p in {p for paths in tp.JOB_SOURCES.values() for p in paths}:
    f = tmp_path / p / "a.py" if p.endswith("/") else tmp_path / p
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("x = 1\n")
  monkeypatch.setattr(tp, "ROOT", tmp_path)
  h = tp._job_source_hash.__wrapped__       # the hash itself, without the once-per-process cache
  before = {name: h(name) for name in tp.JOBS}
  (tmp_path / "configs/mv_sdxl.py").write_text("x = 2\n")
  after = {name: h(name) for name in tp.JOBS}
  assert [n for n in tp.JOBS if after[n] != before[n]] == ["sdxl_finetune"]
  (tmp_path / "configs/mv_sdxl.py").write_text('"""A docstring edit keeps the cache."""\nx = 2\n')
  assert h("sdxl_finetune") == after["sdxl_finetune"]
  (tmp_path / "instant3d_jax/models/new.py").write_text("y = 1\n")   # a new file in a folder
  changed = [n for n in tp.JOBS if h(n) != after[n]]
  assert sorted(changed) == sorted(tp.JOBS)


def test_probe_list_folds_consecutive_rejections():
  fit = lambda b, gib: dict(batch=b, fits=gib <= 95, memory=dict(sum=gib * tp.GiB))
  rej = lambda b: dict(batch=b, fits=False, error="RESOURCE_EXHAUSTED")
  probes = [rej(66), fit(57, 88.7), rej(64), rej(65), fit(63, 94.8), rej(70), fit(34, 96.1)]
  assert tp._probe_texts(probes) == [
      "34 → 96.10 GiB (does not fit)", "57 → 88.70 GiB", "63 → 94.80 GiB",
      "64–66 → rejected by the compiler (does not fit)",
      "70 → rejected by the compiler (does not fit)"]


def test_auto_batch_bisects_when_the_line_misleads(monkeypatch):
  """Seen on v5e:16x16 `lrm_train`: 5 → 13.53 GiB, 6 → 13.78 GiB (the compiler rematerialises
  more as the batch grows), so the line through them puts the limit far too high and every
  batch past the true limit is rejected without a sum. The search must bisect, not walk down."""
  calls = []

  def fake(devices, batch, *, variant, mesh=None, cfg=None):
    calls.append(batch)
    if batch > 9:
      raise RuntimeError("RESOURCE_EXHAUSTED: Ran out of memory on HBM")
    total = int((13.5 + 0.25 * (batch - 5)) * tp.GiB)
    mem = types.SimpleNamespace(argument_size_in_bytes=total, output_size_in_bytes=0,
                                temp_size_in_bytes=0, alias_size_in_bytes=0,
                                generated_code_size_in_bytes=1)
    compiled = types.SimpleNamespace(memory_analysis=lambda: mem,
                                     cost_analysis=lambda: {"flops": 1e12, "bytes accessed": 1e9})
    return tp.Built(compiled=compiled, mesh={"data": 4}, global_batch=4 * batch, unit="step",
                    config={}, inputs=[])
  monkeypatch.setitem(tp.JOBS, "fake", (fake, "a fake job"))
  monkeypatch.setattr(tp, "topology_devices", lambda topology: [None] * 4)
  monkeypatch.setattr(tp, "_job_source_hash", lambda name: "src")
  best, _ = tp.auto_batch("v5e:2x2", "fake", variant="x", hint=5, log=lambda *_: None)
  assert best["batch"] == 9
  # 5, 6, the line's limit + 1 (rejected), the limit (rejected), then halving: 7 compiles where
  # walking down from the limit one batch at a time took 9.
  assert calls[:2] == [5, 6] and len(calls) <= 7, calls
