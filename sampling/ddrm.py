"""Denoising diffusion restoration models (DDRM; Kawar et al. 2022) for y = A x + sigma_y n,
in the spectral coordinates of the operator's SVD."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

import sde_lib
import utils
from sampling.base import as_pytree_fn, check_common, tweedie_denoise
from sampling.operators import LinearOperator, require_svd
from utils import bcast, fold, normal, per_sample_keys

Array = jax.Array


def _ddrm_update(u, u0, y_bar, obs, sy, sig_t, sig_s, eta, eta_b, z):
  """One DDRM step (Kawar et al. 2022), noise levels of the variance-exploding form x = x0 + sigma z;
  per spectral coordinate i, with sigma_y / s_i = sy:

    s_i = 0:               u0 + sqrt(1 - eta^2) sig_s (u - u0) / sig_t + eta sig_s z
    sig_s < sy:            u0 + sqrt(1 - eta^2) sig_s (y_bar - u0) / sy + eta sig_s z
    sig_s >= sy:           (1 - eta_b) u0 + eta_b y_bar + sqrt(sig_s^2 - sy^2 eta_b^2) z
  """
  sig_t, sig_s = bcast(sig_t, u), bcast(sig_s, u)
  c = jnp.sqrt(1.0 - eta**2)
  null = u0 + c * sig_s * (u - u0) / sig_t + eta * sig_s * z
  below = u0 + c * sig_s * (y_bar - u0) / jnp.where(sy > 0, sy, 1.0) + eta * sig_s * z
  above = (1.0 - eta_b) * u0 + eta_b * y_bar + jnp.sqrt(jnp.maximum(sig_s**2 - (sy * eta_b) ** 2, 0.0)) * z
  return jnp.where(obs, jnp.where(sig_s < sy, below, above), null)


def _check(sde, shape, operator, sigma_y, n_steps, eta, eta_b, eps):
  shape = check_common(sde, shape, eps)
  require_svd(operator, "DDRM")
  operator.check_x_shape(shape)
  utils.check_real("sigma_y", sigma_y, low=0.0)
  utils.check_int("n_steps", n_steps, 1)
  utils.check_real("eta", eta, low=0.0, high=1.0)
  utils.check_real("eta_b", eta_b, low=0.0, high=1.0)
  return shape


def get_ddrm_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], operator: LinearOperator, *,
                     sigma_y: float = 0.0, n_steps: int = 20, eta: float = 0.85, eta_b: float = 1.0,
                     eps: float = 1e-3) -> Callable:
  """DDRM (Kawar et al. 2022) with the published settings as defaults (20 steps, eta = 0.85, eta_b = 1).

  In the variance-exploding variable x~ = x / alpha_t = x0 + (sigma_t / alpha_t) z and the
  spectral coordinates u = V^T x~, the observation is y_bar = s^+ U^T y = u0 + (sigma_y / s_i) n
  on the positions with s_i > 0. The chain starts from u_i ~ N(y_bar_i, sig_T^2 - sigma_y^2 / s_i^2)
  there (N(0, sig_T^2) on the null space) and steps through t_k = T + k (eps - T) / (n_steps - 1),
  k < n_steps, with `_ddrm_update`, x0_hat from Tweedie's formula at t_k; the last
  step goes to noise level 0. Valid when sig_T = sigma_T / alpha_T exceeds every sigma_y / s_i.
  NFE = n_steps.

  Args:
    sde: the forward SDE.
    shape: [B, *operator.in_shape].
    operator: an operator with an SVD.
    sigma_y: the observation noise standard deviation.
    n_steps: score evaluations.
    eta, eta_b: DDRM's noise parameters, in [0, 1].
    eps: the last evaluation time.

  Returns:
    sampler(key, score_fn, y) -> (x, nfe); y [B, *operator.out_shape].

  Raises:
    ValueError: bad settings or operator; at call time, y of the wrong shape.
  """
  shape = _check(sde, shape, operator, sigma_y, n_steps, eta, eta_b, eps)
  B, op = shape[0], operator
  ts = jnp.linspace(sde.T, eps, n_steps) if n_steps > 1 else jnp.full((1,), sde.T)
  alphas, sigmas = sde.marginal_coeffs(ts)
  sig = jnp.concatenate([sigmas / alphas, jnp.zeros(1)])  # VE noise levels, then 0

  @jax.jit
  def run(key, score_fn, y):
    keys = per_sample_keys(key, B)
    obs = jnp.broadcast_to(op.s > 0, shape)
    y_bar = jnp.where(obs, op.spectral_data(y), 0.0)
    sy = jnp.broadcast_to(sigma_y * op.s_pinv, shape)
    z = normal(fold(keys, 0), y_bar)
    u = jnp.where(obs, y_bar + jnp.sqrt(jnp.maximum(sig[0] ** 2 - sy**2, 0.0)) * z, sig[0] * z)

    def body(u, k):
      t = jnp.full((B,), ts[k])
      alpha = bcast(jnp.full((B,), alphas[k]), u)
      x0 = tweedie_denoise(sde, score_fn, alpha * op.V(u), t)
      z = normal(fold(keys, k + 1), u)
      u = _ddrm_update(u, op.Vt(x0), y_bar, obs, sy, jnp.full((B,), sig[k]), jnp.full((B,), sig[k + 1]),
                       eta, eta_b, z)
      return u, None

    u, _ = jax.lax.scan(body, u, jnp.arange(n_steps))
    return op.V(u), n_steps

  def sampler(key, score_fn, y):
    op.check_y(y, B)
    return run(key, as_pytree_fn(score_fn), jnp.asarray(y))

  return sampler
