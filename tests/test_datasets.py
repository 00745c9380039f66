"""Tests for datasets.py: exact and diffused densities against scipy, scores against finite
differences, samplers against moments and CDFs, and input validation."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

import datasets
import sde_lib
from configs import cond_gmm

EPS32 = float(np.finfo(np.float32).eps)  # 2^-23
B = 64  # test points per call: one compiled shape for every jitted density / score


def _np(x):
  return np.asarray(x, np.float64)


def _random_mixture():
  """A 3-D, 3-component mixture with correlated, unequal covariances (fixed seed)."""
  rng = np.random.default_rng(7)
  means = 1.5 * rng.standard_normal((3, 3))
  a = rng.standard_normal((3, 3, 3))
  covs = np.einsum("kij,klj->kil", a, a) / 3 + 0.2 * np.eye(3)
  return datasets.GaussianMixture(means.tolist(), covs.tolist(), [0.2, 0.3, 0.5])


MIXTURES = [datasets.GaussianMixture(), _random_mixture()]
MIX_IDS = ["default_2d", "random_3d"]


@functools.lru_cache(maxsize=None)
def _jitted(target):
  """Jitted (log_prob_t, score_t, log_prob, autodiff of log_prob_t, component_log_probs_t,
  sample_with_labels) of one target; alpha and sigma are passed as [B] arrays so that each
  compiles once (compiling, not running, is most of the cost on CPU)."""
  grad = jax.grad(lambda x, a, s: jnp.sum(target.log_prob_t(x, a, s)))
  fns = [jax.jit(target.log_prob_t), jax.jit(target.score_t), jax.jit(target.log_prob), jax.jit(grad)]
  if isinstance(target, datasets.GaussianMixture):
    fns += [jax.jit(target.component_log_probs_t),
            jax.jit(target.sample_with_labels, static_argnums=1)]
  return fns


def _per_ex(c, n=B):
  return jnp.broadcast_to(jnp.asarray(c, jnp.float32), (n,))


def _log_prob_t(target, x, alpha, sigma):
  return _np(_jitted(target)[0](jnp.asarray(x, jnp.float32), _per_ex(alpha, len(x)), _per_ex(sigma, len(x))))


def _score_t(target, x, alpha, sigma):
  return _np(_jitted(target)[1](jnp.asarray(x, jnp.float32), _per_ex(alpha, len(x)), _per_ex(sigma, len(x))))


# --- float64 references ------------------------------------------------------------------

def _mixture_components64(target, x, alpha, sigma):
  """log w_k + log N(x; alpha mu_k, alpha^2 Sigma_k + sigma^2 I) with scipy; [n, K]."""
  means, covs = np.asarray(target.means, np.float64), np.asarray(target.covs, np.float64)
  w = np.asarray(target.weights, np.float64)
  w = w / w.sum()
  d = means.shape[1]
  return np.stack([np.log(w[k]) + stats.multivariate_normal(
      alpha * means[k], alpha**2 * covs[k] + sigma**2 * np.eye(d)).logpdf(x)
                   for k in range(len(w))], axis=-1).reshape(len(x), len(w))


def _mixture_logpdf64(target, x, alpha=1.0, sigma=0.0):
  return special.logsumexp(_mixture_components64(target, x, alpha, sigma), axis=-1)


def _fd_grad(logp, x, h=1e-4):
  """Central differences of a float64 log density; truncation ~h^2 |d^3 log p| ~ 1e-8."""
  g = np.zeros_like(x)
  for j in range(x.shape[1]):
    e = np.zeros(x.shape[1])
    e[j] = h
    g[:, j] = (logp(x + e) - logp(x - e)) / (2 * h)
  return g


def _mixture_points(target, n=B, seed=0):
  """Points spread over the mixture (2x its std) plus a few far out (~8 std)."""
  rng = np.random.default_rng(seed)
  chol = np.linalg.cholesky(target.cov())
  x = target.mean() + 2 * rng.standard_normal((n, target.dim)) @ chol.T
  x[-4:] = target.mean() + 8 * rng.standard_normal((4, target.dim)) @ chol.T
  return x


# --- GaussianMixture ----------------------------------------------------------------------

@pytest.mark.parametrize("target", MIXTURES, ids=MIX_IDS)
def test_gmm_log_prob_matches_scipy(target):
  x = _mixture_points(target)
  # float32: log N terms ~ r^2 / var up to ~50 lose ~1e-6 relative; 2e-5 + 2e-6 |log p|.
  np.testing.assert_allclose(_log_prob_t(target, x, 1.0, 0.0), _mixture_logpdf64(target, x),
                             rtol=2e-6, atol=2e-5)
  np.testing.assert_allclose(_np(_jitted(target)[2](jnp.asarray(x, jnp.float32))),
                             _mixture_logpdf64(target, x), rtol=2e-6, atol=2e-5)


@pytest.mark.parametrize("alpha,sigma", [(1.0, 0.0), (0.8, 0.6), (0.2, 3.0), (1.0, 0.05)])
@pytest.mark.parametrize("target", MIXTURES, ids=MIX_IDS)
def test_gmm_score_matches_finite_differences(target, alpha, sigma):
  x = _mixture_points(target, seed=1)
  fd = _fd_grad(lambda y: _mixture_logpdf64(target, y, alpha, sigma), x)
  got = _score_t(target, x, alpha, sigma)
  # float32 closed form vs float64 differences: 1e-4 relative to the score's scale.
  scale = np.abs(fd).max()
  np.testing.assert_allclose(got, fd, rtol=1e-4, atol=1e-5 * scale)
  # ... and the closed form equals autodiff of the float32 log density.
  auto = _jitted(target)[3](jnp.asarray(x, jnp.float32), _per_ex(alpha), _per_ex(sigma))
  np.testing.assert_allclose(got, _np(auto), rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("alpha,sigma", [(0.8, 0.6), (0.2, 3.0), (1.0, 0.05)])
@pytest.mark.parametrize("target", MIXTURES, ids=MIX_IDS)
def test_gmm_diffused_log_prob_matches_scipy(target, alpha, sigma):
  x = _mixture_points(target, seed=2)
  ref = _mixture_logpdf64(target, x, alpha, sigma)  # means alpha mu_k, covs alpha^2 Sigma_k + sigma^2 I
  got = _log_prob_t(target, x, alpha, sigma)
  np.testing.assert_allclose(got, ref, rtol=2e-6, atol=2e-5)  # float32, as above
  # diffuse(alpha, sigma) is the same mixture as a new object.
  diffused = target.diffuse(alpha, sigma)
  np.testing.assert_allclose(_log_prob_t(diffused, x, 1.0, 0.0), ref, rtol=2e-6, atol=2e-5)
  # (mean() and cov() weight by the float32-stored log weights: ~1e-8 relative.)
  np.testing.assert_allclose(diffused.mean(), alpha * target.mean(), rtol=1e-7, atol=1e-12)
  np.testing.assert_allclose(diffused.cov(), alpha**2 * target.cov() + sigma**2 * np.eye(target.dim),
                             rtol=1e-7)
  # Components sum to the density: logsumexp_k component_log_probs_t = log_prob_t.
  comps = _np(_jitted(target)[4](jnp.asarray(x, jnp.float32), _per_ex(alpha), _per_ex(sigma)))
  np.testing.assert_allclose(comps, _mixture_components64(target, x, alpha, sigma), rtol=2e-6, atol=2e-5)
  np.testing.assert_allclose(special.logsumexp(comps, axis=-1), got, rtol=1e-6, atol=1e-5)


def test_gmm_default_moments_closed_form():
  # w = (1/2, 1/2): mean (mu_1 + mu_2) / 2 = (1, 0); cov = mean of Sigma_k + mean of
  # (mu_k - m)(mu_k - m)^T = [[1.5, 0.25], [0.25, 1]] + [[1, -1], [-1, 1]].
  target = datasets.GaussianMixture()
  # (float32-stored log weights: exp(log 0.5) is exact here.)
  np.testing.assert_allclose(target.mean(), [1.0, 0.0], atol=1e-7)
  np.testing.assert_allclose(target.cov(), [[2.5, -0.75], [-0.75, 2.0]], rtol=1e-7)


def _check_moments(x, mean, cov, what):
  """Sample mean and covariance within 5 standard errors, the SEs estimated from the sample
  itself (entry (i, j) of the covariance: std of (x_i - m_i)(x_j - m_j) / sqrt(n))."""
  n = len(x)
  xc = x - x.mean(0)
  se_mean = x.std(0) / math.sqrt(n)
  prods = xc[:, :, None] * xc[:, None, :]
  se_cov = prods.std(0) / math.sqrt(n)
  assert np.all(np.abs(x.mean(0) - mean) <= 5 * se_mean), (what, x.mean(0), mean)
  assert np.all(np.abs(prods.mean(0) - cov) <= 5 * se_cov), (what, prods.mean(0), cov)


@pytest.mark.parametrize("target", MIXTURES, ids=MIX_IDS)
def test_gmm_samples_match_moments_labels_and_diffusion(target):
  n = 100_000
  x, labels = _jitted(target)[5](jax.random.key(3), n)
  x, labels = _np(x), np.asarray(labels)
  _check_moments(x, target.mean(), target.cov(), "p_0")
  # Labels: frequencies within 5 binomial standard errors sqrt(w (1 - w) / n) of the weights,
  # and each component's samples centred on its mean (5 SE, SE = sqrt(diag Sigma_k / n_k)).
  w = np.asarray(target.weights) / np.sum(target.weights)
  freq = np.bincount(labels, minlength=len(w)) / n
  assert np.all(np.abs(freq - w) <= 5 * np.sqrt(w * (1 - w) / n)), (freq, w)
  for k in range(len(w)):
    xk = x[labels == k]
    se = np.sqrt(np.diag(np.asarray(target.covs[k])) / len(xk))
    assert np.all(np.abs(xk.mean(0) - np.asarray(target.means[k])) <= 5 * se)
  # Forward diffusion of the samples, alpha x0 + sigma z, has the diffused mixture's moments.
  alpha, sigma = 0.6, 0.9
  z = np.random.default_rng(4).standard_normal(x.shape)
  diffused = target.diffuse(alpha, sigma)
  _check_moments(alpha * x + sigma * z, diffused.mean(), diffused.cov(), "p_t")


@pytest.mark.parametrize("sde", [sde_lib.VPSDE(), sde_lib.VESDE()], ids=["vp", "ve"])
def test_gmm_score_fn_uses_each_examples_time(sde):
  target = MIXTURES[1]
  x = _mixture_points(target, n=B, seed=5)
  t = np.random.default_rng(6).uniform(1e-3, 1.0, B).astype(np.float32)
  score = _np(jax.jit(target.score_fn(sde))(jnp.asarray(x, jnp.float32), jnp.asarray(t)))
  logp = _np(jax.jit(target.log_prob_fn(sde))(jnp.asarray(x, jnp.float32), jnp.asarray(t)))
  alpha, sigma = (_np(c) for c in sde.marginal_coeffs(jnp.asarray(t)))
  # Per example, with its own scalar (alpha_i, sigma_i), in float64 (score by finite differences).
  for i in range(0, B, 8):
    xi = x[i:i + 1]
    np.testing.assert_allclose(logp[i], _mixture_logpdf64(target, xi, alpha[i], sigma[i])[0],
                               rtol=2e-6, atol=2e-5)
    fd = _fd_grad(lambda y: _mixture_logpdf64(target, y, alpha[i], sigma[i]), xi, h=1e-4 * (1 + sigma[i]))
    np.testing.assert_allclose(score[i], fd[0], rtol=1e-4, atol=1e-5 * np.abs(fd).max())
  # ... and equal to score_t called with the per-example coefficient arrays.
  np.testing.assert_allclose(score, _score_t(target, x, alpha, sigma), rtol=1e-6, atol=1e-7)


# --- Box1D ----------------------------------------------------------------------------------

BOX = datasets.Box1D()  # [-2, -1] U [1, 2], density 1/2 on each
BOX_IVS = ((-2.0, -1.0), (1.0, 2.0))


def _box_logpdf64(x, alpha, sigma, ivs=BOX_IVS):
  """log of int 1_box(y) / L N(x; alpha y, sigma^2) dy by quadrature, in log space: the
  integrand is scaled by its maximum over the boxes so that far tails (x = 30, sigma = 0.5,
  density ~ e^-1570) stay representable."""
  length = sum(b - a for a, b in ivs)
  log_n = lambda y: -0.5 * ((x - alpha * y) / sigma) ** 2 - math.log(sigma * math.sqrt(2 * math.pi))
  m = max(log_n(np.clip(x / alpha, a, b)) for a, b in ivs)
  total = sum(integrate.quad(lambda y: np.exp(log_n(y) - m), a, b, epsabs=0.0, epsrel=1e-12,
                             limit=200)[0] for a, b in ivs)
  return math.log(total) + m - math.log(length)


BOX_X = np.array([-30.0, -4.0, -2.0, -1.5, -1.0, -0.3, 0.0, 0.7, 1.2, 2.5, 6.0, 30.0])
BOX_CASES = [(1.0, 0.5), (0.6, 0.8), (0.2, 1.0), (1.0, 5.0), (0.9, 0.05)]


def _box_eval(fn_index, x, alpha, sigma):
  """Box1D log_prob_t / score_t at the points x, padded to B (one compiled shape)."""
  xp = np.concatenate([x, np.zeros(B - len(x))])[:, None]
  out = [_log_prob_t, _score_t][fn_index](BOX, xp, alpha, sigma)
  return out[:len(x)] if fn_index == 0 else out[:len(x), 0]


def test_box_log_prob_undiffused_is_indicator():
  inside = np.array([-2.0, -1.5, -1.0, 1.0, 1.3, 2.0])  # closed intervals
  outside = np.array([-2.5, -0.99, 0.0, 0.5, 2.01, 30.0])
  log_half = float(np.log(np.float32(0.5)))  # log(1 / L), L = 2, in float32
  np.testing.assert_array_equal(_box_eval(0, inside, 1.0, 0.0), log_half)
  np.testing.assert_array_equal(_box_eval(0, outside, 1.0, 0.0), -np.inf)
  np.testing.assert_allclose(log_half, math.log(0.5), rtol=1e-7)
  xp = jnp.asarray(np.resize(inside, B)[:, None], jnp.float32)
  np.testing.assert_array_equal(_np(_jitted(BOX)[2](xp)), log_half)


@pytest.mark.parametrize("alpha,sigma", BOX_CASES)
def test_box_diffused_log_prob_matches_quadrature(alpha, sigma):
  got = _box_eval(0, BOX_X, alpha, sigma)
  ref = np.array([_box_logpdf64(x, alpha, sigma) for x in BOX_X])
  assert np.all(np.isfinite(got))
  # float32: the log_ndtr arguments (x - alpha a)^2 / (2 sigma^2) (up to ~1e5 at x = 30) carry
  # a few ulps each: 1e-6 |log p| + 2e-5 (quadrature is good to ~1e-12).
  np.testing.assert_allclose(got, ref, rtol=1e-6, atol=2e-5)


def test_box_far_tail_matches_mills_ratio_asymptotics():
  # x = 30, alpha = 1, sigma = 0.5: p = (1/2) [Phi(-v) - Phi(-u)], v = (x - 2) / sigma = 56,
  # u = 58 (the interval [1, 2]; [-2, -1] and Phi(-u) are e^-114 smaller). Mills ratio:
  # Phi(-v) = phi(v) / v (1 - 1/v^2 + 3/v^4 - 15/v^6 + O(v^-8)), log p ~ -1573.
  v, sigma = 56.0, 0.5
  log_phi_v = -0.5 * v**2 - 0.5 * math.log(2 * math.pi)
  ref = math.log(0.5) + log_phi_v - math.log(v) + math.log1p(-1 / v**2 + 3 / v**4 - 15 / v**6)
  got = _box_eval(0, np.array([30.0, -30.0]), 1.0, sigma)
  np.testing.assert_allclose(got, ref, rtol=1e-6)  # float32 round-off of v^2 / 2 ~ 1568
  # Score: d/dx log Phi(-v) = -phi(v) / (sigma Phi(-v)) = -(v + 1/v - 2/v^3 + O(v^-5)) / sigma.
  # In float32 this ratio is exp(log phi(v) - log Phi(-v)) (the JVP of log_ndtr), a difference
  # of two numbers of size |log p| ~ 1573 each good to eps32 |log p|: rtol 2 eps32 |log p|.
  score = _box_eval(1, np.array([30.0, -30.0]), 1.0, sigma)
  np.testing.assert_allclose(score, np.array([-1, 1]) * (v + 1 / v - 2 / v**3) / sigma,
                             rtol=2 * EPS32 * abs(ref))


@pytest.mark.parametrize("alpha,sigma", [(1.0, 0.5), (0.5, 0.05), (0.1, 1.0), (1.0, 3.0)])
def test_box_diffused_density_integrates_to_one(alpha, sigma):
  half_width = 2 * alpha + 12 * sigma  # Phi(-12) ~ 2e-33: no mass outside the grid
  x = np.linspace(-half_width, half_width, 8 * B)
  p = np.exp(_np(jax.jit(BOX.log_prob_t)(jnp.asarray(x[:, None], jnp.float32),
                                         _per_ex(alpha, len(x)), _per_ex(sigma, len(x)))))
  # Trapezoid on a smooth density that vanishes at both ends is spectrally accurate for
  # h <= sigma / 5 (Euler-Maclaurin); the float32 density adds ~1e-6 relative.
  assert x[1] - x[0] <= sigma / 5
  np.testing.assert_allclose(integrate.trapezoid(p, x), 1.0, atol=1e-5)


@pytest.mark.parametrize("alpha,sigma", [(1.0, 0.5), (0.6, 0.8), (0.2, 1.0), (0.9, 0.05)])
def test_box_score_matches_finite_differences(alpha, sigma):
  x = BOX_X[1:-1]  # the far tails are checked against asymptotics above
  h = 1e-4 * sigma
  fd = np.array([(_box_logpdf64(xi + h, alpha, sigma) - _box_logpdf64(xi - h, alpha, sigma)) / (2 * h)
                 for xi in x])
  got = _box_eval(1, x, alpha, sigma)
  log_p = np.array([_box_logpdf64(xi, alpha, sigma) for xi in x])
  # Central differences: truncation h^2 |d^3 log p| / 6 ~ 1e-8 / sigma, quadrature noise
  # 1e-12 / h. float32 score: 1e-4 relative, plus in the tails the cancellation in the JVP of
  # log_ndtr, exp(log phi - log Phi), of two logs of size ~|log p|: 2 eps32 |log p| relative.
  np.testing.assert_allclose(got, fd, rtol=1e-4 + 2 * EPS32 * np.abs(log_p).max(), atol=1e-4 / sigma)
  rel = np.abs(got - fd) / (np.abs(fd) + 1e-4 / sigma)
  assert np.all(rel <= 1e-4 + 2 * EPS32 * np.abs(log_p)), rel


def _box_cdf(x, ivs):
  length = sum(b - a for a, b in ivs)
  return sum(np.clip(x - a, 0.0, b - a) for a, b in ivs) / length


@pytest.mark.parametrize("ivs", [BOX_IVS, ((3.0, 5.0), (0.0, 1.0))], ids=["default", "unequal"])
def test_box_samples_are_uniform_on_the_boxes(ivs):
  box = datasets.Box1D(intervals=ivs)
  n = 100_000
  x = _np(jax.jit(box.sample, static_argnums=1)(jax.random.key(8), n))
  assert x.shape == (n, 1)
  x = x[:, 0]
  assert np.all(sum((x >= a) & (x <= b) for a, b in ivs) == 1)
  # Exact moments by quadrature of y / L and y^2 / L over the boxes.
  length = sum(b - a for a, b in ivs)
  mom = [sum(integrate.quad(lambda y: y**p / length, a, b)[0] for a, b in ivs) for p in (1, 2, 4)]
  mean, var = mom[0], mom[1] - mom[0] ** 2
  np.testing.assert_allclose(box.mean(), [mean], rtol=1e-12)
  np.testing.assert_allclose(box.cov(), [[var]], rtol=1e-12)
  if ivs == BOX_IVS:
    np.testing.assert_allclose(box.cov(), [[7 / 3]], rtol=1e-12)  # E y^2 = (2^3 - 1) / 3
  # 5 standard errors: mean sqrt(var / n); variance sqrt((E (y - m)^4 - var^2) / n).
  m4 = sum(integrate.quad(lambda y: (y - mean) ** 4 / length, a, b)[0] for a, b in ivs)
  assert abs(x.mean() - mean) <= 5 * math.sqrt(var / n)
  assert abs(x.var() - var) <= 5 * math.sqrt((m4 - var**2) / n)
  # Kolmogorov-Smirnov against the exact CDF; p > 1e-3 (fixed key: deterministic).
  assert stats.kstest(x, lambda y: _box_cdf(y, ivs)).pvalue > 1e-3


# --- bad inputs -----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(means=[0.0, 1.0]), r"data\.means must be \[K, d\]"),
    (dict(means=[[[0.0, 1.0]]]), r"data\.means must be \[K, d\]"),
    (dict(covs=np.ones((2, 3, 3)).tolist()), r"data\.covs must be \[K, d, d\]"),
    (dict(covs=[[[1.0, 0.0], [0.0, 1.0]]]), r"data\.covs must be \[K, d, d\]"),
    (dict(covs=[[[1.0, 0.3], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]]), r"data\.covs must be symmetric"),
    (dict(covs=[[[1.0, 2.0], [2.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]]), r"data\.covs must be positive definite"),
    (dict(covs=[[[1.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]]), r"data\.covs must be positive definite"),
    (dict(weights=[0.5, 0.0]), r"data\.weights=.* must be 2 positive numbers"),
    (dict(weights=[1.5, -0.5]), r"data\.weights=.* must be 2 positive numbers"),
    (dict(weights=[0.2, 0.3, 0.5]), r"data\.weights=.* must be 2 positive numbers"),
])
def test_gmm_rejects_bad_parameters(kwargs, match):
  with pytest.raises(ValueError, match=match):
    datasets.GaussianMixture(**kwargs)
  with pytest.raises(ValueError, match=match):
    datasets.get_dataset("gmm", **kwargs)


@pytest.mark.parametrize("intervals,match", [
    (((2.0, 1.0),), r"data\.intervals=.* with a < b"),
    (((1.0, 1.0),), r"data\.intervals=.* with a < b"),
    (((-2.0, -1.0), (2.0, 1.0)), r"data\.intervals=.* with a < b"),
    (((0.0, 1.0, 2.0),), r"data\.intervals=.* must be \[\[a, b\]"),
    ((0.0, 1.0), r"data\.intervals=.* must be \[\[a, b\]"),
    (((0.0, 2.0), (1.0, 3.0)), r"data\.intervals=.* must not overlap"),
    (((1.0, 3.0), (-1.0, 0.0), (0.0, 2.0)), r"data\.intervals=.* must not overlap"),
])
def test_box_rejects_bad_intervals(intervals, match):
  with pytest.raises(ValueError, match=match):
    datasets.Box1D(intervals=intervals)


def test_box_accepts_unsorted_and_touching_intervals():
  box = datasets.Box1D(intervals=((1.0, 2.0), (-1.0, 0.0), (0.0, 1.0)))
  np.testing.assert_allclose(box.mean(), [0.5], rtol=1e-12)  # uniform on [-1, 2]
  np.testing.assert_allclose(box.cov(), [[0.75]], rtol=1e-12)  # 3^2 / 12


def test_get_dataset_builds_registered_names():
  assert isinstance(datasets.get_dataset("gmm"), datasets.GaussianMixture)
  assert isinstance(datasets.get_dataset("box1d"), datasets.Box1D)
  target = datasets.get_dataset("gmm", means=[[0.0], [3.0]], covs=[[[1.0]], [[0.5]]], weights=[1, 3])
  assert target.dim == 1 and target.n_components == 2
  # (0 + 3 * 3) / 4; weights normalised and stored as float32 logs: 1e-7 relative.
  np.testing.assert_allclose(target.mean(), [2.25], rtol=1e-7)
  assert datasets.get_dataset("box1d", intervals=[[0.0, 1.0]]).dim == 1


def test_get_dataset_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match=r"data\.name='mnist' is unknown; valid names.*box1d.*gmm"):
    datasets.get_dataset("mnist")


@pytest.mark.parametrize("name,field", [("gmm", "mean"), ("gmm", "intervals"), ("box1d", "means"),
                                        ("box1d", "sigma")])
def test_get_dataset_unknown_field(name, field):
  with pytest.raises(ValueError, match=rf"data\.{field} is not a field"):
    datasets.get_dataset(name, **{field: 1.0})


# --- conditional generation ---

COND = datasets.get_dataset(**cond_gmm.get_config().data)  # 3 components, labels = components


MIX = datasets.GaussianMixture()  # the default 2-component mixture


def _points(n=64, seed=0):
  return jax.random.normal(jax.random.key(seed), (n, 2)) * 2.0


@pytest.mark.parametrize("alpha,sigma", [(1.0, 0.0), (0.8, 0.6), (0.1, 3.0)])
def test_exact_class_score_and_posterior_match_components(alpha, sigma):
  x, k = _points(), COND.num_classes
  for label in range(k):
    comp = COND.component(label)
    np.testing.assert_allclose(COND.conditional_score_t(x, label, alpha, sigma), comp.score_t(x, alpha, sigma),
                               rtol=1e-5, atol=1e-5)
  # The null label K is the mixture score; the posterior is Bayes' rule.
  np.testing.assert_allclose(COND.conditional_score_t(x, k, alpha, sigma), COND.score_t(x, alpha, sigma), atol=1e-5)
  log_post = COND.class_log_posterior_t(x, alpha, sigma)
  bayes = jnp.stack([COND.component(c).log_prob_t(x, alpha, sigma) + np.log(COND.weights[c]) for c in range(k)], 1)
  np.testing.assert_allclose(log_post, bayes - COND.log_prob_t(x, alpha, sigma)[:, None], atol=1e-4)


def test_condition_is_the_normalised_slice_of_the_joint():
  """log p(x2 | x1 = a) - log p(a, x2) is constant in x2 and equals -log int p(a, x2) dx2 (trapezoid, 4001 nodes)."""
  x2 = np.linspace(-8.0, 8.0, 4001)[:, None]
  for a in (-1.0, 0.5, 3.0):
    cond = MIX.condition([0], [a])
    joint = np.asarray(MIX.log_prob(jnp.asarray(np.concatenate([np.full_like(x2, a), x2], 1), jnp.float32)))
    diff = np.asarray(cond.log_prob(jnp.asarray(x2, jnp.float32))) - joint
    assert np.std(diff) < 1e-5
    np.testing.assert_allclose(np.mean(diff), -np.log(np.trapezoid(np.exp(joint), x2[:, 0])), atol=1e-4)
  with pytest.raises(ValueError, match="known"):
    MIX.condition([0, 1], [0.0, 0.0])
  with pytest.raises(ValueError, match="class label"):
    MIX.component(2)


def test_moments_of_a_mixture_are_its_exact_mean_and_covariance():
  target = datasets.GaussianMixture()
  mean, cov = datasets.moments(target)
  np.testing.assert_allclose(mean, target.mean())
  np.testing.assert_allclose(cov, target.cov())
  x = np.asarray(target.sample(jax.random.key(0), 200_000))  # and the mixture's: Monte Carlo, 5e-2
  np.testing.assert_allclose(cov, np.cov(x, rowvar=False), atol=5e-2)
