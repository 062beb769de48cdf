"""convert/torch_checkpoint.py: torch.save files read without torch (restricted unpickling), and
exported to safetensors. torch (dev only) writes the test files; the reader never imports it."""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from instant3d_jax import errors
from instant3d_jax.convert import torch_checkpoint as tc

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def torch():
  return pytest.importorskip("torch")


def _save(torch, obj, path: Path, **kw) -> Path:
  torch.save(obj, path, **kw)
  return path


def _rewrite_zip(src: Path, dst: Path, edit) -> Path:
  """A copy of the zip `src` with each member's bytes passed through `edit(name, data)` (None
  drops the member)."""
  with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
    for info in zin.infolist():
      data = edit(info.filename, zin.read(info))
      if data is not None:
        zout.writestr(info.filename, data)
  return dst


def _as_numpy(t):
  """A torch tensor as numpy with torch's dtype (bf16 through its bits)."""
  import torch
  if t.dtype == torch.bfloat16:
    return t.detach().contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return t.detach().numpy()


def _write_marker(path):
  """What unpickling `_Trap` would call: proof that the file's globals were imported."""
  Path(path).write_text("imported and called")
  return {"lr": 1e-3}


class _Trap:
  """A Lightning `hyper_parameters` stand-in whose unpickling calls `_write_marker`."""

  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    return (_write_marker, (self.marker,))


class _Callback:
  """An arbitrary class with instance state (pickled as NEWOBJ + BUILD)."""

  def __init__(self):
    self.best = 0.5
    self.history = [1, 2]


def test_importing_the_module_does_not_import_torch():
  r = subprocess.run(
      [sys.executable, "-c", "import sys; import instant3d_jax.convert.torch_checkpoint; "
       "assert 'torch' not in sys.modules, 'torch imported'"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr[-2000:]


def test_every_dtype_round_trips(torch, tmp_path):
  g = torch.Generator().manual_seed(0)
  sd = collections.OrderedDict(
      f32=torch.randn(3, 4, generator=g), f16=torch.randn(5, generator=g).half(),
      bf16=torch.randn(2, 3, generator=g).bfloat16(), f64=torch.randn(2, 2, dtype=torch.float64),
      i64=torch.arange(-3, 3), i32=torch.arange(4, dtype=torch.int32).reshape(2, 2),
      i16=torch.tensor([-7, 300], dtype=torch.int16), i8=torch.tensor([-128, 5], dtype=torch.int8),
      u8=torch.tensor([0, 255], dtype=torch.uint8), b=torch.tensor([True, False, True]),
      c64=torch.tensor([1 + 2j, -3j], dtype=torch.complex64),
      u16=torch.tensor([1, 65535], dtype=torch.uint16),  # an untyped storage + torch.uint16
      scalar=torch.tensor(2.5), empty=torch.zeros(0, 3))
  path = _save(torch, sd, tmp_path / "all.pt")
  got = tc.read_state_dict(path)
  assert list(got) == list(sd)
  for name, t in sd.items():
    want = _as_numpy(t)
    assert got[name].dtype == want.dtype, name
    assert got[name].shape == want.shape, name
    assert got[name].tobytes() == np.ascontiguousarray(want).tobytes(), name  # bit-exact
  assert got["bf16"].dtype == np.dtype(ml_dtypes.bfloat16)
  listed = tc.list_entries(path)
  assert listed == {k: (tuple(v.shape), got[k].dtype) for k, v in sd.items()}


def test_views_offsets_and_strides(torch, tmp_path):
  base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
  sd = {"base": base, "transposed": base.t(), "slice": base[1:3, 2:5], "every_other": base[:, ::2],
        "row": base[3], "expanded": torch.arange(3.).reshape(3, 1).expand(3, 4)}
  got = tc.read_state_dict(_save(torch, sd, tmp_path / "views.pt"))
  for name, t in sd.items():
    np.testing.assert_array_equal(got[name], t.numpy(), err_msg=name)
    assert got[name].flags.c_contiguous and got[name].flags.writeable, name
  got["slice"][0, 0] = -1  # each array is its own copy, not a view of a shared storage
  assert got["base"][1, 2] == 8


def test_big_endian_storages(torch, tmp_path):
  sd = {"f": torch.tensor([1.5, -2.25]), "s": torch.tensor([1, -300], dtype=torch.int16),
        "c": torch.tensor([1 + 2j], dtype=torch.complex64)}
  little = _save(torch, sd, tmp_path / "little.pt")
  codes = {"0": "f4", "1": "i2", "2": "c8"}  # storage keys in pickling order

  def to_big(name, data):
    if name.endswith("/byteorder"):
      return b"big"
    key = name.rsplit("/data/", 1)[-1] if "/data/" in name else None
    if key in codes:
      return np.frombuffer(data, "<" + codes[key]).astype(">" + codes[key]).tobytes()
    return data

  got = tc.read_state_dict(_rewrite_zip(little, tmp_path / "big.pt", to_big))
  for name, t in sd.items():
    np.testing.assert_array_equal(got[name], t.numpy())
    assert got[name].dtype.isnative


def test_parameters_and_tensors_with_python_state(torch, tmp_path):
  p = torch.nn.Parameter(torch.ones(2, 3))
  q = torch.nn.Parameter(torch.full((2,), 3.0))
  q.tag = "with state"  # → _rebuild_parameter_with_state
  t = torch.arange(3.0)
  t.note = "attr"  # → _rebuild_from_type_v2
  lin = torch.nn.Linear(3, 2)
  sd = {"p": p, "q": q, "t": t, **{f"lin.{k}": v for k, v in lin.state_dict().items()}}
  got = tc.read_state_dict(_save(torch, sd, tmp_path / "params.pt"))
  np.testing.assert_array_equal(got["p"], np.ones((2, 3), np.float32))
  np.testing.assert_array_equal(got["q"], np.full(2, 3.0, np.float32))
  np.testing.assert_array_equal(got["t"], np.arange(3.0, dtype=np.float32))
  np.testing.assert_array_equal(got["lin.weight"], lin.weight.detach().numpy())


def _lightning(torch, tmp_path, marker):
  g = torch.Generator().manual_seed(1)
  w = torch.randn(4, 3, generator=g)
  state = collections.OrderedDict([
      ("lrm_generator.encoder.weight", w), ("lrm_generator.encoder.bias", torch.zeros(4)),
      ("lpips.net.weight", torch.ones(2, 2))])
  ckpt = {
      "epoch": 3, "global_step": 1200, "pytorch-lightning_version": "2.1.0",
      "state_dict": state,
      "hyper_parameters": {"trap": _Trap(marker), "args": argparse.Namespace(lr=1e-4),
                           "scale": np.float64(1.5), "tags": {"a", "b"}, "raw": b"\x00\x01"},
      "callbacks": {"ModelCheckpoint": _Callback()},
      "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(4, 3), "step": torch.tensor(7.)}},
                            "param_groups": [{"lr": 1e-4, "params": [0]}]}],
      "lr_schedulers": [],
  }
  return _save(torch, ckpt, tmp_path / "last.ckpt"), w


def test_lightning_checkpoint_reads_state_dict_and_never_imports_other_globals(torch, tmp_path):
  marker = tmp_path / "marker"
  path, w = _lightning(torch, tmp_path, marker)
  got = tc.read_state_dict(path, prefix="lrm_generator.")
  assert set(got) == {"encoder.weight", "encoder.bias"}
  np.testing.assert_array_equal(got["encoder.weight"], w.numpy())
  assert tc.list_entries(path, prefix="lrm_generator.", strip_prefix=False) == {
      "lrm_generator.encoder.weight": ((4, 3), np.dtype(np.float32)),
      "lrm_generator.encoder.bias": ((4,), np.dtype(np.float32))}
  assert set(tc.read_state_dict(path)) == {"lrm_generator.encoder.weight",
                                           "lrm_generator.encoder.bias", "lpips.net.weight"}
  assert not marker.exists(), "a global of the file was imported and called"
  # The trap is armed: torch's own full unpickling does call it.
  torch.load(path, weights_only=False)
  assert marker.exists()


def test_prefix_selection_and_top_level_files(torch, tmp_path):
  sd = {"a.x": torch.ones(1), "a.y": torch.zeros(2), "b.z": torch.ones(3)}
  path = _save(torch, sd, tmp_path / "plain.pt")  # no 'state_dict' key: the top level is read
  assert set(tc.read_state_dict(path)) == set(sd)
  assert set(tc.read_state_dict(path, key=None, prefix="a.")) == {"x", "y"}
  assert set(tc.read_state_dict(path, prefix="a.", strip_prefix=False)) == {"a.x", "a.y"}
  with pytest.raises(errors.WeightsError, match=r"no entry starts with the prefix 'c\.'.*a\., b\."):
    tc.read_state_dict(path, prefix="c.")


def _message(excinfo) -> str:
  text = str(excinfo.value)
  assert "\n" not in text
  return text


def test_errors_name_the_file_and_what_was_expected(torch, tmp_path):
  legacy = _save(torch, {"w": torch.ones(2)}, tmp_path / "legacy.pt",
                 _use_new_zipfile_serialization=False)
  with pytest.raises(errors.WeightsError) as e:
    tc.read_state_dict(legacy)
  assert "legacy.pt" in _message(e) and "legacy serialization format" in _message(e)
  assert "save it again with a current torch" in _message(e)

  bad = _save(torch, {"state_dict": {"w": torch.ones(2), "step": 3}}, tmp_path / "bad.ckpt")
  with pytest.raises(errors.WeightsError) as e:
    tc.read_state_dict(bad)
  assert "bad.ckpt" in _message(e) and "entry 'step' is an int, expected a tensor" in _message(e)
  # entries outside the prefix are skipped, whatever they hold
  assert set(tc.read_state_dict(bad, prefix="w", strip_prefix=False)) == {"w"}

  empty = _save(torch, {"state_dict": {}}, tmp_path / "empty.ckpt")
  with pytest.raises(errors.WeightsError, match=r"empty\.ckpt\['state_dict'\] holds no tensors"):
    tc.read_state_dict(empty)

  model = _save(torch, torch.nn.Linear(2, 2), tmp_path / "model.pt")  # a pickled module
  with pytest.raises(errors.WeightsError, match=r"model\.pt holds a torch\.nn\.modules\.linear"
                     r"\.Linear object \(not imported\), expected a dict of tensors"):
    tc.read_state_dict(model)

  good = _save(torch, {"w": torch.ones(8), "v": torch.ones(2)}, tmp_path / "good.pt")
  short = _rewrite_zip(good, tmp_path / "short.pt",
                       lambda n, d: d[:10] if n.endswith("/data/0") else d)
  with pytest.raises(errors.WeightsError) as e:
    tc.read_state_dict(short)
  assert "short.pt" in _message(e) and "holds 10 bytes, expected 32 (a truncated file)" in _message(e)
  missing = _rewrite_zip(good, tmp_path / "missing.pt",
                         lambda n, d: None if n.endswith("/data/1") else d)
  with pytest.raises(errors.WeightsError, match=r"missing\.pt: tensor 'v' needs the storage file "
                     r".*/data/1, which the archive lacks"):
    tc.list_entries(missing)
  no_pkl = _rewrite_zip(good, tmp_path / "no_pkl.pt",
                        lambda n, d: None if n.endswith("/data.pkl") else d)
  with pytest.raises(errors.WeightsError, match=r"no_pkl\.pt is a zip archive without exactly one "
                     r"<archive>/data\.pkl"):
    tc.read_state_dict(no_pkl)
  cut = tmp_path / "cut.pt"
  cut.write_bytes(good.read_bytes()[:200])
  with pytest.raises(errors.WeightsError, match=r"cut\.pt is not a torch\.save checkpoint"):
    tc.read_state_dict(cut)
  with pytest.raises(errors.CheckpointError, match=r"nothere\.pt does not exist"):
    tc.read_state_dict(tmp_path / "nothere.pt")


def test_export_safetensors_round_trip_and_no_partial_file(torch, tmp_path, monkeypatch):
  from safetensors import safe_open
  from safetensors import numpy as st_numpy
  tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3).T,  # non-contiguous
             "h": np.array([1.5, -2], np.float16), "b": np.array([1, -2], ml_dtypes.bfloat16),
             "i": np.arange(3), "m": np.array([True, False]), "s": np.float64(3.0)}
  out = tc.export_safetensors(tensors, tmp_path / "w.safetensors", {"format": "pt"})
  back = st_numpy.load_file(str(out))
  assert set(back) == set(tensors)
  for k, v in tensors.items():
    assert back[k].dtype == v.dtype and back[k].shape == np.shape(v), k
    np.testing.assert_array_equal(back[k], v, err_msg=k)
  with safe_open(str(out), "np") as f:
    assert f.metadata() == {"format": "pt"}

  before = out.read_bytes()

  def fail_midway(arrays, filename, metadata=None):
    Path(filename).write_bytes(b"half")
    raise RuntimeError("disk full")

  monkeypatch.setattr(st_numpy, "save_file", fail_midway)
  with pytest.raises(RuntimeError, match="disk full"):
    tc.export_safetensors(tensors, out)
  with pytest.raises(RuntimeError, match="disk full"):
    tc.export_safetensors(tensors, tmp_path / "new.safetensors")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]
  assert out.read_bytes() == before
  with pytest.raises(errors.WeightsError, match=r"tensor 'o' has the dtype <U1"):
    tc.export_safetensors({"o": np.array(["x"])}, tmp_path / "o.safetensors")
  assert not (tmp_path / "o.safetensors").exists()


def _command(args: list[str]) -> subprocess.CompletedProcess:
  """The command (`define_torch_checkpoint_flags` + `cli.run(main)`) in a fresh interpreter where
  `import torch` fails."""
  code = ("import sys\nsys.modules['torch'] = None\n"
          "from instant3d_jax import cli\n"
          "from instant3d_jax.convert import torch_checkpoint as tc\n"
          "tc.define_torch_checkpoint_flags()\n"
          f"cli.run(tc.main, ['torch_checkpoint'] + {args!r})\n")
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=120)


def test_command_end_to_end_without_torch(torch, tmp_path):
  marker = tmp_path / "marker"
  path, w = _lightning(torch, tmp_path, marker)
  out = tmp_path / "lrm.safetensors"
  r = _command(["--ckpt", str(path), "--prefix", "lrm_generator.", "--out", str(out)])
  assert r.returncode == 0, r.stderr[-3000:]
  assert "wrote" in r.stdout and "2 tensors, 16 parameters" in r.stdout
  from safetensors import numpy as st_numpy
  back = st_numpy.load_file(str(out))
  np.testing.assert_array_equal(back["encoder.weight"], w.numpy())
  assert set(back) == {"encoder.weight", "encoder.bias"}

  r = _command(["--ckpt", str(path), "--list"])
  assert r.returncode == 0, r.stderr[-3000:]
  assert "lrm_generator.encoder.weight\t[4, 3]\tfloat32" in r.stdout
  assert "3 tensors, 20 parameters" in r.stdout
  assert not marker.exists()

  legacy = _save(torch, {"w": torch.ones(2)}, tmp_path / "legacy.pt",
                 _use_new_zipfile_serialization=False)
  r = _command(["--ckpt", str(legacy), "--out", str(tmp_path / "x.safetensors")])
  assert r.returncode == 2
  assert r.stderr.strip().startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
  assert "legacy serialization format" in r.stderr
  assert not (tmp_path / "x.safetensors").exists()
