"""A fake `gs://` for tests: fsspec's in-memory filesystem registered under the `gs`/`gcs`
protocols, so `etils.epath.Path('gs://bucket/x')` reads and writes memory (no gcsfs, no network).

etils routes `gs://` to fsspec (`fsspec.filesystem('gcs')`) unless TensorFlow is installed, in
which case it prefers `tf.io.gfile`; the fixture sets `EPATH_USE_TF=false` so the fake is used
either way. Like gcsfs, paths are stored without the protocol as `bucket/key`, and objects cannot
be opened for appending (gcsfs supports only 'rb' and 'wb'), so code that would append to a
bucket object fails here as it would on GCS.

    def test_x(fake_gcs):          # the fixture (import it into the test module)
      ...write to "gs://bucket/run"...
      assert fake_gcs.exists("gs://bucket/run/config.json")
"""
from __future__ import annotations

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.utils import stringify_path


class FakeGCSFileSystem(MemoryFileSystem):
  """In-memory stand-in for gcsfs' `GCSFileSystem` (own store, `bucket/key` paths)."""

  protocol = ("gs", "gcs")
  root_marker = ""
  store: dict = {}        # not shared with the plain `memory://` filesystem
  pseudo_dirs = [""]

  @classmethod
  def _strip_protocol(cls, path):
    path = stringify_path(path)
    for prefix in ("gs://", "gcs://"):
      if path.startswith(prefix):
        path = path[len(prefix):]
    return path.strip("/")

  def _open(self, path, mode="rb", **kwargs):
    if "a" in mode:
      raise NotImplementedError(f"fake gs://: objects cannot be appended to (mode {mode!r}; "
                                "gcsfs supports 'rb' and 'wb')")
    return super()._open(path, mode=mode, **kwargs)

  def files(self) -> list[str]:
    """Every object as `gs://bucket/key`, sorted."""
    return sorted("gs://" + k for k in self.store)


def _forget_epath_filesystems() -> None:
  """etils keeps the filesystem it first got per protocol (an `lru_cache`): forget it, so the
  backend registered now (the fake or the emulator) is the one used."""
  from etils.epath import backend  # pylint: disable=g-import-not-at-top
  backend._FileSystemSpecBackend._get_filesystem.cache_clear()  # pylint: disable=protected-access


@pytest.fixture
def fake_gcs(monkeypatch):
  """Registers the fake for `gs://` and `gcs://`, empties it, yields the filesystem."""
  monkeypatch.setenv("EPATH_USE_TF", "false")
  _forget_epath_filesystems()
  for proto in FakeGCSFileSystem.protocol:
    fsspec.register_implementation(proto, FakeGCSFileSystem, clobber=True)
  FakeGCSFileSystem.store.clear()
  FakeGCSFileSystem.pseudo_dirs[:] = [""]
  fs = fsspec.filesystem("gs")
  assert isinstance(fs, FakeGCSFileSystem)
  yield fs
  _forget_epath_filesystems()
  FakeGCSFileSystem.store.clear()
  FakeGCSFileSystem.pseudo_dirs[:] = [""]


# ------------------------------------------------------------------------------------------------
# A GCS emulator on 127.0.0.1, for code that reaches `gs://` with Google's own clients.
#
# ArrayRecord (the data sets' shard reader, `data_pipeline/records.py`) opens `gs://` objects with
# its native GCS client (riegeli's GcsReader, google-cloud-cpp), which cannot see the in-memory
# fake above. google-cloud-cpp sends every request to `CLOUD_STORAGE_EMULATOR_ENDPOINT` when it is
# set (no credentials needed), so the `gcs_emulator` fixture starts `gcp-storage-emulator`
# (requirements-dev.txt) as a subprocess on 127.0.0.1 at a free port, in memory, with one bucket,
# sets that variable, and registers `EmulatorGCSFileSystem` for fsspec's `gs`/`gcs` protocols:
# the project's own I/O (etils.epath → fsspec, as gcsfs would be) and ArrayRecord's reader then
# see one and the same bucket. Nothing leaves 127.0.0.1.

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from fsspec.spec import AbstractFileSystem

EMULATOR_BUCKET = "bkt"
ENDPOINT_VARS = ("CLOUD_STORAGE_EMULATOR_ENDPOINT", "STORAGE_EMULATOR_HOST")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy


def _http(method: str, url: str, data: bytes | None = None) -> bytes:
  req = urllib.request.Request(url, data=data, method=method,
                               headers={"Content-Type": "application/octet-stream"})
  try:
    with _OPENER.open(req, timeout=60) as r:
      return r.read()
  except urllib.error.HTTPError as e:
    if e.code == 404:
      raise FileNotFoundError(url) from None
    raise OSError(f"{method} {url}: HTTP {e.code} {e.read()[:300]!r}") from None


class _Upload(io.BytesIO):
  """A write handle: the object is uploaded in one request when the handle is closed without an
  exception (all-or-nothing, as a GCS object upload)."""

  def __init__(self, fs, path):
    super().__init__()
    self._fs, self._path = fs, path

  def __exit__(self, exc_type, *rest):
    if exc_type is not None:
      self._path = None      # failed block: nothing is uploaded
    return super().__exit__(exc_type, *rest)

  def close(self):
    if not self.closed and self._path is not None:
      self._fs.pipe_file(self._path, self.getvalue())
    super().close()


class EmulatorGCSFileSystem(AbstractFileSystem):
  """A minimal fsspec filesystem over the emulator's JSON API (`bucket/key` paths, as gcsfs)."""

  protocol = ("gs", "gcs")
  root_marker = ""
  cachable = False
  endpoint = ""            # set by `register_emulator`

  @classmethod
  def _strip_protocol(cls, path):
    return FakeGCSFileSystem._strip_protocol(path)

  def _url(self, bucket, key="", *, media=False):
    q = urllib.parse.quote(key, safe="")
    return f"{self.endpoint}/storage/v1/b/{bucket}/o" + (f"/{q}" if key else "") + \
        ("?alt=media" if media else "")

  def _list(self, bucket, prefix, delimiter="/"):
    query = urllib.parse.urlencode({"prefix": prefix, **({"delimiter": delimiter} if delimiter
                                                          else {})})
    out = json.loads(_http("GET", f"{self.endpoint}/storage/v1/b/{bucket}/o?{query}"))
    return out.get("items") or [], out.get("prefixes") or []

  def ls(self, path, detail=True, **kwargs):
    path = self._strip_protocol(path)
    bucket, _, key = path.partition("/")
    items, prefixes = self._list(bucket, key + "/" if key else "")
    entries = [{"name": f"{bucket}/{it['name']}", "size": int(it["size"]), "type": "file"}
               for it in items]
    entries += [{"name": f"{bucket}/{p.rstrip('/')}", "size": 0, "type": "directory"}
                for p in prefixes]
    if not entries:
      info = self.info(path)          # FileNotFoundError when nothing is there
      entries = [info] if info["type"] == "file" else []
    entries.sort(key=lambda e: e["name"])
    return entries if detail else [e["name"] for e in entries]

  def info(self, path, **kwargs):
    path = self._strip_protocol(path)
    bucket, _, key = path.partition("/")
    if not key:
      _http("GET", f"{self.endpoint}/storage/v1/b/{bucket}")
      return {"name": bucket, "size": 0, "type": "directory"}
    try:
      it = json.loads(_http("GET", self._url(bucket, key)))
      return {"name": path, "size": int(it["size"]), "type": "file"}
    except FileNotFoundError:
      items, prefixes = self._list(bucket, key + "/", delimiter=None)
      if items or prefixes:
        return {"name": path, "size": 0, "type": "directory"}
      raise FileNotFoundError(path) from None

  def cat_file(self, path, start=None, end=None, **kwargs):
    bucket, _, key = self._strip_protocol(path).partition("/")
    return _http("GET", self._url(bucket, key, media=True))[start:end]

  def pipe_file(self, path, value, **kwargs):
    bucket, _, key = self._strip_protocol(path).partition("/")
    name = urllib.parse.quote(key, safe="")
    _http("POST", f"{self.endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}",
          bytes(value))

  def _open(self, path, mode="rb", **kwargs):
    if mode == "rb":
      return io.BytesIO(self.cat_file(path))
    if mode == "wb":
      return _Upload(self, path)
    raise NotImplementedError(f"emulator gs://: mode {mode!r} (gcsfs supports 'rb' and 'wb')")

  def rm_file(self, path):
    bucket, _, key = self._strip_protocol(path).partition("/")
    _http("DELETE", self._url(bucket, key))

  def _rm(self, path):
    self.rm_file(path)

  def rm(self, path, recursive=False, maxdepth=None):
    for p in self.expand_path(path, recursive=recursive, maxdepth=maxdepth):
      if self.isfile(p):
        self.rm_file(p)

  def mkdir(self, path, create_parents=True, **kwargs):
    pass                              # object stores have no directories

  def makedirs(self, path, exist_ok=False):
    pass

  def files(self) -> list[str]:
    """Every object of the emulator's bucket as `gs://bucket/key`, sorted."""
    items, _ = self._list(EMULATOR_BUCKET, "", delimiter=None)
    return sorted(f"gs://{EMULATOR_BUCKET}/{it['name']}" for it in items)


def register_emulator(endpoint: str) -> EmulatorGCSFileSystem:
  """Points fsspec's `gs`/`gcs` and Google's native clients at the emulator at `endpoint`
  (also for subprocesses started afterwards: the environment variables are inherited; a
  subprocess registers the fsspec side itself with `bootstrap_code`)."""
  os.environ["EPATH_USE_TF"] = "false"
  for var in ENDPOINT_VARS:
    os.environ[var] = endpoint
  EmulatorGCSFileSystem.endpoint = endpoint
  for proto in EmulatorGCSFileSystem.protocol:
    fsspec.register_implementation(proto, EmulatorGCSFileSystem, clobber=True)
  _forget_epath_filesystems()
  return EmulatorGCSFileSystem()


def bootstrap_code(module: str, argv: list[str]) -> str:
  """`python -c` code that registers the emulator (from the inherited environment) and runs
  `python -m module argv…` (a command run as a subprocess against the emulator)."""
  return ("import os, runpy, sys; from tests import fake_gcs; "
          "fake_gcs.register_emulator(os.environ['CLOUD_STORAGE_EMULATOR_ENDPOINT']); "
          f"sys.argv = {[module] + list(argv)!r}; "
          f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def gcs_emulator():
  """Starts the emulator (skips the test when `gcp-storage-emulator` is not installed), registers
  it (`register_emulator`), yields its filesystem; afterwards stops it and restores the
  environment and fsspec's registry."""
  pytest.importorskip("gcp_storage_emulator")
  port = _free_port()
  endpoint = f"http://127.0.0.1:{port}"
  proc = subprocess.Popen([sys.executable, "-m", "gcp_storage_emulator", "start", "--host",
                           "127.0.0.1", "--port", str(port), "--in-memory", "--default-bucket",
                           EMULATOR_BUCKET, "-q"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
  saved = {v: os.environ.get(v) for v in ENDPOINT_VARS + ("EPATH_USE_TF",)}
  try:
    deadline = time.monotonic() + 30
    while True:
      try:
        _http("GET", f"{endpoint}/storage/v1/b/{EMULATOR_BUCKET}")
        break
      except (OSError, FileNotFoundError):
        if proc.poll() is not None or time.monotonic() > deadline:
          raise RuntimeError(f"GCS emulator did not start: {proc.stderr.read()[-2000:]!r}")
        time.sleep(0.1)
    yield register_emulator(endpoint)
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
    for var, val in saved.items():
      if val is None:
        os.environ.pop(var, None)
      else:
        os.environ[var] = val
    registry = sys.modules["fsspec.registry"]._registry   # as the fake: registered by hand
    for proto in EmulatorGCSFileSystem.protocol:
      registry.pop(proto, None)
    _forget_epath_filesystems()
