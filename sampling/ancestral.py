"""Ancestral sampling of the discrete DDPM chain (Ho et al. 2020, Algorithm 2), driven by a noise
prediction eps(x, t_index) or, for a VP-type SDE, by a score function."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import sde_lib
import utils
from sampling.base import Sampler, empty_trajectory, finish_trajectory, record, trajectory_stride
from utils import bcast, fold, normal, per_sample_keys


def get_ancestral_sampler(schedule: sde_lib.DiscreteSchedule, shape: tuple[int, ...], *,
                          variance: str = "beta_tilde") -> Sampler:
  """Ancestral sampling of the discrete chain (Ho et al. 2020, Algorithm 2); NFE = T.

      x_T ~ N(0, I);
      for t = T..1:  x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps(x_t, t)) / sqrt(alpha_t) + sigma_t z,

  z ~ N(0, I) for t > 1 and z = 0 at t = 1, with sigma_t^2 = beta_t ("beta") or beta_tilde_t
  ("beta_tilde"), the upper and lower bounds on the reverse variance (Ho et al. Sec. 3.2). Row i
  draws x_T from fold_in(fold_in(key, i), 0) and the noise of step t from
  fold_in(fold_in(fold_in(key, i), 1), t): independent of the batch size. One `lax.scan`.

  Args:
    schedule: the chain.
    shape: [B, ...] of the batch.
    variance: "beta" or "beta_tilde".

  Returns:
    A `Sampler` whose score function is eps_fn(x [B, ...], t_index [B] int32) -> eps:
    sampler(key, eps_fn, x_T=None) -> (x, nfe = T); sampler.trajectory(key, eps_fn,
    n_trajectory, x_T=None) -> (x, nfe, traj), the states after every
    ceil(T / n_trajectory)-th step (n_trajectory in [1, T]).

  Raises:
    ValueError: bad shape or variance.
  """
  shape = utils.check_batch_shape(shape)
  T, B = schedule.T, shape[0]
  sigma = np.sqrt(sde_lib.reverse_variance(schedule, variance, "sampling"))
  sigma[1] = 0.0  # Algorithm 2: no noise in the last step

  def run(key, eps_fn, x_T, n_trajectory):
    keys = per_sample_keys(key, B)
    x = normal(fold(keys, 0), jnp.zeros(shape, jnp.float32)) if x_T is None else x_T
    keys = fold(keys, 1)
    sigmas = jnp.asarray(sigma, jnp.float32)
    c_eps = jnp.asarray(schedule.coef_eps, jnp.float32)               # beta_t / sqrt(1 - alpha_bar_t)
    inv_sqrt_alpha = jnp.asarray(1.0 / np.sqrt(schedule.alpha), jnp.float32)
    stride = trajectory_stride(T, n_trajectory)

    def step(carry, k):
      x, traj = carry
      t = T - k
      eps = eps_fn(x, jnp.full((B,), t, jnp.int32))
      x = inv_sqrt_alpha[t] * (x - c_eps[t] * eps) + sigmas[t] * normal(fold(keys, t), x)
      return (x, record(traj, x, k, stride)), None

    (x, traj), _ = jax.lax.scan(step, (x, empty_trajectory(n_trajectory, x)), jnp.arange(T))
    return x, T, finish_trajectory(traj, x)

  return Sampler("ddpm_ancestral", shape, run, max_trajectory=T)


def get_vp_ancestral_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *,
                             variance: str = "beta_tilde") -> Sampler:
  """The "ddpm_ancestral" method of `sampling.get_sampler`: Algorithm 2 driven by a score_fn(x, t).

  The chain is `sde_lib.schedule_of(sde)` (T = sde.N); step i runs at t_i = i / T with
  eps(x, i) = -sigma(t_i) score(x, t_i), sigma from `sde.marginal_coeffs`. For `DiscreteVPSDE`
  sigma(t_i) = sqrt(1 - alpha_bar_i) exactly, so the oracle `target.score_fn(sde)` gives the
  exact eps of the chain; for `sde_lib.VPSDE` the continuous marginals differ from the chain's
  by O(1 / T).

  Args:
    sde: a VP-type SDE (`DiscreteVPSDE` or `VPSDE`).
    shape: [B, ...] of the batch.
    variance: "beta" or "beta_tilde".

  Returns:
    A `Sampler` as `get_ancestral_sampler`'s, taking score_fn(x, t) (nfe = T).

  Raises:
    ValueError: a non-VP SDE, bad shape or variance.
  """
  schedule = sde_lib.schedule_of(sde)
  inner = get_ancestral_sampler(schedule, shape, variance=variance)
  T = float(schedule.T)

  def run(key, score_fn, x_T, n_trajectory):
    def eps_fn(x, t_index):
      t = t_index.astype(jnp.float32) / T
      return -bcast(sde.marginal_coeffs(t)[1], x) * score_fn(x, t)

    return inner.run(key, eps_fn, x_T, n_trajectory)

  return Sampler("ddpm_ancestral", inner.shape, run, max_trajectory=schedule.T)
