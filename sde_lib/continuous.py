"""The continuous-time SDEs of Song et al. 2021 (VE, VP, sub-VP), Ornstein-Uhlenbeck and lambda-VE."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from sde_lib.base import SDE, _check
from utils import bcast as _bcast

Array = jax.Array


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
