"""Diffusion posterior sampling (DPS; Chung et al. 2023, "Diffusion posterior sampling for general
noisy inverse problems", Alg. 1) for y = A x + sigma_y n with any `sampling.operators` operator."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

import sde_lib
import utils
from sampling.base import as_pytree_fn, check_common, start, tweedie_denoise
from sampling.operators import LinearOperator
from utils import bcast, fold, normal

Array = jax.Array


def posterior_step(sde: sde_lib.SDE, x: Array, x0: Array, t: Array, s: Array, z: Array) -> Array:
  """A draw of q(x_s | x_t, x0) for the linear SDE, s < t (DDPM's posterior, Ho et al. 2020, Eq. 7):

      mean = alpha_{t|s} sigma_s^2 / sigma_t^2 x_t + alpha_s sigma_{t|s}^2 / sigma_t^2 x0,
      var = sigma_{t|s}^2 sigma_s^2 / sigma_t^2,  alpha_{t|s} = alpha_t / alpha_s,
      sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2;  z ~ N(0, I) shaped like x.
  """
  a_t, s_t = sde.marginal_coeffs(t)
  a_s, s_s = sde.marginal_coeffs(s)
  a_ts = a_t / a_s
  s2_ts = s_t**2 - a_ts**2 * s_s**2
  mean = bcast(a_ts * s_s**2 / s_t**2, x) * x + bcast(a_s * s2_ts / s_t**2, x) * x0
  return mean + bcast(jnp.sqrt(jnp.maximum(s2_ts * s_s**2 / s_t**2, 0.0)), x) * z


def _dps_step(sde, op, zeta, score_fn, y, x, t, s, z):
  """One DPS step t -> s: the ancestral step with x0_hat(x_t), then
  x_s -= zeta / ||y - A x0_hat|| grad_{x_t} ||y - A x0_hat(x_t)||^2 (per sample)."""

  def residual(x_):
    x0 = tweedie_denoise(sde, score_fn, x_, t)
    sq = jnp.sum(jnp.reshape((y - op.A(x0)) ** 2, (x_.shape[0], -1)), -1)
    return jnp.sum(sq), (x0, sq)

  grad, (x0, sq) = jax.grad(residual, has_aux=True)(x)
  step = zeta / jnp.sqrt(jnp.maximum(sq, 1e-30))
  return posterior_step(sde, x, x0, t, s, z) - bcast(step, x) * grad


def get_dps_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], operator: LinearOperator, *, zeta: float = 1.0,
                    eps: float = 1e-3) -> Callable:
  """DPS (Chung et al. 2023, Alg. 1) on N = sde.N steps of t_k = T + k (eps - T) / N.

  Each step draws the ancestral (DDPM posterior) step x'_s ~ q(x_s | x_t, x0_hat(x_t)) and then
  moves it down the gradient of the residual, with the paper's normalised step size
  zeta_i = zeta' / ||y - A x0_hat(x_t)||:

      x_s = x'_s - zeta_i grad_{x_t} ||y - A x0_hat(x_t)||_2^2.

  The default zeta' = 1.0 is the value Chung et al. 2023 use for most of their linear tasks,
  with the 1,000-step DDPM chain (take sde.N = 1000). The observation noise enters only through
  zeta'. The sample is finished with Tweedie's formula at eps. NFE = N + 1 (each of the N also a
  vector-Jacobian product).

  Args:
    sde: the forward SDE.
    shape: [B, *operator.in_shape].
    operator: any `sampling.operators` operator.
    zeta: zeta', the normalised step size.
    eps: end time.

  Returns:
    sampler(key, score_fn, y) -> (x, nfe); y [B, *operator.out_shape].

  Raises:
    ValueError: a bad shape, operator, zeta < 0 or eps; at call time, y of the wrong shape.
  """
  shape = check_common(sde, shape, eps)
  if not isinstance(operator, LinearOperator):
    raise ValueError(f"operator={operator!r} must be a sampling.operators.LinearOperator.")
  operator.check_x_shape(shape)
  zeta = utils.check_real("zeta", zeta, low=0.0)
  ts = jnp.linspace(sde.T, eps, sde.N + 1)
  B = shape[0]

  @jax.jit
  def run(key, score_fn, y):
    x, keys = start(key, sde, shape, None)
    step_keys = fold(keys, 1)

    def body(x, k):
      t, s = jnp.full((B,), ts[k]), jnp.full((B,), ts[k + 1])
      z = normal(fold(step_keys, k), x)
      return _dps_step(sde, operator, zeta, score_fn, y, x, t, s, z), None

    x, _ = jax.lax.scan(body, x, jnp.arange(sde.N))
    return tweedie_denoise(sde, score_fn, x, jnp.full((B,), eps)), sde.N + 1

  def sampler(key, score_fn, y):
    operator.check_y(y, B)
    return run(key, as_pytree_fn(score_fn), jnp.asarray(y))

  return sampler
