"""The linear forward SDE: its generic marginals, prior, discretisation and reverse process.

Every SDE here is linear in x (Song et al. 2021, Sec. 3.4 and App. B):

    dx = f(t) x dt + g(t) dW,    p_t(x | x0) = N(x; alpha(t) x0, sigma(t)^2 I),

so each class only states its drift coefficient, its diffusion g(t), the mean scale
alpha(t) and the std sigma(t) of the perturbation kernel, and its prior. Everything
else (the score of a diffused Gaussian, the reverse SDE, the probability-flow ODE,
log-SNR schedules) is generic.

Shapes: `x` is [B, ...], `t` is [B]; per-example coefficients are [B] and are
broadcast against `x` with `utils.bcast`.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from utils import bcast as _bcast

Array = jax.Array
ScoreFn = Callable[[Array, Array], Array]


def _check(cond: bool, field: str, value, allowed: str) -> None:
  if not cond:
    raise ValueError(f"sde.{field}={value!r} is invalid: {allowed}.")


def _gaussian_logp(z: Array, std: float | Array) -> Array:
  """log N(z; 0, std^2 I) summed over all non-batch axes; returns [B]."""
  d = np.prod(z.shape[1:])
  sq = jnp.sum(jnp.reshape(z, (z.shape[0], -1)) ** 2, axis=-1)
  return -0.5 * d * jnp.log(2 * jnp.pi * std**2) - 0.5 * sq / std**2


@dataclasses.dataclass(frozen=True)
class SDE(abc.ABC):
  """A linear forward SDE dx = f(t) x dt + g(t) dW on [0, T], discretised in N steps."""

  N: int

  def __post_init__(self):
    _check(isinstance(self.N, (int, np.integer)) and self.N >= 2, "N", self.N,
           "the number of discretisation steps must be an integer >= 2")

  @property
  def T(self) -> float:
    """End time of the forward process."""
    return 1.0

  # --- what each SDE defines -------------------------------------------------
  @abc.abstractmethod
  def drift_coeff(self, t: Array) -> Array:
    """f(t) in the drift f(t) x; [B]."""

  @abc.abstractmethod
  def diffusion(self, t: Array) -> Array:
    """g(t); [B]."""

  @abc.abstractmethod
  def marginal_coeffs(self, t: Array) -> tuple[Array, Array]:
    """(alpha(t), sigma(t)) of p_t(x | x0) = N(alpha x0, sigma^2 I); each [B]."""

  @property
  @abc.abstractmethod
  def prior_std(self) -> float:
    """The prior is N(0, prior_std^2 I)."""

  # --- generic ---------------------------------------------------------------
  def sde(self, x: Array, t: Array) -> tuple[Array, Array]:
    """Drift f(t) x ([B, ...]) and diffusion g(t) ([B]) of the forward SDE."""
    return _bcast(self.drift_coeff(t), x) * x, self.diffusion(t)

  def marginal_prob(self, x0: Array, t: Array) -> tuple[Array, Array]:
    """Mean ([B, ...]) and std ([B]) of the perturbation kernel p_t(x | x0)."""
    alpha, sigma = self.marginal_coeffs(t)
    return _bcast(alpha, x0) * x0, sigma

  def log_snr(self, t: Array) -> Array:
    """lambda(t) = log(alpha(t) / sigma(t)), decreasing in t."""
    alpha, sigma = self.marginal_coeffs(t)
    return jnp.log(alpha) - jnp.log(sigma)

  def prior_sampling(self, key: Array, shape: tuple[int, ...]) -> Array:
    """Draws from the prior N(0, prior_std^2 I)."""
    return self.prior_std * jax.random.normal(key, shape)

  def prior_logp(self, z: Array) -> Array:
    """log density of the prior at z, summed over dimensions; [B]."""
    return _gaussian_logp(z, self.prior_std)

  def discretize(self, x: Array, t: Array) -> tuple[Array, Array]:
    """One forward step of the N-step discretisation: x_{i+1} = x_i + f + G z.

    Default: Euler-Maruyama with dt = T / N. Returns f [B, ...] and G [B].
    """
    dt = self.T / self.N
    drift, diffusion = self.sde(x, t)
    return drift * dt, diffusion * jnp.sqrt(dt)

  def discrete_index(self, t: Array) -> Array:
    """Index i in {0..N-1} of the discretisation level nearest to t; [B] int32."""
    return jnp.round(t * (self.N - 1) / self.T).astype(jnp.int32)

  def langevin_alpha(self, t: Array) -> Array:
    """The alpha_i factor in the Langevin corrector step size (App. G, Alg. 4-5)."""
    return jnp.ones_like(t)

  def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> "ReverseSDE":
    """The reverse-time SDE (Eq. 6) or the probability-flow ODE (Eq. 13)."""
    return ReverseSDE(self, score_fn, probability_flow)


@dataclasses.dataclass(frozen=True)
class ReverseSDE:
  """dx = [f(x, t) - c g(t)^2 score(x, t)] dt + g_rev(t) dW_bar, run from T to 0.

  c = 1 and g_rev = g for the reverse SDE (Song et al. Eq. 6); c = 1/2 and
  g_rev = 0 for the probability-flow ODE (Eq. 13).
  """

  forward: SDE
  score_fn: ScoreFn
  probability_flow: bool = False

  @property
  def N(self) -> int:
    return self.forward.N

  @property
  def T(self) -> float:
    return self.forward.T

  def sde(self, x: Array, t: Array) -> tuple[Array, Array]:
    """Drift [B, ...] and diffusion [B] of the reverse process (time runs backwards)."""
    drift, diffusion = self.forward.sde(x, t)
    c = 0.5 if self.probability_flow else 1.0
    drift = drift - _bcast(diffusion**2, x) * self.score_fn(x, t) * c
    return drift, (jnp.zeros_like(diffusion) if self.probability_flow else diffusion)

  def discretize(self, x: Array, t: Array) -> tuple[Array, Array]:
    """Reverse of `forward.discretize`: x_{i-1} = x_i - f_rev + G_rev z (App. E, Eq. 46)."""
    f, G = self.forward.discretize(x, t)
    c = 0.5 if self.probability_flow else 1.0
    f_rev = f - _bcast(G**2, x) * self.score_fn(x, t) * c
    return f_rev, (jnp.zeros_like(G) if self.probability_flow else G)


def t_of_log_snr(sde: "SDE", lam: Array, *, t_max: float | None = None,
                 n_iters: int = 64) -> Array:
  """The inverse t(lambda) of the decreasing log-SNR lambda(t) = log(alpha_t / sigma_t).

  Vectorised bisection on [0, t_max] (any SDE, no closed form needed); float32 bisection
  stops moving once the bracket is one ulp wide. t_max defaults to 2 T, which leaves room
  for EDM's churn (sigma_hat <= sqrt(2) sigma_edm(T)); lambdas outside the bracket clip to it.
  """
  t_max = 2.0 * sde.T if t_max is None else t_max
  lam = jnp.asarray(lam, jnp.float32)

  def bisect(_, bracket):
    lo, hi = bracket
    mid = 0.5 * (lo + hi)
    later = sde.log_snr(mid.reshape(-1)).reshape(mid.shape) > lam  # lambda decreases: t > mid
    return jnp.where(later, mid, lo), jnp.where(later, hi, mid)

  lo, hi = jax.lax.fori_loop(0, n_iters, bisect, (jnp.zeros_like(lam), jnp.full_like(lam, t_max)))
  t = jax.lax.stop_gradient(0.5 * (lo + hi))
  # The implicit-function derivative dt/dlambda = 1 / lambda'(t), so grids in lambda can be
  # optimised through the samplers (the value is the bisection's, unchanged).
  _, dlam_dt = jax.jvp(lambda u: sde.log_snr(u.reshape(-1)).reshape(u.shape), (t,), (jnp.ones_like(t),))
  return t + (lam - jax.lax.stop_gradient(lam)) / jax.lax.stop_gradient(dlam_dt)
