"""Weight-file helpers: folder discovery, variants, sharded indexes, errors that name the file."""
import json

import numpy as np
import pytest

from instant3d_jax.convert import safetensors_io as io


def test_round_trip_and_variant_fallback(tmp_path):
  t = {"a.weight": np.arange(6, dtype=np.float16).reshape(2, 3), "b": np.ones(2, np.float32)}
  io.write_safetensors(tmp_path / "model.fp16.safetensors", t)
  got = io.read_folder_weights(tmp_path, dtype=None)
  assert got["a.weight"].dtype == np.float16
  np.testing.assert_array_equal(got["a.weight"], t["a.weight"])
  assert io.read_folder_weights(tmp_path)["a.weight"].dtype == np.float32
  assert not list(tmp_path.glob("*.tmp"))


def test_sharded_index(tmp_path):
  io.write_safetensors(tmp_path / "s1.safetensors", {"x": np.zeros(2, np.float32)})
  io.write_safetensors(tmp_path / "s2.safetensors", {"y": np.ones(3, np.float32)})
  (tmp_path / "diffusion_pytorch_model.safetensors.index.json").write_text(
      json.dumps({"weight_map": {"x": "s1.safetensors", "y": "s2.safetensors"}}))
  assert sorted(io.read_folder_weights(tmp_path)) == ["x", "y"]
  (tmp_path / "s2.safetensors").unlink()
  with pytest.raises(io.WeightsError, match="shards that do not exist.*s2.safetensors"):
    io.read_folder_weights(tmp_path)


def test_errors_name_the_file(tmp_path):
  with pytest.raises(io.WeightsError, match="no safetensors weights in .*found \\['notes.txt'\\]"):
    (tmp_path / "notes.txt").write_text("hi")
    io.find_weights(tmp_path)
  bad = tmp_path / "model.safetensors"
  bad.write_bytes(b"\x10\x00garbage")
  with pytest.raises(io.WeightsError, match="model.safetensors is not a readable safetensors"):
    io.read_folder_weights(tmp_path)
  with pytest.raises(io.WeightsError, match="config.json does not exist"):
    io.read_config(tmp_path)


def test_check_tree_shapes_lists_every_mismatch():
  exp = {"enc": {"w": np.zeros((2, 3)), "b": np.zeros(3)}, "head": np.zeros(4)}
  got = {"enc": {"w": np.zeros((3, 3)), "b": np.zeros(3)}, "extra": np.zeros(1)}
  with pytest.raises(io.WeightsError) as e:
    io.check_tree_shapes(exp, got, "ckpt.safetensors")
  msg = str(e.value)
  assert "3 problems" in msg and "missing head" in msg and "unexpected extra" in msg
  assert "enc/w: config expects (2, 3), checkpoint has (3, 3)" in msg
  io.check_tree_shapes(exp, exp, "same")  # no error


def test_take_names_source_and_key():
  with pytest.raises(io.WeightsError, match="unet.safetensors: missing key 'conv_in.weight'"):
    io.take({}, "conv_in.weight", "unet.safetensors")
  with pytest.raises(io.WeightsError, match="has shape \\(2,\\), expected \\(3,\\)"):
    io.take({"k": np.zeros(2)}, "k", "f", shape=(3,))


def test_flatten_unflatten_round_trip():
  from flax.core import FrozenDict
  tree = {"enc": FrozenDict({"layer_0": {"kernel": np.zeros((2, 3)), "bias": np.ones(3)}}),
          "tokens": np.arange(4), "empty": {}}
  flat = io.flatten(tree)
  assert sorted(flat) == ["enc/layer_0/bias", "enc/layer_0/kernel", "tokens"]
  assert sorted(io.flatten(tree, ".")) == ["enc.layer_0.bias", "enc.layer_0.kernel", "tokens"]
  back = io.unflatten(flat)
  assert sorted(back) == ["enc", "tokens"] and isinstance(back["enc"]["layer_0"], dict)
  np.testing.assert_array_equal(back["enc"]["layer_0"]["bias"], np.ones(3))
