"""Discrete-time DDPM and SMLD schedules (Ho et al. 2020; Song & Ermon 2019) and their SDE bridge.

DDPM is a T-step Markov chain with a variance schedule beta_1..beta_T:

    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)                       (Ho Eq. 2)
    q(x_t | x_0)     = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I),
                       alpha_t = 1 - beta_t, alpha_bar_t = prod_{s <= t} alpha_s      (Ho Eq. 4)
    q(x_{t-1} | x_t, x_0) = N(mu_tilde_t, beta_tilde_t I).                          (Ho Eq. 6-7)

Discrete step t in {0..T} sits at continuous time t / T, and the chain is exactly the VP SDE
with the piecewise-constant rate beta(t) = -T log(1 - beta_i) on ((i - 1) / T, i / T]
(`DiscreteVPSDE`, registered as "ddpm"), so every continuous sampler and likelihood applies to
a discrete model. SMLD's ladder is `geometric_sigmas`. See docs/architecture.md ("Discrete
models") for the correspondence in full.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sde_lib.base import SDE
from sde_lib.continuous import SubVPSDE, VPSDE
from utils import bcast as _bcast

Array = jax.Array

MAX_BETA = 0.999
VARIANCES = ("beta", "beta_tilde")


@dataclasses.dataclass(frozen=True, eq=False)
class DiscreteSchedule:
  """A DDPM variance schedule beta_1..beta_T and its closed forms (Ho et al. 2020, Eq. 2-7).

  Per-step arrays have length T + 1 and are indexed by the step t in {0..T}; index 0 is the data
  (beta_0 = 0, alpha_bar_0 = 1). They are computed once in float64 (log alpha_bar as a cumulative
  sum of log1p(-beta), 1 - alpha_bar with expm1) and used in float32. The jnp methods take an
  integer step t [B] and return per-example coefficients [B].

  Attributes:
    betas: beta_1..beta_T, each in (0, 1); any sequence or array.
    beta, alpha, alpha_bar, log_alpha_bar, one_minus_alpha_bar, beta_tilde: read-only float64 [T + 1].
    coef_x0, coef_xt: mu_tilde_t = coef_x0 x_0 + coef_xt x_t (Eq. 7); coef_eps = beta_t / sqrt(1 - alpha_bar_t).
  """

  betas: Any

  def __post_init__(self):
    b = np.asarray(self.betas, np.float64)
    if b.ndim != 1 or b.size < 1:
      raise ValueError(f"schedule.betas must be a 1-D sequence of T >= 1 values; got shape {b.shape}.")
    if not np.all((b > 0) & (b < 1)):
      raise ValueError(f"schedule.betas must lie in (0, 1); got min {b.min()!r}, max {b.max()!r}.")
    beta = np.concatenate([[0.0], b])
    log_ab = np.concatenate([[0.0], np.cumsum(np.log1p(-b))])
    one_minus_ab = -np.expm1(log_ab)
    ab_prev = np.exp(np.concatenate([[0.0], log_ab[:-1]]))      # alpha_bar_{t-1}
    one_minus_ab_prev = np.concatenate([[0.0], one_minus_ab[:-1]])
    inv = np.divide(1.0, one_minus_ab, out=np.zeros_like(one_minus_ab), where=one_minus_ab > 0)  # 0 at t = 0
    arrays = dict(
        beta=beta, alpha=1.0 - beta, log_alpha_bar=log_ab, alpha_bar=np.exp(log_ab),
        one_minus_alpha_bar=one_minus_ab,
        beta_tilde=one_minus_ab_prev * inv * beta,                  # Ho Eq. 7
        coef_x0=np.sqrt(ab_prev) * beta * inv,                      # mu_tilde = coef_x0 x0 + coef_xt x_t
        coef_xt=np.sqrt(1.0 - beta) * one_minus_ab_prev * inv,
        # Ho Eq. 11: mu_theta = (x_t - coef_eps eps_theta) / sqrt(alpha_t), so mu_tilde - mu_theta =
        # coef_eps / sqrt(alpha_t) (eps_theta - eps); at t = 1 that is x0 - mu_theta.
        coef_eps=beta * np.sqrt(inv))
    for name, value in arrays.items():
      value.setflags(write=False)
      object.__setattr__(self, name, value)

  @property
  def T(self) -> int:
    """Number of steps."""
    return int(self.beta.shape[0] - 1)

  def _take(self, name: str, t: Array) -> Array:
    return jnp.asarray(getattr(self, name), jnp.float32)[t]

  def q_mean_std(self, x0: Array, t: Array) -> tuple[Array, Array]:
    """q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (Ho Eq. 4): mean [B, ...], std [B]."""
    return _bcast(jnp.sqrt(self._take("alpha_bar", t)), x0) * x0, jnp.sqrt(self._take("one_minus_alpha_bar", t))

  def q_step_mean_std(self, x_prev: Array, t: Array) -> tuple[Array, Array]:
    """q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I) (Ho Eq. 2), t >= 1: mean, std [B]."""
    return _bcast(jnp.sqrt(self._take("alpha", t)), x_prev) * x_prev, jnp.sqrt(self._take("beta", t))

  def q_posterior(self, x0: Array, x_t: Array, t: Array) -> tuple[Array, Array]:
    """q(x_{t-1} | x_t, x_0) = N(mu_tilde, beta_tilde I) (Ho Eq. 6-7), t >= 1: mean [B, ...], variance [B]."""
    mean = _bcast(self._take("coef_x0", t), x0) * x0 + _bcast(self._take("coef_xt", t), x_t) * x_t
    return mean, self._take("beta_tilde", t)

  def continuous_coeffs(self, s: Array) -> tuple[Array, Array]:
    """(alpha, sigma) [B] at a fractional step s in [0, T], log alpha_bar linear between integers.

    alpha = sqrt(alpha_bar(s)), sigma = sqrt(1 - alpha_bar(s)); exact at integer s. These are the
    marginal coefficients of `DiscreteVPSDE` at t = s / T.
    """
    s = jnp.clip(jnp.asarray(s, jnp.float32), 0.0, self.T)
    i = jnp.clip(jnp.floor(s), 0, self.T - 1).astype(jnp.int32)
    log_ab = jnp.asarray(self.log_alpha_bar, jnp.float32)
    la = log_ab[i] + (s - i) * (log_ab[i + 1] - log_ab[i])
    return jnp.exp(0.5 * la), jnp.sqrt(-jnp.expm1(la))


def linear_schedule(T: int, *, beta_start: float | None = None, beta_end: float | None = None) -> DiscreteSchedule:
  """Ho et al.'s linear schedule: beta_t = linspace(beta_start, beta_end, T).

  Defaults scale with T as in Nichol & Dhariwal (2021, improved DDPM): beta_start = 1e-4 * 1000 / T,
  beta_end = 0.02 * 1000 / T, so T = 1000 is Ho et al.'s 1e-4..0.02 and any T gives about the same
  sum of betas (10.05, so alpha_bar_T is 4.0e-5 at T = 1000, 3.0e-5 at T = 200). Betas are clipped at 0.999
  (binds only for T <= 20).

  Raises:
    ValueError: T not an integer >= 1, or betas outside (0, 1).
  """
  _check_T(T)
  scale = 1000.0 / T
  beta_start = 1e-4 * scale if beta_start is None else beta_start
  beta_end = 0.02 * scale if beta_end is None else beta_end
  return DiscreteSchedule(np.minimum(np.linspace(beta_start, beta_end, T, dtype=np.float64), MAX_BETA))


def cosine_schedule(T: int, *, s: float = 0.008) -> DiscreteSchedule:
  """Nichol & Dhariwal (2021), Eq. 17: alpha_bar_t = f(t) / f(0), f(t) = cos((t / T + s) / (1 + s) pi / 2)^2.

  beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}, clipped at 0.999 (their Sec. 3.2: it avoids the
  singularity at t = T); alpha_bar is then recomputed from the clipped betas.

  Raises:
    ValueError: T not an integer >= 1 or s < 0.
  """
  _check_T(T)
  if not s >= 0:
    raise ValueError(f"schedule.s={s!r} must be >= 0.")
  f = np.cos((np.arange(T + 1, dtype=np.float64) / T + s) / (1 + s) * np.pi / 2) ** 2
  return DiscreteSchedule(np.clip(1.0 - f[1:] / f[:-1], 1e-12, MAX_BETA))


SCHEDULES: dict[str, Callable[[int], DiscreteSchedule]] = {"linear": linear_schedule, "cosine": cosine_schedule}


def _check_T(T) -> None:
  if not isinstance(T, (int, np.integer)) or isinstance(T, bool) or T < 1:
    raise ValueError(f"schedule T={T!r} must be an integer >= 1.")


def get_schedule(name: str, T: int) -> DiscreteSchedule:
  """A schedule by name ("linear", "cosine") with T steps.

  Raises:
    ValueError: unknown name or bad T.
  """
  if name not in SCHEDULES:
    raise ValueError(f"sde.schedule={name!r} is unknown; valid: {sorted(SCHEDULES)}.")
  return SCHEDULES[name](T)


def geometric_sigmas(sigma_min: float, sigma_max: float, L: int) -> np.ndarray:
  """SMLD's noise ladder (Song & Ermon 2019, Sec. 4.2): L levels, geometric from sigma_min to sigma_max.

  Ascending, sigma_i = sigma_min (sigma_max / sigma_min)^(i / (L - 1)): the same values as
  `sde_lib.VESDE(sigma_min, sigma_max, N=L).discrete_sigmas()` (the paper lists them descending).

  Raises:
    ValueError: sigma_min <= 0, sigma_max <= sigma_min or L < 2.
  """
  if not 0 < sigma_min < sigma_max:
    raise ValueError(f"sigma_min={sigma_min!r}, sigma_max={sigma_max!r} must satisfy 0 < sigma_min < sigma_max.")
  if not isinstance(L, (int, np.integer)) or L < 2:
    raise ValueError(f"L={L!r} must be an integer >= 2.")
  return sigma_min * (sigma_max / sigma_min) ** (np.arange(L) / (L - 1))


# --- the chain as a continuous-time SDE ------------------------------------------------------

@dataclasses.dataclass(frozen=True, kw_only=True)
class DiscreteVPSDE(SDE):
  """The DDPM chain as a VP SDE with piecewise-constant beta(t); `sde_lib.get_sde(name="ddpm", ...)`.

      dx = -beta(t) x / 2 dt + sqrt(beta(t)) dW,   beta(t) = -N log(1 - beta_i) on ((i - 1) / N, i / N],

  so alpha(t)^2 = alpha_bar(t N) with log alpha_bar linear between grid points, sigma(t)^2 =
  1 - alpha(t)^2, and the exact transition from (i - 1) / N to i / N is Ho's Eq. 2: observed at
  t_i = i / N this SDE *is* the chain (N = T steps). `discretize` is that exact step. Prior N(0, I)
  (q(x_T | x_0) differs from it by L_T of the bound: 1e-4 nats per 2-D point for the linear schedule).

  Attributes:
    schedule: "linear" or "cosine" (see `get_schedule`).
    N: the number of steps T.
  """

  schedule: str = "linear"
  N: int = 1000

  def __post_init__(self):
    super().__post_init__()
    object.__setattr__(self, "discrete_schedule", get_schedule(self.schedule, self.N))

  def _segment(self, t: Array) -> Array:
    """The step i whose interval ((i - 1) / N, i / N] holds t; [B] int32 in 1..N."""
    return jnp.clip(jnp.ceil(t * self.N), 1, self.N).astype(jnp.int32)

  def drift_coeff(self, t):
    """-beta(t) / 2 = N (log alpha_bar_i - log alpha_bar_{i-1}) / 2 = N log(1 - beta_i) / 2 on segment i."""
    i = self._segment(t)
    take = self.discrete_schedule._take
    return 0.5 * self.N * (take("log_alpha_bar", i) - take("log_alpha_bar", i - 1))

  def diffusion(self, t):
    return jnp.sqrt(-2.0 * self.drift_coeff(t))

  def marginal_coeffs(self, t):
    return self.discrete_schedule.continuous_coeffs(t * self.N)

  @property
  def prior_std(self):
    return 1.0

  def discrete_index(self, t: Array) -> Array:
    """0-based index i - 1 of the step i = round(t N) nearest to t, clipped to 1..N; [B] int32."""
    return jnp.clip(jnp.round(t * self.N), 1, self.N).astype(jnp.int32) - 1

  def discrete_betas(self) -> Array:
    """beta_1..beta_N; [N] (same meaning as `VPSDE.discrete_betas`)."""
    return jnp.asarray(self.discrete_schedule.beta[1:], jnp.float32)

  def discretize(self, x, t):
    """The chain's step into x at t: x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z, i = round(t N)."""
    beta = self.discrete_betas()[self.discrete_index(t)]
    return (_bcast(jnp.sqrt(1.0 - beta), x) - 1.0) * x, jnp.sqrt(beta)

  def langevin_alpha(self, t):
    return 1.0 - self.discrete_betas()[self.discrete_index(t)]


def schedule_of(sde: SDE) -> DiscreteSchedule:
  """The discrete chain of a VP-type SDE: `DiscreteVPSDE.discrete_schedule`, or for `VPSDE`
  the schedule of its `discrete_betas()` (Song et al. App. B), T = sde.N.

  Raises:
    ValueError: any other SDE (sub-VP and VE SDEs have no DDPM chain).
  """
  if isinstance(sde, DiscreteVPSDE):
    return sde.discrete_schedule
  if isinstance(sde, VPSDE) and not isinstance(sde, SubVPSDE):
    return DiscreteSchedule(np.asarray(sde.discrete_betas(), np.float64))
  raise ValueError(f"sde={type(sde).__name__} has no DDPM chain; use sde.name 'ddpm' or 'vpsde'.")


def reverse_variance(schedule: DiscreteSchedule, variance: str, group: str = "sampling") -> np.ndarray:
  """The reverse-step variances sigma_t^2, t = 0..T [T + 1] (Ho et al. 2020, Sec. 3.2): beta_t
  ("beta"), or beta_tilde_t ("beta_tilde") with sigma_1^2 = beta_tilde_2, since beta_tilde_1 = 0.

  Raises:
    ValueError: unknown variance (named as `group`.variance).
  """
  if variance not in VARIANCES:
    raise ValueError(f"{group}.variance={variance!r} is unknown; valid: {list(VARIANCES)}.")
  if variance == "beta":
    return schedule.beta.copy()
  var = schedule.beta_tilde.copy()
  var[1] = var[2] if schedule.T >= 2 else schedule.beta[1]
  return var
