"""Samplers: the PC sampler (moments and energy distance with the oracle score, NFE, per-sample keys),
the sampler contract (compiled once, trajectories, registry errors, no hang when called eagerly),
the probability-flow ODE sampler and encoder, and the fast samplers (DDIM, EDM Heun, DPM-Solver++:
time schedules, convergence orders against the exact probability-flow map of a Gaussian target,
exact NFE counts, DDIM's eta = 1 limit, errors)."""

import functools
import importlib
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datasets
import metrics
import sampling
import sde_lib
from conftest import ROOT, counted, gaussian_score, run_counted
import models
from configs import cond_gmm

TARGET = datasets.GaussianMixture()


def _sample(sde, n, key=0, **kwargs):
  sampler = sampling.get_sampler(sde, (n, 2), **kwargs)
  return jax.jit(lambda k: sampler(k, TARGET.score_fn(sde)))(jax.random.key(key))


# --- the PC sampler ------------------------------------------------------------------------

@pytest.mark.parametrize("predictor,corrector", [
    ("reverse_diffusion", "ald"), ("euler_maruyama", "none"), ("ancestral_sampling", "none"),
    ("reverse_diffusion", "langevin")])
def test_reverse_sde_with_oracle_recovers_mixture_moments(predictor, corrector):
  # N = 200: ancestral sampling's posterior variance (beta_tilde) under-disperses at coarser grids.
  sde = sde_lib.VPSDE(N=200)
  n = 4000
  x, _ = _sample(sde, n, predictor=predictor, corrector=corrector, snr=0.16)
  mean, cov = TARGET.mean(), TARGET.cov()
  # Tolerances: 5 standard errors of the sample mean (sqrt(var / n)) plus 0.05 for the
  # N = 200 discretisation; covariance entries to 0.15 (about 5 SE of a 4,000-sample cov).
  se = np.sqrt(np.diag(cov) / n)
  np.testing.assert_array_less(np.abs(np.mean(np.asarray(x), 0) - mean), 5 * se + 0.05)
  np.testing.assert_allclose(np.cov(np.asarray(x).T), cov, atol=0.15)


@pytest.mark.parametrize("predictor,corrector,n_steps,denoise,expected", [
    ("reverse_diffusion", "langevin", 1, True, 2 * 20 + 1),
    pytest.param("euler_maruyama", "none", 1, False, 20, marks=pytest.mark.slow),
    pytest.param("ancestral_sampling", "ald", 2, True, 3 * 20 + 1, marks=pytest.mark.slow),
    pytest.param("none", "langevin", 3, False, 3 * 20, marks=pytest.mark.slow)])
def test_nfe_equals_independent_count(predictor, corrector, n_steps, denoise, expected):
  sde = sde_lib.VESDE(N=20)
  calls = []
  sampler = sampling.get_sampler(sde, (8, 2), predictor=predictor, corrector=corrector,
                                 n_steps=n_steps, denoise=denoise)
  x, nfe = run_counted(lambda: jax.jit(lambda k: sampler(k, counted(TARGET.score_fn(sde), calls)))(
      jax.random.key(0)))
  assert nfe == expected == len(calls)


def test_sample_does_not_depend_on_batch_size():
  # `ald`: its step size is x-independent (`langevin`'s batch-mean step is shared by the batch).
  sde = sde_lib.VESDE(N=50)
  small, _ = _sample(sde, 8, key=3, corrector="ald")
  large, _ = _sample(sde, 40, key=3, corrector="ald")
  # The same per-sample keys: equal up to float32 round-off of differently batched kernels.
  np.testing.assert_allclose(np.asarray(small), np.asarray(large[:8]), rtol=1e-5, atol=1e-5)


def test_langevin_step_is_the_batch_mean_and_does_not_depend_on_the_device_count():
  """One corrector step against Song et al.'s formula; the same batch on 1 and on 4 devices."""
  sde, n = sde_lib.VESDE(N=20), 64
  x = jax.random.normal(jax.random.key(0), (n, 2)) * 3.0
  t, keys = jnp.full((n,), 0.3), sampling.per_sample_keys(jax.random.key(1), n)
  score_fn = TARGET.score_fn(sde)
  out, _ = sampling.langevin(keys, sde, score_fn, x, t, 0.16)
  z = jax.vmap(lambda k: jax.random.normal(k, (2,)))(keys)
  g = score_fn(x, t)
  step = 2 * (0.16 * np.mean(np.linalg.norm(z, axis=1)) / np.mean(np.linalg.norm(g, axis=1))) ** 2
  np.testing.assert_allclose(out, x + step * g + np.sqrt(2 * step) * z, rtol=1e-5, atol=1e-5)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]), ("data",))
  data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  sharded = jax.jit(lambda x, t, k: sampling.langevin(k, sde, score_fn, x, t, 0.16)[0])(
      *jax.device_put((x, t, keys), data))
  assert len(sharded.sharding.device_set) == 4
  np.testing.assert_allclose(sharded, out, rtol=1e-5, atol=1e-5)


# A 3-D, 3-component mixture (not the default target) for the samplers' must-shows.
MIX3 = datasets.GaussianMixture(
    means=((0.0, 0.0, 1.0), (2.0, -1.0, 0.0), (-1.5, 1.0, -1.0)),
    covs=(np.eye(3).tolist(), [[1.5, 0.4, 0.0], [0.4, 1.0, 0.2], [0.0, 0.2, 0.5]], (0.3 * np.eye(3)).tolist()),
    weights=(0.4, 0.35, 0.25))


@pytest.mark.slow
@pytest.mark.parametrize("target,sde", [(TARGET, sde_lib.VESDE(N=1000)), (MIX3, sde_lib.VPSDE(N=1000))],
                         ids=["2d-ve", "3d-vp"])
def test_reverse_diffusion_langevin_with_oracle_within_2x_floor(target, sde):
  """Must-show: reverse diffusion + `langevin` (snr 0.16, N = 1000) with the exact score, 4,000
  samples: energy distance (mean over 2 reference sets) <= 2x its expected floor E|X - X'| 2 / n.
  Measured 1.11 (2-D VE) and 0.88 (3-D VP); a per-sample step size measured 16.8 and 34.2."""
  n = 4000
  sampler = sampling.get_sampler(sde, (n, target.dim), method="pc", predictor="reverse_diffusion",
                                 corrector="langevin", snr=0.16)
  x, _ = sampler(jax.random.key(0), target.score_fn(sde))
  ed = np.mean([float(metrics.energy_distance(x, target.sample(k, n)))
                for k in jax.random.split(jax.random.key(12), 2)])
  floor = metrics.energy_distance_expected_floor(target.sample(jax.random.key(5), 4000), n, n)
  assert ed <= 2.0 * floor, (ed, floor)


@pytest.mark.parametrize("method,expected_nfe", [("pc", 2 * 30 + 1), ("ddpm_ancestral", 30)])
def test_trajectory_is_thinned_and_ends_at_the_sample(method, expected_nfe):
  sde = sde_lib.VPSDE(N=30)
  sampler = sampling.get_sampler(sde, (16, 2), method=method)
  x, nfe, traj = jax.jit(lambda k: sampler.trajectory(k, TARGET.score_fn(sde), 7))(jax.random.key(1))
  assert traj.shape == (7, 16, 2) and int(nfe) == expected_nfe
  np.testing.assert_array_equal(np.asarray(traj[-1]), np.asarray(x))
  # The first state is close to prior noise (std 1 for VP), the last close to data.
  assert 0.5 < float(jnp.std(traj[0])) < 1.5
  assert not np.allclose(np.asarray(traj[0]), np.asarray(traj[-1]))
  # The trajectory call samples exactly what the plain call samples.
  np.testing.assert_array_equal(np.asarray(sampler(jax.random.key(1), TARGET.score_fn(sde))[0]), np.asarray(x))


def test_ancestral_step_is_the_exact_gaussian_posterior():
  """For a point-mass target the posterior q(x_s | x_t, x0) is exact: check mean and variance."""
  sde = sde_lib.VPSDE()
  x0 = 0.7
  score_fn = lambda x, t: -(x - sde.marginal_coeffs(t)[0][:, None] * x0) / sde.marginal_coeffs(t)[1][:, None] ** 2
  t, s = 0.6, 0.5
  n = 20000
  a_t, s_t = (float(v[0]) for v in sde.marginal_coeffs(jnp.array([t])))
  a_s, s_s = (float(v[0]) for v in sde.marginal_coeffs(jnp.array([s])))
  x_t = a_t * x0 + s_t * jax.random.normal(jax.random.key(0), (n, 1))
  keys = sampling.per_sample_keys(jax.random.key(1), n)
  x_s, _ = sampling.ancestral_sampling(keys, sde.reverse(score_fn), x_t, jnp.full((n,), t), jnp.full((n,), s))
  # Marginally x_s ~ N(a_s x0, s_s^2); tolerances 5 SE.
  assert abs(float(jnp.mean(x_s)) - a_s * x0) < 5 * s_s / np.sqrt(n)
  assert abs(float(jnp.std(x_s)) - s_s) < 5 * s_s / np.sqrt(2 * n)


BAD_ARGUMENTS = [
    ("nope", dict(), "sampling.method"),
    ("pc", dict(predictor="nope"), "sampling.predictor"),
    ("pc", dict(corrector="nope"), "sampling.corrector"),
    ("pc", dict(snr=0.0), "sampling.snr"),
    ("pc", dict(n_steps=-1), "sampling.n_steps"),
    ("pc", dict(eps=0.0), "sampling.eps"),
    ("pc", dict(eps=2.0), "sampling.eps"),
    ("pc", dict(bogus=1), "bogus"),
    ("ode", dict(solver="nope"), "sampling.solver"),
    ("ode", dict(solver="euler"), "sampling.solver='euler'"),
    ("ode", dict(rtol=0.0), "sampling.rtol"),
    ("ode", dict(atol=-1.0), "sampling.atol"),
    ("ode", dict(n_steps=0), "sampling.n_steps"),
    ("ode", dict(eps=0.0), "sampling.eps"),
    ("ode", dict(max_steps=0), "sampling.max_steps"),
    ("ode", dict(predictor="euler_maruyama"), "predictor"),
    ("ddim", dict(schedule="nope"), "sampling.schedule"),
    ("ddim", dict(n_steps=0), "sampling.n_steps"),
    ("ddim", dict(n_steps=2.5), "sampling.n_steps"),
    ("ddim", dict(eta=1.5), "sampling.eta"),
    ("ddim", dict(eps=0.0), "sampling.eps"),
    ("edm_heun", dict(S_churn=-1.0), "sampling.S_churn"),
    ("edm_heun", dict(S_noise=-0.1), "sampling.S_noise"),
    ("edm_heun", dict(S_tmin=2.0, S_tmax=1.0), "sampling.S_tmax"),
    ("dpm_solver", dict(order=4), "sampling.order"),
    ("dpm_solver_2m", dict(order=3), "sampling.order"),
    ("dpm_solver_3m", dict(bogus=1), "bogus"),
    ("dpm_solver_2m", dict(n_steps=1, denoise=True), "sampling.n_steps"),
    ("ddim", dict(denoise=1), "sampling.denoise"),
    ("edm_heun", dict(sigma_end=0.0), "sampling.sigma_end"),
    ("dpm_solver_2m", dict(sigma_end=1e3), "sampling.sigma_end"),
    ("unipc", dict(variant="bh3"), "sampling.variant"),
    ("unipc", dict(order=4), "sampling.order"),
    ("unipc", dict(corrector="yes"), "sampling.corrector"),
    ("unipc", dict(timesteps=[0.0]), "sampling.timesteps"),
    ("dpm_solver_2m", dict(schedule="custom", n_steps=4, timesteps=[0.0, 1.0]), "sampling.timesteps"),
    ("ddim", dict(schedule="custom", n_steps=3, timesteps=[1.0, 0.0]), "sampling.timesteps"),
    ("unipc", dict(schedule="custom", n_steps=3, timesteps=[-20.0, 0.0]), "sampling.timesteps"),
]


@pytest.mark.parametrize("method,kwargs,match", BAD_ARGUMENTS)
def test_bad_sampler_arguments_raise(method, kwargs, match):
  """Every family: a bad name, field or value is a ValueError naming the field, at build time."""
  with pytest.raises(ValueError, match=match):
    sampling.get_sampler(sde_lib.VPSDE(), (4, 2), method=method, **kwargs)


SDE_CONFIGS = ["ve_gmm", "vp_gmm", "subvp_gmm", "lambda_ve_gmm", "ou_box1d"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SDE_CONFIGS)
def test_default_pc_sampler_with_oracle_within_floor(name):
  """Must-show: with the oracle score the configured PC sampler reaches <= 1.5x the energy floor.

  10,000 samples; the model's energy distance is the mean over 10 reference sets and the
  floor the mean over 10 pairs of true sets (both as in run_lib.evaluate).
  """
  import run_lib

  config = importlib.import_module(f"configs.{name}").get_config()
  exp = run_lib.build(config)
  n = config.eval.n_samples
  sampler = sampling.get_sampler(exp.sde, (n,) + exp.shape, **config.sampling)
  x, _ = jax.jit(lambda k: sampler(k, exp.target.score_fn(exp.sde)))(jax.random.key(11))
  refs = [exp.target.sample(k, n) for k in jax.random.split(jax.random.key(12), 10)]
  ed = np.mean([float(metrics.energy_distance(x, r)) for r in refs])
  floor = metrics.metric_floor(jax.random.key(13), jax.jit(exp.target.sample, static_argnums=1), n,
                               lambda k, a, b: metrics.energy_distance(a, b), n_pairs=10)["mean"]
  assert ed <= 1.5 * floor, (name, ed, floor)


# --- the sampler contract: compiled once, trajectories, registry ---------------------------

COMPILE_ONCE_CASES = [("pc", dict()), ("ode", dict(solver="heun", n_steps=4)),
                      ("dpm_solver_2m", dict(n_steps=4)), ("ddpm_ancestral", dict())]


@pytest.mark.parametrize("method,kwargs", COMPILE_ONCE_CASES, ids=[c[0] for c in COMPILE_ONCE_CASES])
def test_eager_calls_trace_the_score_once(method, kwargs):
  """Eager calls with the same score, or a new functools.partial with new parameters, reuse the
  compiled program: the score function is traced by the first call only."""
  sde = sde_lib.VPSDE(N=50)
  oracle, traces = TARGET.score_fn(sde), []

  def model_score(params, x, t):
    traces.append(1)
    return params["scale"] * oracle(x, t)

  sampler = sampling.get_sampler(sde, (8, 2), method=method, **kwargs)
  x1, nfe1 = sampler(jax.random.key(0), functools.partial(model_score, {"scale": jnp.float32(1.0)}))
  n_traced = len(traces)
  x2, nfe2 = sampler(jax.random.key(0), functools.partial(model_score, {"scale": jnp.float32(1.0)}))
  x3, nfe3 = sampler(jax.random.key(0), functools.partial(model_score, {"scale": jnp.float32(0.5)}))
  assert len(traces) == n_traced > 0
  assert int(nfe1) == int(nfe2) == int(nfe3) > 0
  np.testing.assert_array_equal(np.asarray(x1), np.asarray(x2))
  assert np.all(np.isfinite(np.asarray(x3))) and not np.allclose(np.asarray(x1), np.asarray(x3))


def test_inpainting_and_colorization_trace_the_score_once():
  sde = sde_lib.VESDE(N=10)
  oracle, traces = TARGET.score_fn(sde), []

  def model_score(scale, x, t):
    traces.append(1)
    return scale * oracle(x, t)

  inpaint = sampling.get_inpainting_sampler(sde, (8, 2), corrector="none")
  colorize = sampling.get_colorization_sampler(sde, (8, 2), corrector="none", guidance_scale=1.0)
  x_known, mask = TARGET.sample(jax.random.key(1), 8), jnp.array([1.0, 0.0])
  for sampler, args in ((inpaint, (x_known, mask)), (colorize, (jnp.mean(x_known, axis=1),))):
    traces.clear()
    x1, nfe = sampler(jax.random.key(0), functools.partial(model_score, jnp.float32(1.0)), *args)
    n_traced = len(traces)
    x2, _ = sampler(jax.random.key(0), functools.partial(model_score, jnp.float32(0.5)), *args)
    assert len(traces) == n_traced > 0 and int(nfe) == 10 + 1
    assert np.all(np.isfinite(np.asarray(x1))) and np.all(np.isfinite(np.asarray(x2)))


def test_sampler_inside_an_outer_jit_matches_the_eager_call():
  sde = sde_lib.VESDE(N=20)
  oracle = TARGET.score_fn(sde)
  for method, kwargs in (("pc", {}), ("ddim", dict(n_steps=5, eta=0.5))):
    sampler = sampling.get_sampler(sde, (8, 2), method=method, **kwargs)
    eager, jitted = sampler(jax.random.key(2), oracle), jax.jit(lambda k: sampler(k, oracle))(jax.random.key(2))
    np.testing.assert_allclose(np.asarray(eager[0]), np.asarray(jitted[0]), rtol=1e-5, atol=1e-5)
    assert int(eager[1]) == int(jitted[1])


def test_trajectory_and_latent_errors():
  sde = sde_lib.VPSDE(beta_max=10.0, N=10)  # beta_max / N <= 1: the PC chain is defined
  oracle = TARGET.score_fn(sde)
  with pytest.raises(ValueError, match="ddim"):
    sampling.get_sampler(sde, (4, 2), method="ddim", n_steps=3).trajectory(jax.random.key(0), oracle, 2)
  for n_trajectory in (0, 11, 2.0):
    with pytest.raises(ValueError, match="n_trajectory"):
      sampling.get_sampler(sde, (4, 2)).trajectory(jax.random.key(0), oracle, n_trajectory)
  with pytest.raises(ValueError, match="x_T.shape"):
    sampling.get_sampler(sde, (4, 2), method="dpm_solver", n_steps=3)(None, oracle, x_T=jnp.zeros((4, 3)))
  with pytest.raises(ValueError, match="needs a key"):  # stochastic: key=None is an error even with x_T
    sampling.get_sampler(sde, (4, 2))(None, oracle, x_T=jnp.zeros((4, 2)))


def test_get_sampler_names_an_unknown_method_or_field():
  sde = sde_lib.VPSDE()
  with pytest.raises(ValueError, match="sampling.method='nope'") as err:
    sampling.get_sampler(sde, (4, 2), method="nope")
  assert all(name in str(err.value) for name in ("pc", "ode", "ddim", "edm_heun", "dpm_solver_2m"))
  for method in sampling.SAMPLERS.names():
    with pytest.raises(ValueError, match=f"sampling.bogus_field .*{method}"):
      sampling.get_sampler(sde, (4, 2), method=method, bogus_field=1)


def test_register_sampler_adds_a_method():
  sampling.register_sampler("pc_test_alias", sampling.get_pc_sampler)
  sampler = sampling.get_sampler(sde_lib.VESDE(N=5), (2, 2), method="pc_test_alias", corrector="none")
  assert isinstance(sampler, sampling.Sampler) and "pc_test_alias" in sampling.SAMPLERS.names()


# The reproduction of a sampler that hung when called eagerly on a 3-D mixture with an exact score
# that solves linear systems; run in a fresh interpreter under a timeout. VPSDE(N=50): with N = 10
# the DDPM discretisation has beta_i up to beta_max / N = 2 > 1 and `reverse_diffusion` is NaN.
HANG_CODE = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import jax, jax.numpy as jnp, numpy as np
    from jax.scipy.special import logsumexp
    import sampling, sde_lib

    sde = sde_lib.VPSDE(N=50)
    rng = np.random.default_rng(0)
    means = jnp.asarray(2.0 * rng.normal(size=(3, 3)), jnp.float32)
    a = rng.normal(size=(3, 3, 3))
    covs = jnp.asarray(a @ a.transpose(0, 2, 1) / 3 + 0.1 * np.eye(3), jnp.float32)
    log_w = jnp.log(jnp.array([0.5, 0.3, 0.2], jnp.float32))

    def log_density(x, t):  # log p_t(x): components N(alpha m_k, alpha^2 Sigma_k + sigma^2 I)
      alpha, sigma = (c[0] for c in sde.marginal_coeffs(t[None]))
      cov = alpha**2 * covs + sigma**2 * jnp.eye(3)
      diff = x - alpha * means
      quad = jnp.sum(diff * jnp.linalg.solve(cov, diff[..., None])[..., 0], axis=-1)
      return logsumexp(log_w - 0.5 * quad - 0.5 * jnp.linalg.slogdet(cov)[1])

    score_fn = jax.jit(jax.vmap(jax.grad(log_density)))
    sampler = sampling.get_sampler(sde, (3000, 3), method="pc", predictor="reverse_diffusion",
                                   corrector="langevin")
    x, nfe = sampler(jax.random.key(0), score_fn)
    x = np.asarray(x)
    assert x.shape == (3000, 3) and np.all(np.isfinite(x)) and int(nfe) == 2 * 50 + 1, (x, nfe)
    print("finished", float(np.mean(np.abs(x))))
""")


def test_eager_pc_sampler_on_a_3d_mixture_finishes():
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
  out = subprocess.run([sys.executable, "-c", HANG_CODE.format(root=ROOT)], env=env, timeout=240,
                       capture_output=True, text=True)
  assert out.returncode == 0 and "finished" in out.stdout, out.stderr[-2000:]


# --- the probability-flow ODE sampler and encoder ------------------------------------------

@pytest.mark.parametrize("solver,n_steps,denoise", [("tsit5", None, True), ("heun", 12, False)])
def test_ode_nfe_equals_independent_count_and_tolerances_do_not_recompile(solver, n_steps, denoise):
  sde = sde_lib.VESDE()
  calls, traces = [], []
  score = counted(TARGET.score_fn(sde), calls, traces)
  sampler = sampling.get_sampler(sde, (16, 2), method="ode", solver=solver, n_steps=n_steps,
                                 denoise=denoise, rtol=1e-3, atol=1e-3)
  n_traces = []
  for rtol in (1e-3, 1e-4):
    calls.clear()
    x, nfe = run_counted(lambda: sampler(jax.random.key(0), score, rtol=rtol, atol=rtol))
    assert int(nfe) == len(calls) > 0
    assert np.all(np.isfinite(np.asarray(x)))
    n_traces.append(len(traces))
  # New tolerances reuse the compiled program: the score was not traced again.
  assert n_traces[0] == n_traces[1] > 0
  if n_steps is not None:  # heun: 2 stages per step, no FSAL
    assert int(nfe) == 2 * n_steps + denoise


@pytest.mark.slow
def test_ode_sample_does_not_depend_on_batch_size_and_trajectory_ends_at_sample():
  # Fixed steps: no batch-shared step size, so row i depends only on fold_in(key, i).
  sde = sde_lib.VPSDE(N=100)
  oracle = TARGET.score_fn(sde)
  small, _ = sampling.get_ode_sampler(sde, (8, 2), solver="euler", n_steps=20)(jax.random.key(3), oracle)
  large, nfe, traj = sampling.get_ode_sampler(sde, (40, 2), solver="euler", n_steps=20).trajectory(
      jax.random.key(3), oracle, 7)
  # Equal up to float32 round-off of differently batched kernels (as the PC sampler).
  np.testing.assert_allclose(np.asarray(small), np.asarray(large[:8]), rtol=1e-5, atol=1e-5)
  assert int(nfe) == 20 and traj.shape == (7, 40, 2)
  np.testing.assert_array_equal(np.asarray(traj[-1]), np.asarray(large))
  # The first saved state (t = T - 15 (T - eps) / 100) is still close to prior noise (std 1).
  assert 0.5 < float(jnp.std(traj[0])) < 1.5


def test_ode_sampler_rejects_latent_of_wrong_shape():
  sampler = sampling.get_ode_sampler(sde_lib.VPSDE(), (4, 2))
  with pytest.raises(ValueError, match="x_T.shape"):
    sampler(None, TARGET.score_fn(sde_lib.VPSDE()), x_T=jnp.zeros((5, 2)))


@pytest.mark.slow
@pytest.mark.parametrize("sde", [sde_lib.VESDE(), sde_lib.VPSDE()], ids=["ve", "vp"])
def test_encode_decode_round_trip(sde):
  """x -> z (eps to T) -> x (T to eps) with the oracle score at rtol = atol = 1e-6."""
  oracle = TARGET.score_fn(sde)
  x = TARGET.sample(jax.random.key(5), 256)
  encoder = sampling.get_ode_encoder(sde, rtol=1e-6, atol=1e-6)
  decoder = sampling.get_ode_sampler(sde, x.shape, rtol=1e-6, atol=1e-6, denoise=False)
  z, _ = encoder(oracle, x)
  x_back, _ = decoder(None, oracle, x_T=z)
  # The latent is prior-like: std ~ prior_std. The std of 512 numbers has a relative standard
  # error of ~1/sqrt(2 * 512) = 3%, so 10% is ~3 SE (measured: 1.08 for both SDEs).
  assert abs(float(jnp.std(z)) / sde.prior_std - 1.0) < 0.1
  # Must-show tolerance 1e-3; measured ~1e-5 (solver error at 1e-6, float32).
  assert float(jnp.max(jnp.abs(x_back - x))) < 1e-3


@pytest.fixture(scope="module")
def energy_floor():
  n = 10_000
  floor = metrics.metric_floor(jax.random.key(13), jax.jit(TARGET.sample, static_argnums=1), n,
                               lambda k, a, b: metrics.energy_distance(a, b), n_pairs=10)
  return n, floor["mean"]


@pytest.mark.slow
@pytest.mark.parametrize("sde", [sde_lib.VESDE(sigma_max=100.0), sde_lib.VPSDE()], ids=["ve100", "vp"])
def test_ode_sampler_with_oracle_within_floor(sde, energy_floor):
  """Must-show: the ODE sampler with the oracle score reaches <= 1.5x the energy floor.

  Protocol of the PC test: 10,000 samples, energy distance = mean over 10 reference sets,
  floor = mean over 10 pairs of true sets. VE uses sigma_max = 100: the VE prior
  N(0, sigma_max^2) ignores the data mean m = (1, 0), and the ODE (unlike the SDE) does not
  contract that start offset: it leaves a bias of ~|m| / sigma_max in the samples. At
  sigma_max = 50 the ratio averaged over 6 seeds is ~1.3 and exceeds 1.5 on 2 of them
  (seed 11: 1.76); see benchmarks/RESULTS.md.
  """
  n, floor = energy_floor
  sampler = sampling.get_ode_sampler(sde, (n, 2))
  x, _ = sampler(jax.random.key(11), TARGET.score_fn(sde))
  refs = [TARGET.sample(k, n) for k in jax.random.split(jax.random.key(12), 10)]
  ed = np.mean([float(metrics.energy_distance(x, r)) for r in refs])
  assert ed <= 1.5 * floor, (ed, floor)


# --- fast samplers: DDIM, EDM Heun, DPM-Solver++ ----------------------------------------------

# A 1-D Gaussian target N(M, S^2): diffused, p_t = N(alpha_t M, alpha_t^2 S^2 + sigma_t^2), so the
# score is exact and the probability-flow map from T to eps is affine (see `_exact_flow`).
M, S = 0.5, 0.7
SDES = {"ve": sde_lib.VESDE(), "vp": sde_lib.VPSDE(), "subvp": sde_lib.SubVPSDE(),
        "ou": sde_lib.OUSDE(), "lambda_ve": sde_lib.LambdaVESDE()}


def _coeffs(sde, t):
  alpha, sigma = sde.marginal_coeffs(jnp.array([t], jnp.float32))
  return float(alpha[0]), float(sigma[0])


def _exact_flow(sde, x_T, eps):
  """x_eps = alpha_eps M + sqrt(alpha_eps^2 S^2 + sigma_eps^2) (x_T - alpha_T M) / sqrt(alpha_T^2 S^2 + sigma_T^2)."""
  (a_T, s_T), (a_e, s_e) = _coeffs(sde, sde.T), _coeffs(sde, eps)
  return a_e * M + np.sqrt(a_e**2 * S**2 + s_e**2) * (x_T - a_T * M) / np.sqrt(a_T**2 * S**2 + s_T**2)


def _flow_error(sde, method, n_steps, **kwargs):
  """Max error over 5 fixed latents x_T in [-2, 2] prior std of a deterministic sampler vs the exact map."""
  x_T = np.linspace(-2.0, 2.0, 5, dtype=np.float32)[:, None] * sde.prior_std
  sampler = sampling.get_sampler(sde, (5, 1), method=method, n_steps=n_steps, **kwargs)
  x, _ = jax.jit(lambda k, x_T: sampler(k, gaussian_score(sde, M, S**2), x_T=x_T))(jax.random.key(0), x_T)
  return float(np.max(np.abs(np.asarray(x, np.float64) - _exact_flow(sde, x_T, 1e-3))))


# (method, kwargs, n_steps, window for err(n) / err(2 n)): first order for DDIM (the exponential
# Euler step in lambda), second for EDM Heun (in sigma_edm) and DPM-Solver++(2M), third for 3M.
# n_steps are in the asymptotic regime (measured ratios: 1.97, 4.1-4.2, 3.9, 8.1-8.6 on VE/VP/sub-VP/OU).
ORDER_CASES = [
    ("ddim", dict(schedule="log_snr"), 40, (1.6, 2.6)),
    ("edm_heun", dict(schedule="edm"), 20, (3.0, 5.5)),
    ("dpm_solver_2m", dict(schedule="log_snr"), 40, (3.0, 5.5)),
    ("dpm_solver_3m", dict(schedule="edm", lower_order_final=False), 40, (6.0, 12.0)),
    # UniPC: UniP-p + UniC has order p + 1 (measured: 7.8 bh2, 8.4 bh1 on VP; p = 3 14.7-16.0 on all five).
    ("unipc", dict(schedule="log_snr", order=2, lower_order_final=False), 40, (6.0, 10.0)),
    ("unipc", dict(schedule="log_snr", order=2, variant="bh1", lower_order_final=False), 40, (6.0, 10.0)),
    ("unipc", dict(schedule="edm", order=3, lower_order_final=False), 40, (11.0, 22.0)),
]


ORDER_IDS = [f"{c[0]}-{c[1].get('order', '')}{c[1].get('variant', '')}" for c in ORDER_CASES]


# UniPC's bh1 and order-3 cases run on VP in the slow set only (the not-slow budget).
ORDER_CASES_VP = [pytest.param(*c, marks=pytest.mark.slow) if c[0] == "unipc" and c[1] != ORDER_CASES[4][1] else c
                  for c in ORDER_CASES]


@pytest.mark.parametrize("method,kwargs,n_steps,window", ORDER_CASES_VP, ids=ORDER_IDS)
def test_convergence_order_vp(method, kwargs, n_steps, window):
  sde = SDES["vp"]
  coarse, fine = (_flow_error(sde, method, n, **kwargs) for n in (n_steps, 2 * n_steps))
  assert window[0] <= coarse / fine <= window[1], (coarse, fine, coarse / fine)


@pytest.mark.slow
@pytest.mark.parametrize("sde_name", ["ve", "subvp", "ou", "lambda_ve"])
@pytest.mark.parametrize("method,kwargs,n_steps,window", ORDER_CASES, ids=ORDER_IDS)
def test_convergence_order_other_sdes(sde_name, method, kwargs, n_steps, window):
  sde = SDES[sde_name]
  coarse, fine = (_flow_error(sde, method, n, **kwargs) for n in (n_steps, 2 * n_steps))
  assert window[0] <= coarse / fine <= window[1], (coarse, fine, coarse / fine)


@pytest.mark.parametrize("order", [2, 3])
def test_unipc_predictor_alone_is_dpm_solver_pp(order):
  """UniP-p (no corrector, B(h) = e^h - 1) is DPM-Solver++(pM): the same x up to round-off."""
  sde, x_T = SDES["ve"], jnp.linspace(-200.0, 200.0, 6)[:, None]
  kwargs = dict(n_steps=7, schedule="log_snr", denoise=True, sigma_end=0.1)
  outs = [sampling.get_sampler(sde, (6, 1), **kw, **kwargs)(None, gaussian_score(sde, M, S**2), x_T=x_T)[0]
          for kw in (dict(method="unipc", order=order, corrector=False), dict(method=f"dpm_solver_{order}m"))]
  np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)


def test_custom_schedule_reproduces_a_fixed_one_and_is_differentiable():
  """schedule="custom" with the interior log-SNRs of the log-SNR grid gives that grid; dt/dlambda
  through `t_of_log_snr` is 1 / lambda'(t) (checked by central differences)."""
  sde = SDES["vp"]
  ts = sampling.get_time_schedule(sde, 6, schedule="log_snr", eps=1e-3)
  custom = sampling.get_time_schedule(sde, 6, schedule="custom", eps=1e-3, timesteps=sde.log_snr(ts)[1:-1])
  np.testing.assert_allclose(custom, ts, rtol=1e-5)
  lam, d = jnp.array([-3.0, 0.5, 4.0]), 1e-2
  grad = jax.vmap(jax.grad(lambda l: sampling.t_of_log_snr(sde, l[None])[0]))(lam)
  fd = (sampling.t_of_log_snr(sde, lam + d) - sampling.t_of_log_snr(sde, lam - d)) / (2 * d)
  np.testing.assert_allclose(grad, fd, rtol=1e-3)


@pytest.mark.parametrize("sde_name", ["ve", "vp", "ou", pytest.param("subvp", marks=pytest.mark.slow),
                                      pytest.param("lambda_ve", marks=pytest.mark.slow)])
def test_schedules_are_monotone_and_exact(sde_name):
  sde, eps, n = SDES[sde_name], 1e-3, 12
  ts = jax.jit(lambda: {s: sampling.get_time_schedule(sde, n, schedule=s, eps=eps)
                        for s in sampling.SCHEDULES})()
  for name, t in ts.items():
    t = np.asarray(t)
    assert t.shape == (n + 1,) and t[0] == np.float32(sde.T) and t[-1] == np.float32(eps), name
    assert np.all(np.diff(t) < 0), (name, t)
  u = np.linspace(0.0, 1.0, n + 1)
  np.testing.assert_allclose(ts["uniform_t"], sde.T + u * (eps - sde.T), rtol=1e-6)
  np.testing.assert_allclose(ts["quadratic"], eps + (sde.T - eps) * (1 - u) ** 2, rtol=1e-6)
  # Uniform in lambda; uniform in sigma_edm^(1/rho) (Karras et al. Eq. 5): the bisection inverse
  # is exact to float32 round-off of lambda(t).
  lam = np.asarray(sde.log_snr(ts["log_snr"]), np.float64)
  np.testing.assert_allclose(np.diff(lam), (lam[-1] - lam[0]) / n, atol=2e-4 * abs(lam[-1] - lam[0]))
  root = np.asarray(sampling.sigma_edm(sde, ts["edm"]), np.float64) ** (1 / 7)
  np.testing.assert_allclose(np.diff(root), (root[-1] - root[0]) / n, atol=2e-4 * abs(root[-1] - root[0]))


def test_log_snr_inverse_matches_closed_form_ve():
  """VE: sigma^2 = sigma_min^2 (r^{2t} - 1), lambda = -log sigma  =>  t = log1p(e^{-2 lambda} / sigma_min^2) / (2 log r)."""
  sde = SDES["ve"]
  lam = jnp.linspace(-3.9, 6.5, 9)
  t_closed = np.log1p(np.exp(-2.0 * np.asarray(lam, np.float64)) / sde.sigma_min**2) / (
      2 * np.log(sde.sigma_max / sde.sigma_min))
  np.testing.assert_allclose(np.asarray(jax.jit(sampling.t_of_log_snr, static_argnums=0)(sde, lam)),
                             t_closed, rtol=1e-5)


def _tweedie_of_exact_flow(sde, x_T, eps):
  """E[x0 | x_eps] at the exact x_eps: M + S^2 alpha_eps (x_eps - alpha_eps M) / (alpha_eps^2 S^2 + sigma_eps^2)."""
  a_e, s_e = _coeffs(sde, eps)
  return M + S**2 * a_e * (_exact_flow(sde, x_T, eps) - a_e * M) / (a_e**2 * S**2 + s_e**2)


# denoise=True: n_steps - 1 solver steps to sigma_edm = 0.1, then the step to sigma = 0 (Tweedie).
# The last step is exact given x_eps and affine in it, so the solver's order carries over
# (measured ratios on VP: ddim 1.98, edm_heun 4.19, dpm_solver_2m 3.52).
DENOISE_ORDER_CASES = [
    ("ddim", dict(schedule="log_snr"), 41, (1.6, 2.6)),
    ("edm_heun", dict(schedule="edm"), 21, (3.0, 5.5)),
    ("dpm_solver_2m", dict(schedule="log_snr"), 41, (3.0, 5.5)),
]


@pytest.mark.parametrize("method,kwargs,n_steps,window", DENOISE_ORDER_CASES,
                         ids=[c[0] for c in DENOISE_ORDER_CASES])
def test_denoise_to_zero_keeps_the_convergence_order(method, kwargs, n_steps, window):
  sde = SDES["vp"]
  eps = sampling.end_time(sde, sigma_end=0.1)
  a_e, s_e = _coeffs(sde, eps)
  assert abs(s_e / a_e - 0.1) < 1e-4  # end_time inverts sigma_edm
  x_T = np.linspace(-2.0, 2.0, 5, dtype=np.float32)[:, None] * sde.prior_std
  errors = []
  for n in (n_steps, 2 * n_steps - 1):  # n - 1 solver steps: 40 -> 80
    sampler = sampling.get_sampler(sde, (5, 1), method=method, n_steps=n, denoise=True,
                                   sigma_end=0.1, **kwargs)
    x, _ = jax.jit(lambda k, x_T: sampler(k, gaussian_score(sde, M, S**2), x_T=x_T))(jax.random.key(0), x_T)
    errors.append(float(np.max(np.abs(np.asarray(x, np.float64) - _tweedie_of_exact_flow(sde, x_T, eps)))))
  assert window[0] <= errors[0] / errors[1] <= window[1], (errors, errors[0] / errors[1])


def test_end_time_matches_closed_form_ve():
  """VE: sigma_edm = sigma_t, so t(sigma_end) = log1p(sigma_end^2 / sigma_min^2) / (2 log r)."""
  sde = SDES["ve"]
  for sigma_end in (0.02, 0.1, 1.0):
    t = np.log1p(sigma_end**2 / sde.sigma_min**2) / (2 * np.log(sde.sigma_max / sde.sigma_min))
    np.testing.assert_allclose(sampling.end_time(sde, sigma_end=sigma_end), t, rtol=1e-5)
  assert sampling.end_time(sde, eps=0.02) == 0.02


FAST_NFE_CASES = [  # DDIM's count is checked in test_stochastic_samples_count_nfe_and_do_not_depend_on_batch_size
    ("edm_heun", dict(n_steps=4, S_churn=10.0, S_tmin=0.05, S_tmax=20.0), 7),
    ("edm_heun", dict(n_steps=4, S_churn=10.0, denoise=True, sigma_end=0.1), 7),
    ("dpm_solver_2m", dict(n_steps=5), 5),
    ("dpm_solver_2m", dict(n_steps=5, denoise=True, sigma_end=0.1), 5),
    ("dpm_solver", dict(n_steps=6, order=3, lower_order_final=False), 6),
    ("ddim", dict(n_steps=2, denoise=True), 2),
    pytest.param("unipc", dict(n_steps=5, order=3), 5, marks=pytest.mark.slow),
    ("unipc", dict(n_steps=5, denoise=True, sigma_end=0.1), 5),
]


@pytest.mark.parametrize("method,kwargs,expected", FAST_NFE_CASES)
def test_fast_sampler_nfe_equals_independent_count(method, kwargs, expected):
  sde = SDES["ve"]
  calls = []
  sampler = sampling.get_sampler(sde, (3, 1), method=method, **kwargs)
  x, nfe = run_counted(lambda: jax.jit(lambda k: sampler(k, counted(gaussian_score(sde, M, S**2), calls)))(
      jax.random.key(0)))
  assert nfe == expected == len(calls)
  assert np.all(np.isfinite(np.asarray(x)))


def test_ddim_eta_one_is_the_ancestral_step():
  """One DDIM step T -> s with eta = 1 draws from the posterior q(x_s | x_T, x0_hat), as ancestral sampling."""
  sde, s, n = SDES["vp"], 0.4, 20000
  x_T = jnp.full((n, 1), 1.3)
  score_fn = gaussian_score(sde, M, S**2)
  ddim = sampling.get_sampler(sde, (n, 1), method="ddim", n_steps=1, eta=1.0, eps=s)

  @jax.jit
  def both(key_ddim, key_anc):
    x_ddim, _ = ddim(key_ddim, score_fn, x_T=x_T)
    keys = sampling.per_sample_keys(key_anc, n)
    t_vec, s_vec = jnp.full((n,), sde.T), jnp.full((n,), s)
    x_anc, _ = sampling.ancestral_sampling(keys, sde.reverse(score_fn), x_T, t_vec, s_vec)
    return x_ddim[:, 0], x_anc[:, 0]

  x_ddim, x_anc = (np.asarray(v, np.float64) for v in both(jax.random.key(0), jax.random.key(1)))
  # Both are Gaussian given x_T; tolerances 5 standard errors of the difference.
  std = x_anc.std()
  assert abs(x_ddim.mean() - x_anc.mean()) < 5 * std * np.sqrt(2 / n)
  assert abs(x_ddim.std() - std) < 5 * std * np.sqrt(1 / n)


@pytest.mark.parametrize("method,kwargs,expected", [
    ("ddim", dict(n_steps=5, eta=0.5), 5),
    pytest.param("edm_heun", dict(n_steps=5, S_churn=5.0), 9, marks=pytest.mark.slow)])
def test_stochastic_samples_count_nfe_and_do_not_depend_on_batch_size(method, kwargs, expected):
  sde = SDES["vp"]
  calls = []
  score = counted(gaussian_score(sde, M, S**2), calls)

  def run(n):
    sampler = sampling.get_sampler(sde, (n, 1), method=method, **kwargs)
    x, nfe = run_counted(lambda: jax.jit(lambda k: sampler(k, score))(jax.random.key(3)))
    return np.asarray(x), int(nfe)

  (small, nfe_small), (large, nfe_large) = run(3), run(7)
  assert nfe_small == nfe_large == expected and len(calls) == 2 * expected
  # The same per-sample keys: equal up to float32 round-off of differently batched kernels.
  np.testing.assert_allclose(small, large[:3], rtol=1e-5, atol=1e-5)


def test_fast_configs_build_and_trajectory_plots_need_a_pc_sampler():
  """configs/*_gmm_fast.py build (9 NFE with VE, 10 with VP, the Gaussian start from the data's moments);
  with trajectory plots on, a fast sampler fails at build time."""
  import run_lib
  from configs import ve_gmm_fast, vp_gmm_fast

  for module, nfe in ((ve_gmm_fast, 9), (vp_gmm_fast, 10)):
    exp = run_lib.build(module.get_config())
    assert exp.config.sampling.method == "bespoke" and exp.config.sampling.n_steps == nfe
    np.testing.assert_allclose(exp.sampler_fields["start_moments"][1], exp.target.cov())
  config = ve_gmm_fast.get_config()
  config.eval.n_trajectory = 50
  with pytest.raises(ValueError, match="eval.n_trajectory=50"):
    run_lib.build(config)


def test_bad_schedule_arguments_raise():
  with pytest.raises(ValueError, match="sampling.rho"):
    sampling.get_time_schedule(SDES["vp"], 10, schedule="edm", rho=0.0)
  with pytest.raises(ValueError, match="sampling.schedule"):
    sampling.get_time_schedule(SDES["vp"], 10, schedule="cosine")
  with pytest.raises(ValueError, match="sampling.denoise_step='midpoint'"):
    sampling.get_sampler(SDES["vp"], (4, 2), method="unipc", n_steps=5, denoise=True, denoise_step="midpoint")
  with pytest.raises(ValueError, match="needs sampling.denoise=True"):
    sampling.get_sampler(SDES["vp"], (4, 2), method="dpm_solver_2m", n_steps=5, denoise_step="half")


@pytest.mark.parametrize("sde_name", ["ve", "vp"])
def test_half_denoise_step_is_second_order_in_sigma_over_s(sde_name):
  """From sigma_edm = sigma on the exact flow of N(0, s^2), the exact map to sigma = 0 scales
  x / alpha by s / sqrt(s^2 + sigma^2); the "half" step (x / alpha + x0_hat) / 2 misses it by
  O((sigma / s)^4), the Tweedie step by O((sigma / s)^2) (rho = sigma / s = 0.5: 0.006 vs 0.094)."""
  from sampling.schedules import denoise_to_zero

  sde, s, rho = SDES[sde_name], 0.2, 0.5
  t = jnp.full((3,), sampling.end_time(sde, sigma_end=rho * s))
  alpha = sde.marginal_coeffs(t)[0][0]
  x_edm = jnp.array([[-1.0], [0.5], [2.0]]) * np.sqrt(s**2 + (rho * s) ** 2)
  exact = x_edm / np.sqrt(1.0 + rho**2)
  half, tweedie = (denoise_to_zero(sde, gaussian_score(sde, 0.0, s**2), alpha * x_edm, t, step)
                   for step in ("half", "tweedie"))
  err_half, err_tweedie = (float(jnp.max(jnp.abs(v - exact) / jnp.abs(exact))) for v in (half, tweedie))
  half_over_exact = (1.0 + 1.0 / (1.0 + rho**2)) / 2.0 * np.sqrt(1.0 + rho**2)  # the closed form
  np.testing.assert_allclose(err_half, half_over_exact - 1.0, rtol=1e-3)
  assert err_half < 0.1 * err_tweedie, (err_half, err_tweedie)


def _energy_ratio(config_name, n_seeds=3, n_refs=2, **sampler_kwargs):
  """The benchmark's protocol (benchmarks/samplers.py): mean over seeds 0..n_seeds-1 of the energy
  distance of 10,000 oracle samples (mean over n_refs reference sets) / the 10-pair floor."""
  import run_lib

  exp = run_lib.build(importlib.import_module(f"configs.{config_name}").get_config())
  n = 10_000
  sampler = sampling.get_sampler(exp.sde, (n,) + exp.shape, **sampler_kwargs)
  fn = jax.jit(lambda k: sampler(k, exp.target.score_fn(exp.sde)))
  sample_fn = jax.jit(exp.target.sample, static_argnums=1)
  refs = [sample_fn(k, n) for k in jax.random.split(jax.random.key(12), n_refs)]
  eds = [np.mean([float(metrics.energy_distance(fn(jax.random.key(s))[0], r)) for r in refs])
         for s in range(n_seeds)]
  floor = metrics.metric_floor(jax.random.key(13), sample_fn, n,
                               lambda k, a, b: metrics.energy_distance(a, b), n_pairs=10)["mean"]
  return float(np.mean(eds)) / floor


# The earliest fast configuration (configs/*_gmm_fast.py now use a fitted bespoke solver, tested by KL
# below): DPM-Solver++(2M) on the uniform log-SNR grid
# down to sigma_edm = 0.1, then the step to sigma = 0, 10 NFE in all. Measured (seeds 0, 1, 2):
# ve_gmm 1.62 [1.21, 0.90, 2.75], vp_gmm 1.44 [1.04, 0.84, 2.44] x floor (without the denoising
# step, ending at eps = 1e-3: 4.73 and 3.20). Deterministic given the seeds; the bound is the
# must-show's 2x, a margin of 0.38x / 0.56x.
FAST = dict(method="dpm_solver_2m", n_steps=10, schedule="log_snr", denoise=True, sigma_end=0.1)


@pytest.mark.slow
@pytest.mark.parametrize("config_name", ["vp_gmm", "ve_gmm"])
def test_must_show_oracle_within_2x_floor_at_10_nfe(config_name):
  """Must-show: a sampler with 10 NFE and the oracle score is within 2x the energy floor."""
  ratio = _energy_ratio(config_name, **FAST)
  assert ratio <= 2.0, ratio


# --- conditional generation ---

COND = datasets.get_dataset(**cond_gmm.get_config().data)  # 3 components, labels = components


MIX = datasets.GaussianMixture()  # the default 2-component mixture


def _points(n=64, seed=0):
  return jax.random.normal(jax.random.key(seed), (n, 2)) * 2.0


def test_guidance_with_exact_scores_is_the_exact_conditional_score():
  sde = sde_lib.VESDE(sigma_max=20.0)
  x = _points(96, seed=1)
  t = jnp.linspace(0.01, 1.0, 96)
  y = jnp.arange(96) % COND.num_classes
  cond, marg = COND.conditional_score_fn(sde), COND.score_fn(sde)
  post = COND.class_log_posterior_fn(sde)
  exact = jax.jit(cond)(x, t, y)
  scale = jnp.max(jnp.abs(exact))
  apply = lambda fn: jax.jit(lambda a, b: fn(a, b))(x, t)
  # CFG with w = 0 is the conditional score; classifier guidance with the exact posterior
  # and scale 1 is Bayes' rule, the conditional score (float32: 1e-5 of the largest score).
  np.testing.assert_allclose(apply(sampling.classifier_free_guidance(cond, y, 0.0)), exact, atol=1e-5 * scale)
  np.testing.assert_allclose(apply(sampling.classifier_guidance(marg, post, y, 1.0)), exact, atol=1e-5 * scale)
  # CFG at w equals classifier guidance of the conditional score with the exact posterior at scale w.
  for w in (0.5, 3.0):
    np.testing.assert_allclose(apply(sampling.classifier_free_guidance(cond, y, w)),
                               apply(sampling.classifier_guidance(functools.partial(cond, y=y), post, y, w)),
                               atol=1e-4 * scale)


def test_guided_oracle_sampling_reaches_the_floor_per_class():
  """CFG (w = 0) with the exact class score and classifier guidance with the exact posterior:
  per class, the energy distance to true component samples, averaged over 3 seeds (each vs 2
  reference sets), is at most 1.5x the expected floor E|X - X'| (2 / n) (n = 1,000 samples per
  class, all classes in one batch with per-sample labels, VPSDE N = 100, PC + ald). One set's
  ratio spreads from about 0.5 to 2 even for exact samples (benchmarks/RESULTS.md), hence the
  average over seeds."""
  sde, n, k = sde_lib.VPSDE(N=100), 1000, COND.num_classes
  sampler = sampling.get_sampler(sde, (k * n, 2), corrector="ald")
  cond, marg, post = COND.conditional_score_fn(sde), COND.score_fn(sde), COND.class_log_posterior_fn(sde)
  y = jnp.repeat(jnp.arange(k), n)
  run = {"cfg": jax.jit(lambda key: sampler(key, sampling.classifier_free_guidance(cond, y, 0.0))[0]),
         "classifier": jax.jit(lambda key: sampler(key, sampling.classifier_guidance(marg, post, y, 1.0))[0])}
  for name, fn in run.items():
    xs = [np.asarray(fn(jax.random.key(seed))).reshape(k, n, 2) for seed in range(3)]
    for label in range(k):
      comp = COND.component(label)
      refs = [comp.sample(jax.random.key(100 * label + i), n) for i in range(2)]
      floor = metrics.energy_distance_expected_floor(comp.sample(jax.random.key(7), 4000), n, n)
      ratios = [np.mean([metrics.energy_distance(x[label], r) for r in refs]) / floor for x in xs]
      assert np.mean(ratios) <= 1.5, (name, label, ratios)


def test_guided_and_imputed_samples_do_not_depend_on_batch_size():
  """Replacement imputation driven by a classifier-free guided score, per-sample labels and
  known values: the first 3 rows of a batch of 8 equal a batch of 3 (float32 round-off)."""
  sde = sde_lib.VPSDE(N=20)
  cond = COND.conditional_score_fn(sde)
  y = jnp.array([2, 0, 1, 1, 0, 2, 2, 1])
  x_known = jnp.stack([jnp.linspace(-1.0, 1.0, 8), jnp.zeros(8)], 1)

  def impute(n):
    sampler = sampling.get_inpainting_sampler(sde, (n, 2), corrector="ald")
    score = sampling.classifier_free_guidance(cond, y[:n], 1.5)
    return jax.jit(lambda k: sampler(k, score, x_known[:n], jnp.array([1.0, 0.0]))[0])(jax.random.key(4))

  np.testing.assert_allclose(impute(3), impute(8)[:3], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method,kwargs", [pytest.param("ode", {"rtol": 1e-3, "atol": 1e-3}, marks=pytest.mark.slow),
                                           ("dpm_solver_2m", {"n_steps": 20})])
def test_guidance_works_with_other_samplers(method, kwargs):
  """Classifier guidance with the exact posterior through the ODE and DPM-Solver samplers:
  each class's sample mean is that component's mean within 5 standard errors + 0.05 (500 samples)."""
  sde, n = sde_lib.VPSDE(), 500
  sampler = sampling.get_sampler(sde, (n, 2), method=method, **kwargs)  # ode: rtol = atol = 1e-3
  marg, post = COND.score_fn(sde), COND.class_log_posterior_fn(sde)
  fn = jax.jit(lambda k, y: sampler(k, sampling.classifier_guidance(marg, post, y, 1.0))[0])
  for label in range(COND.num_classes):
    x = np.asarray(fn(jax.random.key(label), jnp.full((n,), label)))
    se = np.sqrt(np.diag(np.asarray(COND.covs[label])) / n)
    np.testing.assert_array_less(np.abs(x.mean(0) - np.asarray(COND.means[label])), 5 * se + 0.05)


def test_replacement_is_exact_for_independent_coordinates_and_imposes_known_values():
  """With independent coordinates p(x2 | x1) = p(x2), so replacement has no bias: moments of
  x2 within 5 standard errors + 0.03 (N = 200); the known x1 is returned exactly."""
  target = datasets.GaussianMixture([[0.5, -1.0]], [[[1.0, 0.0], [0.0, 0.25]]], [1.0])
  sde, n = sde_lib.VPSDE(N=200), 2000
  x_known = jnp.zeros((n, 2)).at[:, 0].set(jnp.linspace(-2.0, 2.0, n))
  mask = jnp.array([1.0, 0.0])
  sampler = sampling.get_inpainting_sampler(sde, (n, 2), corrector="none")
  x, nfe = jax.jit(lambda k: sampler(k, target.score_fn(sde), x_known, mask))(jax.random.key(0))
  assert nfe == 201
  np.testing.assert_array_equal(np.asarray(x[:, 0]), np.asarray(x_known[:, 0]))
  x2 = np.asarray(x[:, 1])
  assert abs(x2.mean() + 1.0) < 5 * 0.5 / np.sqrt(n) + 0.03
  assert abs(x2.std() - 0.5) < 0.03
  with pytest.raises(ValueError, match="x_known.shape"):
    sampler(jax.random.key(0), target.score_fn(sde), x_known[:5], mask)


def test_gradient_imputation_matches_the_exact_conditional():
  """Imputing x2 given x1 on the default mixture (VPSDE N = 200, 1,000 samples) with
  reconstruction guidance: the energy distance to the exact p(x2 | x1) is under 0.2x the
  distance between the marginal p(x2) and p(x2 | x1) and under 4x the floor, at x1 = 0 and 2.
  Replacement alone is biased here (measured in benchmarks/RESULTS.md, not asserted)."""
  sde, n = sde_lib.VPSDE(N=200), 1000
  oracle, mask = MIX.score_fn(sde), jnp.array([1.0, 0.0])
  plain = sampling.get_sampler(sde, (n, 2), corrector="ald")
  guided = jax.jit(lambda k, xk: plain(k, sampling.reconstruction_guidance(sde, oracle, xk, mask))[0])
  marginal = MIX.sample(jax.random.key(9), n)[:, 1:]
  for a in (0.0, 2.0):
    cond = MIX.condition([0], [a])
    refs = [cond.sample(jax.random.key(20 + i), n) for i in range(3)]
    floor = np.mean([metrics.energy_distance(refs[i], refs[i + 1]) for i in range(2)])
    xk = jnp.zeros((n, 2)).at[:, 0].set(a)
    ed = lambda x: np.mean([metrics.energy_distance(x, r) for r in refs[1:]])
    ed_guided, ed_marginal = ed(guided(jax.random.key(1), xk)[:, 1:]), ed(marginal)
    assert ed_guided < 0.2 * ed_marginal and ed_guided < 4 * floor, (a, ed_guided, ed_marginal, floor)


def test_colorization_keeps_the_grey_image_and_approaches_the_exact_colour_conditional():
  """A correlated Gaussian over [1, 2, 3] images: the grey image is kept to float32 round-off,
  and with reconstruction guidance (data_var = 0.25) the colours are under 0.3x as far (energy
  distance) from the exact conditional as the unconditional colours are (1,000 samples, N = 200)."""
  rng = np.random.default_rng(0)
  a = rng.normal(size=(6, 6))
  mu, cov = rng.uniform(-0.5, 0.5, 6), 0.3 * a @ a.T / 6 + 0.1 * np.eye(6)
  target = datasets.GaussianMixture([mu.tolist()], [cov.tolist()], [1.0])
  grey = np.array([1.0, -0.8])
  A = np.kron(np.eye(2), np.ones((1, 3)) / 3)  # grey = A x; x | A x = g is Gaussian (Bishop Eq. 2.81-2.82)
  gain = cov @ A.T @ np.linalg.inv(A @ cov @ A.T)
  c_mean, c_cov = mu + gain @ (grey - A @ mu), cov - gain @ A @ cov
  R = np.kron(np.eye(2), sampling.colorization_basis(3))  # colour coordinates: rows 1, 2, 4, 5 of R x
  colour = lambda x: np.asarray(x).reshape(-1, 6) @ R[[1, 2, 4, 5]].T
  n, sde = 1000, sde_lib.VPSDE(N=200)
  exact = colour(c_mean + rng.multivariate_normal(np.zeros(6), c_cov + 1e-9 * np.eye(6), size=n))
  uncond = colour(target.sample(jax.random.key(3), n))
  flat = target.score_fn(sde)
  score = lambda x, t: flat(x.reshape(x.shape[0], -1), t).reshape(x.shape)
  sampler = sampling.get_colorization_sampler(sde, (n, 1, 2, 3), corrector="none", guidance_scale=1.0, data_var=0.25)
  x, _ = jax.jit(lambda k: sampler(k, score, jnp.broadcast_to(jnp.asarray(grey, jnp.float32), (n, 1, 2))))(
      jax.random.key(0))
  np.testing.assert_allclose(np.asarray(x).mean(-1), np.broadcast_to(grey, (n, 1, 2)), atol=1e-5)
  ed, ed_uncond = metrics.energy_distance(colour(x), exact), metrics.energy_distance(uncond, exact)
  assert ed < 0.3 * ed_uncond, (ed, ed_uncond)
  M = sampling.colorization_basis(4)
  np.testing.assert_allclose(M @ M.T, np.eye(4), atol=1e-12)
  np.testing.assert_allclose(M[0], 0.5)


# --- discrete DDPM / SMLD ---

def test_ancestral_sampler_per_sample_keys_nfe_and_trajectory():
  s = sde_lib.linear_schedule(50)
  eps = lambda x, t: 0.1 * x * (t[:, None] / 50.0)  # any per-row eps_fn will do
  x8, nfe, traj = jax.jit(lambda k: sampling.get_ancestral_sampler(s, (8, 2)).trajectory(k, eps, 5))(jax.random.key(0))
  x3, nfe3 = jax.jit(lambda k: sampling.get_ancestral_sampler(s, (3, 2))(k, eps))(jax.random.key(0))
  assert nfe == nfe3 == 50 and x8.shape == (8, 2) and traj.shape == (5, 8, 2)
  np.testing.assert_array_equal(np.asarray(traj[-1]), np.asarray(x8))
  # Sample i depends only on fold_in(key, i): the same rows for any batch size (float32 round-off).
  np.testing.assert_allclose(np.asarray(x8[:3]), np.asarray(x3), atol=1e-5)


@pytest.mark.slow
def test_ddpm_ancestral_method_of_get_sampler_is_algorithm_2():
  """sampling.get_sampler(method="ddpm_ancestral") with the oracle score of DiscreteVPSDE is Algorithm 2
  with the exact eps (eps = -sigma(t_i) score(x, t_i) recovers it; float32 round-off)."""
  s, sde = sde_lib.linear_schedule(100), sde_lib.DiscreteVPSDE(schedule="linear", N=100)
  target = datasets.GaussianMixture()
  bridge = sampling.get_sampler(sde, (64, 2), method="ddpm_ancestral")
  native = sampling.get_ancestral_sampler(s, (64, 2))
  (x_bridge, nfe), (x_native, _) = jax.jit(lambda k: (bridge(k, target.score_fn(sde)),
                                                     native(k, models.exact_eps_fn(target, s))))(jax.random.key(3))
  assert nfe == 100
  np.testing.assert_allclose(np.asarray(x_bridge), np.asarray(x_native), atol=1e-4)


@pytest.mark.slow
def test_ancestral_sampling_with_exact_eps_within_energy_floor():
  """Must-show: Algorithm 2 (T = 1000, beta_tilde) with the exact eps reaches <= 1.5x the energy floor;
  10,000 samples against 10 reference sets, floor the mean over 10 pairs of true sets (as run_lib)."""
  target, s, n = datasets.GaussianMixture(), sde_lib.linear_schedule(1000), 10_000
  sampler = sampling.get_ancestral_sampler(s, (n, 2), variance="beta_tilde")
  x, nfe = jax.jit(lambda k: sampler(k, models.exact_eps_fn(target, s)))(jax.random.key(11))
  assert nfe == 1000
  refs = [target.sample(k, n) for k in jax.random.split(jax.random.key(12), 10)]
  ed = np.mean([float(metrics.energy_distance(x, r)) for r in refs])
  floor = metrics.metric_floor(jax.random.key(13), jax.jit(target.sample, static_argnums=1), n,
                                  lambda k, a, b: metrics.energy_distance(a, b), n_pairs=10)["mean"]
  assert ed <= 1.5 * floor, (ed, floor)  # measured 0.90x


# --- optimised time grids -------------------------------------------------------------------

MIX1 = [datasets.GaussianMixture(means=[[-1.0], [1.5]], covs=[[[0.3]], [[0.6]]], weights=[0.6, 0.4]),
        datasets.GaussianMixture(means=[[-0.5], [1.0]], covs=[[[0.05]], [[0.2]]], weights=[0.5, 0.5])]


@pytest.mark.slow
def test_optimised_grid_is_monotone_and_lowers_the_exact_kl():
  """30 Adam steps on UniPC's 4-step log-SNR grid (two 1-D mixtures at once, VP, 5 NFE with the
  denoising step): the grid stays strictly increasing and the exact KL on fresh latents of the first
  mixture drops below half the uniform log-SNR grid's (measured 0.110 +- 0.005 -> 0.010 +- 0.002)."""
  from sampling import grid_opt

  sde = SDES["vp"]
  kwargs = dict(method="unipc", n_steps=5, order=2, denoise=True, sigma_end=0.1)
  out = grid_opt.optimise_grid(jax.random.key(0), sde, [(t.score_fn(sde), t.log_prob, 1) for t in MIX1],
                               batch_size=512, n_iters=30, learning_rate=0.1, **kwargs)

  def kl(**schedule):
    sampler = sampling.get_sampler(sde, (4096, 1), **kwargs, **schedule)
    return metrics.sampler_kl(jax.random.key(7), sampler, MIX1[0].score_fn(sde), MIX1[0].log_prob, sde, n_batches=2)

  fixed, custom = kl(schedule="log_snr"), kl(schedule="custom", timesteps=out["timesteps"])
  assert np.all(np.diff(out["timesteps"]) > 0) and len(out["timesteps"]) == 3
  assert custom["kl"] + 2 * custom["se"] < 0.5 * fixed["kl"], (fixed, custom)


def test_grid_logits_round_trip_and_the_fit_starts_at_init():
  """`logits_of_grid` inverts `grid_of_logits`; one Adam step of size 1e-6 leaves `init` in place."""
  from sampling import grid_opt

  sde = SDES["ve"]
  n_solver, lam_T, lam_end = grid_opt.grid_bounds(sde, 4, sigma_end=0.01)
  assert n_solver == 4 and np.isclose(lam_end, -np.log(0.01), atol=1e-4)
  init = [-2.0, 0.5, 3.0]
  np.testing.assert_allclose(grid_opt.grid_of_logits(grid_opt.logits_of_grid(init, lam_T, lam_end), lam_T, lam_end),
                             init, rtol=1e-5)
  out = grid_opt.optimise_grid(jax.random.key(0), sde, [(MIX1[0].score_fn(sde), MIX1[0].log_prob, 1)],
                               method="dpm_solver_2m", n_steps=4, sigma_end=0.01, batch_size=8, n_iters=1,
                               learning_rate=1e-6, init=init)
  np.testing.assert_allclose(out["timesteps"], init, atol=1e-3)
  with pytest.raises(ValueError, match="at least one"):
    grid_opt.optimise_grid(jax.random.key(0), sde, [], n_steps=4)
  with pytest.raises(ValueError, match="sampling.timesteps"):
    grid_opt.optimise_grid(jax.random.key(0), sde, [(MIX1[0].score_fn(sde), MIX1[0].log_prob, 1)], n_steps=4,
                           sigma_end=0.01, init=[3.0, 0.5, -2.0])
  for bad, match in ((dict(average=1.5), r"average=1.5"), (dict(chunks=3), r"chunks=3 must divide batch_size=8")):
    with pytest.raises(ValueError, match=match):
      grid_opt.optimise_grid(jax.random.key(0), sde, [(MIX1[0].score_fn(sde), MIX1[0].log_prob, 1)],
                             method="dpm_solver_2m", n_steps=4, sigma_end=0.01, batch_size=8, **bad)


def _klub_quadrature(s, lams):
  """The KLUB of `sampling.ays.klub` for data N(0, s^2) in 1-D, VE (x~ = x, D = s^2 / (s^2 + sigma^2) x):
  E(a x_sigma - b x_i)^2 = (a - b)^2 (s^2 + sigma^2) + b^2 (sigma_i^2 - sigma^2), by quadrature in lambda."""
  total = 0.0
  for lam_i, lam_next in zip(lams[:-1], lams[1:]):
    lam = np.linspace(lam_i, lam_next, 20001)
    sigma, sigma_i = np.exp(-lam), np.exp(-lam_i)
    a, b = s**2 / (s**2 + sigma**2), s**2 / (s**2 + sigma_i**2)
    f = ((a - b) ** 2 * (s**2 + sigma**2) + b**2 * (sigma_i**2 - sigma**2)) / sigma**2  # sigma^-3 d sigma
    total += np.trapezoid(f, lam)
  return total


def test_ays_klub_matches_quadrature_for_a_gaussian():
  """The Monte Carlo KLUB (forward-process pairs, one lambda per step) against quadrature of its
  closed form for Gaussian data (200,000 points; measured within 0.3%)."""
  from sampling import ays

  sde, s, lams = SDES["ve"], 0.5, jnp.array([-1.5, -0.2, 0.6, 1.5])
  x0 = s * jax.random.normal(jax.random.key(0), (200_000, 1))
  mc = float(ays.klub(jax.random.key(1), sde, gaussian_score(sde, 0.0, s**2), x0, lams))
  np.testing.assert_allclose(mc, _klub_quadrature(s, np.asarray(lams, np.float64)), rtol=0.02)


def test_ays_published_grid_and_fit():
  """The published SD 1.5 schedule (sigma 14.615 ... 0.029) keeps its log-sigma profile on our range;
  20 Adam steps on the KLUB keep the grid increasing and lower the KLUB."""
  from sampling import ays

  sigmas = ays.sd15_sigmas()
  np.testing.assert_allclose(sigmas[[0, 1, -2, -1]], [14.615, 6.475, 0.152, 0.029], atol=5e-4)  # 3 decimals
  sde = SDES["vp"]
  lam_T, lam_end = (float(v) for v in sde.log_snr(jnp.array([sde.T, sampling.end_time(sde, sigma_end=0.01)])))
  grid = np.asarray(ays.published_grid(sde, 10, sigma_end=0.01))
  profile = np.log(sigmas / sigmas[0]) / np.log(sigmas[-1] / sigmas[0])
  np.testing.assert_allclose((grid - lam_T) / (lam_end - lam_T), profile[1:-1], atol=1e-5)
  assert np.all(np.diff(ays.published_grid(sde, 6, denoise=True, sigma_end=0.1)) > 0)
  target = MIX1[1]
  out = ays.optimise_grid_ays(jax.random.key(0), sde, target.score_fn(sde), target.sample, n_steps=4,
                              batch_size=512, n_iters=20, sigma_end=0.01)
  assert len(out["timesteps"]) == 3 and np.all(np.diff(out["timesteps"]) > 0)
  assert np.mean(out["loss"][-5:]) < 0.8 * np.mean(out["loss"][:5]), out["loss"]


@pytest.mark.slow
@pytest.mark.parametrize("config_name", ["ve_gmm_fast", "vp_gmm_fast"])
def test_must_show_fast_configs_reach_kl_0003_with_the_exact_score(config_name):
  """Must-show: the *_gmm_fast sampling group (<= 10 NFE) with the exact score has exact KL <= 0.003
  nats (4,096 latents, the estimate + 2 SE) on a 3-D mixture its solver was not fitted on, with the
  Gaussian start from that mixture's moments (measured 0.00089 +- 0.00033 (VE, 9 NFE), 0.00037 +- 0.00031
  (VP, 10 NFE); every mixture, fitted on and held out, in
  benchmarks/RESULTS.md, "Samplers: exact KL vs NFE"; on modes of standard deviation 0.1-0.2 it is
  not met everywhere, see the next test). The earliest DPM-Solver++(2M), log-SNR grid, Tweedie end:
  0.0042 +- 0.0011 (VE) and 0.0054 +- 0.0012 (VP) at 8,192 latents."""
  import run_lib

  config = importlib.import_module(f"configs.{config_name}").get_config()
  sde = sde_lib.get_sde(**config.sde)
  target = MIX3
  sampler = sampling.get_sampler(sde, (2048, target.dim), **run_lib.sampler_fields(config.sampling, target))
  out = metrics.sampler_kl(jax.random.key(0), sampler, target.score_fn(sde), target.log_prob, sde, n_batches=2)
  assert out["nfe"] <= 10 and out["kl"] + 2 * out["se"] <= 0.003 and out["folded"] == 0, out


NARROW3 = datasets.GaussianMixture(  # modes of standard deviation 0.1-0.6 (benchmarks/sampler_kl.py, "3d narrow")
    means=((1.5, 0.0, 0.0), (-1.0, 1.5, 0.5), (-0.5, -1.5, -1.0)),
    covs=(np.diag([0.25, 0.04, 0.01]).tolist(), np.diag([0.09, 0.09, 0.01]).tolist(),
          np.diag([0.36, 0.0625, 0.04]).tolist()),
    weights=(0.5, 0.3, 0.2))


@pytest.mark.slow
@pytest.mark.parametrize("config_name", ["ve_gmm_fast", "vp_gmm_fast"])
def test_fast_configs_on_narrow_modes_stay_near_their_measured_kl(config_name):
  """On modes of standard deviation 0.1 the fast configs give 0.0019 +- 0.0011 (VE, 9 NFE) and
  0.0010 +- 0.0012 (VP, 10 NFE) nats at 4,096 latents (the earlier 9-NFE solver: 0.0033 and 0.0023; the
  earlier UniPC-3 setting: 0.0045 and 0.0052); on the benchmark's narrow mixtures (65,536 latents)
  0.002-0.006, so the must-show bound is not met on all of them. A regression guard at 0.01, not the
  goal; and the solver must not fold the latent space (then the number would not be a KL)."""
  import run_lib

  config = importlib.import_module(f"configs.{config_name}").get_config()
  sde = sde_lib.get_sde(**config.sde)
  sampler = sampling.get_sampler(sde, (2048, 3), **run_lib.sampler_fields(config.sampling, NARROW3))
  out = metrics.sampler_kl(jax.random.key(0), sampler, NARROW3.score_fn(sde), NARROW3.log_prob, sde, n_batches=2)
  assert out["nfe"] == {"ve_gmm_fast": 9, "vp_gmm_fast": 10}[config_name] and out["kl"] < 0.01, out
  assert out["folded"] == 0, out


def test_pc_rejects_a_vp_chain_with_beta_above_one():
  """VPSDE(N=10, beta_max=20): the DDPM chain's betas reach 2, so reverse_diffusion / Langevin would
  take sqrt(1 - beta) of a negative number; the sampler that does not use the chain is allowed."""
  sde = sde_lib.VPSDE(N=10)
  for kwargs in (dict(), dict(predictor="euler_maruyama", corrector="langevin"),
                 dict(predictor="reverse_diffusion", corrector="none")):
    with pytest.raises(ValueError, match="sde.N=10 is too small for sde.beta_max=20.0"):
      sampling.get_sampler(sde, (4, 2), method="pc", **kwargs)
  sampling.get_sampler(sde, (4, 2), method="pc", predictor="euler_maruyama", corrector="none")
  sampling.get_sampler(sde_lib.VPSDE(N=20), (4, 2), method="pc")  # beta_max / N = 1 exactly: allowed
