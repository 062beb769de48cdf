"""Every command says one thing on bad input: exactly one stderr line, `error: …`, exit status 2.

Each command runs as a user runs it (`python -m …`, the dev install, no `JAX_PLATFORMS` set) with
one bad file or flag input, while a second JAX process that initialised its backends stays alive
beside it (with libtpu installed, that process holds libtpu's multi-process lockfile, so a command
that probed the TPU backend would be told to `sudo rm` it). What the one-line rule rules out:

* inputs checked after the weights or data load (the cases with `--verbosity=0` / the
  `INSTANT3D_VERBOSITY` variable show the libraries' INFO lines, so an orbax checkpoint read
  before the error would add lines);
* library INFO logging at the default verbosity (absl, orbax, grain, jax's backend messages);
* TPU probing on a machine without a TPU: each command runs under a wrapper that prints a second
  line at exit when libtpu was mapped into the process (/proc/self/maps), and libtpu's own
  start-up complaints would be more lines.

The commands run a few at a time (each pays a JAX import); `reconstruct` with two views fails
only after its checkpoint has loaded, so at least one case initialises a JAX backend.
"""
from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# Runs a command module as `python -m` does; at exit, one more stderr line if libtpu was loaded.
_WRAPPER = (
    "import atexit, runpy, sys\n"
    "def _libtpu():\n"
    "  try:\n"
    "    maps = open('/proc/self/maps').read()\n"
    "  except OSError:\n"
    "    return\n"
    "  if 'libtpu' in maps:\n"
    "    print('libtpu was loaded by a process without a TPU', file=sys.stderr)\n"
    "atexit.register(_libtpu)\n"
    "module = sys.argv[1]\n"
    "sys.argv = [module] + sys.argv[2:]\n"
    "runpy.run_module(module, run_name='__main__', alter_sys=True)\n")


def _config(name: str) -> str:
  """A config file of the project (configs/ or instant3d_jax/configs/, wherever it lives)."""
  for base in (ROOT / "instant3d_jax" / "configs", ROOT / "configs"):
    if (base / name).is_file():
      return str(base / name)
  raise FileNotFoundError(name)


def _env(**extra) -> dict:
  env = {k: v for k, v in os.environ.items()
         if k not in ("JAX_PLATFORMS", "INSTANT3D_VERBOSITY", "TF_CPP_MIN_LOG_LEVEL",
                      "XLA_FLAGS")}
  env["PYTHONPATH"] = str(ROOT)
  env.update(extra)
  return env


@pytest.fixture(scope="module")
def side_jax_process():
  """A second JAX process with initialised backends, alive while the commands run."""
  code = ("import jax, sys, time\n"
          "jax.devices()\n"
          "print('ready', flush=True)\n"
          "time.sleep(600)\n")
  p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=_env(),
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  try:
    assert p.stdout.readline().strip() == "ready"
    yield p
  finally:
    p.kill()
    p.wait()


@pytest.fixture(scope="module")
def workdir_checkpoint(tmp_path_factory) -> Path:
  """A training workdir with one orbax step of the micro reconstructor (tests/tiny_configs.py)."""
  import flax.linen as nn
  import jax
  from instant3d_jax.models import lrm
  from instant3d_jax.base import checkpoint as ckpt_lib
  from tests import tiny_configs
  cfg = tiny_configs.micro_lrm()
  params = nn.meta.unbox(lrm.init_params(cfg, jax.random.key(0)))
  wd = tmp_path_factory.mktemp("bad_input") / "lrm_run"
  c = ckpt_lib.Checkpointer(wd, use_async=False)
  c.save(1, {"params": params, "step": 1}, {}, cfg)
  c.close()
  ckpt_lib.check_or_write_config(wd, cfg, ("model",))
  return wd


def _cases(tmp: Path, ckpt: Path) -> list[tuple[str, list[str], dict, str]]:
  """(module, arguments, extra environment, a fragment the error line must hold)."""
  from PIL import Image
  views = []
  for i in range(2):
    views.append(str(tmp / f"view_{i}.png"))
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(views[-1])
  a_file = tmp / "a_file"
  a_file.write_text("not a folder")
  missing = str(tmp / "missing")
  out = str(tmp / "out")
  lrm_cfg, mv_cfg = _config("lrm.py") + ":tiny", _config("mv_sdxl.py") + ":tiny"
  records = ["--config.data.source=records", f"--config.data_dir={missing}"]
  verbose = {"INSTANT3D_VERBOSITY": "info"}
  return [
      ("instant3d_jax.train_lrm", [f"--config={lrm_cfg}", f"--workdir={tmp / 'w1'}", *records],
       {}, "no data set there"),
      ("instant3d_jax.train_mvdiffusion", [f"--config={mv_cfg}", f"--workdir={tmp / 'w2'}",
                                           *records], {}, "no data set there"),
      # Verbose: a checkpoint read before the data check would show orbax's INFO lines.
      ("instant3d_jax.eval_lrm", [f"--checkpoint={ckpt}", f"--config={lrm_cfg}", *records],
       verbose, "no data set there"),
      ("instant3d_jax.eval_text3d", [f"--generated={missing}", f"--stage2={ckpt}",
                                     f"--clip_l={missing}"], {}, "missing"),
      ("instant3d_jax.reconstruct", [f"--checkpoint={ckpt}", f"--grid={missing}.png",
                                     f"--out={out}", "--verbosity=0"], {}, "--grid"),
      # Fails after the checkpoint loaded (the model takes 4 views): a JAX backend is up.
      ("instant3d_jax.reconstruct", [f"--checkpoint={ckpt}", "--views=" + ",".join(views),
                                     f"--out={out}"], {}, "--views lists 2 files"),
      ("instant3d_jax.text_to_views", [f"--weights={missing}", "--prompt=a red cube",
                                       f"--out={out}"], {}, "--weights"),
      ("instant3d_jax.text_to_3d", ["--prompt=a red cube", f"--out={out}",
                                    f"--config.stage1.weights={missing}"], {}, "stage1.weights"),
      ("instant3d_jax.app", [f"--config.stage1.weights={missing}"], {}, "stage1.weights"),
      ("instant3d_jax.demo", [f"--workdir={a_file}"], {}, "not a directory"),
      ("instant3d_jax.demo_mv", ["--per_caption=0"], {}, "--per_caption"),
      ("instant3d_jax.demo_text3d", ["--num_captions=0"], {}, "--num_captions"),
      ("instant3d_jax.export", [f"--checkpoint={missing}", f"--out={tmp / 'm.safetensors'}"],
       verbose, "does not exist"),
      ("instant3d_jax.convert", [f"--weights={missing}", f"--out={out}"], {}, "--weights"),
      ("instant3d_jax.models.summary", [f"--config={lrm_cfg}", "--batch=0"], {}, "--batch"),
      ("data_pipeline.synthetic", [f"--out={out}", "--split_fractions=0.5,0.5"], {},
       "--split_fractions"),
      ("data_pipeline.importer", [f"--src={missing}", f"--out={out}"], {}, "source directory"),
      ("data_pipeline.mv_cache", [f"--data_dir={missing}", f"--out={out}"], {}, "missing"),
      ("data_pipeline.curation", [f"--data_dir={missing}", f"--clip={missing}",
                                  f"--labels={missing}", f"--out={out}"], {}, "missing"),
  ]


def _run(module: str, args: list[str], env: dict) -> tuple[subprocess.CompletedProcess, float]:
  t = time.perf_counter()
  r = subprocess.run([sys.executable, "-c", _WRAPPER, module, *args], cwd=ROOT,
                     env=_env(**env), capture_output=True, text=True, timeout=300)
  return r, time.perf_counter() - t


def test_every_command_reports_bad_input_in_one_line(side_jax_process, workdir_checkpoint,
                                                     tmp_path):
  cases = _cases(tmp_path, workdir_checkpoint)
  # The control: asked for, the libraries' INFO lines do show (the verbose cases mean something).
  views = ",".join(str(tmp_path / f"view_{i}.png") for i in range(2))
  control = ("instant3d_jax.reconstruct", [f"--checkpoint={workdir_checkpoint}",
                                           f"--views={views}", f"--out={tmp_path / 'o'}"],
             {"INSTANT3D_VERBOSITY": "info"})
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    results = list(pool.map(lambda c: _run(c[0], c[1], c[2]), [control] + cases))
  assert side_jax_process.poll() is None, "the second JAX process ended early"
  (r, _), results = results[0], results[1:]
  assert r.returncode == 2 and "Restoring checkpoint" in r.stderr, r.stderr[-3000:]
  assert r.stderr.splitlines()[-1].startswith("error: --views lists 2 files"), r.stderr[-3000:]
  failures = []
  for (module, args, env, fragment), (r, secs) in zip(cases, results):
    lines = r.stderr.splitlines()
    ok = (r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")
          and fragment in lines[0])
    if not ok:
      failures.append(f"{module} {' '.join(args)} {env or ''}: exit {r.returncode}, "
                      f"{len(lines)} stderr lines, expected one 'error: …{fragment}…':\n"
                      + r.stderr[-3000:])
  assert not failures, "\n\n".join(failures)


def test_platforms_leave_the_tpu_out_only_without_a_tpu(monkeypatch, tmp_path):
  """`cli.select_platforms`: no TPU → the GPU platforms present plus cpu; a TPU, an explicit
  JAX_PLATFORMS (even empty) or an unknown plugin → JAX decides."""
  from instant3d_jax import cli
  gpu = tmp_path / "nvidia0"
  gpu.write_text("")
  monkeypatch.setattr(cli, "_GPU_PLATFORMS", (("cuda", (str(gpu),)),
                                              ("rocm", (str(tmp_path / "kfd"),))))
  assert cli.platforms_without_tpu([]) == ["cpu"]
  assert cli.platforms_without_tpu(["xla_cuda12"]) == ["cuda", "cpu"]
  assert cli.platforms_without_tpu(["xla_rocm7"]) == ["cpu"]  # plugin, but no device
  assert cli.platforms_without_tpu(["xla_cuda12", "xla_other"]) is None
  # This process's JAX is set up already (conftest); select_platforms sees a fresh process.
  monkeypatch.delitem(sys.modules, "jax")
  monkeypatch.setattr(cli, "jax_plugins", lambda: ["jax_cuda12_plugin"])
  monkeypatch.setattr(cli, "tpu_attached", lambda: True)
  monkeypatch.delenv("JAX_PLATFORMS")
  assert cli.select_platforms() is None and "JAX_PLATFORMS" not in os.environ
  monkeypatch.setattr(cli, "tpu_attached", lambda: False)
  monkeypatch.setenv("JAX_PLATFORMS", "")
  assert cli.select_platforms() is None and os.environ["JAX_PLATFORMS"] == ""
  monkeypatch.delenv("JAX_PLATFORMS")
  assert cli.select_platforms() == "cuda,cpu" and os.environ["JAX_PLATFORMS"] == "cuda,cpu"
