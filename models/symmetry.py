"""Group averaging: any score function or network made equivariant under a finite orthogonal group.

For a finite group G of orthogonal matrices acting on flattened x,

    s_bar(x, t) = 1/|G| sum_g g^T s(g x, t)

is G-equivariant, s_bar(h x, t) = h s_bar(x, t) (substitute g' = g h), and it is the L2 projection
of s onto the equivariant functions when the data density is G-invariant, so averaging never
increases the score-matching loss on such data. `group_average` does it for a function of (x, t);
`SymmetricMLP` is the residual MLP averaged inside the network, so it trains as one network.
Derivation: docs/symmetry.md.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from datasets.symmetric import cyclic_group, particle_permutations, restrict_to_com
from models.mlp import MLP

Array = jax.Array
SYMMETRIES = ("none", "cyclic", "dihedral", "permutation")


def group_average(fn: Callable[[Array, Array], Array], group, x: Array, t: Array) -> Array:
  """1/|G| sum_g g^T fn(g x, t): one call of fn on the |G| B transformed inputs.

  Args:
    fn: fn(x [N, ...], t [N]) -> [N, ...] shaped like x.
    group: [|G|, D, D] orthogonal matrices acting on x flattened to D = prod(x.shape[1:]).
    x: [B, ...] (flat vectors or point sets [B, n, d]).
    t: [B] per-example times or noise conditions.

  Returns:
    [B, ...] shaped like x.
  """
  g = jnp.asarray(group, x.dtype)
  b, size = x.shape[0], math.prod(x.shape[1:])
  gx = jnp.einsum("gij,bj->gbi", g, x.reshape(b, size)).reshape((-1,) + x.shape[1:])
  out = fn(gx, jnp.tile(jnp.asarray(t), g.shape[0])).reshape(g.shape[0], b, size)
  return (jnp.einsum("gji,gbj->bi", g, out) / g.shape[0]).reshape(x.shape)


def group_average_score_fn(score_fn: Callable[[Array, Array], Array], group) -> Callable[[Array, Array], Array]:
  """score_fn(x, t) averaged over `group` ([|G|, D, D], acting on x flattened): s_bar(x, t)."""
  group = np.asarray(group, np.float32)

  def averaged(x, t):
    return group_average(score_fn, group, x, t)

  return averaged


def get_group(symmetry: str, dim: int, *, k: int = 1, n_particles: int = 1, particle_dim: int = 2,
              com_free: bool = False) -> np.ndarray:
  """The group `symmetry` as matrices [|G|, dim, dim] acting on flattened x of `dim` entries.

  "none": the identity; "cyclic" / "dihedral": C_k / D_k of the plane (dim 2); "permutation": S_n
  on n particles in particle_dim dimensions (dim n d), or on their zero-CoM coordinates
  (`com_free`, dim (n - 1) d; `datasets.symmetric.com_basis`).

  Raises:
    ValueError: unknown symmetry, or a dim the group does not act on.
  """
  if symmetry not in SYMMETRIES:
    raise ValueError(f"model.symmetry={symmetry!r} is unknown; valid: {list(SYMMETRIES)}.")
  if symmetry == "none":
    return np.eye(dim)[None]
  if symmetry in ("cyclic", "dihedral"):
    group, needed = cyclic_group(k, reflections=symmetry == "dihedral"), 2
  else:
    n, d = n_particles, particle_dim
    group = particle_permutations(n, d)
    group, needed = (restrict_to_com(group, n, d), (n - 1) * d) if com_free else (group, n * d)
  if dim != needed:
    raise ValueError(f"model.symmetry={symmetry!r} acts on {needed}-dimensional x (from k, n_particles, "
                     f"particle_dim, com_free); the data has {dim} dimensions.")
  return group


class SymmetricMLP(nn.Module):
  """The residual `MLP` averaged over a group (`get_group`): out = 1/|G| sum_g g^T MLP(g x, c).

  symmetry="none" is the plain MLP (the same parameters), so one config field switches the
  symmetry on or off at an equal parameter count. Costs |G| network evaluations per call.
  """

  hidden: int = 128
  depth: int = 3
  embed_dim: int = 32
  fourier_scale: float = 4.0
  symmetry: str = "none"
  k: int = 1
  n_particles: int = 1
  particle_dim: int = 2
  com_free: bool = False

  def validate(self) -> None:
    """Raises ValueError for out-of-range fields (called by models.get_model)."""
    MLP(self.hidden, self.depth, self.embed_dim, self.fourier_scale, parent=None).validate()
    if self.symmetry not in SYMMETRIES:
      raise ValueError(f"model.symmetry={self.symmetry!r} is unknown; valid: {list(SYMMETRIES)}.")
    for name in ("k", "n_particles", "particle_dim"):
      if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
        raise ValueError(f"model.{name}={getattr(self, name)!r} must be an integer >= 1.")
    if not isinstance(self.com_free, bool):
      raise ValueError(f"model.com_free={self.com_free!r} must be True or False.")

  def validate_input(self, shape: Sequence[int]) -> None:
    """Raises ValueError unless the group acts on examples of `shape` (flattened)."""
    self.group(math.prod(shape))

  def group(self, dim: int) -> np.ndarray:
    return get_group(self.symmetry, dim, k=self.k, n_particles=self.n_particles,
                     particle_dim=self.particle_dim, com_free=self.com_free)

  @nn.compact
  def __call__(self, x: Array, c: Array, y: Array | None = None, train: bool = False) -> Array:
    del y, train
    net = MLP(self.hidden, self.depth, self.embed_dim, self.fourier_scale, name="mlp")
    if self.symmetry == "none":
      return net(x, c)
    return group_average(net, self.group(math.prod(x.shape[1:])), x, c)
