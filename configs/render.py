"""Blender renders of 3D files into object folders (data_pipeline/blender_render.py).

  make install-render                                   # .venv-render with bpy (once)
  python -m data_pipeline.render --assets DIR_OR_LIST --out RENDERS --config configs/render.py:openlrm
  python -m data_pipeline.importer --src RENDERS --out DATA

Variants (cameras of the random supervision views, "sup"; every object also gets the 4 Instant3D
rig views, elevation 20°, azimuths 0/90/180/270, distance 2.7, vertical FOV 50°):
  `default`      the procedural world's ranges (configs/data.py): elevation U[-10°, 65°],
                 distance U[2.4, 3.0], azimuth U[0°, 360°); 24 views, 512², 64 samples.
  `openlrm`      OpenLRM's: distance U[1.9, 2.6], camera height z U(-0.75, 1.6); 32 views.
  `instantmesh`  InstantMesh's account of "the LRM setting" (InstantMesh issue #13,
                 docs/paper_facts.md): distance U[2.0, 3.5], height z U(-0.75, 1.6); 32 views.
  `test`         128², 8 samples, 4 sup views (the slow test); `bench` 64², 16 samples, 8 views.
  `demo_blender` `make demo-blender` (instant3d_jax/demos/blender.py): the procedural world's
                 cameras and data size of configs/data.py:demo (64², 8 sup views), 16 samples;
                 mask check IoU ≥ 0.8 (a primitive a few pixels across at 64² has a worst-view
                 silhouette IoU of 0.83–0.9 with 99.9% of its points inside the alpha).
Single entries as --config.KEY=VALUE (e.g. --config.resolution=256 --config.eval_rig=True).
"""
import ml_collections

from instant3d_jax import errors

VARIANTS = ("default", "openlrm", "instantmesh", "test", "bench", "demo_blender")


def get_config(arg=None):
  variant = arg or "default"
  if variant not in VARIANTS:
    raise errors.ConfigError(f"configs/render.py: unknown variant {variant!r}; expected one of "
                             f"{', '.join(VARIANTS)}")
  cfg = ml_collections.ConfigDict()
  cfg.variant = variant
  cfg.seed = 0  # sup cameras of an object depend only on (seed, object id)
  cfg.resolution = 512
  cfg.fov_deg = 50.0  # vertical; every view (rig, sup, eval) shares it
  cfg.rig_distance = 2.7
  cfg.num_sup_views = 24
  # sup camera distribution: mode 'elevation' (uniform elevation in degrees and distance) or
  # 'height' (uniform distance and camera height z, elevation = asin(z / distance)); azimuth
  # uniform in [0, 360) for both.
  cfg.sup = ml_collections.ConfigDict()
  cfg.sup.mode = "elevation"
  cfg.sup.elevation_range = (-10.0, 65.0)
  cfg.sup.distance_range = (2.4, 3.0)
  cfg.sup.height_range = (-0.75, 1.6)
  # The GSO-style evaluation rig (64 views + 4 inputs, instant3d_jax/cameras.gso_eval_rig) too:
  # for objects of evaluation splits (68 more views each).
  cfg.eval_rig = False
  # Cycles on the CPU.
  cfg.samples = 64
  cfg.denoise = False
  cfg.max_bounces = 4
  cfg.world_strength = 1.0  # uniform world light (white), no other lamp
  cfg.threads = 1  # Cycles threads per Blender process
  cfg.workers = 2  # Blender processes at a time, one object each
  cfg.timeout_s = 3600  # per object
  # The convention check after each object (blender_render.mask_check).
  cfg.mask_check = ml_collections.ConfigDict()
  cfg.mask_check.enabled = True
  cfg.mask_check.num_points = 20000
  cfg.mask_check.dilation_px = 3
  cfg.mask_check.min_inside = 0.99
  cfg.mask_check.min_iou = 0.9

  if variant in ("openlrm", "instantmesh"):
    cfg.num_sup_views = 32
    cfg.sup.mode = "height"
    cfg.sup.distance_range = (1.9, 2.6) if variant == "openlrm" else (2.0, 3.5)
  elif variant == "test":
    cfg.resolution = 128
    cfg.samples = 8
    cfg.num_sup_views = 4
  elif variant in ("bench", "demo_blender"):
    cfg.resolution = 64
    cfg.samples = 16
    cfg.num_sup_views = 8
    if variant == "demo_blender":
      cfg.mask_check.min_iou = 0.8
  return cfg
