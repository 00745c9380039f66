"""Ancestral sampling with self-conditioning (Chen, Zhang & Hinton 2023, "Analog Bits", Alg. 2):
each step feeds the previous step's x0 estimate back to the network."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

import sde_lib
import utils
from sampling.base import check_common, start
from sampling.dps import posterior_step
from utils import fold, normal

Array = jax.Array


def get_self_cond_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, n_steps: int = 100,
                          self_condition: bool = True, eps: float = 1e-3) -> Callable:
  """Ancestral steps x_s ~ q(x_s | x_t, x0_hat) (`dps.posterior_step`) on n_steps uniform steps from
  T to eps, with x0_hat = x0_fn(x_t, t, x0_prev) and x0_prev the previous step's x0_hat (0 at the
  first step, and at every step when self_condition is False); returns the last x0_hat.
  NFE = n_steps + 1; sample i uses fold_in(key, i) only.

  Args:
    sde, shape: the forward SDE and the batch shape [B, ...].
    n_steps: steps from T to eps.
    self_condition: feed the previous estimate (False: the network always sees 0).
    eps: end time.

  Returns:
    sampler(key, x0_fn) -> (x, nfe), x0_fn(x, t, x0_prev) -> (x0_hat, eps_hat) with the parameters bound.

  Raises:
    ValueError: a bad shape, n_steps < 1 or eps.
  """
  shape = check_common(sde, shape, eps)
  n_steps = utils.check_int("n_steps", n_steps, 1)
  utils.check_bool("self_condition", self_condition)
  ts = jnp.linspace(sde.T, eps, n_steps + 1)
  B = shape[0]

  @jax.jit
  def run(key, x0_fn):
    x, keys = start(key, sde, shape, None)
    step_keys = fold(keys, 1)

    def body(carry, k):
      x, prev = carry
      t, s = jnp.full((B,), ts[k]), jnp.full((B,), ts[k + 1])
      x0, _ = x0_fn(x, t, prev)
      x = posterior_step(sde, x, x0, t, s, normal(fold(step_keys, k), x))
      return (x, x0 if self_condition else prev), None

    (x, prev), _ = jax.lax.scan(body, (x, jnp.zeros_like(x)), jnp.arange(n_steps))
    return x0_fn(x, jnp.full((B,), eps), prev)[0], n_steps + 1

  return lambda key, x0_fn: run(key, jax.tree_util.Partial(x0_fn) if not isinstance(x0_fn, jax.tree_util.Partial)
                                else x0_fn)
