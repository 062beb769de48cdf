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


@pytest.fixture
def fake_gcs(monkeypatch):
  """Registers the fake for `gs://` and `gcs://`, empties it, yields the filesystem."""
  monkeypatch.setenv("EPATH_USE_TF", "false")
  for proto in FakeGCSFileSystem.protocol:
    fsspec.register_implementation(proto, FakeGCSFileSystem, clobber=True)
  FakeGCSFileSystem.store.clear()
  FakeGCSFileSystem.pseudo_dirs[:] = [""]
  fs = fsspec.filesystem("gs")
  assert isinstance(fs, FakeGCSFileSystem)
  yield fs
  FakeGCSFileSystem.store.clear()
  FakeGCSFileSystem.pseudo_dirs[:] = [""]
