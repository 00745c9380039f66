"""Samplers for the reverse process, built by name with `get_sampler(sde, shape, method=..., **fields)`.

Every sampler is compiled once per shape and called as

    x, nfe = sampler(key, score_fn, x_T=None)                        # always two values
    x, nfe, traj = sampler.trajectory(key, score_fn, n_trajectory)   # pc, ode, ddpm_ancestral

with `score_fn(x, t) -> score`, so a trained network, an exact (oracle) score and a guided score
are interchangeable; `functools.partial(model_score_fn, params)` is traced, so new parameters do
not recompile. `x_T` is the prior latent (deterministic samplers are maps of it); `nfe` counts
score evaluations per sample. Sample i draws all its randomness from fold_in(key, i), so it does
not depend on the batch size or on how the batch is sharded.

Files: `pc` (predictor-corrector), `ode` (probability-flow ODE), `schedules`, `ddim`, `edm`,
`dpm_solver`, `unipc`, `bespoke` (few-step solvers), `ancestral` (DDPM chain), `guidance`, `inverse` (inpainting,
colorization), `base` (the `Sampler` object).
"""

from __future__ import annotations

from typing import Callable

import sde_lib
from sampling.bespoke import get_bespoke_sampler
from sampling.ancestral import get_ancestral_sampler, get_vp_ancestral_sampler
from sampling.base import Sampler, as_pytree_fn, prior_sample, tweedie_denoise
from sampling.ddim import get_ddim_sampler
from sampling.dpm_solver import dpm_solver_fixed_order, get_dpm_solver_sampler
from sampling.edm import get_edm_heun_sampler
from sampling.guidance import classifier_free_guidance, classifier_guidance
from sampling import operators
from sampling.ddrm import get_ddrm_sampler
from sampling.dps import get_dps_sampler
from sampling.inverse import (colorization_basis, get_colorization_sampler, get_inpainting_sampler,
                              get_replacement_sampler, impose_known, linear_guidance, reconstruction_guidance)
from sampling.ode import (ODE_SOLVERS, check_ode_args, get_ode_encoder, get_ode_sampler, pf_ode_drift, solve_ode,
                          tolerances)
from sampling.pc import (CORRECTORS, PREDICTORS, ancestral_sampling, annealed_langevin, euler_maruyama,
                         get_pc_sampler, langevin, reverse_diffusion)
from sampling.schedules import SCHEDULES, end_time, get_time_schedule, sigma_edm, t_of_log_snr
from sampling.sdedit import get_sdedit_sampler
from sampling.smc import get_smc_sampler
from sampling.unipc import get_unipc_sampler, unipc_solve
from utils import Registry, per_sample_keys

SAMPLERS = Registry("sampling", "method")
for _name, _factory in (("pc", get_pc_sampler), ("ode", get_ode_sampler),
                        ("ddpm_ancestral", get_vp_ancestral_sampler), ("ddim", get_ddim_sampler),
                        ("edm_heun", get_edm_heun_sampler), ("dpm_solver", get_dpm_solver_sampler),
                        ("dpm_solver_2m", dpm_solver_fixed_order(2)),
                        ("dpm_solver_3m", dpm_solver_fixed_order(3)), ("unipc", get_unipc_sampler),
                        ("bespoke", get_bespoke_sampler)):
  SAMPLERS.register(_name, _factory)
from sampling import subspace  # noqa: E402  (subspace diffusion)
SAMPLERS.register("subspace_pc", subspace.get_subspace_pc_sampler)
SAMPLERS.register("subspace_ode", subspace.get_subspace_ode_sampler)
SAMPLERS.register("subspace_dpm_solver", subspace.get_subspace_dpm_solver_sampler)


def register_sampler(name: str, factory: Callable) -> None:
  """Adds a sampler factory `factory(sde, shape, **fields) -> Sampler` to the registry."""
  SAMPLERS.register(name, factory)


def get_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, method: str = "pc", **kwargs) -> Sampler:
  """Builds a sampler by method name; kwargs are the fields of its factory (e.g. `get_pc_sampler`).

  Returns:
    A `Sampler`: sampler(key, score_fn, x_T=None) -> (x, nfe).

  Raises:
    ValueError: unknown method (listing the valid ones), unknown field (naming it) or a bad value,
      before anything is compiled.
  """
  factory = SAMPLERS.get(method)
  try:
    SAMPLERS.check_fields(method, kwargs)
  except ValueError as e:
    raise ValueError(f"{e} (sampling.method={method!r})") from None
  try:
    return factory(sde, tuple(shape), **kwargs)
  except TypeError as e:  # a registered factory taking **kwargs that it does not accept
    raise ValueError(f"sampling: bad field for method={method!r}: {e}") from None


__all__ = [
    "Sampler", "SAMPLERS", "get_sampler", "register_sampler", "per_sample_keys", "as_pytree_fn",
    "prior_sample", "tweedie_denoise",
    "PREDICTORS", "CORRECTORS", "euler_maruyama", "reverse_diffusion", "ancestral_sampling", "langevin",
    "annealed_langevin", "get_pc_sampler",
    "ODE_SOLVERS", "solve_ode", "check_ode_args", "tolerances", "pf_ode_drift", "get_ode_sampler",
    "get_ode_encoder",
    "SCHEDULES", "t_of_log_snr", "sigma_edm", "end_time", "get_time_schedule", "get_ddim_sampler",
    "get_edm_heun_sampler", "get_dpm_solver_sampler", "get_unipc_sampler", "unipc_solve", "get_bespoke_sampler",
    "get_ancestral_sampler", "get_vp_ancestral_sampler",
    "classifier_free_guidance", "classifier_guidance",
    "impose_known", "get_inpainting_sampler", "reconstruction_guidance", "colorization_basis",
    "get_colorization_sampler", "operators", "get_replacement_sampler", "linear_guidance", "get_dps_sampler",
    "get_ddrm_sampler", "get_smc_sampler", "get_sdedit_sampler",
]
