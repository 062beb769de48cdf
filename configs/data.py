"""The procedural multi-view world and its loader.

Generate:  python -m data_pipeline.synthetic --config configs/data.py:demo --out outputs/demo/data
     or:   python -m data_pipeline.synthetic --out DIR --num_objects N --resolution R --views V
In code:   data_pipeline.procedural.generate(cfg, out_dir) / ensure_dataset(cfg, out_dir)

Variants: `tiny` (unit tests: a dozen objects at 16²), `demo` (the CPU training demo: 3000 objects
at 64², 4 rig + 8 supervision views, 150 held-out test objects on the GSO rig), `default` (128²).
"""
from instant3d_jax import errors
import ml_collections


def get_config(arg=None):
  variant = arg or "default"
  cfg = ml_collections.ConfigDict()
  cfg.variant = variant
  cfg.seed = 0
  cfg.num_objects = 3000
  cfg.resolution = 128
  # Ray-casting supersampling per axis (s² rays per pixel, box filtered): antialiased edges, like
  # the soft edges a NeRF renders. 1 = exact hit/miss per pixel centre.
  cfg.supersample = 2
  # Fractions of objects in train / val / test (split by object index, contiguous ranges).
  cfg.split_fractions = (0.9, 0.05, 0.05)
  # Splits that also get the GSO-style evaluation rig (64 views + 4 inputs at az 45/135/225/315).
  cfg.eval_rig_splits = ("val", "test")
  cfg.records_per_shard = 500
  cfg.num_workers = 1  # processes used for generation (objects are independent)

  # Random supervision views ("sup"): uniform elevation (deg) and distance, uniform azimuth. The
  # range covers the GSO evaluation elevations 0–60°; the distance range brackets the rig's 2.7.
  cfg.num_sup_views = 8
  cfg.sup_elevation_range = (-10.0, 65.0)
  cfg.sup_distance_range = (2.4, 3.0)
  cfg.fov_deg = 50.0  # vertical FOV of every view (Instant3D rig value, docs/paper_facts.md §A)
  cfg.rig_distance = 2.7

  # Scene sampling.
  cfg.world = ml_collections.ConfigDict()
  cfg.world.min_primitives = 1
  cfg.world.max_primitives = 3
  cfg.world.size_range = (0.25, 0.6)  # ≈ half-extent of one primitive (shrunk when several)
  cfg.world.shapes = ("sphere", "box", "cylinder", "cone", "torus")
  # Primitives' bounding spheres stay inside this ball (≤ 1: inside [-1, 1]³ and in frame from
  # every rig/supervision view).
  cfg.world.scene_radius = 1.0
  cfg.world.rotate_prob = 0.5  # fully random rotation, else upright with a random yaw
  cfg.world.light_direction = (0.45, 0.3, 0.85)  # world space, fixed: view-independent shading
  cfg.world.ambient = 0.4

  # Loader (data_pipeline/lrm_input.py).
  cfg.loader = ml_collections.ConfigDict()
  cfg.loader.batch_size = 8  # GLOBAL batch; each of P processes gets batch_size / P rows
  cfg.loader.num_targets = 4  # supervision views per object
  # Input views of an example (data_pipeline/lrm_input.py): 'rig' = the 4 Instant3D rig views;
  # 'random' = InstantMesh's sampling: `num_input_views` views drawn without replacement from all
  # of the object's views (rig and sup alike), the `num_targets` targets from the others
  # (disjoint from the inputs; inputs_in_targets is not used). Eval loaders keep their own rig.
  cfg.loader.input_views = "rig"
  # 'random' only: inputs per example. 0 in a run = model.num_views (datasets.loader_config
  # fills it in; a different non-zero value is an error); the loader on its own needs it set.
  cfg.loader.num_input_views = 0
  cfg.loader.input_resolution = 0  # 0: as stored
  cfg.loader.target_resolution = 0  # 0: as stored; else area-resized first, then cropped
  cfg.loader.crop_size = 0  # 0: whole target view; else a random crop_size² window per view
  cfg.loader.inputs_in_targets = True  # 'rig': rig views may also be drawn as supervision targets
  # Rotate every camera of an example about z by a random angle: the same images then come with
  # input cameras at az θ+0/90/180/270, so the model does not tie itself to one rig azimuth.
  cfg.loader.random_rig_azimuth = False
  cfg.loader.worker_count = 0  # grain worker processes (0: in the main process)
  cfg.loader.worker_buffer_size = 2  # batches buffered per worker process
  # Read-ahead in each (main or worker) process: threads decoding batches and batches kept ready.
  cfg.loader.read_threads = 2
  cfg.loader.prefetch_batches = 4
  cfg.loader.seed = 0
  # Evaluation loader (test split, GSO rig): inputs = the 4 GSO inputs, targets = this many random
  # other eval views per object, chosen with a fixed seed (docs/paper_facts.md §C protocol).
  cfg.loader.eval_num_targets = 10
  cfg.loader.eval_seed = 0
  cfg.loader.eval_batch_size = 8

  if variant == "tiny":
    cfg.num_objects = 12
    cfg.resolution = 16
    cfg.supersample = 1
    cfg.num_sup_views = 3
    cfg.split_fractions = (0.5, 0.25, 0.25)
    cfg.records_per_shard = 4
    cfg.loader.batch_size = 4
    cfg.loader.num_targets = 3
    cfg.loader.eval_num_targets = 3
    cfg.loader.eval_batch_size = 2
  elif variant == "demo":
    cfg.num_objects = 3000
    cfg.resolution = 64
    cfg.num_sup_views = 8
    cfg.num_workers = 2
    cfg.loader.batch_size = 4
  elif variant != "default":
    raise errors.ConfigError(f"configs/data.py: unknown variant {variant!r}; expected tiny, demo or default")
  return cfg
