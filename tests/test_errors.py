"""One home for the project's errors (docs/design.md §3, Errors): every user-facing error class
is defined in `instant3d_jax/errors.py`, and every `errors.X` the tree names exists there.

A class is user-facing when it derives, directly or through other classes, from
`errors.Instant3DError`, or when it is an exception class defined at module level (a caller can
catch it, and a command would print its traceback). Function-local exception classes that do not
derive from `Instant3DError` are private control flow (bench/tpu_plan.py's `Budget`) and exempt.
A module that used to define an error imports it under the same name (`from instant3d_jax.errors
import DataError`, or `DataError = errors.DataError`), so the old path keeps working: that is an
alias, not a definition.

The check reads the source with `ast` (nothing is imported or run): it resolves the names each
file imports (module- or function-level, absolute or relative) to dotted names, follows
re-exports, and finds exception classes by following class bases to a builtin exception or to
a class of errors.py. Then the five raises that once named classes errors.py lacked are each
reached through the library call a user's input gets to (no command reaches them: see each
test) and shown to print as one `error:` line under `cli.guarded`.
"""
from __future__ import annotations

import ast
import builtins
from pathlib import Path

import numpy as np
import pytest

from instant3d_jax import cli, errors

ROOT = Path(__file__).resolve().parents[1]
ERRORS_MODULE = "instant3d_jax.errors"
TREES = ("instant3d_jax", "data_pipeline", "configs", "bench")
BUILTIN_EXCEPTIONS = frozenset(
    f"builtins.{n}" for n, v in vars(builtins).items()
    if isinstance(v, type) and issubclass(v, BaseException))


def tree_files(root: Path = ROOT) -> list[Path]:
  return sorted(p for d in TREES if (root / d).is_dir() for p in (root / d).rglob("*.py"))


def module_name(path: Path, root: Path) -> str:
  parts = list(path.relative_to(root).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


class _Module:
  """One parsed file: its import bindings (local name → dotted name), its module-level
  re-exports and its class definitions (with their scope)."""

  def __init__(self, path: Path, root: Path):
    self.path, self.rel = path, path.relative_to(root)
    self.name = module_name(path, root)
    self.tree = ast.parse(path.read_text(), str(path))
    package = self.name.split(".") if path.name == "__init__.py" else self.name.split(".")[:-1]
    self.bindings: dict[str, str] = {}
    self.imported_from: list[tuple[ast.ImportFrom, str]] = []
    for node in ast.walk(self.tree):
      if isinstance(node, ast.Import):
        for a in node.names:
          if a.asname:
            self.bindings[a.asname] = a.name
          else:
            top = a.name.split(".")[0]
            self.bindings[top] = top
      elif isinstance(node, ast.ImportFrom):
        if node.level:
          base = package[:len(package) - node.level + 1]
          mod = ".".join(base + ([node.module] if node.module else []))
        else:
          mod = node.module or ""
        self.imported_from.append((node, mod))
        for a in node.names:
          if a.name != "*":
            self.bindings[a.asname or a.name] = f"{mod}.{a.name}"
    # Class definitions (with their scope) and module-level aliases (`X = mod.X`).
    top = {id(n) for n in self.tree.body}
    self.classes: list[tuple[ast.ClassDef, bool]] = [
        (n, id(n) in top) for n in ast.walk(self.tree) if isinstance(n, ast.ClassDef)]
    self.top_classes = {n.name for n, at_top in self.classes if at_top}
    self.aliases: dict[str, str] = {}
    for node in self.tree.body:
      if (isinstance(node, ast.Assign) and len(node.targets) == 1
          and isinstance(node.targets[0], ast.Name)):
        target = self.resolve(node.value)
        if target:
          self.aliases[f"{self.name}.{node.targets[0].id}"] = target

  def resolve(self, expr: ast.expr) -> str | None:
    """`errors.DataError` → 'instant3d_jax.errors.DataError' (None: not a name chain)."""
    if isinstance(expr, ast.Name):
      if expr.id in self.bindings:
        return self.bindings[expr.id]
      if expr.id in self.top_classes:
        return f"{self.name}.{expr.id}"
      return f"builtins.{expr.id}" if hasattr(builtins, expr.id) else None
    if isinstance(expr, ast.Attribute):
      base = self.resolve(expr.value)
      return f"{base}.{expr.attr}" if base else None
    return None


def _top_level_names(tree: ast.Module) -> set[str]:
  names: set[str] = set()
  for node in tree.body:
    if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      names.add(node.name)
    elif isinstance(node, (ast.Assign, ast.AnnAssign)):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
      names.update(t.id for t in targets if isinstance(t, ast.Name))
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
      names.update((a.asname or a.name).split(".")[0] for a in node.names)
  return names


def error_violations(root: Path = ROOT) -> list[str]:
  """'path:line: problem' for every `errors.X` that errors.py lacks and every user-facing error
  class defined outside errors.py (the rule of this file's docstring)."""
  errors_path = root / "instant3d_jax" / "errors.py"
  modules = [_Module(p, root) for p in tree_files(root)]
  defined = _top_level_names(ast.parse(errors_path.read_text(), str(errors_path)))
  aliases: dict[str, str] = {}
  for m in modules:
    aliases.update(m.aliases)
    aliases.update({f"{m.name}.{local}": target for local, target in m.bindings.items()})

  def canonical(name: str) -> str:
    seen = set()
    while name in aliases and name not in seen:
      seen.add(name)
      name = aliases[name]
    return name

  # Exception classes and those deriving from Instant3DError, to a fixed point over the tree.
  exceptions, project = set(BUILTIN_EXCEPTIONS), {f"{ERRORS_MODULE}.Instant3DError"}
  qualified = {}
  for m in modules:
    for node, at_top in m.classes:
      qualified[id(node)] = f"{m.name}.{node.name}" if at_top else f"{m.name}.<local>.{node.name}"
  changed = True
  while changed:
    changed = False
    for m in modules:
      for node, _ in m.classes:
        q = qualified[id(node)]
        bases = [canonical(b) for b in map(m.resolve, node.bases) if b]
        for found, group in ((any(b in exceptions for b in bases), exceptions),
                             (any(b in project for b in bases), project)):
          if found and q not in group:
            group.add(q)
            changed = True

  out = []
  for m in modules:
    if m.name == ERRORS_MODULE:
      continue
    for node, at_top in m.classes:
      q = qualified[id(node)]
      if q in project or (at_top and q in exceptions):
        kind = "derives from errors.Instant3DError" if q in project else "is an exception class"
        out.append(f"{m.rel}:{node.lineno}: class {node.name} {kind}; user-facing error classes "
                   f"are defined in instant3d_jax/errors.py (import it from there)")
    for node in ast.walk(m.tree):
      if isinstance(node, ast.Attribute) and m.resolve(node.value) == ERRORS_MODULE:
        if node.attr not in defined:
          out.append(f"{m.rel}:{node.lineno}: errors.{node.attr} does not exist in "
                     f"instant3d_jax/errors.py")
    for node, mod in m.imported_from:
      if mod == ERRORS_MODULE:
        for a in node.names:
          if a.name != "*" and a.name not in defined:
            out.append(f"{m.rel}:{node.lineno}: `from {ERRORS_MODULE} import {a.name}`: "
                       f"{a.name} does not exist in instant3d_jax/errors.py")
  return out


def test_error_classes_have_one_home_and_every_errors_name_exists():
  bad = error_violations()
  assert not bad, "error classes outside errors.py / missing errors names:\n" + "\n".join(bad)


def test_errors_module_imports_nothing_of_the_project():
  tree = ast.parse((ROOT / "instant3d_jax" / "errors.py").read_text())
  mods = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
  mods += [("." * n.level) + (n.module or "") for n in ast.walk(tree)
           if isinstance(n, ast.ImportFrom)]
  bad = [m for m in mods if m.startswith(".") or m.split(".")[0] in TREES]
  assert not bad, f"instant3d_jax/errors.py imports project modules: {bad}"


def test_checker_finds_planted_violations(tmp_path):
  """A copy of the rule's world in a tmp tree: a missing `errors.Nope` (plain, aliased, relative,
  `from … import`), error classes outside errors.py (direct, through another module's class,
  through a re-export, builtin-derived) are each reported; re-exports, function-local control
  flow exceptions and `errors.ConfigError` uses are not."""
  pkg = tmp_path / "instant3d_jax"
  (pkg / "sub").mkdir(parents=True)
  (tmp_path / "data_pipeline").mkdir()
  (pkg / "__init__.py").write_text("")
  (pkg / "sub" / "__init__.py").write_text("")
  (pkg / "errors.py").write_text(
      "class Instant3DError(Exception):\n  pass\n\n"
      "class ConfigError(Instant3DError, ValueError):\n  pass\n\n"
      "def one_line(e):\n  return str(e)\n")
  (pkg / "good.py").write_text(
      "from instant3d_jax import errors\n"
      "ConfigError = errors.ConfigError  # a re-export is not a definition\n"
      "def f():\n"
      "  class Budget(Exception):  # private control flow\n    pass\n"
      "  raise errors.ConfigError(errors.one_line(Budget()))\n")
  (pkg / "bad.py").write_text(
      "from instant3d_jax import errors\n"
      "from instant3d_jax import errors as E\n"
      "def f():\n"
      "  raise errors.Nope('x')\n"
      "def g():\n"
      "  raise E.AlsoMissing('y')\n"
      "class PlantedError(errors.Instant3DError, ValueError):\n  pass\n")
  (pkg / "sub" / "deep.py").write_text(
      "from .. import errors\n"
      "from ..errors import Missing2, ConfigError\n"
      "from instant3d_jax.bad import PlantedError\n"
      "from instant3d_jax import good\n"
      "class ChildError(PlantedError):\n  pass\n"
      "class ViaReExport(good.ConfigError):\n  pass\n"
      "def h():\n"
      "  class LocalError(ConfigError):\n    pass\n"
      "  return errors.Gone\n")
  (tmp_path / "data_pipeline" / "plain.py").write_text(
      "class FooError(ValueError):\n  pass\n")
  got = error_violations(tmp_path)
  want = [
      "instant3d_jax/bad.py:4: errors.Nope does not exist in instant3d_jax/errors.py",
      "instant3d_jax/bad.py:6: errors.AlsoMissing does not exist in instant3d_jax/errors.py",
      "instant3d_jax/bad.py:7: class PlantedError derives from errors.Instant3DError",
      "instant3d_jax/sub/deep.py:5: class ChildError derives from errors.Instant3DError",
      "instant3d_jax/sub/deep.py:7: class ViaReExport derives from errors.Instant3DError",
      "instant3d_jax/sub/deep.py:10: class LocalError derives from errors.Instant3DError",
      "instant3d_jax/sub/deep.py:12: errors.Gone does not exist in instant3d_jax/errors.py",
      "instant3d_jax/sub/deep.py:2: `from instant3d_jax.errors import Missing2`: Missing2 does "
      "not exist",
      "data_pipeline/plain.py:1: class FooError is an exception class",
  ]
  for w in want:
    assert sum(g.startswith(w) for g in got) == 1, (w, got)
  assert len(got) == len(want), got
  assert not [g for g in got if "good.py" in g], got


# ---------------------------------------------------------------------------------------------
# The five raises that named classes errors.py lacked (an AttributeError traceback before).


def _one_error_line(call, capsys) -> str:
  """What a command prints when `call` raises inside its `main`: one stderr line, exit 2."""
  capsys.readouterr()
  with pytest.raises(SystemExit) as exc:
    cli.guarded(lambda argv: call())([])
  assert exc.value.code == 2
  err = capsys.readouterr().err
  assert err.endswith("\n") and err.count("\n") == 1 and err.startswith("error: "), err
  return err


def test_word_tokenizer_too_long_caption_without_truncation_is_input_error(capsys):
  """No command tokenises with truncation=False (the trainer and sampler truncate as CLIP does),
  so the library call is the user path."""
  from instant3d_jax.diffusion.word_tokenizer import WordTokenizer
  tok = WordTokenizer(model_max_length=4)
  call = lambda: tok(["a red cube on a blue sphere"], max_length=4, truncation=False)
  with pytest.raises(errors.InputError, match="tokens, more than max_length=4"):
    call()
  assert "more than max_length=4" in _one_error_line(call, capsys)


def test_word_tokenizer_folder_without_its_file_is_weights_error(tmp_path, capsys):
  """`WordTokenizer.from_pretrained` is library API only (configs build the tokenizer)."""
  from instant3d_jax.diffusion.word_tokenizer import WordTokenizer
  call = lambda: WordTokenizer.from_pretrained(tmp_path)
  with pytest.raises(errors.WeightsError, match=f"{tmp_path} lacks word_tokenizer.json"):
    call()
  assert "lacks word_tokenizer.json" in _one_error_line(call, capsys)
  WordTokenizer(model_max_length=5).save_pretrained(tmp_path)
  assert WordTokenizer.from_pretrained(tmp_path).model_max_length == 5


def test_pixel_autoencoder_indivisible_image_is_input_error(capsys):
  """train_mvdiffusion and the samplers refuse an indivisible side first (a ConfigError naming
  the flag), so the autoencoder's own `encode` is the user path to this raise."""
  import jax.numpy as jnp
  from instant3d_jax.models import pixel_ae
  ae = pixel_ae.PixelUnshuffleAE(pixel_ae.PixelAEConfig(factor=4))
  call = lambda: ae.apply({}, jnp.zeros((1, 6, 8, 3)), method=ae.encode)
  with pytest.raises(errors.InputError, match="image 6×8 is not divisible by the factor 4"):
    call()
  assert "not divisible by the factor 4" in _one_error_line(call, capsys)


class _Batches:
  """The smallest resumable iterator the mv_task adapters wrap."""

  def __init__(self, batch):
    self.batch = batch

  def __next__(self):
    return self.batch

  def get_state(self):
    return {}

  def set_state(self, state):
    pass


def test_caption_batches_reject_a_non_uint8_grid_as_data_error(capsys):
  """The grid loader only yields uint8 grids, so a custom iterator given to
  `mv_task.make_task(make_iterator=...)` is the user path."""
  import types
  from instant3d_jax.diffusion.word_tokenizer import WordTokenizer
  from instant3d_jax.train import mv_task
  tok = WordTokenizer(model_max_length=8)
  comps = types.SimpleNamespace(tokenizer=tok, tokenizer_2=tok)
  it = mv_task.CaptionBatches(_Batches({"grid": np.zeros((1, 8, 8, 3), np.float32),
                                        "caption": np.asarray(["a red cube"])}), comps)
  with pytest.raises(errors.DataError, match=r"grid batch: expected uint8 \[B, 2R, 2R, 3\], "
                                             r"found float32 \(1, 8, 8, 3\)"):
    next(it)
  assert "grid batch: expected uint8" in _one_error_line(lambda: next(it), capsys)


def test_cached_batches_without_std_is_data_error(capsys):
  """The trainer reads the cache with `with_std=diffusion.latent_sample`, so a hand-made cached
  iterator is the user path."""
  from instant3d_jax.train import mv_task
  it = mv_task.CachedBatches(_Batches({"latents": np.zeros((1, 2, 2, 4), np.float32)}),
                             keys=("latents", "latents_std"))
  with pytest.raises(errors.DataError, match=r"latent cache batch lacks \['latents_std'\]"):
    next(it)
  assert "lacks ['latents_std']" in _one_error_line(lambda: next(it), capsys)
