"""The accelerator suite's anchors (bench/device/suite.py, issue 29): a measured anchor is read
from a recorded device result file and shown with its provenance (file, key, card, date,
commit), never written as a number; a published one names its paper or datasheet and where the
project wrote it down. No JAX, no device: reads the source and small JSON files."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from bench.device import suite

SUITE_PY = Path(suite.__file__)


def _calls(node: ast.AST, names: set[str]):
  for n in ast.walk(node):
    if isinstance(n, ast.Call):
      f = n.func
      name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
      if name in names:
        yield name, n


def _numbers(call: ast.Call) -> list:
  return [c.value for a in (*call.args, *(k.value for k in call.keywords))
          for c in ast.walk(a) if isinstance(c, ast.Constant)
          and isinstance(c.value, (int, float)) and not isinstance(c.value, bool)]


def test_no_measured_anchor_is_a_number_in_the_code():
  """Structures: every measured anchor in ROWS has a result key and no value; every published
  one has a value and a source naming where it is printed. Source: no `measured(...)` or
  `Anchor("measured", ...)` call carries a numeric literal, and no Row's anchor is a string."""
  anchors = [a for row in suite.ROWS for a in row.anchors]
  assert {a.kind for a in anchors} == {"measured", "published"}
  for a in anchors:
    assert isinstance(a, suite.Anchor)
    if a.kind == "measured":
      assert a.value is None and a.key and not a.source
    else:
      assert isinstance(a.value, (int, float)) and a.source
  tree = ast.parse(SUITE_PY.read_text())
  measured_calls = 0
  for name, call in _calls(tree, {"measured", "Anchor"}):
    kind = call.args[0] if call.args else None
    if name == "Anchor" and not (isinstance(kind, ast.Constant) and kind.value == "measured"):
      continue
    measured_calls += 1
    assert not _numbers(call), ast.unparse(call)
  assert measured_calls >= 3
  for _, call in _calls(tree, {"Row"}):
    anchors_arg = call.args[2] if len(call.args) > 2 else None
    assert not (isinstance(anchors_arg, ast.Constant) and isinstance(anchors_arg.value, str)), \
        ast.unparse(call)
  with pytest.raises(ValueError):
    suite.Anchor("measured", "PyTorch eager", "ms", key="unet_torch_eager", value=89.4)
  with pytest.raises(ValueError):
    suite.Anchor("published", "datasheet", "TFLOP/s", value=989)   # no source


def _device_json(path: Path, runs: list[tuple[str, str]], meas: dict, card="NVIDIA H100"):
  """A merged device.json like bench/results/device.json: `runs` = [(commit, started_utc)]."""
  provs = [dict(command="python -m bench.device.suite", commit=c, started_utc=t) for c, t in runs]
  path.write_text(json.dumps(dict(
      card={"name": card}, dry_run=False, provenance=provs[-1],
      merged_from=provs if len(provs) > 1 else None,
      items={"unet_torch": {"measurements": meas}})))
  return path


def test_measured_anchor_resolves_with_its_provenance(tmp_path):
  f = _device_json(tmp_path / "device.json",
                   [("aaa111", "2026-10-28 10:00 UTC"), ("bbb222", "2026-10-28 11:00 UTC")],
                   {"unet_torch_eager": {"status": "ok", "ms": 89.43, "run": 1},
                    "unet_torch_compile": {"status": "ok", "ms": 49.07, "run": 2}})
  rec = suite.load_recorded([f])
  eager = suite.measured("PyTorch eager", "unet_torch_eager")
  compiled = suite.measured("PyTorch compiled", "unet_torch_compile")
  assert suite.render_anchor(eager, rec) == (
      f"89.4 ms PyTorch eager (measured: {f} `unet_torch_eager`, NVIDIA H100, 2026-10-28, "
      "commit aaa111)")
  assert "49.1 ms PyTorch compiled (measured:" in suite.render_anchor(compiled, rec)
  assert "commit bbb222" in suite.render_anchor(compiled, rec)   # the call that measured it
  # The latest recorded run wins; a dry run never counts.
  g = _device_json(tmp_path / "device_h200.json", [("ccc333", "2026-11-30 22:04 UTC")],
                   {"unet_torch_eager": {"status": "ok", "ms": 55.72}}, card="NVIDIA H200")
  dry = _device_json(tmp_path / "device_dry.json", [("ddd444", "2026-12-01 00:00 UTC")],
                     {"unet_torch_eager": {"status": "ok", "ms": 9999.0}})
  dry.write_text(json.dumps(dict(json.loads(dry.read_text()), dry_run=True)))
  text = suite.render_anchor(eager, suite.load_recorded([f, g, dry]))
  assert text.startswith("55.7 ms PyTorch eager (measured: ") and "NVIDIA H200, 2026-11-30, " \
      "commit ccc333" in text
  # The committed file resolves too, named relative to the repository.
  if (suite.ROOT / "bench/results/device.json").exists():
    cell = suite.render_anchors((eager,), suite.load_recorded())
    assert "(measured: bench/results/device.json `unet_torch_eager`, " in cell


def test_missing_key_renders_no_measured_anchor_and_the_table_carries_it(tmp_path):
  f = _device_json(tmp_path / "device.json", [("aaa111", "2026-10-28 10:00 UTC")],
                   {"unet_torch_eager": {"status": "ok", "ms": 89.43},
                    "unet_torch_compile": {"status": "not run: the item overran its budget"}})
  rec = suite.load_recorded([f])
  for key in ("unet_torch_compile", "vae_torch_eager"):   # not run; never recorded
    text = suite.render_anchor(suite.measured("PyTorch", key), rec)
    assert text == "PyTorch: — (no measured anchor yet)"
  assert suite.render_anchors((), rec) == "—"
  # The report's table renders every row's anchors from the files it is given.
  meta = dict(card={"name": "NVIDIA H200"}, versions={}, wall_s=1.0, budget_s=2.0)
  lines = suite.report({}, meta, None, False, anchor_paths=[f])
  row = {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith("| ")}
  vae = row["SDXL VAE decode, 1024² grid, bf16, JAX"]
  assert "PyTorch eager: — (no measured anchor yet)" in vae
  unet = row["SDXL UNet step, JAX + cuDNN flash attention"]
  assert "89.4 ms PyTorch eager (measured: " in unet and "PyTorch compiled: — (no measured" in unet
  assert "(published: MeshLRM Tab. 5; docs/paper_facts.md §B Inference)" in \
      row["LRM `large` images→triplane, cuDNN attention"]


def test_published_anchors_cite_what_docs_paper_facts_writes_down():
  """A published anchor citing docs/paper_facts.md names a section that exists and holds the
  figure as printed there."""
  facts = (suite.ROOT / "docs" / "paper_facts.md").read_text()
  printed = {20: "within 20 seconds", 70: "0.07 s images→triplane (A100)",
             0.5: "volume render 0.5 FPS at 512²"}
  cited = 0
  for a in {a for row in suite.ROWS for a in row.anchors if a.kind == "published"}:
    if "docs/paper_facts.md §" not in a.source:
      continue
    cited += 1
    section = a.source.split("docs/paper_facts.md §")[1][0]
    body = facts.split(f"\n## {section}.")[1].split("\n## ")[0]
    assert printed[a.value] in body, (a, section)
  assert cited == 3
