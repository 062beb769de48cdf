"""Schedulers vs diffusers, step by step on the same inputs (relative error ≤ 1e-5)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from instant3d_jax.diffusion import schedulers as S  # noqa: E402

SHAPE = (2, 6, 6, 4)
TOL = 1e-5


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / np.abs(b).max())


REFS = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler",
        "euler_ancestral": "EulerAncestralDiscreteScheduler",
        "dpmpp_2m": "DPMSolverMultistepScheduler"}


def reference(kind, cfg_dict):
  return getattr(diffusers, REFS[kind]).from_config(cfg_dict)


_step = jax.jit(S.step)
_scale = jax.jit(S.scale_model_input)


CASES = [("ddim", "leading", "epsilon", 10), ("ddim", "trailing", "v_prediction", 7),
         ("euler", "leading", "epsilon", 10), ("euler", "linspace", "v_prediction", 6),
         ("euler_ancestral", "leading", "epsilon", 10), ("dpmpp_2m", "leading", "epsilon", 10),
         ("dpmpp_2m", "trailing", "v_prediction", 20), ("dpmpp_2m", "linspace", "epsilon", 5)]


@pytest.mark.parametrize("kind,spacing,pred,n", CASES)
def test_step_by_step_parity(kind, spacing, pred, n, monkeypatch):
  cfg_dict = dict(S.SDXL_SCHEDULER_CONFIG, timestep_spacing=spacing, prediction_type=pred)
  ref = reference(kind, cfg_dict)
  ref.set_timesteps(n)
  sched = S.make_schedule(kind, S.SchedulerConfig.from_diffusers(cfg_dict), n)
  np.testing.assert_array_equal(np.asarray(sched.timesteps), ref.timesteps.numpy())
  assert sched.init_noise_sigma == pytest.approx(float(ref.init_noise_sigma), rel=1e-6)

  rng = np.random.default_rng(0)
  outs = rng.normal(size=(n,) + SHAPE).astype(np.float32)
  noises = rng.normal(size=(n,) + SHAPE).astype(np.float32)
  if kind == "euler_ancestral":  # feed the ancestral noise of step i to diffusers too
    import diffusers.schedulers.scheduling_euler_ancestral_discrete as mod
    it = iter(noises)
    monkeypatch.setattr(mod, "randn_tensor", lambda *a, **k: torch.from_numpy(next(it)))
  x0 = rng.normal(size=SHAPE).astype(np.float32) * float(ref.init_noise_sigma)
  xt, xj = torch.from_numpy(x0), jnp.asarray(x0)
  state = S.init_state(xj)
  worst = 0.0
  for i, t in enumerate(ref.timesteps):
    scaled_ref = ref.scale_model_input(xt, t)
    e_in = rel_err(_scale(sched, i, xj), scaled_ref)
    xt = ref.step(torch.from_numpy(outs[i]), t, xt).prev_sample
    xj, state, _ = _step(sched, state, i, jnp.asarray(outs[i]), xj, jnp.asarray(noises[i]))
    worst = max(worst, rel_err(xj, xt), e_in)
  print(f"{kind}/{spacing}/{pred}/{n} steps: worst step rel err {worst:.2e}")
  assert worst <= TOL


def test_ddim_eta_matches_with_same_variance_noise():
  ref = reference("ddim", S.SDXL_SCHEDULER_CONFIG)
  ref.set_timesteps(8)
  sched = S.make_schedule("ddim", S.SchedulerConfig.from_diffusers(), 8, eta=0.7)
  rng = np.random.default_rng(1)
  x = rng.normal(size=SHAPE).astype(np.float32)
  xt, xj, state = torch.from_numpy(x), jnp.asarray(x), S.init_state(jnp.asarray(x))
  worst = 0.0
  for i, t in enumerate(ref.timesteps):
    out, nz = rng.normal(size=(2,) + SHAPE).astype(np.float32)
    xt = ref.step(torch.from_numpy(out), t, xt, eta=0.7,
                  variance_noise=torch.from_numpy(nz)).prev_sample
    xj, state, _ = _step(sched, state, i, jnp.asarray(out), xj, jnp.asarray(nz))
    worst = max(worst, rel_err(xj, xt))
  print(f"ddim eta=0.7: {worst:.2e}")
  assert worst <= TOL


def test_sampling_loop_in_scan_equals_python_loop():
  """The pytree schedule runs inside lax.scan (as the sampler does) with the same result."""
  sched = S.make_schedule("dpmpp_2m", S.SchedulerConfig.from_diffusers(), 6)
  rng = np.random.default_rng(2)
  outs = jnp.asarray(rng.normal(size=(6,) + SHAPE).astype(np.float32))
  x = jnp.asarray(rng.normal(size=SHAPE).astype(np.float32))

  @jax.jit
  def run(sched, x):
    def body(carry, i):
      x, st = carry
      x, st, _ = S.step(sched, st, i, outs[i], x)
      return (x, st), None
    return jax.lax.scan(body, (x, S.init_state(x)), jnp.arange(sched.num_steps))[0][0]

  xs, st = x, S.init_state(x)
  for i in range(6):
    xs, st, _ = _step(sched, st, i, outs[i], xs)
  assert rel_err(run(sched, x), xs) <= 1e-6


@pytest.mark.parametrize("kind", ["ddim", "euler", "dpmpp_2m"])
def test_partial_start_add_noise_matches_diffusers(kind):
  """img2img-style start: noise clean latents to the first retained step like diffusers'
  `add_noise` at that timestep, and the DPM history restarts (first-order step)."""
  ref = reference(kind, S.SDXL_SCHEDULER_CONFIG)
  ref.set_timesteps(10)
  sched = S.make_schedule(kind, S.SchedulerConfig.from_diffusers(), 10).start_at(3)
  t0 = ref.timesteps[3:4]
  if kind != "ddim":
    ref.set_begin_index(3)
  rng = np.random.default_rng(3)
  x0, nz = rng.normal(size=(2,) + SHAPE).astype(np.float32)
  want = ref.add_noise(torch.from_numpy(x0), torch.from_numpy(nz), t0)
  got = S.add_noise_at_start(sched, jnp.asarray(x0), jnp.asarray(nz))
  assert rel_err(got, want) <= TOL
  assert bool(sched.first_order[0]) and sched.num_steps == 7
  assert float(sched.timesteps[0]) == float(t0[0])


def test_ddpm_training_noise_and_targets():
  ref = diffusers.DDPMScheduler.from_config(S.SDXL_SCHEDULER_CONFIG)
  ac = S.alphas_cumprod(S.SchedulerConfig.from_diffusers())
  assert rel_err(ac, ref.alphas_cumprod.numpy()) <= 1e-6
  rng = np.random.default_rng(4)
  x0, nz = rng.normal(size=(2, 4, 3, 3, 2)).astype(np.float32)
  t = np.array([0, 17, 500, 999], np.int64)
  tt = torch.from_numpy(t)
  e_noise = rel_err(S.add_noise(ac, x0, nz, t),
                    ref.add_noise(torch.from_numpy(x0), torch.from_numpy(nz), tt))
  e_v = rel_err(S.training_target("v_prediction", ac, x0, nz, t),
                ref.get_velocity(torch.from_numpy(x0), torch.from_numpy(nz), tt))
  print(f"DDPM add_noise {e_noise:.2e} velocity {e_v:.2e}")
  assert max(e_noise, e_v) <= TOL
  np.testing.assert_array_equal(S.training_target("epsilon", ac, x0, nz, t), nz)


def test_bad_scheduler_inputs():
  with pytest.raises(ValueError, match=r"scheduler must be one of .*got 'pndm'"):
    S.make_schedule("pndm", S.SchedulerConfig(), 10)
  with pytest.raises(ValueError, match=r"use_karras_sigmas=True is not supported"):
    S.SchedulerConfig.from_diffusers(dict(S.SDXL_SCHEDULER_CONFIG, use_karras_sigmas=True))
  with pytest.raises(ValueError, match=r"timestep_spacing must be one of .*got 'even'"):
    S.SchedulerConfig.from_diffusers(dict(S.SDXL_SCHEDULER_CONFIG, timestep_spacing="even"))
  with pytest.raises(ValueError, match=r"num_steps must be in \[1, 1000\], got 0"):
    S.make_schedule("ddim", S.SchedulerConfig(), 0)


# Configs that lack keys: what diffusers' own `save_config` of an Euler scheduler writes (no
# clip_sample / set_alpha_to_one), a bare config, and one that names `_use_default_values`.
_EULER_WRITTEN = {k: v for k, v in S.SDXL_SCHEDULER_CONFIG.items()
                  if k not in ("clip_sample", "set_alpha_to_one")}
_SPARSE = [
    ("euler_written", dict(_EULER_WRITTEN, _class_name="EulerDiscreteScheduler")),
    ("bare", {"beta_schedule": "scaled_linear"}),
    ("empty", {}),
    ("use_default_values", dict(S.SDXL_SCHEDULER_CONFIG,
                                _use_default_values=["timestep_spacing", "steps_offset"])),
]


@pytest.mark.parametrize("kind", list(REFS))
@pytest.mark.parametrize("name,cfg_dict", _SPARSE, ids=[n for n, _ in _SPARSE])
def test_config_missing_keys_gets_the_class_defaults(kind, name, cfg_dict, monkeypatch):
  """A config without some keys samples as diffusers' `<Class>.from_config` of that config:
  each missing key takes the default of the class the sampler is (DDIM: clip_sample and
  set_alpha_to_one True, steps_offset 0; Euler/DPM: linspace spacing, ...)."""
  if kind == "euler_ancestral":  # the same (zero) ancestral noise on both sides
    import diffusers.schedulers.scheduling_euler_ancestral_discrete as mod
    monkeypatch.setattr(mod, "randn_tensor", lambda shape, **k: torch.zeros(shape))
  ref = reference(kind, cfg_dict)
  ref.set_timesteps(10)
  sched = S.make_schedule(kind, S.SchedulerConfig.from_diffusers(cfg_dict), 10)
  np.testing.assert_array_equal(np.asarray(sched.timesteps), ref.timesteps.numpy())
  assert rel_err(S.alphas_cumprod(S.SchedulerConfig.from_diffusers(cfg_dict).for_kind(kind)),
                 ref.alphas_cumprod.numpy()) <= 1e-6
  rng = np.random.default_rng(5)
  x = rng.normal(size=SHAPE).astype(np.float32) * float(ref.init_noise_sigma)
  xt, xj, state = torch.from_numpy(x), jnp.asarray(x), S.init_state(jnp.asarray(x))
  worst = 0.0
  for i, t in enumerate(ref.timesteps):
    out = rng.normal(size=SHAPE).astype(np.float32) * 3  # large: DDIM's clip_sample matters
    xt = ref.step(torch.from_numpy(out), t, xt).prev_sample
    xj, state, _ = _step(sched, state, i, jnp.asarray(out), xj, jnp.zeros(SHAPE, jnp.float32))
    worst = max(worst, rel_err(xj, xt))
  assert worst <= TOL, (kind, name, worst)
  if kind == "ddim" and name == "euler_written":
    assert ref.config.clip_sample and ref.config.set_alpha_to_one  # the case this guards
