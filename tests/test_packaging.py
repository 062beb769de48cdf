"""The package pip installs: declared dependencies, the lock that pins them, what lands in
site-packages, and commands that find their configs outside a checkout.

- pyproject.toml's `dependencies` are compatible ranges; requirements.txt is the tested lock.
  Every declared distribution is pinned there, at a version inside its range.
- Every third-party module the shipped code imports (instant3d_jax/, configs/ shipped as
  `instant3d_jax.configs`, data_pipeline/: module-level and function-level imports, and
  `importlib.import_module` / `importlib.util.find_spec` / `__import__` with a literal name) is
  declared: in `dependencies`, an extra, or the web app's own group (requirements-app.txt).
- The wheel holds `instant3d_jax` and `data_pipeline` only (nothing generic such as `configs`,
  `bench` or `tests` at the top level), and `python -m instant3d_jax.demo` run from outside the
  checkout against the installed wheel finds its packaged config (slow: builds the wheel).
"""
from __future__ import annotations

import ast
import importlib.metadata as md
import os
import re
import shutil
import site
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("instant3d_jax", "configs", "data_pipeline")
OWN = {"instant3d_jax", "data_pipeline", "configs", "__future__"}
# Modules the package only probes for, without importing anything from them, and who provides
# them: not dependencies.
PROBED = {"jax_plugins": "JAX's plugin namespace package (cli.jax_plugins looks for GPU plugins "
                         "with find_spec; jax[cuda12] brings it: make install-gpu)"}
# Modules imported only by scripts another interpreter runs, and which environment provides them:
# declared there, not in the project's dependencies.
OTHER_ENV = {"bpy": "Blender as a module, in .venv-render (make install-render): "
                    "data_pipeline/blender_script.py runs under it",
             "mathutils": "ships with bpy (.venv-render)"}
_IMPORT_CALLS = {"import_module", "find_spec", "__import__"}


def _pyproject() -> dict:
  return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pins(path: Path) -> dict[str, str]:
  """`name==version` lines of a requirements file (markers dropped), by canonical name."""
  out = {}
  for line in path.read_text().splitlines():
    line = line.split("#", 1)[0].split(";", 1)[0].strip()
    if "==" in line and not line.startswith("-"):
      name, version = line.split("==", 1)
      out[canonicalize_name(re.sub(r"\[.*\]", "", name))] = version.strip()
  return out


def declared() -> set[str]:
  """Canonical names of every distribution the project declares for its shipped code."""
  project = _pyproject()["project"]
  reqs = list(project["dependencies"])
  for extra in project.get("optional-dependencies", {}).values():
    reqs += extra
  names = {canonicalize_name(Requirement(r).name) for r in reqs}
  return names | set(_pins(ROOT / "requirements-app.txt"))


def third_party_imports(roots: list[Path]) -> dict[str, set[str]]:
  """Top-level module name → files that import it, over every .py file under `roots`."""
  found: dict[str, set[str]] = {}
  for root in roots:
    for path in sorted(root.rglob("*.py")):
      for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
          names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
          names = [node.module]
        elif (isinstance(node, ast.Call) and node.args
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in _IMPORT_CALLS
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
          names = [node.args[0].value]
        for name in names:
          top = name.split(".")[0]
          if (top and top not in sys.stdlib_module_names
              and top not in OWN | set(PROBED) | set(OTHER_ENV)):
            found.setdefault(top, set()).add(str(path))
  return found


def undeclared(imports: dict[str, set[str]], names: set[str]) -> list[str]:
  """One message per imported module whose distribution is not in `names`."""
  dists = md.packages_distributions()
  problems = []
  for module, files in sorted(imports.items()):
    owners = {canonicalize_name(d) for d in dists.get(module, [])}
    if not owners:
      problems.append(f"{module} (imported by {sorted(files)[0]}): no installed distribution "
                      f"provides it")
    elif not owners & names:
      problems.append(f"{module} (imported by {sorted(files)[0]}): its distribution "
                      f"{sorted(owners)} is not declared in pyproject.toml")
  return problems


def test_lock_pins_every_dependency_inside_its_range():
  pins = _pins(ROOT / "requirements.txt")
  deps = [Requirement(r) for r in _pyproject()["project"]["dependencies"]]
  assert deps, "pyproject.toml declares no dependencies"
  for req in deps:
    name = canonicalize_name(req.name)
    assert name in pins, f"{req.name} is declared in pyproject.toml but not pinned in " \
                         "requirements.txt"
    assert req.specifier, f"{req.name}: give a compatible range, not a bare name"
    assert pins[name] in req.specifier, (
        f"{req.name}: requirements.txt pins {pins[name]}, outside pyproject.toml's {req.specifier}")


def test_every_third_party_import_is_declared():
  imports = third_party_imports([ROOT / d for d in SHIPPED])
  assert {"jax", "flax", "grain", "gradio"} <= set(imports)  # the scan sees imports
  assert undeclared(imports, declared()) == []


def test_the_import_check_catches_an_undeclared_import(tmp_path):
  pkg = tmp_path / "instant3d_jax"
  pkg.mkdir()
  (pkg / "x.py").write_text(
      "import importlib\nimport numpy as np\n\n"
      "def f():\n  import torch\n  return importlib.import_module('diffusers.models')\n")
  imports = third_party_imports([pkg])
  assert set(imports) == {"numpy", "torch", "diffusers"}
  problems = undeclared(imports, declared())
  assert len(problems) == 2 and problems[0].startswith("diffusers (imported by")
  assert "torch (imported by" in problems[1] and "not declared" in problems[1]


def test_packaged_config_paths_resolve(tmp_path, monkeypatch):
  from instant3d_jax import cli, configs
  assert Path(configs.path("lrm.py")).samefile(ROOT / "configs" / "lrm.py")
  monkeypatch.chdir(tmp_path)  # outside the checkout: configs/… is the packaged file
  want = configs.path("lrm.py:tiny")
  assert cli.config_args(["x", "--config", "configs/lrm.py:tiny", "--", "--config", "a"]) == [
      "x", "--config", want, "--", "--config", "a"]
  assert cli.config_args(["x", "--config=configs/lrm.py"]) == ["x", "--config=" + want[:-5]]
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "lrm.py").write_text("")  # a user's own file wins
  assert cli.config_args(["x", "--config=configs/lrm.py:tiny"]) == [
      "x", "--config=configs/lrm.py:tiny"]
  assert configs.resolve("configs/nope.py:tiny") == "configs/nope.py:tiny"


@pytest.mark.slow  # builds the wheel (~20 s) and runs a 2-step demo outside the checkout (~3 min)
def test_wheel_contents_and_a_command_outside_the_checkout(tmp_path):
  wheels = tmp_path / "wheels"
  # Built from a copy: setuptools builds in the source tree and reuses its build/ folder, where a
  # module deleted since an earlier build would still be picked up.
  src = tmp_path / "src"
  shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
      ".git", ".venv*", "build", "outputs", "data", "*.egg-info", "__pycache__", "device-wheels"))
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                  "--no-build-isolation", "-w", str(wheels), str(src)], check=True,
                 capture_output=True, text=True)
  wheel, = wheels.glob("instant3d_jax-*.whl")
  names = zipfile.ZipFile(wheel).namelist()
  tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
  assert tops == {"instant3d_jax", "data_pipeline"}, tops
  assert "instant3d_jax/configs/lrm.py" in names and "instant3d_jax/configs/__init__.py" in names
  meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
  assert "Requires-Dist: jax<0.11,>=0.10.2" in meta or "Requires-Dist: jax>=0.10.2,<0.11" in meta
  target = tmp_path / "site"
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                  str(target), str(wheel)], check=True, capture_output=True, text=True)
  # A fresh interpreter whose project is the installed wheel (not this checkout, nor its
  # editable install): the dependencies come from this venv's site-packages.
  boot = ("import sys\n"
          "sys.path[:] = [p for p in sys.path if 'site-packages' not in p]\n"
          f"sys.path.insert(0, {str(target)!r})\n"
          f"sys.path += {site.getsitepackages()!r}\n"
          "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__"
          " and 'editable' not in getattr(f, '__name__', '')]\n"
          "import runpy; sys.argv = ['demo', '--workdir', 'demo', '--config.train.total_steps=2',"
          " '--config.data.num_objects=24']\n"
          "import instant3d_jax; assert instant3d_jax.__file__.startswith("
          f"{str(target)!r}), instant3d_jax.__file__\n"
          "runpy.run_module('instant3d_jax.demo', run_name='__main__')\n")
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
  env["JAX_PLATFORMS"] = "cpu"
  work = tmp_path / "elsewhere"
  work.mkdir()
  r = subprocess.run([sys.executable, "-S", "-c", boot], cwd=work, env=env, capture_output=True,
                     text=True, timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  # The packaged default config (configs/lrm.py:tiny), 24 objects, 2 steps (the demo fits its
  # warm-up into them), evaluation and the turntable.
  assert "training tiny for 2 steps" in r.stdout and "val: PSNR" in r.stdout, r.stdout[-2000:]
  assert "test: PSNR" in r.stdout and "results: demo/results.json" in r.stdout, r.stdout[-2000:]
  assert (work / "demo" / "reconstruct" / "turntable.gif").is_file()
