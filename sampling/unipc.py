"""UniPC (Zhao et al. 2023): the unified predictor-corrector for the probability-flow ODE of any
linear SDE, in the data-prediction form of DPM-Solver++ (x0_hat by Tweedie)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

import sde_lib
import utils
from sampling.base import Sampler, ScoreFn, start, tweedie_denoise
from sampling.schedules import denoise_to_zero, fast_settings, get_time_schedule
from utils import bcast

Array = jax.Array

VARIANTS = ("bh1", "bh2")


def _b_vector(h: Array, order: int, variant: str) -> tuple[Array, Array, Array]:
  """(B(h), h phi_1, b [order]) of UniPC's order conditions in the data-prediction form (hh = -h):

      h phi_1 = e^hh - 1,   b_k = (k + 1)! hh phi_{k+2}(hh) / B(h),  k = 0..order - 1,
      B(h) = hh ("bh1") or e^hh - 1 ("bh2"),
  with hh phi_{k+1}(hh) = phi_k(hh) - 1 / k! evaluated by that recursion (Zhao et al., Eq. 9, 11).
  """
  hh = -h
  h_phi_1 = jnp.expm1(hh)
  B_h = hh if variant == "bh1" else h_phi_1
  h_phi_k, b = h_phi_1 / hh - 1.0, []
  for k in range(order):
    b.append(h_phi_k * math.factorial(k + 1) / B_h)
    h_phi_k = h_phi_k / hh - 1.0 / math.factorial(k + 2)
  return B_h, h_phi_1, jnp.stack(b)


def _solve_padded(R: Array, b: Array, valid_rows: Array, valid_cols: Array, pad: Array) -> Array:
  """The solution of the valid block of R rho = b, zero on the invalid unknowns.

  Invalid row j carries the equation rho_{pad[j]} = 0, pad mapping invalid rows onto invalid
  columns one to one, so one fixed-size solve serves every order.
  """
  n = R.shape[0]
  eye_pad = (jnp.arange(n)[None, :] == pad[:, None]).astype(R.dtype)
  M = jnp.where(valid_rows[:, None], jnp.where(valid_cols[None, :], R, 0.0), eye_pad)
  return jnp.linalg.solve(M, jnp.where(valid_rows, b, 0.0))


def _coefficients(h: Array, r: Array, p: Array, order: int, variant: str):
  """UniP-p's and UniC-p's weights at a step of size h with past points r_k = (lambda_k - lambda_s) / h.

  Returns (B(h), h phi_1, rho_p [order - 1] over D_1..D_{order-1}, rho_c [order] over
  D_1..D_{order-1}, D_t). Order p uses D_1..D_{p-1}: the predictor solves R_{p-1} rho_p =
  b_{p-1}, rho_p = 1/2 for p = 2 (Zhao et al., Alg. 2), the corrector R_p rho_c = b_p with
  the node r = 1 of the new evaluation, rho_c = 1/2 for p = 1.
  """
  B_h, h_phi_1, b = _b_vector(h, order, variant)
  rks = jnp.concatenate([r, jnp.ones((1,), r.dtype)])  # [order]
  R = rks[None, :] ** jnp.arange(order)[:, None]
  idx = jnp.arange(order)
  rho_c = _solve_padded(R, b, idx < p, (idx < p - 1) | (idx == order - 1), idx - 1)
  rho_c = jnp.where(p == 1, jnp.zeros(order).at[-1].set(0.5), rho_c)
  if order == 1:
    return B_h, h_phi_1, jnp.zeros((0,)), rho_c
  idx = jnp.arange(order - 1)
  rho_p = _solve_padded(R[:-1, :-1], b[:-1], idx < p - 1, idx < p - 1, idx)
  rho_p = jnp.where(p == 2, jnp.zeros(order - 1).at[0].set(0.5), rho_p)
  return B_h, h_phi_1, rho_p, rho_c


def unipc_solve(sde: sde_lib.SDE, score_fn: ScoreFn, x: Array, ts: Array, *, order: int = 2,
                variant: str = "bh2", corrector: bool = True, lower_order_final: bool = True) -> Array:
  """UniPC (Zhao et al. 2023, Alg. 2 with data prediction) from ts[0] to ts[-1]; len(ts) - 1 NFE.

  With lambda = log-SNR, h = lambda_t - lambda_s, x0 predictions m_0 (at s) and m_k (at
  lambda_k, k steps back), r_k = (lambda_k - lambda_s) / h and D_k = (m_k - m_0) / r_k:
      UniP-p:  x_t = sigma_t / sigma_s x_s + alpha_t (1 - e^-h) m_0 - alpha_t B(h) sum_k rho_p,k D_k
      UniC-p:  x_t^c = ... (the same first two terms) - alpha_t B(h) (sum_k rho_c,k D_k + rho_c,t D_t),
  D_t = m_t - m_0 with m_t = x0_hat(x_t, t) the model evaluation at the predicted point, which the
  next step reuses as its m_0 (so the corrector costs no extra NFE); the last step is not corrected.
  UniP-p has order p, UniC-p order p + 1. Step i uses p = min(order, i + 1) (and with
  `lower_order_final` at most n - i). ts may be traced (grids are differentiable).

  Args:
    sde: the forward SDE; score_fn: score_fn(x, t).
    x: the state at ts[0] [B, ...].
    ts: the decreasing times [n + 1].
    order, variant, corrector, lower_order_final: as `get_unipc_sampler`.

  Returns:
    x at ts[-1] [B, ...].
  """
  n, B = ts.shape[0] - 1, x.shape[0]
  orders = jnp.array([min(order, i + 1, n - i if lower_order_final else order) for i in range(n)])
  lams = sde.log_snr(ts)
  model = lambda x, t: tweedie_denoise(sde, score_fn, x, jnp.full((B,), t))

  def step(x, Ms, Ls, i, evaluate):
    (_, sigma_s), (alpha_t, sigma_t) = (sde.marginal_coeffs(jnp.full((1,), ts[j])) for j in (i, i + 1))
    h = lams[i + 1] - Ls[0]
    valid = jnp.arange(1, order) < orders[i]
    r = jnp.where(valid, (Ls[1:] - Ls[0]) / h, -1.0)
    D = jnp.where(bcast(valid, Ms[1:]), (Ms[1:] - Ms[0]) / bcast(r, Ms[1:]), 0.0)  # [order - 1, B, ...]
    B_h, h_phi_1, rho_p, rho_c = _coefficients(h, r, orders[i], order, variant)
    a = alpha_t[0]
    x_lin = sigma_t[0] / sigma_s[0] * x - a * h_phi_1 * Ms[0]
    x_t = x_lin - a * B_h * jnp.tensordot(rho_p, D, 1) if order > 1 else x_lin
    if not evaluate:
      return x_t, Ms, Ls
    m_t = model(x_t, ts[i + 1])
    if corrector:
      x_t = x_lin - a * B_h * (jnp.tensordot(rho_c[:-1], D, 1) + rho_c[-1] * (m_t - Ms[0]))
    return x_t, jnp.concatenate([m_t[None], Ms[:-1]]), jnp.concatenate([lams[i + 1][None], Ls[:-1]])

  Ms = jnp.zeros((order,) + x.shape, x.dtype).at[0].set(model(x, ts[0]))
  Ls = jnp.full((order,), lams[0]).at[1:].set(lams[0] - 1.0)  # unused entries stay distinct
  body = lambda carry, i: (step(*carry, i, True), None)
  (x, Ms, Ls), _ = jax.lax.scan(body, (x, Ms, Ls), jnp.arange(n - 1))
  return step(x, Ms, Ls, n - 1, False)[0]


def get_unipc_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, order: int = 2, n_steps: int = 10,
                      schedule: str = "log_snr", eps: float = 1e-3, variant: str = "bh2",
                      corrector: bool = True, lower_order_final: bool = True, denoise: bool = False,
                      sigma_end: float | None = None,
                      timesteps: tuple[float, ...] | None = None, denoise_step: str = "tweedie") -> Sampler:
  """UniPC (Zhao et al. 2023): UniP-p predictor + UniC corrector (`unipc_solve`); NFE = n_steps.

  The probability-flow ODE of any linear SDE through `marginal_coeffs` / `log_snr`, as
  DPM-Solver++. With `denoise`, n_steps - 1 steps land at the end time and the last NFE is the
  step to sigma = 0, x_0 = x0_hat(x_end, end) (Tweedie).

  Args:
    sde, shape: the forward SDE and the batch shape [B, ...].
    order: the predictor order p in {1, 2, 3}; with the corrector the order is p + 1.
    n_steps: NFE.
    schedule: a time grid of `get_time_schedule` ("custom" with `timesteps`).
    eps: end time; sigma_end: the end noise level instead (`end_time`).
    variant: "bh1" (B(h) = h) or "bh2" (B(h) = e^h - 1).
    corrector: apply UniC (False: UniP alone).
    lower_order_final: lower the order of the last steps.
    denoise: make the last step the one to sigma = 0.
    denoise_step: that step, "tweedie" (x0_hat) or "half" (`schedules.denoise_to_zero`).
    timesteps: with schedule="custom", the interior grid points in log-SNR.

  Returns:
    A deterministic `Sampler`: sampler(key, score_fn, x_T=None) -> (x, nfe); no trajectories.

  Raises:
    ValueError: bad shape, n_steps, schedule, eps, order, variant, corrector, lower_order_final,
      denoise (with n_steps < 2), sigma_end or timesteps.
  """
  shape, eps, n_solver = fast_settings(sde, shape, n_steps, schedule, eps, denoise, sigma_end,
                                       timesteps, denoise_step)
  if order not in (1, 2, 3) or isinstance(order, bool):
    raise ValueError(f"sampling.order={order!r} must be 1, 2 or 3.")
  utils.check_choice("sampling.variant", variant, VARIANTS)
  utils.check_bool("sampling.corrector", corrector)
  utils.check_bool("sampling.lower_order_final", lower_order_final)

  def run(key, score_fn, x_T, n_trajectory):
    del n_trajectory
    x, _ = start(key, sde, shape, x_T)
    ts = get_time_schedule(sde, n_solver, schedule=schedule, eps=eps, timesteps=timesteps)
    x = unipc_solve(sde, score_fn, x, ts, order=order, variant=variant, corrector=corrector,
                    lower_order_final=lower_order_final)
    if denoise:
      x = denoise_to_zero(sde, score_fn, x, jnp.full(shape[:1], eps), denoise_step)
    return x, n_steps, None

  return Sampler("unipc", shape, run, needs_key=False)
