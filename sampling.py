"""Samplers for the reverse process. Every sampler is built by `get_sampler` and called as

    samples, nfe = sampler(key, score_fn)

with `score_fn(x, t) -> score`, so a trained network and an exact (oracle) score are
interchangeable. `nfe` counts score evaluations per sample.

Per-sample reproducibility: sample i draws all its randomness from fold_in(key, i), so
it does not depend on the batch size or on how the batch is sharded.

Samplers do not jit themselves: wrap the call in `jax.jit` with the network
parameters as an argument (see `run_lib`), so new parameters do not recompile.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

import sde_lib
from sde_lib import _bcast

Array = jax.Array
ScoreFn = Callable[[Array, Array], Array]


# --- per-sample randomness ------------------------------------------------------

def per_sample_keys(key: Array, n: int) -> Array:
  """Keys [n]: key i is fold_in(key, i), independent of n."""
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))


def _fold(keys: Array, data) -> Array:
  return jax.vmap(lambda k: jax.random.fold_in(k, data))(keys)


def _normal(keys: Array, x: Array) -> Array:
  """Standard normal noise shaped like x [B, ...], row i drawn from keys[i]."""
  return jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype))(keys)


def prior_sample(keys: Array, sde: sde_lib.SDE, shape: tuple[int, ...]) -> Array:
  """x_T [B, ...] from the prior, row i drawn from keys[i]."""
  return jax.vmap(lambda k: sde.prior_sampling(k, (1,) + tuple(shape[1:]))[0])(keys)


def _norm(x: Array) -> Array:
  """Per-example Euclidean norm over non-batch axes; [B]."""
  return jnp.sqrt(jnp.sum(jnp.reshape(x, (x.shape[0], -1)) ** 2, axis=-1))


def tweedie_denoise(sde: sde_lib.SDE, score_fn: ScoreFn, x: Array, t: Array) -> Array:
  """E[x0 | x_t] = (x_t + sigma(t)^2 score(x_t, t)) / alpha(t) (Tweedie's formula); 1 NFE."""
  alpha, sigma = sde.marginal_coeffs(t)
  return (x + _bcast(sigma**2, x) * score_fn(x, t)) / _bcast(alpha, x)


# --- predictors: (keys, rsde, x, t, t_next) -> (x, x_mean); one NFE each --------

def euler_maruyama(keys, rsde, x, t, t_next):
  """Euler-Maruyama step of the reverse SDE from t to t_next < t."""
  dt = t_next - t
  drift, g = rsde.sde(x, t)
  x_mean = x + drift * _bcast(dt, x)
  return x_mean + _bcast(g * jnp.sqrt(-dt), x) * _normal(keys, x), x_mean


def reverse_diffusion(keys, rsde, x, t, t_next):
  """Reverse of the forward discretisation (Song et al. App. E, Eq. 46)."""
  del t_next
  f, G = rsde.discretize(x, t)
  x_mean = x - f
  return x_mean + _bcast(G, x) * _normal(keys, x), x_mean


def ancestral_sampling(keys, rsde, x, t, t_next):
  """Sample the Gaussian posterior q(x_s | x_t, x0) with x0 from Tweedie (s = t_next).

  For any linear SDE, with alpha_{t|s} = alpha_t / alpha_s and
  sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2:
    mean = alpha_{t|s} sigma_s^2 / sigma_t^2 x_t + alpha_s sigma_{t|s}^2 / sigma_t^2 x0_hat,
    var  = sigma_{t|s}^2 sigma_s^2 / sigma_t^2.
  This is DDPM ancestral sampling (Ho et al. Eq. 7, beta_tilde) for VP and SMLD's
  ancestral sampler for VE (Song et al. App. F, Eq. 47).
  """
  sde = rsde.forward
  a_t, s_t = sde.marginal_coeffs(t)
  a_s, s_s = sde.marginal_coeffs(t_next)
  x0_hat = tweedie_denoise(sde, rsde.score_fn, x, t)
  a_ts = a_t / a_s
  s2_ts = s_t**2 - a_ts**2 * s_s**2
  x_mean = _bcast(a_ts * s_s**2 / s_t**2, x) * x + _bcast(a_s * s2_ts / s_t**2, x) * x0_hat
  std = jnp.sqrt(jnp.maximum(s2_ts * s_s**2 / s_t**2, 0.0))
  return x_mean + _bcast(std, x) * _normal(keys, x), x_mean


def no_predictor(keys, rsde, x, t, t_next):
  del keys, rsde, t, t_next
  return x, x


PREDICTORS = {"euler_maruyama": euler_maruyama, "reverse_diffusion": reverse_diffusion,
              "ancestral_sampling": ancestral_sampling, "none": no_predictor}


# --- correctors: (keys, sde, score_fn, x, t, snr) -> (x, x_mean); one NFE each ---

def langevin(keys, sde, score_fn, x, t, snr):
  """One Langevin MCMC step (Song et al. Alg. 4-5) with a per-sample step size

      eps_i = 2 alpha_i (snr sqrt(d) / max(||s_i||, s_floor))^2,  s_floor = sqrt(d / (a(t)^2 + sigma(t)^2)),

  with the score norm taken per example (not over the whole batch), so samples stay
  independent. Alg. 4 uses ||z|| for the noise norm; in high dimension ||z|| ~ sqrt(d)
  and the two agree, but in low dimension a step size that depends on the very z it
  multiplies gives heavy-tailed moves, so we use E||z||^2 = d. s_floor is the score norm
  of unit-variance data diffused to t: in high dimension ||s_i|| concentrates above it and
  it never binds; in low dimension it stops a sample near a mode (s ~ 0) from taking an
  unbounded step.

  Caveat (low dimension): a step size that depends on x biases unadjusted Langevin,
  whose stationary law becomes proportional to p(x) / eps(x) (Fokker-Planck). In high
  dimension eps_i is nearly the same for every sample and the bias vanishes; on 2-D toy
  targets use `ald` (x-independent steps) or snr <= 0.01 (measured in benchmarks/RESULTS.md).
  """
  grad = score_fn(x, t)
  z = _normal(keys, x)
  a, sigma = sde.marginal_coeffs(t)
  d = x[0].size
  s_floor = jnp.sqrt(d / (a**2 + sigma**2))
  ratio = snr * jnp.sqrt(d) / jnp.maximum(_norm(grad), s_floor)
  step = 2.0 * sde.langevin_alpha(t) * ratio**2
  x_mean = x + _bcast(step, x) * grad
  return x_mean + _bcast(jnp.sqrt(2.0 * step), x) * z, x_mean


def annealed_langevin(keys, sde, score_fn, x, t, snr):
  """Annealed Langevin dynamics (Song & Ermon 2019): eps = 2 alpha (snr sigma(t))^2."""
  grad = score_fn(x, t)
  _, sigma = sde.marginal_coeffs(t)
  step = 2.0 * sde.langevin_alpha(t) * (snr * sigma) ** 2
  x_mean = x + _bcast(step, x) * grad
  return x_mean + _bcast(jnp.sqrt(2.0 * step), x) * _normal(keys, x), x_mean


CORRECTORS = {"langevin": langevin, "ald": annealed_langevin, "none": None}


# --- the PC sampler -----------------------------------------------------------------

def _check_common(sde: sde_lib.SDE, shape, eps: float) -> None:
  if len(shape) < 2 or any(int(s) < 1 for s in shape):
    raise ValueError(f"sampling shape={tuple(shape)} must be [B, ...] with positive sizes.")
  if not 0.0 < eps < sde.T:
    raise ValueError(f"sampling.eps={eps!r} must lie in (0, T={sde.T}).")


def get_pc_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, predictor: str = "reverse_diffusion",
                   corrector: str = "langevin", snr: float = 0.16, n_steps: int = 1,
                   probability_flow: bool = False, denoise: bool = True, eps: float = 1e-3,
                   n_trajectory: int = 0) -> Callable:
  """Predictor-corrector sampler (Song et al. Alg. 1) over N = sde.N steps from T to eps.

  Time grid t_k = T + k (eps - T) / N, k = 0..N. At each k: `n_steps` corrector steps at t_k,
  then one predictor step t_k -> t_{k+1}. With `denoise`, a final Tweedie step at eps.
  NFE = N (predictor != "none") + N n_steps (corrector != "none") + denoise.

  Returns:
    sampler(key, score_fn) -> (samples, nfe), or (samples, nfe, trajectory [n_trajectory, B, ...])
    when n_trajectory > 0 (states at evenly spaced steps, the last one the final sample).

  Raises:
    ValueError: unknown predictor/corrector, or out-of-range numbers.
  """
  _check_common(sde, shape, eps)
  if predictor not in PREDICTORS:
    raise ValueError(f"sampling.predictor={predictor!r} is unknown; valid: {sorted(PREDICTORS)}.")
  if corrector not in CORRECTORS:
    raise ValueError(f"sampling.corrector={corrector!r} is unknown; valid: {sorted(CORRECTORS)}.")
  if not snr > 0:
    raise ValueError(f"sampling.snr={snr!r} must be > 0.")
  if int(n_steps) != n_steps or n_steps < 0:
    raise ValueError(f"sampling.n_steps={n_steps!r} must be an integer >= 0.")
  if not 0 <= n_trajectory <= sde.N:
    raise ValueError(f"n_trajectory={n_trajectory!r} must lie in [0, N={sde.N}].")
  predictor_fn, corrector_fn = PREDICTORS[predictor], CORRECTORS[corrector]
  n_corr = int(n_steps) if corrector_fn is not None else 0
  nfe = sde.N * ((predictor != "none") + n_corr) + int(denoise)
  ts = jnp.linspace(sde.T, eps, sde.N + 1)
  stride = -(-sde.N // max(n_trajectory, 1))

  def sampler(key, score_fn):
    B = shape[0]
    keys = per_sample_keys(key, B)
    x = prior_sample(_fold(keys, 0), sde, shape)
    keys = _fold(keys, 1)
    rsde = sde.reverse(score_fn, probability_flow)
    traj0 = jnp.zeros((max(n_trajectory, 1),) + tuple(shape), x.dtype)

    def step(carry, k):
      x, traj = carry
      t = jnp.full((B,), ts[k])
      step_keys = _fold(keys, k)
      for j in range(n_corr):
        x, _ = corrector_fn(_fold(step_keys, j + 1), sde, score_fn, x, t, snr)
      x, _ = predictor_fn(_fold(step_keys, 0), rsde, x, t, jnp.full((B,), ts[k + 1]))
      if n_trajectory:
        traj = jax.lax.dynamic_update_index_in_dim(traj, x, k // stride, 0)
      return (x, traj), None

    (x, traj), _ = jax.lax.scan(step, (x, traj0), jnp.arange(sde.N))
    if denoise:
      x = tweedie_denoise(sde, score_fn, x, jnp.full((B,), eps))
    if n_trajectory:
      return x, nfe, traj.at[-1].set(x)
    return x, nfe

  return sampler


_SAMPLERS: dict[str, Callable] = {"pc": get_pc_sampler}


def register_sampler(name: str, factory: Callable) -> None:
  """Adds a sampler factory `factory(sde, shape, **kwargs) -> sampler` to the registry."""
  _SAMPLERS[name] = factory


def get_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, method: str = "pc", **kwargs) -> Callable:
  """Builds a sampler by method name; kwargs go to its factory (see e.g. `get_pc_sampler`).

  Raises:
    ValueError: unknown method or keyword.
  """
  if method not in _SAMPLERS:
    raise ValueError(f"sampling.method={method!r} is unknown; valid: {sorted(_SAMPLERS)}.")
  factory = _SAMPLERS[method]
  try:
    return factory(sde, tuple(shape), **kwargs)
  except TypeError as e:
    raise ValueError(f"sampling: bad field for method={method!r}: {e}") from None
