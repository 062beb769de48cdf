"""Curation (data_pipeline/clip_svm.py, its command data_pipeline/curation.py): CLIP features →
linear SVM → object list."""
import os

import numpy as np
import pytest

from instant3d_jax.configs import data as data_config
from data_pipeline import captions as CAP
from data_pipeline import clip_svm as CU
from data_pipeline import mv_grids as G
from data_pipeline import procedural, records
from tests import tiny_configs


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  cfg = data_config.get_config("tiny")
  cfg.eval_rig_splits = ()
  cfg.num_sup_views = 0
  out = str(tmp_path_factory.mktemp("curation") / "data")
  procedural.generate(cfg, out, progress=False)
  return out


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
  """A tiny random CLIP vision tower with a projection, saved in the transformers layout."""
  import jax
  import jax.numpy as jnp
  import flax.linen as nn
  from instant3d_jax.convert import clip as convert_clip
  from instant3d_jax.models import clip
  config = clip.CLIPVisionConfig(**tiny_configs.CLIP_VISION_TINY, projection_dim=8)
  x = jnp.zeros((1, config.image_size, config.image_size, 3))
  params = nn.unbox(clip.CLIPVisionModel(config).init(jax.random.PRNGKey(0), x))["params"]
  folder = tmp_path_factory.mktemp("clip_vision")
  convert_clip.save_clip_vision(folder, config, params)
  return str(folder)


def test_svm_separates_a_separable_feature_set():
  rng = np.random.default_rng(0)
  d = 8
  direction = rng.normal(size=d)
  direction /= np.linalg.norm(direction)

  def sample(n):
    y = rng.integers(0, 2, size=n)
    x = rng.normal(size=(n, d))
    x -= np.outer(x @ direction, direction)  # no component along the direction …
    x += np.outer(np.where(y == 1, 1.0, -1.0) * rng.uniform(0.5, 2.0, n), direction)  # … but ±margin
    return x.astype(np.float32), y

  x_train, y_train = sample(60)
  x_test, y_test = sample(400)
  svm = CU.train_svm(x_train, y_train, steps=300)
  margins = np.where(y_train == 1, 1.0, -1.0) * svm.score(x_train)
  assert np.mean(margins > 0) == 1.0 and np.mean(np.maximum(0, 1 - margins)) < 0.05  # hinge ≈ 0
  assert np.mean((svm.score(x_test) > 0) == (y_test == 1)) >= 0.98
  # The learnt normal points along the separating direction.
  w = svm.w / svm.std
  assert w @ direction / np.linalg.norm(w) > 0.95
  with pytest.raises(records.DataError, match="need both classes"):
    CU.train_svm(x_train, np.ones(60, int))


def test_labels_file_errors(tmp_path):
  p = tmp_path / "labels.txt"
  p.write_text("# comment\nobj000001 1\nobj000002,0  # trailing\n\n")
  assert CU.read_labels(str(p)) == {"obj000001": 1, "obj000002": 0}
  p.write_text("obj000001 1\nobj000002 yes\n")
  with pytest.raises(records.DataError, match=r"labels.txt:2: expected 'object_id label'"):
    CU.read_labels(str(p))
  p.write_text("obj000001 1\nobj000001 0\n")
  with pytest.raises(records.DataError, match="labelled both 0 and 1"):
    CU.read_labels(str(p))


def test_curation_end_to_end_on_the_procedural_world(world, clip_folder, tmp_path):
  """Tiny random tower + the synthetic label "contains red" → an object list the loader takes."""
  embed = CU.load_clip_vision_features(clip_folder, batch_views=16)
  table = [row for s in ("train", "val", "test") for row in G.object_table(world, s)]
  labels = {oid: int("red" in CAP.caption_colours(cap)) for _, oid, cap in table}
  assert set(labels.values()) == {0, 1}
  ids, feats = CU.object_features(world, "train", embed)
  assert feats.shape == (6, 8) and np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
  assert ids == [oid for _, oid, _ in G.object_table(world, "train")]
  out = str(tmp_path / "objects.txt")
  res = CU.curate(world, embed, labels, out, splits=("train", "val", "test"), steps=200)
  assert len(res["scores"]) == 12
  kept = G.read_object_list(out)
  assert kept == res["kept"] == [o for o, s in res["scores"].items() if s > 0]
  assert os.path.exists(out + ".scores.tsv")
  # Every object is labelled here; the 8-D features of the random tower separate them, so the
  # list is exactly the red objects.
  assert res["train_accuracy"] == 1.0
  assert kept == sorted(o for o, y in labels.items() if y == 1) and kept
  train_kept = [int(o[3:]) for o in kept if int(o[3:]) < 6]  # train = objects 0-5
  got = [int(b["object_id"][0]) for b in G.make_grid_loader(
      world, "train", batch_size=1, seed=0, shuffle=False, num_epochs=1, object_list=out,
      process_index=0, process_count=1)]
  assert got == train_kept and got
  with pytest.raises(records.DataError, match="already exists; pass --overwrite"):
    CU.curate(world, embed, labels, out, splits=("train",))
  with pytest.raises(records.DataError, match=r"labels name 6 object\(s\) not in splits"):
    CU.curate(world, embed, labels, str(tmp_path / "other.txt"), splits=("train",))
