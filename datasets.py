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

Image datasets (`Digits`, `NpzImages`, both `ImageDataset`s) have no exact density; they
hold the integer train images on device and draw dequantised, scaled batches there (see
`ImageDataset`). They are pytrees whose leaves are those arrays, so a jitted train step can
take the dataset as an argument instead of baking the images into the executable.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr, logsumexp

from utils import DATA_RANGES, Registry

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


# --- image datasets -----------------------------------------------------------------------

DIGITS_N_TEST = 297  # of 1,797; the rest (1,500) train
DIGITS_SPLIT_SEED = 0


class _Identity:
  """Pytree aux data: the dataset's static fields and host arrays, compared by the identity
  of the dataset they were built with (a token copied into every unflattened copy)."""

  def __init__(self, obj):
    self.obj = obj

  def __eq__(self, other):
    return isinstance(other, _Identity) and other.obj._token is self.obj._token

  def __hash__(self):
    return id(self.obj._token)


class ImageDataset:
  """Integer images u in {0, ..., levels - 1}^(H x W x C) with a fixed train/test split.

  Training batches are drawn on device: random indices, a gather, uniform dequantisation
  and scaling to the data range,

      x = a (u + v) / levels + b,   v ~ U[0, 1)^D,   (a, b) = (2, -1) for [-1, 1], (1, 0) for [0, 1],

  and optional horizontal flips. x lies in the half-open cell [a u / levels + b, a (u + 1) / levels + b),
  so `quantize` recovers u exactly, and a density p_X on these x gives the discrete
  likelihood bound of `likelihood.bits_per_dim` with n_bins = levels (Theis et al. 2016).
  Without dequantisation, x is the cell centre, v = 1/2.

  Subclasses set, in __post_init__: `levels`, `_train_x` (uint8 device array [N, H, W, C]),
  `_train_y` (int32 [N], -1 where unlabelled), `test_x` / `test_y` (numpy), `has_labels`.
  """

  data_range: str
  dequantize: bool
  random_flip: bool
  levels: int

  def _init_arrays(self, train_x: np.ndarray, train_y, test_x: np.ndarray, test_y, levels: int) -> None:
    if self.data_range not in DATA_RANGES:
      raise ValueError(f"data.data_range={self.data_range!r} is unknown; valid: {list(DATA_RANGES)}.")
    has_labels = train_y is not None
    set_ = functools.partial(object.__setattr__, self)
    set_("_token", object())
    set_("levels", int(levels))
    set_("has_labels", has_labels)
    set_("_train_x", jnp.asarray(train_x, jnp.uint8))
    set_("_train_y", jnp.asarray(train_y if has_labels else np.full(len(train_x), -1), jnp.int32))
    set_("test_x", np.asarray(test_x, np.uint8))
    set_("test_y", None if test_y is None else np.asarray(test_y, np.int64))

  @property
  def shape(self) -> tuple[int, int, int]:
    """One example's shape (H, W, C)."""
    return tuple(int(s) for s in self._train_x.shape[1:])

  @property
  def dim(self) -> int:
    return math.prod(self.shape)

  @property
  def n_train(self) -> int:
    return int(self._train_x.shape[0])

  @property
  def train_x(self) -> np.ndarray:
    """The integer train images [N, H, W, C] (host copy)."""
    return np.asarray(self._train_x)

  @property
  def train_y(self) -> np.ndarray:
    return np.asarray(self._train_y)

  @property
  def num_classes(self) -> int:
    """1 + the largest label (0 without labels)."""
    return int(self.train_y.max()) + 1 if self.has_labels else 0

  def _affine(self) -> tuple[float, float]:
    """(a, b) = (hi - lo, lo) of the data range (lo, hi): x = a w / levels + b."""
    lo, hi = DATA_RANGES[self.data_range]
    return hi - lo, lo

  @property
  def data_bounds(self) -> tuple[float, float]:
    """The data range as (lo, hi)."""
    return DATA_RANGES[self.data_range]

  def scale(self, u: Array, v: Array | float = 0.5) -> Array:
    """x = a (u + v) / levels + b: integer images u and offsets v in [0, 1) to the data range."""
    a, b = self._affine()
    return a * (jnp.asarray(u, jnp.float32) + v) / self.levels + b

  def quantize(self, x: Array) -> Array:
    """The integer image u whose cell holds x (the inverse of `scale`), clipped to 0..levels-1; int32."""
    a, b = self._affine()
    return jnp.clip(jnp.floor((x - b) / a * self.levels), 0, self.levels - 1).astype(jnp.int32)

  def to_unit(self, x: Array) -> Array:
    """x in the data range mapped to [0, 1] (for plotting)."""
    a, b = self._affine()
    return (x - b) / a

  def dequantized(self, key: Array, u: Array) -> Array:
    """u + v, v ~ U[0, 1), scaled (or the cell centres without `dequantize`); float32, shaped like u."""
    if not self.dequantize:
      return self.scale(u)
    return self.scale(u, jax.random.uniform(key, u.shape))

  def sample_with_labels(self, key: Array, n: int) -> tuple[Array, Array]:
    """n training images [n, H, W, C] (dequantised, scaled, maybe flipped) and labels [n] (-1: none)."""
    key_i, key_v, key_f = jax.random.split(key, 3)
    idx = jax.random.randint(key_i, (n,), 0, self.n_train)
    x = self.dequantized(key_v, self._train_x[idx])
    if self.random_flip:
      flip = jax.random.bernoulli(key_f, 0.5, (n, 1, 1, 1))
      x = jnp.where(flip, x[:, :, ::-1, :], x)
    return x, self._train_y[idx]

  def sample(self, key: Array, n: int) -> Array:
    """n training images; [n, H, W, C]."""
    return self.sample_with_labels(key, n)[0]

  def _tree_flatten(self):
    return (self._train_x, self._train_y), _Identity(self)

  @classmethod
  def _tree_unflatten(cls, aux: _Identity, leaves):
    obj = object.__new__(cls)
    obj.__dict__.update(aux.obj.__dict__)
    object.__setattr__(obj, "_train_x", leaves[0])
    object.__setattr__(obj, "_train_y", leaves[1])
    return obj


def _register_image_dataset(cls):
  jax.tree_util.register_pytree_node(cls, cls._tree_flatten, cls._tree_unflatten)
  return cls


@_register_image_dataset
@dataclasses.dataclass(frozen=True, eq=False)
class Digits(ImageDataset):
  """The 8x8 handwritten digits of scikit-learn (UCI optdigits; 1,797 images, grey levels 0..16).

  Shipped with scikit-learn, so nothing is downloaded. Fixed split: a permutation of the
  1,797 images by numpy's default_rng(0); the first 297 are the test set, the other 1,500
  the train set. levels = 17, shape (8, 8, 1); labels 0..9.
  """

  data_range: str = "[-1,1]"
  dequantize: bool = True
  random_flip: bool = False

  def __post_init__(self):
    from sklearn.datasets import load_digits  # only when the digits are used

    bunch = load_digits()
    u = np.rint(bunch.images).astype(np.uint8)[..., None]
    perm = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(u))
    test, train = perm[:DIGITS_N_TEST], perm[DIGITS_N_TEST:]
    self._init_arrays(u[train], bunch.target[train], u[test], bunch.target[test], levels=17)


def _load_npz_array(path: str, f, key: str, *, ndim: int, dtype) -> np.ndarray:
  a = np.asarray(f[key])
  if a.ndim != ndim or a.dtype != dtype:
    want = "[N, H, W, C]" if ndim == 4 else "[N]"
    raise ValueError(f"data.path={path!r}: array {key!r} must be {np.dtype(dtype).name} {want}; "
                     f"got {a.dtype} with shape {a.shape}.")
  return a


@_register_image_dataset
@dataclasses.dataclass(frozen=True, eq=False)
class NpzImages(ImageDataset):
  """Images from a user's .npz: `x` uint8 [N, H, W, C], optional `y` integer labels [N],
  and optionally a test split `x_test` (and `y_test`); e.g. CIFAR-10 or MNIST saved as a file.

  Without `x_test`, a fixed split holds out `n_test` images (a permutation by
  default_rng(0)). `levels` is the number of grey levels (256 for 8-bit images); every
  value must be below it.
  """

  path: str = ""
  data_range: str = "[-1,1]"
  dequantize: bool = True
  random_flip: bool = False
  levels: int = 256
  n_test: int = 1000

  def __post_init__(self):
    if not self.path or not os.path.isfile(self.path):
      raise ValueError(f"data.path={self.path!r} is not a file; give a .npz with x (uint8 [N, H, W, C]).")
    try:
      f = np.load(self.path, allow_pickle=False)
    except Exception as e:  # numpy raises several types for a file that is not an npz
      raise ValueError(f"data.path={self.path!r} is not a readable .npz: {type(e).__name__}: {e}") from None
    with f:
      if "x" not in f:
        raise ValueError(f"data.path={self.path!r} has no array 'x'; it holds {sorted(f.keys())}.")
      get = functools.partial(_load_npz_array, self.path, f)
      x = get("x", ndim=4, dtype=np.uint8)
      y = self._labels(f, "y", len(x))
      if "x_test" in f:
        x_test, y_test = get("x_test", ndim=4, dtype=np.uint8), self._labels(f, "y_test", None)
      else:
        x, y, x_test, y_test = self._split(x, y)
    if x_test.shape[1:] != x.shape[1:]:
      raise ValueError(f"data.path={self.path!r}: x_test images {x_test.shape[1:]} differ from x {x.shape[1:]}.")
    if not 2 <= self.levels <= 256 or max(int(x.max()), int(x_test.max())) >= self.levels:
      raise ValueError(f"data.levels={self.levels!r} must lie in 2..256 and exceed every value in "
                       f"{self.path!r} (max {max(int(x.max()), int(x_test.max()))}).")
    self._init_arrays(x, y, x_test, y_test, levels=self.levels)

  def _labels(self, f, key: str, n: int | None):
    if key not in f:
      return None
    y = np.asarray(f[key])
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (n is not None and len(y) != n):
      raise ValueError(f"data.path={self.path!r}: {key!r} must be integer labels [N]; "
                       f"got {y.dtype} with shape {y.shape}.")
    return y

  def _split(self, x, y):
    if not isinstance(self.n_test, int) or not 1 <= self.n_test < len(x):
      raise ValueError(f"data.n_test={self.n_test!r} must lie in 1..{len(x) - 1} (the file has no x_test).")
    perm = np.random.default_rng(0).permutation(len(x))
    test, train = perm[:self.n_test], perm[self.n_test:]
    return x[train], None if y is None else y[train], x[test], None if y is None else y[test]


DATASETS = Registry("data", "name")
for _name, _cls in (("gmm", GaussianMixture), ("box1d", Box1D), ("digits", Digits), ("npz", NpzImages)):
  DATASETS.register(_name, _cls)


def is_image_dataset_name(name) -> bool:
  """Whether data.name=`name` is a registered image dataset."""
  return name in DATASETS and issubclass(DATASETS.get(name), ImageDataset)


def is_image_dataset(target) -> bool:
  """Whether `target` is an image dataset (no exact density; images [N, H, W, C])."""
  return isinstance(target, ImageDataset)


def register_dataset(name: str, cls) -> None:
  """Adds a target class to the registry used by `get_dataset` and the configs."""
  DATASETS.register(name, cls)


def get_dataset(name: str, **kwargs) -> Target:
  """Builds a target by registry name; kwargs are its fields.

  Raises:
    ValueError: unknown name or field, or a malformed parameter.
  """
  return DATASETS.build(name, **kwargs)


def get_batch_fn(target, *, labelled: bool = False) -> Callable:
  """batch_fn(data, key, n) -> x [n, ...], or {"x", "y" (int32)} when `labelled`; `data` is the
  dataset passed into the jitted step as an argument (an image dataset), or None to use `target`."""

  def batch_fn(data, key, n):
    source = target if data is None else data
    if labelled:
      x, y = source.sample_with_labels(key, n)
      return {"x": x, "y": y.astype(jnp.int32)}
    return source.sample(key, n)

  return batch_fn
