"""The exact posterior of a Gaussian-mixture prior under a linear Gaussian observation.

With p(x) = sum_k w_k N(mu_k, S_k) and y = A x + sigma_y n, n ~ N(0, I), the posterior is again
a Gaussian mixture (Bishop 2006, Eqs. 2.113-2.117 per component, in the gain form):

    C_k  = A S_k A^T + sigma_y^2 I,          G_k = S_k A^T C_k^+,
    mu_k' = mu_k + G_k (y - A mu_k),         S_k' = S_k - G_k A S_k,
    w_k' ∝ w_k N(y; A mu_k, C_k).

The gain form needs no inverse of S_k and stays valid at sigma_y = 0 (noiseless masks, any A):
C_k^+ is the pseudo-inverse and N(y; ., C_k) the degenerate Gaussian on the range of C_k, whose
null space is null(A^T) for every k, so the weights compare like with like. There S_k' is
singular (no spread along the observed directions); `MixturePosterior.sample` draws through
an eigendecomposition, so singular covariances are fine. Components of y outside range(A) are
ignored when sigma_y = 0 (as a least-squares fit would).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class MixturePosterior:
  """sum_k w_k N(m_k, C_k) with positive semi-definite C_k (float64 numpy arrays).

  Attributes:
    weights: [K], summing to 1.
    means: [K, d].
    covs: [K, d, d], symmetric PSD (singular along observed directions when sigma_y = 0).
  """

  weights: np.ndarray
  means: np.ndarray
  covs: np.ndarray

  def __post_init__(self):
    lam, U = np.linalg.eigh(self.covs)
    roots = U * np.sqrt(np.maximum(lam, 0.0))[:, None, :]  # C_k = R_k R_k^T
    object.__setattr__(self, "_roots", jnp.asarray(roots, jnp.float32))
    object.__setattr__(self, "_logw", jnp.asarray(np.log(np.maximum(self.weights, 1e-300)), jnp.float32))

  @property
  def dim(self) -> int:
    return int(self.means.shape[1])

  def sample(self, key: Array, n: int) -> Array:
    """n exact posterior samples [n, d] (float32)."""
    key_c, key_z = jax.random.split(key)
    k = jax.random.categorical(key_c, self._logw, shape=(n,))
    z = jax.random.normal(key_z, (n, self.dim))
    return jnp.asarray(self.means, jnp.float32)[k] + jnp.einsum("nij,nj->ni", self._roots[k], z)

  def mean(self) -> np.ndarray:
    return self.weights @ self.means

  def cov(self) -> np.ndarray:
    m = self.mean()
    second = np.einsum("k,kij->ij", self.weights, self.covs + np.einsum("ki,kj->kij", self.means, self.means))
    return second - np.outer(m, m)


def _pinv_psd(C: np.ndarray, rtol: float) -> tuple[np.ndarray, float, int]:
  """(C^+, log pseudo-determinant of 2 pi C, rank) of a symmetric PSD matrix; eigenvalues below
  rtol * max(eigenvalue) count as zero."""
  lam, U = np.linalg.eigh(0.5 * (C + C.T))
  keep = lam > rtol * max(lam.max(), 0.0)
  inv = np.where(keep, 1.0 / np.where(keep, lam, 1.0), 0.0)
  return (U * inv) @ U.T, float(np.sum(np.log(2 * np.pi * lam[keep]))), int(keep.sum())


def linear_gaussian_posterior(target, A, y, sigma_y: float, *, rtol: float = 1e-10) -> MixturePosterior:
  """p(x | y) for a `GaussianMixture` prior and y = A x + sigma_y n (see the module docstring).

  Args:
    target: a `datasets.GaussianMixture` (means [K, d], covs [K, d, d], weights [K]).
    A: the observation matrix [m, d] (e.g. `operator.matrix()` of a `sampling.operators` operator).
    y: one observation [m].
    sigma_y: the observation noise standard deviation, >= 0.
    rtol: relative eigenvalue threshold of the pseudo-inverse (used when sigma_y = 0).

  Returns:
    A `MixturePosterior`.

  Raises:
    ValueError: A not [m, d], y not [m], sigma_y < 0 or not finite.
  """
  mu, S = np.asarray(target.means, np.float64), np.asarray(target.covs, np.float64)
  w = np.asarray(target.weights, np.float64)
  d = mu.shape[1]
  A = np.asarray(A, np.float64)
  if A.ndim != 2 or A.shape[1] != d or not np.all(np.isfinite(A)):
    raise ValueError(f"A.shape={A.shape} must be [m, d] with d = {d}, finite.")
  y = np.asarray(y, np.float64)
  if y.shape != (A.shape[0],):
    raise ValueError(f"y.shape={y.shape} must be [m] = {(A.shape[0],)}.")
  if not (np.isfinite(sigma_y) and sigma_y >= 0):
    raise ValueError(f"sigma_y={sigma_y!r} must be a finite number >= 0.")
  means, covs, logws, ranks = [], [], [], set()
  for k in range(len(w)):
    C = A @ S[k] @ A.T + sigma_y**2 * np.eye(A.shape[0])
    C_pinv, logdet, rank = _pinv_psd(C, rtol)
    ranks.add(rank)
    r = y - A @ mu[k]
    G = S[k] @ A.T @ C_pinv
    means.append(mu[k] + G @ r)
    cov = S[k] - G @ A @ S[k]
    covs.append(0.5 * (cov + cov.T))
    logws.append(np.log(w[k]) - 0.5 * (r @ C_pinv @ r + logdet))
  if len(ranks) != 1:  # cannot happen for PSD S_k; guards against rtol cutting differently
    raise ValueError(f"rtol={rtol!r} gives components observation covariances of different ranks {sorted(ranks)}.")
  logws = np.asarray(logws)
  weights = np.exp(logws - logws.max())
  return MixturePosterior(weights / weights.sum(), np.asarray(means), np.asarray(covs))
