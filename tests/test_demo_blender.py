"""`make demo-blender`'s pieces: the primitives → coloured-mesh exporter
(data_pipeline/primitive_meshes.py) against the primitives' analytic surfaces and colours, the
planned split surviving the importer, and a smoke of the job (instant3d_jax/demos/blender.py)
with a fake renderer (Blender itself: tests/test_render.py)."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from data_pipeline import blender_render, cameras_json, primitive_meshes as pm, primitives as P
from data_pipeline import records
from instant3d_jax import errors
from instant3d_jax.configs import data as data_configs
from instant3d_jax.configs import render as render_configs
from instant3d_jax.demos import blender as demo


def surface_distance(shape, params, q):
  """Signed distance-like value of local points `q [N, 3]` to the analytic surface (0 on it)."""
  x, y, z = q[:, 0], q[:, 1], q[:, 2]
  rho = np.hypot(x, y)
  if shape == "sphere":
    return np.linalg.norm(q, axis=-1) - params[0]
  if shape == "box":
    return np.max(np.abs(q) - np.asarray(params), axis=-1)
  if shape == "cylinder":
    r, h = params
    return np.maximum(rho - r, np.abs(z) - h)
  if shape == "cone":
    r, h = params
    k = r / (2 * h)
    side = (rho - k * (h - z)) / np.sqrt(1 + k * k)  # distance to the slanted side
    return np.maximum(side, np.abs(z) - h)
  if shape == "torus":
    R, r = params
    return np.hypot(rho - R, z) - r
  raise ValueError(shape)


def chord_error(shape, params, tess=pm.Tessellation()):
  """How far inside the analytic surface a flat face may lie (plus float32 slack)."""
  if shape == "box":
    return 1e-6
  if shape == "sphere":
    # icosphere: a face of circumradius ρ lies r − sqrt(r² − ρ²) deep; ρ < 0.8 r / 2^s
    rho = 0.8 * params[0] / 2 ** tess.sphere_subdivisions
    return params[0] - np.sqrt(params[0] ** 2 - rho ** 2) + 1e-6
  if shape in ("cylinder", "cone"):
    return params[0] * (1 - np.cos(np.pi / tess.sections)) + 1e-6
  R, r = params
  return (R + r) * (1 - np.cos(np.pi / tess.torus_major)) + r * (1 - np.cos(
      np.pi / tess.torus_minor)) + 1e-6


def analytic_volume(shape, params):
  if shape == "sphere":
    return 4 / 3 * np.pi * params[0] ** 3
  if shape == "box":
    return 8 * np.prod(params)
  if shape == "cylinder":
    return np.pi * params[0] ** 2 * 2 * params[1]
  if shape == "cone":
    return np.pi * params[0] ** 2 * 2 * params[1] / 3
  return 2 * np.pi ** 2 * params[0] * params[1] ** 2


def one_of_each():
  rng = np.random.default_rng(3)
  params = {"sphere": (0.4,), "box": (0.3, 0.2, 0.45), "cylinder": (0.25, 0.4),
            "cone": (0.35, 0.3), "torus": (0.35, 0.12)}
  colours = list(P.COLOURS)
  return [P.Primitive(shape=s, params=p, center=tuple(rng.uniform(-0.3, 0.3, 3)),
                      rotation=tuple(map(tuple, P.random_rotation(rng))), colour=colours[i])
          for i, (s, p) in enumerate(params.items())]


@pytest.mark.parametrize("prim", one_of_each(), ids=lambda p: p.shape)
def test_mesh_points_lie_on_the_analytic_surface_and_carry_the_colour(prim):
  import trimesh
  mesh = pm.primitive_mesh(prim)
  assert mesh.is_watertight
  pts, _ = trimesh.sample.sample_surface(mesh, 5000, seed=0)
  pts = np.concatenate([np.asarray(pts), mesh.vertices])
  Rm, c = np.asarray(prim.rotation), np.asarray(prim.center)
  local = (pts - c) @ Rm  # world → local: Rᵀ(p − c)
  d = surface_distance(prim.shape, prim.params, local)
  tol = chord_error(prim.shape, prim.params)
  # Faces are chords: inside a convex surface, at most the chord error away; the torus's inner,
  # saddle-shaped side bulges out by as much.
  assert d.max() < (tol if prim.shape == "torus" else 1e-6), (prim.shape, d.max())
  assert d.min() > -tol, (prim.shape, d.min(), tol)
  # vertices sit on the surface
  dv = surface_distance(prim.shape, prim.params, (mesh.vertices - c) @ Rm)
  assert np.abs(dv).max() < 1e-6
  # the same solid: the mesh's volume is the primitive's, up to the chord slivers
  want = analytic_volume(prim.shape, prim.params)
  assert mesh.volume == pytest.approx(want, rel=1e-9 if prim.shape == "box" else 0.02)
  assert np.all(mesh.visual.face_colors == np.append(np.round(prim.rgb * 255), 255))


def test_glb_round_trip_axes_colours_and_identity_normalisation(tmp_path):
  import trimesh
  scene = one_of_each()
  path = pm.export_glb(scene, str(tmp_path / "obj.glb"))
  back = pm.load_glb_world(path)
  assert len(back) == len(scene)
  for prim, (mesh, colour) in zip(scene, back):
    want = pm.primitive_mesh(prim)
    np.testing.assert_allclose(mesh.vertices, want.vertices, atol=1e-6)
    np.testing.assert_allclose(colour[:3], pm.srgb_to_linear(prim.rgb), atol=0.5 / 255 + 1e-6)
    assert colour[3] == 1.0
  # What Blender's script sees (the importer's y-up → z-up on everything, the anchor included):
  # bounding-box centre 0 and farthest vertex 1, so its normalisation is the identity.
  whole = trimesh.load(path, force="mesh", process=False)
  v = np.asarray(whole.vertices) @ blender_render._AXES["y_up_to_z_up"][:3, :3].T
  centre = (v.min(0) + v.max(0)) / 2
  assert np.abs(centre).max() < 1e-4
  assert abs(np.linalg.norm(v - centre, axis=-1).max() - 1.0) < 1e-6
  # the anchor is transparent and has no visible area
  sc = trimesh.load(path, force="scene", process=False)
  anchor = sc.geometry[pm.ANCHOR]
  assert anchor.area < 1e-7
  assert float(np.asarray(anchor.visual.material.baseColorFactor)[3]) == 0.0
  assert anchor.visual.material.alphaMode == "BLEND"


def test_export_objects_are_the_procedural_worlds_scenes(tmp_path):
  from data_pipeline import procedural
  cfg = data_configs.get_config("tiny")
  out = pm.export_objects(cfg, [0, 3], str(tmp_path))
  for (name, path, caption), i in zip(out, [0, 3]):
    scene, _ = procedural.sample_object(cfg, i)
    assert name == procedural.object_id(i) and caption == P.caption(scene)
    got = pm.load_glb_world(path)
    assert len(got) == len(scene)
    np.testing.assert_allclose([c[:3] for _, c in got], [pm.srgb_to_linear(p.rgb) for p in scene],
                               atol=0.5 / 255 + 1e-6)
    for prim, (mesh, _) in zip(scene, got):
      d = surface_distance(prim.shape, prim.params,
                           (mesh.vertices - np.asarray(prim.center)) @ np.asarray(prim.rotation))
      assert np.abs(d).max() < 1e-5


def _old_import_split(names_train, names_test, seed=0):
  """The rule demos/blender.py used before the importer's split override (its `import_split`,
  verbatim but for the imports): folder names whose sorted positions the importer's seeded
  permutation sends to the planned splits. Kept here as the reference the override must match."""
  from data_pipeline import procedural
  n = len(names_train) + len(names_test)
  fractions = (len(names_train) / n, 0.0, len(names_test) / n)
  counts = procedural.split_counts(n, fractions)
  perm = np.random.default_rng(seed).permutation(n)
  bounds = np.cumsum([0] + [counts[s] for s in records.SPLITS])
  pos = {s: sorted(perm[bounds[k]:bounds[k + 1]].tolist()) for k, s in enumerate(records.SPLITS)}
  assert len(pos["train"]) == len(names_train) and len(pos["test"]) == len(names_test), counts
  folder = {}
  for split, names in (("train", names_train), ("test", names_test)):
    for p, name in zip(pos[split], names):
      folder[name] = f"o{p:04d}_{name}"
  return folder, fractions


@pytest.mark.parametrize("n_train,n_test,n_assets", [(9, 3, 2), (180, 20, 9), (177, 20, 6),
                                                     (7, 1, 0)])
def test_split_override_holds_out_the_objects_the_old_rule_did(tmp_path, n_train, n_test,
                                                               n_assets):
  """Both imports for real on tiny object folders: the old rule (renamed folders + the seeded
  permutation) and the override (`heldout_splits`) give every object the same split."""
  from data_pipeline import procedural, render_import
  from tests.test_render_import_splits import tiny_source
  n_proc = n_train - n_assets
  train = [procedural.object_id(i) for i in range(n_proc)] + [f"asset_{k}" for k in
                                                              range(n_assets)]
  test = [procedural.object_id(i) for i in range(n_proc + 3, n_proc + 3 + n_test)]
  folder, fractions = _old_import_split(train, test)
  old_src = tiny_source(tmp_path / "old", folder.values())
  old = render_import.import_renders(old_src, str(tmp_path / "old_data"),
                                     split_fractions=fractions, progress=False)
  new_src = tiny_source(tmp_path / "new", train + test)
  new = render_import.import_renders(new_src, str(tmp_path / "new_data"), progress=False,
                                     splits=demo.heldout_splits(train, test))
  old_split = {oid.split("_", 1)[1]: s for s, v in old["splits"].items() for oid in v["object_ids"]}
  new_split = {oid: s for s, v in new["splits"].items() for oid in v["object_ids"]}
  assert new_split == old_split
  assert sorted(o for o, s in new_split.items() if s == "test") == sorted(test)
  assert new["config"]["split_rule"] == "given" and not new["splits"]["val"]["object_ids"]


def test_heldout_splits_refuses_an_object_in_both():
  with pytest.raises(errors.DataError, match=r"objects both trained on and held out: \['b'\]"):
    demo.heldout_splits(["a", "b"], ["b", "c"])


class _Cam:
  def __init__(self, c2w, K, W, H):
    self.c2w, self.K, self.width, self.height = c2w, K, W, H


def fake_render(cfg, items, out_root, *, python=None, retry_failed=False):
  """Writes what blender_render.render_assets would (object folders: PNGs + cameras.json): a
  disk of the object's first primitive colour (grey for a non-GLB asset); fails 'bad' assets."""
  os.makedirs(out_root, exist_ok=True)
  res = int(cfg.resolution)
  s = {"total": len(items), "rendered": 0, "skipped": 0, "failed": 0, "failed_before": 0,
       "failures": [], "inside": None, "iou": None, "seconds": 0.01, "views": 0}
  for oid, path in items:
    if blender_render.is_done(out_root, oid):
      s["skipped"] += 1
      continue
    if "bad" in oid:
      s["failed"] += 1
      s["failures"].append((oid, "load", "fake failure"))
      continue
    rgb = (pm.load_glb_world(path)[0][1][:3] if path.endswith(".glb") else np.full(3, 0.5))
    views = blender_render.object_views(cfg, oid)
    folder = os.path.join(out_root, oid)
    os.makedirs(folder)
    yy, xx = np.mgrid[:res, :res]
    disk = (yy - res / 2) ** 2 + (xx - res / 2) ** 2 < (res / 4) ** 2
    img = np.zeros((res, res, 4), np.uint8)
    img[disk] = np.append(np.round(rgb * 255), 255).astype(np.uint8)
    for v in views:
      Image.fromarray(img).save(os.path.join(folder, v["file"]))
    cam = _Cam(np.asarray([v["c2w"] for v in views], np.float32),
               np.asarray([v["K"] for v in views], np.float32), res, res)
    cameras_json.write_cameras_json(os.path.join(folder, "cameras.json"), cam,
                                    [v["file"] for v in views], [v["group"] for v in views])
    s["rendered"] += 1
    s["views"] += len(views)
  s["views_per_s"] = s["views"] / s["seconds"]
  return s


def _small(tmp_path):
  from tests import tiny_configs
  cfg = tiny_configs.micro_lrm()
  rcfg = render_configs.get_config("demo_blender")
  rcfg.resolution = 16
  rcfg.num_sup_views = 3
  cfg.data.resolution = 16
  assets = tmp_path / "assets"
  (assets / "OBJ").mkdir(parents=True)
  (assets / "OBJ" / "spider.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
  return cfg, rcfg, str(assets)


def test_steps_with_a_fake_renderer_give_matching_arms(tmp_path):
  cfg, rcfg, assets_root = _small(tmp_path)
  assets, missing = demo.offline_assets(assets_root)
  assert [a for a, _ in assets] == ["asset_spider"] and len(missing) == len(demo.ASSIMP_ASSETS) - 1
  assets.append(("asset_bad", str(tmp_path / "bad.obj")))
  plan = demo.plan_objects(cfg.data, 12, 0.25, assets)
  assert (plan["n_train"], plan["n_test"]) == (9, 3)
  assert plan["train_indices"] == list(range(7)) and plan["test_indices"] == [9, 10, 11]
  work = str(tmp_path / "work")
  rs = demo.render_step(cfg.data, rcfg, plan, work, python=None, render=fake_render)
  assert rs["parts"]["train"]["rendered"] == 8 and rs["parts"]["train"]["failed"] == 1
  assert rs["parts"]["test"]["views"] == 3 * (4 + 3 + 68)  # held-out: the GSO rig too
  imp = demo.import_step(plan, work)
  assert (imp["n_train"], imp["n_test"]) == (8, 3)
  meta = records.read_metadata(imp["data_dir"])
  assert meta["splits"]["test"]["object_ids"] == ["obj000009", "obj000010", "obj000011"]
  assert meta["config"]["split_rule"] == "given" and meta["splits"]["val"]["num_objects"] == 0
  rec = records.RecordSource(imp["data_dir"], "test")[0]
  assert {"rig", "sup", "eval", "eval_inputs"} <= set(rec["groups"])
  assert demo.import_step(plan, work)["cached"]  # the same objects: reused
  p_cfg, _ = demo.procedural_step(cfg, rcfg, plan, imp, work)
  pmeta = records.read_metadata(p_cfg.data_dir)
  # same split sizes for training and held-out; the lost object is an unused val object
  assert {s: v["num_objects"] for s, v in pmeta["splits"].items()} == {
      "train": 8, "val": 1, "test": 3}
  assert pmeta["splits"]["test"]["first_index"] == 9  # the same held-out scenes
  assert pmeta["views"]["sup"] == 3 and pmeta["resolution"] == 16
  # a rerun renders nothing and keeps the summary of the run that rendered
  again = demo.render_step(cfg.data, rcfg, plan, work, python=None, render=fake_render)
  assert again.get("reused") and again["views"] == rs["views"]


@pytest.mark.slow
def test_the_job_end_to_end_with_a_fake_renderer(tmp_path):
  cfg, rcfg, assets_root = _small(tmp_path)
  cfg.train.total_steps = 2
  cfg.optimizer.warmup_steps = 0
  cfg.train.log_every = 1
  cfg.train.image_every = 0
  cfg.checkpoint.every_steps = 2
  cfg.eval.lpips = False
  work = str(tmp_path / "work")
  res = demo.run(cfg, rcfg, work, num_objects=8, test_fraction=0.25, assets_root=assets_root,
                 render=fake_render)
  from instant3d_jax.convert import checkpoints
  from instant3d_jax.eval import results as results_lib
  saved = results_lib.read(os.path.join(work, "results.json"))
  assert saved["kind"] == "demo_blender" and saved["commit"] == res["commit"]
  assert saved["extra"]["objects"] == json.loads(json.dumps(res["extra"]["objects"]))
  for arm in ("blender", "procedural"):
    run_cfg, params, step = checkpoints.load(saved["extra"]["arms"][arm]["run_dir"])
    assert saved["param_sha256"][arm] == results_lib.param_sha256(params)
    assert saved["config_sha256"][arm] == results_lib.config_sha256(run_cfg)
    assert saved["extra"]["arms"][arm]["train"]["step"] == 2 == step
    assert np.isfinite(saved["metrics"][arm]["psnr"])
    assert set(saved["baselines"][arm]) == {"background only", "mean colour"}
    assert os.path.isfile(saved["extra"]["pictures"][f"heldout_{arm}"])
  assert {"blender_on_procedural", "procedural_on_blender"} <= set(saved["metrics"])
  assert {"train_blender", "eval_procedural", "cross_eval", "job_total"} <= set(saved["wall_s"])
  assert os.path.isfile(saved["extra"]["pictures"]["renders_sheet"])
  md = open(os.path.join(work, "results.md")).read()
  assert md == demo.results_markdown(saved) and "Blender renders → Blender held-out" in md


def _summary(seed):
  """An evaluation summary of lrm_eval's shape (model metrics + prefixed baselines)."""
  rng = np.random.default_rng(seed)
  s = {}
  for prefix in ("", "background_", "mean_colour_"):
    s.update({prefix + "psnr": rng.uniform(14, 28), prefix + "ssim": rng.uniform(0.7, 0.95),
              prefix + "lpips": rng.uniform(0.05, 0.35),
              prefix + "foreground_psnr": rng.uniform(3, 18),
              prefix + "colour_error": rng.uniform(10, 160)})
  return s


def test_results_file_structure_and_table(tmp_path):
  """`results_fields` → `results.Run.write` → the schema's fields; `results_markdown` gives the
  same table from it as from a results.json of the job before the schema."""
  from tests import tiny_configs
  from instant3d_jax.eval import results as results_lib
  arms = {a: {"run_dir": f"/w/{a}/lrm", "train": {"step": 5, "wall_s": 3.0}, "eval_s": 1.5,
              "eval": _summary(k), "eval_md": f"/w/{a}/eval.md", "num_eval_objects": 3,
              "views_per_object": 10} for k, a in enumerate(demo.ARMS)}
  cross = {"blender_on_procedural": _summary(7), "procedural_on_blender": _summary(8)}
  cfgs = {a: tiny_configs.micro_lrm() for a in demo.ARMS}
  cfgs["procedural"].data_dir = "/w/procedural/data"
  params = {a: {"w": np.full((2, 3), k, np.float32)} for k, a in enumerate(demo.ARMS)}
  timings = {"render": 12.34, "import": 0.5, "train_blender": 3.0, "job_total": 99.0}
  extra = {"workdir": "/w", "objects": {"n_train": 9, "n_test": 3},
           "render": {"views": 10, "rendered": 12, "seconds": 4.0, "views_per_s": 2.5,
                      "load_before": [1.0, 1.0, 1.0], "load_after": [2.0, 2.0, 2.0]},
           "pictures": {}, "steps": {"blender": 3, "procedural": 3}}
  run = results_lib.Run.start("demo_blender", command="python -m instant3d_jax.demo_blender")
  run.write(tmp_path / "results.json", **demo.results_fields(
      arms=arms, cross=cross, configs=cfgs, params=params, timings=timings, extra=extra))
  res = results_lib.read(tmp_path / "results.json")
  assert res["kind"] == "demo_blender"
  assert res["commit"] == results_lib.git_state()[0]
  assert set(res["configs"]) == set(res["config_sha256"]) == set(res["param_sha256"]) == {
      "blender", "procedural"}
  assert res["param_sha256"]["procedural"] == results_lib.param_sha256(params["procedural"])
  assert res["config_sha256"]["blender"] != res["config_sha256"]["procedural"]
  assert set(res["metrics"]) == {"blender", "procedural", "blender_on_procedural",
                                 "procedural_on_blender"}
  assert res["metrics"]["blender"] == {k: arms["blender"]["eval"][k] for k in demo._ROW_KEYS}
  assert res["metrics"]["procedural_on_blender"]["lpips"] == cross["procedural_on_blender"]["lpips"]
  assert res["baselines"]["procedural"]["mean colour"]["psnr"] == \
      arms["procedural"]["eval"]["mean_colour_psnr"]
  assert res["wall_s"] == {"render": 12.3, "import": 0.5, "train_blender": 3.0, "job_total": 99.0}
  assert res["extra"]["arms"]["blender"] == {k: v for k, v in arms["blender"].items()
                                             if k != "eval"}
  assert res["extra"]["objects"] == extra["objects"]
  md = demo.results_markdown(res)
  lines = md.splitlines()
  assert len(lines) == 2 + 4 + 4
  assert lines[2].startswith("| Blender renders → Blender held-out | "
                             f"{arms['blender']['eval']['psnr']:.2f} | ")
  assert lines[5].startswith("| procedural ray caster → Blender held-out | "
                             f"{cross['procedural_on_blender']['psnr']:.2f} | ")
  assert lines[-1].startswith("| *baseline on procedural held-out: mean colour* | "
                              f"{arms['procedural']['eval']['mean_colour_psnr']:.2f} | ")
  old = {"command": "x", "commit": "y", "arms": arms, "cross": cross}   # before the schema
  assert demo.results_markdown(old) == md
  # The README block (bench/report.py): provenance + the same table + throughput, from the file.
  block = demo.results_table(res, source="bench/results/runs/demo_blender.json")
  assert md in block and "**2.5 views/s**" in block and "bench/results/runs/demo_blender.json" in block
  assert res["param_sha256"]["blender"][:16] in block
