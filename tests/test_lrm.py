"""The reconstructor model (instant3d_jax/models/lrm.py) on a micro config."""
import copy

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from instant3d_jax.configs import lrm as lrm_configs
from instant3d_jax import cameras as cam_lib
from instant3d_jax import rendering
from instant3d_jax.convert.safetensors_io import flatten, unflatten
from instant3d_jax.models import lrm
from instant3d_jax.models import lrm_lift
from tests import tiny_configs
from tests import tolerance


# Every optional part switched on, so the micro model (tests/tiny_configs.py) exercises them all.
FEATURES = {"encoder_modulation": True, "decoder_modulation": True, "extras.plucker_rays": True,
            "extras.position_code": True, "extras.attention_bias": True,
            "extras.attention_bias_init": "zeros", "extras.lift": "hull",
            "render.num_samples": 8,
            "render.num_importance": 8}


def micro_config(**knobs):
  """The shared micro LRM with `FEATURES` (then `knobs`) applied; its `LRMConfig`."""
  return tiny_configs.micro_lrm_model(**{**FEATURES, **knobs})


def rel_err(a, b):
  return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


def _inputs(m, batch, seed=0):
  images, cams = lrm.dummy_inputs(m, batch)
  images = jax.random.uniform(jax.random.key(seed), images.shape)
  return images, cams


def _perturb(tree, seed=2, scale=0.05):
  """Adds numpy noise to every leaf except the attention biases (kept at their zero init)."""
  rng = np.random.default_rng(seed)
  flat = flatten(tree)
  return unflatten({k: v if k.endswith("cross_attn_bias")
                    else np.asarray(v) + scale * rng.standard_normal(v.shape).astype(np.float32)
                    for k, v in flat.items()})


@pytest.fixture(scope="module")
def micro():
  m = micro_config()
  params = lrm.init_params(m, jax.random.key(1))
  # Non-zero modulation layers: at init they are zero, which would hide wiring errors.
  plain = _perturb(nn.meta.unbox(params))
  apply = jax.jit(lambda p, x, c: lrm.LRM(m).apply({"params": p}, x, c))
  return m, params, plain, apply


def test_plucker_rays_analytic():
  cam = cam_lib.orbit_camera(20.0, 30.0, 2.7, 50.0, 5, 5)
  pl = np.asarray(lrm.plucker_rays(cam))
  assert pl.shape == (5, 5, 6)
  pos = np.asarray(cam.c2w[:3, 3])
  # The centre pixel's ray passes through the origin: direction -pos/|pos|, moment 0.
  np.testing.assert_allclose(pl[2, 2, :3], -pos / np.linalg.norm(pos), atol=1e-6)
  np.testing.assert_allclose(pl[2, 2, 3:], 0.0, atol=1e-5)
  # Moment o × d is independent of the point chosen on the ray and orthogonal to d.
  o2 = pos + 1.3 * pl[0, 4, :3]
  np.testing.assert_allclose(np.cross(o2, pl[0, 4, :3]), pl[0, 4, 3:], atol=1e-5)
  assert abs(float(np.dot(pl[0, 4, :3], pl[0, 4, 3:]))) < 1e-5
  np.testing.assert_allclose(np.linalg.norm(pl[..., :3], axis=-1), 1.0, atol=1e-6)


def test_triplane_position_code():
  code = lrm.triplane_position_code(4, 20)            # 20 // 6 = 3 frequencies per coordinate
  assert code.shape == (48, 20)
  assert np.all(code[:, 18:] == 0)
  # Token (plane 0, row 0, col 1): plane coordinate -1, row -0.75, col -0.25; frequency 0 = π/2.
  # Channels per coordinate: n sines then n cosines.
  np.testing.assert_allclose(code[1, [0, 6, 12]], np.sin(np.pi / 2 * np.array([-1, -.75, -.25])),
                             atol=1e-6)
  np.testing.assert_allclose(code[1, [3, 9, 15]], np.cos(np.pi / 2 * np.array([-1, -.75, -.25])),
                             atol=1e-6)
  # All 48 tokens get distinct codes.
  assert len({tuple(np.round(r, 5)) for r in code}) == 48


def test_params_carry_logical_axes(micro):
  m, params, _, _ = micro
  leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
  for x in leaves:
    assert len(x.names) == x.value.ndim
  specs = nn.get_partition_spec(params)
  assert tuple(specs["decoder"]["triplane_tokens"]) == ("planes", "embed")


def test_forward_batch_independent_and_view_permutation_invariant(micro):
  m, _, plain, apply = micro
  images, cams = _inputs(m, 2)
  planes = apply(plain, images, cams)
  R = m.plane_resolution
  assert planes.shape == (2, 3, R, R, m.triplane.channels)
  # Another object in row 1 leaves row 0 unchanged.
  images2 = images.at[1].set(jax.random.uniform(jax.random.key(9), images.shape[1:]))
  planes2 = apply(plain, images2, cams)
  np.testing.assert_array_equal(np.asarray(planes[0]), np.asarray(planes2[0]))
  assert rel_err(planes2[1], planes[1]) > 1e-3
  # Without the attention bias, permuting the views together with their cameras is a no-op
  # (cross-attention sums over keys; the decoder condition is the mean camera).
  perm = jnp.array([2, 0, 3, 1])
  planes_p = apply(plain, images[:, perm], cams[:, perm])
  tolerance.within("lrm.views_permuted_with_cameras", planes_p, planes, 1e-5, "rel")
  # ... but moving a camera alone changes the result (the cameras are used).
  planes_c = apply(plain, images, cams[:, perm])
  assert rel_err(planes_c, planes) > 1e-3


def test_zero_init_knobs_and_attention_bias(micro):
  """Decoder modulation and attention bias start at zero (the plain model at init); a non-zero
  bias breaks the view-permutation invariance (it is tied to token positions) and fixes the rig."""
  m, params, plain, apply = micro
  p = nn.meta.unbox(params)["decoder"]["block_0"]
  assert not np.any(p["cross_attn_bias"]) and p["cross_attn_bias"].shape == (48, 4 * 5)
  assert not np.any(p["modulation"]["kernel"]) and not np.any(p["modulation"]["bias"])
  for i in range(m.encoder.num_layers):
    assert not np.any(nn.meta.unbox(params)["encoder"][f"layer_{i}"]["adaLN_modulation"]["kernel"])
  images, cams = _inputs(m, 2)
  biased = copy.deepcopy(plain)
  biased["decoder"]["block_0"]["cross_attn_bias"] = np.random.default_rng(4).standard_normal(
      (48, 20)).astype(np.float32)
  perm = jnp.array([1, 2, 3, 0])
  a = apply(biased, images, cams)
  b = apply(biased, images[:, perm], cams[:, perm])
  assert rel_err(b, a) > 1e-3
  with pytest.raises(ValueError, match=r"attention_bias needs the fixed input rig.*4 views of "
                                       r"16².*got 3 views"):
    lrm.LRM(m).apply({"params": plain}, images[:, :3], cams[:, :3])


def _point_segment_distance(q, a, b):
  """Distance from points `q [N, 2]` to the segment a–b (2-D)."""
  ab = b - a
  t = np.clip(np.sum((q - a) * ab, -1) / max(float(np.sum(ab * ab)), 1e-12), 0.0, 1.0)
  return np.linalg.norm(q - (a + t[:, None] * ab), axis=-1)


def test_rig_attention_bias_is_the_projected_token_segment():
  """Oracle: the exact 2-D point-to-segment distance from each patch centre to the projection
  (cameras.project_points) of the token's 3-D segment; a perspective projection maps a segment to
  a segment, so the bias must be −d²/2 (σ = 1 patch) up to the sampling along the segment."""
  cfg = lrm_configs.get_config("tiny")
  cfg.model.extras.attention_bias_init = "rig"
  m = lrm.LRMConfig.from_config(cfg)
  assert m.extras.attention_bias_sigma == 1.0
  T, patch, res = m.triplane.token_resolution, m.encoder.patch_size, m.input_resolution
  G, floor = res // patch, m.extras.attention_bias_floor
  bias = lrm.rig_attention_bias(m)
  assert bias.shape == (3 * T * T, 4 * (1 + G * G))
  rig = cam_lib.instant3d_rig(res)
  centres = (np.arange(T) + 0.5) / T * 2 - 1
  ends = np.zeros((3, T, T, 2, 3), np.float32)
  for p, (col, row) in enumerate(rendering.PLANE_AXES):
    ends[p, :, :, :, row] = centres[:, None, None]
    ends[p, :, :, :, col] = centres[None, :, None]
    ends[p, :, :, :, 3 - col - row] = (-1.0, 1.0)
  ends = ends.reshape(-1, 2, 3)
  vv, uu = np.meshgrid(np.arange(G) + 0.5, np.arange(G) + 0.5, indexing="ij")
  patch_centres = np.stack([uu.reshape(-1), vv.reshape(-1)], -1)
  for v in range(4):
    uv = np.asarray(cam_lib.project_points(rig[v], jnp.asarray(ends))[0]) / patch  # [Lq, 2, 2]
    got = bias[:, v * (1 + G * G):(v + 1) * (1 + G * G)]
    assert not np.any(got[:, 0])                                       # CLS token: no bias
    for tok in range(0, 3 * T * T, 5):
      a, b = uv[tok]
      d = _point_segment_distance(patch_centres, a, b)
      slack = 3 * np.linalg.norm(b - a) / 63                           # 64 samples, perspective
      hi = np.maximum(-d ** 2 / 2, floor)
      lo = np.maximum(-(d + slack) ** 2 / 2, floor)
      assert np.all(got[tok, 1:] <= hi + 1e-4) and np.all(got[tok, 1:] >= lo - 1e-4), (v, tok)
  # The model starts from it in every decoder block.
  mm = micro_config(**{"extras.attention_bias_init": "rig", "decoder.num_layers": 2})
  params = nn.meta.unbox(lrm.init_params(mm, jax.random.key(0)))
  for i in range(2):
    np.testing.assert_array_equal(params["decoder"][f"block_{i}"]["cross_attn_bias"],
                                  lrm.rig_attention_bias(mm))
  with pytest.raises(ValueError, match="model.extras.attention_bias_init must be one of 'zeros', 'rig', got 'ones'"):
    lrm.init_params(micro_config(**{"extras.attention_bias_init": "ones"}), jax.random.key(0))


def test_rendering(micro):
  """render_views = render_rays on the camera's rays; a constant field renders analytically."""
  m, _, plain, apply = micro
  images, cams = _inputs(m, 2)
  planes = apply(plain, images, cams)
  small = cam_lib.resize_camera(cams[:, :2], 4, 4)
  img = jax.jit(lambda p, pl, c: lrm.render_views(m, p, pl, c, chunk=5,
                                                  outputs=("rgb", "opacity")))(plain, planes, small)
  assert img["rgb"].shape == (2, 2, 4, 4, 3)
  rays = jax.jit(lambda p, pl, o, d: lrm.render_rays(m, p, pl, o, d))
  o, d = cam_lib.camera_rays(small)
  ref = rays(plain, planes, o.reshape(2, -1, 3), d.reshape(2, -1, 3))
  tolerance.within("lrm.render_views_chunk_5_vs_render_rays",
                   np.asarray(img["rgb"]).reshape(2, -1, 3), ref["rgb"], 1e-5)
  assert rel_err(img["rgb"][1], img["rgb"][0]) > 1e-4   # the planes are per object

  # NeRF MLP with zero kernels = constant density and colour: opacity 1 − exp(−σ·chord).
  p = copy.deepcopy(plain)
  for layer in p["nerf"].values():
    layer["kernel"] = np.zeros_like(layer["kernel"])
    layer["bias"] = np.zeros_like(layer["bias"])
  p["nerf"][f"dense_{m.nerf.num_layers - 1}"]["bias"] = np.array([0.3, -1.0, 0.5, 2.0],
                                                                 np.float32)
  sigma = np.log1p(np.exp(0.3 - 1.0))                      # softplus(x + bias), bias −1
  colour = 1 / (1 + np.exp(-np.array([-1.0, 0.5, 2.0]))) * 1.002 - 0.001
  # 32 rays along +x: y, z inside the box (chord 2) for the first 24, |y| > 1 (a miss) after.
  yz = np.random.default_rng(0).uniform(-0.95, 0.95, (2, 32, 2)).astype(np.float32)
  yz[:, 24:, 0] = 1.5
  origins = np.concatenate([np.full((2, 32, 1), -3.0, np.float32), yz], -1)
  dirs = np.broadcast_to(np.array([1.0, 0.0, 0.0], np.float32), origins.shape)
  out = rays(p, planes, origins, dirs)
  op = 1 - np.exp(-sigma * 2.0)
  np.testing.assert_allclose(out["opacity"][:, :24], op, rtol=1e-5)
  np.testing.assert_allclose(out["opacity"][:, 24:], 0.0, atol=1e-7)
  np.testing.assert_allclose(out["rgb"][:, :24],
                             np.broadcast_to(op * colour + (1 - op) * 1.0, (2, 24, 3)), rtol=1e-5)
  np.testing.assert_allclose(out["rgb"][:, 24:], 1.0, rtol=1e-6)  # white background (config)


@pytest.mark.slow
def test_remat_and_bf16(micro):
  m, _, plain, _ = micro
  images, cams = _inputs(m, 1)
  m_remat = micro_config(remat="full", **{"decoder.num_layers": 1})

  def grads(mc):
    loss = lambda p: jnp.sum(lrm.LRM(mc).apply({"params": p}, images, cams) ** 2)  # noqa: E731
    return jax.jit(jax.grad(loss))(plain)

  g0, g1 = grads(m), grads(m_remat)
  # Recomputation fuses differently: equal up to fp32 rounding.
  flat = lambda g: np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)])  # noqa: E731
  assert rel_err(flat(g1), flat(g0)) < 1e-5
  # Recomputing the field in the backward pass (render.remat_field) gives the same gradient.
  planes = jax.random.normal(jax.random.key(5), (1, 3, 8, 8, 8))
  o = jnp.broadcast_to(jnp.array([-3.0, 0.1, 0.2]), (1, 6, 3))
  d = jax.random.normal(jax.random.key(6), (1, 6, 3)) * 0.1 + jnp.array([1.0, 0.0, 0.0])

  def render_grads(mc):
    loss = lambda p, pl: jnp.sum(lrm.render_rays(mc, p, pl, o, d)["rgb"] ** 2)  # noqa: E731
    return jax.jit(jax.grad(loss, argnums=(0, 1)))(plain, planes)

  r0, r1 = render_grads(m), render_grads(micro_config(**{"render.remat_field": True}))
  assert rel_err(flat(r1), flat(r0)) < 1e-5
  # bf16 compute (params fp32) stays close to the fp32 forward.
  m_bf16 = micro_config(dtype="bfloat16")
  ref = lrm.LRM(m).apply({"params": plain}, images, cams)
  out = lrm.LRM(m_bf16).apply({"params": plain}, images, cams)
  assert out.dtype == jnp.bfloat16
  assert rel_err(out.astype(jnp.float32), ref) < 5e-2


def test_input_validation(micro):
  m, _, plain, _ = micro
  images, cams = _inputs(m, 1)
  with pytest.raises(ValueError, match=r"images must be \[B, V, H, W, 3\], got shape "
                                       r"\(1, 4, 16, 16, 4\)"):
    lrm.LRM(m).apply({"params": plain}, jnp.zeros((1, 4, 16, 16, 4)), cams)
  with pytest.raises(ValueError, match=r"batch shape \(B, V\) = \(2, 4\), got \(1, 4\)"):
    lrm.LRM(m).apply({"params": plain}, jnp.zeros((2, 4, 16, 16, 3)), cams)
  with pytest.raises(ValueError, match=r"cameras are 16x16 pixels but the images are 8x8"):
    lrm.LRM(m).apply({"params": plain}, jnp.zeros((1, 4, 8, 8, 3)), cams)


def test_field_is_mlp_on_concatenated_plane_features(micro):
  # The LRM's field goes through rendering.sample_triplane's concatenated-features convention.
  m, _, plain, _ = micro
  planes = jax.random.normal(jax.random.key(0), (3, 8, 8, 8))
  pts = jax.random.uniform(jax.random.key(1), (5, 2, 3), minval=-1, maxval=1)
  dens, rgb = lrm.field_fn(m, plain, planes)(pts, pts)       # eager: cheaper than compiling
  feats = rendering.sample_triplane(planes, pts)
  d2, c2 = m.nerf_mlp().apply({"params": plain["nerf"]}, feats)
  np.testing.assert_allclose(dens, d2, rtol=1e-6)
  np.testing.assert_allclose(rgb, c2, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Weights (instant3d_jax/convert/lrm.py)


def test_safetensors_roundtrip_and_mismatch(micro, tmp_path):
  from instant3d_jax.convert import lrm as convert_lrm
  from instant3d_jax.convert.safetensors_io import WeightsError
  m, _, plain, _ = micro
  path = convert_lrm.save_lrm(tmp_path / "model.safetensors", plain, m.to_dict())
  cfg, params = convert_lrm.load_lrm(path)
  assert lrm.LRMConfig.from_config(cfg).to_dict() == m.to_dict()
  a, b = flatten(params), flatten(plain)
  assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
  assert "decoder/block_0/cross_attn_bias" in a
  # A config that builds other shapes: the error lists each path with both shapes.
  other = lrm_configs.get_config("tiny")
  other.model = tiny_configs.micro_lrm(**{**FEATURES, "triplane.channels": 4,
                                          "extras.attention_bias": False,
                                          "extras.lift": "none"}).model
  with pytest.raises(WeightsError) as e:
    convert_lrm.load_lrm(path, other)
  msg = str(e.value)
  assert f"checkpoint {path} does not match the model config (8 problems)" in msg
  assert "decoder/upsampler/kernel: config expects (2, 2, 32, 4), checkpoint has (2, 2, 32, 8)" \
      in msg
  assert "unexpected decoder/block_0/cross_attn_bias: shape (48, 20)" in msg
  assert "decoder/upsampler/bias: config expects (4,), checkpoint has (8,)" in msg
  assert "nerf/dense_0/kernel: config expects (12, 16), checkpoint has (24, 16)" in msg
  assert "unexpected decoder/lift_planes_kernel: shape (3, 8, 8)" in msg
  # Not an LRM file.
  from instant3d_jax.convert.safetensors_io import write_safetensors
  write_safetensors(tmp_path / "x.safetensors", {"a": np.zeros(2, np.float32)})
  with pytest.raises(WeightsError, match="metadata format is None, expected 'instant3d_jax.lrm'"):
    convert_lrm.load_lrm(tmp_path / "x.safetensors")


@pytest.mark.slow  # torch + transformers import; transformers_vit's own tests cover the converter
def test_dino_import_keeps_pretrained_features(micro, tmp_path):
  """Imported into an encoder with 6 extra Plücker channels and camera adaLN, a pretrained DINO
  computes exactly its own features at init (zero-filled channels, zero modulation)."""
  torch = pytest.importorskip("torch")
  import transformers
  from instant3d_jax.convert import lrm as convert_lrm
  from instant3d_jax.models import vit as vit_lib
  m, params, _, _ = micro
  e = m.encoder
  tcfg = transformers.ViTConfig(hidden_size=e.hidden_size, num_hidden_layers=e.num_layers,
                                num_attention_heads=e.num_heads, intermediate_size=e.mlp_dim,
                                patch_size=e.patch_size, image_size=e.image_size,
                                layer_norm_eps=e.layer_norm_eps, qkv_bias=True)
  torch.manual_seed(0)
  ref = transformers.ViTModel(tcfg, add_pooling_layer=False).eval()
  ref.save_pretrained(tmp_path / "dino")
  new = convert_lrm.import_dino_encoder(params, m, tmp_path / "dino")
  k = new["encoder"]["patch_embed"]["kernel"]
  assert k.shape == (8, 8, 9, e.hidden_size) and not np.any(k[:, :, 3:])
  images, cams = _inputs(m, 1)
  x = vit_lib.normalize_images(images[0])                              # [V, H, W, 3]
  x9 = jnp.concatenate([x, lrm.plucker_rays(cams[0])], -1)
  cam_embed = jax.random.normal(jax.random.key(0), (4, m.camera_embed_dim))
  enc = vit_lib.ViTEncoder(m.vit, modulation_dim=m.camera_embed_dim)
  ours = jax.jit(enc.apply)({"params": new["encoder"]}, x9, cam_embed)
  with torch.no_grad():
    theirs = ref(pixel_values=torch.from_numpy(np.array(x).transpose(0, 3, 1, 2).copy()),
                 interpolate_pos_encoding=True).last_hidden_state.numpy()
  assert rel_err(ours, theirs) < 1e-4


def _sphere_views(centre, radius, colour, res=64):
  """The Instant3D rig's views of a flat-coloured sphere on white (exact per-pixel hit test)."""
  cams = cam_lib.instant3d_rig(res)
  o, d = cam_lib.camera_rays(cams)
  oc = np.asarray(o) - np.asarray(centre, np.float32)
  b = np.sum(oc * np.asarray(d), -1)
  hit = b * b - (np.sum(oc * oc, -1) - radius ** 2) > 0
  images = np.where(hit[..., None], np.asarray(colour, np.float32), 1.0).astype(np.float32)
  return jnp.asarray(images), cams


def test_lift_views_is_the_visual_hull_in_the_triplane_convention():
  """A red sphere at (0.4, 0, 0): the lifted planes, read with `sample_triplane`, see it at its
  own (x, y), (x, z), (y, z) and nowhere else: a swapped or transposed plane would fail."""
  images, cams = _sphere_views((0.4, 0.0, 0.0), 0.3, (0.8, 0.1, 0.1))
  lifted = lrm_lift.lift_views(images, cams, 32, 1.0, (1.0, 1.0, 1.0))
  assert lifted.shape == (3, 32, 32, lrm_lift.LIFT_CHANNELS)
  read = lambda p: np.asarray(rendering.sample_triplane(  # noqa: E731
      lifted, jnp.asarray(p, jnp.float32), 1.0, combine="stack"))
  centre = read((0.4, 0.0, 0.0))
  np.testing.assert_allclose(centre[:, 0], 1.0, atol=1e-3)               # hull max, every plane
  np.testing.assert_allclose(centre[:, 2:5], [[0.8, 0.1, 0.1]] * 3, atol=0.02)  # its colour
  np.testing.assert_allclose(read((0.0, 0.4, 0.0))[:, 0], 0.0, atol=1e-3)  # (y, x) swapped
  # mirrored in x: only the YZ plane (which integrates along x) sees the sphere
  np.testing.assert_allclose(read((-0.4, 0.0, 0.0))[:, 0], [0.0, 0.0, 1.0], atol=1e-3)
  off = read((0.4, 0.55, 0.0))[:, 0]    # XY (0.4, 0.55): out; XZ (0.4, 0): in; YZ (0.55, 0): out
  np.testing.assert_allclose(off, [0.0, 1.0, 0.0], atol=1e-3)
  above = read((0.4, 0.0, 0.55))[:, 0]  # XY in; XZ (0.4, 0.55) out; YZ (0, 0.55) out
  np.testing.assert_allclose(above, [1.0, 0.0, 0.0], atol=1e-3)


def test_voxel_lift_reads_each_point_of_the_hull_with_its_own_colour():
  """`extras.lift_voxels`: a red sphere at (0.4, 0, 0) and a blue one at (-0.4, 0, 0) share the
  x axis line, so the per-axis lift's YZ plane mixes their colours; the voxel sample reads each
  sphere's own colour at its centre, zero hull between them, and equals the grid at a texel
  centre and the mean of two neighbours halfway (trilinear, align_corners=False)."""
  red, cams = _sphere_views((0.4, 0.0, 0.0), 0.25, (0.8, 0.1, 0.1))
  blue, _ = _sphere_views((-0.4, 0.0, 0.0), 0.25, (0.1, 0.1, 0.8))
  images = jnp.minimum(red, blue)            # both spheres on white (they never overlap here)
  r, box = 32, 1.0
  hull, colour = lrm_lift.lift_grid(images, cams, r, box, (1.0, 1.0, 1.0))
  vox = lrm_lift.voxel_planes(hull, colour)
  assert vox.shape == (3, r, r, r * lrm_lift.VOXEL_CHANNELS) and not np.any(vox[1:])
  read = lambda p: np.asarray(lrm_lift.sample_voxels(vox, jnp.asarray(p, jnp.float32), box))  # noqa
  at_red, at_blue, between = read((0.4, 0.0, 0.0)), read((-0.4, 0.0, 0.0)), read((0.0, 0.0, 0.0))
  assert at_red[0] > 0.9 and at_blue[0] > 0.9 and between[0] < 0.05
  assert at_red[1] > 0.6 > at_red[3] and at_blue[3] > 0.6 > at_blue[1]
  yz = np.asarray(rendering.sample_triplane(lrm_lift.lift_views(images, cams, r, box, (1, 1, 1)),
                                            jnp.asarray((0.4, 0.0, 0.0)), box, combine="stack"))
  assert abs(yz[2, 2] - yz[2, 4]) < 0.3          # the YZ plane's colour is a red-blue mix
  c = lambda i: -box + (i + 0.5) * 2 * box / r   # noqa: E731  texel centres
  i, j, k = 20, 15, 17
  np.testing.assert_allclose(read((c(i), c(j), c(k))),
                             np.r_[hull[i, j, k], colour[i, j, k]], atol=1e-6)
  half = read(((c(i) + c(i + 1)) / 2, c(j), c(k)))
  np.testing.assert_allclose(half, (np.r_[hull[i, j, k], colour[i, j, k]]
                                    + np.r_[hull[i + 1, j, k], colour[i + 1, j, k]]) / 2,
                             atol=1e-6)
  np.testing.assert_allclose(read((1.5, 0.0, 0.0)), 0.0)          # outside the box


def test_voxel_lift_reaches_the_nerf_mlp(micro):
  """With `lift_voxels` the planes carry the grid after the learned and lifted channels, the
  NeRF MLP reads 3 × feature channels + 4, and rendering and the mesh path use the same features;
  without `lift='hull'` it is a one-line config error."""
  m, params, plain, apply = micro
  images, cams = _inputs(m, 1)
  mv = micro_config(**{"extras.lift_concat": True, "extras.lift_voxels": True})
  pv = lrm.init_params(mv, jax.random.key(0))
  planes = lrm.LRM(mv).apply({"params": pv}, images, cams)
  r = mv.plane_resolution
  assert planes.shape[-1] == mv.plane_channels == (m.triplane.channels + lrm_lift.LIFT_CHANNELS
                                                        + r * lrm_lift.VOXEL_CHANNELS)
  want = lrm_lift.voxel_planes(*lrm_lift.lift_grid(images[0], cams[0], r, mv.render.box, mv.background))
  np.testing.assert_allclose(planes[0, ..., mv.feature_channels:], want, atol=1e-6)
  assert nn.meta.unbox(pv)["nerf"]["dense_0"]["kernel"].shape[0] == (
      3 * mv.feature_channels + lrm_lift.VOXEL_CHANNELS)
  pts = jnp.asarray([[0.1, -0.2, 0.3], [0.0, 0.0, 0.0]], jnp.float32)
  feats = lrm.point_features(lrm.LRMConfig.from_config(mv), planes[0], pts)
  assert feats.shape == (2, 3 * mv.feature_channels + lrm_lift.VOXEL_CHANNELS)
  out = lrm.render_views(mv, pv, planes, cams[:, :1], outputs=("rgb",))["rgb"]
  assert out.shape[-3:] == (m.input_resolution, m.input_resolution, 3) and np.isfinite(out).all()
  # The plain model's features are the triplane sample itself.
  plain_planes = apply(plain, images, cams)[0]
  np.testing.assert_array_equal(lrm.point_features(lrm.LRMConfig.from_config(m), plain_planes, pts),
                                rendering.sample_triplane(plain_planes, pts, m.render.box))
  with pytest.raises(Exception, match="lift_voxels needs model.extras.lift='hull'"):
    lrm.init_params(micro_config(**{"extras.lift": "none", "extras.lift_voxels": True}),
                    jax.random.key(0))


def test_lift_reaches_the_planes(micro):
  """With `extras.lift='hull'` the planes change with the images' colours even when the
  decoder's cross-attention sees nothing else (the skip path), and a bad name is one line."""
  m, params, plain, apply = micro
  assert set(nn.meta.unbox(params)["decoder"]) >= {"lift_tokens", "lift_planes_kernel",
                                                   "lift_planes_bias"}
  images, cams = _inputs(m, 1)
  tweak = images.at[..., 0].multiply(0.5)
  assert rel_err(apply(plain, tweak, cams), apply(plain, images, cams)) > 1e-3
  # lift_concat: the raw lifted channels are the planes' last LIFT_CHANNELS, and the NeRF MLP
  # reads channels + LIFT_CHANNELS per plane.
  mc = micro_config(**{"extras.lift_concat": True})
  pc = lrm.init_params(mc, jax.random.key(0))
  planes = lrm.LRM(mc).apply({"params": pc}, images, cams)
  assert mc.plane_channels == m.triplane.channels + lrm_lift.LIFT_CHANNELS == planes.shape[-1]
  want = lrm_lift.lift_views(images[0], cams[0], mc.plane_resolution, mc.render.box,
                        mc.background)
  np.testing.assert_allclose(planes[0, ..., -lrm_lift.LIFT_CHANNELS:], want, rtol=1e-6, atol=1e-6)
  assert nn.meta.unbox(pc)["nerf"]["dense_0"]["kernel"].shape[0] == 3 * mc.plane_channels
  with pytest.raises(Exception, match="model.extras.lift must be one of 'none', 'hull'"):
    lrm.init_params(micro_config(**{"extras.lift": "voxels"}), jax.random.key(0))


def test_visible_voxel_colour_ignores_views_where_the_hull_occludes_the_voxel():
  """`lift_voxel_colour='visible'`: a red sphere at x = +0.5 and a blue one at x = −0.5, the
  0° camera at +x, the 180° one at −x. The blue sphere's far (−x) surface projects onto red in
  the 0° view: the mean colour is pulled to red, the visibility-weighted one (only the 180°
  camera sees that surface) is blue; likewise the red sphere's +x surface stays red."""
  red, cams = _sphere_views((0.5, 0.0, 0.0), 0.35, (0.8, 0.1, 0.1))
  blue, _ = _sphere_views((-0.5, 0.0, 0.0), 0.35, (0.1, 0.1, 0.8))
  # Per pixel the nearer sphere wins: red for the 0° camera (at +x), blue for 180°.
  images = jnp.stack([jnp.where(red[v] < 1, red[v], blue[v]) if v == 0 else
                      jnp.where(blue[v] < 1, blue[v], red[v]) if v == 2 else
                      jnp.minimum(red[v], blue[v]) for v in range(4)])
  r, box, bg = 32, 1.0, (1.0, 1.0, 1.0)
  _, mean = lrm_lift.lift_grid(images, cams, r, box, bg, "mean")
  hull, vis = lrm_lift.lift_grid(images, cams, r, box, bg, "visible")
  mid = r // 2                          # the voxel whose lower corner is the origin
  blue_far, red_far = (3, mid, mid), (r - 4, mid, mid)   # x centres −0.78 and +0.78
  assert hull[blue_far] > 0.5 and hull[red_far] > 0.5
  assert mean[blue_far][0] > 0.15 and vis[blue_far][0] < 0.12 and vis[blue_far][2] > 0.7
  assert mean[red_far][2] > 0.15 and vis[red_far][2] < 0.12 and vis[red_far][0] > 0.7
  # Visibility itself at the blue far surface: hidden from the 0° camera, seen from 180°.
  cc = lambda i: -box + (i + 0.5) * 2 * box / r  # noqa: E731
  pts = jnp.asarray([cc(3), cc(mid), cc(mid)], jnp.float32).reshape(1, 1, 1, 3)
  v0 = float(lrm_lift.hull_visibility(hull, pts, cams.c2w[0, :3, 3], box).squeeze())
  v2 = float(lrm_lift.hull_visibility(hull, pts, cams.c2w[2, :3, 3], box).squeeze())
  assert v0 < 0.1 and v2 > 0.8
  with pytest.raises(Exception, match="lift_voxel_colour must be 'mean' or 'visible'"):
    lrm_lift.lift_grid(images, cams, 8, box, bg, "nope")


def test_lift_grid_projection_matches_project_points_and_map_coordinates():
  """The lift's separable grid projection and one-gather bilinear read equal the oracle:
  `cameras.project_points` of every grid point and `map_coordinates` (order 1, zero outside)
  per channel, including points outside the views and behind a camera."""
  from instant3d_jax import cameras as cameras_lib
  images, cams = _sphere_views((0.3, -0.2, 0.1), 0.3, (0.2, 0.7, 0.4))
  images = images.at[1].set(jax.random.uniform(jax.random.key(3), images.shape[1:]))
  r, box = 12, 2.5                       # a box wider than the views: many points fall outside
  pts, samples, hull, mean = lrm_lift._grid_samples(images, cams, r, box, (1.0, 1.0, 1.0))
  fg = lrm_lift.foreground(images, (1.0, 1.0, 1.0))[..., None]
  rgbm = jnp.concatenate([images, fg], -1)
  for v in range(4):
    uv, depth = cameras_lib.project_points(jax.tree.map(lambda a: a[v], cams), pts)
    coords = (uv[..., 1] - 0.5, uv[..., 0] - 0.5)
    want = jnp.stack([jax.scipy.ndimage.map_coordinates(rgbm[v, ..., c], coords, order=1,
                                                        mode="constant", cval=0.0)
                      for c in range(4)], -1)
    want = jnp.where((depth > 0)[..., None], want, 0.0)
    np.testing.assert_allclose(samples[v], want, atol=2e-5)
  assert 0.05 < float(jnp.mean(samples[..., 3] > 0)) < 0.95    # inside and outside both tested
  np.testing.assert_allclose(hull, jnp.prod(samples[..., 3], 0), atol=1e-6)


def test_finer_voxel_grid_rides_in_the_planes(micro):
  """`extras.lift_voxel_resolution` N = 2R: the N³ grid fills N³·4/R² channels of the XY plane,
  `sample_voxels` reads it back exactly at fine texel centres (trilinear halfway), the LRM's
  planes carry `lift_inputs`' grid, the fine hull is sharper than the coarse one at the sphere's
  rim, and a size that does not fill whole channels is a one-line config error."""
  m, *_ = micro
  red, cams = _sphere_views((0.4, 0.0, 0.0), 0.25, (0.8, 0.1, 0.1))
  r, n, box, bg = 8, 16, 1.0, (1.0, 1.0, 1.0)
  hull, colour = lrm_lift.lift_grid(red, cams, n, box, bg)
  vox = lrm_lift.voxel_planes(hull, colour, r)
  assert vox.shape == (3, r, r, n ** 3 * lrm_lift.VOXEL_CHANNELS // r ** 2) and not np.any(vox[1:])
  read = lambda p: np.asarray(lrm_lift.sample_voxels(vox, jnp.asarray(p, jnp.float32), box))  # noqa
  c = lambda i: -box + (i + 0.5) * 2 * box / n   # noqa: E731  fine texel centres
  i, j, k = 11, 7, 9
  want = np.r_[hull[i, j, k], colour[i, j, k]]
  np.testing.assert_allclose(read((c(i), c(j), c(k))), want, atol=1e-6)
  nxt = np.r_[hull[i, j, k + 1], colour[i, j, k + 1]]
  np.testing.assert_allclose(read((c(i), c(j), (c(k) + c(k + 1)) / 2)), (want + nxt) / 2,
                             atol=1e-6)
  # lift_inputs at N = 2R: the planes' lift is the R³ one, the voxels the N³ grid.
  planes, vox_in = lrm_lift.lift_inputs(red, cams, r, box, bg, "mean", n)
  np.testing.assert_allclose(planes, lrm_lift.lift_views(red, cams, r, box, bg), atol=1e-6)
  np.testing.assert_allclose(vox_in, vox, atol=1e-6)
  _, vis_in = lrm_lift.lift_inputs(red, cams, r, box, bg, "visible", n)
  assert vis_in.shape == vox.shape and np.isfinite(vis_in).all()
  # Sharper: a point just outside the sphere's rim (radius 0.25 + 0.06) reads less hull on the
  # fine grid than on the coarse one, whose trilinear support reaches inside.
  rim = (0.4, 0.0, 0.31)
  coarse = lrm_lift.voxel_planes(*lrm_lift.lift_grid(red, cams, r, box, bg))
  assert read(rim)[0] < float(lrm_lift.sample_voxels(coarse, jnp.asarray(rim), box)[0])
  # In the model: planes carry `lift_inputs`' fine grid after the features.
  mv = micro_config(**{"extras.lift_voxels": True, "extras.lift_voxel_resolution":
                       2 * m.plane_resolution})
  images, icams = _inputs(m, 1)
  pv = lrm.init_params(mv, jax.random.key(0))
  out = lrm.LRM(mv).apply({"params": pv}, images, icams)
  mc = lrm.LRMConfig.from_config(mv)
  assert out.shape[-1] == mc.plane_channels == (
      mc.feature_channels + (2 * m.plane_resolution) ** 3 * 4 // m.plane_resolution ** 2)
  _, want_vox = lrm_lift.lift_inputs(images[0], icams[0], m.plane_resolution, mc.render.box,
                                mc.background, "mean", mc.voxel_resolution)
  np.testing.assert_allclose(out[0, ..., mc.feature_channels:], want_vox, atol=1e-6)
  with pytest.raises(Exception, match="lift_voxel_resolution must be 0 or at least"):
    lrm.init_params(micro_config(**{"extras.lift_voxels": True,
                                    "extras.lift_voxel_resolution": 3}), jax.random.key(0))


def test_colour_prior_starts_the_colour_at_the_voxels_colour():
  """`extras.colour_prior`: with the output layer zeroed the MLP's colour is the features' last 3
  channels (the voxel colour; clipped to [0.02, 0.98], then the rgb padding) and the density is
  unchanged; without `lift_voxels` it is a one-line config error."""
  mv = micro_config(**{"extras.lift_voxels": True, "extras.colour_prior": True})
  mc = lrm.LRMConfig.from_config(mv)
  mlp = mc.nerf_mlp()
  width = mc.mlp_input_channels
  feats = jax.random.uniform(jax.random.key(0), (5, width))
  feats = feats.at[0, -3:].set(jnp.asarray([0.0, 0.5, 1.0]))
  p = nn.meta.unbox(mlp.init(jax.random.key(1), feats)["params"])
  last = f"dense_{mc.nerf.num_layers - 1}"
  p[last] = jax.tree.map(jnp.zeros_like, p[last])
  density, rgb = mlp.apply({"params": p}, feats)
  eps = mc.nerf.rgb_padding
  want = np.clip(np.asarray(feats[:, -3:]), 0.02, 0.98) * (1 + 2 * eps) - eps
  np.testing.assert_allclose(rgb, want, atol=1e-6)
  plain = lrm.NeRFMLP(mlp.hidden, mlp.num_layers, mlp.activation, mlp.density_activation,
                      mlp.density_bias, mlp.rgb_padding)
  d0, rgb0 = plain.apply({"params": p}, feats)
  np.testing.assert_allclose(density, d0, atol=0)
  np.testing.assert_allclose(rgb0, 0.5, atol=1e-6)
  with pytest.raises(Exception, match="colour_prior needs model.extras.lift_voxels=True"):
    lrm.LRMConfig.from_config(micro_config(**{"extras.colour_prior": True})).nerf_mlp()


# ---------------------------------------------------------------------------------------------
# InstantMesh's options (issue 27 item 2): each off by default (today's model), each checked here


def _paper_micro(**knobs):
  """The micro LRM without the extras (cameras reach it only through the embedding)."""
  return tiny_configs.micro_lrm_model(**{"extras.plucker_rays": False,
                                         "extras.position_code": False,
                                         "extras.attention_bias": False, **knobs})


def test_attention_out_bias_off_drops_both_output_biases():
  on = nn.meta.unbox(lrm.abstract_params(_paper_micro()))["decoder"]["block_0"]
  off = nn.meta.unbox(lrm.abstract_params(_paper_micro(**{"decoder.attention_out_bias": False})))
  off = off["decoder"]["block_0"]
  for name in ("cross_out", "self_out"):
    assert set(on[name]) == {"kernel", "bias"} and set(off[name]) == {"kernel"}
  for name in ("cross_q", "cross_k", "cross_v", "self_q", "self_k", "self_v"):
    assert set(off[name]) == {"kernel"}   # qkv_bias False as well: no attention bias at all
  assert set(off["fc1"]) == {"kernel", "bias"}   # the MLP keeps its biases


def test_output_norm_eps_is_the_final_norms():
  m = _paper_micro()
  params = nn.meta.unbox(lrm.init_params(m, jax.random.key(0)))
  images, cams = _inputs(m, 1)
  run = lambda mc: lrm.LRM(mc).apply({"params": params}, images, cams)  # noqa: E731
  base = run(m)
  big_out = run(_paper_micro(**{"decoder.output_norm_eps": 10.0}))
  big_blocks = run(_paper_micro(**{"decoder.layer_norm_eps": 10.0}))
  assert rel_err(big_out, base) > 1e-2 and rel_err(big_blocks, base) > 1e-2
  assert rel_err(big_out, big_blocks) > 1e-2   # the two eps reach different norms
  # The final norm alone: eps 10 shrinks its normalised output ≈ √(var / (var + 10)).
  assert float(jnp.std(big_out)) < float(jnp.std(base))


def test_camera_convention_opengl_is_the_c2w_fold():
  """'opengl' embeds c2w @ diag(1, −1, −1, 1): the same planes as 'opencv' given cameras whose c2w
  is folded so; different planes from 'opencv' on the same cameras (non-zero adaLN)."""
  cv, gl = _paper_micro(), _paper_micro(camera_convention="opengl")
  params = _perturb(nn.meta.unbox(lrm.init_params(cv, jax.random.key(0))))
  images, cams = _inputs(cv, 1)
  folded = cams.replace(c2w=cams.c2w @ jnp.asarray(cam_lib.OPENCV_TO_OPENGL))
  a = lrm.LRM(gl).apply({"params": params}, images, cams)
  b = lrm.LRM(cv).apply({"params": params}, images, folded)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  c = lrm.LRM(cv).apply({"params": params}, images, cams)
  assert rel_err(a, c) > 1e-4


def test_plane_axes_zy_reads_the_third_plane_transposed():
  yz, zy = _paper_micro(), _paper_micro(**{"triplane.plane_axes": "zy"})
  r, c = yz.plane_resolution, yz.plane_channels
  planes = jax.random.normal(jax.random.key(0), (3, r, r, c))
  pts = jax.random.uniform(jax.random.key(1), (50, 3), minval=-1.0, maxval=1.0)
  transposed = planes.at[2].set(jnp.swapaxes(planes[2], 0, 1))
  got = lrm.point_features(zy, planes, pts)
  np.testing.assert_allclose(got, lrm.point_features(yz, transposed, pts), atol=1e-6)
  assert rel_err(got, lrm.point_features(yz, planes, pts)) > 1e-2
  # The rig bias of the third plane's tokens follows the configured axes.
  rig = {"extras.attention_bias": True, "extras.attention_bias_init": "rig"}
  t = yz.triplane.token_resolution
  b_yz = lrm.rig_attention_bias(_paper_micro(**rig)).reshape(3, t, t, -1)
  b_zy = lrm.rig_attention_bias(_paper_micro(**rig, **{"triplane.plane_axes": "zy"}))
  b_zy = b_zy.reshape(3, t, t, -1)
  np.testing.assert_array_equal(b_zy[:2], b_yz[:2])
  np.testing.assert_allclose(b_zy[2], np.swapaxes(b_yz[2], 0, 1), atol=1e-5)


def test_midpoint_renderer_gets_raw_density_and_the_activation():
  m = _paper_micro(**{"render.composite": "midpoint", "render.sampling": "eg3d"})
  assert m.vit.pos_embed_resize == "size"
  assert _paper_micro(**{"encoder.pos_embed_resize": "scale_factor"}).vit.pos_embed_resize == \
      "scale_factor"
  kw = lrm.render_kwargs(m)
  assert kw["composite"] == "midpoint" and kw["sampling"] == "eg3d"
  feats = jax.random.normal(jax.random.key(0), (7, m.mlp_input_channels))
  mlp = m.nerf_mlp()
  p = mlp.init(jax.random.key(1), feats)
  raw, rgb_raw = m.nerf_mlp(raw_density=True).apply(p, feats)
  dens, rgb = mlp.apply(p, feats)
  np.testing.assert_allclose(kw["density_activation"](raw), dens, rtol=1e-6)
  np.testing.assert_array_equal(rgb_raw, rgb)
  assert "composite" not in lrm.render_kwargs(_paper_micro())   # default: today's call
  params = nn.meta.unbox(lrm.init_params(m, jax.random.key(0)))
  images, cams = _inputs(m, 1)
  planes = lrm.LRM(m).apply({"params": params}, images, cams)
  o = jnp.asarray([[[0.0, -3.0, 0.2], [0.1, -3.0, 0.0]]])
  d = jnp.asarray([[[0.0, 1.0, 0.0], [0.0, 1.0, 0.05]]])
  s, n = m.render.num_samples, m.render.num_importance
  u = {"coarse": jax.random.uniform(jax.random.key(2), (1, 2, s)),
       "fine": jax.random.uniform(jax.random.key(3), (1, 2, n))}
  out = lrm.render_rays(m, params, planes, o, d, uniforms=u)
  again = lrm.render_rays(m, params, planes, o, d, uniforms=u)
  np.testing.assert_array_equal(out["rgb"], again["rgb"])
  assert out["rgb"].shape == (1, 2, 3) and np.all(np.isfinite(out["rgb"]))
  with pytest.raises(ValueError, match="sampling='eg3d' and model.render.composite='midpoint' go"):
    _paper_micro(**{"render.composite": "midpoint"})


def test_instantmesh_variants_and_the_paper_sections():
  for v, layers_, ch in (("instantmesh_large", 16, 80), ("instantmesh_base", 12, 40)):
    m = lrm.LRMConfig.from_config(lrm_configs.get_config(v))
    assert (m.decoder.num_layers, m.triplane.channels, m.num_views) == (layers_, ch, 6)
    assert (m.camera_convention, m.triplane.plane_axes, m.render.composite) == \
        ("opengl", "zy", "midpoint")
    assert not m.decoder_modulation and not m.decoder.attention_out_bias
  # Outside tiny every option not in the paper is off.
  for v in ("small", "base", "large", "instantmesh_large"):
    x = lrm.LRMConfig.from_config(lrm_configs.get_config(v)).extras
    assert not any([x.plucker_rays, x.position_code, x.attention_bias, x.lift_concat,
                    x.lift_voxels, x.colour_prior]) and x.lift == "none"
