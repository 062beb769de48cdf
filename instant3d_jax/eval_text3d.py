"""The paper's text-to-3D evaluation: CLIP similarity of generated objects with their prompts.

    python -m instant3d_jax.eval_text3d --generated OUT --stage2 CKPT \
        [--clip_l DIR] [--clip_bigg DIR] [--num_azimuths 120] [--num_pick 10] [--seed 0] \
        [--elevation 20] [--distance 2.7] [--fov 50] [--resolution 512] \
        [--out_json F] [--out_md F]

OUT is a `text_to_3d` output folder (`run.json` listing the prompts, `<dir>/triplane.npz` per
prompt); CKPT the stage-2 reconstructor that made the planes (workdir, step directory or
`.safetensors`; its model config must equal the planes'). `--clip_l` / `--clip_bigg` are
transformers `CLIPModel` folders (config.json, model.safetensors, tokenizer files, optionally
preprocessor_config.json) of CLIP ViT-L/14 and ViT-bigG/14; give at least one. Per prompt the
object is rendered at `--num_pick` of `--num_azimuths` evenly spaced azimuths (picked at random
with `--seed`) on the orbit of `--elevation`/`--distance`/`--fov`, each view is scored with
100 · cosine(CLIP image, text) and the views are averaged. Writes the per-prompt scores and the
means as JSON (`--out_json`, default OUT/clip_similarity.json) and a Markdown table beside the
paper's 26.87 / 41.77 (`--out_md`, default OUT/clip_similarity.md). The work is
instant3d_jax/eval/text3d.py (protocol) and instant3d_jax/eval/clip_score.py (CLIP).
Bad input (a missing run.json, triplane or CLIP folder, a reconstructor that does not match the
planes) is one `error:` line and exit status 2, before any rendering.
"""
from __future__ import annotations

from instant3d_jax import cli, errors


def _define_flags():
  from absl import flags
  flags.DEFINE_string("generated", None, "output folder of the text_to_3d command (run.json)")
  flags.DEFINE_string("stage2", None, "stage-2 checkpoint: workdir / step dir / .safetensors")
  flags.DEFINE_string("clip_l", None, "transformers CLIPModel folder of CLIP ViT-L/14")
  flags.DEFINE_string("clip_bigg", None, "transformers CLIPModel folder of CLIP ViT-bigG/14")
  flags.DEFINE_integer("num_azimuths", 120, "evenly spaced azimuths per object")
  flags.DEFINE_integer("num_pick", 10, "views picked at random from them and scored")
  flags.DEFINE_integer("seed", 0, "seed of the view picks")
  flags.DEFINE_float("elevation", 20.0, "camera elevation in degrees (the rig's 20)")
  flags.DEFINE_float("distance", 2.7, "camera distance (the rig's 2.7)")
  flags.DEFINE_float("fov", 50.0, "vertical field of view in degrees (the rig's 50)")
  flags.DEFINE_integer("resolution", 512, "render size in pixels (square)")
  flags.DEFINE_string("out_json", None, "JSON report (default GENERATED/clip_similarity.json)")
  flags.DEFINE_string("out_md", None, "Markdown report (default GENERATED/clip_similarity.md)")


def main(argv):
  del argv
  from absl import flags
  from instant3d_jax import fileio
  from instant3d_jax.eval import text3d
  FLAGS = flags.FLAGS
  if not FLAGS.generated or not FLAGS.stage2:
    raise errors.ConfigError("--generated and --stage2 are required")
  if not (FLAGS.clip_l or FLAGS.clip_bigg):
    raise errors.ConfigError("give at least one CLIP model folder: --clip_l and/or --clip_bigg")
  # Cheap checks first: a bad flag or a missing run.json fails before the CLIP weights are read.
  text3d.check_protocol(FLAGS.num_azimuths, FLAGS.num_pick, FLAGS.resolution, FLAGS.distance)
  text3d.read_run(FLAGS.generated)
  cli.check_path("stage2", FLAGS.stage2, what="a training workdir, a step directory or an "
                 "exported .safetensors")
  scorers = text3d.load_scorers({"clip_l": FLAGS.clip_l, "clip_bigg": FLAGS.clip_bigg})
  result = text3d.evaluate(FLAGS.generated, FLAGS.stage2, scorers,
                           num_azimuths=FLAGS.num_azimuths, num_pick=FLAGS.num_pick,
                           seed=FLAGS.seed, elevation=FLAGS.elevation, distance=FLAGS.distance,
                           fov=FLAGS.fov, resolution=FLAGS.resolution)
  root = fileio.path(FLAGS.generated)
  out_json = FLAGS.out_json or root / "clip_similarity.json"
  out_md = FLAGS.out_md or root / "clip_similarity.md"
  text3d.write_report(result, out_json, out_md)
  print(text3d.markdown(result).split("\n\n| # |")[0])
  print(f"wrote {fileio.display(out_json)} and {fileio.display(out_md)}")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
