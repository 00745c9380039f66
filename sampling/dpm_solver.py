"""DPM-Solver++ multistep (Lu et al. 2022b) for the probability-flow ODE of any linear SDE."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp

import sde_lib
from sampling.base import Sampler, start, tweedie_denoise
from sampling.schedules import denoise_to_zero, fast_settings, get_time_schedule
from utils import bcast


def get_dpm_solver_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, order: int = 2,
                           n_steps: int = 20, schedule: str = "uniform_t", eps: float = 1e-3,
                           lower_order_final: bool = True, denoise: bool = False,
                           sigma_end: float | None = None,
                           timesteps: tuple[float, ...] | None = None, denoise_step: str = "tweedie") -> Sampler:
  """DPM-Solver++ multistep (Lu et al. 2022b, "DPM-Solver++", Alg. 2 for 2M; 3M); NFE = n_steps.

  The probability-flow ODE of a linear SDE, solved exactly in its linear part:
      x_t = sigma_t / sigma_s x_s + sigma_t int_{lambda_s}^{lambda_t} e^lambda x0(lambda) dlambda,
  with the data prediction x0 = x0_hat (Tweedie), one NFE per step. With h = lambda_t - lambda_s,
  the last predictions m0 (at s), m1, m2 at lambda_s - h0, lambda_s - h0 - h1, and the weights
  w_k = int_0^h e^(u - h) u^k / k! du  (w0 = 1 - e^-h, w1 = h - w0, w2 = h^2 / 2 - w1):
      order 1 (= DDIM, eta = 0):  x_t = sigma_t / sigma_s x_s + alpha_t w0 m0
      2M (Alg. 2):  m0 -> D = (1 + 1 / (2 r)) m0 - 1 / (2 r) m1,  r = h0 / h
      3M:  + alpha_t (w1 p' + w2 p''), p the quadratic through (m0, m1, m2) in lambda, at lambda_s.
  Step i uses order min(order, i + 1), and with `lower_order_final` at most n_steps - i.
  With `denoise`, n_steps - 1 steps land at eps and the last goes to lambda = +inf (sigma = 0),
  where the first-order step is x_0 = m0 = x0_hat(x_eps, eps) (Tweedie).

  Args:
    sde, shape: the forward SDE and the batch shape [B, ...].
    order: 1, 2 or 3.
    n_steps: solver steps (= NFE).
    schedule: a time grid of `get_time_schedule`.
    eps: end time; sigma_end: the end noise level instead (`end_time`).
    timesteps: with schedule="custom", the interior grid points in log-SNR (`get_time_schedule`).
    lower_order_final: lower the order of the last steps.
    denoise: make the last step the one to sigma = 0.
    denoise_step: that step, "tweedie" (x0_hat) or "half" (`schedules.denoise_to_zero`).

  Returns:
    A deterministic `Sampler`: sampler(key, score_fn, x_T=None) -> (x, nfe); no trajectories.

  Raises:
    ValueError: bad shape, n_steps, schedule, eps, order not in {1, 2, 3}, denoise with n_steps < 2,
      or sigma_end out of range (`end_time`).
  """
  shape, eps, n_solver = fast_settings(sde, shape, n_steps, schedule, eps, denoise, sigma_end,
                                       timesteps, denoise_step)
  if order not in (1, 2, 3) or isinstance(order, bool):
    raise ValueError(f"sampling.order={order!r} must be 1, 2 or 3.")
  orders = jnp.array([min(order, i + 1, n_solver - i if lower_order_final else order)
                      for i in range(n_solver)])
  B = shape[0]

  def run(key, score_fn, x_T, n_trajectory):
    del n_trajectory
    x, _ = start(key, sde, shape, x_T)
    ts = get_time_schedule(sde, n_solver, schedule=schedule, eps=eps, timesteps=timesteps)
    lams = sde.log_snr(ts)

    def step(carry, i):
      x, m1, m2, h0, h1 = carry
      s, t = jnp.full((B,), ts[i]), jnp.full((B,), ts[i + 1])
      (_, sigma_s), (alpha_t, sigma_t) = sde.marginal_coeffs(s), sde.marginal_coeffs(t)
      m0 = tweedie_denoise(sde, score_fn, x, s)
      h = lams[i + 1] - lams[i]
      w0 = -jnp.expm1(-h)
      a = bcast(alpha_t, x)
      x_1 = bcast(sigma_t / sigma_s, x) * x + a * w0 * m0
      x_2 = x_1 + a * w0 * h / (2 * h0) * (m0 - m1)
      f01, f12 = (m0 - m1) / h0, (m1 - m2) / h1  # divided differences in lambda
      f012 = (f01 - f12) / (h0 + h1)
      x_3 = x_1 + a * ((h - w0) * (f01 + h0 * f012) + (0.5 * h**2 - (h - w0)) * 2.0 * f012)
      x_next = jnp.select([orders[i] == 1, orders[i] == 2], [x_1, x_2], x_3)
      return (x_next, m0, m1, h, h0), None

    carry = (x, jnp.zeros_like(x), jnp.zeros_like(x), jnp.ones(()), jnp.ones(()))
    (x, *_), _ = jax.lax.scan(step, carry, jnp.arange(n_solver))
    if denoise:
      x = denoise_to_zero(sde, score_fn, x, jnp.full((B,), eps), denoise_step)
    return x, n_steps, None

  return Sampler("dpm_solver", shape, run, needs_key=False)


def dpm_solver_fixed_order(order: int):
  """The registry entries "dpm_solver_2m" / "dpm_solver_3m": DPM-Solver++ with `order` fixed.

  The factory has `get_dpm_solver_sampler`'s fields, so the registry checks them.
  """

  def factory(sde: sde_lib.SDE, shape: tuple[int, ...], **kwargs) -> Sampler:
    if "order" in kwargs:
      raise ValueError(f"sampling.order={kwargs['order']!r} is fixed to {order} by this method; "
                       "use method='dpm_solver' to choose it.")
    sampler = get_dpm_solver_sampler(sde, shape, order=order, **kwargs)
    sampler.method = f"dpm_solver_{order}m"
    return sampler

  factory.__name__ = factory.__qualname__ = f"dpm_solver_{order}m"
  factory.__signature__ = inspect.signature(get_dpm_solver_sampler)
  return factory
