"""The scaling study of the paper's reconstructor (bench/scaling.py): its model ladder, budgets,
learning rates and reference line, defined once here.

    python -m bench.scaling                               # the study on this machine
    python -m bench.scaling --emit slurm --workdir gs://bucket/scaling   # on a cluster
    python -m bench.scaling --collect --workdir gs://bucket/scaling      # gather what finished

The model is configs/lrm.py `large`'s switches scaled down (`paper_model`): every option that
is not in the paper off (`model.extras`: no Plücker rays, position code, attention bias, input-view
lift or colour prior), camera adaLN in every encoder block and LRM's ModLN in every decoder block
(`encoder_modulation`, `decoder_modulation`), a SiLU NeRF MLP with softplus density, quadrature
compositing of stratified + importance samples. What is scaled down from `large`, and kept the
same for every size so a step's rendering cost is shared: 64² views (patch 8: 8×8 tokens per
view), triplane tokens 3×8×8 → planes 32² × 32 channels (transposed conv ×4), a 3-layer NeRF MLP
of width 64, 12 + 12 samples per ray, and the CPU demo's data and loss (configs/lrm.py `tiny`:
batch 4, 4 targets × 256 random rays, half on object pixels, MSE + 0.5 × mask loss, no LPIPS).

The ladder scales width and depth together: width W is the encoder's, the decoder's and the
camera MLP's (heads of 32 channels, MLP ratio 4 in both, as `large`); depth (encoder, decoder
blocks) grows with it in `large`'s 3 : 4 ratio, rounded.

Learning rate per size (`ladder[*].learning_rate`): the peak rate of `tiny`'s tuned sweep
(5e-4, bench/results/train_tuning.md, width 128) scaled as 1/W above width 128 (Adam's
hidden-layer rule of μP: the per-step change of a W-wide layer's output grows with W at a fixed
rate) and kept at 5e-4 below it. Not swept per size: a sweep of 3 rates per size would triple the
study's cost on 2 CPU cores; a cluster run should sweep it (a rate per rung is one edit of
`ladder` below).
"""
import ml_collections

# name: (width, encoder blocks, decoder blocks). Parameters (bench/scaling.py counts them with
# jax.eval_shape; the study's table lists them): p1 0.33M, p2 1.03M, p3 3.5M, p4 10.2M.
LADDER = {
    "p1": (64, 1, 2),
    "p2": (96, 2, 3),
    "p3": (160, 3, 4),
    "p4": (224, 4, 6),
}
BASE_LR, BASE_WIDTH = 5e-4, 128


def size_overrides(width: int, encoder_layers: int, decoder_layers: int) -> dict:
  """Model overrides (dotted keys under `model`) of one ladder rung."""
  heads = max(1, width // 32)
  return {"encoder.hidden_size": width, "encoder.num_heads": heads,
          "encoder.mlp_dim": 4 * width, "encoder.num_layers": encoder_layers,
          "camera_embed_dim": width, "decoder.hidden_size": width, "decoder.num_heads": heads,
          "decoder.mlp_ratio": 4, "decoder.num_layers": decoder_layers}


def learning_rate(width: int) -> float:
  return BASE_LR * min(1.0, BASE_WIDTH / width)


def paper_model(model) -> None:
  """`large`'s switches on a `tiny`-sized model section (in place)."""
  x = model.extras
  x.plucker_rays = False
  x.position_code = False
  x.attention_bias = False
  x.lift = "none"
  x.lift_concat = False
  x.lift_voxels = False
  x.lift_voxel_resolution = 0
  x.colour_prior = False
  model.encoder_modulation = True
  model.decoder_modulation = True
  model.nerf.activation = "silu"
  model.nerf.density_activation = "softplus"
  model.render.composite = "quadrature"
  model.render.sampling = "stratified"


def get_config(arg=None):
  del arg
  c = ml_collections.ConfigDict()
  c.base = "tiny"                 # configs/lrm.py variant the study's data, loss and renderer
                                  # come from; its model gets paper_model's switches
  c.ladder = {name: dict(width=w, encoder_layers=e, decoder_layers=d,
                         learning_rate=learning_rate(w))
              for name, (w, e, d) in LADDER.items()}
  # Step budgets (global batch 4); WSD: the longest is trained once, each shorter one branches
  # from its decay start and costs only its decay.
  c.budgets = (100, 200, 400, 800, 1600)
  c.warmup_steps = 50
  c.decay_fraction = 0.25
  c.eval_objects = 50             # val objects (10 views each)
  # A second seed of one size (init and data order), for seed variance beside the bootstrap.
  c.seed_size = "p1"
  c.second_seed = 1
  # The reference line: configs/lrm.py `tiny` as is (the lift model), same budgets and schedule.
  c.reference = "tiny"
  return c
