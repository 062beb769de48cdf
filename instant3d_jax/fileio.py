"""Local or bucket (`gs://…`) paths: the project's own file I/O goes through this module.

Workdirs, output folders and checkpoints may be local paths or cloud URIs (`launch/tpu_pod.sh`
puts the workdir on `gs://`). `pathlib` cannot hold a URI (`Path('gs://b/x').absolute()` is a
local folder named `gs:`), so every path the project reads or writes is an `etils.epath.Path`:
local paths go to the OS, `gs://` to fsspec (gcsfs; `pip install 'instant3d-jax[gcs]'`), or to
`tf.io.gfile` when TensorFlow is installed (etils' choice, `EPATH_USE_TF=0` turns it off).

Rules the writers follow:
  * orbax and the TensorBoard writer are handed the URI string unchanged (`for_orbax`); a local
    relative path becomes absolute for orbax, whose OCDBT reader rejects relative paths;
  * a file appears complete or not at all: locally a temporary name then `os.replace`; on a
    bucket an object upload is already all-or-nothing, so the object is written directly;
  * libraries that only write local files (ffmpeg, trimesh, json writers of other modules) write
    into a local temporary file that is then moved or uploaded (`staged_output`);
  * no directories are created on a bucket (object stores have none; creating "folders" needs
    bucket-level permissions a training job may not hold).
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import tempfile
from typing import Iterator, Union

from etils import epath

PathLike = Union[str, os.PathLike]
# What writers return (`native`): `pathlib.Path` for a local file, `epath.Path` for a URI.
OutPath = Union[pathlib.Path, epath.Path]

_COPY_CHUNK = 8 << 20


def path(p: PathLike) -> epath.Path:
  """`p` as an `epath.Path` (a URI stays a URI; nothing is made absolute)."""
  return epath.Path(p)


def native(p: PathLike) -> OutPath:
  """What writers return: a local path as `pathlib.Path` (which every third-party reader
  accepts; some, e.g. imageio, reject other path types), a URI as `epath.Path`."""
  return path(p) if is_remote(p) else pathlib.Path(os.fspath(p))


def is_remote(p: PathLike) -> bool:
  """True for a URI such as `gs://bucket/x` (anything with a `scheme://`)."""
  return "://" in os.fspath(p)


def for_orbax(p: PathLike) -> str:
  """The string to hand orbax (and other libraries with their own cloud support): a URI
  unchanged, a local path absolute (orbax's OCDBT reader rejects relative paths and reports it
  only as missing metadata)."""
  s = os.fspath(p)
  return s if is_remote(s) else str(pathlib.Path(s).absolute())


def display(p: PathLike) -> str:
  """A path as it should be recorded (run.json, logs): URIs unchanged, local paths resolved."""
  s = os.fspath(p)
  return s if is_remote(s) else str(pathlib.Path(s).resolve())


def makedirs(p: PathLike) -> OutPath:
  """Creates a local directory (and parents); a no-op on a bucket (see module docstring)."""
  p = native(p)
  if not is_remote(p):
    p.mkdir(parents=True, exist_ok=True)
  return p


@contextlib.contextmanager
def _replaced_locally(p: pathlib.Path) -> Iterator[pathlib.Path]:
  """Yields `p`'s temporary sibling; when the block succeeds it replaces `p` in one rename, when
  it fails it is removed (a local `p` appears complete or not at all)."""
  makedirs(p.parent)
  tmp = p.with_name(p.name + ".tmp")
  try:
    yield tmp
    os.replace(tmp, p)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def write_bytes(p: PathLike, data: bytes) -> OutPath:
  """Writes `data` to `p` all-or-nothing (local: temp name, then rename; bucket: one upload)."""
  p = native(p)
  if is_remote(p):
    p.write_bytes(data)
    return p
  with _replaced_locally(p) as tmp:
    tmp.write_bytes(data)
  return p


def write_text(p: PathLike, text: str) -> OutPath:
  """`write_bytes` of UTF-8 text."""
  return write_bytes(p, text.encode("utf-8"))


def copy_file(src: PathLike, dst: PathLike) -> OutPath:
  """Streams one file from `src` to `dst` (either may be local or remote); `dst` appears
  complete or not at all (local: temp name, then rename)."""
  src, dst = path(src), native(dst)
  if is_remote(dst):
    with src.open("rb") as fin, dst.open("wb") as fout:
      shutil.copyfileobj(fin, fout, _COPY_CHUNK)
    return dst
  with _replaced_locally(dst) as tmp, src.open("rb") as fin, open(tmp, "wb") as fout:
    shutil.copyfileobj(fin, fout, _COPY_CHUNK)
  return dst


@contextlib.contextmanager
def staged_output(p: PathLike) -> Iterator[pathlib.Path]:
  """Yields a local file name for a writer that only writes local files; when the block ends
  without an exception the file becomes `p` (local: renamed; remote: uploaded). The temporary
  name keeps `p`'s suffix (ffmpeg, imageio and trimesh pick the format from it)."""
  p = path(p)
  if not is_remote(p):
    makedirs(p.parent)
    tmp = pathlib.Path(os.fspath(p.with_name(p.name + ".tmp" + p.suffix)))
    try:
      yield tmp
      os.replace(tmp, p)
    finally:
      with contextlib.suppress(OSError):
        os.remove(tmp)
    return
  with tempfile.TemporaryDirectory(prefix="instant3d_stage_") as d:
    tmp = pathlib.Path(d) / p.name
    yield tmp
    copy_file(tmp, p)


@contextlib.contextmanager
def local_file(p: PathLike) -> Iterator[pathlib.Path]:
  """Yields a local path holding `p`'s content: `p` itself when local, else a temporary download
  (for readers that only open local files, e.g. safetensors' memory map)."""
  if not is_remote(p):
    yield pathlib.Path(os.fspath(p))
    return
  p = path(p)
  with tempfile.TemporaryDirectory(prefix="instant3d_fetch_") as d:
    tmp = pathlib.Path(d) / p.name
    copy_file(p, tmp)
    yield tmp


__all__ = ["OutPath", "path", "native", "is_remote", "for_orbax", "display", "makedirs", "write_bytes", "write_text",
           "copy_file", "staged_output", "local_file"]
