"""A TFDS builder over the record format, so `tfds.data_source(...)` serves the same data.

  from data_pipeline import tfds_builder
  tfds_builder.prepare(source_dir="outputs/demo/data", data_dir="outputs/demo/tfds")
  ds = tfds.data_source("instant3d_multiview", data_dir="outputs/demo/tfds")  # importing this
  ds["train"][0]["rig_images"]   # [4, H, W, 4] uint8 RGBA (module registers the builder)

Works without TensorFlow (verified with tensorflow-datasets 4.9.10): the builder writes
`file_format="array_record"` and the images are handed over as already-encoded PNG bytes (fed
numpy arrays, `tfds.features.Image` needs TensorFlow to encode; `tfds.load` needs tf.data).
Reading through `tfds.data_source` decodes PNGs with PIL. Training itself reads the original
shards through grain (`data_pipeline/lrm_input.py`); this builder is for interoperability with
TFDS-based tooling.

Features per object: object_id, caption, split (text), index (int64) and for each view group g of
`records.GROUPS`: `g_images` (sequence of RGBA PNG images), `g_c2w` float32 [V, 4, 4] and `g_K`
float32 [V, 3, 3] (V = 0 for groups the object does not have).
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_pipeline import records

NAME = "instant3d_multiview"


class Instant3dMultiview(tfds.core.GeneratorBasedBuilder):
  """Multi-view renders (procedural world or imported) of `data_pipeline/records.py`."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Record schema version 1."}

  # TFDS locates a builder's code through `importlib_resources` (an optional package, not
  # installed here) whenever the builder lives in a package module; the path is only used to look
  # for a checksums file next to the code, so point it at this file directly.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    return epath.Path(__file__)

  def __init__(self, *, source_dir: str | None = None, **kwargs):
    # `source_dir` (a records data set) is only needed to prepare; reading needs `data_dir`.
    self._source_dir = source_dir
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    feats = {"object_id": tfds.features.Text(), "caption": tfds.features.Text(),
             "split": tfds.features.Text(), "index": tfds.features.Scalar(dtype=np.int64)}
    for g in records.GROUPS:
      feats[f"{g}_images"] = tfds.features.Sequence(
          tfds.features.Image(shape=(None, None, 4), encoding_format="png"))
      feats[f"{g}_c2w"] = tfds.features.Tensor(shape=(None, 4, 4), dtype=np.float32)
      feats[f"{g}_K"] = tfds.features.Tensor(shape=(None, 3, 3), dtype=np.float32)
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(feats),
                                 description=__doc__)

  def _split_generators(self, dl_manager):
    if self._source_dir is None:
      raise ValueError(f"{NAME}: preparing needs source_dir= (a data set written by "
                       "data_pipeline.synthetic or data_pipeline.importer)")
    meta = records.read_metadata(self._source_dir)
    return {s: self._generate_examples(s) for s, info in meta["splits"].items()
            if info["num_objects"] > 0}

  def _generate_examples(self, split: str):
    source = records.RecordSource(self._source_dir, split)
    for rec in source:
      ex = {"object_id": rec["object_id"], "caption": rec["caption"], "split": rec["split"],
            "index": int(rec["index"])}
      for g in records.GROUPS:
        grp = rec["groups"].get(g)
        ex[f"{g}_images"] = list(grp["images"]) if grp else []  # PNG bytes, passed through
        ex[f"{g}_c2w"] = grp["c2w"] if grp else np.zeros((0, 4, 4), np.float32)
        ex[f"{g}_K"] = grp["K"] if grp else np.zeros((0, 3, 3), np.float32)
      yield rec["object_id"], ex


def prepare(source_dir: str, data_dir: str) -> Instant3dMultiview:
  """Converts a records data set into a prepared TFDS data set under `data_dir`."""
  builder = Instant3dMultiview(source_dir=source_dir, data_dir=data_dir,
                               file_format="array_record")
  builder.download_and_prepare()
  return builder
