"""Score networks: a registry by name and `get_score_fn`, which turns a network into a score.

A network is a Flax module called as `model.apply({"params": p}, x, c, train=...)` with
x [B, ...] and a per-example noise condition c [B] (and `y=` labels [B] for a class-conditional
network, `num_classes` > 0, label num_classes being the null label); it returns an array shaped
like x. `get_score_fn` decides what c is (t or log sigma(t)), optionally rescales the input
to unit variance, and converts the output into a score for the given SDE. Noise-conditional
classifiers (`get_classifier`, `get_classifier_fn`) return log p(c | x_t, t) for classifier guidance.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import flax.linen as nn

import sde_lib
from models.classifier import NoiseConditionalClassifier
from models.mlp import MLP
from models.unet import UNet

Array = jax.Array

_MODELS: dict[str, type[nn.Module]] = {"mlp": MLP, "unet": UNet}
_CLASSIFIERS: dict[str, type[nn.Module]] = {"mlp": NoiseConditionalClassifier}
PARAMETERIZATIONS = ("eps", "score")
CONDITIONINGS = ("auto", "t", "log_sigma")


def register_model(name: str, cls: type[nn.Module]) -> None:
  """Adds a network class to the registry used by `get_model` and the configs."""
  _MODELS[name] = cls


def get_model(name: str, **kwargs) -> nn.Module:
  """Builds a network by registry name; kwargs are its fields (e.g. `hidden`, `depth`).

  Raises:
    ValueError: unknown name or field.
  """
  return _build(_MODELS, "model", name, kwargs)


def _build(registry: dict, group: str, name: str, kwargs: dict) -> nn.Module:
  if name not in registry:
    raise ValueError(f"{group}.name={name!r} is unknown; valid names: {sorted(registry)}.")
  cls = registry[name]
  fields = set(cls.__dataclass_fields__) - {"parent", "name"}
  for k in kwargs:
    if k not in fields:
      raise ValueError(f"{group}.{k} is not a field of {cls.__name__}; allowed fields: {sorted(fields)}.")
  model = cls(**kwargs)
  if hasattr(model, "validate"):
    model.validate()
  return model


def init_params(key: Array, model: nn.Module, shape: tuple[int, ...]) -> dict:
  """Initial parameters for inputs of `shape` ([B, ...])."""
  x = jnp.zeros((1,) + tuple(shape[1:]))
  return model.init(key, x, jnp.zeros((1,)))["params"]


def _is_ve_type(sde: sde_lib.SDE) -> bool:
  return isinstance(sde, (sde_lib.VESDE, sde_lib.LambdaVESDE))


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
  if conditioning not in CONDITIONINGS:
    raise ValueError(f"model.conditioning={conditioning!r} is unknown; valid: {list(CONDITIONINGS)}.")
  use_log_sigma = conditioning == "log_sigma" or (conditioning == "auto" and _is_ve_type(sde))
  sign = -1.0 if parameterization == "eps" else 1.0

  def model_score_fn(params, x, t, y=None, key=None):
    alpha, sigma = sde.marginal_coeffs(t)
    c = jnp.log(sigma) if use_log_sigma else t
    x_in = x / sde_lib._bcast(jnp.sqrt(alpha**2 + sigma**2), x) if input_scaling else x
    extra = {} if y is None else {"y": y}  # networks without labels keep working
    if key is not None:
      extra["rngs"] = {"dropout": key}
    out = model.apply({"params": params}, x_in, c, train=train, **extra)
    return sign * out / sde_lib._bcast(sigma, x)

  return model_score_fn


def get_classifier(name: str = "mlp", **kwargs) -> nn.Module:
  """Builds a noise-conditional classifier by registry name (config group `classifier.model`).

  Raises:
    ValueError: unknown name or field, or an out-of-range field.
  """
  return _build(_CLASSIFIERS, "classifier", name, kwargs)


def get_classifier_fn(sde: sde_lib.SDE, model: nn.Module, *, conditioning: str = "auto",
                      input_scaling: bool = True) -> Callable[[dict, Array, Array], Array]:
  """Returns log_prob_fn(params, x, t) -> log p(c | x_t, t) [B, K] (log-softmax of the logits).

  The classifier sees the same noise input and input scaling as `get_score_fn`.

  Raises:
    ValueError: unknown conditioning.
  """
  if conditioning not in CONDITIONINGS:
    raise ValueError(f"classifier.conditioning={conditioning!r} is unknown; valid: {list(CONDITIONINGS)}.")
  use_log_sigma = conditioning == "log_sigma" or (conditioning == "auto" and _is_ve_type(sde))

  def log_prob_fn(params, x, t):
    alpha, sigma = sde.marginal_coeffs(t)
    c = jnp.log(sigma) if use_log_sigma else t
    x_in = x / sde_lib._bcast(jnp.sqrt(alpha**2 + sigma**2), x) if input_scaling else x
    return jax.nn.log_softmax(model.apply({"params": params}, x_in, c), axis=-1)

  return log_prob_fn
