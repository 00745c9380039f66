"""The self-conditioning training objective (Chen, Zhang & Hinton 2023, "Analog Bits", Alg. 1)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

import sde_lib
import utils
from utils import bcast

Array = jax.Array


def get_self_cond_loss_fn(sde: sde_lib.SDE, x0_fn: Callable, *, p_self_cond: float = 0.5, eps: float = 1e-5,
                          reduce_mean: bool = False) -> Callable:
  """Denoising loss E ||eps_hat(x_t, t, x0_prev) - z||^2 (the sigma^2-weighted DSM of
  `losses.get_sde_loss_fn` in the eps form) where, for each example with probability p_self_cond,
  x0_prev = stop_gradient(x0_hat(x_t, t, 0)) is a first estimate by the same network, else 0.

  Args:
    sde: the forward SDE.
    x0_fn: x0_fn(params, x, t, x0_prev) -> (x0_hat, eps_hat) (`models.self_cond.get_denoiser`).
    p_self_cond: the probability of feeding the first estimate, in [0, 1] (0: plain training).
    eps: smallest time sampled, in (0, T).
    reduce_mean: average over data dimensions instead of summing.

  Returns:
    loss_fn(key, params, batch) -> scalar, the mean over the batch.

  Raises:
    ValueError: p_self_cond outside [0, 1] or eps outside (0, T).
  """
  p = utils.check_real("loss.p_self_cond", p_self_cond, low=0.0, high=1.0)
  utils.check_real("loss.eps", eps, low=0.0, high=sde.T, low_open=True, high_open=True)
  reduce = jnp.mean if reduce_mean else jnp.sum

  def loss_fn(key, params, batch):
    key_t, key_z, key_sc = jax.random.split(key, 3)
    B = batch.shape[0]
    t = jax.random.uniform(key_t, (B,), minval=eps, maxval=sde.T)
    z = jax.random.normal(key_z, batch.shape, batch.dtype)
    mean, std = sde.marginal_prob(batch, t)
    x = mean + bcast(std, batch) * z
    zeros = jnp.zeros_like(x)
    first, _ = x0_fn(params, x, t, zeros)
    use = jax.random.bernoulli(key_sc, p, (B,))
    prev = jnp.where(bcast(use, x), jax.lax.stop_gradient(first), zeros)
    _, eps_hat = x0_fn(params, x, t, prev)
    return jnp.mean(reduce(jnp.reshape((eps_hat - z) ** 2, (B, -1)), axis=-1))

  return loss_fn
