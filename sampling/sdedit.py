"""SDEdit (Meng et al. 2022, "SDEdit: Guided image synthesis and editing with stochastic
differential equations"): image-to-image translation by perturbing a guide to t0 and solving
the reverse process from there."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

import sde_lib
import utils
from sampling.base import as_pytree_fn, check_common, tweedie_denoise
from sampling.dps import posterior_step
from utils import bcast, fold, normal, per_sample_keys

Array = jax.Array


def _ddim_step(sde: sde_lib.SDE, x: Array, x0: Array, t: Array, s: Array) -> Array:
  """x_s = alpha_s x0_hat + sigma_s eps_hat, eps_hat = (x_t - alpha_t x0_hat) / sigma_t: the
  deterministic DDIM step (Song et al. 2021, Eq. 12 with eta = 0), a first-order solver of the
  probability-flow ODE."""
  a_t, s_t = sde.marginal_coeffs(t)
  a_s, s_s = sde.marginal_coeffs(s)
  eps_hat = (x - bcast(a_t, x) * x0) / bcast(s_t, x)
  return bcast(a_s, x) * x0 + bcast(s_s, x) * eps_hat


def _sdedit(sde, n_steps: int, eps: float, probability_flow: bool, key, score_fn, x_guide, t0):
  """x_{t0} = alpha_{t0} x_guide + sigma_{t0} z, then n_steps steps to eps and Tweedie's x0."""
  B = x_guide.shape[0]
  keys = per_sample_keys(key, B)
  mean, std = sde.marginal_prob(x_guide, jnp.full((B,), t0))
  x = mean + bcast(std, x_guide) * normal(fold(keys, 0), x_guide)
  ts = jnp.linspace(t0, eps, n_steps + 1)
  step_keys = fold(keys, 1)

  def body(x, k):
    t, s = jnp.full((B,), ts[k]), jnp.full((B,), ts[k + 1])
    x0 = tweedie_denoise(sde, score_fn, x, t)
    if probability_flow:
      return _ddim_step(sde, x, x0, t, s), None
    return posterior_step(sde, x, x0, t, s, normal(fold(step_keys, k), x)), None

  x, _ = jax.lax.scan(body, x, jnp.arange(n_steps))
  return tweedie_denoise(sde, score_fn, x, jnp.full((B,), eps))


def get_sdedit_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, t0: float = 0.5, n_steps: int = 100,
                       probability_flow: bool = False, eps: float = 1e-3) -> Callable:
  """SDEdit (Meng et al. 2022, Alg. 1): perturb the guide by the forward marginal,

      x_{t0} = alpha_{t0} x_guide + sigma_{t0} z,  z ~ N(0, I),

  then solve the reverse process from t0 to eps on n_steps uniform steps: the reverse SDE by
  ancestral steps x_s ~ q(x_s | x_t, x0_hat(x_t)) (`dps.posterior_step`; Ho et al. 2020), or the
  probability-flow ODE by DDIM steps (probability_flow=True), and finish with Tweedie's formula
  at eps. Small t0 keeps the guide (faithful), t0 = T forgets it (realistic). With the exact
  score of a Gaussian target, the SDE's output given the guide tends to p(x0 | x_{t0}) averaged
  over the perturbation as the steps grow (tests/test_sdedit.py). t0 is a call argument, so one
  compiled program serves every t0. NFE = n_steps + 1; sample i uses fold_in(key, i) only.

  Args:
    sde: the forward SDE.
    shape: [B, ...], the guides' shape.
    t0: the default start time, in (eps, T].
    n_steps: steps from t0 to eps.
    probability_flow: solve the ODE (deterministic given x_{t0}) instead of the SDE.
    eps: end time.

  Returns:
    sampler(key, score_fn, x_guide, t0=None) -> (x, nfe); x_guide [B, ...] in the data's range.

  Raises:
    ValueError: a bad shape, n_steps < 1, eps or t0 outside (eps, T]; at call time, a guide of
      the wrong shape or a bad t0.
  """
  shape = check_common(sde, shape, eps)
  n_steps = utils.check_int("n_steps", n_steps, 1)
  check_t0 = lambda v: utils.check_real("t0", v, low=eps, high=sde.T, low_open=True)
  t0 = check_t0(t0)
  utils.check_bool("probability_flow", probability_flow)
  run = jax.jit(lambda key, score_fn, x_guide, t: (_sdedit(sde, n_steps, eps, probability_flow, key, score_fn,
                                                           x_guide, t), n_steps + 1))

  def sampler(key, score_fn, x_guide, t0=t0):
    if tuple(jnp.shape(x_guide)) != shape:
      raise ValueError(f"x_guide.shape={tuple(jnp.shape(x_guide))} must equal the sampler's shape={shape}.")
    return run(key, as_pytree_fn(score_fn), jnp.asarray(x_guide, jnp.float32), jnp.float32(check_t0(t0)))

  return sampler
