"""A target that lives near a linear subspace, with exact scores in the full space and in the
subspace: the reference of subspace diffusion (Jing et al. 2022, "Subspace diffusion generative
models"; `sampling.subspace`).

`PlanarMixture` is a 2-D Gaussian mixture in a plane of R^3 (orthonormal basis U [3, 2], unit
normal n) plus a small Gaussian component along n:

    x = U y + n w,   y ~ sum_k w_k N(mu_k, S_k),   w | k ~ N(o_k, s_k^2),

which is itself a 3-D Gaussian mixture with means U mu_k + o_k n and covariances
U S_k U^T + s_k^2 n n^T (`full`, a `GaussianMixture`), so every diffused score is exact. The
subspace coordinates y = U^T x are the 2-D mixture (`plane`), whose diffused score is the exact
subspace score. With o_k = 0 and one s for every component, w is independent of y (the case where
subspace diffusion is exact); per-component offsets o_k or scales s_k make w depend on y, and the
orthogonal Fisher divergence (`sampling.orthogonal_fisher_divergence`) then measures when the
diffused w is Gaussian enough to be drawn independently.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

from datasets.toy import GaussianMixture, Target

Array = jax.Array

PLANE_MEANS = ((-1.5, 0.0), (1.5, 0.5), (0.0, 2.0))
PLANE_COVS = (((0.30, 0.10), (0.10, 0.20)), ((0.25, -0.08), (-0.08, 0.35)), ((0.15, 0.0), (0.0, 0.15)))
PLANE_WEIGHTS = (0.4, 0.35, 0.25)
# An exactly orthonormal plane of R^3: columns (2, 1, 2) / 3 and (1, 2, -2) / 3; normal (2, -2, -1) / 3.
PLANE_BASIS = ((2 / 3, 1 / 3), (1 / 3, 2 / 3), (2 / 3, -2 / 3))


def _normal_of(basis: np.ndarray) -> np.ndarray:
  """The unit normal of a plane in R^3 (the cross product of its orthonormal columns)."""
  return np.cross(basis[:, 0], basis[:, 1])


@dataclasses.dataclass(frozen=True, eq=False)
class PlanarMixture(Target):
  """A 2-D Gaussian mixture in a plane of R^3 plus a Gaussian component along the normal.

  Args (all fields):
    means, covs, weights: the in-plane mixture (K x 2, K x 2 x 2, K), in subspace coordinates y.
    basis: the plane's orthonormal basis U [3, 2].
    perp_std: the normal component's std s_k: one number, or one per component.
    perp_means: its mean o_k per component (default 0).

  Attributes:
    full: the 3-D `GaussianMixture` (exact log_prob_t and score_t of x).
    plane: the 2-D `GaussianMixture` of y = U^T x (exact subspace scores).
    normal: the plane's unit normal n [3] (float64).

  Raises:
    ValueError: a basis that is not 3 x 2 orthonormal, a non-positive perp_std, or per-component
      fields of the wrong length (naming the field and value).
  """

  means: Sequence = PLANE_MEANS
  covs: Sequence = PLANE_COVS
  weights: Sequence = PLANE_WEIGHTS
  basis: Sequence = PLANE_BASIS
  perp_std: float | Sequence = 0.05
  perp_means: Sequence | None = None

  def __post_init__(self):
    plane = GaussianMixture(self.means, self.covs, self.weights)
    k = plane.n_components
    U = np.asarray(self.basis, np.float64)
    if U.shape != (3, 2) or not np.allclose(U.T @ U, np.eye(2), atol=1e-6):
      raise ValueError(f"data.basis={np.asarray(self.basis).tolist()} must be a 3 x 2 matrix with "
                       "orthonormal columns.")
    s = np.broadcast_to(np.asarray(self.perp_std, np.float64), (k,)) if np.ndim(self.perp_std) == 0 else \
        np.asarray(self.perp_std, np.float64)
    if s.shape != (k,) or np.any(s <= 0):
      raise ValueError(f"data.perp_std={self.perp_std!r} must be one positive number or {k} of them.")
    o = np.zeros(k) if self.perp_means is None else np.asarray(self.perp_means, np.float64)
    if o.shape != (k,):
      raise ValueError(f"data.perp_means={self.perp_means!r} must be {k} numbers (one per component).")
    n = _normal_of(U)
    mu2, S2 = np.asarray(self.means, np.float64), np.asarray(self.covs, np.float64)
    means = mu2 @ U.T + o[:, None] * n
    covs = np.einsum("ia,kab,jb->kij", U, S2, U) + (s**2)[:, None, None] * np.outer(n, n)
    full = GaussianMixture(means.tolist(), covs.tolist(), list(self.weights))
    for name, value in (("full", full), ("plane", plane), ("_U", U), ("_n", n)):
      object.__setattr__(self, name, value)

  dim = 3

  @property
  def normal(self) -> np.ndarray:
    return self._n

  @property
  def num_classes(self) -> int:
    return self.full.num_classes

  def sample_with_labels(self, key: Array, n: int) -> tuple[Array, Array]:
    """n samples [n, 3] and their component labels [n]."""
    return self.full.sample_with_labels(key, n)

  def sample(self, key: Array, n: int) -> Array:
    return self.full.sample(key, n)

  def log_prob_t(self, x, alpha, sigma):
    return self.full.log_prob_t(x, alpha, sigma)

  def score_t(self, x, alpha, sigma):
    return self.full.score_t(x, alpha, sigma)

  def subspace_score_fn(self, sde):
    """The exact subspace score fn(y [B, 2], t) = grad_y log p_t(y) of the diffused in-plane
    mixture (y = U^T x diffuses by the same SDE)."""
    return self.plane.score_fn(sde)

  def mean(self) -> np.ndarray:
    return self.full.mean()

  def cov(self) -> np.ndarray:
    return self.full.cov()
