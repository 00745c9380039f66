"""Targets with a known symmetry group and exact diffused scores, and the groups as matrices.

A density invariant under an orthogonal group G, p(g x) = p(x), has an equivariant score,
s(g x) = g s(x), and so has every diffused p_t (the Gaussian kernel is invariant too). The
targets here make that checkable exactly:

- `RingMixture` ("sym_ring"): k Gaussians at angles 2 pi j / k on a circle, each the rotation of
  one tilted anisotropic component, so the density has the cyclic symmetry C_k and no reflection.
- `PermutedParticles` ("sym_particles"): n particles in d dimensions, the equal mixture of the n!
  orderings of one configuration (a GaussianMixture of n! components in n d dimensions); with
  `com_free` the same mixture projected to the zero-centre-of-mass subspace, in the orthonormal
  coordinates u = H X of `com_basis` ((n - 1) d dimensions: the density of a degenerate Gaussian
  is taken on its support, in those coordinates).
- `E2Particles` ("sym_particles_e2"): zero-centre-of-mass 2-D particle sets whose density is the
  average over all rotations, reflections and orderings of an isotropic Gaussian around one
  configuration: invariant under E(2) x S_n, with a closed form through the Bessel function I_0.

Point sets are flattened particle-major: x[i * d + a] is coordinate a of particle i.
Derivations: docs/symmetry.md.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import i0e, i1e, logsumexp

from datasets.toy import GaussianMixture, Target
from utils import check_int, check_real

Array = jax.Array

DEFAULT_CONFIGURATION = ((-1.2, -0.6), (1.4, -0.8), (0.3, 1.5), (-0.4, 0.2))
DEFAULT_PARTICLE_COV = ((0.06, 0.03), (0.03, 0.03))


# --- groups as orthogonal matrices --------------------------------------------------------

def rotation_2d(theta: float) -> np.ndarray:
  """The 2 x 2 rotation by theta."""
  c, s = math.cos(theta), math.sin(theta)
  return np.array([[c, -s], [s, c]])


def cyclic_group(k: int, *, reflections: bool = False) -> np.ndarray:
  """C_k (rotations by 2 pi j / k), or the dihedral D_k with `reflections`; [|G|, 2, 2] float64."""
  k = check_int("k", k, 1)
  rots = [rotation_2d(2 * math.pi * j / k) for j in range(k)]
  flips = [r @ np.diag([1.0, -1.0]) for r in rots] if reflections else []
  return np.stack(rots + flips)


def permutation_matrices(n: int) -> np.ndarray:
  """All n! permutation matrices P (P x puts x[perm[i]] at i); [n!, n, n], the identity first."""
  n = check_int("n", n, 1)
  return np.stack([np.eye(n)[list(p)] for p in itertools.permutations(range(n))])


def particle_permutations(n: int, d: int) -> np.ndarray:
  """S_n acting on flattened point sets of n particles in d dimensions: P kron I_d; [n!, n d, n d]."""
  return np.stack([np.kron(p, np.eye(d)) for p in permutation_matrices(n)])


def particle_transform(n: int, q: np.ndarray) -> np.ndarray:
  """The same orthogonal map q [d, d] applied to every particle: I_n kron q; [n d, n d]."""
  return np.kron(np.eye(n), np.asarray(q, np.float64))


def com_basis(n: int) -> np.ndarray:
  """The Helmert basis H [n - 1, n]: orthonormal rows orthogonal to the all-ones vector.

  U = H X ([n - 1, d]) are orthonormal coordinates of the zero-centre-of-mass part of a point
  set X [n, d]; X - mean(X) = H^T U. Row i is (1, ..., 1, -i, 0, ...) / sqrt(i (i + 1)), i ones.
  """
  n = check_int("n", n, 2)
  h = np.zeros((n - 1, n))
  for i in range(1, n):
    h[i - 1, :i] = 1.0
    h[i - 1, i] = -float(i)
    h[i - 1] /= math.sqrt(i * (i + 1))
  return h


def com_lift(n: int, d: int) -> np.ndarray:
  """V = H^T kron I_d [n d, (n - 1) d]: flattened coordinates u -> the zero-CoM point set V u."""
  return np.kron(com_basis(n).T, np.eye(d))


def restrict_to_com(group: np.ndarray, n: int, d: int) -> np.ndarray:
  """A group acting on point sets [G, n d, n d] (commuting with the CoM projection: permutations,
  the same rotation of every particle) as it acts on the zero-CoM coordinates: V^T g V."""
  v = com_lift(n, d)
  return np.einsum("ia,gij,jb->gab", v, np.asarray(group, np.float64), v)


# --- targets ---------------------------------------------------------------------------

class _MixtureTarget(Target):
  """A target that is a GaussianMixture `_mix` built in __post_init__, plus its symmetry group."""

  @property
  def dim(self) -> int:
    return self._mix.dim

  @property
  def mixture(self) -> GaussianMixture:
    return self._mix

  def sample(self, key: Array, n: int) -> Array:
    return self._mix.sample(key, n)

  def log_prob_t(self, x, alpha, sigma):
    return self._mix.log_prob_t(x, alpha, sigma)

  def score_t(self, x, alpha, sigma):
    return self._mix.score_t(x, alpha, sigma)

  def mean(self) -> np.ndarray:
    return self._mix.mean()

  def cov(self) -> np.ndarray:
    return self._mix.cov()


@dataclasses.dataclass(frozen=True, eq=False)
class RingMixture(_MixtureTarget):
  """k equal Gaussians on a circle of `radius` at angles 2 pi j / k, component j the rotation by
  2 pi j / k of N((radius, 0), R(tilt) diag(radial_std, tangential_std)^2 R(tilt)^T).

  Invariant under C_k (`group`); a tilt that is not a multiple of pi / 2 breaks the reflections.
  """

  k: int = 5
  radius: float = 2.0
  radial_std: float = 0.5
  tangential_std: float = 0.15
  tilt: float = 0.6

  def __post_init__(self):
    check_int("data.k", self.k, 2)
    check_real("data.radius", self.radius, low=0.0, low_open=True)
    check_real("data.radial_std", self.radial_std, low=0.0, low_open=True)
    check_real("data.tangential_std", self.tangential_std, low=0.0, low_open=True)
    check_real("data.tilt", self.tilt)
    r0 = rotation_2d(self.tilt)
    cov0 = r0 @ np.diag([self.radial_std**2, self.tangential_std**2]) @ r0.T
    g = cyclic_group(self.k)
    means = g @ np.array([self.radius, 0.0])
    covs = np.einsum("gij,jk,glk->gil", g, cov0, g)
    object.__setattr__(self, "_mix", GaussianMixture(means.tolist(), covs.tolist(), [1.0] * self.k))

  @property
  def group(self) -> np.ndarray:
    """C_k as matrices [k, 2, 2]."""
    return cyclic_group(self.k)


def _particle_fields(configuration, particle_cov) -> tuple[np.ndarray, np.ndarray]:
  """(configuration [n, d], particle covariance [d, d]), checked."""
  conf = np.asarray(configuration, np.float64)
  if conf.ndim != 2 or conf.shape[0] < 2:
    raise ValueError(f"data.configuration must be [n, d] with n >= 2 particles; got shape {conf.shape}.")
  cov = np.asarray(particle_cov, np.float64)
  d = conf.shape[1]
  if cov.shape != (d, d) or not np.allclose(cov, cov.T) or np.any(np.linalg.eigvalsh(cov) <= 0):
    raise ValueError(f"data.particle_cov={cov.tolist()} must be a symmetric positive definite [{d}, {d}] matrix.")
  return conf, cov


@dataclasses.dataclass(frozen=True, eq=False)
class PermutedParticles(_MixtureTarget):
  """n particles in d dimensions: (1 / n!) sum_P N(x; P m, I_n kron C), m the flattened
  `configuration` [n, d] and C = `particle_cov` (the same for every particle), so the density is
  invariant under every permutation of the particles (`group`) and, with an anisotropic C or an
  asymmetric configuration, under no rotation.

  com_free: the target of H X instead ((n - 1) d orthonormal zero-CoM coordinates, `com_basis`):
  the mixture of N(V^T P m, V^T (I kron C) V), V = `com_lift(n, d)`, invariant under V^T P V.
  """

  configuration: Sequence = DEFAULT_CONFIGURATION
  particle_cov: Sequence = DEFAULT_PARTICLE_COV
  com_free: bool = False

  def __post_init__(self):
    conf, cov = _particle_fields(self.configuration, self.particle_cov)
    if not isinstance(self.com_free, bool):
      raise ValueError(f"data.com_free={self.com_free!r} must be True or False.")
    n, d = conf.shape
    means = np.einsum("gij,j->gi", particle_permutations(n, d), conf.reshape(-1))
    full_cov = particle_transform(n, cov)
    if self.com_free:
      v = com_lift(n, d)
      means, full_cov = means @ v, v.T @ full_cov @ v
    covs = np.broadcast_to(full_cov, (len(means),) + full_cov.shape)
    object.__setattr__(self, "_mix", GaussianMixture(means.tolist(), covs.tolist(), [1.0] * len(means)))

  @property
  def n_particles(self) -> int:
    return int(np.shape(self.configuration)[0])

  @property
  def particle_dim(self) -> int:
    return int(np.shape(self.configuration)[1])

  @property
  def group(self) -> np.ndarray:
    """S_n as matrices on x: [n!, dim, dim]."""
    n, d = self.n_particles, self.particle_dim
    g = particle_permutations(n, d)
    return restrict_to_com(g, n, d) if self.com_free else g


@jax.custom_jvp
def _log_i0_sqrt(q: Array) -> Array:
  """log I_0(sqrt(q)) for q >= 0, smooth at q = 0 (I_0(z) = 1 + z^2 / 4 + ...)."""
  z = jnp.sqrt(q)
  return jnp.log(i0e(z)) + z


@_log_i0_sqrt.defjvp
def _log_i0_sqrt_jvp(primals, tangents):
  (q,), (dq,) = primals, tangents
  # d/dq log I_0(sqrt q) = I_1(z) / (2 z I_0(z)), z = sqrt(q); -> 1/4 - q / 32 as q -> 0.
  small = q < 1e-4
  z = jnp.sqrt(jnp.where(small, 1.0, q))
  slope = jnp.where(small, 0.25 - q / 32.0, i1e(z) / (2.0 * z * i0e(z)))
  return _log_i0_sqrt(q), slope * dq


@dataclasses.dataclass(frozen=True, eq=False)
class E2Particles(Target):
  """Zero-CoM sets of n 2-D particles, in the coordinates u = H X of `com_basis` ((n - 1) 2 dims):

      p(u) = mean_{v in O} int_{SO(2)} N(u; R v, s^2 I) dR,

  O the orbit of the configuration's coordinates under permutations and (with `reflections`) the
  reflection y -> -y. With a rotation by theta, <u, R v> = A cos theta + B sin theta, so the
  integral is closed form: N's normaliser times exp(-(|u|^2 + |v|^2) / (2 s^2)) I_0(rho / s^2),
  rho = sqrt(A^2 + B^2), A = sum_i u_i . v_i, B = sum_i u_i . J v_i (J the rotation by pi / 2).
  Diffusing replaces v by alpha v and s^2 by alpha^2 s^2 + sigma^2. Invariant under every
  rotation, under permutations and (with reflections) reflections: E(2) x S_n after removing the
  centre of mass.
  """

  configuration: Sequence = DEFAULT_CONFIGURATION
  std: float = 0.2
  reflections: bool = True

  def __post_init__(self):
    conf = np.asarray(self.configuration, np.float64)
    if conf.ndim != 2 or conf.shape[0] < 2 or conf.shape[1] != 2:
      raise ValueError(f"data.configuration must be [n, 2] with n >= 2 particles; got shape {conf.shape}.")
    check_real("data.std", self.std, low=0.0, low_open=True)
    if not isinstance(self.reflections, bool):
      raise ValueError(f"data.reflections={self.reflections!r} must be True or False.")
    n = conf.shape[0]
    orbit = np.einsum("gij,jd->gid", permutation_matrices(n), conf)
    if self.reflections:
      orbit = np.concatenate([orbit, orbit * np.array([1.0, -1.0])])
    v = np.einsum("ai,gid->gad", com_basis(n), orbit)  # [|O|, n - 1, 2]
    object.__setattr__(self, "_v", jnp.asarray(v, jnp.float32))
    object.__setattr__(self, "_jv", jnp.asarray(v @ rotation_2d(math.pi / 2).T, jnp.float32))

  @property
  def n_particles(self) -> int:
    return int(np.shape(self.configuration)[0])

  @property
  def particle_dim(self) -> int:
    return 2

  @property
  def dim(self) -> int:
    return 2 * (self.n_particles - 1)

  def sample(self, key: Array, n: int) -> Array:
    """u = R(theta) v + s z, v uniform over the orbit, theta uniform; [n, dim]."""
    key_v, key_t, key_z = jax.random.split(key, 3)
    v = self._v[jax.random.randint(key_v, (n,), 0, self._v.shape[0])]
    theta = jax.random.uniform(key_t, (n,), maxval=2 * jnp.pi)
    c, s = jnp.cos(theta)[:, None, None], jnp.sin(theta)[:, None, None]
    rotated = jnp.stack([c[..., 0] * v[..., 0] - s[..., 0] * v[..., 1],
                         s[..., 0] * v[..., 0] + c[..., 0] * v[..., 1]], axis=-1)
    return rotated.reshape(n, -1) + self.std * jax.random.normal(key_z, (n, self.dim))

  def log_prob_t(self, x, alpha, sigma):
    b = x.shape[0]
    a = jnp.broadcast_to(jnp.asarray(alpha, x.dtype), (b,))[:, None]
    var = a**2 * self.std**2 + jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (b,))[:, None] ** 2  # [B, 1]
    u = x.reshape(b, -1, 2)
    A = a * jnp.einsum("bid,gid->bg", u, self._v)
    B = a * jnp.einsum("bid,gid->bg", u, self._jv)
    sq_v = jnp.sum(self._v**2, axis=(1, 2))[None] * a**2  # |alpha v|^2, the same for the whole orbit
    log_k = (_log_i0_sqrt((A**2 + B**2) / var**2) - (jnp.sum(x**2, -1, keepdims=True) + sq_v) / (2 * var)
             - 0.5 * self.dim * jnp.log(2 * jnp.pi * var))
    return logsumexp(log_k, axis=-1) - math.log(self._v.shape[0])

  def mean(self) -> np.ndarray:
    return np.zeros(self.dim)  # rotation invariance: E[u] = 0

  def cov(self) -> np.ndarray:
    """E[u u^T] = s^2 I + mean_v E_R[R v (R v)^T]; averaging over rotations gives |v_i . v_j| terms
    ((v_i . v_j) I_2 / 2 per pair of rows, plus the antisymmetric part, which reflections cancel)."""
    v = np.asarray(self._v, np.float64)
    jv = np.asarray(self._jv, np.float64)
    # E_theta[(R v)_i (R v)_j^T] = (v_i v_j^T + Jv_i Jv_j^T) / 2 for rows i, j.
    second = 0.5 * (np.einsum("gia,gjb->iajb", v, v) + np.einsum("gia,gjb->iajb", jv, jv)) / len(v)
    return second.reshape(self.dim, self.dim) + self.std**2 * np.eye(self.dim)


TARGETS = {"sym_ring": RingMixture, "sym_particles": PermutedParticles, "sym_particles_e2": E2Particles}
