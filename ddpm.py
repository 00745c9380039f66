"""Discrete-time DDPM and SMLD as special cases of the SDE framework, with the variational bound.

DDPM (Ho et al. 2020) is a T-step Markov chain with a variance schedule beta_1..beta_T:

    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)                       (Ho Eq. 2)
    q(x_t | x_0)     = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I),
                       alpha_t = 1 - beta_t, alpha_bar_t = prod_{s <= t} alpha_s      (Ho Eq. 4)
    q(x_{t-1} | x_t, x_0) = N(mu_tilde_t, beta_tilde_t I),                          (Ho Eq. 6-7)
        mu_tilde_t   = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
                       + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t,
        beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t.

A network eps_theta(x_t, t) predicts the noise of x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps;
the reverse model is p_theta(x_{t-1} | x_t) = N(mu_theta, sigma_t^2 I) with (Ho Eq. 11)

    mu_theta(x_t, t) = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta(x_t, t)) / sqrt(alpha_t).

Time convention. Discrete step t in {0..T} sits at continuous time t / T in [0, 1]:

  * the network is conditioned on c = t_index / T (a float in (0, 1]), so a DDPM network is also a
    function of continuous time with c = t;
  * the chain is *exactly* the VP SDE dx = -beta(t) x / 2 dt + sqrt(beta(t)) dW (Song et al. 2021,
    Eq. 11) with the piecewise-constant rate beta(t) = -T log(1 - beta_i) on ((i - 1) / T, i / T]:
    its transition from (i - 1) / T to i / T is N(sqrt(1 - beta_i) x, beta_i I), Ho's Eq. 2.
    `DiscreteVPSDE` is that SDE; between grid points, log alpha_bar is linear in t;
  * with the linear schedule, `sde_lib.VPSDE(beta_min=T beta_start, beta_max=T beta_end, N=T)`
    discretises (`VPSDE.discretize`, Song et al. App. B) to the same chain: its `discrete_betas()`
    are this schedule's betas.

Hence a discrete eps-model is a continuous score model (`eps_to_score_fn`), score(x, t) =
-eps_theta(x, c = t) / sqrt(1 - alpha_bar(t T)), and every continuous sampler and likelihood in
the codebase applies to it; conversely a continuous VP score model drives the discrete ancestral
sampler (`get_vp_ancestral_sampler`, method "ddpm_ancestral" of `sampling.get_sampler`).

SMLD (Song & Ermon 2019) is the discrete VE case: a geometric ladder sigma_1..sigma_L, which is
`sde_lib.VESDE(sigma_min, sigma_max, N=L).discrete_sigmas()`, trained with `get_smld_loss_fn`.

Importing this module registers the SDE "ddpm" (`sde_lib.get_sde(name="ddpm", schedule=..., N=T)`)
and the sampler "ddpm_ancestral".
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr

import sampling
import sde_lib
from sampling import _fold, _normal, per_sample_keys
from sde_lib import _bcast

Array = jax.Array
EpsFn = Callable[[Array, Array], Array]           # eps_fn(x [B, ...], t_index [B]) -> eps
ModelEpsFn = Callable[[Any, Array, Array], Array]  # model_eps_fn(params, x, t_index) -> eps
ScoreFn = Callable[[Array, Array], Array]

MAX_BETA = 0.999
LOSS_TYPES = ("l2", "l1", "huber")
VARIANCES = ("beta", "beta_tilde")
DECODERS = ("gaussian", "discretized")


# --- schedules ----------------------------------------------------------------------------

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
class DiscreteVPSDE(sde_lib.SDE):
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


def schedule_of(sde: sde_lib.SDE) -> DiscreteSchedule:
  """The discrete chain of a VP-type SDE: `DiscreteVPSDE.discrete_schedule`, or for `sde_lib.VPSDE`
  the schedule of its `discrete_betas()` (Song et al. App. B), T = sde.N.

  Raises:
    ValueError: any other SDE (sub-VP and VE SDEs have no DDPM chain).
  """
  if isinstance(sde, DiscreteVPSDE):
    return sde.discrete_schedule
  if isinstance(sde, sde_lib.VPSDE) and not isinstance(sde, sde_lib.SubVPSDE):
    return DiscreteSchedule(np.asarray(sde.discrete_betas(), np.float64))
  raise ValueError(f"sde={type(sde).__name__} has no DDPM chain; use sde.name 'ddpm' or 'vpsde'.")


# --- Gaussian log-likelihoods and KL -------------------------------------------------------------

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


# --- networks as eps- and score-models -------------------------------------------------------

def get_eps_fn(model, schedule: DiscreteSchedule, *, train: bool = False) -> ModelEpsFn:
  """eps_theta as model_eps_fn(params, x, t_index) for a registered network (e.g. the "mlp").

  The network is called as model.apply({"params": params}, x, c, train=train) with the condition
  c = t_index / T, a float in (0, 1] for t_index in 1..T (a fractional t_index is allowed: see
  `eps_to_score_fn`). The input is x_t itself, with no rescaling (Ho et al.).
  """
  T = float(schedule.T)

  def model_eps_fn(params, x, t_index):
    c = jnp.asarray(t_index, jnp.float32) / T
    return model.apply({"params": params}, x, c, train=train)

  return model_eps_fn


def eps_to_score_fn(eps_fn: EpsFn, schedule: DiscreteSchedule) -> ScoreFn:
  """A discrete eps-model as a continuous score_fn(x, t), t in (0, 1] (the t_i = i / T bridge).

      score(x, t) = -eps_fn(x, t T) / sqrt(1 - alpha_bar(t T)),

  with the fractional step s = t T (so a network conditioned on c = s / T sees c = t) and
  alpha_bar(s) interpolated log-linearly between steps (`DiscreteSchedule.continuous_coeffs`, the
  marginal of `DiscreteVPSDE` at t). At t = i / T it inverts E[eps | x_i] = -sqrt(1 - alpha_bar_i)
  grad log q(x_i) (Tweedie; Vincent 2011), which eps_theta estimates. t = 0 divides by zero
  (samplers stop at eps > 0); t < 1 / T asks the network about c < 1 / T, never trained.
  """
  T = float(schedule.T)

  def score_fn(x, t):
    s = jnp.asarray(t, jnp.float32) * T
    sigma = schedule.continuous_coeffs(s)[1]
    return -eps_fn(x, s) / _bcast(sigma, x)

  return score_fn


def get_model_score_fn(model, schedule: DiscreteSchedule, *, train: bool = False) -> Callable:
  """model_score_fn(params, x, t) of a discretely trained eps-network (`get_eps_fn` + `eps_to_score_fn`).

  Equal to models.get_score_fn(DiscreteVPSDE(...), model, parameterization="eps",
  conditioning="t", input_scaling=False) for the SDE of the same schedule.
  """
  eps = get_eps_fn(model, schedule, train=train)

  def model_score_fn(params, x, t):
    return eps_to_score_fn(lambda y, s: eps(params, y, s), schedule)(x, t)

  return model_score_fn


def exact_eps_fn(target, schedule: DiscreteSchedule) -> EpsFn:
  """The exact eps*(x, t) = E[eps | x_t = x] = -sqrt(1 - alpha_bar_t) grad log q(x_t) of a target
  with a closed-form diffused score (`target.score_t(x, alpha, sigma)`); t_index integer [B]."""

  def eps_fn(x, t_index):
    alpha, sigma = schedule.continuous_coeffs(t_index)
    return -_bcast(sigma, x) * target.score_t(x, alpha, sigma)

  return eps_fn


def get_smld_score_fn(model) -> Callable:
  """model_score_fn(params, x, sigma) for SMLD: the network conditioned on c = log sigma, its output
  divided by sigma (Song & Ermon 2020, Technique 3), so s_theta ~ -z / sigma at every level."""

  def model_score_fn(params, x, sigma):
    sigma = jnp.asarray(sigma, jnp.float32)
    return model.apply({"params": params}, x, jnp.log(sigma)) / _bcast(sigma, x)

  return model_score_fn


# --- training objectives ---------------------------------------------------------------------

def _elementwise_loss(err: Array, loss_type: str) -> Array:
  if loss_type == "l2":
    return err**2
  if loss_type == "l1":
    return jnp.abs(err)
  return jnp.where(jnp.abs(err) <= 1.0, 0.5 * err**2, jnp.abs(err) - 0.5)  # Huber, delta = 1


def get_ddpm_loss_fn(schedule: DiscreteSchedule, model_eps_fn: ModelEpsFn, *, loss_type: str = "l2",
                     reduce_mean: bool = True) -> Callable:
  """Ho et al. 2020, Algorithm 1 (L_simple, Eq. 14): t ~ U{1..T}, eps ~ N(0, I),

      L = E_{t, x0, eps} rho( eps - eps_theta(sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, t) ),

  rho = squared error ("l2"), absolute error ("l1") or Huber with delta = 1 ("huber": e^2 / 2 for
  |e| <= 1, |e| - 1/2 beyond), reduced over the data dimensions by mean or sum.

  Args:
    schedule: the discrete chain.
    model_eps_fn: model_eps_fn(params, x, t_index [B] int) -> eps (e.g. `get_eps_fn`).
    loss_type: "l2", "l1" or "huber".
    reduce_mean: average over data dimensions instead of summing.

  Returns:
    loss_fn(key, params, batch) -> scalar (mean over the batch), as `losses.get_sde_loss_fn`, so
    `losses.get_train_step_fn` trains it.

  Raises:
    ValueError: unknown loss_type.
  """
  if loss_type not in LOSS_TYPES:
    raise ValueError(f"loss.loss_type={loss_type!r} is unknown; valid: {list(LOSS_TYPES)}.")
  reduce = jnp.mean if reduce_mean else jnp.sum

  def loss_fn(key, params, batch):
    key_t, key_z = jax.random.split(key)
    t = jax.random.randint(key_t, (batch.shape[0],), 1, schedule.T + 1)
    z = jax.random.normal(key_z, batch.shape)
    mean, std = schedule.q_mean_std(batch, t)
    err = model_eps_fn(params, mean + _bcast(std, batch) * z, t) - z
    return jnp.mean(reduce(_elementwise_loss(err, loss_type), axis=tuple(range(1, batch.ndim))))

  return loss_fn


def get_smld_loss_fn(sigmas, model_score_fn: Callable, *, reduce_mean: bool = False) -> Callable:
  """NCSN's denoising score matching over a noise ladder (Song & Ermon 2019, Eq. 5-6):

      L = 1/L sum_i lambda(sigma_i) l(theta; sigma_i),
      l(theta; sigma) = 1/2 E || s_theta(x~, sigma) + (x~ - x) / sigma^2 ||^2,

  x~ = x + sigma z, with lambda(sigma) = sigma^2, so each term is 1/2 E || sigma s_theta + z ||^2.
  One level per example, uniform over the ladder: an unbiased estimate of the average over i.

  Args:
    sigmas: the ladder [L] (e.g. `geometric_sigmas`), each > 0.
    model_score_fn: model_score_fn(params, x, sigma [B]) -> score (e.g. `get_smld_score_fn`).
    reduce_mean: average over data dimensions instead of summing.

  Returns:
    loss_fn(key, params, batch) -> scalar, the mean over the batch.

  Raises:
    ValueError: an empty ladder or a non-positive sigma.
  """
  sig = np.asarray(sigmas, np.float64)
  if sig.ndim != 1 or sig.size < 1 or not np.all(sig > 0):
    raise ValueError(f"sigmas must be a 1-D ladder of positive noise levels; got {sig.tolist()!r}.")
  sig = jnp.asarray(sig, jnp.float32)
  reduce = jnp.mean if reduce_mean else jnp.sum

  def loss_fn(key, params, batch):
    key_i, key_z = jax.random.split(key)
    sigma = sig[jax.random.randint(key_i, (batch.shape[0],), 0, sig.shape[0])]
    z = jax.random.normal(key_z, batch.shape)
    s = _bcast(sigma, batch)
    score = model_score_fn(params, batch + s * z, sigma)
    return jnp.mean(0.5 * reduce((s * score + z) ** 2, axis=tuple(range(1, batch.ndim))))

  return loss_fn


# --- ancestral sampling --------------------------------------------------------------------

def _reverse_variance(schedule: DiscreteSchedule, variance: str, group: str) -> np.ndarray:
  """sigma_t^2, t = 0..T: beta_t, or beta_tilde_t with sigma_1^2 = beta_tilde_2 (beta_tilde_1 = 0;
  Ho et al.'s released code clips the t = 1 log-variance the same way). Used by the bound's
  decoder; the sampler adds no noise at t = 1 (Algorithm 2)."""
  if variance not in VARIANCES:
    raise ValueError(f"{group}.variance={variance!r} is unknown; valid: {list(VARIANCES)}.")
  if variance == "beta":
    return schedule.beta.copy()
  var = schedule.beta_tilde.copy()
  var[1] = var[2] if schedule.T >= 2 else schedule.beta[1]
  return var


def _check_shape(shape) -> None:
  if len(shape) < 2 or any(int(s) < 1 for s in shape):
    raise ValueError(f"sampling shape={tuple(shape)} must be [B, ...] with positive sizes.")


def get_ancestral_sampler(schedule: DiscreteSchedule, shape: tuple[int, ...], *,
                          variance: str = "beta_tilde", n_trajectory: int = 0) -> Callable:
  """Ancestral sampling of the discrete chain (Ho et al. 2020, Algorithm 2); NFE = T.

      x_T ~ N(0, I);
      for t = T..1:  x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps(x_t, t)) / sqrt(alpha_t) + sigma_t z,

  z ~ N(0, I) for t > 1 and z = 0 at t = 1, with sigma_t^2 = beta_t ("beta") or beta_tilde_t
  ("beta_tilde"), the upper and lower bounds on the reverse variance (Ho et al. Sec. 3.2). Row i
  draws x_T from fold_in(fold_in(key, i), 0) and the noise of step t from
  fold_in(fold_in(fold_in(key, i), 1), t): independent of the batch size. One `lax.scan`.

  Args:
    schedule: the chain.
    shape: [B, ...] of the batch.
    variance: "beta" or "beta_tilde".
    n_trajectory: if > 0, also return the states after every ceil(T / n_trajectory)-th step
      (the thinning of the PC sampler), the last one being the sample.

  Returns:
    sampler(key, eps_fn) -> (samples, nfe) or (samples, nfe, trajectory [n_trajectory, B, ...]),
    with eps_fn(x [B, ...], t_index [B] int32) -> eps.

  Raises:
    ValueError: bad shape, variance or n_trajectory.
  """
  _check_shape(shape)
  T, B = schedule.T, int(shape[0])
  if not (isinstance(n_trajectory, (int, np.integer)) and 0 <= n_trajectory <= T):
    raise ValueError(f"sampling.n_trajectory={n_trajectory!r} must be an integer in [0, T={T}].")
  sigma = np.sqrt(_reverse_variance(schedule, variance, "sampling"))
  sigma[1] = 0.0  # Algorithm 2: no noise in the last step
  stride = -(-T // max(n_trajectory, 1))

  def sampler(key, eps_fn):
    keys = per_sample_keys(key, B)
    x = _normal(_fold(keys, 0), jnp.zeros(shape, jnp.float32))
    keys = _fold(keys, 1)
    sigmas = jnp.asarray(sigma, jnp.float32)
    c_eps = jnp.asarray(schedule.coef_eps, jnp.float32)               # beta_t / sqrt(1 - alpha_bar_t)
    inv_sqrt_alpha = jnp.asarray(1.0 / np.sqrt(schedule.alpha), jnp.float32)
    traj0 = jnp.zeros((max(n_trajectory, 1),) + tuple(shape), jnp.float32)

    def step(carry, k):
      x, traj = carry
      t = T - k
      eps = eps_fn(x, jnp.full((B,), t, jnp.int32))
      x = inv_sqrt_alpha[t] * (x - c_eps[t] * eps) + sigmas[t] * _normal(_fold(keys, t), x)
      if n_trajectory:
        traj = jax.lax.dynamic_update_index_in_dim(traj, x, k // stride, 0)
      return (x, traj), None

    (x, traj), _ = jax.lax.scan(step, (x, traj0), jnp.arange(T))
    return (x, T, traj.at[-1].set(x)) if n_trajectory else (x, T)

  return sampler


def get_vp_ancestral_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, variance: str = "beta_tilde",
                             n_trajectory: int = 0) -> Callable:
  """The "ddpm_ancestral" method of `sampling.get_sampler`: Algorithm 2 driven by a score_fn(x, t).

  The chain is `schedule_of(sde)` (T = sde.N); step i runs at t_i = i / T with
  eps(x, i) = -sigma(t_i) score(x, t_i), sigma from `sde.marginal_coeffs`. For `DiscreteVPSDE`
  sigma(t_i) = sqrt(1 - alpha_bar_i) exactly, so a model wrapped by `eps_to_score_fn` gets its own
  eps back and the oracle `target.score_fn(sde)` gives the exact eps of the chain; for
  `sde_lib.VPSDE` the continuous marginals differ from the chain's by O(1 / T).

  Returns:
    sampler(key, score_fn) -> (samples, nfe = T) (plus the trajectory if n_trajectory > 0).

  Raises:
    ValueError: a non-VP SDE, bad shape, variance or n_trajectory.
  """
  schedule = schedule_of(sde)
  inner = get_ancestral_sampler(schedule, shape, variance=variance, n_trajectory=n_trajectory)
  T = float(schedule.T)

  def sampler(key, score_fn):
    def eps_fn(x, t_index):
      t = t_index.astype(jnp.float32) / T
      return -_bcast(sde.marginal_coeffs(t)[1], x) * score_fn(x, t)

    return inner(key, eps_fn)

  return sampler


# --- the variational bound -----------------------------------------------------------------

def _gauss_hermite(order: int, d: int) -> tuple[np.ndarray, np.ndarray]:
  """Nodes [order^d, d] and weights [order^d] of the product Gauss-Hermite rule for N(0, I_d)."""
  z, w = np.polynomial.hermite_e.hermegauss(order)
  w = w / np.sqrt(2 * np.pi)
  grids = np.meshgrid(*([z] * d), indexing="ij")
  weights = np.prod(np.meshgrid(*([w] * d), indexing="ij"), axis=0)
  return np.stack([g.ravel() for g in grids], axis=-1), weights.ravel()


def get_vlb_fn(schedule: DiscreteSchedule, *, variance: str = "beta_tilde", decoder: str = "gaussian",
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
  sigma_t^2 as in `get_ancestral_sampler`, with sigma_1^2 = beta_tilde_2 for "beta_tilde".

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
  var = _reverse_variance(schedule, variance, "vlb")
  if decoder not in DECODERS:
    raise ValueError(f"vlb.decoder={decoder!r} is unknown; valid: {list(DECODERS)}.")
  for name, value, low in (("n_samples", n_samples, 1), ("quadrature_order", quadrature_order, 0)):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
      raise ValueError(f"vlb.{name}={value!r} must be an integer >= {low}.")
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
        z = jax.vmap(lambda k: jax.random.normal(k, (M,) + shape1))(_fold(keys, t))
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
    oracle: optionally the bound with the exact eps (`exact_eps_fn`) on the same points and keys.
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


# --- registration --------------------------------------------------------------------------

sde_lib.register_sde("ddpm", DiscreteVPSDE)
sampling.register_sampler("ddpm_ancestral", get_vp_ancestral_sampler)
