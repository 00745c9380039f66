"""Networks and the maps from their outputs to scores.

A network is a Flax module called as `model.apply({"params": p}, x, c, train=...)` with
x [B, ...] and a per-example noise condition c [B] (and `y=` labels [B] for a class-conditional
network, `num_classes` > 0, label num_classes being the null label); it returns an array shaped
like x. `get_score_model` builds a network from the config's `model` group together with its
score function (`score.get_score_fn`: what c is, input scaling, output -> score). Noise-conditional
classifiers (`get_classifier`, `get_classifier_fn`) return log p(c | x_t, t) for classifier guidance.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

import sde_lib
from models.classifier import NoiseConditionalClassifier
from models.equivariant import EQUIVARIANT_MODELS
from models import scheduled
from models.mlp import MLP
from models.score import (CONDITIONINGS, PARAMETERIZATIONS, eps_to_score_fn, exact_eps_fn, get_classifier_fn,
                          get_eps_fn, get_model_score_fn, get_network_input_fn, get_score_fn, get_smld_score_fn)
from models.unet import UNet
from utils import Registry

Array = jax.Array

MODELS = Registry("model", "name")
MODELS.register("mlp", MLP)
MODELS.register("unet", UNet)
for _name, _cls in EQUIVARIANT_MODELS.items():  # sym_mlp, deepsets, egnn (models/equivariant.py)
  MODELS.register(_name, _cls)
CLASSIFIERS = Registry("classifier.model", "name")
CLASSIFIERS.register("mlp", NoiseConditionalClassifier)
SCORE_FIELDS = ("parameterization", "conditioning", "input_scaling")


def register_model(name: str, cls: type[nn.Module]) -> None:
  """Adds a network class to the registry used by `get_model` and the configs."""
  MODELS.register(name, cls)


def _build(registry: Registry, name: str, kwargs: dict) -> nn.Module:
  model = registry.build(name, **kwargs)
  if hasattr(model, "validate"):
    model.validate()
  return model


def get_model(name: str, **kwargs) -> nn.Module:
  """Builds a network by registry name; kwargs are its fields (e.g. `hidden`, `depth`).

  Raises:
    ValueError: unknown name or field, or a field out of range.
  """
  return _build(MODELS, name, kwargs)


def get_classifier(name: str = "mlp", **kwargs) -> nn.Module:
  """Builds a noise-conditional classifier by registry name (config group `classifier.model`).

  Raises:
    ValueError: unknown name or field, or an out-of-range field.
  """
  return _build(CLASSIFIERS, name, kwargs)


@dataclasses.dataclass(frozen=True)
class ScoreModel:
  """A network with its score functions: score_fn(params, x, t, y=None, key=None) -> score, and
  train_score_fn, the same with the network in training mode (dropout)."""

  network: nn.Module
  score_fn: Callable[..., Array]
  train_score_fn: Callable[..., Array]

  @property
  def dropout(self) -> float:
    return float(getattr(self.network, "dropout", 0.0))


def get_score_model(sde: sde_lib.SDE, *, name: str, parameterization: str = "eps", conditioning: str = "auto",
                    input_scaling: bool = True, **fields) -> ScoreModel:
  """The consumer of the config's `model` group: the network `name` with `fields`, and its score
  for `sde` (see `get_score_fn` for parameterization, conditioning and input_scaling).

  Raises:
    ValueError: unknown name, field or setting.
  """
  network = get_model(name, **fields)
  kw = dict(parameterization=parameterization, conditioning=conditioning, input_scaling=input_scaling)
  if isinstance(sde, sde_lib.LearnedLogSNRSDE):  # the schedule's parameters join the network's
    scheduled.check_learned_settings(parameterization, conditioning)
    network = scheduled.WithSchedule(network, sde.init_params)
    return ScoreModel(network, scheduled.scheduled_score_fn(sde, network, get_score_fn, **kw),
                      scheduled.scheduled_score_fn(sde, network, get_score_fn, train=True, **kw))
  return ScoreModel(network, get_score_fn(sde, network, **kw), get_score_fn(sde, network, train=True, **kw))


def init_params(key: Array, model: nn.Module, shape: tuple[int, ...]) -> dict:
  """Initial parameters for inputs of `shape` ([B, ...])."""
  x = jnp.zeros((1,) + tuple(shape[1:]))
  return model.init(key, x, jnp.zeros((1,)))["params"]


__all__ = ["MODELS", "CLASSIFIERS", "MLP", "UNet", "NoiseConditionalClassifier", "ScoreModel", "SCORE_FIELDS",
           "PARAMETERIZATIONS", "CONDITIONINGS", "register_model", "get_model", "get_classifier", "get_score_model",
           "init_params", "get_score_fn", "get_classifier_fn", "get_network_input_fn", "get_eps_fn",
           "eps_to_score_fn", "get_model_score_fn", "exact_eps_fn", "get_smld_score_fn"]
