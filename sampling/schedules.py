"""Time grids for the few-step samplers (DDIM, EDM Heun, DPM-Solver++), in the variables of the
perturbation kernel p_t(x | x0) = N(alpha_t x0, sigma_t^2 I) of any linear SDE: the log-SNR
lambda_t = log(alpha_t / sigma_t) and Karras et al.'s sigma_edm = sigma_t / alpha_t = exp(-lambda_t).

Each grid point is a time t, and the samplers recompute every coefficient from t, so an inexact
inverse t(lambda) moves a grid point slightly but never makes a step inconsistent. The samplers
end at eps or at the noise level sigma_edm = sigma_end (`end_time`); with `denoise` they spend
their last NFE on the step from there to sigma = 0 (`denoise_to_zero`): x = x0_hat (Tweedie), as
EDM's last step (Karras et al. 2022, Alg. 1, sigma_N = 0), or the Euler step in sigma^2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import sde_lib
import utils
from sde_lib import t_of_log_snr  # noqa: F401  (re-exported: sampling.t_of_log_snr)
from sampling.base import ScoreFn, check_common, tweedie_denoise
from utils import bcast

Array = jax.Array

SCHEDULES = ("uniform_t", "log_snr", "edm", "quadratic")
DENOISE_STEPS = ("tweedie", "half")


def sigma_edm(sde: sde_lib.SDE, t: Array) -> Array:
  """Karras et al.'s noise level sigma_t / alpha_t = exp(-lambda_t) (EDM Eq. 4 with s = alpha)."""
  alpha, sigma = sde.marginal_coeffs(t)
  return sigma / alpha


def _check_schedule(sde: sde_lib.SDE, n_steps: int, schedule: str, eps: float) -> None:
  utils.check_choice("sampling.schedule", schedule, SCHEDULES + ("custom",))
  utils.check_int("sampling.n_steps", n_steps, 1)
  utils.check_real("sampling.eps", eps, low=0.0, high=sde.T, low_open=True, high_open=True)


def check_timesteps(sde: sde_lib.SDE, schedule: str, timesteps, n_solver: int, eps: float) -> tuple | None:
  """The interior log-SNRs of a "custom" grid as a tuple of floats (None for the other schedules).

  Raises:
    ValueError: timesteps given without schedule="custom" or missing with it; not n_solver - 1
      numbers strictly increasing inside (lambda(T), lambda(eps)).
  """
  if isinstance(timesteps, jax.core.Tracer):  # a grid being optimised: values unknown until run
    if jnp.shape(timesteps) != (n_solver - 1,):
      raise ValueError(f"sampling.timesteps must be {n_solver - 1} log-SNR values; got shape "
                       f"{jnp.shape(timesteps)}.")
    return timesteps
  if schedule != "custom":
    if timesteps is not None:
      raise ValueError(f"sampling.timesteps={timesteps!r} needs sampling.schedule='custom' "
                       f"(got schedule={schedule!r}).")
    return None
  with jax.ensure_compile_time_eval():
    lam_T, lam_eps = (float(v) for v in sde.log_snr(jnp.array([sde.T, eps], jnp.float32)))
  values = np.asarray(timesteps if timesteps is not None else [], np.float64).reshape(-1)
  ok = (timesteps is not None and values.size == n_solver - 1 and np.all(np.diff(values) > 0)
        and np.all(values > lam_T) and np.all(values < lam_eps))
  if not ok:
    raise ValueError(f"sampling.timesteps={timesteps!r} must be {n_solver - 1} log-SNR values (the "
                     f"interior points of a grid of {n_solver} solver steps), strictly increasing "
                     f"inside (lambda(T), lambda(end)) = ({lam_T:.4g}, {lam_eps:.4g}).")
  return tuple(float(v) for v in values)


def end_time(sde: sde_lib.SDE, *, eps: float = 1e-3, sigma_end: float | None = None) -> float:
  """The fast samplers' end time: eps, or with sigma_end the t where sigma_edm(t) = sigma_end.

  sigma_end is a noise level in data units, the same for every SDE (for VE sigma_edm = sigma_t):
  t = t(lambda = -log sigma_end) by `t_of_log_snr`, evaluated now (also inside a jit trace).

  Raises:
    ValueError: sigma_end outside (0, sigma_edm(T)).
  """
  if sigma_end is None:
    return eps
  with jax.ensure_compile_time_eval():
    sigma_T = float(sigma_edm(sde, jnp.array([sde.T], jnp.float32))[0])
    utils.check_real("sampling.sigma_end", sigma_end, low=0.0, high=sigma_T, low_open=True, high_open=True)
    return float(t_of_log_snr(sde, jnp.array([-np.log(sigma_end)], jnp.float32))[0])


def denoise_to_zero(sde: sde_lib.SDE, score_fn: ScoreFn, x: Array, t: Array, step: str = "tweedie") -> Array:
  """The last step of a fast sampler, from the end time t [B] to sigma = 0 (1 NFE).

  With x~ = x / alpha_t, sigma = sigma_edm(t) and D = x0_hat(x, t) (Tweedie), the probability-flow
  ODE is dx~/dsigma = (x~ - D) / sigma = (x~ - D) / (2 sigma^2) d(sigma^2) / dsigma, and
      "tweedie": x_0 = D,               its Euler step in sigma (exact in lambda for a constant D);
      "half":    x_0 = (x~ + D) / 2,    its Euler step in v = sigma^2.
  For a Gaussian component of standard deviation s the exact map is x~ - c (x~ - D) with
  c = 1/2 + sigma^2 / (8 s^2) + O(sigma^4 / s^4): "half" is second order in sigma / s, while the
  Tweedie step overshoots by as much as stopping at sigma undershoots (shrinking such a component's
  variance by s^2 / (s^2 + sigma^2)).
  """
  x0_hat = tweedie_denoise(sde, score_fn, x, t)
  if step == "tweedie":
    return x0_hat
  return 0.5 * (x / bcast(sde.marginal_coeffs(t)[0], x) + x0_hat)


def fast_settings(sde: sde_lib.SDE, shape, n_steps: int, schedule: str, eps: float, denoise: bool,
                  sigma_end: float | None, timesteps=None, denoise_step: str = "tweedie"
                  ) -> tuple[tuple[int, ...], float, int]:
  """(shape, end time, solver steps from T to the end time) of a few-step sampler.

  With `denoise` the last of the n_steps is the step to sigma = 0 (`denoise_to_zero` with
  denoise_step), so n_steps - 1 solver steps.

  Raises:
    ValueError: bad shape, n_steps, schedule, eps, denoise with n_steps < 2, a bad denoise_step
      or one other than "tweedie" without denoise, sigma_end out of range (`end_time`), or bad custom timesteps (`check_timesteps`).
  """
  eps = end_time(sde, eps=eps, sigma_end=sigma_end)
  shape = check_common(sde, shape, eps)
  _check_schedule(sde, n_steps, schedule, eps)
  utils.check_bool("sampling.denoise", denoise)
  utils.check_choice("sampling.denoise_step", denoise_step, DENOISE_STEPS)
  if denoise_step != "tweedie" and not denoise:
    raise ValueError(f"sampling.denoise_step={denoise_step!r} needs sampling.denoise=True (it is the "
                     "step to sigma = 0).")
  if denoise and n_steps < 2:
    raise ValueError(f"sampling.n_steps={n_steps!r} must be >= 2 with sampling.denoise=True "
                     "(at least one solver step before the step to sigma = 0).")
  check_timesteps(sde, schedule, timesteps, n_steps - int(denoise), eps)
  return shape, eps, n_steps - int(denoise)


def get_time_schedule(sde: sde_lib.SDE, n_steps: int, *, schedule: str = "log_snr",
                      eps: float = 1e-3, rho: float = 7.0, timesteps=None) -> Array:
  """Times ts [n_steps + 1], decreasing from ts[0] = T to ts[-1] = eps (both exact).

  With u_i = i / n_steps:
    "uniform_t": t_i = T + u_i (eps - T);
    "log_snr":   lambda_i = lambda_T + u_i (lambda_eps - lambda_T) (DPM-Solver's uniform-lambda grid);
    "edm":       sigma_i = (sigma_max^(1/rho) + u_i (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho in
                 sigma_edm = sigma_t / alpha_t, between sigma_edm(T) and sigma_edm(eps)
                 (Karras et al. 2022, Eq. 5);
    "quadratic": t_i = eps + (T - eps) (1 - u_i)^2, denser near eps;
    "custom":    lambda_1..lambda_{n_steps - 1} = timesteps (increasing log-SNRs, e.g. an
                 optimised grid; traced values are allowed, so grids can be differentiated).
  lambda and sigma_edm grids are mapped back to t with `t_of_log_snr`.

  Raises:
    ValueError: unknown schedule, n_steps < 1, eps outside (0, T) or rho <= 0.
  """
  _check_schedule(sde, n_steps, schedule, eps)
  utils.check_real("sampling.rho", rho, low=0.0, low_open=True)
  T = sde.T
  u = jnp.linspace(0.0, 1.0, n_steps + 1)
  if schedule == "uniform_t":
    ts = T + u * (eps - T)
  elif schedule == "quadratic":
    ts = eps + (T - eps) * (1.0 - u) ** 2
  else:
    lam_T, lam_eps = sde.log_snr(jnp.array([T, eps], jnp.float32))
    if schedule == "custom":
      if timesteps is None or jnp.shape(timesteps) != (n_steps - 1,):
        raise ValueError(f"sampling.timesteps must be {n_steps - 1} log-SNR values with schedule='custom'.")
      lam = jnp.concatenate([lam_T[None], jnp.asarray(timesteps, jnp.float32), lam_eps[None]])
    elif schedule == "log_snr":
      lam = lam_T + u * (lam_eps - lam_T)
    else:  # sigma^(1/rho) = exp(-lambda / rho)
      root_max, root_min = jnp.exp(-lam_T / rho), jnp.exp(-lam_eps / rho)
      lam = -rho * jnp.log(root_max + u * (root_min - root_max))
    ts = t_of_log_snr(sde, lam)
  return ts.at[0].set(T).at[-1].set(eps)
