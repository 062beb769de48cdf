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
from pathlib import Path

from instant3d_jax import errors


def _load(checkpoint: Path):
  """`(config dict, params, step label)` of any checkpoint form the commands accept."""
  from instant3d_jax.train import checkpoint as ckpt_lib
  if checkpoint.suffix == ".safetensors":
    cfg, params = ckpt_lib.load_for_inference(checkpoint)
    return cfg, params, "final"
  if not checkpoint.exists():
    raise errors.CheckpointError(f"checkpoint {str(checkpoint)!r} does not exist (expected a "
                                 "training workdir, a step directory or a .safetensors file)")
  cfg, params, step = ckpt_lib.load_params(checkpoint)
  return cfg, params, str(step)


def default_out_dir(checkpoint: str | os.PathLike, step: str) -> Path:
  """`<run>/eval/step_<step>`: beside the run, never inside an orbax step directory."""
  from instant3d_jax.train import checkpoint as ckpt_lib
  p = Path(checkpoint)
  if p.suffix == ".safetensors":
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
                        log=print) -> tuple[dict, Path]:
  """Evaluates `checkpoint` on `num_objects` (default `eval.num_objects`) held-out objects and
  writes the tables into `out` (default `default_out_dir`). Returns `(results, markdown_path)`.

  The config saved with the checkpoint is used; `config` (optional) overrides its `eval` and
  `data` sections and `data_dir` (the model must match the checkpoint).
  """
  import jax
  import ml_collections
  from data_pipeline import datasets
  from instant3d_jax.eval import protocol
  p = Path(checkpoint)
  saved_cfg, params, step = _load(p)
  cfg = ml_collections.ConfigDict(saved_cfg)
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
  out = Path(out) if out else default_out_dir(p, step)
  extra = {"checkpoint": str(checkpoint), "step": step, "variant": cfg.get("variant", "?")}
  md_path = out / "eval.md"
  if jax.process_index() == 0:
    json_path, md_path = protocol.write_results(results, out, extra=extra)
    log(md_path.read_text())
    log(f"wrote {json_path} and {md_path}")
  return results, md_path
