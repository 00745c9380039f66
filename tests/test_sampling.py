"""PC sampler: moments and energy distance with the oracle score, NFE, per-sample keys."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datasets
import evaluation
import sampling
import sde_lib

TARGET = datasets.GaussianMixture()


def _sample(sde, n, key=0, **kwargs):
  sampler = sampling.get_sampler(sde, (n, 2), **kwargs)
  return jax.jit(lambda k: sampler(k, TARGET.score_fn(sde)))(jax.random.key(key))


@pytest.mark.parametrize("predictor,corrector", [
    ("reverse_diffusion", "ald"), ("euler_maruyama", "none"), ("ancestral_sampling", "none"),
    ("reverse_diffusion", "langevin")])
def test_reverse_sde_with_oracle_recovers_mixture_moments(predictor, corrector):
  # N = 200: ancestral sampling's posterior variance (beta_tilde) under-disperses at coarser grids.
  sde = sde_lib.VPSDE(N=200)
  n = 4000
  # `langevin` (per-sample steps) is biased in 2-D unless snr is tiny; see sampling.langevin.
  snr = 0.01 if corrector == "langevin" else 0.16
  x, _ = _sample(sde, n, predictor=predictor, corrector=corrector, snr=snr)
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

  def counted_score(x, t):
    jax.debug.callback(lambda: calls.append(1))
    return TARGET.score_fn(sde)(x, t)

  sampler = sampling.get_sampler(sde, (8, 2), predictor=predictor, corrector=corrector,
                                 n_steps=n_steps, denoise=denoise)
  x, nfe = jax.jit(lambda k: sampler(k, counted_score))(jax.random.key(0))
  jax.block_until_ready(x)
  jax.effects_barrier()
  assert nfe == expected == len(calls)


def test_sample_does_not_depend_on_batch_size():
  sde = sde_lib.VESDE(N=50)
  small, _ = _sample(sde, 8, key=3)
  large, _ = _sample(sde, 40, key=3)
  # The same per-sample keys: equal up to float32 round-off of differently batched kernels.
  np.testing.assert_allclose(np.asarray(small), np.asarray(large[:8]), rtol=1e-5, atol=1e-5)


def test_trajectory_is_thinned_and_ends_at_the_sample():
  sde = sde_lib.VPSDE(N=30)
  sampler = sampling.get_sampler(sde, (16, 2), n_trajectory=7)
  x, nfe, traj = jax.jit(lambda k: sampler(k, TARGET.score_fn(sde)))(jax.random.key(1))
  assert traj.shape == (7, 16, 2)
  np.testing.assert_array_equal(np.asarray(traj[-1]), np.asarray(x))
  # The first state is close to prior noise (std 1 for VP), the last close to data.
  assert 0.5 < float(jnp.std(traj[0])) < 1.5
  assert not np.allclose(np.asarray(traj[0]), np.asarray(traj[-1]))


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


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="nope"), "sampling.method"),
    (dict(predictor="nope"), "sampling.predictor"),
    (dict(corrector="nope"), "sampling.corrector"),
    (dict(snr=0.0), "sampling.snr"),
    (dict(n_steps=-1), "sampling.n_steps"),
    (dict(eps=0.0), "sampling.eps"),
    (dict(eps=2.0), "sampling.eps"),
    (dict(bogus=1), "bogus")])
def test_bad_sampler_arguments_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    sampling.get_sampler(sde_lib.VPSDE(), (4, 2), **kwargs)


SDE_CONFIGS = ["ve_gmm", "vp_gmm", "subvp_gmm", "lambda_ve_gmm", "ou_box1d"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SDE_CONFIGS)
def test_default_pc_sampler_with_oracle_within_floor(name):
  """Must-show: with the oracle score the configured PC sampler reaches <= 1.5x the energy floor.

  10,000 samples; the model's energy distance is the mean over 10 reference sets and the
  floor the mean over 10 pairs of true sets (both as in run_lib.evaluate).
  """
  import importlib
  import run_lib

  config = importlib.import_module(f"configs.{name}").get_config()
  exp = run_lib.build(config)
  n = config.eval.n_samples
  sampler = sampling.get_sampler(exp.sde, (n,) + exp.shape, **config.sampling)
  x, _ = jax.jit(lambda k: sampler(k, exp.target.score_fn(exp.sde)))(jax.random.key(11))
  refs = [exp.target.sample(k, n) for k in jax.random.split(jax.random.key(12), 10)]
  ed = np.mean([float(evaluation.energy_distance(x, r)) for r in refs])
  floor = evaluation.metric_floor(jax.random.key(13), jax.jit(exp.target.sample, static_argnums=1), n,
                                  lambda k, a, b: evaluation.energy_distance(a, b), n_pairs=10)["mean"]
  assert ed <= 1.5 * floor, (name, ed, floor)
