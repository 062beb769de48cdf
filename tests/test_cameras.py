"""Camera geometry against analytic answers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from instant3d_jax import cameras as C


def _all_rig_cameras():
  rig = C.instant3d_rig(512)
  ev, inp = C.gso_eval_rig(512)
  return [("instant3d", rig), ("gso_eval", ev), ("gso_input", inp)]


@pytest.mark.parametrize("name,cams", _all_rig_cameras())
def test_origin_projects_to_image_centre(name, cams):
  uv, z = C.project_points(cams, jnp.zeros(cams.batch_shape + (3,)))
  np.testing.assert_allclose(uv, 256.0, atol=1e-3, err_msg=name)
  np.testing.assert_allclose(z, 2.7, rtol=1e-5)


def test_point_in_front_has_positive_depth_and_behind_negative():
  cam = C.orbit_camera(30.0, 60.0, 2.5, 50.0, 64, 64)
  pos = cam.c2w[:3, 3]
  _, z_front = C.project_points(cam, 0.5 * pos)      # between camera and origin
  _, z_back = C.project_points(cam, 2.0 * pos)       # behind the camera
  assert z_front > 0 and z_back < 0


def test_azimuth0_elevation0_on_plus_x_looking_minus_x_image_up_is_world_z():
  cam = C.orbit_camera(0.0, 0.0, 2.0, 50.0, 32, 32)
  c2w = np.asarray(cam.c2w)
  np.testing.assert_allclose(c2w[:3, 3], [2.0, 0.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(c2w[:3, 2], [-1.0, 0.0, 0.0], atol=1e-6)  # forward
  np.testing.assert_allclose(c2w[:3, 1], [0.0, 0.0, -1.0], atol=1e-6)  # image down = -z
  np.testing.assert_allclose(c2w[:3, 0], [0.0, 1.0, 0.0], atol=1e-6)   # right = +y
  # A point above the origin projects above the centre (smaller v).
  uv, _ = C.project_points(cam, jnp.array([0.0, 0.0, 0.5]))
  assert uv[1] < 16.0 and abs(float(uv[0]) - 16.0) < 1e-4


def test_azimuth_counter_clockwise_from_plus_z():
  cam = C.orbit_camera(0.0, 90.0, 3.0, 50.0, 8, 8)
  np.testing.assert_allclose(cam.c2w[:3, 3], [0.0, 3.0, 0.0], atol=1e-5)


def test_elevation_azimuth_round_trip():
  rng = np.random.default_rng(0)
  el = rng.uniform(-80, 80, 50)
  az = rng.uniform(0, 360, 50)
  d = rng.uniform(1.5, 3.0, 50)
  cams = C.orbit_camera(el, az, d, 40.0, 16, 16)
  el2, az2, d2 = C.elevation_azimuth_distance(cams.c2w)
  np.testing.assert_allclose(el2, el, atol=1e-3)
  np.testing.assert_allclose(np.mod(az2 - az + 180, 360) - 180, 0, atol=1e-3)
  np.testing.assert_allclose(d2, d, rtol=1e-5)
  # Rotation part is orthonormal with det +1.
  R = np.asarray(cams.c2w[:, :3, :3])
  np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape),
                             atol=1e-5)
  np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-5)


def test_instant3d_rig_values_and_grid_order():
  rig = C.instant3d_rig(512)
  assert rig.batch_shape == (4,)
  el, az, d = C.elevation_azimuth_distance(rig.c2w)
  np.testing.assert_allclose(el, 20.0, atol=1e-4)
  np.testing.assert_allclose(az, [0, 90, 180, 270], atol=1e-3)
  np.testing.assert_allclose(d, 2.7, rtol=1e-6)
  np.testing.assert_allclose(rig.K[0, 0, 0], 548.99, atol=0.01)  # paper_facts §A


def test_gso_rig_layout():
  ev, inp = C.gso_eval_rig(512)
  assert ev.batch_shape == (64,) and inp.batch_shape == (4,)
  el, az, _ = C.elevation_azimuth_distance(ev.c2w)
  np.testing.assert_allclose(el.reshape(4, 16), np.repeat([[0], [20], [40], [60]], 16, 1),
                             atol=1e-3)
  np.testing.assert_allclose(az[:16], np.arange(16) * 22.5, atol=1e-3)
  _, az_in, _ = C.elevation_azimuth_distance(inp.c2w)
  np.testing.assert_allclose(az_in, [45, 135, 225, 315], atol=1e-3)
  # Rotating the world by −45° about z puts the GSO inputs on the Instant3D rig.
  rotated = C.rotate_about_z(inp, -45.0)
  np.testing.assert_allclose(rotated.c2w, C.instant3d_rig(512).c2w, atol=1e-5)


def test_camera_rays_unit_and_centre_ray_hits_origin():
  cam = C.orbit_camera(20.0, 30.0, 2.7, 50.0, 6, 4)
  o, d = C.camera_rays(cam)
  assert o.shape == (4, 6, 3) and d.shape == (4, 6, 3)
  np.testing.assert_allclose(jnp.linalg.norm(d, axis=-1), 1.0, atol=1e-6)
  # Each ray re-projects to its own pixel centre.
  uv, _ = C.project_points(cam, o + 1.7 * d)
  jj, ii = np.meshgrid(np.arange(6) + 0.5, np.arange(4) + 0.5)
  np.testing.assert_allclose(uv[..., 0], jj, atol=1e-4)
  np.testing.assert_allclose(uv[..., 1], ii, atol=1e-4)


def test_batched_rays_and_embedding_under_jit_vmap():
  rig = C.instant3d_rig(8)
  o, d = jax.jit(C.camera_rays)(rig)
  assert o.shape == (4, 8, 8, 3)
  o1, d1 = C.camera_rays(rig[2])
  np.testing.assert_allclose(d[2], d1, atol=1e-6)
  emb = jax.vmap(C.camera_embedding)(rig)
  assert emb.shape == (4, C.CAMERA_EMBED_DIM)
  np.testing.assert_allclose(emb[0, :12], np.asarray(rig.c2w[0, :3, :4]).reshape(-1), atol=1e-6)
  np.testing.assert_allclose(emb[0, 12:], [548.99 / 512, 548.99 / 512, 0.5, 0.5], atol=1e-4)


def test_crop_and_resize_keep_rays():
  cam = C.orbit_camera(10.0, 200.0, 2.0, 45.0, 16, 16)
  _, d_full = C.camera_rays(cam)
  _, d_crop = C.camera_rays(C.crop_camera(cam, 3, 5, 4, 6))
  np.testing.assert_allclose(d_crop, d_full[3:7, 5:11], atol=1e-6)
  small = C.resize_camera(cam, 8, 8)
  _, d_small = C.camera_rays(small)
  # Pixel (0,0) of the half-size image covers full-res pixels (0..1, 0..1): its centre is the
  # corner shared by those four, i.e. the normalised mean of their four rays is close.
  uv, _ = C.project_points(cam, d_small[0, 0] + cam.c2w[:3, 3])
  np.testing.assert_allclose(uv, [1.0, 1.0], atol=1e-4)


def test_stack_cameras_rejects_mixed_resolutions():
  a = C.orbit_camera(0, 0, 2, 50, 8, 8)
  b = C.orbit_camera(0, 0, 2, 50, 16, 16)
  with pytest.raises(ValueError, match="one resolution"):
    C.stack_cameras([a, b])
  assert C.stack_cameras([a, a]).batch_shape == (2,)


def test_camera_embedding_opengl_fold():
  """'opengl' negates the c2w's y and z columns (OpenCV → OpenGL camera axes); the position and
  intrinsics are unchanged."""
  cam = C.orbit_camera(20.0, 40.0, 2.7, 50.0, 64, 48)
  cv = np.asarray(C.camera_embedding(cam))
  gl = np.asarray(C.camera_embedding(cam, convention="opengl"))
  c2w = np.asarray(cam.c2w)[:3, :4] @ np.diag([1.0, -1.0, -1.0, 1.0])
  np.testing.assert_allclose(gl[:12], c2w.reshape(12), atol=1e-7)
  np.testing.assert_array_equal(gl[12:], cv[12:])
  np.testing.assert_array_equal(gl.reshape(-1)[[3, 7, 11]], cv.reshape(-1)[[3, 7, 11]])
  # OpenGL: the camera looks down its −z axis, i.e. the third column points away from the origin.
  assert np.dot(c2w[:, 2], c2w[:, 3]) > 0
  with pytest.raises(ValueError, match="convention must be one of"):
    C.camera_embedding(cam, convention="blender")
