"""Optimised time grids: the interior log-SNRs of a few-step sampler fitted by minimising the exact
KL of its samples (`metrics.kl_terms`) on a target with a known density, with optax.

The grid is monotone by construction: with increments softmax(theta) of the log-SNR range,

    lambda_k = lambda_T + (lambda_end - lambda_T) sum_{j < k} softmax(theta)_j,   k = 1..n - 1,

theta = 0 being the uniform log-SNR grid. The result is a list of numbers for a config
(`schedule="custom", timesteps=[...]`, see `schedules.get_time_schedule`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import metrics
import sde_lib
import utils
from sampling.base import ScoreFn
from sampling.schedules import end_time

Array = jax.Array


def grid_of_logits(theta: Array, lam_T: Array, lam_end: Array) -> Array:
  """The interior log-SNRs [n - 1] of the n-step grid with increment logits theta [n]."""
  return lam_T + (lam_end - lam_T) * jnp.cumsum(jax.nn.softmax(theta))[:-1]


def optimise_grid(key: Array, sde: sde_lib.SDE, score_fn: ScoreFn, log_prob: Callable[[Array], Array],
                  dim: int, *, method: str = "unipc", n_steps: int = 10, batch_size: int = 1024,
                  n_iters: int = 300, learning_rate: float = 0.05, **sampler_kwargs) -> dict:
  """Minimises the exact KL(q || p) of `method` with n_steps over its custom log-SNR grid.

  Each iteration draws batch_size fresh prior latents from fold_in(key, iteration) and takes an
  Adam step on the Monte Carlo KL (`metrics.kl_terms`, gradients through the whole sampler and
  through `t_of_log_snr`).

  Args:
    key: PRNG key of the latents.
    sde: the forward SDE; score_fn: its (exact) score; log_prob: log p(x [B, dim]) -> [B].
    dim: the data dimension.
    method: a fast sampler taking schedule="custom" (ddim, edm_heun, dpm_solver*, unipc).
    n_steps: its NFE budget; sampler_kwargs: its other fields (e.g. order, denoise, sigma_end).
    batch_size, n_iters, learning_rate: the optimisation.

  Returns:
    {"timesteps": the interior log-SNRs (python floats), "loss": the KL estimate per iteration}.

  Raises:
    ValueError: bad n_iters, batch_size or learning_rate, or a bad sampler field.
  """
  import sampling  # the registry (sampling/__init__ imports this module's package)

  utils.check_int("n_iters", n_iters, 1)
  utils.check_int("batch_size", batch_size, 2)
  utils.check_real("learning_rate", learning_rate, low=0.0, low_open=True)
  shape = (batch_size, dim)
  n_solver = n_steps - int(bool(sampler_kwargs.get("denoise", False)))
  sampling.get_sampler(sde, shape, method=method, n_steps=n_steps, **sampler_kwargs)  # checks the fields
  t_end = end_time(sde, eps=sampler_kwargs.get("eps", 1e-3), sigma_end=sampler_kwargs.get("sigma_end"))
  lam_T, lam_end = sde.log_snr(jnp.array([sde.T, t_end], jnp.float32))
  score_fn = jax.tree_util.Partial(score_fn)

  def loss_fn(theta, z):
    sampler = sampling.get_sampler(sde, shape, method=method, n_steps=n_steps, schedule="custom",
                                   timesteps=grid_of_logits(theta, lam_T, lam_end), **sampler_kwargs)
    run = lambda x_T: sampler.run(None, score_fn, x_T, 0)[0]
    return jnp.mean(metrics.kl_terms(run, log_prob, sde.prior_logp, z))

  opt = optax.adam(learning_rate)

  @jax.jit
  def update(theta, opt_state, i):
    z = sde.prior_sampling(jax.random.fold_in(key, i), shape)
    loss, grad = jax.value_and_grad(loss_fn)(theta, z)
    updates, opt_state = opt.update(grad, opt_state)
    return optax.apply_updates(theta, updates), opt_state, loss

  theta = jnp.zeros((n_solver,))
  opt_state, losses = opt.init(theta), []
  for i in range(n_iters):
    theta, opt_state, loss = update(theta, opt_state, i)
    losses.append(float(loss))
  timesteps = np.asarray(grid_of_logits(theta, lam_T, lam_end), np.float64)
  return {"timesteps": [float(v) for v in timesteps], "loss": losses}
