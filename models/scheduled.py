"""A score network trained together with a learned noise schedule (`sde_lib.LearnedLogSNRSDE`).

The schedule's parameters sit beside the network's in one parameter tree, {"network": ...,
"schedule": ...}, so the optimizer, the EMA and the checkpoints carry both; the score of a
parameter tree uses the schedule of that same tree (`LearnedLogSNRSDE.bind`).
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax

import sde_lib

Array = jax.Array


class WithSchedule(nn.Module):
  """`network` plus the parameters "schedule" = schedule_init(key); called like `network`."""

  network: nn.Module
  schedule_init: Callable[[Array], dict]

  @property
  def dropout(self) -> float:
    return float(getattr(self.network, "dropout", 0.0))

  def validate_input(self, shape) -> None:
    if hasattr(self.network, "validate_input"):
      self.network.validate_input(shape)

  @nn.compact
  def __call__(self, x: Array, c: Array, y: Array | None = None, train: bool = False) -> Array:
    self.param("schedule", self.schedule_init)
    return self.network(x, c, **({} if y is None else {"y": y}), train=train)


def check_learned_settings(parameterization: str, conditioning: str) -> None:
  """The learned-schedule loss predicts eps from (z_t, -lambda_t); other settings would differ
  between training and sampling."""
  if parameterization != "eps":
    raise ValueError(f"model.parameterization={parameterization!r} is not supported with sde.name="
                     "'learned_logsnr'; use 'eps'.")
  if conditioning not in ("auto", "log_snr"):
    raise ValueError(f"model.conditioning={conditioning!r} is not supported with sde.name='learned_logsnr'; "
                     "use 'auto' or 'log_snr' (the network sees -log SNR / 2, as the loss does).")


def scheduled_score_fn(sde: sde_lib.LearnedLogSNRSDE, network: WithSchedule, make_score_fn: Callable,
                       **kwargs) -> Callable[..., Array]:
  """model_score_fn(params, x, t, y=None, key=None) with the SDE bound to params' own schedule;
  make_score_fn(sde, network, **kwargs) is `models.score.get_score_fn`."""

  def model_score_fn(params, x, t, y=None, key=None):
    return make_score_fn(sde.bind(params), network, **kwargs)(params, x, t, y, key)

  return model_score_fn
