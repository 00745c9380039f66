"""Network outputs as scores: `get_score_fn` for the continuous SDEs, the eps- and SMLD bridges
of discrete models, the exact eps of a target, and noise-conditional classifiers as log p(c | x_t).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import flax.linen as nn

import sde_lib
from utils import bcast as _bcast

Array = jax.Array
EpsFn = Callable[[Array, Array], Array]           # eps_fn(x [B, ...], t_index [B]) -> eps
ModelEpsFn = Callable[[Any, Array, Array], Array]  # model_eps_fn(params, x, t_index) -> eps
ScoreFn = Callable[[Array, Array], Array]
PARAMETERIZATIONS = ("eps", "score")
CONDITIONINGS = ("auto", "t", "log_sigma", "log_snr")


def _is_ve_type(sde: sde_lib.SDE) -> bool:
  return isinstance(sde, (sde_lib.VESDE, sde_lib.LambdaVESDE))


def get_network_input_fn(sde: sde_lib.SDE, *, conditioning: str = "auto", input_scaling: bool = True,
                         group: str = "model") -> Callable[[Array, Array], tuple[Array, Array]]:
  """fn(x, t) -> (x_in, c): what a network sees of x_t at time t.

  c is t, log sigma(t) or -lambda(t) = log(sigma / alpha) = -log SNR / 2 (`conditioning`: "t",
  "log_sigma", "log_snr", or "auto" = log_sigma for VE-type SDEs, log_snr for log-SNR SDEs, t
  otherwise); x_in = x / sqrt(alpha^2 + sigma^2) with `input_scaling` (EDM's c_in), else x.

  Raises:
    ValueError: unknown conditioning (named as `group`.conditioning).
  """
  if conditioning not in CONDITIONINGS:
    raise ValueError(f"{group}.conditioning={conditioning!r} is unknown; valid: {list(CONDITIONINGS)}.")
  if conditioning == "auto":
    conditioning = ("log_sigma" if _is_ve_type(sde) else
                    "log_snr" if isinstance(sde, sde_lib.LogSNRSDE) else "t")

  def net_input(x, t):
    alpha, sigma = sde.marginal_coeffs(t)
    c = {"log_sigma": lambda: jnp.log(sigma), "log_snr": lambda: -sde.log_snr(t), "t": lambda: t}[conditioning]()
    return (x / _bcast(jnp.sqrt(alpha**2 + sigma**2), x) if input_scaling else x), c

  return net_input


def get_score_fn(sde: sde_lib.SDE, model: nn.Module, *, parameterization: str = "eps",
                 conditioning: str = "auto", input_scaling: bool = True,
                 train: bool = False) -> Callable[..., Array]:
  """Returns model_score_fn(params, x, t, y=None, key=None) -> score, shaped like x.

  y [B] int labels go to a class-conditional network (`num_classes` > 0); None is the null label.
  `key`, if given, is the network's "dropout" rng (needed with train=True and dropout > 0).

  Args:
    sde: the forward SDE; supplies alpha(t), sigma(t) of p_t(x | x0).
    model: a registered network.
    parameterization: "eps": the network predicts the noise, score = -out / sigma(t);
      "score": the network predicts sigma(t) times the score, score = out / sigma(t).
    conditioning: the network's noise input: "t", "log_sigma" (log sigma(t), NCSN++-style
      for VE-type SDEs), or "auto" (log_sigma for VE-type SDEs, t otherwise).
    input_scaling: feed x / sqrt(alpha^2 + sigma^2) (unit variance for unit-variance data,
      EDM's c_in), so the network sees inputs of order one at every noise level.
    train: passed to the network (dropout).

  Raises:
    ValueError: unknown parameterization or conditioning.
  """
  if parameterization not in PARAMETERIZATIONS:
    raise ValueError(f"model.parameterization={parameterization!r} is unknown; "
                     f"valid: {list(PARAMETERIZATIONS)}.")
  net_input = get_network_input_fn(sde, conditioning=conditioning, input_scaling=input_scaling)
  sign = -1.0 if parameterization == "eps" else 1.0

  def model_score_fn(params, x, t, y=None, key=None):
    x_in, c = net_input(x, t)
    sigma = sde.marginal_coeffs(t)[1]
    extra = {} if y is None else {"y": y}  # networks without labels keep working
    if key is not None:
      extra["rngs"] = {"dropout": key}
    out = model.apply({"params": params}, x_in, c, train=train, **extra)
    return sign * out / _bcast(sigma, x)

  return model_score_fn


def get_classifier_fn(sde: sde_lib.SDE, model: nn.Module, *, conditioning: str = "auto",
                      input_scaling: bool = True) -> Callable[[dict, Array, Array], Array]:
  """Returns log_prob_fn(params, x, t) -> log p(c | x_t, t) [B, K] (log-softmax of the logits).

  The classifier sees the same noise input and input scaling as `get_score_fn`.

  Raises:
    ValueError: unknown conditioning.
  """
  net_input = get_network_input_fn(sde, conditioning=conditioning, input_scaling=input_scaling,
                                   group="classifier")

  def log_prob_fn(params, x, t):
    x_in, c = net_input(x, t)
    return jax.nn.log_softmax(model.apply({"params": params}, x_in, c), axis=-1)

  return log_prob_fn


def get_eps_fn(model, schedule: sde_lib.DiscreteSchedule, *, train: bool = False) -> ModelEpsFn:
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


def eps_to_score_fn(eps_fn: EpsFn, schedule: sde_lib.DiscreteSchedule) -> ScoreFn:
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


def get_model_score_fn(model, schedule: sde_lib.DiscreteSchedule, *, train: bool = False) -> Callable:
  """model_score_fn(params, x, t) of a discretely trained eps-network (`get_eps_fn` + `eps_to_score_fn`).

  Equal to models.get_score_fn(DiscreteVPSDE(...), model, parameterization="eps",
  conditioning="t", input_scaling=False) for the SDE of the same schedule.
  """
  eps = get_eps_fn(model, schedule, train=train)

  def model_score_fn(params, x, t):
    return eps_to_score_fn(lambda y, s: eps(params, y, s), schedule)(x, t)

  return model_score_fn


def exact_eps_fn(target, schedule: sde_lib.DiscreteSchedule) -> EpsFn:
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
