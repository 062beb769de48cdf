"""CPU end-to-end four-view sampling: `generate_views` (JAX) vs diffusers'
StableDiffusionXLPipeline (PyTorch eager) on the same small SDXL-shaped random pipeline.

    python -m bench.bench_sdxl_sampling [--rounds 3] [--steps 10] [--size 256]

One grid per call: text encoding, `--steps` DDIM steps with CFG (batch 2 through the UNet), VAE
decode of a `--size`² grid. UNet as bench_unet (blocks 64/128/256, depths 1/2/2, 256-d context of
77 tokens); VAE 4 blocks (×8, as SDXL) 32/64/64/64; text encoders 2 × 128-d layers (CLIP-L
flavour) and 2 × 128-d + projection 128 (bigG flavour). Same weights (our folder export, loaded
by diffusers), same start noise (`init="noise"`), outputs compared before timing. JAX is timed
after its compile (reported separately). Rounds interleave the frameworks. Writes
bench/results/sdxl_sampling.md.

`--threads 1` (the default) pins both frameworks to one thread: on this shared 2-core machine
PyTorch's two OpenMP threads spin against other jobs and ran ~20× slower than single-threaded
(UNet step 18 s vs 0.75 s measured side by side), which would make any ratio meaningless.
`--threads 0` keeps each framework's default threading.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if "--threads" not in sys.argv or sys.argv[sys.argv.index("--threads") + 1] == "1":
  # Must precede the JAX import (XLA reads its flags once).
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import jax
import numpy as np
import torch

import diffusers
from bench import common
from bench.bench_unet import CONFIG as UNET_CONFIG
from instant3d_jax.convert import sdxl_pipeline
from instant3d_jax.diffusion import sampling

TEXT = dict(vocab_size=100, max_position_embeddings=77, intermediate_size=256,
            num_hidden_layers=2, num_attention_heads=2, hidden_size=128, eos_token_id=2,
            bos_token_id=0, pad_token_id=1)
MODEL = dict(
    unet=dict(UNET_CONFIG, projection_class_embeddings_input_dim=128 + 6 * 32),
    vae=dict(block_out_channels=[32, 64, 64, 64], down_block_types=["DownEncoderBlock2D"] * 4,
             up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=1, latent_channels=4,
             norm_num_groups=32, sample_size=256, scaling_factor=0.13025),
    text_encoder=dict(TEXT, hidden_act="quick_gelu", architectures=["CLIPTextModel"]),
    text_encoder_2=dict(TEXT, hidden_act="gelu", projection_dim=128,
                        architectures=["CLIPTextModelWithProjection"]))
PROMPT = "a red cat"


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--size", type=int, default=256)
  ap.add_argument("--threads", type=int, default=1, choices=(0, 1),
                  help="1 = both single-threaded (default), 0 = framework defaults")
  ap.add_argument("--out", default="bench/results/sdxl_sampling.md")
  args = ap.parse_args()
  prov = common.Provenance.start()
  if args.threads == 1:
    torch.set_num_threads(1)
  size, steps = args.size, args.steps

  with tempfile.TemporaryDirectory() as d:
    d = Path(d)
    pipe = sdxl_pipeline.init_random_pipeline(
        MODEL, sdxl_pipeline.write_toy_tokenizer(d / "t1", 77),
        sdxl_pipeline.write_toy_tokenizer(d / "t2", 77), seed=0)
    sdxl_pipeline.save_pipeline(d / "sdxl", pipe)
    ref = diffusers.StableDiffusionXLPipeline.from_pretrained(str(d / "sdxl"))
  ref.scheduler = diffusers.DDIMScheduler.from_config(ref.scheduler.config)
  ref.set_progress_bar_config(disable=True)
  n_unet = sum(p.numel() for p in ref.unet.parameters())
  n_all = n_unet + sum(sum(p.numel() for p in m.parameters())
                       for m in (ref.vae, ref.text_encoder, ref.text_encoder_2))

  key = jax.random.PRNGKey(0)
  f = pipe.vae_scale_factor
  noise, _ = sampling.initial_noise(key, 0, 1, (size // f, size // f, 4))
  latents = torch.from_numpy(np.array(noise).transpose(0, 3, 1, 2))

  def run_jax():
    settings = sampling.SamplerSettings(num_steps=steps, guidance_scale=5.0, init="noise",
                                        height=size, width=size)
    return sampling.generate_views(pipe, [PROMPT], key, settings).grid

  def run_torch():
    with torch.inference_mode():
      return ref(PROMPT, height=size, width=size, num_inference_steps=steps, guidance_scale=5.0,
                 latents=latents, output_type="np").images

  t0 = time.perf_counter()
  out_j = run_jax()
  first_jax = time.perf_counter() - t0
  out_t = run_torch()
  err = float(np.abs(out_j - out_t).max())
  run_jax(), run_torch()  # warm-up

  times = {"jax": [], "torch": []}
  for r in range(args.rounds):
    order = [("jax", run_jax), ("torch", run_torch)]
    if r % 2:
      order.reverse()
    for name, fn in order:
      t0 = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t0)
  med = {k: statistics.median(v) for k, v in times.items()}
  lines = [
      f"### CPU: end-to-end four-view sampling, one {size}² grid, {steps} DDIM steps with CFG",
      "",
      "Small SDXL-shaped random pipeline (UNet as the UNet benchmark, "
      f"{n_unet:,} parameters; {n_all:,} with VAE ×8 and both text encoders), fp32, text "
      "encoding + denoising loop + VAE decode, same weights and start noise in both.",
      "",
      "| framework | seconds per grid (median of rounds) | min | max |",
      "|---|---|---|---|",
      f"| JAX {jax.__version__}: `generate_views` (jitted, loop in lax.scan) | {med['jax']:.2f} s |"
      f" {min(times['jax']):.2f} s | {max(times['jax']):.2f} s |",
      f"| PyTorch {torch.__version__} eager: diffusers {diffusers.__version__} "
      f"StableDiffusionXLPipeline | {med['torch']:.2f} s | {min(times['torch']):.2f} s | "
      f"{max(times['torch']):.2f} s |",
      "",
      f"**Speed-up JAX vs PyTorch: {med['torch'] / med['jax']:.2f}×** (torch time / jax time). "
      f"First JAX call incl. compilation: {first_jax:.1f} s. Output agreement: max abs err "
      f"{err:.1e} (images in [0, 1]).",
      "",
      "Threads: "
      + ("both single-threaded (torch.set_num_threads(1); XLA_FLAGS "
         "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1)"
         if args.threads == 1 else f"torch threads {torch.get_num_threads()}, XLA default")
      + "; interleaved rounds, order alternating. Absolute times move with the load (below); "
      "the ratio is the figure.",
  ]
  text = "\n".join(lines)
  print(text)
  common.write_result(args.out, lines, prov)


if __name__ == "__main__":
  main()
