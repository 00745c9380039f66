"""The variational bound of the discrete DDPM chain (Ho et al. 2020, Eq. 5) and its Gaussian terms."""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr

import sde_lib
from utils import bcast as _bcast, check_int, fold, per_sample_keys

Array = jax.Array
DECODERS = ("gaussian", "discretized")


def normal_kl(mean1: Array, var1: Array, mean2: Array, var2: Array) -> Array:
  """Elementwise KL(N(mean1, var1) || N(mean2, var2)).

      KL = [log(var2 / var1) + (var1 + (mean1 - mean2)^2) / var2 - 1] / 2.
  """
  return 0.5 * (jnp.log(var2) - jnp.log(var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1.0)


def gaussian_nll(x: Array, mean: Array, var: Array) -> Array:
  """Elementwise -log N(x; mean, var) = [log(2 pi var) + (x - mean)^2 / var] / 2."""
  return 0.5 * (jnp.log(2 * jnp.pi * var) + (x - mean) ** 2 / var)


def discretized_gaussian_log_likelihood(x: Array, mean: Array, std: Array) -> Array:
  """Elementwise log-probability of 8-bit data under a discretised Gaussian (Ho et al. 2020, Eq. 13).

  Data lie on the 256 levels {-1, -1 + 2/255, ..., 1} of [-1, 1]; level x owns the bin
  [x - 1/255, x + 1/255], the edge bins extended to -inf (x = -1) and +inf (x = 1):

      log P(x) = log [Phi((x + 1/255 - mean) / std) - Phi((x - 1/255 - mean) / std)].

  Evaluated in log space (log_ndtr, reflecting a bin right of the mean to the lower tail), stable
  in both tails. Bins narrower than 1e-3 std, where the difference of two CDFs loses float32
  digits, use the midpoint rule w N(x; mean, std^2): relative error (w / std)^2 |z^2 - 1| / 24,
  < 1e-6 for |z| < 5, z = (x - mean) / std.
  """
  x, mean, std = jnp.broadcast_arrays(*(jnp.asarray(v, jnp.float32) for v in (x, mean, std)))
  plus, minus = (x + 1.0 / 255 - mean) / std, (x - 1.0 / 255 - mean) / std
  flip = minus > 0  # Phi(p) - Phi(m) = Phi(-m) - Phi(-p): both arguments on the lower tail
  hi, lo = jnp.where(flip, -minus, plus), jnp.where(flip, -plus, minus)
  log_hi = log_ndtr(hi)
  log_mid = log_hi + jnp.log(-jnp.expm1(jnp.minimum(log_ndtr(lo) - log_hi, -1e-37)))
  narrow = (plus - minus) < 1e-3
  z = (x - mean) / std
  log_mid = jnp.where(narrow, -0.5 * z**2 - 0.5 * math.log(2 * math.pi) + jnp.log(plus - minus), log_mid)
  return jnp.where(x < -0.999, log_ndtr(plus), jnp.where(x > 0.999, log_ndtr(-minus), log_mid))


def _gauss_hermite(order: int, d: int) -> tuple[np.ndarray, np.ndarray]:
  """Nodes [order^d, d] and weights [order^d] of the product Gauss-Hermite rule for N(0, I_d)."""
  z, w = np.polynomial.hermite_e.hermegauss(order)
  w = w / np.sqrt(2 * np.pi)
  grids = np.meshgrid(*([z] * d), indexing="ij")
  weights = np.prod(np.meshgrid(*([w] * d), indexing="ij"), axis=0)
  return np.stack([g.ravel() for g in grids], axis=-1), weights.ravel()


def get_vlb_fn(schedule: sde_lib.DiscreteSchedule, *, variance: str = "beta_tilde", decoder: str = "gaussian",
               n_samples: int = 1, quadrature_order: int = 0) -> Callable:
  """The variational bound on -log p_theta(x_0) of the reverse chain (Ho et al. 2020, Eq. 5):

      L = L_T + sum_{t=2}^T L_{t-1} + L_0 >= -log p_theta(x_0),
      L_T     = KL(q(x_T | x_0) || N(0, I)),
      L_{t-1} = E_{q(x_t | x_0)} KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)),
      L_0     = E_{q(x_1 | x_0)} [-log p_theta(x_0 | x_1)],

  every KL in closed form (`normal_kl`; mu_tilde - mu_theta = beta_t / sqrt(alpha_t (1 - alpha_bar_t))
  (eps_theta - eps), computed from the noise difference, not from two nearly equal means). Every t
  is evaluated (one network call per t on [B * M, ...], one `lax.scan`); the expectation over
  x_t is Monte Carlo with `n_samples` draws of x_t per t and example (row i, step t from
  fold_in(fold_in(key, i), t)), or, with `quadrature_order` K > 0, the product Gauss-Hermite rule
  with K^d nodes (exact expectation to quadrature accuracy; low dimension only; key unused).
  Decoder p_theta(x_0 | x_1): "gaussian" N(mu_theta(x_1, 1), sigma_1^2 I) for continuous data, or
  "discretized" (`discretized_gaussian_log_likelihood`, 8-bit data in [-1, 1]; Ho et al. Sec. 3.3).
  sigma_t^2 from `sde_lib.reverse_variance`, with sigma_1^2 = beta_tilde_2 for "beta_tilde".

  Args:
    schedule: the chain.
    variance: "beta" or "beta_tilde", the reverse variances sigma_t^2.
    decoder: "gaussian" or "discretized".
    n_samples: Monte Carlo draws of x_t per t and example (ignored with quadrature).
    quadrature_order: K > 0 for Gauss-Hermite quadrature over x_t, 0 for Monte Carlo.

  Returns:
    vlb_fn(key, eps_fn, x0) -> {"total_nats": [B], "bits_per_dim": [B], "terms": {"prior": L_T [B],
    "diffusion": sum_{t>=2} L_{t-1} [B], "decoder": L_0 [B], "per_t": [B, T] (column t - 1:
    L_0 for t = 1, L_{t-1} for t >= 2)}}, with eps_fn(x, t_index [B] int32) -> eps. bits/dim =
    nats / (d ln 2), d the number of data dimensions (a density for "gaussian", a probability
    of the 8-bit levels for "discretized").

  Raises:
    ValueError: unknown variance or decoder, n_samples < 1, quadrature_order < 0.
  """
  var = sde_lib.reverse_variance(schedule, variance, "vlb")
  if decoder not in DECODERS:
    raise ValueError(f"vlb.decoder={decoder!r} is unknown; valid: {list(DECODERS)}.")
  check_int("vlb.n_samples", n_samples, 1)
  check_int("vlb.quadrature_order", quadrature_order, 0)
  T = schedule.T
  # Per-t constants, t = 0..T; the KL branch at t = 1 is unused and given a harmless variance.
  var_t = jnp.asarray(var, jnp.float32)
  kl_var = jnp.asarray(np.where(np.arange(T + 1) >= 2, schedule.beta_tilde, 1.0), jnp.float32)
  coef = jnp.asarray(schedule.coef_eps / np.sqrt(schedule.alpha), jnp.float32)

  def step_terms(diff, x0, t):
    """L_{t-1} (t >= 2) or L_0 (t = 1) [B, M] from diff = mu_tilde - mu_theta (= x0 - mu_theta at t = 1)."""
    axes = tuple(range(2, diff.ndim))
    kl = jnp.sum(normal_kl(diff, kl_var[t], 0.0, var_t[t]), axis=axes)
    if decoder == "gaussian":
      dec = jnp.sum(gaussian_nll(diff, 0.0, var_t[t]), axis=axes)
    else:
      x0 = x0[:, None]
      dec = -jnp.sum(discretized_gaussian_log_likelihood(x0, x0 - diff, jnp.sqrt(var_t[t])), axis=axes)
    return jnp.where(t == 1, dec, kl)

  def vlb_fn(key, eps_fn, x0):
    B, shape1 = x0.shape[0], tuple(x0.shape[1:])
    nodes, weights = _x_t_rule(quadrature_order, n_samples, math.prod(shape1))
    keys = per_sample_keys(key, B) if nodes is None else None
    M = weights.shape[0]

    def term(t):  # the expectation over x_t | x0 of step t's term: [B]
      if nodes is None:
        z = jax.vmap(lambda k: jax.random.normal(k, (M,) + shape1))(fold(keys, t))
      else:
        z = jnp.broadcast_to(nodes.reshape((1, M) + shape1), (B, M) + shape1)
      x0_rep, z_flat = jnp.repeat(x0, M, axis=0), z.reshape((B * M,) + shape1)
      t_b = jnp.full((B * M,), t, jnp.int32)
      mean, std = schedule.q_mean_std(x0_rep, t_b)
      eps = eps_fn(mean + _bcast(std, x0_rep) * z_flat, t_b)
      diff = (coef[t] * (eps - z_flat)).reshape(z.shape)
      return jnp.sum(step_terms(diff, x0, t) * weights, axis=1)

    per_t = jax.lax.map(term, jnp.arange(1, T + 1)).T  # [B, T]
    mean_T, std_T = schedule.q_mean_std(x0, jnp.full((B,), T, jnp.int32))
    prior = jnp.sum(normal_kl(mean_T, _bcast(std_T**2, x0), 0.0, 1.0).reshape(B, -1), axis=-1)
    total = prior + jnp.sum(per_t, axis=1)
    terms = {"prior": prior, "diffusion": jnp.sum(per_t[:, 1:], axis=1), "decoder": per_t[:, 0], "per_t": per_t}
    return {"total_nats": total, "bits_per_dim": total / (math.prod(shape1) * math.log(2.0)), "terms": terms}

  return vlb_fn


def _x_t_rule(quadrature_order: int, n_samples: int, d: int) -> tuple[Array | None, Array]:
  """(nodes [K^d, d] or None for Monte Carlo, weights [M]) of the expectation over x_t | x0."""
  if not quadrature_order:
    return None, jnp.full((n_samples,), 1.0 / n_samples, jnp.float32)
  if quadrature_order**d > 4096:
    raise ValueError(f"vlb.quadrature_order={quadrature_order} needs {quadrature_order}^{d} nodes per "
                     "example and step; use Monte Carlo (quadrature_order=0) in this dimension.")
  nodes, weights = _gauss_hermite(quadrature_order, d)
  return jnp.asarray(nodes, jnp.float32), jnp.asarray(weights, jnp.float32)


def vlb_summary(out: dict, *, oracle: dict | None = None, true_nll: Array | None = None) -> dict:
  """Means of a `get_vlb_fn` result as python floats, for eval/summary.json.

  Args:
    out: the model's bound.
    oracle: optionally the bound with the exact eps (`models.exact_eps_fn`) on the same points and keys.
    true_nll: optionally -log p_data(x0) [B] of the same points.

  Returns:
    {"nats", "bits_per_dim", "prior", "diffusion", "decoder"} means over points, plus
    "oracle_nats", "oracle_bits_per_dim", "true_nll_nats", "gap_nats" (mean bound - mean true NLL),
    "oracle_gap_nats" where given.
  """
  mean = lambda a: float(np.mean(np.asarray(a, np.float64)))
  s = {"nats": mean(out["total_nats"]), "bits_per_dim": mean(out["bits_per_dim"]),
       **{k: mean(out["terms"][k]) for k in ("prior", "diffusion", "decoder")}}
  if oracle is not None:
    s.update(oracle_nats=mean(oracle["total_nats"]), oracle_bits_per_dim=mean(oracle["bits_per_dim"]))
  if true_nll is not None:
    s.update(true_nll_nats=mean(true_nll), gap_nats=s["nats"] - mean(true_nll))
    if oracle is not None:
      s["oracle_gap_nats"] = s["oracle_nats"] - mean(true_nll)
  return s
