"""A checkpoint → the held-out evaluation tables (the library side of `instant3d_jax.eval_lrm`).

`evaluate_checkpoint(checkpoint)` reads the reconstructor (a training workdir: its latest step; a
step directory; an exported `.safetensors`), opens the run's data set
(`data_pipeline.datasets.prepare`: the procedural world is generated first when `data.source` is
'procedural'; 'records' reads an existing one, e.g. imported renders), checks that its
`eval.split` holds the GSO-style rig views, runs the protocol of `instant3d_jax/eval/protocol.py`
and writes `eval.json` and `eval.md`.
"""
from __future__ import annotations

import os

from instant3d_jax import fileio


def default_out_dir(checkpoint: str | os.PathLike, step: str):
  """`<run>/eval/step_<step>`: beside the run, never inside an orbax step directory (local or
  `gs://`)."""
  from instant3d_jax.base import checkpoint as ckpt_lib
  p = fileio.path(checkpoint)
  if p.name.endswith(".safetensors"):
    base = p.parent
  elif (p / ckpt_lib.CHECKPOINT_DIR).is_dir():
    base = p
  elif p.name == ckpt_lib.CHECKPOINT_DIR:
    base = p.parent
  else:
    base = p.parent.parent
  return base / "eval" / f"step_{step}"


def evaluate_checkpoint(checkpoint: str | os.PathLike, *, config=None,
                        num_objects: int | None = None, out: str | os.PathLike | None = None,
                        log=print) -> tuple[dict, os.PathLike]:
  """Evaluates `checkpoint` on `num_objects` (default `eval.num_objects`) held-out objects and
  writes the tables into `out` (default `default_out_dir`). Returns `(results, markdown_path)`.

  The config saved with the checkpoint is used; `config` (optional) overrides its `eval` and
  `data` sections and `data_dir` (the model must match the checkpoint).
  """
  import jax
  from data_pipeline import datasets
  from instant3d_jax.eval import protocol
  from instant3d_jax.convert import checkpoints
  cfg, params, step_num = checkpoints.load(checkpoint)
  step = "final" if step_num is None else str(step_num)
  if config is not None:
    for section in ("eval", "data", "data_dir"):
      if section in config:
        cfg[section] = config[section]
  n = int(num_objects or cfg.eval.num_objects)
  dataset = datasets.prepare(cfg, progress=jax.process_index() == 0)
  datasets.check_eval(dataset, cfg)
  log(f"evaluating {checkpoint} (step {step}) on {n} held-out objects of {dataset.data_dir}")
  params = jax.tree.map(jax.numpy.asarray, params)
  results = protocol.Evaluator(cfg)(params, dataset, n)
  out = fileio.path(out) if out else default_out_dir(checkpoint, step)
  extra = {"checkpoint": str(checkpoint), "step": step, "variant": cfg.get("variant", "?")}
  md_path = out / "eval.md"
  if jax.process_index() == 0:
    json_path, md_path = protocol.write_results(results, out, extra=extra)
    log(md_path.read_text())
    log(f"wrote {json_path} and {md_path}")
  return results, md_path
