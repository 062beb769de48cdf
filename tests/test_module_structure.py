"""Import structure of the library and the command rule (docs/design.md §2), checked on the source
with `ast`, so nothing is imported or run.

* The renderer takes a field function and imports no model.
* Commands are found, not listed: a module is a command when it has a module-level
  `if __name__ == "__main__":` guard, or is a package's `__main__.py`. Those in `instant3d_jax/`
  and `data_pipeline/` are never imported by another module of `instant3d_jax/`,
  `data_pipeline/` or `bench/` (module- or function-level imports, `importlib.import_module` with a
  literal name): what two commands share lives in the library.
* Each of those commands holds only (`command_shape_violations`):
    - the module docstring, `import` and `from … import …`;
    - constants: `NAME = <literal>` (anything `ast.literal_eval` reads: numbers, strings, tuples,
      lists, dicts, sets of them) or `NAME = <dotted name>` (e.g. `FLAGS = flags.FLAGS`);
    - flag definitions: a call, bare or assigned to a name, whose callee ends in `DEFINE…`
      (`flags.DEFINE_string`, `config_flags.DEFINE_config_file`, …), in `define_…_flags` (a
      library's shared flag set, e.g. `cli.define_train_flags`) or is `mark_flag_as_required` /
      `mark_flags_as_required`;
    - `def _define_flags()` whose body is only a docstring, imports and flag definitions;
    - `def main(argv)` of at most `MAIN_MAX_LINES` lines (from the `def` line to its last line);
    - the guard, whose body is only imports, flag definitions, `_define_flags()` and
      `cli.run(main)`.
  Anything else at module level (another function or class, a module-level call, a loop) is a
  violation, reported as `path:line`.
(bench/ commands are scripts that may share code with each other; they are only held to the
import rule for the library's commands.)
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND_ROOTS = ("instant3d_jax", "data_pipeline")  # held to the whole command rule
LIBRARY_ROOTS = ("instant3d_jax", "data_pipeline", "bench")  # may not import those commands
MAIN_MAX_LINES = 40
_FLAG_CALLS = ("mark_flag_as_required", "mark_flags_as_required")


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


def python_files(root: Path, dirs) -> list[Path]:
  return sorted(p for d in dirs if (root / d).is_dir() for p in (root / d).rglob("*.py"))


def _is_main_guard(node: ast.stmt) -> bool:
  """`if __name__ == "__main__":` (either operand order)."""
  if not (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
          and len(node.test.ops) == 1 and isinstance(node.test.ops[0], ast.Eq)):
    return False
  sides = [node.test.left, node.test.comparators[0]]
  return (any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
          and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides))


def is_command(path: Path) -> bool:
  """A package's `__main__.py`, or a module with a module-level `__main__` guard."""
  if path.name == "__main__.py":
    return True
  return any(_is_main_guard(n) for n in ast.parse(path.read_text(), str(path)).body)


def find_commands(root: Path = ROOT, dirs=COMMAND_ROOTS) -> dict[str, Path]:
  """{module name: path} of every command under `dirs`."""
  return {module_name(p, root): p for p in python_files(root, dirs) if is_command(p)}


def _is_flag_call(node: ast.AST) -> bool:
  if not isinstance(node, ast.Call):
    return False
  f = node.func
  name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
  return (name.startswith("DEFINE") or name in _FLAG_CALLS
          or (name.startswith("define_") and name.endswith("_flags")))


def _is_dotted_name(node: ast.AST) -> bool:
  while isinstance(node, ast.Attribute):
    node = node.value
  return isinstance(node, ast.Name)


def _is_constant(node: ast.AST) -> bool:
  try:
    ast.literal_eval(node)
    return True
  except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
    return _is_dotted_name(node)


def _assigned_value(node: ast.stmt):
  """The value of `NAME = v` / `NAME: T = v` (simple names only), else None."""
  if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
    return node.value
  if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
    return node.value
  return None


def _is_import(node: ast.stmt) -> bool:
  return isinstance(node, (ast.Import, ast.ImportFrom))


def _is_flag_definition(node: ast.stmt) -> bool:
  if isinstance(node, ast.Expr):
    return _is_flag_call(node.value)
  return _is_flag_call(_assigned_value(node))


def _is_docstring(node: ast.stmt) -> bool:
  return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
          and isinstance(node.value.value, str))


def _is_call_of(node: ast.stmt, dotted: str) -> bool:
  """`dotted(...)` as a statement, e.g. `cli.run(main)` or `_define_flags()`."""
  return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
          and ast.unparse(node.value.func) == dotted)


def command_shape_violations(path: Path, root: Path = ROOT) -> list[str]:
  """What in the command `path` is neither imports, constants, flag definitions, `_define_flags`,
  a `main` of at most MAIN_MAX_LINES lines nor the guard (module docstring for the rule)."""
  rel = path.relative_to(root)
  tree = ast.parse(path.read_text(), str(path))
  out = []

  def bad(node, what):
    out.append(f"{rel}:{node.lineno}: {what}")

  for i, node in enumerate(tree.body):
    if (i == 0 and _is_docstring(node)) or _is_import(node) or _is_flag_definition(node):
      continue
    value = _assigned_value(node)
    if value is not None and _is_constant(value):
      continue
    if isinstance(node, ast.FunctionDef) and node.name == "main":
      n = node.end_lineno - node.lineno + 1
      if n > MAIN_MAX_LINES:
        bad(node, f"main is {n} lines (at most {MAIN_MAX_LINES}); move the work into the library")
    elif isinstance(node, ast.FunctionDef) and node.name == "_define_flags":
      for s in node.body:
        if not (_is_docstring(s) or _is_import(s) or _is_flag_definition(s)):
          bad(s, "_define_flags holds something other than imports and flag definitions: "
              f"{ast.unparse(s).splitlines()[0]}")
    elif _is_main_guard(node):
      for s in node.body:
        if not (_is_import(s) or _is_flag_definition(s) or _is_call_of(s, "_define_flags")
                or _is_call_of(s, "cli.run")):
          bad(s, "the __main__ guard holds something other than imports, flag definitions, "
              f"_define_flags() and cli.run(main): {ast.unparse(s).splitlines()[0]}")
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      kind = "class" if isinstance(node, ast.ClassDef) else "function"
      bad(node, f"{kind} {node.name} in a command (only flags, constants and main); move it "
          "into the library")
    else:
      bad(node, f"module-level statement in a command (only imports, constants, flag "
          f"definitions, main): {ast.unparse(node).splitlines()[0]}")
  return out


def command_rule_violations(root: Path = ROOT) -> list[str]:
  """Every breach of the command rule in the tree at `root`: a command imported by another
  module, and every `command_shape_violations` of the commands of COMMAND_ROOTS."""
  commands = find_commands(root)
  out = []
  for path in python_files(root, LIBRARY_ROOTS):
    bad = sorted((imported_modules(path, root) & set(commands)) - {module_name(path, root)})
    if bad:
      out.append(f"{path.relative_to(root)} imports the command(s) {', '.join(bad)}")
  for path in commands.values():
    out += command_shape_violations(path, root)
  return out


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


def test_commands_are_found_not_listed():
  """The finder sees the commands the README documents (a sample: one of each kind), and no
  library module: cli.py quotes the guard only in its docstring."""
  found = find_commands()
  for name in ("instant3d_jax.train_lrm", "instant3d_jax.reconstruct", "instant3d_jax.demo",
               "instant3d_jax.app", "instant3d_jax.export.__main__",
               "instant3d_jax.convert.__main__", "instant3d_jax.models.summary",
               "data_pipeline.synthetic", "data_pipeline.mv_cache", "data_pipeline.curation"):
    assert name in found, f"{name} is not found as a command"
  for name in ("instant3d_jax.cli", "instant3d_jax.pipeline", "data_pipeline.latent_cache",
               "instant3d_jax.models.lrm_stats"):
    assert name not in found, f"{name} is a library module, found as a command"


def test_the_command_rule_holds():
  problems = command_rule_violations()
  assert not problems, "the command rule (docs/design.md §2) is broken:\n" + "\n".join(problems)


def test_the_checker_reports_planted_violations(tmp_path):
  """A tree with each kind of breach: the checker names every one, and the clean command not."""
  lib, data = tmp_path / "instant3d_jax", tmp_path / "data_pipeline"
  (lib / "tool").mkdir(parents=True)
  data.mkdir()
  for d in (lib, lib / "tool", data):
    (d / "__init__.py").write_text("")
  guard = 'if __name__ == "__main__":\n  _define_flags()\n  cli.run(main)\n'
  (lib / "clean.py").write_text(
      '"""A clean command."""\nfrom absl import flags\nfrom instant3d_jax import cli\n'
      "FLAGS = flags.FLAGS\nSIZES = (1, 2)\n_N = flags.DEFINE_integer('n', 1, 'n')\n"
      "def _define_flags():\n  from absl import flags\n  flags.DEFINE_string('out', None, 'o')\n"
      "  flags.mark_flags_as_required(['out'])\n"
      "def main(argv):\n  del argv\n  print(FLAGS.out)\n\n" + guard)
  (lib / "helper.py").write_text(
      "from instant3d_jax import cli\n"
      "def _check(x):\n  return x\n"
      "def main(argv):\n  _check(argv)\n" + guard)
  (lib / "long.py").write_text(
      "from instant3d_jax import cli\nimport os\nos.environ.setdefault('A', '1')\n"
      "def main(argv):\n" + "  x = 1\n" * 41 + guard.replace("  cli.run(main)\n",
                                                        "  print('hi')\n  cli.run(main)\n"))
  (lib / "tool" / "__main__.py").write_text("def main(argv):\n  pass\n")
  (lib / "library.py").write_text('"""Quotes\n\n  if __name__ == "__main__":\n"""\n'
                                  "def f():\n  from instant3d_jax import clean\n")
  (data / "reader.py").write_text("import importlib\n"
                                  "importlib.import_module('instant3d_jax.tool.__main__')\n")
  assert set(find_commands(tmp_path)) == {"instant3d_jax.clean", "instant3d_jax.helper",
                                          "instant3d_jax.long", "instant3d_jax.tool.__main__"}
  got = command_rule_violations(tmp_path)
  want = [
      "data_pipeline/reader.py imports the command(s) instant3d_jax.tool.__main__",
      "instant3d_jax/library.py imports the command(s) instant3d_jax.clean",
      "instant3d_jax/helper.py:2: function _check in a command (only flags, constants and main); "
      "move it into the library",
      "instant3d_jax/long.py:3: module-level statement in a command (only imports, constants, "
      "flag definitions, main): os.environ.setdefault('A', '1')",
      f"instant3d_jax/long.py:4: main is 42 lines (at most {MAIN_MAX_LINES}); move the work into "
      "the library",
      "instant3d_jax/long.py:48: the __main__ guard holds something other than imports, flag "
      "definitions, _define_flags() and cli.run(main): print('hi')",
  ]
  assert sorted(got) == sorted(want), "\n".join(got)


# ----------------------------------------------------------------------------------------------
# The import graph (docs/design.md §2, "Layering")
# ----------------------------------------------------------------------------------------------
GRAPH_ROOTS = ("instant3d_jax", "data_pipeline", "configs", "bench")
# The low layers and the only project nodes each may import (module- or function-level).
# `configs` is declarative (issue 26 item 5: it imports nothing of the library but errors), so
# cli may resolve a `--config` value through it.
LOW_LAYERS = {
    "instant3d_jax.errors": (),
    "instant3d_jax.fileio": ("instant3d_jax.errors",),
    "instant3d_jax.base": ("instant3d_jax.errors", "instant3d_jax.fileio"),
    "instant3d_jax.cli": ("instant3d_jax.errors", "instant3d_jax.fileio", "configs"),
}


def graph_node(module: str) -> str | None:
  """The node of the import graph a module belongs to: each subpackage of instant3d_jax
  (`instant3d_jax.train`), each top-level module of it (`instant3d_jax.cli`), `data_pipeline`,
  `configs` (also as `instant3d_jax.configs`, the link the package imports it through) and
  `bench`; None for anything outside the project (and for the bare `instant3d_jax` package,
  whose __init__ is empty)."""
  parts = module.split(".")
  if parts[0] == "instant3d_jax" and len(parts) > 1:
    return "configs" if parts[1] == "configs" else f"instant3d_jax.{parts[1]}"
  if parts[0] in ("data_pipeline", "configs", "bench"):
    return parts[0]
  return None


def _import_sites(path: Path, root: Path) -> list[tuple[int, str]]:
  """(line, module) of every import in `path`, forms as `imported_modules` reads them."""
  name = module_name(path, root)
  package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
  out = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out += [(node.lineno, a.name) for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        mod = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module
                                                                     else []))
      else:
        mod = node.module
      # `from instant3d_jax import cli`: the node is the imported name's, not the package's.
      out += ([(node.lineno, f"{mod}.{a.name}") for a in node.names] if mod == "instant3d_jax"
              else [(node.lineno, mod)])
    elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
          == "import_module" and node.args and isinstance(node.args[0], ast.Constant)):
      out.append((node.lineno, node.args[0].value))
  return out


def import_graph(root: Path = ROOT) -> dict[str, dict[str, str]]:
  """{node: {imported node: 'path:line' of the first import making that edge}} over every .py
  file of GRAPH_ROOTS (tests excluded; instant3d_jax/configs, the link, is read as configs/)."""
  edges: dict[str, dict[str, str]] = {}
  for path in python_files(root, GRAPH_ROOTS):
    rel = path.relative_to(root)
    if rel.parts[:2] == ("instant3d_jax", "configs"):
      continue
    src = graph_node(module_name(path, root))
    if src is None:  # instant3d_jax/__init__.py
      continue
    edges.setdefault(src, {})
    for line, mod in sorted(_import_sites(path, root)):
      dst = graph_node(mod)
      if dst is not None and dst != src:
        edges[src].setdefault(dst, f"{rel}:{line}")
  return edges


def find_cycle(edges: dict[str, dict[str, str]]) -> list[str] | None:
  """One cycle of the graph as [a, b, ..., a], or None when it is acyclic (depth-first search;
  nodes and edges in sorted order, so the same tree gives the same cycle)."""
  state: dict[str, int] = {}  # 1: on the current path, 2: done
  path: list[str] = []

  def visit(n):
    state[n] = 1
    path.append(n)
    for m in sorted(edges.get(n, {})):
      if state.get(m) == 1:
        return path[path.index(m):] + [m]
      if m not in state:
        found = visit(m)
        if found:
          return found
    path.pop()
    state[n] = 2
    return None

  for n in sorted(edges):
    if n not in state:
      found = visit(n)
      if found:
        return found
  return None


def layering_violations(root: Path = ROOT) -> list[str]:
  """A cycle of the import graph (each edge with the import that makes it), and every import of
  a LOW_LAYERS node reaching above what it may import."""
  edges = import_graph(root)
  out = []
  cycle = find_cycle(edges)
  if cycle:
    out.append("import cycle: " + " -> ".join(cycle) + "\n" + "\n".join(
        f"  {a} -> {b}: {edges[a][b]}" for a, b in zip(cycle, cycle[1:])))
  for low, allowed in LOW_LAYERS.items():
    for dst, where in sorted(edges.get(low, {}).items()):
      if dst not in allowed:
        out.append(f"{where}: {low} imports {dst}; the low layer {low} may import only "
                   f"{', '.join(allowed) or 'nothing of the project'}")
  return out


def test_graph_nodes():
  assert graph_node("instant3d_jax.configs.lrm") == graph_node("configs.lrm") == "configs"
  assert graph_node("instant3d_jax.base.mesh") == "instant3d_jax.base"
  assert graph_node("instant3d_jax.cli") == "instant3d_jax.cli"
  assert graph_node("data_pipeline.records") == "data_pipeline"
  assert graph_node("jax.numpy") is None and graph_node("instant3d_jax") is None


def test_the_import_graph_is_layered():
  """No cycle among the project's nodes (module- and function-level imports alike), and errors,
  fileio, the base layer and cli import nothing of the project above them."""
  problems = layering_violations()
  assert not problems, "the layering (docs/design.md §2) is broken:\n" + "\n".join(problems)


def test_the_layering_checker_reports_planted_violations(tmp_path):
  """A tree with a two-package cycle hidden in a function, a longer cycle through a relative
  import, and low layers importing upwards: each is reported with the import that makes it."""
  lib = tmp_path / "instant3d_jax"
  for d in ("base", "train", "diffusion", "eval"):
    (lib / d).mkdir(parents=True)
    (lib / d / "__init__.py").write_text("")
  (lib / "__init__.py").write_text("")
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "__init__.py").write_text("")
  (lib / "errors.py").write_text("class Instant3DError(Exception):\n  pass\n")
  (lib / "fileio.py").write_text("from instant3d_jax import errors\n")
  (lib / "cli.py").write_text("from instant3d_jax import errors, fileio\n"
                              "def run():\n  from instant3d_jax.train import loop\n")
  (lib / "base" / "mesh.py").write_text("from instant3d_jax import errors\n"
                                        "from instant3d_jax.models import unet\n")
  (lib / "train" / "loop.py").write_text("from instant3d_jax.base import mesh\n"
                                         "from instant3d_jax.diffusion import sampling\n")
  (lib / "diffusion" / "sampling.py").write_text(
      "import jax\n\ndef f():\n  from ..eval import metrics\n")
  (lib / "eval" / "metrics.py").write_text("from instant3d_jax.train import loop\n")
  got = layering_violations(tmp_path)
  want = [
      "import cycle: instant3d_jax.train -> instant3d_jax.diffusion -> instant3d_jax.eval -> "
      "instant3d_jax.train\n"
      "  instant3d_jax.train -> instant3d_jax.diffusion: instant3d_jax/train/loop.py:2\n"
      "  instant3d_jax.diffusion -> instant3d_jax.eval: instant3d_jax/diffusion/sampling.py:4\n"
      "  instant3d_jax.eval -> instant3d_jax.train: instant3d_jax/eval/metrics.py:1",
      "instant3d_jax/base/mesh.py:2: instant3d_jax.base imports instant3d_jax.models; the low "
      "layer instant3d_jax.base may import only instant3d_jax.errors, instant3d_jax.fileio",
      "instant3d_jax/cli.py:3: instant3d_jax.cli imports instant3d_jax.train; the low layer "
      "instant3d_jax.cli may import only instant3d_jax.errors, instant3d_jax.fileio, configs",
  ]
  assert got == want, "\n".join(got)
  # The cycle alone, once the detour is gone; and a clean tree passes.
  (lib / "eval" / "metrics.py").write_text("import numpy\n")
  (lib / "base" / "mesh.py").write_text("from instant3d_jax import errors\n")
  (lib / "cli.py").write_text("from instant3d_jax import errors, fileio\n")
  (lib / "diffusion" / "sampling.py").write_text("def f():\n  from instant3d_jax import train\n")
  assert layering_violations(tmp_path) == [
      "import cycle: instant3d_jax.diffusion -> instant3d_jax.train -> instant3d_jax.diffusion\n"
      "  instant3d_jax.diffusion -> instant3d_jax.train: instant3d_jax/diffusion/sampling.py:2\n"
      "  instant3d_jax.train -> instant3d_jax.diffusion: instant3d_jax/train/loop.py:2"]
  (lib / "diffusion" / "sampling.py").write_text("import jax\n")
  assert layering_violations(tmp_path) == []
