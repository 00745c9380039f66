"""Log-likelihoods via the probability-flow ODE, bits/dim, and the prior mismatch.

The probability-flow ODE dx/dt = v(x, t) = f(x, t) - g(t)^2 s(x, t) / 2 (Song et al. 2021,
Eq. 13) transports p_eps to p_T. Along a trajectory x_t the log density obeys the
instantaneous change of variables (Chen et al. 2018, Thm. 1; Song et al. App. D.2)

    d log p_t(x_t) / dt = -div_x v(x_t, t),

so with delta = int_eps^T div_x v(x_t, t) dt, integrated jointly with x from x_eps = x,

    log p_eps(x) = log p_T(z) + delta,      z = x_T.

The model's log-likelihood replaces the unknown p_T by the prior: nll = -(log prior(z) + delta).
For the exact flow (the oracle score) the difference is, per point,

    nll(x) - (-log p_eps(x)) = log p_T(z) - log prior(z)      (the prior mismatch),

whose mean over the data is KL(p_T || prior) (`prior_kl`). The divergence is computed
exactly (d Jacobian-vector products, for low dimension) or estimated with Hutchinson's
trace estimator u^T (dv/dx) u (Hutchinson 1989; Grathwohl et al. 2019), one probe per
example drawn from the key and held fixed along the path, which keeps the ODE smooth and
the estimate of the integral unbiased.

Discrete data (images of L integer levels) get a likelihood through uniform dequantisation:
`dequantize` maps level k to a uniform point of its cell in the data range, and
`bits_per_dim` / `dequantized_bits_per_dim` turn the continuous NLL of those points into an
upper bound on the discrete model's bits/dim (derivation in `bits_per_dim`).
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import sampling
import sde_lib

Array = jax.Array
ScoreFn = Callable[[Array, Array], Array]

HUTCHINSON_TYPES = ("exact", "rademacher", "gaussian")


# --- divergence of the probability-flow drift ------------------------------------------

def _exact_divergence(drift: Callable[[Array], Array], x: Array) -> tuple[Array, Array]:
  """v(x) [B, ...] and div v(x) [B] from d Jacobian-vector products J e_k, k = 1..d.

  The score acts per example, so the Jacobian of the batch is block diagonal and one JVP
  with e_k in every row gives column k of every example's Jacobian. `linearize` evaluates
  the drift (the score) once; the d JVPs reuse it. Memory O(d * B * d): low dimension only.
  """
  v, jvp = jax.linearize(drift, x)
  b, d = x.shape[0], math.prod(x.shape[1:])
  basis = jnp.broadcast_to(jnp.eye(d, dtype=x.dtype).reshape((d, 1) + x.shape[1:]), (d,) + x.shape)
  cols = jax.vmap(jvp)(basis).reshape(d, b, d)  # cols[k, b, j] = d v_j / d x_k of example b
  return v, jnp.trace(cols, axis1=0, axis2=2)


def _hutchinson_divergence(drift: Callable[[Array], Array], x: Array,
                           probe: Array) -> tuple[Array, Array]:
  """v(x) and the unbiased estimate u^T (dv/dx) u [B] from one JVP with the probe u (E[u u^T] = I)."""
  v, jv = jax.jvp(drift, (x,), (probe,))
  return v, jnp.sum(jnp.reshape(probe * jv, (x.shape[0], -1)), axis=-1)


def _probes(key: Array, x: Array, hutchinson_type: str) -> Array:
  """One probe per example, row i drawn from fold_in(key, i) (independent of the batch size)."""
  keys = sampling.per_sample_keys(key, x.shape[0])
  draw = {"rademacher": jax.random.rademacher, "gaussian": jax.random.normal}[hutchinson_type]
  return jax.vmap(lambda k: draw(k, x.shape[1:], x.dtype))(keys)


# --- the likelihood function -----------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("sde", "hutchinson_type", "method", "n_steps",
                                             "max_steps", "prior_logp"))
def _nll(key, score_fn, x, rtol, atol, t_start, t_end, *, sde, hutchinson_type, method, n_steps,
         max_steps, prior_logp):
  drift = sampling.pf_ode_drift(sde, score_fn)
  probe = None if hutchinson_type == "exact" else _probes(key, x, hutchinson_type)

  def vector_field(t, y):
    f = functools.partial(drift, t)
    return _exact_divergence(f, y[0]) if probe is None else _hutchinson_divergence(f, y[0], probe)

  y0 = (x, jnp.zeros(x.shape[:1], x.dtype))
  (z, delta), nfe = sampling.solve_ode(vector_field, y0, t_start, t_end, solver=method, rtol=rtol,
                                       atol=atol, n_steps=n_steps, max_steps=max_steps)
  logp_T = sde.prior_logp(z) if prior_logp is None else prior_logp(z)
  return -(logp_T + delta), z, nfe


def get_likelihood_fn(sde: sde_lib.SDE, *, hutchinson_type: str = "exact", rtol: float = 1e-5,
                      atol: float = 1e-5, method: str = "tsit5", eps: float = 1e-5,
                      n_steps: int | None = None, max_steps: int = 4096,
                      prior_logp: Callable[[Array], Array] | None = None) -> Callable:
  """Negative log-likelihood by the probability-flow ODE (Song et al. App. D.2).

  Integrates [x, delta] jointly from eps to T with

      dx/dt = v(x, t) = f(x, t) - g(t)^2 s(x, t) / 2,      d delta/dt = div_x v(x, t),

  from x_eps = x, delta = 0, and returns nll = -(log prior(z) + delta), z = x_T, an
  estimate of -log p_eps(x) that is exact up to the prior mismatch log p_T(z) - log prior(z)
  (see the module docstring) and the solver error. p_eps differs from the data density p_0
  by O(sigma(eps)^2) (sigma(1e-5) ~ 1e-4 for VESDE(0.01, 50), 1e-3 for VPSDE).

  The adaptive step size is shared by the batch (diffrax integrates it as one state; see
  `sampling.solve_ode`). Compilation: once per (sde, hutchinson_type, method, n_steps,
  max_steps, prior_logp), x's shape and the score function's identity; rtol, atol, eps and
  the score's bound arrays (`functools.partial(model_score_fn, params)`) are traced.

  Args:
    sde: the forward SDE.
    hutchinson_type: "exact" (full divergence, d JVPs per evaluation, low dimension),
      "rademacher" or "gaussian" (one fixed probe per example, 1 JVP per evaluation).
    rtol, atol: tolerances of the adaptive step control.
    method: ODE solver, a name in `sampling.ODE_SOLVERS`.
    eps: start time (> 0; the score is singular at t = 0).
    n_steps: None (adaptive) or a number of fixed steps.
    max_steps: step budget of the adaptive solve.
    prior_logp: log density of z [B, ...] -> [B] used in place of `sde.prior_logp` (e.g. the
      true log p_T of a toy target, which removes the prior mismatch).

  Returns:
    nll_fn(key, score_fn, x, rtol=None, atol=None) -> (nll [B] in nats per example,
    z [B, ...], nfe), nfe counting every drift (score) evaluation, rejected steps included;
    key draws the Hutchinson probes (unused, may be None, for "exact").

  Raises:
    ValueError: unknown hutchinson_type or method, eps outside (0, T), bad tolerances or steps.
  """
  if hutchinson_type not in HUTCHINSON_TYPES:
    raise ValueError(f"likelihood.hutchinson_type={hutchinson_type!r} is unknown; "
                     f"valid: {list(HUTCHINSON_TYPES)}.")
  if not (isinstance(eps, numbers.Real) and 0.0 < eps < sde.T):
    raise ValueError(f"likelihood.eps={eps!r} must lie in (0, T={sde.T}).")
  sampling.check_ode_args(method, rtol, atol, n_steps, max_steps, group="likelihood",
                          solver_field="method")
  static = dict(sde=sde, hutchinson_type=hutchinson_type, method=method, n_steps=n_steps,
                max_steps=int(max_steps), prior_logp=prior_logp)
  defaults = (rtol, atol)

  def nll_fn(key, score_fn, x, rtol=None, atol=None):
    tol = sampling._tolerances(rtol, atol, *defaults)
    x = jnp.asarray(x, jnp.promote_types(jnp.asarray(x).dtype, jnp.float32))
    return _nll(key, sampling.as_pytree_fn(score_fn), x, *tol, jnp.float32(eps), jnp.float32(sde.T),
                **static)

  return nll_fn


# --- bits per dimension ---------------------------------------------------------------

DATA_RANGES = {"[0,1]": (0.0, 1.0), "[-1,1]": (-1.0, 1.0)}


def _as_range(data_range, field: str = "likelihood.data_range") -> tuple[float, float]:
  """(lo, hi) from "[0,1]", "[-1,1]" or a pair of finite numbers lo < hi."""
  if isinstance(data_range, str) and data_range in DATA_RANGES:
    return DATA_RANGES[data_range]
  ok = (isinstance(data_range, (tuple, list)) and len(data_range) == 2
        and all(isinstance(v, numbers.Real) and math.isfinite(v) for v in data_range)
        and data_range[0] < data_range[1])
  if not ok:
    raise ValueError(f"{field}={data_range!r} is unknown; valid: {list(DATA_RANGES)} or a pair "
                     "(lo, hi) of finite numbers with lo < hi.")
  return float(data_range[0]), float(data_range[1])


def _check_n_bins(n_bins) -> None:
  if not (isinstance(n_bins, (int, np.integer)) and not isinstance(n_bins, bool) and n_bins >= 2):
    raise ValueError(f"likelihood.n_bins={n_bins!r} must be an integer >= 2.")


def dequantization_offset(n_bins: int, data_range) -> float:
  """log(n_bins / (hi - lo)) nats per dimension: the term `bits_per_dim` adds (see there)."""
  _check_n_bins(n_bins)
  lo, hi = _as_range(data_range)
  return math.log(n_bins) - math.log(hi - lo)


def bits_per_dim(nll: Array, dim: int, *, data_range: str | tuple[float, float] | None = "[-1,1]",
                 n_bins: int = 256) -> Array:
  """Converts a continuous NLL (nats per example) of dequantised n_bins-level data to bits/dim.

  Derivation. Let k in {0, ..., L - 1}^D (L = n_bins) be the integer data, w = k + u with
  u ~ U[0, 1)^D its uniform dequantisation, and y = lo + (hi - lo) w / L the data as the model
  sees it (`dequantize`), so each level k owns the cell [lo + (hi - lo) k / L, lo + (hi - lo)
  (k + 1) / L) of width (hi - lo) / L. The discrete model P(k) = int_{[0,1)^D} p_W(k + u) du
  satisfies, by Jensen, log P(k) >= E_u[log p_W(k + u)], and by the change of variables
  p_W(w) = p_Y(y) ((hi - lo) / L)^D (Theis et al. 2016; Ho et al. 2019, Sec. 3.1). Hence

      -log P(k) <= E_u[-log p_Y(y)] + D log(L / (hi - lo)),

      bpd = (nll / D + log(L) - log(hi - lo)) / ln 2,

  i.e. +8 bits/dim for [0, 1] and +7 for [-1, 1] with 256 levels (as in Song et al.'s
  evaluation), log2(17) - 1 for 17-level digits on [-1, 1]. The bound is tight for a density
  constant on each dequantisation cell; e.g. the uniform density (hi - lo)^-D on the data range
  gives exactly log2(L) bits/dim whatever the range. data_range=None gives continuous
  bits/dim, nll / (D ln 2), with no offset.

  Args:
    nll: negative log-likelihood in nats per example, any shape (e.g. E_u[-log p_Y(y)]).
    dim: D, the number of dimensions per example.
    data_range: "[0,1]", "[-1,1]", a pair (lo, hi), or None (continuous data, no offset).
    n_bins: L, the number of quantisation levels (256 for 8-bit data, 17 for sklearn digits).

  Returns:
    Bits per dimension, shaped like nll.

  Raises:
    ValueError: unknown data_range, dim < 1 or n_bins < 2.
  """
  if data_range is not None:
    _as_range(data_range)
  if not (isinstance(dim, (int, np.integer)) and dim >= 1):
    raise ValueError(f"dim={dim!r} must be an integer >= 1.")
  _check_n_bins(n_bins)
  nats = jnp.asarray(nll) / dim
  if data_range is not None:
    nats = nats + dequantization_offset(n_bins, data_range)
  return nats / math.log(2.0)


def _check_levels(images, n_bins: int) -> np.ndarray:
  """images as int32 numpy [N, ...], or a ValueError unless integer-valued in 0..n_bins - 1."""
  x = np.asarray(images)
  if x.ndim < 2 or x.shape[0] < 1 or not np.issubdtype(x.dtype, np.number):
    raise ValueError(f"images.shape={x.shape} (dtype {x.dtype}) is invalid: must be a numeric "
                     "array [N, ...] with N >= 1 and at least one axis per example.")
  if not (np.all(np.isfinite(x)) and np.all(x == np.round(x)) and x.min() >= 0
          and x.max() <= n_bins - 1):
    raise ValueError(f"images hold values in [{x.min()!r}, {x.max()!r}]: they must be the integer "
                     f"levels 0..{n_bins - 1} (n_bins={n_bins}), before any scaling.")
  return x.astype(np.int32)


def dequantize(key: Array, k, *, n_bins: int,
               data_range: str | tuple[float, float] = (-1.0, 1.0)) -> Array:
  """Uniform dequantisation of integer levels into the model's continuous data range.

      y = lo + (hi - lo) (k + u) / L,      u ~ U[0, 1)^D,

  so y is uniform on the cell of level k (see `bits_per_dim`). The noise of example i is drawn
  from fold_in(key, i), so it does not depend on how the data are batched.

  Args:
    key: PRNG key.
    k: integer levels [N, ...] in 0..n_bins - 1 (ints or integer-valued floats).
    n_bins: L, the number of levels.
    data_range: "[0,1]", "[-1,1]" or a pair (lo, hi).

  Returns:
    y, float32 [N, ...].

  Raises:
    ValueError: bad n_bins or data_range, or k not integer levels in 0..n_bins - 1.
  """
  _check_n_bins(n_bins)
  lo, hi = _as_range(data_range)
  k = _check_levels(k, n_bins)
  return _dequantize(key, k, jnp.float32(lo), jnp.float32((hi - lo) / n_bins))


@jax.jit
def _dequantize(key, k, lo, width):
  """lo + width (k + u) with u ~ U[0, 1)^D drawn per example from fold_in(key, i)."""
  keys = sampling.per_sample_keys(key, k.shape[0])
  u = jax.vmap(lambda key_i: jax.random.uniform(key_i, k.shape[1:], jnp.float32))(keys)
  return lo + width * (k.astype(jnp.float32) + u)


def dequantized_bits_per_dim(key: Array, nll_fn: Callable, score_fn: ScoreFn, images, *,
                             n_bins: int, data_range: str | tuple[float, float] = (-1.0, 1.0),
                             batch_size: int = 256) -> dict:
  """Bits/dim of integer-level data (e.g. a test split) by the dequantisation bound.

  Each image is dequantised once, y = `dequantize(key_u, images)`, its continuous NLL
  -log p_Y(y) is computed by `nll_fn` (the probability-flow ODE), and `bits_per_dim` adds the
  offset D log(L / (hi - lo)). The mean over images is an unbiased estimate of the bound
  E_{k, u}[...] >= E_k[-log2 P(k)] / D, with the standard error of the per-image values
  (which include the dequantisation and Hutchinson noise).

  Batches of `batch_size` images run one after another (one compilation: the last batch is
  padded with the first images, whose results are dropped). key_u, key_probe = split(key);
  batch j's Hutchinson probes come from fold_in(key_probe, j).

  Args:
    key: PRNG key (dequantisation noise and Hutchinson probes).
    nll_fn: from `get_likelihood_fn`; nll_fn(key, score_fn, y) -> (nll [B], z, nfe).
    score_fn: score_fn(y, t), the model's score on the continuous data range.
    images: integer levels [N, ...] in 0..n_bins - 1 (e.g. raw digits 0..16, [N, 8, 8, 1]).
    n_bins: L, the number of levels (17 for sklearn digits, 256 for 8-bit images).
    data_range: the model's data range (lo, hi) (or "[0,1]" / "[-1,1]").
    batch_size: images per ODE solve.

  Returns:
    {"bpd": mean bits/dim, "bpd_stderr", "nll_nats": mean continuous NLL per image,
     "offset_bits": log2(L / (hi - lo)), "n", "dim", "n_bins", "nfe": total score evaluations},
    python numbers.

  Raises:
    ValueError: bad n_bins, data_range or batch_size, or images not integer levels (before
      anything is compiled).
  """
  _check_n_bins(n_bins)
  lo, hi = _as_range(data_range)
  if not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1):
    raise ValueError(f"batch_size={batch_size!r} must be an integer >= 1.")
  levels = _check_levels(images, n_bins)
  key_u, key_probe = jax.random.split(key)
  y = dequantize(key_u, levels, n_bins=n_bins, data_range=(lo, hi))
  n, dim, b = levels.shape[0], math.prod(levels.shape[1:]), min(int(batch_size), levels.shape[0])
  nll, nfe = [], 0
  for j, start in enumerate(range(0, n, b)):
    batch = y[start:start + b]
    m = batch.shape[0]
    batch = jnp.concatenate([batch, y[:b - m]]) if m < b else batch
    out, _, batch_nfe = nll_fn(jax.random.fold_in(key_probe, j), score_fn, batch)
    nll.append(np.asarray(out, np.float64)[:m])
    nfe += int(batch_nfe)
  nll = np.concatenate(nll)
  offset = dequantization_offset(n_bins, (lo, hi))
  bpd = (nll / dim + offset) / math.log(2.0)
  stderr = float(bpd.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
  return {"bpd": float(bpd.mean()), "bpd_stderr": stderr, "nll_nats": float(nll.mean()),
          "offset_bits": offset / math.log(2.0), "n": int(n), "dim": int(dim),
          "n_bins": int(n_bins), "nfe": nfe}


# --- prior mismatch --------------------------------------------------------------------

def prior_mismatch(sde: sde_lib.SDE, log_prob_fn: Callable[[Array, Array], Array], z: Array) -> Array:
  """log p_T(z) - log prior(z) per example [B]: NLL_ode(x) - (-log p_eps(x)) for the exact flow.

  Args:
    sde: the forward SDE (its T and prior).
    log_prob_fn: log_prob_fn(x, t) -> [B], the diffused target's log density
      (`target.log_prob_fn(sde)`).
    z: latents [B, ...] (the ODE's x_T).

  Returns:
    [B] nats.
  """
  return log_prob_fn(z, jnp.full(z.shape[:1], sde.T, z.dtype)) - sde.prior_logp(z)


def prior_kl(key: Array, sde: sde_lib.SDE, target, *, n: int = 100_000) -> dict:
  """Monte Carlo KL(p_T || prior) = E_{z ~ p_T}[log p_T(z) - log prior(z)] for a toy target.

  z = alpha(T) x0 + sigma(T) noise with x0 ~ target; p_T from `target.log_prob_fn(sde)`.
  This is the mean prior-mismatch term of an exact-flow NLL over the data (the per-point
  terms are evaluated at the ODE latents z = x_T of data points, which are p_T-distributed).

  Args:
    key: PRNG key.
    sde: the forward SDE.
    target: has `sample(key, n)` and `log_prob_fn(sde)` (e.g. `datasets.GaussianMixture`).
    n: Monte Carlo samples.

  Returns:
    {"kl": the estimate, "stderr": its standard error}, python floats (nats).

  Raises:
    ValueError: n < 2.
  """
  if not (isinstance(n, (int, np.integer)) and n >= 2):
    raise ValueError(f"n={n!r} must be an integer >= 2.")
  values = np.asarray(_prior_mismatch_samples(key, sde=sde, target=target, n=int(n)), np.float64)
  return {"kl": float(values.mean()), "stderr": float(values.std(ddof=1) / math.sqrt(n))}


@functools.partial(jax.jit, static_argnames=("sde", "target", "n"))
def _prior_mismatch_samples(key, *, sde, target, n):
  """log p_T(z) - log prior(z) at n draws z ~ p_T; [n]."""
  key_x, key_z = jax.random.split(key)
  x0 = target.sample(key_x, n)
  mean, std = sde.marginal_prob(x0, jnp.full((n,), sde.T, x0.dtype))
  z = mean + sde_lib._bcast(std, x0) * jax.random.normal(key_z, x0.shape, x0.dtype)
  return prior_mismatch(sde, target.log_prob_fn(sde), z)


def gaussian_prior_kl(sde: sde_lib.SDE, mean, cov) -> float:
  """Closed-form KL(p_T || prior) for a Gaussian target N(mean, cov) (float64).

  p_T = N(alpha m, alpha^2 S + sigma^2 I) at T and prior N(0, s^2 I), so
  KL = (tr C / s^2 + |mu|^2 / s^2 - d + d log s^2 - log det C) / 2, C = alpha^2 S + sigma^2 I.

  Args:
    sde: the forward SDE (alpha(T), sigma(T) and the prior std s).
    mean: m [d].
    cov: S [d, d], positive definite.

  Returns:
    The KL in nats, a python float.
  """
  m, S = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
  alpha, sigma = (float(v[0]) for v in sde.marginal_coeffs(jnp.full((1,), sde.T)))
  mu, C = alpha * m, alpha**2 * S + sigma**2 * np.eye(m.shape[0])
  s2, d = sde.prior_std**2, m.shape[0]
  return 0.5 * (np.trace(C) / s2 + mu @ mu / s2 - d + d * math.log(s2) - np.linalg.slogdet(C)[1])
