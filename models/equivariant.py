"""Equivariant score networks for point sets of n particles in d dimensions.

- `DeepSets`: permutation-equivariant residual layers h_i <- h_i + f(h_i, mean_j h_j, emb)
  (Zaheer et al. 2017, the equivariant form of their Eq. 4).
- `EGNN`: E(n)-equivariant graph layers (Satorras, Hoogeboom & Welling 2021, Eqs. 3-6) on the
  fully connected graph; its output x_L - x_0 is projected to zero centre of mass, so the network
  is equivariant under rotations, reflections and permutations, and invariant under translations.

Inputs are flattened point sets [B, n d] (or [B, n, d]), or with `com_free` the orthonormal
zero-CoM coordinates [B, (n - 1) d] of `datasets.symmetric.com_basis` (lifted to points before the
layers and mapped back after, which also projects the output to zero CoM). Both networks take the
noise condition c [B] through Gaussian Fourier features, as `MLP` does.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from datasets.symmetric import com_basis
from models.layers import GaussianFourierProjection
from models.symmetry import SymmetricMLP

Array = jax.Array


class _PointSetNet(nn.Module):
  """Fields and the point-set <-> flat maps shared by DeepSets and EGNN."""

  hidden: int = 64
  depth: int = 3
  embed_dim: int = 32
  fourier_scale: float = 1.0
  n_particles: int = 4
  particle_dim: int = 2
  com_free: bool = False

  def validate(self) -> None:
    """Raises ValueError for out-of-range fields (called by models.get_model)."""
    checks = [("hidden", self.hidden, 1), ("depth", self.depth, 0), ("n_particles", self.n_particles, 2),
              ("particle_dim", self.particle_dim, 1)]
    for name, value, low in checks:
      if not (isinstance(value, int) and value >= low):
        raise ValueError(f"model.{name}={value!r} must be an integer >= {low}.")
    if not (isinstance(self.embed_dim, int) and self.embed_dim >= 2 and self.embed_dim % 2 == 0):
      raise ValueError(f"model.embed_dim={self.embed_dim!r} must be an even integer >= 2.")
    if not self.fourier_scale > 0:
      raise ValueError(f"model.fourier_scale={self.fourier_scale!r} must be > 0.")
    if not isinstance(self.com_free, bool):
      raise ValueError(f"model.com_free={self.com_free!r} must be True or False.")

  @property
  def input_dim(self) -> int:
    return (self.n_particles - (1 if self.com_free else 0)) * self.particle_dim

  def validate_input(self, shape: Sequence[int]) -> None:
    """Raises ValueError unless one example of `shape` holds the configured point set."""
    if math.prod(shape) != self.input_dim:
      kind = "zero-CoM coordinates" if self.com_free else "coordinates"
      raise ValueError(f"model.n_particles={self.n_particles}, particle_dim={self.particle_dim} "
                       f"(com_free={self.com_free}) need {self.input_dim} {kind} per example; the data "
                       f"has example shape {tuple(shape)}.")

  def to_points(self, x: Array) -> Array:
    """x [B, ...] -> points [B, n, d] (zero CoM when com_free)."""
    u = x.reshape(x.shape[0], -1, self.particle_dim)
    if self.com_free:
      return jnp.einsum("ai,bad->bid", jnp.asarray(com_basis(self.n_particles), x.dtype), u)
    return u

  def from_points(self, points: Array, shape) -> Array:
    """points [B, n, d] -> shaped like x (the zero-CoM coordinates H X when com_free)."""
    if self.com_free:
      points = jnp.einsum("ai,bid->bad", jnp.asarray(com_basis(self.n_particles), points.dtype), points)
    return points.reshape(shape)

  def embedding(self, c: Array) -> Array:
    """silu(Dense(fourier(c))) [B, hidden]."""
    return nn.silu(nn.Dense(self.hidden)(GaussianFourierProjection(self.embed_dim, self.fourier_scale)(c)))


class DeepSets(_PointSetNet):
  """Permutation-equivariant residual network: h_i = Dense(x_i);
  h_i <- h_i + Dense(silu(Dense(silu h_i) + Dense(silu mean_j h_j) + Dense(emb))); out_i = Dense(silu h_i).

  The output layer starts at zero, as in `MLP`.
  """

  @nn.compact
  def __call__(self, x: Array, c: Array, y: Array | None = None, train: bool = False) -> Array:
    del y, train
    points = self.to_points(x)
    emb = self.embedding(c)[:, None, :]
    h = nn.Dense(self.hidden)(points)
    for _ in range(self.depth):
      pooled = jnp.mean(h, axis=1, keepdims=True)
      r = nn.Dense(self.hidden)(nn.silu(h)) + nn.Dense(self.hidden)(nn.silu(pooled)) + nn.Dense(self.hidden)(emb)
      h = h + nn.Dense(self.hidden)(nn.silu(r))
    out = nn.Dense(self.particle_dim, kernel_init=nn.initializers.zeros)(nn.silu(h))
    return self.from_points(out, x.shape)


class EGNNLayer(nn.Module):
  """One E(n)-equivariant layer (Satorras et al. 2021, Eqs. 3-6), fully connected, time-conditioned:

      m_ij = phi_e(h_i, h_j, |x_i - x_j|^2, emb),
      x_i <- x_i + 1/(n - 1) sum_{j != i} (x_i - x_j) / (|x_i - x_j| + 1) phi_x(m_ij),
      h_i <- h_i + phi_h(h_i, sum_{j != i} m_ij).

  The difference is normalised by |x_i - x_j| + 1 (as in Hoogeboom et al. 2022) for stability.
  """

  hidden: int

  @nn.compact
  def __call__(self, h: Array, x: Array, emb: Array) -> tuple[Array, Array]:
    b, n, _ = x.shape
    diff = x[:, :, None, :] - x[:, None, :, :]  # [B, n, n, d]
    d2 = jnp.sum(diff**2, axis=-1, keepdims=True)
    pair = jnp.concatenate([jnp.broadcast_to(h[:, :, None], (b, n, n, h.shape[-1])),
                            jnp.broadcast_to(h[:, None, :], (b, n, n, h.shape[-1])), d2,
                            jnp.broadcast_to(emb[:, None, None], (b, n, n, emb.shape[-1]))], axis=-1)
    mask = (1.0 - jnp.eye(n, dtype=x.dtype))[None, :, :, None]
    m = nn.silu(nn.Dense(self.hidden)(nn.silu(nn.Dense(self.hidden)(pair)))) * mask
    w = nn.Dense(1, kernel_init=nn.initializers.variance_scaling(0.01, "fan_avg", "uniform"))(
        nn.silu(nn.Dense(self.hidden)(m)))
    x = x + jnp.sum(diff / (jnp.sqrt(d2 + 1e-12) + 1.0) * w * mask, axis=2) / (n - 1)
    h = h + nn.Dense(self.hidden)(nn.silu(nn.Dense(self.hidden)(jnp.concatenate([h, jnp.sum(m, axis=2)], -1))))
    return h, x


class EGNN(_PointSetNet):
  """E(n)-equivariant score network: depth `EGNNLayer`s from h_i = Dense(emb) (the same for every
  particle) and the zero-CoM positions; out = x_L - x_0 minus its centre of mass."""

  depth: int = 3
  com_free: bool = True

  @nn.compact
  def __call__(self, x: Array, c: Array, y: Array | None = None, train: bool = False) -> Array:
    del y, train
    points = self.to_points(x)
    points = points - jnp.mean(points, axis=1, keepdims=True)
    emb = self.embedding(c)
    h = jnp.broadcast_to(nn.Dense(self.hidden)(emb)[:, None], points.shape[:2] + (self.hidden,))
    pos = points
    for _ in range(self.depth):
      h, pos = EGNNLayer(self.hidden)(h, pos, emb)
    out = pos - points
    return self.from_points(out - jnp.mean(out, axis=1, keepdims=True), x.shape)


EQUIVARIANT_MODELS = {"sym_mlp": SymmetricMLP, "deepsets": DeepSets, "egnn": EGNN}
