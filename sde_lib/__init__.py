"""Forward SDEs, their marginals, priors, discretisations and reverse processes.

Every SDE here is linear in x (Song et al. 2021, Sec. 3.4 and App. B):

    dx = f(t) x dt + g(t) dW,    p_t(x | x0) = N(x; alpha(t) x0, sigma(t)^2 I).

`base` holds the generic machinery, `continuous` the SDEs of the paper (VE, VP, sub-VP) with
Ornstein-Uhlenbeck and lambda-VE, `discrete` the DDPM / SMLD schedules and the DDPM chain as
an SDE, `snr` the VP SDEs given by a log-SNR schedule (VDM). SDEs are built by name from the config's `sde` group with `get_sde`.
"""

from __future__ import annotations

from sde_lib.base import SDE, ReverseSDE, ScoreFn, t_of_log_snr
from sde_lib.continuous import LambdaVESDE, OUSDE, SubVPSDE, VESDE, VPSDE
from sde_lib.discrete import (VARIANCES, DiscreteSchedule, DiscreteVPSDE, cosine_schedule, geometric_sigmas,
                              get_schedule, linear_schedule, reverse_variance, schedule_of)
from sde_lib.snr import LearnedLogSNRSDE, LogSNRSDE
from utils import Registry

SDES = Registry("sde", "name")
for _name, _cls in (("vesde", VESDE), ("vpsde", VPSDE), ("subvpsde", SubVPSDE), ("ousde", OUSDE),
                    ("lambda_vesde", LambdaVESDE), ("ddpm", DiscreteVPSDE), ("logsnr", LogSNRSDE),
                    ("learned_logsnr", LearnedLogSNRSDE)):
  SDES.register(_name, _cls)


def register_sde(name: str, cls: type[SDE]) -> None:
  """Adds an SDE class to the registry used by `get_sde` and the configs."""
  SDES.register(name, cls)


def bound(sde: SDE, params) -> SDE:
  """`sde` with a score model's parameters bound where it learns its schedule (`LearnedLogSNRSDE`),
  else `sde` itself."""
  return sde.bind(params) if isinstance(sde, LearnedLogSNRSDE) else sde


def get_sde(name: str, **kwargs) -> SDE:
  """Builds an SDE by registry name; kwargs are its fields (e.g. `sigma_min`, `N`).

  Raises:
    ValueError: unknown name, unknown field or an out-of-range value.
  """
  return SDES.build(name, **kwargs)


__all__ = ["SDE", "ReverseSDE", "ScoreFn", "VESDE", "VPSDE", "SubVPSDE", "OUSDE", "LambdaVESDE", "LogSNRSDE", "LearnedLogSNRSDE",
           "DiscreteSchedule", "DiscreteVPSDE", "VARIANCES", "linear_schedule", "cosine_schedule",
           "get_schedule", "geometric_sigmas", "schedule_of", "reverse_variance", "SDES", "register_sde",
           "get_sde", "bound"]
