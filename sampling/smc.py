"""Sequential Monte Carlo for y = A x + sigma_y n: the twisted diffusion sampler (TDS; Wu et al. 2023,
"Practical and asymptotically exact conditional sampling in diffusion models", Alg. 1).

K particles per observation follow the reverse chain with a guided (twisted) proposal and carry
importance weights that make the particle system target p(x_0 | y) under the discretised
reverse chain, whatever the twisting function; the bias of one particle drawn by the final
weights vanishes as K grows (Wu et al. 2023), leaving the unconditional chain's own
discretisation error."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

import sde_lib
import utils
from sampling.base import as_pytree_fn, check_common, tweedie_denoise
from sampling.inverse import JACOBIANS, guided_terms
from sampling.operators import LinearOperator
from utils import bcast, fold, per_sample_keys

Array = jax.Array


class _Particles(NamedTuple):
  x: Array  # [B, K, ...]
  logw: Array  # [B, K]
  score: Array  # s(x, t), [B, K, ...]
  grad: Array  # grad_x log p~_t(y | x), [B, K, ...]
  ll: Array  # log p~_t(y | x), [B, K]


def _systematic(key: Array, logw: Array) -> Array:
  """Systematic resampling: K ancestor indices from log weights [K]."""
  K = logw.shape[0]
  u = (jax.random.uniform(key) + jnp.arange(K)) / K
  return jnp.minimum(jnp.searchsorted(jnp.cumsum(jax.nn.softmax(logw)), u), K - 1)


def _maybe_resample(keys: Array, p: _Particles, threshold: float) -> _Particles:
  """Per chain: resample (weights reset to equal) where ESS = 1 / sum w^2 < threshold K."""
  K = p.logw.shape[1]
  w = jax.nn.softmax(p.logw, axis=1)
  do = 1.0 / jnp.sum(w**2, axis=1) < threshold * K  # [B]
  idx = jax.vmap(_systematic)(keys, p.logw)
  idx = jnp.where(do[:, None], idx, jnp.arange(K)[None, :])
  take = jax.vmap(lambda a, i: a[i])
  logw = jnp.where(do[:, None], 0.0, p.logw)
  return _Particles(take(p.x, idx), logw, take(p.score, idx), take(p.grad, idx), take(p.ll, idx))


class _Model(NamedTuple):
  """What one step needs: the SDE, the score, the operator and the twisting settings."""
  sde: sde_lib.SDE
  score_fn: Callable
  op: LinearOperator
  y: Array  # [B K, *out_shape] (repeated per particle)
  sigma_y: float
  data_var: Array  # v of r_t^2, one per particle [B K]
  jacobian: str = "model"  # d x0_hat / d x_t of the twist's gradient (`inverse.guided_terms`)

  def terms(self, x: Array, t: float):
    """Score, twisting gradient and log twist at x [B, K, ...], all particles in one batch."""
    B, K = x.shape[:2]
    flat = x.reshape((B * K,) + x.shape[2:])
    s, g, ll = guided_terms(self.sde, self.score_fn, self.op, self.y, self.sigma_y, self.data_var, flat,
                            jnp.full((B * K,), t), self.jacobian)
    return s.reshape(x.shape), g.reshape(x.shape), ll.reshape(B, K)


def _smc_step(m: _Model, keys: Array, p: _Particles, t: float, s: float, threshold: float) -> _Particles:
  """Resample if needed, propose x_s ~ N(mu_p + G^2 grad log p~_t, G^2) and reweight by
  p(x_s | x_t) p~_s(y | x_s) / (q(x_s | x_t) p~_t(y | x_t)) (Wu et al. 2023, Alg. 1)."""
  p = _maybe_resample(fold(keys, 1), p, threshold)
  B, K = p.logw.shape
  flat = lambda a: a.reshape((B * K,) + a.shape[2:])
  f, G = m.sde.discretize(flat(p.x), jnp.full((B * K,), t))  # reverse diffusion (Song et al. App. E)
  G2 = bcast(G**2, f).reshape((B, K) + (1,) * (p.x.ndim - 2))
  mean_p = p.x - f.reshape(p.x.shape) + G2 * p.score
  mean_q = mean_p + G2 * p.grad
  z = jax.vmap(lambda k: jax.random.normal(k, p.x.shape[1:], p.x.dtype))(fold(keys, 0))
  x = mean_q + jnp.sqrt(G2) * z
  sum_k = lambda a: jnp.sum(a.reshape(B, K, -1), -1)
  log_ratio = -0.5 * sum_k(((x - mean_p) ** 2 - (x - mean_q) ** 2) / G2)  # log p(x_s | x_t) - log q
  score, grad, ll = m.terms(x, s)
  return _Particles(x, p.logw + log_ratio + ll - p.ll, score, grad, ll)


def model_data_var(sde: sde_lib.SDE, score_fn: Callable, x: Array, t: Array, keys: Array,
                   n_probes: int = 16) -> Array:
  """The data variance v = tr Cov[x0] / D as the score model sees it, per chain [B] from its K
  particles x [B, K, ...] at t = T: by second-order Tweedie, Cov[x0 | x_t] =
  sigma_t^2 / alpha_t d x0_hat / d x_t, which at t = T (x_t nearly independent of x0) is Cov[x0];
  its trace by n_probes Rademacher probes per particle, averaged over the chain's particles."""
  B, K, D = x.shape[0], x.shape[1], x[0, 0].size
  flat = x.reshape((B * K,) + x.shape[2:])
  alpha, sigma = sde.marginal_coeffs(jnp.asarray(t))
  denoise = lambda x_: tweedie_denoise(sde, score_fn, x_, jnp.full((B * K,), t))
  _, jvp = jax.linearize(denoise, flat)
  z = jax.vmap(lambda k: jax.random.rademacher(k, (n_probes, K) + x.shape[2:], x.dtype))(keys)  # [B, P, K, ...]
  z = jnp.moveaxis(z, 1, 0).reshape((n_probes, B * K) + x.shape[2:])
  quad = jax.vmap(lambda v: jnp.sum((v * jvp(v)).reshape(B, K, -1), -1))(z)  # [P, B, K]
  return jnp.maximum(sigma**2 / alpha * jnp.mean(quad, (0, 2)) / D, 1e-6)


def _smc(m: _Model, key: Array, shape, K: int, ts: Array, threshold: float):
  """The whole sampler: particles from the prior to eps, final exact-likelihood weights, one draw."""
  sde, B = m.sde, shape[0]
  keys = per_sample_keys(key, B)
  x = jax.vmap(lambda k: sde.prior_sampling(k, (K,) + tuple(shape[1:])))(fold(keys, 0))
  if m.data_var is None:
    m = m._replace(data_var=jnp.repeat(model_data_var(sde, m.score_fn, x, ts[0], fold(keys, 3)), K))
  score, grad, ll = m.terms(x, ts[0])
  p = _Particles(x, ll, score, grad, ll)
  step_keys = fold(keys, 1)

  def body(p, k):
    return _smc_step(m, fold(step_keys, k), p, ts[k], ts[k + 1], threshold), None

  p, _ = jax.lax.scan(body, p, jnp.arange(ts.shape[0] - 1))
  alpha, sigma = sde.marginal_coeffs(ts[-1])
  x0 = (p.x + sigma**2 * p.score) / alpha  # Tweedie at eps, from the stored score
  flat = x0.reshape((B * K,) + x0.shape[2:])
  exact = m.op.log_likelihood(m.y, flat, 0.0, m.sigma_y).reshape(B, K)  # p(y | x0) replaces p~_eps
  logw = p.logw + exact - p.ll
  pick = jax.vmap(lambda k, lw: jax.random.categorical(k, lw))(fold(keys, 2), logw)
  return jax.vmap(lambda a, i: a[i])(x0, pick)


def get_smc_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], operator: LinearOperator, *, sigma_y: float,
                    n_particles: int = 16, data_var: float | None = None, resample_threshold: float = 0.5,
                    eps: float = 1e-3, jacobian: str = "model") -> Callable:
  """The twisted diffusion sampler (Wu et al. 2023): K = n_particles particles per output sample.

  Twisting function p~_t(y | x_t) = N(y; A x0_hat(x_t), r_t^2 A A^T + sigma_y^2 I)
  (`inverse.guided_terms`), proposal = the reverse-diffusion step (Song et al. 2021, App. E)
  with the score s + grad log p~_t, on t_k = T + k (eps - T) / N (N = sde.N). Each step
  resamples (systematic) where the effective sample size falls below resample_threshold K,
  proposes and reweights; at eps, x0 = Tweedie's estimate and p~_eps is replaced by the exact
  likelihood N(y; A x0, sigma_y^2 I), and one particle is drawn by the final weights. Output
  row i uses fold_in(key, i) only.

  r_t^2 = v sigma_t^2 / (alpha_t^2 v + sigma_t^2) is Var[x0 | x_t] for N(0, v I) data. By
  default (data_var=None) v is the data variance tr Cov[x0] / D as the score model sees it
  (`model_data_var`, from each chain's K prior particles at T): a v below the data's variance
  makes the twist overconfident at high noise, so the intermediate weights degenerate onto the
  wrong particles (benchmarks/RESULTS.md, "Linear inverse problems"). NFE per output sample =
  K (N + 1), each with a vector-Jacobian product, plus K for the estimate of v (with 16 JVPs).

  Args:
    sde: the forward SDE.
    shape: [B, *operator.in_shape], B output samples.
    operator: a `sampling.operators` operator.
    sigma_y: the observation noise standard deviation, > 0 (the final weights are the likelihood).
    n_particles: K.
    data_var: v of r_t^2 in the twisting function; None: estimated from the score model.
    resample_threshold: resample where ESS < resample_threshold K; in [0, 1].
    eps: end time.
    jacobian: "model" (the twist's gradient through the score model, a vector-Jacobian product per
      particle and step) or "gaussian" (through the Jacobian of N(mu, v I) data, no backward pass;
      the weights stay those of the twist, so only the proposal changes; `inverse.guided_terms`).

  Returns:
    sampler(key, score_fn, y) -> (x [B, ...], nfe); y [B, *operator.out_shape].

  Raises:
    ValueError: bad settings (sigma_y must be > 0); at call time, y of the wrong shape.
  """
  shape = check_common(sde, shape, eps)
  if not isinstance(operator, LinearOperator):
    raise ValueError(f"operator={operator!r} must be a sampling.operators.LinearOperator.")
  operator.check_x_shape(shape)
  sigma_y = utils.check_real("sigma_y", sigma_y, low=0.0, low_open=True)
  K = utils.check_int("n_particles", n_particles, 1)
  if data_var is not None:
    data_var = utils.check_real("data_var", data_var, low=0.0, low_open=True)
  threshold = utils.check_real("resample_threshold", resample_threshold, low=0.0, high=1.0)
  utils.check_choice("jacobian", jacobian, JACOBIANS)
  ts = jnp.linspace(sde.T, eps, sde.N + 1)

  @jax.jit
  def run(key, score_fn, y):
    m = _Model(sde, score_fn, operator, jnp.repeat(y, K, axis=0), sigma_y, data_var, jacobian)
    return _smc(m, key, shape, K, ts, threshold), K * (sde.N + 1 + (data_var is None))

  def sampler(key, score_fn, y):
    operator.check_y(y, shape[0])
    return run(key, as_pytree_fn(score_fn), jnp.asarray(y))

  return sampler
