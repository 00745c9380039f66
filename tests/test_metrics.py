"""Tests for metrics.py against brute force and closed forms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datasets
import metrics
import sde_lib


def _brute_energy_distance(x, y):
  """The V-statistic in float64 numpy with full distance matrices."""
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  y = np.asarray(y, np.float64).reshape(len(y), -1)
  dist = lambda a, b: np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).mean()
  return 2 * dist(x, y) - dist(x, x) - dist(y, y)


def _mean_abs_normal(mu, s):
  """E|N(mu, s^2)| = s sqrt(2/pi) exp(-mu^2 / (2 s^2)) + mu (1 - 2 Phi(-mu / s))."""
  phi_minus = 0.5 * math.erfc(mu / (s * math.sqrt(2)))  # Phi(-mu / s)
  return s * math.sqrt(2 / math.pi) * math.exp(-mu**2 / (2 * s**2)) + mu * (1 - 2 * phi_minus)


@pytest.fixture(scope="module")
def mixture():
  target = datasets.GaussianMixture()
  return target, jax.jit(target.sample, static_argnums=1)


@pytest.fixture(scope="module")
def true_samples(mixture):
  """20000 samples of the default mixture, drawn in sets of 100 (the size the sampler is
  compiled for in the floor test; compiling is most of the cost on CPU)."""
  sample, key = mixture[1], jax.random.PRNGKey(14)
  return np.concatenate([np.asarray(sample(jax.random.fold_in(key, i), 100)) for i in range(200)])


# --- energy distance -----------------------------------------------------------------

@pytest.mark.parametrize("trailing, chunk_size", [
    ((2, 3), 7),       # 6 features: coordinate-wise path; chunks divide neither n nor m
    ((4, 5), 64),      # 20 features: the matmul path
])
def test_energy_distance_matches_brute_force(trailing, chunk_size):
  rng = np.random.default_rng(0)
  x = (rng.standard_normal((300, *trailing)) + 3.0).astype(np.float32)  # off-centre: round-off
  y = (1.5 * rng.standard_normal((257, *trailing)) + 3.4).astype(np.float32)
  got = float(metrics.energy_distance(x, y, chunk_size=chunk_size))
  np.testing.assert_allclose(got, _brute_energy_distance(x, y), rtol=1e-5)


def test_energy_distance_is_zero_for_identical_sets(true_samples):
  # Every element w d - w d of the witness sum cancels; where XLA contracts it to an FMA, the
  # rounding error of one product survives, ~1e-11 in total (vs distances ~3).
  # [100, 2] with one chunk larger than the set: the program the floor test compiles too.
  x = true_samples[:100]
  assert abs(float(metrics.energy_distance(x, x))) < 1e-9


def test_energy_distance_matches_gaussian_closed_form():
  # X ~ N(0, 1), Y ~ N(delta, 1): X - Y ~ N(-delta, 2), X - X' ~ N(0, 2). The V-statistic has
  # expectation 2 E|X-Y| - (1 - 1/n) E|X-X'| - (1 - 1/m) E|Y-Y'| = population + floor.
  n, m, delta, reps = 40, 60, 1.0, 2000
  e_xy, e_xx = _mean_abs_normal(delta, math.sqrt(2)), _mean_abs_normal(0.0, math.sqrt(2))
  population = 2 * e_xy - 2 * e_xx
  floor = e_xx * (1 / n + 1 / m)
  rng = np.random.default_rng(2)
  x = rng.standard_normal((reps, n, 1)).astype(np.float32)
  y = (delta + rng.standard_normal((reps, m, 1))).astype(np.float32)
  values = np.asarray(jax.vmap(metrics.energy_distance)(x, y))
  tol = 4 * values.std(ddof=1) / math.sqrt(reps)  # 4 Monte Carlo standard errors, ~0.02
  assert abs(values.mean() - (population + floor)) < tol
  assert abs(values.mean() - population) > tol  # the floor term (0.047) is resolved


def test_metric_floor_matches_expected_energy_distance_floor(mixture, true_samples):
  _, sample = mixture
  n, n_pairs = 100, 200
  metric = lambda key, a, b: metrics.energy_distance(a, b)
  floor = metrics.metric_floor(jax.random.PRNGKey(3), sample, n, metric, n_pairs=n_pairs)
  expected = metrics.energy_distance_expected_floor(true_samples[:4000], n, n)
  assert len(floor["values"]) == n_pairs
  np.testing.assert_allclose(floor["mean"], np.mean(floor["values"]), rtol=1e-6)
  np.testing.assert_allclose(floor["std"], np.std(floor["values"], ddof=1), rtol=1e-6)
  # 4 standard errors of the mean over pairs (~8%), plus 2% for the U-statistic from 4000 samples.
  tol = 4 * floor["std"] / math.sqrt(n_pairs) + 0.02 * expected
  assert abs(floor["mean"] - expected) < tol


def test_expected_floor_matches_brute_force_u_statistic(true_samples):
  x = true_samples[:4000]  # the same program as the floor test (4000 samples, 2 chunks)
  x64 = x.astype(np.float64)
  total = sum(np.sqrt(((x64[i:i + 500, None] - x64[None]) ** 2).sum(-1)).sum()
              for i in range(0, 4000, 500))
  got = metrics.energy_distance_expected_floor(x, 50, 70)
  np.testing.assert_allclose(got, total / (4000 * 3999) * (1 / 50 + 1 / 70), rtol=1e-5)


# --- sliced Wasserstein ----------------------------------------------------------------

@pytest.mark.parametrize("p", [1, 2])
def test_sliced_wasserstein_of_a_1d_shift_is_the_shift(p):
  # In 1-D every unit direction is +-1, so each projection is shifted by exactly 0.7.
  rng = np.random.default_rng(6)
  x = rng.standard_normal((1000, 1)).astype(np.float32)
  y = rng.permutation(x) + np.float32(0.7)
  got = metrics.sliced_wasserstein(jax.random.PRNGKey(8), x, y, n_projections=16, p=p)
  np.testing.assert_allclose(float(got), 0.7, rtol=1e-5)
  same = metrics.sliced_wasserstein(jax.random.PRNGKey(8), x, x, n_projections=16, p=p)
  assert float(same) == 0.0


def test_sliced_wasserstein_unequal_sizes_compares_quantiles():
  # Evenly spaced sets of different sizes have linear quantile functions q and q + 0.3.
  x = np.linspace(0.0, 1.0, 500, dtype=np.float32)[:, None]
  y = np.random.default_rng(9).permutation(np.linspace(0.3, 1.3, 337, dtype=np.float32))[:, None]
  got = metrics.sliced_wasserstein(jax.random.PRNGKey(10), x, y, n_projections=16)
  np.testing.assert_allclose(float(got), 0.3, rtol=1e-5)


def test_sliced_wasserstein_of_a_2d_shift_matches_direction_average():
  # SW_1 of x vs x + c is E_theta |theta . c| = |c| E|cos U| = |c| 2 / pi for uniform angles
  # (every projection is shifted by exactly theta . c, whatever x is).
  x = np.random.default_rng(11).standard_normal((64, 2)).astype(np.float32)
  c = np.array([0.3, -0.4], np.float32)
  n_projections = 4096
  got = metrics.sliced_wasserstein(jax.random.PRNGKey(12), x, x + c, n_projections=n_projections)
  # std of |c| |cos U| is |c| sqrt(1/2 - 4/pi^2) ~ 0.31 |c|; 4 standard errors.
  tol = 4 * 0.5 * math.sqrt(0.5 - 4 / math.pi**2) / math.sqrt(n_projections)
  assert abs(float(got) - 0.5 * 2 / math.pi) < tol


# --- moments -----------------------------------------------------------------------------

def test_mean_cov_error_matches_numpy(true_samples):
  x = true_samples
  mean, cov = np.array([0.1, -0.2]), np.array([[2.0, 0.3], [0.3, 1.0]])
  got = metrics.mean_cov_error(x, mean, cov)
  x = x.astype(np.float64)
  np.testing.assert_allclose(got["mean_error"], np.linalg.norm(x.mean(0) - mean), rtol=1e-5)
  np.testing.assert_allclose(got["cov_error"], np.linalg.norm(np.cov(x.T) - cov), rtol=1e-5)


def test_mean_cov_error_is_small_on_true_samples(mixture, true_samples):
  target, x = mixture[0], true_samples
  n = len(x)
  got = metrics.mean_cov_error(x, target.mean(), target.cov())
  # E|mean error|^2 = tr(Sigma) / n; E|cov error|_F^2 ~ sum_ij Var(r_i r_j) / n, r = x - mu.
  r = np.asarray(x, np.float64) - target.mean()
  cov_se = math.sqrt(np.sum(np.var(r[:, :, None] * r[:, None, :], axis=0)) / n)
  assert got["mean_error"] < 4 * math.sqrt(np.trace(target.cov()) / n)
  assert got["cov_error"] < 4 * cov_se


# --- score error ---------------------------------------------------------------------------

def test_score_error_of_oracle_and_shifted_oracle(mixture):
  # s = s* + c: weighted_mse(t) = sigma(t)^2 c^2 exactly; c = 0 is the oracle itself
  # (s* + 0.0 == s* in floating point). Binding c with Partial compiles the program once.
  target, sample = mixture
  sde = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=1000)
  oracle = target.score_fn(sde)
  shifted = lambda c, x, t: oracle(x, t) + c
  key, eps, n_times = jax.random.PRNGKey(15), 1e-3, 8
  run = lambda c: metrics.score_error(key, jax.tree_util.Partial(shifted, c), oracle, sde,
                                         sample, n=256, n_times=n_times, eps=eps)
  exact = run(0.0)
  assert exact["weighted_mse"] == 0.0 and exact["relative"] == 0.0
  assert exact["per_t"] == [0.0] * n_times

  c = 0.3
  got = run(c)
  t = np.linspace(eps, sde.T, n_times)
  std2 = -np.expm1(-(0.1 * t + 0.5 * (20.0 - 0.1) * t**2))  # sigma(t)^2 = 1 - exp(-int beta)
  np.testing.assert_allclose(got["t"], t, rtol=1e-6)
  np.testing.assert_allclose(got["per_t"], std2 * c**2, rtol=1e-5)
  np.testing.assert_allclose(got["weighted_mse"], np.mean(std2 * c**2), rtol=1e-5)
  assert got["relative"] > 0.0


# --- errors -----------------------------------------------------------------------------------

def test_malformed_inputs_raise_value_errors(mixture):
  _, sample = mixture
  x, y = np.zeros((10, 2)), np.zeros((12, 3))
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="y.shape"):
    metrics.energy_distance(x, y)
  with pytest.raises(ValueError, match="chunk_size=0"):
    metrics.energy_distance(x, x, chunk_size=0)
  with pytest.raises(ValueError, match="x.shape"):
    metrics.energy_distance(np.zeros((0, 2)), x)
  with pytest.raises(ValueError, match="y.shape"):
    metrics.sliced_wasserstein(key, x, y)
  with pytest.raises(ValueError, match="n_projections=0"):
    metrics.sliced_wasserstein(key, x, x, n_projections=0)
  with pytest.raises(ValueError, match="p=0.5"):
    metrics.sliced_wasserstein(key, x, x, p=0.5)
  with pytest.raises(ValueError, match="n_pairs=0"):
    metrics.metric_floor(key, sample, 10, lambda k, a, b: 0.0, n_pairs=0)
  with pytest.raises(ValueError, match="x_true.shape"):
    metrics.energy_distance_expected_floor(np.zeros((1, 2)), 10, 10)
  with pytest.raises(ValueError, match="m=0 is invalid"):
    metrics.energy_distance_expected_floor(x, 10, 0)
  with pytest.raises(ValueError, match="mean.shape"):
    metrics.mean_cov_error(x, np.zeros(3), np.eye(2))
  with pytest.raises(ValueError, match="cov.shape"):
    metrics.mean_cov_error(x, np.zeros(2), np.eye(3))
  sde = sde_lib.VPSDE()
  with pytest.raises(ValueError, match="eps=1.5"):
    metrics.score_error(key, None, None, sde, sample, eps=1.5)
  with pytest.raises(ValueError, match="n_times=0"):
    metrics.score_error(key, None, None, sde, sample, n_times=0)


# --- the exact KL of a deterministic sampler -------------------------------------------------

def _ddim_affine_map(sde, ts, m, v):
  """(A, b) of x_eps = A z + b for DDIM (eta = 0) with the exact score of N(m, diag(v)), in float64:
  per coordinate, a step t -> s is x_s = alpha_s x0_hat + sigma_s eps_hat with
  x0_hat = x / a_t - sigma_t^2 (x - a_t m) / (a_t V),  eps_hat = sigma_t (x - a_t m) / V,  V = a_t^2 v + sigma_t^2."""
  alpha, sigma = (np.asarray(c, np.float64) for c in sde.marginal_coeffs(jnp.asarray(ts)))
  A, b = np.ones_like(m), np.zeros_like(m)
  for i in range(len(ts) - 1):
    a_t, s_t, a_s, s_s = alpha[i], sigma[i], alpha[i + 1], sigma[i + 1]
    V = a_t**2 * v + s_t**2
    c1 = a_s * (1 / a_t - s_t**2 / (a_t * V)) + s_s * s_t / V
    c0 = a_s * s_t**2 * m / V - s_s * s_t * a_t * m / V
    A, b = c1 * A, c1 * b + c0
  return A, b


@pytest.mark.parametrize("sde", [sde_lib.VPSDE(), sde_lib.VESDE(sigma_max=100.0)], ids=["vp", "ve"])
def test_sampler_kl_matches_the_gaussian_closed_form(sde):
  """DDIM with the exact score of a Gaussian target is affine in z, so q = N(b, A^2 prior_std^2) per
  coordinate and KL(q || p) is closed form; the estimate (4,096 latents) is within 3 standard errors."""
  import sampling
  from conftest import gaussian_score

  m, v = np.array([0.5, -1.0]), np.array([0.5, 2.0])
  sampler = sampling.get_sampler(sde, (1024, 2), method="ddim", n_steps=4, schedule="log_snr")
  out = metrics.sampler_kl(jax.random.key(0), sampler, gaussian_score(sde, m, v),
                           datasets.GaussianMixture(means=[m], covs=[np.diag(v)], weights=[1.0]).log_prob,
                           sde, n_batches=4)
  A, b = _ddim_affine_map(sde, np.asarray(sampling.get_time_schedule(sde, 4, schedule="log_snr")), m, v)
  q_var = A**2 * sde.prior_std**2
  exact = float(np.sum(0.5 * (np.log(v / q_var) + (q_var + (b - m) ** 2) / v - 1)))
  assert out["n"] == 4096 and out["nfe"] == 4
  assert 0 < out["se"] < 0.1 * exact, (out, exact)
  assert abs(out["kl"] - exact) <= 3 * out["se"], (out, exact)


def test_sampler_kl_matches_quadrature_on_a_1d_mixture():
  """A 1-D mixture under DPM-Solver++(2M), 6 steps: the Monte Carlo estimate (jacfwd Jacobians, 4,096
  latents) against int prior(z) [log prior(z) - log F'(z) - log p(F(z))] dz by the trapezoid rule on
  a grid of 8,000 latents in [-7, 7], F' by central differences; within 3 standard errors + 1e-3."""
  import sampling

  sde = sde_lib.VPSDE()
  target = datasets.GaussianMixture(means=[[-1.0], [1.5]], covs=[[[0.3]], [[0.6]]], weights=[0.6, 0.4])
  kwargs = dict(method="dpm_solver_2m", n_steps=6, schedule="log_snr")
  score_fn = target.score_fn(sde)
  mc = metrics.sampler_kl(jax.random.key(1), sampling.get_sampler(sde, (1024, 1), **kwargs), score_fn,
                          target.log_prob, sde, n_batches=4)
  z = np.linspace(-7.0, 7.0, 8000)
  grid_sampler = sampling.get_sampler(sde, (8000, 1), **kwargs)
  x = np.asarray(grid_sampler(None, score_fn, x_T=jnp.asarray(z[:, None], jnp.float32))[0], np.float64)[:, 0]
  dx_dz = np.gradient(x, z)
  log_prior = -0.5 * z**2 - 0.5 * np.log(2 * np.pi)
  log_p = np.asarray(target.log_prob(jnp.asarray(x[:, None], jnp.float32)), np.float64)
  brute = np.trapezoid(np.exp(log_prior) * (log_prior - np.log(dx_dz) - log_p), z)
  assert np.all(dx_dz > 0), brute
  assert abs(mc["kl"] - brute) <= 3 * mc["se"] + 1e-3, (mc, brute)


def test_sampler_kl_reports_the_latents_where_the_sampler_folds(caplog):
  """F(z) = z - 2 tanh(z) (1-D, VP prior N(0, 1)) has F'(z) = 1 - 2 sech^2(z) <= 0 for |z| <= acosh(sqrt(2)),
  a prior mass of erf(acosh(sqrt(2)) / sqrt(2)) = 0.622: "folded" within 4 standard errors of it (4,096
  latents), and a warning, while DDIM with an exact score (a bijection) has none."""
  import logging
  import math

  import sampling
  from sampling.base import Sampler

  sde = sde_lib.VPSDE()
  fold = Sampler("fold", (1024, 1), lambda key, score_fn, x_T, n_trajectory: (x_T - 2.0 * jnp.tanh(x_T), 1, None),
                 needs_key=False)
  target = datasets.GaussianMixture(means=[[0.0]], covs=[[[1.0]]], weights=[1.0])
  with caplog.at_level(logging.WARNING):
    out = metrics.sampler_kl(jax.random.key(0), fold, target.score_fn(sde), target.log_prob, sde, n_batches=4)
  exact = math.erf(math.acosh(math.sqrt(2.0)) / math.sqrt(2.0))
  assert abs(out["folded"] - exact) < 4 * math.sqrt(exact * (1 - exact) / 4096), (out, exact)
  assert "folds" in caplog.text and "invalid KL" in caplog.text
  ddim = sampling.get_sampler(sde, (1024, 1), method="ddim", n_steps=4)
  assert metrics.sampler_kl(jax.random.key(0), ddim, target.score_fn(sde), target.log_prob, sde)["folded"] == 0.0


def test_sampler_kl_rejects_a_stochastic_sampler():
  import sampling

  sde = sde_lib.VPSDE(beta_max=10.0, N=10)  # beta_max / N <= 1: the PC chain is defined
  with pytest.raises(ValueError, match="sampler="):
    metrics.sampler_kl(jax.random.key(0), sampling.get_sampler(sde, (8, 2)), datasets.GaussianMixture().score_fn(sde),
                       datasets.GaussianMixture().log_prob, sde)
  with pytest.raises(ValueError, match="n_batches=0"):
    metrics.sampler_kl(jax.random.key(0), sampling.get_sampler(sde, (8, 2), method="ddim", n_steps=3),
                       datasets.GaussianMixture().score_fn(sde), datasets.GaussianMixture().log_prob, sde, n_batches=0)
