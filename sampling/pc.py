"""Predictor-corrector sampling of the reverse SDE (Song et al. 2021, Alg. 1): predictors,
correctors, the PC time loop (shared with inpainting) and `get_pc_sampler`."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import sde_lib
import utils
from sampling.base import (Sampler, check_common, empty_trajectory, finish_trajectory, record, start,
                           trajectory_stride, tweedie_denoise)
from utils import bcast, fold, normal

Array = jax.Array


# --- predictors: (keys [B], rsde, x [B, ...], t [B], t_next [B]) -> (x, x_mean); one NFE each ---

def euler_maruyama(keys, rsde, x, t, t_next):
  """Euler-Maruyama step of the reverse SDE (Song et al. 2021, Eq. 6) from t to t_next < t:

      x_mean = x + [f(x, t) - g(t)^2 s(x, t)] dt,  x = x_mean + g(t) sqrt(-dt) z,  dt = t_next - t.
  """
  dt = t_next - t
  drift, g = rsde.sde(x, t)
  x_mean = x + drift * bcast(dt, x)
  return x_mean + bcast(g * jnp.sqrt(-dt), x) * normal(keys, x), x_mean


def reverse_diffusion(keys, rsde, x, t, t_next):
  """Reverse diffusion (Song et al. 2021, App. E, Eq. 46): with the forward step x_{i+1} = x_i + f_i + G_i z,

      x_mean = x - f_i + G_i^2 s(x, t),  x = x_mean + G_i z   (t_next unused).
  """
  del t_next
  f, G = rsde.discretize(x, t)
  x_mean = x - f
  return x_mean + bcast(G, x) * normal(keys, x), x_mean


def ancestral_sampling(keys, rsde, x, t, t_next):
  """Sample the Gaussian posterior q(x_s | x_t, x0) with x0 from Tweedie (s = t_next).

  For any linear SDE, with alpha_{t|s} = alpha_t / alpha_s and
  sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2:
    mean = alpha_{t|s} sigma_s^2 / sigma_t^2 x_t + alpha_s sigma_{t|s}^2 / sigma_t^2 x0_hat,
    var  = sigma_{t|s}^2 sigma_s^2 / sigma_t^2.
  This is DDPM ancestral sampling (Ho et al. Eq. 7, beta_tilde) for VP and SMLD's
  ancestral sampler for VE (Song et al. App. F, Eq. 47).
  """
  sde = rsde.forward
  a_t, s_t = sde.marginal_coeffs(t)
  a_s, s_s = sde.marginal_coeffs(t_next)
  x0_hat = tweedie_denoise(sde, rsde.score_fn, x, t)
  a_ts = a_t / a_s
  s2_ts = s_t**2 - a_ts**2 * s_s**2
  x_mean = bcast(a_ts * s_s**2 / s_t**2, x) * x + bcast(a_s * s2_ts / s_t**2, x) * x0_hat
  std = jnp.sqrt(jnp.maximum(s2_ts * s_s**2 / s_t**2, 0.0))
  return x_mean + bcast(std, x) * normal(keys, x), x_mean


def no_predictor(keys, rsde, x, t, t_next):
  """The identity (corrector-only sampling); no NFE."""
  del keys, rsde, t, t_next
  return x, x


PREDICTORS = {"euler_maruyama": euler_maruyama, "reverse_diffusion": reverse_diffusion,
              "ancestral_sampling": ancestral_sampling, "none": no_predictor}


# --- correctors: (keys [B], sde, score_fn, x [B, ...], t [B], snr) -> (x, x_mean); one NFE each ---

def langevin(keys, sde, score_fn, x, t, snr):
  """One Langevin MCMC step (Song et al. 2021, Alg. 4-5) with one step size for the batch:

      x_mean = x + eps s(x, t),  x = x_mean + sqrt(2 eps) z_i,
      eps = 2 alpha_i (snr mean_j ||z_j|| / mean_j ||s(x_j, t)||)^2,

  the norms averaged over the whole batch (a plain mean over axis 0, which under jit is the global
  mean of a sharded batch, so the step does not depend on the device count); the noise z_i is drawn
  per sample. A step that depends on each sample's own x would bias unadjusted Langevin (its
  stationary law becomes p(x) / eps(x)); one number per batch does not.
  """
  grad = score_fn(x, t)
  z = normal(keys, x)
  grad_norm = jnp.mean(utils.flat_norm(grad))
  noise_norm = jnp.mean(utils.flat_norm(z))
  step = 2.0 * sde.langevin_alpha(t) * (snr * noise_norm / jnp.maximum(grad_norm, 1e-30)) ** 2
  x_mean = x + bcast(step, x) * grad
  return x_mean + bcast(jnp.sqrt(2.0 * step), x) * z, x_mean


def annealed_langevin(keys, sde, score_fn, x, t, snr):
  """Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1) with eps = 2 alpha (snr sigma(t))^2:

      x_mean = x + eps s(x, t),  x = x_mean + sqrt(2 eps) z.
  """
  grad = score_fn(x, t)
  _, sigma = sde.marginal_coeffs(t)
  step = 2.0 * sde.langevin_alpha(t) * (snr * sigma) ** 2
  x_mean = x + bcast(step, x) * grad
  return x_mean + bcast(jnp.sqrt(2.0 * step), x) * normal(keys, x), x_mean


CORRECTORS = {"langevin": langevin, "ald": annealed_langevin, "none": None}


# --- the PC time loop -------------------------------------------------------------

class PCSettings(NamedTuple):
  """The checked settings of a PC loop (`pc_settings`)."""
  sde: sde_lib.SDE
  shape: tuple[int, ...]
  predictor_fn: Callable
  corrector_fn: Callable | None
  n_corr: int  # corrector steps per time step (0 without a corrector)
  snr: float
  probability_flow: bool
  denoise: bool
  eps: float
  ts: Array  # [N + 1], T to eps
  nfe: int


def _check_ddpm_chain(sde: sde_lib.SDE, predictor: str, corrector: str) -> None:
  """The VP SDE's reverse_diffusion step and Langevin alpha use its DDPM chain, whose largest beta,
  about beta_max / N, must not exceed 1 (else sqrt(1 - beta) is NaN)."""
  uses_chain = predictor == "reverse_diffusion" or corrector in ("langevin", "ald")
  if not (uses_chain and type(sde) is sde_lib.VPSDE):
    return
  beta = float(np.max(np.asarray(sde.discrete_betas())))
  if beta > 1.0 + 1e-6:  # float32 round-off of exactly 1 (N = beta_max) is allowed
    raise ValueError(f"sde.N={sde.N} is too small for sde.beta_max={sde.beta_max}: the DDPM chain that "
                     f"predictor={predictor!r} / corrector={corrector!r} use has beta up to {beta:.3g}, which must "
                     f"be <= 1; use N >= beta_max, or a sampler without the chain (ode, ddim, dpm_solver, unipc).")


def pc_settings(sde: sde_lib.SDE, shape, *, predictor: str = "reverse_diffusion",
                corrector: str = "langevin", snr: float = 0.16, n_steps: int = 1,
                probability_flow: bool = False, denoise: bool = True, eps: float = 1e-3) -> PCSettings:
  """Checks the PC settings (as `get_pc_sampler`) and computes the time grid and NFE.

  Raises:
    ValueError: unknown predictor/corrector, or out-of-range numbers.
  """
  shape = check_common(sde, shape, eps)
  utils.check_choice("sampling.predictor", predictor, PREDICTORS)
  utils.check_choice("sampling.corrector", corrector, CORRECTORS)
  utils.check_real("sampling.snr", snr, low=0.0, low_open=True)
  utils.check_int("sampling.n_steps", n_steps, 0)
  utils.check_bool("sampling.probability_flow", probability_flow)
  utils.check_bool("sampling.denoise", denoise)
  _check_ddpm_chain(sde, predictor, corrector)
  corrector_fn = CORRECTORS[corrector]
  n_corr = int(n_steps) if corrector_fn is not None else 0
  nfe = sde.N * ((predictor != "none") + n_corr) + int(denoise)
  return PCSettings(sde, shape, PREDICTORS[predictor], corrector_fn, n_corr, snr, probability_flow,
                    denoise, eps, jnp.linspace(sde.T, eps, sde.N + 1), nfe)


def pc_solve(cfg: PCSettings, score_fn, keys: Array, x: Array, *, hook: Callable | None = None,
             n_trajectory: int = 0) -> tuple[Array, Array | None]:
  """The PC loop from x at T to eps: at each t_k, `n_corr` corrector steps, then one predictor step
  t_k -> t_{k+1}; with `denoise`, a final Tweedie step at eps.

  Step k draws from fold_in(keys[i], k): the predictor from fold_in(., 0), corrector step j from
  fold_in(., j + 1).

  Args:
    cfg: `pc_settings`.
    score_fn: score_fn(x, t).
    keys: per-sample step keys [B].
    x: the state at T [B, ...].
    hook: hook(x, t, m) -> x, applied after every corrector and predictor step at the time t it
      reached; m counts the substeps from 1 (step k's are (n_corr + 1) k + 1 .. (n_corr + 1)(k + 1)).
    n_trajectory: static; if > 0, also the states after every ceil(N / n_trajectory)-th step.

  Returns:
    (x at eps [B, ...], trajectory [n_trajectory, B, ...] or None; its last state is set by
    `finish_trajectory`).
  """
  sde, B, n_corr = cfg.sde, x.shape[0], cfg.n_corr
  rsde = sde.reverse(score_fn, cfg.probability_flow)
  stride = trajectory_stride(sde.N, n_trajectory)
  hook = hook if hook is not None else (lambda x, t, m: x)

  def step(carry, k):
    x, traj = carry
    t, t_next = jnp.full((B,), cfg.ts[k]), jnp.full((B,), cfg.ts[k + 1])
    step_keys = fold(keys, k)
    for j in range(n_corr):
      x, _ = cfg.corrector_fn(fold(step_keys, j + 1), sde, score_fn, x, t, cfg.snr)
      x = hook(x, t, (n_corr + 1) * k + j + 1)
    x, _ = cfg.predictor_fn(fold(step_keys, 0), rsde, x, t, t_next)
    x = hook(x, t_next, (n_corr + 1) * (k + 1))
    return (x, record(traj, x, k, stride)), None

  (x, traj), _ = jax.lax.scan(step, (x, empty_trajectory(n_trajectory, x)), jnp.arange(sde.N))
  if cfg.denoise:
    x = tweedie_denoise(sde, score_fn, x, jnp.full((B,), cfg.eps))
  return x, traj


def get_pc_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, predictor: str = "reverse_diffusion",
                   corrector: str = "langevin", snr: float = 0.16, n_steps: int = 1,
                   probability_flow: bool = False, denoise: bool = True, eps: float = 1e-3) -> Sampler:
  """Predictor-corrector sampler (Song et al. 2021, Alg. 1) over N = sde.N steps from T to eps.

  Time grid t_k = T + k (eps - T) / N, k = 0..N. At each k: `n_steps` corrector steps at t_k,
  then one predictor step t_k -> t_{k+1}. With `denoise`, a final Tweedie step at eps.
  NFE = N (predictor != "none") + N n_steps (corrector != "none") + denoise.

  Args:
    sde: the forward SDE.
    shape: [B, ...] of the batch.
    predictor: a name in `PREDICTORS`.
    corrector: a name in `CORRECTORS`.
    snr: the corrector's signal-to-noise ratio.
    n_steps: corrector steps per time step.
    probability_flow: predict with the probability-flow ODE instead of the reverse SDE.
    denoise: finish with Tweedie's formula E[x_0 | x_eps].
    eps: end time.

  Returns:
    A `Sampler`: sampler(key, score_fn, x_T=None) -> (x, nfe); sampler.trajectory(key, score_fn,
    n_trajectory, x_T=None) -> (x, nfe, traj) with n_trajectory in [1, N].

  Raises:
    ValueError: unknown predictor/corrector, or out-of-range numbers.
  """
  cfg = pc_settings(sde, shape, predictor=predictor, corrector=corrector, snr=snr, n_steps=n_steps,
                    probability_flow=probability_flow, denoise=denoise, eps=eps)

  def run(key, score_fn, x_T, n_trajectory):
    x, keys = start(key, sde, cfg.shape, x_T)
    x, traj = pc_solve(cfg, score_fn, fold(keys, 1), x, n_trajectory=n_trajectory)
    return x, cfg.nfe, finish_trajectory(traj, x)

  return Sampler("pc", cfg.shape, run, max_trajectory=sde.N)
