"""Building blocks shared by score networks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn


class GaussianFourierProjection(nn.Module):
  """Random Fourier features [sin(2 pi W c), cos(2 pi W c)] of a scalar c (Tancik et al. 2020).

  W ~ N(0, scale^2) is drawn at init and never trained (its gradient is stopped).
  """

  embed_dim: int
  scale: float = 16.0

  @nn.compact
  def __call__(self, c: jax.Array) -> jax.Array:
    W = self.param("W", nn.initializers.normal(stddev=self.scale), (self.embed_dim // 2,))
    proj = c[:, None] * jax.lax.stop_gradient(W)[None, :] * 2 * jnp.pi
    return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)
