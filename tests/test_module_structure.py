"""Import structure of the library (docs/design.md §2): the renderer takes a field function and
imports no model; no module imports a command module (what two commands share lives in the
library). Checked on the source with `ast`, so nothing is imported or run."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The user and training commands of docs/design.md §2 (flags + main only); those not written yet
# are listed so that the rule holds for them the day they land.
COMMAND_MODULES = frozenset(
    [f"instant3d_jax.{m}" for m in (
        "train_lrm", "train_mvdiffusion", "eval_lrm", "eval_text3d", "generate_views",
        "reconstruct", "generate", "app", "demo", "demo_mv", "demo_text3d", "export.__main__", "convert.__main__")]
    + ["data_pipeline.synthetic", "data_pipeline.importer"])


def module_name(path: Path, root: Path = ROOT) -> str:
  parts = list(path.relative_to(root).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
  """Every module `path` imports: `import a.b` → a.b; `from a import b` → a and a.b (b may be a
  submodule); relative imports resolved against the file's package; `importlib.import_module`
  with a literal name."""
  name = module_name(path, root)
  package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
  out: set[str] = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package[:len(package) - node.level + 1]
        mod = ".".join(base + ([node.module] if node.module else []))
      else:
        mod = node.module
      out.add(mod)
      out.update(f"{mod}.{a.name}" for a in node.names)
    elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
          == "import_module" and node.args and isinstance(node.args[0], ast.Constant)):
      out.add(node.args[0].value)
  return out


def library_files() -> list[Path]:
  return sorted(p for d in ("instant3d_jax", "data_pipeline", "bench") for p in
                (ROOT / d).rglob("*.py"))


def test_imported_modules_parses_every_import_form(tmp_path):
  pkg = tmp_path / "instant3d_jax" / "eval"
  pkg.mkdir(parents=True)
  f = pkg / "x.py"
  f.write_text("import instant3d_jax.train_lrm\nfrom instant3d_jax import eval_lrm as e\n"
               "from .. import demo\nfrom ..export.__main__ import main\n"
               "import importlib\nimportlib.import_module('instant3d_jax.reconstruct')\n")
  got = imported_modules(f, tmp_path)
  assert {"instant3d_jax.train_lrm", "instant3d_jax.eval_lrm", "instant3d_jax.demo",
          "instant3d_jax.export.__main__", "instant3d_jax.reconstruct"} <= got


def test_renderer_imports_no_model_code():
  got = imported_modules(ROOT / "instant3d_jax" / "rendering.py")
  bad = sorted(m for m in got if m == "instant3d_jax.models" or
               m.startswith("instant3d_jax.models."))
  assert not bad, f"instant3d_jax/rendering.py imports model code: {bad}"


def test_no_module_imports_a_command_module():
  offenders = []
  for path in library_files():
    bad = sorted((imported_modules(path) & COMMAND_MODULES) - {module_name(path)})
    if bad:
      offenders.append(f"{path.relative_to(ROOT)} imports {', '.join(bad)}")
  assert not offenders, "command modules are imported by:\n" + "\n".join(offenders)
