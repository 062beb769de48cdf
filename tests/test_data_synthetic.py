"""The procedural world: exact ray casting against independent oracles, determinism, splits."""
import os

import numpy as np
import pytest

from instant3d_jax.configs import data as data_config
from data_pipeline import primitives as P
from data_pipeline import procedural, records
from instant3d_jax import cameras as C

PARAMS = {"sphere": (0.6,), "box": (0.5, 0.3, 0.7), "cylinder": (0.4, 0.6), "cone": (0.5, 0.7),
          "torus": (0.6, 0.2)}
STEP = 0.002


def _random_rays(rng, n):
  o = rng.normal(size=(n, 3))
  o = 3.0 * o / np.linalg.norm(o, axis=1, keepdims=True)
  d = rng.uniform(-0.9, 0.9, size=(n, 3)) - o
  return o, d / np.linalg.norm(d, axis=1, keepdims=True)


@pytest.mark.parametrize("shape", list(PARAMS))
def test_intersection_matches_point_membership_marching(shape):
  """Oracle: march each ray in 0.002 steps and take the first point inside (inside_local)."""
  rng = np.random.default_rng(1)
  o, d = _random_rays(rng, 1500)
  prm = PARAMS[shape]
  t, n = P._INTERSECT[shape](o, d, prm)
  ts = np.arange(0.0, 6.0, STEP)
  inside = P.inside_local(shape, prm, o[:, None] + ts[None, :, None] * d[:, None])
  hit_bf = inside.any(1)
  t_bf = np.where(hit_bf, ts[inside.argmax(1)], np.inf)
  hit = np.isfinite(t)
  assert hit.sum() > 300  # the test exercises hits and misses
  # Rays whose chord is shorter than a step can disagree (grazing); allow a handful.
  assert (hit != hit_bf).sum() <= 3, f"{(hit != hit_bf).sum()} hit/miss disagreements"
  both = hit & hit_bf
  assert np.all(t_bf[both] >= t[both] - 1e-9) and np.all(t_bf[both] - t[both] <= STEP + 1e-9)
  # Normals: unit length and outward (a step along +n leaves the solid, along −n enters it).
  p = o[hit] + t[hit, None] * d[hit]
  np.testing.assert_allclose(np.linalg.norm(n[hit], axis=1), 1.0, atol=1e-9)
  out = P.inside_local(shape, prm, p + 1e-4 * n[hit])
  inn = P.inside_local(shape, prm, p - 1e-4 * n[hit])
  assert (~out).mean() > 0.995 and inn.mean() > 0.995


def test_torus_known_hits():
  R, r = 0.6, 0.2
  o = np.array([[3.0, 0, 0], [R, 0, 3.0], [0, 0, 3.0], [3.0, 0, r - 1e-7], [3.0, 0, r + 1e-3]])
  d = np.array([[-1.0, 0, 0], [0, 0, -1.0], [0, 0, -1.0], [-1.0, 0, 0], [-1.0, 0, 0]])
  t, n = P.intersect_torus(o, d, (R, r))
  np.testing.assert_allclose(t[0], 3.0 - (R + r), atol=1e-10)  # outer equator
  np.testing.assert_allclose(n[0], [1.0, 0, 0], atol=1e-9)
  np.testing.assert_allclose(t[1], 3.0 - r, atol=1e-10)  # top of the tube
  assert np.isinf(t[2])  # straight down the hole
  np.testing.assert_allclose(t[3], 3.0 - R, atol=1e-3)  # grazing the top of the tube
  assert np.isinf(t[4])  # just above it


def test_placed_primitive_transforms_rays():
  """A rotated, translated box equals the axis-aligned box seen in its local frame."""
  rng = np.random.default_rng(3)
  rot = P.random_rotation(rng)
  np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
  prim = P.Primitive("box", (0.3, 0.2, 0.4), (0.2, -0.1, 0.3), tuple(map(tuple, rot)), "red")
  o, d = _random_rays(rng, 800)
  t, n = P.intersect_primitive(prim, o, d)
  t_loc, n_loc = P.intersect_box((o - prim.center) @ rot, d @ rot, prim.params)
  np.testing.assert_allclose(t, t_loc, atol=1e-12)
  hit = np.isfinite(t)
  np.testing.assert_allclose(n[hit], n_loc[hit] @ rot.T, atol=1e-12)


def test_pixel_rays_match_cameras_module():
  cam = C.orbit_camera(35.0, 120.0, 2.5, 50.0, 12, 10)
  o_ref, d_ref = C.camera_rays(cam)
  o, d = P.pixel_rays_np(np.asarray(cam.c2w), np.asarray(cam.K), 12, 10)
  np.testing.assert_allclose(o, np.asarray(o_ref).reshape(-1, 3), atol=1e-5)
  np.testing.assert_allclose(d, np.asarray(d_ref).reshape(-1, 3), atol=1e-5)


def test_sphere_render_silhouette_and_shading():
  """Oracle: the silhouette of a sphere of radius r at distance D is the cone of half-angle
  asin(r/D) around the view axis; the centre pixel sees the normal pointing at the camera."""
  r, res = 0.7, 32
  cam = C.instant3d_rig(res)[1]
  scene = [P.Primitive("sphere", (r,), (0.0, 0.0, 0.0), tuple(map(tuple, np.eye(3))), "blue")]
  light = P.Lighting()
  rgba = P.render_rgba(scene, np.asarray(cam.c2w), np.asarray(cam.K), res, res, 1, light)
  _, dirs = C.camera_rays(cam)
  pos = np.asarray(cam.c2w)[:3, 3]
  cosang = np.asarray(dirs) @ (-pos / np.linalg.norm(pos))
  expected = cosang >= np.cos(np.arcsin(r / np.linalg.norm(pos)))
  assert (rgba[..., 3] > 0.5).sum() > 100
  np.testing.assert_array_equal(rgba[..., 3] > 0.5, expected)
  n = pos / np.linalg.norm(pos)
  ldir = np.asarray(light.direction) / np.linalg.norm(light.direction)
  want = np.asarray(P.COLOURS["blue"]) * (light.ambient + (1 - light.ambient) * max(0.0, n @ ldir))
  # The 4 centre pixels sit symmetrically around the view axis: first-order deviations of their
  # normals from n cancel in the mean.
  np.testing.assert_allclose(rgba[15:17, 15:17, :3].reshape(-1, 3).mean(0), want, atol=3e-3)


def test_supersampled_alpha_is_pixel_coverage():
  r, res = 0.5, 24
  cam = C.instant3d_rig(res)[0]
  scene = [P.Primitive("sphere", (r,), (0.0, 0.0, 0.0), tuple(map(tuple, np.eye(3))), "red")]
  a = P.render_rgba(scene, np.asarray(cam.c2w), np.asarray(cam.K), res, res, 4)[..., 3]
  assert 0 < ((a > 0) & (a < 1)).sum() < 0.3 * res * res  # soft edge pixels exist
  # Disc area in pixels: the silhouette cone's radius on the image plane, f·tan(asin(r/D)).
  f = float(cam.K[1, 1])
  rad = f * np.tan(np.arcsin(r / 2.7))
  np.testing.assert_allclose(a.sum(), np.pi * rad ** 2, rtol=0.02)


def test_captions_name_shapes_colours_and_relations():
  eye = tuple(map(tuple, np.eye(3)))
  cube = P.Primitive("box", (0.3, 0.3, 0.3), (0.5, 0, 0), eye, "red")
  ball = P.Primitive("sphere", (0.2,), (-0.5, 0, 0), eye, "blue", "small")
  assert P.caption([cube, ball]) == "a red cube beside a small blue sphere"
  high = P.Primitive("cone", (0.2, 0.3), (0.0, 0.0, 0.7), eye, "orange", "large")
  assert P.caption([high, ball.__class__("torus", (0.3, 0.1), (0, 0, -0.3), eye, "green")]) == \
      "a large orange cone above a green ring"
  assert P.caption([cube, ball, high]) == \
      "a red cube, a small blue sphere and a large orange cone"


def test_random_scenes_stay_inside_the_unit_ball():
  rng = np.random.default_rng(0)
  shapes = set()
  for _ in range(200):
    scene = P.sample_scene(rng)
    assert 1 <= len(scene) <= 3 and len({p.colour for p in scene}) == len(scene)
    for p in scene:
      shapes.add(p.shape)
      assert np.linalg.norm(p.center) + P.bounding_radius(p.shape, p.params) <= 1.0 + 1e-9
  assert shapes == set(P.SHAPES)


def test_scene_stays_in_frame_from_the_closest_views():
  """Every primitive of 100 random scenes projects inside views at the minimum distance 2.4."""
  cfg = data_config.get_config("tiny")
  cam = C.orbit_camera(np.array([-10.0, 30.0, 65.0]), np.array([0.0, 130.0, 250.0]),
                       cfg.sup_distance_range[0], cfg.fov_deg, 32, 32)
  for i in range(100):
    scene, _ = procedural.sample_object(cfg, i)
    a = P.render_rgba(scene, np.asarray(cam.c2w), np.asarray(cam.K), 32, 32)[..., 3]
    border = np.concatenate([a[:, 0], a[:, -1], a[:, :, 0], a[:, :, -1]], -1)
    assert border.max() == 0.0, f"object {i} touches the image border"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  cfg = data_config.get_config("tiny")
  out = str(tmp_path_factory.mktemp("synthetic") / "data")
  meta = procedural.generate(cfg, out, progress=False)
  return cfg, out, meta


def test_dataset_layout_splits_and_groups(tiny):
  cfg, out, meta = tiny
  assert {k: v["num_objects"] for k, v in meta["splits"].items()} == \
      {"train": 6, "val": 3, "test": 3}
  seen = []
  for split in records.SPLITS:
    src = records.RecordSource(out, split)
    for rec in src:
      seen.append(rec["index"])
      assert rec["split"] == split and rec["object_id"] == procedural.object_id(rec["index"])
      groups = rec["groups"]
      want = {"rig": 4, "sup": cfg.num_sup_views}
      if split in ("val", "test"):
        want.update(eval=64, eval_inputs=4)
      assert {g: len(v["images"]) for g, v in groups.items()} == want
      scene = P.scene_from_json(rec["scene"])
      assert all(p.colour in rec["caption"] for p in scene)
      img = records.group_rgba(rec, "rig", [0])
      assert img.shape == (1, 16, 16, 4) and img[..., 3].max() == 255 and img[..., 3].min() == 0
      np.testing.assert_allclose(groups["eval_inputs"]["c2w"] if "eval_inputs" in groups else
                                 groups["rig"]["c2w"],
                                 np.asarray((C.gso_eval_rig(16)[1] if "eval_inputs" in groups else
                                             C.instant3d_rig(16)).c2w), atol=1e-6)
      el, _, dist = C.elevation_azimuth_distance(groups["sup"]["c2w"])
      assert np.all((np.asarray(el) >= -10.01) & (np.asarray(el) <= 65.01))
      assert np.all((np.asarray(dist) >= 2.4 - 1e-4) & (np.asarray(dist) <= 3.0 + 1e-4))
  assert sorted(seen) == list(range(12))  # every object once, splits disjoint


def test_generation_is_deterministic_and_prefix_stable(tiny, tmp_path):
  cfg, out, _ = tiny
  small = data_config.get_config("tiny")
  small.num_objects = 4
  small.split_fractions = (1.0, 0.0, 0.0)
  procedural.generate(small, str(tmp_path / "small"), progress=False)
  a = records.RecordSource(out, "train")
  b = records.RecordSource(str(tmp_path / "small"), "train")
  for i in range(4):  # object i does not depend on the data set size
    assert a.raw(i) == b.raw(i)
  # Another seed gives other scenes.
  other = data_config.get_config("tiny")
  other.seed = 1
  assert procedural.sample_object(other, 0)[0] != procedural.sample_object(cfg, 0)[0]


def test_ensure_dataset_reuses_and_refuses_other_config(tiny):
  cfg, out, meta = tiny
  before = os.path.getmtime(os.path.join(out, records.METADATA_FILE))
  assert procedural.ensure_dataset(cfg, out, progress=False) == meta
  assert os.path.getmtime(os.path.join(out, records.METADATA_FILE)) == before
  other = data_config.get_config("tiny")
  other.resolution = 32
  with pytest.raises(records.DataError, match=r"different config \(differs in \['resolution'\]"):
    procedural.ensure_dataset(other, out, progress=False)


def test_contact_sheet_of_one_object(tiny, tmp_path):
  from PIL import Image
  from data_pipeline.contact_sheet import object_contact_sheet
  _, out, _ = tiny
  path = str(tmp_path / "sheet.png")
  rec = object_contact_sheet(out, path, split="test", index=0, scale=2)
  sheet = np.asarray(Image.open(path).convert("RGB"))
  # Title line + 2 labelled rows of 32² tiles; 8 eval views wide.
  pad, text, tile = 4, 14, 32
  assert sheet.shape == (text + pad + 2 * (text + tile + pad) + pad, 8 * (tile + pad) + pad, 3)
  y0 = text + pad + pad + text
  rig0 = records.group_rgba(rec, "rig", [0])[0]
  want = np.round(P.composite_white(rig0 / 255.0) * 255).astype(np.uint8).repeat(2, 0).repeat(2, 1)
  np.testing.assert_allclose(sheet[y0:y0 + tile, pad:pad + tile].astype(int), want, atol=1)
  assert not os.path.exists(path + ".tmp.png")
