"""InstantMesh's NeRF reconstructor checkpoint → the project's model file, without torch.

    python -m instant3d_jax.import_instantmesh --ckpt instant_nerf_large.ckpt \
        --config configs/lrm.py:instantmesh_large --out instant_nerf_large.safetensors
    python -m instant3d_jax.reconstruct --checkpoint instant_nerf_large.safetensors \
        --views v0.png,...,v5.png --cameras cameras.json --out recon

`--ckpt`: the Lightning `.ckpt` InstantMesh publishes (read by a restricted unpickler: only
tensors; every other object in the file is skipped, never executed) or a `.safetensors` of the
same tensor names. `--out`: the project's whole-model safetensors (convert/lrm.py `save_lrm`:
Flax layout + the config), which `reconstruct`, `eval_lrm` and `export` read. `--raw_out`
(optional): the checkpoint's own tensors under their InstantMesh names as safetensors (torch
layout), for tools that expect that layout. Every key and shape is checked against the model the
config builds (convert/instantmesh.py); an existing output is refused unless `--overwrite`.
"""
from __future__ import annotations

from absl import flags

from instant3d_jax import cli

FLAGS = flags.FLAGS


def _define_flags():
  from ml_collections import config_flags
  flags.DEFINE_string("ckpt", None, "InstantMesh checkpoint (.ckpt or .safetensors)")
  config_flags.DEFINE_config_file("config", "configs/lrm.py:instantmesh_large",
                                  "the model config the weights belong to", lock_config=False)
  flags.DEFINE_string("out", None, "the project's model file to write (.safetensors)")
  flags.DEFINE_string("raw_out", None, "optional: the checkpoint's tensors as safetensors")
  flags.DEFINE_bool("overwrite", False, "replace existing outputs")
  flags.mark_flags_as_required(["ckpt", "out"])


def main(argv):
  del argv
  from instant3d_jax import errors, fileio
  from instant3d_jax.convert import instantmesh, lrm as lrm_convert, torch_checkpoint
  cli.check_path("ckpt", FLAGS.ckpt, kind="file", what="an InstantMesh .ckpt or .safetensors")
  for name in ("out", "raw_out"):
    value = getattr(FLAGS, name)
    if value and fileio.path(value).exists() and not FLAGS.overwrite:
      raise errors.ConfigError(f"--{name} {value} exists (pass --overwrite to replace it)")
  tensors = instantmesh.read_checkpoint(FLAGS.ckpt)
  params = instantmesh.state_dict_to_params(tensors, FLAGS.config, FLAGS.ckpt)
  if FLAGS.raw_out:
    torch_checkpoint.export_safetensors(
        {instantmesh.PREFIX + k: v for k, v in tensors.items()}, FLAGS.raw_out,
        metadata={"source": str(FLAGS.ckpt)})
  out = lrm_convert.save_lrm(FLAGS.out, params, FLAGS.config)
  count = sum(int(v.size) for v in tensors.values())
  print(f"{len(tensors)} tensors, {count:,} parameters → {out}")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
