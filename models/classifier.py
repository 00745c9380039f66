"""A noise-conditional classifier p(c | x_t, t) for classifier guidance (Dhariwal & Nichol 2021)."""

from __future__ import annotations

import jax
import flax.linen as nn

from models.layers import GaussianFourierProjection


class NoiseConditionalClassifier(nn.Module):
  """Residual MLP over flattened x [B, ...] with Fourier features of the noise condition c [B].

  h_0 = Dense(x); h_{l+1} = h_l + Dense(silu(Dense(silu(h_l)) + Dense(emb))); logits = Dense(silu(h_L)),
  [B, num_classes]. The same trunk as the MLP score network; the last layer starts at zero,
  so an untrained classifier predicts the uniform distribution.
  """

  num_classes: int = 2
  hidden: int = 128
  depth: int = 2
  embed_dim: int = 32
  fourier_scale: float = 1.0

  def validate(self) -> None:
    """Raises ValueError for out-of-range fields (called by models.get_classifier)."""
    checks = [("num_classes", self.num_classes, isinstance(self.num_classes, int) and self.num_classes >= 2,
               "an integer >= 2"),
              ("hidden", self.hidden, self.hidden >= 1, "an integer >= 1"),
              ("depth", self.depth, self.depth >= 0, "an integer >= 0"),
              ("embed_dim", self.embed_dim, self.embed_dim >= 2 and self.embed_dim % 2 == 0, "an even integer >= 2"),
              ("fourier_scale", self.fourier_scale, self.fourier_scale > 0, "> 0")]
    for name, value, ok, allowed in checks:
      if not ok:
        raise ValueError(f"classifier.{name}={value!r} must be {allowed}.")

  @nn.compact
  def __call__(self, x: jax.Array, c: jax.Array, train: bool = False) -> jax.Array:
    del train
    h = x.reshape(x.shape[0], -1)
    emb = nn.silu(nn.Dense(self.hidden)(GaussianFourierProjection(self.embed_dim, self.fourier_scale)(c)))
    h = nn.Dense(self.hidden)(h)
    for _ in range(self.depth):
      r = nn.Dense(self.hidden)(nn.silu(h)) + nn.Dense(self.hidden)(emb)
      h = h + nn.Dense(self.hidden)(nn.silu(r))
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros)(nn.silu(h))
