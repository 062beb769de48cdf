"""The real-renderer main job (`make demo-blender`): the procedural world's objects as coloured
meshes plus offline 3D files → Blender renders → import → train the tiny reconstructor →
evaluate, beside the procedural ray caster's data set of the same size trained the same way.

  python -m instant3d_jax.demo_blender [--workdir outputs/demo_blender]
      [--config configs/lrm.py:tiny] [--config.train.total_steps=N]
      [--render_config configs/render.py:demo_blender] [--render_config.KEY=VALUE]
      [--num_objects 200] [--test_fraction 0.1] [--assets_root /usr/share/assimp/models]
      [--python .venv-render/bin/python] [--retrain] [--nocross]

1. Objects: the last `test_fraction` of `num_objects` procedural objects (configs/data.py:demo
   scenes) are held out; training objects are the offline assets of `assets_root`
   (assimp-testmodels' glTF 2 / OBJ / PLY files; missing ones skipped with a note) and procedural
   objects 0, 1, … up to `num_objects`.
2. Render: each procedural object as a GLB of coloured meshes (data_pipeline/primitive_meshes.py),
   rendered with Blender (data_pipeline/blender_render.py; 4 rig + `num_sup_views` views, held-out
   objects also the GSO evaluation rig) into WORKDIR/blender/renders, then imported into
   WORKDIR/blender/data with the held-out objects as the test split.
3. The procedural arm: the ray caster's data set of the same objects, views and split sizes
   (WORKDIR/procedural/data).
4. Train both arms for the config's `train.total_steps` (the same for both) into
   WORKDIR/{blender,procedural}/lrm, evaluate each on its held-out split (PSNR, foreground PSNR,
   LPIPS, SSIM, colour error) and, unless --nocross, each on the other's held-out split.
5. Pictures: WORKDIR/renders_sheet.png, WORKDIR/heldout_{blender,procedural}.png (inputs, renders,
   turntable of the first held-out object); results: WORKDIR/results.{json,md}.
Everything is cached: a rerun redoes only what is missing. The job: instant3d_jax/demos/blender.py.
"""
from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from instant3d_jax import cli, configs
from instant3d_jax.demos import blender as blender_demo

_WORKDIR = flags.DEFINE_string("workdir", "outputs/demo_blender", "where everything goes")
_CONFIG = config_flags.DEFINE_config_file(
    "config", configs.path("lrm.py:tiny"), "the reconstructor run of both arms "
    "(configs/lrm.py:VARIANT)", lock_config=False)
_RENDER_CONFIG = config_flags.DEFINE_config_file(
    "render_config", configs.path("render.py:demo_blender"), "the Blender renders "
    "(configs/render.py:VARIANT)", lock_config=False)
_NUM_OBJECTS = flags.DEFINE_integer("num_objects", 200, "objects of each arm (train + held-out)")
_TEST_FRACTION = flags.DEFINE_float("test_fraction", 0.1, "held-out share of the objects")
_ASSETS_ROOT = flags.DEFINE_string("assets_root", blender_demo.ASSIMP_MODELS,
                                   "where the offline 3D files are (assimp-testmodels)")
_PYTHON = flags.DEFINE_string("python", None, "Blender venv's python (default "
                              ".venv-render/bin/python)")
_RETRAIN = flags.DEFINE_bool("retrain", False, "train both arms again (needs empty lrm folders)")
_CROSS = flags.DEFINE_bool("cross", True, "also evaluate each arm on the other's held-out split")


def main(argv):
  del argv
  blender_demo.run(_CONFIG.value, _RENDER_CONFIG.value, _WORKDIR.value,
                   num_objects=_NUM_OBJECTS.value, test_fraction=_TEST_FRACTION.value,
                   assets_root=_ASSETS_ROOT.value, python=_PYTHON.value, retrain=_RETRAIN.value,
                   cross=_CROSS.value)


if __name__ == "__main__":
  cli.run(main)
