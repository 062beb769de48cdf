"""Held-out evaluation of a trained reconstructor (protocol: instant3d_jax/eval/protocol.py).

    python -m instant3d_jax.eval_lrm --workdir outputs/lrm_tiny [--config configs/lrm.py:tiny]
        [--checkpoint PATH] [--num_objects N] [--out DIR]

Reads the checkpoint (`--checkpoint`, default the workdir's latest step; also a step directory
or an exported .safetensors), evaluates PSNR / SSIM / LPIPS on `eval.num_objects` held-out
objects of the procedural world on the GSO-style rig (generated into `data_dir` if absent) and
writes `eval.json` (summary + per-object values) and `eval.md` (the table) into `--out`
(default `WORKDIR/eval/step_<N>`). Without `--config` the config saved with the checkpoint is
used; with it, its `eval`/`data` sections override (the model must match the checkpoint).
"""
from __future__ import annotations

import sys
from pathlib import Path



def _define_flags():
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "configs/lrm.py:VARIANT (optional override)",
                                  lock_config=False)
  flags.DEFINE_string("workdir", None, "training workdir")
  flags.DEFINE_string("checkpoint", None, "workdir / step dir / .safetensors (default: --workdir)")
  flags.DEFINE_integer("num_objects", None, "held-out objects (default: config eval.num_objects)")
  flags.DEFINE_string("out", None, "output directory (default WORKDIR/eval/step_<N>)")


def evaluate_checkpoint(checkpoint, *, config=None, num_objects=None, out=None,
                        log=print) -> tuple[dict, Path]:
  """Library entry point: `(results, markdown_path)`."""
  import jax
  import ml_collections
  from instant3d_jax.eval import protocol
  from instant3d_jax.train import checkpoint as ckpt_lib
  from instant3d_jax import train_lrm
  saved_cfg, params = ckpt_lib.load_for_inference(checkpoint)
  cfg = ml_collections.ConfigDict(saved_cfg)
  if config is not None:
    for section in ("eval", "data", "data_dir"):
      if section in config:
        cfg[section] = config[section]
  step = "final"
  p = Path(checkpoint)
  if p.suffix != ".safetensors":
    step = ckpt_lib._resolve_step_dir(p).name  # pylint: disable=protected-access
  n = int(num_objects or cfg.eval.num_objects)
  data_dir = train_lrm.prepare_data(cfg)
  log(f"evaluating {checkpoint} (step {step}) on {n} held-out objects of {data_dir}")
  params = jax.tree.map(jax.numpy.asarray, params)
  results = protocol.Evaluator(cfg)(params, data_dir, n)
  if not out:
    # Beside the run, never inside an orbax step directory.
    base = p.parent if p.suffix == ".safetensors" else (
        p if (p / ckpt_lib.CHECKPOINT_DIR).is_dir() else
        p.parent if p.name == ckpt_lib.CHECKPOINT_DIR else p.parent.parent)
    out = base / "eval" / f"step_{step}"
  out = Path(out)
  extra = {"checkpoint": str(checkpoint), "step": step, "variant": cfg.get("variant", "?")}
  json_path, md_path = (None, out / "eval.md")
  if jax.process_index() == 0:
    json_path, md_path = protocol.write_results(results, out, extra=extra)
    log(md_path.read_text())
    log(f"wrote {json_path} and {md_path}")
  return results, md_path


def main(argv):
  del argv
  from absl import flags
  FLAGS = flags.FLAGS
  ckpt = FLAGS.checkpoint or FLAGS.workdir
  if not ckpt:
    print("error: give --workdir or --checkpoint", file=sys.stderr)
    sys.exit(2)
  evaluate_checkpoint(ckpt, config=FLAGS.config, num_objects=FLAGS.num_objects, out=FLAGS.out)


if __name__ == "__main__":
  from absl import app
  _define_flags()
  app.run(main)
