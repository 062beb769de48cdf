"""A checkpoint → the held-out evaluation tables (the library side of `instant3d_jax.eval_lrm`).

`evaluate_checkpoint(checkpoint)` reads the reconstructor (a training workdir: its latest step; a
step directory; an exported `.safetensors`), opens the run's data set
(`data_pipeline.datasets.prepare`: the procedural world is generated first when `data.source` is
'procedural'; 'records' reads an existing one, e.g. imported renders), checks that its
`eval.split` holds the GSO-style rig views, runs the protocol of `instant3d_jax/eval/protocol.py`
and writes `eval.json` and `eval.md`.

Splits have roles: `val` is what tuning and model selection read (the configs' `eval.split`);
a `test` split is scored only through the test ledger (instant3d_jax/eval/ledger.py): the first
scoring of a parameter hash on a test set appends its line, a repeat returns the recorded result
without scoring again, and the results say how many configurations have been scored on that test
set (`test_ledger`). The results carry the parameter hash and the config hash
(`param_sha256`, `config_sha256`: the run's config without its `eval` section and `data_dir`).
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


def scored_config_sha256(cfg) -> str:
  """The config hash the ledger and results files record for a reconstructor run: its config
  without the `eval` section (how it is scored is not a configuration of the model) and without
  `data_dir` (where the data set lies)."""
  from instant3d_jax.eval import results as results_lib
  plain = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
  return results_lib.config_sha256({k: v for k, v in plain.items()
                                    if k not in ("eval", "data_dir")})


def evaluate_checkpoint(checkpoint: str | os.PathLike, *, config=None,
                        num_objects: int | None = None, out: str | os.PathLike | None = None,
                        split: str | None = None, log=print) -> tuple[dict, os.PathLike]:
  """Evaluates `checkpoint` on `num_objects` (default `eval.num_objects`) held-out objects of
  `split` (default `eval.split`) and writes the tables into `out` (default `default_out_dir`).
  Returns `(results, markdown_path)`. A `test` split goes through the test ledger (module
  docstring): `results["test_ledger"]` says whether this was a repeat and how many configurations
  have been scored on that test set.

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
  if split is not None:
    cfg.eval.split = str(split)
  split = str(cfg.eval.split)
  n = int(num_objects or cfg.eval.num_objects)
  dataset = datasets.prepare(cfg, progress=jax.process_index() == 0)
  datasets.check_eval(dataset, cfg)
  log(f"evaluating {checkpoint} (step {step}) on {n} held-out objects of the {split} split of "
      f"{dataset.data_dir}")
  from instant3d_jax.eval import ledger, results as results_lib
  param_hash = results_lib.param_sha256(params)
  config_hash = scored_config_sha256(cfg)
  params = jax.tree.map(jax.numpy.asarray, params)
  score = lambda: protocol.Evaluator(cfg)(params, dataset, n)  # noqa: E731
  if split == "test":
    results, entry = ledger.score_on_test(
        label=f"reconstructor {cfg.get('variant', '?')} step {step}, {n} objects",
        dataset=f"{ledger.dataset_id(str(dataset.data_dir), split)}:n{n}",
        config_hash=config_hash, param_hash=param_hash, score=score, log=log,
        recorded=lambda r: {k: v for k, v in r.items() if k not in ("examples", "per_object")})
    results = dict(results, test_ledger={k: entry[k] for k in (
        "dataset", "repeat", "configs_scored", "time_utc", "ledger")})
  else:
    results = score()
  results.update(param_sha256=param_hash, config_sha256=config_hash)
  out = fileio.path(out) if out else default_out_dir(checkpoint, step)
  extra = {"checkpoint": str(checkpoint), "step": step, "variant": cfg.get("variant", "?")}
  md_path = out / "eval.md"
  if jax.process_index() == 0:
    json_path, md_path = protocol.write_results(results, out, extra=extra)
    log(md_path.read_text())
    log(f"wrote {json_path} and {md_path}")
  return results, md_path
