"""Optimised time grids: the interior log-SNRs of a few-step sampler fitted by minimising the exact
KL of its samples (`metrics.kl_terms`) on one or several targets with a known density, with optax.

The grid is monotone by construction: with increments softmax(theta) of the log-SNR range,

    lambda_k = lambda_T + (lambda_end - lambda_T) sum_{j < k} softmax(theta)_j,   k = 1..n - 1,

theta = 0 being the uniform log-SNR grid. The result is a list of numbers for a config
(`schedule="custom", timesteps=[...]`, see `schedules.get_time_schedule`). Fitting on a set of
targets at once (2-D and 3-D, broad and narrow modes) minimises their mean KL, so the grid is not
tuned to one mixture; `benchmarks/sampler_kl.py` measures it on mixtures it was not fitted on.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import metrics
import sde_lib
import utils
from sampling.base import ScoreFn
from sampling.schedules import check_timesteps, end_time

Array = jax.Array
# (score_fn(x, t), log_prob(x [B, dim]) -> [B], dim): one target of the fit.
FitTarget = tuple[ScoreFn, Callable[[Array], Array], int]


def grid_of_logits(theta: Array, lam_T: Array, lam_end: Array) -> Array:
  """The interior log-SNRs [n - 1] of the n-step grid with increment logits theta [n]."""
  return lam_T + (lam_end - lam_T) * jnp.cumsum(jax.nn.softmax(theta))[:-1]


def logits_of_grid(timesteps, lam_T: float, lam_end: float) -> Array:
  """The inverse of `grid_of_logits` (up to a constant): theta [n] of the interior log-SNRs [n - 1]."""
  increments = np.diff(np.concatenate([[lam_T], np.asarray(timesteps, np.float64), [lam_end]]))
  return jnp.asarray(np.log(increments / increments.sum()), jnp.float32)


def grid_bounds(sde: sde_lib.SDE, n_steps: int, *, denoise: bool = False, sigma_end: float | None = None,
                eps: float = 1e-3) -> tuple[int, float, float]:
  """(solver steps, lambda(T), lambda(end)) of a fast sampler's grid (`schedules.fast_settings`)."""
  t_end = end_time(sde, eps=eps, sigma_end=sigma_end)
  with jax.ensure_compile_time_eval():
    lam_T, lam_end = (float(v) for v in sde.log_snr(jnp.array([sde.T, t_end], jnp.float32)))
  return n_steps - int(bool(denoise)), lam_T, lam_end


def fit_logits(loss_fn: Callable[[Array, Array], Array], theta: Array, *, n_iters: int,
               learning_rate: float, decay: float = 0.1) -> tuple[Array, list[float]]:
  """Adam on loss_fn(theta, iteration) with a cosine decay of the step size to decay x learning_rate.

  Returns:
    (theta, the loss per iteration).
  """
  utils.check_int("n_iters", n_iters, 1)
  utils.check_real("learning_rate", learning_rate, low=0.0, low_open=True)
  opt = optax.adam(optax.cosine_decay_schedule(learning_rate, n_iters, decay))

  @jax.jit
  def update(theta, opt_state, i):
    loss, grad = jax.value_and_grad(loss_fn)(theta, i)
    updates, opt_state = opt.update(grad, opt_state)
    return optax.apply_updates(theta, updates), opt_state, loss

  opt_state, losses = opt.init(theta), []
  for i in range(n_iters):
    theta, opt_state, loss = update(theta, opt_state, i)
    losses.append(float(loss))
  return theta, losses


def optimise_grid(key: Array, sde: sde_lib.SDE, targets: Sequence[FitTarget], *, method: str = "unipc",
                  n_steps: int = 10, batch_size: int = 1024, n_iters: int = 300,
                  learning_rate: float = 0.05, init: Sequence[float] | None = None,
                  kl_floor: float | None = None, **sampler_kwargs) -> dict:
  """Minimises the mean exact KL(q || p) of `method` with n_steps over targets, in its log-SNR grid.

  Each iteration draws batch_size fresh prior latents per target from fold_in(fold_in(key, i), j)
  and takes an Adam step (cosine-decayed step size) on the mean over targets of the Monte Carlo KL
  (`metrics.kl_terms`, gradients through the whole sampler and through `t_of_log_snr`), or with
  kl_floor of log(max(KL, 0) + kl_floor), which weighs the targets by their relative error
  (1 / (KL + kl_floor)) instead of letting the hardest one decide the grid.

  Args:
    key: PRNG key of the latents.
    sde: the forward SDE.
    targets: (score_fn, log_prob, dim) per target: its (exact) score, log p(x [B, dim]) -> [B].
    method: a fast sampler taking schedule="custom" (ddim, edm_heun, dpm_solver*, unipc).
    n_steps: its NFE budget; sampler_kwargs: its other fields (e.g. order, denoise, sigma_end).
    batch_size, n_iters, learning_rate: the optimisation.
    init: the interior log-SNRs to start from (default: the uniform log-SNR grid).
    kl_floor: None (minimise the mean KL) or the floor of the mean log KL.

  Returns:
    {"timesteps": the interior log-SNRs (python floats), "loss": the objective per iteration}.

  Raises:
    ValueError: no targets, bad n_iters, batch_size, learning_rate or init, or a bad sampler field.
  """
  import sampling  # the registry (sampling/__init__ imports this module's package)

  utils.check_int("batch_size", batch_size, 2)
  if kl_floor is not None:
    utils.check_real("kl_floor", kl_floor, low=0.0, low_open=True)
  if not targets:
    raise ValueError("optimise_grid needs at least one (score_fn, log_prob, dim) target.")
  for _, _, dim in targets:  # checks the sampler's fields before anything is traced
    sampling.get_sampler(sde, (batch_size, dim), method=method, n_steps=n_steps, **sampler_kwargs)
  n_solver, lam_T, lam_end = grid_bounds(sde, n_steps, **_end_fields(sampler_kwargs))
  if init is not None:
    init = check_timesteps(sde, "custom", init, n_solver, _t_end(sde, sampler_kwargs))
  theta = jnp.zeros((n_solver,)) if init is None else logits_of_grid(init, lam_T, lam_end)
  fns = [(jax.tree_util.Partial(score_fn), log_prob, dim) for score_fn, log_prob, dim in targets]

  def loss_fn(theta, i):
    timesteps, total = grid_of_logits(theta, lam_T, lam_end), 0.0
    for j, (score_fn, log_prob, dim) in enumerate(fns):
      sampler = sampling.get_sampler(sde, (batch_size, dim), method=method, n_steps=n_steps,
                                     schedule="custom", timesteps=timesteps, **sampler_kwargs)
      z = sde.prior_sampling(jax.random.fold_in(jax.random.fold_in(key, i), j), (batch_size, dim))
      run = lambda x_T, sampler=sampler, score_fn=score_fn: sampler.run(None, score_fn, x_T, 0)[0]
      kl = jnp.mean(metrics.kl_terms(run, log_prob, sde.prior_logp, z))
      total = total + (kl if kl_floor is None else jnp.log(jnp.maximum(kl, 0.0) + kl_floor))
    return total / len(fns)

  theta, losses = fit_logits(loss_fn, theta, n_iters=n_iters, learning_rate=learning_rate)
  timesteps = np.asarray(grid_of_logits(theta, lam_T, lam_end), np.float64)
  return {"timesteps": [float(v) for v in timesteps], "loss": losses}


def _end_fields(sampler_kwargs: dict) -> dict:
  return {k: sampler_kwargs[k] for k in ("denoise", "sigma_end", "eps") if k in sampler_kwargs}


def _t_end(sde: sde_lib.SDE, sampler_kwargs: dict) -> float:
  return end_time(sde, eps=sampler_kwargs.get("eps", 1e-3), sigma_end=sampler_kwargs.get("sigma_end"))
