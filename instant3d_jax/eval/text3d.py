"""The paper's text-to-3D evaluation: CLIP similarity of generated objects with their prompts.

Protocol (Instant3D's, as GaussianDreamer App. A.1 restates it; docs/paper_facts.md, "Text-to-3D
CLIP similarity"): per prompt the object is rendered at `num_azimuths` = 120 evenly spaced
azimuths (0°, 3°, …), `num_pick` = 10 of them are picked at random, each is scored with CLIP
(100 · cosine of image and text embeddings, instant3d_jax/eval/clip_score.py) and the scores are
averaged; the table reports the mean over prompts for CLIP ViT-L/14 and ViT-bigG/14. The paper:
26.87 and 41.77 on 400 of DreamFusion's 415 prompts. Elevation, distance and field of view are
not given there; the defaults are this project's rig (elevation 20°, distance 2.7, FOV 50°;
docs/design.md §3) and the table states them.

Views: only the picked azimuths are rendered (rendering is deterministic, so this equals
rendering all 120 and picking). The picks are `np.random.default_rng([seed, index])
.choice(num_azimuths, num_pick, replace=False)` — a fixed seed, a different draw per prompt.
Renders are rounded to uint8 (as a saved PNG) before CLIP's preprocessing.

Input: the folder the `text_to_3d` command writes: `run.json` with
`"prompts": [{"index": i, "prompt": str, "dir": "NNNN"}, ...]` and per prompt
`<dir>/triplane.npz` in the format instant3d_jax/reconstruction.py writes (`planes [3, R, R, C]`,
`plane_order`, `config` JSON); the NeRF decoder's weights come from the stage-2 checkpoint
(`convert.checkpoints.load`: a workdir, step directory or `.safetensors`), whose model config must
equal the one saved with the planes.
"""
from __future__ import annotations

import io
import json
import os
import time
from typing import Callable, Mapping, Sequence

import numpy as np

from instant3d_jax import cameras as cameras_lib
from instant3d_jax import errors
from instant3d_jax.errors import ConfigMismatchError, InputError  # also text3d.InputError
from instant3d_jax import fileio

# docs/paper_facts.md, "Text-to-3D CLIP similarity" (Instant3D row; ×100 scale).
MODELS = {"clip_l": "CLIP ViT-L/14", "clip_bigg": "CLIP ViT-bigG/14"}
PAPER = {"clip_l": 26.87, "clip_bigg": 41.77}
PAPER_PROMPTS = "400 of DreamFusion's 415 prompts"
RUN_FILE = "run.json"
TRIPLANE_FILE = "triplane.npz"
PLANE_ORDER = ("XY", "XZ", "YZ")


# ---------------------------------------------------------------------------------------------
# Inputs


def read_run(generated: str | os.PathLike) -> list[dict]:
  """`run.json` of a `text_to_3d` output folder → its prompt entries, each with `triplane` (the
  path of its `triplane.npz`, checked to exist). Raises `InputError` naming the file."""
  root = fileio.path(generated)
  if not root.is_dir():
    raise InputError(f"--generated {fileio.display(root)} does not exist (expected the folder "
                     f"the text_to_3d command writes, with {RUN_FILE})")
  run_path = root / RUN_FILE
  if not run_path.is_file():
    raise InputError(f"--generated {fileio.display(root)} has no {RUN_FILE} (expected the output "
                     "folder of a complete text_to_3d run)")
  try:
    run = json.loads(run_path.read_text())
  except ValueError as e:
    raise InputError(f"{fileio.display(run_path)} is not valid JSON: {e}") from e
  prompts = run.get("prompts") if isinstance(run, dict) else None
  if not isinstance(prompts, list) or not prompts:
    raise InputError(f"{fileio.display(run_path)}: expected a non-empty list 'prompts' of "
                     f"{{index, prompt, dir}}, found {type(prompts).__name__}")
  out, missing = [], []
  for k, p in enumerate(prompts):
    if not (isinstance(p, dict) and isinstance(p.get("prompt"), str)
            and isinstance(p.get("dir"), str)):
      raise InputError(f"{fileio.display(run_path)}: prompts[{k}] must be an object with "
                       f"'index', 'prompt' (str) and 'dir' (str), found {p!r}")
    tri = root / p["dir"] / TRIPLANE_FILE
    if not tri.is_file():
      missing.append(fileio.display(tri))
    out.append({"index": int(p.get("index", k)), "prompt": p["prompt"], "dir": p["dir"],
                "triplane": tri})
  if missing:
    raise InputError(f"{fileio.display(run_path)} lists {len(missing)} prompt(s) whose "
                     f"{TRIPLANE_FILE} does not exist: {missing[:3]}"
                     f"{' …' if len(missing) > 3 else ''}")
  return out


def load_triplane(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
  """`triplane.npz` (reconstruction.py's format) → (`planes [3, R, R, C]` float32, config
  dict)."""
  p = fileio.path(path)
  try:
    with np.load(io.BytesIO(p.read_bytes()), allow_pickle=False) as z:
      planes = np.asarray(z["planes"], np.float32)
      order = tuple(str(x) for x in z["plane_order"])
      config = json.loads(str(z["config"]))
  except (OSError, ValueError, KeyError) as e:
    raise InputError(f"{fileio.display(p)} is not a triplane file (planes, plane_order, config) "
                     f"as reconstruction.py writes: {e}") from e
  if order != PLANE_ORDER or planes.ndim != 4 or planes.shape[0] != 3:
    raise InputError(f"{fileio.display(p)}: expected planes [3, R, R, C] in order "
                     f"{list(PLANE_ORDER)}, found shape {planes.shape}, order {list(order)}")
  return planes, config


def _flat(d, prefix=""):
  if isinstance(d, Mapping):
    out = {}
    for k, v in d.items():
      out.update(_flat(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: d}


def check_model_config(saved: Mapping, model: Mapping, what: str, stage2: str) -> None:
  """The planes' saved `model` section must equal the stage-2 checkpoint's (same decoder)."""
  a = _flat(json.loads(json.dumps(saved.get("model", {}))))
  b = _flat(json.loads(json.dumps(dict(model))))
  diff = sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))
  if diff:
    show = ", ".join(f"model.{k}: planes {a.get(k, '<absent>')!r} vs checkpoint "
                     f"{b.get(k, '<absent>')!r}" for k in diff[:4])
    raise ConfigMismatchError(f"{what} was made by another reconstructor than --stage2 {stage2} "
                              f"({len(diff)} model config difference(s): {show})")


# ---------------------------------------------------------------------------------------------
# Views


def view_azimuths(num_azimuths: int) -> np.ndarray:
  """`num_azimuths` evenly spaced azimuths in degrees, from 0."""
  return np.arange(num_azimuths, dtype=np.float64) * (360.0 / num_azimuths)


def pick_views(num_azimuths: int, num_pick: int, seed: int, index: int) -> np.ndarray:
  """Indices (sorted) of the `num_pick` views scored for prompt `index` (see module doc)."""
  rng = np.random.default_rng([int(seed), int(index)])
  return np.sort(rng.choice(num_azimuths, num_pick, replace=False))


class ObjectRenderer:
  """Renders a triplane (`planes [3, R, R, C]`) through the stage-2 NeRF decoder at given
  azimuths on the orbit (elevation, distance, FOV) → uint8 `[V, res, res, 3]`.

  One jitted call per object (all views; `lrm.render_views`, chunked as `model.render.chunk`),
  deterministic samples, the model's background."""

  def __init__(self, config, params, *, resolution: int, elevation: float, distance: float,
               fov: float):
    import jax
    from instant3d_jax.models import lrm as lrm_lib
    self.mcfg = lrm_lib.LRMConfig.from_config(config)
    self.resolution, self.elevation, self.distance, self.fov = (int(resolution), float(elevation),
                                                                float(distance), float(fov))
    self.plane_shape = (3, self.mcfg.plane_resolution, self.mcfg.plane_resolution,
                        self.mcfg.plane_channels)
    self._params = jax.device_put({"nerf": params["nerf"]})
    mcfg = self.mcfg
    self._render = jax.jit(lambda p, planes, cams: lrm_lib.render_views(
        mcfg, p, planes[None], jax.tree.map(lambda a: a[None], cams), outputs=("rgb",))["rgb"][0])

  def cameras(self, azimuths) -> cameras_lib.Camera:
    az = np.asarray(azimuths, np.float32)
    return cameras_lib.orbit_camera(np.full_like(az, self.elevation), az, self.distance,
                                    self.fov, self.resolution, self.resolution)

  def __call__(self, planes: np.ndarray, azimuths) -> np.ndarray:
    from instant3d_jax.export import images as images_lib
    rgb = self._render(self._params, planes, self.cameras(azimuths))
    return images_lib.to_uint8(np.asarray(rgb))


# ---------------------------------------------------------------------------------------------
# The evaluation


def check_protocol(num_azimuths: int, num_pick: int, resolution: int, distance: float) -> None:
  """`errors.ConfigError` for view counts, size or distance no render can have."""
  if num_azimuths < 1:
    raise errors.ConfigError(f"--num_azimuths must be >= 1, got {num_azimuths}")
  if not 1 <= num_pick <= num_azimuths:
    raise errors.ConfigError(f"--num_pick must be in [1, --num_azimuths={num_azimuths}], got "
                             f"{num_pick}")
  if resolution < 1:
    raise errors.ConfigError(f"--resolution must be >= 1, got {resolution}")
  if not distance > 0:
    raise errors.ConfigError(f"--distance must be > 0, got {distance}")


def evaluate(generated: str | os.PathLike, stage2: str | os.PathLike,
             scorers: Mapping[str, "clip_score.CLIPScorer"], *, num_azimuths: int = 120,
             num_pick: int = 10, seed: int = 0,
             elevation: float = cameras_lib.INSTANT3D_ELEVATION,
             distance: float = cameras_lib.INSTANT3D_DISTANCE,
             fov: float = cameras_lib.INSTANT3D_FOV, resolution: int = 512,
             log: Callable[[str], None] = print, on_views=None) -> dict:
  """Scores every prompt of `generated` with each scorer (`MODELS` keys → `CLIPScorer`).

  Every input is read and checked before any rendering. Returns the result dict (`write_report`
  writes it); `on_views(entry, images)` (optional) sees each prompt's rendered uint8 views."""
  from instant3d_jax import reconstruction
  if not scorers:
    raise errors.ConfigError("give at least one CLIP model (--clip_l and/or --clip_bigg)")
  unknown = set(scorers) - set(MODELS)
  if unknown:
    raise ValueError(f"scorer names must be among {sorted(MODELS)}, got {sorted(unknown)}")
  check_protocol(num_azimuths, num_pick, resolution, distance)
  t_start = time.time()
  entries = read_run(generated)
  config, params = reconstruction.load_checkpoint(stage2)
  renderer = ObjectRenderer(config, params, resolution=resolution, elevation=elevation,
                            distance=distance, fov=fov)
  model = json.loads(config.to_json())["model"]
  for e in entries:  # cheap checks of every input before the first render
    planes, saved = load_triplane(e["triplane"])
    check_model_config(saved, model, fileio.display(e["triplane"]), fileio.display(stage2))
    if planes.shape != renderer.plane_shape:
      raise InputError(f"{fileio.display(e['triplane'])}: planes {planes.shape}, the stage-2 "
                       f"model renders {renderer.plane_shape}")
  azimuths = view_azimuths(num_azimuths)
  names = [k for k in MODELS if k in scorers]
  rows = []
  timings = {"render_s": 0.0, "clip_s": 0.0}
  for n, e in enumerate(entries):
    planes, _ = load_triplane(e["triplane"])
    pick = pick_views(num_azimuths, num_pick, seed, e["index"])
    t = time.time()
    views = renderer(planes, azimuths[pick])
    timings["render_s"] += time.time() - t
    if on_views is not None:
      on_views(e, views)
    row = {"index": e["index"], "prompt": e["prompt"], "dir": e["dir"],
           "azimuths": [float(a) for a in azimuths[pick]]}
    t = time.time()
    for k in names:
      s = scorers[k].scores(views, e["prompt"])
      row[k] = float(np.mean(s))
      row[f"{k}_views"] = [float(x) for x in s]
    timings["clip_s"] += time.time() - t
    rows.append(row)
    log(f"[{n + 1}/{len(entries)}] {e['prompt']!r}: "
        + ", ".join(f"{MODELS[k]} {row[k]:.2f}" for k in names))
  for k, v in list(timings.items()):
    timings[k] = round(v, 3)
  timings["total_s"] = round(time.time() - t_start, 3)
  import jax
  return {
      "generated": fileio.display(generated),
      "stage2": fileio.display(stage2),
      "protocol": {"num_azimuths": num_azimuths, "num_pick": num_pick, "seed": seed,
                   "elevation": elevation, "distance": distance, "fov": fov,
                   "resolution": resolution, "background": list(renderer.mcfg.background)
                   if isinstance(renderer.mcfg.background, (list, tuple))
                   else renderer.mcfg.background,
                   "score": "100 * cosine(CLIP image_embeds, text_embeds)"},
      "models": {k: {"name": MODELS[k], "path": scorers[k].path or scorers[k].name,
                     "image_size": scorers[k].vision_config.image_size,
                     "projection_dim": scorers[k].vision_config.projection_dim} for k in names},
      "paper": {"clip_l": PAPER["clip_l"], "clip_bigg": PAPER["clip_bigg"],
                "prompts": PAPER_PROMPTS, "source": "docs/paper_facts.md"},
      "num_prompts": len(rows),
      "mean": {k: float(np.mean([r[k] for r in rows])) for k in names},
      "prompts": rows,
      "timings": timings,
      "device": str(jax.devices()[0]),
  }


def _md_cell(text: str) -> str:
  return text.replace("|", "\\|").replace("\n", " ")


def markdown(result: Mapping) -> str:
  """The result as a Markdown report: protocol, ours beside the paper's figures, per prompt."""
  p = result["protocol"]
  names = [k for k in MODELS if k in result["mean"]]
  fmt = lambda k, d: f"{d[k]:.2f}" if k in d else "—"
  lines = [
      "# Text-to-3D CLIP similarity",
      "",
      f"Generated objects: `{result['generated']}`; reconstructor: `{result['stage2']}`.",
      "",
      f"Protocol: per prompt, {p['num_pick']} of {p['num_azimuths']} evenly spaced azimuths "
      f"picked at random (seed {p['seed']}), rendered at elevation {p['elevation']:g}°, "
      f"distance {p['distance']:g}, FOV {p['fov']:g}°, {p['resolution']}² pixels; score = 100 × "
      "cosine of the CLIP image and text embeddings, averaged over the views, then over prompts.",
      "",
      "| | " + " | ".join(f"{MODELS[k]} ↑" for k in MODELS) + " | prompts |",
      "|---|" + "---:|" * len(MODELS) + "---|",
      "| Instant3D (paper) | " + " | ".join(f"{PAPER[k]:.2f}" for k in MODELS)
      + f" | {PAPER_PROMPTS} |",
      "| this run | " + " | ".join(fmt(k, result["mean"]) for k in MODELS)
      + f" | {result['num_prompts']} |",
      "",
      "The paper's figures: docs/paper_facts.md (Instant3D's table as GaussianDreamer App. A.1 "
      "reproduces it); its elevation, distance and field of view are not stated there.",
      "",
      "| # | prompt | " + " | ".join(MODELS[k] for k in names) + " |",
      "|---:|---|" + "---:|" * len(names),
  ]
  for r in result["prompts"]:
    lines.append(f"| {r['index']} | {_md_cell(r['prompt'])} | "
                 + " | ".join(f"{r[k]:.2f}" for k in names) + " |")
  return "\n".join(lines) + "\n"


def write_report(result: Mapping, out_json: str | os.PathLike, out_md: str | os.PathLike):
  """Writes the JSON and Markdown files (each all-or-nothing, fileio)."""
  fileio.write_text(out_json, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
  fileio.write_text(out_md, markdown(result))
  return out_json, out_md


def load_scorers(paths: Mapping[str, str | None], **kw) -> dict:
  """`{name: folder}` (None entries skipped) → `{name: CLIPScorer}`; each folder's path is
  checked and its weights read before anything else runs."""
  from instant3d_jax.eval import clip_score
  out = {}
  for k, folder in paths.items():
    if folder:
      out[k] = clip_score.CLIPScorer.load(folder, name=f"--{k} {folder}", **kw)
  return out
