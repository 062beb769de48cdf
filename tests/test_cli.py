"""Every command starts without the test-only packages: `--help` exits 0 where `torch` and
`diffusers` are not installed.

PyTorch and diffusers are reference implementations for the parity tests only
(requirements-dev.txt); a user who installs requirements.txt has neither. The subprocess sees a
copy of this interpreter's site-packages with torch, its companion packages and diffusers left out
(symlinks to everything else), so both the import and `importlib.util.find_spec` / package
metadata say "not installed", exactly as on such a machine (transformers, for one, probes
`find_spec("torch")` before it decides which backends to load).
"""
from __future__ import annotations

import os
import subprocess
import sys
import site
from pathlib import Path

import pytest

from tests.test_module_structure import find_commands

ROOT = Path(__file__).resolve().parents[1]

# Top-level names that torch and diffusers install, and the editable install of this project
# (its finder would map `instant3d_jax` to the checkout it was installed from, not this one).
_HIDDEN = ("torch", "functorch", "torchgen", "diffusers", "__editable__", "instant3d_jax")

# Every command, as the command rule's test finds them (a `__main__` guard or a `__main__.py`),
# by the name `python -m` takes.
COMMANDS = sorted(name.removesuffix(".__main__") for name in find_commands())


def _hidden(name: str) -> bool:
  base = name.split("-")[0].split(".")[0].lower()
  return base in _HIDDEN or name.startswith("__editable__")


@pytest.fixture(scope="module")
def no_torch_site(tmp_path_factory) -> Path:
  """A site-packages folder: symlinks to this interpreter's, minus torch and diffusers."""
  out = tmp_path_factory.mktemp("site_no_torch")
  for sp in site.getsitepackages():
    sp = Path(sp)
    if not sp.is_dir():
      continue
    for entry in sp.iterdir():
      if _hidden(entry.name) or (out / entry.name).exists():
        continue
      (out / entry.name).symlink_to(entry)
  return out


def _run(site_dir: Path, code: str, timeout: float = 240) -> subprocess.CompletedProcess:
  """Runs `code` in a fresh interpreter whose only site-packages is `site_dir` (`-S` skips the
  venv's own; `addsitedir` runs the .pth files of the copy)."""
  boot = (f"import site, sys; site.addsitedir({str(site_dir)!r}); "
          f"sys.path.insert(0, {str(ROOT)!r})\n")
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
  env["JAX_PLATFORMS"] = "cpu"
  return subprocess.run([sys.executable, "-S", "-c", boot + code], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_torch_and_diffusers_are_really_absent(no_torch_site):
  """The harness itself: neither package imports or is found, and the project is this checkout."""
  r = _run(no_torch_site, (
      "import importlib.util, importlib.metadata as md\n"
      "for name in ('torch', 'diffusers'):\n"
      "  assert importlib.util.find_spec(name) is None, name\n"
      "  try:\n"
      "    md.version(name)\n"
      "  except md.PackageNotFoundError:\n"
      "    pass\n"
      "  else:\n"
      "    raise AssertionError(name + ' metadata visible')\n"
      "import instant3d_jax\n"
      "print(instant3d_jax.__file__)\n"))
  assert r.returncode == 0, r.stderr[-3000:]
  assert Path(r.stdout.strip()).resolve().is_relative_to(ROOT), r.stdout


@pytest.mark.parametrize("module", COMMANDS)
def test_command_help_without_torch(no_torch_site, module):
  r = _run(no_torch_site, (
      "import runpy, sys\n"
      f"sys.argv = [{module!r}, '--help']\n"
      f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"))
  assert r.returncode == 0, f"{module} --help exited {r.returncode}:\n{r.stderr[-3000:]}"
  assert "torch" not in r.stderr.lower(), r.stderr[-3000:]
  out = r.stdout + r.stderr
  assert "usage" in out.lower() or "flags" in out.lower(), out[-2000:]


def test_clip_tokenizer_without_torch(no_torch_site, tmp_path):
  """transformers' CLIP tokenizer (the SDXL pipeline's, at run time) loads and encodes without
  torch."""
  r = _run(no_torch_site, (
      "from instant3d_jax.convert import sdxl_pipeline\n"
      f"tok = sdxl_pipeline.write_toy_tokenizer({str(tmp_path / 'tok')!r}, 16)\n"
      "ids = tok(['a red chair'], padding='max_length', max_length=16, truncation=True,\n"
      "          return_tensors='np').input_ids\n"
      "import sys\n"
      "assert 'torch' not in sys.modules\n"
      "print(ids.shape)\n"))
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.strip().endswith("(1, 16)"), r.stdout
