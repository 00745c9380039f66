"""A residual MLP score network for low-dimensional data."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import flax.linen as nn

from models.layers import GaussianFourierProjection


class MLP(nn.Module):
  """Residual MLP with Gaussian Fourier features of the noise condition c ([B]).

  h_0 = Dense(x); h_{l+1} = h_l + Dense(silu(Dense(silu(h_l)) + Dense(emb))); out = Dense(silu(h_L)).
  The output layer starts at zero, so an untrained network predicts zero noise.
  Input x is [B, ...]; it is flattened and the output reshaped back.

  Class-conditional with `num_classes` = K > 0: a learned label embedding (K + 1 rows; row K
  is the null label, used when y is None, for classifier-free guidance) is concatenated to
  the noise features, so emb = silu(Dense([fourier(c), embed(y)])). K = 0 ignores y.
  """

  hidden: int = 128
  depth: int = 3
  embed_dim: int = 32
  fourier_scale: float = 4.0
  num_classes: int = 0

  def validate(self) -> None:
    """Raises ValueError for out-of-range fields (called by models.get_model)."""
    checks = [("hidden", self.hidden, self.hidden >= 1, "an integer >= 1"),
              ("depth", self.depth, self.depth >= 0, "an integer >= 0"),
              ("embed_dim", self.embed_dim, self.embed_dim >= 2 and self.embed_dim % 2 == 0, "an even integer >= 2"),
              ("fourier_scale", self.fourier_scale, self.fourier_scale > 0, "> 0"),
              ("num_classes", self.num_classes, isinstance(self.num_classes, int) and self.num_classes >= 0,
               "an integer >= 0 (0: unconditional)")]
    for name, value, ok, allowed in checks:
      if not ok:
        raise ValueError(f"model.{name}={value!r} must be {allowed}.")

  @nn.compact
  def __call__(self, x: jax.Array, c: jax.Array, y: jax.Array | None = None,
               train: bool = False) -> jax.Array:
    del train  # no dropout or batch statistics here
    shape = x.shape
    h = x.reshape(shape[0], -1)
    emb = GaussianFourierProjection(self.embed_dim, self.fourier_scale)(c)
    if self.num_classes > 0:
      emb = jnp.concatenate([emb, label_embedding(self.num_classes, self.embed_dim, y, shape[0])], axis=-1)
    emb = nn.silu(nn.Dense(self.hidden)(emb))
    h = nn.Dense(self.hidden)(h)
    for _ in range(self.depth):
      r = nn.Dense(self.hidden)(nn.silu(h)) + nn.Dense(self.hidden)(emb)
      h = h + nn.Dense(self.hidden)(nn.silu(r))
    out = nn.Dense(math.prod(shape[1:]),
                   kernel_init=nn.initializers.zeros)(nn.silu(h))
    return out.reshape(shape)


def label_embedding(num_classes: int, features: int, y: jax.Array | None, batch: int) -> jax.Array:
  """Embedding [B, features] of labels y [B] (None: the null label num_classes) with K + 1 rows.

  Call inside a compact module; labels outside [0, K] are clipped by the lookup.
  """
  labels = jnp.full((batch,), num_classes, jnp.int32) if y is None else jnp.broadcast_to(
      jnp.asarray(y, jnp.int32), (batch,))
  return nn.Embed(num_classes + 1, features, name="label_embed")(labels)
