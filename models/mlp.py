"""A residual MLP score network for low-dimensional data."""

from __future__ import annotations

import math

import jax
import flax.linen as nn

from models.layers import GaussianFourierProjection


class MLP(nn.Module):
  """Residual MLP with Gaussian Fourier features of the noise condition c ([B]).

  h_0 = Dense(x); h_{l+1} = h_l + Dense(silu(Dense(silu(h_l)) + Dense(emb))); out = Dense(silu(h_L)).
  The output layer starts at zero, so an untrained network predicts zero noise.
  Input x is [B, ...]; it is flattened and the output reshaped back.
  """

  hidden: int = 128
  depth: int = 3
  embed_dim: int = 32
  fourier_scale: float = 4.0

  def validate(self) -> None:
    """Raises ValueError for out-of-range fields (called by models.get_model)."""
    checks = [("hidden", self.hidden, self.hidden >= 1, "an integer >= 1"),
              ("depth", self.depth, self.depth >= 0, "an integer >= 0"),
              ("embed_dim", self.embed_dim, self.embed_dim >= 2 and self.embed_dim % 2 == 0, "an even integer >= 2"),
              ("fourier_scale", self.fourier_scale, self.fourier_scale > 0, "> 0")]
    for name, value, ok, allowed in checks:
      if not ok:
        raise ValueError(f"model.{name}={value!r} must be {allowed}.")

  @nn.compact
  def __call__(self, x: jax.Array, c: jax.Array, train: bool = False) -> jax.Array:
    del train  # no dropout or batch statistics here
    shape = x.shape
    h = x.reshape(shape[0], -1)
    emb = GaussianFourierProjection(self.embed_dim, self.fourier_scale)(c)
    emb = nn.silu(nn.Dense(self.hidden)(emb))
    h = nn.Dense(self.hidden)(h)
    for _ in range(self.depth):
      r = nn.Dense(self.hidden)(nn.silu(h)) + nn.Dense(self.hidden)(emb)
      h = h + nn.Dense(self.hidden)(nn.silu(r))
    out = nn.Dense(math.prod(shape[1:]),
                   kernel_init=nn.initializers.zeros)(nn.silu(h))
    return out.reshape(shape)
