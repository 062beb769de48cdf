"""PyTorch checkpoints (`torch.save`, e.g. a Lightning `.ckpt`) read without torch, and exported
to safetensors.

`torch.save` (torch >= 1.6) writes a zip archive: `<archive>/data.pkl` (a pickle of the saved
object, whose tensors refer to storages by persistent id), `<archive>/data/<key>` (each
storage's raw bytes), `<archive>/byteorder` and `<archive>/version`. This module reads it with a
restricted unpickler: only the globals that rebuild tensors and their containers resolve (the
`torch._utils._rebuild_*` functions, `collections.OrderedDict`, the `torch.<X>Storage` classes and
`torch.<dtype>` values, all as this module's own stand-ins, never torch's). Any other global (a
Lightning checkpoint's `hyper_parameters`, callbacks, optimizer states with arbitrary classes,
numpy scalars, ...) becomes an inert placeholder: nothing is imported and nothing of the file is
called, so objects outside the selected state dict are skipped without running code. Tensor
bytes are read only for the entries selected (`read_state_dict`) and not at all for
`list_entries`.

    from instant3d_jax.convert import torch_checkpoint as tc
    tensors = tc.read_state_dict("last.ckpt", prefix="lrm_generator.")  # {name: np.ndarray}
    tc.export_safetensors(tensors, "lrm.safetensors")

The command side lives here as a library flag set and `main` (`define_torch_checkpoint_flags`,
`main`), for a command module that holds only flags and `main` (docs/design.md §2, the command
rule): `--ckpt FILE [--key state_dict] [--prefix P] --out FILE.safetensors`, or `--list`.
"""
from __future__ import annotations

import collections
import contextlib
import io
import os
import pickle
import sys
import zipfile
from typing import Any, Iterator, Mapping, Sequence

import ml_dtypes
import numpy as np

from instant3d_jax import errors, fileio

# The first bytes of torch's legacy (pre-1.6, or `_use_new_zipfile_serialization=False`) format:
# protocol 2, then the pickled magic number 0x1950a86a20f9469cfc6c.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"

# torch.<X>Storage → the element dtype (typed storages: numel counts elements).
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "HalfStorage": np.float16, "BFloat16Storage": ml_dtypes.bfloat16,
    "DoubleStorage": np.float64, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "ComplexFloatStorage": np.complex64,
    "ComplexDoubleStorage": np.complex128,
}
# Untyped storages (numel counts bytes; the tensor's dtype comes with `_rebuild_tensor_v3`).
_UNTYPED_STORAGES = (("torch", "UntypedStorage"), ("torch.storage", "UntypedStorage"))
# torch.<dtype> globals (written by `_rebuild_tensor_v3` for dtypes without a legacy storage
# class: uint16/32/64, float8) → numpy dtypes. Others (complex32, bits*, float4, quantized)
# resolve to placeholders, and a tensor of such a dtype is refused with its name.
_TORCH_DTYPES = {
    "float32": np.float32, "float": np.float32, "float16": np.float16, "half": np.float16,
    "bfloat16": ml_dtypes.bfloat16, "float64": np.float64, "double": np.float64,
    "int64": np.int64, "long": np.int64, "int32": np.int32, "int": np.int32,
    "int16": np.int16, "short": np.int16, "int8": np.int8, "uint8": np.uint8,
    "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64, "bool": np.bool_,
    "complex64": np.complex64, "cfloat": np.complex64, "complex128": np.complex128,
    "cdouble": np.complex128, "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
    "float8_e5m2": ml_dtypes.float8_e5m2, "float8_e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "float8_e5m2fnuz": ml_dtypes.float8_e5m2fnuz, "float8_e8m0fnu": ml_dtypes.float8_e8m0fnu,
}
# dtypes the safetensors format (and its numpy API) can hold.
_SAFETENSORS_DTYPES = frozenset(np.dtype(d) for d in (
    np.float64, np.float32, np.float16, ml_dtypes.bfloat16, np.int64, np.int32, np.int16, np.int8,
    np.uint64, np.uint32, np.uint16, np.uint8, np.bool_, np.complex64,
    ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2))


# ---------------------------------------------------------------------------------------------
# What the unpickler builds: references to storages and tensors (no bytes), placeholders.

class _Skipped:
  """Stands in for a global that is not imported (and for anything built by calling one): every
  way a pickle can build or fill an object is accepted and ignored."""
  qualname = "?"

  def __new__(cls, *args, **kwargs):
    return object.__new__(cls)

  def __init__(self, *args, **kwargs):
    pass

  def __call__(self, *args, **kwargs):
    return _skipped_type(f"{self.qualname}(...)")()

  def __setstate__(self, state):
    pass

  def __setitem__(self, key, value):
    pass

  def append(self, item):
    pass

  def extend(self, items):
    pass

  def __repr__(self):
    return f"<{self.qualname}, not imported>"


def _skipped_type(qualname: str) -> type:
  return type("Skipped", (_Skipped,), {"qualname": qualname})


class _StorageType:
  """`torch.<X>Storage` (or `torch.UntypedStorage`, dtype uint8 counted in bytes)."""

  def __init__(self, name: str, dtype):
    self.name, self.dtype = name, np.dtype(dtype)


class _TorchDtype:
  """A `torch.<dtype>` global."""

  def __init__(self, name: str, dtype):
    self.name, self.dtype = name, np.dtype(dtype)


class _TensorClass:
  """`torch.Tensor` / `torch.nn.Parameter` named by `_rebuild_from_type_v2`."""


class _StorageRef:
  """A storage file: its key, size in bytes and element dtype (None when untyped)."""
  __slots__ = ("key", "nbytes", "dtype")

  def __init__(self, key: str, nbytes: int, dtype):
    self.key, self.nbytes, self.dtype = key, nbytes, dtype


class _TensorRef:
  """A dense tensor: its storage, and offset / shape / stride in elements of `dtype`."""
  __slots__ = ("storage", "offset", "shape", "stride", "dtype", "dtype_name")

  def __init__(self, storage, offset, shape, stride, dtype, dtype_name):
    if not isinstance(storage, _StorageRef):
      raise pickle.UnpicklingError(f"a tensor record without a storage ({storage!r:.60})")
    try:
      shape, stride, offset = tuple(map(int, shape)), tuple(map(int, stride)), int(offset)
    except (TypeError, ValueError) as e:
      raise pickle.UnpicklingError(f"a malformed tensor record: {e}") from e
    if len(shape) != len(stride) or min(shape + stride + (offset,)) < 0:
      raise pickle.UnpicklingError(f"a malformed tensor record: size {shape}, stride {stride}, "
                                   f"offset {offset}")
    self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride
    self.dtype, self.dtype_name = dtype, dtype_name

  def end_bytes(self) -> int:
    """Bytes of the storage the tensor spans (0 for an empty tensor)."""
    if 0 in self.shape:
      return 0
    last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride))
    return (last + 1) * self.dtype.itemsize


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  dtype = getattr(storage, "dtype", None)
  return _TensorRef(storage, storage_offset, size, stride, dtype,
                    "unknown (an untyped storage)" if dtype is None else str(dtype))


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
  if isinstance(dtype, _TorchDtype):
    return _TensorRef(storage, storage_offset, size, stride, dtype.dtype, dtype.name)
  return _TensorRef(storage, storage_offset, size, stride, None,
                    getattr(dtype, "qualname", repr(dtype)))


def _rebuild_parameter(data, requires_grad=True, backward_hooks=None):
  return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
  return data


def _rebuild_from_type_v2(func, new_type, args, state):
  """A tensor with Python attributes (kept as the plain tensor); a tensor subclass is skipped."""
  if isinstance(new_type, _TensorClass) and callable(func):
    return func(*args)
  return _skipped_type(f"a tensor subclass {getattr(new_type, 'qualname', new_type)!r}")()


_TENSOR_CLASS = _TensorClass()
_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): _TENSOR_CLASS,
    ("torch._tensor", "Tensor"): _TENSOR_CLASS,
    ("torch.nn", "Parameter"): _TENSOR_CLASS,
    ("torch.nn.parameter", "Parameter"): _TENSOR_CLASS,
    **{("torch", n): _StorageType(n, d) for n, d in _STORAGE_DTYPES.items()},
    **{k: _StorageType("UntypedStorage", np.uint8) for k in _UNTYPED_STORAGES},
    **{("torch", n): _TorchDtype(n, d) for n, d in _TORCH_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only `_ALLOWED` (to this module's stand-ins); every other global becomes a
  `_Skipped` placeholder type, so the file can neither import nor call anything."""

  def __init__(self, file):
    super().__init__(file)
    self._skipped: dict[tuple[str, str], type] = {}

  def find_class(self, module, name):
    found = _ALLOWED.get((module, name))
    if found is not None:
      return found
    key = (str(module), str(name))
    if key not in self._skipped:
      self._skipped[key] = _skipped_type(f"{key[0]}.{key[1]}")
    return self._skipped[key]

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
      raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")
    _, storage_type, key, _location, numel = pid
    if not isinstance(storage_type, _StorageType):
      name = getattr(storage_type, "qualname", repr(storage_type))
      raise pickle.UnpicklingError(f"storage {key!r} has the unsupported type {name}")
    untyped = storage_type.name == "UntypedStorage"
    return _StorageRef(str(key), int(numel) * storage_type.dtype.itemsize,
                       None if untyped else storage_type.dtype)


# ---------------------------------------------------------------------------------------------
# The archive

class _Checkpoint:
  """An open `torch.save` archive: the unpickled object (tensors as `_TensorRef`) and its zip."""

  def __init__(self, zf: zipfile.ZipFile, archive: str, source: str, byteorder: str, obj: Any):
    self.zf, self.archive, self.source, self.byteorder, self.obj = (zf, archive, source,
                                                                     byteorder, obj)

  def check_storage(self, name: str, ref: _TensorRef) -> str:
    """The storage's member name, after checking it exists and holds the tensor's bytes."""
    member = f"{self.archive}/data/{ref.storage.key}"
    try:
      size = self.zf.getinfo(member).file_size
    except KeyError:
      raise errors.WeightsError(f"{self.source}: tensor {name!r} needs the storage file "
                                f"{member}, which the archive lacks (an incomplete file)") from None
    if ref.end_bytes() > ref.storage.nbytes:
      raise errors.WeightsError(f"{self.source}: tensor {name!r} (offset {ref.offset}, shape "
                                f"{ref.shape}, stride {ref.stride}) extends past its storage of "
                                f"{ref.storage.nbytes} bytes")
    if size < ref.storage.nbytes:
      raise errors.WeightsError(f"{self.source}: the storage file {member} of tensor {name!r} "
                                f"holds {size} bytes, expected {ref.storage.nbytes} (a truncated "
                                "file)")
    return member

  def read_storage(self, name: str, ref: _TensorRef) -> bytes:
    member = self.check_storage(name, ref)
    try:
      with self.zf.open(member) as f:
        raw = f.read(ref.storage.nbytes)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
      raise errors.WeightsError(f"{self.source}: cannot read the storage file {member} of "
                                f"tensor {name!r}: {e}") from e
    if len(raw) < ref.storage.nbytes:
      raise errors.WeightsError(f"{self.source}: the storage file {member} of tensor {name!r} "
                                f"holds {len(raw)} bytes, expected {ref.storage.nbytes} (a "
                                "truncated file)")
    return raw

  def tensor(self, ref: _TensorRef, raw: bytes) -> np.ndarray:
    """The tensor as a C-contiguous native-byte-order array (a copy, not a view of `raw`)."""
    dtype = ref.dtype
    if 0 in ref.shape:
      return np.zeros(ref.shape, dtype)
    flat = np.frombuffer(raw, dtype, count=ref.storage.nbytes // dtype.itemsize)
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset:], shape=ref.shape, strides=[s * dtype.itemsize for s in ref.stride],
        writeable=False)
    out = np.array(view, dtype=dtype, order="C", copy=True)
    if self.byteorder != sys.byteorder and dtype.itemsize > 1:
      unit = dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize
      out.reshape(-1).view(f"u{unit}").byteswap(inplace=True)
    return out


def _not_zip_message(local: str, source: str) -> str:
  with open(local, "rb") as f:
    head = f.read(len(_LEGACY_MAGIC))
  if head.startswith(_LEGACY_MAGIC):
    return (f"{source} is in torch's legacy serialization format (torch < 1.6, or "
            "_use_new_zipfile_serialization=False), which is not read here; load it with torch "
            "and torch.save it again with a current torch (>= 1.6 writes the zip format)")
  if len(head) >= 9 and head[8:9] == b"{":
    return (f"{source} looks like a safetensors file, not a torch.save checkpoint; use it "
            "directly")
  found = "an empty file" if not head else "no zip directory (a truncated or other file)"
  return (f"{source} is not a torch.save checkpoint: expected the zip archive torch >= 1.6 "
          f"writes, found {found}")


@contextlib.contextmanager
def _open(path: str | os.PathLike) -> Iterator[_Checkpoint]:
  source = os.fspath(path)
  p = fileio.path(path)
  if not p.exists():
    raise errors.CheckpointError(f"torch checkpoint {source} does not exist; expected a file "
                                 "written by torch.save")
  if p.is_dir():
    raise errors.CheckpointError(f"torch checkpoint {source} is a directory; expected a file "
                                 "written by torch.save")
  with fileio.local_file(path) as local:
    local = os.fspath(local)
    if not zipfile.is_zipfile(local):
      raise errors.WeightsError(_not_zip_message(local, source))
    try:
      zf = zipfile.ZipFile(local)
    except (zipfile.BadZipFile, OSError) as e:
      raise errors.WeightsError(f"{source} is not a readable zip archive: {e}") from e
    with zf:
      pkls = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
      if len(pkls) != 1:
        raise errors.WeightsError(
            f"{source} is a zip archive without exactly one <archive>/data.pkl (found "
            f"{len(pkls)}): not a checkpoint written by torch.save")
      archive = pkls[0][:-len("/data.pkl")]
      byteorder = "little"  # torch < 2.1 wrote no byteorder record (little-endian machines)
      if f"{archive}/byteorder" in zf.namelist():
        byteorder = zf.read(f"{archive}/byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
          raise errors.WeightsError(f"{source}: {archive}/byteorder says {byteorder!r}, "
                                    "expected 'little' or 'big'")
      try:
        obj = _RestrictedUnpickler(io.BytesIO(zf.read(pkls[0]))).load()
      except Exception as e:  # corrupt pickles raise UnpicklingError, EOFError, TypeError, ...
        raise errors.WeightsError(f"{source}: cannot read {pkls[0]}: "
                                  f"{errors.one_line(e)}") from e
      yield _Checkpoint(zf, archive, source, byteorder, obj)


def _describe(value: Any) -> str:
  if isinstance(value, _Skipped):
    return f"a {value.qualname} object (not imported)"
  if isinstance(value, (type, _StorageType, _TorchDtype, _TensorClass)):
    return f"a global ({type(value).__name__})"
  name = type(value).__name__
  return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _select(ckpt: _Checkpoint, key: str | None, prefix: str, strip_prefix: bool
            ) -> dict[str, _TensorRef]:
  """The tensors of the selected dict (`obj[key]` if present, else `obj`) whose names start
  with `prefix` (stripped if `strip_prefix`); every error names the file."""
  obj, source = ckpt.obj, ckpt.source
  if not isinstance(obj, dict):
    raise errors.WeightsError(f"{source} holds {_describe(obj)}, expected a dict of tensors "
                              "(a state dict) or a checkpoint dict")
  note = ""
  if key and key in obj:
    selected, where = obj[key], f"{source}[{key!r}]"
    if not isinstance(selected, dict):
      raise errors.WeightsError(f"{where} is {_describe(selected)}, expected a dict of tensors")
  else:
    selected, where = obj, source
    if key:
      note = f" (the file has no {key!r} entry, so its top-level dict was read)"
  out = {}
  for name, value in selected.items():
    if not isinstance(name, str):
      raise errors.WeightsError(f"{where}: entry names must be strings, found {name!r:.60}")
    if not name.startswith(prefix):
      continue
    if not isinstance(value, _TensorRef):
      raise errors.WeightsError(f"{where}: entry {name!r} is {_describe(value)}, expected a "
                                f"tensor{note}")
    if value.dtype is None:
      raise errors.WeightsError(f"{where}: tensor {name!r} has the dtype {value.dtype_name}, "
                                "which numpy cannot hold")
    new = name[len(prefix):] if strip_prefix else name
    if not new:
      raise errors.WeightsError(f"{where}: entry {name!r} is the prefix itself; with "
                                "strip_prefix it would have an empty name")
    out[new] = value
  if not out:
    if prefix and selected:
      heads = sorted({str(n).split(".")[0] + "." for n in selected})
      shown = ", ".join(heads[:8]) + (", ..." if len(heads) > 8 else "")
      raise errors.WeightsError(f"{where}: no entry starts with the prefix {prefix!r} "
                                f"({len(selected)} entries, starting with {shown}){note}")
    raise errors.WeightsError(f"{where} holds no tensors, expected a state dict{note}")
  return out


def read_state_dict(path: str | os.PathLike, *, key: str | None = "state_dict",
                    prefix: str = "", strip_prefix: bool = True) -> dict[str, np.ndarray]:
  """The tensors of a `torch.save` file as numpy arrays (dtypes kept: fp32/fp16/fp64, bf16 as
  `ml_dtypes.bfloat16`, ints, bool), without torch and without arbitrary unpickling.

  Reads `ckpt[key]` when `key` is set and the file has it (a Lightning `.ckpt`: `state_dict`),
  else the top-level dict (`torch.save(model.state_dict())`); keeps the entries whose name starts
  with `prefix` (stripped when `strip_prefix`). Views come back as their own arrays (offset,
  size and stride honoured; a copy each, in native byte order). Raises `errors.CheckpointError`
  for a missing path and `errors.WeightsError` for a file that is not a torch zip checkpoint (the
  legacy format says so), lacks `data.pkl` or a storage, or whose selection is empty or holds a
  non-tensor entry.
  """
  with _open(path) as ckpt:
    refs = _select(ckpt, key, prefix, strip_prefix)
    for name, ref in refs.items():
      ckpt.check_storage(name, ref)  # every problem reported before any bytes are read
    uses = collections.Counter(ref.storage.key for ref in refs.values())
    raws: dict[str, bytes] = {}
    out = {}
    for name, ref in refs.items():
      k = ref.storage.key
      if k not in raws:
        raws[k] = ckpt.read_storage(name, ref)
      out[name] = ckpt.tensor(ref, raws[k])
      uses[k] -= 1
      if not uses[k]:
        del raws[k]  # a storage's bytes live only while a selected tensor still needs them
    return out


def list_entries(path: str | os.PathLike, *, key: str | None = "state_dict", prefix: str = "",
                 strip_prefix: bool = True) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """`{name: (shape, dtype)}` of what `read_state_dict` would return, without reading tensor
  bytes (the storage files are checked for presence and size only). Same selection and errors."""
  with _open(path) as ckpt:
    refs = _select(ckpt, key, prefix, strip_prefix)
    for name, ref in refs.items():
      ckpt.check_storage(name, ref)
    return {name: (ref.shape, ref.dtype) for name, ref in refs.items()}


# ---------------------------------------------------------------------------------------------
# safetensors

def export_safetensors(tensors: Mapping[str, np.ndarray], out_path: str | os.PathLike,
                       metadata: Mapping[str, str] | None = None) -> fileio.OutPath:
  """Writes `tensors` to one `.safetensors` file (safetensors' numpy API, dtypes kept) through a
  temporary name that is renamed when complete and removed on failure, so a failed export leaves
  no file (and an existing `out_path` unchanged). Local or `gs://`. Returns the path written."""
  from safetensors import numpy as st_numpy
  arrays = {}
  for name, value in tensors.items():
    if not isinstance(name, str) or not isinstance(value, (np.ndarray, np.generic)):
      raise errors.WeightsError(f"export to {os.fspath(out_path)}: expected str names and numpy "
                                f"arrays, found {name!r:.60}: {type(value).__name__}")
    value = np.asarray(value)
    if value.dtype not in _SAFETENSORS_DTYPES:
      raise errors.WeightsError(f"export to {os.fspath(out_path)}: tensor {name!r} has the dtype "
                                f"{value.dtype}, which safetensors cannot hold")
    # ascontiguousarray makes 0-d arrays 1-d; the reshape keeps scalars 0-d.
    arrays[name] = np.ascontiguousarray(value).reshape(value.shape)
  meta = None
  if metadata:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
      raise errors.WeightsError(f"export to {os.fspath(out_path)}: safetensors metadata must map "
                                f"str to str, got {dict(metadata)!r:.200}")
    meta = dict(metadata)
  with fileio.staged_output(out_path) as tmp:
    st_numpy.save_file(arrays, os.fspath(tmp), metadata=meta)
  return fileio.native(out_path)


# ---------------------------------------------------------------------------------------------
# The command's flags and main

def define_torch_checkpoint_flags() -> None:
  """The command's flags (see `main`)."""
  from absl import flags
  flags.DEFINE_string("ckpt", None, "a file written by torch.save (e.g. a Lightning .ckpt)")
  flags.DEFINE_string("key", "state_dict", "the entry holding the weights; a file without it "
                      "is read at its top level ('' reads the top level always)")
  flags.DEFINE_string("prefix", "", "keep only the entries whose name starts with this (e.g. "
                      "lrm_generator.)")
  flags.DEFINE_bool("strip_prefix", True, "remove --prefix from the written names")
  flags.DEFINE_string("out", None, "the .safetensors file to write")
  flags.DEFINE_bool("list", False, "print name, shape and dtype of the selected entries and "
                    "write nothing")
  flags.DEFINE_bool("overwrite", False, "replace an existing --out")


def main(argv: Sequence[str]) -> None:
  """A `torch.save` checkpoint → one `.safetensors` file (or, with `--list`, its entries)."""
  from absl import app, flags
  from instant3d_jax import cli
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {list(argv[1:])}")
  FLAGS = flags.FLAGS
  if not FLAGS.ckpt:
    raise errors.ConfigError("--ckpt is required")
  cli.check_path("ckpt", FLAGS.ckpt, kind="file", what="a file written by torch.save")
  select = dict(key=FLAGS.key or None, prefix=FLAGS.prefix, strip_prefix=FLAGS.strip_prefix)
  if FLAGS.list:
    if FLAGS.out:
      raise errors.ConfigError("--list writes nothing; leave out --out")
    entries = list_entries(FLAGS.ckpt, **select)
    for name, (shape, dtype) in entries.items():
      print(f"{name}\t{list(shape)}\t{dtype}")
    n = sum(int(np.prod(shape)) for shape, _ in entries.values())
    print(f"{len(entries)} tensors, {n} parameters")
    return
  if not FLAGS.out or not fileio.path(FLAGS.out).name.endswith(".safetensors"):
    raise errors.ConfigError(f"--out must name a .safetensors file, got {FLAGS.out!r}")
  if fileio.path(FLAGS.out).exists() and not FLAGS.overwrite:
    raise errors.ConfigError(f"--out {FLAGS.out} already exists; choose another path or pass "
                             "--overwrite")
  tensors = read_state_dict(FLAGS.ckpt, **select)
  meta = {"format": "pt", "source": fileio.path(FLAGS.ckpt).name, "prefix": FLAGS.prefix}
  out = export_safetensors(tensors, FLAGS.out, meta)
  n = sum(int(v.size) for v in tensors.values())
  print(f"wrote {out}: {len(tensors)} tensors, {n} parameters")
