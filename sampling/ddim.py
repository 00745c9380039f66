"""DDIM (Song, Meng & Ermon 2021) for the reverse process of any linear SDE."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import sde_lib
import utils
from sampling.base import ScoreFn, Sampler, start
from sampling.schedules import denoise_to_zero, fast_settings, get_time_schedule
from utils import bcast, fold, normal

Array = jax.Array


def _data_and_noise(sde: sde_lib.SDE, score_fn: ScoreFn, x: Array, t: Array) -> tuple[Array, Array]:
  """Tweedie: eps_hat = -sigma_t s(x, t) and x0_hat = (x - sigma_t eps_hat) / alpha_t; 1 NFE."""
  alpha, sigma = sde.marginal_coeffs(t)
  eps_hat = -bcast(sigma, x) * score_fn(x, t)
  return (x - bcast(sigma, x) * eps_hat) / bcast(alpha, x), eps_hat


def get_ddim_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, n_steps: int = 50,
                     schedule: str = "uniform_t", eps: float = 1e-3, eta: float = 0.0,
                     denoise: bool = False, sigma_end: float | None = None,
                     timesteps: tuple[float, ...] | None = None, denoise_step: str = "tweedie") -> Sampler:
  """DDIM (Song, Meng & Ermon 2021, Eq. 12) for any linear SDE; NFE = n_steps.

  A step from t to s < t, with (x0_hat, eps_hat) from Tweedie at (x_t, t):
      x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z,
      c^2 = eta^2 sigma_{t|s}^2 sigma_s^2 / sigma_t^2 = eta^2 sigma_s^2 (1 - exp(2 (lambda_t - lambda_s))),
  c^2 / eta^2 being the variance of the Gaussian posterior q(x_s | x_t, x0) (as in
  `ancestral_sampling`; for VP it is DDIM's sigma_tau(eta)^2). eta = 0 is deterministic, the
  first-order exponential integrator of the probability-flow ODE in lambda (= DPM-Solver-1);
  eta = 1 is ancestral sampling. The last step lands at eps; with `denoise`, n_steps - 1 steps
  land at eps and the last one goes to sigma = 0, x_0 = x0_hat(x_eps, eps) (Tweedie).

  Args:
    sde, shape: the forward SDE and the batch shape [B, ...].
    n_steps: solver steps (= NFE).
    schedule: a time grid of `get_time_schedule`.
    eps: end time; sigma_end: the end noise level instead (`end_time`).
    timesteps: with schedule="custom", the interior grid points in log-SNR (`get_time_schedule`).
    eta: the noise scale in [0, 1]; step i draws from fold_in(fold_in(fold_in(key, i), 1), step).
    denoise: make the last step the one to sigma = 0.
    denoise_step: that step, "tweedie" (x0_hat) or "half" (`schedules.denoise_to_zero`).

  Returns:
    A `Sampler`: sampler(key, score_fn, x_T=None) -> (x, nfe); no trajectories.

  Raises:
    ValueError: bad shape, n_steps, schedule, eps, eta outside [0, 1], denoise with n_steps < 2,
      or sigma_end out of range (`end_time`).
  """
  shape, eps, n_solver = fast_settings(sde, shape, n_steps, schedule, eps, denoise, sigma_end,
                                       timesteps, denoise_step)
  utils.check_real("sampling.eta", eta, low=0.0, high=1.0)

  def run(key, score_fn, x_T, n_trajectory):
    del n_trajectory
    x, keys = start(key, sde, shape, x_T)
    keys = None if keys is None else fold(keys, 1)
    ts = get_time_schedule(sde, n_solver, schedule=schedule, eps=eps, timesteps=timesteps)

    def step(x, i):
      t, s = jnp.full(shape[:1], ts[i]), jnp.full(shape[:1], ts[i + 1])
      alpha_s, sigma_s = sde.marginal_coeffs(s)
      x0_hat, eps_hat = _data_and_noise(sde, score_fn, x, t)
      r = -jnp.expm1(2.0 * (sde.log_snr(t) - sde.log_snr(s)))  # sigma_{t|s}^2 / sigma_t^2, in [0, 1]
      x = bcast(alpha_s, x) * x0_hat + bcast(sigma_s * jnp.sqrt(1.0 - eta**2 * r), x) * eps_hat
      if eta > 0:
        x = x + bcast(eta * sigma_s * jnp.sqrt(r), x) * normal(fold(keys, i), x)
      return x, None

    x, _ = jax.lax.scan(step, x, jnp.arange(n_solver))
    if denoise:
      x = denoise_to_zero(sde, score_fn, x, jnp.full(shape[:1], eps), denoise_step)
    return x, n_steps, None

  return Sampler("ddim", shape, run, needs_key=eta > 0)
