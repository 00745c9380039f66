"""Forward SDEs, their marginals, priors, discretisations and reverse processes.

Every SDE here is linear in x (Song et al. 2021, Sec. 3.4 and App. B):

    dx = f(t) x dt + g(t) dW,    p_t(x | x0) = N(x; alpha(t) x0, sigma(t)^2 I),

so each class only states its drift coefficient, its diffusion g(t), the mean scale
alpha(t) and the std sigma(t) of the perturbation kernel, and its prior. Everything
else (the score of a diffused Gaussian, the reverse SDE, the probability-flow ODE,
log-SNR schedules) is generic.

Shapes: `x` is [B, ...], `t` is [B]; per-example coefficients are [B] and are
broadcast against `x` with `_bcast`.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ScoreFn = Callable[[Array, Array], Array]


def _bcast(c: Array, x: Array) -> Array:
  """Reshapes a per-example coefficient [B] so that it broadcasts against x [B, ...]."""
  return jnp.reshape(c, (-1,) + (1,) * (x.ndim - 1))


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


def _beta_integral(t: Array, beta_min: float, beta_max: float) -> Array:
  """int_0^t beta(s) ds for the linear schedule beta(s) = beta_min + s (beta_max - beta_min)."""
  return beta_min * t + 0.5 * (beta_max - beta_min) * t**2


@dataclasses.dataclass(frozen=True)
class VESDE(SDE):
  """Variance-exploding SDE (SMLD), Song et al. Eq. 9.

  sigma_geo(t) = sigma_min (sigma_max / sigma_min)^t, dx = sqrt(d sigma_geo^2 / dt) dW.
  The exact perturbation kernel started at t = 0 has variance
  sigma_geo(t)^2 - sigma_min^2 (App. B, Eq. 29); we use it rather than the common
  approximation sigma_geo(t)^2, so marginals and Monte Carlo agree to the last digit.
  Prior: N(0, (sigma_max^2 - sigma_min^2) I), which ignores the data mean.
  """

  sigma_min: float = 0.01
  sigma_max: float = 50.0
  N: int = 1000

  def __post_init__(self):
    super().__post_init__()
    _check(self.sigma_min > 0, "sigma_min", self.sigma_min, "must be > 0")
    _check(self.sigma_max > self.sigma_min, "sigma_max", self.sigma_max,
           f"must be > sigma_min={self.sigma_min}")

  def sigma_geo(self, t: Array) -> Array:
    return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

  def drift_coeff(self, t):
    return jnp.zeros_like(t)

  def diffusion(self, t):
    return self.sigma_geo(t) * jnp.sqrt(2 * math.log(self.sigma_max / self.sigma_min))

  def marginal_coeffs(self, t):
    # sigma_min^2 (r^{2t} - 1) with expm1: no float32 cancellation at small t.
    var = self.sigma_min**2 * jnp.expm1(2 * t * math.log(self.sigma_max / self.sigma_min))
    return jnp.ones_like(t), jnp.sqrt(var)

  @property
  def prior_std(self):
    return math.sqrt(self.sigma_max**2 - self.sigma_min**2)

  def discrete_sigmas(self) -> Array:
    """The SMLD ladder sigma_i = sigma_geo(i / (N - 1)), i = 0..N-1."""
    return self.sigma_geo(jnp.linspace(0.0, 1.0, self.N))

  def discretize(self, x, t):
    """SMLD chain: x_i = x_{i-1} + sqrt(sigma_i^2 - sigma_{i-1}^2) z, with sigma_{-1} = sigma_min."""
    sigmas = self.discrete_sigmas()
    i = self.discrete_index(t)
    prev = jnp.where(i == 0, self.sigma_min, sigmas[jnp.maximum(i - 1, 0)])
    # (s - p)(s + p), not s^2 - p^2: at i = 0, s == p and s - p is exactly 0, whereas XLA may
    # contract s^2 - p^2 into an FMA whose result is +-1e-12, and sqrt of the negative is NaN.
    return jnp.zeros_like(x), jnp.sqrt(jnp.maximum((sigmas[i] - prev) * (sigmas[i] + prev), 0.0))


@dataclasses.dataclass(frozen=True)
class VPSDE(SDE):
  """Variance-preserving SDE (DDPM), Song et al. Eq. 11: dx = -beta(t) x / 2 dt + sqrt(beta(t)) dW.

  alpha(t) = exp(-B(t) / 2), sigma(t)^2 = 1 - exp(-B(t)), B(t) = int_0^t beta. Prior N(0, I).
  """

  beta_min: float = 0.1
  beta_max: float = 20.0
  N: int = 1000

  def __post_init__(self):
    super().__post_init__()
    _check(self.beta_min > 0, "beta_min", self.beta_min, "must be > 0")
    _check(self.beta_max > self.beta_min, "beta_max", self.beta_max,
           f"must be > beta_min={self.beta_min}")

  def beta(self, t: Array) -> Array:
    return self.beta_min + t * (self.beta_max - self.beta_min)

  def drift_coeff(self, t):
    return -0.5 * self.beta(t)

  def diffusion(self, t):
    return jnp.sqrt(self.beta(t))

  def marginal_coeffs(self, t):
    B = _beta_integral(t, self.beta_min, self.beta_max)
    return jnp.exp(-0.5 * B), jnp.sqrt(-jnp.expm1(-B))

  @property
  def prior_std(self):
    return 1.0

  def discrete_betas(self) -> Array:
    """DDPM betas beta_i = beta_min / N + i (beta_max - beta_min) / (N (N - 1)), i = 0..N-1."""
    i = jnp.arange(self.N)
    return self.beta_min / self.N + i * (self.beta_max - self.beta_min) / (self.N * (self.N - 1))

  def discretize(self, x, t):
    """DDPM chain x_{i+1} = sqrt(1 - beta_i) x_i + sqrt(beta_i) z (Ho et al. 2020, Eq. 2)."""
    beta = self.discrete_betas()[self.discrete_index(t)]
    return (_bcast(jnp.sqrt(1.0 - beta), x) - 1.0) * x, jnp.sqrt(beta)

  def langevin_alpha(self, t):
    return 1.0 - self.discrete_betas()[self.discrete_index(t)]


@dataclasses.dataclass(frozen=True)
class SubVPSDE(VPSDE):
  """Sub-VP SDE, Song et al. Eq. 12: dx = -beta x / 2 dt + sqrt(beta(t) (1 - exp(-2 B(t)))) dW.

  alpha(t) = exp(-B(t) / 2), sigma(t) = 1 - exp(-B(t)) (not squared). Prior N(0, I).
  Discretised by Euler-Maruyama.
  """

  def diffusion(self, t):
    B = _beta_integral(t, self.beta_min, self.beta_max)
    return jnp.sqrt(self.beta(t) * -jnp.expm1(-2.0 * B))

  def marginal_coeffs(self, t):
    B = _beta_integral(t, self.beta_min, self.beta_max)
    return jnp.exp(-0.5 * B), -jnp.expm1(-B)

  def discretize(self, x, t):
    return SDE.discretize(self, x, t)

  def langevin_alpha(self, t):
    return SDE.langevin_alpha(self, t)


@dataclasses.dataclass(frozen=True)
class OUSDE(SDE):
  """Ornstein-Uhlenbeck SDE dx = -B x dt + sqrt(R) dW on [0, T].

  alpha(t) = exp(-B t), sigma(t)^2 = R / (2B) (1 - exp(-2 B t)).
  Prior: N(0, R / (2B) (1 - exp(-2 B T)) I), the marginal of a point mass at 0.
  """

  B: float = 1.0
  R: float = 1.0
  T: float = 5.0  # a field here, overriding the base-class property
  N: int = 1000

  def __post_init__(self):
    super().__post_init__()
    _check(self.B > 0, "B", self.B, "must be > 0")
    _check(self.R > 0, "R", self.R, "must be > 0")
    _check(self.T > 0, "T", self.T, "must be > 0")

  def drift_coeff(self, t):
    return -self.B * jnp.ones_like(t)

  def diffusion(self, t):
    return math.sqrt(self.R) * jnp.ones_like(t)

  def marginal_coeffs(self, t):
    var = self.R / (2 * self.B) * -jnp.expm1(-2 * self.B * t)
    return jnp.exp(-self.B * t), jnp.sqrt(var)

  @property
  def prior_std(self):
    return math.sqrt(self.R / (2 * self.B) * -math.expm1(-2 * self.B * self.T))


@dataclasses.dataclass(frozen=True)
class LambdaVESDE(SDE):
  """The VE SDE dx = lam^t dW (the Neuromatch score-model tutorial).

  sigma(t)^2 = int_0^t lam^{2s} ds = (lam^{2t} - 1) / (2 ln lam): exactly zero noise at t = 0.
  Prior: N(0, sigma(1)^2 I).
  """

  lam: float = 25.0
  N: int = 1000

  def __post_init__(self):
    super().__post_init__()
    _check(self.lam > 1, "lam", self.lam, "must be > 1")

  def drift_coeff(self, t):
    return jnp.zeros_like(t)

  def diffusion(self, t):
    return self.lam**t

  def marginal_coeffs(self, t):
    log_lam = math.log(self.lam)
    var = jnp.expm1(2 * t * log_lam) / (2 * log_lam)
    return jnp.ones_like(t), jnp.sqrt(var)

  @property
  def prior_std(self):
    return math.sqrt((self.lam**2 - 1) / (2 * math.log(self.lam)))


_SDES: dict[str, type[SDE]] = {
    "vesde": VESDE,
    "vpsde": VPSDE,
    "subvpsde": SubVPSDE,
    "ousde": OUSDE,
    "lambda_vesde": LambdaVESDE,
}


def register_sde(name: str, cls: type[SDE]) -> None:
  """Adds an SDE class to the registry used by `get_sde` and the configs."""
  _SDES[name] = cls


def get_sde(name: str, **kwargs) -> SDE:
  """Builds an SDE by registry name; kwargs are its fields (e.g. `sigma_min`, `N`).

  Raises:
    ValueError: unknown name, unknown field or an out-of-range value.
  """
  if name not in _SDES:
    raise ValueError(f"sde.name={name!r} is unknown; valid names: {sorted(_SDES)}.")
  cls = _SDES[name]
  fields = {f.name for f in dataclasses.fields(cls)}
  for k in kwargs:
    if k not in fields:
      raise ValueError(f"sde.{k} is not a field of {cls.__name__}; allowed fields: {sorted(fields)}.")
  return cls(**kwargs)
