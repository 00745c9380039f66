"""Variance-preserving SDEs defined by their log-SNR schedule (Kingma et al. 2021, "Variational
Diffusion Models"; Okanohara, "Diffusion models", sec. 2.4).

The schedule is gamma(t) = -log SNR(t), increasing in t, with

    alpha(t)^2 = sigmoid(-gamma(t)),   sigma(t)^2 = sigmoid(gamma(t)),

so alpha^2 + sigma^2 = 1. The forward SDE with these marginals has drift coefficient
f(t) = d log alpha / dt = -gamma'(t) sigma(t)^2 / 2 and diffusion g(t)^2 = d sigma^2/dt - 2 f sigma^2
= gamma'(t) sigma(t)^2. gamma' comes from forward-mode differentiation of gamma, so a schedule only
states gamma(t); every sampler and likelihood that uses `marginal_coeffs` / `log_snr` works
unchanged. This module's `log_snr` is the codebase's lambda(t) = log(alpha / sigma) = -gamma / 2.

Fixed schedules between the endpoints gamma(0) = gamma_min and gamma(1) = gamma_max:

- "linear": gamma linear in t (VDM's fixed baseline).
- "cosine": alpha = cos, sigma = sin of an angle linear in t, shifted so the endpoints match:
  gamma(t) = 2 log tan(a t + b), b = arctan(exp(gamma_min / 2)), a = arctan(exp(gamma_max / 2)) - b.
- "vp": the VP SDE's own shape (beta linear in t, Song et al. Eq. 11): int_0^t beta = B(t) is
  quadratic in t and gamma = log(expm1(B)); here B runs affinely from softplus(gamma_min) to
  softplus(gamma_max) along the VP quadratic of beta 0.1 -> 20.

A learned schedule (`LearnedLogSNRSDE`, VDM App. H) is gamma(t) = g0 + (g1 - g0) shape(t) with
learnable endpoints g0, g1 and a monotone network shape: [0, 1] -> [0, 1],

    u(t) = l1(t) + mean_k w3_k sigmoid(l2_k(l1(t))),   shape(t) = (u(t) - u(0)) / (u(1) - u(0)),

every weight positive (softplus of a free parameter), so shape is increasing with shape(0) = 0
and shape(1) = 1 exactly. Its parameters live in the score model's parameter tree under
"schedule"; `bind(params)` gives the SDE of those parameters (unbound: the linear schedule
between the initial endpoints).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from sde_lib.base import SDE, _check

Array = jax.Array
SCHEDULES = ("linear", "cosine", "vp")
_VP_BETA = (0.1, 20.0)  # the shape of "vp": B(t) proportional to 0.1 t + 9.95 t^2


def log_expm1(b: Array) -> Array:
  """log(exp(b) - 1) for b > 0, stable at both ends (log(expm1(b)) below 20, b + log1p(-e^-b) above)."""
  small = jnp.minimum(b, 20.0)
  return jnp.where(b < 20.0, jnp.log(jnp.expm1(small)), b + jnp.log1p(-jnp.exp(-jnp.maximum(b, 20.0))))


@dataclasses.dataclass(frozen=True)
class LogSNRSDE(SDE):
  """The VP SDE of a log-SNR schedule gamma(t) on [0, 1]; prior N(0, I).

  Fields:
    gamma_min: gamma(0) = -log SNR at t = 0 (VDM: -13.3); sigma(0)^2 = sigmoid(gamma_min).
    gamma_max: gamma(1) (VDM: 5.0); the prior mismatch is alpha(1)^2 = sigmoid(-gamma_max).
    schedule: one of SCHEDULES (see the module docstring).
    N: discretisation steps (Euler-Maruyama, for the PC samplers).
  """

  gamma_min: float = -13.3
  gamma_max: float = 5.0
  schedule: str = "linear"
  N: int = 1000

  def __post_init__(self):
    super().__post_init__()
    _check(self.schedule in SCHEDULES, "schedule", self.schedule, f"must be one of {list(SCHEDULES)}")
    _check(math.isfinite(self.gamma_min), "gamma_min", self.gamma_min, "must be finite")
    _check(math.isfinite(self.gamma_max) and self.gamma_max > self.gamma_min, "gamma_max", self.gamma_max,
           f"must be finite and > gamma_min={self.gamma_min}")

  def gamma(self, t: Array) -> Array:
    """gamma(t) = -log SNR(t); [B]."""
    t = jnp.asarray(t, jnp.float32)
    g0, g1 = self.gamma_min, self.gamma_max
    if self.schedule == "linear":
      return g0 + (g1 - g0) * t
    if self.schedule == "cosine":
      b = math.atan(math.exp(0.5 * g0))
      a = math.atan(math.exp(0.5 * g1)) - b
      return 2.0 * jnp.log(jnp.tan(a * t + b))
    lo, hi = _VP_BETA
    shape = (lo * t + 0.5 * (hi - lo) * t**2) / (lo + 0.5 * (hi - lo))
    b0, b1 = jax.nn.softplus(g0), jax.nn.softplus(g1)
    return log_expm1(b0 + (b1 - b0) * shape)

  def dgamma(self, t: Array) -> Array:
    """gamma'(t) by forward-mode differentiation (gamma is elementwise in t); [B]."""
    t = jnp.asarray(t, jnp.float32)
    return jax.jvp(self.gamma, (t,), (jnp.ones_like(t),))[1]

  def drift_coeff(self, t):
    return -0.5 * self.dgamma(t) * jax.nn.sigmoid(self.gamma(t))

  def diffusion(self, t):
    return jnp.sqrt(self.dgamma(t) * jax.nn.sigmoid(self.gamma(t)))

  def marginal_coeffs(self, t):
    g = self.gamma(t)
    return jnp.exp(0.5 * jax.nn.log_sigmoid(-g)), jnp.exp(0.5 * jax.nn.log_sigmoid(g))

  def log_snr(self, t):
    return -0.5 * self.gamma(t)

  @property
  def prior_std(self):
    return 1.0


def init_schedule_params(key: Array, gamma_min: float, gamma_max: float, hidden: int) -> dict:
  """Initial learned-schedule parameters: the endpoints and a monotone network close to linear
  (the sigmoid branch starts at 1e-3 of the linear one's slope)."""
  k2, k3 = jax.random.split(key)
  inv_softplus = lambda v: math.log(math.expm1(v))
  return {"gamma_min": jnp.float32(gamma_min), "gamma_max": jnp.float32(gamma_max),
          "shape": {"w1": jnp.float32(inv_softplus(1.0)), "b1": jnp.float32(0.0),
                    "w2": jax.random.normal(k2, (hidden,)) + inv_softplus(1.0),
                    "b2": jax.random.normal(k3, (hidden,)),
                    "w3": jnp.full((hidden,), inv_softplus(1e-3), jnp.float32)}}


def monotone_shape(shape_params: dict, t: Array) -> Array:
  """shape(t) of the module docstring: increasing on [0, 1], 0 at 0, 1 at 1; [B]."""
  p = {k: jnp.asarray(v, jnp.float32) for k, v in shape_params.items()}

  def u(t):
    l1 = jax.nn.softplus(p["w1"]) * t + p["b1"]
    h = jax.nn.sigmoid(jax.nn.softplus(p["w2"]) * l1[..., None] + p["b2"])
    return l1 + jnp.mean(jax.nn.softplus(p["w3"]) * h, axis=-1)

  ends = u(jnp.array([0.0, 1.0]))
  return (u(jnp.asarray(t, jnp.float32)) - ends[0]) / (ends[1] - ends[0])


@dataclasses.dataclass(frozen=True, eq=False)
class LearnedLogSNRSDE(LogSNRSDE):
  """A log-SNR SDE whose schedule is learned with the score model (module docstring).

  Fields:
    gamma_min, gamma_max: the initial endpoints (then learned).
    hidden: width of the monotone network.
    N: discretisation steps.
    params: the schedule's parameters (`init_schedule_params`) once bound, else None.
  """

  schedule: str = "learned"
  hidden: int = 1024
  params: Any = None

  __hash__ = object.__hash__  # params (arrays) are not hashable: identity, as for any bound object
  __eq__ = object.__eq__

  def __post_init__(self):
    SDE.__post_init__(self)
    _check(self.schedule == "learned", "schedule", self.schedule, "must be 'learned' for name='learned_logsnr'")
    _check(math.isfinite(self.gamma_min), "gamma_min", self.gamma_min, "must be finite")
    _check(math.isfinite(self.gamma_max) and self.gamma_max > self.gamma_min, "gamma_max", self.gamma_max,
           f"must be finite and > gamma_min={self.gamma_min}")
    _check(isinstance(self.hidden, int) and self.hidden >= 1, "hidden", self.hidden, "must be an integer >= 1")

  def init_params(self, key: Array) -> dict:
    return init_schedule_params(key, self.gamma_min, self.gamma_max, self.hidden)

  def bind(self, params: dict) -> "LearnedLogSNRSDE":
    """This SDE with the schedule of a score model's parameters (params["schedule"])."""
    return dataclasses.replace(self, params=params["schedule"])

  def endpoints(self) -> tuple[Array, Array]:
    if self.params is None:
      return jnp.float32(self.gamma_min), jnp.float32(self.gamma_max)
    return self.params["gamma_min"], self.params["gamma_max"]

  def shape(self, t: Array) -> Array:
    t = jnp.asarray(t, jnp.float32)
    return t if self.params is None else monotone_shape(self.params["shape"], t)

  def gamma(self, t: Array) -> Array:
    g0, g1 = self.endpoints()
    return g0 + (g1 - g0) * self.shape(t)
