"""The faster renderer (issue 31, item 2): the fused triplane field, per-ray random numbers, the
chunk from the device's memory.

Oracles: `volume_render` over all rays at once with the plain field (`make_triplane_field` + the
NeRF MLP module, what `render_image` / `lrm.render_views` rendered before), and `volume_render`
given the uniforms explicitly. Measured here (CPU, fp32): key=None, fused vs plain renders differ
by ≤ 7.1e-7 (rgb, depth, opacity, weights), `lrm.render_views` vs `render_image` over
`lrm.field_fn` by ≤ 7.2e-7 (depth; rgb 1.2e-7); with a key, chunk 64 vs 256 by ≤ 6.0e-7 (depth;
rgb 3.0e-7; before this change 2e-2 and more: the random numbers were drawn per chunk); the
fused field's gradients vs the plain field's: relative 1.6e-7. Slow-marked variants run with
`make test-all`.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from instant3d_jax import cameras, errors, rendering
from instant3d_jax.models import lrm
from tests import tiny_configs, tolerance

KW = dict(num_samples=16, num_importance=16, background=jnp.array([0.0, 1.0, 0.5]))


def _decoder(C, hidden, seed=0):
  """A 4-layer SiLU NeRF MLP on 3C features, random parameters from numpy."""
  decoder = lrm.NeRFMLP(hidden=hidden, num_layers=4, activation="silu")
  rng = np.random.default_rng(seed)
  shapes = nn.meta.unbox(jax.eval_shape(decoder.init, jax.random.PRNGKey(0), jnp.zeros((1, 3 * C))))
  variables = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.5, jnp.float32),
                           shapes)
  planes = jnp.asarray(rng.normal(size=(3, 8, 8, C)), jnp.float32)
  return decoder, variables, planes


def _fields(C, hidden, dtype=jnp.float32):
  decoder, variables, planes = _decoder(C, hidden)
  plain = rendering.make_triplane_field(planes, lambda f: decoder.apply(variables, f))
  p = variables["params"]
  dense = [(p[f"dense_{i}"]["kernel"], p[f"dense_{i}"]["bias"]) for i in range(4)]
  fused = rendering.make_mlp_triplane_field(planes, dense, jax.nn.silu, decoder.outputs,
                                            dtype=dtype)
  return plain, fused


CAM = cameras.orbit_camera(10.0, 60.0, 2.0, 50.0, 16, 12)   # 192 rays, some miss the box


def test_volume_render_with_a_key_is_one_uniform_block():
  """A direct `volume_render(key=k)` (the trainers' random rays, hence `make demo`'s parameter
  hash) draws `uniform(k, [N, S + M])`, coarse first: unchanged by the per-ray uniforms of
  `render_image`. Exact."""
  plain, _ = _fields(4, 16)
  o, d = cameras.camera_rays(CAM)
  o, d = o.reshape(-1, 3), d.reshape(-1, 3)
  key = jax.random.PRNGKey(3)
  a = jax.jit(lambda o, d: rendering.volume_render(plain, o, d, key=key, **KW))(o, d)
  u = jax.random.uniform(key, (o.shape[0], 32))
  b = jax.jit(lambda o, d, u: rendering.volume_render(
      plain, o, d, uniforms={"coarse": u[:, :16], "fine": u[:, 16:]}, **KW))(o, d, u)
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))


@pytest.mark.parametrize("C,hidden", [(4, 16), (32, 16)], ids=["unfolded", "folded"])
def test_fused_field_renders_equal_today_without_a_key(C, hidden):
  """key=None, fp32: the fused field through `render_image` (any chunk, 'auto' included)
  equals the plain field over all rays at once (what `render_image` gave before) within 1e-5."""
  plain, fused = _fields(C, hidden)
  o, d = cameras.camera_rays(CAM)
  ref = jax.jit(lambda o, d: rendering.volume_render(plain, o, d, **KW))(o, d)
  for chunk in (37, "auto", 0):
    out = jax.jit(lambda ch=chunk: rendering.render_image(fused, CAM, chunk=ch, **KW))()
    for k in ("rgb", "depth", "opacity", "weights"):
      tolerance.within(f"rendering_fast.fused_vs_plain.{k}", out[k], ref[k], 1e-5)


def test_render_image_with_a_key_draws_per_ray_independent_of_chunk():
  plain, _ = _fields(4, 16)
  key = jax.random.PRNGKey(7)
  a = jax.jit(lambda: rendering.render_image(plain, CAM, chunk=64, key=key, **KW))()
  b = jax.jit(lambda: rendering.render_image(plain, CAM, chunk=256, key=key, **KW))()
  for k in ("rgb", "depth", "opacity", "weights"):
    tolerance.within(f"rendering_fast.key_chunk_64_vs_256.{k}", a[k], b[k], 1e-6)
  # Ray i's uniforms are uniform(fold_in(key, i)), i row-major over the image.
  o, d = cameras.camera_rays(CAM)
  u = rendering.ray_uniforms(key, jnp.arange(o.shape[0] * o.shape[1], dtype=jnp.uint32), 32)
  u = u.reshape(o.shape[:2] + (32,))
  ref = jax.jit(lambda o, d, u: rendering.volume_render(
      plain, o, d, uniforms={"coarse": u[..., :16], "fine": u[..., 16:]}, **KW))(o, d, u)
  tolerance.within("rendering_fast.key_vs_replayed_uniforms.rgb", a["rgb"], ref["rgb"], 1e-6)
  # The key is used: another key or none gives other samples.
  none = jax.jit(lambda: rendering.render_image(plain, CAM, chunk=64, **KW))()
  assert float(jnp.max(jnp.abs(a["depth"] - none["depth"]))) > 1e-3


def test_bf16_hidden_matmuls_are_close_not_equal():
  """`dtype=bfloat16`: the hidden layers' matmuls in bf16 (fp32 accumulation); positions,
  lookup, first layer and compositing stay fp32, so the render stays close."""
  plain, fused = _fields(32, 16)
  _, low = _fields(32, 16, dtype=jnp.bfloat16)
  a = jax.jit(lambda: rendering.render_image(fused, CAM, chunk=128, **KW))()
  b = jax.jit(lambda: rendering.render_image(low, CAM, chunk=128, **KW))()
  err = float(jnp.max(jnp.abs(a["rgb"] - b["rgb"])))
  assert 0 < err < 0.05, err


class _FakeDevice:
  def __init__(self, limit):
    self.limit = limit

  def memory_stats(self):
    return {"bytes_limit": self.limit, "bytes_in_use": 0}


def test_auto_chunk_from_device_memory():
  # 80 GiB · 0.25 / (128 samples · 2048 B) = 81920 rays → 65536 (the power of two below, the cap).
  assert rendering.auto_chunk(128, 2048, device=_FakeDevice(80 << 30)) == 65536
  # 16 GiB: 16384; a tiny device clamps at min_chunk.
  assert rendering.auto_chunk(128, 2048, device=_FakeDevice(16 << 30)) == 16384
  assert rendering.auto_chunk(128, 2048, device=_FakeDevice(1 << 20)) == 256
  assert rendering.device_memory_bytes(_FakeDevice(123))[0] == 123
  # The CPU reports no memory stats: the host's memory, and at most HOST_MAX_CHUNK.
  chunk = rendering.auto_chunk(128)
  assert 256 <= chunk <= rendering.HOST_MAX_CHUNK and chunk & (chunk - 1) == 0
  with pytest.raises(ValueError, match="chunk must be an int >= 1, or 0 / 'auto'"):
    rendering.render_image(lambda p, d: None, CAM, chunk=-1, **KW)


def _micro_scene(knobs: dict, *, objects: int, size: int, seed: int):
  """The micro LRM with `knobs`, its params (key 1), random planes of `objects` objects (numpy
  `seed`), the first `objects` rig cameras at `size`² and the render keywords."""
  m = tiny_configs.micro_lrm_model(**knobs)
  params = nn.meta.unbox(lrm.init_params(m, jax.random.key(1)))
  rng = np.random.default_rng(seed)
  R, C = m.plane_resolution, m.feature_channels
  planes = jnp.asarray(rng.normal(size=(objects, 3, R, R, C)), jnp.float32)
  _, cams = lrm.dummy_inputs(m, objects)
  cams = cameras.resize_camera(cams[:, :objects], size, size)
  return m, params, planes, cams, lrm.render_kwargs(m)


@pytest.mark.parametrize("knobs", [
    pytest.param({}, marks=pytest.mark.slow),
    {"triplane.channels": 16},
    pytest.param({"triplane.channels": 16, "render.composite": "midpoint",
                  "render.sampling": "eg3d", "triplane.plane_axes": "zy"}, marks=pytest.mark.slow),
], ids=["unfolded", "folded", "folded_eg3d_zy"])
def test_render_views_fused_equals_field_fn(knobs):
  """`lrm.render_views` (fused field, auto chunk) = `render_image` over `lrm.field_fn` within
  1e-5 without a key; with a key the images do not depend on the chunk."""
  m, params, planes, cams, kw = _micro_scene(
      {"render.num_samples": 8, "render.num_importance": 8, **knobs}, objects=2, size=6, seed=4)
  out = jax.jit(lambda p, pl: lrm.render_views(m, p, pl, cams, chunk=0,
                                               outputs=("rgb", "depth", "opacity")))(params, planes)

  def ref_one(p, pl, cam):
    return rendering.render_image(lrm.field_fn(m, p, pl), cam, chunk=7,
                                  outputs=("rgb", "depth", "opacity"), **kw)
  ref = jax.jit(jax.vmap(ref_one, in_axes=(None, 0, 0)))(params, planes, cams)
  for k in ("rgb", "depth", "opacity"):
    tolerance.within(f"rendering_fast.render_views_vs_field_fn.{k}", out[k], ref[k], 1e-5)
  key = jax.random.key(5)
  a = jax.jit(lambda p, pl: lrm.render_views(m, p, pl, cams, chunk=5, key=key))(params, planes)
  b = jax.jit(lambda p, pl: lrm.render_views(m, p, pl, cams, chunk=16, key=key))(params, planes)
  tolerance.within("rendering_fast.render_views_key_chunk_5_vs_16.rgb", a["rgb"], b["rgb"], 1e-6)


@pytest.mark.slow
def test_render_views_gradients_match_field_fn():
  """Crop training renders through `render_views`: the fused field's gradients w.r.t. the NeRF
  parameters and the planes equal the plain field's (relative error ≤ 1e-4)."""
  m, params, planes, cams, kw = _micro_scene(
      {"triplane.channels": 16, "render.num_samples": 8, "render.num_importance": 8},
      objects=1, size=5, seed=6)

  def loss_fused(nerf, pl):
    p = {**params, "nerf": nerf}
    return jnp.mean(lrm.render_views(m, p, pl, cams, chunk=8, outputs=("rgb",))["rgb"] ** 2)

  def loss_plain(nerf, pl):
    p = {**params, "nerf": nerf}
    one = lambda pl, cam: rendering.render_image(lrm.field_fn(m, p, pl), cam, chunk=8,  # noqa: E731
                                                 outputs=("rgb",), **kw)["rgb"]
    return jnp.mean(jax.vmap(one)(pl, cams) ** 2)

  ga = jax.jit(jax.grad(loss_fused, argnums=(0, 1)))(params["nerf"], planes)
  gb = jax.jit(jax.grad(loss_plain, argnums=(0, 1)))(params["nerf"], planes)
  for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    tolerance.within("rendering_fast.render_views_grad_vs_field_fn", x, y, 1e-4, metric="rel")


def test_render_config_chunk_auto():
  assert tiny_configs.micro_lrm_model(**{"render.chunk": 0}).render.chunk == 0
  with pytest.raises(errors.ConfigError, match="render.chunk"):
    tiny_configs.micro_lrm_model(**{"render.chunk": -1})
