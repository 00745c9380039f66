"""Pure sample-quality metrics and comparisons against exact (oracle) scores.

Two-sample metrics compare generated samples with true samples:

  * `energy_distance`: the V-statistic 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely & Rizzo
    2013), computed in row chunks so no n x m matrix is ever materialised;
  * `sliced_wasserstein`: the p-Wasserstein distance averaged over random 1-D projections.

For a deterministic sampler and a target with a known density, `sampler_kl` is exact instead:
KL(q || p) through the change of variables of the sampler's map of its prior latent.

Both are biased upwards at finite sample sizes. `metric_floor` measures the value a metric
takes between two independent *true* sample sets (the floor a perfect model reaches), and
`energy_distance_expected_floor` gives that floor analytically for the energy distance:
E|X - X'| (1/n + 1/m). `score_error` measures a score function against the exact score of
a target with a known diffused density (`datasets.GaussianMixture.score_fn`).

For images, `classifier_frechet_distance` is a digits analogue of FID (Heusel et al. 2017):
the Frechet distance between Gaussian fits of a project-trained classifier's features
(`models.digits.DigitsClassifier`) of generated and test images, with its floor (train vs test
at the same n) and the classifier's test accuracy.

Shapes: sample sets are [n, ...]; every non-batch axis is flattened into one feature axis.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import TYPE_CHECKING, Callable

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

if TYPE_CHECKING:
  import sde_lib

Array = jax.Array
SampleFn = Callable[[Array, int], Array]
MetricFn = Callable[[Array, Array, Array], Array]
ScoreFn = Callable[[Array, Array], Array]

# Up to this many features, squared distances are sums of squared coordinate differences
# (exact up to one rounding per term); above it, |a|^2 + |b|^2 - 2 a.b on centred data (a matmul).
_DIRECT_MAX_DIM = 8


def _check(cond: bool, name: str, value, allowed: str) -> None:
  if not cond:
    raise ValueError(f"{name}={value!r} is invalid: {allowed}.")


def _check_samples(x, name: str, min_n: int = 1) -> None:
  shape = tuple(np.shape(x))
  _check(len(shape) >= 1 and shape[0] >= min_n, f"{name}.shape", shape,
         f"must be [n, ...] with n >= {min_n} samples")


def _check_pair(x, y) -> None:
  _check_samples(x, "x")
  _check_samples(y, "y")
  _check(np.shape(x)[1:] == np.shape(y)[1:], "y.shape", tuple(np.shape(y)),
         f"y must have the same trailing (per-sample) shape as x.shape={tuple(np.shape(x))}")


def _flat(x) -> Array:
  """[n, ...] -> [n, d], in at least float32."""
  x = jnp.asarray(x)
  return jnp.reshape(x, (x.shape[0], -1)).astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_int(value, name: str, low: int) -> None:
  _check(isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low,
         name, value, f"must be an integer >= {low}")


def _pairwise_dist(a: Array, b: Array, diag: Array | None = None) -> Array:
  """Euclidean distances [c, m] between rows of a [c, d] and b [m, d]: sqrt of a clamped square.

  diag [c] (optional): for each row, the column holding the same point (or -1); that distance
  is set to exactly zero, which the matmul path only gets to round-off, ~sqrt(eps) |a|.
  """
  if a.shape[1] <= _DIRECT_MAX_DIM:
    # One [c, m] term per coordinate, so XLA fuses everything and no [c, m, d] tensor exists.
    sq = sum((a[:, k, None] - b[None, :, k]) ** 2 for k in range(a.shape[1]))
  else:
    sq = jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None, :] - 2.0 * (a @ b.T)
  dist = jnp.sqrt(jnp.maximum(sq, 0.0))
  if diag is not None:
    dist = jnp.where(jnp.arange(b.shape[0])[None, :] == diag[:, None], 0.0, dist)
  return dist


def _chunked_sum(row_fn: Callable[[Array, Array], Array], rows: Array, chunk_size: int) -> Array:
  """sum_r row_fn(rows, r) over rows [R, d], evaluated `chunk_size` rows at a time.

  row_fn(a [c, d], r [c]) -> [c] gets a chunk of rows and their indices. Rows are zero-padded
  to a multiple of the chunk size and masked; `lax.map` keeps the loop on device. Each chunk
  is reduced to one float32 partial sum and the few partial sums are added, so round-off
  does not grow with the number of rows.
  """
  n_rows, d = rows.shape
  c = min(chunk_size, n_rows)
  k = -(-n_rows // c)
  padded = jnp.zeros((k * c, d), rows.dtype).at[:n_rows].set(rows).reshape(k, c, d)
  index = jnp.arange(k * c).reshape(k, c)

  def chunk_sum(args):
    a, r = args
    return jnp.sum(jnp.where(r < n_rows, row_fn(a, r), 0.0))

  return jnp.sum(jax.lax.map(chunk_sum, (padded, index)))


def _pad_rows(x: Array, length: int) -> tuple[Array, Array]:
  """x [n, d] zero-padded to [length, d], and weights [length]: 1/n on rows of x, 0 on padding."""
  n = x.shape[0]
  weights = jnp.where(jnp.arange(length) < n, 1.0 / n, 0.0).astype(x.dtype)
  return jnp.zeros((length, x.shape[1]), x.dtype).at[:n].set(x), weights


@functools.partial(jax.jit, static_argnames="chunk_size")
def _energy_distance(x: Array, y: Array, chunk_size: int) -> Array:
  # E = mean_i w(x_i) - mean_j w(y_j) with the witness w(z) = mean_j |z - y_j| - mean_j |z - x_j|.
  # The two distances are subtracted element by element, before any summation, so the
  # three O(E|X - X'|) terms of the V-statistic cancel without float32 round-off: the sums
  # only ever see the small differences (E itself is ~E|X - X'| / n near the floor).
  x, y = _flat(x), _flat(y)
  # Distances are translation invariant; centring keeps the |a|^2 + |b|^2 - 2ab path accurate.
  centre = jnp.mean(y, axis=0)
  x, y = x - centre, y - centre
  n, m = x.shape[0], y.shape[0]
  x_pad, w_x = _pad_rows(x, max(n, m))
  y_pad, w_y = _pad_rows(y, max(n, m))

  def row_fn(a, r):
    d_y = _pairwise_dist(a, y_pad, diag=jnp.where(r >= n, r - n, -1))
    d_x = _pairwise_dist(a, x_pad, diag=jnp.where(r < n, r, -1))
    witness = jnp.sum(w_y * d_y - w_x * d_x, axis=1)
    return jnp.where(r < n, 1.0 / n, -1.0 / m) * witness  # rows r >= n are y_{r - n}

  return _chunked_sum(row_fn, jnp.concatenate([x, y]), chunk_size)


def energy_distance(x: ArrayLike, y: ArrayLike, *, chunk_size: int = 2048) -> Array:
  """Energy distance between two sample sets (V-statistic, Szekely & Rizzo 2013).

      E(x, y) = 2/(n m) sum_ij |x_i - y_j| - 1/n^2 sum_ij |x_i - x_j| - 1/m^2 sum_ij |y_i - y_j|,

  with Euclidean norms over the flattened non-batch axes and the zero diagonals included in
  the self terms. The estimate is >= 0 (up to round-off); for two independent sets drawn from the same
  distribution its expectation is E|X - X'| (1/n + 1/m) > 0 (see
  `energy_distance_expected_floor`). Computed as mean_i w(x_i) - mean_j w(y_j) with
  w(z) = mean_j |z - y_j| - mean_j |z - x_j|, so the large terms cancel before round-off.
  Cost: 2 (n + m) max(n, m) distances; memory O(chunk_size * max(n, m)).

  Args:
    x: samples [n, ...].
    y: samples [m, ...], same trailing shape as x.
    chunk_size: rows of the distance matrices computed at once.

  Returns:
    The estimate, a float32 scalar.

  Raises:
    ValueError: empty sets, trailing shapes that differ, or chunk_size < 1.
  """
  _check_int(chunk_size, "chunk_size", 1)
  _check_pair(x, y)
  return _energy_distance(x, y, chunk_size)


@functools.partial(jax.jit, static_argnames="chunk_size")
def _mean_self_distance(x: Array, chunk_size: int) -> Array:
  """U-statistic estimate of E|X - X'|: the mean of |x_i - x_j| over i != j."""
  x = _flat(x)
  n = x.shape[0]
  x = x - jnp.mean(x, axis=0)
  total = _chunked_sum(lambda a, r: jnp.sum(_pairwise_dist(a, x, diag=r), axis=1), x, chunk_size)
  return total / (n * (n - 1))


def energy_distance_expected_floor(x_true: ArrayLike, n: int, m: int, *,
                                   chunk_size: int = 2048) -> float:
  """Expected `energy_distance` between independent sets of n and m true samples.

  Under H0 (both sets from p), E[V-statistic] = E|X - X'| (1/n + 1/m), where E|X - X'| is
  estimated from x_true by the unbiased U-statistic mean_{i != j} |x_i - x_j|.

  Args:
    x_true: true samples [N, ...], N >= 2.
    n: size of the first set.
    m: size of the second set.
    chunk_size: rows of the distance matrix computed at once.

  Returns:
    The expected floor, a python float.

  Raises:
    ValueError: fewer than 2 samples in x_true, n < 1, m < 1 or chunk_size < 1.
  """
  _check_int(n, "n", 1)
  _check_int(m, "m", 1)
  _check_int(chunk_size, "chunk_size", 1)
  _check_samples(x_true, "x_true", min_n=2)
  return float(_mean_self_distance(x_true, chunk_size)) * (1.0 / n + 1.0 / m)


def _quantiles_of_sorted(s: Array, k: int) -> Array:
  """Values [k, P] of sorted columns s [n, P] at levels linspace(0, 1, k), linear interpolation."""
  n = s.shape[0]
  if k == n:
    return s
  pos = jnp.linspace(0.0, n - 1.0, k)
  lo = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, n - 1)
  hi = jnp.minimum(lo + 1, n - 1)
  w = (pos - lo)[:, None]
  return s[lo] * (1.0 - w) + s[hi] * w


@functools.partial(jax.jit, static_argnames="n_projections")
def _sliced_wasserstein(key: Array, x: Array, y: Array, n_projections: int, p: float) -> Array:
  x, y = _flat(x), _flat(y)
  directions = jax.random.normal(key, (n_projections, x.shape[1]), x.dtype)
  directions = directions / jnp.linalg.norm(directions, axis=1, keepdims=True)
  k = min(x.shape[0], y.shape[0])
  qx = _quantiles_of_sorted(jnp.sort(x @ directions.T, axis=0), k)
  qy = _quantiles_of_sorted(jnp.sort(y @ directions.T, axis=0), k)
  per_projection = jnp.mean(jnp.abs(qx - qy) ** p, axis=0)  # W_p^p of each projection
  return jnp.mean(per_projection) ** (1.0 / p)


def sliced_wasserstein(key: Array, x: ArrayLike, y: ArrayLike, *, n_projections: int = 128,
                       p: float = 1) -> Array:
  """Sliced p-Wasserstein distance (Rabin et al. 2011) with random unit directions.

      SW_p(x, y) = ( mean_theta W_p^p(theta.x, theta.y) )^(1/p),

  where the 1-D W_p^p is the mean of |F^-1(q) - G^-1(q)|^p over quantile levels. With n != m,
  both sets are compared at the min(n, m) levels linspace(0, 1, min(n, m)), the sorted
  projections being linearly interpolated (as `jnp.quantile`); with n == m this is the exact
  sorted matching.

  Args:
    key: PRNG key for the directions.
    x: samples [n, ...].
    y: samples [m, ...], same trailing shape as x.
    n_projections: number of random directions.
    p: order of the Wasserstein distance, >= 1.

  Returns:
    The estimate, a float32 scalar.

  Raises:
    ValueError: empty sets, trailing shapes that differ, n_projections < 1 or p < 1.
  """
  _check_int(n_projections, "n_projections", 1)
  _check(isinstance(p, numbers.Real) and not isinstance(p, bool) and p >= 1, "p", p,
         "must be a number >= 1")
  _check_pair(x, y)
  return _sliced_wasserstein(key, x, y, n_projections, float(p))


@jax.jit
def _moments(x: Array) -> tuple[Array, Array]:
  """Sample mean [d] and unbiased sample covariance [d, d] of x [n, ...] flattened to [n, d]."""
  x = _flat(x)
  sample_mean = jnp.mean(x, axis=0)
  r = x - sample_mean
  return sample_mean, r.T @ r / (x.shape[0] - 1)


def mean_cov_error(x: ArrayLike, mean: ArrayLike, cov: ArrayLike) -> dict[str, float]:
  """Errors of the sample mean and the (unbiased) sample covariance against true values.

  Args:
    x: samples [n, ...], n >= 2, flattened to [n, d].
    mean: true mean [d].
    cov: true covariance [d, d].

  Returns:
    {"mean_error": |mean(x) - mean|_2, "cov_error": |cov(x) - cov|_F}, python floats.

  Raises:
    ValueError: fewer than 2 samples, or mean / cov shapes that do not match d.
  """
  _check_samples(x, "x", min_n=2)
  d = math.prod(np.shape(x)[1:])
  mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
  _check(mean.shape == (d,), "mean.shape", mean.shape, f"must be ({d},) for x of {d} features")
  _check(cov.shape == (d, d), "cov.shape", cov.shape, f"must be ({d}, {d}) for x of {d} features")
  sample_mean, sample_cov = (np.asarray(v, np.float64) for v in _moments(x))
  return {"mean_error": float(np.linalg.norm(sample_mean - mean)),
          "cov_error": float(np.linalg.norm(sample_cov - cov))}


def metric_floor(key: Array, sample_fn: SampleFn, n: int, metric: MetricFn, *,
                 n_pairs: int = 5) -> dict:
  """The floor of a two-sample metric: its value between independent true sample sets.

  Draws n_pairs pairs (a, b) of independent sets of n true samples and evaluates
  metric(key_metric, a, b) on each; a perfect model cannot score below the mean on average.

  Args:
    key: PRNG key.
    sample_fn: sample_fn(key, n) -> true samples [n, ...].
    n: size of each set (use the size of the generated set being evaluated).
    metric: metric(key, a, b) -> scalar, e.g. `sliced_wasserstein` or
      `lambda key, a, b: energy_distance(a, b)`.
    n_pairs: number of independent pairs; one pair is too noisy to be a floor.

  Returns:
    {"mean": mean over pairs, "std": sample std over pairs (0 for one pair),
     "values": the n_pairs values}, python floats.

  Raises:
    ValueError: n < 1 or n_pairs < 1.
  """
  _check_int(n, "n", 1)
  _check_int(n_pairs, "n_pairs", 1)
  values = []
  for i in range(n_pairs):
    # fold_in(key, i): pair i does not depend on n_pairs.
    key_a, key_b, key_metric = jax.random.split(jax.random.fold_in(key, i), 3)
    values.append(float(metric(key_metric, sample_fn(key_a, n), sample_fn(key_b, n))))
  std = float(np.std(values, ddof=1)) if n_pairs > 1 else 0.0
  return {"mean": float(np.mean(values)), "std": std, "values": values}


def _as_partial(fn: Callable) -> jax.tree_util.Partial:
  """A callable as a pytree: the function is static (compared by equality), bound arrays are not."""
  return fn if isinstance(fn, jax.tree_util.Partial) else jax.tree_util.Partial(fn)


@functools.partial(jax.jit, static_argnames=("sde", "n", "n_times"))
def _score_error_per_t(key, score_fn, oracle_score_fn, sample_fn, eps, *, sde, n, n_times):
  """(t, weighted_mse(t), relative(t)), each [n_times]; see `score_error`."""

  def at_time(args):
    key_t, t = args
    key_x, key_z = jax.random.split(key_t)
    x0 = sample_fn(key_x, n)
    t_vec = jnp.full((n,), t, x0.dtype)
    mean, std = sde.marginal_prob(x0, t_vec)
    std = jnp.reshape(std, (-1,) + (1,) * (x0.ndim - 1))
    x_t = mean + std * jax.random.normal(key_z, x0.shape, x0.dtype)
    oracle = oracle_score_fn(x_t, t_vec)
    diff = score_fn(x_t, t_vec) - oracle
    return jnp.mean((std * diff) ** 2), jnp.mean(diff**2) / jnp.mean(oracle**2)

  ts = jnp.linspace(eps, sde.T, n_times)
  keys = jax.vmap(lambda k: jax.random.fold_in(key, k))(jnp.arange(n_times))
  return (ts,) + jax.lax.map(at_time, (keys, ts))


def score_error(key: Array, score_fn: ScoreFn, oracle_score_fn: ScoreFn, sde: sde_lib.SDE,
                sample_fn: SampleFn, *, n: int = 2048, n_times: int = 16,
                eps: float = 1e-3) -> dict:
  """Error of a score function against the exact score of the diffused target.

  For each t on the uniform grid linspace(eps, T, n_times), x_t = alpha(t) x0 + sigma(t) z with
  x0 = sample_fn(key_t, n), key_t = fold_in(key, k) for the k-th time, and

      weighted_mse(t) = mean_{examples, dims} ( sigma(t) (s(x_t, t) - s*(x_t, t)) )^2,

  which is exactly the excess of the sigma^2-weighted denoising score-matching loss at t
  (mean over dimensions) over its minimum (Vincent 2011; Song et al. 2021, Eq. 7).
  All times run in one jitted `lax.map`, so the three functions must be traceable. The
  compiled program is cached per function (by equality) and per (sde, n, n_times): pass
  `jax.tree_util.Partial(apply_fn, params)` to evaluate new parameters without recompiling.

  Args:
    key: PRNG key.
    score_fn: score_fn(x [B, ...], t [B]) -> [B, ...], the score under test.
    oracle_score_fn: the exact score, same signature (e.g. `target.score_fn(sde)`).
    sde: an `sde_lib.SDE` (uses `T` and `marginal_prob`; hashable, as the frozen SDEs are).
    sample_fn: sample_fn(key, n) -> data samples x0 [n, ...].
    n: examples per time.
    n_times: number of times on the grid.
    eps: first time of the grid, in [0, T).

  Returns:
    {"weighted_mse": mean over t, "per_t": [n_times], "t": [n_times],
     "relative": mean over t of mean_B |s - s*|^2 / mean_B |s*|^2}, python floats and lists.

  Raises:
    ValueError: n < 1, n_times < 1 or eps outside [0, T).
  """
  _check_int(n, "n", 1)
  _check_int(n_times, "n_times", 1)
  _check(0.0 <= eps < sde.T, "eps", eps, f"must be in [0, T={sde.T})")
  fns = (_as_partial(f) for f in (score_fn, oracle_score_fn, sample_fn))
  out = _score_error_per_t(key, *fns, float(eps), sde=sde, n=n, n_times=n_times)
  ts, per_t, relative = (np.asarray(v, np.float64) for v in out)
  return {"weighted_mse": float(per_t.mean()), "per_t": per_t.tolist(), "t": ts.tolist(),
          "relative": float(relative.mean())}


# --- exact KL of a deterministic sampler -------------------------------------------------

def kl_terms(map_fn: Callable[[Array], Array], log_prob: Callable[[Array], Array],
             prior_logp: Callable[[Array], Array], z: Array) -> Array:
  """Per-sample terms of KL(q || p) for a sampler x = F(z) that maps each sample on its own:

      k(z) = log prior(z) - log |det dF/dz(z)| - log p(F(z)),   KL(q || p) = E_z[k(z)],

  since log q(F(z)) = log prior(z) - log |det dF/dz| (change of variables; F a bijection).
  The per-sample Jacobians come from one `jax.jacfwd` with respect to a shift u shared by the
  batch, F(z + u): row i depends on row i alone, so d/du F(z + u)_i is J_F(z_i). Pure and
  differentiable (e.g. in the parameters of F's time grid).

  Args:
    map_fn: F(z [B, ...]) -> x [B, ...], row-wise.
    log_prob: log p(x) [B] of the target.
    prior_logp: log prior(z) [B].
    z: prior latents [B, ...].

  Returns:
    k(z) [B].
  """
  return _kl_terms_and_signs(map_fn, log_prob, prior_logp, z)[0]


def _kl_terms_and_signs(map_fn, log_prob, prior_logp, z: Array) -> tuple[Array, Array]:
  """(`kl_terms`, sign of det dF/dz [B]): a sign <= 0 marks a latent where F folds or flattens."""
  B, D = z.shape[0], int(np.prod(z.shape[1:]))

  def shifted(u):
    x = map_fn(z + u)
    return x, x

  jac, x = jax.jacfwd(shifted, has_aux=True)(jnp.zeros(z.shape[1:], z.dtype))
  sign, logdet = jnp.linalg.slogdet(jnp.reshape(jac, (B, D, D)))
  return prior_logp(z) - logdet - log_prob(x), sign


def sampler_kl(key: Array, sampler, score_fn: ScoreFn, log_prob: Callable[[Array], Array],
               sde: sde_lib.SDE, *, n_batches: int = 1) -> dict:
  """Exact KL(q || p) of a deterministic sampler's law q against a target with a known density:

      KL(q || p) = E_z[ log prior(z) - log |det J_F(z)| - log p(F(z)) ],   z ~ prior,

  F the sampler as a map of its prior latent x_T (`kl_terms`, J_F by `jax.jacfwd` through the
  whole sampler), Monte Carlo over z only: for a perfect sampler every term is zero, so the
  standard error shrinks with the error. Batch b draws its latents from fold_in(key, b).

  Args:
    key: PRNG key of the latents.
    sampler: a deterministic `sampling.Sampler` of shape [B, ...] (it accepts key=None with x_T).
    score_fn: the score it uses (exact or learned).
    log_prob: log p(x [B, ...]) -> [B] of the target (e.g. `target.log_prob`).
    sde: the forward SDE (its prior: `prior_sampling`, `prior_logp`).
    n_batches: batches of B latents; n = n_batches B.

  Returns:
    {"kl", "se" (standard error of the mean over the n terms), "n", "nfe", "folded"}, python numbers.
    "folded" is the fraction of latents with det J_F <= 0, where the sampler folds the latent space
    (the ODE's own map keeps orientation), so the change of variables and the estimate fail (logged).

  Raises:
    ValueError: a stochastic sampler, or n_batches < 1.
  """
  _check_int(n_batches, "n_batches", 1)
  _check(not getattr(sampler, "needs_key", True), "sampler", sampler,
         "must be deterministic (a map of x_T that takes key=None)")
  score_fn = _as_partial(score_fn)

  @jax.jit
  def batch(k, score_fn):
    z = sde.prior_sampling(k, sampler.shape)
    return _kl_terms_and_signs(lambda x_T: sampler(None, score_fn, x_T=x_T)[0], log_prob, sde.prior_logp, z)

  terms, signs = (np.concatenate(v).astype(np.float64) for v in zip(*jax.device_get(
      [batch(jax.random.fold_in(key, b), score_fn) for b in range(n_batches)])))
  if folded := float(np.mean(signs <= 0)):
    logging.warning("sampler_kl: %s folds %.3g of the latents (det J_F <= 0): invalid KL.", sampler.method, folded)
  nfe = int(sampler(None, score_fn, x_T=jnp.zeros(sampler.shape))[1])
  se = float(np.std(terms, ddof=1) / np.sqrt(terms.size)) if terms.size > 1 else float("nan")
  return {"kl": float(np.mean(terms)), "se": se, "n": int(terms.size), "nfe": nfe, "folded": folded}


# --- Frechet distance in a classifier's feature space (a digits analogue of FID) ----------

def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric PSD matrix by eigh (negative round-off eigenvalues -> 0)."""
  lam, vec = np.linalg.eigh((cov + cov.T) / 2.0)
  return (vec * np.sqrt(np.clip(lam, 0.0, None))) @ vec.T


def frechet_distance_gaussians(mean_a: ArrayLike, cov_a: ArrayLike, mean_b: ArrayLike,
                               cov_b: ArrayLike) -> float:
  """Frechet (2-Wasserstein squared) distance between N(m_a, S_a) and N(m_b, S_b), in float64.

      FD = |m_a - m_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)

  (Dowson & Landau 1982; FID, Heusel et al. 2017). tr (S_a S_b)^1/2 is computed as the sum of
  the square roots of the eigenvalues of the symmetric PSD matrix S_a^1/2 S_b S_a^1/2, so no
  non-symmetric `sqrtm` (and no complex round-off) is involved; singular covariances (fewer
  samples than features) are fine. Tiny negative results of round-off are clipped to 0.

  Args:
    mean_a, mean_b: means [f].
    cov_a, cov_b: covariances [f, f], symmetric positive semi-definite.

  Returns:
    The distance, a python float.

  Raises:
    ValueError: shapes that are not [f] and [f, f] for one f, or non-finite values.
  """
  ma, mb, ca, cb = (np.asarray(v, np.float64) for v in (mean_a, mean_b, cov_a, cov_b))
  f = ma.shape[0] if ma.ndim == 1 else -1
  for name, v, shape in (("mean_a", ma, (f,)), ("mean_b", mb, (f,)), ("cov_a", ca, (f, f)),
                         ("cov_b", cb, (f, f))):
    _check(f >= 1 and v.shape == shape, f"{name}.shape", v.shape, f"must be {shape} (mean_a is [f])")
    _check(bool(np.all(np.isfinite(v))), f"{name} (non-finite entries)", int(np.sum(~np.isfinite(v))),
           "must be finite")
  root_a = _psd_sqrt(ca)
  lam = np.linalg.eigvalsh(root_a @ cb @ root_a)
  fd = np.sum((ma - mb) ** 2) + np.trace(ca) + np.trace(cb) - 2.0 * np.sum(np.sqrt(np.clip(lam, 0.0, None)))
  return float(max(fd, 0.0))


def _gaussian_fit(x, name: str) -> tuple[np.ndarray, np.ndarray]:
  x = np.asarray(x, np.float64)
  _check(x.ndim == 2 and x.shape[0] >= 2, f"{name}.shape", x.shape, "must be [n, f] with n >= 2")
  _check(bool(np.all(np.isfinite(x))), f"{name} (non-finite entries)", int(np.sum(~np.isfinite(x))),
         "must be finite")
  return x.mean(axis=0), np.cov(x, rowvar=False, ddof=1).reshape(x.shape[1], x.shape[1])


def frechet_distance(feats_a: ArrayLike, feats_b: ArrayLike) -> float:
  """Frechet distance between Gaussian fits (sample mean, unbiased covariance) of two feature sets.

  The estimate is biased upwards at finite n (its floor between two independent sets of
  the same distribution is > 0 and shrinks roughly like 1/n), so compare sets of equal size
  against a floor measured at that size (`classifier_frechet_distance`).

  Args:
    feats_a: features [n, f], n >= 2.
    feats_b: features [m, f], m >= 2.

  Returns:
    `frechet_distance_gaussians` of the two fits, a python float.

  Raises:
    ValueError: not [n, f] arrays with the same f and n, m >= 2, or non-finite features.
  """
  ma, ca = _gaussian_fit(feats_a, "feats_a")
  mb, cb = _gaussian_fit(feats_b, "feats_b")
  _check(ma.shape == mb.shape, "feats_b.shape", np.shape(feats_b),
         f"must have the feature size of feats_a.shape={np.shape(feats_a)}")
  return frechet_distance_gaussians(ma, ca, mb, cb)


def classifier_frechet_distance(key: Array, samples: ArrayLike, x_train: ArrayLike,
                                x_test: ArrayLike, *, classifier) -> dict:
  """Frechet distance of generated images to the test split in a classifier's feature space.

      fd       = FD(features(samples), features(x_test)),
      fd_floor = FD(features(x_train[S]), features(x_test)),  S: n = len(samples) train images

  drawn without replacement by `key` (all of them when n >= len(x_train)). The floor is
  what a model reproducing the data distribution exactly would score at the same n (FD's
  finite-sample bias depends on n). The classifier was fitted on the train split, so the
  floor is, if anything, slightly pessimistic (its train features are a little more
  confident), like a model that memorised the train split.

  Args:
    key: PRNG key for the train subset.
    samples: generated images [n, 8, 8, 1] (or [n, 8, 8], [n, 64]) in classifier.data_range;
      values outside it are clipped, non-finite ones set to an end of the range.
    x_train: train-split images, same format and range.
    x_test: test-split images, same format and range.
    classifier: has `features(x) -> [n, f]`, `test_accuracy` and `feature_dim`
      (`models.digits.DigitsClassifier`).

  Returns:
    {"fd", "fd_floor", "classifier_test_accuracy", "n", "n_floor", "n_test", "feature_dim",
     "n_nonfinite" (sample values that were not finite)}, python numbers.

  Raises:
    ValueError: fewer than 2 images in a set, or malformed images (from the classifier).
  """
  sets = {"samples": samples, "x_train": x_train, "x_test": x_test}
  for name, x in sets.items():
    _check_samples(x, name, min_n=2)
  n, n_train = np.shape(samples)[0], np.shape(x_train)[0]
  subset = np.sort(np.asarray(jax.random.permutation(key, n_train)[:min(n, n_train)]))
  feats_test = classifier.features(x_test)
  return {"fd": frechet_distance(classifier.features(samples), feats_test),
          "fd_floor": frechet_distance(classifier.features(np.asarray(x_train)[subset]), feats_test),
          "classifier_test_accuracy": float(classifier.test_accuracy), "n": int(n),
          "n_floor": int(len(subset)), "n_test": int(np.shape(x_test)[0]),
          "feature_dim": int(classifier.feature_dim),
          "n_nonfinite": int(np.sum(~np.isfinite(np.asarray(samples, np.float64))))}
