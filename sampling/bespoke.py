"""Bespoke non-stationary solvers (Shaul et al. 2024): an n-NFE sampler whose every step has its
own weights on all the model evaluations so far, fitted (with its evaluation times) to minimise
the exact KL of its samples.

In the scaled variable y = x / alpha_t (noise level sigma_edm = e^-lambda), with the model
evaluated at log-SNRs lambda_0 = lambda(T) < lambda_1 < ... < lambda_{n-1} as
d_j = x0_hat(alpha_j y_j, t_j) (Tweedie), the sampler is

    y_{i+1} = r_i y_i + sum_{j <= i} w_ij d_j,    i = 0..n-1,    sample = y_n,

with n ratios r_i and n (n + 1) / 2 weights w_ij: n NFE. Every linear multistep solver in data
prediction (DDIM, DPM-Solver++, UniPC with its corrector) followed by a step to sigma = 0 is one
point of this family (`grid_opt.coefficients_of` reads a sampler's weights);
`dpm_solver_2m_coefficients` gives DPM-Solver++(2M)'s with the "half" last step
(`schedules.denoise_to_zero`), where a fit starts. The fitted numbers go into a config
(`method="bespoke"`, `timesteps` = lambda_1..lambda_{n-1}, `coefficients` = r, then w row by row).
With `start_log_snr` the first evaluation is not at T but at lambda_0, on the prior latent rescaled to
that noise level (`bespoke_solve`). With `start_moments` (the data's mean m and covariance C) that
first state is instead the probability-flow ODE solved in closed form for Gaussian data N(m, C) from
T down to lambda_0 (Wang & Vastola 2024: early in the reverse process the marginals of real data are
close to those of its Gaussian approximation), y_0 = m + (C + e^(-2 lambda_0) I)^(1/2) z with z the
standardised prior latent: no network evaluation is spent where the data's first two moments
decide the flow, so all of them go to the noise levels where the modes separate.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import sde_lib
import utils
from sampling.base import Sampler, start, tweedie_denoise
from sampling.schedules import check_timesteps
from sde_lib import t_of_log_snr

Array = jax.Array


def n_coefficients(n_steps: int) -> int:
  """The length of `coefficients` for n_steps NFE: n ratios and n (n + 1) / 2 weights."""
  return n_steps + n_steps * (n_steps + 1) // 2


def split_coefficients(coefficients: Array, n_steps: int) -> tuple[Array, Array]:
  """(ratios [n], weights [n, n] lower triangular) of the flat coefficient vector."""
  rows, cols = np.tril_indices(n_steps)
  weights = jnp.zeros((n_steps, n_steps), coefficients.dtype).at[rows, cols].set(coefficients[n_steps:])
  return coefficients[:n_steps], weights


def join_coefficients(ratios: Array, weights: Array) -> Array:
  """The flat coefficient vector of (ratios [n], weights [n, n]); the inverse of `split_coefficients`."""
  rows, cols = np.tril_indices(ratios.shape[0])
  return jnp.concatenate([ratios, weights[rows, cols]])


def dpm_solver_2m_coefficients(lams: Array) -> Array:
  """DPM-Solver++(2M) through the evaluation log-SNRs lams [n], then the "half" step to sigma = 0.

  Step i < n - 1 (h_i = lambda_{i+1} - lambda_i, r = h_{i-1} / h_i) is
      y_{i+1} = e^-h_i y_i + (1 - e^-h_i) ((1 + 1 / (2 r)) d_i - d_{i-1} / (2 r))   (first step: d_0),
  and the last y_n = (y_{n-1} + d_{n-1}) / 2.
  """
  n = lams.shape[0]
  ratios, weights = jnp.zeros((n,)), jnp.zeros((n, n))
  h = jnp.diff(lams)
  for i in range(n - 1):
    phi = -jnp.expm1(-h[i])
    ratios = ratios.at[i].set(jnp.exp(-h[i]))
    if i == 0:
      weights = weights.at[0, 0].set(phi)
    else:
      half_inv_r = 0.5 * h[i] / h[i - 1]
      weights = weights.at[i, i].set(phi * (1.0 + half_inv_r)).at[i, i - 1].set(-phi * half_inv_r)
  ratios = ratios.at[n - 1].set(0.5)
  weights = weights.at[n - 1, n - 1].set(0.5)
  return join_coefficients(ratios, weights)


def bespoke_solve(sde: sde_lib.SDE, score_fn, x: Array, lams: Array, coefficients: Array, *,
                  free_start: bool = False, moments: tuple[Array, Array, Array] | None = None) -> Array:
  """The bespoke solver from x_T [B, ...]; n = len(lams) NFE (module doc).

  lams[0] = lambda(T), or with free_start any lambda_0 >= lambda(T): the first evaluation is then at
  y_0 = e^(lambda(T) - lambda_0) x_T / alpha_T, the prior latent rescaled to that noise level
  (the model's output at T carries almost nothing about the data, so this saves an NFE at 2-5 NFE).
  With moments = (m [d], U [d, d], c [d]), the data's mean and covariance C = U diag(c) U^T
  (`check_start_moments`), y_0 = m + U diag(sqrt(c + e^(-2 lambda_0))) U^T z instead, with
  z = e^lambda(T) x_T / alpha_T the standardised prior latent: the Gaussian approximation's flow.
  """
  n, B = lams.shape[0], x.shape[0]
  ratios, weights = split_coefficients(coefficients, n)
  ts = t_of_log_snr(sde, lams)
  ts = ts if free_start else ts.at[0].set(sde.T)
  T = jnp.full((1,), sde.T, jnp.float32)
  alphas = sde.marginal_coeffs(ts)[0]
  z = x / sde.marginal_coeffs(T)[0][0] * jnp.exp(sde.log_snr(T)[0])
  if moments is None:
    y = z * jnp.exp(-lams[0])
  else:
    mean, U, c = moments
    scale = jnp.sqrt(c + jnp.exp(-2.0 * lams[0]))
    y = (mean + ((z.reshape(B, -1) @ U) * scale) @ U.T).reshape(x.shape)
  ds = []
  for i in range(n):
    ds.append(tweedie_denoise(sde, score_fn, alphas[i] * y, jnp.full((B,), ts[i])))
    y = ratios[i] * y + sum(weights[i, j] * ds[j] for j in range(i + 1))
  return y


def check_coefficients(coefficients, n_steps: int):
  """The coefficients as a float32 array [n_coefficients(n_steps)].

  Raises:
    ValueError: not n_coefficients(n_steps) finite numbers.
  """
  if isinstance(coefficients, jax.core.Tracer):  # being fitted: values unknown until run
    if jnp.shape(coefficients) != (n_coefficients(n_steps),):
      raise ValueError(f"sampling.coefficients must be {n_coefficients(n_steps)} numbers; got shape "
                       f"{jnp.shape(coefficients)}.")
    return coefficients
  values = np.asarray(coefficients if coefficients is not None else [], np.float64).reshape(-1)
  if values.size != n_coefficients(n_steps) or not np.all(np.isfinite(values)):
    raise ValueError(f"sampling.coefficients={coefficients!r} must be {n_coefficients(n_steps)} finite "
                     f"numbers for n_steps={n_steps} (n ratios, then the n (n + 1) / 2 weights row by row).")
  return jnp.asarray(values, jnp.float32)


def check_start_moments(start_moments, dim: int) -> tuple[Array, Array, Array] | None:
  """(m [dim], U [dim, dim], c [dim]) of start_moments = (mean, covariance), C = U diag(c) U^T, for
  `bespoke_solve`'s Gaussian start; None for None.

  Raises:
    ValueError: not a pair (mean [dim], covariance [dim, dim]) of finite numbers, or a covariance that
      is not symmetric positive semi-definite.
  """
  if start_moments is None:
    return None
  allowed = f"(mean [{dim}], covariance [{dim}, {dim}]) of the data (in a config: \"data\", the dataset's own)"
  if not isinstance(start_moments, (tuple, list)) or len(start_moments) != 2:
    raise ValueError(f"sampling.start_moments must be {allowed}; got {type(start_moments).__name__}.")
  mean, cov = (np.asarray(v, np.float64) for v in start_moments)
  if mean.shape != (dim,) or cov.shape != (dim, dim):
    raise ValueError(f"sampling.start_moments must be {allowed}; got shapes {mean.shape} and {cov.shape}.")
  if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))) or not np.allclose(cov, cov.T, atol=1e-6):
    raise ValueError("sampling.start_moments: the mean and covariance must be finite and the covariance symmetric.")
  c, U = np.linalg.eigh(0.5 * (cov + cov.T))
  if c.min() < -1e-6 * max(c.max(), 1.0):
    raise ValueError(f"sampling.start_moments: the covariance has a negative eigenvalue {c.min():.3g}.")
  as32 = lambda v: jnp.asarray(v, jnp.float32)
  return as32(mean), as32(U), as32(np.maximum(c, 0.0))


def get_bespoke_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, n_steps: int,
                        timesteps: Sequence[float], coefficients: Sequence[float],
                        start_log_snr: float | None = None, start_moments=None, eps: float = 1e-3) -> Sampler:
  """A bespoke solver (module doc) with n_steps NFE.

  Args:
    sde, shape: the forward SDE and the batch shape [B, ...].
    n_steps: NFE.
    timesteps: the evaluation log-SNRs lambda_1..lambda_{n-1}, increasing inside (lambda(T), lambda(eps)).
    coefficients: the ratios r_0..r_{n-1}, then the weights w_ij (j <= i) row by row.
    start_log_snr: None (the first evaluation at T) or the log-SNR lambda_0 of the first evaluation,
      at the prior latent rescaled to it (`bespoke_solve`), in (lambda(T), lambda_1).
    start_moments: None, or (mean, covariance) of the data (flattened): the first state is then the
      Gaussian approximation's probability-flow ODE from T to the first evaluation (`bespoke_solve`).
    eps: the time whose log-SNR bounds the evaluation points.

  Returns:
    A deterministic `Sampler`: sampler(key, score_fn, x_T=None) -> (x, nfe).

  Raises:
    ValueError: bad shape, n_steps, eps, timesteps, coefficients, start_log_snr or start_moments.
  """
  shape = utils.check_batch_shape(shape)
  moments = check_start_moments(start_moments, int(np.prod(shape[1:])))
  utils.check_int("sampling.n_steps", n_steps, 1)
  utils.check_real("sampling.eps", eps, low=0.0, high=sde.T, low_open=True, high_open=True)
  timesteps = check_timesteps(sde, "custom", timesteps, n_steps, eps)
  coefficients = check_coefficients(coefficients, n_steps)
  if start_log_snr is not None and not isinstance(start_log_snr, jax.core.Tracer):
    with jax.ensure_compile_time_eval():
      lam_T, lam_eps = (float(v) for v in sde.log_snr(jnp.array([sde.T, eps], jnp.float32)))
    high = float(timesteps[0]) if n_steps > 1 else lam_eps
    utils.check_real("sampling.start_log_snr", start_log_snr, low=lam_T, high=high, low_open=True, high_open=True)

  def run(key, score_fn, x_T, n_trajectory):
    del n_trajectory
    x, _ = start(key, sde, shape, x_T)
    first = (sde.log_snr(jnp.full((1,), sde.T, jnp.float32)) if start_log_snr is None
             else jnp.reshape(jnp.asarray(start_log_snr, jnp.float32), (1,)))
    lams = jnp.concatenate([first, jnp.asarray(timesteps, jnp.float32).reshape(-1)])
    return (bespoke_solve(sde, score_fn, x, lams, coefficients, free_start=start_log_snr is not None,
                          moments=moments), n_steps, None)

  return Sampler("bespoke", shape, run, needs_key=False)
