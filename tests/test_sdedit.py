"""SDEdit (sampling/sdedit.py) against closed forms for a Gaussian target with its exact score."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datasets
import sde_lib
from sampling.sdedit import get_sdedit_sampler

M, V = np.array([1.0, -0.5]), 0.5  # the target N(M, V I)
GUIDE = np.array([-2.0, 2.0])


def _closed_form(sde, t0: float, probability_flow: bool):
  """Mean and per-coordinate variance of SDEdit's output for the guide GUIDE. With
  c^2 = alpha^2 V + sigma^2 at t0: the SDE gives p(x0 | x_t0) averaged over x_t0 ~ N(alpha g, sigma^2),
  mean M + alpha^2 V / c^2 (g - M), variance V sigma^2 / c^2 (1 + alpha^2 V / c^2); the ODE maps
  x_t0 to M + sqrt(V) (x_t0 - alpha M) / c, mean M + alpha sqrt(V) / c (g - M), variance V sigma^2 / c^2."""
  alpha, sigma = (float(c) for c in sde.marginal_coeffs(jnp.float32(t0)))
  c2 = alpha**2 * V + sigma**2
  if probability_flow:
    return M + alpha * np.sqrt(V / c2) * (GUIDE - M), V * sigma**2 / c2
  return M + alpha**2 * V / c2 * (GUIDE - M), V * sigma**2 / c2 * (1.0 + alpha**2 * V / c2)


def test_sdedit_matches_the_gaussian_closed_forms():
  """VPSDE, 2-D N(M, 0.5 I), exact score, 4,000 samples, 100 steps: the SDE at t0 = 0.1 stays near
  the guide, at t0 = 0.4 the mean and variance match the closed form; the ODE from t0 = T ignores
  the guide (mean M, variance V) and matches the closed form at t0 = 0.4. Tolerances: 0.06 on the
  means (~4 standard errors), 10% on the variances."""
  sde, n = sde_lib.VPSDE(N=1000), 4000
  target = datasets.GaussianMixture([M.tolist()], [(V * np.eye(2)).tolist()], [1.0])
  oracle = target.score_fn(sde)
  guide = jnp.broadcast_to(jnp.asarray(GUIDE, jnp.float32), (n, 2))
  for probability_flow, t0s in ((False, (0.1, 0.4)), (True, (0.4, 1.0))):
    sampler = get_sdedit_sampler(sde, (n, 2), n_steps=100, probability_flow=probability_flow)
    for t0 in t0s:
      x, nfe = sampler(jax.random.key(0), oracle, guide, t0)
      x = np.asarray(x)
      mean, var = _closed_form(sde, t0, probability_flow)
      assert int(nfe) == 101
      np.testing.assert_allclose(x.mean(0), mean, atol=0.06, err_msg=f"{probability_flow=}, {t0=}")
      np.testing.assert_allclose(x.var(0), var, rtol=0.1, atol=2e-3, err_msg=f"{probability_flow=}, {t0=}")
      if t0 == 0.1:
        assert np.abs(x.mean(0) - GUIDE).max() < 0.25 * np.abs(GUIDE - M).min()  # faithful: near the guide
      if t0 == 1.0:
        np.testing.assert_allclose(x.mean(0), M, atol=0.06)  # realistic: the guide is forgotten


def test_sdedit_arguments_are_checked():
  sde = sde_lib.VPSDE(N=10)
  with pytest.raises(ValueError, match="t0"):
    get_sdedit_sampler(sde, (2, 2), t0=1.5)
  with pytest.raises(ValueError, match="n_steps"):
    get_sdedit_sampler(sde, (2, 2), n_steps=0)
  sampler = get_sdedit_sampler(sde, (2, 2))
  with pytest.raises(ValueError, match="x_guide.shape"):
    sampler(jax.random.key(0), lambda x, t: -x, jnp.zeros((3, 2)))
  with pytest.raises(ValueError, match="t0"):
    sampler(jax.random.key(0), lambda x, t: -x, jnp.zeros((2, 2)), 0.0)
