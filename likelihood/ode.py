"""Log-likelihoods via the probability-flow ODE (Song et al. 2021, App. D.2), and the prior mismatch.

Integrating dx/dt = f - g^2 s / 2 with d delta/dt = div_x v from x_eps = x to z = x_T gives
log p_eps(x) = log p_T(z) + delta (Chen et al. 2018, Thm. 1); the model replaces p_T by the prior,
so an exact flow's NLL is off by the prior mismatch log p_T(z) - log prior(z), whose mean is
KL(p_T || prior). The divergence is exact (d JVPs) or Hutchinson's estimate with one fixed probe
per example (Grathwohl et al. 2019). Derivation: docs/likelihood.md.
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
from utils import bcast, check_int, per_sample_keys

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
  keys = per_sample_keys(key, x.shape[0])
  draw = {"rademacher": jax.random.rademacher, "gaussian": jax.random.normal}[hutchinson_type]
  return jax.vmap(lambda k: draw(k, x.shape[1:], x.dtype))(keys)


# --- the likelihood function -----------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("sde", "hutchinson_type", "solver", "n_steps",
                                             "max_steps", "prior_logp"))
def _nll(key, score_fn, x, rtol, atol, t_start, t_end, *, sde, hutchinson_type, solver, n_steps,
         max_steps, prior_logp):
  drift = sampling.pf_ode_drift(sde, score_fn)
  probe = None if hutchinson_type == "exact" else _probes(key, x, hutchinson_type)

  def vector_field(t, y):
    f = functools.partial(drift, t)
    return _exact_divergence(f, y[0]) if probe is None else _hutchinson_divergence(f, y[0], probe)

  y0 = (x, jnp.zeros(x.shape[:1], x.dtype))
  (z, delta), nfe = sampling.solve_ode(vector_field, y0, t_start, t_end, solver=solver, rtol=rtol,
                                       atol=atol, n_steps=n_steps, max_steps=max_steps)
  logp_T = sde.prior_logp(z) if prior_logp is None else prior_logp(z)
  return -(logp_T + delta), z, nfe


def get_likelihood_fn(sde: sde_lib.SDE, *, hutchinson_type: str = "exact", rtol: float = 1e-5,
                      atol: float = 1e-5, solver: str = "tsit5", eps: float = 1e-5,
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
  `sampling.solve_ode`). Compilation: once per (sde, hutchinson_type, solver, n_steps,
  max_steps, prior_logp), x's shape and the score function's identity; rtol, atol, eps and
  the score's bound arrays (`functools.partial(model_score_fn, params)`) are traced.

  Args:
    sde: the forward SDE.
    hutchinson_type: "exact" (full divergence, d JVPs per evaluation, low dimension),
      "rademacher" or "gaussian" (one fixed probe per example, 1 JVP per evaluation).
    rtol, atol: tolerances of the adaptive step control.
    solver: ODE solver, a name in `sampling.ODE_SOLVERS`.
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
    ValueError: unknown hutchinson_type or solver, eps outside (0, T), bad tolerances or steps.
  """
  if hutchinson_type not in HUTCHINSON_TYPES:
    raise ValueError(f"likelihood.hutchinson_type={hutchinson_type!r} is unknown; "
                     f"valid: {list(HUTCHINSON_TYPES)}.")
  if not (isinstance(eps, numbers.Real) and 0.0 < eps < sde.T):
    raise ValueError(f"likelihood.eps={eps!r} must lie in (0, T={sde.T}).")
  sampling.check_ode_args(solver, rtol, atol, n_steps, max_steps, group="likelihood")
  static = dict(sde=sde, hutchinson_type=hutchinson_type, solver=solver, n_steps=n_steps,
                max_steps=int(max_steps), prior_logp=prior_logp)
  defaults = (rtol, atol)

  def nll_fn(key, score_fn, x, rtol=None, atol=None):
    tol = sampling.tolerances(rtol, atol, *defaults)
    x = jnp.asarray(x, jnp.promote_types(jnp.asarray(x).dtype, jnp.float32))
    return _nll(key, sampling.as_pytree_fn(score_fn), x, *tol, jnp.float32(eps), jnp.float32(sde.T),
                **static)

  return nll_fn


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
  check_int("n", n, 2)
  values = np.asarray(_prior_mismatch_samples(key, sde=sde, target=target, n=int(n)), np.float64)
  return {"kl": float(values.mean()), "stderr": float(values.std(ddof=1) / math.sqrt(n))}


@functools.partial(jax.jit, static_argnames=("sde", "target", "n"))
def _prior_mismatch_samples(key, *, sde, target, n):
  """log p_T(z) - log prior(z) at n draws z ~ p_T; [n]."""
  key_x, key_z = jax.random.split(key)
  x0 = target.sample(key_x, n)
  mean, std = sde.marginal_prob(x0, jnp.full((n,), sde.T, x0.dtype))
  z = mean + bcast(std, x0) * jax.random.normal(key_z, x0.shape, x0.dtype)
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
