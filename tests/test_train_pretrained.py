"""`model.encoder.pretrained` in training: a transformers ViT folder initialises the encoder when
a run starts (step 0), through the loop's host-side `Task.initial_params` hook; the folder is not
part of what a resume must match."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from instant3d_jax import errors


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory):
  """A 1-block transformers ViTModel (hidden 32, patch 8, 32² pre-training size) with every
  weight perturbed, saved with `save_pretrained`."""
  torch = pytest.importorskip("torch")
  import transformers
  torch.manual_seed(0)
  model = transformers.ViTModel(transformers.ViTConfig(
      hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
      image_size=32, patch_size=8), add_pooling_layer=False).eval()
  g = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn(p.shape, generator=g))
  folder = tmp_path_factory.mktemp("vit")
  model.save_pretrained(folder)
  return folder, model


def pretrained_config(data_dir, folder):
  from instant3d_jax.configs import data, lrm
  c = lrm.get_config("tiny")
  c.data = data.get_config("tiny")
  c.data.source = "procedural"
  c.data_dir = str(data_dir)
  m = c.model
  m.input_resolution = 32
  e = m.encoder
  e.pretrained = str(folder)
  e.update(model_type="vit", hidden_size=32, num_layers=1, num_heads=4, mlp_dim=64, patch_size=8,
           image_size=32, layer_norm_eps=1e-12)
  m.camera_embed_dim = 32
  m.decoder.update(num_layers=1, hidden_size=32, num_heads=4)
  m.triplane.update(token_resolution=4, channels=8)
  m.render.update(num_samples=8, num_importance=8)
  c.loss.rays_per_view = 16
  c.data.loader.num_targets = 1
  c.train.update(total_steps=0, global_batch_size=4, image_every=0, log_every=1)
  c.optimizer.update(warmup_steps=1, decay_steps=2)
  c.checkpoint.every_steps = 0
  return c


def test_pretrained_encoder_at_step_0(vit_folder, tmp_path):
  import torch
  from instant3d_jax.convert import transformers_vit
  from instant3d_jax.models import lrm as lrm_lib
  from instant3d_jax.models import vit as vit_lib
  from instant3d_jax.base import checkpoint as ckpt_lib
  from instant3d_jax.convert import checkpoints
  from instant3d_jax.train import lrm_task
  folder, ref = vit_folder
  cfg = pretrained_config(tmp_path / "data", folder)
  res = lrm_task.train(cfg, tmp_path / "run", log=lambda *_: None)
  assert res.step == 0
  m = lrm_lib.LRMConfig.from_config(cfg)
  _, want = transformers_vit.load_vit(folder, modulation_dim=m.camera_embed_dim,
                                      config=m.vit, zero_extra_channels=True)
  got = jax.tree.map(np.asarray, jax.device_get(res.state.params["encoder"]))
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)
  _, saved, step = checkpoints.load_params(tmp_path / "run")   # the step-0 checkpoint holds them
  assert step == 0
  for a, b in zip(jax.tree.leaves(saved["encoder"]), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)
  # The rest of the model keeps its random init, and the camera adaLN starts at zero, so the
  # encoder (9 input channels: RGB + Plücker, camera modulation) computes the plain ViT's output.
  assert np.any(np.asarray(res.state.params["decoder"]["triplane_tokens"]) != 0)
  mods = [v["adaLN_modulation"]["kernel"] for v in got.values()
          if isinstance(v, dict) and "adaLN_modulation" in v]
  assert mods and not any(np.any(k) for k in mods)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 32, 32, 3)).astype(np.float32)
  x9 = jnp.concatenate([x, rng.standard_normal((2, 32, 32, 6)).astype(np.float32)], -1)
  cam = jnp.asarray(rng.standard_normal((2, m.camera_embed_dim)).astype(np.float32))
  enc = vit_lib.ViTEncoder(m.vit, modulation_dim=m.camera_embed_dim)
  ours = enc.apply({"params": got}, x9, cam)
  with torch.no_grad():
    theirs = ref(pixel_values=torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).last_hidden_state
  assert rel_err(ours, theirs.numpy()) < 1e-4

  # A resume may find the folder moved: the path is not part of the must-match config.
  moved = pretrained_config(tmp_path / "data", tmp_path / "moved")
  ckpt_lib.check_or_write_config(tmp_path / "run", moved,
                                 tuple(moved.train.checkpoint_must_match),
                                 ignore=tuple(moved.train.checkpoint_may_differ))
  moved.model.encoder.hidden_size = 64
  with pytest.raises(ckpt_lib.ConfigMismatchError, match="model.encoder.hidden_size"):
    ckpt_lib.check_or_write_config(tmp_path / "run", moved,
                                   tuple(moved.train.checkpoint_must_match),
                                   ignore=tuple(moved.train.checkpoint_may_differ))


def test_missing_pretrained_folder_fails_before_training(tmp_path):
  from instant3d_jax.train import lrm_task
  cfg = pretrained_config(tmp_path / "data", tmp_path / "nowhere")
  with pytest.raises(errors.Instant3DError, match="nowhere"):
    lrm_task.train(cfg, tmp_path / "run", log=lambda *_: None)
  assert not (tmp_path / "run" / "checkpoints").exists() or not any(
      (tmp_path / "run" / "checkpoints").iterdir())
