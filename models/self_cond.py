"""Self-conditioning (Chen, Zhang & Hinton 2023, "Analog Bits", Sec. 3): the network also sees its
own previous estimate of x0, concatenated to x_t on the channel (last) axis."""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

import sde_lib
from models.score import get_network_input_fn
from utils import bcast

Array = jax.Array


class SelfConditioned(nn.Module):
  """network([x_t, x0_prev], c)[..., :C]: any registered network run on 2C channels (x0_prev = 0
  when None, "no estimate yet"), its output cut back to x's C channels."""

  network: nn.Module

  @nn.compact
  def __call__(self, x: Array, c: Array, x0_prev: Array | None = None, train: bool = False) -> Array:
    prev = jnp.zeros_like(x) if x0_prev is None else x0_prev
    return self.network(jnp.concatenate([x, prev], -1), c, train=train)[..., :x.shape[-1]]


def get_denoiser(sde: sde_lib.SDE, network: SelfConditioned, *, conditioning: str = "auto",
                 input_scaling: bool = True) -> Callable:
  """x0_fn(params, x, t, x0_prev) -> (x0_hat, eps_hat) for an eps-parameterised self-conditioned
  network: x0_hat = (x_t - sigma_t eps_hat) / alpha_t, eps_hat = network([x_in, x0_prev], c)."""
  net_input = get_network_input_fn(sde, conditioning=conditioning, input_scaling=input_scaling)

  def x0_fn(params, x, t, x0_prev):
    x_in, c = net_input(x, t)
    eps_hat = network.apply({"params": params}, x_in, c, x0_prev=x0_prev)
    alpha, sigma = sde.marginal_coeffs(t)
    return (x - bcast(sigma, x) * eps_hat) / bcast(alpha, x), eps_hat

  return x0_fn
