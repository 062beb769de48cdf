"""The text-to-3D CLIP evaluation (instant3d_jax/eval/clip_score.py, eval/text3d.py and the
command instant3d_jax/eval_text3d.py).

Oracle: transformers' PyTorch `CLIPModel` fed by its `CLIPImageProcessorPil` (the processor
transformers picks for `CLIPImageProcessor` without torchvision) and `CLIPTokenizer`, on a tiny
random `CLIPModel` saved by transformers with a toy tokenizer and a processor config. The
generated-output layout is built here as the `text_to_3d` command writes it: `run.json` plus one
`NNNN/triplane.npz` per prompt (planes from one forward pass of the micro LRM, saved in
reconstruction.py's format).
"""
import io
import json
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from instant3d_jax import cameras as cam_lib
from instant3d_jax import errors
from instant3d_jax import reconstruction
from instant3d_jax.convert import clip as cclip
from instant3d_jax.convert import lrm as convert_lrm
from instant3d_jax.convert import safetensors_io as sio
from instant3d_jax.convert import sdxl_pipeline
from instant3d_jax.eval import clip_score
from instant3d_jax.eval import text3d
from instant3d_jax.models import lrm
from instant3d_jax.base.checkpoint import ConfigMismatchError
from tests import tiny_configs

transformers = pytest.importorskip("transformers")

PROMPTS = ["a red cat", "a blue dog on a green box"]
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.3, 0.25]  # not CLIP's: the processor config must be read


def tiny_clip_config(tok, **vision):
  text = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
              num_attention_heads=4, max_position_embeddings=16, hidden_act="gelu",
              eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
              pad_token_id=tok.pad_token_id)
  vis = dict(tiny_configs.CLIP_VISION_TINY, **vision)
  return transformers.CLIPConfig(text_config=text, vision_config=vis, projection_dim=24)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
  """A tiny random transformers CLIPModel folder: weights, toy tokenizer, processor config."""
  folder = tmp_path_factory.mktemp("clip")
  tok = sdxl_pipeline.write_toy_tokenizer(folder, 16)
  torch.manual_seed(0)
  model = transformers.CLIPModel(tiny_clip_config(tok)).eval()
  model.save_pretrained(folder)
  proc = transformers.CLIPImageProcessorPil(size={"shortest_edge": 16},
                                            crop_size={"height": 16, "width": 16},
                                            image_mean=MEAN, image_std=STD)
  proc.save_pretrained(folder)
  return folder, model, proc, tok


def reference_scores(clip, images, prompt):
  """100 · cos(image_embeds, text_embeds) of transformers' CLIPModel and processor."""
  _, model, proc, tok = clip
  px = proc(images=list(np.asarray(images)), return_tensors="pt")["pixel_values"]
  ids = tok([prompt], padding="max_length", max_length=16, truncation=True,
            return_tensors="pt")["input_ids"]
  with torch.no_grad():
    out = model(input_ids=ids, pixel_values=px)
  return 100.0 * (out.image_embeds @ out.text_embeds.T)[:, 0].numpy().astype(np.float64), px


@pytest.fixture(scope="module")
def scorer(clip_folder):
  return clip_score.CLIPScorer.load(clip_folder[0], batch_size=4)


def test_clip_score_matches_transformers(clip_folder, scorer):
  """Same images (non-square, downsampled: PIL bicubic in both) → same scores within 1e-4."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (5, 40, 52, 3)).astype(np.uint8)  # 5 > batch 4: padding path
  for prompt in PROMPTS:
    ours = scorer.scores(images, prompt)
    ref, px = reference_scores(clip_folder, images, prompt)
    print(f"{prompt!r}: ours {np.round(ours, 4)} transformers {np.round(ref, 4)} "
          f"max diff {np.abs(ours - ref).max():.1e}")
    assert np.abs(ours - ref).max() <= 1e-4
  # The preprocessing is the processor's, bit for bit.
  assert np.array_equal(scorer.processor(images), px.numpy().transpose(0, 2, 3, 1))
  # Float images in [0, 1] are scored as their 8-bit PNG would be.
  assert np.array_equal(scorer.scores(images / 255.0, PROMPTS[0]),
                        scorer.scores(images, PROMPTS[0]))


def test_clip_model_folder_round_trip(clip_folder, tmp_path):
  """`load_clip_model` → `save_clip_model` gives back the transformers file, tensor for tensor,
  and transformers loads the written folder."""
  folder, model, _, _ = clip_folder
  text_cfg, text, vision_cfg, vision = cclip.load_clip_model(folder)
  cclip.save_clip_model(tmp_path, text_cfg, text, vision_cfg, vision,
                        logit_scale=float(model.logit_scale.detach()))
  a = sio.read_safetensors(folder / "model.safetensors", dtype=None)
  b = sio.read_safetensors(tmp_path / "model.safetensors", dtype=None)
  assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
  again = transformers.CLIPModel.from_pretrained(tmp_path)
  assert again.config.projection_dim == 24 and again.config.text_config.hidden_act == "gelu"
  assert cclip.clip_model_configs(json.loads((tmp_path / "config.json").read_text())) == (
      text_cfg, vision_cfg)


def test_toy_clip_model_is_a_transformers_clip_model(tmp_path):
  """The plumbing model (random weights written without torch) is what transformers reads as a
  CLIPModel + processor + tokenizer, and scores the same there."""
  folder = clip_score.write_toy_clip_model(tmp_path, image_size=16, max_length=16)
  model, info = transformers.CLIPModel.from_pretrained(folder, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"]
  proc = transformers.CLIPImageProcessorPil.from_pretrained(folder)
  tok = transformers.CLIPTokenizer.from_pretrained(folder)
  # The special tokens are the toy tokenizer's, inside its vocabulary (CLIP's defaults, 49406
  # and 1, are not: transformers warned about them).
  tc = model.config.text_config
  assert (tc.bos_token_id, tc.eos_token_id, tc.pad_token_id) == (
      tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
  assert max(tc.bos_token_id, tc.eos_token_id, tc.pad_token_id) < tc.vocab_size
  images = np.random.default_rng(3).integers(0, 256, (2, 24, 20, 3)).astype(np.uint8)
  ours = clip_score.CLIPScorer.load(folder, batch_size=2).scores(images, PROMPTS[1])
  ref, _ = reference_scores((folder, model.eval(), proc, tok), images, PROMPTS[1])
  assert np.abs(ours - ref).max() <= 1e-4


@pytest.mark.parametrize("cfg", [
    {"size": 20, "crop_size": 16, "resample": 3},                      # openai's legacy ints
    {"size": {"height": 18, "width": 30}, "crop_size": {"height": 16, "width": 16}},
    {"size": {"shortest_edge": 12}, "crop_size": {"height": 16, "width": 16}},  # crop pads
    {"do_center_crop": False, "size": {"height": 16, "width": 16}, "resample": 2},
])
def test_processor_config_forms(cfg):
  img = np.random.default_rng(1).integers(0, 256, (2, 33, 24, 3)).astype(np.uint8)
  ref = transformers.CLIPImageProcessorPil(**cfg)(images=list(img), return_tensors="np")
  ours = clip_score.ImageProcessor.from_config(cfg)(img)
  assert np.array_equal(ours, ref["pixel_values"].transpose(0, 2, 3, 1))


def test_processor_defaults_without_config(tmp_path):
  p = clip_score.ImageProcessor.from_folder(tmp_path, 16)
  ref = transformers.CLIPImageProcessorPil(size={"shortest_edge": 16},
                                           crop_size={"height": 16, "width": 16})
  img = np.random.default_rng(2).integers(0, 256, (1, 20, 30, 3)).astype(np.uint8)
  assert np.array_equal(p(img), ref(images=list(img), return_tensors="np")["pixel_values"]
                        .transpose(0, 2, 3, 1))


# ---------------------------------------------------------------------------------------------
# The generated-output layout and the protocol


def _write_run(root, prompts, planes_list, config):
  root.mkdir(parents=True, exist_ok=True)
  entries = []
  for i, (prompt, planes) in enumerate(zip(prompts, planes_list)):
    d = root / f"{i:04d}"
    d.mkdir()
    buf = io.BytesIO()  # reconstruction.py's format
    np.savez(buf, planes=planes, plane_order=np.array(["XY", "XZ", "YZ"]),
             config=np.array(config.to_json()))
    (d / "triplane.npz").write_bytes(buf.getvalue())
    entries.append({"index": i, "prompt": prompt, "dir": f"{i:04d}"})
  (root / "run.json").write_text(json.dumps({"prompts": entries}))
  return root


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
  """(OUT folder, stage-2 .safetensors, config): two objects from the micro LRM."""
  cfg = tiny_configs.micro_lrm(**{"render.num_samples": 4, "render.num_importance": 4})
  # Random weights drawn with numpy (no compiled Flax init: seconds saved on CPU).
  params = sdxl_pipeline.random_params(nn.meta.unbox(lrm.abstract_params(cfg)), 0)
  base = tmp_path_factory.mktemp("gen")
  ckpt = base / "stage2.safetensors"
  convert_lrm.save_lrm(ckpt, params, cfg)
  m = lrm.LRMConfig.from_config(cfg)
  views = jax.random.uniform(jax.random.key(1), (2, 4, 16, 16, 3))
  cams = jax.tree.map(lambda a: jnp.stack([a, a]), cam_lib.instant3d_rig(16))
  planes = np.asarray(jax.jit(lrm.LRM(m).apply)({"params": params}, views, cams), np.float32)
  return _write_run(base / "out", PROMPTS, list(planes), cfg), ckpt, cfg


def test_command_end_to_end(generated, clip_folder, tmp_path):
  out, ckpt, _ = generated
  js, md = tmp_path / "r.json", tmp_path / "r.md"
  r = subprocess.run([sys.executable, "-m", "instant3d_jax.eval_text3d", f"--generated={out}",
                      f"--stage2={ckpt}", f"--clip_l={clip_folder[0]}",
                      f"--clip_bigg={clip_folder[0]}", "--num_azimuths=12", "--num_pick=3",
                      "--seed=5", "--resolution=20", f"--out_json={js}", f"--out_md={md}"],
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  res = json.loads(js.read_text())
  assert {k: res["protocol"][k] for k in ("num_azimuths", "num_pick", "seed", "elevation",
                                          "distance", "resolution")} == {
      "num_azimuths": 12, "num_pick": 3, "seed": 5, "elevation": 20.0, "distance": 2.7,
      "resolution": 20}
  assert res["paper"]["clip_l"] == 26.87 and res["paper"]["clip_bigg"] == 41.77
  assert [p["prompt"] for p in res["prompts"]] == PROMPTS and res["num_prompts"] == 2
  # The picks: 3 of the 12 azimuths (30° apart), per prompt from (seed, index).
  for p in res["prompts"]:
    want = text3d.view_azimuths(12)[text3d.pick_views(12, 3, 5, p["index"])]
    assert p["azimuths"] == [float(a) for a in want]
  assert res["prompts"][0]["azimuths"] != res["prompts"][1]["azimuths"]
  # The scores are transformers' on the same renders (the library renderer, the same views).
  config, params = reconstruction.load_checkpoint(ckpt)
  renderer = text3d.ObjectRenderer(config, params, resolution=20, elevation=20.0,
                                    distance=2.7, fov=50.0)
  for p in res["prompts"]:
    planes, _ = text3d.load_triplane(out / p["dir"] / "triplane.npz")
    ref, _ = reference_scores(clip_folder, renderer(planes, p["azimuths"]), p["prompt"])
    assert np.abs(np.asarray(p["clip_l_views"]) - ref).max() <= 1e-4
    assert p["clip_l"] == pytest.approx(float(np.mean(p["clip_l_views"])))
    assert p["clip_bigg_views"] == p["clip_l_views"]  # same folder given twice
  assert res["mean"]["clip_l"] == pytest.approx(np.mean([p["clip_l"] for p in res["prompts"]]))
  text = md.read_text()
  assert "| Instant3D (paper) | 26.87 | 41.77 |" in text
  assert f"| this run | {res['mean']['clip_l']:.2f} | {res['mean']['clip_bigg']:.2f} | 2 |" in text
  assert "elevation 20°, distance 2.7" in text and "3 of 12" in text and "seed 5" in text


def test_library_evaluate_matches_transformers(generated, clip_folder, scorer):
  """`evaluate` in-process (one model): per-view scores equal transformers' on the views it
  rendered; the views are what the renderer draws at the picked azimuths."""
  out, ckpt, _ = generated
  seen = {}
  res = text3d.evaluate(out, ckpt, {"clip_l": scorer}, num_azimuths=8, num_pick=2, seed=1,
                        resolution=16, log=lambda s: None,
                        on_views=lambda e, v: seen.setdefault(e["prompt"], v))
  assert set(res["mean"]) == {"clip_l"}
  for p in res["prompts"]:
    views = seen[p["prompt"]]
    assert views.shape == (2, 16, 16, 3) and views.dtype == np.uint8
    assert views.std() > 0  # an object, not a blank frame
    ref, _ = reference_scores(clip_folder, views, p["prompt"])
    assert np.abs(np.asarray(p["clip_l_views"]) - ref).max() <= 1e-4
  md = text3d.markdown(res)
  assert "| this run | " + f"{res['mean']['clip_l']:.2f} | — | 2 |" in md


def test_bad_inputs_name_the_input(generated, clip_folder, tmp_path):
  out, ckpt, cfg = generated
  with pytest.raises(text3d.InputError, match=r"--generated .*nope does not exist"):
    text3d.read_run(tmp_path / "nope")
  (tmp_path / "empty").mkdir()
  with pytest.raises(text3d.InputError, match=r"empty has no run.json"):
    text3d.read_run(tmp_path / "empty")
  with pytest.raises(sio.WeightsError, match=r"--clip_l .*missing: CLIP model folder .*missing "
                                             r"does not exist"):
    text3d.load_scorers({"clip_l": str(tmp_path / "missing")})
  # A CLIP text-tower folder where a whole CLIPModel is expected.
  tower = tmp_path / "tower"
  tower.mkdir()
  (tower / "config.json").write_text(json.dumps({"architectures": ["CLIPTextModel"],
                                                 "hidden_size": 32}))
  with pytest.raises(sio.WeightsError, match=r"tower/config.json: expected a transformers "
                                             r"CLIPModel config .*found keys \['architectures'"):
    text3d.load_scorers({"clip_bigg": str(tower)})
  with pytest.raises(errors.ConfigError, match=r"--num_pick must be in \[1, "
                                               r"--num_azimuths=4\], got 5"):
    text3d.check_protocol(4, 5, 16, 2.7)
  # A triplane listed in run.json but absent.
  bad = tmp_path / "bad"
  _write_run(bad, ["x"], [np.zeros((3, 8, 8, 8), np.float32)], cfg)
  (bad / "0000" / "triplane.npz").unlink()
  with pytest.raises(text3d.InputError, match=r"bad/run.json lists 1 prompt\(s\) whose triplane.npz "
                                                r"does not exist: \['.*0000/triplane.npz'\]"):
    text3d.read_run(bad)
  # Planes made by another reconstructor (model config differs) → named, before rendering.
  other = tiny_configs.micro_lrm(**{"render.num_samples": 8, "render.num_importance": 4})
  mism = _write_run(tmp_path / "mism", ["x"], [np.zeros((3, 8, 8, 8), np.float32)], other)
  with pytest.raises(ConfigMismatchError, match=r"another reconstructor .*model.render.num_samples"
                                                r": planes 8 vs checkpoint 4"):
    text3d.evaluate(mism, ckpt, {"clip_l": object()}, log=lambda s: None)


def test_cli_missing_inputs_one_line(generated, tmp_path):
  out, ckpt, _ = generated
  cmd = [sys.executable, "-m", "instant3d_jax.eval_text3d", f"--stage2={ckpt}"]
  r = subprocess.run(cmd + [f"--generated={out}", f"--clip_l={tmp_path / 'no_clip'}"],
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 2 and "Traceback" not in r.stderr
  assert r.stderr.strip().splitlines()[-1] == (
      f"error: --clip_l {tmp_path / 'no_clip'}: CLIP model folder {tmp_path / 'no_clip'} does "
      "not exist (expected a transformers CLIPModel folder: config.json, model.safetensors and "
      "the tokenizer files)")
  r = subprocess.run(cmd + [f"--generated={tmp_path}", f"--clip_l={tmp_path}"],
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
      f"error: --generated {tmp_path} has no run.json (expected the output folder of a complete "
      "text_to_3d run)")


# ---------------------------------------------------------------------------------------------
# Full-size CLIPModel parameter counts


FULL = {
    # openai/clip-vit-large-patch14
    "CLIP ViT-L/14": dict(
        projection_dim=768,
        text_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, hidden_act="quick_gelu"),
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                           num_attention_heads=16, image_size=224, patch_size=14,
                           hidden_act="quick_gelu")),
    # laion/CLIP-ViT-bigG-14-laion2B-39B-b160k
    "CLIP ViT-bigG/14": dict(
        projection_dim=1280,
        text_config=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                         num_attention_heads=20, hidden_act="gelu"),
        vision_config=dict(hidden_size=1664, intermediate_size=8192, num_hidden_layers=48,
                           num_attention_heads=16, image_size=224, patch_size=14,
                           hidden_act="gelu")),
}


@pytest.mark.parametrize("name", sorted(FULL))
def test_full_size_clip_model_parameter_counts(name):
  """Flax towers + projections (jax.eval_shape) = transformers' CLIPModel on `meta` minus its
  `logit_scale` (not used by the similarity)."""
  hf = transformers.CLIPConfig(**FULL[name])
  with torch.device("meta"):
    ref = sum(p.numel() for p in transformers.CLIPModel(hf).parameters())
  text, vision = cclip.clip_model_configs(json.loads(hf.to_json_string()))
  assert text.projection_dim == vision.projection_dim == FULL[name]["projection_dim"]
  shapes = [cclip.text_param_shapes(text), cclip.vision_param_shapes(vision)]
  mine = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  print(f"{name}: {mine:,} parameters + logit_scale (PyTorch CLIPModel {ref:,})")
  assert mine + 1 == ref
