"""Tests for sde_lib.py: marginals against moment ODEs and closed forms, Euler-Maruyama
Monte Carlo, priors, the DDPM / SMLD discretisations, reverse processes and get_sde."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_lib
from scipy import integrate, stats
import likelihood
import losses
import sampling

EPS32 = float(np.finfo(np.float32).eps)  # 2^-23

# Every SDE class; OU and Lambda-VE with non-default parameters so that T != 1 and lam != 25
# are exercised.
SDES = [
    sde_lib.VESDE(),
    sde_lib.VPSDE(),
    sde_lib.SubVPSDE(),
    sde_lib.OUSDE(B=0.7, R=2.0, T=3.0, N=500),
    sde_lib.LambdaVESDE(lam=10.0, N=500),
]
IDS = ["ve", "vp", "subvp", "ou", "lambda_ve"]


# --- independent float64 re-implementations (Song et al. 2021, Eqs. 9, 11, 12, App. B) ----

def _ref(sde):
  """(f(t), g(t)^2, alpha(t), sigma(t)^2) in float64 numpy, written from the textbook formulas."""
  if isinstance(sde, sde_lib.VESDE):
    smin, smax = sde.sigma_min, sde.sigma_max
    f = lambda t: 0.0 * t
    # d/dt [sigma_min^2 (smax/smin)^{2t}] = 2 ln(smax/smin) sigma_min^2 (smax/smin)^{2t}
    g2 = lambda t: 2 * np.log(smax / smin) * smin**2 * (smax / smin) ** (2 * t)
    alpha = lambda t: 1.0 + 0.0 * t
    var = lambda t: smin**2 * ((smax / smin) ** (2 * t) - 1)
  elif isinstance(sde, sde_lib.VPSDE):  # VP and sub-VP
    b0, b1 = sde.beta_min, sde.beta_max
    beta = lambda t: b0 + t * (b1 - b0)
    Bint = lambda t: b0 * t + (b1 - b0) * t**2 / 2
    f = lambda t: -beta(t) / 2
    alpha = lambda t: np.exp(-Bint(t) / 2)
    if isinstance(sde, sde_lib.SubVPSDE):
      g2 = lambda t: beta(t) * (1 - np.exp(-2 * Bint(t)))
      var = lambda t: (1 - np.exp(-Bint(t))) ** 2
    else:
      g2 = beta
      var = lambda t: 1 - np.exp(-Bint(t))
  elif isinstance(sde, sde_lib.OUSDE):
    B, R = sde.B, sde.R
    f = lambda t: -B + 0.0 * t
    g2 = lambda t: R + 0.0 * t
    alpha = lambda t: np.exp(-B * t)
    var = lambda t: R / (2 * B) * (1 - np.exp(-2 * B * t))
  elif isinstance(sde, sde_lib.LambdaVESDE):
    lam = sde.lam
    f = lambda t: 0.0 * t
    g2 = lambda t: lam ** (2 * t)
    alpha = lambda t: 1.0 + 0.0 * t
    var = lambda t: (lam ** (2 * t) - 1) / (2 * np.log(lam))
  else:
    raise AssertionError(sde)
  return f, g2, alpha, var


def _np(x):
  return np.asarray(x, np.float64)


# Compiling is most of the cost on CPU: each SDE's coefficient functions are jitted once, for
# one padded length of t, and reused by every test.
_PAD = 1024


@functools.lru_cache(maxsize=None)
def _coeff_fn(sde):
  return jax.jit(lambda t: (sde.drift_coeff(t), sde.diffusion(t), *sde.marginal_coeffs(t),
                            sde.log_snr(t)))


def _eval(sde, t):
  """(f, g, alpha, sigma, log_snr) at the times t (float32 in, float64 numpy out)."""
  t = np.atleast_1d(np.asarray(t, np.float32))
  assert len(t) <= _PAD
  padded = np.concatenate([t, np.full(_PAD - len(t), t[-1], np.float32)])
  return tuple(_np(a)[:len(t)] for a in _coeff_fn(sde)(jnp.asarray(padded)))


def _coeffs(sde, t):
  return _eval(sde, t)[2:4]


def _times(sde):
  return sde.T * np.array([1e-3, 0.05, 0.3, 0.7, 1.0])


# --- 1. marginals --------------------------------------------------------------------------

@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_coefficients_match_reference_formulas(sde):
  t = np.linspace(0.0, sde.T, 11)
  f, g2, _, _ = _ref(sde)
  drift_coeff, g = _eval(sde, t)[:2]
  # float32 evaluation of exp / pow / sqrt: a few ulps relative; 1e-5 ~ 80 eps32.
  np.testing.assert_allclose(drift_coeff, f(t), rtol=1e-5, atol=1e-12)
  np.testing.assert_allclose(g**2, g2(t), rtol=1e-5)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_marginals_match_moment_odes(sde):
  """d alpha/dt = f alpha, d var/dt = 2 f var + g^2, alpha(0) = 1, var(0) = 0 (App. B, Eq. 33)."""
  f, g2, _, _ = _ref(sde)
  t_eval = _times(sde)
  sol = integrate.solve_ivp(
      lambda t, y: [f(t) * y[0], 2 * f(t) * y[1] + g2(t)], (0.0, sde.T), [1.0, 0.0],
      method="DOP853", t_eval=t_eval, rtol=1e-12, atol=1e-20)
  assert sol.success
  alpha, sigma = _coeffs(sde, t_eval)
  # The ODE solution is good to ~1e-11; the float32 marginals to a few ulps times the
  # condition number of exp(...) (arguments up to ~17): 1e-4 relative, as specified.
  np.testing.assert_allclose(alpha, sol.y[0], rtol=1e-4)
  np.testing.assert_allclose(sigma, np.sqrt(sol.y[1]), rtol=1e-4)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_marginals_match_closed_forms(sde):
  _, _, alpha_ref, var_ref = _ref(sde)
  t = np.concatenate([_times(sde), sde.T * np.linspace(0.1, 0.9, 9)])
  alpha, sigma = _coeffs(sde, t)
  # float32: exp/expm1 of arguments up to ~17 (VE: 2 ln 5000) lose ~17 ulps; 1e-5 relative.
  np.testing.assert_allclose(alpha, alpha_ref(t), rtol=1e-5)
  np.testing.assert_allclose(sigma, np.sqrt(var_ref(t)), rtol=1e-5)
  # The kernel starts at the data: exactly alpha = 1, sigma = 0 at t = 0.
  a0, s0 = _coeffs(sde, np.zeros(1))
  assert a0[0] == 1.0 and s0[0] == 0.0
  # marginal_prob = (alpha x0, sigma) for x0 [B, 2, 3] and per-example t.
  x0 = np.random.default_rng(0).standard_normal((len(t), 2, 3)).astype(np.float32)
  mean, std = jax.jit(sde.marginal_prob)(jnp.asarray(x0), jnp.asarray(t, jnp.float32))
  np.testing.assert_allclose(_np(mean), alpha_ref(t)[:, None, None] * x0, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(_np(std), np.sqrt(var_ref(t)), rtol=1e-5)


def test_textbook_special_values():
  # VE: sigma(t)^2 = sigma_min^2 ((sigma_max / sigma_min)^{2t} - 1); at t = 1: sigma_max^2 - sigma_min^2.
  _, s = _coeffs(sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0), np.array([1.0]))
  np.testing.assert_allclose(s[0] ** 2, 50.0**2 - 0.01**2, rtol=1e-5)
  # VP at t = 1: B = beta_min + (beta_max - beta_min) / 2 = 10.05.
  a, s = _coeffs(sde_lib.VPSDE(), np.array([1.0]))
  np.testing.assert_allclose(a[0], math.exp(-10.05 / 2), rtol=1e-5)
  np.testing.assert_allclose(s[0] ** 2, 1 - math.exp(-10.05), rtol=1e-6)
  # Lambda-VE: exactly zero noise at t = 0, (lam^2 - 1) / (2 ln lam) at t = 1.
  _, s = _coeffs(sde_lib.LambdaVESDE(lam=25.0), np.array([0.0, 1.0]))
  assert s[0] == 0.0
  np.testing.assert_allclose(s[1] ** 2, (25.0**2 - 1) / (2 * math.log(25.0)), rtol=1e-5)


# --- 2. Euler-Maruyama Monte Carlo of sde.sde ----------------------------------------------

N_PATHS, N_STEPS = 20_000, 200


@functools.lru_cache(maxsize=None)
def _noise():
  """Standard normals [N_STEPS, N_PATHS, 1], drawn once (fixed key) and shared by every SDE."""
  return jax.random.normal(jax.random.key(0), (N_STEPS, N_PATHS, 1))


def _em_paths(sde, x0, t_end):
  """Euler-Maruyama of dx = drift dt + g dW with the drift and g returned by sde.sde."""
  dt = t_end / N_STEPS

  def step(x, inputs):
    k, z = inputs
    drift, g = sde.sde(x, jnp.full((N_PATHS,), k * dt, jnp.float32))
    return x + drift * dt + g[:, None] * math.sqrt(dt) * z, None

  run = jax.jit(lambda x, z: jax.lax.scan(step, x, (jnp.arange(N_STEPS), z))[0])
  return run(jnp.full((N_PATHS, 1), x0, jnp.float32), _noise())


def _em_moments(sde, x0, t_end, n_steps):
  """Exact mean and variance of the Euler-Maruyama chain (linear SDE), float64 recursion."""
  f, g2, _, _ = _ref(sde)
  dt = t_end / n_steps
  m, v = x0, 0.0
  for k in range(n_steps):
    a = 1 + f(k * dt) * dt
    m, v = a * m, a**2 * v + g2(k * dt) * dt
  return m, v


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_euler_maruyama_matches_marginal(sde):
  n_paths, n_steps, x0, t_end = N_PATHS, N_STEPS, 1.5, 0.6 * sde.T
  x = _np(_em_paths(sde, x0, t_end))[:, 0]
  alpha, std = (float(c[0]) for c in _coeffs(sde, t_end))
  mean = alpha * x0
  # Tolerance: 5 standard errors of the Monte Carlo estimates (sample mean: std / sqrt(n),
  # sample std: std / sqrt(2 n) for Gaussian data) plus the O(dt) Euler-Maruyama bias, which
  # for a linear SDE is known exactly from the float64 moment recursion of the chain.
  m_em, v_em = _em_moments(sde, x0, t_end, n_steps)
  bias_mean, bias_std = abs(m_em - mean), abs(math.sqrt(v_em) - std)
  assert bias_std < 0.02 * std  # the discretisation is fine enough for the test to bite
  assert abs(x.mean() - mean) <= 5 * std / math.sqrt(n_paths) + bias_mean
  assert abs(x.std() - std) <= 5 * std / math.sqrt(2 * n_paths) + bias_std


# --- 3. priors -----------------------------------------------------------------------------

def _prior_std_ref(sde):
  if isinstance(sde, sde_lib.VESDE):
    return math.sqrt(sde.sigma_max**2 - sde.sigma_min**2)
  if isinstance(sde, sde_lib.VPSDE):
    return 1.0
  if isinstance(sde, sde_lib.OUSDE):
    return math.sqrt(sde.R / (2 * sde.B) * (1 - math.exp(-2 * sde.B * sde.T)))
  return math.sqrt((sde.lam**2 - 1) / (2 * math.log(sde.lam)))


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_prior_std_closed_form(sde):
  np.testing.assert_allclose(sde.prior_std, _prior_std_ref(sde), rtol=1e-12)
  if not isinstance(sde, sde_lib.VPSDE):
    # VE, OU and Lambda-VE priors are the exact marginal at T of a point mass at 0.
    np.testing.assert_allclose(sde.prior_std, _coeffs(sde, np.array([sde.T]))[1][0], rtol=1e-5)


@pytest.mark.parametrize("shape", [(5, 3), (5, 2, 2)])
@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_prior_logp_matches_scipy(sde, shape):
  z = sde.prior_std * np.random.default_rng(1).standard_normal(shape).astype(np.float32)
  ref = stats.norm.logpdf(_np(z), scale=sde.prior_std).reshape(shape[0], -1).sum(-1)
  # float32 sums of a few terms of size <= ~10: 1e-5 relative.
  np.testing.assert_allclose(_np(sde.prior_logp(jnp.asarray(z))), ref, rtol=1e-5)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_prior_sampling_moments(sde):
  # The shape of the Euler-Maruyama noise, so that the compiled normal sampler is shared.
  z = _np(sde.prior_sampling(jax.random.key(2), (N_STEPS, N_PATHS, 1))).ravel()
  n, s = z.size, sde.prior_std
  # 5 standard errors: mean s / sqrt(n), std s / sqrt(2 n) (Gaussian).
  assert abs(z.mean()) <= 5 * s / math.sqrt(n)
  assert abs(z.std() - s) <= 5 * s / math.sqrt(2 * n)


# --- 4. VP: the DDPM chain -------------------------------------------------------------------

def _chain_coeffs(sde, t):
  """Per-step (scale_i, G_i) of x_{i+1} = x_i + f + G z, f = (scale_i - 1) x, at the times t."""
  f, G = jax.jit(sde.discretize)(jnp.ones((len(t), 1)), jnp.asarray(t, jnp.float32))
  return 1.0 + _np(f)[:, 0], _np(G)


def _iterate_moments(scale, G):
  m, v = 1.0, 0.0
  for a, g in zip(scale, G):
    m, v = a * m, a**2 * v + g**2
  return m, v


def test_vp_discrete_betas_are_ddpm_schedule():
  sde = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=1000)
  n, i = sde.N, np.arange(sde.N)
  ref = sde.beta_min / n + i * (sde.beta_max - sde.beta_min) / (n * (n - 1))
  np.testing.assert_allclose(_np(sde.discrete_betas()), ref, rtol=1e-6)  # float32 round-off
  np.testing.assert_allclose(ref[[0, -1]], [sde.beta_min / n, sde.beta_max / n], rtol=1e-12)


def test_vp_discretize_iterates_ddpm_moments():
  sde = sde_lib.VPSDE(N=1000)
  t = np.arange(sde.N) * sde.T / (sde.N - 1)  # t_i = i T / (N - 1) is discretisation level i
  np.testing.assert_array_equal(np.asarray(jax.jit(sde.discrete_index)(jnp.asarray(t, jnp.float32))),
                                np.arange(sde.N))
  scale, G = _chain_coeffs(sde, t)
  betas = _np(sde.discrete_betas())
  prod = np.prod(1 - betas)
  m, v = _iterate_moments(scale, G)
  # Round-off: each step rounds 1 - beta_i, its sqrt and beta_i in float32 (<= 3 half-ulps
  # relative); over N steps at most 3 N eps32 / 2 ~ 1.8e-4.
  tol = 3 * sde.N * EPS32 / 2
  np.testing.assert_allclose(m**2, prod, rtol=tol)
  np.testing.assert_allclose(v, 1 - prod, atol=tol)
  # Variance preserving per step: scale^2 + G^2 = (1 - beta) + beta = 1.
  np.testing.assert_allclose(scale**2 + G**2, 1.0, atol=4 * EPS32)


def test_vp_discrete_product_converges_to_continuous_at_order_one():
  # The continuous side: log alpha(1)^2 from marginal_coeffs, = -B(1) = -(beta_min + beta_max) / 2
  # (float32 exp: ~1e-6 relative on alpha).
  log_alpha1_sq = 2 * math.log(_coeffs(sde_lib.VPSDE(), 1.0)[0][0])
  np.testing.assert_allclose(log_alpha1_sq, -(0.1 + 20.0) / 2, atol=1e-5)
  errs = []
  for n in (250, 500, 1000):
    b = _np(jax.jit(sde_lib.VPSDE(N=n).discrete_betas)())
    err = abs(np.sum(np.log1p(-b)) - log_alpha1_sq)
    # sum_i beta_i = B(1) exactly, so err = sum_i [-log(1 - b) - b], which lies between
    # sum b^2 / 2 and sum b^2 / (2 (1 - max b)); float32 betas and alpha(1) add ~N eps32 B(1)
    # ~ 1e-6: slack 1e-5.
    lo, hi = np.sum(b**2) / 2, np.sum(b**2) / (2 * (1 - b.max()))
    assert lo - 1e-5 <= err <= hi + 1e-5, (n, err, lo, hi)
    errs.append(err)
  ratios = np.array(errs[:-1]) / np.array(errs[1:])
  # O(1/N): the error halves when N doubles.
  assert np.all((ratios >= 1.8) & (ratios <= 2.2)), ratios


# --- 5. VE: the SMLD chain -------------------------------------------------------------------

@pytest.mark.parametrize("sde", [sde_lib.VESDE(), sde_lib.VESDE(sigma_min=0.1, sigma_max=5.0, N=100)],
                         ids=["default", "small"])
def test_ve_discretize_telescopes_to_marginal_variance(sde):
  t = np.arange(sde.N) * sde.T / (sde.N - 1)
  x = np.random.default_rng(3).standard_normal((sde.N, 2)).astype(np.float32)
  f, G = jax.jit(sde.discretize)(jnp.asarray(x), jnp.asarray(t, jnp.float32))
  assert np.all(_np(f) == 0.0)
  G2 = _np(G) ** 2
  # Telescoping sum of sigma_i^2 - sigma_{i-1}^2 (sigma_{-1} = sigma_min): exact up to float32
  # round-off of each term relative to the total (~3 ulps) and of sigma_max: 1e-5 relative.
  np.testing.assert_allclose(G2.sum(), sde.sigma_max**2 - sde.sigma_min**2, rtol=1e-5)
  # After steps 0..i the chain has the exact kernel variance sigma(t_i)^2; the early partial
  # sums (~1e-6) carry float32 cancellation in sigma_i^2 - sigma_{i-1}^2: 1e-4 relative.
  _, sigma = _coeffs(sde, t[1:])
  np.testing.assert_allclose(np.cumsum(G2)[1:], sigma**2, rtol=1e-4)


def test_ve_first_step_is_noise_free_under_jit():
  # Regression: G_0 = sqrt(sigma_0^2 - sigma_min^2) with sigma_0 == sigma_min was NaN under jit,
  # where XLA contracted the difference of squares into an FMA with a negative rounding residue.
  sde = sde_lib.VESDE(N=20)
  t = jnp.asarray([0.0, 1e-3, 0.02], jnp.float32)  # all round to discretisation level 0
  f, G = jax.jit(sde.discretize)(jnp.ones((3, 2)), t)
  assert np.all(np.asarray(G) == 0.0) and np.all(np.asarray(f) == 0.0)


# --- Euler-Maruyama discretisation of the other SDEs -------------------------------------

@pytest.mark.parametrize("sde", SDES[2:], ids=IDS[2:])
def test_euler_discretize_converges_at_order_one(sde):
  _, _, alpha_ref, var_ref = _ref(sde)
  errs = []
  for n in (250, 500, 1000):
    s = dataclasses.replace(sde, N=n)
    t = np.arange(n) * s.T / n  # left end points of the n steps of size dt = T / n
    # x = 1, so that f = (scale - 1) x gives the per-step mean scale of the linear chain.
    f, G, drift, g = (_np(a) for a in jax.jit(lambda x, t: s.discretize(x, t) + s.sde(x, t))(
        jnp.ones((n, 1)), jnp.asarray(t, jnp.float32)))
    # Euler-Maruyama: f = drift dt, G = g sqrt(dt) (float32 products).
    np.testing.assert_allclose(f, drift * s.T / n, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(G, g * math.sqrt(s.T / n), rtol=1e-6)
    m, v = _iterate_moments(1.0 + f[:, 0], G)
    errs.append(abs(m - alpha_ref(s.T)) / alpha_ref(s.T) + abs(v - var_ref(s.T)) / var_ref(s.T))
  ratios = np.array(errs[:-1]) / np.array(errs[1:])
  # First-order weak convergence of the moments; float32 steps add <= ~N eps32 ~ 1e-4 to
  # errors of ~1e-3 or more, well inside the [1.8, 2.2] band.
  assert np.all((ratios >= 1.8) & (ratios <= 2.2)), (errs, ratios)


# --- 6. reverse SDE and probability-flow ODE -------------------------------------------------

def _score(x, t):
  del t
  return -0.7 * x


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_reverse_sde_and_probability_flow(sde):
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.standard_normal((6, 2, 3)), jnp.float32)
  t = jnp.asarray(sde.T * rng.uniform(0.05, 1.0, 6), jnp.float32)
  rev, ode = sde.reverse(_score), sde.reverse(_score, probability_flow=True)
  out = jax.jit(lambda x, t: (sde.sde(x, t), sde.discretize(x, t), rev.sde(x, t),
                              rev.discretize(x, t), ode.sde(x, t), ode.discretize(x, t)))(x, t)
  (drift, g), (f_d, G_d), (r_drift, r_g), (r_f, r_G), (o_drift, o_g), (o_f, o_G) = (
      (_np(a), _np(b)) for a, b in out)
  s = -0.7 * _np(x)
  b = (slice(None), None, None)
  # float32 round-off of g^2 s (up to ~1e3 for VE) and of the subtraction: 1e-5 relative, with
  # 1e-5 absolute for entries near zero.
  tol = dict(rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(r_drift, drift - g[b] ** 2 * s, **tol)
  np.testing.assert_allclose(r_g, g, **tol)
  np.testing.assert_allclose(r_f, f_d - G_d[b] ** 2 * s, **tol)
  np.testing.assert_allclose(r_G, G_d, **tol)
  np.testing.assert_allclose(o_drift, drift - g[b] ** 2 * s / 2, **tol)
  assert np.all(o_g == 0.0) and o_g.shape == (6,)
  np.testing.assert_allclose(o_f, f_d - G_d[b] ** 2 * s / 2, **tol)
  assert np.all(o_G == 0.0) and o_G.shape == (6,)
  assert rev.N == sde.N and rev.T == sde.T


# --- 7. log-SNR ---------------------------------------------------------------------------

@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_log_snr_is_decreasing(sde):
  t = np.linspace(1e-3, 1.0, 400) * sde.T
  lam = _eval(sde, t)[4]
  assert np.all(np.isfinite(lam))
  assert np.all(np.diff(lam) < 0)
  _, _, alpha_ref, var_ref = _ref(sde)
  ref = np.log(alpha_ref(t)) - 0.5 * np.log(var_ref(t))
  np.testing.assert_allclose(lam, ref, rtol=1e-5, atol=1e-5)  # float32 logs of exact coeffs


# --- 8. get_sde ------------------------------------------------------------------------------

@pytest.mark.parametrize("name,cls", [("vesde", sde_lib.VESDE), ("vpsde", sde_lib.VPSDE),
                                      ("subvpsde", sde_lib.SubVPSDE), ("ousde", sde_lib.OUSDE),
                                      ("lambda_vesde", sde_lib.LambdaVESDE), ("logsnr", sde_lib.LogSNRSDE)])
def test_get_sde_builds_every_registered_name(name, cls):
  sde = sde_lib.get_sde(name)
  assert type(sde) is cls and sde == cls()
  assert sde_lib.get_sde(name, N=10).N == 10


def test_get_sde_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match=r"valid names.*vesde"):
    sde_lib.get_sde("ve_sde")


@pytest.mark.parametrize("name,field", [("vesde", "beta_min"), ("vpsde", "sigma_max"),
                                        ("vesde", "T"), ("lambda_vesde", "lambda")])
def test_get_sde_unknown_field(name, field):
  with pytest.raises(ValueError, match=f"sde.{field} is not a field"):
    sde_lib.get_sde(name, **{field: 1.0})


@pytest.mark.parametrize("name,kwargs,field", [
    ("vesde", dict(sigma_min=0.0), "sigma_min"),
    ("vesde", dict(sigma_min=-1.0), "sigma_min"),
    ("vesde", dict(sigma_min=1.0, sigma_max=1.0), "sigma_max"),
    ("vesde", dict(sigma_min=1.0, sigma_max=0.5), "sigma_max"),
    ("vpsde", dict(beta_min=0.0), "beta_min"),
    ("vpsde", dict(beta_min=1.0, beta_max=1.0), "beta_max"),
    ("subvpsde", dict(beta_min=-0.1), "beta_min"),
    ("subvpsde", dict(beta_max=0.05), "beta_max"),
    ("lambda_vesde", dict(lam=1.0), "lam"),
    ("lambda_vesde", dict(lam=0.5), "lam"),
    ("vesde", dict(N=1), "N"),
    ("vpsde", dict(N=0), "N"),
    ("ousde", dict(N=1), "N"),
    ("lambda_vesde", dict(N=10.0), "N"),
    ("ousde", dict(B=0.0), "B"),
    ("ousde", dict(R=-1.0), "R"),
    ("ousde", dict(T=0.0), "T"),
])
def test_get_sde_rejects_out_of_range_values(name, kwargs, field):
  with pytest.raises(ValueError, match=rf"sde\.{field}=\S+ is invalid"):
    sde_lib.get_sde(name, **kwargs)


# --- discrete DDPM / SMLD ---

SCHEDULES = {"linear": sde_lib.linear_schedule, "cosine": sde_lib.cosine_schedule}


def test_linear_schedule_is_ho_et_al_and_scales_with_T():
  s = sde_lib.linear_schedule(1000)
  np.testing.assert_allclose(s.beta[1:], np.linspace(1e-4, 0.02, 1000), rtol=1e-12)
  s200 = sde_lib.linear_schedule(200)  # Nichol & Dhariwal: 1000 / T times both ends
  np.testing.assert_allclose(s200.beta[[1, -1]], [5e-4, 0.1], rtol=1e-12)
  # Scaling keeps sum(beta) = 10.05 exactly, so alpha_bar_T ~ exp(-sum beta) stays tiny (3.0e-5 vs 4.0e-5).
  assert s.T == 1000 and s200.T == 200
  np.testing.assert_allclose(s200.beta.sum(), s.beta.sum(), rtol=1e-12)
  np.testing.assert_allclose(s.alpha_bar, np.cumprod(np.r_[1.0, 1 - s.beta[1:]]), rtol=1e-12)


def test_cosine_schedule_is_nichol_dhariwal_eq17():
  T, s_off = 1000, 0.008
  s = sde_lib.cosine_schedule(T)
  f = np.cos((np.arange(T + 1) / T + s_off) / (1 + s_off) * np.pi / 2) ** 2
  assert s.beta.max() <= 0.999 and s.beta[-1] == 0.999  # clipped only at the last step
  # Below the clip, alpha_bar_t = f(t) / f(0) exactly (float64 cumulative products: 1e-12).
  np.testing.assert_allclose(s.alpha_bar[:-1], f[:-1] / f[0], rtol=1e-10)


@pytest.mark.parametrize("T", [200, 1000])
def test_vpsde_discretises_to_the_linear_schedule(T):
  """VPSDE(beta_min = T beta_start, beta_max = T beta_end, N = T).discrete_betas() are the betas."""
  s = sde_lib.linear_schedule(T)
  sde = sde_lib.VPSDE(beta_min=T * s.beta[1], beta_max=T * s.beta[-1], N=T)
  # float32 (VPSDE) against float64: 2 ulp.
  np.testing.assert_allclose(np.asarray(sde.discrete_betas()), s.beta[1:], rtol=2.5e-7)
  np.testing.assert_allclose(sde_lib.schedule_of(sde).alpha_bar, s.alpha_bar, rtol=1e-5)


def test_geometric_ladder_is_the_vesde_ladder():
  sigmas = sde_lib.geometric_sigmas(0.01, 50.0, 10)
  np.testing.assert_allclose(sigmas, np.asarray(sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0, N=10).discrete_sigmas()),
                             rtol=2e-6)  # float32 VESDE
  np.testing.assert_allclose(sigmas[1:] / sigmas[:-1], (5000.0) ** (1 / 9), rtol=1e-12)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_discrete_vp_sde_is_the_chain(name):
  sde = sde_lib.get_sde("ddpm", schedule=name, N=200)
  same = sde_lib.get_sde("ddpm", schedule=name, N=200)
  assert sde == same and hash(sde) == hash(same)  # usable as a static jit argument
  s = sde.discrete_schedule
  h = 0.4 / 200
  t_mid = (jnp.array([3, 101, 200]) - 0.5) / 200  # mid-segment times

  @jax.jit
  def evaluate():
    alpha, sigma = sde.marginal_coeffs(jnp.arange(201) / 200.0)
    fd = (jnp.log(sde.marginal_coeffs(t_mid + h)[0]) - jnp.log(sde.marginal_coeffs(t_mid - h)[0])) / (2 * h)
    f, G = sde.discretize(jnp.ones((3, 2)), jnp.array([1, 100, 200]) / 200.0)
    return alpha, sigma, fd, sde.drift_coeff(t_mid), sde.diffusion(t_mid), f, G

  alpha, sigma, fd, drift, g, f, G = (np.asarray(v, np.float64) for v in evaluate())
  # At t_i = i / N the marginal is q(x_i | x_0). float32: t_i is off by <= 1 ulp, which moves s = t N by
  # <= 200 * 6e-8 steps, times |log alpha_bar_i - log alpha_bar_{i-1}| <= 6.9 (cosine's clipped last step): 1e-4.
  np.testing.assert_allclose(alpha**2, s.alpha_bar, rtol=1e-4, atol=1e-12)
  np.testing.assert_allclose(sigma**2 + alpha**2, 1.0, rtol=1e-6)
  # alpha(t_i) / alpha(t_{i-1}) = sqrt(1 - beta_i): the transition is Ho's Eq. 2 (VP: sigma^2 = 1 - alpha^2).
  np.testing.assert_allclose(alpha[1:] / alpha[:-1], np.sqrt(1 - s.beta[1:]), rtol=1e-4)
  # Between grid points d log alpha / dt = f(t) and g^2 = -2 f: central differences inside one segment
  # (h = 0.4 / N), exact for log alpha linear there; float32 differencing: < 1e-3.
  np.testing.assert_allclose(fd, drift, rtol=1e-3)
  np.testing.assert_allclose(g**2, -2 * drift, rtol=1e-6)
  # discretize at t_i is the chain's step into x_i.
  beta = s.beta[[1, 100, 200]]
  np.testing.assert_allclose(G, np.sqrt(beta), rtol=1e-6)
  np.testing.assert_allclose(f[:, 0], np.sqrt(1 - beta) - 1, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_iterating_the_chain_reproduces_q_xt_given_x0(name):
  """x_t from T iterations of q(x_t | x_{t-1}) has the moments of the closed-form q(x_t | x_0) at every t."""
  s, n, x0 = SCHEDULES[name](1000), 20_000, 1.5

  def step(x, t):
    mean, std = s.q_step_mean_std(x, jnp.full(x.shape[:1], t))
    x = mean + std[:, None] * jax.random.normal(jax.random.fold_in(jax.random.key(0), t), x.shape)
    return x, (jnp.mean(x), jnp.std(x))

  _, (m, sd) = jax.jit(lambda x: jax.lax.scan(step, x, jnp.arange(1, 1001)))(jnp.full((n, 1), x0))
  mean, std = s.q_mean_std(jnp.full((1000, 1), x0), jnp.arange(1, 1001))
  mean, std = np.asarray(mean[:, 0], np.float64), np.asarray(std, np.float64)
  # CLT: SE(mean) = std / sqrt(n), SE(sample std) = std / sqrt(2 n) for Gaussian x_t; 5 SE at every t
  # (+ 1e-6 absolute for float32 accumulation over 1000 steps at t = 1, where std = 0.01).
  assert np.all(np.abs(np.asarray(m) - mean) <= 5 * std / np.sqrt(n) + 1e-6)
  assert np.all(np.abs(np.asarray(sd) - std) <= 5 * std / np.sqrt(2 * n) + 1e-6)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("t", [2, 10, 300, 1000])
def test_posterior_is_bayes_rule(name, t):
  """q(x_{t-1} | x_t, x_0) ~ q(x_t | x_{t-1}) q(x_{t-1} | x_0), normalised numerically on a grid."""
  s, x0, xt = SCHEDULES[name](1000), 0.7, 0.3
  beta, ab_prev = s.beta[t], s.alpha_bar[t - 1]
  c_lik, w_lik = xt / np.sqrt(1 - beta), np.sqrt(beta / (1 - beta))  # the likelihood as a function of x_{t-1}
  c_pri, w_pri = np.sqrt(ab_prev) * x0, np.sqrt(1 - ab_prev)
  lo, hi = min(c_lik, c_pri) - 12 * max(w_lik, w_pri), max(c_lik, c_pri) + 12 * max(w_lik, w_pri)
  y = np.linspace(lo, hi, 400_001)
  logp = stats.norm.logpdf(xt, np.sqrt(1 - beta) * y, np.sqrt(beta)) + stats.norm.logpdf(y, c_pri, w_pri)
  p = np.exp(logp - logp.max())
  z = np.trapezoid(p, y)
  mean = np.trapezoid(y * p, y) / z
  var = np.trapezoid((y - mean) ** 2 * p, y) / z
  # Closed form (Ho Eq. 7) in float64: the trapezoid rule on a Gaussian with >= 30 points per std
  # is accurate to ~1e-10 relative.
  np.testing.assert_allclose(s.coef_x0[t] * x0 + s.coef_xt[t] * xt, mean, rtol=1e-8, atol=1e-10)
  np.testing.assert_allclose(s.beta_tilde[t], var, rtol=1e-7)
  # The float32 jnp method: round-off 1e-6 relative.
  m32, v32 = s.q_posterior(jnp.full((1, 1), x0), jnp.full((1, 1), xt), jnp.array([t]))
  np.testing.assert_allclose(float(m32[0, 0]), mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(v32[0]), var, rtol=1e-5)


@pytest.mark.parametrize("fn,match", [
    (lambda: sde_lib.linear_schedule(0), "T=0"),
    (lambda: sde_lib.cosine_schedule(10, s=-0.1), "schedule.s"),
    (lambda: sde_lib.get_schedule("quadratic", 10), "sde.schedule='quadratic'"),
    (lambda: sde_lib.get_sde("ddpm", schedule="quadratic", N=10), "sde.schedule"),
    (lambda: sde_lib.DiscreteSchedule([0.1, 1.0]), "schedule.betas"),
    (lambda: losses.get_ddpm_loss_fn(sde_lib.linear_schedule(10), None, loss_type="l3"), "loss.loss_type='l3'"),
    (lambda: losses.get_smld_loss_fn([0.1, -1.0], None), "sigmas"),
    (lambda: sde_lib.geometric_sigmas(1.0, 0.5, 10), "sigma_min"),
    (lambda: sampling.get_ancestral_sampler(sde_lib.linear_schedule(10), (4, 2), variance="big"), "sampling.variance='big'"),
    (lambda: sampling.get_ancestral_sampler(sde_lib.linear_schedule(10), (4, 2)).trajectory(
        jax.random.key(0), lambda x, t: x, 11), "n_trajectory"),
    (lambda: likelihood.get_vlb_fn(sde_lib.linear_schedule(10), decoder="x"), "vlb.decoder='x'"),
    (lambda: likelihood.get_vlb_fn(sde_lib.linear_schedule(10), n_samples=0), "vlb.n_samples"),
    (lambda: likelihood.get_vlb_fn(sde_lib.linear_schedule(10), quadrature_order=6)(None, None, jnp.zeros((2, 8))),
     "vlb.quadrature_order"),
    (lambda: sde_lib.schedule_of(sde_lib.VESDE()), "no DDPM chain"),
    (lambda: sde_lib.schedule_of(sde_lib.SubVPSDE()), "no DDPM chain"),
    (lambda: sampling.get_sampler(sde_lib.VESDE(), (4, 2), method="ddpm_ancestral"), "no DDPM chain"),
    (lambda: sampling.get_sampler(sde_lib.VPSDE(), (4, 2), method="ddpm_ancestral", eps=1e-3), "ddpm_ancestral"),
])
def test_bad_arguments_raise_value_error(fn, match):
  with pytest.raises(ValueError, match=match):
    fn()


# --- 9. log-SNR SDEs (VDM) -------------------------------------------------------------------

LOGSNR = [sde_lib.LogSNRSDE(schedule=s, gamma_min=-10.0, gamma_max=6.0) for s in sde_lib.snr.SCHEDULES]


def _gamma_ref(sde, t):
  """gamma(t) in float64 from the schedules' definitions (module docstring of sde_lib.snr)."""
  g0, g1 = sde.gamma_min, sde.gamma_max
  if sde.schedule == "linear":
    return g0 + (g1 - g0) * t
  if sde.schedule == "cosine":
    b = np.arctan(np.exp(g0 / 2))
    return 2 * np.log(np.tan((np.arctan(np.exp(g1 / 2)) - b) * t + b))
  shape = (0.1 * t + 9.95 * t**2) / 10.05
  b0, b1 = np.log1p(np.exp(g0)), np.log1p(np.exp(g1))
  return np.log(np.expm1(b0 + (b1 - b0) * shape))


@pytest.mark.parametrize("sde", LOGSNR, ids=sde_lib.snr.SCHEDULES)
def test_logsnr_schedule_coefficients(sde):
  t = np.linspace(0.0, 1.0, 41)
  f, g, alpha, sigma, lam = _eval(sde, t)
  gamma = _gamma_ref(sde, t)
  assert np.all(np.diff(gamma) > 0) and gamma[0] == pytest.approx(-10.0) and gamma[-1] == pytest.approx(6.0)
  # alpha^2 = sigmoid(-gamma), sigma^2 = sigmoid(gamma), lambda = -gamma / 2 (float32: 1e-5).
  np.testing.assert_allclose(alpha**2, 1 / (1 + np.exp(gamma)), rtol=1e-5)
  np.testing.assert_allclose(sigma**2, 1 / (1 + np.exp(-gamma)), rtol=1e-5)
  np.testing.assert_allclose(lam, -gamma / 2, rtol=1e-5, atol=1e-5)
  # f = -gamma' sigma^2 / 2 and g^2 = gamma' sigma^2, with gamma' by central differences of the
  # float64 reference (step 1e-6: truncation ~1e-10 relative); float32 jvp: 1e-4 relative.
  inner = t[1:-1]
  dgamma = (_gamma_ref(sde, inner + 1e-6) - _gamma_ref(sde, inner - 1e-6)) / 2e-6
  s2 = 1 / (1 + np.exp(-_gamma_ref(sde, inner)))
  np.testing.assert_allclose(f[1:-1], -0.5 * dgamma * s2, rtol=1e-4)
  np.testing.assert_allclose(g[1:-1] ** 2, dgamma * s2, rtol=1e-4)


@pytest.mark.parametrize("sde", LOGSNR, ids=sde_lib.snr.SCHEDULES)
def test_logsnr_marginals_match_moment_odes(sde):
  """The SDE's f and g carry alpha, sigma^2 from their values at t = 0 along the moment ODEs."""
  t0, t_eval = 0.0, np.array([0.05, 0.3, 0.7, 1.0])
  a0, s0 = (float(c[0]) for c in _coeffs(sde, np.zeros(1)))
  coeff = lambda t: [float(v[0]) for v in _eval(sde, np.array([t]))[:2]]

  def rhs(t, y):
    f, g = coeff(t)
    return [f * y[0], 2 * f * y[1] + g**2]

  sol = integrate.solve_ivp(rhs, (t0, 1.0), [a0, s0**2], method="DOP853", t_eval=t_eval, rtol=1e-8, atol=1e-12)
  assert sol.success
  alpha, sigma = _coeffs(sde, t_eval)
  # ODE good to ~1e-8 with float32 f, g (a few ulps each): 1e-4 relative.
  np.testing.assert_allclose(alpha, sol.y[0], rtol=1e-4)
  np.testing.assert_allclose(sigma, np.sqrt(sol.y[1]), rtol=1e-4)


@pytest.mark.parametrize("sde", LOGSNR, ids=sde_lib.snr.SCHEDULES)
def test_logsnr_euler_maruyama_matches_marginal(sde):
  """Monte Carlo: 20,000 Euler-Maruyama paths (200 steps) from x_0 = alpha_0 x0 + sigma_0 z at
  t = 0.2 to t = 0.8 against the exact marginal N(alpha x0, sigma^2)."""
  x0, t_start, t_end = 1.5, 0.2, 0.8
  dt = (t_end - t_start) / N_STEPS
  a_s, s_s = (float(c[0]) for c in _coeffs(sde, np.array([t_start])))
  # The kernel from t_start: x_t | x_s ~ N((alpha_t / alpha_s) x_s, sigma_t^2 - (alpha_t / alpha_s)^2 sigma_s^2).

  def step(x, inputs):
    k, z = inputs
    drift, g = sde.sde(x, jnp.full((N_PATHS,), t_start + k * dt, jnp.float32))
    return x + drift * dt + g[:, None] * math.sqrt(dt) * z, None

  start = a_s * x0 + s_s * jax.random.normal(jax.random.key(1), (N_PATHS, 1))
  x = _np(jax.jit(lambda x, z: jax.lax.scan(step, x, (jnp.arange(N_STEPS), z))[0])(start, _noise()))[:, 0]
  alpha, std = (float(c[0]) for c in _coeffs(sde, np.array([t_end])))
  # 5 Monte Carlo standard errors plus 1% of std for the O(dt) Euler-Maruyama bias (h = 3e-3).
  assert abs(x.mean() - alpha * x0) <= 5 * std / math.sqrt(N_PATHS) + 0.01 * std
  assert abs(x.std() - std) <= 5 * std / math.sqrt(2 * N_PATHS) + 0.01 * std


@pytest.mark.parametrize("schedule", sde_lib.snr.SCHEDULES)
def test_logsnr_sde_plugs_into_samplers_and_likelihood(schedule):
  """N(0.5, 0.7^2) with its exact score: DPM-Solver++(2M) carries the prior latents to the exact
  flow map, and the probability-flow likelihood matches the closed-form density of p_eps."""
  from conftest import gaussian_score
  m, s, eps = 0.5, 0.7, 1e-3
  sde = sde_lib.get_sde("logsnr", schedule=schedule)
  score = gaussian_score(sde, m, s**2)
  x_T = np.linspace(-2.0, 2.0, 5, dtype=np.float32)[:, None]
  sampler = sampling.get_sampler(sde, (5, 1), method="dpm_solver_2m", n_steps=200, schedule="log_snr", eps=eps)
  x, _ = jax.jit(lambda k, z: sampler(k, score, x_T=z))(jax.random.key(0), x_T)
  (a_T,), (s_T,) = _coeffs(sde, np.array([1.0]))
  (a_e,), (s_e,) = _coeffs(sde, np.array([eps]))
  exact = a_e * m + np.sqrt(a_e**2 * s**2 + s_e**2) * (x_T - a_T * m) / np.sqrt(a_T**2 * s**2 + s_T**2)
  np.testing.assert_allclose(_np(x), exact, atol=2e-3)  # 200 second-order steps
  nll_fn = likelihood.get_likelihood_fn(sde, eps=eps, prior_logp=lambda z: jnp.sum(
      jax.scipy.stats.norm.logpdf(z, a_T * m, np.sqrt(a_T**2 * s**2 + s_T**2)), axis=-1))
  pts = jnp.asarray(np.array([[-0.5], [0.5], [1.5]], np.float32))
  nll, _, _ = jax.jit(lambda x: nll_fn(None, score, x))(pts)
  ref = -stats.norm.logpdf(_np(pts)[:, 0], a_e * m, np.sqrt(a_e**2 * s**2 + s_e**2))
  np.testing.assert_allclose(_np(nll), ref, atol=1e-3)  # rtol = atol = 1e-5 adaptive solve


def test_logsnr_bad_fields():
  for kwargs, field in [(dict(schedule="sigmoid"), "sde.schedule"), (dict(gamma_max=-20.0), "sde.gamma_max"),
                        (dict(gamma_min=float("nan")), "sde.gamma_min")]:
    with pytest.raises(ValueError, match=field):
      sde_lib.get_sde("logsnr", **kwargs)


def test_learned_schedule_is_monotone_with_exact_endpoints():
  """Random (not initial) parameters: shape(0) = 0, shape(1) = 1, shape' > 0 on [0, 1], and the
  bound SDE's gamma runs from params' gamma_min to gamma_max; unbound, the linear schedule."""
  sde = sde_lib.get_sde("learned_logsnr", gamma_min=-9.0, gamma_max=5.0, hidden=64)
  p = sde.init_params(jax.random.key(0))
  keys = iter(jax.random.split(jax.random.key(1), 8))
  p["shape"] = jax.tree.map(lambda a: a + 2.0 * jax.random.normal(next(keys), jnp.shape(a)), p["shape"])
  p["shape"]["w3"] = p["shape"]["w3"] + 7.0  # the sigmoid branch as large as the linear one
  p["gamma_min"], p["gamma_max"] = jnp.float32(-7.5), jnp.float32(4.0)
  bound = sde.bind({"schedule": p})
  t = jnp.linspace(0.0, 1.0, 257)
  gamma, dgamma = _np(bound.gamma(t)), _np(bound.dgamma(t))
  assert gamma[0] == pytest.approx(-7.5, abs=1e-5) and gamma[-1] == pytest.approx(4.0, abs=1e-5)
  assert np.all(dgamma > 0) and np.all(np.diff(gamma) > 0)
  assert not np.allclose(gamma, -7.5 + 11.5 * _np(t), atol=0.05)  # the random shape is not linear
  np.testing.assert_allclose(_np(sde.gamma(t)), -9.0 + 14.0 * _np(t), rtol=1e-5, atol=1e-5)
  a, s = (_np(c) for c in bound.marginal_coeffs(t))
  np.testing.assert_allclose(a**2 + s**2, 1.0, rtol=1e-5)
  with pytest.raises(ValueError, match="sde.hidden"):
    sde_lib.get_sde("learned_logsnr", hidden=0)
