"""Training data with known truth: toy targets with exact densities and exact diffused scores.

Under a linear SDE, p_t(x | x0) = N(alpha x0, sigma^2 I), so a target p_0 diffuses to
p_t = (p_0 scaled by alpha) * N(0, sigma^2 I). For a Gaussian mixture that is again a
Gaussian mixture (means alpha mu_k, covariances alpha^2 Sigma_k + sigma^2 I); for a
uniform box it is a difference of normal CDFs. Both give the exact score of every
p_t, the "oracle" that samplers and likelihoods are checked against.

Every target has `dim`, `sample(key, n)`, `log_prob(x)`, `score(x)`, and the diffused
`log_prob_t(x, alpha, sigma)` / `score_t(...)`, with `score_fn(sde)` and
`log_prob_fn(sde)` returning functions of (x, t).

Labels: a GaussianMixture's classes are its components (`sample_with_labels`, `num_classes`),
with the exact class-conditional diffused score (`conditional_score_fn`), the exact class
posterior p_t(c | x_t) (`class_log_posterior_fn`) and the exact conditional p(x_u | x_known)
(`condition`), the references of conditional generation.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr, logsumexp


Array = jax.Array

DEFAULT_MEANS = ((0.0, 1.0), (2.0, -1.0))
DEFAULT_COVS = (((1.0, 0.0), (0.0, 1.0)), ((2.0, 0.5), (0.5, 1.0)))
DEFAULT_WEIGHTS = (0.5, 0.5)


def _per_example(c, x: Array) -> Array:
  """Broadcasts a scalar or [B] coefficient to [B, 1] against x [B, d]."""
  return jnp.reshape(jnp.broadcast_to(jnp.asarray(c, x.dtype), x.shape[:1]), (-1, 1))


class Target:
  """Shared helpers: diffused densities as functions of (x, t) under an SDE."""

  dim: int

  def log_prob_t(self, x: Array, alpha, sigma) -> Array:
    raise NotImplementedError

  def score_t(self, x: Array, alpha, sigma) -> Array:
    """Exact score of the diffused target: grad_x log p_t(x); [B, d]."""
    return jax.grad(lambda y: jnp.sum(self.log_prob_t(y, alpha, sigma)))(x)

  def log_prob(self, x: Array) -> Array:
    """log p_0(x); [B]."""
    return self.log_prob_t(x, 1.0, 0.0)

  def score(self, x: Array) -> Array:
    """grad log p_0(x); [B, d]."""
    return self.score_t(x, 1.0, 0.0)

  def score_fn(self, sde) -> Callable[[Array, Array], Array]:
    """The oracle: score_fn(x, t) = grad log p_t(x) for p_t the target diffused by `sde`."""

    def score_fn(x, t):
      alpha, sigma = sde.marginal_coeffs(t)
      return self.score_t(x, alpha, sigma)

    return score_fn

  def log_prob_fn(self, sde) -> Callable[[Array, Array], Array]:
    """log_prob_fn(x, t) = log p_t(x) for p_t the target diffused by `sde`; [B]."""

    def log_prob_fn(x, t):
      alpha, sigma = sde.marginal_coeffs(t)
      return self.log_prob_t(x, alpha, sigma)

    return log_prob_fn


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianMixture(Target):
  """sum_k w_k N(mu_k, Sigma_k) in any dimension.

  Covariances are eigendecomposed once, Sigma_k = U_k diag(lam_k) U_k^T, so the diffused
  covariance alpha^2 Sigma_k + sigma^2 I = U_k diag(alpha^2 lam_k + sigma^2) U_k^T costs no
  factorisation per time or per example.
  """

  means: Sequence = DEFAULT_MEANS
  covs: Sequence = DEFAULT_COVS
  weights: Sequence = DEFAULT_WEIGHTS

  def __post_init__(self):
    means = np.asarray(self.means, np.float64)
    covs = np.asarray(self.covs, np.float64)
    weights = np.asarray(self.weights, np.float64)
    if means.ndim != 2:
      raise ValueError(f"data.means must be [K, d]; got shape {means.shape}.")
    k, d = means.shape
    if covs.shape != (k, d, d):
      raise ValueError(f"data.covs must be [K, d, d] = {(k, d, d)}; got shape {covs.shape}.")
    if weights.shape != (k,) or np.any(weights <= 0):
      raise ValueError(f"data.weights={weights.tolist()} must be {k} positive numbers.")
    if not np.allclose(covs, np.swapaxes(covs, 1, 2)):
      raise ValueError("data.covs must be symmetric.")
    lam, U = np.linalg.eigh(covs)
    if np.any(lam <= 0):
      raise ValueError(f"data.covs must be positive definite; eigenvalues {lam.tolist()}.")
    object.__setattr__(self, "_mu", jnp.asarray(means, jnp.float32))
    object.__setattr__(self, "_lam", jnp.asarray(lam, jnp.float32))
    object.__setattr__(self, "_U", jnp.asarray(U, jnp.float32))
    object.__setattr__(self, "_chol", jnp.asarray(np.linalg.cholesky(covs), jnp.float32))
    object.__setattr__(self, "_logw", jnp.asarray(np.log(weights / weights.sum()), jnp.float32))

  @property
  def dim(self) -> int:
    return int(self._mu.shape[1])

  @property
  def n_components(self) -> int:
    return int(self._mu.shape[0])

  def sample_with_labels(self, key: Array, n: int) -> tuple[Array, Array]:
    """n samples [n, d] and their component labels [n]."""
    key_c, key_z = jax.random.split(key)
    labels = jax.random.categorical(key_c, self._logw, shape=(n,))
    z = jax.random.normal(key_z, (n, self.dim))
    x = self._mu[labels] + jnp.einsum("nij,nj->ni", self._chol[labels], z)
    return x, labels

  def sample(self, key: Array, n: int) -> Array:
    """n samples; [n, d]."""
    return self.sample_with_labels(key, n)[0]

  def _component_terms(self, x: Array, alpha, sigma):
    """Per-component log N(x; alpha mu_k, alpha^2 Sigma_k + sigma^2 I) [B, K] and
    the precision-weighted residuals C_k^{-1}(x - alpha mu_k) [B, K, d]."""
    a, s = _per_example(alpha, x), _per_example(sigma, x)
    var = a[:, None, :] ** 2 * self._lam[None] + s[:, None, :] ** 2  # [B, K, d]
    r = x[:, None, :] - a[:, None, :] * self._mu[None]  # [B, K, d]
    r_eig = jnp.einsum("kji,bkj->bki", self._U, r)  # U_k^T r
    logn = -0.5 * jnp.sum(r_eig**2 / var + jnp.log(2 * jnp.pi * var), axis=-1)
    prec_r = jnp.einsum("kij,bkj->bki", self._U, r_eig / var)
    return logn, prec_r

  def log_prob_t(self, x, alpha, sigma):
    logn, _ = self._component_terms(x, alpha, sigma)
    return logsumexp(logn + self._logw, axis=-1)

  def score_t(self, x, alpha, sigma):
    """Closed form: -sum_k r_k(x) C_k^{-1}(x - alpha mu_k), r_k the responsibilities."""
    logn, prec_r = self._component_terms(x, alpha, sigma)
    resp = jax.nn.softmax(logn + self._logw, axis=-1)
    return -jnp.einsum("bk,bkd->bd", resp, prec_r)

  def component_log_probs_t(self, x: Array, alpha, sigma) -> Array:
    """log w_k + log N_k(x) of the diffused components; [B, K] (for class posteriors)."""
    logn, _ = self._component_terms(x, alpha, sigma)
    return logn + self._logw

  # --- labels and exact conditionals (the mixture component is the class label) ---

  @property
  def num_classes(self) -> int:
    """Number of class labels: the components; label K is the null (unconditional) label."""
    return self.n_components

  def class_log_posterior_t(self, x: Array, alpha, sigma) -> Array:
    """Exact log p(c | x_t) = log softmax_k (log w_k + log N_k(x_t)) of the diffused mixture; [B, K]."""
    return jax.nn.log_softmax(self.component_log_probs_t(x, alpha, sigma), axis=-1)

  def conditional_score_t(self, x: Array, y, alpha, sigma) -> Array:
    """Exact class-conditional diffused score grad log p_t(x | c = y_i); [B, d].

    For a label y_i < K it is the diffused component's Gaussian score -C_y^{-1}(x - alpha mu_y)
    (C_y = alpha^2 Sigma_y + sigma^2 I); the null label y_i = K gives the mixture score.
    """
    logn, prec_r = self._component_terms(x, alpha, sigma)
    k = self.n_components
    y = jnp.broadcast_to(jnp.asarray(y, jnp.int32), x.shape[:1])
    resp = jax.nn.softmax(logn + self._logw, axis=-1)
    weights = jnp.where((y == k)[:, None], resp, jax.nn.one_hot(y, k, dtype=x.dtype))
    return -jnp.einsum("bk,bkd->bd", weights, prec_r)

  def conditional_score_fn(self, sde) -> Callable[..., Array]:
    """The conditional oracle: fn(x, t, y=None) = grad log p_t(x | y); y=None or K is unconditional."""

    def cond_score_fn(x, t, y=None):
      alpha, sigma = sde.marginal_coeffs(t)
      if y is None:
        return self.score_t(x, alpha, sigma)
      return self.conditional_score_t(x, y, alpha, sigma)

    return cond_score_fn

  def class_log_posterior_fn(self, sde) -> Callable[[Array, Array], Array]:
    """The exact noise-conditional classifier: fn(x, t) = log p(c | x_t); [B, K]."""

    def log_posterior_fn(x, t):
      alpha, sigma = sde.marginal_coeffs(t)
      return self.class_log_posterior_t(x, alpha, sigma)

    return log_posterior_fn

  def component(self, k: int) -> "GaussianMixture":
    """Component k alone, p(x | c = k), as a one-component GaussianMixture.

    Raises:
      ValueError: k outside [0, K).
    """
    if not (isinstance(k, (int, np.integer)) and 0 <= k < self.n_components):
      raise ValueError(f"class label {k!r} must be an integer in [0, {self.n_components}).")
    return GaussianMixture([list(np.asarray(self.means, np.float64)[k])],
                           [np.asarray(self.covs, np.float64)[k].tolist()], [1.0])

  def condition(self, known: Sequence[int], values: Sequence[float]) -> "GaussianMixture":
    """p(x_u | x_known = a): the exact conditional over the unknown coordinates u (increasing order).

    A Gaussian mixture again (Bishop 2006, Eqs. 2.81-2.82, per component):
        w_k' ∝ w_k N(a; mu_k[K], S_k[K, K]),
        mu_k' = mu_k[u] + S_k[u, K] S_k[K, K]^{-1} (a - mu_k[K]),
        S_k'  = S_k[u, u] - S_k[u, K] S_k[K, K]^{-1} S_k[K, u].

    Args:
      known: indices of the observed coordinates (distinct, at least one unknown left).
      values: their observed values a, one per index.

    Raises:
      ValueError: bad indices or a values length that does not match.
    """
    d = self.dim
    known = [int(i) for i in known]
    if not known or len(set(known)) != len(known) or not all(0 <= i < d for i in known) or len(known) >= d:
      raise ValueError(f"known={known!r} must be distinct indices in [0, {d}) leaving at least one unknown.")
    a = np.asarray(values, np.float64).reshape(-1)
    if a.shape != (len(known),):
      raise ValueError(f"values={a.tolist()} must have one value per known index ({len(known)}).")
    u = [i for i in range(d) if i not in known]
    mu, S = np.asarray(self.means, np.float64), np.asarray(self.covs, np.float64)
    logw = np.log(np.asarray(self.weights, np.float64) / np.sum(self.weights))
    means, covs, logws = [], [], []
    for k in range(self.n_components):
      s_kk, s_uk = S[k][np.ix_(known, known)], S[k][np.ix_(u, known)]
      r = a - mu[k][known]
      gain = np.linalg.solve(s_kk, s_uk.T).T  # S_uK S_KK^{-1}
      means.append(mu[k][u] + gain @ r)
      covs.append(S[k][np.ix_(u, u)] - gain @ s_uk.T)
      _, logdet = np.linalg.slogdet(2 * np.pi * s_kk)
      logws.append(logw[k] - 0.5 * (r @ np.linalg.solve(s_kk, r) + logdet))
    w = np.exp(np.asarray(logws) - np.max(logws))
    w = np.maximum(w / w.sum(), 1e-300)  # a component far from a keeps a positive weight
    covs = [0.5 * (c + c.T) for c in covs]
    return GaussianMixture([m.tolist() for m in means], [c.tolist() for c in covs], w.tolist())

  def diffuse(self, alpha: float, sigma: float) -> "GaussianMixture":
    """The target diffused to scalar (alpha, sigma), as a new GaussianMixture."""
    mu = alpha * np.asarray(self.means, np.float64)
    covs = alpha**2 * np.asarray(self.covs, np.float64) + sigma**2 * np.eye(self.dim)
    return GaussianMixture(mu.tolist(), covs.tolist(), list(self.weights))

  def mean(self) -> np.ndarray:
    w = np.exp(np.asarray(self._logw, np.float64))
    return w @ np.asarray(self.means, np.float64)

  def cov(self) -> np.ndarray:
    w = np.exp(np.asarray(self._logw, np.float64))
    mu = np.asarray(self.means, np.float64)
    m = w @ mu
    second = np.einsum("k,kij->ij", w, np.asarray(self.covs, np.float64) + np.einsum("ki,kj->kij", mu, mu))
    return second - np.outer(m, m)


@dataclasses.dataclass(frozen=True, eq=False)
class Box1D(Target):
  """Uniform density on a union of disjoint intervals (default [-2, -1] U [1, 2]); 1-D, x is [B, 1].

  Diffused density: p_t(x) = sum_j (1 / (alpha L)) [Phi((x - alpha a_j) / sigma) - Phi((x - alpha b_j) / sigma)],
  L the total length, from int_a^b N(x; alpha y, sigma^2) dy. Evaluated in log space with
  log_ndtr and the reflection Phi(u) - Phi(v) = Phi(-v) - Phi(-u), stable in both tails.
  """

  intervals: Sequence = ((-2.0, -1.0), (1.0, 2.0))

  def __post_init__(self):
    iv = np.asarray(self.intervals, np.float64)
    if iv.ndim != 2 or iv.shape[1] != 2 or np.any(iv[:, 1] <= iv[:, 0]):
      raise ValueError(f"data.intervals={iv.tolist()} must be [[a, b], ...] with a < b.")
    iv = iv[np.argsort(iv[:, 0])]
    if np.any(iv[1:, 0] < iv[:-1, 1]):
      raise ValueError(f"data.intervals={iv.tolist()} must not overlap.")
    object.__setattr__(self, "_iv", jnp.asarray(iv, jnp.float32))
    object.__setattr__(self, "_length", float(np.sum(iv[:, 1] - iv[:, 0])))

  dim = 1

  def sample(self, key: Array, n: int) -> Array:
    lengths = self._iv[:, 1] - self._iv[:, 0]
    key_c, key_u = jax.random.split(key)
    j = jax.random.categorical(key_c, jnp.log(lengths), shape=(n,))
    u = jax.random.uniform(key_u, (n,))
    return (self._iv[j, 0] + u * lengths[j])[:, None]

  def log_prob_t(self, x, alpha, sigma):
    a, s = _per_example(alpha, x), _per_example(sigma, x)
    lo, hi = a * self._iv[None, :, 0], a * self._iv[None, :, 1]  # [B, J]
    xs = x[:, :1]
    s_safe = jnp.where(s > 0, s, 1.0)
    u, v = (xs - lo) / s_safe, (xs - hi) / s_safe  # u > v
    # log(Phi(u) - Phi(v)), reflecting to the lower tail where v > 0.
    flip = v > 0
    hi_arg, lo_arg = jnp.where(flip, -v, u), jnp.where(flip, -u, v)
    log_hi = log_ndtr(hi_arg)
    log_mass = log_hi + jnp.log1p(-jnp.exp(jnp.minimum(log_ndtr(lo_arg) - log_hi, -1e-30)))
    # sigma = 0: the undiffused indicator.
    inside = (xs >= lo) & (xs <= hi)
    log_mass = jnp.where(s > 0, log_mass, jnp.where(inside, 0.0, -jnp.inf))
    return logsumexp(log_mass, axis=-1) - jnp.log(a[:, 0] * self._length)

  def mean(self) -> np.ndarray:
    iv = np.asarray(self._iv, np.float64)
    return np.array([np.sum((iv[:, 1] ** 2 - iv[:, 0] ** 2) / 2) / self._length])

  def cov(self) -> np.ndarray:
    iv = np.asarray(self._iv, np.float64)
    second = np.sum((iv[:, 1] ** 3 - iv[:, 0] ** 3) / 3) / self._length
    return np.array([[second - self.mean()[0] ** 2]])
