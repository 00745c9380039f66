"""Align Your Steps (Sabour, Fidler & Kreis, ICML 2024): sampling schedules that minimise an upper
bound on KL(true reverse SDE || its discretisation) (the KLUB), by Girsanov's theorem, for the
first-order stochastic solver that holds the denoiser D(x, sigma) = x0_hat fixed over each step.

In Karras et al.'s variables (x~ = x / alpha = x0 + sigma eps, sigma = sigma_t / alpha_t = e^-lambda;
reverse SDE dx~ = -2 sigma score d sigma + sqrt(2 sigma) dw) a grid sigma_0 > ... > sigma_n has

    KLUB = sum_i int_{sigma_{i+1}}^{sigma_i} sigma^-3 E || D(x~_sigma, sigma) - D(x~_{sigma_i}, sigma_i) ||^2 d sigma,

the expectation over the true path, whose pairs (x~_{sigma_i}, x~_sigma) are the forward process's:
x~_sigma = x0 + sigma eps_1, x~_{sigma_i} = x~_sigma + sqrt(sigma_i^2 - sigma^2) eps_2, x0 ~ data.
With sigma = e^-lambda, lambda uniform on [lambda_i, lambda_{i+1}], each step's integral is
(lambda_{i+1} - lambda_i) E[sigma^-2 ||.||^2]. The paper refines the grid by a subdivision search;
here Adam minimises this estimate over the same monotone log-SNR parameterisation as
`grid_opt.optimise_grid`. `published_grid` instead takes the paper's published 10-step schedule.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import sde_lib
import utils
from sampling.base import ScoreFn, tweedie_denoise
from sampling.grid_opt import fit_logits, grid_bounds, grid_of_logits
from sde_lib import t_of_log_snr

Array = jax.Array

# The published 10-step AYS schedule of Stable Diffusion 1.5 as discrete DDPM timesteps
# (research.nvidia.com/labs/toronto-ai/AlignYourSteps/howto.html), of SD's scaled-linear betas.
SD15_TIMESTEPS = (999, 850, 736, 645, 545, 455, 343, 233, 124, 24, 0)


def sd15_sigmas() -> np.ndarray:
  """sigma = sqrt((1 - abar) / abar) at SD15_TIMESTEPS (betas linear in sqrt from 0.00085 to 0.012)."""
  betas = np.linspace(np.sqrt(0.00085), np.sqrt(0.012), 1000, dtype=np.float64) ** 2
  abar = np.cumprod(1.0 - betas)[list(SD15_TIMESTEPS)]
  return np.sqrt((1.0 - abar) / abar)


def published_grid(sde: sde_lib.SDE, n_steps: int, *, denoise: bool = False, sigma_end: float | None = None,
                   eps: float = 1e-3) -> list[float]:
  """The interior log-SNRs of the published AYS schedule carried over to this SDE's range.

  The SD 1.5 schedule's log sigma profile, u_k = log(sigma_k / sigma_0) / log(sigma_10 / sigma_0),
  is interpolated log-linearly to the solver's steps (the paper's recipe for other step counts)
  and mapped onto [lambda(T), lambda(end)]: lambda = lambda_T + u (lambda_end - lambda_T).
  """
  n_solver, lam_T, lam_end = grid_bounds(sde, n_steps, denoise=denoise, sigma_end=sigma_end, eps=eps)
  log_sigma = np.log(sd15_sigmas())
  profile = (log_sigma - log_sigma[0]) / (log_sigma[-1] - log_sigma[0])
  u = np.interp(np.linspace(0.0, 1.0, n_solver + 1), np.linspace(0.0, 1.0, profile.size), profile)
  return [float(lam_T + v * (lam_end - lam_T)) for v in u[1:-1]]


def klub(key: Array, sde: sde_lib.SDE, score_fn: ScoreFn, x0: Array, lams: Array) -> Array:
  """The Monte Carlo KLUB of the grid with log-SNRs lams [n + 1] (increasing from lambda(T)).

  One (eps_1, eps_2, lambda) draw per data point x0 [B, d] and step; D is Tweedie's x0_hat.
  """
  n, (B, d) = lams.shape[0] - 1, x0.shape
  key_u, key_1, key_2 = jax.random.split(key, 3)
  delta = jax.random.uniform(key_u, (B, n), minval=1e-6) * jnp.diff(lams)[None, :]  # lambda - lambda_i > 0
  lam_s = lams[:-1][None, :] + delta  # [B, n]
  sigma = jnp.exp(-lam_s)
  x_t = x0[:, None, :] + sigma[..., None] * jax.random.normal(key_1, (B, n, d))
  # sqrt(sigma_i^2 - sigma^2) = sigma sqrt(e^(2 delta) - 1), without cancellation
  x_i = x_t + (sigma * jnp.sqrt(jnp.expm1(2.0 * delta)))[..., None] * jax.random.normal(key_2, (B, n, d))

  def denoise(x, lam):  # D(x~, sigma) with x = alpha_t x~
    t = t_of_log_snr(sde, lam.reshape(-1))
    alpha, _ = sde.marginal_coeffs(t)
    return tweedie_denoise(sde, score_fn, alpha[:, None] * x.reshape(-1, d), t).reshape(x.shape)

  diff = denoise(x_t, lam_s) - denoise(x_i, jnp.broadcast_to(lams[:-1][None, :], (B, n)))
  return jnp.mean(jnp.sum(jnp.diff(lams)[None, :] * jnp.sum(diff**2, -1) / sigma**2, -1))


def optimise_grid_ays(key: Array, sde: sde_lib.SDE, score_fn: ScoreFn, sample_fn: Callable[[Array, int], Array],
                      *, n_steps: int = 10, batch_size: int = 4096, n_iters: int = 300,
                      learning_rate: float = 0.05, denoise: bool = False, sigma_end: float | None = None,
                      eps: float = 1e-3) -> dict:
  """The AYS grid: Adam on the KLUB (`klub`) over the interior log-SNRs, from the uniform log-SNR grid.

  Args:
    key: PRNG key (iteration i uses fold_in(key, i)).
    sde: the forward SDE; score_fn: its score; sample_fn(key, n) -> x0 [n, d]: data samples.
    n_steps, denoise, sigma_end, eps: the sampler's budget and end (`grid_opt.grid_bounds`).
    batch_size, n_iters, learning_rate: the optimisation.

  Returns:
    {"timesteps": interior log-SNRs (python floats), "loss": the KLUB estimate per iteration}.

  Raises:
    ValueError: bad batch_size, n_iters or learning_rate, or a bad end (`schedules.end_time`).
  """
  utils.check_int("batch_size", batch_size, 1)
  n_solver, lam_T, lam_end = grid_bounds(sde, n_steps, denoise=denoise, sigma_end=sigma_end, eps=eps)
  score_fn = jax.tree_util.Partial(score_fn)
  ends = jnp.array([lam_T, lam_end], jnp.float32)

  def loss_fn(theta, i):
    key_x, key_k = jax.random.split(jax.random.fold_in(key, i))
    lams = jnp.concatenate([ends[:1], grid_of_logits(theta, ends[0], ends[1]), ends[1:]])
    return klub(key_k, sde, score_fn, sample_fn(key_x, batch_size), lams)

  theta, losses = fit_logits(loss_fn, jnp.zeros((n_solver,)), n_iters=n_iters, learning_rate=learning_rate)
  timesteps = np.asarray(grid_of_logits(theta, lam_T, lam_end), np.float64)
  return {"timesteps": [float(v) for v in timesteps], "loss": losses}
