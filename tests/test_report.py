"""The README's result blocks are generated from committed results files (bench/report.py)."""
import json

from bench import report
from instant3d_jax.eval import results


def test_readme_blocks_match_the_committed_results_files():
  """Every generated block of README.md is exactly what bench/report.py makes of the committed
  files in bench/results/runs/ (a typed or stale figure fails here: run `python -m bench.report`)."""
  text = report.README.read_text()
  new, present = report.render(text)
  assert "demo" in present, "README.md lost its generated `make demo` block"
  stale = [n for n in present if report.render_one(text, n) != report.render_one(new, n)]
  assert not stale, f"README.md blocks out of date: {stale}; run python -m bench.report"


def _fake_demo(tmp_path, psnr, params_hash="a" * 64):
  run = results.Run.start("demo", command="python -m instant3d_jax.demo")
  ev = {"num_objects": 100, "num_views_per_object": 10}
  row = {"psnr": psnr, "ssim": 0.9, "lpips": 0.1, "foreground_psnr": 13.0, "colour_error": 19.0}
  return run.record(
      configs={"lrm": {"x": 1}}, params={"lrm": params_hash},
      metrics={"val": row, "test": dict(row, psnr=psnr - 0.5)},
      baselines={"val": {"background only": dict(row, psnr=13.6)},
                 "test": {"background only": dict(row, psnr=13.7)}},
      wall_s={"data": 20, "train": 800, "eval_val": 30, "eval_test": 30, "turntable": 10},
      extra={"train": {"step": 1350, "stop_reason": "total_steps", "wall_s": 800.0,
                       "compile_s": 20.0},
             "eval": {"val": ev, "test": dict(ev, test_ledger={
                 "dataset": "data:test:abc:n100", "configs_scored": 3, "repeat": False})},
             "scored_config_sha256": "c" * 64})


def test_blocks_are_rendered_from_the_files(tmp_path):
  runs = tmp_path / "runs"
  runs.mkdir()
  (runs / "demo.json").write_text(json.dumps(_fake_demo(tmp_path, 23.456)))
  (runs / "demo_rerun.json").write_text(json.dumps(_fake_demo(tmp_path, 23.456)))
  begin, end = report.BEGIN.format(name="demo"), report.END.format(name="demo")
  text = f"intro\n{begin}\ntyped 99.99 dB\n{end}\noutro\n"
  new, present = report.render(text, runs)
  body = report.render_one(new, "demo")
  assert present == ["demo"] and "99.99" not in body and new.startswith("intro\n")
  assert "**23.46**" in body and "**22.96**" in body and "| *background only, val* | 13.60" in body
  assert "3 configuration(s)" in body and "equal: bit-identical parameters" in body
  (runs / "demo_rerun.json").write_text(json.dumps(_fake_demo(tmp_path, 23.456, "b" * 64)))
  assert "DIFFERENT parameters" in report.render_one(report.render(text, runs)[0], "demo")
  (runs / "demo.json").unlink()
  assert "Not run yet" in report.render_one(report.render(text, runs)[0], "demo")


def test_adopt_refuses_what_is_not_a_results_file(tmp_path, capsys):
  bad = tmp_path / "r.json"
  bad.write_text("{}")
  assert report.main(["--adopt", f"demo={bad}", "--readme", str(tmp_path / "README.md")]) == 2
  assert "not a results file" in capsys.readouterr().err


def test_rival_block_compares_val_rows(tmp_path):
  from bench import rescore_val
  default, rival = _fake_demo(tmp_path, 23.8), _fake_demo(tmp_path, 23.1)
  md = rescore_val.rival_markdown(default, rival, sources=("a.json", "b.json"), what="x.y")
  assert "| default | 23.80 |" in md and "| rival | 23.10 |" in md
  assert "the default stands" in md
  better = rescore_val.rival_markdown(rival, default, sources=("b.json", "a.json"), what="x.y")
  assert "better on psnr" in better
