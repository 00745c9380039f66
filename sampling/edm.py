"""The Heun sampler of Karras et al. 2022 ("EDM") for the reverse process of any linear SDE."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import sde_lib
from sampling.base import Sampler, start, tweedie_denoise
from sampling.schedules import fast_settings, get_time_schedule, sigma_edm, t_of_log_snr
from utils import bcast, fold, normal


def _check_churn(S_churn: float, S_tmin: float, S_tmax: float, S_noise: float) -> None:
  for name, value in (("S_churn", S_churn), ("S_noise", S_noise), ("S_tmin", S_tmin)):
    if not value >= 0:
      raise ValueError(f"sampling.{name}={value!r} must be >= 0.")
  if not S_tmax >= S_tmin:
    raise ValueError(f"sampling.S_tmax={S_tmax!r} must be >= sampling.S_tmin={S_tmin!r}.")


def get_edm_heun_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, n_steps: int = 18,
                         schedule: str = "edm", eps: float = 1e-3, S_churn: float = 0.0,
                         S_tmin: float = 0.0, S_tmax: float = float("inf"),
                         S_noise: float = 1.0, denoise: bool = False,
                         sigma_end: float | None = None,
                         timesteps: tuple[float, ...] | None = None) -> Sampler:
  """Karras et al. 2022 Heun sampler: Alg. 1 (S_churn = 0, deterministic) or Alg. 2 (churn).

  In x_edm = x / alpha_t and sigma = sigma_edm(t) = sigma_t / alpha_t the probability-flow ODE
  of every linear SDE is EDM's Eq. 4 with s = 1:  dx_edm / dsigma = (x_edm - D(x_edm; sigma)) / sigma,
  D the Tweedie denoiser at x = alpha_t x_edm, t = t(sigma). Step i, sigma_{i+1} < sigma_i:
      gamma_i = min(S_churn / n_steps, sqrt(2) - 1) if S_tmin <= sigma_i <= S_tmax else 0
      sigma_hat = sigma_i (1 + gamma_i),  x_hat = x_i + sqrt(sigma_hat^2 - sigma_i^2) S_noise z
      d = (x_hat - D(x_hat; sigma_hat)) / sigma_hat,  x_{i+1} = x_hat + (sigma_{i+1} - sigma_hat) d
      d' = (x_{i+1} - D(x_{i+1}; sigma_{i+1})) / sigma_{i+1}
      x_{i+1} = x_hat + (sigma_{i+1} - sigma_hat) (d + d') / 2
  The last step, to sigma_edm(eps), is Euler: NFE = 2 n_steps - 1. With `denoise`, the grid is
  n_steps - 1 steps from T to eps and then sigma = 0, as Alg. 1's grid: that last Euler step is
  the Tweedie denoiser at eps. t_hat = t(sigma_hat) comes from `t_of_log_snr`.

  Args:
    sde, shape: the forward SDE and the batch shape [B, ...].
    n_steps: grid steps (NFE = 2 n_steps - 1).
    schedule: a time grid of `get_time_schedule`.
    eps: end time; sigma_end: the end noise level instead (`end_time`).
    timesteps: with schedule="custom", the interior grid points in log-SNR (`get_time_schedule`).
    S_churn, S_tmin, S_tmax, S_noise: Alg. 2's churn (S_tmin, S_tmax in units of sigma_edm).
    denoise: make the last step the one to sigma = 0.

  Returns:
    A `Sampler`: sampler(key, score_fn, x_T=None) -> (x, nfe); no trajectories.

  Raises:
    ValueError: bad shape, n_steps, schedule, eps, S_churn < 0, S_noise < 0, S_tmin > S_tmax, or
      denoise with n_steps < 2, or sigma_end out of range (`end_time`).
  """
  shape, eps, n_solver = fast_settings(sde, shape, n_steps, schedule, eps, denoise, sigma_end,
                                     timesteps)
  _check_churn(S_churn, S_tmin, S_tmax, S_noise)
  B = shape[0]

  def grid():
    """(ts, sigmas, t_hats, sigma_hats) [n_steps + 1]: the grid and its churned times."""
    ts = get_time_schedule(sde, n_solver, schedule=schedule, eps=eps, timesteps=timesteps)
    if denoise:  # t = 0: sigma_edm = 0 and alpha = 1 for every SDE
      ts = jnp.append(ts, 0.0)
    sigmas = sigma_edm(sde, ts)
    if S_churn <= 0:
      return ts, sigmas, ts, sigmas
    in_range = (sigmas >= S_tmin) & (sigmas <= S_tmax) & (sigmas > 0)
    gamma = jnp.where(in_range, min(S_churn / n_steps, 2**0.5 - 1), 0.0)
    t_hats = jnp.where(gamma > 0, t_of_log_snr(sde, -jnp.log(sigmas * (1 + gamma))), ts)
    return ts, sigmas, t_hats, sigma_edm(sde, t_hats)

  def run(key, score_fn, x_T, n_trajectory):
    del n_trajectory
    x, keys = start(key, sde, shape, x_T)
    keys = None if keys is None else fold(keys, 1)
    ts, sigmas, t_hats, sigma_hats = grid()

    def D(x_edm, t):  # the denoiser in EDM variables: Tweedie at x = alpha_t x_edm
      t = jnp.full((B,), t)
      return tweedie_denoise(sde, score_fn, bcast(sde.marginal_coeffs(t)[0], x_edm) * x_edm, t)

    def euler(x, i):  # churn, then d = dx/dsigma at (x_hat, sigma_hat); 1 NFE
      if S_churn > 0:
        noise = jnp.sqrt(jnp.maximum(sigma_hats[i]**2 - sigmas[i]**2, 0.0)) * S_noise
        x = x + noise * normal(fold(keys, i), x)
      d = (x - D(x, t_hats[i])) / sigma_hats[i]
      return x, d, x + (sigmas[i + 1] - sigma_hats[i]) * d

    def heun(x, i):  # 2 NFE
      x_hat, d, x_next = euler(x, i)
      d_prime = (x_next - D(x_next, ts[i + 1])) / sigmas[i + 1]
      return x_hat + (sigmas[i + 1] - sigma_hats[i]) * 0.5 * (d + d_prime), None

    alpha_T, alpha_eps = sde.marginal_coeffs(ts[jnp.array([0, -1])])[0]
    x_edm, _ = jax.lax.scan(heun, x / alpha_T, jnp.arange(n_steps - 1))
    return alpha_eps * euler(x_edm, n_steps - 1)[2], 2 * n_steps - 1, None

  return Sampler("edm_heun", shape, run, needs_key=S_churn > 0)
