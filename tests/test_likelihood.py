"""Likelihood by the probability-flow ODE against exact densities; bits/dim; prior mismatch."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datasets
import likelihood
import sde_lib

TARGET = datasets.GaussianMixture()
EPS = 1e-5  # the likelihood's default start time


def _true_nll(sde, x, t=EPS):
  """-log p_t(x) of the diffused target (exact): what the exact flow from t = eps returns."""
  return -TARGET.log_prob_fn(sde)(x, jnp.full(x.shape[:1], t))


# --- bits per dimension -----------------------------------------------------------------

@pytest.mark.parametrize("data_range,width", [("[0,1]", 1.0), ("[-1,1]", 2.0)])
def test_uniform_density_is_exactly_8_bits_per_dim(data_range, width):
  dim = 3 * 4 * 4
  nll = jnp.full((5,), dim * math.log(width))  # -log of the density width^-D on the data range
  np.testing.assert_allclose(np.asarray(likelihood.bits_per_dim(nll, dim, data_range=data_range)),
                             8.0, rtol=1e-6)


@pytest.mark.parametrize("data_range,width", [("[0,1]", 1.0), ("[-1,1]", 2.0)])
def test_bits_per_dim_is_exact_for_a_density_constant_on_cells(data_range, width):
  # 1-D discrete model P(u) over 256 levels; its density is P(u) * 256 / width on cell u,
  # for which the dequantisation bound is an equality: bpd = -log2 P(u).
  p = np.random.default_rng(0).dirichlet(np.ones(256))
  u = np.arange(256)
  nll = -np.log(p[u] * 256 / width)
  bpd = np.asarray(likelihood.bits_per_dim(jnp.asarray(nll, jnp.float32), 1, data_range=data_range))
  np.testing.assert_allclose(bpd, -np.log2(p[u]), rtol=1e-5)  # float32 round-off


def test_continuous_bits_per_dim_has_no_offset():
  assert abs(float(likelihood.bits_per_dim(jnp.asarray(2 * math.log(2)), 2, data_range=None)) - 1.0) < 1e-6


@pytest.mark.parametrize("kwargs,match", [
    (dict(data_range="[0,255]"), "likelihood.data_range"), (dict(n_bins=1), "likelihood.n_bins")])
def test_bad_bits_per_dim_arguments_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    likelihood.bits_per_dim(jnp.zeros(2), 2, **kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(hutchinson_type="nope"), "likelihood.hutchinson_type"),
    (dict(solver="rk4"), "likelihood.solver"),
    (dict(solver="euler"), "likelihood.solver='euler'"),
    (dict(rtol=0.0), "likelihood.rtol"),
    (dict(eps=0.0), "likelihood.eps")])
def test_bad_likelihood_arguments_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    likelihood.get_likelihood_fn(sde_lib.VPSDE(), **kwargs)


# --- prior mismatch ---------------------------------------------------------------------

def test_prior_kl_monte_carlo_matches_closed_form_for_a_gaussian():
  # sigma_max = 5: the prior's neglect of the mean (3, -2) is a KL of ~0.25 nats, far from 0.
  sde = sde_lib.VESDE(sigma_max=5.0)
  target = datasets.GaussianMixture(means=[[3.0, -2.0]], covs=[[[2.0, 0.5], [0.5, 1.0]]], weights=[1.0])
  exact = likelihood.gaussian_prior_kl(sde, [3.0, -2.0], [[2.0, 0.5], [0.5, 1.0]])
  mc = likelihood.prior_kl(jax.random.key(0), sde, target, n=200_000)
  assert exact > 0.2
  assert abs(mc["kl"] - exact) < 4 * mc["stderr"], (mc, exact)  # 4 standard errors


# --- the likelihood: fast checks ----------------------------------------------------------

def test_exact_nll_nfe_and_recompilation():
  """VE (the largest prior mismatch): with the true log p_T in place of the prior, the NLL is
  -log p_eps(x); nfe equals an independent count; new tolerances do not retrace."""
  sde = sde_lib.VESDE()
  oracle = TARGET.score_fn(sde)
  calls, traces = [], []

  def counted(x, t):
    traces.append(1)
    jax.debug.callback(lambda: calls.append(1))
    return oracle(x, t)

  log_p_T = lambda z: TARGET.log_prob_fn(sde)(z, jnp.full(z.shape[:1], sde.T))
  nll_fn = likelihood.get_likelihood_fn(sde, prior_logp=log_p_T)
  x = TARGET.sample(jax.random.key(1), 200)
  n_traces, nfes = [], []
  for tol in (1e-5, 1e-3):
    calls.clear()
    nll, z, nfe = nll_fn(None, counted, x, rtol=tol, atol=tol)
    jax.block_until_ready(nll)
    jax.effects_barrier()
    assert int(nfe) == len(calls) > 0
    n_traces.append(len(traces))
    nfes.append(int(nfe))
    if tol == 1e-5:
      # Must-show tolerance 0.005 nats (mean abs error); measured ~2e-5 at rtol = atol = 1e-5.
      err = np.asarray(nll - _true_nll(sde, x))
      assert np.mean(np.abs(err)) < 0.005, np.mean(np.abs(err))
  assert n_traces[0] == n_traces[1] > 0 and nfes[1] < nfes[0]
  assert z.shape == x.shape


# --- the likelihood: must-show (slow) -------------------------------------------------------

SDES = {"ve": sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0), "vp": sde_lib.VPSDE(),
        "subvp": sde_lib.SubVPSDE(), "ou": sde_lib.OUSDE(B=1.0, R=1.0, T=5.0)}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SDES))
def test_exact_nll_with_oracle_matches_true_density(name):
  """Must-show: NLL_ode(x) - (log p_T(z) - log prior(z)) = -log p_eps(x), mean abs error over
  1,000 points < 0.005 nats, for the oracle score with the exact trace at rtol = atol = 1e-5.

  eps = 1e-5: -log p_eps differs from -log p_0 by < 2e-5 nats here (checked below), so the
  comparison is also one with the data density. The mean prior-mismatch term estimates
  KL(p_T || prior), checked against its Monte Carlo value.
  """
  sde = SDES[name]
  x = TARGET.sample(jax.random.key(2), 1000)
  nll, z, _ = likelihood.get_likelihood_fn(sde)(None, TARGET.score_fn(sde), x)
  mismatch = likelihood.prior_mismatch(sde, TARGET.log_prob_fn(sde), z)
  err = np.asarray(nll - mismatch - _true_nll(sde, x))
  assert np.mean(np.abs(err)) < 0.005, np.mean(np.abs(err))  # must-show tolerance
  # p_eps vs p_0: O(sigma(eps)^2) ~ 1e-6 nats for VP, 1e-5 for OU; bound 1e-4.
  assert np.mean(np.abs(np.asarray(_true_nll(sde, x) + TARGET.log_prob(x)))) < 1e-4
  # The mismatch is >= 0 on average (a KL) and matches KL(p_T || prior) within 4 standard
  # errors of the two estimates (1,000 data points; 100,000 Monte Carlo samples).
  kl = likelihood.prior_kl(jax.random.key(3), sde, TARGET, n=100_000)
  m = np.asarray(mismatch, np.float64)
  se = math.hypot(m.std(ddof=1) / math.sqrt(m.size), kl["stderr"])
  assert abs(m.mean() - kl["kl"]) < 4 * se + 1e-4, (m.mean(), kl)  # + solver error in z


@pytest.mark.slow
@pytest.mark.parametrize("hutchinson_type", ["rademacher", "gaussian"])
def test_hutchinson_nll_is_unbiased(hutchinson_type):
  """Mean of (Hutchinson NLL - exact NLL) over 1,000 independent probes (20 points x 50 probes
  each) is within 3 standard errors of 0; nfe equals an independent count."""
  sde = sde_lib.VPSDE()
  oracle = TARGET.score_fn(sde)
  calls = []

  def counted(x, t):
    jax.debug.callback(lambda: calls.append(1))
    return oracle(x, t)

  x = jnp.tile(TARGET.sample(jax.random.key(4), 20), (50, 1))  # row i has its own probe
  exact, _, _ = likelihood.get_likelihood_fn(sde)(None, oracle, x)
  nll, _, nfe = likelihood.get_likelihood_fn(sde, hutchinson_type=hutchinson_type)(
      jax.random.key(5), counted, x)
  jax.block_until_ready(nll)
  jax.effects_barrier()
  assert int(nfe) == len(calls) > 0
  diff = np.asarray(nll - exact, np.float64)
  assert diff.std() > 1e-3  # the estimator is actually stochastic
  assert abs(diff.mean()) < 3 * diff.std(ddof=1) / math.sqrt(diff.size), (diff.mean(), diff.std())
