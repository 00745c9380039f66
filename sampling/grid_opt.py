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

import functools
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
               learning_rate: float, decay: float = 0.1, average: float = 0.0) -> tuple[Array, list[float]]:
  """Adam on loss_fn(theta, iteration) with a cosine decay of the step size to decay x learning_rate.

  With average > 0 the result is the mean of the iterates over the last `average` fraction of the
  iterations (Polyak averaging): on a noisy objective Adam's last iterate rattles across the valley.

  Returns:
    (theta, the loss per iteration).
  """
  utils.check_int("n_iters", n_iters, 1)
  utils.check_real("learning_rate", learning_rate, low=0.0, low_open=True)
  utils.check_real("average", average, low=0.0, high=1.0)
  opt = optax.adam(optax.cosine_decay_schedule(learning_rate, n_iters, decay))

  @jax.jit
  def update(theta, opt_state, i):
    loss, grad = jax.value_and_grad(loss_fn)(theta, i)
    updates, opt_state = opt.update(grad, opt_state)
    return optax.apply_updates(theta, updates), opt_state, loss

  opt_state, losses = opt.init(theta), []
  first, mean = n_iters - max(int(average * n_iters), 1), None
  for i in range(n_iters):
    theta, opt_state, loss = update(theta, opt_state, i)
    losses.append(loss)  # kept on the device: no host sync per iteration
    if average and i >= first:
      k = i - first + 1
      mean = theta if mean is None else jax.tree.map(lambda m, t: m + (t - m) / k, mean, theta)
  return (mean if average else theta), [float(v) for v in jax.device_get(losses)]


def optimise_grid(key: Array, sde: sde_lib.SDE, targets: Sequence[FitTarget], *, method: str = "unipc",
                  n_steps: int = 10, batch_size: int = 1024, n_iters: int = 300,
                  learning_rate: float = 0.05, init: Sequence[float] | None = None,
                  kl_floor: float | None = None, chunks: int = 1, average: float = 0.0,
                  **sampler_kwargs) -> dict:
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
    chunks: the latents of a target go through the sampler in this many slices (`mean_kl_loss`).
    average: return the mean of the iterates over this last fraction of the iterations (`fit_logits`;
      0, the default that the benchmark's grids were fitted with, returns the last iterate).

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

  def make_sampler(theta, shape, j):
    del j  # one grid for every target
    return sampling.get_sampler(sde, shape, method=method, n_steps=n_steps, schedule="custom",
                                timesteps=grid_of_logits(theta, lam_T, lam_end), **sampler_kwargs)

  loss_fn = mean_kl_loss(key, sde, targets, make_sampler, batch_size=batch_size, kl_floor=kl_floor, chunks=chunks)
  theta, losses = fit_logits(loss_fn, theta, n_iters=n_iters, learning_rate=learning_rate, average=average)
  timesteps = np.asarray(grid_of_logits(theta, lam_T, lam_end), np.float64)
  return {"timesteps": [float(v) for v in timesteps], "loss": losses}


def mean_kl_loss(key: Array, sde: sde_lib.SDE, targets: Sequence[FitTarget],
                 make_sampler: Callable, *, batch_size: int, kl_floor: float | None, chunks: int = 1) -> Callable:
  """loss(params, i): the mean over targets j of the Monte Carlo exact KL of make_sampler(params, shape, j)
  (or of log(max(KL, 0) + kl_floor)), on batch_size fresh latents per target from
  fold_in(fold_in(key, i), j) at iteration i.

  With chunks > 1 the latents go through the sampler in `chunks` sequential slices of
  batch_size / chunks (`jax.lax.map`, each slice rematerialised in the backward pass): the same
  loss on the same latents in less memory. On this 2-core CPU one 8,192-latent step of the fast
  configs' 10-NFE fit never finished (XLA waited forever with every thread idle, also with
  XLA_FLAGS=--xla_cpu_multi_thread_eigen=false); 2 chunks of 4,096 run.
  """
  utils.check_int("chunks", chunks, 1)
  if batch_size % chunks:
    raise ValueError(f"chunks={chunks!r} must divide batch_size={batch_size!r} (the latents per target).")
  fns = [(jax.tree_util.Partial(score_fn), log_prob, dim) for score_fn, log_prob, dim in targets]

  def loss_fn(params, i):
    total = 0.0
    for j, (score_fn, log_prob, dim) in enumerate(fns):
      sampler = make_sampler(params, (batch_size // chunks, dim), j)
      z = sde.prior_sampling(jax.random.fold_in(jax.random.fold_in(key, i), j), (batch_size, dim))
      run = lambda x_T, sampler=sampler, score_fn=score_fn: sampler.run(None, score_fn, x_T, 0)[0]
      terms = functools.partial(metrics.kl_terms, run, log_prob, sde.prior_logp)
      if chunks > 1:
        kl = jnp.mean(jax.lax.map(jax.checkpoint(terms), z.reshape(chunks, batch_size // chunks, dim)))
      else:
        kl = jnp.mean(terms(z))
      total = total + (kl if kl_floor is None else jnp.log(jnp.maximum(kl, 0.0) + kl_floor))
    return total / len(fns)

  return loss_fn


def coefficients_of(sde: sde_lib.SDE, method: str, n_steps: int, **fields) -> tuple[list, list]:
  """(timesteps, coefficients) of the bespoke solver that is a given linear few-step sampler.

  Runs `get_sampler(sde, (1, n + 1), method=method, n_steps=n_steps, **fields)` eagerly on
  coefficient vectors over (y_0, d_0..d_{n-1}): its prior latent is alpha_T e_0 and its k-th
  model evaluation returns x0_hat = e_{k+1}, so each state it evaluates at is the vector of its
  weights, from which r_i and w_ij follow. Valid for samplers linear in the model's x0_hat with one
  evaluation per time (ddim, dpm_solver*, unipc, with the "tweedie" or "half" last step).

  Raises:
    ValueError: a bad sampler field, or evaluations that are not n_steps at decreasing times from T.
  """
  import sampling  # the registry (sampling/__init__ imports this module's package)

  n = n_steps
  sampler = sampling.get_sampler(sde, (1, n + 1), method=method, n_steps=n, **fields)
  states, times = [], []

  def score_fn(x, t):
    alpha, sigma = sde.marginal_coeffs(t)
    if len(times) < n:
      states.append(np.asarray(x[0], np.float64) / float(alpha[0]))
    times.append(float(t[0]))
    e = jnp.zeros_like(x).at[:, min(len(times), n)].set(1.0)
    return (alpha[:, None] * e - x) / sigma[:, None] ** 2

  with jax.disable_jit():
    alpha_T = float(sde.marginal_coeffs(jnp.full((1,), sde.T))[0][0])
    out = np.asarray(sampler.run(None, score_fn, jnp.zeros((1, n + 1)).at[0, 0].set(alpha_T), 0)[0][0], np.float64)
  if len(times) != n or times[0] != sde.T or np.any(np.diff(times) >= 0):
    raise ValueError(f"sampling.method={method!r} evaluated the model at t = {times}: not {n} decreasing times "
                     "from T, so it is not a bespoke solver.")
  states.append(out)
  ratios, weights = np.zeros(n), np.zeros((n, n))
  for i in range(n):
    ratios[i] = states[i + 1][0] / states[i][0]
    weights[i, : i + 1] = states[i + 1][1 : i + 2] - ratios[i] * states[i][1 : i + 2]
  lams = np.asarray(sde.log_snr(jnp.asarray(times[1:], jnp.float32)), np.float64)
  rows, cols = np.tril_indices(n)
  return [float(v) for v in lams], [float(v) for v in np.concatenate([ratios, weights[rows, cols]])]


def with_free_start(sde: sde_lib.SDE, timesteps: Sequence[float], coefficients: Sequence[float],
                    shift: float = 0.1) -> tuple[list, list]:
  """(points, coefficients) of a free-start bespoke solver next to one whose first evaluation is at T:
  the first point moves to lambda(T) + shift, where the prior latent is scaled by e^-shift
  (`bespoke.bespoke_solve`), and r_0 by e^shift, so every later state is unchanged and only the first
  evaluation's noise level moves (a start for `optimise_bespoke(free_start=True)`; the fit's points
  must lie strictly after lambda(T)).

  Raises:
    ValueError: shift not positive.
  """
  utils.check_real("shift", shift, low=0.0, low_open=True)
  lam_T = float(sde.log_snr(jnp.full((1,), sde.T, jnp.float32))[0])
  coefficients = [float(v) for v in coefficients]
  return [lam_T + shift] + [float(v) for v in timesteps], [coefficients[0] * float(np.exp(shift))] + coefficients[1:]


def with_gaussian_start(points: Sequence[float], coefficients: Sequence[float], drop: int) -> tuple[list, list]:
  """(points, coefficients) of an (n - drop)-NFE bespoke solver with the Gaussian start
  (`bespoke.get_bespoke_sampler(start_moments=...)`) at the n-NFE solver's evaluation point lambda_drop:
  its first `drop` evaluations are left out, the Gaussian approximation's flow stands in for the state
  y_drop they led to, and each later step's weights on them go to d_drop (where x0_hat barely moves
  with the noise level, the left-out d_j are close to it). points: all n evaluation log-SNRs.

  Raises:
    ValueError: drop not in [1, n - 1], or coefficients not those of n steps.
  """
  from sampling import bespoke

  n = len(points)
  if not (utils.is_int(drop) and 1 <= drop <= n - 1):
    raise ValueError(f"drop={drop!r} must be an integer in [1, {n - 1}] (the solver has {n} evaluations).")
  ratios, weights = (np.asarray(v, np.float64) for v in bespoke.split_coefficients(
      bespoke.check_coefficients(coefficients, n), n))
  kept = weights[drop:, drop:].copy()
  kept[:, 0] += weights[drop:, :drop].sum(axis=1)
  rows, cols = np.tril_indices(n - drop)
  return ([float(v) for v in points[drop:]],
          [float(v) for v in np.concatenate([ratios[drop:], kept[rows, cols]])])


def with_inserted_evaluation(points: Sequence[float], coefficients: Sequence[float], after: int,
                             lam: float) -> tuple[list, list]:
  """(points, coefficients) of an (n + 1)-NFE bespoke solver with the same output as the n-NFE one: a
  new evaluation at log-SNR lam between points[after] and points[after + 1] (after the last: in
  (points[-1], inf)), reached from y_after by the first-order (DDIM) step y_m = a y_after + (1 - a) d_after,
  a = e^(lambda_after - lam); the step out of it rewrites y_after as (y_m - (1 - a) d_after) / a, and
  every weight on d_m starts at 0. A start for `optimise_bespoke`, which can then use the new evaluation.

  Raises:
    ValueError: after not in [0, n - 1], or lam not strictly between its neighbours.
  """
  from sampling import bespoke

  n = len(points)
  if not (utils.is_int(after) and 0 <= after <= n - 1):
    raise ValueError(f"after={after!r} must be an integer in [0, {n - 1}].")
  upper = points[after + 1] if after + 1 < n else np.inf
  if not points[after] < lam < upper:
    raise ValueError(f"lam={lam!r} must lie strictly between {points[after]} and {upper}.")
  ratios, weights = (np.asarray(v, np.float64) for v in bespoke.split_coefficients(
      bespoke.check_coefficients(coefficients, n), n))
  i, a = after, float(np.exp(points[after] - lam))
  new_r, new_w = np.insert(ratios, i, a), np.zeros((n + 1, n + 1))
  keep = [j for j in range(n + 1) if j != i + 1]  # the columns of the old evaluations
  new_w[np.ix_([k for k in range(n + 1) if k not in (i, i + 1)], keep)] = np.delete(weights, i, axis=0)
  new_w[i, i] = 1.0 - a
  new_w[i + 1, keep] = weights[i]
  new_r[i + 1] = ratios[i] / a
  new_w[i + 1, i] -= ratios[i] * (1.0 - a) / a
  rows, cols = np.tril_indices(n + 1)
  return ([float(v) for v in points[: i + 1]] + [float(lam)] + [float(v) for v in points[i + 1:]],
          [float(v) for v in np.concatenate([new_r, new_w[rows, cols]])])


def optimise_bespoke(key: Array, sde: sde_lib.SDE, targets: Sequence[FitTarget], *, n_steps: int,
                     init_timesteps: Sequence[float], init_coefficients: Sequence[float] | None = None,
                     batch_size: int = 1024, n_iters: int = 300,
                     learning_rate: float = 0.02, kl_floor: float | None = None,
                     eps: float = 1e-3, average: float = 0.2, free_start: bool = False, chunks: int = 1,
                     start_moments: Sequence | None = None) -> dict:
  """Fits a bespoke solver (`sampling.bespoke`) with n_steps NFE: its evaluation log-SNRs and all
  its coefficients, by Adam on the mean exact KL over targets (as `optimise_grid`).

  Parameters: the increment logits of lambda_1..lambda_{n-1} between lambda(T) and lambda(eps)
  (`grid_of_logits`), log-multipliers on the ratios and additive changes to the weights of
  DPM-Solver++(2M) with the "half" last step on the current points
  (`bespoke.dpm_solver_2m_coefficients`), so the solver stays close to consistent with its points
  while they move. The fit starts from that solver on init_timesteps, or from init_coefficients
  there (e.g. another sampler's, `coefficients_of`; its ratios must be positive). The result
  is the mean of the iterates over the last `average` fraction of the iterations (`fit_logits`): on
  the default mixture at 6 NFE the last iterate measured 0.81e-3 nats where the average of the last
  20% measured 0.18e-3, with the same latents. With free_start the first evaluation point is fitted
  too (`bespoke.get_bespoke_sampler`'s start_log_snr): init_timesteps then holds all n points.
  chunks slices each target's latents as in `mean_kl_loss` (a large batch_size in bounded memory).
  start_moments, one (mean, covariance) per target, fits the solver with the Gaussian start
  (`bespoke.get_bespoke_sampler`), each target starting from its own data's moments.

  Returns:
    {"timesteps": lambda_1..lambda_{n-1}, "coefficients": the flat coefficients (python floats),
     "loss": the objective per iteration, "folded": per target, the fraction of batch_size fresh latents
     where the fitted solver folds the latent space (`metrics.sampler_kl`; logged when not 0)}.

  Raises:
    ValueError: no targets, bad n_steps, init_timesteps, batch_size, chunks, n_iters, learning_rate or
      start_moments.
  """
  from sampling import bespoke

  utils.check_int("n_steps", n_steps, 2)
  utils.check_int("batch_size", batch_size, 2)
  if kl_floor is not None:
    utils.check_real("kl_floor", kl_floor, low=0.0, low_open=True)
  if not targets:
    raise ValueError("optimise_bespoke needs at least one (score_fn, log_prob, dim) target.")
  if start_moments is not None and len(start_moments) != len(targets):
    raise ValueError(f"start_moments must hold one (mean, covariance) per target ({len(targets)}); "
                     f"got {len(start_moments)}.")
  moments = [None] * len(targets) if start_moments is None else list(start_moments)
  for m, (_, _, dim) in zip(moments, targets):
    bespoke.check_start_moments(m, dim)
  _, lam_T, lam_top = grid_bounds(sde, n_steps + 1, eps=eps)
  init = check_timesteps(sde, "custom", init_timesteps, n_steps + int(free_start), eps)
  # n (n + 1 with free_start) logits: the points after lambda(T), and the gap up to lambda(eps)
  params = {"theta": logits_of_grid(init, lam_T, lam_top), "log_r": jnp.zeros((n_steps,)),
            "dw": jnp.zeros((n_steps * (n_steps + 1) // 2,))}
  if init_coefficients is not None:
    start = np.asarray(bespoke.check_coefficients(init_coefficients, n_steps), np.float64)
    base = np.asarray(bespoke.dpm_solver_2m_coefficients(jnp.asarray(([] if free_start else [lam_T]) + list(init),
                                                                      jnp.float32)), np.float64)
    if np.any(start[:n_steps] <= 0):
      raise ValueError(f"init_coefficients: the ratios {start[:n_steps].tolist()} must be positive.")
    params["log_r"] = jnp.asarray(np.log(start[:n_steps] / base[:n_steps]), jnp.float32)
    params["dw"] = jnp.asarray(start[n_steps:] - base[n_steps:], jnp.float32)

  def unpack(params):
    points = grid_of_logits(params["theta"], lam_T, lam_top)
    lams = points if free_start else jnp.concatenate([jnp.full((1,), lam_T), points])
    ratios, weights = bespoke.split_coefficients(bespoke.dpm_solver_2m_coefficients(lams), n_steps)
    ratios = ratios * jnp.exp(params["log_r"])
    coefficients = bespoke.join_coefficients(ratios, weights) + jnp.concatenate(
        [jnp.zeros((n_steps,)), params["dw"]])
    return lams, coefficients

  def make_sampler(params, shape, j):
    lams, coefficients = unpack(params)
    return bespoke.get_bespoke_sampler(sde, shape, n_steps=n_steps, timesteps=lams[1:], coefficients=coefficients,
                                       start_log_snr=lams[0] if free_start else None, start_moments=moments[j],
                                       eps=eps)

  loss_fn = mean_kl_loss(key, sde, targets, make_sampler, batch_size=batch_size, kl_floor=kl_floor, chunks=chunks)
  params, losses = fit_logits(loss_fn, params, n_iters=n_iters, learning_rate=learning_rate, average=average)
  lams, coefficients = (np.asarray(v, np.float64) for v in unpack(params))
  out = {"timesteps": [float(v) for v in lams[1:]], "coefficients": [float(v) for v in coefficients],
         "start_log_snr": float(lams[0]) if free_start else None, "loss": losses}
  out["folded"] = _folds(jax.random.fold_in(key, n_iters), sde, targets, out, moments, batch_size, chunks, eps)
  return out


def _folds(key, sde, targets, fit: dict, moments: list, batch_size: int, chunks: int, eps: float) -> list[float]:
  """Per target, the fraction of batch_size latents where the fitted bespoke solver folds the latent space
  (`metrics.sampler_kl`, which logs it): such a solver fools the change of variables, and so the objective."""
  from sampling import bespoke

  folded = []
  for j, (score_fn, log_prob, dim) in enumerate(targets):
    fitted = bespoke.get_bespoke_sampler(sde, (batch_size // chunks, dim), n_steps=len(fit["timesteps"]) + 1,
                                         timesteps=fit["timesteps"], coefficients=fit["coefficients"], eps=eps,
                                         start_log_snr=fit["start_log_snr"], start_moments=moments[j])
    folded.append(metrics.sampler_kl(key, fitted, score_fn, log_prob, sde, n_batches=chunks)["folded"])
  return folded


def _end_fields(sampler_kwargs: dict) -> dict:
  return {k: sampler_kwargs[k] for k in ("denoise", "sigma_end", "eps") if k in sampler_kwargs}


def _t_end(sde: sde_lib.SDE, sampler_kwargs: dict) -> float:
  return end_time(sde, eps=sampler_kwargs.get("eps", 1e-3), sigma_end=sampler_kwargs.get("sigma_end"))
